"""Learning rules as pure step functions over explicit arrays (docs/learning.md states them to the bit).

Fixed point (the device's arithmetic, mirrored by the C runtime): ``@njit`` functions on int32 / int64
arrays, every rounding a floor written with shifts of non-negative values only (``rs``), stochastic
rounding from the project PRNG. Float twin: the same formulas in numpy float64, in the same units
(fixed-point units, real-valued), with no floor, no stochastic rounding; weights clipped to +-32767 units.

The family: dw_ij = eta * g_i * e_j with g_i = L_i * psi_i (+ regulariser), eta = 2^-k.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..kernels.arith import decay, sat_add
from ..kernels.prng import next_u32

TRACE_ONE = 256      # a presynaptic event adds 256 to its trace (Q8 spikes)
PSI_ONE = 256        # the surrogate derivative's peak (Q8)
PSI_BITS = 8
FB_BITS = 6          # feedback / local-readout weights are int8 in -64..63, i.e. Q6
W_MAX = 32767        # plastic weights are int16 in -32767..32767
ERR_MAX = 32767      # errors are clipped to +-ERR_MAX (readout units)
I32_MAX = 2**31 - 1
K_MAX = 31           # eta = 2^-k, k in 0..31

STREAM_LEARN = 0x4C524E00     # ASCII 'LRN\0': stochastic rounding of plastic layer l: STREAM_LEARN + l
STREAM_FEEDBACK = 0x46424B00  # ASCII 'FBK\0': feedback / local readout matrix of layer l: STREAM_FEEDBACK + l


# ---------------------------------------------------------------- integer helpers

@njit(cache=True)
def rs(a, k):
    """floor(a / 2^k) for int64 a, 0 <= k <= 62, with shifts of non-negative values only (C: the same)."""
    a = np.int64(a)
    if a >= 0:
        return a >> np.int64(k)
    return -((-a + (np.int64(1) << np.int64(k)) - 1) >> np.int64(k))


@njit(cache=True)
def clip64(x, lo, hi):
    return min(max(np.int64(x), np.int64(lo)), np.int64(hi))


def psi_recip(theta: int) -> int:
    """R = floor(2^24 / theta), the per-layer constant of the surrogate (computed once, at set-up)."""
    return (1 << 24) // int(theta)


def feedback_matrix(seed: int, layer: int, n_rows: int, n_cols: int) -> np.ndarray:
    """A fixed random int8 matrix (n_rows, n_cols) in -64..63 (Q6) from the project PRNG, stream
    STREAM_FEEDBACK + layer, row-major, one draw per entry: b = (next_u32 >> 25) - 64."""
    from ..kernels.prng import seed_state
    s = seed_state(seed, (STREAM_FEEDBACK + layer) & 0xFFFFFFFF)
    out = np.empty(n_rows * n_cols, np.int8)
    _fill_feedback(s, out)
    return out.reshape(n_rows, n_cols)


@njit(cache=True)
def _fill_feedback(s, out):
    for k in range(out.shape[0]):
        out[k] = np.int64(next_u32(s) >> np.uint32(25)) - 64


# ---------------------------------------------------------------- fixed point kernels

@njit(cache=True)
def trace_fixed(e, D, src, n):
    """e_j = decay(e_j, D) for every j, then e_j = sat(e_j + 256) for each event j in src[:n] (repeats count)."""
    for j in range(e.shape[0]):
        e[j] = decay(e[j], D)
    for k in range(n):
        j = src[k]
        e[j] = sat_add(e[j], TRACE_ONE)


@njit(cache=True)
def center_fixed(e, m, cs, ec):
    """Centred trace: m_j = m_j + floor((e_j - m_j) / 2^cs) (a running mean), then ec_j = e_j - m_j."""
    for j in range(e.shape[0]):
        m[j] = m[j] + rs(np.int64(e[j]) - np.int64(m[j]), cs)
        ec[j] = np.int64(e[j]) - np.int64(m[j])


@njit(cache=True)
def trial_accumulate_fixed(e, acc, v, vsum):
    """One labelled step of a trial (readout, trial mode): acc_j = sat(acc_j + e_j) (int32), vsum_i += v_i
    (int64)."""
    for j in range(e.shape[0]):
        acc[j] = sat_add(acc[j], e[j])
    for i in range(v.shape[0]):
        vsum[i] += np.int64(v[i])


@njit(cache=True)
def floor_div(a, n):
    """floor(a / n) for int64 a and n >= 1, dividing non-negative values only (C: the same)."""
    a = np.int64(a)
    if a >= 0:
        return a // np.int64(n)
    return -((-a + np.int64(n) - 1) // np.int64(n))


@njit(cache=True)
def trial_means_fixed(acc, vsum, n, m, cs, keep, ec, vbar):
    """End of a trial of n >= 1 labelled steps: ebar_j = floor(acc_j / n), vbar_i = floor(vsum_i / n);
    the running mean over trials m_j = m_j + floor((ebar_j - m_j) / 2^cs) (cs = 0: m stays 0), then
    ec_j = clip(ebar_j - m_j + floor(m_j / 2^keep), +-(2^31 - 1)) (the centred mean trace, keeping 2^-keep
    of the mean: a full centring leaves the classes' offsets w . m unlearned, and the readout has no bias)."""
    for j in range(acc.shape[0]):
        eb = floor_div(acc[j], n)
        if cs > 0:
            m[j] = m[j] + rs(eb - np.int64(m[j]), cs)
        ec[j] = clip64(eb - np.int64(m[j]) + rs(m[j], keep), -I32_MAX, I32_MAX)
    for i in range(vsum.shape[0]):
        vbar[i] = floor_div(vsum[i], n)


@njit(cache=True)
def surrogate_fixed(v, spk, n_spk, a_old, theta, reset_sub, R, psi, flag):
    """psi_i (Q8, 0..256) of a spiking layer after its step: v is the membrane after reset, spk[:n_spk]
    the spike list, a_old the adaptation before the step (empty unless ALIF).
    u = v_pre - th with v_pre = v + theta * s (reset by subtraction), th = theta + a_old;
    reset to zero: u = 0 for a neuron that spiked. psi = ((max(0, theta - |u|)) * R) >> 16."""
    n = v.shape[0]
    for i in range(n):
        flag[i] = 0
    for k in range(n_spk):
        flag[spk[k]] = 1
    alif = a_old.shape[0] > 0
    for i in range(n):
        th = np.int64(theta)
        if alif:
            th += np.int64(a_old[i])
        if flag[i] and not reset_sub:
            u = np.int64(0)
        else:
            u = np.int64(v[i]) + np.int64(theta) * flag[i] - th
        m = abs(u)
        if m >= theta:
            psi[i] = 0
        else:
            psi[i] = np.int64((np.uint64(theta - m) * np.uint64(R)) >> np.uint64(16))


@njit(cache=True)
def readout_error_fixed(v, label, y_one, err, hinge=False):
    """err_k = clip(tgt_k - v_k, +-32767) with tgt = y_one for k == label, 0 otherwise; label < 0: err = 0.
    hinge: one-sided, err_label = max(0, .) (push up only while below y_one), err_k = min(0, .) for the
    other classes (push down only while above 0)."""
    for k in range(v.shape[0]):
        if label < 0:
            err[k] = 0
        else:
            t = np.int64(y_one) if k == label else np.int64(0)
            d = clip64(t - np.int64(v[k]), -ERR_MAX, ERR_MAX)
            if hinge:
                d = max(d, np.int64(0)) if k == label else min(d, np.int64(0))
            err[k] = d


@njit(cache=True)
def project_fixed(B, err, L):
    """L_i = floor(sum_k B[k, i] * err_k / 2^6), clipped to int32 (e-prop, DECOLLE: B is (n_cls, n))."""
    for i in range(L.shape[0]):
        s = np.int64(0)
        for k in range(B.shape[0]):
            s += np.int64(B[k, i]) * np.int64(err[k])
        L[i] = clip64(rs(s, FB_BITS), -I32_MAX, I32_MAX)


@njit(cache=True)
def target_signal_fixed(B, label, y_one, L):
    """ETLP / DRTP: L_i = floor(B[label, i] * y_one / 2^6); label < 0: 0."""
    for i in range(L.shape[0]):
        if label < 0:
            L[i] = 0
        else:
            L[i] = clip64(rs(np.int64(B[label, i]) * np.int64(y_one), FB_BITS), -I32_MAX, I32_MAX)


@njit(cache=True)
def local_readout_fixed(y, D, G, spk, n_spk):
    """DECOLLE local readout (LI, fixed weights G (n_cls, n) in Q6): y_k = sat(decay(y_k, D) + sum over
    spikes i of G[k, i])."""
    for k in range(y.shape[0]):
        acc = np.int64(0)
        for s in range(n_spk):
            acc += G[k, spk[s]]
        y[k] = sat_add(decay(y[k], D), np.int32(clip64(acc, -I32_MAX, I32_MAX)))


@njit(cache=True)
def rate_reg_fixed(q, D, spk, n_spk, lo, hi, shift, greg):
    """Rate trace q_i = decay(q_i, D) + 256 s_i; greg_i = floor((lo - q_i) / 2^shift) if q_i < lo,
    floor((hi - q_i) / 2^shift) if q_i > hi, else 0 (lo = -1: no lower bound; hi = -1: no upper)."""
    for i in range(q.shape[0]):
        q[i] = decay(q[i], D)
    for s in range(n_spk):
        q[spk[s]] = sat_add(q[spk[s]], TRACE_ONE)
    for i in range(q.shape[0]):
        x = np.int64(q[i])
        r = np.int64(0)
        if lo >= 0 and x < lo:
            r = rs(np.int64(lo) - x, shift)
        elif hi >= 0 and x > hi:
            r = rs(np.int64(hi) - x, shift)
        greg[i] = r


@njit(cache=True)
def gate_fixed(L, psi, greg, g):
    """g_i = clip(floor(L_i * psi_i / 2^8) + greg_i, +-(2^31 - 1))."""
    for i in range(g.shape[0]):
        g[i] = clip64(rs(np.int64(L[i]) * np.int64(psi[i]), PSI_BITS) + greg[i], -I32_MAX, I32_MAX)


@njit(cache=True)
def update_fixed(w, w_off, n_out, e, g, k, rng, nz):
    """w[w_off + j * n_out + i] += floor((g_i * e_j + r) / 2^k), then clip to +-32767, for every j with
    e_j != 0 (ascending) and, inside, every i with g_i != 0 (ascending); r = next_u32 >> (32 - k), one draw
    per updated synapse in that order (k = 0: r = 0, no draw). Returns the number of synapses updated."""
    m = 0
    for i in range(n_out):
        if g[i] != 0:
            nz[m] = i
            m += 1
    if m == 0:
        return 0
    cnt = 0
    sh = np.uint32(32 - k)
    for j in range(e.shape[0]):
        ej = np.int64(e[j])
        if ej == 0:
            continue
        base = w_off + j * n_out
        for t in range(m):
            i = nz[t]
            p = np.int64(g[i]) * ej
            if k > 0:
                p += np.int64(next_u32(rng) >> sh)
            d = rs(p, k)
            w[base + i] = clip64(np.int64(w[base + i]) + d, -W_MAX, W_MAX)
            cnt += 1
    return cnt


@njit(cache=True)
def nlms_shift_fixed(e, k_base):
    """Normalised rate: S = sum_j (|e_j| >> 4)^2 (uint64, saturated at 2^62), k = clip(k_base + ilog2(S), 0, 31)
    with ilog2(S) = floor(log2 S) for S >= 1 (31 - clz in C, on 64 bits: 63 - clz64) and 0 for S = 0."""
    S = np.uint64(0)
    cap = np.uint64(1) << np.uint64(62)
    for j in range(e.shape[0]):
        a = np.int64(e[j])
        m = np.uint64(-a if a < 0 else a) >> np.uint64(4)
        S = S + m * m
        if S > cap:
            S = cap
    lg = 0
    while S > np.uint64(1):
        S = S >> np.uint64(1)
        lg += 1
    return min(max(k_base + lg, 0), K_MAX)


def nlms_shift_float(e, k_base):
    S = float(np.sum((np.abs(e) / 16.0) ** 2))
    lg = int(math.floor(math.log2(S))) if S >= 1 else 0
    return min(max(k_base + lg, 0), K_MAX)


@njit(cache=True)
def weight_decay_fixed(w, w_off, n, kd, rng):
    """L2 weight decay (once per sample): w_s -= floor((w_s + r) / 2^kd), r = next_u32 >> (32 - kd), for
    s = w_off .. w_off + n - 1 in order, one draw each (stochastic rounding of w / 2^kd; kd in 1..31)."""
    sh = np.uint32(32 - kd)
    for s in range(w_off, w_off + n):
        p = np.int64(w[s]) + np.int64(next_u32(rng) >> sh)
        w[s] = np.int64(w[s]) - rs(p, kd)


@njit(cache=True)
def events_to_counts(src, n, x):
    """x_j = 256 * (events of input j in src[:n]) (the LTD factor of STDP)."""
    for j in range(x.shape[0]):
        x[j] = 0
    for s in range(n):
        x[src[s]] += TRACE_ONE


@njit(cache=True)
def stdp_signals(spk, n_spk, y, a_plus, a_minus, g_ltp, g_ltd):
    """g_ltp_i = a_plus * s_i;  g_ltd_i = -a_minus * y_i (y: post trace before this step's spikes)."""
    for i in range(g_ltp.shape[0]):
        g_ltp[i] = 0
        g_ltd[i] = -np.int64(a_minus) * np.int64(y[i])
    for s in range(n_spk):
        g_ltp[spk[s]] = a_plus


@njit(cache=True)
def eligibility_fixed(c, D, n_out, e, x, g_ltp, g_ltd):
    """R-STDP per-synapse eligibility: c_ij = sat32(decay(c_ij, D) + g_ltp_i * e_j + g_ltd_i * x_j)."""
    n_in = e.shape[0]
    for j in range(n_in):
        ej = np.int64(e[j])
        xj = np.int64(x[j])
        base = j * n_out
        for i in range(n_out):
            val = np.int64(decay(c[base + i], D)) + np.int64(g_ltp[i]) * ej + np.int64(g_ltd[i]) * xj
            c[base + i] = clip64(val, -I32_MAX - 1, I32_MAX)


@njit(cache=True)
def reward_update_fixed(w, w_off, n_out, c, R, k, rng):
    """w_ij += floor((R_i * c_ij + r) / 2^k), clipped to +-32767, for j ascending, i ascending with
    R_i != 0 and c_ij != 0; r as in update_fixed (one draw per updated synapse)."""
    n_in = c.shape[0] // n_out
    sh = np.uint32(32 - k)
    cnt = 0
    for j in range(n_in):
        base = j * n_out
        for i in range(n_out):
            ri = np.int64(R[i])
            cij = np.int64(c[base + i])
            if ri == 0 or cij == 0:
                continue
            p = ri * cij
            if k > 0:
                p += np.int64(next_u32(rng) >> sh)
            w[w_off + base + i] = clip64(np.int64(w[w_off + base + i]) + rs(p, k), -W_MAX, W_MAX)
            cnt += 1
    return cnt


# ---------------------------------------------------------------- float twins (numpy, float64)

def trace_float(e, beta, src):
    e *= beta
    np.add.at(e, src, TRACE_ONE)


def center_float(e, m, cs):
    m += (e - m) / 2.0**cs
    return e - m


def trial_means_float(acc, vsum, n, m, cs, keep):
    """The float twin of trial_means_fixed: returns (ec, vbar); updates m in place."""
    eb = acc / n
    if cs:
        m += (eb - m) / 2.0**cs
    return eb - m + m / 2.0**keep, vsum / n


def surrogate_float(u_v, spk_flags, a_old, theta, reset_sub):
    """The same psi in real arithmetic; u_v: membrane after reset (fixed units, real-valued)."""
    th = theta + (a_old if a_old is not None else 0.0)
    u = u_v + theta * spk_flags - th
    if not reset_sub:
        u = np.where(spk_flags > 0, 0.0, u)
    return np.maximum(0.0, theta - np.abs(u)) * (PSI_ONE / theta)


def readout_error_float(v, label, y_one, hinge=False):
    if label < 0:
        return np.zeros_like(v)
    t = np.zeros_like(v)
    t[label] = y_one
    d = np.clip(t - v, -ERR_MAX, ERR_MAX)
    if hinge:
        lab = d[label]
        d = np.minimum(d, 0.0)
        d[label] = max(lab, 0.0)
    return d


def project_float(B, err):
    return (B.astype(np.float64).T @ err) / 2.0**FB_BITS


def target_signal_float(B, label, y_one, n):
    if label < 0:
        return np.zeros(n)
    return B[label].astype(np.float64) * y_one / 2.0**FB_BITS


def rate_reg_float(q, beta, spk, lo, hi, shift):
    q *= beta
    np.add.at(q, spk, TRACE_ONE)
    r = np.zeros_like(q)
    if lo >= 0:
        r = np.where(q < lo, (lo - q) / 2.0**shift, r)
    if hi >= 0:
        r = np.where(q > hi, (hi - q) / 2.0**shift, r)
    return r


def update_float(W, e, g, k):
    """W (n_in, n_out) in fixed units, real-valued: W += outer(e, g) / 2^k, clipped to +-32767."""
    W += np.outer(e, g) / 2.0**k
    np.clip(W, -W_MAX, W_MAX, out=W)
