"""On-device adaptation (`edgesnn adapt`, edgesnn.learning.adapt) on the real DVS Gesture recordings: the
windows it cuts, learning through the device link on an emulated device and on the app firmware under
QEMU (weights and decisions equal to the fixed-point Learner's), the learner's configuration in the LEARN
status, and the refusals."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import emulate_cli, need
from edgesnn.data import DataError, bin_events, read_bs2_checked
from edgesnn.device import protocol as P
from edgesnn.device.client import connect
from edgesnn.device.emulated import EmulatedDevice
from edgesnn.errors import InputError, ModelError
from edgesnn.learning import Learner
from edgesnn.learning.adapt import adapt, gesture_windows
from edgesnn.model import modelfile, presets
from edgesnn.model.quantize import quantize
from netgen import plastic_network

GESTURES = Path(__file__).resolve().parents[2] / "shared" / "data" / "dvs_gesture_10"
OPTS = {"center": 6}


@pytest.fixture(scope="module")
def windows():
    if not GESTURES.is_dir():
        pytest.skip("no DVS Gesture recordings")
    return gesture_windows(f"dvsgesture:{GESTURES}")


@pytest.fixture(scope="module")
def model():
    return quantize(presets.make("dvs-adapt", seed=0))


def test_windows_are_cut_as_specified(windows):
    # 1.45 s recordings: windows at 0, 50, ..., 800 ms to learn from, 900..1300 ms to classify
    assert len(windows.train) == 10 * 17 and len(windows.test) == 10 * 5
    assert [s for r, s in windows.test_ids[:5]] == [900, 1000, 1100, 1200, 1300]
    assert windows.input_shape == (2, 32, 32) and windows.dt == pytest.approx(0.01)
    x, y, p, t = read_bs2_checked(GESTURES / "1.bs2", 128, 128)
    t0 = int(t.min())
    for ev, start in ((windows.train[1][0], 50), (windows.test[2][0], 1100)):
        full = bin_events(x, y, p, t, 128, 128, 4, 10_000, 10, t0=t0 + start * 1000)
        assert ev.n_steps == 10
        for s in range(10):
            assert np.array_equal(ev.step(s), np.unique(full.step(s)))     # binary: each active input once
    assert {lab for _, lab in windows.train} == set(range(10))
    every = gesture_windows(f"dvsgesture:{GESTURES}?binary=0", learn_ms=200, stride_ms=100)
    assert len(every.train) == 10 * 2 and len(every.test) == 10 * 12
    full = bin_events(x, y, p, t, 128, 128, 4, 10_000, 10, t0=t0 + 100_000)
    assert np.array_equal(every.train[1][0].idx, full.idx) and np.array_equal(every.train[1][0].ptr, full.ptr)


@pytest.mark.parametrize("spec,kw,match", [
    ("nmnist:{d}", {}, "not 'nmnist'"),
    ("dvsgesture:{d}?binary=2", {}, "binary"),
    ("dvsgesture:{d}?steps=5", {}, "unknown option"),
    ("dvsgesture:{d}", {"learn_ms": 905}, "--learn-ms 905: a positive multiple of the 10 ms bins"),
    ("dvsgesture:{d}", {"window_ms": 0}, "--window-ms 0"),
    ("dvsgesture:{d}", {"window_ms": 1000, "learn_ms": 500}, "longer than --learn-ms"),
    ("dvsgesture:{d}", {"learn_ms": 1400}, "shorter than --learn-ms 1400"),
])
def test_bad_windows_are_refused(windows, spec, kw, match):
    with pytest.raises((DataError, InputError), match=match):
        gesture_windows(spec.format(d=GESTURES), **kw)


def test_learn_status_carries_the_learners_configuration(model):
    lr = Learner(model, "readout", mode="fixed", center=6)
    dev = EmulatedDevice(model, learn_rule="readout", learn_options=OPTS)
    with dev.serve_tcp() as srv, connect(srv.url) as d:
        st = d.learn_status()
    assert [w % 2**32 for w in st.config] == [w % 2**32 for w in lr.config()]
    assert P.unpack_learn_status(P.pack_learn_status(st)) == st
    twin = Learner.for_config(model, st.config)
    assert twin.center == 6 and twin.rule == "readout"
    other = quantize(presets.make("dvs-adapt", seed=1))        # another seed: another learner
    with pytest.raises(ModelError, match="seed 0 .here 1."):
        Learner.for_config(other, st.config)
    with pytest.raises(ModelError, match="17 words"):
        Learner.for_config(model, st.config[:16])


def test_emulated_device_adapts_to_gestures(windows, model):
    """The whole protocol of the issue on an emulated device: >= 90 % of the held-out windows, weights and
    decisions equal to the twin's."""
    dev = EmulatedDevice(model, learn_rule="readout", learn_options=OPTS)
    with dev.serve_tcp() as srv, connect(srv.url) as d:
        rep = adapt(d, model, windows, epochs=4)
        assert rep["weights_equal"] and rep["decisions_equal"], rep
        assert rep["accuracy"] >= 0.9, rep
        assert rep["n"] == 50 and rep["learning_steps"] == 4 * 170 * 10
        assert sum(r["correct"] for r in rep["per_recording"].values()) == round(50 * rep["accuracy"])
        assert np.count_nonzero(d.read_weights(2)) > 0.5 * 11 * 2048     # learned from a zero readout
        # the device has learned: a twin cannot follow it any more, without the twin it goes on
        with pytest.raises(InputError, match="no-twin"):
            adapt(d, model, windows, epochs=1)
        small = gesture_windows(f"dvsgesture:{GESTURES}", learn_ms=100)
        rep2 = adapt(d, model, small, epochs=1, eta_shift=31, twin=False)
        assert "weights_equal" not in rep2 and rep2["eta_shift"] == {"2": 31}


def test_trial_mode_adapts_with_its_twin(model):
    """A trial-mode readout (one update per window, applied at the next LEARN RESET): after the training
    windows the device's weights equal the twin's, so the last window's update was applied too."""
    small = gesture_windows(f"dvsgesture:{GESTURES}", learn_ms=300)
    dev = EmulatedDevice(model, learn_rule="readout", learn_options={"center": 6, "trial": 3})
    with dev.serve_tcp() as srv, connect(srv.url) as d:
        rep = adapt(d, model, small, epochs=1)
        assert rep["weights_equal"] and rep["decisions_equal"], rep
        assert np.count_nonzero(d.read_weights(2)) > 0.25 * 11 * 2048     # learned from a zero readout
        assert d.learn_status().config[-1] == 3


def test_refusals(windows, model):
    other = quantize(presets.make("dvs-adapt", seed=3))
    with EmulatedDevice(other, learn_rule="readout").serve_tcp() as srv, connect(srv.url) as d:
        with pytest.raises(InputError, match="runs model .* not .*flash firmware exported"):
            adapt(d, model, windows)
    with EmulatedDevice(model).serve_tcp() as srv, connect(srv.url) as d:
        with pytest.raises(InputError, match="without learning; export it with .*--learn RULE"):
            adapt(d, model, windows)
    small = plastic_network()
    with EmulatedDevice(small, learn_rule="readout").serve_tcp() as srv, connect(srv.url) as d:
        with pytest.raises(InputError, match="takes input .* pool="):
            adapt(d, small, windows)


def test_cli_adapt_against_edgesnn_emulate(tmp_path, windows, model):
    path = tmp_path / "a.esnn"
    modelfile.save(model, path)
    with emulate_cli(path, "--learn", "readout", "--learn-center", "6") as url:
        out = subprocess.run([sys.executable, "-m", "edgesnn", "adapt", str(path), "--port", url, "--data",
                              f"dvsgesture:{GESTURES}", "--learn-ms", "300", "--epochs", "1", "--quiet"],
                             capture_output=True, text=True, timeout=300, check=False)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.strip().splitlines()
        last = json.loads(lines[-1])
        assert set(last) == {"accuracy", "n"} and last["n"] == 10 * 11
        assert "weights equal the emulator's, decisions equal" in lines[0]
        bad = subprocess.run([sys.executable, "-m", "edgesnn", "adapt", str(path), "--port", url, "--data",
                              f"dvsgesture:{GESTURES}", "--epochs", "0"], capture_output=True, text=True,
                             timeout=60, check=False)
        assert bad.returncode == 2 and "--epochs 0" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "edgesnn", "emulate", str(path), "--listen", "tcp://127.0.0.1:0",
                          "--learn-center", "6"], capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "--learn-center needs --learn" in bad.stderr


def test_qemu_board_adapts_as_the_emulator(tmp_path, windows, model):
    """The app firmware of dvs-adapt with the readout rule on an emulated Cortex-M4 (mps2-an386), driven
    over its UART on TCP: after learning, READ_WEIGHTS equals the fixed-point Learner's and every decision
    (the summed readout membrane of each held-out window) equals the emulator's. A short run: the QEMU UART
    moves 12-40 kB/s (the full protocol: docs/learning.md, `edgesnn adapt`)."""
    need("arm-none-eabi-gcc", "arm-none-eabi-size", "make", "qemu-system-arm")
    from firmware_gen import build, export, qemu
    board = "qemu-mps2-an386"
    export.export_project(model, board, tmp_path / "fw", learn_rule="readout", learn_options=OPTS)
    rep = build.build_project(tmp_path / "fw")
    assert rep["fits"], rep
    data = gesture_windows(f"dvsgesture:{GESTURES}", learn_ms=150)
    first = [i for i, (_, start) in enumerate(data.test_ids) if start == 150]     # one per recording
    data.test, data.test_ids = [data.test[i] for i in first], [data.test_ids[i] for i in first]
    with qemu.Session(rep["elf"], board, tcp=True) as s, connect(s.url, timeout=20) as d:
        assert d.info.has(P.Cap.LEARN) and d.info.has(P.Cap.CYCLES)
        out = adapt(d, model, data, epochs=1)
    assert out["weights_equal"] and out["decisions_equal"], out
    assert out["n"] == 10 and out["learning_steps"] == 10 * 2 * 10
    cyc = out["cycles_per_step"]
    learn_i = qemu.instructions(cyc["learning"]["mean"], board)
    infer_i = qemu.instructions(cyc["inference"]["mean"], board)
    print(f"\n{board} dvs-adapt readout rule (centred): {learn_i:,.0f} instructions per learning step, "
          f"{infer_i:,.0f} per inference step")
    assert learn_i > infer_i > 0


def test_cli_export_learn(tmp_path, model):
    path = tmp_path / "a.esnn"
    modelfile.save(model, path)
    run = [sys.executable, "-m", "edgesnn", "export", str(path), "--device", "qemu-mps2-an386"]
    ok = subprocess.run(run + ["--out", str(tmp_path / "fw"), "--learn", "readout", "--learn-center", "6", "--json"],
                        capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    meta = json.loads((tmp_path / "fw" / "project.json").read_text())
    assert meta["learn"]["rule"] == "readout" and meta["learn"]["options"] == {"center": 6}
    cfg = (tmp_path / "fw" / "board" / "board_config.h").read_text()
    from firmware_gen.export import app_learn
    line = "#define APP_LEARN_CONFIG {{ {} }}"
    assert line.format(", ".join(app_learn(model, "readout", {"center": 6})["config"])) in cfg
    assert line.format(", ".join(app_learn(model, "readout")["config"])) not in cfg      # the option arrived
    plain = tmp_path / "w2.esnn"
    modelfile.save(quantize(presets.make("w2")), plain)
    for src, extra, msg in ((path, ["--learn-center", "6"], "--learn-center needs --learn RULE"),
                            (path, ["--learn", "nope"], "unknown learning rule 'nope'"),
                            (plain, ["--learn", "readout"], "no plastic layer learns")):
        bad = subprocess.run([sys.executable, "-m", "edgesnn", "export", str(src), "--device", "qemu-mps2-an386",
                              "--out", str(tmp_path / "bad"), *extra], capture_output=True, text=True,
                             timeout=120, check=False)
        assert bad.returncode == 2 and msg in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
