"""The Learner: a forward step through the existing simulator, then the learning update of each plastic layer.

    lr = Learner(model, "eprop", mode="fixed")       # model: a FixedModel with plastic (int16) layers
    lr.reset()                                       # start of a sample: network state and traces to 0
    for t in range(T): lr.step(events_t, label)      # label < 0 (or None): no teaching signal this step
    lr.eta_shift[l] = 14; lr.mask.discard(l); lr.enabled = False     # run-time control
    model2 = lr.fixed_model()                        # the learned integer weights as a FixedModel

mode "fixed" runs the integer kernels of rules.py on the emulator's own state and int16 weight pool (the
inference kernels are unchanged: the forward step is Simulator.step); mode "float" runs the float32 twin of
the network and the float twins of the rules in the same units (docs/learning.md, "The float twin").
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import InputError, ModelError
from ..kernels import layout as K
from ..kernels.arith import FORM_MULTIPLY, q24_multiplier
from ..kernels.prng import seed_state
from ..model.quantize import FixedModel, LayerQ, decay_constant, effective_beta, round_half_away
from ..model.spec import Dense, Recurrent
from ..simulator import Simulator
from . import rules as R

RULES = ("readout", "etlp", "decolle", "eprop", "stdp", "rstdp")
RULE_HELP = {
    "readout": "delta rule on the LI readout only (hidden layers frozen)",
    "etlp": "hidden: fixed random projection of the target (DRTP-style); readout: delta rule",
    "decolle": "hidden: a local LI readout per layer with fixed random weights and its own error; readout: delta rule",
    "eprop": "hidden (Dense / Recurrent, LIF or ALIF): random feedback of the output error; readout: delta rule",
    "stdp": "hidden: pair-based STDP on the traces (unsupervised); readout: delta rule",
    "rstdp": "hidden: reward-modulated STDP (per-synapse eligibility, reward +-1 from the readout's "
             "decision); readout: delta rule",
}


def _q24(tau_steps: float) -> tuple[int, float]:
    """Q24 multiplier (multiply form) and its effective factor for a time constant in steps."""
    beta = 0.0 if tau_steps <= 0 else math.exp(-1.0 / tau_steps)
    d = decay_constant(beta, "multiply")
    return q24_multiplier(d, FORM_MULTIPLY), effective_beta(d, "multiply")


class _Layer:
    """Learning state and constants of one plastic layer."""


class Learner:
    def __init__(self, model: FixedModel, rule: str, mode: str = "fixed", eta_shift=None, y_one: float = 1.0,
                 decolle_target: int = 512, reg=None, a_plus: int = 4, a_minus: int = 3,
                 tau_post: float = 20.0, tau_elig: float = 50.0, layers=None, center: int = 0,
                 hinge: bool = False, nlms: bool = False, trial: int = 0):
        if rule not in RULES:
            raise ModelError(f"unknown learning rule {rule!r}; use one of {', '.join(RULES)}")
        if mode not in ("fixed", "float"):
            raise ModelError(f"mode must be 'fixed' or 'float', got {mode!r}")
        self.model, self.rule, self.mode = model, rule, mode
        net = model.network
        self.fixed = mode == "fixed"
        self.sim = Simulator.fixed(model) if self.fixed else Simulator.float(model.dequantized())
        prog = self.sim.program
        self.ltab = prog.ltab
        n_layers = len(net.layers)
        last = n_layers - 1
        out_layer = net.layers[last]
        self.n_classes = self.sim.n_outputs
        self.readout_li = out_layer.neuron.kind == "li"
        self.enabled = True
        self.layers: dict[int, _Layer] = {}
        # which layers learn and how
        for l, layer in enumerate(net.layers):
            if not getattr(layer, "plastic", False):
                continue
            if not isinstance(layer, (Dense, Recurrent)):
                raise ModelError(f"layer {l} ({type(layer).__name__}) is plastic, but only Dense and Recurrent "
                                 f"layers learn; make it non-plastic")
            q = model.layers[l]
            L = _Layer()
            L.index, L.q = l, q
            L.kind = layer.neuron.kind
            L.recurrent = isinstance(layer, Recurrent)
            L.n_in, L.n_out = int(self.ltab[l, K.L_N_IN]), int(self.ltab[l, K.L_N_OUT])
            L.w_off, L.wrec_off = int(self.ltab[l, K.L_W_OFF]), int(self.ltab[l, K.L_WREC_OFF])
            L.v_off, L.a_off = int(self.ltab[l, K.L_V_OFF]), int(self.ltab[l, K.L_A_OFF])
            L.theta = int(q.theta)
            L.reset_sub = layer.neuron.reset == "subtract"
            L.R = R.psi_recip(q.theta) if L.theta > 0 else 0
            L.D = int(prog.ptab[l, K.P_DV]) if self.fixed else float(prog.ptab[l, K.P_DV])
            if L.kind == "li":
                L.role = "readout" if l == last else None
            elif rule == "readout":
                L.role = None
            elif rule in ("etlp", "decolle", "eprop", "stdp", "rstdp"):
                L.role = rule
            if L.role is None:
                continue
            if L.role in ("etlp", "eprop", "decolle") and not self.readout_li and L.role != "decolle":
                raise ModelError(f"rule {rule}: the last layer must be an LI readout (its error is the signal)")
            if L.role == "readout" and not self.readout_li:
                raise ModelError("the readout rule needs an LI last layer")
            L.shift = q.shift
            self.layers[l] = L
        if not self.layers:
            raise ModelError(f"rule {rule}: no plastic layer learns with it (mark Dense / Recurrent layers "
                             f"plastic=True; 'readout' needs a plastic LI last layer)")
        out_q = model.layers[last]
        self.y_one_q = int(round_half_away(y_one * 2.0 ** out_q.shift)) if self.readout_li else 0
        self.decolle_target = int(decolle_target)
        if not 0 <= int(center) <= 30:
            raise ModelError(f"center must be 0 (off) or a shift 1..30, got {center}")
        if not 0 <= int(trial) <= 31:
            raise ModelError(f"trial must be 0 (off) or a keep shift 1..31, got {trial}")
        self.trial = int(trial)     # the readout learns once per trial, on the trial's means (docs/learning.md)
        self.hinge = bool(hinge)    # one-sided (squared-hinge) readout error
        self.nlms = bool(nlms)      # three-factor layers: k = eta_shift + ilog2(sum (e_j >> 4)^2) every step
        self.center = int(center)   # the readout's presynaptic trace is centred by a running mean (2^-center)
        self.a_plus, self.a_minus = int(a_plus), int(a_minus)
        self.D_post, self.b_post = _q24(tau_post)
        self.D_elig, self.b_elig = _q24(tau_elig)
        # rate regularisation: (lo_rate, hi_rate, tau_rate_steps, shift) rates in spikes per step
        self.reg = None
        if reg is not None:
            lo, hi, tau_r, shift = reg
            D_r, b_r = _q24(tau_r)
            unit = R.TRACE_ONE / (1.0 - b_r)
            self.reg = (int(lo * unit) if lo is not None else -1, int(hi * unit) if hi is not None else -1,
                        D_r, b_r, int(shift))
        # run-time controls
        default_k = {"readout": 12, "etlp": 14, "decolle": 14, "eprop": 14, "stdp": 18, "rstdp": 26}
        self.eta_shift = {}
        for l, L in self.layers.items():
            k = default_k[L.role]
            if isinstance(eta_shift, dict):
                k = eta_shift.get(l, eta_shift.get(L.role, k))
            elif eta_shift is not None:
                k = int(eta_shift)
            self.eta_shift[l] = int(k)
        self.mask = set(self.layers) if layers is None else {l for l in layers if l in self.layers}
        seed = net.seed
        for l, L in self.layers.items():
            L.rng = seed_state(seed, (R.STREAM_LEARN + l) & 0xFFFFFFFF)
            if L.role in ("etlp", "eprop", "decolle"):
                L.B = R.feedback_matrix(seed, l, self.n_classes, L.n_out)
            if not self.fixed:
                L.W = self._float_weights(L, rec=False)
                if L.recurrent:
                    L.Wrec = self._float_weights(L, rec=True)
        self.updates = 0
        self.reset()

    # ------------------------------------------------------------ the C learner's configuration
    CONFIG_FIELDS = ("rule", "seed", "y_one", "decolle_target", "a_plus", "a_minus", "d_post", "d_elig",
                     "reg_on", "reg_lo", "reg_hi", "reg_d", "reg_shift", "center", "hinge", "nlms", "trial")

    def config(self) -> list[int]:
        """esnn_learn_config_t of the C learner (docs/learning.md; 17 int32 words in CONFIG_FIELDS order)
        for this Learner in mode fixed: what a device reports in its LEARN status."""
        reg = self.reg
        words = [RULES.index(self.rule), int(self.model.network.seed) & 0xFFFFFFFF, self.y_one_q,
                 self.decolle_target, self.a_plus, self.a_minus, self.D_post, self.D_elig,
                 0 if reg is None else 1, -1 if reg is None else reg[0], -1 if reg is None else reg[1],
                 0 if reg is None else reg[2], 0 if reg is None else reg[4], self.center, int(self.hinge),
                 int(self.nlms), self.trial]
        for name, v in zip(self.CONFIG_FIELDS, words):
            if not -(2**31) <= int(v) < 2**32:
                raise ModelError(f"learner constant {name} = {v} does not fit the C config's 32 bits")
        return [int(v) for v in words]

    @classmethod
    def for_config(cls, model: FixedModel, words) -> "Learner":
        """The fixed-point Learner whose config() equals ``words`` (a device's LEARN status): the rule and
        the options rule, center, hinge, nlms and trial are read from it, the rest must be the defaults. Raises
        ModelError naming the fields that differ (another seed: the device runs another model's learner)."""
        words = [int(w) for w in words]
        if len(words) != len(cls.CONFIG_FIELDS):
            raise ModelError(f"a learner configuration has {len(cls.CONFIG_FIELDS)} words, got {len(words)}")
        if not 0 <= words[0] < len(RULES):
            raise ModelError(f"unknown learning rule number {words[0]} (0..{len(RULES) - 1}: {', '.join(RULES)})")
        lr = cls(model, RULES[words[0]], mode="fixed", center=words[13], hinge=bool(words[14]),
                 nlms=bool(words[15]), trial=words[16])
        mine = lr.config()
        bad = [f"{n} {w} (here {m})" for n, w, m in zip(cls.CONFIG_FIELDS, words, mine) if (w - m) % 2**32]
        if bad:
            raise ModelError("the device's learner differs from this model's fixed-point Learner: "
                             + ", ".join(bad) + "; check that the device runs this model, built with its "
                             "learning options (edgesnn export --learn)")
        return lr

    # ------------------------------------------------------------ weights
    def _float_weights(self, L, rec):
        off = L.wrec_off if rec else L.w_off
        n_in = L.n_out if rec else L.n_in
        w = self.sim.program.wa[off:off + n_in * L.n_out].astype(np.float64).reshape(n_in, L.n_out)
        return w * 2.0 ** L.shift   # fixed units, real-valued (input-major)

    def _write_float(self, L):
        wa = self.sim.program.wa
        sc = 2.0 ** -L.shift
        wa[L.w_off:L.w_off + L.W.size] = (L.W * sc).ravel()
        if L.recurrent:
            wa[L.wrec_off:L.wrec_off + L.Wrec.size] = (L.Wrec * sc).ravel()

    def weights(self, l):
        """Layer l's (input) weights in fixed units, (n_out, n_in) like the model: int16 or float64."""
        if l not in self.layers:
            return self.model.layers[l].weight.copy()
        L = self.layers[l]
        if self.fixed:
            wb = self.sim.program.wb
            return wb[L.w_off:L.w_off + L.n_in * L.n_out].reshape(L.n_in, L.n_out).T.copy()
        return L.W.T.copy()

    def weights_rec(self, l):
        L = self.layers[l]
        if self.fixed:
            wb = self.sim.program.wb
            return wb[L.wrec_off:L.wrec_off + L.n_out * L.n_out].reshape(L.n_out, L.n_out).T.copy()
        return L.Wrec.T.copy()

    def fixed_model(self) -> FixedModel:
        """The learned weights as a FixedModel (float mode: the float weights rounded half away, clipped)."""
        layers = list(self.model.layers)
        for l, L in self.layers.items():
            q = layers[l]
            if self.fixed:
                w, wr = self.weights(l), (self.weights_rec(l) if L.recurrent else None)
            else:
                w = np.clip(round_half_away(L.W.T), -R.W_MAX, R.W_MAX)
                wr = np.clip(round_half_away(L.Wrec.T), -R.W_MAX, R.W_MAX) if L.recurrent else None
            layers[l] = LayerQ(q.shift, q.bits, w.astype(np.int16),
                               None if wr is None else wr.astype(np.int16), q.pool_weight, q.theta, q.a_inc,
                               q.dv, q.di, q.da, q.ref_steps)
        return FixedModel(self.model.network, layers)

    def float_network(self):
        """The float network: fixed mode, the learned integers' exact float twin; float mode, the float weights."""
        if self.fixed:
            return self.fixed_model().dequantized()
        from dataclasses import replace
        net = self.model.dequantized()
        layers = list(net.layers)
        for l, L in self.layers.items():
            kw = {"weight": (L.W.T * 2.0 ** -L.shift).astype(np.float32)}
            if L.recurrent:
                kw["weight_rec"] = (L.Wrec.T * 2.0 ** -L.shift).astype(np.float32)
            layers[l] = replace(layers[l], **kw)
        return net.with_layers(layers)

    # ------------------------------------------------------------ state
    def reset(self):
        """Start of a sample: ends a pending trial (end_trial), then network state, traces, eligibilities and
        local readouts to zero."""
        self.end_trial()
        self.sim.reset()
        it = np.int32 if self.fixed else np.float64
        for L in self.layers.values():
            L.e = np.zeros(L.n_in, it)
            L.e_rec = np.zeros(L.n_out, it)
            L.prev = np.zeros(0, np.int32)
            L.y = np.zeros(L.n_out, it)            # STDP post trace
            L.q_rate = np.zeros(L.n_out, it)       # rate trace (regulariser)
            L.y_loc = np.zeros(self.n_classes, it)  # DECOLLE local readout
            L.ec = np.zeros(L.n_in, it)             # centred trace (scratch)
            L.acc = np.zeros(L.n_in, it)            # trial mode: the trial's summed trace
            L.vsum = np.zeros(L.n_out, np.int64 if self.fixed else np.float64)   # and summed readout membrane
            L.n, L.lab = 0, -1                      # labelled steps of the pending trial, its label
            if not hasattr(L, "m"):                  # running mean of the trace: kept across samples
                L.m = np.zeros(L.n_in, it)
            if L.role == "rstdp":
                L.c = np.zeros(L.n_in * L.n_out, it)
                L.c_rec = np.zeros(L.n_out * L.n_out, it) if L.recurrent else np.zeros(0, it)
            # scratch
            L.psi = np.zeros(L.n_out, np.int64)
            L.Lsig = np.zeros(L.n_out, np.int64)
            L.greg = np.zeros(L.n_out, np.int64)
            L.g = np.zeros(L.n_out, np.int64)
            L.g2 = np.zeros(L.n_out, np.int64)
            L.flag = np.zeros(L.n_out, np.uint8)
            L.nz = np.zeros(L.n_out, np.int64)
            L.x = np.zeros(max(L.n_in, L.n_out), np.int32)
        self.t = 0
        self.score = np.zeros(self.n_classes, np.float64)
        self.err = np.zeros(self.n_classes, np.int64 if self.fixed else np.float64)

    # ------------------------------------------------------------ one step
    def step(self, events, label=-1, reward=None) -> np.ndarray:
        """One forward step on the active input indices ``events``, then (if enabled) the learning update
        with the teaching label of this step (-1 or None: none). ``reward`` (R-STDP): an int, or None for
        the default reward +1 / -1 from whether the readout's running decision equals the label.
        Returns the output layer's membrane (LI) or spike indices."""
        label = -1 if label is None else int(label)
        if not -1 <= label < self.n_classes:
            raise InputError(f"label {label} at step {self.t}: the readout has classes 0..{self.n_classes - 1} "
                             f"(-1: no label); check the data's labels against the model's outputs")
        if reward is not None and not -(2**31) <= int(reward) < 2**31:   # the C learner's int32: |R c| < 2^62
            raise InputError(f"reward {reward} at step {self.t}: an int32 (the device link carries "
                             f"-32768..32767); the step was not run")
        ev = np.ascontiguousarray(events, dtype=np.int32)
        a_old = {}
        for l, L in self.layers.items():
            if L.kind == "alif" and self.enabled and l in self.mask:
                a_old[l] = self.sim.vs[L.a_off:L.a_off + L.n_out].copy()
        out = self.sim.step(ev)
        last = len(self.ltab) - 1
        if self.readout_li:
            v_out = self.sim.v(last)
            self.score += v_out
        else:
            np.add.at(self.score, out, 1.0)
        self.t += 1
        if not self.enabled:
            return out
        y1 = self.y_one_q
        if self.readout_li:
            vo = v_out if self.fixed else v_out.astype(np.float64) * 2.0 ** self.model.layers[last].shift
            self._vo = vo
            if self.fixed:
                R.readout_error_fixed(vo, label, y1, self.err, self.hinge)
            else:
                self.err = R.readout_error_float(vo, label, float(y1), self.hinge)
        if reward is None and label >= 0:
            reward = 1 if int(np.argmax(self.score)) == label else -1
        reward = 0 if reward is None else int(reward)
        for l in sorted(self.layers):
            if l not in self.mask:
                continue
            L = self.layers[l]
            src = ev if l == 0 else self.sim.spikes(l - 1).astype(np.int32)
            spk = self.sim.spikes(l).astype(np.int32) if L.kind != "li" else np.zeros(0, np.int32)
            if self.fixed:
                self._layer_fixed(L, src, spk, a_old.get(l), label, reward)
            else:
                self._layer_float(L, src, spk, a_old.get(l), label, reward)
            if L.recurrent:
                L.prev = spk
        return out

    def _layer_fixed(self, L, src, spk, a_old, label, reward):
        k = self.eta_shift[L.index]
        if not 0 <= k <= R.K_MAX:
            raise ModelError(f"eta shift of layer {L.index} must be 0..31, got {k}")
        wb = self.sim.program.wb
        role = L.role
        if role in ("stdp", "rstdp"):
            R.trace_fixed(L.e, L.D, src, src.shape[0])
            if L.recurrent:
                R.trace_fixed(L.e_rec, L.D, L.prev, L.prev.shape[0])
            R.stdp_signals(spk, spk.shape[0], L.y, self.a_plus, self.a_minus, L.g, L.g2)
            if self.reg is not None:   # the regulariser adds to the LTP factor
                lo, hi, D_r, _, sh = self.reg
                R.rate_reg_fixed(L.q_rate, D_r, spk, spk.shape[0], lo, hi, sh, L.greg)
                L.g += L.greg
            x = L.x[:L.n_in]
            R.events_to_counts(src, src.shape[0], x)
            if role == "stdp":
                self.updates += R.update_fixed(wb, L.w_off, L.n_out, L.e, L.g, k, L.rng, L.nz)
                self.updates += R.update_fixed(wb, L.w_off, L.n_out, x, L.g2, k, L.rng, L.nz)
                if L.recurrent:
                    xr = L.x[:L.n_out]
                    self.updates += R.update_fixed(wb, L.wrec_off, L.n_out, L.e_rec, L.g, k, L.rng, L.nz)
                    R.events_to_counts(L.prev, L.prev.shape[0], xr)
                    self.updates += R.update_fixed(wb, L.wrec_off, L.n_out, xr, L.g2, k, L.rng, L.nz)
            else:
                R.eligibility_fixed(L.c, self.D_elig, L.n_out, L.e, x, L.g, L.g2)
                if L.recurrent:
                    xr = np.zeros(L.n_out, np.int32)
                    R.events_to_counts(L.prev, L.prev.shape[0], xr)
                    R.eligibility_fixed(L.c_rec, self.D_elig, L.n_out, L.e_rec, xr, L.g, L.g2)
                if reward != 0:
                    Rv = np.full(L.n_out, reward, np.int64)
                    self.updates += R.reward_update_fixed(wb, L.w_off, L.n_out, L.c, Rv, k, L.rng)
                    if L.recurrent:
                        self.updates += R.reward_update_fixed(wb, L.wrec_off, L.n_out, L.c_rec, Rv, k, L.rng)
            R.trace_fixed(L.y, self.D_post, spk, spk.shape[0])   # post trace after this step's updates
            return
        # three-factor family
        R.trace_fixed(L.e, L.D, src, src.shape[0])
        if L.recurrent:
            R.trace_fixed(L.e_rec, L.D, L.prev, L.prev.shape[0])
        if role == "readout" and self.trial:
            self._trial_step(L, label)
            return
        if role == "readout":
            L.Lsig[:] = self.err
            L.psi[:] = R.PSI_ONE
        else:
            R.surrogate_fixed(self.sim.v(L.index), spk, spk.shape[0],
                              a_old if a_old is not None else np.zeros(0, np.int32),
                              L.theta, L.reset_sub, L.R, L.psi, L.flag)
            if role == "eprop":
                R.project_fixed(L.B, self.err, L.Lsig)
            elif role == "etlp":
                R.target_signal_fixed(L.B, label, self.y_one_q, L.Lsig)
            elif role == "decolle":
                R.local_readout_fixed(L.y_loc, L.D, L.B, spk, spk.shape[0])
                err = np.zeros(self.n_classes, np.int64)
                R.readout_error_fixed(L.y_loc, label, self.decolle_target, err)
                R.project_fixed(L.B, err, L.Lsig)
        L.greg[:] = 0
        if self.reg is not None and L.kind != "li":
            lo, hi, D_r, _, sh = self.reg
            R.rate_reg_fixed(L.q_rate, D_r, spk, spk.shape[0], lo, hi, sh, L.greg)
        R.gate_fixed(L.Lsig, L.psi, L.greg, L.g)
        e = L.e
        if self.center and role == "readout":
            R.center_fixed(L.e, L.m, self.center, L.ec)
            e = L.ec
        if self.nlms:
            k = R.nlms_shift_fixed(e, k) if not L.recurrent else R.nlms_shift_fixed(
                np.concatenate((e, L.e_rec)), k)
        self.updates += R.update_fixed(wb, L.w_off, L.n_out, e, L.g, k, L.rng, L.nz)
        if L.recurrent:
            self.updates += R.update_fixed(wb, L.wrec_off, L.n_out, L.e_rec, L.g, k, L.rng, L.nz)

    def _layer_float(self, L, src, spk, a_old, label, reward):
        k = self.eta_shift[L.index]
        role = L.role
        sc = 2.0 ** L.shift
        flags = np.zeros(L.n_out)
        flags[spk] = 1.0
        beta = L.D
        if role in ("stdp", "rstdp"):
            R.trace_float(L.e, beta, src)
            if L.recurrent:
                R.trace_float(L.e_rec, beta, L.prev)
            g_ltp = self.a_plus * flags
            g_ltd = -self.a_minus * L.y
            if self.reg is not None:
                lo, hi, _, b_r, sh = self.reg
                g_ltp = g_ltp + R.rate_reg_float(L.q_rate, b_r, spk, lo, hi, sh)
            x = np.zeros(L.n_in)
            np.add.at(x, src, R.TRACE_ONE)
            xr = np.zeros(L.n_out)
            np.add.at(xr, L.prev, R.TRACE_ONE)
            if role == "stdp":
                R.update_float(L.W, L.e, g_ltp, k)
                R.update_float(L.W, x, g_ltd, k)
                if L.recurrent:
                    R.update_float(L.Wrec, L.e_rec, g_ltp, k)
                    R.update_float(L.Wrec, xr, g_ltd, k)
            else:
                L.c = L.c.reshape(L.n_in, L.n_out) * self.b_elig + np.outer(L.e, g_ltp) + np.outer(x, g_ltd)
                if L.recurrent:
                    L.c_rec = (L.c_rec.reshape(L.n_out, L.n_out) * self.b_elig + np.outer(L.e_rec, g_ltp)
                               + np.outer(xr, g_ltd))
                if reward != 0:
                    L.W += reward * L.c / 2.0 ** k
                    np.clip(L.W, -R.W_MAX, R.W_MAX, out=L.W)
                    if L.recurrent:
                        L.Wrec += reward * L.c_rec / 2.0 ** k
                        np.clip(L.Wrec, -R.W_MAX, R.W_MAX, out=L.Wrec)
                L.c = L.c.ravel()
                L.c_rec = np.asarray(L.c_rec).ravel()
            L.y *= self.b_post
            np.add.at(L.y, spk, R.TRACE_ONE)
            self._write_float(L)
            return
        R.trace_float(L.e, beta, src)
        if L.recurrent:
            R.trace_float(L.e_rec, beta, L.prev)
        if role == "readout" and self.trial:
            self._trial_step(L, label)
            return
        if role == "readout":
            Lsig = self.err
            psi = np.full(L.n_out, float(R.PSI_ONE))
        else:
            v = self.sim.v(L.index).astype(np.float64) * sc
            a = None if a_old is None else a_old.astype(np.float64) * sc
            psi = R.surrogate_float(v, flags, a, float(L.theta), L.reset_sub)
            if role == "eprop":
                Lsig = R.project_float(L.B, self.err)
            elif role == "etlp":
                Lsig = R.target_signal_float(L.B, label, float(self.y_one_q), L.n_out)
            else:
                L.y_loc *= beta
                L.y_loc += L.B[:, spk].astype(np.float64).sum(axis=1)
                err = R.readout_error_float(L.y_loc, label, float(self.decolle_target))
                Lsig = R.project_float(L.B, err)
        g = Lsig * psi / R.PSI_ONE
        if self.reg is not None and L.kind != "li":
            lo, hi, _, b_r, sh = self.reg
            g = g + R.rate_reg_float(L.q_rate, b_r, spk, lo, hi, sh)
        e = L.e
        if self.center and role == "readout":
            e = R.center_float(L.e, L.m, self.center)
        if self.nlms:
            k = R.nlms_shift_float(e if not L.recurrent else np.concatenate((e, L.e_rec)), k)
        R.update_float(L.W, e, g, k)
        if L.recurrent:
            R.update_float(L.Wrec, L.e_rec, g, k)
        self._write_float(L)

    # ------------------------------------------------------------ trial mode (the readout)
    def _trial_step(self, L, label):
        """A labelled step adds to the pending trial (another label first ends it); unlabelled steps do not."""
        if label < 0:
            return
        if L.n and label != L.lab:
            self._end_trial_layer(L)
        if self.fixed:
            R.trial_accumulate_fixed(L.e, L.acc, self._vo, L.vsum)
        else:
            L.acc += L.e
            L.vsum += self._vo
        L.n += 1
        L.lab = label

    def end_trial(self):
        """Trial mode: apply the pending trial's readout update now (reset() and a change of label do it
        too); dropped if learning is off or the layer masked at this moment. No-op otherwise."""
        for l, L in self.layers.items():
            if getattr(L, "n", 0):
                if self.enabled and l in self.mask:
                    self._end_trial_layer(L)
                L.acc[:] = 0
                L.vsum[:] = 0
                L.n, L.lab = 0, -1

    def _end_trial_layer(self, L):
        """dw_ij = 2^-k * err_i * ec_j once per trial: err from the trial's mean readout membrane (the
        per-step error's formula), ec the centred mean trace (rules.trial_means_fixed)."""
        k = self.eta_shift[L.index]
        if not 0 <= k <= R.K_MAX:
            raise ModelError(f"eta shift of layer {L.index} must be 0..31, got {k}")
        if self.fixed:
            ec = np.zeros(L.n_in, np.int32)
            vbar = np.zeros(L.n_out, np.int64)
            R.trial_means_fixed(L.acc, L.vsum, L.n, L.m, self.center, self.trial, ec, vbar)
            err = np.zeros(L.n_out, np.int64)
            R.readout_error_fixed(vbar, L.lab, self.y_one_q, err, self.hinge)
            if self.nlms:
                k = R.nlms_shift_fixed(ec, k)
            self.updates += R.update_fixed(self.sim.program.wb, L.w_off, L.n_out, ec, err, k, L.rng, L.nz)
        else:
            ec, vbar = R.trial_means_float(L.acc, L.vsum, L.n, L.m, self.center, self.trial)
            err = R.readout_error_float(vbar, L.lab, float(self.y_one_q), self.hinge)
            if self.nlms:
                k = R.nlms_shift_float(ec, k)
            R.update_float(L.W, ec, err, k)
            self._write_float(L)
        L.acc[:] = 0
        L.vsum[:] = 0
        L.n, L.lab = 0, -1

    def decay_weights(self, kd: int):
        """L2 weight decay of the LI readout, w -= w / 2^kd (stochastic rounding with the layer's stream);
        the trainer calls it at the start of each training sample (0: nothing)."""
        if not kd or not self.enabled:
            return
        if not 1 <= kd <= 31:
            raise ModelError(f"weight decay shift must be 1..31, got {kd}")
        for l, L in self.layers.items():
            if L.role != "readout" or l not in self.mask:
                continue
            if self.fixed:
                R.weight_decay_fixed(self.sim.program.wb, L.w_off, L.n_in * L.n_out, kd, L.rng)
            else:
                L.W -= L.W / 2.0 ** kd
                self._write_float(L)

    # ------------------------------------------------------------ costs
    def state_bytes(self) -> dict:
        """Bytes of learning state kept between steps, per learning layer (docs/learning.md, "State per
        rule"): per neuron, per synapse, per input, per layer (feedback matrix, local readout, PRNG)."""
        out = {}
        for l, L in self.layers.items():
            per_neuron = per_syn = 0
            per_input = 4                                   # presynaptic trace e_j
            fixed = 16                                      # the layer's PRNG stream
            if L.recurrent:
                per_neuron += 4 + 4                          # e_rec and the previous spike flag / index
            if L.kind == "alif":
                per_neuron += 4                              # a_old (copied before the step; every rule)
            if L.role in ("stdp", "rstdp"):
                per_neuron += 4                              # post trace
            if L.role == "rstdp":
                per_syn += 4                                 # eligibility c_ij
            if L.role in ("etlp", "eprop", "decolle"):
                fixed += self.n_classes * L.n_out            # B / G (int8)
            if L.role == "decolle":
                fixed += 4 * self.n_classes                  # local readout
            if L.role == "readout":
                fixed += 4 * self.n_classes                  # error
                if self.center:
                    per_input += 4                           # running mean m_j
                if self.trial:
                    per_input += 4                           # the trial's summed trace
                    per_neuron += 8                          # and summed membrane (int64)
                    fixed += 8                               # its step count and label
            if self.reg is not None and L.kind != "li":
                per_neuron += 4                              # rate trace
            n_syn = L.n_in * L.n_out + (L.n_out * L.n_out if L.recurrent else 0)
            total = per_neuron * L.n_out + per_syn * n_syn + per_input * L.n_in + fixed
            out[l] = {"role": L.role, "per_neuron": per_neuron, "per_synapse": per_syn, "per_input": per_input,
                      "per_layer": fixed, "neurons": L.n_out, "synapses": n_syn, "total": total,
                      "weights": 2 * n_syn}
        return out

    # ------------------------------------------------------------ samples
    def run_sample(self, events, label=-1, learn=True, teach_from: int = 0):
        """Reset, run every step of ``events`` (an Events) with the label as the teaching signal on each
        step from ``teach_from`` on (-1 before); returns the predicted class (argmax of the summed readout membrane, or of spike counts)."""
        was = self.enabled
        self.enabled = was and learn
        try:
            self.reset()
            for t in range(events.n_steps):
                self.step(events.idx[events.ptr[t]:events.ptr[t + 1]], label if t >= teach_from else -1)
            self.end_trial()
        finally:
            self.enabled = was
        return int(np.argmax(self.score))
