"""Arithmetic primitives of the numeric contract (docs/numerics.md), one name for float and fixed.

``decay`` and ``sat_add`` are written once in the kernels and specialised by Numba on the type of the
state: on integers they follow the fixed-point contract exactly (the C runtime does the same
operations), on floats they are the ideal arithmetic of the float32 twin. Pure-Python versions with the
same names (``*_py``) serve code outside Numba.
"""
import numpy as np
from numba import njit, types
from numba.extending import overload

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
DECAY_BITS = 12
DECAY_ONE = 1 << DECAY_BITS  # multiply form: d = 4096 keeps the value, d = 0 clears it
Q24 = 24
Q24_ONE = 1 << Q24
U32 = np.uint32

FORM_MULTIPLY = 0
FORM_SHIFT = 1


def q24_multiplier(d: int, form: int) -> int:
    """The Q24 multiplier D that both decay forms reduce to exactly.

    multiply: floor(m * d / 2^12)   = floor(m * (d << 12) / 2^24)
    shift:    m - ceil(m / 2^k)     = floor(m * (2^24 - 2^(24 - k)) / 2^24)   (k = 0: no leak)
    so the emulator runs one branch-free multiply-shift while the device may use the cheaper form.
    """
    if form == FORM_MULTIPLY:
        if not 0 <= d <= DECAY_ONE:
            raise ValueError(f"multiply-form decay constant must be in 0..4096, got {d}")
        return d << (Q24 - DECAY_BITS)
    if not 0 <= d <= Q24:
        raise ValueError(f"shift-form decay constant must be in 0..24, got {d}")
    return Q24_ONE if d == 0 else Q24_ONE - (1 << (Q24 - d))


def decay(x, D):
    """One step of leak: sign(x) * floor(|x| * D / 2^24) on integers (rounds toward zero), x * D on floats."""
    raise NotImplementedError("decay is only callable from Numba-compiled code; use decay_py")


def sat_add(a, b):
    """a + b, saturated to int32 on integers; plain on floats."""
    raise NotImplementedError("sat_add is only callable from Numba-compiled code; use sat_add_py")


@njit(cache=True, forceinline=True)
def _decay32(x, dh, dl):
    """decay for int32 x in 32-bit lanes, with D = dh * 2^12 + dl (dl < 2^12): see _decay."""
    s = x >> 31  # 0 or -1
    m = U32(U32(x ^ s) - U32(s))  # |x|, 2^31 for INT32_MIN
    a = m >> U32(DECAY_BITS)
    b = m & U32(DECAY_ONE - 1)
    t = U32(U32(a * dl) + U32(b * dh) + U32(U32(b * dl) >> U32(DECAY_BITS)))
    r = U32(U32(a * dh) + (t >> U32(DECAY_BITS)))
    return np.int32((r ^ U32(s)) - U32(s))  # sign back: -r when x < 0


@overload(decay)
def _decay(x, D):
    if isinstance(x, types.Integer) and x.signed and x.bitwidth <= 32:
        # Signed x of at most 32 bits (the states): the same value in 32-bit lanes, which AVX2 multiplies
        # 8 at a time (it has no 64-bit multiply, and the 32x32->64 one takes lane shuffles).
        # With m = |x| = a * 2^12 + b (b < 2^12) and D = dh * 2^12 + dl (dl < 2^12):
        #   m * D = a*dh * 2^24 + (a*dl + b*dh) * 2^12 + b*dl, so
        #   floor(m * D / 2^24) = a*dh + floor((a*dl + b*dh + floor(b*dl / 2^12)) / 2^12)
        # (floor((A * 2^12 + B) / 2^24) = floor((A + floor(B / 2^12)) / 2^12) for integers A, B >= 0).
        # Every term fits 32 unsigned bits for m <= 2^31 and 0 <= D <= 2^24 (the contract's range,
        # q24_multiplier): a <= 2^19, dh <= 2^12 with dl = 0 when dh = 2^12, so a*dh <= 2^31,
        # a*dl < 2^31, b*dh < 2^24, b*dl < 2^24, and the result is at most m.
        # dh and dl go to _decay32 as uint32 arguments: computed here in int64, LLVM kept the products
        # in 64-bit lanes and the loops did not vectorise.
        def impl32(x, D):
            return _decay32(x, U32(D >> DECAY_BITS), U32(D & (DECAY_ONE - 1)))
        return impl32
    if isinstance(x, types.Integer):
        def impl(x, D):
            m = np.int64(x)
            # |x| <= 2^31 and D <= 2^24 both fit 32 unsigned bits: a 32x32->64 multiply (vpmuludq)
            a = np.uint64(np.uint32(abs(m))) * np.uint64(np.uint32(D))
            r = np.int64(a >> np.uint64(Q24))
            return np.int32(-r if m < 0 else r)
        return impl

    def impl_float(x, D):
        return x * D
    return impl_float


@overload(sat_add)
def _sat_add(a, b):
    if isinstance(a, types.Integer):
        def impl(a, b):
            return np.int32(min(max(np.int64(a) + np.int64(b), INT32_MIN), INT32_MAX))
        return impl

    def impl_float(a, b):
        return a + b
    return impl_float


# Pure-Python twins, literal transcriptions of docs/numerics.md (used by tests and parameter tables).

def decay_py(x: int, d: int, form: int = FORM_MULTIPLY) -> int:
    m, neg = (-x, True) if x < 0 else (x, False)
    if form == FORM_MULTIPLY:
        m = (m * d) >> DECAY_BITS
    elif d > 0:
        m = m - ((m + (1 << d) - 1) >> d)
    return -m if neg else m


def sat_add_py(a: int, b: int) -> int:
    return max(INT32_MIN, min(INT32_MAX, a + b))
