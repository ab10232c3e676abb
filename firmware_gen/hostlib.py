"""Build the C runtime for the host and run it from Python, to check it against the emulator.

    dev = HostDevice(model)                  # the runtime as a shared library, the model from its blob
    dev = HostDevice(model, source="arrays") # the generated model_data.c compiled in
    rec = dev.run(events)                    # an edgesnn.simulator.Record: every layer's spikes, the state
    exe = driver(sanitize=True)              # a test program built with ASan and UBSan
    res = run_driver(exe, events, blob)      # ... run in its own process

Builds use ``gcc -std=c99 -Wall -Wextra -Werror -pedantic -O2`` (``$EDGESNN_CC`` picks another compiler)
and are cached under ``$EDGESNN_BUILD_CACHE`` (default: a directory in the system temp dir), keyed by a
hash of the compiler, the flags and every source, so a model or runtime change rebuilds and nothing else
does. The sanitizer build runs as a subprocess: an ASan shared library loaded into Python would need
LD_PRELOAD of libasan.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.ctypeslib import ndpointer

from edgesnn.errors import EdgeSNNError, InputError
from edgesnn.kernels import layout as K
from edgesnn.model.program import MAX_EVENTS_PER_STEP, build_fixed
from edgesnn.simulator import Events, Record

from . import blob as B
from . import codegen
from . import status as S

WARN_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
HOST_FLAGS = WARN_FLAGS + ("-O2",)
SHARED_FLAGS = HOST_FLAGS + ("-fPIC", "-shared")
SANITIZE_FLAGS = ("-fsanitize=undefined,address", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g")
RUNTIME_SOURCES = ("edgesnn.h", "edgesnn.c")
HOST_SOURCES = ("esnn_host.h", "esnn_host.c")


class BuildError(EdgeSNNError):
    """The C did not compile (the compiler's messages are in the text)."""


class ToolchainMissing(BuildError):
    """No host C compiler."""


class DeviceStatusError(EdgeSNNError):
    """The runtime returned a status other than ESNN_OK."""

    def __init__(self, status: int, what: str):
        super().__init__(f"{what}: status {status} ({S.name(status)})")
        self.status = int(status)


# ------------------------------------------------------------------ building

def compiler() -> str:
    """The host C compiler, or ToolchainMissing."""
    cc = os.environ.get("EDGESNN_CC", "gcc")
    path = shutil.which(cc)
    if path is None:
        raise ToolchainMissing(f"no C compiler {cc!r} on PATH; install gcc (or set EDGESNN_CC)")
    return path


@lru_cache(maxsize=None)
def _compiler_id(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True)
    return cc + "\n" + out.stdout


def _cache_root() -> Path:
    root = os.environ.get("EDGESNN_BUILD_CACHE")
    if root:
        return Path(root)
    return Path(tempfile.gettempdir()) / f"edgesnn-build-{os.getuid() if hasattr(os, 'getuid') else 0}"


def build(files: dict[str, str | bytes], flags, output: str, cc: str | None = None) -> Path:
    """Compile the .c files of ``files`` ({name: content}, headers included) into ``output`` with
    ``flags``; returns the cached result. The key covers compiler, flags and contents."""
    cc = cc or compiler()
    h = hashlib.sha256(_compiler_id(cc).encode())
    h.update("\0".join(flags).encode() + b"\0" + output.encode())
    for name in sorted(files):
        data = files[name].encode() if isinstance(files[name], str) else files[name]
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    root = _cache_root()
    final = root / h.hexdigest()[:32]
    if (final / output).exists():
        return final / output
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix="tmp-"))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data.encode() if isinstance(data, str) else data)
        sources = sorted(n for n in files if n.endswith(".c"))
        cmd = [cc, *flags, "-I.", *sources, "-o", output]
        res = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if res.returncode != 0:
            raise BuildError(f"{' '.join(cmd)} failed in {tmp}:\n{res.stderr}")
        try:
            tmp.rename(final)   # atomic: a concurrent build of the same key wins or loses whole
        except OSError:
            if not (final / output).exists():
                raise
        return final / output
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def runtime_files() -> dict[str, bytes]:
    files = {f: (codegen.RUNTIME_DIR / f).read_bytes() for f in RUNTIME_SOURCES}
    files.update({f: (codegen.HOST_DIR / f).read_bytes() for f in HOST_SOURCES})
    return files


def _defines(defines) -> tuple:
    return tuple(f"-D{d}" for d in defines)


_GENERATED: dict[str, dict[str, str]] = {}


def _generated(model) -> dict[str, str]:
    """codegen.generate, once per model content and session (a large model's C takes a while)."""
    key = B.model_hash_bytes(model).hex()
    if key not in _GENERATED:
        _GENERATED[key] = codegen.generate(model)
    return _GENERATED[key]


def shared_library(model=None, defines=()) -> Path:
    """The runtime (and the generated model_data.c of ``model``) as a shared library."""
    files = runtime_files()
    if model is not None:
        files.update(_generated(model))
    return build(files, SHARED_FLAGS + _defines(defines), "libedgesnn.so")


def driver(model=None, sanitize: bool = True, defines=()) -> Path:
    """The test driver (host/esnn_driver.c), with ASan + UBSan unless sanitize=False; with ``model``,
    its model_data.c is linked in (run it with blob None)."""
    files = runtime_files()
    files["esnn_driver.c"] = (codegen.HOST_DIR / "esnn_driver.c").read_bytes()
    flags = HOST_FLAGS + (SANITIZE_FLAGS if sanitize else ()) + _defines(defines)
    if model is not None:
        files.update(_generated(model))
        flags += ("-DESNN_DRIVER_ARRAYS",)
    return build(files, flags, "esnn_driver")


# ------------------------------------------------------------------ loading

_I32 = ndpointer(np.int32, flags="C_CONTIGUOUS")
_U32 = ndpointer(np.uint32, flags="C_CONTIGUOUS")
_I64 = ndpointer(np.int64, flags="C_CONTIGUOUS")
_I8 = ndpointer(np.int8, flags="C_CONTIGUOUS")
_U8 = ndpointer(np.uint8, flags="C_CONTIGUOUS")
_VP, _U32T, _I32T = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int32

_SIGNATURES = {
    "esnn_model_check": (_I32T, [_VP]),
    "esnn_model_from_blob": (_I32T, [_VP, _U32T, _VP]),
    "esnn_crc32": (_U32T, [_U8, _U32T]),
    "esnn_n_inputs": (_U32T, [_VP]),
    "esnn_n_outputs": (_U32T, [_VP]),
    "esnn_layer_size": (_U32T, [_VP, _U32T]),
    "esnn_vs_words": (_U32T, [_VP]),
    "esnn_ist_words": (_U32T, [_VP]),
    "esnn_scratch_words": (_U32T, [_VP]),
    "esnn_state_bytes": (_U32T, [_VP]),
    "esnn_state_init": (_I32T, [_VP, _VP, _VP, _U32T]),
    "esnn_state_bind": (_I32T, [_VP, _VP, _VP, _VP, _VP]),
    "esnn_reset": (None, [_VP, _VP]),
    "esnn_step": (_I32T, [_VP, _VP, _VP, _U32T]),
    "esnn_spikes": (_VP, [_VP, _VP, _U32T, ctypes.POINTER(_U32T)]),
    "esnn_v": (_VP, [_VP, _VP, _U32T]),
    "esnn_i": (_VP, [_VP, _VP, _U32T]),
    "esnn_a": (_VP, [_VP, _VP, _U32T]),
    "esnn_decay": (_I32T, [_I32T, _U32T]),
    "esnn_sat_add": (_I32T, [_I32T, _I32T]),
    "esnn_status_str": (ctypes.c_char_p, [_I32T]),
    "esnn_host_sizeof_model": (_U32T, []),
    "esnn_host_sizeof_state": (_U32T, []),
    "esnn_host_run": (_I32T, [_VP, _VP, _I32, _I64, _U32T, _I8, _I32, ctypes.POINTER(_U32T)]),
    "esnn_host_decay_many": (None, [_I32, _U32, _I32, _U32T]),
    "esnn_host_sat_add_many": (None, [_I32, _I32, _I32, _U32T]),
}


@lru_cache(maxsize=None)
def load(path: Path) -> ctypes.CDLL:
    """The library at ``path`` with every function's signature set (pointers are plain addresses, so a
    test may pass NULL or a foreign pointer on purpose)."""
    lib = ctypes.CDLL(str(path))
    for fname, (res, args) in _SIGNATURES.items():
        fn = getattr(lib, fname)
        fn.restype, fn.argtypes = res, args
    return lib


def runtime_lib(defines=()) -> ctypes.CDLL:
    """The runtime alone (models come from blobs), built once per source version and defines."""
    return load(shared_library(None, tuple(defines)))


def model_lib(model, defines=()) -> ctypes.CDLL:
    return load(shared_library(model, tuple(defines)))


def aligned_bytes(data: bytes, offset: int = 0) -> np.ndarray:
    """``data`` copied into memory aligned to 16 bytes plus ``offset`` (to test misaligned blobs)."""
    raw = np.zeros(len(data) + offset + 16, np.uint8)
    start = (-raw.ctypes.data) % 16 + offset
    out = raw[start:start + len(data)]
    out[:] = np.frombuffer(data, np.uint8)
    return out


def load_blob(lib, data: bytes, offset: int = 0):
    """esnn_model_from_blob on a copy of ``data``: (status, model struct buffer, blob buffer). Keep both
    buffers alive while the model is used: the model points into the blob."""
    buf = aligned_bytes(data, offset)
    model = np.zeros(lib.esnn_host_sizeof_model() // 8 + 1, np.uint64)
    st = lib.esnn_model_from_blob(buf.ctypes.data, len(data), model.ctypes.data)
    return st, model, buf


# ------------------------------------------------------------------ running

def as_events(events) -> Events:
    """An Events from an Events, a list of per-step index lists, or a dense (T, ...) count array."""
    if isinstance(events, Events):
        return events
    if isinstance(events, np.ndarray):
        return Events.from_dense(events)
    return Events.from_lists(list(events))


class HostDevice:
    """The C runtime on the host, driven like edgesnn.simulator.Simulator (reset, step, run).

    source="blob": the runtime library, the model loaded from its weight blob (no compile per model);
    source="arrays": the generated model_data.c compiled in, the model its ``esnn_model``.
    ``defines``: extra -D macros for the runtime (e.g. "ESNN_DECAY_32BIT=1").
    """

    def __init__(self, model, source: str = "blob", defines=(), blob: bytes | None = None):
        self.program = build_fixed(model)
        self.tables = B.tables(model, self.program)
        self.source = source
        if source == "blob":
            self.lib = runtime_lib(defines)
            self.blob_bytes = B.pack_tables(self.tables) if blob is None else bytes(blob)
            st, self._model_buf, self._blob = load_blob(self.lib, self.blob_bytes)
            if st != S.OK:
                raise DeviceStatusError(st, "esnn_model_from_blob refused the blob")
            self.model = self._model_buf.ctypes.data
        elif source == "arrays":
            self.lib = model_lib(model, defines)
            self.model = ctypes.addressof(ctypes.c_uint8.in_dll(self.lib, "esnn_model"))
        else:
            raise ValueError(f"source must be 'blob' or 'arrays', got {source!r}")
        lib = self.lib
        self.n_layers = self.tables.n_layers
        self.n_vs, self.n_ist = lib.esnn_vs_words(self.model), lib.esnn_ist_words(self.model)
        self.state_bytes = lib.esnn_state_bytes(self.model)
        self._state = np.zeros(lib.esnn_host_sizeof_state() // 8 + 1, np.uint64)
        self.buffer = np.zeros(self.state_bytes // 4, np.int32)
        st = lib.esnn_state_init(self.model, self.state, self.buffer.ctypes.data, self.state_bytes)
        if st != S.OK:
            raise DeviceStatusError(st, "esnn_state_init refused the model")
        self.vs = self.buffer[:self.n_vs]                           # views of the state the C updates
        self.ist = self.buffer[self.n_vs:self.n_vs + self.n_ist]
        self.sizes = [lib.esnn_layer_size(self.model, l) for l in range(self.n_layers)]
        self.layer_base = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        self.n_inputs = lib.esnn_n_inputs(self.model)
        self.steps = 0

    @property
    def state(self) -> int:
        return self._state.ctypes.data

    # ------------------------------------------------------------ state
    def reset(self):
        self.lib.esnn_reset(self.model, self.state)
        self.steps = 0

    def _layer(self, layer: int) -> int:
        return layer % self.n_layers

    def _values(self, fn, layer) -> np.ndarray | None:
        ptr = fn(self.model, self.state, self._layer(layer))
        if ptr is None:
            return None
        off = (ptr - self.buffer.ctypes.data) // 4
        return self.buffer[off:off + self.sizes[self._layer(layer)]]

    def v(self, layer: int = -1):
        """The layer's membrane (a writable view of the C state, found through esnn_v), or None."""
        return self._values(self.lib.esnn_v, layer)

    def i(self, layer: int = -1):
        return self._values(self.lib.esnn_i, layer)

    def a(self, layer: int = -1):
        return self._values(self.lib.esnn_a, layer)

    def spikes(self, layer: int = -1) -> np.ndarray:
        """The layer's spike indices of the last step (esnn_spikes)."""
        count = ctypes.c_uint32()
        ptr = self.lib.esnn_spikes(self.model, self.state, self._layer(layer), ctypes.byref(count))
        if ptr is None or count.value == 0:
            return np.zeros(0, np.int32)
        return np.ctypeslib.as_array((ctypes.c_int32 * count.value).from_address(ptr)).copy()

    # ------------------------------------------------------------ execution
    def step_status(self, indices) -> int:
        """One step; the runtime's status (nothing raised)."""
        inp = np.ascontiguousarray(indices, np.int32).reshape(-1)
        st = self.lib.esnn_step(self.model, self.state, inp.ctypes.data, inp.size)
        if st == S.OK:
            self.steps += 1
        return st

    def step(self, indices) -> np.ndarray:
        """One step; returns the output layer's spike indices. Raises DeviceStatusError if refused."""
        st = self.step_status(indices)
        if st != S.OK:
            raise DeviceStatusError(st, f"esnn_step refused step {self.steps}")
        return self.spikes(-1)

    def run(self, events, record: str = "all") -> Record:
        """Every step of ``events`` from the current state; the Record holds output spikes and membrane,
        and (record 'spikes' or 'all') every layer's spikes, (record 'all') the whole numeric state."""
        ev = as_events(events)
        if ev.n_steps and np.diff(ev.ptr).max() > MAX_EVENTS_PER_STEP:
            raise InputError(f"a step carries more than {MAX_EVENTS_PER_STEP} events")
        T = ev.n_steps
        spk = np.zeros((T, int(self.layer_base[-1])), np.int8)
        vs = np.zeros((T, self.n_vs), np.int32)
        done = ctypes.c_uint32()
        st = self.lib.esnn_host_run(self.model, self.state, ev.idx, ev.ptr, T, spk, vs, ctypes.byref(done))
        self.steps += done.value
        if st != S.OK:
            raise DeviceStatusError(st, f"esnn_step refused step {done.value} of the run (steps before it "
                                        f"were applied)")
        last = self.n_layers - 1
        v_off = int(self.tables.ltab[last, K.L_V_OFF])
        out_v = vs[:, v_off:v_off + self.sizes[last]].copy()
        out_spk = spk[:, self.layer_base[last]:].copy()
        return Record(out_spk, out_v, spk if record != "output" else None, vs if record == "all" else None)


# ------------------------------------------------------------------ the driver, in its own process

@dataclass
class DriverResult:
    status: int            # of loading the model, or of the first refused step
    done: int              # steps run
    spikes: np.ndarray     # int8 (done, sum of layer sizes)
    state: np.ndarray      # int32 (done, n_vs)
    ist: np.ndarray        # int32 (n_ist,) after the run
    bad_status: int        # status of a step with an index out of range, after the run
    untouched: bool        # that step left v, i, a, r and the spike lists as they were
    stderr: str


def events_file_bytes(events) -> bytes:
    ev = as_events(events)
    return (struct.pack("<II", ev.n_steps, 0) + np.ascontiguousarray(ev.ptr, "<i8").tobytes()
            + np.ascontiguousarray(ev.idx, "<i4").tobytes())


def run_driver(exe: Path, events, blob: bytes | None = None, timeout: float = 120) -> DriverResult:
    """Run the driver on ``events`` with the model of ``blob`` (None: the linked-in model). Raises
    BuildError if it crashes or a sanitizer reports anything."""
    with tempfile.TemporaryDirectory(prefix="esnn-drv-") as d:
        d = Path(d)
        (d / "events.bin").write_bytes(events_file_bytes(events))
        if blob is not None:
            (d / "model.blob").write_bytes(blob)
        env = dict(os.environ, ASAN_OPTIONS="abort_on_error=0:halt_on_error=1:detect_leaks=1",
                   UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
        res = subprocess.run([str(exe), "model.blob" if blob is not None else "-", "events.bin", "out.bin"],
                             cwd=d, capture_output=True, text=True, timeout=timeout, env=env)
        if res.returncode != 0 or "runtime error" in res.stderr or "Sanitizer" in res.stderr:
            raise BuildError(f"{exe} failed (exit {res.returncode}):\n{res.stderr}")
        out = (d / "out.bin").read_bytes()
    st, done, width, n_vs, n_ist = struct.unpack_from("<iIIII", out, 0)
    pos = 20
    spikes = np.frombuffer(out, np.int8, done * width, pos).reshape(done, width)
    pos += done * width
    state = np.frombuffer(out, "<i4", done * n_vs, pos).reshape(done, n_vs)
    pos += 4 * done * n_vs
    ist = np.frombuffer(out, "<i4", n_ist, pos)
    pos += 4 * n_ist
    bad, untouched = struct.unpack_from("<iI", out, pos)
    return DriverResult(st, done, spikes.copy(), state.astype(np.int32), ist.astype(np.int32), bad,
                        bool(untouched), res.stderr)


# ------------------------------------------------------------------ learning (runtime/esnn_learn.c)

LEARN_SOURCES = ("esnn_learn.h", "esnn_learn.c")
LS_NAMES = ("e", "e_rec", "y", "q_rate", "y_loc", "m", "c", "c_rec", "acc")   # ESNN_LS_* 0..8, the Learner's names


def learn_driver(sanitize: bool = True, defines=()) -> Path:
    """The learning driver (host/esnn_learn_driver.c with runtime/esnn_learn.c), ASan + UBSan unless
    sanitize=False."""
    files = runtime_files()
    files.update({f: (codegen.RUNTIME_DIR / f).read_bytes() for f in LEARN_SOURCES})
    files["esnn_learn_driver.c"] = (codegen.HOST_DIR / "esnn_learn_driver.c").read_bytes()
    flags = HOST_FLAGS + (SANITIZE_FLAGS if sanitize else ()) + _defines(defines)
    return build(files, flags, "esnn_learn_driver")


def learn_config(learner) -> list[int]:
    """esnn_learn_config_t (17 int32 words, Learner.CONFIG_FIELDS order) of an edgesnn.learning.Learner in
    mode fixed."""
    return learner.config()


@dataclass
class LearnSnapshot:
    done: int                 # steps run when it was taken
    status: int               # of the last step
    updates: int              # synapses updated (modulo 2^32)
    wb: np.ndarray            # the int16 pool
    state: dict               # {(layer, name): int32 array} for the learning state the C keeps


def run_learn_driver(exe: Path, blob: bytes, cfg, eta, mask, events, labels, rewards, flags, every: int,
                     timeout: float = 120) -> tuple[int, list[LearnSnapshot]]:
    """Run the learning driver: (init status, snapshots after every ``every`` steps and the last).
    eta / mask: per layer (-1: default eta); labels, rewards (INT32_MIN: auto), flags: per step, applied
    before it in this order: bit 0 reset, bit 1 learning on, bit 3 every learning layer masked (else
    ``mask``), bit 2 esnn_learn_end_trial, bits 8..15 weight decay kd. Raises BuildError if it crashes or
    a sanitizer reports anything."""
    ev = as_events(events)
    T = ev.n_steps
    words = [np.asarray(cfg, np.int64), [len(eta)], eta, mask, [T, every, ev.idx.size], ev.ptr, ev.idx,
             labels, rewards, flags]
    data = np.concatenate([np.asarray(w, np.int64).ravel() for w in words])
    data = np.where(data >= 2**31, data - 2**32, data).astype("<i4").tobytes()
    with tempfile.TemporaryDirectory(prefix="esnn-learn-") as d:
        d = Path(d)
        (d / "model.blob").write_bytes(blob)
        (d / "input.bin").write_bytes(data)
        env = dict(os.environ, ASAN_OPTIONS="abort_on_error=0:halt_on_error=1:detect_leaks=1",
                   UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
        res = subprocess.run([str(exe), "model.blob", "input.bin", "out.bin"], cwd=d, capture_output=True,
                             text=True, timeout=timeout, env=env)
        if res.returncode != 0 or "runtime error" in res.stderr or "Sanitizer" in res.stderr:
            raise BuildError(f"{exe} failed (exit {res.returncode}):\n{res.stderr}")
        w = np.frombuffer((d / "out.bin").read_bytes(), "<i4").astype(np.int64)
    init, n_wb = int(w[0]), int(w[1])
    pos, snaps = 2, []
    n_layers = len(eta)
    while pos < w.size:
        done, st, upd = int(w[pos]), int(w[pos + 1]), int(w[pos + 2]) & 0xFFFFFFFF
        pos += 3
        wb = w[pos:pos + n_wb].astype(np.int16)
        pos += n_wb
        state = {}
        for l in range(n_layers):
            for name in LS_NAMES:
                n = int(w[pos])
                pos += 1
                if n:
                    state[(l, name)] = w[pos:pos + n].astype(np.int32)
                pos += n
        snaps.append(LearnSnapshot(done, st, upd, wb, state))
    return init, snaps
