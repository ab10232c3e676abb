"""Float -> fixed mapping: decay constants, rounding, scales, headroom, range errors, calibration."""
import math

import numpy as np
import pytest

from edgesnn.errors import ModelError
from edgesnn.model.agreement import spike_count_agreement
from edgesnn.model.quantize import (decay_constant, effective_beta, quantize, round_half_away,
                                    weight_shift)
from edgesnn.model.spec import Dense, Network, Neuron, Recurrent, beta_of, tau_of
from edgesnn.simulator import Events


def test_decay_constants_from_time_constants():
    dt = 1e-3
    beta = beta_of(20e-3, dt)                       # exp(-1/20) = 0.9512
    assert decay_constant(beta, "multiply") == round(beta * 4096) == 3896
    assert decay_constant(1.0, "multiply") == 4096 and decay_constant(0.0, "multiply") == 0
    assert decay_constant(beta, "shift") == 4       # 1 - 2^-4 = 0.9375 is the nearest
    assert decay_constant(1.0, "shift") == 0        # no leak
    assert abs(effective_beta(3896, "multiply") - beta) <= 2**-13
    assert effective_beta(4, "shift") == 0.9375
    assert math.isclose(beta_of(tau_of(0.9, dt), dt), 0.9)


def test_round_half_away_from_zero():
    assert round_half_away([0.5, 1.5, 2.5, -0.5, -1.5, 0.49]).tolist() == [1, 2, 3, -1, -2, 0]


def test_weight_scale_uses_the_int8_range_and_plastic_headroom():
    w = np.array([[0.3, -0.6], [0.1, 0.2]])
    assert weight_shift(0.6, 8) == 7                # 0.6 * 128 = 76.8 <= 127 < 0.6 * 256
    net = Network((2,), [Dense(w, Neuron("lif"))])
    q = quantize(net).layers[0]
    assert q.shift == 7 and q.weight.dtype == np.int8
    assert q.weight.tolist() == [[38, -77], [13, 26]] and q.theta == 128
    plastic = quantize(Network((2,), [Dense(w, Neuron("lif"), plastic=True)])).layers[0]
    assert plastic.weight.dtype == np.int16
    assert np.abs(plastic.weight).max() <= 32767 // 2 < 2 * np.abs(plastic.weight).max()


def test_recurrent_weights_share_the_layer_unit():
    net = Network((3,), [Recurrent(np.full((2, 3), 0.1), np.full((2, 2), 0.8), Neuron("lif"))])
    q = quantize(net).layers[0]
    assert q.weight_rec.max() <= 127 and q.weight_rec.max() >= 64
    assert q.weight.max() == round(0.1 * 2**q.shift)


def test_dequantized_is_exact():
    rng = np.random.default_rng(0)
    net = Network((5,), [Dense(rng.normal(0, 1, (4, 5)), Neuron("lif"))])
    model = quantize(net)
    deq = model.dequantized().layers[0].weight
    assert np.array_equal(deq * 2.0**model.layers[0].shift, model.layers[0].weight)


def test_weights_that_vanish_next_to_the_threshold_are_refused():
    net = Network((2,), [Dense(np.full((1, 2), 1e-12), Neuron("lif", threshold=1e6))])
    with pytest.raises(ModelError, match=r"layer 0: the weights \(largest 1e-12\) vanish at scale 2\^"):
        quantize(net)


def test_threshold_is_kept_in_int32_by_the_scale():
    net = Network((2,), [Dense(np.full((1, 2), 1e-7), Neuron("lif", threshold=100.0))])  # weights alone: 2^30
    q = quantize(net).layers[0]
    assert 2**29 <= q.theta <= 2**31 - 1 and q.weight.max() >= 1


def test_explicit_shift_with_threshold_out_of_range_is_refused():
    from edgesnn.model.quantize import quantize_layer
    layer = Dense(np.full((1, 2), 0.5), Neuron("lif", threshold=4.0))
    with pytest.raises(ModelError, match=r"layer 3: threshold 4.0 at weight scale 2\^30 gives .* outside 1\.\."):
        quantize_layer(layer, 1e-3, 3, shift=30)


def test_calibration_recovers_resolution_lost_to_an_outlier():
    """One huge weight makes the weight-derived scale coarse; calibration clips it and agrees better."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.02, (64, 200))
    w[0, 0] = 3.0  # the outlier: every other weight becomes 0 or +-1 unit at the weight-derived scale
    net = Network((200,), [Dense(w, Neuron("lif", threshold=0.3)), Dense(rng.normal(0, 0.3, (10, 64)))])
    data = [Events.from_dense(rng.random((100, 200)) < 0.3) for _ in range(3)]
    plain = quantize(net)
    calibrated = quantize(net, calibration=data, candidates=5)
    assert calibrated.layers[0].shift > plain.layers[0].shift
    before = spike_count_agreement(plain, data)[0]
    after = spike_count_agreement(calibrated, data)[0]
    assert after > before + 0.1, (before, after)


def test_dequantized_twin_is_the_integer_form_exactly():
    """Quantizing the dequantized network gives back the same integers: thresholds, adaptation, decays."""
    from netgen import random_network
    for seed in range(10):
        model = quantize(random_network(seed))
        again = quantize(model.dequantized())
        for q, r in zip(model.layers, again.layers):
            if q is None:
                continue
            assert (q.shift, q.theta, q.a_inc, q.dv, q.di, q.da, q.ref_steps, q.pool_weight) == \
                (r.shift, r.theta, r.a_inc, r.dv, r.di, r.da, r.ref_steps, r.pool_weight)
            if q.weight is not None:
                assert np.array_equal(q.weight, r.weight)


def test_refractory_steps_of_the_integer_form_are_what_runs():
    from edgesnn.simulator import Simulator
    net = Network((1,), [Dense(np.full((1, 1), 2.0), Neuron("if", threshold=1.0, refractory=0.0))])
    model = quantize(net)
    model.layers[0].ref_steps = 3
    sim = Simulator.fixed(model)
    fired = [len(sim.step([0])) for _ in range(8)]
    assert fired == [1, 0, 0, 0, 1, 0, 0, 0]
