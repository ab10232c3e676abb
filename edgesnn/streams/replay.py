"""Serve a recording as a live dv-processing network stream, paced to the wall clock.

    edgesnn replay FILE --listen HOST:PORT [--speed S] [--loop]

A consumer (`dv.io.NetworkReader`, DV, `edgesnn run --source tcp://HOST:PORT`) sees what a camera
streaming from DV would send: an event stream of the recording's resolution, delivered in 1 ms slices
(at --speed 1) at the time the sensor produced them. --speed 0 sends as fast as the link takes it.
Streaming starts when the first client connects. At the end the connection stays open until the client
disconnects, at most --linger seconds (default 2 s, 30 s with --speed 0): dv-processing's NetworkReader
discards what it has not yet handed out when the sender goes away.
"""
from __future__ import annotations

import os
import sys
import time


from .sources import AedatSource, Bs2Source, SourceError, from_dv, to_dv


_KEEP = []


def load_recording(path):
    """(dv.EventStore with every event, (w, h), camera name) of a .aedat4 or .bs2 file."""
    import dv_processing as dv

    low = str(path).lower()
    if low.endswith(".aedat4"):
        src = AedatSource(path)
        store = dv.EventStore()
        while True:
            b = src._rec.getNextEventBatch()
            if b is None:
                break
            store.add(b)
        cam = src._rec.getCameraName() or "DVS"
        return store, src.resolution, cam
    if low.endswith(".bs2"):
        src = Bs2Source(path)
        return to_dv(src.events), src.resolution, "DVS128"
    raise SourceError(f"replay serves .aedat4 or .bs2 recordings, not {path}")


def replay(path, host: str, port: int, speed: float = 1.0, loop: bool = False, slice_us: int = 1000,
           wait_client: float = 30.0, linger: float | None = None, announce=None) -> int:
    """Stream ``path``; returns the number of events sent. ``announce(msg)`` is told when listening."""
    import dv_processing as dv

    store, res, cam = load_recording(path)
    if store.size() == 0:
        raise SourceError(f"{path} holds no events")
    writer = dv.io.NetworkWriter(host, int(port), dv.io.Stream.EventStream(0, "events", cam, res))
    _KEEP.append(writer)   # never destroyed: ~NetworkWriter can deadlock; the process leaves by os._exit
    if announce:
        announce(f"listening on {host}:{port}: {path} ({store.size()} events, {res[0]}x{res[1]}, "
                 f"{(store.getHighestTime() - store.getLowestTime()) / 1e6:.2f} s)")
    deadline = time.monotonic() + wait_client
    while writer.getClientCount() == 0:
        if time.monotonic() > deadline:
            raise SourceError(f"no client connected to {host}:{port} within {wait_client:.0f} s")
        time.sleep(0.002)
    t_lo, t_hi = store.getLowestTime(), store.getHighestTime() + 1
    fast = speed <= 0
    step = 50_000 if fast else int(slice_us)
    sent = 0
    while True:
        wall0 = time.perf_counter()
        for a in range(t_lo, t_hi, step):
            b = min(a + step, t_hi)
            if not fast:
                wait = wall0 + (b - t_lo) / 1e6 / speed - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            else:
                while writer.getQueuedPacketCount() > 64:   # bounded queue
                    time.sleep(0.0005)
            part = store.sliceTime(a, b)
            if part.size():
                writer.writeEvents(part)
                sent += part.size()
            if writer.getClientCount() == 0:
                break
        if not loop or writer.getClientCount() == 0:
            break
        store = _shifted(store, t_hi - t_lo)
        t_lo, t_hi = t_lo + (t_hi - t_lo), t_hi + (t_hi - t_lo)
    # dv's NetworkReader drops what it has buffered when the sender disconnects: keep the connection open
    # until the queue is sent and the client has left (or ``linger`` seconds)
    if linger is None:   # a paced client is nearly caught up at the end; a --speed 0 one may be far behind
        linger = 30.0 if fast else 2.0
    deadline = time.monotonic() + linger
    while writer.getClientCount() > 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    return sent


def _shifted(store, dt_us):
    ev = from_dv(store).copy()
    ev["t"] += dt_us
    return to_dv(ev)


def main_replay(path, listen: str, speed: float, loop: bool, quiet: bool = False, linger=None) -> None:
    """The `edgesnn replay` verb: serve, then leave with os._exit (dv's ~NetworkWriter can deadlock)."""
    from .sources import parse_hostport

    host, port = parse_hostport(listen)
    sent = replay(path, host, port, speed, loop, linger=linger,
                  announce=None if quiet else (lambda m: (print(m, flush=True))))
    if not quiet:
        print(f"sent {sent} events", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
