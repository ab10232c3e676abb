"""Run a model on a board and on the emulator and compare every step: `edgesnn verify --device PROFILE`
(for a board running the application firmware, over the device link: linkverify.py, `--port URL`).

    ev, what = load_input("random:0.05", model, steps=200)     # or "path/1.bs2", "empty", "all"
    res = verify(model, "qemu-mps2-an386", ev)                  # {"identical": True, "steps": 200, ...}

The device side is a verify firmware (board/verify_main.c) that carries
the input events in flash, runs every step, and streams per step and layer the spike count, an FNV-1a
hash of the spike list and one of the layer's v, i and a words, or, for the steps of a dump window, the
spike lists and the whole numeric state (small runs dump every step) over its UART; QEMU writes the
UART to a file and exits with the firmware's status through semihosting. The host runs the emulator
(edgesnn.simulator.Simulator.fixed) on the same events and compares. When a hash differs, the firmware
is rebuilt to dump that step, and the exact lists and words name the layer, the neuron and both values.
(The hashes keep the stream small: the emulated UART costs a trap into QEMU per byte, and a dvs-conv
run with full spike lists spent two thirds of its time in the UART.)

Instructions per step: QEMU runs with ``-icount shift=0`` and the firmware reads SysTick around each
``esnn_step``; ``instructions = ticks * 1e9 / systick_hz`` (docs/devices.md). A calibration loop of a
known instruction count at start-up checks the relation on every run (``icount_check``).
"""
from __future__ import annotations

import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from edgesnn.errors import EdgeSNNError, InputError
from edgesnn.kernels import layout as K
from edgesnn.model.program import build_fixed
from edgesnn.simulator import Events, Simulator

from . import build as BUILD
from . import export as EXPORT
from . import qemu as QEMU
from . import status as S
from .profiles import Profile, load as load_profile

FNV_BASIS = 0x811C9DC5
FNV_PRIME = 0x01000193
MAGIC_HEADER, MAGIC_STEP, MAGIC_DONE = 0x564E5345, 0x50455453, 0x454E4F44
DUMP_AUTO_BYTES = 256 * 1024    # dump the whole state every step when that is at most this many bytes


class VerifyError(EdgeSNNError):
    """The device run could not be compared: no output, a damaged stream, a crash."""


# ------------------------------------------------------------------ inputs

def read_bs2(path) -> np.ndarray:
    """Events of a .bs2 file (SLAYER / N-MNIST binary: 5 bytes per event, big-endian bit fields x 8,
    y 8, polarity 1, timestamp 23 in microseconds) as a structured array (x, y, p, t)."""
    raw = np.fromfile(path, np.uint8)
    if raw.size % 5:
        raise InputError(f"{path}: {raw.size} bytes is not a whole number of 5-byte events; is it a .bs2 file?")
    b = raw.reshape(-1, 5).astype(np.int64)
    out = np.empty(b.shape[0], dtype=[("x", np.int32), ("y", np.int32), ("p", np.int8), ("t", np.int64)])
    out["x"], out["y"], out["p"] = b[:, 0], b[:, 1], b[:, 2] >> 7
    out["t"] = ((b[:, 2] & 0x7F) << 16) | (b[:, 3] << 8) | b[:, 4]
    return out


def bin_dvs(events: np.ndarray, input_shape, dt: float, sensor=None, n_steps: int | None = None) -> Events:
    """DVS events -> the network's input: step = floor(t / dt) (t from the recording's zero), index =
    polarity * H * W + (y // f) * W + x // f with f = sensor size / input size (an exact divisor, the
    same in x and y; 128x128 into 32x32 is f = 4). Events that fall on the same input in a step repeat
    the index (they count twice, as the contract says). A one-channel input merges the polarities."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or shape[0] not in (1, 2):
        raise InputError(f"DVS events need a network input of shape (2, H, W) (polarity, y, x) or (1, H, W); "
                         f"this network takes {shape}")
    C, H, W = shape
    x, y, p, t = events["x"].astype(np.int64), events["y"].astype(np.int64), events["p"], events["t"]
    if sensor is None:
        top = int(max(x.max(initial=0), y.max(initial=0)))
        sensor = next((s for s in (34, 128, 240, 346, 640) if top < s and s % W == 0 and s % H == 0), None)
        if sensor is None:
            raise InputError(f"cannot tell the sensor size (largest coordinate {top}) for a {H}x{W} input; "
                             f"give it as PATH:WxH")
        sensor = (sensor, sensor)
    sw, sh = sensor
    if sw % W or sh % H or sw // W != sh // H:
        raise InputError(f"a {sw}x{sh} sensor does not downsample to the network's {W}x{H} input by one "
                         f"integer factor")
    f = sw // W
    if x.size and (x.max() >= sw or y.max() >= sh or x.min() < 0 or y.min() < 0):
        raise InputError(f"event coordinates exceed the {sw}x{sh} sensor")
    dt_us = dt * 1e6
    step = np.floor(t / dt_us).astype(np.int64)
    T = int(step.max()) + 1 if step.size else 0
    if n_steps is not None:
        T = int(n_steps)
    keep = step < T
    ch = p[keep].astype(np.int64) if C == 2 else np.zeros(int(keep.sum()), np.int64)
    idx = ch * H * W + (y[keep] // f) * W + x[keep] // f
    st = step[keep]
    order = np.lexsort((idx, st))
    idx, st = idx[order], st[order]
    ptr = np.zeros(T + 1, np.int64)
    np.cumsum(np.bincount(st, minlength=T)[:T], out=ptr[1:])
    return Events(idx.astype(np.int32), ptr)


def load_input(spec: str, model, steps: int | None = None) -> tuple[Events, str]:
    """Input events from a source description:
    ``random:RATE`` (Bernoulli, each input active with probability RATE per step, the rate encoder's
    PRNG seeded with the model's seed; 100 steps unless --steps), ``PATH.bs2[:WxH]`` (DVS events binned
    at the model's dt, downsampled from a WxH sensor; all steps of the recording unless --steps),
    ``empty`` (no events) or ``all`` (every input every step; both 100 steps unless --steps)."""
    net = model.network
    n = int(net.n_inputs)
    if spec.startswith("random:"):
        from edgesnn.frontends.encoders import rate_encode
        try:
            rate = float(spec.split(":", 1)[1])
        except ValueError:
            raise InputError(f"random:RATE needs a number, got {spec!r}") from None
        if not 0.0 <= rate <= 1.0:
            raise InputError(f"random:RATE is a probability per input and step, 0..1; got {rate}")
        T = steps or 100
        return rate_encode(np.full(n, rate), n_steps=T, seed=int(net.seed)), \
            f"Bernoulli rate {rate} (seed {net.seed}), {T} steps"
    if spec in ("empty", "all"):
        T = steps or 100
        per = [] if spec == "empty" else list(range(n))
        return Events.from_lists([per] * T), f"{spec} input, {T} steps"
    path, sensor = spec, None
    base, _, tail = spec.rpartition(":")
    if base and "x" in tail and tail.replace("x", "").isdigit():
        path = base
        sw, sh = tail.split("x")
        sensor = (int(sw), int(sh))
    if path.endswith(".bs2"):
        if not Path(path).is_file():
            raise InputError(f"no such .bs2 file: {path}")
        ev = bin_dvs(read_bs2(path), net.input_shape, net.dt, sensor, steps)
        return ev, f"{path} ({ev.idx.size} events in {ev.n_steps} steps of {net.dt * 1e3:g} ms)"
    raise InputError(f"unknown input {spec!r}: use random:RATE, a .bs2 file (PATH.bs2 or PATH.bs2:128x128), "
                     f"empty or all")


def truncate(events: Events, n_steps: int) -> Events:
    n_steps = min(n_steps, events.n_steps)
    return Events(events.idx[:events.ptr[n_steps]], events.ptr[:n_steps + 1])


# ------------------------------------------------------------------ hashing and layout

@njit(cache=True)
def _fnv_rows(state, words, bounds, out):
    """out[t, l] = FNV-1a over state[t, words[bounds[l]:bounds[l + 1]]] as uint32 words."""
    for t in range(state.shape[0]):
        for l in range(bounds.size - 1):
            h = np.uint64(FNV_BASIS)
            for k in range(bounds[l], bounds[l + 1]):
                w = np.uint64(np.uint32(state[t, words[k]]))
                h = ((h ^ w) * np.uint64(FNV_PRIME)) & np.uint64(0xFFFFFFFF)
            out[t, l] = h


@njit(cache=True)
def _fnv(words):
    h = np.uint64(FNV_BASIS)
    for k in range(words.size):
        h = ((h ^ np.uint64(words[k])) * np.uint64(FNV_PRIME)) & np.uint64(0xFFFFFFFF)
    return h


@dataclass
class Layout:
    n_layers: int
    sizes: list
    fields: list          # per layer: [(name, offset)] for v, i, a present
    words: np.ndarray     # state word indices in hash order, layers concatenated
    bounds: np.ndarray

    @classmethod
    def of(cls, model) -> "Layout":
        prog = build_fixed(model)
        sizes, fields, words, bounds = [], [], [], [0]
        for row in prog.ltab:
            n = int(row[K.L_N_OUT])
            f = [(name, int(row[col])) for name, col in (("v", K.L_V_OFF), ("i", K.L_I_OFF), ("a", K.L_A_OFF))
                 if row[col] >= 0]
            for _, off in f:
                words.extend(range(off, off + n))
            sizes.append(n)
            fields.append(f)
            bounds.append(len(words))
        return cls(len(sizes), sizes, fields, np.asarray(words, np.int64), np.asarray(bounds, np.int64))

    def hashes(self, state: np.ndarray) -> np.ndarray:
        out = np.zeros((state.shape[0], self.n_layers), np.uint32)
        _fnv_rows(np.ascontiguousarray(state, np.int32), self.words, self.bounds, out)
        return out

    def locate(self, layer: int, k: int) -> tuple[str, int]:
        """Which field and neuron of ``layer`` the state word ``k`` is."""
        for name, off in self.fields[layer]:
            if off <= k < off + self.sizes[layer]:
                return name, k - off
        raise KeyError(k)


# ------------------------------------------------------------------ the two runs

@dataclass
class Trace:
    status: list          # per step
    counts: np.ndarray    # (T, n_layers) spikes per layer
    spike_hashes: np.ndarray   # (T, n_layers) uint32 FNV-1a of each spike list
    hashes: np.ndarray    # (T, n_layers) uint32 FNV-1a of each layer's v, i, a
    spikes: dict          # t -> [per layer int32 spike indices], where known
    state: dict           # t -> the whole numeric state (int32), where known
    ticks: np.ndarray | None = None
    header: dict | None = None
    done: dict | None = None


def _list_hash(idx) -> int:
    return int(_fnv(np.asarray(idx, np.int32).view(np.uint32)))


def emulate(model, events: Events, layout: Layout | None = None) -> Trace:
    """The emulator, step by step: every layer's spike list and the whole state after every step."""
    layout = layout or Layout.of(model)
    sim = Simulator.fixed(model)
    T = events.n_steps
    spikes, status = {}, []
    states = np.zeros((T, sim.vs.size), np.int32)
    for t in range(T):
        try:
            sim.step(events.step(t))
        except InputError:
            st = S.ERR_INPUT_INDEX if np.any((events.step(t) < 0) | (events.step(t) >= sim.n_inputs)) \
                else S.ERR_INPUT_COUNT
            status.append(st)
            states = states[:t]
            break
        status.append(S.OK)
        spikes[t] = [sim.spikes(l).astype(np.int32) for l in range(layout.n_layers)]
        states[t] = sim.vs
    n = len(spikes)
    counts = np.array([[s.size for s in spikes[t]] for t in range(n)], np.int64).reshape(n, layout.n_layers)
    sh = np.array([[_list_hash(s) for s in spikes[t]] for t in range(n)], np.uint32).reshape(n, layout.n_layers)
    return Trace(status, counts, sh, layout.hashes(states), spikes, {t: states[t] for t in range(n)})


def parse_stream(data: bytes, layout: Layout) -> Trace:
    """The verify firmware's UART stream -> a Trace (raises VerifyError on damage)."""
    if len(data) % 4:
        data = data[:len(data) - len(data) % 4]
    w = np.frombuffer(data, "<u4")
    pos = 0

    def need(n):
        if pos + n > w.size:
            raise VerifyError(f"the device's stream ends inside a record at word {pos} ({len(data)} bytes in all)")

    def close(start):
        nonlocal pos
        need(1)
        if int(_fnv(w[start:pos].astype(np.uint32))) != int(w[pos]):
            raise VerifyError(f"checksum mismatch in the device's record at word {start}: the UART stream "
                              f"was damaged")
        pos += 1

    if w.size == 0:
        raise VerifyError("the device sent nothing")
    need(20)
    if int(w[0]) != MAGIC_HEADER:
        raise VerifyError(f"the device's stream does not start with the verify header (got {int(w[0]):#x})")
    hdr = [int(v) for v in w[1:20]]
    version, n_layers, n_vs, n_steps, flags, d0, d1, init_st, calib_iters, calib_ticks, clock = hdr[:11]
    model_hash = b"".join(struct.pack("<I", v) for v in hdr[11:19])
    pos = 20
    close(0)
    header = {"version": version, "n_layers": n_layers, "n_vs": n_vs, "n_steps": n_steps, "flags": flags,
              "dump": (d0, d1), "init_status": np.int32(np.uint32(init_st)).item(),
              "calib_iters": calib_iters, "calib_ticks": calib_ticks, "clock_hz": clock,
              "hash": model_hash.hex()}
    if n_layers != layout.n_layers:
        raise VerifyError(f"the device runs a model of {n_layers} layers, the host has {layout.n_layers}")
    idx16 = bool(flags & 1)
    status, ticks, counts, shashes, hashes, spikes, states = [], [], [], [], [], {}, {}
    done = None
    while pos < w.size:
        start = pos
        magic = int(w[pos])
        if magic == MAGIC_STEP:
            need(5)
            t, st, tk, full = int(w[pos + 1]), np.int32(np.uint32(w[pos + 2])).item(), int(w[pos + 3]), int(w[pos + 4])
            pos += 5
            per, cnt, sh = [], [], []
            for _ in range(n_layers):
                need(1)
                n = int(w[pos])
                pos += 1
                cnt.append(n)
                if not full:
                    need(1)
                    sh.append(int(w[pos]))
                    pos += 1
                    continue
                nw = (n + 1) // 2 if idx16 else n
                need(nw)
                if idx16:
                    pairs = w[pos:pos + nw].astype(np.int64)
                    v = np.empty(2 * nw, np.int64)
                    v[0::2], v[1::2] = pairs & 0xFFFF, pairs >> 16
                    per.append(v[:n].astype(np.int32))
                else:
                    per.append(w[pos:pos + n].view(np.int32).copy())
                sh.append(_list_hash(per[-1]))
                pos += nw
            need(n_layers)
            h = w[pos:pos + n_layers].astype(np.uint32)
            pos += n_layers
            if full:
                need(n_vs)
                states[t] = w[pos:pos + n_vs].view(np.int32).copy()
                spikes[t] = per
                pos += n_vs
            close(start)
            if t != len(status):
                raise VerifyError(f"the device sent step {t} where step {len(status)} was expected")
            status.append(st)
            ticks.append(tk)
            counts.append(cnt)
            shashes.append(sh)
            hashes.append(h)
        elif magic == MAGIC_DONE:
            need(4)
            done = {"steps": int(w[pos + 1]), "status": np.int32(np.uint32(w[pos + 2])).item(),
                    "rx_dropped": int(w[pos + 3])}
            pos += 4
            close(start)
            break
        else:
            raise VerifyError(f"unexpected word {magic:#x} at word {pos} of the device's stream")
    T = len(status)
    return Trace(status, np.asarray(counts, np.int64).reshape(T, n_layers),
                 np.asarray(shashes, np.uint32).reshape(T, n_layers),
                 np.asarray(hashes, np.uint32).reshape(T, n_layers), spikes, states,
                 np.asarray(ticks, np.int64), header, done)


def compare(emu: Trace, dev: Trace, layout: Layout):
    """The first difference (in step order, then layer order, spikes before state) and None, or, when
    only a hash tells that step t differs, a provisional description and t (the step to dump)."""
    T = min(len(emu.status), len(dev.status))
    for t in range(T):
        if emu.status[t] != dev.status[t]:
            return {"step": t, "layer": None, "neuron": None, "what": "status",
                    "emulator": int(emu.status[t]), "device": int(dev.status[t])}, None
        if emu.status[t] != S.OK:
            break
        for l in range(layout.n_layers):
            if emu.counts[t, l] != dev.counts[t, l] or emu.spike_hashes[t, l] != dev.spike_hashes[t, l]:
                if t not in dev.spikes:
                    return {"step": t, "layer": l, "neuron": None, "what": "spikes",
                            "emulator": f"{int(emu.counts[t, l])} spikes", "device": f"{int(dev.counts[t, l])} spikes"}, t
                a, b = emu.spikes[t][l], dev.spikes[t][l]
                sa, sb = set(a.tolist()), set(b.tolist())
                diff = sorted(sa ^ sb)
                if diff:
                    n = diff[0]
                    return {"step": t, "layer": l, "neuron": int(n), "what": "spike",
                            "emulator": int(n in sa), "device": int(n in sb)}, None
                return {"step": t, "layer": l, "neuron": None, "what": "spike list",
                        "emulator": a.tolist()[:16], "device": b.tolist()[:16]}, None
            if emu.hashes[t, l] != dev.hashes[t, l]:
                if t not in dev.state:
                    return {"step": t, "layer": l, "neuron": None, "what": "state",
                            "emulator": f"fnv {int(emu.hashes[t, l]):#010x}",
                            "device": f"fnv {int(dev.hashes[t, l]):#010x}"}, t
                e, d = emu.state[t], dev.state[t]
                ws = layout.words[layout.bounds[l]:layout.bounds[l + 1]]
                k = int(ws[np.flatnonzero(e[ws] != d[ws])[0]])
                what, neuron = layout.locate(l, k)
                return {"step": t, "layer": l, "neuron": neuron, "what": what,
                        "emulator": int(e[k]), "device": int(d[k])}, None
    if len(emu.status) != len(dev.status):
        return {"step": T, "layer": None, "neuron": None, "what": "steps run",
                "emulator": len(emu.status), "device": len(dev.status)}, None
    return None, None


# ------------------------------------------------------------------ the whole verification

def _dump_window(n_vs: int, T: int, dump):
    if dump == "auto":
        return (0, T) if 4 * n_vs * T <= DUMP_AUTO_BYTES else (0, 0)
    if dump == "all":
        return (0, T)
    if dump in (None, "none"):
        return (0, 0)
    return tuple(dump)


def run_device(project: Path, prof: Profile, timeout: float) -> tuple[dict, QEMU.RunResult]:
    rep = BUILD.build_project(project)
    BUILD.check_fits(rep)
    res = QEMU.run(rep["elf"], prof, timeout=timeout, icount_shift=0)
    return rep, res


def _run_and_parse(project, prof, layout, timeout):
    rep, res = run_device(project, prof, timeout)
    try:
        dev = parse_stream(res.output, layout)
    except VerifyError as e:
        raise VerifyError(f"{e}; QEMU exit status {res.returncode}"
                          f"{' (a fault: exception ' + str(res.returncode - 128) + ')' if res.returncode > 128 else ''}"
                          f"{'; QEMU said: ' + res.stderr.strip() if res.stderr.strip() else ''}") from None
    if dev.done is None:
        raise VerifyError(f"the device stopped after {len(dev.status)} steps without finishing (QEMU exit "
                          f"status {res.returncode}{', a fault' if res.returncode >= 128 else ''}); "
                          f"{res.stderr.strip()}")
    return rep, res, dev


def verify(model, profile, events: Events, work_dir=None, dump="auto", timeout: float = 600,
           progress=None, tamper=None) -> dict:
    """Export, build and run the verify firmware on ``profile`` (an emulated board) and the emulator on
    ``events``; compare every step. ``work_dir`` keeps the project (a later call with the same model
    rebuilds only the input); ``tamper(project_dir)`` may edit the device's sources before the build (for
    tests: a verify that can never say false proves nothing). Returns the report (see module doc)."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    if not prof.emulated:
        raise VerifyError(f"{prof.name} is a real board: the verify firmware runs on emulated boards "
                          f"({', '.join(p for p in QEMU._emulated_names())}); for a real board, flash the "
                          f"application firmware (`edgesnn flash`) and verify over the link with --port URL")
    say = progress or (lambda msg: None)
    layout = Layout.of(model)
    T = events.n_steps
    tmp = None
    if work_dir is None:
        tmp = tempfile.mkdtemp(prefix="esnn-verify-")
        work_dir = tmp
    project = Path(work_dir)
    try:
        n_vs = int(build_fixed(model).n_vs)
        window = _dump_window(n_vs, T, dump)
        say(f"exporting the verify firmware for {prof.name}")
        # a full export rewrites only the files whose content changed: a kept work_dir rebuilds the input
        EXPORT.export_project(model, prof, project, mode="verify", events=events, dump=window)
        if tamper is not None:
            tamper(project)
        say("running the emulator")
        emu = emulate(model, events, layout)
        say(f"building and running on {prof.name} (QEMU {prof.qemu['machine']})")
        rep, res, dev = _run_and_parse(project, prof, layout, timeout)
        if dev.header["hash"] != _hash_hex(model):
            raise VerifyError("the device runs a different model (its hash differs from the model's)")
        if dev.header["init_status"] != S.OK:
            raise VerifyError(f"the device refused the model: esnn_state_init returned "
                              f"{dev.header['init_status']} ({S.name(dev.header['init_status'])})")
        mismatch, locate = compare(emu, dev, layout)
        if locate is not None:
            say(f"state differs at step {locate}: rebuilding to send that step's whole state")
            EXPORT.update_verify_data(project, truncate(events, locate + 1), int(model.network.n_inputs),
                                      (locate, locate + 1))
            _, _, dev2 = _run_and_parse(project, prof, layout, timeout)
            if locate in dev2.state:
                dev.state[locate] = dev2.state[locate]
                dev.spikes[locate] = dev2.spikes[locate]
                mismatch, _ = compare(emu, dev, layout)
            EXPORT.update_verify_data(project, events, int(model.network.n_inputs), window)
        ticks = dev.ticks
        instr = QEMU.instructions(ticks.astype(np.float64), prof)
        calib_instr = QEMU.instructions(dev.header["calib_ticks"], prof)
        expected = 2 * dev.header["calib_iters"]
        return {
            "identical": mismatch is None,
            "steps": len(dev.status),
            "first_mismatch": mismatch,
            "instructions_per_step": float(instr.mean()) if instr.size else None,
            "instructions": {"mean": float(instr.mean()) if instr.size else None,
                             "min": float(instr.min()) if instr.size else None,
                             "max": float(instr.max()) if instr.size else None,
                             "per_step": [round(float(v)) for v in instr],
                             "resolution": 1e9 / prof.qemu["systick_hz"]},
            "icount_check": {"loop_instructions": expected, "measured": calib_instr,
                             "ratio": calib_instr / expected},
            "device": prof.name, "machine": prof.qemu["machine"],
            "flash_bytes": rep["flash_bytes"], "ram_bytes": rep["ram_bytes"],
            "input_events": int(events.idx.size),
            "checked": ("spike lists and whole state, every step" if window == (0, T) else
                        "per layer and step: spike count, FNV-1a of the spike list and of v, i, a"),
            "qemu_seconds": round(res.seconds, 3),
            "project": str(project) if tmp is None else None,
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _hash_hex(model) -> str:
    from . import blob as B
    return B.model_hash_bytes(model).hex()

