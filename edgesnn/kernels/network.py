"""One time step of a whole network, and the loops that repeat it.

``step_core`` runs every layer of a program (see layout.py) for one step of input events; it is the only
place where a step is defined. ``step`` (one call per step, for streaming), ``run_steps`` (many steps in
one compiled call) and ``run_batch`` (many samples in parallel) all call it, so the three paths give
identical results by construction. Each compiles once for fixed point and once for float.
"""
import numpy as np
from numba import njit, prange

from .layout import (CONV2D, DENSE, ERR_INPUT_INDEX, FLATTEN, L_A_OFF, L_I_OFF, L_IN_C,
                     L_IN_H, L_IN_W, L_KH, L_KIND, L_KW, L_N_IN, L_N_OUT, L_NEURON, L_OUT_C, L_OUT_H,
                     L_OUT_W, L_PAD, L_R_OFF, L_REF_STEPS, L_RESET, L_S_OFF, L_STRIDE, L_V_OFF, L_W_OFF,
                     L_W_POOL, L_WREC_OFF, OK, P_A_INC, P_DA, P_DI, P_DV, P_POOL_W, P_THETA,
                     RECURRENT, SUMPOOL2D)
from .neurons import update_population
from .synapses import conv_scatter, dense_rows, pool_scatter


@njit(cache=True)
def _rows(w, off, n_in, n_out, src, s0, n, acc, acc16):
    W = w[off:off + n_in * n_out].reshape((n_in, n_out))
    dense_rows(W, src, s0, n, acc, acc16)


@njit(cache=True)
def step_core(ltab, ptab, wa, wb, vs, ist, inp, i0, n_inp, acc, acc16):
    """Advance the state (vs, ist) by one step of input events inp[i0:i0 + n_inp]. Returns a status."""
    n_layers = ltab.shape[0]
    cnt_off = ist.shape[0] - n_layers
    n_in0 = ltab[0, L_N_IN]
    for k in range(i0, i0 + n_inp):  # refuse bad input before any state changes
        if inp[k] < 0 or inp[k] >= n_in0:
            return ERR_INPUT_INDEX

    src = inp
    s0 = i0
    n_src = n_inp
    for l in range(n_layers):
        kind = ltab[l, L_KIND]
        s_off = ltab[l, L_S_OFF]
        if kind == FLATTEN:  # same indices, kept so that every layer has a spike list
            for k in range(n_src):
                ist[s_off + k] = src[s0 + k]
            ist[cnt_off + l] = n_src
            src = ist
            s0 = s_off
            continue

        n_in = ltab[l, L_N_IN]
        n_out = ltab[l, L_N_OUT]
        for o in range(n_out):
            acc[o] = 0
        if kind == DENSE or kind == RECURRENT:
            if ltab[l, L_W_POOL] == 0:
                _rows(wa, ltab[l, L_W_OFF], n_in, n_out, src, s0, n_src, acc, acc16)
            else:
                _rows(wb, ltab[l, L_W_OFF], n_in, n_out, src, s0, n_src, acc, acc16)
            if kind == RECURRENT:  # the layer's own spikes of the previous step
                n_prev = ist[cnt_off + l]
                if ltab[l, L_W_POOL] == 0:
                    _rows(wa, ltab[l, L_WREC_OFF], n_out, n_out, ist, s_off, n_prev, acc, acc16)
                else:
                    _rows(wb, ltab[l, L_WREC_OFF], n_out, n_out, ist, s_off, n_prev, acc, acc16)
        elif kind == CONV2D:
            args = (ltab[l, L_IN_C], ltab[l, L_IN_H], ltab[l, L_IN_W], ltab[l, L_OUT_C], ltab[l, L_OUT_H],
                    ltab[l, L_OUT_W], ltab[l, L_KH], ltab[l, L_KW], ltab[l, L_STRIDE], ltab[l, L_PAD])
            if ltab[l, L_W_POOL] == 0:
                conv_scatter(wa, ltab[l, L_W_OFF], *args, src, s0, n_src, acc)
            else:
                conv_scatter(wb, ltab[l, L_W_OFF], *args, src, s0, n_src, acc)
        elif kind == SUMPOOL2D:
            pool_scatter(ptab[l, P_POOL_W], ltab[l, L_IN_H], ltab[l, L_IN_W], ltab[l, L_OUT_H],
                         ltab[l, L_OUT_W], ltab[l, L_KH], ltab[l, L_STRIDE], src, s0, n_src, acc)

        cnt = update_population(ltab[l, L_NEURON], n_out, acc, vs, ltab[l, L_V_OFF], ltab[l, L_I_OFF],
                                ltab[l, L_A_OFF], ist, ltab[l, L_R_OFF], s_off, ltab[l, L_RESET],
                                ltab[l, L_REF_STEPS], ptab[l, P_DV], ptab[l, P_DI],
                                ptab[l, P_DA], ptab[l, P_THETA], ptab[l, P_A_INC])
        ist[cnt_off + l] = cnt
        src = ist
        s0 = s_off
        n_src = cnt
    return OK


@njit(cache=True)
def scratch(ltab, vs):
    """Accumulators sized for the widest layer: one of the state's type, one int16 for partial sums."""
    width = 1
    for l in range(ltab.shape[0]):
        width = max(width, ltab[l, L_N_OUT])
    return np.zeros(width, vs.dtype), np.zeros(width, np.int16)


@njit(cache=True)
def step(ltab, ptab, wa, wb, vs, ist, inp):
    """One streaming step: the events of this step are all of ``inp``."""
    acc, acc16 = scratch(ltab, vs)
    return step_core(ltab, ptab, wa, wb, vs, ist, inp, 0, inp.shape[0], acc, acc16)


@njit(cache=True)
def _record(ltab, vs, ist, t, out_spk, out_v, rec_spk, rec_vs):
    n_layers = ltab.shape[0]
    cnt_off = ist.shape[0] - n_layers
    last = n_layers - 1
    if out_spk.shape[0] > 0:
        s_off = ltab[last, L_S_OFF]
        for k in range(ist[cnt_off + last]):
            out_spk[t, ist[s_off + k]] = 1
    if out_v.shape[0] > 0:
        v_off = ltab[last, L_V_OFF]
        for k in range(ltab[last, L_N_OUT]):
            out_v[t, k] = vs[v_off + k]
    if rec_spk.shape[0] > 0:
        base = 0
        for l in range(n_layers):
            s_off = ltab[l, L_S_OFF]
            for k in range(ist[cnt_off + l]):
                rec_spk[t, base + ist[s_off + k]] = 1
            base += ltab[l, L_N_OUT]
    if rec_vs.shape[0] > 0:
        for k in range(vs.shape[0]):
            rec_vs[t, k] = vs[k]


@njit(cache=True)
def run_steps(ltab, ptab, wa, wb, vs, ist, ev_idx, ev_ptr, out_spk, out_v, rec_spk, rec_vs):
    """Run len(ev_ptr) - 1 steps; step t's events are ev_idx[ev_ptr[t]:ev_ptr[t + 1]].

    Records whatever arrays have rows (pass shape (0, n) to skip one): output spikes, output membrane,
    spikes of every layer (layers concatenated, Flatten included), the whole numeric state.
    Returns (status, steps done).
    """
    acc, acc16 = scratch(ltab, vs)
    n_steps = ev_ptr.shape[0] - 1
    for t in range(n_steps):
        st = step_core(ltab, ptab, wa, wb, vs, ist, ev_idx, ev_ptr[t], ev_ptr[t + 1] - ev_ptr[t], acc, acc16)
        if st != OK:
            return st, t
        _record(ltab, vs, ist, t, out_spk, out_v, rec_spk, rec_vs)
    return OK, n_steps


@njit(cache=True, parallel=True)
def run_batch(ltab, ptab, wa, wb, vs0, ist0, ev_idx, ev_ptr, out_spk, out_v, status):
    """Samples in parallel, each from the state (vs0, ist0): sample b's step t has the events
    ev_idx[ev_ptr[b, t]:ev_ptr[b, t + 1]]. out_spk / out_v are (B, T, n_out) or (B, 0, n_out)."""
    n_batch = ev_ptr.shape[0]
    n_steps = ev_ptr.shape[1] - 1
    empty_spk = np.zeros((0, 1), np.int8)
    empty_vs = np.zeros((0, 1), vs0.dtype)
    for b in prange(n_batch):
        vs = vs0.copy()
        ist = ist0.copy()
        acc, acc16 = scratch(ltab, vs)
        status[b] = OK
        for t in range(n_steps):
            st = step_core(ltab, ptab, wa, wb, vs, ist, ev_idx, ev_ptr[b, t], ev_ptr[b, t + 1] - ev_ptr[b, t],
                           acc, acc16)
            if st != OK:
                status[b] = st
                break
            _record(ltab, vs, ist, t, out_spk[b], out_v[b], empty_spk, empty_vs)


@njit(cache=True)
def dense_to_events(x):
    """(T, n) array of event counts (0, 1, ...) -> (ev_idx, ev_ptr); a count of k repeats the index k times."""
    n_steps, n = x.shape
    total = 0
    for t in range(n_steps):
        for j in range(n):
            total += max(0, x[t, j])
    ev_idx = np.empty(total, np.int32)
    ev_ptr = np.zeros(n_steps + 1, np.int64)
    p = 0
    for t in range(n_steps):
        for j in range(n):
            for _ in range(max(0, x[t, j])):
                ev_idx[p] = j
                p += 1
        ev_ptr[t + 1] = p
    return ev_idx, ev_ptr


