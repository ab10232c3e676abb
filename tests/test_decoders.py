"""Decoders (docs/encoding.md, "Decoders"): exact rules, tie-breaks, batch = single, int32 = float32, errors."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgesnn.errors import InputError
from edgesnn.frontends import (Decision, decode_count, decode_count_batch, decode_first_spike,
                               decode_first_spike_batch, decode_membrane, decode_membrane_batch,
                               decode_population, decode_population_batch)
from edgesnn.simulator import Record

SETTINGS = settings(max_examples=80, deadline=None)


def spikes_strategy(batch=False, max_n=6, max_t=12, density=st.floats(0, 1)):
    @st.composite
    def build(draw):
        shape = ((draw(st.integers(1, 4)),) if batch else ()) + (draw(st.integers(0, max_t)),
                                                                 draw(st.integers(1, max_n)))
        d = draw(density)
        bits = draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)))
        return (bits < d).astype(np.int8)
    return build()


membranes = hnp.arrays(np.int32, st.tuples(st.integers(1, 10), st.integers(1, 6)),
                       elements=st.integers(-2**24, 2**24))


# ============================================================== reference transcriptions

def count_reference(s, group=1):
    T, n = s.shape
    scores = [int(s[:, c * group:(c + 1) * group].sum()) for c in range(n // group)]
    total = sum(scores)
    if total == 0:
        return -1, 0.0, scores
    best = max(scores)
    label = scores.index(best)
    return label, best / total, scores


def first_spike_reference(s):
    T, n = s.shape
    firsts = []
    for j in range(n):
        hits = [t for t in range(T) if s[t, j]]
        firsts.append(hits[0] if hits else T)
    scores = [T - f for f in firsts]
    counts = [int(s[:, j].sum()) for j in range(n)]
    if max(scores) == 0:
        return -1, 0.0, scores
    # earliest first spike, then more spikes, then the lowest index
    label = min(range(n), key=lambda j: (firsts[j], -counts[j], j))
    others = max([scores[j] for j in range(n) if j != label], default=0)
    return label, (scores[label] - others) / T, scores


def membrane_reference(v, reduce, shift, temperature):
    T, n = v.shape
    vals = [[int(x) if np.issubdtype(v.dtype, np.integer) else float(x) for x in v[:, j]] for j in range(n)]
    if reduce == "max":
        key = [max(c) for c in vals]
        scores = [float(k) for k in key]
    elif reduce == "final":
        key = [c[-1] for c in vals]
        scores = [float(k) for k in key]
    else:
        key = [sum(c) for c in vals]
        scores = [k / T for k in key]
    label = key.index(max(key))
    z = [s * 2.0 ** -shift / temperature for s in scores]
    m = max(z)
    e = [math.exp(q - m) for q in z]
    return label, e[label] / sum(e), scores


# ============================================================== spike count and population

def test_count_known_cases():
    s = np.array([[0, 1, 0], [0, 1, 1], [1, 1, 0]], np.int8)
    d = decode_count(s)
    assert isinstance(d, Decision)
    assert d.label == 1 and d.confidence == pytest.approx(3 / 5)
    assert d.scores.tolist() == [1, 3, 1]
    label, conf, scores = d  # unpacks as a tuple
    assert (label, conf) == (1, d.confidence)
    # tie: the lowest index
    assert decode_count(np.array([[0, 1, 1], [0, 1, 1]], np.int8)).label == 1
    # no output spike: no decision
    d = decode_count(np.zeros((5, 4), np.int8))
    assert (d.label, d.confidence) == (-1, 0.0) and d.scores.tolist() == [0, 0, 0, 0]
    # a single spiking neuron is certain
    assert decode_count(np.array([[0, 0, 1]], np.int8)).confidence == 1.0
    # no steps at all: no decision
    assert decode_count(np.zeros((0, 3), np.int8)).label == -1


def test_population_known_case():
    # 3 classes of 2 neurons: class 0 = neurons 0, 1; class 1 = 2, 3; class 2 = 4, 5
    s = np.array([[1, 0, 1, 1, 0, 0],
                  [0, 0, 1, 0, 0, 1],
                  [1, 1, 0, 0, 0, 0]], np.int8)
    d = decode_population(s, group=2)
    assert d.scores.tolist() == [3, 3, 1] and d.label == 0 and d.confidence == pytest.approx(3 / 7)
    # grouped by contiguous blocks, not interleaved: neuron 1 belongs to class 0, neuron 5 to class 2
    one = np.zeros((2, 6), np.int8)
    one[1, 5] = 1
    assert decode_population(one, 2).label == 2
    one[0, 1] = 2
    assert decode_population(one, 2).scores.tolist() == [2, 0, 1]
    with pytest.raises(InputError):
        decode_population(s, group=4)
    with pytest.raises(InputError):
        decode_population(s, group=0)
    with pytest.raises(InputError):
        decode_population(s, group=2.0)


@SETTINGS
@given(s=spikes_strategy(), group=st.sampled_from([1, 2, 3]))
def test_population_follows_the_rule(s, group):
    s = np.concatenate([s] * group, axis=1)  # n_out divisible by group
    label, conf, scores = count_reference(s, group)
    d = decode_population(s, group)
    assert d.label == label and d.scores.tolist() == scores
    assert d.confidence == pytest.approx(conf) and 0 <= d.confidence <= 1
    if group == 1:
        c = decode_count(s)
        assert (c.label, c.confidence, c.scores.tolist()) == (d.label, d.confidence, d.scores.tolist())


@SETTINGS
@given(s=spikes_strategy(batch=True), group=st.sampled_from([1, 2]))
def test_population_batch_equals_single(s, group):
    s = np.concatenate([s] * group, axis=2)
    db = decode_population_batch(s, group)
    assert db.labels.shape == db.confidence.shape == (s.shape[0],)
    assert db.scores.shape == (s.shape[0], s.shape[2] // group)
    for b in range(s.shape[0]):
        d = decode_population(s[b], group)
        assert (db[b].label, db[b].confidence) == (d.label, d.confidence)
        np.testing.assert_array_equal(db[b].scores, d.scores)
    c = decode_count_batch(s)
    np.testing.assert_array_equal(c.labels, [decode_count(x).label for x in s])


# ============================================================== first spike

def test_first_spike_known_cases():
    s = np.array([[0, 0, 0, 0],
                  [0, 1, 0, 0],
                  [1, 1, 0, 1],
                  [0, 1, 1, 0]], np.int8)
    d = decode_first_spike(s)
    assert d.label == 1 and d.scores.tolist() == [2, 3, 1, 2]
    assert d.confidence == pytest.approx((3 - 2) / 4)
    # tie on the first step: the neuron with more spikes wins, whatever its index
    s = np.array([[0, 1, 1],
                  [0, 0, 1],
                  [1, 0, 0]], np.int8)
    d = decode_first_spike(s)
    assert d.label == 2 and d.confidence == 0.0
    # tie on the first step and on the count: the lowest index
    s = np.array([[0, 1, 1],
                  [1, 1, 1]], np.int8)
    assert decode_first_spike(s).label == 1
    # the count decides against the first spike here, the first-spike decoder does not
    s = np.array([[1, 0], [0, 1], [0, 1], [0, 1]], np.int8)
    assert decode_first_spike(s).label == 0 and decode_count(s).label == 1
    # only one neuron spikes, at step 0: certain
    s = np.zeros((6, 3), np.int8)
    s[0, 2] = 1
    d = decode_first_spike(s)
    assert (d.label, d.confidence) == (2, 1.0)
    # silence
    d = decode_first_spike(np.zeros((6, 3), np.int8))
    assert (d.label, d.confidence) == (-1, 0.0) and d.scores.tolist() == [0, 0, 0]
    assert decode_first_spike(np.zeros((0, 2), np.int8)).label == -1


@SETTINGS
@given(s=spikes_strategy(density=st.sampled_from([0.0, 0.05, 0.2, 0.6])))
def test_first_spike_follows_the_rule(s):
    label, conf, scores = first_spike_reference(s)
    d = decode_first_spike(s)
    assert d.label == label and d.scores.tolist() == scores
    assert d.confidence == pytest.approx(conf) and 0 <= d.confidence <= 1


@SETTINGS
@given(s=spikes_strategy(batch=True, density=st.sampled_from([0.0, 0.1, 0.5])))
def test_first_spike_batch_equals_single(s):
    db = decode_first_spike_batch(s)
    for b, d in enumerate(db):
        e = decode_first_spike(s[b])
        assert (d.label, d.confidence, d.scores.tolist()) == (e.label, e.confidence, e.scores.tolist())


# ============================================================== membrane

def test_membrane_known_cases():
    v = np.array([[0, 256, 3],
                  [100, 10, -5],
                  [50, -40, 300]], np.int32)
    d = decode_membrane(v)                      # max: 100, 256, 300
    assert d.label == 2 and d.scores.tolist() == [100.0, 256.0, 300.0]
    assert decode_membrane(v, "final").label == 2
    d = decode_membrane(v, "mean")              # means 50, 75.33, 99.33
    assert d.label == 2 and d.scores == pytest.approx([50, 226 / 3, 298 / 3])
    d = decode_membrane(v[:2], "final")         # final: 100, 10, -5
    assert d.label == 0
    # confidence: softmax of max membranes scaled by 2^-8: [100, 256, 300] / 256
    z = np.array([100, 256, 300]) / 256
    expect = math.exp(z[2]) / np.exp(z).sum()
    assert decode_membrane(v, shift=8).confidence == pytest.approx(expect, rel=1e-12)
    # temperature divides after the scale
    z2 = z / 0.1
    expect = math.exp(z2[2] - z2.max()) / np.exp(z2 - z2.max()).sum()
    assert decode_membrane(v, shift=8, temperature=0.1).confidence == pytest.approx(expect, rel=1e-12)
    # unscaled integer membranes give a near-certain softmax
    assert decode_membrane(v).confidence == pytest.approx(1.0)
    # ties: the lowest index, confidence shared
    d = decode_membrane(np.array([[7, 7, 1]], np.int32))
    assert d.label == 0 and d.confidence < 0.5


def test_membrane_mean_argmax_is_exact():
    # sums 2^31 * 3 - 1 and 2^31 * 3: the means differ by 1/3 only
    big = 2**31 - 1
    v = np.array([[big, big], [big, big], [2, 3]], np.int64).astype(np.int32)
    assert decode_membrane(v, "mean").label == 1


@SETTINGS
@given(v=membranes, reduce=st.sampled_from(["max", "final", "mean"]), shift=st.integers(0, 24),
       temperature=st.sampled_from([0.5, 1.0, 3.0]))
def test_membrane_follows_the_rule_and_int32_equals_float32(v, reduce, shift, temperature):
    label, conf, scores = membrane_reference(v, reduce, shift, temperature)
    d = decode_membrane(v, reduce, shift, temperature)
    assert d.label == label
    assert d.scores.tolist() == pytest.approx(scores)
    assert d.confidence == pytest.approx(conf, rel=1e-9, abs=1e-300) and 0 <= d.confidence <= 1
    # the same values as float32 (exact below 2^24) decode identically
    f = decode_membrane(v.astype(np.float32), reduce, shift, temperature)
    assert (f.label, f.confidence, f.scores.tolist()) == (d.label, d.confidence, d.scores.tolist())
    # the fixed membrane with shift s equals the float membrane v * 2^-s with shift 0
    g = decode_membrane(np.ldexp(v.astype(np.float64), -shift).astype(np.float32), reduce, 0, temperature)
    assert g.label == d.label and g.confidence == pytest.approx(d.confidence, rel=1e-12)


@SETTINGS
@given(v=hnp.arrays(np.int32, st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 4)),
                    elements=st.integers(-2**20, 2**20)),
       reduce=st.sampled_from(["max", "final", "mean"]))
def test_membrane_batch_equals_single(v, reduce):
    db = decode_membrane_batch(v, reduce, 10)
    for b in range(v.shape[0]):
        d = decode_membrane(v[b], reduce, 10)
        assert (db[b].label, db[b].confidence, db[b].scores.tolist()) == (d.label, d.confidence, d.scores.tolist())


# ============================================================== records, accuracy

def test_record_and_run_batch_pair_are_accepted():
    spk = np.array([[0, 1], [0, 1], [1, 0]], np.int8)
    v = np.array([[1, 5], [2, 4], [9, 0]], np.int32)
    rec = Record(spk, v, None, None)
    assert decode_count(rec).label == 1
    assert decode_membrane(rec).label == 0
    assert decode_first_spike(rec).label == 1
    pair = (spk[None], v[None])
    assert decode_count_batch(pair).labels.tolist() == [1]
    assert decode_membrane_batch(pair).labels.tolist() == [0]
    with pytest.raises(InputError):
        decode_membrane(Record(spk, None, None, None))
    with pytest.raises(InputError):
        decode_membrane_batch((spk[None], None))


def test_accuracy():
    s = np.zeros((3, 4, 2), np.int8)
    s[0, :, 0] = 1
    s[1, :, 1] = 1          # sample 2 is silent: label -1, always wrong
    db = decode_count_batch(s)
    assert db.labels.tolist() == [0, 1, -1]
    assert db.accuracy([0, 0, -1]) == pytest.approx(2 / 3)
    assert db.accuracy(np.array([0, 1, 0])) == pytest.approx(2 / 3)
    with pytest.raises(InputError):
        db.accuracy([0, 1])


# ============================================================== errors

@pytest.mark.parametrize("call", [
    lambda: decode_count(np.zeros((2, 3, 4), np.int8)),             # batch to the single form
    lambda: decode_count_batch(np.zeros((3, 4), np.int8)),          # single to the batch form
    lambda: decode_count(np.zeros(4, np.int8)),
    lambda: decode_count(np.zeros((4, 0), np.int8)),
    lambda: decode_count(np.array([[0, -1]], np.int8)),             # membranes passed as spikes
    lambda: decode_count(np.array([[0.0, 1.0]])),
    lambda: decode_first_spike(np.array([[0, -1]], np.int32)),
    lambda: decode_first_spike_batch(np.zeros((4, 2), np.int8)),
    lambda: decode_population_batch(np.zeros((2, 3, 5), np.int8), 2),
    lambda: decode_membrane(np.array([[0.0, np.nan]], np.float32)),
    lambda: decode_membrane(np.array([[0.0, np.inf]])),
    lambda: decode_membrane(np.zeros((0, 3), np.int32)),            # no steps
    lambda: decode_membrane(np.zeros((3, 2), np.int32), reduce="min"),
    lambda: decode_membrane(np.zeros((3, 2), np.int32), temperature=0.0),
    lambda: decode_membrane(np.zeros((3, 2), np.int32), temperature=-1.0),
    lambda: decode_membrane(np.zeros((3, 2), np.int32), shift=1.5),
    lambda: decode_membrane(np.array([[True, False]])),
    lambda: decode_membrane_batch(np.zeros((3, 2), np.int32)),
])
def test_bad_input(call):
    with pytest.raises(InputError):
        call()


# ============================================================== end to end: encoder -> simulator -> decoder

def test_end_to_end_with_the_simulator():
    from edgesnn.frontends import rate_encode_fixed, rate_stream
    from edgesnn.model.quantize import quantize
    from edgesnn.model.spec import Dense, Network, Neuron
    from edgesnn.simulator import Simulator

    # 3 classes of 2 neurons, each class listening to its own third of 12 inputs
    w = np.zeros((6, 12))
    for c in range(3):
        w[2 * c:2 * c + 2, 4 * c:4 * c + 4] = 0.6
    net = Network((12,), [Dense(w, Neuron("lif", tau_mem=20e-3, threshold=1.0))])
    sim = Simulator.fixed(quantize(net))
    samples, targets = [], []
    for k in range(6):
        c = k % 3
        p = np.full(12, 3000)
        p[4 * c:4 * c + 4] = 60000
        samples.append(rate_encode_fixed(p, 40, seed=5, stream=rate_stream(k)))
        targets.append(c)
    spk, v = sim.run_batch(samples)
    db = decode_population_batch((spk, v), group=2)
    assert db.labels.tolist() == targets and db.accuracy(targets) == 1.0
    for k, ev in enumerate(samples):
        sim.reset()
        rec = sim.run(ev)
        d = decode_population(rec, group=2)
        assert (d.label, d.confidence) == (db[k].label, db[k].confidence)
        assert decode_first_spike(rec).label // 2 == targets[k]
