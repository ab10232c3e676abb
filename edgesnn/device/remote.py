"""A board behind the device link with the emulator's ``run`` interface, so that the stream pipeline
(`edgesnn run --device URL`) drives a device exactly as it drives the emulator.

    with connect("socket://127.0.0.1:5555") as dev:
        sim = RemoteSimulator(dev, model)          # uploads the model when the board runs another one
        rec = sim.run(events)                      # out_spikes and out_v, as Simulator.run records them

Only the output layer crosses the link: ``Record.spikes`` and ``Record.state`` are None.
"""
from __future__ import annotations

import numpy as np

from edgesnn.errors import InputError
from edgesnn.model.program import build_fixed
from edgesnn.simulator import Record, Simulator

from . import protocol as P


def ensure_model(device, model, upload: bool = True, say=None) -> P.Info:
    """Make ``device`` run ``model``: nothing to do when its hash matches, else upload it (when allowed
    and the device accepts uploads). Returns the device's info."""
    from firmware_gen.blob import model_hash_bytes

    info = device.info
    want = model_hash_bytes(model)
    if info.model_hash == want:
        return info
    if not upload or not info.has(P.Cap.UPLOAD):
        raise InputError(f"{device.url} runs model {info.hash_hex[:16]}…, not {want.hex()[:16]}… "
                         f"({model.network.name}); flash the model (`edgesnn export` / `flash`) or "
                         f"use a device that accepts uploads")
    if say:
        say(f"{device.url} runs model {info.hash_hex[:16]}…; uploading {model.network.name} "
            f"({want.hex()[:16]}…)")
    device.upload(model)
    return device.info


class RemoteSimulator:
    """Runs steps on ``device`` (an edgesnn.device.Device) for ``model`` (a FixedModel)."""

    def __init__(self, device, model, upload: bool = True, say=None):
        self.device = device
        self.program = build_fixed(model)
        local = Simulator(self.program)
        self.layer_base, self.n_inputs, self.n_outputs = local.layer_base, local.n_inputs, local.n_outputs
        self.readout = ensure_model(device, model, upload, say).has(P.Cap.READOUT)
        device.reset()
        self.steps = 0

    def reset(self):
        self.device.reset()
        self.steps = 0

    def run(self, events, record: str = "output") -> Record:
        """Run every step of ``events`` (an edgesnn.simulator.Events) on the device."""
        T, n_out = events.n_steps, self.n_outputs
        res = self.device.run([events.step(t) for t in range(T)], spikes=True, readout=self.readout)
        out_spk = np.zeros((T, n_out), np.int8)
        for t, s in enumerate(res.spikes):
            out_spk[t, s] = 1
        out_v = res.v if self.readout else np.zeros((T, n_out), np.int32)
        self.steps += T
        return Record(out_spk, out_v, None, None)
