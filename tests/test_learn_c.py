"""The C learning rules (firmware_gen/runtime/esnn_learn.c) equal the Python fixed-point Learner bit for bit:
the int16 weights, every learning state the C keeps (traces, post / rate traces, local readouts, running
means, eligibilities) and the update count after every K labelled steps, for every rule and option, with
resets between samples, run-time control, explicit rewards and weight decay; the readout's trial mode
(option trial: one update per trial from the trial's means, ended by a reset, a label change or
esnn_learn_end_trial); on small random networks; at the edges (saturation at +-32767, empty input, every
input active); under ASan / UBSan; -Werror clean for two Cortex-M cores; and on qemu-mps2-an386 (the learn
firmware, board/learn_main.c).

Tests that need gcc (or arm-none-eabi-gcc / qemu-system-arm) skip when it is missing, and fail instead
when EDGESNN_REQUIRE_TOOLCHAIN=1.
"""
import os
import re
import subprocess

import numpy as np
import pytest
from conftest import ARM_CPUS, ARM_FLAGS, need

from edgesnn.errors import ModelError
from edgesnn.learning import Learner
from edgesnn.model.quantize import quantize
from edgesnn.model.spec import Conv2d, Dense, Network, Neuron, Recurrent
from edgesnn.simulator import Events
from firmware_gen import blob as B
from firmware_gen import codegen, hostlib
from firmware_gen import status as S

from netgen import learning_inputs, plastic_network as make_model, random_events, random_network

AUTO = -(2**31)          # ESNN_LEARN_REWARD_AUTO
RESET, ON, END, MASKED = 1, 2, 4, 8   # the driver's flags (hostlib.run_learn_driver), applied in the
                                      # order RESET, ON, MASKED, END before the step


@pytest.fixture(scope="module")
def exe():
    need(os.environ.get("EDGESNN_CC", "gcc"))
    return hostlib.learn_driver(sanitize=False)


@pytest.fixture(scope="module")
def exe_san():
    need(os.environ.get("EDGESNN_CC", "gcc"))
    return hostlib.learn_driver(sanitize=True)


# ------------------------------------------------------------------ networks and inputs

def random_inputs(n_in, T, rate, seed):
    return learning_inputs(n_in, T, rate, seed, sort=False)   # the C takes the indices in any order


# ------------------------------------------------------------------ the two executions

def python_run(model, rule, steps, labels, rewards, flags, every, eta=None, mask=None, **kw):
    """The Python fixed-point Learner under the same controls; snapshots as the driver takes them."""
    lr = Learner(model, rule, mode="fixed", eta_shift=eta, **kw)
    if mask is not None:
        lr.mask = set(mask) & set(lr.layers)
    base_mask = set(lr.mask)
    snaps = []
    T = len(steps)
    for t in range(T):
        f = int(flags[t])
        if f & RESET:
            lr.reset()
        lr.enabled = bool(f & ON)
        lr.mask = set() if f & MASKED else set(base_mask)
        if f & END:
            lr.end_trial()
        kd = (f >> 8) & 0xFF
        if kd:
            lr.decay_weights(kd)
        rw = None if rewards[t] == AUTO else int(rewards[t])
        lr.step(np.array(steps[t], np.int32), int(labels[t]), reward=rw)
        if (t + 1) % every == 0 or t + 1 == T:
            snaps.append(python_snapshot(lr, t + 1))
    return lr, snaps


def python_snapshot(lr, done):
    state = {}
    for l, L in lr.layers.items():
        state[(l, "e")] = L.e.copy()
        if L.recurrent:
            state[(l, "e_rec")] = L.e_rec.copy()
        if L.role in ("stdp", "rstdp"):
            state[(l, "y")] = L.y.copy()
        if lr.reg is not None and L.role != "readout":
            state[(l, "q_rate")] = L.q_rate.copy()
        if L.role == "decolle":
            state[(l, "y_loc")] = L.y_loc.copy()
        if L.role == "readout" and lr.center:
            state[(l, "m")] = L.m.copy()
        if L.role == "readout" and lr.trial:
            state[(l, "acc")] = L.acc.copy()
        if L.role == "rstdp":
            state[(l, "c")] = L.c.copy()
            if L.recurrent:
                state[(l, "c_rec")] = L.c_rec.copy()
    return done, lr.sim.program.wb.copy(), lr.updates, state


def c_run(exe, model, rule, steps, labels, rewards, flags, every, eta=None, mask=None, **kw):
    lr = Learner(model, rule, mode="fixed", eta_shift=eta, **kw)   # only for its constants
    n_layers = len(model.network.layers)
    eta_w = [lr.eta_shift.get(l, -1) for l in range(n_layers)]
    mask_w = [1 if (mask is None or l in mask) else 0 for l in range(n_layers)]
    return hostlib.run_learn_driver(exe, B.pack(model), hostlib.learn_config(lr), eta_w, mask_w,
                                    Events.from_lists(steps), labels, rewards, flags, every)


def compare(model, rule, steps, labels, exe, rewards=None, flags=None, every=5, **kw):
    """Run both; assert every snapshot equal; returns the Python learner and the number of snapshots."""
    T = len(steps)
    rewards = [AUTO] * T if rewards is None else list(rewards)
    flags = [ON] * T if flags is None else list(flags)
    lr, want = python_run(model, rule, steps, labels, rewards, flags, every, **kw)
    init, got = c_run(exe, model, rule, steps, labels, rewards, flags, every, **kw)
    assert init == S.OK, S.name(init)
    assert len(got) == len(want)
    for (done, wb, upd, state), snap in zip(want, got):
        assert snap.done == done and snap.status == S.OK
        if not np.array_equal(wb, snap.wb):
            k = int(np.flatnonzero(wb != snap.wb)[0])
            pytest.fail(f"{rule}: weight {k} of the int16 pool differs after {done} steps: Python {wb[k]}, "
                        f"C {snap.wb[k]}")
        assert sorted(snap.state) == sorted(state), (rule, done)
        for key, val in state.items():
            assert np.array_equal(np.asarray(val, np.int64), snap.state[key].astype(np.int64)), (rule, key, done)
        assert snap.updates == upd & 0xFFFFFFFF, (rule, done)
    return lr, len(got)


# ------------------------------------------------------------------ every rule, every option

CASES = [("readout", False, False, None), ("etlp", False, False, None), ("decolle", False, False, None),
         ("eprop", False, False, None), ("eprop", True, True, None), ("eprop", False, True, None),
         ("eprop", True, False, (0.05, 0.3, 10.0, 1)), ("etlp", False, False, (0.05, 0.2, 10.0, 0)),
         ("decolle", True, True, (0.05, 0.3, 10.0, 2)), ("stdp", False, False, None), ("stdp", True, False, None),
         ("stdp", False, True, (0.05, 0.3, 10.0, 1)), ("rstdp", False, False, None), ("rstdp", True, False, None),
         ("rstdp", True, True, (0.02, 0.2, 10.0, 3))]


@pytest.mark.parametrize("rule,recurrent,alif,reg", CASES)
def test_rules_equal_python(exe, rule, recurrent, alif, reg):
    model = make_model(recurrent, alif)
    T = 60
    steps = random_inputs(12, T, 0.35, seed=1)
    labels = ([-1] * 3 + [1] * 12 + [2] * 15) * 2
    flags = [ON | (RESET if t == 30 else 0) for t in range(T)]   # two samples
    lr, n = compare(model, rule, steps, labels, exe, flags=flags, every=4, eta={0: 10, 1: 12}, reg=reg)
    assert n == 15 and lr.updates > 0
    if rule != "readout":
        assert not np.array_equal(lr.weights(0), model.layers[0].weight)   # the hidden layer did learn


@pytest.mark.parametrize("kw", [{"hinge": True}, {"center": 3}, {"hinge": True, "center": 1}, {"nlms": True},
                                {"nlms": True, "center": 2}, {"y_one": 0.5, "decolle_target": 300},
                                {"trial": 3, "center": 2}, {"trial": 1, "hinge": True, "nlms": True},
                                {"a_plus": 7, "a_minus": 1, "tau_post": 5.0, "tau_elig": 9.0}])
@pytest.mark.parametrize("recurrent", [False, True])
def test_options_equal_python(exe, kw, recurrent):
    model = make_model(recurrent, seed=11)
    steps = random_inputs(12, 40, 0.4, seed=12)
    labels = [0] * 20 + [2] * 20
    rules = ("stdp", "rstdp") if "a_plus" in kw else ("eprop", "decolle")
    for rule in rules:
        compare(model, rule, steps, labels, exe, every=7, eta={0: 11, 1: 11}, **kw)


def test_run_time_control_equals_python(exe):
    """Learning switched off and on, one layer masked out (its Recurrent previous-spike list then goes
    stale, as in the Learner), eta per layer, resets, weight decay at the start of samples."""
    model = make_model(recurrent=True, alif=True, seed=4)
    T = 80
    steps = random_inputs(12, T, 0.3, seed=8)
    labels = [t // 20 % 3 for t in range(T)]
    flags = []
    for t in range(T):
        f = 0 if 10 <= t < 20 else ON
        if t % 20 == 0:
            f |= RESET | (3 << 8)
        flags.append(f)
    compare(model, "eprop", steps, labels, exe, flags=flags, every=3, eta={0: 9, 1: 13}, mask={1})
    compare(model, "eprop", steps, labels, exe, flags=flags, every=3, eta={0: 9, 1: 13})
    compare(model, "readout", steps, labels, exe, flags=flags, every=3, eta=15, center=4)


def test_explicit_rewards_equal_python(exe):
    model = make_model(seed=9)
    steps = random_inputs(12, 25, 0.4, seed=3)
    rewards = [0, 0, 3, -2, 0, AUTO] * 4 + [70000]
    labels = [-1] * 10 + [1] * 15
    compare(model, "rstdp", steps, labels, exe, rewards=rewards, every=1, eta={0: 14, 1: 12})


# ------------------------------------------------------------------ the edges

@pytest.mark.parametrize("rule", ["etlp", "stdp", "eprop", "rstdp"])
def test_saturation_equals_python(exe, rule):
    """k = 0 drives weights to the bounds: they reach +-32767, never pass, identically in both."""
    model = make_model()
    steps = random_inputs(12, 30, 0.5, seed=6)
    lr, _ = compare(model, rule, steps, [t % 3 for t in range(30)], exe, every=1, eta={0: 0, 1: 0})
    w = lr.sim.program.wb
    assert np.abs(w.astype(int)).max() == 32767


@pytest.mark.parametrize("rule", ["readout", "etlp", "decolle", "eprop", "stdp", "rstdp"])
def test_empty_and_full_input_equal_python(exe, rule):
    for reset in ("subtract", "zero"):
        model = make_model(recurrent=rule in ("eprop", "rstdp"), reset=reset, seed=7)
        steps = [[]] * 10 + [list(range(12))] * 15 + [list(range(12)) * 2] * 5 + [[]] * 5
        compare(model, rule, steps, [0] * 35, exe, every=5, eta={0: 12, 1: 14})


def _plastic_random(seed, rule):
    """A random network of tests/netgen.py with an LI readout; Dense / Recurrent layers plastic at
    random, the readout plastic for the readout-driven rules, Conv2d never (it cannot learn)."""
    net = random_network(seed, readout=True)
    rng = np.random.default_rng(seed + 101)
    for layer in net.layers:
        if isinstance(layer, Conv2d):
            layer.plastic = False
        elif isinstance(layer, (Dense, Recurrent)):
            layer.plastic = bool(rng.integers(2)) or rule not in ("readout",)
    net.layers[-1].plastic = True
    return quantize(net)


@pytest.mark.parametrize("seed", range(12))
def test_random_networks_equal_python(exe, seed):
    rules = ("readout", "etlp", "decolle", "eprop", "stdp", "rstdp")
    for rule in (rules[seed % 6], rules[(seed + 3) % 6]):
        model = _plastic_random(seed, rule)
        n_in = int(model.network.n_inputs)
        T = 40
        steps = random_events(seed, n_in, T)
        C = int(model.network.n_outputs)
        labels = [(t // 7) % C if t % 9 else -1 for t in range(T)]
        flags = [ON | (RESET if t == 20 else 0) for t in range(T)]
        try:
            Learner(model, rule)
        except ModelError:
            continue
        compare(model, rule, steps, labels, exe, flags=flags, every=5, eta=8 + seed % 5)


# ------------------------------------------------------------------ trial mode (the readout)

def trial_controls(seed, C, T):
    """Labels in runs of random length (one trial per run; runs of a single step too), unlabelled steps
    between and inside them; resets and explicit ends at random; a phase with learning off and one with
    every layer masked, each ending a pending trial inside it (dropped: no update)."""
    rng = np.random.default_rng(seed)
    labels, flags = [], []
    lab = int(rng.integers(C))
    for t in range(T):
        if rng.random() < 0.2:
            lab = int(rng.integers(C))
        labels.append(-1 if rng.random() < 0.2 else lab)
        r = rng.random()
        f = ON | (RESET if r < 0.06 else (END if r < 0.1 else 0))
        if T // 3 <= t < T // 3 + 6:
            f &= ~ON
        if T // 2 <= t < T // 2 + 6:
            f |= MASKED
        flags.append(f)
    labels[T // 3 - 1] = labels[T // 2 - 1] = 0       # a trial pending when each phase starts ...
    flags[T // 3 + 3] |= END                          # ... dropped inside it
    flags[T // 2 + 3] |= RESET
    return labels, flags


TRIAL_OPTIONS = [{"trial": 3}, {"trial": 1, "center": 4}, {"trial": 31, "center": 1, "hinge": True},
                 {"trial": 5, "center": 2, "nlms": True}, {"trial": 2, "hinge": True},
                 {"trial": 8, "center": 6, "hinge": True, "nlms": True}]


@pytest.mark.parametrize("seed", range(6))
def test_trial_mode_random_networks_equal_python(exe, seed):
    """Trial mode on random networks (the readout alone, or e-prop's hidden layers every step and the
    readout once per trial), centre on and off, hinge, nlms: weights, traces, running means and the
    pending trial's summed trace after every 3 steps."""
    ran = 0
    for rule in ("readout", "eprop"):
        model = _plastic_random(seed + 41, rule)
        try:
            Learner(model, rule)
        except ModelError:
            continue
        n_in, C, T = int(model.network.n_inputs), int(model.network.n_outputs), 60
        steps = random_events(seed + 41, n_in, T)
        labels, flags = trial_controls(seed, C, T)
        lr, _ = compare(model, rule, steps, labels, exe, flags=flags, every=3, eta=6 + seed % 4,
                        **TRIAL_OPTIONS[seed])
        assert lr.updates > 0
        ran += 1
    assert ran


def test_trial_mode_controls_equal_python(exe):
    """The small network: trials of one step (the label changes every step), of many steps, across
    samples (a reset ends them), with learning off and a masked phase; per-step e-prop on the hidden layer."""
    model = make_model(recurrent=True, alif=True, seed=17)
    T = 70
    steps = random_inputs(12, T, 0.35, seed=18)
    every_step = [t % 3 for t in range(T)]
    compare(model, "readout", steps, every_step, exe, every=1, eta=4, trial=2, center=3)
    labels, flags = trial_controls(19, 3, T)
    for kw in ({"trial": 4}, {"trial": 4, "center": 5, "hinge": True}):
        lr, _ = compare(model, "eprop", steps, labels, exe, flags=flags, every=2, eta={0: 10, 1: 5}, **kw)
        assert lr.updates > 0


def test_trial_mode_edges_equal_python(exe):
    """Empty input (the trace decays to 0, the centred mean is -m + m / 2^trial); the summed trace
    saturating at 2^31 - 1 under thousands of repeated events per step, the update at k = 0 driving the
    readout's weights to +-32767."""
    model = make_model(seed=23)
    steps = [[]] * 10 + random_inputs(12, 15, 0.5, seed=24) + [[]] * 15 + [list(range(12))] * 5
    labels = [0] * 12 + [1] * 13 + [2] * 15 + [1] * 5
    flags = [ON | (RESET if t == 30 else 0) for t in range(45)]
    for kw in ({"trial": 1}, {"trial": 2, "center": 1}, {"trial": 31, "center": 3, "nlms": True}):
        compare(model, "readout", steps, labels, exe, flags=flags, every=1, eta=3, **kw)
    # a single LI layer on the inputs: 40000 events of input 0 per step
    rng = np.random.default_rng(25)
    net = Network((4,), [Dense(rng.normal(0, 0.5, (3, 4)), Neuron("li", tau_mem=10e-3), plastic=True)], seed=25)
    one = quantize(net)
    steps = [[0] * 40000 + [1, 2]] * 40 + [[3]] * 10
    labels = [1] * 40 + [2] * 10
    lr, _ = compare(one, "readout", steps, labels, exe, flags=[ON] * 39 + [ON | END] + [ON] * 10, every=5,
                    eta=0, trial=1)
    w = lr.weights(0).astype(np.int64)
    assert np.abs(w).max() == 32767
    # the Python twin's summed trace did saturate (the C's equals it at every snapshot)
    lr2 = Learner(one, "readout", eta_shift=0, trial=1)
    for ev in steps[:39]:
        lr2.step(np.array(ev, np.int32), 1)
    assert lr2.layers[0].acc.max() == 2**31 - 1


def test_trial_refused_out_of_range(exe):
    """trial 32 and -1: the Learner raises ModelError, the C config is refused (ESNN_ERR_ARG); 31 is taken."""
    model = make_model()
    for bad in (32, -1):
        with pytest.raises(ModelError, match="trial"):
            Learner(model, "readout", trial=bad)
    cfg = hostlib.learn_config(Learner(model, "readout", trial=31))
    assert cfg[-1] == 31 and len(cfg) == len(Learner.CONFIG_FIELDS) == 17
    ev = Events.from_lists([[0, 1], [2]])
    for word, want in ((31, S.OK), (32, S.ERR_ARG), (-1, S.ERR_ARG), (1 << 31, S.ERR_ARG)):
        init, _ = hostlib.run_learn_driver(exe, B.pack(model), cfg[:-1] + [word], [-1, -1], [1, 1], ev, [0, 0],
                                           [AUTO] * 2, [ON] * 2, 1)
        assert init == want, (word, S.name(init))


def test_trial_mode_sanitizers_clean(exe_san):
    model = make_model(recurrent=True, alif=True, seed=2)
    T = 40
    steps = random_inputs(12, T - 10, 0.4, seed=5) + [list(range(12)) * 2] * 5 + [[]] * 5
    labels, flags = trial_controls(7, 3, T)
    compare(model, "eprop", steps, labels, exe_san, flags=flags, every=4, eta={0: 9, 1: 2}, trial=3, center=2,
            nlms=True, hinge=True)


@pytest.mark.parametrize("rule", ["stdp", "rstdp"])
def test_factors_beyond_int32_equal_python(exe, rule):
    """STDP factors beyond int32 (huge a_plus / a_minus: the update's general 64-bit path) and R-STDP
    eligibilities that saturate at int32, with weights at the bounds."""
    model = make_model(recurrent=True, seed=13)
    steps = random_inputs(12, 40, 0.4, seed=14)
    labels = [t % 3 for t in range(40)]
    compare(model, rule, steps, labels, exe, every=4, eta={0: 31, 1: 12}, a_minus=1 << 24)
    compare(model, rule, steps, labels, exe, every=4, eta={0: 20, 1: 12}, a_plus=1 << 28, a_minus=1 << 29,
            reg=(0.05, 0.3, 10.0, 0))


@pytest.mark.parametrize("rule", ["etlp", "decolle", "eprop", "stdp", "rstdp"])
def test_two_learning_hidden_layers_equal_python(exe, rule):
    """Dense (CUBA, refractory) -> Recurrent (ALIF) -> LI, all plastic: layers learn in increasing order,
    the second one's input is the first one's spikes of the same step; a regulariser and one frozen run."""
    rng = np.random.default_rng(41)
    n1 = Neuron("cuba", tau_mem=8e-3, tau_syn=3e-3, threshold=0.7, refractory=2e-3)
    n2 = Neuron("alif", tau_mem=10e-3, threshold=0.8, adapt_step=0.1, tau_adapt=30e-3, reset="zero")
    net = Network((16,), [Dense(rng.normal(0.15, 0.5, (10, 16)), n1, plastic=True),
                          Recurrent(rng.normal(0.1, 0.5, (8, 10)), rng.normal(0, 0.3, (8, 8)), n2, plastic=True),
                          Dense(rng.normal(0, 0.3, (4, 8)), Neuron("li", tau_mem=10e-3), plastic=True)], seed=41)
    model = quantize(net)
    steps = random_inputs(16, 60, 0.35, seed=42)
    labels = [t // 15 % 4 for t in range(60)]
    flags = [ON | (RESET if t == 30 else 0) for t in range(60)]
    compare(model, rule, steps, labels, exe, flags=flags, every=6, eta={0: 10, 1: 11, 2: 12},
            reg=(0.05, 0.3, 8.0, 2))
    compare(model, rule, steps, labels, exe, flags=flags, every=6, eta=9, mask={1, 2})


@pytest.mark.parametrize("rule", ["decolle", "stdp", "rstdp"])
def test_spiking_readout_equals_python(exe, rule):
    """A spiking last layer (no LI readout): the rules that do not need the readout's error; R-STDP's
    automatic reward then comes from the output spike counts."""
    rng = np.random.default_rng(31)
    nrn = Neuron("lif", tau_mem=10e-3, threshold=0.8)
    net = Network((12,), [Dense(rng.normal(0.1, 0.6, (9, 12)), nrn, plastic=True),
                          Dense(rng.normal(0.2, 0.6, (3, 9)), nrn, plastic=True)], seed=31)
    model = quantize(net)
    steps = random_inputs(12, 50, 0.4, seed=32)
    compare(model, rule, steps, [t // 10 % 3 for t in range(50)], exe, every=5, eta=10)


# ------------------------------------------------------------------ refusals, sanitizers, cross builds

def test_refusals(exe):
    model = make_model()
    lr = Learner(model, "eprop")
    cfg = hostlib.learn_config(lr)
    ev = Events.from_lists([[0, 1], [2]])
    # a label beyond the classes: refused before the step
    init, snaps = hostlib.run_learn_driver(exe, B.pack(model), cfg, [-1, -1], [1, 1], ev, [0, 3], [AUTO] * 2,
                                           [ON] * 2, 1)
    assert init == S.OK and snaps[0].status == S.OK and snaps[1].status == S.ERR_ARG and snaps[1].done == 2
    # an input index out of range: the step's own refusal
    bad = Events.from_lists([[0], [12]])
    init, snaps = hostlib.run_learn_driver(exe, B.pack(model), cfg, [-1, -1], [1, 1], bad, [0, 0], [AUTO] * 2,
                                           [ON] * 2, 1)
    assert snaps[1].status == S.ERR_INPUT_INDEX
    assert np.array_equal(snaps[1].wb, snaps[0].wb)
    # nothing plastic learns with the rule / a plastic conv layer: ESNN_ERR_MODEL, as the Learner refuses
    frozen = make_model()
    frozen.network.layers[0].plastic = False
    frozen = quantize(frozen.network)
    cfg_r = list(cfg)
    cfg_r[0] = 0
    frozen.network.layers[1].plastic = False
    frozen = quantize(frozen.network)
    init, _ = hostlib.run_learn_driver(exe, B.pack(frozen), cfg_r, [-1, -1], [1, 1], ev, [0, 0], [AUTO] * 2,
                                       [ON] * 2, 1)
    assert init == S.ERR_MODEL
    rng = np.random.default_rng(0)
    from edgesnn.model.spec import Flatten
    conv = Network((1, 6, 6), [Conv2d(rng.normal(0, 0.5, (2, 1, 3, 3)), plastic=True), Flatten(),
                               Dense(rng.normal(0, 0.3, (3, 32)), Neuron("li"), plastic=True)])
    init, _ = hostlib.run_learn_driver(exe, B.pack(quantize(conv)), cfg_r, [-1] * 3, [1] * 3, ev, [0, 0],
                                       [AUTO] * 2, [ON] * 2, 1)
    assert init == S.ERR_MODEL
    # e-prop / ETLP need an LI readout (its error is their signal)
    spiking = Network((12,), [Dense(rng.normal(0.1, 0.6, (9, 12)), Neuron("lif"), plastic=True),
                              Dense(rng.normal(0.2, 0.6, (3, 9)), Neuron("lif"), plastic=True)], seed=1)
    for rule in ("eprop", "etlp"):
        with pytest.raises(ModelError):
            Learner(quantize(spiking), rule)
        cfg_s = list(cfg)
        cfg_s[0] = ("readout", "etlp", "decolle", "eprop").index(rule)
        init, _ = hostlib.run_learn_driver(exe, B.pack(quantize(spiking)), cfg_s, [-1] * 2, [1] * 2, ev, [0, 0],
                                           [AUTO] * 2, [ON] * 2, 1)
        assert init == S.ERR_MODEL


@pytest.mark.parametrize("rule,recurrent,alif,reg", [("eprop", True, True, (0.05, 0.3, 10.0, 1)),
                                                     ("decolle", False, False, None),
                                                     ("rstdp", True, False, None), ("stdp", False, True, None),
                                                     ("readout", False, False, None)])
def test_sanitizers_clean(exe_san, rule, recurrent, alif, reg):
    model = make_model(recurrent, alif, seed=2)
    T = 40
    steps = random_inputs(12, T - 10, 0.4, seed=5) + [list(range(12)) * 2] * 5 + [[]] * 5
    flags = [ON | (RESET if t == 20 else 0) | ((2 << 8) if t == 20 else 0) for t in range(T)]
    compare(model, rule, steps, [t % 3 for t in range(T)], exe_san, flags=flags, every=10, reg=reg,
            eta={0: 0 if rule == "stdp" else 9, 1: 10}, nlms=rule == "readout", center=2 if rule == "readout" else 0)


@pytest.mark.parametrize("cpu", sorted(ARM_CPUS))
def test_compiles_for_cortex_m(cpu, tmp_path):
    need("arm-none-eabi-gcc")
    for f in ("edgesnn.h", "esnn_learn.h", "esnn_learn.c"):
        (tmp_path / f).write_bytes((codegen.RUNTIME_DIR / f).read_bytes())
    res = subprocess.run(["arm-none-eabi-gcc", *ARM_CPUS[cpu], *ARM_FLAGS, "-I.", "esnn_learn.c", "-o", "l.o"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    # no float: no soft-float helper, no FPU instruction; only the runtime's and libgcc's integer helpers
    # (the 64-bit division of trial mode's mean membrane: __aeabi_uldivmod, GCC declares ldivmod with it)
    nm = subprocess.run(["arm-none-eabi-nm", "-u", "l.o"], cwd=tmp_path, capture_output=True, text=True)
    assert not re.search(r"__aeabi_[fd]|__aeabi_[iul]2[fd]|__(add|mul|div|sub)[sd]f3", nm.stdout), nm.stdout
    assert set(nm.stdout.split()) - {"U"} <= {"esnn_decay", "esnn_sat_add", "esnn_model_check", "esnn_n_outputs",
                                            "esnn_reset", "esnn_step", "esnn_spikes", "esnn_v", "esnn_a",
                                            "__aeabi_uidiv", "__aeabi_lmul", "__aeabi_llsr", "__aeabi_llsl",
                                            "__aeabi_lasr", "__aeabi_idiv", "__aeabi_uldivmod", "__aeabi_ldivmod",
                                            "memset", "memcpy"}, nm.stdout
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", "l.o"], cwd=tmp_path, capture_output=True, text=True)
    assert dis.returncode == 0 and not re.search(r"\tv[a-z]+\.f(32|64)", dis.stdout)


# ------------------------------------------------------------------ the third execution: QEMU

def parse_learn_stream(data: bytes) -> dict:
    w = np.frombuffer(data[:len(data) - len(data) % 4], "<u4").astype(np.int64)
    assert w.size >= 13 and int(w[0]) == 0x4C4E5345, f"no learn stream ({len(data)} bytes)"
    n_wb = int(w[11])
    n_words = (n_wb + 1) // 2
    body = w[:12 + n_words]
    h = 0x811C9DC5
    for v in body:
        h = ((h ^ int(v)) * 0x01000193) & 0xFFFFFFFF
    assert int(w[12 + n_words]) == h, "the UART stream was damaged"
    packed = w[12:12 + n_words].astype(np.uint32)
    halves = np.empty(2 * n_words, np.uint16)
    halves[0::2], halves[1::2] = packed & 0xFFFF, packed >> 16
    s32 = lambda v: int(np.uint32(v).astype(np.int32))
    return {"init": s32(w[2]), "learn_bytes": int(w[3]), "done": int(w[4]), "last": s32(w[5]), "updates": int(w[6]),
            "ticks_learn": int(w[7]), "ticks_forward": int(w[8]), "calib_iters": int(w[9]),
            "calib_ticks": int(w[10]), "wb": halves[:n_wb].view(np.int16).copy()}


QEMU_CASES = [("eprop", True, True, 200, "qemu-mps2-an386", {}), ("decolle", False, False, 200, "qemu-mps2-an386", {}),
              ("rstdp", True, False, 100, "qemu-mps2-an385", {}),
              ("eprop", False, True, 150, "qemu-mps2-an386", {"trial": 2, "center": 3, "nlms": True}),
              ("readout", False, False, 150, "qemu-mps2-an385", {"trial": 4, "hinge": True})]


@pytest.mark.parametrize("rule,recurrent,alif,T,board,kw", QEMU_CASES)
def test_qemu_learning_equals_python(tmp_path, rule, recurrent, alif, T, board, kw):
    """N labelled steps on an emulated board (the learn firmware; qemu-mps2-an386 is a Cortex-M4F, an385
    a Cortex-M3): the final int16 weights and the update count equal the Python fixed-point Learner's;
    instructions per learning step from SysTick. Trial mode (kw trial): the readout's 64-bit division
    links (libgcc) and the weights sent include the last trial, ended by the reset before the firmware's
    forward-only pass (learning still on: its update applies; the update count is read before it)."""
    need("arm-none-eabi-gcc", "qemu-system-arm", "make")
    from firmware_gen import build as BUILD
    from firmware_gen import export as EXPORT
    from firmware_gen import qemu as QEMU
    model = make_model(recurrent, alif, seed=21)
    steps = random_inputs(12, T, 0.3, seed=22)
    labels = [(t // 25) % 3 if t % 25 > 2 else -1 for t in range(T)]
    flags = [ON | (RESET if t % 50 == 0 else 0) for t in range(T)]
    eta = {0: 11, 1: 12}
    lr0 = Learner(model, rule, eta_shift=eta, **kw)
    project = tmp_path / "learn"
    EXPORT.export_project(model, board, project, mode="learn",
                          learn=dict(learner=lr0, events=Events.from_lists(steps), labels=labels, flags=flags))
    rep = BUILD.build_project(project)
    BUILD.check_fits(rep)
    res = QEMU.run(rep["elf"], board, timeout=60, icount_shift=0)
    dev = parse_learn_stream(res.output)
    assert res.returncode == 0 and dev["init"] == S.OK and dev["last"] == S.OK and dev["done"] == T, (res, dev)
    lr, snaps = python_run(model, rule, steps, labels, [AUTO] * T, flags, T, eta=eta, **kw)
    _, wb, updates, _ = snaps[-1]
    if kw.get("trial"):
        assert lr.layers[1].n > 0       # a trial pending at the end: the firmware's reset applies it
        lr.end_trial()
        wb = lr.sim.program.wb.copy()
    assert np.array_equal(dev["wb"], wb)
    assert dev["updates"] == updates & 0xFFFFFFFF
    assert not np.array_equal(wb, lr0.sim.program.wb)          # it did learn
    calib = QEMU.instructions(dev["calib_ticks"], board) / (2 * dev["calib_iters"])
    assert 0.95 < calib < 1.05
    per_learn = QEMU.instructions(dev["ticks_learn"], board) / T
    per_fwd = QEMU.instructions(dev["ticks_forward"], board) / T
    print(f"\n{board} {rule}: {per_learn:.0f} instructions per learning step (forward + learning), {per_fwd:.0f} "
          f"forward only, {per_learn - per_fwd:.0f} for learning; {updates} synapse updates; "
          f"learner buffer {dev['learn_bytes']} bytes; QEMU {res.seconds:.1f} s")
