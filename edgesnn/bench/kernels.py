"""Kernel benchmark: how fast the emulator runs three fixed workloads, against a plain numpy reference.

Workloads (fixed seeds; LIF neurons with beta 0.9 at dt = 1 ms, threshold 1.0, reset by subtraction;
weights ~ N(0, sigma)):

  W1  2048 inputs (2, 32, 32) -> Dense 512 -> Dense 11; Bernoulli input 2 %; sigma 0.05; 1000 steps
  W2  64 inputs -> Recurrent 256 (all-to-all) -> Dense 12; input 5 %; sigma in/rec/out 0.2/0.05/0.1;
      10,000 steps
  W3  W1's network at batch 64, 300 steps (a step = one time step of the whole batch)

Variants, each timed in the same process: best of several rounds in which the variants take turns, each
timed call right after an untimed one of the same variant (so compilation and cold caches are never
timed, nor is input generation):

  numpy_ref     dense float32 numpy: x @ W per step with x the 0/1 input vector (W3: X(64, 2048) @ W),
                float32 LIF update, ONE BLAS thread (see ``_single_blas_thread``)
  fixed_stream  Simulator.fixed(...).step(indices), once per step from Python (W3: 64 simulators)
  fixed_fused   Simulator.run(events), every step in one compiled call (W3: Simulator.run_batch on one
                Numba thread)
  float         Simulator.float(...).run(events) (W3: run_batch on one Numba thread)

Figures: steps/s, synaptic operations/s and ``ratio`` = steps/s over numpy_ref's steps/s. A synaptic
operation is one (active presynaptic spike, postsynaptic target) pair actually processed, counted from the
spikes the fixed-point run records (input events x fan-out + hidden spikes x fan-out + recurrent spikes of
the previous step x fan-out); every variant of a workload is credited with the same count, so synops/s
compare like steps/s do.
"""
from __future__ import annotations

import ctypes
import math
import os
import platform
import sys
import time
from contextlib import contextmanager

import numpy as np

from ..model.quantize import quantize
from ..model.spec import Dense, Network, Neuron, Recurrent, tau_of
from ..simulator import Events, Simulator

DT = 1e-3
BETA = 0.9
THRESHOLD = 1.0
VARIANTS = ("numpy_ref", "fixed_stream", "fixed_fused", "float")
ROUNDS = {"W1": 20, "W2": 8, "W3": 3}  # timed rounds; the whole run takes about 35 s on a 2-core EPYC
SYNOPS_LIMIT_PER_CORE = 60e9  # rough physical bound of int8 row accumulation on one AVX2 core


def _neuron() -> Neuron:
    return Neuron("lif", tau_mem=tau_of(BETA, DT), threshold=THRESHOLD, reset="subtract")


def _w1_network() -> Network:
    rng = np.random.default_rng(1)
    layers = [Dense(rng.normal(0.0, 0.05, (512, 2048)), neuron=_neuron()),
              Dense(rng.normal(0.0, 0.05, (11, 512)), neuron=_neuron())]
    return Network((2, 32, 32), layers, dt=DT, name="W1")


def _w2_network() -> Network:
    rng = np.random.default_rng(2)
    layers = [Recurrent(rng.normal(0.0, 0.2, (256, 64)), rng.normal(0.0, 0.05, (256, 256)), neuron=_neuron()),
              Dense(rng.normal(0.0, 0.1, (12, 256)), neuron=_neuron())]
    return Network((64,), layers, dt=DT, name="W2")


def _bernoulli(seed: int, n_steps: int, n_inputs: int, p: float) -> np.ndarray:
    """(T, n) 0/1 float32 input, the dense form the numpy reference consumes."""
    rng = np.random.default_rng(seed)
    return (rng.random((n_steps, n_inputs)) < p).astype(np.float32)


class _Workload:
    def __init__(self, name, net, dense, batch):
        self.name = name
        self.net = net
        self.dense = dense                      # list of (T, n_in) float32, one per sample
        self.batch = batch
        self.n_steps = dense[0].shape[0]
        self.events = [Events.from_dense(x.astype(np.int8)) for x in dense]
        self.model = quantize(net)
        self.synops = self._count_synops()

    def _count_synops(self) -> int:
        """Synaptic operations of the whole run, from the spikes the fixed-point emulator records."""
        total = 0
        sizes = [math.prod(s) for s in self.net.shapes()]
        for ev in self.events:
            spikes = Simulator.fixed(self.model).run(ev, record="spikes").spikes
            per_layer = np.split(spikes, np.cumsum(sizes)[:-1], axis=1)
            incoming = np.diff(ev.ptr).sum()            # events entering layer 0
            for l, layer in enumerate(self.net.layers):
                total += int(incoming) * sizes[l]       # every event reaches each of the layer's outputs
                counts = per_layer[l].sum(axis=1, dtype=np.int64)
                if isinstance(layer, Recurrent):        # step t replays the spikes of step t - 1
                    total += int(counts[:-1].sum()) * sizes[l]
                incoming = counts.sum()
        return total


def _workloads(quick: bool) -> list[_Workload]:
    w1 = _w1_network()
    w2 = _w2_network()
    t1, t2, t3 = (100, 1000, 20) if quick else (1000, 10_000, 300)
    return [
        _Workload("W1", w1, [_bernoulli(11, t1, 2048, 0.02)], 1),
        _Workload("W2", w2, [_bernoulli(12, t2, 64, 0.05)], 1),
        _Workload("W3", w1, [_bernoulli(1300 + b, t3, 2048, 0.02) for b in range(64)], 64),
    ]


# ------------------------------------------------------------------ the numpy reference

def _numpy_weights(net):
    """Input-major float32 matrices (x @ W), and the LIF constants in float32."""
    mats = []
    for layer in net.layers:
        m = [np.ascontiguousarray(layer.weight.T)]
        if isinstance(layer, Recurrent):
            m.append(np.ascontiguousarray(layer.weight_rec.T))
        mats.append(m)
    return mats, np.float32(BETA), np.float32(THRESHOLD)


def _numpy_run(X, mats, beta, theta):
    """Dense float32 LIF network over X (T, n_in) or (T, B, n_in); returns the output spike count."""
    lead = X.shape[1:-1]
    v = [np.zeros(lead + (m[0].shape[1],), np.float32) for m in mats]
    s = [np.zeros(lead + (m[0].shape[1],), np.float32) for m in mats]
    count = 0.0
    for t in range(X.shape[0]):
        x = X[t]
        for l, m in enumerate(mats):
            h = x @ m[0]
            if len(m) == 2:
                h += s[l] @ m[1]        # recurrent input: this layer's spikes of the previous step
            vl = v[l]
            vl *= beta
            vl += h
            sl = (vl >= theta).astype(np.float32)
            vl -= sl * theta
            s[l] = sl
            x = sl
        count += float(x.sum())
    return count


# ------------------------------------------------------------------ timing

def _interleaved_best(runs: dict, repeats: int) -> dict:
    """Best wall time of each run over ``repeats`` rounds.

    runs maps a name to (setup, fn); setup (untimed, may be None) runs before each call. The variants take
    turns within each round, so that the slow and fast phases of a shared machine reach all of them alike
    and their ratios stay fair; each timed call follows an untimed one of the same variant, so that it
    measures the steady state rather than caches left cold by the previous variant."""
    best = {name: math.inf for name in runs}
    for _ in range(repeats):
        for name, (setup, fn) in runs.items():
            for timed in (False, True):  # an untimed call first brings this variant's data back to cache
                if setup:
                    setup()
                t0 = time.perf_counter()
                fn()
                if timed:
                    best[name] = min(best[name], time.perf_counter() - t0)
    return best


@contextmanager
def _numba_threads(n):
    import numba
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(old)


def _openblas_libs():
    """OpenBLAS libraries loaded in this process (numpy's wheel bundles scipy-openblas)."""
    paths = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                name = os.path.basename(line.split()[-1]).lower()
                if "openblas" in name and ".so" in name:
                    paths.add(line.split()[-1])
    except OSError:
        pass
    return sorted(paths)


@contextmanager
def _single_blas_thread():
    """Limit BLAS to one thread for the numpy reference; yields how it was done.

    threadpoolctl when it is installed; else a direct call to OpenBLAS's set_num_threads (what
    threadpoolctl does too); the script benchmarks/kernels.py also sets OPENBLAS_NUM_THREADS=1 before
    numpy is imported."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=1, user_api="blas"):
            yield "threadpoolctl"
        return
    restore = []
    for path in _openblas_libs():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", "_64_", ""):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    get.restype = ctypes.c_int
                    put.argtypes = [ctypes.c_int]
                    restore.append((put, get()))
                    put(1)
                    break
            else:
                continue
            break
    env = os.environ.get("OPENBLAS_NUM_THREADS")
    if restore:
        how = "openblas_set_num_threads(1)"
    elif env == "1":
        how = "OPENBLAS_NUM_THREADS=1"
    else:
        how = "not limited (threadpoolctl missing, no OpenBLAS found)"
    try:
        yield how
    finally:
        for put, n in restore:
            put(n)


# ------------------------------------------------------------------ the variants

def _numpy_variant(w):
    mats, beta, theta = _numpy_weights(w.net)
    X = w.dense[0] if w.batch == 1 else np.ascontiguousarray(np.stack(w.dense, axis=1))  # (T, B, n_in)
    return None, lambda: _numpy_run(X, mats, beta, theta)


def _stream_variant(w):
    sims = [Simulator.fixed(w.model) for _ in range(w.batch)]
    steps = [[ev.step(t) for t in range(w.n_steps)] for ev in w.events]

    def reset():
        for s in sims:
            s.reset()

    if w.batch == 1:
        step, inputs = sims[0].step, steps[0]

        def go():
            for x in inputs:
                step(x)
    else:
        pairs = list(zip([s.step for s in sims], steps))

        def go():
            for t in range(w.n_steps):
                for step, inputs in pairs:
                    step(inputs[t])
    return reset, go


def _fused_variant(w, sim):
    if w.batch == 1:
        ev = w.events[0]
        return sim.reset, lambda: sim.run(ev)
    return None, lambda: sim.run_batch(w.events)  # timed under _numba_threads(1)


def _machine(blas) -> dict:
    import numba
    cpu = platform.processor() or platform.machine()
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu in ("", platform.machine(), platform.processor()):
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512bw", "avx512_vnni") if f" {f}" in flags]
    return {"cpu": cpu, "cores": os.cpu_count(), "simd": simd, "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "platform": sys.platform,
            "blas_threads": blas, "numba_threads_batch": 1}


def run(quick: bool = False, progress=None) -> dict:
    """Run every workload and variant; returns the JSON-ready results (see the module doc).

    quick: a few steps per workload and one round (a smoke test, not a measurement). progress: an
    optional callable given one short str per stage."""
    say = progress or (lambda msg: None)
    results = {}
    workloads = {}
    with _single_blas_thread() as blas:
        for w in _workloads(quick):
            repeats = 1 if quick else ROUNDS[w.name]
            say(f"{w.name}: {w.batch} x {w.n_steps} steps, {repeats} rounds of {', '.join(VARIANTS)}")
            runs = {"numpy_ref": _numpy_variant(w), "fixed_stream": _stream_variant(w),
                    "fixed_fused": _fused_variant(w, Simulator.fixed(w.model)),
                    "float": _fused_variant(w, Simulator.float(w.net))}
            with _numba_threads(1):  # run_batch on one thread (W3); no effect on the other variants
                times = _interleaved_best(runs, repeats)
            ref = w.n_steps / times["numpy_ref"]
            results[w.name] = {v: {"steps_per_s": w.n_steps / t, "synops_per_s": w.synops / t,
                                   "ratio": (w.n_steps / t) / ref} for v, t in times.items()}
            workloads[w.name] = {"steps": w.n_steps, "batch": w.batch, "synops": w.synops,
                                 "synops_per_step": w.synops / w.n_steps,
                                 "input_events_per_step": sum(ev.idx.size for ev in w.events) / w.n_steps}
    fused = results["W1"]["fixed_fused"]["synops_per_s"]
    results["limit"] = {"synops_per_s_per_core": SYNOPS_LIMIT_PER_CORE,
                        "W1_fixed_fused_fraction": fused / SYNOPS_LIMIT_PER_CORE}
    results["workloads"] = workloads
    results["machine"] = _machine(blas)
    results["quick"] = quick
    return results


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.1f} "


def format_table(results: dict) -> str:
    """A plain-text table of ``run``'s results."""
    lines = [f"{'workload':<9}{'variant':<14}{'steps/s':>12}{'synops/s':>13}{'ratio':>9}"]
    for name in ("W1", "W2", "W3"):
        if name not in results:
            continue
        wl = results.get("workloads", {}).get(name)
        if wl:
            lines.append(f"{name}: batch {wl['batch']}, {wl['steps']} steps, "
                         f"{wl['input_events_per_step']:.1f} input events and "
                         f"{wl['synops_per_step']:.0f} synops per step")
        for v in VARIANTS:
            r = results[name].get(v)
            if r:
                lines.append(f"{'':<9}{v:<14}{_si(r['steps_per_s']):>12}{_si(r['synops_per_s']):>13}"
                             f"{r['ratio']:>8.1f}x")
    lim = results.get("limit")
    if lim:
        lines.append(f"W1 fixed_fused reaches {100 * lim['W1_fixed_fused_fraction']:.1f} % of "
                     f"~{lim['synops_per_s_per_core'] / 1e9:.0f} G synops/s, the physical limit of one core")
    m = results.get("machine")
    if m:
        lines.append(f"machine: {m['cpu']}, {m['cores']} cores, {'/'.join(m['simd']) or 'no AVX2'}; "
                     f"numpy {m['numpy']}, numba {m['numba']}; BLAS threads: {m['blas_threads']}")
    return "\n".join(lines)
