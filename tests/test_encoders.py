"""Encoders (docs/encoding.md): exact rules, float/fixed agreement, PRNG use, statistics, errors."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesnn.errors import InputError
from edgesnn.frontends import (STREAM_RATE, DeltaEncoder, LatencyLaw, RateEncoder, delta_encode,
                               delta_encode_fixed, events_from_raster, latency_encode, latency_encode_fixed,
                               latency_table, rate_encode, rate_encode_fixed, rate_stream, to_raster)
from edgesnn.kernels.prng import PyPrng
from edgesnn.simulator import Events

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
SETTINGS = settings(max_examples=60, deadline=None)

seeds = st.integers(0, 2**32 - 1)
q16 = st.integers(0, 65536)
q16_edges = st.one_of(st.sampled_from([0, 1, 32767, 32768, 65535, 65536]), q16)


def check_events_sorted(ev):
    for t in range(ev.n_steps):
        s = ev.step(t)
        assert np.all(np.diff(s) > 0), "channels must be ascending and unique within a step"


# ============================================================== rate: the rule against the transcription

def rate_reference(p_rows, n_steps, seed, stream):
    """docs/encoding.md, rate code, literally: one draw per channel per step, in order."""
    prng = PyPrng(seed, stream)
    out = np.zeros((n_steps, len(p_rows[0])), np.int8)
    for t in range(n_steps):
        row = p_rows[0] if len(p_rows) == 1 else p_rows[t]
        for j, p in enumerate(row):
            out[t, j] = (prng.next_u32() >> 16) < p
    return out


@SETTINGS
@given(p=st.lists(q16_edges, min_size=1, max_size=12), T=st.integers(0, 20), seed=seeds,
       stream=st.integers(0, 2**32 - 1))
def test_rate_fixed_follows_the_documented_rule(p, T, seed, stream):
    ev = rate_encode_fixed(np.array(p), T, seed=seed, stream=stream)
    assert ev.n_steps == T
    check_events_sorted(ev)
    np.testing.assert_array_equal(to_raster(ev, len(p)), rate_reference([p], T, seed, stream))


@SETTINGS
@given(data=st.data(), T=st.integers(1, 12), n=st.integers(1, 8), seed=seeds)
def test_rate_fixed_sequence_input_uses_row_t_at_step_t(data, T, n, seed):
    p = np.array(data.draw(st.lists(st.lists(q16_edges, min_size=n, max_size=n), min_size=T, max_size=T)))
    ev = rate_encode_fixed(p, seed=seed, stream=7)
    np.testing.assert_array_equal(to_raster(ev, n), rate_reference(p.tolist(), T, seed, 7))


@SETTINGS
@given(p=st.lists(q16_edges, min_size=1, max_size=16), T=st.integers(1, 30), seed=seeds,
       stream=st.integers(0, 2**32 - 1), f32=st.booleans())
def test_rate_float_equals_fixed_on_q16_inputs(p, T, seed, stream, f32):
    p = np.array(p)
    x = p / 65536.0  # exact in float64, and in float32 too (17 significant bits at most)
    if f32:
        x = x.astype(np.float32)
        assert np.all(x.astype(np.float64) * 65536 == p)
    a = to_raster(rate_encode_fixed(p, T, seed=seed, stream=stream), p.size)
    b = to_raster(rate_encode(x, T, seed=seed, stream=stream), p.size)
    np.testing.assert_array_equal(a, b)


def test_rate_float_and_fixed_agree_at_the_draw_boundary():
    """x = p/65536 with p = r >> 16 (not below: no spike) and p + 1 (spike), for the actual draw r."""
    for seed in range(20):
        r = PyPrng(seed, STREAM_RATE).next_u32()
        hi = r >> 16
        for p, expect in ((hi, 0), (hi + 1, 1)):
            fixed = to_raster(rate_encode_fixed(np.array([p]), 1, seed=seed), 1)[0, 0]
            flt = to_raster(rate_encode(np.array([p / 65536.0]), 1, seed=seed), 1)[0, 0]
            assert fixed == expect and flt == expect, (seed, r, p)


def state_whose_next_output_is(r):
    """A xoshiro128** state whose next output is r: result = rotl(s1 * 5, 7) * 9, invertible in s1."""
    y = (r * pow(9, -1, 2**32)) & 0xFFFFFFFF
    y = ((y >> 7) | (y << 25)) & 0xFFFFFFFF                 # rotr 7
    s1 = (y * pow(5, -1, 2**32)) & 0xFFFFFFFF
    return np.array([0x12345678, s1, 0x9ABCDEF0, 0x0F1E2D3C], np.uint32)


def draw_once(fixed, value, r):
    enc = RateEncoder(1, 0, fixed=fixed)
    enc.state[:] = state_whose_next_output_is(r)
    return enc.step(np.array([value])).size


@pytest.mark.parametrize("p", [0, 1, 2, 12345, 32768, 65535, 65536])
def test_rate_rule_at_crafted_draws(p):
    """The claim u < p/65536 <=> (r >> 16) < p on the draws where it is tight: r = p*2^16 and just below."""
    for r in {0, max(p * 65536 - 1, 0), min(p * 65536, 2**32 - 1), min(p * 65536 + 1, 2**32 - 1), 2**32 - 1}:
        expect = int((r >> 16) < p)
        assert draw_once(True, p, r) == expect, (p, r)
        assert draw_once(False, p / 65536.0, r) == expect, (p, r)


@pytest.mark.parametrize("p,f", [(0, 0.25), (100, 0.75), (65535, 0.5), (3000, 0.999)])
def test_rate_float_compares_the_draw_itself_not_a_rounded_q16(p, f):
    """For x = (p + f) / 65536 the float twin spikes iff r / 2^32 < x, i.e. iff the low 16 bits of
    r = p*2^16 + k satisfy k < f * 65536 (rounding x to Q16 first would say otherwise for some k)."""
    x = (p + f) / 65536.0
    for k in (0, 1, int(f * 65536) - 1, int(f * 65536), int(f * 65536) + 1, 65535):
        r = p * 65536 + k
        assert draw_once(False, x, r) == int(k < f * 65536), (p, f, k)


def test_rate_extremes_p0_never_p1_always():
    T = 2000
    for enc, lo, hi in ((rate_encode_fixed, 0, 65536), (rate_encode, 0.0, 1.0)):
        r = to_raster(enc(np.array([lo, hi, lo]), T, seed=11), 3)
        assert r[:, 0].sum() == 0 and r[:, 2].sum() == 0
        assert r[:, 1].sum() == T
    # p = 65520 / 65536 can miss, p = 16 / 65536 can hit (about 49 times in 200000 steps each)
    r = to_raster(rate_encode_fixed(np.array([16, 65520]), 200_000, seed=5), 2)
    assert 10 < r[:, 0].sum() < 120 and 200_000 - 120 < r[:, 1].sum() < 200_000 - 10


@pytest.mark.parametrize("p", [1, 655, 6554, 16384, 32768, 52429, 65000])
def test_rate_mean_within_binomial_bounds(p):
    n, T = 64, 2000
    N = n * T
    r = to_raster(rate_encode_fixed(np.full(n, p), T, seed=2024, stream=rate_stream(3)), n)
    k = int(r.sum())
    q = p / 65536
    sd = math.sqrt(N * q * (1 - q))
    assert abs(k - N * q) <= 5 * sd + 1, (k, N * q, sd)
    # channels are not copies of one another, steps are not copies of one another
    if 0.05 < q < 0.95:
        assert len({r[:, j].tobytes() for j in range(n)}) == n
        assert not np.all(r[1:] == r[:-1])
        # lag-1 correlation of one channel's train is near zero
        c = np.corrcoef(r[:-1].ravel().astype(float), r[1:].ravel().astype(float))[0, 1]
        assert abs(c) < 5 / math.sqrt(N)


def test_rate_float_statistics_for_an_unrepresentable_probability():
    x, n, T = 0.3, 50, 4000
    N = n * T
    k = int(to_raster(rate_encode(np.full(n, x), T, seed=9), n).sum())
    assert abs(k - N * x) <= 5 * math.sqrt(N * x * (1 - x))


def test_rate_determinism_and_streams():
    p = np.full(40, 32768)
    a = to_raster(rate_encode_fixed(p, 50, seed=1, stream=rate_stream(0)), 40)
    b = to_raster(rate_encode_fixed(p, 50, seed=1, stream=rate_stream(0)), 40)
    c = to_raster(rate_encode_fixed(p, 50, seed=1, stream=rate_stream(1)), 40)
    d = to_raster(rate_encode_fixed(p, 50, seed=2, stream=rate_stream(0)), 40)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, d)
    assert rate_stream(0) == STREAM_RATE == 0x52415445
    assert rate_stream(5) == STREAM_RATE + 5
    assert rate_stream(2**32) == STREAM_RATE


@SETTINGS
@given(x=st.lists(st.floats(0, 1), min_size=1, max_size=10), T=st.integers(1, 25), seed=seeds,
       cuts=st.lists(st.integers(0, 25), max_size=3))
def test_rate_streaming_equals_batch(x, T, seed, cuts):
    x = np.array(x)
    whole = rate_encode(x, T, seed=seed, stream=rate_stream(4))
    enc = RateEncoder(x.size, seed, rate_stream(4))
    steps = [enc.step(x) for _ in range(T)]
    assert all(s.dtype == np.int32 for s in steps)
    streamed = Events.from_lists(steps)
    np.testing.assert_array_equal(streamed.idx, whole.idx)
    np.testing.assert_array_equal(streamed.ptr, whole.ptr)
    # the same stream cut into chunks by run()
    enc.reset()
    bounds = sorted({0, T, *[min(c, T) for c in cuts]})
    parts = [to_raster(enc.run(x, b - a), x.size) for a, b in zip(bounds[:-1], bounds[1:])]
    np.testing.assert_array_equal(np.concatenate(parts), to_raster(whole, x.size))


def test_rate_fixed_streaming_class():
    p = np.array([0, 20000, 65536, 40000])
    enc = RateEncoder(4, seed=77, stream=3, fixed=True)
    got = np.stack([np.isin(np.arange(4), enc.step(p)).astype(np.int8) for _ in range(30)])
    np.testing.assert_array_equal(got, to_raster(rate_encode_fixed(p, 30, seed=77, stream=3), 4))


@pytest.mark.parametrize("call", [
    lambda: rate_encode_fixed(np.array([0, 65537]), 3),
    lambda: rate_encode_fixed(np.array([-1, 5]), 3),
    lambda: rate_encode_fixed(np.array([0.5, 0.2]), 3),          # floats to the fixed encoder
    lambda: rate_encode(np.array([0.5, 1.0001]), 3),
    lambda: rate_encode(np.array([-0.01]), 3),
    lambda: rate_encode(np.array([np.nan]), 3),
    lambda: rate_encode(np.array(["a"]), 3),
    lambda: rate_encode(np.array([0.5, 0.5]), None),            # static input without n_steps
    lambda: rate_encode(np.zeros((4, 3)), 5),                    # (T, n) with another n_steps
    lambda: rate_encode(np.zeros((2, 2, 2)), 5),                 # images must be flattened
    lambda: rate_encode(np.zeros(0), 5),                         # no channel
    lambda: rate_encode(np.array([0.5]), -1),
    lambda: rate_encode(np.array([0.5]), 2.5),
    lambda: rate_encode(np.array([0.5]), 3, seed=-1),
    lambda: rate_encode(np.array([0.5]), 3, seed=2**32),
    lambda: rate_encode(np.array([0.5]), 3, stream=2**32),
    lambda: RateEncoder(3, 0).step(np.zeros(4)),                 # wrong channel count
    lambda: RateEncoder(3, 0).step(np.zeros((1, 3))),
    lambda: RateEncoder(0, 0),
])
def test_rate_bad_input(call):
    with pytest.raises(InputError):
        call()


def test_rate_failed_step_leaves_the_stream_untouched():
    enc = RateEncoder(2, 3)
    with pytest.raises(InputError):
        enc.step(np.array([0.5, 2.0]))
    ref = RateEncoder(2, 3)
    x = np.array([0.5, 0.5])
    assert [enc.step(x).tolist() for _ in range(20)] == [ref.step(x).tolist() for _ in range(20)]


# ============================================================== latency

def test_latency_linear_normalized_known_case():
    # snnTorch's own example: latency_code([0.02, 0.5, 1], num_steps=5, normalize=True, linear=True)
    # gives times 3.92, 2, 0.
    law = LatencyLaw(5, normalize=True, linear=True)
    assert [law.time(x) for x in (0.02, 0.5, 1.0)] == pytest.approx([3.92, 2.0, 0.0])
    r = to_raster(latency_encode(np.array([0.02, 0.5, 1.0]), 5, normalize=True, linear=True), 3)
    expect = np.zeros((5, 3), np.int8)
    expect[4, 0] = expect[2, 1] = expect[0, 2] = 1
    np.testing.assert_array_equal(r, expect)


def test_latency_log_known_values():
    # t = tau * ln(x / (x - 0.01)): x=1 -> 0.01005, x=0.02 -> ln 2, x=0.0125 -> ln 5
    x = np.array([1.0, 0.02, 0.0125, 0.01, 0.0, 0.5])
    steps = LatencyLaw(20, tau=1.0).steps(x)
    np.testing.assert_array_equal(steps, [0, 1, 2, -1, -1, 0])
    steps = LatencyLaw(20, tau=5.0).steps(x)  # 0.05, 3.47, 8.05, -, -, 0.10
    np.testing.assert_array_equal(steps, [0, 3, 8, -1, -1, 0])
    assert LatencyLaw(20, tau=5.0).time(0.0125) == pytest.approx(5 * math.log(5))
    # beyond the window: dropped (tau ln 5 = 8.05 -> step 8 > 4)
    assert LatencyLaw(5, tau=5.0).step(0.0125) == -1


def test_latency_normalized_log_fills_the_window():
    T = 50
    law = LatencyLaw(T, tau=3.0, threshold=0.05, normalize=True)
    assert law.step(0.05 + 1e-9) == T - 1          # clamped to threshold + epsilon: the last step
    assert law.time(0.05 + law.epsilon) == pytest.approx(T - 1)
    xs = np.linspace(0.0501, 1.0, 500)
    s = law.steps(xs)
    assert s.min() >= 0 and s.max() <= T - 1       # every x above threshold spikes inside the window
    assert np.all(np.diff(s) <= 0)                 # brighter spikes no later
    # tau cancels out of the normalised law
    np.testing.assert_array_equal(s, LatencyLaw(T, tau=0.2, threshold=0.05, normalize=True).steps(xs))


def test_latency_rounds_half_to_even():
    # linear, not normalised: t = tau * (1 - 0.5) is exactly 1.5, 2.5, 3.5
    assert [LatencyLaw(10, tau=tau, linear=True).step(0.5) for tau in (3, 5, 7)] == [2, 2, 4]


latency_laws = st.builds(
    LatencyLaw, n_steps=st.integers(1, 300), tau=st.floats(0.05, 50),
    threshold=st.floats(0.001, 0.9), normalize=st.booleans(), linear=st.booleans(),
    epsilon=st.sampled_from([1e-7, 1e-4, 1e-2]))


@SETTINGS
@given(law=latency_laws, q=st.lists(st.integers(0, 255), min_size=1, max_size=40))
def test_latency_float_equals_fixed_on_8bit_inputs(law, q):
    q = np.array(q, np.uint8)
    kw = dict(tau=law.tau, threshold=law.threshold, normalize=law.normalize, linear=law.linear,
              epsilon=law.epsilon)
    a = latency_encode_fixed(q, law.n_steps, **kw)
    b = latency_encode(q / 255.0, law.n_steps, **kw)
    np.testing.assert_array_equal(a.idx, b.idx)
    np.testing.assert_array_equal(a.ptr, b.ptr)
    # and both are the table: channel j spikes once, at table[q[j]], or never when it is -1
    table = latency_table(law.n_steps, **kw)
    r = to_raster(a, q.size)
    assert r.max(initial=0) <= 1 and np.all(r.sum(axis=0) == (table[q] >= 0))
    spiking = np.flatnonzero(table[q] >= 0)
    np.testing.assert_array_equal(np.argmax(r[:, spiking], axis=0), table[q][spiking])
    check_events_sorted(a)


@SETTINGS
@given(law=latency_laws)
def test_latency_table_properties(law):
    table = law.table()
    assert table.shape == (256,) and table.dtype == np.int32
    assert table.min() >= -1 and table.max() <= law.n_steps - 1
    below = np.arange(256) / 255.0 <= law.threshold
    assert np.all(table[below] == -1)
    # brighter never spikes later (-1 = never = latest)
    key = np.where(table < 0, law.n_steps, table)
    assert np.all(np.diff(key[~below]) <= 0)
    if law.normalize:
        assert np.all(table[~below] >= 0)
    assert [law.step(q / 255.0) for q in range(256)] == table.tolist()


def test_latency_explicit_table():
    table = np.full(256, -1)
    table[10], table[200] = 3, 0
    r = to_raster(latency_encode_fixed(np.array([200, 10, 5, 10]), 4, table=table), 4)
    expect = np.zeros((4, 4), np.int8)
    expect[0, 0] = expect[3, 1] = expect[3, 3] = 1
    np.testing.assert_array_equal(r, expect)


@pytest.mark.parametrize("call", [
    lambda: latency_encode_fixed(np.array([0, 256]), 10),
    lambda: latency_encode_fixed(np.array([-1]), 10),
    lambda: latency_encode_fixed(np.array([0.5]), 10),
    lambda: latency_encode_fixed(np.zeros((2, 2), np.uint8), 10),
    lambda: latency_encode_fixed(np.array([3]), 10, table=np.zeros(255)),
    lambda: latency_encode_fixed(np.array([3]), 10, table=np.full(256, 10)),
    lambda: latency_encode(np.array([1.2]), 10),
    lambda: latency_encode(np.array([np.nan]), 10),
    lambda: latency_encode(np.zeros((3, 3)), 10),
    lambda: latency_encode(np.array([0.5]), 0),
    lambda: latency_encode(np.array([0.5]), 10, threshold=0.0),
    lambda: latency_encode(np.array([0.5]), 10, threshold=1.0),
    lambda: latency_encode(np.array([0.5]), 10, tau=0.0),
    lambda: latency_encode(np.array([0.5]), 10, tau=math.inf),
    lambda: latency_encode(np.array([0.5]), 10, epsilon=-1e-7),
])
def test_latency_bad_input(call):
    with pytest.raises(InputError):
        call()


# ============================================================== delta modulation

def delta_reference(x, thr, ref0):
    """docs/encoding.md, delta modulation, with unbounded Python integers (or floats)."""
    T, n = len(x), len(x[0])
    ref = [x[0][j] for j in range(n)] if ref0 == "first" else list(ref0)
    out = np.zeros((T, 2 * n), np.int8)
    for t in range(T):
        for j in range(n):
            if x[t][j] - ref[j] >= thr:
                out[t, j] = 1
                ref[j] += thr
            elif ref[j] - x[t][j] >= thr:
                out[t, n + j] = 1
                ref[j] -= thr
    return out, ref


def test_delta_known_case_and_channel_order():
    x = np.array([[0, 0], [5, -5], [10, -10], [3, 1], [-7, 1], [-20, 1]], np.int32)
    r = to_raster(delta_encode_fixed(x, 4), 4)
    #                ON0 ON1 OFF0 OFF1          refs after the step
    expect = np.array([[0, 0, 0, 0],          # 0, 0
                       [1, 0, 0, 1],          # 4, -4
                       [1, 0, 0, 1],          # 8, -8
                       [0, 1, 1, 0],          # 4, -4
                       [0, 1, 1, 0],          # 0, 0
                       [0, 0, 1, 0]], np.int8)  # -4, 0
    np.testing.assert_array_equal(r, expect)
    ev = delta_encode_fixed(x, 4)
    assert ev.step(3).tolist() == [1, 2]       # ON block before OFF block within a step
    enc = DeltaEncoder(2, 4, fixed=True)
    enc.run(x)
    assert enc.ref.tolist() == [-4, 0] and enc.ref.dtype == np.int32
    assert enc.n_channels == 4


def test_delta_threshold_is_reached_by_equality_both_ways():
    x = np.array([[4], [0], [-4], [0], [3], [7]])
    expect = [[1, 0], [0, 1], [0, 1], [1, 0], [0, 0], [1, 0]]   # refs 4, 0, -4, 0, 0, 4
    np.testing.assert_array_equal(to_raster(delta_encode_fixed(x.astype(np.int32), 4), 2), expect)
    np.testing.assert_array_equal(to_raster(delta_encode(x * 0.5, 2.0), 2), expect)


int32s = st.integers(I32_MIN, I32_MAX)


@SETTINGS
@given(data=st.data(), T=st.integers(1, 30), n=st.integers(1, 5),
       thr=st.one_of(st.integers(1, 1000), st.integers(1, I32_MAX)),
       extreme=st.booleans())
def test_delta_fixed_follows_the_documented_rule(data, T, n, thr, extreme):
    vals = st.sampled_from([I32_MIN, I32_MIN + 1, -1, 0, 1, I32_MAX - 1, I32_MAX]) if extreme \
        else st.integers(-5000, 5000)
    x = data.draw(st.lists(st.lists(st.one_of(vals, int32s), min_size=n, max_size=n), min_size=T, max_size=T))
    ref0 = data.draw(st.one_of(st.just("first"), st.lists(int32s, min_size=n, max_size=n)))
    enc = DeltaEncoder(n, thr, ref0=np.array(ref0) if ref0 != "first" else "first", fixed=True)
    got = to_raster(enc.run(np.array(x, np.int64)), 2 * n)
    expect, ref = delta_reference(x, thr, ref0)
    np.testing.assert_array_equal(got, expect)
    assert enc.ref.tolist() == ref                      # the exact reference never saturated or wrapped
    assert all(I32_MIN <= r <= I32_MAX for r in ref)
    assert not np.any(got[:, :n] & got[:, n:])          # never ON and OFF together
    if ref0 == "first":
        assert got[0].sum() == 0


@SETTINGS
@given(data=st.data(), T=st.integers(1, 30), n=st.integers(1, 4), thr=st.integers(1, I32_MAX),
       ref0=st.one_of(st.just("first"), int32s), f32=st.booleans())
def test_delta_float_equals_fixed_on_int32_signals(data, T, n, thr, ref0, f32):
    x = np.array(data.draw(st.lists(st.lists(int32s, min_size=n, max_size=n), min_size=T, max_size=T)), np.int32)
    a = to_raster(delta_encode_fixed(x, thr, ref0=ref0), 2 * n)
    xf = x.astype(np.float64)
    if f32:  # float32 signals are exact for |x| <= 2^24
        x = np.clip(x, -2**24, 2**24)
        a = to_raster(delta_encode_fixed(x, thr, ref0=ref0), 2 * n)
        xf = x.astype(np.float32)
    b = to_raster(delta_encode(xf, float(thr), ref0=ref0 if ref0 == "first" else float(ref0)), 2 * n)
    np.testing.assert_array_equal(a, b)


def test_delta_float_known_case():
    t = np.arange(40) * 0.25
    x = np.stack([np.sin(t), -np.sin(t)], axis=1)
    got = to_raster(delta_encode(x, 0.2), 4)
    expect, _ = delta_reference(x.tolist(), 0.2, [0.0, 0.0])
    np.testing.assert_array_equal(got, expect)
    # the two mirrored channels swap ON and OFF
    np.testing.assert_array_equal(got[:, [0, 2]], got[:, [3, 1]])


def test_delta_ref0_first_and_arrays():
    x = np.array([[100, -50], [104, -50], [96, -55]], np.int32)
    a = to_raster(delta_encode_fixed(x, 4, ref0="first"), 4)
    b = to_raster(delta_encode_fixed(x, 4, ref0=np.array([100, -50])), 4)
    np.testing.assert_array_equal(a, b)
    assert a[0].sum() == 0
    np.testing.assert_array_equal(a[1:], [[1, 0, 0, 0], [0, 0, 1, 1]])
    # default ref 0: the first sample of a large signal only moves ref by one threshold
    c = to_raster(delta_encode_fixed(x, 4), 4)
    np.testing.assert_array_equal(c[0], [1, 0, 0, 1])


@SETTINGS
@given(data=st.data(), T=st.integers(1, 20), n=st.integers(1, 4), cut=st.integers(0, 20))
def test_delta_streaming_equals_batch(data, T, n, cut):
    x = np.array(data.draw(st.lists(st.lists(st.integers(-300, 300), min_size=n, max_size=n),
                                    min_size=T, max_size=T)), np.int32)
    whole = delta_encode_fixed(x, 25, ref0="first")
    enc = DeltaEncoder(n, 25, ref0="first", fixed=True)
    streamed = Events.from_lists([enc.step(row) for row in x])
    np.testing.assert_array_equal(streamed.idx, whole.idx)
    np.testing.assert_array_equal(streamed.ptr, whole.ptr)
    enc.reset()
    cut = min(cut, T)
    parts = np.concatenate([to_raster(enc.run(x[:cut]), 2 * n), to_raster(enc.run(x[cut:]), 2 * n)])
    np.testing.assert_array_equal(parts, to_raster(whole, 2 * n))


@pytest.mark.parametrize("call", [
    lambda: delta_encode_fixed(np.zeros(5, np.int32), 3),                   # (T,) is ambiguous
    lambda: delta_encode_fixed(np.zeros((2, 2, 2), np.int32), 3),
    lambda: delta_encode_fixed(np.zeros((3, 2)), 3),                        # floats to the fixed encoder
    lambda: delta_encode_fixed(np.array([[2**31]]), 3),                      # beyond int32
    lambda: delta_encode_fixed(np.zeros((3, 2), np.int32), 0),
    lambda: delta_encode_fixed(np.zeros((3, 2), np.int32), -4),
    lambda: delta_encode_fixed(np.zeros((3, 2), np.int32), 2**31),
    lambda: delta_encode_fixed(np.zeros((3, 2), np.int32), 2.5),
    lambda: delta_encode_fixed(np.zeros((3, 2), np.int32), 3, ref0="last"),
    lambda: delta_encode_fixed(np.zeros((3, 2), np.int32), 3, ref0=np.zeros(3, np.int32)),
    lambda: delta_encode_fixed(np.zeros((3, 2), np.int32), 3, ref0=0.5),
    lambda: delta_encode(np.zeros((3, 2)), 0.0),
    lambda: delta_encode(np.zeros((3, 2)), math.nan),
    lambda: delta_encode(np.array([[0.0, math.inf]]), 1.0),
    lambda: delta_encode(np.zeros((3, 0)), 1.0),
    lambda: DeltaEncoder(2, 1.0).step(np.zeros(3)),
])
def test_delta_bad_input(call):
    with pytest.raises(InputError):
        call()


# ============================================================== rasters

@SETTINGS
@given(data=st.data(), T=st.integers(0, 10), n=st.integers(1, 8))
def test_raster_round_trip(data, T, n):
    r = np.array(data.draw(st.lists(st.lists(st.integers(0, 3), min_size=n, max_size=n), min_size=T,
                                    max_size=T)), np.int8).reshape(T, n)
    ev = events_from_raster(r)
    back = to_raster(ev, n)
    assert back.dtype == np.int8 and back.shape == (T, n)
    np.testing.assert_array_equal(back, r)
    np.testing.assert_array_equal(ev.to_dense(n), r)


def test_raster_errors():
    ev = Events.from_lists([[0, 3], [1]])
    with pytest.raises(InputError):
        to_raster(ev, 3)
    with pytest.raises(InputError):
        events_from_raster(np.array([[0, -1]]))
    with pytest.raises(InputError):
        events_from_raster(np.zeros(4, np.int8))
    with pytest.raises(InputError):
        events_from_raster(np.zeros((2, 2)))
    with pytest.raises(InputError):
        to_raster(Events.from_lists([[0] * 128]), 1)
