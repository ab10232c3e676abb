"""Data set readers for training and evaluation: SPEC = reader:PATH[?key=val&...].

    ds = open_dataset("nmnist:../shared/data/nmnist_small?split=train")
    ds.samples  -> list of (Events, label);  ds.input_shape, ds.n_classes, ds.n_steps, ds.options

Readers (options, defaults):
  nmnist:DIR      folder of .bs2 files + labels.csv (file,label). bin_ms=10, steps=32, pool=2 (34x34 -> 17x17),
                  split=all|train|val, val=200 (the last `val` rows of labels.csv are the validation set),
                  limit=N (first N samples after the split)
  fsdd:DIR        folder (or DIR/recordings) of {digit}_{speaker}_{index}.wav (8 kHz, 16-bit mono).
                  speakers=a,b (keep only), exclude=a,b (drop), index=LO-HI (inclusive; also 'index=5-49'),
                  hop_ms=10, channels=32, steps=80, encode=level|delta, level_shift=3, floor=144, limit=N,
                  delays=0 (a delay line: delays=0,4,8,12 presents at each step the frames of 0, 4, 8 and 12
                  steps ago side by side, input = len(delays) x the channels, lag-major),
                  env_shift=5 (the front-end's envelope low-pass, 1..16: time constant 2^env_shift samples),
                  norm=fixed|peak (level code only; fixed: levels counted from the fixed `floor`; peak: from a
                  running peak, an AGC independent of the recording gain, all integer and causal:
                    m_t = max_c logenv_c(t),  p_t = max(m_t, p_{t-1} - peak_release)  (p_{-1} = 0),
                    level_c(t) = max(0, logenv_c(t) - max(0, p_t - peak_range)) >> level_shift  if m_t >= gate,
                    else 0),
                  peak_range=96 (Q4 log2 units below the peak, 0..1024: 96 = 6 octaves = 36 dB),
                  peak_release=4 (Q4 units per step the peak falls, 0..1024), gate=0 (silence gate in Q4 log2
                  units, 0..1024; norm=peak only)
  dvsgesture:DIR  folder of N.bs2 + labels.csv (file,class_id_1based,class_index_0based,class_name), 128x128.
                  bin_ms=10, steps=150, pool=4, part=all|head|tail, frac=0.5 (head: the first frac of each
                  recording, tail: the rest)
Events of a sample are dense in time (steps rows, padded with empty steps or cropped). Every step's
events are input indices (c * H * W + y * W + x); an index may repeat (then it counts twice).
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..simulator import Events


class DataError(InputError):
    """A data set that cannot be read: unknown reader, missing folder, bad option, corrupt file."""


@dataclass(eq=False)
class Dataset:
    name: str
    input_shape: tuple
    n_classes: int
    n_steps: int
    dt: float
    samples: list = field(default_factory=list)  # (Events, label)
    ids: list = field(default_factory=list)      # file names
    groups: list = field(default_factory=list)   # e.g. FSDD speaker of each sample
    options: dict = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return np.array([lab for _, lab in self.samples], np.int64)

    def subset(self, keep) -> "Dataset":
        keep = list(keep)
        return Dataset(self.name, self.input_shape, self.n_classes, self.n_steps, self.dt,
                       [self.samples[i] for i in keep], [self.ids[i] for i in keep],
                       [self.groups[i] for i in keep] if self.groups else [], dict(self.options))


READERS = ("nmnist", "fsdd", "dvsgesture")


def parse_spec(spec: str) -> tuple[str, str, dict]:
    """'reader:PATH?key=val&key2=val2' -> (reader, path, options as strings)."""
    if ":" not in spec:
        raise DataError(f"data spec {spec!r} has no reader; write READER:PATH[?key=val&...] with READER one "
                        f"of {', '.join(READERS)}")
    reader, rest = spec.split(":", 1)
    if reader not in READERS:
        raise DataError(f"unknown reader {reader!r} in {spec!r}; the readers are {', '.join(READERS)}")
    path, _, query = rest.partition("?")
    opts = {}
    if query:
        for part in query.split("&"):
            if not part:
                continue
            k, eq, v = part.partition("=")
            if not eq or not k:
                raise DataError(f"bad option {part!r} in {spec!r}: write key=value")
            opts[k] = v
    return reader, path, opts


class _Opts:
    """Typed access to options, refusing unknown keys and bad values with a clear message."""

    def __init__(self, reader, opts, defaults):
        unknown = set(opts) - set(defaults)
        if unknown:
            raise DataError(f"{reader}: unknown option(s) {', '.join(sorted(unknown))}; the options are "
                            f"{', '.join(f'{k} (default {v})' for k, v in defaults.items())}")
        self.reader, self.raw, self.defaults = reader, opts, defaults

    def get(self, key, conv=str, check=None, what=""):
        raw = self.raw.get(key)
        if raw is None:
            raw = str(self.defaults[key])
        try:
            val = conv(raw)
        except ValueError:
            raise DataError(f"{self.reader}: option {key}={raw!r} is not {what or conv.__name__}") from None
        if check is not None and not check(val):
            raise DataError(f"{self.reader}: option {key}={raw!r} is out of range ({what})")
        return val


def _folder(path, reader):
    if not path:
        raise DataError(f"{reader}: no folder given; write {reader}:DIR")
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{reader}: no such folder: {path}")
    return p


def read_bs2_checked(path, width: int, height: int) -> np.ndarray:
    """(x, y, p, t) int64 arrays of a .bs2 file, refusing a truncated file or events off the sensor
    with the byte offset of the bad event."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        off = raw.size - raw.size % 5
        raise DataError(f"{path}: corrupt .bs2 file: truncated event at byte offset {off} ({raw.size % 5} "
                        f"stray bytes; events are 5 bytes)")
    r = raw.reshape(-1, 5).astype(np.int64)
    x, y = r[:, 0], r[:, 1]
    p = r[:, 2] >> 7
    t = ((r[:, 2] & 0x7F) << 16) | (r[:, 3] << 8) | r[:, 4]
    bad = np.flatnonzero((x >= width) | (y >= height))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{path}: corrupt .bs2 file: event at byte offset {5 * i} has x={x[i]}, y={y[i]}, "
                        f"outside the {width}x{height} sensor")
    return x, y, p, t


def bin_events(x, y, p, t, width, height, pool, bin_us, n_steps, t0=None) -> Events:
    """Events (x, y, p, t in us) -> Events of n_steps bins of bin_us, input (2, H/pool, W/pool)."""
    h, w = -(-height // pool), -(-width // pool)
    t0 = (t.min() if t.size else 0) if t0 is None else t0
    b = (t - t0) // bin_us
    keep = (b >= 0) & (b < n_steps)
    b = b[keep]
    idx = p[keep] * (h * w) + (y[keep] // pool) * w + (x[keep] // pool)
    order = np.lexsort((idx, b))
    b, idx = b[order], idx[order]
    ptr = np.zeros(n_steps + 1, np.int64)
    np.cumsum(np.bincount(b, minlength=n_steps), out=ptr[1:])
    return Events(idx.astype(np.int32), ptr)


def _labels_csv(folder: Path, reader, cols):
    f = folder / "labels.csv"
    if not f.is_file():
        raise DataError(f"{reader}: {folder} has no labels.csv ({','.join(cols)})")
    with open(f, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or any(c not in rows[0] for c in cols):
        raise DataError(f"{f}: expected columns {', '.join(cols)}")
    return rows


def read_nmnist(path, opts) -> Dataset:
    o = _Opts("nmnist", opts, {"bin_ms": 10.0, "steps": 32, "pool": 2, "split": "all", "val": 200, "limit": 0})
    folder = _folder(path, "nmnist")
    bin_ms = o.get("bin_ms", float, lambda v: v > 0, "a positive number")
    steps = o.get("steps", int, lambda v: v >= 1, "an integer >= 1")
    pool = o.get("pool", int, lambda v: 1 <= v <= 34, "1..34")
    split = o.get("split", str, lambda v: v in ("all", "train", "val"), "all, train or val")
    n_val = o.get("val", int, lambda v: v >= 0, "an integer >= 0")
    limit = o.get("limit", int, lambda v: v >= 0, "an integer >= 0")
    rows = _labels_csv(folder, "nmnist", ("file", "label"))
    if n_val > len(rows):
        raise DataError(f"nmnist: val={n_val} but only {len(rows)} samples")
    if split == "train":
        rows = rows[:len(rows) - n_val]
    elif split == "val":
        rows = rows[len(rows) - n_val:]
    if limit:
        rows = rows[:limit]
    side = -(-34 // pool)
    ds = Dataset("nmnist", (2, side, side), 10, steps, bin_ms * 1e-3,
                 options={"bin_ms": bin_ms, "steps": steps, "pool": pool})
    for r in rows:
        f = folder / r["file"]
        if not f.is_file():
            raise DataError(f"nmnist: {f} listed in labels.csv does not exist")
        try:
            lab = int(r["label"])
        except ValueError:
            raise DataError(f"nmnist: label {r['label']!r} of {r['file']} is not an integer") from None
        x, y, p, t = read_bs2_checked(f, 34, 34)
        ds.samples.append((bin_events(x, y, p, t, 34, 34, pool, int(bin_ms * 1000), steps), lab))
        ds.ids.append(r["file"])
    return ds


def read_dvsgesture(path, opts) -> Dataset:
    o = _Opts("dvsgesture", opts, {"bin_ms": 10.0, "steps": 150, "pool": 4, "part": "all", "frac": 0.5})
    folder = _folder(path, "dvsgesture")
    bin_ms = o.get("bin_ms", float, lambda v: v > 0, "a positive number")
    steps = o.get("steps", int, lambda v: v >= 1, "an integer >= 1")
    pool = o.get("pool", int, lambda v: 1 <= v <= 128, "1..128")
    part = o.get("part", str, lambda v: v in ("all", "head", "tail"), "all, head or tail")
    frac = o.get("frac", float, lambda v: 0 < v < 1, "in (0, 1)")
    rows = _labels_csv(folder, "dvsgesture", ("file", "class_index_0based"))
    side = -(-128 // pool)
    ds = Dataset("dvsgesture", (2, side, side), 11, steps, bin_ms * 1e-3,
                 options={"bin_ms": bin_ms, "steps": steps, "pool": pool})
    bin_us = int(bin_ms * 1000)
    for r in rows:
        f = folder / r["file"]
        if not f.is_file():
            raise DataError(f"dvsgesture: {f} listed in labels.csv does not exist")
        x, y, p, t = read_bs2_checked(f, 128, 128)
        t0 = int(t.min()) if t.size else 0
        if part != "all":
            cut = t0 + int(frac * (int(t.max()) - t0)) if t.size else 0
            sel = t < cut if part == "head" else t >= cut
            x, y, p, t = x[sel], y[sel], p[sel], t[sel]
            t0 = t0 if part == "head" else cut
        ds.samples.append((bin_events(x, y, p, t, 128, 128, pool, bin_us, steps, t0=t0),
                           int(r["class_index_0based"])))
        ds.ids.append(r["file"])
    return ds


FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


def _range(s):
    lo, sep, hi = s.partition("-")
    lo = int(lo)
    hi = int(hi) if sep else lo
    if hi < lo:
        raise ValueError
    return lo, hi


def _names(s):
    return [x for x in s.split(",") if x]


def read_fsdd(path, opts) -> Dataset:
    o = _Opts("fsdd", opts, {"speakers": "", "exclude": "", "index": "0-49", "hop_ms": 10.0, "channels": 32,
                             "steps": 80, "encode": "level", "level_shift": 3, "floor": 144, "limit": 0,
                             "delays": "0", "env_shift": 5, "norm": "fixed", "peak_range": 96,
                             "peak_release": 4, "gate": 0})
    folder = _folder(path, "fsdd")
    if (folder / "recordings").is_dir():
        folder = folder / "recordings"
    speakers = o.get("speakers", _names, None, "a comma-separated list")
    exclude = o.get("exclude", _names, None, "a comma-separated list")
    lo, hi = o.get("index", _range, None, "LO-HI")
    hop_ms = o.get("hop_ms", float, lambda v: 0.125 <= v <= 100, "0.125..100 ms")
    channels = o.get("channels", int, lambda v: 1 <= v <= 128, "1..128")
    steps = o.get("steps", int, lambda v: v >= 1, "an integer >= 1")
    encode = o.get("encode", str, lambda v: v in ("level", "delta"), "level or delta")
    level_shift = o.get("level_shift", int, lambda v: 0 <= v <= 16, "0..16")
    floor = o.get("floor", int, lambda v: v >= 0, "an integer >= 0")
    limit = o.get("limit", int, lambda v: v >= 0, "an integer >= 0")
    delays = o.get("delays", _delays, lambda v: 0 < len(v) <= 32 and all(0 <= d < 1000 for d in v),
                   "comma-separated lags in steps, 0..999, at most 32")
    env_shift = o.get("env_shift", int, lambda v: 1 <= v <= 16, "1..16")
    norm = o.get("norm", str, lambda v: v in ("fixed", "peak"), "fixed or peak")
    peak_range = o.get("peak_range", int, lambda v: 0 <= v <= 1024, "0..1024")
    peak_release = o.get("peak_release", int, lambda v: 0 <= v <= 1024, "0..1024")
    gate = o.get("gate", int, lambda v: 0 <= v <= 1024, "0..1024")
    if norm == "peak" and encode != "level":
        raise DataError("fsdd: norm=peak applies to the level code only (encode=level)")
    peak = (peak_range, peak_release, gate) if norm == "peak" else None
    files = []
    for f in sorted(os.listdir(folder)):
        m = FSDD_NAME.match(f)
        if not m:
            continue
        d, spk, idx = int(m.group(1)), m.group(2), int(m.group(3))
        if speakers and spk not in speakers or spk in exclude or not lo <= idx <= hi:
            continue
        files.append((f, d, spk))
    if not files:
        raise DataError(f"fsdd: no recording in {folder} matches (speakers={speakers or 'all'}, "
                        f"exclude={exclude or 'none'}, index={lo}-{hi})")
    if limit:
        files = files[:limit]
    from ..streams.audio import AudioFrontend
    from ..streams.sources import SourceError, WavSource
    n_in = (2 * channels if encode == "delta" else channels) * len(delays)
    opts_out = {"hop_ms": hop_ms, "channels": channels, "steps": steps, "encode": encode,
                "level_shift": level_shift, "floor": floor}
    if delays != [0]:
        opts_out["delays"] = ",".join(str(d) for d in delays)
    if env_shift != 5:
        opts_out["env_shift"] = env_shift
    if peak is not None:
        opts_out.update(norm="peak", peak_range=peak_range, peak_release=peak_release, gate=gate)
    ds = Dataset("fsdd", (n_in,), 10, steps, hop_ms * 1e-3, options=opts_out)
    fe = None
    for f, d, spk in files:
        try:
            src = WavSource(folder / f)
        except SourceError as e:
            raise DataError(f"fsdd: {e}") from None
        if fe is None or fe.rate != src.rate:
            fe = AudioFrontend(rate=src.rate, n_channels=channels, hop_ms=hop_ms, env_shift=env_shift)
        fe.reset()
        ds.samples.append((audio_events(fe, src.samples, steps, encode, level_shift, floor, delays, peak), d))
        ds.ids.append(f)
        ds.groups.append(spk)
    return ds


def _delays(s):
    return [int(x) for x in s.split(",") if x != ""]


class LevelCode:
    """The fsdd reader's level code and delay line, causal and stateful, so that a stream cut into any
    blocks gives the same events as the whole recording (``edgesnn run`` on live audio uses it too).

    levels(env): log envelopes (T, C) -> event counts (T, C). fixed: max(0, env - floor) >> level_shift;
    with ``peak`` = (peak_range, peak_release, gate), the running-peak code:
        m_t = max_c env[t, c], p_t = max(m_t, p_{t-1} - peak_release) (p_{-1} = 0),
        out[t, c] = max(0, env[t, c] - max(0, p_t - peak_range)) >> level_shift if m_t >= gate, else 0
    (so silence, env = 0, gives no event even with gate = 0).
    delay(counts): (T, C) -> (T, len(delays) * C), block i the counts of delays[i] steps before (zeros
    before the start), input index = i * C + c."""

    def __init__(self, n_channels: int, level_shift: int, floor: int, delays=(0,), peak=None):
        self.n, self.level_shift, self.floor = int(n_channels), int(level_shift), int(floor)
        self.delays, self.peak = [int(d) for d in delays], peak
        self.reset()

    @property
    def n_inputs(self) -> int:
        return self.n * len(self.delays)

    def reset(self):
        self.p = 0
        self.past = np.zeros((max(self.delays), self.n), np.int64)   # the last max(delays) rows of counts

    def levels(self, env) -> np.ndarray:
        env = np.asarray(env, np.int64)
        if self.peak is None:
            return np.maximum(env - self.floor, 0) >> self.level_shift
        peak_range, peak_release, gate = self.peak
        out = np.zeros(env.shape, np.int64)
        for t in range(env.shape[0]):
            m = int(env[t].max()) if env.shape[1] else 0
            self.p = max(m, self.p - peak_release)
            if m >= gate:
                out[t] = np.maximum(env[t] - max(0, self.p - peak_range), 0) >> self.level_shift
        return out

    def delay(self, counts) -> np.ndarray:
        counts = np.asarray(counts, np.int64)
        if self.delays == [0]:
            return counts
        T, k = counts.shape[0], self.past.shape[0]
        ext = np.concatenate([self.past, counts])
        out = np.zeros((T, self.n_inputs), np.int64)
        for i, d in enumerate(self.delays):
            out[:, i * self.n:(i + 1) * self.n] = ext[k - d:k - d + T]
        if k:
            self.past = ext[-k:].copy()
        return out


def peak_levels(env, level_shift, peak_range, peak_release, gate) -> np.ndarray:
    """The running-peak level code (norm=peak) of a whole recording's log envelopes env (T, C)."""
    return LevelCode(np.shape(env)[1], level_shift, 0, peak=(peak_range, peak_release, gate)).levels(env)


def audio_events(fe, samples, steps, encode, level_shift, floor, delays=(0,), peak=None) -> Events:
    """int16 samples -> Events of ``steps`` rows. level: the counts of LevelCode (fixed floor, or with
    ``peak`` = (peak_range, peak_release, gate) the running peak), cropped or padded with empty steps to
    ``steps``, then its delay line; delta: the front-end's ON/OFF spikes."""
    if encode == "delta":
        raster = fe.raster(samples).astype(np.int64)
        code = LevelCode(raster.shape[1], 0, 0, delays)
    else:
        code = LevelCode(fe.n, level_shift, floor, delays, peak)
        raster = code.levels(fe.process(samples))
    out = np.zeros((steps, raster.shape[1]), np.int64)
    n = min(steps, raster.shape[0])
    out[:n] = raster[:n]
    return Events.from_dense(code.delay(out))


def open_dataset(spec: str) -> Dataset:
    reader, path, opts = parse_spec(spec)
    return {"nmnist": read_nmnist, "fsdd": read_fsdd, "dvsgesture": read_dvsgesture}[reader](path, opts)
