"""Integer audio front-end: band-pass filterbank -> rectification -> envelope -> log compression ->
delta spikes. Integer-only at run time, with every rounding stated (docs/audio.md), so a C port is
mechanical; the constants (filter coefficients) are computed once in float at construction, as
quantization computes a model's constants.

    fe = AudioFrontend(rate=16000, n_channels=32)
    logenv = fe.process(samples_int16)     # (T, 32) int32, one row per hop (1 ms), Q4 log2 units
    ev = fe.events(samples_int16)          # Events of 64 channels: ON 0..31, OFF 32..63 (delta modulation)

Per sample n and channel c (all integers; ``rs(a, k)`` is floor(a / 2^k), defined for negative a):
    u      = 16 * x[n]                                     (Q4 input: 4 bits of headroom for precision)
    acc    = b0*u + b2*u2 - a1*y1 - a2*y2                  (int64; coefficients Q28; b1 = 0, b2 = -b0)
    y      = rs(acc + 2^27, 28)                            (round half up)
    u2, u1 = u1, u;  y2, y1 = y1, y
    env    = env + rs(|y| - env, ENV_SHIFT)               (one-pole low-pass of the rectified output)
Every HOP samples: out[c] = log2q(env) (Q4 piecewise-linear log2, below). Spikes: fixed delta modulation
(edgesnn.frontends.encoders.DeltaEncoder, threshold in Q4 log units: 8 = half an octave of amplitude).
"""
from __future__ import annotations

import math
import time

import numpy as np
from numba import njit

from ..errors import InputError

COEF_BITS = 28
IN_SHIFT = 4          # u = x * 16
LOG_FRAC = 4          # log2q: Q4


@njit(cache=True)
def rs(a, k):
    """floor(a / 2^k) for any int64 a, using shifts of non-negative values only (C: same expression)."""
    if a >= 0:
        return a >> k
    return -((-a + (np.int64(1) << k) - 1) >> k)


@njit(cache=True)
def log2q(v):
    """Piecewise-linear log2 in Q4 of v >= 0: 0 for v <= 0; else 16 * k + the 4 bits after the leading one,
    where k = floor(log2 v) (31 - the leading-zero count in C), plus 16: log2q(1) = 16, log2q(2) = 32,
    log2q(3) = 40. Monotone, integer-only, shifts of non-negative values only."""
    if v <= 0:
        return 0
    k = 0
    t = v
    while t > 1:
        t >>= 1
        k += 1
    if k >= LOG_FRAC:
        m = (v >> (k - LOG_FRAC)) - (1 << LOG_FRAC)
    else:
        m = (v << (LOG_FRAC - k)) - (1 << LOG_FRAC)
    return 16 + 16 * k + m     # +16 so that v = 1 maps to 16 and 0 stays apart


@njit(cache=True)
def filterbank_kernel(x, coef, state, env, env_shift, hop, phase, out):
    """Run the samples x (int16) through every channel; writes a row of out per completed hop.
    coef (C, 3) int64: b0, a1, a2 (Q28); state (C, 4) int64: u1, u2, y1, y2; env (C,) int64;
    phase (1,) int64: samples since the last output row. Returns the number of rows written."""
    C = coef.shape[0]
    rows = 0
    half = np.int64(1) << (COEF_BITS - 1)
    for n in range(x.shape[0]):
        u = np.int64(x[n]) * (1 << IN_SHIFT)   # x * 16 (a multiply: no left shift of a negative value)
        for c in range(C):
            b0 = coef[c, 0]
            acc = b0 * u - b0 * state[c, 1] - coef[c, 1] * state[c, 2] - coef[c, 2] * state[c, 3]
            y = rs(acc + half, COEF_BITS)
            state[c, 1] = state[c, 0]
            state[c, 0] = u
            state[c, 3] = state[c, 2]
            state[c, 2] = y
            r = y if y >= 0 else -y
            env[c] = env[c] + rs(r - env[c], env_shift)
        phase[0] += 1
        if phase[0] == hop:
            phase[0] = 0
            for c in range(C):
                out[rows, c] = log2q(env[c])
            rows += 1
    return rows


def center_frequencies(n: int, f_lo: float, f_hi: float) -> np.ndarray:
    return f_lo * (f_hi / f_lo) ** (np.arange(n) / max(n - 1, 1))


def bandpass_q28(fc: float, rate: float, q: float) -> tuple[int, int, int]:
    """RBJ constant-0-dB-peak band-pass biquad, coefficients b0, a1, a2 in Q28 (b1 = 0, b2 = -b0)."""
    w0 = 2 * math.pi * fc / rate
    alpha = math.sin(w0) / (2 * q)
    a0 = 1 + alpha
    one = 1 << COEF_BITS

    def r(v):
        return int(math.floor(v * one + 0.5))
    return r(alpha / a0), r(-2 * math.cos(w0) / a0), r((1 - alpha) / a0)


class AudioFrontend:
    """n_channels band-pass channels, log-spaced from f_lo to f_hi (default 0.45 * rate), quality q;
    one output row every hop_ms."""

    def __init__(self, rate: int = 16000, n_channels: int = 32, f_lo: float = 100.0, f_hi: float | None = None,
                 q: float = 4.0, env_shift: int = 5, hop_ms: float = 1.0, threshold: int = 8):
        if not 4000 <= rate <= 48000:
            raise InputError(f"the audio front-end runs at 4-48 kHz, got {rate}")
        if not 1 <= n_channels <= 128:
            raise InputError(f"n_channels must be 1..128, got {n_channels}")
        f_hi = 0.45 * rate if f_hi is None else f_hi
        if not 0 < f_lo < f_hi < rate / 2:
            raise InputError(f"need 0 < f_lo < f_hi < rate / 2, got {f_lo}, {f_hi}")
        if not 1 <= env_shift <= 16:
            raise InputError("env_shift must be 1..16")
        self.rate, self.n = int(rate), int(n_channels)
        self.hop = int(round(hop_ms * 1e-3 * rate))
        if self.hop < 1:
            raise InputError("hop_ms is shorter than one sample")
        self.env_shift = int(env_shift)
        self.fc = center_frequencies(self.n, f_lo, f_hi)
        self.coef = np.array([bandpass_q28(f, rate, q) for f in self.fc], np.int64)
        self.threshold = int(threshold)
        self.reset()

    def reset(self):
        self.state = np.zeros((self.n, 4), np.int64)
        self.env = np.zeros(self.n, np.int64)
        self.phase = np.zeros(1, np.int64)
        from ..frontends.encoders import DeltaEncoder

        self.delta = DeltaEncoder(self.n, self.threshold, ref0=0, fixed=True)

    def process(self, x) -> np.ndarray:
        """int16 samples -> (rows, n_channels) int32 log envelopes (Q4 log2), continuing the state."""
        x = np.asarray(x)
        if x.ndim != 1 or not (np.issubdtype(x.dtype, np.integer)):
            raise InputError(f"the audio front-end takes 1-D int16 samples, got {x.dtype} {x.shape}")
        if x.size and (x.min() < -32768 or x.max() > 32767):
            raise InputError("samples must be in the int16 range")
        x = np.ascontiguousarray(x, dtype=np.int16)
        out = np.zeros(((x.size + int(self.phase[0])) // self.hop + 1, self.n), np.int32)
        rows = filterbank_kernel(x, self.coef, self.state, self.env, self.env_shift, self.hop, self.phase, out)
        return out[:rows]

    def raster(self, x) -> np.ndarray:
        """(rows, 2 * n_channels) int8 ON/OFF spikes of the log envelopes."""
        return self.delta.raster(self.process(x))

    def events(self, x):
        from ..frontends.encoders import events_from_raster

        return events_from_raster(self.raster(x))


def benchmark(seconds: float = 10.0, rate: int = 16000, n_channels: int = 32) -> dict:
    """Throughput of the front-end (filterbank + envelope + log + delta spikes) on noise, one core."""
    rng = np.random.default_rng(0)
    x = rng.integers(-8000, 8000, int(seconds * rate)).astype(np.int16)
    fe = AudioFrontend(rate, n_channels)
    fe.raster(x[:rate // 10])
    fe.reset()
    t = time.perf_counter()
    fe.raster(x)
    wall = time.perf_counter() - t
    return {"rate": rate, "channels": n_channels, "samples": int(x.size), "wall_s": wall,
            "samples_per_s": x.size / wall, "realtime_factor": seconds / wall}
