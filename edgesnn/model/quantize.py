"""Float -> fixed point: per-layer power-of-two scales, integer thresholds and decay constants.

A layer with shift ``s`` stores weight w as round(w * 2^s) (int8, or int16 for plastic layers) and
counts its membrane, synaptic current, threshold and adaptation in the same unit 2^-s, so synaptic input
adds to the membrane with no rescaling. docs/numerics.md states the mapping and its error bound.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..errors import ModelError
from ..kernels.arith import DECAY_ONE, INT32_MAX
from .spec import Conv2d, Flatten, Network, Recurrent, SumPool2d, tau_of

QMAX = {8: 127, 16: 32767}
PLASTIC_HEADROOM_BITS = 1  # plastic layers leave weights room to double through learning
PLASTIC_ZERO_SHIFT = 13    # an all-zero plastic layer (to be learned from scratch): |w| <= 4 in units of 2^-13
MAX_SHIFT = 62             # |shift| bound: 2^shift stays exact in a float64 and in an int64


@dataclass(eq=False)
class LayerQ:
    """The integer form of one layer (None stands for Flatten)."""

    shift: int
    bits: int
    weight: np.ndarray | None  # int8 / int16, same shape as the float weight (None for pooling)
    weight_rec: np.ndarray | None
    pool_weight: int
    theta: int
    a_inc: int
    dv: int
    di: int
    da: int
    ref_steps: int


@dataclass(eq=False)
class FixedModel:
    """A network and its integer form: what the emulator and the device run."""

    network: Network
    layers: list  # LayerQ or None, one per network layer

    def dequantized(self) -> Network:
        """The float network that is this integer form exactly: weights, threshold and adaptation step
        are the integers times 2^-shift, decays are the integer decays' effective factors."""
        out = []
        for layer, q in zip(self.network.layers, self.layers):
            if q is None:
                out.append(layer)
                continue
            scale = 2.0 ** -q.shift
            n = layer.neuron
            dt = self.network.dt

            def tau(d, form=n.decay_form):
                beta = effective_beta(d, form)
                return tau_of(beta, dt) if beta > 0 else 1e-30
            neuron = replace(
                n, threshold=q.theta * scale if n.spiking else n.threshold,
                adapt_step=q.a_inc * scale if n.kind == "alif" else n.adapt_step,
                tau_mem=tau(q.dv) if n.leaks else n.tau_mem,
                tau_syn=tau(q.di) if n.kind == "cuba" else n.tau_syn,
                tau_adapt=tau(q.da) if n.kind == "alif" else n.tau_adapt,
                refractory=q.ref_steps * dt)
            if isinstance(layer, SumPool2d):
                out.append(SumPool2d(layer.kernel, layer.stride, q.pool_weight * scale, neuron))
                continue
            kw = dict(neuron=neuron, plastic=layer.plastic, weight=q.weight.astype(np.float32) * np.float32(scale))
            if isinstance(layer, Recurrent):
                kw["weight_rec"] = q.weight_rec.astype(np.float32) * np.float32(scale)
            if isinstance(layer, Conv2d):
                kw.update(stride=layer.stride, padding=layer.padding)
            out.append(type(layer)(**kw))
        return self.network.with_layers(out)


def round_half_away(x) -> np.ndarray:
    """Round to nearest, ties away from zero (the same in C: sign * floor(|x| + 0.5))."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def decay_constant(beta: float, form: str) -> int:
    """beta -> 12-bit multiplier d = round(beta * 4096), or shift k with 1 - 2^-k nearest beta (0: no leak)."""
    if form == "multiply":
        return int(min(DECAY_ONE, max(0, round_half_away(beta * DECAY_ONE))))
    if beta >= 1.0:
        return 0
    if beta <= 0.0:
        return 1
    return int(min(24, max(1, round(-math.log2(1.0 - beta)))))


def effective_beta(d: int, form: str) -> float:
    """The decay the integer constant really applies (before the floor)."""
    if form == "multiply":
        return d / DECAY_ONE
    return 1.0 if d == 0 else 1.0 - 2.0 ** -d


def weight_shift(max_abs: float, bits: int, headroom: int = 0) -> int:
    """Largest s with max_abs * 2^s <= QMAX (minus headroom bits); 0 for an all-zero layer."""
    if max_abs <= 0:
        return 0
    return int(math.floor(math.log2(QMAX[bits] / max_abs))) - headroom


def _max_abs(layer) -> float:
    if isinstance(layer, SumPool2d):
        return abs(layer.weight)
    m = float(np.max(np.abs(layer.weight))) if layer.weight.size else 0.0
    if isinstance(layer, Recurrent) and layer.weight_rec.size:
        m = max(m, float(np.max(np.abs(layer.weight_rec))))
    return m


def quantize_layer(layer, dt: float, index: int, shift: int | None = None) -> LayerQ | None:
    if isinstance(layer, Flatten):
        return None
    bits = 16 if layer.plastic else 8
    n = layer.neuron
    if shift is None and layer.plastic and _max_abs(layer) == 0:
        shift = PLASTIC_ZERO_SHIFT      # no weights to take a scale from: the scale learning can grow into
    if shift is None:
        shift = weight_shift(_max_abs(layer), bits, PLASTIC_HEADROOM_BITS if layer.plastic else 0)
        if n.spiking:  # the threshold must fit int32 too, with a bit to spare for adaptation
            shift = min(shift, math.floor(math.log2(INT32_MAX / n.threshold)) - 1)
    shift = int(shift)
    if abs(shift) > MAX_SHIFT:
        raise ModelError(f"layer {index}: weight scale 2^{shift} is out of range (|shift| <= {MAX_SHIFT}); "
                         f"the weights are all (nearly) zero or huge: rescale them")
    scale = 2.0 ** shift
    qmax = QMAX[bits]
    dtype = np.int8 if bits == 8 else np.int16

    def q(w):
        return np.clip(round_half_away(w * scale), -qmax, qmax).astype(dtype)

    theta = int(round_half_away(n.threshold * scale)) if n.spiking else 0
    if n.spiking and not 1 <= theta <= INT32_MAX:
        raise ModelError(f"layer {index}: threshold {n.threshold} at weight scale 2^{shift} gives "
                         f"{theta}, outside 1..{INT32_MAX}; rescale the weights or the threshold")
    max_w = _max_abs(layer)
    if max_w > 0 and round_half_away(min(max_w * scale, qmax)) == 0:
        raise ModelError(f"layer {index}: the weights (largest {max_w:g}) vanish at scale 2^{shift}, which "
                         f"the threshold {n.threshold} limits; scale weights and threshold up together")
    betas = n.betas(dt)
    form = n.decay_form
    return LayerQ(
        shift=shift, bits=bits,
        weight=None if isinstance(layer, SumPool2d) else q(layer.weight),
        weight_rec=q(layer.weight_rec) if isinstance(layer, Recurrent) else None,
        pool_weight=int(np.clip(round_half_away(layer.weight * scale), -QMAX[16], QMAX[16]))
        if isinstance(layer, SumPool2d) else 0,
        theta=theta,
        a_inc=int(min(INT32_MAX, round_half_away(n.adapt_step * scale))) if n.kind == "alif" else 0,
        dv=decay_constant(betas["v"], form),
        di=decay_constant(betas.get("i", 0.0), form) if n.kind == "cuba" else 0,
        da=decay_constant(betas.get("a", 0.0), form) if n.kind == "alif" else 0,
        ref_steps=n.refractory_steps(dt),
    )


def quantize(net: Network, calibration=None, candidates: int = 3, progress=None) -> FixedModel:
    """Quantize every layer. With ``calibration`` (an Events object or a list of them), each layer's
    shift is chosen among the weight-derived shift and ``candidates - 1`` finer ones (which clip the
    largest weights) by the best spike-count agreement with the float network on that data."""
    layers = [quantize_layer(layer, net.dt, i) for i, layer in enumerate(net.layers)]
    model = FixedModel(net, layers)
    if calibration is None or candidates <= 1:
        return model
    from .agreement import spike_count_agreement  # the simulator imports this module

    samples = calibration if isinstance(calibration, (list, tuple)) else [calibration]
    for i, layer in enumerate(net.layers):
        if layers[i] is None or not layer.neuron.spiking:
            continue
        base = layers[i].shift
        best = None
        for s in range(base, base + candidates):
            trial = list(model.layers)
            trial[i] = quantize_layer(layer, net.dt, i, shift=s)
            score = spike_count_agreement(FixedModel(net, trial), samples)[i]
            if best is None or score > best[0]:
                best = (score, trial[i])
        model.layers[i] = best[1]
        if progress:
            progress(i, best[0])
    return model
