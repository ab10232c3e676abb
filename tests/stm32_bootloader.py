"""An emulated STM32F407 system-memory boot loader (ST AN3155, device side) on a real pseudo-terminal.

A test double of a chip these machines do not have: the host side (firmware_gen.stm32boot) opens
``chip.port`` (the pty's slave, in raw mode) with pyserial exactly as it would open a USB-serial adapter,
and this thread answers on the master side, byte by byte, as the part's ROM does:

- nothing is answered before the init byte 0x7F (other bytes are ignored, as during baud detection);
  then ACK 0x79;
- a command is its code and the complement; a wrong complement or an unknown code gets NACK 0x1F;
- Get answers version 3.1 and the commands of the F4's boot loader (Extended Erase 0x44, not 0x43;
  ``extended_erase=False`` gives a part with the older Erase 0x43); Get Version 3.1 and option bytes
  0, 0; Get ID N = 1 and the product ID 0x0413;
- an address is 4 bytes MSB first and their XOR: a wrong checksum, or an address outside the memory
  map, gets NACK;
- memory map: flash 0x08000000 (1 MiB, sectors 4 x 16 KiB, 64 KiB, 7 x 128 KiB, erased state 0xFF),
  system memory 0x1FFF0000 (read only), OTP, the unique ID and flash size register (0x1FFF7A22: 1024 KiB),
  option bytes, SRAM 0x20000000 (128 KiB; the boot loader keeps the first 12 KiB for itself: writes
  there are refused);
- Write Memory: N - 1, N data bytes, XOR; a 4-byte aligned address and N a multiple of 4 (the flash
  is programmed in words); flash programming can only clear bits (the result is old AND new, as on
  the F4's NOR flash: a byte written twice without an erase is corrupted, which the host's verify
  catches); a write-protected sector (``write_protected``) is left as it is and the block is NACKed;
- Extended Erase: 0xFFFF + 0x00 (mass erase), or N - 1 (2 bytes) and N sector numbers (2 bytes each)
  and the XOR of all of them; a protected sector or a sector number beyond the part refuses the whole
  command (nothing is erased); Erase 0x43 the same with one-byte numbers;
- read protection (``read_protected``): Read Memory, Write Memory and Go are NACKed after the command;
- Go: ACK after the address, then the part runs the program and the boot loader answers nothing more.

Faults to test the host with: ``silent`` (a part not in its boot loader: nothing is answered),
``line_errors`` (a list of Write Memory data phases, counted from 1, in which one received data byte is
corrupted on the line: the checksum then fails and the block is NACKed).
"""
from __future__ import annotations

import os
import select
import threading
import tty

ACK, NACK = 0x79, 0x1F
FLASH_BASE = 0x08000000
F407_SECTORS = (16 * 1024,) * 4 + (64 * 1024,) + (128 * 1024,) * 7
PID = 0x0413
VERSION = 0x31
COMMANDS_EXT = (0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x44, 0x63, 0x73, 0x82, 0x92)
COMMANDS_OLD = (0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x43, 0x63, 0x73, 0x82, 0x92)


class _Stop(Exception):
    pass


class _Timeout(Exception):
    pass


def _xor(data) -> int:
    x = 0
    for b in data:
        x ^= b
    return x


class EmulatedSTM32:
    """``with EmulatedSTM32() as chip: flash_binary(chip.port, image); chip.flash_bytes(...)``"""

    def __init__(self, sectors=F407_SECTORS, write_protected=(), read_protected=False, silent=False,
                 extended_erase=True, line_errors=(), byte_timeout: float = 5.0):
        self.sectors = tuple(sectors)
        self.flash_size = sum(self.sectors)
        self.flash = bytearray(b"\xff" * self.flash_size)
        self.sram = bytearray(128 * 1024)
        self.sysmem = bytearray(range(256)) * (0x7800 // 256)
        self.otp = bytearray(b"\xff" * 528)
        self.uid = bytearray(bytes.fromhex("0123456789abcdef01234567") + b"\xff" * 6
                             + (self.flash_size // 1024).to_bytes(2, "little"))   # 0x1FFF7A10 .. 0x1FFF7A23
        self.options = bytearray(b"\xaa\xcf\xff\xff\xff\x0f\xff\xff" * 2)
        self.write_protected = set(write_protected)
        self.read_protected = read_protected
        self.silent = silent
        self.commands = COMMANDS_EXT if extended_erase else COMMANDS_OLD
        self.line_errors = set(line_errors)
        self.byte_timeout = byte_timeout
        self.log = []                 # (command name, address or None, "ACK" / "NACK" + reason)
        self.erased = []              # sector numbers erased, in order ("mass" for a mass erase)
        self.jumped_to = None
        self.initialised = False
        self._writes = 0
        self._stop = threading.Event()
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self._thread = threading.Thread(target=self._serve, name="emulated-stm32", daemon=True)
        self.error = None

    # ------------------------------------------------------------ life

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------ bytes

    def _get(self, n: int = 1, timeout: float | None = None) -> bytes:
        buf = bytearray()
        waited = 0.0
        limit = self.byte_timeout if timeout is None else timeout
        while len(buf) < n:
            if self._stop.is_set():
                raise _Stop
            r, _, _ = select.select([self.master], [], [], 0.05)
            if not r:
                waited += 0.05
                if limit is not None and waited >= limit:
                    raise _Timeout
                continue
            waited = 0.0
            try:
                chunk = os.read(self.master, n - len(buf))
            except OSError:            # the slave side went away for a moment
                continue
            buf += chunk
        return bytes(buf)

    def _put(self, data):
        os.write(self.master, bytes(data))

    def _ack(self, what, addr=None):
        self.log.append((what, addr, "ACK"))
        self._put([ACK])

    def _nack(self, what, addr=None, why=""):
        self.log.append((what, addr, "NACK " + why))
        self._put([NACK])

    # ------------------------------------------------------------ memory map

    def _regions(self):
        """(start, buffer, readable, writable-from offset or None)"""
        return [(FLASH_BASE, self.flash, "flash"), (0x1FFF0000, self.sysmem, "rom"),
                (0x1FFF7800, self.otp, "rom"), (0x1FFF7A10, self.uid, "rom"),
                (0x1FFFC000, self.options, "rom"), (0x20000000, self.sram, "sram")]

    def _region(self, addr, n=1):
        for start, buf, kind in self._regions():
            if start <= addr and addr + n <= start + len(buf):
                return start, buf, kind
        return None

    def _sector_of(self, offset):
        start = 0
        for i, size in enumerate(self.sectors):
            if start <= offset < start + size:
                return i, start, size
            start += size
        raise ValueError(offset)

    def flash_bytes(self, address=FLASH_BASE, n=None) -> bytes:
        off = address - FLASH_BASE
        return bytes(self.flash[off:off + (n if n is not None else self.flash_size - off)])

    # ------------------------------------------------------------ the boot loader

    def _serve(self):
        try:
            while not self._stop.is_set():
                try:
                    self._one()
                except _Timeout:
                    continue              # an unfinished command is dropped; wait for the next
        except _Stop:
            pass
        except Exception as e:            # surfaced to the test through .error
            self.error = e

    def _one(self):
        if self.silent or self.jumped_to is not None:
            self._get(1, timeout=None)
            return
        if not self.initialised:
            if self._get(1, timeout=None)[0] == 0x7F:
                self.initialised = True
                self._ack("init")
            return
        code = self._get(1, timeout=None)[0]
        comp = self._get(1)[0]
        if comp != code ^ 0xFF:
            return self._nack("command", None, f"complement 0x{comp:02X} of 0x{code:02X}")
        if code not in self.commands:
            return self._nack("command", None, f"unknown 0x{code:02X}")
        handler = {0x00: self._cmd_get, 0x01: self._cmd_get_version, 0x02: self._cmd_get_id,
                   0x11: self._cmd_read, 0x21: self._cmd_go, 0x31: self._cmd_write,
                   0x43: self._cmd_erase, 0x44: self._cmd_ext_erase}.get(code)
        if handler is None:
            return self._nack("command", None, f"0x{code:02X} not emulated")
        handler()

    def _cmd_get(self):
        self._ack("Get")
        self._put(bytes([len(self.commands), VERSION]) + bytes(self.commands) + bytes([ACK]))

    def _cmd_get_version(self):
        self._ack("Get Version")
        self._put(bytes([VERSION, 0, 0, ACK]))

    def _cmd_get_id(self):
        self._ack("Get ID")
        self._put(bytes([1]) + PID.to_bytes(2, "big") + bytes([ACK]))

    def _address(self, what):
        b = self._get(5)
        addr = int.from_bytes(b[:4], "big")
        if _xor(b[:4]) != b[4]:
            self._nack(what, addr, "address checksum")
            return None
        return addr

    def _cmd_read(self):
        if self.read_protected:
            return self._nack("Read Memory", None, "read protection")
        self._ack("Read Memory")
        addr = self._address("Read Memory")
        if addr is None:
            return
        if self._region(addr) is None:
            return self._nack("Read Memory", addr, "address")
        self._ack("Read Memory", addr)
        n, comp = self._get(2)
        if comp != n ^ 0xFF:
            return self._nack("Read Memory", addr, "length complement")
        reg = self._region(addr, n + 1)
        if reg is None:
            return self._nack("Read Memory", addr, "range")
        start, buf, _ = reg
        self._ack("Read Memory", addr)
        self._put(buf[addr - start:addr - start + n + 1])

    def _cmd_go(self):
        if self.read_protected:
            return self._nack("Go", None, "read protection")
        self._ack("Go")
        addr = self._address("Go")
        if addr is None:
            return
        reg = self._region(addr)
        if reg is None or reg[2] not in ("flash", "sram"):
            return self._nack("Go", addr, "address")
        self._ack("Go", addr)
        self.jumped_to = addr

    def _cmd_write(self):
        if self.read_protected:
            return self._nack("Write Memory", None, "read protection")
        self._ack("Write Memory")
        addr = self._address("Write Memory")
        if addr is None:
            return
        reg = self._region(addr)
        if reg is None or reg[2] == "rom" or (reg[2] == "sram" and addr < 0x20003000):
            return self._nack("Write Memory", addr, "address")
        self._ack("Write Memory", addr)
        n = self._get(1)[0]
        data = bytearray(self._get(n + 1))
        check = self._get(1)[0]
        self._writes += 1
        if self._writes in self.line_errors:
            data[len(data) // 2] ^= 0x10            # a bit flipped on the line
        if _xor(data) ^ n != check:
            return self._nack("Write Memory", addr, "checksum")
        if addr % 4 or len(data) % 4:
            return self._nack("Write Memory", addr, "alignment")
        reg = self._region(addr, len(data))
        if reg is None:
            return self._nack("Write Memory", addr, "range")
        start, buf, kind = reg
        off = addr - start
        if kind == "flash":
            first = self._sector_of(off)[0]
            last = self._sector_of(off + len(data) - 1)[0]
            if any(s in self.write_protected for s in range(first, last + 1)):
                return self._nack("Write Memory", addr, "write protection")
            for k, b in enumerate(data):
                buf[off + k] &= b                   # NOR flash: programming clears bits only
        else:
            buf[off:off + len(data)] = data
        self._ack("Write Memory", addr)

    def _erase(self, what, sectors):
        if any(s >= len(self.sectors) for s in sectors):
            return self._nack(what, None, f"sector beyond the part in {sectors}")
        if any(s in self.write_protected for s in sectors):
            return self._nack(what, None, "write protection")
        for s in sectors:
            start = sum(self.sectors[:s])
            self.flash[start:start + self.sectors[s]] = b"\xff" * self.sectors[s]
            self.erased.append(s)
        self._ack(what)

    def _mass_erase(self, what):
        if self.write_protected:
            return self._nack(what, None, "write protection")
        self.flash[:] = b"\xff" * self.flash_size
        self.erased.append("mass")
        self._ack(what)

    def _cmd_ext_erase(self):
        if self.read_protected:
            return self._nack("Extended Erase", None, "read protection")
        self._ack("Extended Erase")
        head = self._get(2)
        n = int.from_bytes(head, "big")
        if n >= 0xFFF0:
            check = self._get(1)[0]
            if check != _xor(head):
                return self._nack("Extended Erase", None, "checksum")
            if n == 0xFFFF:
                return self._mass_erase("Extended Erase")
            return self._nack("Extended Erase", None, f"special code 0x{n:04X} (the F407 has one bank)")
        body = self._get(2 * (n + 1))
        check = self._get(1)[0]
        if _xor(head + body) != check:
            return self._nack("Extended Erase", None, "checksum")
        self._erase("Extended Erase", [int.from_bytes(body[2 * k:2 * k + 2], "big") for k in range(n + 1)])

    def _cmd_erase(self):
        if self.read_protected:
            return self._nack("Erase", None, "read protection")
        self._ack("Erase")
        n = self._get(1)[0]
        if n == 0xFF:
            if self._get(1)[0] != 0x00:
                return self._nack("Erase", None, "checksum")
            return self._mass_erase("Erase")
        body = self._get(n + 1)
        if _xor(bytes([n]) + body) != self._get(1)[0]:
            return self._nack("Erase", None, "checksum")
        self._erase("Erase", list(body))
