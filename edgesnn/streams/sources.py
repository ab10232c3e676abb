"""Event and audio sources behind one small interface.

An event source has ``resolution`` (width, height), ``live`` (True when it paces itself to a sensor or a
network peer) and ``batches()``, an iterator of time-ordered structured arrays of ``EVENT_DTYPE``
(t int64 microseconds, x int16, y int16, p int8 in {0, 1}); it ends when the recording ends or the peer
disconnects. A live source also yields the empty batch ``IDLE`` while it waits, so that the consumer
can close steps on the wall clock. ``open_source(spec)`` picks one from a string:

    file.aedat4          dv-processing MonoCameraRecording (any resolution)
    file.bs2             SLAYER / N-MNIST binary (5 bytes per event, big-endian bit fields)
    tcp://HOST:PORT      a live dv-processing network stream (NetworkReader), e.g. from DV or `edgesnn replay`
    camera[:SERIAL]      a live DVS camera (dv.io.camera.open)

Audio sources (``WavSource``, ``PcmSource``, ``SoundDeviceSource``) have ``rate`` and ``blocks()``,
an iterator of int16 sample arrays.
"""
from __future__ import annotations

import os
import sys
import time
import wave
from pathlib import Path

import numpy as np

from ..errors import InputError

# the layout of dv-processing's EventStore.numpy() with short names: a view, no copy
EVENT_DTYPE = np.dtype({"names": ["t", "x", "y", "p"], "formats": ["<i8", "<i2", "<i2", "i1"],
                        "offsets": [0, 8, 10, 12], "itemsize": 16})


class SourceError(InputError):
    """A source that cannot be opened or read: missing, corrupt, unknown or absent hardware."""


def empty_events(n: int = 0) -> np.ndarray:
    return np.zeros(n, EVENT_DTYPE)


IDLE = empty_events(0)   # what a live source yields while it waits for events
IDLE.flags.writeable = False


def from_dv(store) -> np.ndarray:
    """dv.EventStore -> EVENT_DTYPE array (a zero-copy view of EventStore.numpy())."""
    a = store.numpy()
    if a.dtype.itemsize != 16 or a.dtype.names != ("timestamp", "x", "y", "polarity"):
        a = np.asarray(a)
        out = empty_events(a.shape[0])
        out["t"], out["x"], out["y"], out["p"] = a["timestamp"], a["x"], a["y"], a["polarity"]
        return out
    return a.view(EVENT_DTYPE)


def to_dv(ev: np.ndarray):
    """EVENT_DTYPE array -> dv.EventStore (dv-processing 2.0.4 has no bulk constructor: push_back loop)."""
    import dv_processing as dv

    store = dv.EventStore()
    for t, x, y, p in zip(ev["t"].tolist(), ev["x"].tolist(), ev["y"].tolist(), ev["p"].tolist()):
        store.push_back(t, x, y, bool(p))
    return store


class EventSource:
    """``batches()`` yields time-ordered event batches; a live source also yields the empty batch
    ``IDLE`` while it waits, so that its consumer can close steps on the wall clock."""

    resolution: tuple = (0, 0)
    live: bool = False
    name: str = "source"

    def batches(self):
        raise NotImplementedError

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- files

class ArraySource(EventSource):
    """Events already in memory, yielded in batches of ``batch`` events (tests, benchmarks)."""

    def __init__(self, events: np.ndarray, resolution, batch: int = 10000, name: str = "array"):
        self.events = events
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.batch = int(batch)
        self.name = name

    def batches(self):
        for i in range(0, self.events.shape[0], self.batch):
            yield self.events[i:i + self.batch]


class AedatSource(EventSource):
    """An aedat4 recording read with dv-processing's MonoCameraRecording."""

    def __init__(self, path):
        import dv_processing as dv

        self.path = str(path)
        if not os.path.isfile(self.path):
            raise SourceError(f"no such recording: {self.path}")
        try:
            self._rec = dv.io.MonoCameraRecording(self.path)
        except Exception as e:  # dv raises RuntimeError / IndexError with terse messages
            raise SourceError(f"{self.path} is not a readable aedat4 recording ({e}); is it truncated or of "
                              f"another format?") from None
        if not self._rec.isEventStreamAvailable():
            raise SourceError(f"{self.path} holds no event stream (frames or IMU only?)")
        w, h = self._rec.getEventResolution()
        self.resolution = (int(w), int(h))
        self.name = Path(self.path).name

    def batches(self):
        while True:
            try:
                b = self._rec.getNextEventBatch()
            except Exception as e:
                raise SourceError(f"{self.path}: reading failed ({e}); the file is probably truncated or "
                                  f"corrupt") from None
            if b is None:
                return
            if b.size():
                yield from_dv(b)


def read_bs2(path) -> np.ndarray:
    """Decode a SLAYER / N-MNIST .bs2 file: 5 bytes per event, big-endian bit fields
    x (8) | y (8) | polarity (1) | timestamp (23, microseconds). Vectorised; returns EVENT_DTYPE."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        raise SourceError(f"{path}: {raw.size} bytes is not a multiple of 5, so it is not a .bs2 event file "
                          f"(or it is truncated: {raw.size % 5} stray bytes at the end)")
    r = raw.reshape(-1, 5).astype(np.int64)
    out = empty_events(r.shape[0])
    out["x"] = r[:, 0]
    out["y"] = r[:, 1]
    out["p"] = r[:, 2] >> 7
    out["t"] = ((r[:, 2] & 0x7F) << 16) | (r[:, 3] << 8) | r[:, 4]
    if out.size > 1 and np.any(np.diff(out["t"]) < 0):
        out = out[np.argsort(out["t"], kind="stable")]
    return out


class Bs2Source(ArraySource):
    """A .bs2 file. Its sensor size is not stored: pass ``resolution`` (default: DVS128, 128 x 128; the
    events must fit it)."""

    def __init__(self, path, resolution=(128, 128), batch: int = 10000):
        if not os.path.isfile(path):
            raise SourceError(f"no such recording: {path}")
        ev = read_bs2(path)
        w, h = resolution
        if ev.size and (ev["x"].max() >= w or ev["y"].max() >= h):
            raise SourceError(f"{path}: events reach x={ev['x'].max()}, y={ev['y'].max()}, outside the "
                              f"{w}x{h} sensor assumed for .bs2 files")
        super().__init__(ev, resolution, batch, Path(path).name)


# ---------------------------------------------------------------- live

class NetworkSource(EventSource):
    """A live dv-processing event stream over TCP (from DV, a camera server, or `edgesnn replay`)."""

    live = True

    poll_s = 0.0001   # sleep between polls when no batch is ready
    max_drain = 1000  # batches merged into one when they are already waiting

    def __init__(self, host: str, port: int, connect_timeout: float = 5.0, idle_timeout: float | None = None):
        """``idle_timeout``: end the stream after this many seconds without a batch (default: never; a camera
        watching a still scene sends nothing). Note: dv's NetworkReader discards what it has buffered once
        the peer disconnects, so a sender must keep the connection until the reader is done."""
        import dv_processing as dv

        self.host, self.port = host, int(port)
        self.idle_timeout = idle_timeout
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self._reader = dv.io.NetworkReader(host, self.port)
                break
            except Exception as e:
                if time.monotonic() > deadline:
                    raise SourceError(f"cannot connect to an event stream at tcp://{host}:{port} ({e}); is "
                                      f"the server (DV, `edgesnn replay`) running?") from None
                time.sleep(0.05)
        if not self._reader.isEventStreamAvailable():
            raise SourceError(f"tcp://{host}:{port} does not carry an event stream")
        w, h = self._reader.getEventResolution()
        self.resolution = (int(w), int(h))
        self.name = f"tcp://{host}:{port}"

    def batches(self):
        r = self._reader
        last = time.monotonic()
        while True:
            b = r.getNextEventBatch()  # None when nothing is ready; isRunning() is False after a disconnect
            if b is None:
                if not r.isRunning():
                    return
                if self.idle_timeout is not None and time.monotonic() - last > self.idle_timeout:
                    return
                yield IDLE   # lets the consumer close steps on the wall clock while nothing arrives
                time.sleep(self.poll_s)
                continue
            last = time.monotonic()
            # hand out everything that is already waiting as one batch, so that the consumer sees its
            # backlog (the stream time it has received but not yet processed); at most max_drain batches
            parts = [from_dv(b)] if b.size() else []
            for _ in range(self.max_drain):
                b = r.getNextEventBatch()
                if b is None:
                    break
                if b.size():
                    parts.append(from_dv(b))
            if len(parts) == 1:
                yield parts[0]
            elif parts:
                yield np.concatenate(parts)

    def close(self):
        self._reader = None


class CameraSource(EventSource):
    """A live DVS camera via dv.io.camera.open (the first found, or by serial number)."""

    live = True

    def __init__(self, serial: str | None = None):
        import dv_processing as dv

        try:
            self._cam = dv.io.camera.open(serial) if serial else dv.io.camera.open()
        except (IndexError, RuntimeError) as e:
            what = f"with serial number {serial}" if serial else "attached"
            raise SourceError(f"no camera was found ({what}); connect a DVS camera, or stream a recording with "
                              f"`edgesnn replay FILE --listen HOST:PORT` and use --source tcp://HOST:PORT "
                              f"[{type(e).__name__}: {e}]") from None
        if not self._cam.isEventStreamAvailable():
            raise SourceError("the camera does not produce events")
        w, h = self._cam.getEventResolution()
        self.resolution = (int(w), int(h))
        self.name = f"camera:{serial or self._cam.getCameraName()}"

    def batches(self):
        while self._cam.isRunning():
            b = self._cam.getNextEventBatch()
            if b is None:
                yield IDLE
                time.sleep(0.0002)
                continue
            if b.size():
                yield from_dv(b).copy()


# ---------------------------------------------------------------- audio

class AudioSource:
    rate: int = 16000
    live: bool = False
    name: str = "audio"

    def blocks(self):
        raise NotImplementedError

    def close(self):
        pass


class WavSource(AudioSource):
    """A 16-bit mono WAV file (stdlib wave)."""

    def __init__(self, path, block: int = 1024):
        if not os.path.isfile(path):
            raise SourceError(f"no such recording: {path}")
        try:
            with wave.open(str(path), "rb") as w:
                if w.getsampwidth() != 2 or w.getnchannels() != 1:
                    raise SourceError(f"{path}: {w.getnchannels()} channel(s) of {8 * w.getsampwidth()} bits; "
                                      f"edgesnn reads 16-bit mono WAV (convert with sox: -c 1 -b 16)")
                self.rate = w.getframerate()
                data = w.readframes(w.getnframes())
        except (wave.Error, EOFError) as e:
            raise SourceError(f"{path} is not a readable WAV file ({e})") from None
        self.samples = np.frombuffer(data[:len(data) // 2 * 2], dtype="<i2")
        self.block = int(block)
        self.name = Path(path).name

    def blocks(self):
        for i in range(0, self.samples.size, self.block):
            yield self.samples[i:i + self.block]


class PcmSource(AudioSource):
    """Raw S16LE mono PCM from a binary stream (stdin, a subprocess's stdout). With ``realtime`` the
    blocks are paced to the wall clock (a live microphone stand-in: `arecord -f S16_LE ... | edgesnn run
    --source pcm:-`)."""

    def __init__(self, stream=None, rate: int = 16000, block: int = 256, realtime: bool = False):
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.rate, self.block, self.live = int(rate), int(block), bool(realtime)
        self.name = "pcm"

    def blocks(self):
        t0 = time.monotonic()
        n = 0
        carry = b""
        while True:
            data = self.stream.read(2 * self.block - len(carry))
            if not data:
                return
            data = carry + data
            k = len(data) // 2 * 2
            carry = data[k:]
            if k == 0:
                continue
            x = np.frombuffer(data[:k], dtype="<i2")
            n += x.size
            if self.live:
                wait = t0 + n / self.rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            yield x


class SoundDeviceSource(AudioSource):
    """A microphone via the optional `sounddevice` package (pip install sounddevice)."""

    live = True

    def __init__(self, rate: int = 16000, block: int = 256, device=None):
        try:
            import sounddevice as sd
        except ImportError:
            raise SourceError("the microphone source needs the optional package sounddevice "
                              "(pip install sounddevice); or pipe raw PCM: --source pcm:-") from None
        try:
            self._stream = sd.InputStream(samplerate=rate, channels=1, dtype="int16", blocksize=block,
                                          device=device)
        except Exception as e:
            raise SourceError(f"no usable microphone was found ({e}); pipe raw S16LE PCM instead: "
                              f"--source pcm:-") from None
        self.rate, self.block = int(rate), int(block)
        self.name = "microphone"

    def blocks(self):
        with self._stream:
            while True:
                x, _ = self._stream.read(self.block)
                yield np.asarray(x[:, 0], np.int16)


# ---------------------------------------------------------------- by name

def parse_hostport(s: str) -> tuple[str, int]:
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise SourceError(f"{s!r} is not HOST:PORT (e.g. 127.0.0.1:7777)")
    return host, int(port)


def open_source(spec: str, pcm_rate: int = 16000, idle_timeout: float | None = None):
    """A source from its command-line name (see the module docstring)."""
    s = str(spec)
    low = s.lower()
    if low.startswith("tcp://"):
        return NetworkSource(*parse_hostport(s[6:]), idle_timeout=idle_timeout)
    if low == "camera" or low.startswith("camera:"):
        return CameraSource(s[7:] or None)
    if low == "pcm:-":
        return PcmSource(sys.stdin.buffer, rate=pcm_rate, realtime=False)
    if low == "mic":
        return SoundDeviceSource(rate=pcm_rate)
    ext = Path(low).suffix
    if ext == ".aedat4":
        return AedatSource(s)
    if ext == ".bs2":
        return Bs2Source(s)
    if ext == ".wav":
        return WavSource(s)
    raise SourceError(f"unknown source {spec!r}: use a .aedat4, .bs2 or .wav file, tcp://HOST:PORT, camera, "
                      f"camera:SERIAL, pcm:- (raw S16LE on stdin) or mic")
