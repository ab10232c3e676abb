"""Run a network: fixed point (the emulator, bit-exact with the device) or float32 (the twin).

    sim = Simulator.fixed(model)          # or Simulator.float(network)
    sim.step([3, 17, 40])                 # streaming: one call per time step, returns output spikes
    rec = sim.run(events, record="all")   # many steps in one compiled call
    out = sim.run_batch(samples)          # offline evaluation, samples in parallel

All three paths call the same compiled step, so they agree exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from .errors import InputError
from .kernels import layout as K
from .kernels import network as kn
from .model.program import Program, build_fixed, build_float

_NO_SPIKES = np.zeros(0, np.int32)  # what a streaming step without output spikes returns
_NO_SPIKES.flags.writeable = False


@dataclass(eq=False)
class Events:
    """Input events of T steps: step t's active input indices are idx[ptr[t]:ptr[t + 1]] (CSR)."""

    idx: np.ndarray  # int32
    ptr: np.ndarray  # int64, length T + 1

    def __post_init__(self):
        self.idx = np.ascontiguousarray(self.idx, dtype=np.int32)
        self.ptr = np.ascontiguousarray(self.ptr, dtype=np.int64)
        if self.ptr.ndim != 1 or self.ptr.size < 1 or self.ptr[0] != 0 or self.ptr[-1] != self.idx.size \
                or np.any(np.diff(self.ptr) < 0):
            raise InputError("Events.ptr must start at 0, never decrease, and end at len(idx)")

    @property
    def n_steps(self) -> int:
        return self.ptr.size - 1

    @classmethod
    def from_dense(cls, x) -> "Events":
        """From a (T, ...) array of event counts per input (booleans are counts of 0 or 1)."""
        x = np.asarray(x)
        x2 = x.reshape(x.shape[0], -1).astype(np.int64)
        if x2.size and x2.min() < 0:
            raise InputError("dense input holds negative event counts")
        return cls(*kn.dense_to_events(x2))

    @classmethod
    def from_lists(cls, steps) -> "Events":
        sizes = [len(s) for s in steps]
        ptr = np.zeros(len(steps) + 1, np.int64)
        np.cumsum(sizes, out=ptr[1:])
        idx = np.concatenate([np.asarray(s, np.int64) for s in steps]) if steps else np.zeros(0)
        return cls(idx.astype(np.int32), ptr)

    def step(self, t: int) -> np.ndarray:
        return self.idx[self.ptr[t]:self.ptr[t + 1]]

    def to_dense(self, n_inputs: int) -> np.ndarray:
        out = np.zeros((self.n_steps, n_inputs), np.int32)
        for t in range(self.n_steps):
            np.add.at(out[t], self.step(t), 1)
        return out


@dataclass(eq=False)
class Record:
    """What a run recorded; arrays are (T, ...) and absent ones are None."""

    out_spikes: np.ndarray | None   # int8 (T, n_out)
    out_v: np.ndarray | None        # (T, n_out) membrane of the output layer
    spikes: np.ndarray | None       # int8 (T, sum of layer sizes), layers concatenated in order
    state: np.ndarray | None        # (T, n_vs) every membrane, current and adaptation value


_FIXED_TYPES = tuple(np.dtype(t) for t in (np.int64, np.int64, np.int8, np.int16, np.int32, np.int32))
_FLOAT_TYPES = tuple(np.dtype(t) for t in (np.int64, np.float32, np.float32, np.float32, np.float32, np.int32))


def _as_input(events) -> np.ndarray:
    """The events of one step as the compiled step takes them: a new 1-D int32 array (C-contiguous,
    aligned, writable); a scalar is one event."""
    inp = np.array(events, dtype=np.int32, ndmin=1)
    if inp.ndim != 1:
        raise InputError(f"a step takes a 1-D list of input indices, got shape {inp.shape}")
    return inp


class Simulator:
    """Explicit parameters (a Program) and explicit state (vs, ist); the kernels do the rest."""

    def __init__(self, program: Program):
        self.program = program
        self._vs, self._ist = program.new_state()
        p = program
        self._args = (p.ltab, p.ptab, p.wa, p.wb)
        # the streaming step takes the six arrays by address (one argument, kn.step_fixed_at): the arrays
        # are held here, modified in place only, never replaced (vs and ist are read-only attributes)
        arrays = (p.ltab, p.ptab, p.wa, p.wb, self._vs, self._ist)
        step_at = {_FIXED_TYPES: kn.step_fixed_at, _FLOAT_TYPES: kn.step_float_at}.get(tuple(a.dtype for a in arrays))
        if step_at is not None and all(a.flags.c_contiguous for a in arrays):
            self._work = kn.new_work(p.ltab)  # the step's scratch buffers, held here like the arrays
            self._address_table = kn.address_table(*arrays, self._work)
            # closed to new signatures: an input that is not an int32 C-contiguous writable array raises
            # TypeError at dispatch, and step() converts it then (no type checks on the common path)
            self._step = partial(kn.closed_step_at(step_at), self._address_table)
        else:                          # any other layout: the six arrays as arguments, the input copied
            self._step = lambda inp: kn.step(*arrays, _as_input(inp))
        self.n_inputs = int(p.ltab[0, K.L_N_IN])
        self.n_outputs = int(p.ltab[-1, K.L_N_OUT])
        sizes = p.layer_sizes()
        self.layer_base = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self._cnt_off = p.n_ist - p.n_layers
        # the output layer's spike list, a view into the state (for a cheap streaming step)
        s_off = int(p.ltab[-1, K.L_S_OFF])
        self._out_list = self.ist[s_off:s_off + self.n_outputs]
        self.steps = 0

    @classmethod
    def fixed(cls, model) -> "Simulator":
        return cls(build_fixed(model))

    @classmethod
    def float(cls, network) -> "Simulator":
        return cls(build_float(network))

    # ------------------------------------------------------------ state
    @property
    def vs(self) -> np.ndarray:
        """The numeric state (membranes, currents, adaptation), modified in place by every step."""
        return self._vs

    @property
    def ist(self) -> np.ndarray:
        """The integer state (refractory counters, spike lists, spike counts)."""
        return self._ist

    def reset(self):
        self.vs[:] = 0
        self.ist[:] = 0
        self.steps = 0

    def v(self, layer: int = -1) -> np.ndarray:
        """Membrane of a layer (a view into the state)."""
        row = self.program.ltab[layer]
        if row[K.L_V_OFF] < 0:
            raise InputError(f"layer {layer} has no neurons (Flatten)")
        return self.vs[row[K.L_V_OFF]:row[K.L_V_OFF] + row[K.L_N_OUT]]

    def spikes(self, layer: int = -1) -> np.ndarray:
        """Indices of the neurons of a layer that spiked in the last step."""
        layer = layer % self.program.n_layers
        off = self.program.ltab[layer, K.L_S_OFF]
        return self.ist[off:off + self.ist[self._cnt_off + layer]].copy()

    # ------------------------------------------------------------ execution
    def step(self, events) -> np.ndarray:
        """Advance one step; ``events`` are the active input indices. Returns the output spike indices:
        a new array, or one shared read-only empty array when no output neuron fired."""
        inp = events
        try:
            n = self._step(inp)
        except (TypeError, ValueError):  # not an int32 array as the compiled step takes it (an empty list
            # is a ValueError of Numba's typing)
            inp = _as_input(events)
            n = self._step(inp)
        if n > 0:
            self.steps += 1
            return self._out_list[:n].copy()
        if n < 0:
            self._raise_status(n, inp, f"step {self.steps}; the step was not applied")
        self.steps += 1
        return _NO_SPIKES  # most steps: no copy to make

    def step_dense(self, x) -> np.ndarray:
        """Advance one step from a dense vector of event counts per input (booleans count 0 or 1)."""
        x = np.asarray(x).reshape(-1)
        if x.size != self.n_inputs:
            raise InputError(f"a dense step needs {self.n_inputs} values (one per input), got {x.size}")
        if x.dtype == np.bool_:
            return self.step(np.flatnonzero(x).astype(np.int32))
        counts = x.astype(np.int64)
        if counts.min(initial=0) < 0:
            raise InputError("dense input holds negative event counts")
        return self.step(np.repeat(np.arange(self.n_inputs, dtype=np.int32), counts))

    def run(self, events, record: str = "output") -> Record:
        """Run every step of ``events`` (an Events, or a dense (T, ...) count array) from the current
        state. ``record``: 'output' (output spikes and membrane), 'spikes' (+ every layer's spikes) or
        'all' (+ the whole numeric state every step)."""
        if record not in ("output", "spikes", "all"):
            raise InputError(f"record must be 'output', 'spikes' or 'all', got {record!r}")
        ev = events if isinstance(events, Events) else Events.from_dense(events)
        T, n_out = ev.n_steps, self.n_outputs
        out_spk = np.zeros((T, n_out), np.int8)
        out_v = np.zeros((T, n_out), self.vs.dtype)
        rec_spk = np.zeros((T if record != "output" else 0, int(self.layer_base[-1])), np.int8)
        rec_vs = np.zeros((T if record == "all" else 0, self.vs.size), self.vs.dtype)
        status, done = kn.run_steps(*self._args, self.vs, self.ist, ev.idx, ev.ptr, out_spk, out_v,
                                    rec_spk, rec_vs)
        self.steps += int(done)
        if status != K.OK:
            self._raise_status(status, ev.step(done), f"step {done} of the run (steps before it were applied)")
        return Record(out_spk, out_v, rec_spk if record != "output" else None,
                      rec_vs if record == "all" else None)

    def run_batch(self, samples, record_v: bool = True):
        """Run each sample (a list of Events with the same number of steps) from a fresh state, in
        parallel. Returns (out_spikes int8 (B, T, n_out), out_v (B, T, n_out) or None)."""
        samples = list(samples)
        if not samples:
            raise InputError("run_batch needs at least one sample")
        T = samples[0].n_steps
        if any(s.n_steps != T for s in samples):
            raise InputError("every sample of a batch must have the same number of steps; pad the short ones")
        idx = np.concatenate([s.idx for s in samples])
        base = np.cumsum([0] + [s.idx.size for s in samples[:-1]])
        ptr = np.stack([s.ptr + b for s, b in zip(samples, base)])
        B, n_out = len(samples), self.n_outputs
        out_spk = np.zeros((B, T, n_out), np.int8)
        out_v = np.zeros((B, T if record_v else 0, n_out), self.vs.dtype)
        status = np.zeros(B, np.int64)
        vs0, ist0 = self.program.new_state()
        kn.run_batch(*self._args, vs0, ist0, idx, ptr, out_spk, out_v, status)
        bad = np.flatnonzero(status != K.OK)
        if bad.size:
            b = int(bad[0])
            counts = np.diff(samples[b].ptr)
            self._raise_status(int(status[b]), samples[b].idx, f"sample {b} of the batch", int(counts.max()))
        return out_spk, (out_v if record_v else None)

    # ------------------------------------------------------------ errors
    def _raise_status(self, status, idx, where, n_events=None):
        if status == K.ERR_INPUT_COUNT:
            n = len(idx) if n_events is None else n_events
            limit = int(kn.max_events(self.program.ltab))
            raise InputError(f"{n} input events at {where}: at most {limit} fit one step of this network "
                             f"(docs/numerics.md, 'Saturation'); use a shorter dt or subsample the events")
        idx = np.asarray(idx)
        bad = idx[(idx < 0) | (idx >= self.n_inputs)]
        raise InputError(f"input index {int(bad[0]) if bad.size else '?'} is outside the network's "
                         f"{self.n_inputs} inputs (0..{self.n_inputs - 1}) at {where}; check the input "
                         f"shape or the downsampling")
