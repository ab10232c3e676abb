"""Learning rules: the Numba kernels against a pure-Python transcription of docs/learning.md (exact), the
float twin against the fixed one (stated bounds), saturation, empty / full input, determinism, run-time
control."""
import copy
import math

import numpy as np
import pytest

from edgesnn.errors import InputError, ModelError
from edgesnn.kernels.prng import PyPrng, seed_state
from edgesnn.learning import Learner
from edgesnn.learning import rules as R
from edgesnn.model.quantize import quantize
from edgesnn.model.spec import Conv2d, Dense, Network, Neuron, Recurrent
from edgesnn.simulator import Simulator
from netgen import learning_inputs, plastic_network as make_model
from reference_model import ReferenceNet

I32 = 2**31 - 1


# ---------------------------------------------------------------- the reference (docs/learning.md, literally)

def rs(a, k):
    return a >> k if a >= 0 else -((-a + (1 << k) - 1) >> k)


def clip(x, lo, hi):
    return min(max(x, lo), hi)


def dec(x, d12):
    """decay with the 12-bit multiply constant (docs/numerics.md), toward zero."""
    m = (abs(x) * d12) >> 12
    return -m if x < 0 else m


def sat(x):
    return clip(x, -(2**31), 2**31 - 1)


def d12_of_tau(tau_steps):
    b = math.exp(-1.0 / tau_steps)
    return int(min(4096, max(0, math.floor(b * 4096 + 0.5))))


def feedback(seed, layer, rows, cols):
    g = PyPrng(seed, 0x46424B00 + layer)
    return [[(g.next_u32() >> 25) - 64 for _ in range(cols)] for _ in range(rows)]


class RefLearner:
    """Two layers: layer 0 a plastic hidden layer (Dense or Recurrent), layer 1 a plastic LI readout."""

    def __init__(self, model, rule, k0, k1, y_one=1.0, decolle_target=512, reg=None, a_plus=4, a_minus=3,
                 hinge=False, center=0, trial=0):
        self.hinge, self.center, self.trial = hinge, center, trial
        self.model = copy.deepcopy(model)
        self.ref = ReferenceNet(self.model)
        self.rule = rule
        self.k = [k0, k1]
        net = self.model.network
        self.q = self.model.layers
        self.h = self.q[0].weight.shape[0]
        self.n_in = self.q[0].weight.shape[1]
        self.C = self.q[1].weight.shape[0]
        self.rec = isinstance(net.layers[0], Recurrent)
        self.alif = net.layers[0].neuron.kind == "alif"
        self.y1 = int(math.copysign(math.floor(abs(y_one * 2**self.q[1].shift) + 0.5), y_one))
        self.tgt_loc = decolle_target
        self.a_plus, self.a_minus = a_plus, a_minus
        self.rng = [PyPrng(net.seed, 0x4C524E00 + l) for l in range(2)]
        self.B = feedback(net.seed, 0, self.C, self.h)
        self.reg = None
        if reg is not None:
            lo, hi, tau_r, sh = reg
            d = d12_of_tau(tau_r)
            unit = 256 / (1 - d / 4096)
            self.reg = (int(lo * unit), int(hi * unit), d, sh)
        self.d_post, self.d_elig = d12_of_tau(20.0), d12_of_tau(50.0)
        self.e0 = [0] * self.n_in
        self.erec = [0] * self.h
        self.e1 = [0] * self.h
        self.y = [0] * self.h
        self.qr = [0] * self.h
        self.yloc = [0] * self.C
        self.c = [[0] * self.h for _ in range(self.n_in)]
        self.crec = [[0] * self.h for _ in range(self.h)]
        self.score = [0] * self.C
        self.m1 = [0] * self.h
        self.acc, self.vsum, self.n, self.lab = [0] * self.h, [0] * self.C, 0, -1   # trial mode

    # W[i][j] lives in the model's LayerQ arrays, which ReferenceNet reads every step
    def _upd(self, W, l, e, g):
        k = self.k[l]
        for j in range(len(e)):
            if e[j] == 0:
                continue
            for i in range(len(g)):
                if g[i] == 0:
                    continue
                r = (self.rng[l].next_u32() >> (32 - k)) if k > 0 else 0
                W[i, j] = clip(int(W[i, j]) + rs(g[i] * e[j] + r, k), -32767, 32767)

    def step(self, inp, label, reward=None):
        st0 = self.ref.state[0]
        a_old = list(st0["a"])
        prev = list(st0["prev"])
        out = self.ref.step(inp)
        spk0, v0 = out[0][0], out[0][1]
        v1 = out[1][1]
        for kk in range(self.C):
            self.score[kk] += v1[kk]
        if label >= 0:
            err = [clip((self.y1 if kk == label else 0) - v1[kk], -32767, 32767) for kk in range(self.C)]
            if self.hinge:
                err = [max(d, 0) if kk == label else min(d, 0) for kk, d in enumerate(err)]
        else:
            err = [0] * self.C
        if reward is None:
            reward = 0 if label < 0 else (1 if max(range(self.C), key=lambda c: (self.score[c], -c)) == label else -1)
        q0 = self.q[0]
        theta = q0.theta
        s = [1 if i in spk0 else 0 for i in range(self.h)]
        # ---- layer 0
        if self.rule != "readout":
            for j in range(self.n_in):
                self.e0[j] = dec(self.e0[j], q0.dv)
            for j in inp:
                self.e0[j] = sat(self.e0[j] + 256)
            if self.rec:
                for j in range(self.h):
                    self.erec[j] = dec(self.erec[j], q0.dv)
                for j in prev:
                    self.erec[j] = sat(self.erec[j] + 256)
            greg = [0] * self.h
            if self.reg is not None:
                lo, hi, d, sh = self.reg
                for i in range(self.h):
                    self.qr[i] = dec(self.qr[i], d)
                for i in spk0:
                    self.qr[i] = sat(self.qr[i] + 256)
                for i in range(self.h):
                    if lo >= 0 and self.qr[i] < lo:
                        greg[i] = rs(lo - self.qr[i], sh)
                    elif hi >= 0 and self.qr[i] > hi:
                        greg[i] = rs(hi - self.qr[i], sh)
            W0, Wr = q0.weight, q0.weight_rec
            if self.rule in ("stdp", "rstdp"):
                x = [0] * self.n_in
                for j in inp:
                    x[j] += 256
                xr = [0] * self.h
                for j in prev:
                    xr[j] += 256
                g_ltp = [self.a_plus * s[i] + greg[i] for i in range(self.h)]
                g_ltd = [-self.a_minus * self.y[i] for i in range(self.h)]
                if self.rule == "stdp":
                    self._upd(W0, 0, self.e0, g_ltp)
                    self._upd(W0, 0, x, g_ltd)
                    if self.rec:
                        self._upd(Wr, 0, self.erec, g_ltp)
                        self._upd(Wr, 0, xr, g_ltd)
                else:
                    blocks = [(self.c, self.e0, x, W0)] + ([(self.crec, self.erec, xr, Wr)] if self.rec else [])
                    for c, e, xx, _ in blocks:
                        for j in range(len(e)):
                            for i in range(self.h):
                                c[j][i] = clip(dec(c[j][i], self.d_elig) + g_ltp[i] * e[j] + g_ltd[i] * xx[j],
                                               -(2**31), 2**31 - 1)
                    if reward != 0:
                        k = self.k[0]
                        for c, e, xx, W in blocks:
                            for j in range(len(e)):
                                for i in range(self.h):
                                    if c[j][i] == 0:
                                        continue
                                    r = (self.rng[0].next_u32() >> (32 - k)) if k > 0 else 0
                                    W[i, j] = clip(int(W[i, j]) + rs(reward * c[j][i] + r, k), -32767, 32767)
                for i in range(self.h):
                    self.y[i] = dec(self.y[i], self.d_post)
                for i in spk0:
                    self.y[i] = sat(self.y[i] + 256)
            else:
                Rr = (1 << 24) // theta
                psi = []
                for i in range(self.h):
                    th = theta + (a_old[i] if self.alif else 0)
                    u = v0[i] + theta * s[i] - th
                    if s[i] and self.model.network.layers[0].neuron.reset == "zero":
                        u = 0
                    psi.append(0 if abs(u) >= theta else ((theta - abs(u)) * Rr) >> 16)
                if self.rule == "eprop":
                    L = [rs(sum(self.B[kk][i] * err[kk] for kk in range(self.C)), 6) for i in range(self.h)]
                elif self.rule == "etlp":
                    L = [rs(self.B[label][i] * self.y1, 6) if label >= 0 else 0 for i in range(self.h)]
                else:  # decolle
                    for kk in range(self.C):
                        self.yloc[kk] = sat(dec(self.yloc[kk], q0.dv) + sum(self.B[kk][i] for i in spk0))
                    el = [clip((self.tgt_loc if kk == label else 0) - self.yloc[kk], -32767, 32767)
                          if label >= 0 else 0 for kk in range(self.C)]
                    L = [rs(sum(self.B[kk][i] * el[kk] for kk in range(self.C)), 6) for i in range(self.h)]
                L = [clip(x, -I32, I32) for x in L]
                g = [clip(rs(L[i] * psi[i], 8) + greg[i], -I32, I32) for i in range(self.h)]
                self._upd(W0, 0, self.e0, g)
                if self.rec:
                    self._upd(Wr, 0, self.erec, g)
        # ---- layer 1: the readout's delta rule
        q1 = self.q[1]
        for j in range(self.h):
            self.e1[j] = dec(self.e1[j], q1.dv)
        for j in spk0:
            self.e1[j] = sat(self.e1[j] + 256)
        if self.trial:
            if label >= 0:
                if self.n and label != self.lab:
                    self.end_trial()
                self.acc = [clip(a + e, -(2**31), 2**31 - 1) for a, e in zip(self.acc, self.e1)]
                self.vsum = [a + v for a, v in zip(self.vsum, v1)]
                self.n, self.lab = self.n + 1, label
            return
        e1 = self.e1
        if self.center:
            for j in range(self.h):
                self.m1[j] = self.m1[j] + rs(self.e1[j] - self.m1[j], self.center)
            e1 = [self.e1[j] - self.m1[j] for j in range(self.h)]
        self._upd(q1.weight, 1, e1, [clip(rs(err[kk] * 256, 8), -I32, I32) for kk in range(self.C)])


    def end_trial(self):
        """Trial mode, docs/learning.md: one update from the trial's means (Python's // is a floor)."""
        if self.n:
            eb = [a // self.n for a in self.acc]
            vb = [v // self.n for v in self.vsum]
            if self.center:
                self.m1 = [m + rs(e - m, self.center) for m, e in zip(self.m1, eb)]
            ec = [clip(e - m + rs(m, self.trial), -I32, I32) for e, m in zip(eb, self.m1)]
            err = [clip((self.y1 if kk == self.lab else 0) - vb[kk], -32767, 32767) for kk in range(self.C)]
            if self.hinge:
                err = [max(d, 0) if kk == self.lab else min(d, 0) for kk, d in enumerate(err)]
            self._upd(self.q[1].weight, 1, ec, err)
        self.acc, self.vsum, self.n, self.lab = [0] * self.h, [0] * self.C, 0, -1


def random_inputs(n_in, T, rate, seed):
    return learning_inputs(n_in, T, rate, seed, sort=True)


def run_both(model, rule, steps, labels, k0=10, k1=12, reg=None, rewards=None, **kw):
    lr = Learner(model, rule, eta_shift={0: k0, 1: k1}, reg=reg, **kw)
    ref = RefLearner(model, rule, k0, k1, reg=reg, **kw)
    for t, inp in enumerate(steps):
        rw = None if rewards is None else rewards[t]
        lr.step(np.array(inp, np.int32), labels[t], reward=rw)
        ref.step(inp, labels[t], reward=rw)
    return lr, ref


CASES = [("readout", False, False, None), ("etlp", False, False, None), ("decolle", False, False, None),
         ("eprop", False, False, None), ("eprop", True, True, None), ("eprop", True, False, (0.05, 0.3, 10.0, 1)),
         ("etlp", False, False, (0.05, 0.2, 10.0, 0)), ("stdp", False, False, None), ("stdp", True, False, None),
         ("rstdp", False, False, None), ("rstdp", True, False, None)]


@pytest.mark.parametrize("rule,recurrent,alif,reg", CASES)
def test_kernels_equal_reference(rule, recurrent, alif, reg):
    model = make_model(recurrent, alif)
    T = 30
    steps = random_inputs(12, T, 0.35, seed=1)
    labels = [-1] * 3 + [1] * 12 + [2] * 15
    lr, ref = run_both(model, rule, steps, labels, reg=reg)
    w0_ref = ref.q[0].weight
    assert np.array_equal(lr.weights(0), w0_ref)
    if recurrent:
        assert np.array_equal(lr.weights_rec(0), ref.q[0].weight_rec)
    assert np.array_equal(lr.weights(1), ref.q[1].weight)
    assert lr.updates > 0
    if rule != "readout":  # the hidden layer did learn
        assert not np.array_equal(lr.weights(0), model.layers[0].weight)
    assert not np.array_equal(lr.weights(1), model.layers[1].weight)


@pytest.mark.parametrize("kw", [{"hinge": True}, {"center": 3}, {"hinge": True, "center": 1}])
def test_readout_options_equal_reference(kw):
    model = make_model(seed=11)
    steps = random_inputs(12, 40, 0.4, seed=12)
    labels = [0] * 20 + [2] * 20
    lr, ref = run_both(model, "eprop", steps, labels, k0=11, k1=11, **kw)
    assert np.array_equal(lr.weights(0), ref.q[0].weight)
    assert np.array_equal(lr.weights(1), ref.q[1].weight)
    plain, _ = run_both(model, "eprop", steps, labels, k0=11, k1=11)
    assert not np.array_equal(lr.weights(1), plain.weights(1))   # the option does change the learning


TRIAL_LABELS = [-1] * 3 + [1] * 12 + [-1] * 2 + [1] * 5 + [2] * 15 + [0] * 3   # unlabelled gaps, changes


@pytest.mark.parametrize("rule,kw", [("readout", {"trial": 3}), ("readout", {"trial": 1, "center": 2}),
                                     ("eprop", {"trial": 5, "center": 3, "hinge": True}),
                                     ("readout", {"trial": 31, "center": 1})])
def test_trial_mode_equals_reference(rule, kw):
    """The readout learns once per trial (at a change of label and at end_trial), from the trial's means."""
    model = make_model(seed=13)
    steps = random_inputs(12, len(TRIAL_LABELS), 0.4, seed=14)
    lr, ref = run_both(model, rule, steps, TRIAL_LABELS, k0=11, k1=7, **kw)
    assert np.array_equal(lr.weights(1), ref.q[1].weight)     # two trials ended by a change of label
    moved = lr.weights(1).copy()
    assert not np.array_equal(moved, model.layers[1].weight)
    lr.end_trial()
    ref.end_trial()                                             # the third, label 0
    assert np.array_equal(lr.weights(0), ref.q[0].weight)
    assert np.array_equal(lr.weights(1), ref.q[1].weight)
    assert not np.array_equal(lr.weights(1), moved)
    per_step, _ = run_both(model, rule, steps, TRIAL_LABELS, k0=11, k1=7, **{k: v for k, v in kw.items()
                                                                             if k != "trial"})
    assert not np.array_equal(lr.weights(1), per_step.weights(1))


def test_trial_ends_at_reset_and_is_dropped_when_learning_is_off():
    model = make_model(seed=15)
    steps = random_inputs(12, 10, 0.5, seed=16)

    def run(stop):
        lr = Learner(model, "readout", eta_shift=3, trial=2)
        for inp in steps:
            lr.step(np.array(inp, np.int32), 1)
        stop(lr)
        return lr
    by_reset = run(lambda lr: lr.reset())
    by_end = run(lambda lr: lr.end_trial())
    assert np.array_equal(by_reset.weights(1), by_end.weights(1))
    assert not np.array_equal(by_reset.weights(1), model.layers[1].weight)

    def off(lr):
        lr.enabled = False
        lr.reset()
    dropped = run(off)
    assert np.array_equal(dropped.weights(1), model.layers[1].weight) and dropped.updates == 0
    assert dropped.layers[1].n == 0                            # nothing left pending
    unlabelled = Learner(model, "readout", eta_shift=3, trial=2)
    for inp in steps:
        unlabelled.step(np.array(inp, np.int32), -1)
    unlabelled.end_trial()
    assert unlabelled.updates == 0


def test_trial_float_twin_follows_fixed():
    """Trial mode in float and in fixed point on the same data: the float twin's weights correlate > 0.99
    with the fixed learner's after 30 trials."""
    rng = np.random.default_rng(7)
    net = Network((30,), [Dense(rng.normal(0, 0.2, (4, 30)), Neuron("li", tau_mem=10e-3), plastic=True)], seed=1)
    model = quantize(net)
    out = {}
    for mode in ("fixed", "float"):
        lr = Learner(model, "readout", mode=mode, eta_shift=11, trial=3, center=2)
        r2 = np.random.default_rng(8)
        for trial in range(30):
            lab = int(r2.integers(0, 4))
            lr.reset()
            for t in range(12):
                lr.step(np.flatnonzero(r2.random(30) < 0.2 + 0.1 * (np.arange(30) % 4 == lab)).astype(np.int32), lab)
        lr.end_trial()
        out[mode] = lr.weights(0).astype(np.float64) - model.layers[0].weight
    assert np.abs(out["fixed"]).max() > 50                     # it did learn
    assert np.corrcoef(out["fixed"].ravel(), out["float"].ravel())[0, 1] > 0.99


@pytest.mark.parametrize("bad", [-1, 32])
def test_trial_out_of_range_is_refused(bad):
    with pytest.raises(ModelError, match="trial"):
        Learner(make_model(), "readout", trial=bad)


def test_reset_to_zero_and_all_inputs_active_equal_reference():
    model = make_model(reset="zero", seed=7)
    steps = [list(range(12))] * 20     # every input active every step
    labels = [0] * 20
    for rule in ("eprop", "decolle"):
        lr, ref = run_both(model, rule, steps, labels, k0=12, k1=14)
        assert np.array_equal(lr.weights(0), ref.q[0].weight)
        assert np.array_equal(lr.weights(1), ref.q[1].weight)


def test_explicit_reward_equals_reference():
    model = make_model(seed=9)
    steps = random_inputs(12, 25, 0.4, seed=3)
    rewards = [0, 0, 3, -2, 0] * 5
    lr, ref = run_both(model, "rstdp", steps, [-1] * 25, k0=14, rewards=rewards)
    assert np.array_equal(lr.weights(0), ref.q[0].weight)


def test_reward_beyond_int32_is_refused_before_the_step():
    lr = Learner(make_model(seed=9), "rstdp")
    lr.step(np.array([1, 2], np.int32), reward=2**31 - 1)             # the largest int32 is taken
    state = lr.sim.vs.copy()
    w = lr.weights(0).copy()
    for bad in (2**31, -(2**31) - 1):
        with pytest.raises(InputError, match="an int32 .* the step was not run"):
            lr.step(np.array([1, 2], np.int32), reward=bad)
    assert lr.t == 1 and np.array_equal(lr.sim.vs, state) and np.array_equal(lr.weights(0), w)


@pytest.mark.parametrize("rule", ["readout", "etlp", "decolle", "eprop", "stdp", "rstdp"])
def test_empty_input_changes_nothing_but_the_error(rule):
    model = make_model()
    lr = Learner(model, rule)
    for _ in range(20):
        lr.step(np.zeros(0, np.int32), 1)
    # no presynaptic event: every trace is 0, so no synapse changes (the readout error is not 0)
    assert lr.updates == 0
    assert np.array_equal(lr.weights(0), model.layers[0].weight)
    assert np.array_equal(lr.weights(1), model.layers[1].weight)


@pytest.mark.parametrize("rule", ["etlp", "stdp"])
def test_weights_saturate_at_32767(rule):
    """A huge learning rate (k = 0) drives hidden weights to the bounds: they reach +-32767 and never pass."""
    model = make_model()
    lr = Learner(model, rule, eta_shift={0: 0, 1: 0})
    seen = []
    for t, inp in enumerate(random_inputs(12, 30, 0.5, seed=6)):
        lr.step(np.array(inp, np.int32), t % 3)
        seen.append(lr.weights(0))
    w = np.array(seen)
    assert w.max() <= 32767 and w.min() >= -32767
    assert (w == 32767).any() or (w == -32767).any()


def test_update_kernel_saturates_and_rounds_stochastically():
    w = np.array([32760, -32760, 100, 0], np.int16)
    g = np.array([1 << 20, -(1 << 20), 3, -3], np.int64)
    e = np.array([256], np.int32)
    rng = seed_state(1, 2)
    nz = np.zeros(4, np.int64)
    R.update_fixed(w, 0, 4, e, g, 4, rng, nz)
    assert w[0] == 32767 and w[1] == -32767
    # 3 * 256 / 16 = 48 exactly: no rounding error whatever the draw
    assert w[2] == 148 and w[3] == -48
    # mean of stochastic rounding = the exact quotient
    acc = 0
    n = 4000
    for _ in range(n):
        ww = np.zeros(1, np.int16)
        R.update_fixed(ww, 0, 1, np.array([3], np.int32), np.array([5], np.int64), 3, rng, nz)
        acc += int(ww[0])
    assert abs(acc / n - 15 / 8) < 0.05


def test_rs_is_floor_and_psi_is_a_triangle():
    for a in (-9, -8, -7, -1, 0, 1, 7, 8, 9, -(2**40) - 3):
        for k in (0, 1, 3, 8):
            assert R.rs(a, k) == a // (1 << k) == rs(a, k)
    theta = 1000
    v = np.array([1000 - 1000, 500 - 1000, 0, 999, 1000, 1500, 1999, 2000, -5], np.int32)  # after reset
    spk = np.array([0, 1], np.int32)   # neurons 0, 1 spiked: v_pre = v + theta
    psi = np.zeros(9, np.int64)
    R.surrogate_fixed(v, spk, 2, np.zeros(0, np.int32), theta, True, R.psi_recip(theta), psi,
                      np.zeros(9, np.uint8))
    assert psi[0] == 256 - 1 or psi[0] == 256  # u = 0: the peak (floor of 1000 * floor(2^24/1000) >> 16)
    assert psi[2] == 0 and psi[4] == psi[0] and psi[7] == 0 and psi[8] == 0
    assert 0 < psi[5] < psi[0] and psi[3] > psi[5] and psi[6] < psi[5]
    assert abs(int(psi[1]) - 128) <= 1 and abs(int(psi[5]) - 128) <= 1


def test_trace_float_vs_fixed_bound():
    D = (3686 << 12)   # beta_eff = 3686 / 4096
    beta = 3686 / 4096
    rng = np.random.default_rng(0)
    e_q = np.zeros(50, np.int32)
    e_f = np.zeros(50)
    worst = 0.0
    for _ in range(400):
        src = rng.integers(0, 50, rng.integers(0, 30)).astype(np.int32)
        R.trace_fixed(e_q, D, src, src.size)
        R.trace_float(e_f, beta, src)
        worst = max(worst, float(np.max(np.abs(e_q - e_f))))
    assert worst <= 1 / (1 - beta)
    assert worst > 0  # the floor does act


def test_single_update_float_vs_fixed_bound():
    rng = np.random.default_rng(2)
    n_in, n_out, k = 40, 7, 9
    e = rng.integers(-3000, 3000, n_in).astype(np.int32)
    L = rng.integers(-5000, 5000, n_out).astype(np.int64)
    psi = rng.integers(0, 257, n_out).astype(np.int64)
    g = np.zeros(n_out, np.int64)
    R.gate_fixed(L, psi, np.zeros(n_out, np.int64), g)
    w = np.zeros(n_in * n_out, np.int16)
    R.update_fixed(w, 0, n_out, e, g, k, seed_state(0, 1), np.zeros(n_out, np.int64))
    Wf = np.zeros((n_in, n_out))
    R.update_float(Wf, e.astype(float), L * psi / 256.0, k)
    diff = np.abs(w.reshape(n_in, n_out) - Wf)
    bound = 1 + np.abs(e)[:, None] / 2.0**k
    assert np.all(diff < bound)


def test_float_twin_follows_fixed_on_a_readout():
    """A plastic LI readout on the input (no spikes to diverge): after 200 steps of learning the weights of
    the float twin and of the fixed learner differ on average by less than 15 % of how far they moved,
    and correlate > 0.99 (the floors of the decays and the stochastic rounding are the difference)."""
    rng = np.random.default_rng(4)
    net = Network((30,), [Dense(rng.normal(0, 0.2, (4, 30)), Neuron("li", tau_mem=10e-3), plastic=True)], seed=1)
    model = quantize(net)
    out = {}
    for mode in ("fixed", "float"):
        lr = Learner(model, "readout", mode=mode, eta_shift=14)
        r2 = np.random.default_rng(5)
        for t in range(200):
            lr.step(np.flatnonzero(r2.random(30) < 0.3).astype(np.int32), (t // 50) % 4)
        out[mode] = lr.weights(0).astype(float)
    d = out["fixed"] - out["float"]
    moved = np.abs(out["fixed"] - model.layers[0].weight).mean()
    assert moved > 1000  # it did learn
    assert np.abs(d).mean() < 0.15 * moved
    assert np.corrcoef(out["fixed"].ravel(), out["float"].ravel())[0, 1] > 0.99


@pytest.mark.parametrize("rule,alif", [("etlp", False), ("eprop", False), ("eprop", True), ("decolle", False)])
def test_float_gate_matches_fixed_gate_on_the_same_state(rule, alif):
    """Fed the fixed learner's own state every step, the float twin's gate g = L * psi / 256 is within
    1 + |L| (1 + theta / 2^16) / 256 + psi / 256 + 1 of the integer one (floors of L, psi and g)."""
    model = make_model(h=16, n_in=20, recurrent=alif, alif=alif)
    lr = Learner(model, rule, eta_shift={0: 12, 1: 14})
    L0 = lr.layers[0]
    theta = L0.theta
    checked = 0
    for t, inp in enumerate(random_inputs(20, 60, 0.3, seed=8)):
        a_old = lr.sim.vs[L0.a_off:L0.a_off + 16].astype(float) if alif else None
        yloc_before = L0.y_loc.astype(float).copy()
        lr.step(np.array(inp, np.int32), t % 3)
        spk = lr.sim.spikes(0)
        flags = np.zeros(16)
        flags[spk] = 1
        psi = R.surrogate_float(lr.sim.v(0).astype(float), flags, a_old, float(theta), True)
        if rule == "eprop":
            Lf = R.project_float(L0.B, lr.err.astype(float))
        elif rule == "etlp":
            Lf = R.target_signal_float(L0.B, t % 3, float(lr.y_one_q), 16)
        else:
            y = yloc_before * (L0.D / 2.0**24) + L0.B[:, spk].astype(float).sum(axis=1)
            assert np.all(np.abs(y - L0.y_loc) <= 1)     # one floor of the decay
            Lf = R.project_float(L0.B, R.readout_error_float(L0.y_loc.astype(float), t % 3, 512.0))
        gf = Lf * psi / 256
        bound = 1 + np.abs(Lf) * (1 + theta / 2**16) / 256 + psi / 256 + 1
        assert np.all(np.abs(L0.g - gf) <= bound)
        checked += int(np.count_nonzero(L0.g))
    assert checked > 0


def test_deterministic_and_seeded():
    model = make_model()
    steps = random_inputs(12, 40, 0.3, seed=2)
    labels = [t % 3 for t in range(40)]

    def final(m):
        lr = Learner(m, "eprop", eta_shift={0: 13, 1: 15})
        for t, inp in enumerate(steps):
            lr.step(np.array(inp, np.int32), labels[t])
        return lr.weights(0), lr.weights(1)

    a, b = final(model), final(model)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    other = copy.deepcopy(model)
    other.network.seed = 6    # another PRNG stream: different stochastic rounding
    c = final(other)
    assert not np.array_equal(a[1], c[1])


def test_run_time_control():
    model = make_model()
    steps = random_inputs(12, 20, 0.4, seed=3)
    lr = Learner(model, "eprop")
    lr.enabled = False
    for inp in steps:
        lr.step(np.array(inp, np.int32), 1)
    assert lr.updates == 0 and np.array_equal(lr.weights(0), model.layers[0].weight)
    lr.enabled = True
    lr.mask = {1}
    for inp in steps:
        lr.step(np.array(inp, np.int32), 1)
    assert np.array_equal(lr.weights(0), model.layers[0].weight)
    assert not np.array_equal(lr.weights(1), model.layers[1].weight)
    # a smaller eta (larger k) moves the weights less
    moves = []
    for k in (8, 16):
        lr = Learner(model, "readout", eta_shift=k)
        for inp in steps:
            lr.step(np.array(inp, np.int32), 1)
        moves.append(np.abs(lr.weights(1).astype(int) - model.layers[1].weight).sum())
    assert moves[0] > 10 * moves[1]
    with pytest.raises(ModelError):
        lr.eta_shift[1] = 40
        lr.step(np.array([0], np.int32), 1)


def test_learned_model_runs_unchanged_inference():
    """fixed_model() puts the learned int16 weights into a FixedModel; the emulator's inference on it equals
    the learner's own forward pass (the inference kernels are untouched)."""
    model = make_model()
    steps = random_inputs(12, 30, 0.3, seed=4)
    lr = Learner(model, "etlp")
    for inp in steps:
        lr.step(np.array(inp, np.int32), 2)
    learned = lr.fixed_model()
    lr.enabled = False
    lr.reset()
    sim = Simulator.fixed(learned)
    for inp in steps:
        lr.step(np.array(inp, np.int32))
        sim.step(np.array(inp, np.int32))
        assert np.array_equal(sim.v(-1), lr.sim.v(-1))


def test_refuses_what_cannot_learn():
    rng = np.random.default_rng(0)
    conv = Network((1, 6, 6), [Conv2d(rng.normal(0, 0.5, (2, 1, 3, 3)), plastic=True),
                               Dense(rng.normal(0, 0.3, (3, 32)), Neuron("li"), plastic=True)])
    from edgesnn.model.spec import Flatten
    conv.layers.insert(1, Flatten())
    with pytest.raises(ModelError, match="only Dense and Recurrent"):
        Learner(quantize(conv), "eprop")
    with pytest.raises(ModelError, match="unknown learning rule"):
        Learner(make_model(), "backprop")
    frozen = make_model()
    frozen.network.layers[1].plastic = False
    frozen.network.layers[0].plastic = False
    with pytest.raises(ModelError, match="no plastic layer"):
        Learner(frozen, "readout")


def test_feedback_matrix_is_the_prng_stream():
    B = R.feedback_matrix(123, 2, 3, 5)
    g = PyPrng(123, 0x46424B00 + 2)
    assert B.tolist() == [[(g.next_u32() >> 25) - 64 for _ in range(5)] for _ in range(3)]
    assert B.min() >= -64 and B.max() <= 63


def test_weight_decay_equals_reference():
    model = make_model(seed=3)
    lr = Learner(model, "readout")
    before = lr.weights(1).astype(int)            # (C, h); stored input-major (h, C)
    lr.decay_weights(3)
    g = PyPrng(model.network.seed, 0x4C524E00 + 1)
    flat = before.T.ravel().tolist()
    want = [w - rs(w + (g.next_u32() >> 29), 3) for w in flat]
    assert np.array_equal(lr.weights(1).T.ravel(), np.array(want))
    assert np.abs(lr.weights(1)).sum() < np.abs(before).sum()
    lr.enabled = False
    w = lr.weights(1)
    lr.decay_weights(3)                           # learning off: nothing changes
    assert np.array_equal(lr.weights(1), w)


def test_nlms_shift_is_k_plus_ilog2():
    rng = np.random.default_rng(3)
    for _ in range(50):
        e = rng.integers(-(2**20), 2**20, rng.integers(0, 40)).astype(np.int32)
        S = sum((abs(int(x)) >> 4) ** 2 for x in e)
        want = min(max(5 + (S.bit_length() - 1 if S >= 1 else 0), 0), 31)
        assert R.nlms_shift_fixed(e, 5) == want
    assert R.nlms_shift_fixed(np.full(70000, 2**31 - 1, np.int64), 0) == 31   # saturated sum, clipped k
    # the float twin takes the same k when the sum is not near a power of two
    e = np.array([1000, -2000, 30], np.int32)
    assert R.nlms_shift_float(e.astype(float), 3) == R.nlms_shift_fixed(e, 3)


def test_a_label_outside_the_readout_is_refused_before_anything_changes():
    model = make_model()
    lr = Learner(model, "etlp")
    w0 = lr.weights(0).copy()
    with pytest.raises(InputError, match="label 3 at step 0: the readout has classes 0..2"):
        lr.step([0, 1, 2], label=3)
    assert np.array_equal(lr.weights(0), w0) and lr.t == 0
