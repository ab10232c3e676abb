"""The fixed-point kernels equal the pure-Python transcription of docs/numerics.md, bit for bit."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesnn.kernels import layout as K
from edgesnn.model.quantize import quantize
from edgesnn.model.spec import Dense, Network, Neuron
from edgesnn.simulator import Events, Simulator

from netgen import random_events, random_network
from reference_model import I32_MAX, I32_MIN, ReferenceNet


def compare(model, steps, v0=None):
    """Run both (layer 0's membrane starting at v0 if given); assert spikes and every state variable
    agree at every step."""
    sim = Simulator.fixed(model)
    ref = ReferenceNet(model)
    if v0 is not None:
        sim.v(0)[:] = v0
        ref.state[0]["v"] = [int(x) for x in v0]
    rec = sim.run(Events.from_lists(steps), record="all")
    ltab = sim.program.ltab
    for t, inp in enumerate(steps):
        expect = ref.step(inp)
        for l, (spk, v, i, a) in enumerate(expect):
            lo, hi = sim.layer_base[l], sim.layer_base[l + 1]
            got = np.flatnonzero(rec.spikes[t, lo:hi]).tolist()
            assert got == sorted(set(spk)), f"step {t} layer {l}: spikes {got} != reference {spk}"
            row = ltab[l]
            for name, off, values in (("v", K.L_V_OFF, v), ("i", K.L_I_OFF, i), ("a", K.L_A_OFF, a)):
                if row[off] >= 0:
                    got_v = rec.state[t, row[off]:row[off] + row[K.L_N_OUT]].tolist()
                    assert got_v == values, f"step {t} layer {l}: {name} differs from the reference"
    return rec


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
def test_random_networks_equal_reference(seed):
    net = random_network(seed)
    compare(quantize(net), random_events(seed, net.n_inputs, 25))


@pytest.mark.parametrize("conv", [True, False])
@pytest.mark.parametrize("readout", [True, False])
def test_every_structure_equals_reference(conv, readout):
    for seed in range(3):
        net = random_network(100 + seed, conv=conv, readout=readout)
        rec = compare(quantize(net), random_events(seed, net.n_inputs, 30))
        assert rec.spikes.any(), "a test network that never spikes would prove little"


def test_empty_and_all_active_input():
    net = random_network(5, conv=True)
    n = net.n_inputs
    compare(quantize(net), [[]] * 5 + [list(range(n))] * 5 + [[]] * 5)


@pytest.mark.parametrize("sign", [1, -1])
def test_membrane_saturates_like_reference(sign):
    """IF neurons that cannot fire, started near the int32 limit and pushed past it."""
    net = Network((200,), [Dense(np.full((3, 200), float(sign)), Neuron("if", threshold=1.0)),
                           Dense(np.ones((2, 3)), Neuron("li", tau_mem=1.0))])
    model = quantize(net)
    model.layers[0].weight[:] = 127 * sign
    model.layers[0].theta = I32_MAX  # only a saturated membrane can reach it
    start = (I32_MAX if sign > 0 else I32_MIN) - sign * 100_000
    rec = compare(model, [list(range(200))] * 6, v0=[start] * 3)
    v = rec.state[:, 0].astype(np.int64)
    assert v[0] == start + sign * 200 * 127
    if sign < 0:
        assert np.all(v[4:] == I32_MIN), "the membrane must pin at the limit, not wrap"
    else:
        # the first step past the limit saturates at 2^31 - 1 = threshold: it fires and resets to 0
        first = next(t for t in range(6) if start + (t + 1) * 200 * 127 > I32_MAX)
        assert np.flatnonzero(rec.spikes[:, 0]).tolist() == [first]
        assert v[first] == 0 and v[first - 1] == start + first * 200 * 127


def test_repeated_index_counts_twice():
    net = Network((4,), [Dense(np.eye(4) * 0.5, Neuron("if", threshold=1.0))])
    sim = Simulator.fixed(quantize(net))
    assert sim.step([2]).tolist() == []
    sim.reset()
    assert sim.step([2, 2]).tolist() == [2]
