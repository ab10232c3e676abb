"""Binning events into time steps and the real-time loop shared by `edgesnn run` and `edgesnn demo`.

    runner = StreamRunner(sim, InputMap(source.resolution, net.input_shape), dt=net.dt, live=source.live)
    metrics = runner.run(source, on_chunk=decider)

Binning: step k holds the events with t0 + k*dt <= t < t0 + (k+1)*dt (t0: the first event's time). A
step is closed, and simulated, once an event of a later step has arrived; empty steps in between are
simulated too (the neurons leak). A live source's steps are also closed on the wall clock: stream time is
mapped to wall time by the earliest delivery seen so far (the smallest arrival - event time of a batch's
last event), and step k is closed ``close_after`` seconds after its end has passed, even when nothing
arrives (a pause in the stream runs its empty steps as they fall due, not all at once when the next event
comes). Events older than the open step ("late") join the open step and are counted.

Policies when the input is too much (never silent, never unbounded memory):
- a step with more than ``max_events_per_step`` events (65535, the emulator's limit) keeps an evenly
  spaced subset: counted in ``subsampled_events``;
- live sources: a live source hands over everything it has received (NetworkSource drains the reader),
  so the time spanned by one batch's events is the loop's backlog. When it exceeds ``max_lag`` seconds of
  stream time, the oldest steps are dropped (not simulated; the network state goes on from where it was) and only
  the newest ``max_lag`` are run: counted in ``dropped_steps`` and ``dropped_events``. The backlog is
  measured in stream time, so a late or bursty sender does not cause drops; a slow loop does. Steps are
  simulated in chunks of at most ``max_chunk`` steps, and the latency histogram has a fixed size.

Latency of a step: from the moment it could be closed until the emulator finished it (transforms,
binning and simulation included): the arrival of the batch that closed it, or for a step closed on the
wall clock the moment it fell due (its end + ``close_after``, on the mapped clock; waiting for the wall
clock is not latency, reacting late to it is). When k steps are closed together, the emulator runs them
in one call and step j is taken to finish at start + (j + 1) / k of that call's duration.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from numba import njit

from ..errors import InputError
from ..model.program import MAX_EVENTS_PER_STEP
from ..simulator import Events


_NO_T, _NO_I = np.zeros(0, np.int64), np.zeros(0, np.int32)


def _events(idx, ptr) -> Events:
    """Events without the validation of Events.__init__ (the binner's CSR is valid by construction)."""
    ev = Events.__new__(Events)
    ev.idx, ev.ptr = idx, ptr
    return ev


@njit(cache=True)
def _steps(t, t0, dt, open_step, step):
    """step[i] = max((t[i] - t0) // dt, open_step) (floor division); returns (late count, sorted?)."""
    late = 0
    ordered = True
    prev = open_step
    for i in range(t.shape[0]):
        d = t[i] - t0
        k = d // dt
        if k < open_step:
            k = open_step
            late += 1
        if k < prev:
            ordered = False
        prev = k
        step[i] = k
    return late, ordered


class Binner:
    """Events (t int64 us, idx int32) -> CSR Events of the closed steps of ``dt_us``."""

    def __init__(self, dt_us: int, max_events_per_step: int = MAX_EVENTS_PER_STEP, origin_us: int | None = None):
        if dt_us < 1:
            raise InputError(f"the step must be at least 1 microsecond, got {dt_us}")
        self.dt = int(dt_us)
        self.cap = int(max_events_per_step)
        self.t0 = None if origin_us is None else int(origin_us)   # stream time of step 0's start
        self.open_step = 0                       # the first step not yet emitted
        self._t = np.zeros(0, np.int64)           # pending events (all in steps >= open_step)
        self._i = np.zeros(0, np.int32)
        self.late_events = 0
        self.subsampled_events = 0

    def push(self, t, idx, final: bool = False, until: int = 0):
        """Add events; returns (first step index, Events of the steps now closed) (possibly 0 steps).
        ``until``: also close every step before this one (the wall clock says they are over)."""
        t = np.asarray(t, np.int64)
        idx = np.asarray(idx, np.int32)
        if self.t0 is None:
            if t.size == 0:
                return self.open_step, _events(np.zeros(0, np.int32), np.zeros(1, np.int64))
            self.t0 = int(t[0])
        if self._t.size:
            t = np.concatenate([self._t, t])
            idx = np.concatenate([self._i, idx])
        step = np.empty(t.size, np.int64)
        late, ordered = _steps(t, self.t0, self.dt, self.open_step, step)
        if late:
            self.late_events += late
            # a late event now belongs to the open step: say so in its time too, or it would be counted
            # late again by every later push while it waits in that step
            t = np.maximum(t, self.t0 + step * self.dt)
        if not ordered:
            order = np.argsort(step, kind="stable")
            step, idx, t = step[order], idx[order], t[order]
        first = self.open_step
        end = first if step.size == 0 else int(step[-1]) + (1 if final else 0)   # steps < end are closed
        end = max(end, int(until))
        if end <= first:
            self._t, self._i = t, idx
            return first, _events(np.zeros(0, np.int32), np.zeros(1, np.int64))
        edges = np.searchsorted(step, np.arange(first, end + 1), side="left").astype(np.int64)
        cut = int(edges[-1])
        cidx = idx[:cut]
        if cut > self.cap and np.max(edges[1:] - edges[:-1]) > self.cap:
            cidx, edges = self._subsample(cidx, edges)
        self._t, self._i = t[cut:], idx[cut:]
        self.open_step = end
        return first, _events(cidx, edges)

    def flush(self):
        """Close the open step (end of stream)."""
        return self.push(np.zeros(0, np.int64), np.zeros(0, np.int32), final=True)

    def skip_to(self, step: int) -> int:
        """Drop every pending event before ``step`` (used by the drop policy); returns how many."""
        if self.t0 is None:
            return 0
        keep = (self._t - self.t0) // self.dt >= step
        n = int((~keep).sum())
        self._t, self._i = self._t[keep], self._i[keep]
        self.open_step = max(self.open_step, step)
        return n

    def _subsample(self, idx, edges):
        parts, new = [], [0]
        for k in range(edges.size - 1):
            s = idx[edges[k]:edges[k + 1]]
            if s.size > self.cap:
                keep = (np.arange(self.cap, dtype=np.int64) * s.size) // self.cap   # evenly spaced
                self.subsampled_events += s.size - self.cap
                s = s[keep]
            parts.append(s)
            new.append(new[-1] + s.size)
        return np.concatenate(parts).astype(np.int32), np.asarray(new, np.int64)


def count_spikes(sim, rec, acc):
    """Add a run's spikes per layer to ``acc``. A device over the link reports its output layer only:
    the other layers are marked unknown (-1)."""
    if rec.spikes is None:
        acc[:-1] = -1
        acc[-1] += int(rec.out_spikes.sum(dtype=np.int64))
        return
    cs = np.concatenate([[0], np.cumsum(rec.spikes.sum(axis=0, dtype=np.int64))])
    acc += cs[sim.layer_base[1:]] - cs[sim.layer_base[:-1]]


class LatencyHistogram:
    """Fixed-size log histogram of latencies (10 ns .. 100 s, 2 % bins): constant memory, percentiles
    to about 2 %."""

    LO, HI, BINS = 1e-8, 1e2, 1200

    def __init__(self):
        self.counts = np.zeros(self.BINS + 2, np.int64)
        self.total = 0
        self.max = 0.0

    def add(self, seconds: float, n: int = 1):
        if n <= 0:
            return
        s = max(seconds, 0.0)
        if s < self.LO:
            b = 0
        else:
            b = 1 + int(math.log(s / self.LO) / math.log(self.HI / self.LO) * self.BINS)
            b = min(b, self.BINS + 1)
        self.counts[b] += n
        self.total += n
        self.max = max(self.max, s)

    def add_many(self, seconds: np.ndarray):
        s = np.maximum(np.asarray(seconds, np.float64), 0.0)
        if s.size == 0:
            return
        b = np.zeros(s.size, np.int64)
        pos = s >= self.LO
        b[pos] = np.minimum(1 + (np.log(s[pos] / self.LO) / math.log(self.HI / self.LO) * self.BINS).astype(np.int64),
                            self.BINS + 1)
        self.counts += np.bincount(b, minlength=self.BINS + 2)
        self.total += s.size
        self.max = max(self.max, float(s.max()))

    def percentile(self, q: float) -> float:
        if self.total == 0:
            return 0.0
        k = int(np.searchsorted(np.cumsum(self.counts), math.ceil(q / 100 * self.total)))
        if k == 0:
            return 0.0
        hi = self.LO * (self.HI / self.LO) ** (k / self.BINS)   # upper edge of bin k
        return min(hi, self.max)


@dataclass
class Metrics:
    source: str = ""
    events: int = 0              # events delivered by the source
    events_in: int = 0           # events that reached the network (after transforms / fitting)
    steps: int = 0               # steps simulated
    dropped_steps: int = 0
    dropped_events: int = 0      # events in dropped steps
    subsampled_events: int = 0   # events left out of overfull steps
    late_events: int = 0
    stream_s: float = 0.0        # stream time covered
    wall_s: float = 0.0
    events_per_s: float = 0.0
    realtime_factor: float = 0.0  # stream time / wall time
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    latency_max_ms: float = 0.0
    spikes_per_layer: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        layers = ", ".join("?" if s is None else str(s) for s in self.spikes_per_layer)
        return (f"{self.events} events ({self.events_in} into the network) in {self.steps} steps, "
                f"{self.stream_s:.2f} s of stream in {self.wall_s:.2f} s: {self.realtime_factor:.1f}x real time, "
                f"{self.events_per_s / 1e6:.2f} M events/s\n"
                f"per-step latency p50 {self.latency_p50_ms:.3f} ms, p99 {self.latency_p99_ms:.3f} ms, "
                f"max {self.latency_max_ms:.3f} ms\n"
                f"dropped: {self.dropped_steps} steps / {self.dropped_events} events (lag policy), "
                f"{self.subsampled_events} subsampled (overfull steps), {self.late_events} late\n"
                f"spikes per layer: {layers}")


def warm_up(sim, transforms=()):
    """Compile the loop's kernels (binner, input map, transforms, the simulator's run) on dummy data.
    Call it before connecting to a live source: dv's NetworkReader keeps a bounded buffer, and what a
    slow first read lets overflow there is lost before edgesnn sees it (so it cannot be counted)."""
    from ..simulator import Simulator
    from .sources import empty_events
    from .transforms import InputMap

    ev = empty_events(2)
    ev["t"] = [0, 1]
    for f in transforms:
        f(ev[:0])   # an empty batch: compiles, changes no filter state
    InputMap((4, 4), (2, 4, 4))(ev)
    Binner(1000).push(np.array([0, 10_000], np.int64), np.zeros(2, np.int32))
    Simulator(sim.program).run(_events(np.zeros(0, np.int32), np.zeros(2, np.int64)), record="spikes")


class StreamRunner:
    """Source -> transforms -> InputMap -> Binner -> Simulator, with pacing, the drop policy and metrics.

    ``on_chunk(first_step, record, events)`` is called after each simulated chunk (record: the
    Simulator.run Record with every layer's spikes; events: the chunk's input Events).
    ``live``: apply the drop policy (``max_lag`` seconds of backlog).
    ``pace``: for a recording, sleep so that steps are simulated no earlier than their wall-clock time
    (``speed``: stream seconds per wall second).
    ``close_after``: live sources: close a step this many seconds after its end has passed on the wall
    clock, whether or not a later event came (the allowance for delivery jitter; events later than that
    join the open step and are counted as late; ``math.inf``: only events close steps).
    """

    def __init__(self, sim, input_map, dt: float, transforms=(), live: bool = False, pace: bool = False,
                 speed: float = 1.0, max_lag: float = 0.1, max_chunk: int = 1000,
                 max_events_per_step: int = MAX_EVENTS_PER_STEP, origin_us: int | None = None,
                 close_after: float = 0.005, clock=time.perf_counter):
        self.sim, self.imap, self.transforms = sim, input_map, list(transforms)
        self.dt_us = int(round(dt * 1e6))
        if abs(self.dt_us - dt * 1e6) > 1e-6:
            raise InputError(f"the model's step {dt} s is not a whole number of microseconds")
        self.binner = Binner(self.dt_us, max_events_per_step, origin_us)
        self.live, self.pace, self.speed = bool(live), bool(pace), float(speed)
        self.max_lag, self.max_chunk, self.clock = float(max_lag), int(max_chunk), clock
        self.max_lag_steps = max(1, int(round(self.max_lag * 1e6 / self.dt_us)))
        self.hist = LatencyHistogram()
        self.m = Metrics()
        self._spikes = np.zeros(sim.program.n_layers, np.int64)
        self._wall0 = None
        self._last_done = None
        if not close_after >= 0:
            raise InputError(f"close_after is the wall-clock allowance after a step's end and must be >= 0 "
                             f"seconds, got {close_after}")
        self.close_after = float(close_after)
        self._offset = None   # wall time (s) at which stream time t0 was due, from the earliest delivery

    def _due(self, step_end: int) -> float:
        """Wall-clock time at which stream step ``step_end`` (exclusive) is complete."""
        return self._wall0 + step_end * self.dt_us * 1e-6 / self.speed

    def warm_up(self):
        """Compile (or load from numba's cache) every kernel the loop calls, before the first batch, so
        that compilation does not count as latency or cause drops. The simulator's state is not touched."""
        warm_up(self.sim, self.transforms)

    def run(self, source, on_chunk=None, max_steps: int | None = None) -> Metrics:
        self.m.source = getattr(source, "name", "")
        self.warm_up()
        start = self.clock()
        try:
            for batch in source.batches():
                arrival = self.clock()
                if batch.shape[0] == 0:   # a live source waiting: close what the wall clock says is over
                    if self.live:
                        self._close_due(arrival, on_chunk)
                    continue
                if self._wall0 is None:
                    self._wall0 = arrival
                self.m.events += batch.shape[0]
                t_last = int(batch["t"][-1])
                for f in self.transforms:
                    batch = f(batch)
                t, idx = self.imap(batch)
                self.m.events_in += idx.size
                first, ev = self.binner.push(t, idx)
                span = int(batch["t"][-1] - batch["t"][0]) if batch.shape[0] else 0
                self._process(first, ev, arrival, on_chunk, span_us=span)
                if self.live:
                    due = arrival - (t_last - self.binner.t0) * 1e-6
                    self._offset = due if self._offset is None else min(self._offset, due)
                if max_steps is not None and self.binner.open_step >= max_steps:
                    break
            else:   # the stream ended: close the open step (no lag policy: it closed because the source ended)
                first, ev = self.binner.flush()
                before = self._last_done
                self._process(first, ev, self.clock(), on_chunk, final=True)
                if before is not None and self.live:   # an idle wait for the end of a live stream is not work
                    self._last_done = before
        finally:
            source.close()
        # wall time until the last step was done (an idle wait for the end of a live stream is not work)
        self.m.wall_s = (self._last_done if self._last_done is not None else self.clock()) - start
        return self._finish()

    def _close_due(self, now, on_chunk):
        """Close (and run) every step whose end is ``close_after`` or more in the past on the wall clock."""
        if self._offset is None or self.close_after == math.inf:
            return
        until = int((now - self._offset - self.close_after) * 1e6 + 1e-3) // self.dt_us   # 1 ns for rounding
        if until <= self.binner.open_step:
            return
        first, ev = self.binner.push(_NO_T, _NO_I, until=until)
        # step s fell due at offset + (s + 1) * dt + close_after
        due = self._offset + self.close_after + (np.arange(first, first + ev.n_steps) + 1) * (self.dt_us * 1e-6)
        self._process(first, ev, due, on_chunk)

    def _process(self, first, ev, arrival, on_chunk, final=False, span_us=0):
        """Run the closed steps ``ev`` (``first`` is the first's index); ``arrival``: when they could be
        closed (one time, or one per step)."""
        n = ev.n_steps
        if n == 0:
            return
        if self.live and not final and span_us > self.max_lag * 1e6 and n > self.max_lag_steps:
            # behind: the source handed over more closed steps than max_lag holds; drop the oldest
            k = n - self.max_lag_steps
            self.m.dropped_steps += k
            self.m.dropped_events += int(ev.ptr[k])
            ev = _events(ev.idx[ev.ptr[k]:], ev.ptr[k:] - ev.ptr[k])
            first, n = first + k, n - k
            if np.ndim(arrival):
                arrival = arrival[k:]
        for a in range(0, n, self.max_chunk):
            b = min(n, a + self.max_chunk)
            sub = ev if (a == 0 and b == n) else _events(ev.idx[ev.ptr[a]:ev.ptr[b]], ev.ptr[a:b + 1] - ev.ptr[a])
            if self.pace and not self.live and self._wall0 is not None:
                wait = self._due(first + a) - self.clock()
                if wait > 0:
                    time.sleep(wait)
                    arrival = self.clock()
            t_start = self.clock()
            rec = self.sim.run(sub, record="spikes")
            done = self.clock()
            self._last_done = done
            k = b - a
            ready = arrival[a:b] if np.ndim(arrival) else arrival
            if k == 1:
                self.hist.add(done - (ready[0] if np.ndim(ready) else ready))
            else:   # the steps of a chunk finish one after the other: step j at about start + (j+1)/k of the run
                self.hist.add_many((t_start - ready) + (done - t_start) * np.arange(1, k + 1) / k)
            self.m.steps += b - a
            count_spikes(self.sim, rec, self._spikes)
            if on_chunk is not None:
                on_chunk(first + a, rec, sub)

    def _finish(self) -> Metrics:
        m = self.m
        m.subsampled_events = self.binner.subsampled_events
        m.late_events = self.binner.late_events
        m.stream_s = self.binner.open_step * self.dt_us * 1e-6
        m.events_per_s = m.events / m.wall_s if m.wall_s > 0 else 0.0
        m.realtime_factor = m.stream_s / m.wall_s if m.wall_s > 0 else 0.0
        m.latency_p50_ms = self.hist.percentile(50) * 1e3
        m.latency_p99_ms = self.hist.percentile(99) * 1e3
        m.latency_max_ms = self.hist.max * 1e3
        m.spikes_per_layer = [int(s) if s >= 0 else None for s in self._spikes]
        return m


@dataclass
class Detection:
    t: float            # stream time (s) at the end of the decision window
    label: int
    confidence: float
    events: int         # input events in the window
    scores: list

    def as_dict(self):
        return {"t": round(self.t, 4), "class": self.label, "confidence": round(self.confidence, 4),
                "events": self.events}


class WindowDecider:
    """Decide every ``window_steps`` steps on that window, when it carried at least ``min_events`` input
    events (an activity gate: no decision on silence).

    mode 'count': spike counts of the output layer (decode_count); 'membrane': max membrane of a
    leaky-integrator readout (decode_membrane, reduce='max'); 'delta': the readout membrane's change over
    the window, v(end) - v(start) (for a non-leaking readout this is exactly W @ hidden spike counts of the
    window), confidence softmax(delta * 2^-shift / temperature)."""

    def __init__(self, window_steps: int, dt: float, mode: str = "count", min_events: int = 1,
                 shift: int = 0, temperature: float = 1.0, callback=None):
        if mode not in ("count", "membrane", "delta"):
            raise InputError(f"decision mode must be count, membrane or delta, got {mode!r}")
        self.w, self.dt, self.mode = int(window_steps), float(dt), mode
        self.min_events, self.shift, self.temperature = int(min_events), int(shift), float(temperature)
        self.callback = callback
        self.detections: list[Detection] = []
        self._spk, self._v, self._n = [], [], 0
        self._v_start = None
        self._step = None

    def __call__(self, first, rec, ev):
        if self._step is None or first != self._step:   # a gap (dropped steps): restart the window
            self._spk, self._v, self._n, self._len = [], [], 0, 0
            self._v_start = None
            self._win0 = first
        T = ev.n_steps
        a = 0
        while a < T:
            take = min(T - a, self.w - self._len)
            self._spk.append(rec.out_spikes[a:a + take])
            self._v.append(rec.out_v[a:a + take])
            self._n += int(ev.ptr[a + take] - ev.ptr[a])
            self._len += take
            a += take
            if self._len == self.w:
                self._decide()
        self._step = first + T

    def _decide(self):
        from ..frontends.decoders import decode_count, decode_membrane, softmax_confidence

        v_last = self._v[-1][-1]
        end = self._win0 + self.w
        if self._n >= self.min_events:
            if self.mode == "count":
                d = decode_count(np.concatenate(self._spk))
                lab, conf, sc = d.label, d.confidence, d.scores
            elif self.mode == "membrane":
                lab, conf, sc = decode_membrane(np.concatenate(self._v), "max", self.shift, self.temperature)
            else:
                v0 = self._v_start if self._v_start is not None else \
                    (np.zeros_like(v_last) if self._win0 == 0 else self._v[0][0])
                sc = v_last.astype(np.int64) - v0.astype(np.int64)
                lab = int(np.argmax(sc))
                conf = float(softmax_confidence(sc[None].astype(np.float64), np.array([lab]),
                                                self.shift, self.temperature)[0])
            det = Detection(end * self.dt, int(lab), float(conf), self._n, np.asarray(sc).tolist())
            self.detections.append(det)
            if self.callback:
                self.callback(det)
        self._v_start = v_last.copy()
        self._spk, self._v, self._n, self._len = [], [], 0, 0
        self._win0 = end
