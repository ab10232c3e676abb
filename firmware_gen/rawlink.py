"""The provisional frame format of the application firmware (board/app_main.c), host side.

A stand-in until the device link and its wire protocol exist: enough to drive the exported firmware
step by step over a byte stream and to test its interrupt-driven UART reception. Frames, both ways:
0xE5, command, length (uint16 LE), payload, checksum (low byte of the sum of command, length bytes and
payload). See board/app_main.c for the commands.
"""
from __future__ import annotations

import struct

from edgesnn.errors import EdgeSNNError

SYNC = 0xE5
ERRORS = {1: "checksum", 2: "unknown command", 3: "frame too long"}


class LinkError(EdgeSNNError):
    """The board answered something unexpected, or nothing."""


def frame(cmd: bytes, payload: bytes = b"") -> bytes:
    head = cmd + struct.pack("<H", len(payload))
    return bytes([SYNC]) + head + payload + bytes([sum(head + payload) & 0xFF])


class RawLink:
    """Over any object with ``read(n, timeout)`` and ``sock.sendall`` / ``write`` (qemu.Session)."""

    def __init__(self, port):
        self.port = port

    def _send(self, data: bytes):
        if hasattr(self.port, "sock"):
            self.port.sock.sendall(data)
        else:
            self.port.write(data)

    def receive(self, timeout: float = 10) -> tuple[bytes, bytes]:
        while self.port.read(1, timeout)[0] != SYNC:
            pass
        head = self.port.read(3, timeout)
        cmd, (n,) = head[:1], struct.unpack("<H", head[1:])
        payload = self.port.read(n, timeout)
        if self.port.read(1, timeout)[0] != sum(head + payload) & 0xFF:
            raise LinkError(f"bad checksum on a {cmd!r} frame from the board")
        if cmd == b"E":
            raise LinkError(f"the board refused the frame: {ERRORS.get(payload[0], payload[0])}")
        return cmd, payload

    def hello(self, retries: int = 50, interval: float = 0.2) -> dict:
        """Ask for the hello frame until it comes (a board may drop bytes sent before its UART is on)."""
        last = None
        for _ in range(retries):
            self._send(frame(b"H"))
            try:
                cmd, p = self.receive(timeout=interval)
            except EdgeSNNError as e:
                last = e
                continue
            if cmd == b"H":
                version, n_in, n_out, n_layers, clock = struct.unpack_from("<5I", p)
                return {"version": version, "n_inputs": n_in, "n_outputs": n_out, "n_layers": n_layers,
                        "clock_hz": clock, "hash": p[20:52].hex()}
        raise LinkError(f"no hello from the board after {retries} tries ({last})")

    def drain(self, quiet: float = 0.1):
        """Discard whatever the board sends until it is quiet (e.g. several hello answers)."""
        while True:
            try:
                self.port.read(1, quiet)
            except EdgeSNNError:
                return

    def reset(self):
        self._send(frame(b"R"))
        cmd, p = self.receive()
        if cmd != b"R":
            raise LinkError(f"expected an 'R' frame, got {cmd!r}")

    def step(self, indices) -> tuple[int, int, list[int]]:
        """One step: (status, SysTick ticks, output spike indices)."""
        idx = [int(i) for i in indices]
        self._send(frame(b"S", struct.pack(f"<{len(idx)}H", *idx)))
        cmd, p = self.receive()
        if cmd != b"S":
            raise LinkError(f"expected an 'S' frame, got {cmd!r}")
        status, ticks, count = struct.unpack_from("<iIH", p)
        out = list(struct.unpack_from(f"<{count}H", p, 10))
        return status, ticks, out

