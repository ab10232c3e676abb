"""Built-in networks, randomly initialised: the workloads the benchmarks, the CLI and the tests share.

    net = presets.make("kws", seed=0)       # a spec.Network; quantize.quantize(net) gives the FixedModel

Every preset uses dt = 1 ms (dvs-adapt: 10 ms, the bins it learns from) and reset by subtraction, and draws its weights from
numpy.random.default_rng(seed) (the seed is also the model's PRNG seed), so a name and a seed give the
same network everywhere. The initial weights are random, not trained: a preset is a workload of the
right size and activity, not a classifier.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..errors import ModelError
from .spec import Conv2d, Dense, Flatten, Network, Neuron, Recurrent, SumPool2d, tau_of

DT = 1e-3

PRESETS = {
    "w1": "DVS gesture sized MLP: input (2, 32, 32) -> Dense 512 LIF -> Dense 11 LIF; beta 0.9, threshold 1, "
          "weights N(0, 0.05)",
    "w2": "recurrent SNN: 64 inputs -> Recurrent 256 LIF (input N(0, 0.2), recurrent N(0, 0.05)) -> "
          "Dense 12 LIF (N(0, 0.1)); beta 0.9, threshold 1",
    "dvs-conv": "convolutional DVS classifier: input (2, 32, 32) -> Conv2d 16x3x3 LIF -> SumPool 2 -> "
                "Conv2d 32x3x3 LIF -> SumPool 2 -> Flatten -> Dense 128 LIF -> Dense 11 LI readout; "
                "tau_mem 20 ms, He-like init scaled for ~2 % activity (works for 1-5 % input)",
    "dvs-adapt": "on-device adaptation to DVS gestures (`edgesnn adapt`): input (2, 32, 32) at 10 ms steps -> "
                 "frozen Conv2d 8x5x5 LIF (random zero-mean kernels, same padding) -> SumPool 2 LIF -> "
                 "plastic Dense 11 LI readout, all weights zero (learned on the device); tau_mem 50 ms, "
                 "scaled for 128x128 DVS events pooled 4x4, each input active at most once per step "
                 "(~11 % of the inputs per step)",
    "kws": "keyword spotting: 64 delta-modulation audio channels (32 bands x on/off) -> Recurrent 128 ALIF "
           "(tau_mem 20 ms, tau_adapt 200 ms) -> Dense 10 LI readout (digits); for 2-10 % channel activity",
}


def _w1(rng) -> Network:
    lif = Neuron("lif", tau_mem=tau_of(0.9, DT), threshold=1.0, reset="subtract")
    return Network((2, 32, 32), [
        Dense(rng.normal(0.0, 0.05, (512, 2 * 32 * 32)), lif),
        Dense(rng.normal(0.0, 0.05, (11, 512)), lif),
    ], dt=DT, name="w1")


def _w2(rng) -> Network:
    lif = Neuron("lif", tau_mem=tau_of(0.9, DT), threshold=1.0, reset="subtract")
    return Network((64,), [
        Recurrent(rng.normal(0.0, 0.2, (256, 64)), rng.normal(0.0, 0.05, (256, 256)), lif),
        Dense(rng.normal(0.0, 0.1, (12, 256)), lif),
    ], dt=DT, name="w2")


def _scaled(rng, shape, fan_in: int, rate: float, beta: float, gain: float) -> np.ndarray:
    """He-like init for sparse spiking input: zero-mean normal weights whose summed input, from
    ``fan_in`` inputs each active with probability ``rate``, integrates (leak ``beta``) to a membrane
    standard deviation of ``gain`` thresholds: sigma = gain * sqrt((1 - beta^2) / (fan_in * rate))."""
    sigma = gain * math.sqrt((1.0 - beta * beta) / (fan_in * rate))
    return rng.normal(0.0, sigma, shape)


def _dvs_conv(rng) -> Network:
    tau = 20e-3
    beta = math.exp(-DT / tau)
    lif = Neuron("lif", tau_mem=tau, threshold=1.0, reset="subtract")
    readout = Neuron("li", tau_mem=tau)
    # every layer is scaled for ~2 % presynaptic activity; a pool neuron (weight 0.5, threshold 1) needs
    # two input spikes, so activity stays about level through the stack: at 1 / 2 / 5 % input the hidden
    # layers settle near 1 / 2-7 / 5-20 % (tests/test_presets_info.py measures it)
    rate = 0.02
    return Network((2, 32, 32), [
        Conv2d(_scaled(rng, (16, 2, 3, 3), 2 * 9, rate, beta, 1.0), stride=1, padding=1, neuron=lif),
        SumPool2d(2, weight=0.5, neuron=lif),
        Conv2d(_scaled(rng, (32, 16, 3, 3), 16 * 9, rate, beta, 1.0), stride=1, padding=1, neuron=lif),
        SumPool2d(2, weight=0.5, neuron=lif),
        Flatten(),
        Dense(_scaled(rng, (128, 32 * 8 * 8), 32 * 8 * 8, rate, beta, 1.0), neuron=lif),
        Dense(_scaled(rng, (11, 128), 128, rate, beta, 1.0), neuron=readout),
    ], dt=DT, name="dvs-conv")


def _dvs_adapt(rng) -> Network:
    dt, tau, rate = 10e-3, 50e-3, 0.11
    beta = math.exp(-dt / tau)
    lif = Neuron("lif", tau_mem=tau, threshold=1.0, reset="subtract")
    wc = _scaled(rng, (8, 2, 5, 5), 2 * 25, rate, beta, 1.0)
    wc -= wc.mean(axis=(1, 2, 3), keepdims=True)     # zero-mean kernels: edges and motion, not brightness
    return Network((2, 32, 32), [
        Conv2d(wc, stride=1, padding=2, neuron=lif),
        SumPool2d(2, weight=1.0, neuron=lif),
        Dense(np.zeros((11, 8 * 16 * 16)), neuron=Neuron("li", tau_mem=tau), plastic=True),
    ], dt=dt, name="dvs-adapt")


def _kws(rng) -> Network:
    tau = 20e-3
    beta = math.exp(-DT / tau)
    alif = Neuron("alif", tau_mem=tau, threshold=1.0, reset="subtract", tau_adapt=200e-3, adapt_step=0.05)
    readout = Neuron("li", tau_mem=tau)
    n = 128
    return Network((64,), [
        Recurrent(_scaled(rng, (n, 64), 64, 0.05, beta, 1.2), _scaled(rng, (n, n), n, 0.05, beta, 0.4), alif),
        Dense(_scaled(rng, (10, n), n, 0.05, beta, 1.0), neuron=readout),
    ], dt=DT, name="kws")


_MAKERS = {"w1": _w1, "w2": _w2, "dvs-conv": _dvs_conv, "dvs-adapt": _dvs_adapt, "kws": _kws}


def make(name: str, seed: int = 0) -> Network:
    """A preset network, randomly initialised from ``seed`` (also the network's PRNG seed)."""
    if name not in _MAKERS:
        raise ModelError(f"unknown preset {name!r}; the presets are {', '.join(PRESETS)}")
    if not 0 <= int(seed) < 2**32:
        raise ModelError(f"seed must fit in 32 bits, got {seed}")
    net = _MAKERS[name](np.random.default_rng(int(seed)))
    return replace(net, seed=int(seed))
