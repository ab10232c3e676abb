"""End to end over the device link: export a preset for qemu-mps2-an386, build it, flash it (QEMU starts
with its UART on TCP), upload a second model over the link, stream a real DVS Gesture recording
(downsampled to 2x32x32) and compare with the emulator at every step."""
from pathlib import Path

import numpy as np
import pytest

from edgesnn.model import presets
from edgesnn.model.quantize import quantize
from edgesnn.model.spec import Conv2d, Dense, Flatten, Network, Neuron, SumPool2d

from conftest import need

RECORDINGS = Path(__file__).resolve().parents[1] / "data" / "dvs_gesture"   # a copy of ../shared/data/dvs_gesture_10


def _small_gesture_net():
    """A second, smaller network on 2x16x16 DVS input (conv 3x3 stride 2 -> 8x8x8 LIF, sum pool, dense to
    11 leaky readouts): a few kilobytes to upload (QEMU's emulated UART moves some 10-25 kB/s) and cheap
    steps, so the whole recording streams in seconds."""
    rng = np.random.default_rng(5)
    lif = Neuron("lif", tau_mem=20e-3, threshold=1.0, reset="subtract")
    net = Network((2, 16, 16), [
        Conv2d(rng.normal(0.25, 0.2, (8, 2, 3, 3)), stride=2, padding=1, neuron=lif),
        SumPool2d(2, neuron=Neuron("if", threshold=2.0, reset="zero")),
        Flatten(),
        Dense(rng.normal(0, 0.4, (11, 128)), Neuron("li", tau_mem=50e-3)),
    ], dt=1e-3, name="gesture-small", seed=5)
    return quantize(net)


@pytest.fixture
def flashed(tmp_path):
    need("arm-none-eabi-gcc", "qemu-system-arm")
    from firmware_gen import export, flash

    first = quantize(presets.make("dvs-conv", seed=0))
    export.export_project(first, "qemu-mps2-an386", tmp_path / "fw")
    with flash.flash(tmp_path / "fw") as board:
        yield first, board


def test_flash_upload_stream_a_real_recording(flashed):
    from edgesnn.device import connect
    from firmware_gen.blob import model_hash_bytes
    from firmware_gen.linkverify import verify_link
    from edgesnn.streams.sources import AedatSource
    from firmware_gen.verify import bin_dvs

    first, board = flashed
    assert board.hash == model_hash_bytes(first).hex()
    second = _small_gesture_net()
    with connect(board.url) as dev:
        assert dev.info.name == "qemu-mps2-an386" and dev.info.model_hash == model_hash_bytes(first)
        digest = dev.upload(second)
        assert digest == model_hash_bytes(second) == dev.info.model_hash
    raw = np.concatenate(list(AedatSource(RECORDINGS / "5.aedat4").batches()))   # dv-processing's reader
    raw["t"] -= raw["t"][0]
    events = bin_dvs(raw, second.network.input_shape, second.network.dt, sensor=(128, 128))
    assert events.n_steps >= 1400 and events.idx.size > 50_000
    res = verify_link(second, board.url, events, chunk=500, upload=False)
    assert res["identical"], res["first_mismatch"]
    assert res["steps"] == events.n_steps and res["cycles"]["mean"] > 0
    # not a silent network: its hidden layer and readout move on this recording
    from edgesnn.simulator import Simulator
    rec = Simulator.fixed(second).run(events, record="spikes")
    assert rec.spikes.sum() > 1000 and np.ptp(rec.out_v) > 0
    # the device's own counters saw every step and every input event of the stream
    assert res["device_stats"]["steps"] >= events.n_steps


def test_the_link_sees_a_wrong_device(flashed, tmp_path):
    """verify over the link can say no: the board runs a firmware whose runtime was altered, the same
    model: the first difference is found and named."""
    need("arm-none-eabi-gcc", "qemu-system-arm")
    from firmware_gen import build, export, qemu
    from firmware_gen.linkverify import verify_link
    from firmware_gen.verify import load_input

    model = quantize(presets.make("w2"))
    proj = tmp_path / "bad"
    export.export_project(model, "qemu-mps2-an386", proj)
    # flash damaged under the same model hash: the first weights of input 0's row change sign
    src = proj / "model_data.c"
    lines = src.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if "esnn_model_wa[" in line) + 1
    lines[k] = "    " + " ".join(f"{-int(v)}," for v in lines[k].strip().rstrip(",").split(","))
    src.write_text("\n".join(lines) + "\n")
    rep = build.build_project(proj)
    events, _ = load_input("all", model, 100)
    with qemu.Session(rep["elf"], "qemu-mps2-an386", tcp=True) as s:
        res = verify_link(model, s.url, events, chunk=20)
    assert not res["identical"]
    m = res["first_mismatch"]
    assert m["what"] in ("spikes", "v", "i", "a") and m["emulator"] != m["device"]
    assert np.isscalar(m["step"])
