"""Run firmware on an emulated board (qemu-system-arm), always with a timeout.

    res = run(elf, profile, timeout=60)            # UART output to a file, exit code from semihosting
    with Session(elf, profile) as s:               # UART on a local socket, for a conversation
        s.sock.sendall(b"...")
    with Session(elf, profile, tcp=True) as s:     # UART on TCP 127.0.0.1 at a free port, for a client:
        dev = edgesnn.device.connect(s.url)        # s.url is socket://127.0.0.1:PORT

Every run uses ``-semihosting-config enable=on,target=native`` (the firmware's board_exit ends QEMU with
an exit code through SYS_EXIT_EXTENDED) and, unless asked otherwise, ``-icount shift=0``: one instruction
is one nanosecond of virtual time, so SysTick at ``systick_hz`` advances ``systick_hz / 1e9`` ticks per
instruction and ``instructions = ticks * 1e9 / (systick_hz * 2**shift)`` (docs/devices.md).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgesnn.errors import EdgeSNNError

from .profiles import Profile, load as load_profile

QEMU = "qemu-system-arm"


class QemuError(EdgeSNNError):
    """QEMU is missing, or the firmware did not run to its end."""


def qemu_binary() -> str:
    path = shutil.which(os.environ.get("EDGESNN_QEMU", QEMU))
    if path is None:
        raise QemuError(f"{QEMU} is not installed (Debian: apt-get install qemu-system-arm; "
                        f".ci/setup-toolchain.sh installs it)")
    return path


def _profile(p) -> Profile:
    return p if isinstance(p, Profile) else load_profile(p)


def command(elf, profile, serial: str, icount_shift: int | None = 0) -> list[str]:
    """The qemu-system-arm command line for ``elf`` on ``profile`` with UART 0 on ``serial`` (a -serial
    argument such as ``file:out.bin`` or ``unix:PATH,server=on,wait=off``)."""
    prof = _profile(profile)
    if not prof.emulated:
        raise QemuError(f"profile {prof.name} is a real board; QEMU emulates only "
                        f"{', '.join(n for n in _emulated_names())}")
    cmd = [qemu_binary(), "-M", prof.qemu["machine"], "-display", "none", "-monitor", "none",
           "-serial", serial, "-semihosting-config", "enable=on,target=native", "-no-reboot"]
    if icount_shift is not None:
        cmd += ["-icount", f"shift={int(icount_shift)}"]
    cmd += list(prof.qemu.get("extra_args", []))
    cmd += ["-kernel", str(elf)]
    return cmd


def _emulated_names():
    from .profiles import all_profiles
    return [p.name for p in all_profiles() if p.emulated]


def instructions(ticks, profile, shift: int = 0):
    """SysTick ticks under -icount shift=``shift`` -> executed instructions."""
    prof = _profile(profile)
    return ticks * 1e9 / (prof.qemu["systick_hz"] * 2**shift)


@dataclass
class RunResult:
    returncode: int        # QEMU's exit status: the firmware's board_exit code
    output: bytes          # everything the firmware sent on its UART
    stderr: str
    seconds: float


def run(elf, profile, timeout: float = 120, icount_shift: int | None = 0) -> RunResult:
    """Run ``elf`` until it exits through semihosting; its UART output goes to a file. Raises QemuError
    on a timeout (QEMU is killed) or if QEMU cannot start."""
    with tempfile.TemporaryDirectory(prefix="esnn-qemu-") as d:
        out = Path(d) / "uart.bin"
        cmd = command(elf, profile, f"file:{out}", icount_shift)
        t0 = time.monotonic()
        try:
            res = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise QemuError(f"the firmware did not finish within {timeout:.0f} s under QEMU "
                            f"({' '.join(cmd)}); it was stopped") from None
        data = out.read_bytes() if out.exists() else b""
        return RunResult(res.returncode, data, res.stderr.decode(errors="replace"), time.monotonic() - t0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Session:
    """QEMU running ``elf`` with UART 0 on a UNIX socket in a temporary directory (no TCP port to
    collide with a parallel test); ``sock`` is connected. QEMU is killed on exit from the block.

    With ``tcp=True`` the UART is a TCP server on 127.0.0.1 at a free port instead
    (``-serial tcp:127.0.0.1:PORT,server=on,wait=off,nodelay=on``): ``url`` is
    ``socket://127.0.0.1:PORT`` for edgesnn.device.connect (or any client; QEMU accepts a new connection
    after one closes) and ``sock`` is None. Bytes the firmware sends while no client is connected are lost."""

    def __init__(self, elf, profile, icount_shift: int | None = None, timeout: float = 10, tcp: bool = False):
        self._dir = tempfile.TemporaryDirectory(prefix="esnn-qemu-")
        self.url = None
        self.sock = None
        if tcp:
            self._start_tcp(elf, profile, icount_shift, timeout)
            return
        path = Path(self._dir.name) / "uart.sock"
        cmd = command(elf, profile, f"unix:{path},server=on,wait=off", icount_shift)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
                    self.close()
                    raise QemuError(f"QEMU did not open its UART socket: {' '.join(cmd)}\n{err}") from None
                time.sleep(0.02)

    def _start_tcp(self, elf, profile, icount_shift, timeout: float):
        """QEMU with the UART on a TCP server; waits until it accepts a connection. The port is found
        free just before QEMU binds it: if another process takes it in between, QEMU fails and a new
        port is tried."""
        last = ""
        for _ in range(5):
            port = _free_port()
            # nodelay: without it each small reply waits for the peer's delayed ACK (~40 ms a round trip)
            cmd = command(elf, profile, f"tcp:127.0.0.1:{port},server=on,wait=off,nodelay=on", icount_shift)
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    # a probe: QEMU accepts it, sees it close, and listens again for the real client
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    self.url = f"socket://127.0.0.1:{port}"
                    return
                except OSError:
                    time.sleep(0.02)
            if self.proc.poll() is None:
                self.close()
                raise QemuError(f"QEMU did not open its UART on TCP port {port}: {' '.join(cmd)}")
            last = self.proc.stderr.read().decode(errors="replace")
            for f in (self.proc.stdout, self.proc.stderr):
                f.close()
        self._dir.cleanup()
        raise QemuError(f"QEMU could not open a TCP port for its UART: {last}")

    def read(self, n: int, timeout: float = 10) -> bytes:
        """Exactly ``n`` bytes, or QemuError after ``timeout`` seconds (UNIX socket sessions)."""
        buf = bytearray()
        deadline = time.monotonic() + timeout
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QemuError(f"timed out after {timeout} s waiting for {n - len(buf)} more bytes from "
                                f"the board (got {bytes(buf)!r})")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(n - len(buf))
            except socket.timeout:
                continue
            if not chunk:
                raise QemuError("QEMU closed the UART socket (the firmware exited or QEMU stopped)")
            buf += chunk
        return bytes(buf)

    def close(self):
        try:
            if self.sock is not None:
                self.sock.close()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            finally:
                for f in (self.proc.stdout, self.proc.stderr):
                    if f:
                        f.close()
                self._dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
