"""The integer audio front-end (edgesnn/streams/audio.py, docs/audio.md): frequency selectivity on pure
tones, determinism and block independence, integer overflow bounds, and a pure-Python transcription of
the stated arithmetic (what a C port must reproduce)."""
import numpy as np
import pytest

from edgesnn.errors import InputError
from edgesnn.streams import audio
from edgesnn.streams.audio import COEF_BITS, AudioFrontend


def tone(f, rate, seconds=0.5, amp=10000):
    t = np.arange(int(seconds * rate)) / rate
    return np.round(amp * np.sin(2 * np.pi * f * t)).astype(np.int16)


@pytest.mark.parametrize("rate,n", [(8000, 16), (16000, 32), (16000, 64)])
def test_each_channel_answers_most_to_its_own_centre_frequency(rate, n):
    fe = AudioFrontend(rate, n)
    hits = 0
    for c in range(n):
        fe.reset()
        out = fe.process(tone(fe.fc[c], rate))
        best = int(np.argmax(out[100:].mean(axis=0)))     # after the envelope settled
        assert abs(best - c) <= 1
        hits += best == c
    assert hits >= 0.8 * n
    # selectivity: a tone at channel 8's centre is at least an octave (16 Q4 units) weaker 8 channels away
    fe.reset()
    m = fe.process(tone(fe.fc[8], rate))[100:].mean(axis=0)
    assert m[8] - m[0] >= 16 and m[8] - m[min(n - 1, 16)] >= 16


def test_block_size_does_not_matter_and_runs_repeat_exactly():
    rng = np.random.default_rng(1)
    x = rng.integers(-20000, 20000, 8000).astype(np.int16)
    fe = AudioFrontend(16000, 32)
    whole = fe.raster(x)
    fe.reset()
    cuts = np.sort(rng.integers(0, x.size, 12))
    parts = [fe.raster(p) for p in np.split(x, cuts)]
    assert np.array_equal(np.concatenate(parts), whole)
    fe.reset()
    assert np.array_equal(fe.raster(x), whole)
    assert whole.shape == (500, 64) and whole.dtype == np.int8


def reference(x, coef, env_shift, hop):
    """Pure-Python integers, line by line as the docstring of edgesnn/streams/audio.py states it."""
    def rs(a, k):
        return a >> k if a >= 0 else -((-a + (1 << k) - 1) >> k)

    def log2q(v):
        if v <= 0:
            return 0
        k = v.bit_length() - 1
        m = (v >> (k - 4)) - 16 if k >= 4 else (v << (4 - k)) - 16
        return 16 + 16 * k + m

    C = len(coef)
    st = [[0, 0, 0, 0] for _ in range(C)]
    env = [0] * C
    rows, ph = [], 0
    for s in x.tolist():
        u = s * 16
        for c in range(C):
            b0, a1, a2 = (int(v) for v in coef[c])
            u1, u2, y1, y2 = st[c]
            acc = b0 * u - b0 * u2 - a1 * y1 - a2 * y2
            assert -2**63 <= acc < 2**63
            y = rs(acc + (1 << (COEF_BITS - 1)), COEF_BITS)
            st[c] = [u, u1, y, y1]
            env[c] += rs(abs(y) - env[c], env_shift)
        ph += 1
        if ph == hop:
            ph = 0
            rows.append([log2q(e) for e in env])
    return np.array(rows, np.int64)


def test_the_kernel_is_the_stated_integer_arithmetic():
    rng = np.random.default_rng(2)
    x = np.concatenate([tone(440, 8000, 0.05), rng.integers(-32768, 32768, 400).astype(np.int16)])
    fe = AudioFrontend(8000, 6)
    got = fe.process(x)
    ref = reference(x, fe.coef, fe.env_shift, fe.hop)
    assert np.array_equal(got, ref)


def test_overflow_bounds_hold_on_full_scale_worst_cases():
    """|y| <= 16 * 32768 * L1(h) with L1(h) the impulse response's absolute sum (computed here in float64);
    the docs bound it by 2^24 for the default banks, so acc stays far below 2^63 and y fits int32."""
    for rate, n in [(8000, 16), (16000, 32), (16000, 64)]:
        fe = AudioFrontend(rate, n)
        worst = 0.0
        for b0, a1, a2 in fe.coef / 2.0**COEF_BITS:
            h = np.zeros(60000)
            y1 = y2 = 0.0
            for i in range(h.size):
                xi = 1.0 if i == 0 else 0.0
                xi2 = 1.0 if i == 2 else 0.0
                y = b0 * xi - b0 * xi2 - a1 * y1 - a2 * y2
                h[i] = y
                y2, y1 = y1, y
                if i > 200 and abs(y) < 1e-12 and abs(y2) < 1e-12:
                    break
            worst = max(worst, float(np.abs(h).sum()))
        bound = 16 * 32768 * worst
        assert bound < 2**24
        # drive every channel with the worst input for it (the sign of its time-reversed impulse response is
        # close to a full-scale square wave at its centre) and with full-scale noise: observed |y| stays within
        for c in range(0, n, max(1, n // 4)):
            fe.reset()
            period = rate / fe.fc[c]
            sq = np.where(np.sin(2 * np.pi * np.arange(4000) / period) >= 0, 32767, -32768).astype(np.int16)
            fe.process(sq)
            assert np.abs(fe.state[:, 2]).max() <= bound + 1
            assert fe.env.max() <= bound + 1


def test_bad_audio_inputs_are_refused():
    fe = AudioFrontend(16000, 8)
    with pytest.raises(InputError):
        fe.process(np.zeros(10, np.float32))
    with pytest.raises(InputError):
        fe.process(np.array([40000]))
    with pytest.raises(InputError):
        AudioFrontend(1000, 8)
    with pytest.raises(InputError):
        AudioFrontend(16000, 8, f_lo=9000)


def test_throughput_figure_is_reported():
    r = audio.benchmark(seconds=0.5)
    assert r["samples"] == 8000 and r["samples_per_s"] > 0
