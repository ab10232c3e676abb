"""Spike encoders: rate (Bernoulli), latency (time to first spike) and delta modulation (ON/OFF).

Each encoder has a fixed-point form (integers only, what a Cortex-M0+ runs; randomness from the one PRNG
of ``edgesnn.kernels.prng``) and a float twin that gives the same spikes whenever the float input is
exactly representable in the fixed format. docs/encoding.md states every rule for the C port.

    ev = rate_encode(image.ravel(), n_steps=100, seed=1, stream=rate_stream(k))   # float, [0, 1]
    ev = rate_encode_fixed(p_q16, n_steps=100, seed=1, stream=rate_stream(k))     # 0..65536
    ev = latency_encode(x, n_steps=50, tau=5.0)          # float, [0, 1]
    ev = latency_encode_fixed(pixels_u8, n_steps=50, tau=5.0)                    # 0..255, via a table
    ev = delta_encode_fixed(envelopes_i32, threshold=64)  # (T, n) -> 2n channels: ON block, OFF block
    raster = to_raster(ev, n_channels)                    # dense (T, n) int8

All encoders return ``edgesnn.simulator.Events``. The per-step work is done by the @njit kernels below.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from ..errors import InputError
from ..kernels.arith import INT32_MAX, INT32_MIN, sat_add
from ..kernels.prng import MASK, bernoulli_q16, next_u32, seed_state
from ..kernels.network import dense_to_events
from ..simulator import Events

Q16_ONE = 1 << 16
TWO_M32 = 2.0 ** -32

STREAM_RATE = 0x52415445  # ASCII 'RATE': the PRNG stream of the rate encoder


def rate_stream(k: int = 0) -> int:
    """Stream number of the rate encoder for sample (or channel group) ``k``: STREAM_RATE + k mod 2^32."""
    return (STREAM_RATE + int(k)) & MASK


# ============================================================== kernels (the per-step work)

@njit(cache=True)
def rate_kernel_fixed(s, p_q16, n_steps, out):
    """out[t, j] = 1 iff (next_u32 >> 16) < p_q16[row, j]; row = t, or 0 when p_q16 has one row.
    One draw per channel per step, channels in index order, steps in order, whatever p is."""
    n = out.shape[1]
    one_row = p_q16.shape[0] == 1
    for t in range(n_steps):
        row = 0 if one_row else t
        for j in range(n):
            out[t, j] = 1 if bernoulli_q16(s, p_q16[row, j]) else 0


@njit(cache=True)
def rate_kernel_float(s, x, n_steps, out):
    """Float twin: the same draws, u = next_u32 / 2^32 (exact in float64), out[t, j] = 1 iff u < x."""
    n = out.shape[1]
    one_row = x.shape[0] == 1
    for t in range(n_steps):
        row = 0 if one_row else t
        for j in range(n):
            u = np.float64(next_u32(s)) * TWO_M32
            out[t, j] = 1 if u < x[row, j] else 0


@njit(cache=True)
def delta_kernel(x, ref, thr, out):
    """Delta modulation of the rows of x (T, n) from the reference levels ref (n,), updated in place.
    out (T, 2n): column j is channel j's ON spike, column n + j its OFF spike. Generic: on integers the
    differences are exact (64-bit) and ref moves with sat_add; on floats the same rule in float64."""
    n = ref.shape[0]
    for t in range(x.shape[0]):
        for j in range(n):
            out[t, j] = 0
            out[t, n + j] = 0
            if x[t, j] - ref[j] >= thr:
                out[t, j] = 1
                ref[j] = sat_add(ref[j], thr)
            elif ref[j] - x[t, j] >= thr:
                out[t, n + j] = 1
                ref[j] = sat_add(ref[j], -thr)


@njit(cache=True)
def steps_to_csr(step, n_steps):
    """One spike per channel j at step[j] (-1: none) -> (idx, ptr), channels ascending within a step."""
    counts = np.zeros(n_steps + 1, np.int64)
    for j in range(step.shape[0]):
        if step[j] >= 0:
            counts[step[j] + 1] += 1
    ptr = np.cumsum(counts)
    fill = ptr[:-1].copy()
    idx = np.empty(ptr[-1], np.int32)
    for j in range(step.shape[0]):
        if step[j] >= 0:
            idx[fill[step[j]]] = j
            fill[step[j]] += 1
    return idx, ptr


def raster_to_csr(r):
    """Dense (T, n) raster of spike counts -> (idx, ptr); a count k repeats the index k times."""
    return dense_to_events(np.ascontiguousarray(r))


# ============================================================== rasters

def events_from_raster(raster) -> Events:
    """A dense (T, n) raster of non-negative spike counts -> Events."""
    r = np.asarray(raster)
    if r.ndim != 2:
        raise InputError(f"a raster is (T, n), got shape {r.shape}")
    if not (np.issubdtype(r.dtype, np.integer) or r.dtype == np.bool_):
        raise InputError(f"a raster holds integer spike counts, got dtype {r.dtype}")
    r = r.astype(np.int64)
    if r.size and r.min() < 0:
        raise InputError("a raster holds non-negative spike counts")
    return Events(*raster_to_csr(r))


def to_raster(events: Events, n_channels: int) -> np.ndarray:
    """Events -> dense (T, n_channels) int8 raster of spike counts (the encoders give 0 or 1)."""
    n_channels = _count(n_channels, "n_channels", 1)
    if events.idx.size and (events.idx.min() < 0 or events.idx.max() >= n_channels):
        raise InputError(f"an event index lies outside 0..{n_channels - 1}: pass the encoder's channel "
                         f"count (2n for delta modulation)")
    out = np.zeros((events.n_steps, n_channels), np.int64)
    steps = np.repeat(np.arange(events.n_steps), np.diff(events.ptr))
    np.add.at(out, (steps, events.idx), 1)
    if out.size and out.max() > 127:
        raise InputError("a channel holds more than 127 events in one step: an int8 raster cannot hold it")
    return out.astype(np.int8)


# ============================================================== validation helpers

def _count(v, name, lo):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or int(v) < lo:
        raise InputError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _u32(v, name):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) <= MASK:
        raise InputError(f"{name} must be an integer in 0..2^32-1, got {v!r}")
    return int(v)


def _ints(a, name, lo, hi):
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"{name} must hold integers (fixed point), got dtype {a.dtype}; the float encoder "
                         f"takes real values")
    if a.size and (a.min() < lo or a.max() > hi):
        bad = a[(a < lo) | (a > hi)].flat[0]
        raise InputError(f"{name} must lie in {lo}..{hi}, got {int(bad)}")
    return a


def _floats(a, name, lo=None, hi=None):
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} holds NaN or infinite values")
    if lo is not None and a.size and (a.min() < lo or a.max() > hi):
        bad = a[(a < lo) | (a > hi)].flat[0]
        raise InputError(f"{name} must lie in [{lo}, {hi}], got {bad!r}")
    return a


def _static_or_sequence(a, n_steps, name):
    """(n,) static with n_steps, or (T, n) per-step with n_steps None or T. Returns (2-D array, T)."""
    if a.ndim == 1:
        if n_steps is None:
            raise InputError(f"{name} is static (shape {a.shape}): pass n_steps")
        return a[None, :], _count(n_steps, "n_steps", 0)
    if a.ndim == 2:
        if n_steps is not None and _count(n_steps, "n_steps", 0) != a.shape[0]:
            raise InputError(f"{name} of shape {a.shape} is a (T, n) sequence of {a.shape[0]} steps but "
                             f"n_steps={n_steps}; for a static image pass x.ravel()")
        return a, a.shape[0]
    raise InputError(f"{name} must be (n,) (static) or (T, n) (one row per step), got shape {a.shape}; "
                     f"flatten images with x.ravel() (C order)")


# ============================================================== rate (Bernoulli)

class RateEncoder:
    """Streaming rate encoder of n channels with a persistent PRNG state.

    fixed=True: intensities are p_q16 integers in 0..65536, spike iff (next_u32 >> 16) < p_q16.
    fixed=False: intensities are reals in [0, 1], spike iff next_u32 / 2^32 < x (the same draw).
    ``step(x)`` encodes one step and returns the spiking channel indices (int32, ascending), ready for
    ``Simulator.step``; ``run(x, n_steps)`` encodes many steps into Events. Both continue the same stream.
    """

    def __init__(self, n: int, seed: int, stream: int = STREAM_RATE, fixed: bool = False):
        self.n = _count(n, "n", 1)
        self.seed = _u32(seed, "seed")
        self.stream = _u32(stream, "stream")
        self.fixed = bool(fixed)
        self.reset()

    def reset(self):
        """Back to the freshly seeded state."""
        self.state = seed_state(self.seed, self.stream)

    def _prepare(self, x, n_steps):
        if self.fixed:
            a = _ints(x, "p_q16", 0, Q16_ONE).astype(np.int32)
        else:
            a = _floats(x, "x", 0.0, 1.0)
        a2, T = _static_or_sequence(a, n_steps, "p_q16" if self.fixed else "x")
        if a2.shape[1] != self.n:
            raise InputError(f"the encoder has {self.n} channels, got {a2.shape[1]}")
        return np.ascontiguousarray(a2), T

    def raster(self, x, n_steps=None) -> np.ndarray:
        a2, T = self._prepare(x, n_steps)
        out = np.zeros((T, self.n), np.int8)
        (rate_kernel_fixed if self.fixed else rate_kernel_float)(self.state, a2, T, out)
        return out

    def run(self, x, n_steps=None) -> Events:
        """x: (n,) for n_steps steps, or (T, n) one row per step."""
        return Events(*raster_to_csr(self.raster(x, n_steps)))

    def step(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 1:
            raise InputError(f"step takes the (n,) intensities of one step, got shape {x.shape}")
        return np.flatnonzero(self.raster(x, 1)[0]).astype(np.int32)


def rate_encode(x, n_steps=None, seed: int = 0, stream: int = STREAM_RATE) -> Events:
    """Bernoulli rate code of reals in [0, 1]: (n,) static for n_steps steps, or (T, n) per step.
    Spike iff u < x with u = next_u32 / 2^32 from seed_state(seed, stream); equal to rate_encode_fixed
    whenever x = p_q16 / 65536 exactly."""
    x = np.asarray(x)
    n = x.shape[-1] if x.ndim in (1, 2) else 1
    return RateEncoder(n, seed, stream, fixed=False).run(x, n_steps)


def rate_encode_fixed(p_q16, n_steps=None, seed: int = 0, stream: int = STREAM_RATE) -> Events:
    """Bernoulli rate code of integers p_q16 in 0..65536 (probability p_q16 / 65536)."""
    p = np.asarray(p_q16)
    n = p.shape[-1] if p.ndim in (1, 2) else 1
    return RateEncoder(n, seed, stream, fixed=True).run(p, n_steps)


# ============================================================== latency (time to first spike)

@dataclass(frozen=True)
class LatencyLaw:
    """Time-to-first-spike law (after snnTorch ``spikegen.latency``; RC charging of a neuron).

    For x > threshold, with xe = max(x, threshold + epsilon):
      logarithmic: t = tau * ln(xe / (xe - threshold))
                   normalize: t = ln(xe / (xe - threshold)) / ln(x0 / (x0 - threshold)) * (n_steps - 1),
                   x0 = threshold + epsilon (tau cancels; the latest possible spike lands on the last step)
      linear:      t = tau * (1 - x);  normalize: tau = n_steps - 1, i.e. t = (1 - x) * (n_steps - 1)
    step = round half to even (t); a spike at that step if step <= n_steps - 1, otherwise none.
    x <= threshold: no spike. All in float64 with the C library's log, one value at a time.
    """

    n_steps: int
    tau: float = 1.0
    threshold: float = 0.01
    normalize: bool = False
    linear: bool = False
    epsilon: float = 1e-7

    def __post_init__(self):
        _count(self.n_steps, "n_steps", 1)
        for name in ("tau", "threshold", "epsilon"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v) or v <= 0:
                raise InputError(f"latency {name} must be a finite number > 0, got {v!r}")
        if not self.threshold < 1:
            raise InputError(f"latency threshold must be in (0, 1), got {self.threshold!r}")

    def time(self, x: float) -> float:
        """Spike time (real, in steps) of an intensity x in [0, 1]; math.inf below threshold."""
        x = float(x)
        thr = float(self.threshold)
        if not x > thr:
            return math.inf
        if self.linear:
            tau = float(self.n_steps - 1) if self.normalize else float(self.tau)
            return tau * (1.0 - x)
        xe = max(x, thr + float(self.epsilon))
        lg = math.log(xe / (xe - thr))
        if self.normalize:  # tau cancels: t = ln(...) / ln(x0 / (x0 - thr)) * (n_steps - 1)
            x0 = thr + float(self.epsilon)
            return lg / math.log(x0 / (x0 - thr)) * float(self.n_steps - 1)
        return float(self.tau) * lg

    def step(self, x: float) -> int:
        """Spike step of x, -1 for none."""
        t = self.time(x)
        if not t < self.n_steps:  # also inf: round(t) >= n_steps surely, and no int(inf)
            return -1
        k = round(t)  # Python rounds floats half to even
        return int(k) if k <= self.n_steps - 1 else -1

    def steps(self, x: np.ndarray) -> np.ndarray:
        """Spike step of each value (int32, -1: none); each distinct value evaluated once by ``step``."""
        x = np.asarray(x, np.float64)
        uniq, inv = np.unique(x, return_inverse=True)
        su = np.array([self.step(v) for v in uniq.tolist()], np.int32)
        return su[inv.reshape(-1)].reshape(x.shape) if x.size else np.zeros(x.shape, np.int32)

    def table(self) -> np.ndarray:
        """The 256-entry table of the fixed encoder: table[q] = step(q / 255) (float64 division), -1: none."""
        return np.array([self.step(q / 255.0) for q in range(256)], np.int32)


def _law(n_steps, tau, threshold, normalize, linear, epsilon):
    return LatencyLaw(_count(n_steps, "n_steps", 1), tau, threshold, bool(normalize), bool(linear), epsilon)


def latency_table(n_steps: int, tau: float = 1.0, threshold: float = 0.01, normalize: bool = False,
                  linear: bool = False, epsilon: float = 1e-7) -> np.ndarray:
    """int32 (256,): spike step of the 8-bit intensity q, computed once from the float law at q / 255."""
    return _law(n_steps, tau, threshold, normalize, linear, epsilon).table()


def _latency_x(x, name):
    if x.ndim != 1:
        raise InputError(f"{name} must be (n,) (one intensity per channel), got shape {x.shape}; flatten "
                         f"images with x.ravel() (C order)")


def latency_encode(x, n_steps: int, tau: float = 1.0, threshold: float = 0.01, normalize: bool = False,
                   linear: bool = False, epsilon: float = 1e-7) -> Events:
    """Latency code of reals x (n,) in [0, 1]: at most one spike per channel, at LatencyLaw.step(x)."""
    law = _law(n_steps, tau, threshold, normalize, linear, epsilon)
    x = _floats(x, "x", 0.0, 1.0)
    _latency_x(x, "x")
    return Events(*steps_to_csr(law.steps(x), law.n_steps))


def latency_encode_fixed(q, n_steps: int, tau: float = 1.0, threshold: float = 0.01,
                         normalize: bool = False, linear: bool = False, epsilon: float = 1e-7,
                         table=None) -> Events:
    """Latency code of 8-bit intensities q (n,) in 0..255: channel j spikes at table[q[j]] (none if -1).
    The table is latency_table(...) of the same law unless given (int, 256 entries in -1..n_steps-1)."""
    n_steps = _count(n_steps, "n_steps", 1)
    if table is None:
        table = _law(n_steps, tau, threshold, normalize, linear, epsilon).table()
    table = _ints(table, "table", -1, n_steps - 1).astype(np.int32)
    if table.shape != (256,):
        raise InputError(f"a latency table has 256 entries, got shape {table.shape}")
    q = _ints(q, "q", 0, 255)
    _latency_x(q, "q")
    return Events(*steps_to_csr(table[q.astype(np.intp)], n_steps))


# ============================================================== delta modulation (ON / OFF)

class DeltaEncoder:
    """Streaming delta modulator of n channels; 2n output channels: ON spikes 0..n-1, OFF spikes n..2n-1.

    Per channel and step (one spike at most):
        if x - ref >= threshold:   ON,  ref = ref + threshold
        elif ref - x >= threshold: OFF, ref = ref - threshold
    fixed=True: int32 signals, integer threshold in 1..2^31-1, exact 64-bit differences, saturating ref
    updates (sat_add; they never actually saturate). fixed=False: the same rule in float64.
    ref0: initial reference, a scalar, an (n,) array, or "first" (the first sample: no spike at step 0).
    """

    def __init__(self, n: int, threshold, ref0=0, fixed: bool = False):
        self.n = _count(n, "n", 1)
        self.fixed = bool(fixed)
        if self.fixed:
            if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (int, np.integer)) \
                    or not 1 <= int(threshold) <= INT32_MAX:
                raise InputError(f"the fixed delta threshold must be an integer in 1..2^31-1, got {threshold!r}")
            self.threshold = np.int32(threshold)
        else:
            if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(threshold) or not threshold > 0:
                raise InputError(f"the delta threshold must be a finite number > 0, got {threshold!r}")
            self.threshold = np.float64(threshold)
        if isinstance(ref0, str):
            if ref0 != "first":
                raise InputError(f"ref0 must be a number, an (n,) array or 'first', got {ref0!r}")
            self._ref0 = None
        else:
            r = self._signal(ref0, "ref0")
            if r.ndim > 1 or (r.ndim == 1 and r.shape[0] != self.n):
                raise InputError(f"ref0 must be a scalar or ({self.n},), got shape {r.shape}")
            self._ref0 = np.broadcast_to(r, (self.n,)).copy()
        self.reset()

    @property
    def n_channels(self) -> int:
        return 2 * self.n

    def _signal(self, x, name):
        if self.fixed:
            return _ints(x, name, INT32_MIN, INT32_MAX).astype(np.int32)
        return _floats(x, name)

    def reset(self):
        """Back to the initial reference (ref0='first': taken again from the next sample)."""
        self.ref = None if self._ref0 is None else self._ref0.copy()

    def raster(self, x) -> np.ndarray:
        """x (T, n) -> (T, 2n) int8, continuing from the current reference."""
        x = self._signal(x, "x")
        if x.ndim != 2 or x.shape[1] != self.n:
            raise InputError(f"the delta encoder takes (T, {self.n}) signals, got shape {x.shape}")
        x = np.ascontiguousarray(x)
        out = np.zeros((x.shape[0], 2 * self.n), np.int8)
        if x.shape[0] == 0:
            return out
        if self.ref is None:
            self.ref = x[0].copy()
        delta_kernel(x, self.ref, self.threshold, out)
        return out

    def run(self, x) -> Events:
        return Events(*raster_to_csr(self.raster(x)))

    def step(self, x) -> np.ndarray:
        """One step of the (n,) signal; the spiking output channels (int32, ascending: ON then OFF)."""
        x = np.asarray(x)
        if x.ndim != 1:
            raise InputError(f"step takes the (n,) samples of one step, got shape {x.shape}")
        return np.flatnonzero(self.raster(x[None, :])[0]).astype(np.int32)


def _delta_n(x):
    x = np.asarray(x)
    if x.ndim != 2:
        raise InputError(f"delta modulation takes a (T, n) signal, got shape {x.shape}; a single channel "
                         f"is x[:, None]")
    return x.shape[1]


def delta_encode(x, threshold: float, ref0=0.0) -> Events:
    """Float delta modulation of x (T, n) -> Events of 2n channels (ON j, OFF n + j)."""
    return DeltaEncoder(_delta_n(x), threshold, ref0, fixed=False).run(x)


def delta_encode_fixed(x, threshold: int, ref0=0) -> Events:
    """Fixed delta modulation of int32 x (T, n) -> Events of 2n channels (ON j, OFF n + j)."""
    return DeltaEncoder(_delta_n(x), threshold, ref0, fixed=True).run(x)
