"""Sources, transforms, the binner, the real-time loop and `edgesnn run` / `edgesnn replay`, on the bundled
real DVS Gesture recordings (data/dvs_gesture) and dv-processing's real reader, writer and network stream."""
import io
import json
import math
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesnn.cli import main
from edgesnn.errors import InputError
from edgesnn.streams.runner import Binner, LatencyHistogram, StreamRunner, WindowDecider
from edgesnn.streams.sources import (EVENT_DTYPE, AedatSource, ArraySource, CameraSource, PcmSource,
                                     SourceError, WavSource, open_source, read_bs2)
from edgesnn.streams.transforms import Crop, Downsample, DvFilter, InputMap, Refractory

DATA = Path(__file__).resolve().parents[1] / "data" / "dvs_gesture"
ORIGIN = 1700000000000000


def events(t, x, y, p):
    ev = np.zeros(len(t), EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = t, x, y, p
    return ev


def all_events(src):
    return np.concatenate(list(src.batches()))


# ---------------------------------------------------------------- sources

def test_bs2_decodes_the_same_events_as_the_aedat4_copy():
    a = all_events(AedatSource(DATA / "1.aedat4"))
    b = read_bs2(DATA / "1.bs2")
    assert b.shape[0] == a.shape[0] == 63471
    assert np.array_equal(a["t"] - ORIGIN, b["t"])
    for f in ("x", "y", "p"):
        assert np.array_equal(a[f], b[f])
    assert AedatSource(DATA / "1.aedat4").resolution == (128, 128)
    assert set(np.unique(b["p"])) == {0, 1}


def test_bs2_bit_fields():
    # x=5, y=200, p=1, t=0x7ABCDE (23 bits)
    raw = bytes([5, 200, 0x80 | 0x7A, 0xBC, 0xDE])
    p = Path(__file__).parent / "_tmp_one.bs2"
    try:
        p.write_bytes(raw)
        ev = read_bs2(p)
    finally:
        p.unlink()
    assert (int(ev["x"][0]), int(ev["y"][0]), int(ev["p"][0]), int(ev["t"][0])) == (5, 200, 1, 0x7ABCDE)


def test_truncated_bs2_is_refused(tmp_path):
    p = tmp_path / "cut.bs2"
    p.write_bytes((DATA / "1.bs2").read_bytes()[:5 * 100 + 3])
    with pytest.raises(SourceError, match="not a multiple of 5"):
        read_bs2(p)
    with pytest.raises(SourceError, match="not a multiple of 5"):
        open_source(str(p))


def test_corrupt_and_missing_aedat4_are_refused(tmp_path):
    bad = tmp_path / "garbage.aedat4"
    bad.write_bytes(b"this is not an aedat4 file" * 100)
    with pytest.raises(SourceError, match="not a readable aedat4"):
        AedatSource(bad)
    cut = tmp_path / "cut.aedat4"
    cut.write_bytes((DATA / "1.aedat4").read_bytes()[:2000])
    with pytest.raises(SourceError):
        all_events(AedatSource(cut))
    with pytest.raises(SourceError, match="no such recording"):
        open_source(str(tmp_path / "absent.aedat4"))


def test_unknown_source_and_bad_address():
    with pytest.raises(SourceError, match="unknown source"):
        open_source("movie.mp4")
    with pytest.raises(SourceError, match="HOST:PORT"):
        open_source("tcp://localhost")


def test_no_camera_is_said_plainly():
    with pytest.raises(SourceError, match="no camera was found"):
        CameraSource()
    with pytest.raises(SourceError, match="no camera was found"):
        open_source("camera:DVX-000000")


def write_wav(path, samples, rate, channels=1):
    """A 16-bit WAV file of int16 samples (interleaved when channels > 1)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, "<i2").tobytes())
    return path


def test_wav_and_pcm(tmp_path):
    x = (1000 * np.sin(np.arange(1600) * 0.1)).astype("<i2")
    p = write_wav(tmp_path / "a.wav", x, 8000)
    src = WavSource(p, block=256)
    assert src.rate == 8000
    assert np.array_equal(np.concatenate(list(src.blocks())), x)
    pcm = PcmSource(io.BytesIO(x.tobytes() + b"\x01"), rate=8000, block=100)  # a stray odd byte is ignored
    assert np.array_equal(np.concatenate(list(pcm.blocks())), x)
    stereo = write_wav(tmp_path / "s.wav", np.zeros(20, "<i2"), 8000, channels=2)
    with pytest.raises(SourceError, match="16-bit mono"):
        WavSource(stereo)


# ---------------------------------------------------------------- transforms

def test_input_map_downsamples_128_to_32_in_c_order():
    m = InputMap((128, 128), (2, 32, 32))
    assert m.factor == 4 and not m.cropped
    ev = events([1, 2, 3], [0, 127, 9], [0, 127, 70], [0, 1, 1])
    t, idx = m(ev)
    assert t.tolist() == [1, 2, 3]
    assert idx.tolist() == [0, 1024 + 31 * 32 + 31, 1024 + 17 * 32 + 2]


def test_input_map_crops_other_sensors_and_refuses_misfits():
    m = InputMap((346, 260), (2, 32, 32))          # DAVIS346: crop the centre 256 x 256, downsample by 8
    assert (m.factor, m.x0, m.y0) == (8, 45, 2) and m.cropped
    t, idx = m(events([0, 1], [44, 45], [2, 2], [0, 0]))
    assert t.tolist() == [1] and idx.tolist() == [0]
    with pytest.raises(InputError, match="cannot be fitted"):
        InputMap((34, 34), (2, 64, 64))
    with pytest.raises(InputError, match=r"\(2, H, W\)"):
        InputMap((128, 128), (64,))


def test_crop_downsample_refractory():
    ev = events([0, 10, 20, 30], [5, 5, 6, 50], [5, 5, 5, 50], [1, 0, 1, 1])
    c = Crop(4, 4, 10, 10)(ev)
    assert c["x"].tolist() == [1, 1, 2] and c["t"].tolist() == [0, 10, 20]
    d = Downsample(4)(ev)
    assert d["x"].tolist() == [1, 1, 1, 12]
    r = Refractory((128, 128), 15)(ev)
    assert r["t"].tolist() == [0, 20, 30]   # the second event at (5, 5) came 10 us after the first


def test_dv_background_activity_filter_removes_isolated_noise():
    rng = np.random.default_rng(0)
    n = 2000
    t = np.sort(rng.integers(0, 1_000_000, n))
    noise = events(t, rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n))
    real = all_events(AedatSource(DATA / "1.aedat4"))[:20000]
    f = DvFilter.background_activity((128, 128), 2000)
    kept_noise = f(noise).shape[0]
    f2 = DvFilter.background_activity((128, 128), 2000)
    kept_real = f2(real).shape[0]
    assert kept_noise < 0.2 * n                         # isolated events: mostly removed
    assert kept_real / real.shape[0] > 2 * kept_noise / n   # the real gesture keeps far more


# ---------------------------------------------------------------- binner

@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=300), st.integers(1, 700), st.integers(1, 5))
def test_binner_matches_a_plain_histogram(ts, dt, n_parts):
    t = np.sort(np.asarray(ts, np.int64)) + 10**15
    idx = np.arange(t.size, dtype=np.int32)
    b = Binner(dt)
    got = {}
    for part_t, part_i in zip(np.array_split(t, n_parts), np.array_split(idx, n_parts)):
        for first, ev in [b.push(part_t, part_i)]:
            for k in range(ev.n_steps):
                got[first + k] = ev.step(k).tolist()
    first, ev = b.flush()
    for k in range(ev.n_steps):
        got[first + k] = ev.step(k).tolist()
    steps = (t - t[0]) // dt
    assert b.open_step == steps[-1] + 1
    for k in range(int(steps[-1]) + 1):
        assert got.get(k) == idx[steps == k].tolist()
    assert b.late_events == 0


def test_binner_late_events_and_subsampling_are_counted():
    b = Binner(1000, max_events_per_step=10)
    first, ev = b.push(np.array([0, 1500, 2500]), np.array([1, 2, 3]))
    assert (first, ev.n_steps) == (0, 2)
    first, ev = b.push(np.array([100, 2600] + [3100] * 25), np.arange(27))   # t=100 is late (step 0 is done)
    assert b.late_events == 1
    assert ev.n_steps == 1 and ev.step(0).tolist() == [3, 0, 1]               # joined the open step 2
    first, ev = b.flush()
    assert ev.n_steps == 1 and ev.step(0).size == 10                          # 25 -> 10, evenly spaced
    assert b.subsampled_events == 15


class _Model:
    """A tiny fixed model: input (2, 4, 4) -> Dense 3 LI (non-leaking)."""

    @staticmethod
    def make():
        from edgesnn.model.quantize import quantize
        from edgesnn.model.spec import Dense, Network, Neuron

        w = np.zeros((3, 32), np.float32)
        w[0, :16] = 1.0    # polarity 0 (OFF) events: indices 0..15
        w[1, 16:] = 1.0    # polarity 1 (ON) events: indices 16..31
        w[2, 5] = 0.5
        return quantize(Network((2, 4, 4), [Dense(w, Neuron("li", tau_mem=math.inf))], dt=1e-3))


def test_a_late_event_is_counted_once_while_it_waits_in_the_open_step():
    b = Binner(1000)
    b.push(np.array([0, 5_500], np.int64), np.array([1, 2], np.int32))      # steps 0-4 closed, 5 open
    b.push(np.array([2_100], np.int64), np.array([3], np.int32))            # step 2 is over: late
    for _ in range(5):                                                       # pushes that close nothing
        b.push(np.zeros(0, np.int64), np.zeros(0, np.int32))
    first, ev = b.push(np.zeros(0, np.int64), np.zeros(0, np.int32), until=6)
    assert b.late_events == 1 and first == 5 and ev.step(0).tolist() == [2, 3]


def test_drop_policy_on_a_backlog_is_counted_and_bounded():
    from edgesnn.simulator import Simulator

    model = _Model.make()
    # one batch spans 1 s of stream: a live loop that received it at once is 1 s behind
    t = np.arange(0, 1_000_000, 500, dtype=np.int64)
    ev = events(t, np.zeros(t.size), np.zeros(t.size), np.ones(t.size))
    src = ArraySource(ev, (4, 4), batch=ev.shape[0])
    src.live = True
    r = StreamRunner(Simulator.fixed(model), InputMap((4, 4), (2, 4, 4)), 1e-3, live=True, max_lag=0.1)
    m = r.run(src)
    assert m.dropped_steps == 999 - 100
    assert m.dropped_events == 2 * (999 - 100)
    assert m.steps == 101 and m.events == t.size
    assert m.dropped_events + 2 * 100 + 2 == t.size   # nothing vanished unaccounted: last step flushed
    # the same events in small batches (the loop keeps up): nothing is dropped
    src = ArraySource(ev, (4, 4), batch=20)
    src.live = True
    r = StreamRunner(Simulator.fixed(model), InputMap((4, 4), (2, 4, 4)), 1e-3, live=True, max_lag=0.1)
    m = r.run(src)
    assert (m.dropped_steps, m.dropped_events, m.steps) == (0, 0, 1000)


def test_runner_and_window_decider_on_a_synthetic_stream():
    from edgesnn.simulator import Simulator

    model = _Model.make()
    # 0-100 ms ON events (class 1), 100-200 ms OFF events (class 0), 200-300 ms silence
    t = np.concatenate([np.arange(0, 100_000, 250), np.arange(100_000, 200_000, 250), [299_999]])
    p = np.concatenate([np.ones(400), np.zeros(400), [1]])
    ev = events(t, np.full(t.size, 2), np.full(t.size, 3), p)
    dets = []
    dec = WindowDecider(100, 1e-3, mode="delta", min_events=10, shift=model.layers[0].shift, callback=dets.append)
    r = StreamRunner(Simulator.fixed(model), InputMap((4, 4), (2, 4, 4)), 1e-3)
    m = r.run(ArraySource(ev, (4, 4), batch=77), on_chunk=dec)
    assert [d.label for d in dets] == [1, 0]
    assert [round(d.t, 3) for d in dets] == [0.1, 0.2]
    assert m.steps == 300 and m.events_in == t.size
    assert m.latency_p99_ms >= m.latency_p50_ms > 0


class _ScriptedLiveSource:
    """A live source on a scripted wall clock: yields (wall time, batch) pairs, setting the clock first."""

    live, resolution, name = True, (4, 4), "scripted"

    def __init__(self, script):
        self.script, self.now = script, 0.0

    def clock(self):
        return self.now

    def batches(self):
        for wall, batch in self.script:
            self.now = wall
            yield batch

    def close(self):
        pass


def test_live_steps_close_on_the_wall_clock_through_a_pause():
    """A 300 ms pause in a live stream: its empty steps run one by one as they fall due, not all at once
    when the next event comes; no step runs before it is due or is late by more than one idle tick."""
    from edgesnn.simulator import Simulator
    from edgesnn.streams.sources import IDLE

    w0, ms, tick = 100.0, 1e-3, 0.25e-3
    deliveries = {}
    for k in list(range(10)) + list(range(310, 320)):   # 1 ms slices, delivered 0.3 ms after they end
        t = k * 1000 + np.array([100, 500, 900], np.int64)
        deliveries[round(w0 + (k + 1) * ms + 0.3e-3, 9)] = events(t, [1, 2, 3], [0, 1, 2], [1, 0, 1])
    script, wall = [], w0
    for j in range(int(0.330 / tick)):
        wall = round(w0 + j * tick, 9)
        for at in sorted(a for a in deliveries if wall - tick < a <= wall):
            script.append((at, deliveries[at]))
        script.append((wall, IDLE))
    src = _ScriptedLiveSource(script)
    ran = {}

    def on_chunk(first, rec, ev):
        for s in range(first, first + ev.n_steps):
            ran[s] = src.now
    r = StreamRunner(Simulator.fixed(_Model.make()), InputMap((4, 4), (2, 4, 4)), 1e-3, live=True,
                     close_after=2e-3, clock=src.clock)
    m = r.run(src, on_chunk=on_chunk)
    offset = w0 + 0.5e-3   # the earliest delivery, arrival - (last event - t0), with t0 the first event (100 us)
    due = {s: offset + (s + 1) * ms + 2e-3 for s in ran}
    timer_closed = range(10, 308)   # 308 and 309 are closed by step 310's events, before they fall due
    assert all(s in ran for s in range(320)) and m.late_events == 0 and m.events == 60
    assert all(due[s] - 1e-9 <= ran[s] <= due[s] + 1e-9 for s in timer_closed)
    assert len({ran[s] for s in timer_closed}) == len(timer_closed)   # one step per due time, never a burst
    assert m.latency_max_ms <= tick * 1e3 + 1e-6
    # the same stream without wall-clock closing: the pause's steps wait for the next event
    src2 = _ScriptedLiveSource(script)
    ran.clear()
    r = StreamRunner(Simulator.fixed(_Model.make()), InputMap((4, 4), (2, 4, 4)), 1e-3, live=True,
                     close_after=math.inf, clock=src2.clock)
    src = src2
    r.run(src2, on_chunk=on_chunk)
    assert len({ran[s] for s in range(10, 308)}) == 1


def test_latency_histogram_percentiles():
    h = LatencyHistogram()
    x = np.linspace(1e-4, 1e-3, 1000)
    h.add_many(x[:500])
    for v in x[500:]:
        h.add(v)
    assert abs(h.percentile(50) - 5.5e-4) < 0.03 * 5.5e-4
    assert abs(h.percentile(99) - 9.91e-4) < 0.03 * 9.91e-4


def test_runner_on_the_real_stream_from_file_is_fast():
    from edgesnn.model.presets import make
    from edgesnn.model.quantize import quantize
    from edgesnn.simulator import Simulator

    model = quantize(make("w1"))
    src = AedatSource(DATA / "stream_10_gestures.aedat4")
    r = StreamRunner(Simulator.fixed(model), InputMap(src.resolution, (2, 32, 32)), 1e-3,
                     origin_us=ORIGIN)
    m = r.run(src, max_steps=3000)
    assert m.steps >= 3000 and m.events > 100_000
    assert m.realtime_factor > 5
    assert len(m.spikes_per_layer) == 2 and m.spikes_per_layer[0] > 0


# ---------------------------------------------------------------- live network stream

def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _replay(path, port, speed):
    proc = subprocess.Popen([sys.executable, "-m", "edgesnn", "replay", str(path), "--listen", f"127.0.0.1:{port}",
                             "--speed", str(speed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("listening")
    return proc


@pytest.mark.parametrize("path,speed", [("1.aedat4", 0), ("1.bs2", 4)])
def test_replay_over_a_real_network_stream(path, speed):
    from edgesnn.streams.sources import NetworkSource

    port = _free_port()
    proc = _replay(DATA / path, port, speed)
    try:
        src = NetworkSource("127.0.0.1", port, idle_timeout=2.0)
        assert src.resolution == (128, 128) and src.live
        got = all_events(src)
        src.close()
    finally:
        proc.wait(timeout=20)
    ref = all_events(AedatSource(DATA / "1.aedat4")) if path.endswith("aedat4") else read_bs2(DATA / path)
    assert np.array_equal(got["t"], ref["t"]) and np.array_equal(got["x"], ref["x"])
    assert np.array_equal(got["p"], ref["p"])


def test_network_source_refuses_a_closed_port():
    from edgesnn.streams.sources import NetworkSource

    with pytest.raises(SourceError, match="cannot connect"):
        NetworkSource("127.0.0.1", _free_port(), connect_timeout=0.3)


# ---------------------------------------------------------------- edgesnn run

@pytest.fixture(scope="module")
def w1_model(tmp_path_factory):
    p = tmp_path_factory.mktemp("m") / "w1.esnn"
    assert main(["create", "--preset", "w1", "--out", str(p)]) == 0
    return p


def test_run_cli_json_on_a_recording(w1_model, capsys):
    capsys.readouterr()
    assert main(["run", "--source", str(DATA / "2.aedat4"), "--model", str(w1_model), "--json",
                 "--window", "100", "--min-events", "1"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    summary = lines[-1]
    for k in ("events", "steps", "realtime_factor", "latency_p50_ms", "latency_p99_ms", "dropped_events"):
        assert k in summary
    assert summary["events"] == 98020 or summary["events"] > 50_000
    decisions = lines[:-1]
    assert len(decisions) == summary["decisions"] > 0
    assert all({"t", "class", "confidence"} <= set(d) for d in decisions)


def test_run_cli_refusals(w1_model, tmp_path, capsys):
    assert main(["run", "--source", str(DATA / "1.bs2"), "--model", str(w1_model), "--device", "/dev/no-such-port"]) == 2
    err = capsys.readouterr().err
    assert "cannot open '/dev/no-such-port'" in err and "check the port name" in err
    assert main(["run", "--source", "camera", "--model", str(w1_model)]) == 2
    assert "no camera was found" in capsys.readouterr().err
    assert main(["run", "--source", "x.mp4", "--model", str(w1_model)]) == 2
    assert "unknown source" in capsys.readouterr().err
    kws = tmp_path / "kws.esnn"
    main(["create", "--preset", "kws", "--out", str(kws)])
    capsys.readouterr()
    assert main(["run", "--source", str(DATA / "1.bs2"), "--model", str(kws)]) == 2
    assert "(2, H, W)" in capsys.readouterr().err


def test_run_cli_on_audio(tmp_path, capsys):
    kws = tmp_path / "kws.esnn"
    w1 = tmp_path / "w1.esnn"
    main(["create", "--preset", "kws", "--out", str(kws)])
    main(["create", "--preset", "w1", "--out", str(w1)])
    x = (8000 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype("<i2")
    wav_path = write_wav(tmp_path / "tone.wav", x, 8000)
    capsys.readouterr()
    assert main(["run", "--source", str(wav_path), "--model", str(kws), "--json", "--min-events", "1"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[-1]["samples"] == 8000 and lines[-1]["steps"] == 1000 and lines[-1]["events_in"] > 0
    assert main(["run", "--source", str(wav_path), "--model", str(w1)]) == 2
    assert "(2 * bands,)" in capsys.readouterr().err


FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd" / "recordings"
FSDD_FRONT = "delays=0,4,8,12&norm=peak&env_shift=7&gate=100"


def test_level_code_streams_block_by_block_as_the_reader_encodes(tmp_path):
    """An FSDD-trained model's front-end (the reader's level code, running peak, delay line) on a stream cut
    into random blocks gives exactly the reader's events for the whole recording."""
    from edgesnn.data import LevelCode, open_dataset
    from edgesnn.streams.audio import AudioFrontend
    from edgesnn.streams.sources import WavSource
    if not FSDD.is_dir():
        pytest.skip("no FSDD recordings")
    name = "3_theo_7.wav"
    src = WavSource(FSDD / name)
    fe = AudioFrontend(src.rate, 32, hop_ms=10.0, env_shift=7)
    n = fe.process(src.samples).shape[0]                     # frames of the whole recording
    ds = open_dataset(f"fsdd:{FSDD.parent}?speakers=theo&index=7-7&limit=10&{FSDD_FRONT}&steps={n}")
    ref = ds.samples[ds.ids.index(name)][0].to_dense(128)
    fe.reset()
    code = LevelCode(32, 3, 144, [0, 4, 8, 12], (96, 4, 100))
    rng = np.random.default_rng(3)
    cuts = np.sort(rng.integers(0, src.samples.size, 9))
    rows = [code.delay(code.levels(fe.process(b))) for b in np.split(src.samples, cuts)]
    got = np.concatenate(rows)
    assert got.shape == ref.shape and np.array_equal(got, ref) and ref.sum() > 100


def test_run_cli_on_audio_with_an_fsdd_trained_front_end(tmp_path, capsys):
    """`edgesnn run` on a .wav with a model whose MODEL.data.json names the fsdd level code: the input it
    streams is the reader's (events_in), and a mismatch between the sidecar and the model is refused."""
    from edgesnn.data import open_dataset
    from edgesnn.model import modelfile
    from edgesnn.model.quantize import quantize
    from edgesnn.model.spec import Dense, Network, Neuron
    from edgesnn.streams.audio import AudioFrontend
    from edgesnn.streams.sources import WavSource
    if not FSDD.is_dir():
        pytest.skip("no FSDD recordings")
    name = "5_jackson_2.wav"
    src = WavSource(FSDD / name)
    n = AudioFrontend(src.rate, 32, hop_ms=10.0, env_shift=7).process(src.samples).shape[0]
    ds = open_dataset(f"fsdd:{FSDD.parent}?speakers=jackson&index=2-2&{FSDD_FRONT}&steps={n}")
    ev = ds.samples[ds.ids.index(name)][0]
    rng = np.random.default_rng(0)
    net = Network((128,), [Dense(rng.normal(0, 0.1, (64, 128)), Neuron("lif", tau_mem=20e-3)),
                           Dense(rng.normal(0, 0.1, (10, 64)), Neuron("li", tau_mem=20e-3))], dt=10e-3)
    path = tmp_path / "m.esnn"
    modelfile.save(quantize(net), path)
    side = tmp_path / "m.esnn.data.json"
    side.write_text(json.dumps({"reader": "fsdd", "options": ds.options, "rule": "readout", "mode": "fixed"}))
    capsys.readouterr()
    assert main(["run", "--source", str(FSDD / name), "--model", str(path), "--json"]) == 0
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last["steps"] == n and last["events_in"] == ev.idx.size > 0
    side.write_text(json.dumps({"reader": "fsdd", "options": {**ds.options, "delays": "0,4"}}))
    assert main(["run", "--source", str(FSDD / name), "--model", str(path)]) == 2
    assert "describes 64 inputs every 10.0 ms, but the model takes 128" in capsys.readouterr().err


def test_run_cli_on_a_live_network_stream(w1_model, capsys):
    port = _free_port()
    proc = _replay(DATA / "1.aedat4", port, 1)
    try:
        capsys.readouterr()
        rc = main(["run", "--source", f"tcp://127.0.0.1:{port}", "--model", str(w1_model), "--json",
                   "--min-events", "1", "--max-lag", "1000"])
    finally:
        proc.wait(timeout=30)
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    s = lines[-1]
    assert s["source"] == f"tcp://127.0.0.1:{port}"
    assert s["events"] == 63471 and s["dropped_events"] == 0
    # steps go on with the wall clock after the last event, until the sender leaves (it lingers <= 2 s)
    assert 1450 <= s["steps"] <= 1450 + 2500
    assert 0.5 < s["realtime_factor"] < 1.5          # paced by the sender
