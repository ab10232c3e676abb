"""`edgesnn verify MODEL --port URL`: a board running the application firmware, checked over the device
link against the emulator, step by step.

    res = verify_link(model, "socket://127.0.0.1:5555", events)    # or /dev/ttyACM0, a pty path

The board runs the model (uploaded first when it runs another one and accepts uploads), from a reset
state, on the same events as edgesnn.simulator.Simulator.fixed. Compared at every step: the output
layer's spike list and its membrane values (STEP with readout); after every chunk of steps: every v, i
and a of every layer (READ_STATE). Works with any board the link reaches, real or emulated; unlike the
verify firmware (verify.py) it needs no rebuild per input, but it sees hidden layers only at the end of
each chunk.
"""
from __future__ import annotations

import numpy as np

from edgesnn.errors import EdgeSNNError
from edgesnn.kernels import layout as K
from edgesnn.simulator import Events, Simulator

FIELDS = (("v", K.L_V_OFF), ("i", K.L_I_OFF), ("a", K.L_A_OFF))


class LinkVerifyError(EdgeSNNError):
    """The board cannot be verified (another model and no upload, a missing capability)."""


def _first_difference(a, b):
    bad = np.flatnonzero(np.asarray(a) != np.asarray(b))
    return int(bad[0]) if bad.size else None


def _state_difference(dev, sim, step):
    """The first v, i or a word of any layer where the board and the emulator differ, or None."""
    ltab = sim.program.ltab
    for layer in range(sim.program.n_layers):
        n = int(ltab[layer, K.L_N_OUT])
        for name, col in FIELDS:
            off = int(ltab[layer, col])
            if off < 0 or n == 0:
                continue
            mine = sim.vs[off:off + n]
            theirs = dev.read_state(layer, name)
            k = _first_difference(theirs, mine) if theirs.size == n else 0
            if theirs.size != n:
                return {"step": step, "layer": layer, "what": name, "neuron": None,
                        "emulator": f"{n} values", "device": f"{theirs.size} values"}
            if k is not None:
                return {"step": step, "layer": layer, "what": name, "neuron": k,
                        "emulator": int(mine[k]), "device": int(theirs[k])}
    return None


def verify_link(model, url: str, events: Events, chunk: int = 100, upload: bool = True, progress=None,
                timeout: float = 10.0) -> dict:
    """Run ``events`` on the board at ``url`` and on the emulator; compare (see the module doc)."""
    from edgesnn.device import connect
    from edgesnn.device import protocol as P
    from edgesnn.device.remote import ensure_model

    say = progress or (lambda msg: None)
    with connect(url, timeout=timeout) as dev:
        info = ensure_model(dev, model, upload, say)
        for cap in (P.Cap.READOUT, P.Cap.READ_STATE):
            if not info.has(cap):
                raise LinkVerifyError(f"{url} ({info.name}) lacks the {cap.name} capability that verify needs")
        cycles = info.has(P.Cap.CYCLES)
        dev.reset()
        sim = Simulator.fixed(model)
        T = events.n_steps
        ticks = []
        mismatch = _state_difference(dev, sim, -1)     # the reset state, before any step
        done = 0
        while mismatch is None and done < T:
            end = min(T, done + chunk)
            steps = [events.step(t) for t in range(done, end)]
            got = dev.run(steps, spikes=True, readout=True, cycles=cycles)
            for k, x in enumerate(steps):
                want = sim.step(x)
                t = done + k
                if not np.array_equal(got[k].spikes, want):
                    mismatch = {"step": t, "layer": sim.program.n_layers - 1, "what": "spikes", "neuron": None,
                                "emulator": want.tolist(), "device": got[k].spikes.tolist()}
                    break
                j = _first_difference(got[k].v, sim.v())
                if j is not None:
                    mismatch = {"step": t, "layer": sim.program.n_layers - 1, "what": "v", "neuron": j,
                                "emulator": int(sim.v()[j]), "device": int(got[k].v[j])}
                    break
                if cycles:
                    ticks.append(got[k].cycles)
            else:
                done = end
                mismatch = _state_difference(dev, sim, done - 1)
                say(f"{done}/{T} steps identical")
        stats = dev.stats()
    cyc = np.asarray(ticks, np.float64)
    return {
        "identical": mismatch is None,
        "steps": done,
        "first_mismatch": mismatch,
        "device": info.name, "url": url, "hash": info.hash_hex,
        # instructions are counted only under QEMU -icount (verify --device); a board gives its cycle counter
        "instructions_per_step": None,
        "cycles": ({"mean": float(cyc.mean()), "min": float(cyc.min()), "max": float(cyc.max()),
                    "clock_hz": info.clock_hz} if cyc.size else None),
        "device_stats": {"steps": stats.steps, "synaptic_ops": stats.synaptic_ops, "frames_refused": stats.frames_refused},
        "input_events": int(events.idx.size),
        "checked": f"output spikes and membrane every step; every v, i, a after every {chunk} steps",
    }
