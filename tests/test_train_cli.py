"""`edgesnn train` and `edgesnn eval` end to end on real FSDD recordings (one speaker, small network),
and their refusals of bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgesnn.model import modelfile

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"

pytestmark = pytest.mark.skipif(not FSDD.is_dir(), reason="no FSDD recordings in ../shared/data")


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "edgesnn", *map(str, args)], capture_output=True, text=True,
                           timeout=timeout, check=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The trainer's defaults for FSDD (front-end options, trial-mode readout), on one speaker's recordings
    5-49, with 2 epochs and 256 hidden neurons to stay fast."""
    out = tmp_path_factory.mktemp("train") / "theo.esnn"
    r = cli("train", "--data", f"fsdd:{FSDD}?speakers=theo&index=5-49", "--val", f"fsdd:{FSDD}?speakers=theo&index=0-4",
            "--rule", "readout", "--out", out, "--epochs", 2, "--hidden", 256, "--json")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def test_train_writes_a_model_its_sidecar_and_a_report(trained):
    out, rep = trained
    assert rep["model"] == str(out) and rep["rule"] == "readout" and rep["epochs"] == 2 and rep["hidden"] == 256
    assert len(rep["history"]) == 2 and rep["train"]["n"] == 450 and rep["val"]["n"] == 50
    # the trainer's front-end defaults are recorded for eval and for live audio
    side = json.loads(Path(str(out) + ".data.json").read_text())
    assert side["reader"] == "fsdd" and side["options"]["delays"] == "0,4,8,12" and side["options"]["norm"] == "peak"
    model = modelfile.load(out)
    assert tuple(model.network.input_shape) == (128,) and model.layers[-1].weight.shape == (10, 256)
    assert rep["hash"] == modelfile.model_hash(model)
    # it learned: one speaker's held-out digits, well above chance (0.1); measured 0.93 and 0.96
    assert rep["train"]["accuracy_fixed"] >= 0.8 and rep["val"]["accuracy_fixed"] >= 0.6, rep


def test_eval_prints_the_accuracy_as_its_last_line(trained):
    out, rep = trained
    r = cli("eval", out, "--data", f"fsdd:{FSDD}?speakers=theo&index=0-4", "--float")
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last == {"accuracy": rep["val"]["accuracy_fixed"], "n": 50}     # the sidecar gave the front-end
    assert "float twin" in r.stdout


@pytest.mark.parametrize("args,message", [
    (("--data", "wav:/nowhere", "--rule", "readout"), "wav"),
    (("--data", f"fsdd:{FSDD}/missing", "--rule", "readout"), "missing"),
    (("--data", f"fsdd:{FSDD}?speakers=nobody", "--rule", "readout"), "nobody"),
    (("--data", f"fsdd:{FSDD}?channels=500", "--rule", "readout"), "channels"),
    (("--data", f"fsdd:{FSDD}", "--rule", "backprop"), "backprop"),
])
def test_train_refuses_bad_input_with_a_message(tmp_path, args, message):
    out = tmp_path / "m.esnn"
    r = cli("train", *args, "--out", out, timeout=120)
    assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()


def test_eval_refuses_data_the_model_does_not_take(trained):
    out, _ = trained
    r = cli("eval", out, "--data", f"fsdd:{FSDD}?speakers=theo&index=0-1&delays=0", timeout=120)
    assert r.returncode != 0 and "the model takes input (128,)" in r.stderr and "Traceback" not in r.stderr
