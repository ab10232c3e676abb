"""What a model costs: per layer sizes, memory (float and fixed), measured activity and synaptic operations.

    d = describe(model, input_rate=0.02)    # a JSON-serialisable dict
    print(format_info(d))                    # the same as a table

Memory is counted from what ``program.py`` really lays out, in the sizes a 32-bit device uses:

- parameters: the layer's row of the layer table (NL fields) and of the parameter table (NP fields),
  4 bytes each (int32 on the device; float32 parameters in the float twin), plus its weights in the
  weight pools: int8 or int16 (fixed) / float32 (float). A sum pool's one shared weight lives in its
  parameter row, so it adds no weight bytes.
- state: 4 bytes per word the program allocates: membrane v (every layer with neurons), synaptic current
  i (cuba), adaptation a (alif), refractory counters (spiking layers with a refractory period), the spike
  list (n_out indices, every layer, Flatten included) and one spike count per layer. The float twin has
  the same words (float32 instead of int32), so both columns are equal.
- scratch (in the totals only): the accumulators the kernels allocate for the widest layer, int32 (or
  float32) and int16.

Activity: the fixed model runs ``steps`` steps of Bernoulli input (each input active with probability
``input_rate`` per step, numpy default_rng(``seed``)); each layer's spike rate is its measured spikes per
neuron per step. Synaptic operations per step of a layer = the weights its kernel really adds per step:
for every presynaptic spike, its fan-out (dense and recurrent: n_out; conv2d: c_out times the kernel taps
that land inside the output, exactly as the event-driven scatter counts them; sum pool: the windows that
hold it), plus for a recurrent layer n_out per own spike of the previous step. Layer 0 uses the expected
input (input_rate per input, no sampling noise); the other layers use the measured spikes.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ..kernels import layout as K
from .program import build_fixed, build_float
from .quantize import FixedModel
from .spec import Conv2d, Dense, Flatten, Recurrent, SumPool2d, layer_kind

WORD = 4  # bytes of a table field or a state word on a 32-bit device


def _taps(size: int, k: int, stride: int, pad: int, out: int) -> np.ndarray:
    """For each input coordinate, how many kernel offsets reach a valid output (as conv/pool_scatter)."""
    y = np.arange(size)[:, None]
    ky = np.arange(k)[None, :]
    ny = y + pad - ky
    ok = (ny >= 0) & (ny % stride == 0) & (ny // stride < out)
    return ok.sum(axis=1)


def fan_out(layer, in_shape, out_shape) -> np.ndarray:
    """Weights added per spike of each input (float64 array of size n_in); recurrent synapses excluded."""
    n_in = math.prod(in_shape)
    if isinstance(layer, (Dense, Recurrent)):
        return np.full(n_in, float(out_shape[0]))
    if isinstance(layer, Flatten):
        return np.zeros(n_in)
    c, h, w = in_shape
    if isinstance(layer, Conv2d):
        c_out, _, kh, kw = layer.weight.shape
        per = c_out * np.outer(_taps(h, kh, layer.stride, layer.padding, out_shape[1]),
                               _taps(w, kw, layer.stride, layer.padding, out_shape[2]))
    else:  # SumPool2d
        per = np.outer(_taps(h, layer.kernel, layer.stride, 0, out_shape[1]),
                       _taps(w, layer.kernel, layer.stride, 0, out_shape[2]))
    return np.broadcast_to(per, (c, h, w)).reshape(-1).astype(np.float64)


def _n_weights(layer) -> int:
    if isinstance(layer, (Dense, Conv2d)):
        return int(layer.weight.size)
    if isinstance(layer, Recurrent):
        return int(layer.weight.size + layer.weight_rec.size)
    if isinstance(layer, SumPool2d):
        return 1
    return 0


def _pool_weights(layer) -> int:
    """Weights stored in the weight pools (a sum pool's weight sits in its parameter row)."""
    return 0 if isinstance(layer, SumPool2d) else _n_weights(layer)


def _state_words(row) -> int:
    n_out = int(row[K.L_N_OUT])
    words = n_out + 1  # spike list and spike count
    for f in (K.L_V_OFF, K.L_I_OFF, K.L_A_OFF, K.L_R_OFF):
        if row[f] >= 0:
            words += n_out
    return words


def measure_rates(model: FixedModel, input_rate: float, steps: int = 200, seed: int = 0):
    """Run the fixed model on Bernoulli input; returns the per-layer spike records (list of (T, n) int8)."""
    from ..simulator import Events, Simulator  # the simulator imports the model package

    net = model.network
    rng = np.random.default_rng(seed)
    x = rng.random((steps, net.n_inputs)) < input_rate
    sim = Simulator.fixed(model)
    rec = sim.run(Events.from_dense(x), record="spikes")
    base = sim.layer_base
    return [rec.spikes[:, base[i]:base[i + 1]] for i in range(len(net.layers))]


def describe(model: FixedModel, input_rate: float = 0.02, steps: int = 200, seed: int = 0) -> dict:
    """Per-layer and total sizes, memory, measured spike rates and synaptic operations (see the module
    docstring for exactly what is counted). JSON-serialisable."""
    if not 0.0 <= input_rate <= 1.0:
        raise InputError(f"input_rate is the fraction of inputs active per step and must be in 0..1, got "
                         f"{input_rate}")
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    from .modelfile import model_hash

    net = model.network
    fixed, flt = build_fixed(model), build_float(net)
    shapes = [net.input_shape] + net.shapes()
    spikes = measure_rates(model, input_rate, steps, seed)
    row_bytes = (K.NL + K.NP) * WORD
    layers = []
    for i, (layer, q) in enumerate(zip(net.layers, model.layers)):
        in_shape, out_shape = shapes[i], shapes[i + 1]
        n_in, n_out = math.prod(in_shape), math.prod(out_shape)
        w_pool = _pool_weights(layer)
        bits = q.bits if q is not None else None
        neuron = layer.neuron.kind if layer.neuron is not None else None
        fo = fan_out(layer, in_shape, out_shape)
        if i == 0:
            in_events = input_rate * n_in
            synops = input_rate * float(fo.sum())
        else:
            pre = spikes[i - 1].astype(np.float64)
            in_events = float(pre.sum(axis=1).mean())
            synops = float((pre @ fo).mean())
        own = spikes[i]
        if isinstance(layer, Recurrent):  # own spikes of the previous step, none before the first step
            synops += n_out * float(own[:-1].sum()) / steps
        spiking = layer.neuron is None or layer.neuron.spiking
        layers.append({
            "index": i,
            "kind": layer_kind(layer),
            "neuron": neuron,
            "out_shape": [int(s) for s in out_shape],
            "neurons": 0 if isinstance(layer, Flatten) else int(n_out),
            "weights": _n_weights(layer),
            "bits": bits,
            "shift": q.shift if q is not None else None,
            "param_bytes_float": row_bytes + 4 * w_pool,
            "param_bytes_fixed": row_bytes + (bits // 8 if bits else 0) * w_pool,
            "state_bytes_float": WORD * _state_words(flt.ltab[i]),
            "state_bytes_fixed": WORD * _state_words(fixed.ltab[i]),
            "in_events_per_step": float(in_events),
            "spike_rate": float(own.mean()) if spiking else None,
            "synops_per_step": float(synops),
        })
    width = max(int(n) for n in fixed.ltab[:, K.L_N_OUT])
    totals = {k: sum(l[k] for l in layers) for k in ("neurons", "weights", "param_bytes_float",
                                                      "param_bytes_fixed", "state_bytes_float",
                                                      "state_bytes_fixed", "synops_per_step")}
    totals["scratch_bytes"] = width * (4 + 2)
    totals["synops_per_second"] = totals["synops_per_step"] / net.dt
    return {
        "name": net.name,
        "hash": model_hash(model),
        "input_shape": [int(s) for s in net.input_shape],
        "n_inputs": int(net.n_inputs),
        "n_outputs": int(net.n_outputs),
        "dt": float(net.dt),
        "input_rate": float(input_rate),
        "steps": int(steps),
        "seed": int(seed),
        "layers": layers,
        "totals": totals,
    }


def _bytes(n: int) -> str:
    if n < 10 * 1024:
        return f"{n:,} B"
    if n < 10 * 1024 * 1024:
        return f"{n / 1024:,.1f} KiB"
    return f"{n / 1024 / 1024:,.1f} MiB"


def format_info(d: dict) -> str:
    """The dict of ``describe`` as a readable table."""
    head = ("#", "kind", "neuron", "output", "neurons", "weights", "bits", "shift", "param f32", "param fixed",
            "state f32", "state fixed", "in ev/step", "rate", "syn ops/step")
    rows = []
    for l in d["layers"]:
        rows.append((str(l["index"]), l["kind"], l["neuron"] or "-", "x".join(map(str, l["out_shape"])),
                     f"{l['neurons']:,}", f"{l['weights']:,}", str(l["bits"] or "-"),
                     "-" if l["shift"] is None else str(l["shift"]),
                     f"{l['param_bytes_float']:,}", f"{l['param_bytes_fixed']:,}",
                     f"{l['state_bytes_float']:,}", f"{l['state_bytes_fixed']:,}",
                     f"{l['in_events_per_step']:,.1f}",
                     "-" if l["spike_rate"] is None else f"{100 * l['spike_rate']:.2f}%",
                     f"{l['synops_per_step']:,.1f}"))
    t = d["totals"]
    rows.append(("", "total", "", "", f"{t['neurons']:,}", f"{t['weights']:,}", "", "",
                 f"{t['param_bytes_float']:,}", f"{t['param_bytes_fixed']:,}", f"{t['state_bytes_float']:,}",
                 f"{t['state_bytes_fixed']:,}", "", "", f"{t['synops_per_step']:,.1f}"))
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(head)]
    left = {1, 2, 3}

    def line(cells):
        return "  ".join(c.ljust(w) if k in left else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))

    out = [f"model {d['name']!r}  hash {d['hash'][:16]}  input {'x'.join(map(str, d['input_shape']))} "
           f"({d['n_inputs']:,} inputs)  outputs {d['n_outputs']:,}  dt {d['dt'] * 1e3:g} ms",
           f"activity: {d['steps']} steps of Bernoulli input at rate {d['input_rate']:g} (seed {d['seed']}); "
           f"bytes as on a 32-bit device", "",
           line(head), line(["-" * w for w in widths])]
    out += [line(r) for r in rows[:-1]]
    out += [line(["-" * w for w in widths]), line(rows[-1]), ""]
    out.append(f"parameters: {_bytes(t['param_bytes_fixed'])} fixed, {_bytes(t['param_bytes_float'])} float32;  "
               f"state: {_bytes(t['state_bytes_fixed'])} (+ {_bytes(t['scratch_bytes'])} scratch);  "
               f"{t['synops_per_step']:,.0f} synaptic operations per step = "
               f"{t['synops_per_second'] / 1e6:,.2f} M/s")
    return "\n".join(out)
