"""The host client: one request, one reply, over any pyserial URL (docs/protocol.md).

    with connect("/dev/ttyACM0") as dev:          # or socket://host:port, a pty path, loop://
        dev.hello()
        outs = dev.run(steps, readout=True)        # long runs are split into requests that fit
        dev.upload(model)                           # a FixedModel or blob bytes
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np

from edgesnn.errors import InputError

from . import protocol as P
from .errors import DeviceError, LinkError, LinkTimeout

HELLO_ATTEMPTS = 4          # some boards drop what arrives before their UART is on
HELLO_TIMEOUT = 0.5
REPLY_RETRIES = 2           # resends after a CRC refusal (the device did not act) or a damaged reply


@dataclass(frozen=True)
class RunResult:
    """Per-step outputs of Device.run, as arrays: ``cls`` int16 [T]; ``spikes`` list of uint16 arrays;
    ``v`` int32 [T, n_outputs]; ``cycles`` uint32 [T] (None when not requested)."""

    outs: list

    def __len__(self):
        return len(self.outs)

    def __getitem__(self, i):
        return self.outs[i]

    def __iter__(self):
        return iter(self.outs)

    @property
    def cls(self) -> np.ndarray:
        return np.array([o.cls for o in self.outs], np.int16)

    @property
    def spikes(self) -> list:
        return [o.spikes for o in self.outs]

    @property
    def v(self) -> np.ndarray | None:
        return np.stack([o.v for o in self.outs]) if self.outs and self.outs[0].v is not None else None

    @property
    def cycles(self) -> np.ndarray | None:
        if not self.outs or self.outs[0].cycles is None:
            return None
        return np.array([o.cycles for o in self.outs], np.uint32)


def connect(url: str, timeout: float = 5.0, baudrate: int = 115200, hello: bool = True) -> "Device":
    """Open the link and (by default) say HELLO, so ``Device.info`` is known."""
    import serial

    try:
        port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05, write_timeout=timeout)
    except (serial.SerialException, OSError, ValueError) as e:
        raise LinkError(f"cannot open {url!r}: {e}; check the port name (a serial device, "
                        f"socket://HOST:PORT, a pty path or loop://) and that nothing else holds it") from e
    sock = getattr(port, "_socket", None)          # socket://: small requests go out at once
    if sock is not None:
        import socket
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    dev = Device(port, timeout=timeout, url=url)
    if hello:
        try:
            dev.hello()
        except BaseException:
            dev.close()
            raise
    return dev


class Device:
    """A board (or the emulated device) behind a pyserial port. Every read has a timeout."""

    def __init__(self, port, timeout: float = 5.0, url: str = ""):
        self.port = port
        self.timeout = float(timeout)
        self.url = url or getattr(port, "port", "") or "?"
        self._parser = P.FrameParser()
        # a random start: replies still in flight from an earlier session rarely carry our numbers
        self._seq = random.randrange(0x10000)
        self._info: P.Info | None = None
        self._events: list = []          # parsed frames not consumed yet

    # ------------------------------------------------------------ context
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.port.close()
        except Exception:      # closing a link that already broke must not hide the first error
            pass

    @property
    def info(self) -> P.Info:
        if self._info is None:
            self.hello()
        return self._info

    # ------------------------------------------------------------ link
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def _write(self, data: bytes):
        import serial
        try:
            self.port.write(data)
            self.port.flush()
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"{self.url}: the link closed while sending ({e}); reconnect") from e

    def _read_event(self, deadline: float):
        """The next parser event, or None at the deadline."""
        import serial
        while True:
            if self._events:
                return self._events.pop(0)
            if time.monotonic() >= deadline:
                return None
            try:
                n = max(1, self.port.in_waiting)
                data = self.port.read(n)
            except (serial.SerialException, OSError) as e:
                raise LinkError(f"{self.url}: the link closed ({e}); check the board is powered and "
                                f"connected, then reconnect") from e
            if data:
                self._events.extend(self._parser.feed(data))

    def request(self, type_: int, payload: bytes = b"", *, timeout: float | None = None,
                idempotent: bool = False) -> bytes:
        """Send one request and return its reply's payload. Retries after a CRC refusal (the device did
        not act) and, for idempotent requests, after a damaged reply; stale replies are dropped."""
        timeout = self.timeout if timeout is None else timeout
        name = P.msg_name(type_)
        for attempt in range(REPLY_RETRIES + 1):
            last = attempt == REPLY_RETRIES
            seq = self._next_seq()
            self._write(P.frame(type_, seq, payload))
            deadline = time.monotonic() + timeout
            while True:
                ev = self._read_event(deadline)
                if ev is None:
                    raise LinkTimeout(f"{self.url}: no reply to {name} within {timeout:g} s; check the "
                                    f"board runs edgesnn firmware, the baud rate, and the cable")
                if ev.seq != seq:
                    continue                                   # stale: a reply to an earlier request
                if isinstance(ev, P.Rejected):                 # our reply, damaged on the way back
                    if idempotent and not last:
                        break
                    raise LinkError(f"{self.url}: the reply to {name} arrived damaged ({ev.reason.name}); "
                                    f"the device may have acted on the request; check the link")
                if ev.type == P.Msg.ERROR:
                    err = self._decode(P.unpack_error, ev.payload, "ERROR")
                    if err.code == P.Err.CRC and not last:
                        break                                  # not acted on: safe to send again
                    raise DeviceError(err.request, err.code, err.detail, self.url)
                if ev.type != (type_ | P.REPLY):
                    raise LinkError(f"{self.url}: {name} (sequence {seq}) was answered with "
                                    f"{P.msg_name(ev.type)}, which is not its reply; is this an edgesnn device?")
                return ev.payload
        raise AssertionError("unreachable")

    def _decode(self, fn, payload, what):
        try:
            return fn(payload)
        except P.Malformed as e:
            raise LinkError(f"{self.url}: the {what} reply is malformed ({e}); firmware and host disagree "
                            f"on docs/protocol.md") from e

    # ------------------------------------------------------------ messages
    def hello(self, attempts: int = HELLO_ATTEMPTS) -> P.Info:
        """Say HELLO in short tries (a board may drop bytes sent before its UART was on), at least
        ``attempts`` of them and for as long as the link's timeout (a board may still be booting)."""
        last, tries = None, 0
        deadline = time.monotonic() + self.timeout
        while True:
            tries += 1
            try:
                payload = self.request(P.Msg.HELLO, timeout=min(HELLO_TIMEOUT, self.timeout), idempotent=True)
                break
            except LinkError as e:
                last = e
            if tries >= attempts and time.monotonic() >= deadline:
                raise LinkError(f"{self.url}: no answer to HELLO after {tries} tries in {self.timeout:g} s; "
                                f"check the board runs edgesnn firmware, the baud rate and the cable ({last})")
        info = self._decode(P.unpack_info, payload, "HELLO")
        if info.version != P.VERSION:
            raise LinkError(f"{self.url}: the device speaks protocol version {info.version}, this host "
                            f"{P.VERSION}; update the firmware or edgesnn")
        self._info = info
        return info

    def reset(self):
        self.request(P.Msg.RESET)

    def stats(self, clear: bool = False) -> P.Stats:
        payload = self.request(P.Msg.STATS, P.pack_stats_request(clear), idempotent=not clear)
        return self._decode(P.unpack_stats, payload, "STATS")

    def echo(self, data: bytes) -> bytes:
        out = self.request(P.Msg.ECHO, bytes(data), idempotent=True)
        if out != bytes(data):
            raise LinkError(f"{self.url}: ECHO returned {len(out)} different bytes for {len(data)}")
        return out

    # ------------------------------------------------------------ steps
    def step(self, indices, label=None, reward=None, spikes: bool = True, readout: bool = False,
             cycles: bool = False) -> P.StepOut:
        """One step; returns its StepOut (class, and the parts asked for)."""
        return self.run([indices], spikes=spikes, readout=readout, cycles=cycles,
                        labels=None if label is None else [label],
                        rewards=None if reward is None else [reward])[0]

    def run(self, steps, spikes: bool = True, readout: bool = False, cycles: bool = False, labels=None,
            rewards=None) -> RunResult:
        """Run a list of steps (each a list of input indices) in as few STEP requests as fit the
        device's max_payload, max steps per request and the worst-case reply size. ``labels`` and
        ``rewards`` (one per step; a label < 0 or None: none, a reward None: automatic) teach a device
        with the learning capability and are ignored by one without."""
        info = self.info
        flags = (P.STEP_SPIKES if spikes else 0) | (P.STEP_READOUT if readout else 0) | (P.STEP_CYCLES if cycles else 0)
        steps = list(steps)
        def teach(vals, t, none_below=None):
            v = None if vals is None else vals[t]
            return None if v is None or (none_below is not None and int(v) < none_below) else int(v)
        # a label below 0 (-1) or None: no label at that step; a reward None: automatic
        recs = [P.StepIn(np.asarray(s, np.int64).reshape(-1), teach(labels, t, 0), teach(rewards, t))
                for t, s in enumerate(steps)]
        _check_steps(recs, info)      # before sending anything: a long run is several requests
        outs = []
        for batch in _batches(recs, info, flags):
            payload = self.request(P.Msg.STEP, P.pack_step_request(flags, batch))
            got_flags, got = self._decode(lambda p: P.unpack_step_reply(p, info.n_outputs), payload, "STEP")
            if got_flags != flags or len(got) != len(batch):
                raise LinkError(f"{self.url}: STEP reply holds {len(got)} steps with flags {got_flags}, "
                                f"asked for {len(batch)} with flags {flags}")
            outs.extend(got)
        return RunResult(outs)

    # ------------------------------------------------------------ learning
    def _learn(self, op, *args, idempotent=False) -> P.LearnStatus:
        payload = self.request(P.Msg.LEARN, P.pack_learn(op, *args), idempotent=idempotent)
        return self._decode(P.unpack_learn_status, payload, "LEARN")

    def learn_status(self) -> P.LearnStatus:
        """The learning status (rule, on/off, layer mask, eta shift per layer); DeviceError UNSUPPORTED on a
        device (or a running model) without learning."""
        return self._learn(P.LEARN_QUERY, idempotent=True)

    def learn_enable(self, on: bool = True) -> P.LearnStatus:
        """Learning on or off (off: the steps still run, the weights stay)."""
        return self._learn(P.LEARN_ENABLE, 1 if on else 0, idempotent=True)

    def learn_mask(self, mask) -> P.LearnStatus:
        """The layers that learn: an int (bit l: layer l) or an iterable of layer indices (< 32)."""
        if not isinstance(mask, (int, np.integer)):
            layers = list(mask)
            if any(not 0 <= int(l) < 32 for l in layers):
                raise InputError(f"layer mask {layers}: layers 0..31")
            mask = sum(1 << int(l) for l in set(layers))
        if not 0 <= int(mask) <= 0xFFFFFFFF:
            raise InputError(f"layer mask {mask}: a u32")
        return self._learn(P.LEARN_MASK, int(mask), idempotent=True)

    def learn_eta(self, layer: int, shift: int) -> P.LearnStatus:
        """A learning layer's rate: eta = 2^-shift, shift 0..31."""
        if not 0 <= int(shift) <= 31 or not 0 <= int(layer) <= 0xFFFF:
            raise InputError(f"eta shift {shift} (0..31) or layer {layer} out of range")
        return self._learn(P.LEARN_ETA, int(layer), int(shift), idempotent=True)

    def learn_reset(self) -> P.LearnStatus:
        """Start of a sample: network state, class counts, traces, eligibilities and score to zero."""
        return self._learn(P.LEARN_RESET, idempotent=True)

    # ------------------------------------------------------------ upload
    def upload(self, model, progress=None) -> bytes:
        """Upload a FixedModel (or blob bytes); returns the new model's hash. On any refusal the device
        keeps its previous model and this raises DeviceError (LinkError if the link broke)."""
        blob = bytes(model) if isinstance(model, (bytes, bytearray, memoryview)) else _blob_of(model)
        total = len(blob)
        reply = self.request(P.Msg.UPLOAD_BEGIN, P.pack_upload_begin(total, P.crc32(blob)))
        _capacity, max_chunk = self._decode(P.unpack_upload_begin_reply, reply, "UPLOAD_BEGIN")
        chunk = min(max_chunk, self.info.max_payload - 4)
        if chunk < 1:
            raise LinkError(f"{self.url}: the device accepts chunks of {max_chunk} bytes; cannot upload")
        offset, resyncs, lost = 0, 0, 0
        try:
            while offset < total:
                part = blob[offset:offset + chunk]
                try:
                    reply = self.request(P.Msg.UPLOAD_CHUNK, P.pack_upload_chunk(offset, part), idempotent=True)
                    received = self._decode(P.unpack_u32, reply, "UPLOAD_CHUNK")
                except LinkTimeout:
                    lost += 1                 # resend: if it had arrived, the device names the offset
                    if lost > REPLY_RETRIES:
                        raise
                    continue
                except DeviceError as e:
                    # a lost reply: the chunk may have arrived; continue where the device says
                    if e.code != P.Err.OFFSET or resyncs >= 8:
                        raise
                    resyncs += 1
                    received = e.detail
                if not 0 <= received <= total:
                    raise LinkError(f"{self.url}: the device reports {received} bytes received of {total}")
                offset = received
                if progress:
                    progress(offset, total)
            try:
                reply = self.request(P.Msg.UPLOAD_COMMIT)
            except LinkError:
                # the commit's reply was lost: HELLO tells whether the device switched to the new model
                if self.hello().model_hash == blob[48:80]:
                    return self.info.model_hash
                raise
        except DeviceError:
            self._abort_quietly()
            raise
        digest = self._decode(P.unpack_commit_reply, reply, "UPLOAD_COMMIT")
        self.hello()         # the model's sizes changed
        return digest

    def _abort_quietly(self):
        try:
            self.request(P.Msg.UPLOAD_ABORT, timeout=min(1.0, self.timeout))
        except (LinkError, DeviceError):
            pass             # the refusal raised by the caller is the error that matters

    # ------------------------------------------------------------ reads
    def read_weights(self, layer: int, which: int = 0) -> np.ndarray:
        """Every weight of a layer (which 0: feed-forward, 1: recurrent), in the flat program's order
        (input-major: n_in x n_out, conv c_in*kh*kw x c_out), as int8 or int16; empty for a layer
        without such weights."""
        self._check_layer(layer)
        if which not in (0, 1):
            raise InputError(f"which={which}: 0 (feed-forward) or 1 (recurrent)")
        per = min(0xFFFF, (self.info.max_payload - 1) // 2)       # fits with 2-byte weights
        return self._read_all(P.Msg.READ_WEIGHTS, layer, which, per, P.unpack_weights_reply, np.int8)

    def read_state(self, layer: int, field: int | str = 0) -> np.ndarray:
        """One state field of a layer (0 or 'v', 1 or 'i', 2 or 'a') as int32; empty when the layer
        has no such field."""
        field = {"v": 0, "i": 1, "a": 2}.get(field, field)
        self._check_layer(layer)
        if field not in (0, 1, 2):
            raise InputError(f"field={field!r}: 0/'v', 1/'i' or 2/'a'")
        per = min(0xFFFF, self.info.max_payload // 4)
        return self._read_all(P.Msg.READ_STATE, layer, field, per, P.unpack_state_reply, np.int32)

    def _check_layer(self, layer):
        n = self.info.n_layers
        if not 0 <= layer < n:
            raise InputError(f"layer {layer}: the device's model has layers 0..{n - 1}")

    def _read_all(self, type_, layer, sel, per, unpack, empty_dtype):
        """Read ranges of ``count`` values from ``first`` on. The device does not tell the size: a range
        past the end is ARGUMENT (detail: first), so the count halves until it fits; a matrix or
        field the layer lacks is ARGUMENT (detail: which/field) at first 0 and reads as empty."""
        parts, first, count = [], 0, per
        while count:
            try:
                reply = self.request(type_, P.pack_read_weights(layer, sel, first, count), idempotent=True)
            except DeviceError as e:
                if e.code != P.Err.ARGUMENT:
                    raise
                if first == 0 and e.detail == sel != 0:
                    break          # no such matrix or field (with sel 0 it reads as a range at 0: halves to 0)
                if e.detail != first:
                    raise
                count //= 2
                continue
            part = self._decode(unpack, reply, P.msg_name(type_))
            if len(part) != count:
                raise LinkError(f"{self.url}: asked for {count} values, got {len(part)}")
            parts.append(part)
            first += count
        return np.concatenate(parts) if parts else np.zeros(0, empty_dtype)


def _blob_of(model) -> bytes:
    from firmware_gen import blob as B
    return B.pack(model)


def _check_steps(recs, info: P.Info):
    """The device's STEP checks, done up front so a refused step cannot leave a run half done."""
    for t, r in enumerate(recs):
        if r.label is not None and not 0 <= r.label < (info.n_outputs if info.has(P.Cap.LEARN) else 0x10000):
            raise InputError(f"label {r.label} at step {t}: the device model has classes 0..{info.n_outputs - 1} "
                             f"(None: no label); nothing was sent")
        if r.reward is not None and not -0x8000 <= r.reward <= 0x7FFF:
            raise InputError(f"reward {r.reward} at step {t}: an i16 (-32768..32767); nothing was sent")
        idx = r.indices
        if idx.size and (idx.min() < 0 or idx.max() >= info.n_inputs):
            bad = idx[(idx < 0) | (idx >= info.n_inputs)][0]
            raise InputError(f"input index {int(bad)} at step {t} is outside the device model's "
                             f"{info.n_inputs} inputs (0..{info.n_inputs - 1}); nothing was sent")
        if idx.size > info.max_events:
            raise InputError(f"{idx.size} input events at step {t}: the device takes at most "
                             f"{info.max_events} per step; nothing was sent")


def _batches(recs, info: P.Info, flags: int):
    """Split step records into STEP requests that fit (request size, step count, reply bound)."""
    batch, size = [], 3
    for t, r in enumerate(recs):
        rsize = P.step_request_size([r]) - 3
        if 3 + rsize > info.max_payload or P.step_reply_bound(1, info.n_outputs, flags) > info.max_payload:
            raise InputError(f"step {t} ({len(r.indices)} events, {info.n_outputs} outputs) does not fit "
                             f"one request of at most {info.max_payload} bytes; send fewer events per step "
                             f"or fewer outputs (spikes/readout) per request")
        if batch and (size + rsize > info.max_payload or len(batch) >= info.max_steps
                      or P.step_reply_bound(len(batch) + 1, info.n_outputs, flags) > info.max_payload):
            yield batch
            batch, size = [], 3
        batch.append(r)
        size += rsize
    if batch:
        yield batch
