"""Neuron population update for one time step: (parameters, state, input current) -> (state, spikes).

Written once; Numba compiles it for int32 state (the fixed-point contract) and for float32 state (the
float twin) through ``decay`` and ``sat_add``. The order of operations below is the contract
(docs/numerics.md, "One step of a neuron"); the C runtime performs the same operations in the same order.
Spikes are written as indices into ``ist[s_off:]``; the count is returned.
"""
from numba import njit

from .arith import decay, sat_add
from .layout import ALIF, CUBA, IF, LI, LIF, RESET_SUBTRACT


@njit(cache=True)
def update_population(neuron, n, acc, vs, v_off, i_off, a_off, ist, r_off, s_off,
                      reset, ref_steps, dv, di, da, theta, a_inc):
    """Decay constants dv, di, da are Q24 multipliers (fixed) or betas (float); see arith.decay."""
    if neuron == LI:
        for k in range(n):
            vs[v_off + k] = sat_add(decay(vs[v_off + k], dv), acc[k])
        return 0

    cnt = 0
    if (neuron == LIF or neuron == IF) and ref_steps == 0:
        # the common case in two passes: a branch-free one that vectorises (the spike flag replaces the
        # spent input in acc), then the list of indices that fired
        subtract = reset == RESET_SUBTRACT
        for k in range(n):
            v = sat_add(decay(vs[v_off + k], dv), acc[k])
            fired = v >= theta
            vs[v_off + k] = v - theta * fired if subtract else v * (1 - fired)
            acc[k] = fired
        for k in range(n):
            if acc[k]:
                ist[s_off + cnt] = k
                cnt += 1
        return cnt

    for k in range(n):
        x = acc[k]
        if neuron == CUBA:
            x = sat_add(decay(vs[i_off + k], di), x)
            vs[i_off + k] = x
        v = decay(vs[v_off + k], dv)
        refractory = False
        if ref_steps > 0 and ist[r_off + k] > 0:
            ist[r_off + k] -= 1  # input is ignored while refractory; the leak goes on
            refractory = True
        else:
            v = sat_add(v, x)
        th = theta
        if neuron == ALIF:
            a = vs[a_off + k]
            th = theta + a
        fired = (not refractory) and v >= th
        if fired:
            if reset == RESET_SUBTRACT:
                v = v - theta
            else:
                v = v * 0
            if ref_steps > 0:
                ist[r_off + k] = ref_steps
            ist[s_off + cnt] = k
            cnt += 1
        if neuron == ALIF:
            vs[a_off + k] = sat_add(decay(vs[a_off + k], da), a_inc * fired)
        vs[v_off + k] = v
    return cnt
