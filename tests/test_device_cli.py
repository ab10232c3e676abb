"""`edgesnn run --device URL` and `edgesnn verify --port URL` against an emulated device served by
`edgesnn emulate` in another process (a real TCP link on loopback)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgesnn.cli import main
from edgesnn.model import modelfile, presets
from edgesnn.model.quantize import quantize

DATA = Path(__file__).resolve().parents[1] / "data" / "dvs_gesture"


def _save(tmp_path, preset, seed=0):
    path = tmp_path / f"{preset}-{seed}.esnn"
    modelfile.save(quantize(presets.make(preset, seed=seed)), path)
    return path


@pytest.fixture
def serve():
    procs = []

    def start(model_path, *extra):
        proc = subprocess.Popen([sys.executable, "-m", "edgesnn", "emulate", str(model_path), "--listen",
                                 "tcp://127.0.0.1:0", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        procs.append(proc)
        url = proc.stdout.readline().strip()
        assert url.startswith("socket://127.0.0.1:"), proc.stderr.read()
        return url
    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)
        for f in (p.stdout, p.stderr):
            f.close()


def _decisions(capsys):
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    return lines[:-1], lines[-1]


def test_run_on_a_device_decides_as_the_emulator(tmp_path, serve, capsys):
    """The device starts with another model (seed 1): `run` uploads the right one, then every decision
    equals the emulator's."""
    model = _save(tmp_path, "dvs-conv")
    url = serve(_save(tmp_path, "dvs-conv", seed=1))
    args = ["run", "--source", str(DATA / "3.aedat4"), "--model", str(model), "--json", "--min-events", "1",
            "--window", "50", "--max-steps", "600"]
    capsys.readouterr()
    assert main(args) == 0
    emu, emu_sum = _decisions(capsys)
    assert main(args + ["--device", url]) == 0
    dev, dev_sum = _decisions(capsys)
    assert len(emu) >= 10 and dev == emu
    assert dev_sum["steps"] == emu_sum["steps"] and dev_sum["events_in"] == emu_sum["events_in"]
    assert dev_sum["spikes_per_layer"][-1] == emu_sum["spikes_per_layer"][-1]
    assert dev_sum["spikes_per_layer"][0] is None          # hidden layers do not cross the link


def test_verify_over_the_link(tmp_path, serve, capsys):
    w2 = _save(tmp_path, "w2")
    url = serve(w2)
    capsys.readouterr()
    assert main(["verify", str(w2), "--port", url, "--input", "random:0.1", "--steps", "250", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["identical"] and res["steps"] == 250 and res["device"] == "emulator"
    assert res["first_mismatch"] is None and "instructions_per_step" in res
    assert res["device_stats"]["steps"] >= 250
    # the edges: no input at all, every input active
    for spec in ("empty", "all"):
        assert main(["verify", str(w2), "--port", url, "--input", spec, "--steps", "60", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["identical"]


def test_a_device_without_upload_running_another_model_is_refused(tmp_path, serve, capsys):
    url = serve(_save(tmp_path, "w2", seed=1), "--upload-capacity", "0")
    model = _save(tmp_path, "w2")
    assert main(["verify", str(model), "--port", url, "--input", "random:0.1"]) == 2
    err = capsys.readouterr().err
    assert "runs model" in err and "flash the model" in err


def test_verify_needs_a_device_or_a_port(tmp_path, capsys):
    assert main(["verify", str(_save(tmp_path, "w2")), "--input", "empty"]) == 2
    assert "--device PROFILE" in capsys.readouterr().err
