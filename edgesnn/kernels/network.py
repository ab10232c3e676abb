"""One time step of a whole network, and the loops that repeat it.

``step_core`` runs every layer of a program (see layout.py) for one step of input events; it is the only
place where a step is defined. ``step`` (one call per step, for streaming), ``run_steps`` (many steps in
one compiled call) and ``run_batch`` (many samples in parallel) all call it, so the three paths give
identical results by construction. Each compiles once for fixed point and once for float.

Speed (none of it changes a result): the functions that run inside a step allocate nothing and are
compiled with ``_nrt=False``, i.e. without reference counting; otherwise Numba increfs and decrefs every
array argument of every call with atomic instructions, about a tenth of a small step. They are also
``forceinline``: LLVM then inlines them into the loops of ``run_steps``, ``step`` and ``run_batch``,
which saves the calls (each array argument is seven machine words) and lets it keep loop invariants in
registers. The cost is a longer first compilation (cached afterwards). The hot loops themselves are in
synapses.py and neurons.py. ``python benchmarks/kernels.py`` measures the result.
"""
import numpy as np
from numba import carray, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .layout import (CONV2D, DENSE, ERR_INPUT_COUNT, ERR_INPUT_INDEX, FLATTEN, MAX_EVENTS_PER_STEP, L_A_OFF, L_I_OFF, L_IN_C,
                     L_IN_H, L_IN_W, L_KH, L_KIND, L_KW, L_N_IN, L_N_OUT, L_NEURON, L_OUT_C, L_OUT_H,
                     L_OUT_W, L_PAD, L_R_OFF, L_REF_STEPS, L_RESET, L_S_OFF, L_STRIDE, L_V_OFF, L_W_OFF,
                     L_W_POOL, L_WREC_OFF, OK, P_A_INC, P_DA, P_DI, P_DV, P_POOL_W, P_THETA,
                     RECURRENT, SUMPOOL2D)
from .neurons import update_population
from .synapses import conv_scatter, dense_rows, pool_scatter


@njit(cache=True, _nrt=False, forceinline=True)
def _layer(l, ltab, ptab, wa, wb, vs, ist, src, s0, n_src, work):
    """Run layer l for one step on its input spikes src[s0:s0 + n_src]; returns its spike count."""
    kind = ltab[l, L_KIND]
    s_off = ltab[l, L_S_OFF]
    if kind == FLATTEN:  # same indices, kept so that every layer has a spike list
        for k in range(n_src):
            ist[s_off + k] = src[s0 + k]
        return n_src

    acc, acc16, flags, flags64 = work
    n_out = ltab[l, L_N_OUT]
    pool = ltab[l, L_W_POOL]
    if kind == DENSE or kind == RECURRENT:
        # the first rows store into acc rather than add to zeros (saves a pass over acc)
        if pool == 0:
            dense_rows(wa, ltab[l, L_W_OFF], n_out, src, s0, n_src, acc, acc16, True)
        else:
            dense_rows(wb, ltab[l, L_W_OFF], n_out, src, s0, n_src, acc, acc16, True)
        if kind == RECURRENT:  # the layer's own spikes of the previous step, still in its spike list
            n_prev = ist[ist.shape[0] - ltab.shape[0] + l]
            if pool == 0:
                dense_rows(wa, ltab[l, L_WREC_OFF], n_out, ist, s_off, n_prev, acc, acc16, False)
            else:
                dense_rows(wb, ltab[l, L_WREC_OFF], n_out, ist, s_off, n_prev, acc, acc16, False)
        return _neurons(l, ltab, ptab, vs, ist, acc, flags, flags64)
    for o in range(n_out):
        acc[o] = 0
    if kind == CONV2D:
        args = (ltab[l, L_IN_C], ltab[l, L_IN_H], ltab[l, L_IN_W], ltab[l, L_OUT_C], ltab[l, L_OUT_H],
                ltab[l, L_OUT_W], ltab[l, L_KH], ltab[l, L_KW], ltab[l, L_STRIDE], ltab[l, L_PAD])
        if pool == 0:
            conv_scatter(wa, ltab[l, L_W_OFF], *args, src, s0, n_src, acc)
        else:
            conv_scatter(wb, ltab[l, L_W_OFF], *args, src, s0, n_src, acc)
    elif kind == SUMPOOL2D:
        pool_scatter(ptab[l, P_POOL_W], ltab[l, L_IN_H], ltab[l, L_IN_W], ltab[l, L_OUT_H],
                     ltab[l, L_OUT_W], ltab[l, L_KH], ltab[l, L_STRIDE], src, s0, n_src, acc)

    return _neurons(l, ltab, ptab, vs, ist, acc, flags, flags64)


@njit(cache=True, _nrt=False, forceinline=True)
def _neurons(l, ltab, ptab, vs, ist, acc, flags, flags64):
    return update_population(ltab[l, L_NEURON], ltab[l, L_N_OUT], acc, flags, flags64, vs, ltab[l, L_V_OFF],
                             ltab[l, L_I_OFF], ltab[l, L_A_OFF], ist, ltab[l, L_R_OFF], ltab[l, L_S_OFF],
                             ltab[l, L_RESET], ltab[l, L_REF_STEPS], ptab[l, P_DV], ptab[l, P_DI],
                             ptab[l, P_DA], ptab[l, P_THETA], ptab[l, P_A_INC])


@njit(cache=True, _nrt=False, forceinline=True)
def _indices_ok(ltab, inp, i0, n):
    """True when every event inp[i0:i0 + n] is an input index of the network."""
    n_in0 = ltab[0, L_N_IN]
    bad = False
    for k in range(i0, i0 + n):  # no early exit: SIMD
        bad |= (inp[k] < 0) | (inp[k] >= n_in0)
    return not bad


@njit(cache=True, _nrt=False, forceinline=True)
def check_input(ltab, inp, i0, n_inp):
    """The status step_core gives one step of input events inp[i0:i0 + n_inp] before it changes any
    state: OK, or why they are refused."""
    if n_inp > max_events(ltab):
        return ERR_INPUT_COUNT
    return OK if _indices_ok(ltab, inp, i0, n_inp) else ERR_INPUT_INDEX


@njit(cache=True, _nrt=False, forceinline=True)
def valid_steps(ltab, ev_idx, ev_ptr):
    """How many leading steps of (ev_idx, ev_ptr) check_input accepts. When the steps follow each other
    in ev_idx (the usual case) and none is refused, their events are checked in one pass rather than in
    one short loop per step, which cost about a twentieth of a step of the W1 benchmark network."""
    n_steps = ev_ptr.shape[0] - 1
    limit = max_events(ltab)
    counts_ok = True  # every count within the limit and none negative, so the steps cover one range
    for t in range(n_steps):
        c = ev_ptr[t + 1] - ev_ptr[t]
        counts_ok &= (c >= 0) & (c <= limit)
    if counts_ok and n_steps > 0 and _indices_ok(ltab, ev_idx, ev_ptr[0], ev_ptr[n_steps] - ev_ptr[0]):
        return n_steps
    for t in range(n_steps):  # some step is refused, or the steps are not in order: find the first
        if check_input(ltab, ev_idx, ev_ptr[t], ev_ptr[t + 1] - ev_ptr[t]) != OK:
            return t
    return n_steps


@njit(cache=True, _nrt=False, forceinline=True)
def step_core(ltab, ptab, wa, wb, vs, ist, inp, i0, n_inp, work, checked):
    """Advance the state (vs, ist) by one step of input events inp[i0:i0 + n_inp]. Returns a status.
    ``work`` holds the scratch buffers made by ``scratch``. Unless ``checked`` (the caller has had
    check_input accept these events), bad input is refused here, before any state changes."""
    n_layers = ltab.shape[0]
    cnt_off = ist.shape[0] - n_layers
    if not checked:
        status = check_input(ltab, inp, i0, n_inp)
        if status != OK:
            return status

    src = inp
    s0 = i0
    cnt = n_inp
    for l in range(n_layers):  # each layer reads the spike list of the one before
        cnt = _layer(l, ltab, ptab, wa, wb, vs, ist, src, s0, cnt, work)
        ist[cnt_off + l] = cnt
        src = ist
        s0 = ltab[l, L_S_OFF]
    return OK


@njit(cache=True, _nrt=False, forceinline=True)
def max_events(ltab):
    """Input events one step may carry (docs/numerics.md, "Saturation"): 65535; fewer when the first
    layer is Flatten (its spike list holds n_out) or Recurrent with int16 weights (its own previous
    spikes add up to n_out more weights)."""
    kind = ltab[0, L_KIND]
    if kind == FLATTEN:
        return min(MAX_EVENTS_PER_STEP, ltab[0, L_N_OUT])
    if kind == RECURRENT and ltab[0, L_W_POOL] == 1:
        return MAX_EVENTS_PER_STEP - ltab[0, L_N_OUT]
    return MAX_EVENTS_PER_STEP


SCRATCH_BYTES = 7  # per neuron of the widest layer: synaptic input (4), int16 partial sum (2), flag (1)


@njit(cache=True)
def scratch_width(ltab):
    """Neurons in the widest layer, rounded up to a multiple of 8."""
    width = 8
    for l in range(ltab.shape[0]):
        width = max(width, ltab[l, L_N_OUT])
    return (width + 7) // 8 * 8


@njit(cache=True, forceinline=True)
def scratch_views(buf, vs):
    """The scratch buffers as views of ``buf`` (uint8, SCRATCH_BYTES per neuron of a width w that is a
    multiple of 8): the synaptic input in the state's type, int16 partial sums, one spike-flag byte per
    neuron and a uint64 view of the flags. Never initialised: each layer writes what it reads."""
    w = buf.shape[0] // SCRATCH_BYTES
    flags = buf[6 * w:7 * w]
    return buf[:4 * w].view(vs.dtype), buf[4 * w:6 * w].view(np.int16), flags, flags.view(np.uint64)


@njit(cache=True)
def scratch(ltab, vs):
    """Scratch buffers sized for the widest layer, as views of one allocation (see scratch_views)."""
    return scratch_views(np.empty(SCRATCH_BYTES * scratch_width(ltab), np.uint8), vs)


@njit(cache=True, forceinline=True)
def _step_with(ltab, ptab, wa, wb, vs, ist, inp, work):
    """``step`` with the scratch buffers ``work`` given (see scratch_views)."""
    status = step_core(ltab, ptab, wa, wb, vs, ist, inp, 0, inp.shape[0], work, False)
    if status != OK:
        return status
    return ist[ist.shape[0] - 1]


@njit(cache=True)
def step(ltab, ptab, wa, wb, vs, ist, inp):
    """One streaming step: the events of this step are all of ``inp``. Returns the number of output
    spikes (>= 0; they are the output layer's spike list in ``ist``) or a negative status, so that the
    caller needs no second look into the state."""
    return _step_with(ltab, ptab, wa, wb, vs, ist, inp, scratch(ltab, vs))


@intrinsic
def _address(typingctx, addr):
    """An int64 address as a void pointer (for carray)."""
    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(addr), codegen


def address_table(ltab, ptab, wa, wb, vs, ist, work) -> np.ndarray:
    """The addresses and sizes of a step's six arrays and of its scratch bytes ``work`` (uint8, made by
    ``new_work``), all C-contiguous, for ``step_fixed_at`` / ``step_float_at``. The caller keeps the
    arrays alive and in place as long as it uses the table."""
    rows = []
    for a in (ltab, ptab, wa, wb, vs, ist, work):
        if not a.flags.c_contiguous:
            raise ValueError("address_table needs C-contiguous arrays")
        rows += [a.ctypes.data, a.shape[0], a.shape[1] if a.ndim == 2 else 1]
    return np.array(rows, np.int64)


def new_work(ltab) -> np.ndarray:
    """Scratch bytes for the steps of a program (see scratch_views), allocated once by the caller."""
    return np.empty(SCRATCH_BYTES * int(scratch_width(ltab)), np.uint8)


# Streaming steps from an address table: Numba's dispatcher spends about 0.1-0.2 us per array argument of
# a call (typing and unboxing), so one table instead of seven arrays saves about 1 us of a streaming step;
# the scratch buffers in the table are not allocated per step.
@njit(cache=True, forceinline=True)
def _step_at(tab, inp, state_t, param_t, wa_t, wb_t):
    """``step`` of a program whose arrays are given by ``address_table``; the types are those of the
    state, the parameter table and the two weight pools (compile-time constants of the callers below)."""
    vs = carray(_address(tab[12]), tab[13], state_t)
    return _step_with(carray(_address(tab[0]), (tab[1], tab[2]), np.int64),
                      carray(_address(tab[3]), (tab[4], tab[5]), param_t),
                      carray(_address(tab[6]), tab[7], wa_t), carray(_address(tab[9]), tab[10], wb_t),
                      vs, carray(_address(tab[15]), tab[16], np.int32), inp,
                      scratch_views(carray(_address(tab[18]), tab[19], np.uint8), vs))


@njit(cache=True)
def step_fixed_at(tab, inp):
    """``step`` of a fixed-point program whose arrays are given by ``address_table``."""
    return _step_at(tab, inp, np.int32, np.int64, np.int8, np.int16)


@njit(cache=True)
def step_float_at(tab, inp):
    """``step`` of a float program whose arrays are given by ``address_table``."""
    return _step_at(tab, inp, np.float32, np.float32, np.float32, np.float32)


_STEP_AT_TYPES = (types.Array(types.int64, 1, "C"), types.Array(types.int32, 1, "C"))


def closed_step_at(step_at):
    """``step_fixed_at`` or ``step_float_at`` compiled (or loaded from the cache) for an int64 table and an
    int32 C-contiguous writable input, and closed to other signatures: any other input raises TypeError
    at dispatch instead of compiling a new variant, so that the caller checks nothing on the common path
    (its checks cost about as much as Numba's dispatch) and converts the input only on that error."""
    if _STEP_AT_TYPES not in step_at.overloads:  # (once closed, compile() refuses even a known signature)
        step_at.compile(_STEP_AT_TYPES)
    step_at.disable_compile()
    return step_at


@njit(cache=True, _nrt=False, forceinline=True)
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
    work = scratch(ltab, vs)
    n_steps = ev_ptr.shape[0] - 1
    n_ok = valid_steps(ltab, ev_idx, ev_ptr)
    for t in range(n_steps):
        st = step_core(ltab, ptab, wa, wb, vs, ist, ev_idx, ev_ptr[t], ev_ptr[t + 1] - ev_ptr[t], work,
                       t < n_ok)
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
        work = scratch(ltab, vs)
        spk_b = out_spk[b]  # views made once per sample, not once per step
        v_b = out_v[b]
        status[b] = OK
        n_ok = valid_steps(ltab, ev_idx, ev_ptr[b])
        for t in range(n_steps):
            st = step_core(ltab, ptab, wa, wb, vs, ist, ev_idx, ev_ptr[b, t], ev_ptr[b, t + 1] - ev_ptr[b, t],
                           work, t < n_ok)
            if st != OK:
                status[b] = st
                break
            _record(ltab, vs, ist, t, spk_b, v_b, empty_spk, empty_vs)


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


