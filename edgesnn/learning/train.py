"""Training and evaluation loops over a Dataset (edgesnn.data) with a Learner; the CLI's train / eval.

    net = default_network(ds, "etlp")                  # plastic hidden layer(s) + plastic LI readout
    model = initial_model(net)                         # FixedModel (plastic layers int16)
    res = train(model, train_ds, "etlp", epochs=3, mode="fixed", val=val_ds)
    acc = evaluate(res.model, val_ds)                  # fixed point; evaluate_float(net, ds) for the twin
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..errors import ModelError
from ..model.quantize import FixedModel, quantize_layer
from ..model.spec import Conv2d, Dense, Network, Neuron, Recurrent, SumPool2d
from ..simulator import Simulator
from .learner import Learner

READOUT_SHIFT = 13   # readout weights in units of 2^-13: |w| <= 4 (int16)


def default_network(ds, rule: str, hidden: int | None = None, seed: int = 0,
                    readout_tau_steps: float | None = None, in_gain: float = 1.0, patch: int = 0,
                    zero_mean: bool = True, conv: int = 0, conv_kernel: int = 5,
                    readout_init: float = 0.01) -> Network:
    """The default architecture for a data set: input -> plastic hidden (LIF; ALIF Recurrent for FSDD
    with e-prop) -> plastic LI readout. Weights: zero-mean normal, scaled for the input's activity.
    ``conv`` > 0 (image-like input): a frozen front-end first, ``conv`` random zero-mean
    conv_kernel x conv_kernel LIF feature maps (stride 1, same padding) and a 2x2 sum pool of LIF neurons;
    the plastic hidden layer then reads the pooled maps. ``readout_init``: the standard deviation of the
    readout's initial weights (0: start from zero; the delta rule never corrects the part of a random start
    that its (centred) input traces do not span, e.g. the rows' common mode, a loudness-dependent bias)."""
    rng = np.random.default_rng(seed)
    n_in = int(np.prod(ds.input_shape))
    dt = ds.dt
    tau = 20e-3 if dt <= 2e-3 else 5 * dt  # 5 steps at coarse bins
    beta = math.exp(-dt / tau)
    # mean events per input per step over the data set
    ev = sum(s.idx.size for s, _ in ds.samples[:50]) / max(1, sum(s.n_steps for s, _ in ds.samples[:50]))
    rate = max(ev / n_in, 1e-3)
    if hidden is None:
        hidden = {"nmnist": 512, "fsdd": 256, "dvsgesture": 256}.get(ds.name, 256)
    lif = Neuron("lif", tau_mem=tau, threshold=1.0, reset="subtract")
    front = []
    if conv and len(ds.input_shape) == 3:
        c_in = ds.input_shape[0]
        k = int(conv_kernel)
        wc = rng.normal(0.0, in_gain * math.sqrt((1 - beta * beta) / (c_in * k * k * rate)), (conv, c_in, k, k))
        wc -= wc.mean(axis=(1, 2, 3), keepdims=True)   # zero-mean kernels: edge / motion detectors
        front = [Conv2d(wc, stride=1, padding=k // 2, neuron=lif),
                 SumPool2d(2, weight=1.0, neuron=Neuron("lif", tau_mem=tau, threshold=1.0, reset="subtract"))]
        # the activity the hidden layer sees: run the frozen front-end on a few samples
        probe = Network(ds.input_shape, front, dt=dt, seed=seed)
        spk, _ = Simulator.float(probe).run_batch([s for s, _ in ds.samples[:50]], record_v=False)
        n_in = int(spk.shape[2])
        rate = max(float(spk.mean()), 1e-3)
        patch = 0
    sigma = in_gain * math.sqrt((1 - beta * beta) / (n_in * rate))
    readout = Neuron("li", tau_mem=tau if readout_tau_steps is None else readout_tau_steps * dt)
    w_in = rng.normal(0.0, sigma, (hidden, n_in))
    if zero_mean:   # each row sums to 0: uniform loudness / event count cancels in the drive
        w_in -= w_in.mean(axis=1, keepdims=True)
    if patch and len(ds.input_shape) == 3 and not front:
        # local receptive fields: each hidden neuron sees a random patch x patch window (all channels)
        c, h, w = ds.input_shape
        mask = np.zeros((hidden, c, h, w), bool)
        ys = rng.integers(0, max(1, h - patch + 1), hidden)
        xs = rng.integers(0, max(1, w - patch + 1), hidden)
        for n in range(hidden):
            mask[n, :, ys[n]:ys[n] + patch, xs[n]:xs[n] + patch] = True
        fan = c * min(patch, h) * min(patch, w)
        w_in = np.where(mask.reshape(hidden, n_in), w_in * math.sqrt(n_in / fan), 0.0)
    if ds.name == "fsdd" and rule == "eprop" and "delays" not in ds.options:
        # (with the delay-line front-end the input carries the temporal context: a Dense LIF layer)
        alif = Neuron("alif", tau_mem=tau, threshold=1.0, reset="subtract", tau_adapt=20 * tau, adapt_step=0.05)
        first = Recurrent(w_in, rng.normal(0.0, 0.3 * sigma * math.sqrt(n_in * rate / hidden), (hidden, hidden)),
                          alif, plastic=True)
    else:
        first = Dense(w_in, lif, plastic=True)
    w_out = rng.normal(0.0, 0.01, (ds.n_classes, hidden))   # drawn in any case: the same stream after it
    out = Dense(w_out * (readout_init / 0.01), readout, plastic=True)
    return Network(ds.input_shape, front + [first, out], dt=dt, name=f"{ds.name}-{rule}", seed=seed)


def initial_model(net: Network, readout_shift: int = None) -> FixedModel:
    """Quantize: hidden layers from their weights (int16, one bit of headroom); an LI readout at a fixed
    scale of 2^-13 (so learning can grow it from small initial weights to |w| <= 4)."""
    layers = []
    for i, layer in enumerate(net.layers):
        shift = (readout_shift or READOUT_SHIFT) if (layer.neuron is not None and layer.neuron.kind == "li") else None
        layers.append(quantize_layer(layer, net.dt, i, shift=shift))
    return FixedModel(net, layers)


def _scores(out_spk, out_v):
    if out_v is not None and out_v.shape[1] > 0:
        return out_v.astype(np.float64).sum(axis=1)
    return out_spk.astype(np.float64).sum(axis=1)


def predict(sim: Simulator, ds, li: bool, batch: int = 256) -> np.ndarray:
    preds = []
    for b in range(0, len(ds.samples), batch):
        evs = [s for s, _ in ds.samples[b:b + batch]]
        spk, v = sim.run_batch(evs, record_v=li)
        preds.append(np.argmax(_scores(spk, v), axis=1))
    return np.concatenate(preds) if preds else np.zeros(0, np.int64)


def evaluate(model: FixedModel, ds) -> float:
    """Fixed-point accuracy: argmax over classes of the readout membrane summed over the steps."""
    li = model.network.layers[-1].neuron.kind == "li"
    p = predict(Simulator.fixed(model), ds, li)
    return float(np.mean(p == ds.labels)) if len(ds.samples) else 0.0


def evaluate_float(net: Network, ds) -> float:
    li = net.layers[-1].neuron.kind == "li"
    p = predict(Simulator.float(net), ds, li)
    return float(np.mean(p == ds.labels)) if len(ds.samples) else 0.0


def calibrate_eta(learner: Learner, samples, gain: float = 2.0 ** -8, hidden_gain: float = 2.0 ** -6) -> dict:
    """Normalised learning rates: for each learning layer, k = round(log2(E[sum_j e_j^2] / 256 / gain)), the
    mean squared norm of its input trace measured on ``samples`` with learning off (NLMS-like)."""
    saved = dict(learner.eta_shift)
    for l in learner.eta_shift:
        learner.eta_shift[l] = 31
    sums = {l: [] for l in learner.layers}
    trial = {l for l, L in learner.layers.items() if learner.trial and L.role == "readout"}
    means = {l: [] for l in trial}
    for ev, lab in samples:
        learner.reset()
        for t in range(ev.n_steps):
            learner.step(ev.idx[ev.ptr[t]:ev.ptr[t + 1]], lab)
            for l, L in learner.layers.items():
                if l in trial:
                    continue
                e = (L.ec if learner.center and L.role == "readout" else L.e).astype(np.float64)
                s = float(e @ e)
                if L.recurrent:
                    s += float(L.e_rec.astype(np.float64) @ L.e_rec)
                sums[l].append(s)
        for l in trial:
            L = learner.layers[l]
            means[l].append(L.acc.astype(np.float64) / max(L.n, 1))
    learner.eta_shift.update(saved)
    for l in trial:
        # trial mode: the norm of the trial's centred mean trace; the running mean starts warm at the mean
        eb = np.array(means[l])
        m = eb.mean(axis=0)
        ec = eb - m + m / 2.0 ** learner.trial
        sums[l] = list((ec * ec).sum(axis=1))
        L = learner.layers[l]
        L.m[:] = np.floor(m) if learner.fixed else m
    last = max(learner.layers)
    # restore the weights: the calibration's k = 31 updates are zero on average but not exactly
    out = {}
    for l, vals in sums.items():
        m = max(float(np.mean(vals)), 1.0)
        role = learner.layers[l].role
        gn = gain if l == last else hidden_gain
        if role in ("stdp", "rstdp"):
            k = learner.eta_shift[l]
        else:
            k = int(min(31, max(0, round(math.log2(m / 256.0 / gn)))))
        out[l] = k
    return out


@dataclass
class TrainResult:
    model: FixedModel
    float_net: Network
    history: list
    eta_shift: dict
    seconds: float
    steps: int


def train(model: FixedModel, ds, rule: str, epochs: int = 3, mode: str = "fixed", val=None, seed: int = 0,
          progress=None, eta_shift=None, reg=(0.005, 0.3, 50.0, 2), teach_from: float = 0.0,
          gain: float = 2.0 ** -6, hidden_gain: float = 2.0 ** -6, anneal: int = 1, hidden_epochs: int | None = None,
          weight_decay: int = 0, **kw) -> TrainResult:
    """Online training, one sample at a time with its label as the teaching signal on every step.
    The learning rate is normalised on a few samples (calibrate_eta) unless eta_shift is given, and halved
    (k + 1) every ``anneal`` epochs (0: never). Hidden layers learn during the first ``hidden_epochs``
    epochs (None: all), then only the readout does (the run-time layer mask)."""
    lr = Learner(model, rule, mode=mode, reg=reg, **kw)
    rng = np.random.default_rng(seed)
    if eta_shift is None and kw.get("nlms"):
        # normalised per step: k = round(log2(1 / gain)) + ilog2(sum (e_j >> 4)^2)
        last = max(lr.layers)
        base = {l: int(round(-math.log2(gain if l == last else hidden_gain))) for l in lr.layers}
    elif eta_shift is None:
        cal = [ds.samples[i] for i in rng.permutation(len(ds.samples))[:20]]
        base = calibrate_eta(lr, cal, gain, hidden_gain)
        means = {l: L.m.copy() for l, L in lr.layers.items()}
        lr = Learner(model, rule, mode=mode, reg=reg, **kw)   # fresh weights after the calibration
        for l, L in lr.layers.items():
            L.m[:] = means[l]                                   # the running means are warm
    else:
        base = {l: int(eta_shift) for l in lr.layers} if not isinstance(eta_shift, dict) else dict(eta_shift)
    history = []
    t0 = time.perf_counter()
    steps = 0
    for ep in range(epochs):
        for l in lr.layers:
            lr.eta_shift[l] = min(31, base.get(l, lr.eta_shift[l]) + (ep // anneal if anneal else 0))
        if hidden_epochs is not None and ep >= hidden_epochs:
            lr.mask = {max(lr.layers)}
        order = rng.permutation(len(ds.samples))
        correct = 0
        for n, i in enumerate(order):
            ev, lab = ds.samples[i]
            lr.decay_weights(weight_decay)
            correct += lr.run_sample(ev, lab, teach_from=int(teach_from * ev.n_steps)) == lab
            steps += ev.n_steps
            if progress:
                progress(ep * len(order) + n + 1, epochs * len(order), f"epoch {ep + 1} online acc "
                                                                     f"{correct / (n + 1):.3f}")
        rec = {"epoch": ep + 1, "online_acc_while_learning": correct / max(1, len(order))}
        if val is not None:
            rec["val_acc"] = evaluate(lr.fixed_model(), val) if mode == "fixed" else evaluate_float(
                lr.float_network(), val)
        history.append(rec)
    secs = time.perf_counter() - t0
    return TrainResult(lr.fixed_model(), lr.float_network(), history, base, secs, steps)


def check_dataset_fits(model: FixedModel, ds):
    if tuple(model.network.input_shape) != tuple(ds.input_shape):
        raise ModelError(f"the model takes input {tuple(model.network.input_shape)} but the data gives "
                         f"{tuple(ds.input_shape)}; use the reader options the model was trained with")
