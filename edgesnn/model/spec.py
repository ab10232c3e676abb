"""The network description: plain dataclasses, in physical units, shared by every execution.

A network is an input shape, a time step ``dt`` and a list of layers. Each layer but Flatten is a set of
synapses followed by a population of neurons; Flatten only reshapes. The float32 twin, the fixed-point
emulator and the generated C are all made from this one description (see ``program.py`` and
docs/numerics.md for how parameters become discrete constants).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import ModelError

NEURON_KINDS = ("lif", "if", "cuba", "alif", "li")
RESETS = ("subtract", "zero")
DECAY_FORMS = ("multiply", "shift")


@dataclass(frozen=True)
class Neuron:
    """Neuron parameters in physical terms.

    kind: ``lif`` leaky integrate-and-fire; ``if`` no leak; ``cuba`` current-based LIF (a synaptic current
    with its own time constant feeds the membrane); ``alif`` LIF with an adaptive threshold
    ``threshold + a``, where ``a`` jumps by ``adapt_step`` at each spike and decays with ``tau_adapt``;
    ``li`` a leaky integrator that never spikes (a readout).
    Time constants are in seconds; ``math.inf`` means no leak. ``refractory`` is in seconds and is rounded
    to whole steps. ``decay_form`` picks the fixed-point decay: 12-bit multiply-shift or shift-only.
    """

    kind: str = "lif"
    tau_mem: float = 20e-3
    threshold: float = 1.0
    reset: str = "subtract"
    refractory: float = 0.0
    tau_syn: float = 5e-3
    tau_adapt: float = 200e-3
    adapt_step: float = 0.1
    decay_form: str = "multiply"

    def __post_init__(self):
        if self.kind not in NEURON_KINDS:
            raise ModelError(f"neuron kind {self.kind!r} is unknown; use one of {', '.join(NEURON_KINDS)}")
        if self.reset not in RESETS:
            raise ModelError(f"reset {self.reset!r} is unknown; use 'subtract' or 'zero'")
        if self.decay_form not in DECAY_FORMS:
            raise ModelError(f"decay_form {self.decay_form!r} is unknown; use 'multiply' or 'shift'")
        for name in ("tau_mem", "tau_syn", "tau_adapt"):
            tau = getattr(self, name)
            if not tau > 0:
                raise ModelError(f"{name} must be > 0 seconds (math.inf for no leak), got {tau}")
        if self.kind != "li" and not self.threshold > 0:
            raise ModelError(f"threshold must be > 0, got {self.threshold}")
        if self.refractory < 0 or self.adapt_step < 0:
            raise ModelError("refractory and adapt_step must be >= 0")

    @property
    def spiking(self) -> bool:
        return self.kind != "li"

    @property
    def leaks(self) -> bool:
        return self.kind != "if"

    def betas(self, dt: float) -> dict[str, float]:
        """Per-step decay factors beta = exp(-dt / tau) of the state variables this kind has."""
        out = {"v": beta_of(self.tau_mem, dt) if self.leaks else 1.0}
        if self.kind == "cuba":
            out["i"] = beta_of(self.tau_syn, dt)
        if self.kind == "alif":
            out["a"] = beta_of(self.tau_adapt, dt)
        return out

    def refractory_steps(self, dt: float) -> int:
        return int(round(self.refractory / dt))


def beta_of(tau: float, dt: float) -> float:
    """The discrete decay per step of a time constant: exp(-dt / tau)."""
    return 0.0 if tau == 0 else math.exp(-dt / tau)


def tau_of(beta: float, dt: float) -> float:
    """The time constant whose decay per step of ``dt`` is ``beta`` (inverse of ``beta_of``)."""
    if not 0 < beta <= 1:
        raise ModelError(f"beta must be in (0, 1], got {beta}")
    return math.inf if beta == 1 else -dt / math.log(beta)


# ---------------------------------------------------------------- layers

def _as_f32(w, name) -> np.ndarray:
    a = np.ascontiguousarray(np.asarray(w, dtype=np.float32))
    if not np.all(np.isfinite(a)):
        raise ModelError(f"{name} holds NaN or infinite values")
    return a


@dataclass(eq=False)
class Dense:
    """All-to-all synapses; ``weight`` has shape (n_out, n_in) as in PyTorch and NIR."""

    weight: np.ndarray
    neuron: Neuron = field(default_factory=Neuron)
    plastic: bool = False

    def __post_init__(self):
        self.weight = _as_f32(self.weight, "Dense.weight")
        if self.weight.ndim != 2:
            raise ModelError(f"Dense.weight must be 2-D (n_out, n_in), got shape {self.weight.shape}")

    def out_shape(self, in_shape):
        n_in = math.prod(in_shape)
        if self.weight.shape[1] != n_in:
            raise ModelError(f"Dense.weight has {self.weight.shape[1]} inputs but the layer receives "
                             f"{n_in} (input shape {tuple(in_shape)})")
        return (self.weight.shape[0],)


@dataclass(eq=False)
class Recurrent:
    """Dense input synapses plus all-to-all recurrent synapses from the layer's own previous spikes."""

    weight: np.ndarray
    weight_rec: np.ndarray
    neuron: Neuron = field(default_factory=Neuron)
    plastic: bool = False

    def __post_init__(self):
        self.weight = _as_f32(self.weight, "Recurrent.weight")
        self.weight_rec = _as_f32(self.weight_rec, "Recurrent.weight_rec")
        n = self.weight.shape[0] if self.weight.ndim == 2 else -1
        if self.weight.ndim != 2 or self.weight_rec.shape != (n, n):
            raise ModelError(f"Recurrent needs weight (n, n_in) and weight_rec (n, n); got "
                             f"{self.weight.shape} and {self.weight_rec.shape}")
        if not self.neuron.spiking:
            raise ModelError("Recurrent layers need spiking neurons; 'li' never spikes")

    def out_shape(self, in_shape):
        return Dense.out_shape(self, in_shape)


def _conv_out(size, k, stride, pad, what):
    out = (size + 2 * pad - k) // stride + 1
    if out < 1:
        raise ModelError(f"{what}: kernel {k} with stride {stride} and padding {pad} leaves no output "
                         f"from an input of size {size}")
    return out


@dataclass(eq=False)
class Conv2d:
    """2-D convolution, executed as an event-driven scatter; weight (c_out, c_in, kh, kw)."""

    weight: np.ndarray
    stride: int = 1
    padding: int = 0
    neuron: Neuron = field(default_factory=Neuron)
    plastic: bool = False

    def __post_init__(self):
        self.weight = _as_f32(self.weight, "Conv2d.weight")
        if self.weight.ndim != 4:
            raise ModelError(f"Conv2d.weight must be 4-D (c_out, c_in, kh, kw), got {self.weight.shape}")
        if self.stride < 1 or self.padding < 0:
            raise ModelError(f"Conv2d needs stride >= 1 and padding >= 0, got {self.stride}, {self.padding}")

    def out_shape(self, in_shape):
        if len(in_shape) != 3 or in_shape[0] != self.weight.shape[1]:
            raise ModelError(f"Conv2d expects input (c={self.weight.shape[1]}, h, w), got {tuple(in_shape)}")
        c_out, _, kh, kw = self.weight.shape
        return (c_out, _conv_out(in_shape[1], kh, self.stride, self.padding, "Conv2d height"),
                _conv_out(in_shape[2], kw, self.stride, self.padding, "Conv2d width"))


@dataclass(eq=False)
class SumPool2d:
    """Sum pooling per channel with one shared weight, followed by neurons (as SLAYER does)."""

    kernel: int = 2
    stride: int | None = None
    weight: float = 1.0
    neuron: Neuron = field(default_factory=Neuron)

    plastic = False

    def __post_init__(self):
        if self.stride is None:
            self.stride = self.kernel
        if self.kernel < 1 or self.stride < 1:
            raise ModelError(f"SumPool2d needs kernel, stride >= 1, got {self.kernel}, {self.stride}")
        if not math.isfinite(self.weight):
            raise ModelError("SumPool2d.weight must be finite")
        self.weight = float(np.float32(self.weight))

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ModelError(f"SumPool2d expects input (c, h, w), got {tuple(in_shape)}")
        return (in_shape[0], _conv_out(in_shape[1], self.kernel, self.stride, 0, "SumPool2d height"),
                _conv_out(in_shape[2], self.kernel, self.stride, 0, "SumPool2d width"))


@dataclass(eq=False)
class Flatten:
    """Reshape to one dimension in C order; no neurons, spikes pass through with the same indices."""

    neuron = None
    plastic = False

    def out_shape(self, in_shape):
        return (math.prod(in_shape),)


LAYER_TYPES = {"dense": Dense, "recurrent": Recurrent, "conv2d": Conv2d, "sumpool2d": SumPool2d,
               "flatten": Flatten}
LAYER_NAMES = {cls: name for name, cls in LAYER_TYPES.items()}


def layer_kind(layer) -> str:
    return LAYER_NAMES[type(layer)]


# ---------------------------------------------------------------- network

@dataclass(eq=False)
class Network:
    """An input shape, a time step, and layers in order. ``seed`` seeds every PRNG of the model."""

    input_shape: tuple
    layers: list
    dt: float = 1e-3
    name: str = "network"
    seed: int = 0

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if not self.input_shape or min(self.input_shape) < 1:
            raise ModelError(f"input_shape must be non-empty with sizes >= 1, got {self.input_shape}")
        if not self.dt > 0:
            raise ModelError(f"dt must be > 0 seconds, got {self.dt}")
        if not self.layers:
            raise ModelError("a network needs at least one layer")
        if not 0 <= self.seed < 2**32:
            raise ModelError(f"seed must fit in 32 bits, got {self.seed}")
        self.shapes()  # validates the chain
        for i, layer in enumerate(self.layers[:-1]):
            if layer.neuron is not None and not layer.neuron.spiking:
                raise ModelError(f"layer {i} ({layer_kind(layer)}) has non-spiking 'li' neurons; only the "
                                 f"last layer may be a readout")
        if self.layers[-1].neuron is None:
            raise ModelError("the last layer must have neurons (it cannot be Flatten)")

    def shapes(self) -> list[tuple]:
        """Output shape of each layer (the input shape is ``input_shape``)."""
        out, shape = [], self.input_shape
        for i, layer in enumerate(self.layers):
            if type(layer) not in LAYER_NAMES:
                raise ModelError(f"layer {i} is a {type(layer).__name__}, not an edgesnn layer")
            try:
                shape = tuple(layer.out_shape(shape))
            except ModelError as e:
                raise ModelError(f"layer {i} ({layer_kind(layer)}): {e}") from None
            out.append(shape)
        return out

    @property
    def n_inputs(self) -> int:
        return math.prod(self.input_shape)

    @property
    def n_outputs(self) -> int:
        return math.prod(self.shapes()[-1])

    def with_layers(self, layers) -> "Network":
        return replace(self, layers=list(layers))
