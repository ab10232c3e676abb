"""The kernels' arithmetic against the numeric contract, on the edges of its ranges (exhaustive in D)."""
import numpy as np
from numba import njit

from edgesnn.kernels.arith import DECAY_ONE, FORM_MULTIPLY, FORM_SHIFT, INT32_MAX, INT32_MIN, Q24, decay, \
    decay_py, q24_multiplier


@njit(cache=True)
def _decay_table(xs, Ds):
    out = np.empty((Ds.shape[0], xs.shape[0]), np.int32)
    for i in range(Ds.shape[0]):
        for j in range(xs.shape[0]):
            out[i, j] = decay(xs[j], Ds[i])
    return out


def _decay_ref(xs, Ds):
    """sign(x) * floor(|x| * D / 2^24) in int64 (|x| * D <= 2^55)."""
    m = np.abs(xs.astype(np.int64))
    return (np.sign(xs.astype(np.int64)) * ((m[None, :] * Ds[:, None]) >> Q24)).astype(np.int32)


def _edge_values(rng):
    xs = [0, 1, -1, INT32_MAX, INT32_MIN, INT32_MIN + 1, INT32_MAX - 1]
    for k in range(31):
        for d in (-1, 0, 1):
            xs += [(1 << k) + d, -((1 << k) + d)]
    xs += [4095, 4096, 4097, -4095, -4096, -4097, (1 << 19) * 4096 - 1, -(1 << 19) * 4096 + 1]
    xs = np.array([x for x in xs if INT32_MIN <= x <= INT32_MAX], np.int64)
    return np.concatenate([xs, rng.integers(INT32_MIN, INT32_MAX + 1, 3000)]).astype(np.int32)


def test_int32_decay_equals_the_contract_for_every_multiplier():
    rng = np.random.default_rng(7)
    xs = _edge_values(rng)
    Ds = np.array([q24_multiplier(d, FORM_MULTIPLY) for d in range(DECAY_ONE + 1)]
                  + [q24_multiplier(k, FORM_SHIFT) for k in range(Q24 + 1)]
                  + list(rng.integers(0, (1 << Q24) + 1, 1000)) + [(1 << Q24) - 1, 1, 4095, 4097], np.int64)
    assert np.array_equal(_decay_table(xs, Ds), _decay_ref(xs, Ds))


def test_int32_decay_equals_the_python_transcription():
    xs = _edge_values(np.random.default_rng(8))[:400]
    for form, consts in ((FORM_MULTIPLY, (0, 1, 2048, 3686, 4095, 4096)), (FORM_SHIFT, range(Q24 + 1))):
        for d in consts:
            got = _decay_table(xs, np.array([q24_multiplier(d, form)], np.int64))[0]
            assert got.tolist() == [decay_py(int(x), d, form) for x in xs], (form, d)
