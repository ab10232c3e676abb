"""Synaptic accumulation, event-driven: each input spike adds its weights into ``acc``.

Input spikes arrive as a list of indices ``src[s0:s0 + n]``. Sums are exact: int8 rows are first summed in
int16 (at most ROWS_PER_INT16 rows at a time, so an int16 can never overflow since |w| <= 127) and then
added into the int32 accumulator; int16 (plastic) rows add straight into int32. The layer fan-in bound
checked when a program is built keeps every int32 sum in range (docs/numerics.md).
"""
import numpy as np
from numba import njit, types
from numba.extending import overload

ROWS_PER_INT16 = 256  # 256 * 127 = 32512 <= 32767


def dense_rows(W, src, s0, n, acc, acc16):
    """acc[:] += sum over k < n of W[src[s0 + k], :]  (W is (n_in, n_out), input-major)."""
    raise NotImplementedError("dense_rows is only callable from Numba-compiled code")


@njit(cache=True)
def _rows_direct(W, src, s0, n, acc):
    n_out = W.shape[1]
    k = s0
    end = s0 + n
    while k + 2 <= end:
        j0 = src[k]
        j1 = src[k + 1]
        for o in range(n_out):
            acc[o] += W[j0, o] + W[j1, o]
        k += 2
    if k < end:
        j0 = src[k]
        for o in range(n_out):
            acc[o] += W[j0, o]


@njit(cache=True)
def _rows_int8(W, src, s0, n, acc, acc16):
    n_out = W.shape[1]
    end = s0 + n
    k = s0
    while k < end:
        stop = min(end, k + ROWS_PER_INT16)
        for o in range(n_out):
            acc16[o] = 0
        # four rows per pass: each pass loads and stores the partial sums once for four rows
        while k + 4 <= stop:
            j0 = src[k]
            j1 = src[k + 1]
            j2 = src[k + 2]
            j3 = src[k + 3]
            for o in range(n_out):
                acc16[o] += (W[j0, o] + W[j1, o]) + (W[j2, o] + W[j3, o])
            k += 4
        while k < stop:
            j0 = src[k]
            for o in range(n_out):
                acc16[o] += W[j0, o]
            k += 1
        for o in range(n_out):
            acc[o] += acc16[o]


@overload(dense_rows)
def _dense_rows(W, src, s0, n, acc, acc16):
    if W.dtype == types.int8:
        def impl(W, src, s0, n, acc, acc16):
            _rows_int8(W, src, s0, n, acc, acc16)
        return impl

    def impl_direct(W, src, s0, n, acc, acc16):
        _rows_direct(W, src, s0, n, acc)
    return impl_direct


@njit(cache=True)
def conv_scatter(w, w_off, in_c, in_h, in_w, out_c, out_h, out_w, kh, kw, stride, pad, src, s0, n, acc):
    """Scatter each input spike (c, y, x) through the kernel; weights stored (c_in, kh, kw, c_out)."""
    hw = in_h * in_w
    ohw = out_h * out_w
    for k in range(s0, s0 + n):
        e = src[k]
        c = e // hw
        r = e - c * hw
        y = r // in_w
        x = r - y * in_w
        for ky in range(kh):
            ny = y + pad - ky
            if ny < 0:
                break
            oy = ny // stride
            if oy * stride != ny or oy >= out_h:
                continue
            for kx in range(kw):
                nx = x + pad - kx
                if nx < 0:
                    break
                ox = nx // stride
                if ox * stride != nx or ox >= out_w:
                    continue
                base = w_off + ((c * kh + ky) * kw + kx) * out_c
                pos = oy * out_w + ox
                for o in range(out_c):
                    acc[o * ohw + pos] += w[base + o]


@njit(cache=True)
def pool_scatter(pool_w, in_h, in_w, out_h, out_w, k_size, stride, src, s0, n, acc):
    """Sum pooling per channel: each spike adds the shared weight to every window that holds it."""
    hw = in_h * in_w
    ohw = out_h * out_w
    for k in range(s0, s0 + n):
        e = src[k]
        c = e // hw
        r = e - c * hw
        y = r // in_w
        x = r - y * in_w
        for ky in range(k_size):
            ny = y - ky
            if ny < 0:
                break
            oy = ny // stride
            if oy * stride != ny or oy >= out_h:
                continue
            for kx in range(k_size):
                nx = x - kx
                if nx < 0:
                    break
                ox = nx // stride
                if ox * stride != nx or ox >= out_w:
                    continue
                acc[c * ohw + oy * out_w + ox] += pool_w
