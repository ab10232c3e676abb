"""Data set readers and SPEC parsing (edgesnn.data): synthetic files with known content, clear errors, and a
smoke read of the real data when it is present."""
import wave
from pathlib import Path

import numpy as np
import pytest

from edgesnn.data import DataError, bin_events, open_dataset, parse_spec

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def bs2_bytes(events):
    """(x, y, p, t) -> the .bs2 layout: x 8 | y 8 | p 1 | t 23, big-endian."""
    out = bytearray()
    for x, y, p, t in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def write_nmnist(folder, samples):
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["file,label"]
    for i, (events, label) in enumerate(samples):
        (folder / f"{i}.bs2").write_bytes(bs2_bytes(events))
        rows.append(f"{i}.bs2,{label}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")


def test_parse_spec():
    assert parse_spec("nmnist:/a/b?split=train&val=100") == ("nmnist", "/a/b", {"split": "train", "val": "100"})
    assert parse_spec("fsdd:x") == ("fsdd", "x", {})
    with pytest.raises(DataError, match="unknown reader 'mnist'"):
        parse_spec("mnist:/a")
    with pytest.raises(DataError, match="no reader"):
        parse_spec("/just/a/path")
    with pytest.raises(DataError, match="bad option 'split'"):
        parse_spec("nmnist:/a?split")


def test_nmnist_reader_bins_and_pools(tmp_path):
    ev = [(0, 0, 0, 0), (33, 33, 1, 9_999), (2, 3, 1, 10_000), (3, 2, 0, 25_000), (1, 1, 0, 8_000_000)]
    write_nmnist(tmp_path, [(ev, 7), ([], 3)])
    ds = open_dataset(f"nmnist:{tmp_path}?bin_ms=10&steps=4&pool=2&val=0")
    assert ds.input_shape == (2, 17, 17) and ds.n_steps == 4 and ds.n_classes == 10
    (e0, lab0), (e1, lab1) = ds.samples
    assert (lab0, lab1) == (7, 3)
    steps = [sorted(e0.step(t).tolist()) for t in range(4)]
    hw = 17 * 17
    assert steps[0] == sorted([0, hw + 16 * 17 + 16])            # t = 0 and t = 9999 us share bin 0
    assert steps[1] == [hw + 1 * 17 + 1]                          # (2, 3) -> (1, 1), polarity 1
    assert steps[2] == [1 * 17 + 1]                               # (3, 2) -> (1, 1)
    assert steps[3] == []                                         # the late event is cropped
    assert e1.n_steps == 4 and e1.idx.size == 0                   # an empty recording: empty steps
    # split: the last `val` rows are the validation set
    assert len(open_dataset(f"nmnist:{tmp_path}?split=val&val=1").samples) == 1
    assert open_dataset(f"nmnist:{tmp_path}?split=train&val=1").samples[0][1] == 7


def test_bin_events_repeats_count():
    x = np.array([0, 1, 0]); y = np.array([0, 0, 1]); p = np.array([0, 0, 0]); t = np.array([0, 1, 2])
    e = bin_events(x, y, p, t, 2, 2, 2, 10, 1)
    assert e.step(0).tolist() == [0, 0, 0]     # three events in one pooled pixel: the index repeats


def test_nmnist_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        open_dataset(f"nmnist:{tmp_path}/missing")
    write_nmnist(tmp_path, [([(1, 1, 0, 5)] * 3, 2)])
    with pytest.raises(DataError, match="unknown option"):
        open_dataset(f"nmnist:{tmp_path}?bins=3")
    with pytest.raises(DataError, match="bin_ms='x' is not"):
        open_dataset(f"nmnist:{tmp_path}?bin_ms=x")
    with pytest.raises(DataError, match="out of range"):
        open_dataset(f"nmnist:{tmp_path}?steps=0")
    f = tmp_path / "0.bs2"
    f.write_bytes(f.read_bytes() + b"\x01\x02")       # truncated event after 3 good ones
    with pytest.raises(DataError, match=r"0.bs2.*byte offset 15"):
        open_dataset(f"nmnist:{tmp_path}?val=0")
    f.write_bytes(bs2_bytes([(1, 1, 0, 5), (40, 1, 0, 6)]))
    with pytest.raises(DataError, match=r"byte offset 5 has x=40"):
        open_dataset(f"nmnist:{tmp_path}?val=0")
    (tmp_path / "labels.csv").unlink()
    with pytest.raises(DataError, match="no labels.csv"):
        open_dataset(f"nmnist:{tmp_path}")


def write_wav(path, samples, rate=8000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, "<i2").tobytes())


def test_fsdd_reader_selects_speakers_and_indices(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 8000
    for d in (0, 1):
        for spk in ("ann", "bob"):
            for i in range(4):
                tone = (8000 * np.sin(2 * np.pi * (300 + 900 * d) * t)).astype(np.int16)
                write_wav(tmp_path / f"{d}_{spk}_{i}.wav", tone + rng.integers(-50, 50, t.size))
    (tmp_path / "README.md").write_text("not a recording")
    ds = open_dataset(f"fsdd:{tmp_path}?index=0-1&speakers=ann&steps=30")
    assert sorted(ds.ids) == ["0_ann_0.wav", "0_ann_1.wav", "1_ann_0.wav", "1_ann_1.wav"]
    assert set(ds.groups) == {"ann"} and ds.input_shape == (32,) and ds.n_steps == 30
    ds2 = open_dataset(f"fsdd:{tmp_path}?exclude=ann&index=2-3")
    assert set(ds2.groups) == {"bob"} and len(ds2.samples) == 4
    # level code: the low tone drives low channels, the high tone higher ones
    by_label = {}
    for ev, lab in ds.samples:
        counts = np.bincount(ev.idx, minlength=32)
        by_label.setdefault(lab, []).append(np.argmax(counts))
    assert np.mean(by_label[0]) < np.mean(by_label[1])
    delta = open_dataset(f"fsdd:{tmp_path}?index=0-0&speakers=bob&encode=delta")
    assert delta.input_shape == (64,) and delta.samples[0][0].idx.size > 0
    with pytest.raises(DataError, match="no recording"):
        open_dataset(f"fsdd:{tmp_path}?speakers=carl")
    with pytest.raises(DataError, match="index='9-3'"):
        open_dataset(f"fsdd:{tmp_path}?index=9-3")
    (tmp_path / "0_ann_0.wav").write_bytes(b"RIFF1234garbage")
    with pytest.raises(DataError, match="0_ann_0.wav"):
        open_dataset(f"fsdd:{tmp_path}?index=0-0")


def test_dvsgesture_reader_parts(tmp_path):
    ev = [(0, 0, 0, 1000), (127, 127, 1, 500_000), (64, 64, 0, 999_000)]
    (tmp_path / "1.bs2").write_bytes(bs2_bytes(ev))
    (tmp_path / "labels.csv").write_text("file,class_id_1based,class_index_0based,class_name\n1.bs2,1,0,clap\n")
    ds = open_dataset(f"dvsgesture:{tmp_path}?bin_ms=100&steps=10&pool=4")
    assert ds.input_shape == (2, 32, 32) and ds.samples[0][1] == 0 and ds.samples[0][0].idx.size == 3
    head = open_dataset(f"dvsgesture:{tmp_path}?bin_ms=100&steps=10&part=head&frac=0.5")
    tail = open_dataset(f"dvsgesture:{tmp_path}?bin_ms=100&steps=10&part=tail&frac=0.5")
    assert head.samples[0][0].idx.size == 1 and tail.samples[0][0].idx.size == 2


@pytest.mark.skipif(not (DATA / "nmnist_small" / "labels.csv").is_file(), reason="shared data absent")
def test_real_data_smoke():
    ds = open_dataset(f"nmnist:{DATA / 'nmnist_small'}?split=val&limit=5")
    assert len(ds.samples) == 5 and all(ev.idx.size > 100 for ev, _ in ds.samples)
    fs = open_dataset(f"fsdd:{DATA / 'fsdd'}?speakers=george&index=0-0")
    assert len(fs.samples) == 10 and sorted(fs.labels.tolist()) == list(range(10))
    g = open_dataset(f"dvsgesture:{DATA / 'dvs_gesture_10'}")
    assert len(g.samples) == 10 and sorted(g.labels.tolist()) == list(range(10))
