"""On-device adaptation over the device link (`edgesnn adapt`): a device running a learning firmware learns
from labelled windows of real recordings, then classifies held-out windows with learning off, and an
in-process twin (the fixed-point Learner rebuilt from the device's LEARN status) checks that the device's
learned weights and decisions are the emulator's, bit for bit.

    data = gesture_windows("dvsgesture:../shared/data/dvs_gesture_10", learn_ms=900, window_ms=100)
    with connect(url) as dev:
        rep = adapt(dev, model, data, epochs=4)       # {"accuracy": ..., "weights_equal": True, ...}

Every window is one sample: LEARN RESET (network state, traces; the running means and PRNG streams go
on), then its steps in one STEP request with the label on every step (learning on), or without labels
(learning off; the decision is the argmax of the readout membrane summed over the window's steps).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..data import DataError, _labels_csv, _folder, _Opts, bin_events, parse_spec, read_bs2_checked
from ..errors import InputError
from ..model.modelfile import model_hash
from ..simulator import Events
from .learner import Learner

SENSOR = 128   # DVS Gesture: 128 x 128


@dataclass
class Windows:
    """Labelled windows cut from recordings: ``train`` from the first learn_ms of each, ``test`` after."""
    input_shape: tuple
    dt: float
    train: list = field(default_factory=list)     # (Events, label)
    test: list = field(default_factory=list)      # (Events, label)
    test_ids: list = field(default_factory=list)  # (recording, start ms)
    options: dict = field(default_factory=dict)


def gesture_windows(spec: str, learn_ms: float = 900, window_ms: float = 100, stride_ms: float = 50) -> Windows:
    """Windows of the DVS Gesture recordings of ``spec`` (dvsgesture:DIR[?bin_ms=10&pool=4&binary=1]):
    training windows of window_ms every stride_ms inside the first learn_ms of each recording; test windows
    of window_ms, back to back, from learn_ms to the end of the recording (a partial last one is dropped).
    binary=1 (default): an input is active at most once per step (a pooled pixel that saw any event), which
    carries 3-4x fewer events over the link than every event (binary=0)."""
    reader, path, opts = parse_spec(spec)
    if reader != "dvsgesture":
        raise DataError(f"adapt reads DVS Gesture recordings (dvsgesture:DIR), not {reader!r}")
    o = _Opts("dvsgesture (adapt)", opts, {"bin_ms": 10.0, "pool": 4, "binary": 1})
    bin_ms = o.get("bin_ms", float, lambda v: v > 0, "a positive number")
    pool = o.get("pool", int, lambda v: 1 <= v <= SENSOR, "1..128")
    binary = o.get("binary", int, lambda v: v in (0, 1), "0 or 1")
    for name, v in (("learn-ms", learn_ms), ("window-ms", window_ms), ("stride-ms", stride_ms)):
        if not v > 0 or not math.isclose(v / bin_ms, round(v / bin_ms)):
            raise InputError(f"--{name} {v:g}: a positive multiple of the {bin_ms:g} ms bins")
    if window_ms > learn_ms:
        raise InputError(f"--window-ms {window_ms:g} is longer than --learn-ms {learn_ms:g}")
    folder = _folder(path, "dvsgesture")
    rows = _labels_csv(folder, "dvsgesture", ("file", "class_index_0based"))
    side = -(-SENSOR // pool)
    w = Windows((2, side, side), bin_ms * 1e-3, options={"bin_ms": bin_ms, "pool": pool, "binary": binary,
                                                          "learn_ms": learn_ms, "window_ms": window_ms,
                                                          "stride_ms": stride_ms})
    steps, bin_us = int(round(window_ms / bin_ms)), int(round(bin_ms * 1000))
    for r in rows:
        f = folder / r["file"]
        if not f.is_file():
            raise DataError(f"dvsgesture: {f} listed in labels.csv does not exist")
        lab = int(r["class_index_0based"])
        x, y, p, t = read_bs2_checked(f, SENSOR, SENSOR)
        if not t.size:
            raise DataError(f"{f}: no events")
        t0, dur_ms = int(t.min()), (int(t.max()) - int(t.min())) / 1000
        if dur_ms < learn_ms + window_ms:
            raise DataError(f"{f}: {dur_ms:.0f} ms long, shorter than --learn-ms {learn_ms:g} plus one "
                            f"{window_ms:g} ms test window")

        def cut(start_ms):
            ev = bin_events(x, y, p, t, SENSOR, SENSOR, pool, bin_us, steps, t0=t0 + int(start_ms * 1000))
            return _distinct(ev) if binary else ev
        s = 0.0
        while s + window_ms <= learn_ms + 1e-9:
            w.train.append((cut(s), lab))
            s += stride_ms
        s = learn_ms
        while s + window_ms <= dur_ms + 1e-9:
            w.test.append((cut(s), lab))
            w.test_ids.append((r["file"], s))
            s += window_ms
    return w


def _distinct(ev: Events) -> Events:
    """Each step's distinct indices (ascending): every active input once."""
    rows = [np.unique(ev.idx[ev.ptr[t]:ev.ptr[t + 1]]) for t in range(ev.n_steps)]
    ptr = np.zeros(ev.n_steps + 1, np.int64)
    np.cumsum([r.size for r in rows], out=ptr[1:])
    return Events(np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32), ptr)


def _steps(ev: Events) -> list:
    return [ev.idx[ev.ptr[t]:ev.ptr[t + 1]] for t in range(ev.n_steps)]


def calibrated_eta(model, config, samples, gain: float) -> dict:
    """Learning rates normalised on ``samples`` (edgesnn.learning.train.calibrate_eta) with a throwaway
    copy of the device's learner, so neither the device nor its twin is touched."""
    from .train import calibrate_eta
    return calibrate_eta(Learner.for_config(model, config), samples, gain, gain)


def adapt(dev, model, data: Windows, epochs: int = 4, eta_shift=None, gain: float = 2.0 ** -4, seed: int = 0,
          twin: bool = True, progress=None, say=None) -> dict:
    """Teach ``dev`` (an edgesnn.device.Device running ``model`` with learning) the training windows of
    ``data`` for ``epochs`` passes (order shuffled per epoch with ``seed``), then classify the test windows
    with learning off. eta_shift: an int for every learning layer, or None (normalised on the data, see
    calibrated_eta). twin: run the fixed-point Learner alongside and compare weights and decisions
    (needs a device that has not learned since it was flashed). Returns the report (JSON-ready)."""
    from edgesnn.device import protocol as P
    say = say or (lambda m: None)
    info = dev.info
    want = model_hash(model)
    if info.hash_hex != want:
        raise InputError(f"{dev.url} runs model {info.hash_hex[:16]}…, not {want[:16]}… ({model.network.name}); "
                         f"flash firmware exported from this model with learning (`edgesnn export MODEL "
                         f"--device PROFILE --learn RULE`, `edgesnn flash`)")
    if tuple(model.network.input_shape) != tuple(data.input_shape):
        raise InputError(f"the model takes input {tuple(model.network.input_shape)} but the windows are "
                         f"{tuple(data.input_shape)}; choose pool= in the data spec to match")
    if not info.has(P.Cap.LEARN):
        raise InputError(f"{dev.url} runs {model.network.name} without learning; export it with "
                         f"`edgesnn export MODEL --device PROFILE --learn RULE` and flash that")
    if not info.has(P.Cap.READOUT):
        raise InputError(f"{dev.url} does not report readout values, which the decisions are made from")
    if not data.train or not data.test:
        raise InputError(f"no {'training' if not data.train else 'test'} windows in the data")
    st = dev.learn_status()
    layers = st.layers
    lr = Learner.for_config(model, st.config) if twin else None
    if lr is not None:
        for l in layers:      # a fresh device: the model's weights (its PRNG streams and means are fresh too)
            got = dev.read_weights(l)
            if not np.array_equal(got, lr.weights(l).T.ravel()):
                raise InputError(f"{dev.url}: the weights of layer {l} are no longer the model's (the device "
                                 f"has learned since it was flashed), so the emulator cannot follow it; "
                                 f"flash it again, or adapt without the twin (--no-twin)")
    if eta_shift is None:
        k = calibrated_eta(model, st.config, data.train[:20], gain)
    else:
        k = {l: int(eta_shift) for l in layers}
    for l in layers:
        dev.learn_eta(l, k[l])
        if lr is not None:
            lr.eta_shift[l] = k[l]
    dev.learn_mask(layers)
    dev.learn_enable(True)
    say(f"learning on {dev.url}: rule {st.rule_name}, layers {layers}, eta 2^-{[k[l] for l in layers]}, "
        f"{len(data.train)} windows x {epochs} epochs")
    rng = np.random.default_rng(seed)
    total = epochs * len(data.train)
    cyc = info.has(P.Cap.CYCLES)          # the board's cycle counter per step (QEMU: instructions)
    ticks = {"learning": [], "inference": []}
    learn_s = 0.0       # the device's share (requests and replies), not the twin's
    steps_run = 0
    for ep in range(epochs):
        for n, i in enumerate(rng.permutation(len(data.train))):
            ev, lab = data.train[i]
            t0 = time.perf_counter()
            dev.learn_reset()
            res = dev.run(_steps(ev), spikes=False, cycles=cyc, labels=[lab] * ev.n_steps)
            learn_s += time.perf_counter() - t0
            if cyc:
                ticks["learning"].extend(int(c) for c in res.cycles)
            if lr is not None:
                lr.run_sample(ev, lab)
            steps_run += ev.n_steps
            if progress:
                progress(ep * len(data.train) + n + 1, total, f"epoch {ep + 1}")
    dev.learn_reset()   # a trial-mode readout applies the last window's update here (the twin's run_sample did)
    report = {"device": dev.url, "model": model.network.name, "rule": st.rule_name, "layers": layers,
              "eta_shift": {str(l): k[l] for l in layers}, "epochs": epochs, "train_windows": len(data.train),
              "learning_steps": steps_run, "learning_steps_per_s": round(steps_run / max(learn_s, 1e-9), 1),
              "learn_seconds": round(learn_s, 2), "options": data.options}
    if lr is not None:
        diff = {}
        for l in layers:
            a, b = dev.read_weights(l), lr.weights(l).T.ravel()
            if not np.array_equal(a, b):
                diff[str(l)] = int(np.count_nonzero(a != b))
        report["weights_equal"] = not diff
        if diff:
            report["weights_differing"] = diff
    # classify with learning off
    dev.learn_enable(False)
    preds, agree = [], True
    try:
        for ev, lab in data.test:
            dev.learn_reset()
            res = dev.run(_steps(ev), spikes=False, readout=True, cycles=cyc)
            if cyc:
                ticks["inference"].extend(int(c) for c in res.cycles)
            score = res.v.astype(np.int64).sum(axis=0)
            preds.append(int(np.argmax(score)))
            if lr is not None:
                lr.run_sample(ev, lab, learn=False)
                agree &= bool(np.array_equal(lr.score.astype(np.int64), score))
    finally:
        dev.learn_enable(True)
    labels = np.array([lab for _, lab in data.test])
    preds = np.array(preds)
    report["n"] = len(preds)
    report["accuracy"] = float(np.mean(preds == labels))
    report["per_recording"] = _per_recording(data, preds, labels)
    if lr is not None:
        report["decisions_equal"] = agree
    report["cycles_per_step"] = ({k: {"mean": round(float(np.mean(v)), 1), "max": int(np.max(v))}
                                  for k, v in ticks.items()} if cyc else None)
    return report


def _per_recording(data: Windows, preds, labels) -> dict:
    out = {}
    for (rec, _), p, y in zip(data.test_ids, preds, labels):
        r = out.setdefault(rec, {"label": int(y), "correct": 0, "n": 0})
        r["correct"] += int(p == y)
        r["n"] += 1
    return out
