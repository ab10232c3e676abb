"""Presets build, quantize and run with real activity; info counts memory and synaptic operations exactly."""
import json
import math

import numpy as np
import pytest

from edgesnn.errors import InputError, ModelError
from edgesnn.kernels import layout as K
from edgesnn.kernels.synapses import conv_scatter, pool_scatter
from edgesnn.model import info, modelfile, presets
from edgesnn.model.program import build_fixed, build_float
from edgesnn.model.quantize import quantize
from edgesnn.model.spec import Conv2d, Dense, Flatten, Network, Neuron, Recurrent, SumPool2d, tau_of
from edgesnn.simulator import Simulator

# ---------------------------------------------------------------- presets

STRUCTURE = {
    "w1": ((2, 32, 32), [("Dense", "lif", (512,)), ("Dense", "lif", (11,))]),
    "w2": ((64,), [("Recurrent", "lif", (256,)), ("Dense", "lif", (12,))]),
    "dvs-conv": ((2, 32, 32), [("Conv2d", "lif", (16, 32, 32)), ("SumPool2d", "lif", (16, 16, 16)),
                               ("Conv2d", "lif", (32, 16, 16)), ("SumPool2d", "lif", (32, 8, 8)),
                               ("Flatten", None, (2048,)), ("Dense", "lif", (128,)), ("Dense", "li", (11,))]),
    "dvs-adapt": ((2, 32, 32), [("Conv2d", "lif", (8, 32, 32)), ("SumPool2d", "lif", (8, 16, 16)),
                                ("Dense", "li", (11,))]),
    "kws": ((64,), [("Recurrent", "alif", (128,)), ("Dense", "li", (10,))]),
}
# input activity each preset is meant for (fraction of inputs active per step)
RATES = {"w1": (0.01, 0.05), "w2": (0.02, 0.1), "dvs-conv": (0.01, 0.05), "dvs-adapt": (0.1, 0.4),
         "kws": (0.02, 0.1)}


def test_preset_names_and_unknown_name():
    assert set(presets.PRESETS) == set(STRUCTURE)
    assert all(isinstance(v, str) and len(v) > 20 for v in presets.PRESETS.values())
    with pytest.raises(ModelError, match="unknown preset 'w3'.*w1, w2, dvs-conv, dvs-adapt, kws"):
        presets.make("w3")


@pytest.mark.parametrize("name", list(STRUCTURE))
def test_preset_structure(name):
    net = presets.make(name, seed=5)
    in_shape, layers = STRUCTURE[name]
    dt = 10e-3 if name == "dvs-adapt" else 1e-3
    assert net.input_shape == in_shape and net.dt == dt and net.seed == 5 and net.name == name
    assert [(type(l).__name__, l.neuron.kind if l.neuron else None, s)
            for l, s in zip(net.layers, net.shapes())] == layers
    for l in net.layers:
        if l.neuron is not None:
            assert l.neuron.reset == "subtract"


def test_preset_seeds():
    a, b, c = presets.make("w2", 3), presets.make("w2", 3), presets.make("w2", 4)
    np.testing.assert_array_equal(a.layers[0].weight_rec, b.layers[0].weight_rec)
    assert not np.array_equal(a.layers[0].weight_rec, c.layers[0].weight_rec)
    assert modelfile.model_hash(quantize(a)) == modelfile.model_hash(quantize(b))


def test_w1_w2_parameters_as_specified():
    w1, w2 = presets.make("w1"), presets.make("w2")
    for net in (w1, w2):
        for l in net.layers:
            assert math.isclose(l.neuron.betas(net.dt)["v"], 0.9, rel_tol=1e-12)
            assert l.neuron.tau_mem == tau_of(0.9, 1e-3) and l.neuron.threshold == 1.0
    for w, sd in [(w1.layers[0].weight, 0.05), (w1.layers[1].weight, 0.05), (w2.layers[0].weight, 0.2),
                  (w2.layers[0].weight_rec, 0.05), (w2.layers[1].weight, 0.1)]:
        assert abs(float(w.std()) - sd) < 0.05 * sd and abs(float(w.mean())) < 0.05 * sd


def test_dvs_conv_and_kws_parameters():
    d = presets.make("dvs-conv")
    assert d.layers[0].padding == 1 and d.layers[0].stride == 1 and d.layers[0].weight.shape == (16, 2, 3, 3)
    assert d.layers[1].kernel == 2 and d.layers[1].stride == 2
    assert math.isclose(d.layers[0].neuron.tau_mem, 20e-3)
    # He-like: the weight scale shrinks with the fan-in
    sds = [float(d.layers[i].weight.std()) for i in (0, 2, 5)]
    assert sds[0] > sds[1] > sds[2] > 0
    a = presets.make("dvs-adapt")
    w = a.layers[0].weight
    assert w.shape == (8, 2, 5, 5) and a.layers[0].padding == 2 and a.layers[2].plastic
    np.testing.assert_allclose(w.sum(axis=(1, 2, 3)), 0.0, atol=1e-5)      # zero-mean kernels (float32)
    k = presets.make("kws")
    n = k.layers[0].neuron
    assert n.kind == "alif" and math.isclose(n.tau_adapt, 0.2) and n.adapt_step > 0
    assert k.layers[1].neuron.kind == "li" and not k.layers[1].neuron.spiking


def _layer_rates(sim, x):
    rec = sim.run(x, record="spikes")
    base = sim.layer_base
    return [float(rec.spikes[:, base[i]:base[i + 1]].mean()) for i in range(len(base) - 1)], rec


@pytest.mark.parametrize("name", list(STRUCTURE))
def test_preset_quantizes_and_runs_with_activity(name):
    net = presets.make(name)
    model = quantize(net)
    assert modelfile.loads(modelfile.dumps(model)).network.name == name
    for rate in RATES[name]:
        x = (np.random.default_rng(11).random((150, net.n_inputs)) < rate).astype(np.int8)
        for sim in (Simulator.fixed(model), Simulator.float(net)):
            rates, rec = _layer_rates(sim, x)
            for l, r in zip(net.layers[:-1], rates[:-1]):  # hidden layers: alive, not saturated
                if l.neuron is not None:
                    assert 0.003 < r < 0.4, (name, rate, sim.program.fixed, rates)
            if net.layers[-1].plastic:      # dvs-adapt: a readout learned from zero on the device
                assert not np.any(model.layers[-1].weight) and model.layers[-1].shift == 13
                continue
            assert np.abs(rec.out_v).max() > 0  # the output layer is driven
            if net.layers[-1].neuron.spiking and rate == max(RATES[name]):
                assert rec.out_spikes.any(), (name, rate)


def test_preset_activity_follows_the_input_rate():
    """More input, more activity: the scaled init does not pin a layer at a fixed rate."""
    net = presets.make("dvs-conv")
    sim = Simulator.fixed(quantize(net))
    lo, _ = _layer_rates(sim, (np.random.default_rng(1).random((120, 2048)) < 0.01).astype(np.int8))
    sim.reset()
    hi, _ = _layer_rates(sim, (np.random.default_rng(1).random((120, 2048)) < 0.05).astype(np.int8))
    assert all(h > 2 * l for h, l in zip(hi[:6], lo[:6]))


# ---------------------------------------------------------------- info: fan-out against the kernels

@pytest.mark.parametrize("layer,in_shape", [
    (Conv2d(np.ones((3, 2, 3, 3)), stride=1, padding=1), (2, 5, 6)),
    (Conv2d(np.ones((2, 1, 3, 2)), stride=2, padding=0), (1, 7, 6)),
    (Conv2d(np.ones((1, 1, 5, 5)), stride=3, padding=2), (1, 8, 9)),
    (SumPool2d(2), (2, 5, 5)),
    (SumPool2d(3, stride=1), (1, 6, 4)),
    (SumPool2d(3, stride=2), (1, 7, 8)),
])
def test_fan_out_is_the_real_scatter_count(layer, in_shape):
    out_shape = layer.out_shape(in_shape)
    fo = info.fan_out(layer, in_shape, out_shape)
    c, h, w = in_shape
    oc, oh, ow = out_shape
    for j in range(math.prod(in_shape)):
        acc = np.zeros(math.prod(out_shape), np.int64)
        src = np.array([j], np.int32)
        if isinstance(layer, Conv2d):
            wt = np.ones(layer.weight.size, np.int8)  # every tap adds one
            conv_scatter(wt, 0, c, h, w, oc, oh, ow, layer.weight.shape[2], layer.weight.shape[3],
                         layer.stride, layer.padding, src, 0, 1, acc)
        else:
            pool_scatter(1, h, w, oh, ow, layer.kernel, layer.stride, src, 0, 1, acc)
        assert fo[j] == acc.sum(), j


# ---------------------------------------------------------------- info: a tiny network by hand

def tiny_model():
    net = Network((1, 4, 4), [
        Conv2d(np.ones((2, 1, 3, 3)), stride=1, padding=1, neuron=Neuron("lif")),        # (2, 4, 4)
        SumPool2d(2, weight=1.0, neuron=Neuron("if")),                                     # (2, 2, 2)
        Flatten(),                                                                          # (8,)
        Recurrent(np.full((3, 8), 0.5), np.full((3, 3), 0.5), neuron=Neuron("alif", adapt_step=0.0),
                  plastic=True),                                                            # (3,)
        Dense(np.ones((2, 3)), neuron=Neuron("cuba", refractory=2e-3)),                     # (2,)
    ], name="tiny")
    return quantize(net)


ROW = (K.NL + K.NP) * 4  # 25 + 6 int32 fields = 124 bytes


def test_info_tiny_network_by_hand():
    model = tiny_model()
    assert model.layers[3].bits == 16 and model.layers[0].bits == 8
    d = info.describe(model, input_rate=1.0, steps=200)
    L = d["layers"]
    assert [l["kind"] for l in L] == ["conv2d", "sumpool2d", "flatten", "recurrent", "dense"]
    assert [l["neuron"] for l in L] == ["lif", "if", None, "alif", "cuba"]
    assert [l["out_shape"] for l in L] == [[2, 4, 4], [2, 2, 2], [8], [3], [2]]
    assert [l["neurons"] for l in L] == [32, 8, 0, 3, 2]
    assert [l["weights"] for l in L] == [18, 1, 0, 24 + 9, 6]
    assert [l["bits"] for l in L] == [8, 8, None, 16, 8]
    # parameters: table rows (124 B) + weights (int8: 1 B, int16: 2 B, float32: 4 B); pool weight is in the row
    assert [l["param_bytes_fixed"] for l in L] == [ROW + 18, ROW, ROW, ROW + 66, ROW + 6]
    assert [l["param_bytes_float"] for l in L] == [ROW + 72, ROW, ROW, ROW + 132, ROW + 24]
    # state words: conv v32 + spikes32 + count; pool v8 + s8 + 1; flatten s8 + 1; alif v3 a3 s3 + 1;
    # cuba with a 2-step refractory period: v2 i2 r2 s2 + 1
    assert [l["state_bytes_fixed"] for l in L] == [4 * 65, 4 * 17, 4 * 9, 4 * 10, 4 * 9]
    assert [l["state_bytes_float"] for l in L] == [4 * 65, 4 * 17, 4 * 9, 4 * 10, 4 * 9]
    # every input active every step, all weights positive and large: every hidden neuron fires every step
    assert [l["spike_rate"] for l in L[:4]] == [1.0, 1.0, 1.0, 1.0]
    assert 0 < L[4]["spike_rate"] <= 0.5  # refractory for 2 steps after each spike: at most every 3rd step
    # conv 3x3 pad 1 on 4x4: taps per row 2, 3, 3, 2 -> 10 x 10 positions x 2 channels = 200 per step
    assert L[0]["synops_per_step"] == 200.0 and L[0]["in_events_per_step"] == 16.0
    assert L[1]["synops_per_step"] == 32.0  # 32 conv spikes, each in one 2x2 window
    assert L[2]["synops_per_step"] == 0.0
    # 8 input spikes x 3 + 3 own spikes of the previous step x 3 (none before step 0): 24 + 9 * 199 / 200
    assert L[3]["synops_per_step"] == pytest.approx(24 + 9 * 199 / 200, abs=1e-12)
    assert L[4]["synops_per_step"] == 6.0
    t = d["totals"]
    assert t["synops_per_step"] == pytest.approx(200 + 32 + 24 + 9 * 199 / 200 + 6, abs=1e-9)
    assert t["synops_per_second"] == pytest.approx(t["synops_per_step"] * 1000)
    assert t["param_bytes_fixed"] == 5 * ROW + 18 + 66 + 6 == 710
    assert t["param_bytes_float"] == 5 * ROW + 4 * (18 + 33 + 6) == 848
    assert t["state_bytes_fixed"] == 4 * (65 + 17 + 9 + 10 + 9) == 440
    assert t["neurons"] == 45 and t["weights"] == 58
    assert t["scratch_bytes"] == 32 * 6


def test_info_totals_match_the_programs():
    """The per-layer byte counts add up to what program.py builds (tables at 4 bytes a field)."""
    for model in (tiny_model(), quantize(presets.make("dvs-conv")), quantize(presets.make("kws"))):
        d = info.describe(model, input_rate=0.02, steps=20)
        p, f = build_fixed(model), build_float(model.network)
        t = d["totals"]
        assert t["param_bytes_fixed"] == 4 * (p.ltab.size + p.ptab.size) + p.wa.nbytes + p.wb.nbytes
        assert t["param_bytes_float"] == 4 * (f.ltab.size + f.ptab.size) + f.wa.nbytes + f.wb.nbytes
        assert t["state_bytes_fixed"] == 4 * (p.n_vs + p.n_ist)
        assert t["state_bytes_float"] == 4 * (f.n_vs + f.n_ist)


def test_info_input_rate_and_silence():
    model = tiny_model()
    d = info.describe(model, input_rate=0.25, steps=50)
    assert d["layers"][0]["synops_per_step"] == 50.0  # expectation: 0.25 x 200
    assert d["layers"][0]["in_events_per_step"] == 4.0
    d0 = info.describe(model, input_rate=0.0, steps=50)
    assert d0["totals"]["synops_per_step"] == 0.0
    assert all(l["spike_rate"] == 0.0 for l in d0["layers"])
    with pytest.raises(InputError, match="input_rate"):
        info.describe(model, input_rate=1.5)


def test_info_hidden_rates_are_measured_and_consistent():
    model = quantize(presets.make("w2"))
    d = info.describe(model, input_rate=0.05, steps=200, seed=3)
    rec, dense = d["layers"]
    # the same run, done here: rates agree exactly
    x = np.random.default_rng(3).random((200, 64)) < 0.05
    rates, _ = _layer_rates(Simulator.fixed(model), x.astype(np.int8))
    assert [rec["spike_rate"], dense["spike_rate"]] == rates
    assert rec["in_events_per_step"] == 0.05 * 64
    # dense: every presynaptic spike reaches all 12 outputs
    assert dense["in_events_per_step"] == pytest.approx(rec["spike_rate"] * 256)
    assert dense["synops_per_step"] == pytest.approx(dense["in_events_per_step"] * 12)
    # recurrent: input fan-out plus its own spikes (all but the last step's) to all 256 neurons
    assert rec["synops_per_step"] > 0.05 * 64 * 256
    assert rec["synops_per_step"] == pytest.approx(0.05 * 64 * 256 + rec["spike_rate"] * 256 * 256, rel=0.02)
    assert info.describe(model, input_rate=0.05, steps=200, seed=3) == d  # fixed seed: reproducible
    assert info.describe(model, input_rate=0.05, steps=200, seed=4)["layers"][0]["spike_rate"] \
        != rec["spike_rate"]


def test_info_is_json_and_formats():
    model = tiny_model()
    d = info.describe(model, input_rate=1.0, steps=200)
    assert json.loads(json.dumps(d)) == d
    assert d["hash"] == modelfile.model_hash(model)
    text = info.format_info(d)
    lines = text.splitlines()
    assert "tiny" in lines[0] and d["hash"][:16] in lines[0]
    for kind in ("conv2d", "sumpool2d", "flatten", "recurrent", "dense"):
        assert any(kind in line for line in lines)
    total = next(line for line in lines if " total " in line)
    assert "710" in total and "848" in total and "440" in total and "271.0" in total
    assert "100.00%" in text
