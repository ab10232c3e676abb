"""The STM32 system-memory boot loader over a UART (ST application note AN3155), host side.

    flash_binary("/dev/ttyUSB0", image)                   # init, get, erase, write, verify, go
    with Stm32Boot.open("/dev/ttyUSB0") as b:             # or one command at a time
        b.init(); b.get(); b.get_id(); b.read_memory(0x08000000, 256)

The part starts its ROM boot loader when BOOT0 is high at reset; it listens on USART1 (PA9/PA10) among
others, 8 data bits, even parity, one stop bit, and measures the baud rate from the first byte, 0x7F.
Every exchange is byte-wise with an answer of ACK (0x79) or NACK (0x1F):

- a command is its code followed by its complement (code ^ 0xFF);
- an address is 4 bytes, most significant first, then their XOR;
- Write Memory sends N - 1, the N data bytes (at most 256, a multiple of 4, at a 4-byte aligned
  address), then the XOR of N - 1 and the data;
- Erase (0x43) sends 0xFF 0x00 (mass erase) or N - 1, N page numbers (one byte), their XOR with N - 1;
  Extended Erase (0x44) sends 0xFFFF 0x00 (mass erase) or N - 1 (two bytes), N page numbers (two
  bytes, MSB first) and the XOR of all of them. Which one a part has, Get (0x00) says.

Every read has a timeout; every NACK and every timeout is raised as a Stm32BootError naming the command,
the address and what to check. Uses pyserial (``serial.serial_for_url``: a device path, ``socket://``,
``loop://`` ...).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from edgesnn.errors import EdgeSNNError

ACK, NACK, INIT = 0x79, 0x1F, 0x7F
CMD_GET, CMD_GET_VERSION, CMD_GET_ID = 0x00, 0x01, 0x02
CMD_READ, CMD_GO, CMD_WRITE = 0x11, 0x21, 0x31
CMD_ERASE, CMD_EXT_ERASE = 0x43, 0x44
CMD_WRITE_PROTECT, CMD_WRITE_UNPROTECT = 0x63, 0x73
CMD_READOUT_PROTECT, CMD_READOUT_UNPROTECT = 0x82, 0x92
NAMES = {CMD_GET: "Get", CMD_GET_VERSION: "Get Version", CMD_GET_ID: "Get ID", CMD_READ: "Read Memory",
         CMD_GO: "Go", CMD_WRITE: "Write Memory", CMD_ERASE: "Erase", CMD_EXT_ERASE: "Extended Erase",
         CMD_WRITE_PROTECT: "Write Protect", CMD_WRITE_UNPROTECT: "Write Unprotect",
         CMD_READOUT_PROTECT: "Readout Protect", CMD_READOUT_UNPROTECT: "Readout Unprotect"}
BLOCK = 256
POLL = 0.05            # seconds: the serial port's read timeout; every read loops to its own deadline
FLASH_BASE = 0x08000000


class Stm32BootError(EdgeSNNError):
    """The boot loader refused a command (NACK), did not answer in time, or the image cannot be written."""


@dataclass(frozen=True)
class Part:
    """What the host needs to know about a product ID: name, flash size and its erase units."""

    name: str
    flash_size: int
    sectors: tuple = ()          # sizes of the erase units (sectors / pages) from FLASH_BASE, in order
    flash_size_reg: int | None = None   # address of the u16 flash size in KiB (read when allowed)


def _f4_sectors(kib: int) -> tuple:
    bank = (16 * 1024,) * 4 + (64 * 1024,) + (128 * 1024,) * 7
    out, total = [], 0
    for s in bank:
        if total >= kib * 1024:
            break
        out.append(s)
        total += s
    return tuple(out)


# product IDs (AN2606) of the parts the board profiles use; others are flashed with a mass erase
PARTS = {
    0x413: Part("STM32F405/407/415/417", 1024 * 1024, _f4_sectors(1024), 0x1FFF7A22),
    # bank 1 only (8 x 128 KiB): an image reaching into bank 2 is flashed after a mass erase
    0x450: Part("STM32H742/743/753/750", 2048 * 1024, (128 * 1024,) * 8, 0x1FF1E880),
}


def _is_pty(url: str) -> bool:
    import os
    return "://" not in url and os.path.realpath(url).startswith("/dev/pts/")


def _xor(data) -> int:
    x = 0
    for b in data:
        x ^= b
    return x


def addr_bytes(address: int) -> bytes:
    """4 bytes MSB first and their XOR checksum."""
    b = address.to_bytes(4, "big")
    return b + bytes([_xor(b)])


@dataclass
class Info:
    version: int = 0                 # boot loader protocol version (0x31 = 3.1)
    commands: tuple = ()             # command codes Get reported
    pid: int | None = None
    option_bytes: tuple = ()
    part: Part | None = None
    notes: list = field(default_factory=list)

    @property
    def extended_erase(self) -> bool:
        return CMD_EXT_ERASE in self.commands


class Stm32Boot:
    """One boot loader session over a pyserial port (or any object with read(n) / write / timeout)."""

    def __init__(self, ser, where: str = "", timeout: float = 1.0, erase_timeout: float = 40.0):
        self.ser = ser
        self.where = where or getattr(ser, "port", None) or "the port"
        self.timeout = timeout
        self.erase_timeout = erase_timeout
        self.info = Info()

    @classmethod
    def open(cls, url: str, baudrate: int = 115200, timeout: float = 1.0, **kw) -> "Stm32Boot":
        try:
            import serial
        except ImportError:
            raise Stm32BootError("the STM32 boot loader client needs pyserial (pip install pyserial)") from None
        try:
            # the port keeps a short read timeout: _read loops to each read's own deadline (changing
            # pyserial's timeout reconfigures the port, which a pseudo-terminal may refuse)
            # a pseudo-terminal carries bytes, not framed bits: it has no parity to set (Linux refuses
            # PARENB on a pty once its other settings are in place)
            parity = serial.PARITY_NONE if _is_pty(url) else serial.PARITY_EVEN
            ser = serial.serial_for_url(url, baudrate=baudrate, parity=parity,
                                        bytesize=serial.EIGHTBITS, stopbits=serial.STOPBITS_ONE,
                                        timeout=POLL)
        except (serial.SerialException, ValueError, OSError) as e:
            raise Stm32BootError(f"cannot open {url} for the STM32 boot loader: {e} (is it the USB-serial "
                                 f"adapter wired to the part's USART1 PA9/PA10, and is it free?)") from None
        return cls(ser, url, timeout, **kw)

    def close(self):
        self.ser.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ bytes

    def _write(self, data: bytes):
        self.ser.write(bytes(data))
        if hasattr(self.ser, "flush"):
            self.ser.flush()

    def _read(self, n: int, what: str, timeout: float | None = None) -> bytes:
        timeout = self.timeout if timeout is None else timeout
        buf = bytearray()
        deadline = time.monotonic() + timeout
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Stm32BootError(f"{what}: no answer within {timeout:g} s on {self.where} (got "
                                     f"{len(buf)} of {n} bytes{': ' + bytes(buf).hex() if buf else ''}); "
                                     f"is the part still in its boot loader (BOOT0 high, then reset)?")
            chunk = self.ser.read(n - len(buf))     # the port's own short timeout (POLL)
            if chunk:
                buf += chunk
        return bytes(buf)

    def _ack(self, what: str, timeout: float | None = None, nack_hint: str = ""):
        b = self._read(1, what, timeout)[0]
        if b == ACK:
            return
        if b == NACK:
            raise Stm32BootError(f"{what}: refused (NACK) by the boot loader on {self.where}"
                                 + (f"; {nack_hint}" if nack_hint else ""))
        raise Stm32BootError(f"{what}: expected ACK (0x79) or NACK (0x1F), got 0x{b:02X} on {self.where} "
                             f"(wrong baud rate or parity? the boot loader uses 8E1)")

    def _command(self, code: int, what: str | None = None):
        what = what or NAMES.get(code, f"command 0x{code:02X}")
        if self.info.commands and code not in self.info.commands:
            raise Stm32BootError(f"{what} (0x{code:02X}): this boot loader does not offer it (Get listed "
                                 f"{', '.join(f'0x{c:02X}' for c in self.info.commands)})")
        self._write(bytes([code, code ^ 0xFF]))
        self._ack(f"{what} (0x{code:02X})", nack_hint="the command is unknown to this boot loader or the "
                  "part is read-protected")

    def _reset_input(self):
        if hasattr(self.ser, "reset_input_buffer"):
            self.ser.reset_input_buffer()

    # ------------------------------------------------------------ commands

    def init(self, timeout: float | None = None, tries: int = 2):
        """Send 0x7F for the boot loader's baud rate detection; ACK. A NACK means it was already
        initialised (the 0x7F was taken as a command), which is fine."""
        self._reset_input()
        last = None
        for _ in range(tries):
            self._write(bytes([INIT]))
            try:
                b = self._read(1, "init (0x7F)", timeout)[0]
            except Stm32BootError as e:
                last = e
                continue
            if b in (ACK, NACK):
                return
            last = Stm32BootError(f"init (0x7F): answered 0x{b:02X} instead of ACK on {self.where} "
                                  f"(wrong baud rate or parity? the boot loader uses 8E1)")
        raise Stm32BootError(
            f"no answer to the boot loader init byte 0x7F on {self.where} within "
            f"{self.timeout if timeout is None else timeout:g} s ({tries} tries): set BOOT0 high (BOOT1 / "
            f"PB2 low), reset the board, check that TX/RX are crossed to USART1 PA9/PA10 and that the "
            f"port is right ({last})")

    def get(self) -> Info:
        """Get (0x00): the protocol version and the commands this boot loader has."""
        self.info.commands = ()
        self._command(CMD_GET)
        n = self._read(1, "Get (0x00): length")[0]
        data = self._read(n + 1, "Get (0x00): version and commands")
        self._ack("Get (0x00): final ACK")
        self.info.version = data[0]
        self.info.commands = tuple(data[1:])
        return self.info

    def get_version(self) -> tuple[int, int, int]:
        """Get Version (0x01): version, option byte 1, option byte 2."""
        self._command(CMD_GET_VERSION)
        v, o1, o2 = self._read(3, "Get Version (0x01): version and option bytes")
        self._ack("Get Version (0x01): final ACK")
        self.info.option_bytes = (o1, o2)
        return v, o1, o2

    def get_id(self) -> int:
        """Get ID (0x02): the product ID (0x413 for the STM32F405/407)."""
        self._command(CMD_GET_ID)
        n = self._read(1, "Get ID (0x02): length")[0]
        pid = int.from_bytes(self._read(n + 1, "Get ID (0x02): product ID"), "big")
        self._ack("Get ID (0x02): final ACK")
        self.info.pid = pid
        self.info.part = PARTS.get(pid)
        return pid

    def _address(self, what: str, address: int, hint: str):
        self._write(addr_bytes(address))
        self._ack(f"{what} at 0x{address:08X}: address", nack_hint=hint)

    def read_memory(self, address: int, n: int) -> bytes:
        """Read Memory (0x11): n bytes (1..256) from address."""
        if not 1 <= n <= BLOCK:
            raise ValueError(f"Read Memory reads 1..256 bytes, not {n}")
        what = "Read Memory (0x11)"
        self._command(CMD_READ)
        self._address(what, address, "the address is not readable or the part is read-protected "
                                     "(RDP level 1: Readout Unprotect erases the flash)")
        self._write(bytes([n - 1, (n - 1) ^ 0xFF]))
        self._ack(f"{what} at 0x{address:08X}: length {n}")
        return self._read(n, f"{what} at 0x{address:08X}: {n} data bytes")

    def write_memory(self, address: int, data: bytes):
        """Write Memory (0x31): 1..256 bytes at a 4-byte aligned address (padded with 0xFF to a
        multiple of 4, as the flash is written in words)."""
        data = bytes(data)
        if not 1 <= len(data) <= BLOCK:
            raise ValueError(f"Write Memory writes 1..256 bytes, not {len(data)}")
        if address % 4:
            raise Stm32BootError(f"Write Memory (0x31) at 0x{address:08X}: the address must be 4-byte aligned")
        if len(data) % 4:
            data += b"\xff" * (4 - len(data) % 4)
        what = "Write Memory (0x31)"
        self._command(CMD_WRITE)
        self._address(what, address, "the address is outside the part's memory, write-protected or "
                                     "the part is read-protected")
        n = len(data) - 1
        self._write(bytes([n]) + data + bytes([_xor(data) ^ n]))
        self._ack(f"{what} at 0x{address:08X}: {len(data)} bytes", timeout=max(self.timeout, 5.0),
                  nack_hint="the block was not written: a checksum error on the line, a write-protected "
                            "sector (option bytes nWRP; `Write Unprotect` 0x73 clears them) or a range "
                            "outside the flash")

    def go(self, address: int = FLASH_BASE):
        """Go (0x21): the part jumps to the program whose vector table is at address."""
        self._command(CMD_GO)
        self._address("Go (0x21)", address, "the address holds no valid program or the part is read-protected")

    def mass_erase(self):
        what = "mass erase"
        if self.info.extended_erase:
            self._command(CMD_EXT_ERASE)
            self._write(b"\xff\xff\x00")
        else:
            self._command(CMD_ERASE)
            self._write(b"\xff\x00")
        self._ack(f"{what} ({'Extended Erase 0x44' if self.info.extended_erase else 'Erase 0x43'})",
                  timeout=self.erase_timeout, nack_hint="a sector is write-protected or the part is read-protected")

    def erase_pages(self, pages):
        """Erase the given pages (sectors on an STM32F4), with Extended Erase when the part has it."""
        pages = list(pages)
        if not pages:
            return
        if self.info.extended_erase:
            what = f"Extended Erase (0x44) of pages {pages}"
            self._command(CMD_EXT_ERASE)
            body = (len(pages) - 1).to_bytes(2, "big") + b"".join(p.to_bytes(2, "big") for p in pages)
        else:
            if len(pages) > 255 or max(pages) > 255:
                raise Stm32BootError(f"Erase (0x43) takes at most 255 one-byte page numbers, got {pages}")
            what = f"Erase (0x43) of pages {pages}"
            self._command(CMD_ERASE)
            body = bytes([len(pages) - 1]) + bytes(pages)
        self._write(body + bytes([_xor(body)]))
        self._ack(what, timeout=self.erase_timeout,
                  nack_hint="a page is write-protected or beyond the flash, or the part is read-protected")


def pages_for(part: Part, offset: int, length: int) -> list[int]:
    """The erase units of ``part`` that [offset, offset + length) from the flash base touches."""
    out, start = [], 0
    for i, size in enumerate(part.sectors):
        if start < offset + length and offset < start + size:
            out.append(i)
        start += size
    return out


def flash_binary(port, image: bytes, address: int = FLASH_BASE, verify: bool = True, go: bool = True,
                 progress=None, baudrate: int = 115200, timeout: float = 1.0, flash_size: int | None = None,
                 erase: str = "auto", retries: int = 2) -> dict:
    """Write ``image`` at ``address`` through the boot loader on ``port`` (a URL for pyserial or an open
    Stm32Boot): init, Get, Get ID, erase (the sectors the image covers on a known part, else a mass
    erase; ``erase`` = "mass" / "pages" / "none"), write in 256-byte blocks (a block refused is sent
    again up to ``retries`` times: a NACK may be a checksum error on the line), read back and compare,
    Go. ``progress(done, total, note)`` is called as blocks are written and verified. Returns a report."""
    image = bytes(image)
    if not image:
        raise Stm32BootError("nothing to flash: the image is empty")
    boot = port if isinstance(port, Stm32Boot) else Stm32Boot.open(port, baudrate=baudrate, timeout=timeout)
    t0 = time.monotonic()
    try:
        boot.init()
        info = boot.get()
        pid = boot.get_id()
        part = info.part
        if flash_size is None and part is not None:
            flash_size = part.flash_size
            if part.flash_size_reg is not None:
                try:
                    flash_size = int.from_bytes(boot.read_memory(part.flash_size_reg, 2), "little") * 1024
                except Stm32BootError as e:
                    info.notes.append(f"flash size register not readable ({e}); assumed {flash_size} bytes")
        if address < FLASH_BASE:
            raise Stm32BootError(f"address 0x{address:08X} is below the flash (0x{FLASH_BASE:08X})")
        offset = address - FLASH_BASE
        if flash_size is not None and offset + len(image) > flash_size:
            raise Stm32BootError(
                f"the image ({len(image):,} bytes at 0x{address:08X}) does not fit the part's "
                f"{flash_size:,}-byte flash (0x{FLASH_BASE:08X}..0x{FLASH_BASE + flash_size:08X}; over by "
                f"{offset + len(image) - flash_size:,} bytes): nothing was erased or written; build a smaller "
                f"firmware (`edgesnn build` names the layers to shrink)")
        if erase == "auto":
            mapped = sum(part.sectors) if part is not None else 0
            erase = "pages" if offset + len(image) <= mapped else "mass"
        pages = []
        if erase == "pages":
            if part is None or not part.sectors:
                raise Stm32BootError(f"page erase needs the part's sector map; product ID 0x{pid:03X} is not "
                                     f"known here (use erase='mass')")
            if offset + len(image) > sum(part.sectors):
                raise Stm32BootError(f"page erase: the image reaches past the sectors known for {part.name} "
                                     f"(use erase='mass')")
            pages = pages_for(part, offset, len(image))
            boot.erase_pages(pages)
        elif erase == "mass":
            boot.mass_erase()
        elif erase != "none":
            raise ValueError(f"erase must be auto, pages, mass or none, not {erase!r}")
        nblocks = (len(image) + BLOCK - 1) // BLOCK
        total = nblocks * (2 if verify else 1)
        resent = 0
        if progress:
            progress(0, total, "write")
        for i in range(nblocks):
            a = address + i * BLOCK
            block = image[i * BLOCK:(i + 1) * BLOCK]
            for attempt in range(retries + 1):
                try:
                    boot.write_memory(a, block)
                    break
                except Stm32BootError as e:
                    if attempt == retries:
                        raise Stm32BootError(f"{e} (sent {retries + 1} times)") from None
                    resent += 1
                    _resync(boot)
            if progress:
                progress(i + 1, total, "write")
        mismatches = []
        if verify:
            for i in range(nblocks):
                a = address + i * BLOCK
                want = image[i * BLOCK:(i + 1) * BLOCK]
                got = boot.read_memory(a, len(want))
                if got != want:
                    j = next(k for k in range(len(want)) if got[k] != want[k])
                    mismatches.append(a + j)
                    raise Stm32BootError(
                        f"verify: the flash differs from the image at 0x{a + j:08X} (wrote 0x{want[j]:02X}, "
                        f"read 0x{got[j]:02X}); was the sector erased? (erase={erase!r})")
                if progress:
                    progress(nblocks + i + 1, total, "verify")
        if go:
            boot.go(address)
        return {"bytes": len(image), "address": address, "blocks": nblocks, "pid": pid,
                "part": part.name if part else None, "bootloader_version": f"{info.version >> 4}.{info.version & 15}",
                "erase": erase, "pages": pages, "verified": verify, "resent_blocks": resent, "go": go,
                "seconds": round(time.monotonic() - t0, 3), "notes": info.notes}
    finally:
        if not isinstance(port, Stm32Boot):
            boot.close()


def _resync(boot: Stm32Boot, quiet: float = 0.05):
    """After a refused command, drop whatever else the part sent until the line is quiet."""
    deadline = time.monotonic() + 1.0
    last = time.monotonic()
    while time.monotonic() < deadline:
        if boot.ser.read(64):
            last = time.monotonic()
        elif time.monotonic() - last >= quiet:
            return
