"""Neuron population update for one time step: (parameters, state, input current) -> (state, spikes).

Written once; Numba compiles it for int32 state (the fixed-point contract) and for float32 state (the
float twin) through ``decay`` and ``sat_add``. The order of operations below is the contract
(docs/numerics.md, "One step of a neuron"); the C runtime performs the same operations in the same order.
Spikes are written as indices into ``ist[s_off:]``; the count is returned.

Every kind runs in two passes: an update pass that writes each neuron's spike flag as a byte, then
``spike_list`` collects the indices that fired, in increasing order. (Byte flags, rather than flags
written over the int32 input, also keep the flag stores from 4K-aliasing with the membrane loads, which
slowed the loop by up to 1.7x depending on where the buffers happened to lie.) The common kinds
(LIF/IF without refractory period, LI) have their own update loops with no branch inside, which compile
to SIMD code; the others share one scalar loop. ``forceinline`` and ``_nrt=False``: see network.py.
"""
import numpy as np
from numba import njit, types
from numba.extending import overload
from numba.cpython.unsafe.numbers import trailing_zeros

from .arith import DECAY_ONE, INT32_MAX, INT32_MIN, decay, sat_add
from .layout import ALIF, CUBA, IF, LI, LIF, RESET_SUBTRACT

U = np.uint64  # unsigned indices: no negative-index wraparound in the loops (see synapses.py)


@njit(cache=True, forceinline=True)
def spike_list(flags64, n, out, out_off):
    """Write the indices k < n whose spike flag (byte k of the flags) is set to out[out_off:], in order;
    return how many.

    The flags are read eight at a time as 64-bit words (little-endian: byte j is neuron 8i + j; Numba
    runs on little-endian targets only). Spikes are sparse and fall at
    random, so a test per word would mispredict about once per spike; instead one branch-free (SIMD) loop
    makes a bit mask of the non-zero words among 64, and only those words are visited, by counting
    trailing zero bits, first in the mask and then in the word."""
    o0 = U(out_off)
    nn = U(n)
    cnt = U(0)
    n_words = (nn + U(7)) >> U(3)
    for g in range(U(0), n_words, U(64)):
        nonzero = U(0)
        for i in range(g, min(n_words, g + U(64))):
            nonzero |= U(flags64[i] != 0) << (i - g)
        while nonzero:
            i = g + trailing_zeros(nonzero)
            nonzero &= nonzero - U(1)
            w = flags64[i]
            base = i << U(3)
            if nn - base < U(8):  # bytes past n hold the flags of a wider layer
                w &= (U(1) << ((nn - base) << U(3))) - U(1)
            while w:
                out[o0 + cnt] = base + (trailing_zeros(w) >> U(3))
                cnt += U(1)
                w &= w - U(1)
    return np.int64(cnt)


@njit(cache=True, forceinline=True)
def _li(vs, v_off, acc, n, dv):
    v0 = U(v_off)
    for k in range(U(n)):
        vs[v0 + k] = sat_add(decay(vs[v0 + k], dv), acc[k])


def _narrow(theta, vs):
    """theta in the state's type: int32 in fixed point, so that the SIMD compare works on 8 lanes rather
    than 4 int64 lanes; the caller checks that it fits (``_fits``)."""


def _fits(theta, vs):
    """True when theta converts to the state's type exactly."""


@overload(_narrow)
def _narrow_impl(theta, vs):
    if isinstance(vs.dtype, types.Integer):
        return lambda theta, vs: np.int32(theta)
    return lambda theta, vs: theta


@overload(_fits)
def _fits_impl(theta, vs):
    if isinstance(vs.dtype, types.Integer):
        return lambda theta, vs: INT32_MIN <= theta <= INT32_MAX
    return lambda theta, vs: True


def _multiply_form(d):
    """(is d a multiple of 2^12, d with its low 12 bits cleared) in fixed point; (True, d) in float.

    A multiply-form decay is a multiple of 2^12; the loops are then given the cleared d, in which LLVM
    sees that the low part of the multiplier is 0 and drops two of the four products of arith.decay.
    (Tested as d & (2^12 - 1) == 0 rather than as cleared == d, which LLVM would answer by using d.)"""
    raise NotImplementedError("_multiply_form is only callable from Numba-compiled code")


@overload(_multiply_form)
def _multiply_form_impl(d):
    if isinstance(d, types.Integer):
        return lambda d: (d & (DECAY_ONE - 1) == 0, d & -DECAY_ONE)
    return lambda d: (True, d)


@njit(cache=True, forceinline=True)
def _lif_subtract(vs, v_off, acc, flags, n, dv, theta):
    """LIF / IF without refractory period, reset by subtraction (IF has dv = the identity)."""
    v0 = U(v_off)
    th = _narrow(theta, vs)
    for k in range(U(n)):
        x = sat_add(decay(vs[v0 + k], dv), acc[k])
        fired = x >= th
        vs[v0 + k] = x - th * fired
        flags[k] = fired


@njit(cache=True, forceinline=True)
def _lif_zero(vs, v_off, acc, flags, n, dv, theta):
    """LIF / IF without refractory period, reset to zero."""
    v0 = U(v_off)
    th = _narrow(theta, vs)
    for k in range(U(n)):
        x = sat_add(decay(vs[v0 + k], dv), acc[k])
        fired = x >= th
        vs[v0 + k] = x * (1 - fired)
        flags[k] = fired


@njit(cache=True)
def _general(neuron, n, acc, flags, vs, v_off, i_off, a_off, ist, r_off, reset, ref_steps, dv, di, da, theta,
             a_inc):
    """Any spiking kind, with or without refractory period (scalar code: CUBA, ALIF, refractory)."""
    cuba = neuron == CUBA
    alif = neuron == ALIF
    subtract = reset == RESET_SUBTRACT
    has_ref = ref_steps > 0
    for k in range(n):
        x = acc[k]
        if cuba:
            x = sat_add(decay(vs[i_off + k], di), x)
            vs[i_off + k] = x
        v = decay(vs[v_off + k], dv)
        refractory = False
        if has_ref and ist[r_off + k] > 0:
            ist[r_off + k] -= 1  # input is ignored while refractory; the leak goes on
            refractory = True
        else:
            v = sat_add(v, x)
        th = theta
        if alif:
            a = vs[a_off + k]
            th = theta + a
        fired = (not refractory) and v >= th
        if fired:
            if subtract:
                v = v - theta
            else:
                v = v * 0
            if has_ref:
                ist[r_off + k] = ref_steps
        if alif:
            vs[a_off + k] = sat_add(decay(vs[a_off + k], da), a_inc * fired)
        vs[v_off + k] = v
        flags[k] = fired


@njit(cache=True, _nrt=False, forceinline=True)
def update_population(neuron, n, acc, flags, flags64, vs, v_off, i_off, a_off, ist, r_off, s_off,
                      reset, ref_steps, dv, di, da, theta, a_inc):
    """Decay constants dv, di, da are Q24 multipliers (fixed) or betas (float); see arith.decay.
    ``flags`` (uint8, at least n rounded up to 8 long) and ``flags64`` (its uint64 view) are scratch."""
    mult, dm = _multiply_form(dv)
    if neuron == LI:
        if mult:
            _li(vs, v_off, acc, n, dm)
        else:
            _li(vs, v_off, acc, n, dv)
        return 0
    if (neuron == LIF or neuron == IF) and ref_steps == 0 and _fits(theta, vs):
        if reset == RESET_SUBTRACT:
            if mult:
                _lif_subtract(vs, v_off, acc, flags, n, dm, theta)
            else:
                _lif_subtract(vs, v_off, acc, flags, n, dv, theta)
        elif mult:
            _lif_zero(vs, v_off, acc, flags, n, dm, theta)
        else:
            _lif_zero(vs, v_off, acc, flags, n, dv, theta)
    else:
        _general(neuron, n, acc, flags, vs, v_off, i_off, a_off, ist, r_off, reset, ref_steps, dv, di, da,
                 theta, a_inc)
    return spike_list(flags64, n, ist, s_off)
