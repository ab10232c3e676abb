"""Data set readers and SPEC parsing (edgesnn.data): synthetic files with known content, clear errors, and a
smoke read of the real data when it is present."""
import wave
from pathlib import Path

import numpy as np
import pytest

from edgesnn.data import DataError, bin_events, open_dataset, parse_spec, peak_levels

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


def test_peak_levels_by_hand():
    # m_t = max_c env, p_t = max(m_t, p_{t-1} - release), level = max(0, env - (p_t - range)) >> shift if m_t >= gate
    env = np.array([[100, 60, 0], [40, 90, 10], [10, 20, 30], [200, 150, 170]])
    out = peak_levels(env, 1, 50, 4, 35)
    # t0: p=100, base 50 -> (50, 10, 0) >> 1; t1: p=max(90, 96)=96, base 46 -> (0, 44, 0) >> 1
    # t2: m=30 < gate 35 -> silent (p=92 still falls); t3: p=200, base 150 -> (50, 0, 20) >> 1
    assert out.tolist() == [[25, 5, 0], [0, 22, 0], [0, 0, 0], [25, 0, 10]]
    assert not peak_levels(env, 0, 0, 0, 0).any()                    # range 0: nothing above the peak
    # release: a slow peak (0 per step) holds 100 over t1, t2; a fast one (100 per step) follows the frame max
    assert peak_levels(env, 0, 10, 0, 0).tolist() == [[10, 0, 0], [0, 0, 0], [0, 0, 0], [10, 0, 0]]
    assert peak_levels(env, 0, 10, 100, 0).tolist() == [[10, 0, 0], [0, 10, 0], [0, 0, 10], [10, 0, 0]]
    assert not peak_levels(np.zeros((3, 2), np.int64), 3, 96, 4, 0).any()   # silence: no event, even ungated
    # the base never goes below 0: a quiet frame under a low peak counts from 0
    assert peak_levels(np.array([[40, 8]]), 2, 96, 4, 0).tolist() == [[10, 2]]


def test_fsdd_peak_norm_is_gain_invariant(tmp_path):
    rng = np.random.default_rng(1)
    t = np.arange(4000) / 8000
    word = np.sin(2 * np.pi * 400 * t) * np.minimum(1, 8 * t) + 0.5 * np.sin(2 * np.pi * 1500 * t) * (t > 0.25)
    noise = rng.normal(0, 1, t.size)
    for i, gain in enumerate((16000, 2000)):   # the same word 18 dB quieter
        write_wav(tmp_path / f"3_ann_{i}.wav", np.round(gain * (word + 0.002 * noise) / 1.5))
    def counts(q):
        ds = open_dataset(f"fsdd:{tmp_path}?steps=50&{q}")
        return [np.bincount(ev.idx, minlength=ds.input_shape[0]).astype(float) for ev, _ in ds.samples]
    loud, quiet = counts("norm=fixed")
    assert quiet.sum() < 0.7 * loud.sum()                 # the fixed floor sees the gain
    loud, quiet = counts("norm=peak&env_shift=7&gate=100")
    assert abs(quiet.sum() - loud.sum()) < 0.05 * loud.sum()   # the running peak does not
    assert np.corrcoef(loud, quiet)[0, 1] > 0.98
    ds = open_dataset(f"fsdd:{tmp_path}?norm=peak&env_shift=7&gate=100&peak_range=64&peak_release=2&delays=0,4")
    assert ds.options["norm"] == "peak" and ds.options["env_shift"] == 7 and ds.options["gate"] == 100
    assert ds.options["peak_range"] == 64 and ds.options["peak_release"] == 2 and ds.input_shape == (64,)
    # a gate above every frame silences everything; a wide range gives more events than a narrow one
    assert all(ev.idx.size == 0 for ev, _ in open_dataset(f"fsdd:{tmp_path}?norm=peak&gate=1024").samples)
    wide = open_dataset(f"fsdd:{tmp_path}?norm=peak&peak_range=128").samples[0][0].idx.size
    narrow = open_dataset(f"fsdd:{tmp_path}?norm=peak&peak_range=32").samples[0][0].idx.size
    assert wide > narrow > 0
    # env_shift reaches the front-end: a slower envelope changes the code
    a = open_dataset(f"fsdd:{tmp_path}?env_shift=5").samples[0][0].idx
    b = open_dataset(f"fsdd:{tmp_path}?env_shift=9").samples[0][0].idx
    assert a.size != b.size or not np.array_equal(a, b)
    # the default (no norm option) is the fixed floor, as before
    assert np.array_equal(open_dataset(f"fsdd:{tmp_path}").samples[0][0].idx,
                          open_dataset(f"fsdd:{tmp_path}?norm=fixed&env_shift=5").samples[0][0].idx)
    assert "norm" not in open_dataset(f"fsdd:{tmp_path}").options


@pytest.mark.parametrize("q, msg", [
    ("norm=agc", "norm='agc' is out of range"), ("env_shift=0", "env_shift='0' is out of range"),
    ("env_shift=17", "env_shift='17' is out of range"), ("env_shift=x", "env_shift='x' is not"),
    ("peak_range=-1", "peak_range='-1' is out of range"), ("peak_range=1025", "peak_range='1025' is out of range"),
    ("peak_release=-1", "peak_release='-1' is out of range"), ("peak_release=2000", "out of range"),
    ("gate=-5", "gate='-5' is out of range"), ("gate=1025", "gate='1025' is out of range"), ("gate=1.5", "is not"),
    ("norm=peak&encode=delta", "norm=peak applies to the level code only"),
])
def test_fsdd_norm_options_refused(tmp_path, q, msg):
    write_wav(tmp_path / "0_ann_0.wav", np.zeros(800, np.int16))
    with pytest.raises(DataError, match=msg):
        open_dataset(f"fsdd:{tmp_path}?{q}")


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
