"""How closely the fixed-point network follows its float twin, layer by layer, on given input."""
from __future__ import annotations

import numpy as np

from .quantize import FixedModel


def layer_spike_counts(sim, samples) -> np.ndarray:
    """Spike count of every neuron (layers concatenated) summed over samples, each from a fresh state."""
    total = np.zeros(int(sim.layer_base[-1]), np.int64)
    for ev in samples:
        sim.reset()
        total += sim.run(ev, record="spikes").spikes.sum(axis=0, dtype=np.int64)
    return total


def spike_count_agreement(model: FixedModel, samples, float_network=None) -> list[float]:
    """Per layer: 1 - sum|c_fixed - c_float| / sum(c_fixed + c_float), 1.0 where both are silent.

    ``float_network`` defaults to the model's own float description (what quantization approximates).
    Layers without spikes (the readout) compare nothing and report 1.0 only if both are silent.
    """
    from ..simulator import Simulator  # the simulator imports quantize, which imports us lazily

    fixed = Simulator.fixed(model)
    flt = Simulator.float(float_network or model.network)
    cf = layer_spike_counts(fixed, samples)
    cr = layer_spike_counts(flt, samples)
    out = []
    for lo, hi in zip(fixed.layer_base[:-1], fixed.layer_base[1:]):
        a, b = cf[lo:hi], cr[lo:hi]
        denom = int((a + b).sum())
        out.append(1.0 if denom == 0 else 1.0 - float(np.abs(a - b).sum()) / denom)
    return out
