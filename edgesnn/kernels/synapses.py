"""Synaptic accumulation, event-driven: each input spike adds its weights into ``acc``.

Input spikes arrive as a list of indices ``src[s0:s0 + n]``. Sums are exact: int8 rows are first summed in
int16 (at most ROWS_PER_INT16 rows at a time, so an int16 can never overflow since |w| <= 127) and then
added into the int32 accumulator; int16 (plastic) rows, and int8 rows of fewer than NARROW outputs (too
short for the passes below to pay), add straight into int32. The layer fan-in bound
checked when a program is built keeps every int32 sum in range (docs/numerics.md). Float rows are added
in pairs, (w0 + w1) then into acc, an order the float twin's results depend on.

Speed: integer sums are exact in any order, so int8 rows are added eight per pass (the int16 partial sums
are loaded and stored once for eight rows; the inner loop becomes vpmovsxbw/vpaddw on AVX2). The dense
kernels index the flat weight pool with unsigned offsets (``U``): Numba then emits no negative-index
wraparound in the inner loops, which would keep LLVM from vectorising them, and no array view is made
per call (each view costs two atomic reference-count updates). ``forceinline``: see network.py.
"""
import numpy as np
from numba import njit, types
from numba.extending import overload

ROWS_PER_INT16 = 256  # 256 * 127 = 32512 <= 32767
NARROW = 16
U = np.uint64  # unsigned index type (see above)


def dense_rows(w, off, n_out, src, s0, n, acc, acc16, store):
    """acc[:n_out] += sum over k < n of row src[s0 + k] of the (n_in, n_out) input-major matrix stored in
    w[off:off + n_in * n_out]; with ``store``, acc[:n_out] = that sum (whatever acc held)."""
    raise NotImplementedError("dense_rows is only callable from Numba-compiled code")


@njit(cache=True, forceinline=True)
def _rows_direct(w, off, n_out, src, s0, n, acc):
    m = U(n_out)
    base = U(off)
    k = s0
    end = s0 + n
    while k + 2 <= end:
        r0 = base + U(src[k]) * m
        r1 = base + U(src[k + 1]) * m
        for o in range(m):
            acc[o] += w[r0 + o] + w[r1 + o]
        k += 2
    if k < end:
        r0 = base + U(src[k]) * m
        for o in range(m):
            acc[o] += w[r0 + o]


@njit(cache=True, forceinline=True)
def _rows_int8(w, off, n_out, src, s0, n, acc, acc16, store):
    m = U(n_out)
    base = U(off)
    end = s0 + n
    k = s0
    if store and n <= 0:
        for o in range(m):
            acc[o] = 0
    while k < end:
        stop = min(end, k + ROWS_PER_INT16)
        for o in range(m):
            acc16[o] = 0
        # eight rows per pass: the partial sums are loaded and stored once for eight rows
        while k + 8 <= stop:
            r0 = base + U(src[k]) * m
            r1 = base + U(src[k + 1]) * m
            r2 = base + U(src[k + 2]) * m
            r3 = base + U(src[k + 3]) * m
            r4 = base + U(src[k + 4]) * m
            r5 = base + U(src[k + 5]) * m
            r6 = base + U(src[k + 6]) * m
            r7 = base + U(src[k + 7]) * m
            for o in range(m):
                acc16[o] += (((w[r0 + o] + w[r1 + o]) + (w[r2 + o] + w[r3 + o]))
                             + ((w[r4 + o] + w[r5 + o]) + (w[r6 + o] + w[r7 + o])))
            k += 8
        if k + 4 <= stop:
            r0 = base + U(src[k]) * m
            r1 = base + U(src[k + 1]) * m
            r2 = base + U(src[k + 2]) * m
            r3 = base + U(src[k + 3]) * m
            for o in range(m):
                acc16[o] += (w[r0 + o] + w[r1 + o]) + (w[r2 + o] + w[r3 + o])
            k += 4
        while k < stop:
            r0 = base + U(src[k]) * m
            for o in range(m):
                acc16[o] += w[r0 + o]
            k += 1
        if store:  # the first chunk
            for o in range(m):
                acc[o] = acc16[o]
            store = False
        else:
            for o in range(m):
                acc[o] += acc16[o]


@njit(cache=True, forceinline=True)
def _rows_narrow(w, off, n_out, src, s0, n, acc):
    m = U(n_out)
    base = U(off)
    for k in range(s0, s0 + n):
        r0 = base + U(src[k]) * m
        for o in range(m):
            acc[o] += w[r0 + o]


@overload(dense_rows)
def _dense_rows(w, off, n_out, src, s0, n, acc, acc16, store):
    if w.dtype == types.int8:
        def impl(w, off, n_out, src, s0, n, acc, acc16, store):
            if n_out >= NARROW:
                _rows_int8(w, off, n_out, src, s0, n, acc, acc16, store)
                return
            if store:
                for o in range(n_out):
                    acc[o] = 0
            _rows_narrow(w, off, n_out, src, s0, n, acc)
        return impl

    def impl_direct(w, off, n_out, src, s0, n, acc, acc16, store):
        if store:
            for o in range(n_out):
                acc[o] = 0
        _rows_direct(w, off, n_out, src, s0, n, acc)
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
