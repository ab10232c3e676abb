"""`edgesnn demo --fast --json` end to end: training on the bundled recordings, a real dv-processing
network stream on loopback from a child process, the fixed-point emulator, the summary line."""
import json
import subprocess
import sys


def test_demo_fast_json_end_to_end():
    out = subprocess.run([sys.executable, "-m", "edgesnn", "demo", "--fast", "--json"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    summary = lines[-1]
    assert set(summary) == {"detections", "accuracy", "realtime_factor", "latency_p99_ms", "dropped_events"}
    dets = lines[:-1]
    assert summary["detections"] == len(dets) >= 60          # ~99 windows of activity in 19 s
    held = [d for d in dets if d["part"] == "held-out"]
    assert len(held) >= 30
    assert summary["accuracy"] >= 0.7                           # measured 0.92 (chance 0.1)
    assert summary["dropped_events"] == 0                       # --fast does not drop
    assert all(0 <= d["class"] < 10 and 0 <= d["confidence"] <= 1 for d in dets)
    assert all(0 < d["t"] <= 19.0 + 1e-9 for d in dets)


def test_demo_data_is_bundled_and_a_missing_folder_is_said_clearly(tmp_path, monkeypatch):
    import pytest

    from edgesnn.errors import InputError
    from edgesnn.streams import demo

    d = demo.data_dir()
    assert (d / "README.md").read_text().count("CC BY 4.0") >= 1
    assert len(demo.segments(d)) == 10 and demo.class_names(d)[3] == "right_arm_clockwise"
    monkeypatch.setenv("EDGESNN_DATA", str(tmp_path))
    monkeypatch.setattr(demo, "__file__", str(tmp_path / "x" / "y" / "demo.py"))
    with pytest.raises(InputError, match="recordings were not found"):
        demo.data_dir()


def test_replay_refuses_bad_files(tmp_path):
    bad = tmp_path / "x.bs2"
    bad.write_bytes(b"123")
    for path in (bad, tmp_path / "absent.aedat4", tmp_path / "movie.mp4"):
        out = subprocess.run([sys.executable, "-m", "edgesnn", "replay", str(path), "--listen", "127.0.0.1:1"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "error" in out.stderr
