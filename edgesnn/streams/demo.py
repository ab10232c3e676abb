"""`edgesnn demo`: gesture detection on real DVS Gesture recordings, streamed live over loopback.

What it does (docs/streams.md states the method):
1. The network: input 2 x 32 x 32 (the 128 x 128 sensor downsampled by 4, polarity first) -> a fixed,
   untrained hidden layer of LIF neurons (128 pooling neurons: one per polarity and 4 x 4 block; 256
   random neurons: sparse +-1 weights on a random 8 x 8 patch of both polarities) -> 10 non-leaking
   integrator readouts (LI with tau = inf).
2. Training, with one recording per class: the first 0.9 s of each of the ten N.aedat4 files runs
   through the fixed-point emulator; the hidden spike counts of 150 ms windows (every 30 ms) are the
   features; the readout weights are fitted by ridge regression to one-hot targets (numpy) and quantized
   to int8 (edgesnn.model.quantize).
3. The 19 s stream (the ten recordings back to back) is replayed by `edgesnn replay` in a child process
   through a dv-processing NetworkWriter on loopback at real-time pace (--fast: as fast as it goes); this
   process reads it with a NetworkReader, bins it into 1 ms steps and runs the emulator step by step.
4. Every 150 ms window with enough events is a decision: the class whose readout membrane rose most in
   the window. Accuracy counts only windows in the held-out part of each gesture (after its first 0.9 s).
"""
from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EdgeSNNError, InputError

DT = 1e-3
WINDOW_STEPS = 150
TRAIN_S = 0.9
TRAIN_STRIDE = 30
MIN_EVENTS = 1500      # input events in a window for a decision (an activity gate)
RIDGE = 1.0
STREAM_ORIGIN_US = 1700000000000000
N_POOL, N_RAND = 128, 256


def data_dir() -> Path:
    """The bundled recordings: $EDGESNN_DATA, else data/dvs_gesture in the source tree."""
    env = os.environ.get("EDGESNN_DATA")
    cands = [Path(env)] if env else []
    cands.append(Path(__file__).resolve().parents[2] / "data" / "dvs_gesture")
    for c in cands:
        if (c / "stream_10_gestures.aedat4").is_file():
            return c
    raise InputError(f"the DVS Gesture recordings were not found (looked in {', '.join(map(str, cands))}); "
                     f"run from a checkout of the repository, or set EDGESNN_DATA to a folder holding "
                     f"stream_10_gestures.aedat4, 1..10.aedat4 and the csv files")


def class_names(d: Path) -> list[str]:
    with open(d / "labels.csv") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["class_index_0based"]))
    return [r["class_name"] for r in rows]


@dataclass
class Segment:
    start: float
    end: float
    label: int
    name: str


def segments(d: Path) -> list[Segment]:
    with open(d / "stream_10_gestures_segments.csv") as f:
        return [Segment(int(r["t_start_us"]) / 1e6, int(r["t_end_us"]) / 1e6, int(r["class_index_0based"]),
                        r["class_name"]) for r in csv.DictReader(f)]


# ---------------------------------------------------------------- the network

def hidden_weights(seed: int = 0) -> np.ndarray:
    """(384, 2048) fixed weights of the hidden layer (see the module docstring)."""
    H = W = 32
    w = np.zeros((N_POOL + N_RAND, 2 * H * W), np.float32)
    n = 0
    for p in range(2):
        for by in range(8):
            for bx in range(8):
                for y in range(by * 4, by * 4 + 4):
                    w[n, p * H * W + y * W + bx * 4:p * H * W + y * W + bx * 4 + 4] = 0.25
                n += 1
    rng = np.random.default_rng(seed)
    for _ in range(N_RAND):
        y0, x0 = rng.integers(0, H - 8 + 1), rng.integers(0, W - 8 + 1)
        for p in range(2):
            patch = rng.choice([-1.0, 0.0, 1.0], size=(8, 8), p=[0.25, 0.5, 0.25]) * 0.25
            for dy in range(8):
                w[n, p * H * W + (y0 + dy) * W + x0:p * H * W + (y0 + dy) * W + x0 + 8] = patch[dy]
        n += 1
    return w


def make_network(readout: np.ndarray, seed: int = 0):
    from ..model.spec import Dense, Network, Neuron

    lif = Neuron("lif", tau_mem=20e-3, threshold=1.0, reset="subtract")
    return Network((2, 32, 32), [Dense(hidden_weights(seed), lif),
                                 Dense(readout, Neuron("li", tau_mem=math.inf))],
                   dt=DT, name="dvs-gesture-demo", seed=seed)


def recording_events(path, imap, t_end_s: float | None = None):
    """A recording -> Events of 1 ms steps from its first event (optionally only the first t_end_s)."""
    from .runner import Binner
    from .sources import AedatSource

    src = AedatSource(path)
    evs = np.concatenate(list(src.batches()))
    t0 = int(evs["t"][0])
    if t_end_s is not None:
        evs = evs[evs["t"] < t0 + int(t_end_s * 1e6)]
    t, idx = imap(evs)
    b = Binner(int(DT * 1e6), origin_us=t0)
    return b.push(t, idx, final=True)[1]


def window_counts(spikes: np.ndarray, window: int, stride: int) -> np.ndarray:
    """(T, n) spikes -> (K, n) counts of the windows [s, s + window) for s = 0, stride, ..."""
    cs = np.concatenate([np.zeros((1, spikes.shape[1]), np.int64), np.cumsum(spikes, axis=0, dtype=np.int64)])
    starts = np.arange(0, spikes.shape[0] - window + 1, stride)
    return cs[starts + window] - cs[starts]


def train(d: Path, seed: int = 0, log=None):
    """Fit the readout on the first TRAIN_S seconds of each recording; returns (FixedModel, info)."""
    from ..model.quantize import quantize
    from ..simulator import Simulator
    from .transforms import InputMap

    imap = InputMap((128, 128), (2, 32, 32))
    probe = quantize(make_network(np.zeros((10, N_POOL + N_RAND), np.float32), seed))
    feats, targets = [], []
    for c in range(10):
        ev = recording_events(d / f"{c + 1}.aedat4", imap, TRAIN_S)
        sim = Simulator.fixed(probe)
        rec = sim.run(ev, record="spikes")
        hid = rec.spikes[:, :N_POOL + N_RAND]
        x = window_counts(hid, WINDOW_STEPS, TRAIN_STRIDE)
        feats.append(x)
        targets += [c] * x.shape[0]
    X = np.concatenate(feats).astype(np.float64)
    y = np.asarray(targets)
    Y = np.eye(10)[y]
    # ridge regression, no intercept (the readout has no bias): W = (X'X + lambda * s * I)^-1 X'Y
    s = np.mean(np.sum(X * X, axis=1))
    Wt = np.linalg.solve(X.T @ X + RIDGE * s * np.eye(X.shape[1]) / X.shape[1], X.T @ Y)
    readout = Wt.T.astype(np.float32)
    model = quantize(make_network(readout, seed))
    q = model.layers[1]
    train_acc = float(np.mean(np.argmax(X @ q.weight.T.astype(np.float64), axis=1) == y))
    info = {"train_windows": int(X.shape[0]), "train_accuracy": train_acc, "readout_shift": int(q.shift)}
    return model, info


# ---------------------------------------------------------------- the demo

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_replay(path, port: int, fast: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "edgesnn", "replay", str(path), "--listen", f"127.0.0.1:{port}",
           "--speed", "0" if fast else "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()   # "listening on ..." once the NetworkWriter exists
    if not line.startswith("listening"):
        err = proc.stderr.read() if proc.poll() is not None else ""
        proc.kill()
        raise EdgeSNNError(f"the replay process did not start: {line.strip()} {err.strip()}")
    return proc


def run_demo(fast: bool = False, as_json: bool = False, out=None, save_model: str | None = None,
             seed: int = 0) -> dict:
    from ..simulator import Simulator
    from .runner import StreamRunner, WindowDecider, warm_up
    from .sources import NetworkSource
    from .transforms import InputMap

    out = out or sys.stdout

    def say(msg):
        if not as_json:
            print(msg, file=out, flush=True)

    d = data_dir()
    names = class_names(d)
    segs = segments(d)
    say("edgesnn demo: gesture detection on real DVS128 Gesture recordings (IBM Research, Amir et al., "
        "CVPR 2017, CC BY 4.0)")
    say(f"  one recording per class: the readout is trained on the first {TRAIN_S} s of each of the ten "
        f"recordings\n  and judged on the rest of each gesture (held out) in the 19 s stream")
    t = time.perf_counter()
    model, info = train(d, seed)
    if save_model:
        from ..model import modelfile
        modelfile.save(model, save_model)
    say(f"  network: 2x32x32 input -> 384 fixed LIF (128 pooling + 256 random) -> 10 integrators; readout "
        f"by ridge regression on {info['train_windows']} windows, int8 (train accuracy "
        f"{info['train_accuracy']:.2f}, {time.perf_counter() - t:.1f} s)")

    sim = Simulator.fixed(model)
    warm_up(sim)   # compile before connecting: the stream starts at once
    port = free_port()
    proc = start_replay(d / "stream_10_gestures.aedat4", port, fast)
    try:
        src = NetworkSource("127.0.0.1", port, idle_timeout=1.0)   # the stream's gaps are 0.5 s
        say(f"  streaming stream_10_gestures.aedat4 over tcp://127.0.0.1:{port} (dv-processing NetworkWriter "
            f"in a child process, {'as fast as it goes' if fast else 'real-time pace'})")
        say(f"  {'t (s)':>7}  {'detected':<28} {'conf':>5}  {'truth':<28} part")
        imap = InputMap(src.resolution, model.network.input_shape)
        rows = []

        def on_det(det):
            truth, part = None, "gap"
            w0 = det.t - WINDOW_STEPS * DT
            for s in segs:
                if s.start - 1e-9 <= w0 < s.end:
                    truth = s
                    part = "held-out" if w0 >= s.start + TRAIN_S - 1e-9 else "train"
            ok = truth is not None and det.label == truth.label
            rows.append((det, truth, part, ok))
            if as_json:
                print(json.dumps({**det.as_dict(), "name": names[det.label],
                                  "truth": truth.label if truth else None, "part": part}), file=out, flush=True)
            else:
                mark = ("ok" if ok else "WRONG") if part == "held-out" else ""
                say(f"  {det.t:7.3f}  {names[det.label]:<28} {det.confidence:5.2f}  "
                    f"{(truth.name if truth else '-'):<28} {part} {mark}")

        dec = WindowDecider(WINDOW_STEPS, DT, mode="delta", min_events=MIN_EVENTS,
                            shift=model.layers[1].shift, temperature=0.25, callback=on_det)
        runner = StreamRunner(sim, imap, DT, live=not fast, origin_us=STREAM_ORIGIN_US)
        m = runner.run(src, on_chunk=dec)
    finally:
        src_close = locals().get("src")
        if src_close is not None:
            src_close.close()   # disconnect: the replay process then exits
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    held = [r for r in rows if r[2] == "held-out"]
    acc = float(np.mean([r[3] for r in held])) if held else 0.0
    summary = {"detections": len(rows), "accuracy": round(acc, 4), "realtime_factor": round(m.realtime_factor, 2),
               "latency_p99_ms": round(m.latency_p99_ms, 4), "dropped_events": m.dropped_events}
    if as_json:
        print(json.dumps(summary), file=out, flush=True)
    else:
        say(f"\n{len(rows)} detections; accuracy on the {len(held)} held-out windows: {acc:.2f} "
            f"(chance 0.10; one recording per class, so this measures within-recording adaptation only)")
        say(m.format())
    summary["held_out_windows"] = len(held)
    return summary
