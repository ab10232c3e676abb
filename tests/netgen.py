"""Random networks of every layer and neuron kind, small enough for the pure-Python reference."""
import numpy as np

from edgesnn.model.spec import Conv2d, Dense, Flatten, Network, Neuron, Recurrent, SumPool2d

KINDS = ("lif", "if", "cuba", "alif")


def random_neuron(rng, kind=None, spiking=True):
    kind = kind or (rng.choice(KINDS) if spiking else "li")
    return Neuron(
        kind=str(kind),
        tau_mem=float(rng.choice([2e-3, 5e-3, 20e-3, 1.0])),
        threshold=float(rng.uniform(0.3, 1.5)),
        reset=str(rng.choice(["subtract", "zero"])),
        refractory=float(rng.choice([0.0, 0.0, 1e-3, 3e-3])),
        tau_syn=float(rng.choice([2e-3, 5e-3])),
        tau_adapt=float(rng.choice([20e-3, 100e-3])),
        adapt_step=float(rng.uniform(0.05, 0.5)),
        decay_form=str(rng.choice(["multiply", "shift"])),
    )


def random_network(seed: int, conv: bool | None = None, readout: bool | None = None) -> Network:
    """A random network: optionally conv -> pool -> flatten, then recurrent and/or dense layers."""
    rng = np.random.default_rng(seed)
    conv = bool(rng.integers(2)) if conv is None else conv
    readout = bool(rng.integers(2)) if readout is None else readout
    layers = []
    if conv:
        c, h, w = int(rng.integers(1, 3)), int(rng.integers(5, 9)), int(rng.integers(5, 9))
        shape = (c, h, w)
        k, s, p = int(rng.integers(1, 4)), int(rng.integers(1, 3)), int(rng.integers(0, 2))
        oc = int(rng.integers(1, 4))
        layers.append(Conv2d(rng.normal(0, 0.7, (oc, c, k, k)), stride=s, padding=p,
                             neuron=random_neuron(rng), plastic=bool(rng.integers(2))))
        layers.append(SumPool2d(int(rng.integers(1, 3)), weight=float(rng.uniform(0.3, 1.2)),
                                neuron=random_neuron(rng)))
        layers.append(Flatten())
    else:
        shape = (int(rng.integers(3, 30)),)
    width = shape
    for layer in layers:
        width = layer.out_shape(width)
    n_in = int(np.prod(width))
    hidden = int(rng.integers(3, 20))
    if rng.integers(2):
        layers.append(Recurrent(rng.normal(0, 0.6, (hidden, n_in)), rng.normal(0, 0.4, (hidden, hidden)),
                                neuron=random_neuron(rng), plastic=bool(rng.integers(2))))
    else:
        layers.append(Dense(rng.normal(0, 0.6, (hidden, n_in)), neuron=random_neuron(rng),
                            plastic=bool(rng.integers(2))))
    n_out = int(rng.integers(2, 8))
    layers.append(Dense(rng.normal(0, 0.6, (n_out, hidden)), neuron=random_neuron(rng, spiking=not readout)))
    return Network(shape, layers, dt=1e-3, seed=seed)


def random_events(seed: int, n_inputs: int, n_steps: int, rate: float | None = None):
    """Per-step index lists, with the edges mixed in: empty steps, every input, repeated indices."""
    rng = np.random.default_rng(seed + 7919)
    rate = float(rng.uniform(0.05, 0.5)) if rate is None else rate
    steps = []
    for t in range(n_steps):
        r = rng.random()
        if r < 0.1:
            steps.append([])
        elif r < 0.2:
            steps.append(list(range(n_inputs)))
        elif r < 0.3:
            steps.append(sorted(rng.integers(0, n_inputs, 2 * n_inputs).tolist()))  # repeats count twice
        else:
            steps.append(np.flatnonzero(rng.random(n_inputs) < rate).tolist())
    return steps


def plastic_network(recurrent=False, alif=False, reset="subtract", n_in=12, h=9, C=3, seed=5, scale=0.6):
    """A small learning network (tests of edgesnn.learning and its C): layer 0 a plastic hidden layer
    (Dense or Recurrent, LIF or ALIF), layer 1 a plastic LI readout of C classes; quantized."""
    from edgesnn.model.quantize import quantize
    rng = np.random.default_rng(seed)
    nrn = Neuron("alif" if alif else "lif", tau_mem=10e-3, threshold=1.0, reset=reset, adapt_step=0.2,
                 tau_adapt=50e-3)
    if recurrent:
        first = Recurrent(rng.normal(0.1, scale, (h, n_in)), rng.normal(0, 0.3, (h, h)), nrn, plastic=True)
    else:
        first = Dense(rng.normal(0.1, scale, (h, n_in)), nrn, plastic=True)
    net = Network((n_in,), [first, Dense(rng.normal(0, 0.3, (C, h)), Neuron("li", tau_mem=10e-3), plastic=True)],
                  seed=seed)
    return quantize(net)


def learning_inputs(n_in, T, rate, seed, sort=True):
    """T steps of input indices at ``rate``; about 30 % of the non-empty steps repeat their first index
    (it counts twice)."""
    rng = np.random.default_rng(seed)
    steps = []
    for _ in range(T):
        idx = list(np.flatnonzero(rng.random(n_in) < rate))
        if idx and rng.random() < 0.3:
            idx.append(idx[0])
        steps.append(sorted(int(i) for i in idx) if sort else [int(i) for i in idx])
    return steps
