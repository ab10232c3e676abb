"""The device link (esnn_link.c) on the host: the protocol's C implementation behind a pipe.

    exe = host_device(model)                      # boards/host_main.c + esnn_link.c + the runtime, built
    out = run_stream(exe, request_bytes)          # every reply byte for a whole request stream
    with HostLinkDevice(model) as dev:            # a conversation: dev.write(b), dev.read(n, timeout)
        ...

The model is compiled in (model_data.c from codegen). Builds go through hostlib.build (cached, -Werror;
``sanitize=True`` adds ASan and UBSan). Options map to host_main's arguments: max_payload, max_events,
max_steps, upload (bytes of each upload buffer; 0: none), state (bytes of state memory), name, clock.

The libFuzzer target (fuzz/link_fuzz.c, clang):

    exe = build_fuzzer()                          # the kws preset compiled in, ASan + UBSan
    write_seeds("corpus")                         # valid requests of every type, an upload, faults
    res = run_fuzzer(exe, "corpus", max_total_time=60)   # runs, cov, ft, execs_per_s, returncode
"""
from __future__ import annotations

import os
import re
import select
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

from edgesnn.device.protocol import frame
from edgesnn.errors import EdgeSNNError

from . import codegen, hostlib

BOARD_DIR = Path(__file__).parent / "boards"
LINK_SOURCES = ("esnn_link.h", "esnn_link.c")


class HostDeviceError(EdgeSNNError):
    """The host device did not start, timed out or closed."""


def link_files() -> dict[str, bytes]:
    files = {f: (codegen.RUNTIME_DIR / f).read_bytes() for f in hostlib.RUNTIME_SOURCES + LINK_SOURCES}
    return files


def host_device(model, sanitize: bool = False) -> Path:
    """Build (cached) the host device for ``model``; returns the executable."""
    files = link_files()
    files["host_main.c"] = (BOARD_DIR / "host_main.c").read_bytes()
    files.update(hostlib._generated(model))
    flags = hostlib.HOST_FLAGS + (hostlib.SANITIZE_FLAGS if sanitize else ())
    return hostlib.build(files, flags, "host_device")


def _args(opts: dict) -> list[str]:
    names = {"max_payload": "--max-payload", "max_events": "--max-events", "max_steps": "--max-steps",
             "upload": "--upload", "state": "--state", "name": "--name", "clock": "--clock"}
    out = []
    for k, v in opts.items():
        if k not in names:
            raise TypeError(f"unknown host device option {k!r} (one of {sorted(names)})")
        out += [names[k], str(v)]
    return out


def run_stream(exe, data: bytes, timeout: float = 60, **opts) -> bytes:
    """Feed ``data`` to a fresh host device, close its input, return everything it wrote."""
    res = subprocess.run([str(exe), *_args(opts)], input=data, capture_output=True, timeout=timeout)
    if res.returncode != 0:
        raise HostDeviceError(f"host device exited with {res.returncode}: {res.stderr.decode(errors='replace')}")
    return res.stdout


class HostLinkDevice:
    """A running host device: ``write`` bytes to it, ``read`` its replies (like qemu.Session)."""

    def __init__(self, model=None, exe=None, sanitize: bool = False, **opts):
        exe = exe or host_device(model, sanitize=sanitize)
        self.proc = subprocess.Popen([str(exe), *_args(opts)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)

    def write(self, data: bytes):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read(self, n: int, timeout: float = 10) -> bytes:
        buf = bytearray()
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise HostDeviceError(f"timed out waiting for {n - len(buf)} more bytes (got {bytes(buf)!r})")
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise HostDeviceError("the host device closed its output")
            buf += chunk
        return bytes(buf)

    def close(self) -> int:
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()
            try:
                return self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        finally:
            for f in (self.proc.stdout, self.proc.stderr):
                if f:
                    f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------ the fuzzer (firmware_gen/fuzz)

FUZZ_DIR = Path(__file__).parent / "fuzz"
FUZZ_CC = os.environ.get("EDGESNN_FUZZ_CC", "clang")
FUZZ_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-fno-omit-frame-pointer",
              "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all")
FUZZ_MAX_PAYLOAD = 512          # link_fuzz.c's MAX_PAYLOAD


def fuzz_model():
    """The compiled-in model of the fuzz target: the smallest preset (kws: recurrent + dense)."""
    from edgesnn.model import presets
    from edgesnn.model.quantize import quantize
    return quantize(presets.make("kws"))


def fuzz_upload_model():
    """A tiny model of every other layer kind (conv, pool, flatten, LI readout) for the upload seeds."""
    import numpy as np
    from edgesnn.model.quantize import quantize
    from edgesnn.model.spec import Conv2d, Dense, Flatten, Network, Neuron, Recurrent, SumPool2d
    rng = np.random.default_rng(5)
    lif = Neuron(kind="alif", threshold=0.6, refractory=1e-3)
    layers = [Conv2d(rng.normal(0, 0.8, (2, 1, 3, 3)), stride=1, padding=1, neuron=lif, plastic=True),
              SumPool2d(2, weight=0.8, neuron=Neuron(kind="cuba", threshold=0.7)), Flatten(),
              Recurrent(rng.normal(0, 0.6, (6, 18)), rng.normal(0, 0.4, (6, 6)), neuron=Neuron(kind="lif")),
              Dense(rng.normal(0, 0.6, (3, 6)), neuron=Neuron(kind="li"))]
    return quantize(Network((1, 6, 6), layers, dt=1e-3, seed=5))


def build_fuzzer(model=None) -> Path:
    """link_fuzz.c + esnn_link.c + the runtime + the model, with libFuzzer, ASan and UBSan (clang)."""
    cc = shutil.which(FUZZ_CC)
    if cc is None:
        raise hostlib.ToolchainMissing(f"{FUZZ_CC} not found: install clang and libclang-rt-14-dev "
                                       f"(.ci/setup-toolchain.sh)")
    files = link_files()
    files["link_fuzz.c"] = (FUZZ_DIR / "link_fuzz.c").read_bytes()
    files.update(hostlib._generated(model if model is not None else fuzz_model()))
    return hostlib.build(files, FUZZ_FLAGS, "link_fuzz", cc=cc)


def _record(kind: int, data: bytes) -> bytes:
    return struct.pack("<BH", kind, len(data)) + data


def seed_inputs(model=None) -> dict[str, bytes]:
    """Seed inputs for link_fuzz: valid requests of every message type, raw (mode 0) and as records
    (mode 1), a whole upload of a second model, and the faults (garbage, bad version, too long, CRC)."""
    from . import blob as B
    model = model if model is not None else fuzz_model()
    n_in, n_layers = int(model.network.n_inputs), len(model.network.layers)
    up = B.pack(fuzz_upload_model())
    step1 = struct.pack("<BHBH3H", 7, 1, 0, 3, 0, 1, n_in - 1)
    step3 = (struct.pack("<BH", 7, 3) + struct.pack("<BH", 0, 0) + struct.pack("<BHH2H", 1, 5, 2, 3, 3)
             + struct.pack("<BHhH", 3, 1, -2, 1) + struct.pack("<H", 4))
    step_up = struct.pack("<BH", 7, 2) + struct.pack("<BH4H", 0, 4, 0, 7, 14, 35) + struct.pack("<BH", 0, 0)
    reqs = {
        "hello": [(0x01, b"")], "reset": [(0x02, b"")], "stats": [(0x03, b"\x00"), (0x03, b"\x01")],
        "echo": [(0x04, b"0123456789")], "step": [(0x10, step1), (0x10, step3), (0x10, step1)],
        "learn": [(0x30, b"\x00")], "unknown": [(0x7E, b"")],
        "read_weights": [(0x31, struct.pack("<HBIH", l, w, 0, 16)) for l in range(n_layers) for w in (0, 1)],
        "read_state": [(0x32, struct.pack("<HBIH", l, f, 0, 8)) for l in range(n_layers) for f in (0, 1, 2)],
        "abort": [(0x20, struct.pack("<II", 100, 0)), (0x21, struct.pack("<I", 0) + b"x" * 10), (0x23, b"")],
    }
    seeds = {}
    for name, msgs in reqs.items():
        seeds[f"raw_{name}"] = b"\x00" + b"".join(frame(t, i, p) for i, (t, p) in enumerate(msgs))
        seeds[f"rec_{name}"] = b"\x01" + b"".join(_record(t, p) for t, p in msgs)
    chunks = [up[i:i + FUZZ_MAX_PAYLOAD - 4] for i in range(0, len(up), FUZZ_MAX_PAYLOAD - 4)]
    upload = [(0x20, struct.pack("<II", len(up), zlib.crc32(up)))]
    upload += [(0x21, struct.pack("<I", i * (FUZZ_MAX_PAYLOAD - 4)) + c) for i, c in enumerate(chunks)]
    upload += [(0x22, b""), (0x10, step_up), (0x31, struct.pack("<HBIH", 0, 0, 0, 18)),
               (0x32, struct.pack("<HBIH", 4, 0, 0, 3)), (0x03, b"\x01")]
    seeds["raw_upload"] = b"\x00" + b"".join(frame(t, i, p) for i, (t, p) in enumerate(upload))
    seeds["rec_upload"] = b"\x01" + b"".join(_record(t, p) for t, p in upload)
    seeds["rec_blob"] = b"\x01" + _record(0xF2, up) + _record(0x10, step_up) + _record(0x10, step_up)
    seeds["raw_faults"] = (b"\x00garbage\xa5\xa5\x5a" + frame(1, 1, version=2) + frame(4, 2, b"x" * 600)
                           + frame(1, 3)[:-1] + b"\x00" + frame(3, 4, b"\x00")[:7] + frame(1, 5))
    seeds["rec_faults"] = (b"\x01" + _record(0xF1, bytes([1, 2, 0])) + _record(0xF1, bytes([1, 1, 1]))
                           + _record(0xF0, b"\xa5\x5a\x01\x01") + _record(0x01, b""))
    return seeds


def write_seeds(directory, model=None) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name, data in seed_inputs(model).items():
        (d / name).write_bytes(data)
    return d


_STATS = re.compile(r"#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED)\s+cov: (\d+) ft: (\d+).*?exec/s: (\d+)")


def run_fuzzer(exe, corpus, runs: int | None = None, max_total_time: int | None = None,
               timeout: float = 600, extra=()) -> dict:
    """Run the fuzz target on ``corpus`` (a directory; new inputs are added to it). Returns runs, cov,
    ft, exec/s, seconds, returncode and the log's tail; returncode != 0 means a crash or a sanitizer
    report (the log says which)."""
    args = [str(exe), str(corpus), "-print_final_stats=1", f"-max_len={4 * 4096}"]
    if runs is not None:
        args.append(f"-runs={int(runs)}")
    if max_total_time is not None:
        args.append(f"-max_total_time={int(max_total_time)}")
    args += list(extra)
    t0 = time.monotonic()
    res = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    seconds = time.monotonic() - t0
    log = res.stderr
    last = _STATS.findall(log)
    out = {"returncode": res.returncode, "seconds": seconds, "log_tail": "\n".join(log.splitlines()[-40:])}
    if last:
        r, cov, ft, eps = last[-1]
        out.update(runs=int(r), cov=int(cov), ft=int(ft), execs_per_s=int(eps))
    m = re.search(r"stat::number_of_executed_units:\s+(\d+)", log)
    if m:
        out["runs"] = int(m.group(1))
    m = re.search(r"stat::average_exec_per_sec:\s+(\d+)", log)
    if m:
        out["execs_per_s"] = int(m.group(1))
    return out
