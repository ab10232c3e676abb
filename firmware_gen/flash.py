"""Put an exported firmware project on its board: `edgesnn flash DIR [--device PROFILE] [--port URL]`.

    res = flash("fw/kws")                                   # the profile the project was exported for
    res.url, res.pid, res.hash                               # emulated: QEMU runs, its UART on TCP
    flash("fw/kws", "stm32f4-discovery", port="/dev/ttyUSB0", method="stm32-uart")

The project is built first (``build.build_project``: make rebuilds only what changed; a firmware that
does not fit is refused). Then, by method (the profile's ``[flash_method]``, or ``method``):

- ``qemu`` (emulated profiles): qemu-system-arm runs the firmware with the board's UART on a TCP socket
  on 127.0.0.1 (a free port, or the one in ``port``: ``socket://127.0.0.1:PORT`` or ``tcp://...``);
  ready once the firmware answers HELLO (docs/protocol.md); ``res.url`` is the link to give
  ``edgesnn.device.connect``, ``res.proc`` the QEMU process (``stop()`` ends it);
- ``openocd``, ``pyocd``, ``st-flash``, ``nrfjprog``, ``picotool``: the tool's command line (the
  profile's ``command`` or a default), image paths made absolute, run in the project directory with its
  output shown; a missing tool is a ToolMissing error saying how to install it and which file to flash
  by other means;
- ``uf2``: the UF2 image copied to a mounted boot drive (INFO_UF2.TXT; RPI-RP2 for the Pico) under
  /media/$USER, /run/media/$USER, or ``drive``;
- ``stm32-uart`` (STM32 profiles): the ROM boot loader over a serial port (AN3155, ``stm32boot``), the
  flat binary from ``arm-none-eabi-objcopy -O binary``.

After a real board is flashed, ``port`` (the firmware's UART) is opened and HELLO awaited.
"""
from __future__ import annotations

import ctypes
import getpass
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from edgesnn.errors import EdgeSNNError

from . import build as B
from . import qemu as Q
from .export import read_project
from .profiles import Profile, load as load_profile

METHODS = ("qemu", "openocd", "pyocd", "st-flash", "nrfjprog", "picotool", "uf2", "stm32-uart")
HELLO_TIMEOUT = 30.0
TOOL_TIMEOUT = 600.0

# how to get each tool; the last part names the image to flash by other means
INSTALL = {
    "openocd": "Debian: apt-get install openocd",
    "pyocd": "pip install pyocd",
    "st-flash": "Debian: apt-get install stlink-tools",
    "nrfjprog": "Nordic's nRF Command Line Tools (from nordicsemi.com; no Debian or pip package), or use "
                "--method pyocd (pip install pyocd) with the DK's J-Link/CMSIS-DAP interface",
    "picotool": "the Raspberry Pi picotool (built from its sources, or a distribution package where there is "
                "one), or use --method uf2: hold BOOTSEL while plugging the Pico in and the image is copied",
}
PYOCD_TARGETS = {"stm32f4-discovery": "stm32f407vg", "nucleo-h743zi": "stm32h743zitx",
                 "nrf52840-dk": "nrf52840", "rpi-pico": "rp2040"}


class FlashError(EdgeSNNError):
    """The firmware could not be put on the board, or the board did not answer after it."""


class ToolMissing(FlashError):
    """The flashing tool of the method is not installed."""


# ------------------------------------------------------------------ the result

@dataclass
class Flashed:
    method: str
    profile: str
    project: str
    image: str
    url: str | None = None             # where the firmware's protocol link is (QEMU, or --port)
    pid: int | None = None             # the QEMU process
    hash: str | None = None            # the model hash the firmware reported in HELLO
    hello: dict | None = None
    build: dict | None = None
    details: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = field(default=None, repr=False)
    log: str | None = None             # QEMU's stderr file

    def to_json(self) -> dict:
        return {"url": self.url, "pid": self.pid, "profile": self.profile, "hash": self.hash,
                "method": self.method, "project": self.project, "image": self.image, "hello": self.hello,
                "details": self.details, "log": self.log}

    def stop(self, timeout: float = 10):
        """End the QEMU process (emulated boards)."""
        stop_process(self.proc, timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def stop_process(proc, timeout: float = 10):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


# ------------------------------------------------------------------ the project and its images

def project_profile(project_dir, device=None) -> tuple[dict, Profile]:
    """The project's metadata and the profile to flash with: ``device`` or the one it was exported for
    (they must agree: the board glue is generated per profile)."""
    meta = read_project(project_dir)
    exported = meta["profile"]["name"]
    if device is None:
        path = meta["profile"].get("path") or ""
        prof = load_profile(path if path and Path(path).is_file() else exported)
    else:
        prof = device if isinstance(device, Profile) else load_profile(device)
    if prof.name != exported:
        raise FlashError(f"{project_dir} was exported for {exported}, not {prof.name}: its board glue "
                         f"(clock, UART, vectors, linker script) is that board's. Export it again with "
                         f"`edgesnn export MODEL --target c --device {prof.name} --out {project_dir}`, or "
                         f"flash it with --device {exported}")
    if meta.get("mode") != "app":
        raise FlashError(f"{project_dir} holds a {meta.get('mode')} firmware (made by `edgesnn verify`), which "
                         f"runs once and stops; flash the application firmware: `edgesnn export MODEL "
                         f"--target c --device {prof.name} --out DIR`")
    return meta, prof


def _sources_newer(project: Path, than: float) -> list[Path]:
    out = []
    for p in project.rglob("*"):
        if p.is_file() and "build" not in p.relative_to(project).parts[:1] and p.stat().st_mtime > than:
            out.append(p)
    return out


def ensure_built(project_dir, prof: Profile, say=None) -> dict | None:
    """Build the project (make rebuilds only what changed) and refuse a firmware that does not fit.
    Without the toolchain an existing, up-to-date ELF is used as it is (report None)."""
    project = Path(project_dir)
    elf = project / "build" / "firmware.elf"
    try:
        B.need_toolchain()
    except B.ToolchainMissing as e:
        if elf.is_file() and not _sources_newer(project, elf.stat().st_mtime):
            if say:
                say(f"no cross toolchain ({e}); using the existing {elf}")
            return None
        why = "is missing" if not elf.is_file() else "is older than its sources"
        raise B.ToolchainMissing(f"{elf} {why} and cannot be built: {e}") from None
    if say:
        say(f"building {project} for {prof.name} ...")
    rep = B.build_project(project)
    B.check_fits(rep)
    return rep


def binary_image(project_dir) -> tuple[Path, int]:
    """build/firmware.bin (``objcopy -O binary`` of the ELF, made when missing or older than the ELF)
    and the flash address it starts at (the lowest load address of the ELF's loaded segments)."""
    project = Path(project_dir)
    elf = project / "build" / "firmware.elf"
    out = project / "build" / "firmware.bin"
    if not elf.is_file():
        raise FlashError(f"{elf} does not exist; build the project first (`edgesnn build {project}`)")
    if not out.is_file() or out.stat().st_mtime < elf.stat().st_mtime:
        objcopy = f"{B.CROSS}objcopy"
        if shutil.which(objcopy) is None:
            raise B.ToolchainMissing(f"{objcopy} not found (Debian: apt-get install binutils-arm-none-eabi); "
                                     f"it makes the flat binary {out} from {elf}")
        res = subprocess.run([objcopy, "-O", "binary", str(elf), str(out)], capture_output=True, text=True)
        if res.returncode != 0:
            raise FlashError(f"{objcopy} -O binary {elf} failed: {res.stderr.strip()}")
    return out, load_address(elf)


def load_address(elf) -> int:
    """The lowest physical address of the ELF's PT_LOAD segments that carry bytes (where the flat
    binary starts)."""
    data = Path(elf).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise FlashError(f"{elf} is not a 32-bit little-endian ELF file")
    phoff, = struct.unpack_from("<I", data, 28)
    phentsize, phnum = struct.unpack_from("<HH", data, 42)
    addrs = []
    for i in range(phnum):
        p_type, _off, _vaddr, paddr, filesz = struct.unpack_from("<5I", data, phoff + i * phentsize)
        if p_type == 1 and filesz:
            addrs.append(paddr)
    if not addrs:
        raise FlashError(f"{elf} has no loadable segment")
    return min(addrs)


def _image_for(method: str, project: Path, prof: Profile) -> Path:
    build_dir = project / "build"
    if method in ("uf2", "picotool"):
        if "uf2" not in prof.images:
            raise FlashError(f"profile {prof.name} makes no UF2 image (images = {list(prof.images)}); "
                             f"the uf2 and picotool methods are for UF2 boards such as rpi-pico")
        return build_dir / "firmware.uf2"
    if method == "nrfjprog":
        return build_dir / "firmware.hex"
    if method in ("st-flash", "stm32-uart"):
        return build_dir / "firmware.bin"
    return build_dir / "firmware.elf"


# ------------------------------------------------------------------ HELLO (docs/protocol.md)

def _info_dict(info) -> dict:
    """edgesnn.device.protocol.Info -> a JSON-able dict (``hash`` in hex)."""
    keys = ("version", "max_payload", "capabilities", "n_inputs", "n_outputs", "n_layers", "clock_hz",
            "upload_capacity", "max_events", "max_steps", "name")
    d = {k: getattr(info, k) for k in keys}
    d["hash"] = info.hash_hex
    return d


def wait_hello(url: str, timeout: float = HELLO_TIMEOUT, baudrate: int = 115200, alive=None) -> dict:
    """Ask ``url`` for HELLO until the firmware answers (a board may drop what arrives before its UART
    is on, or still be booting); the info as a dict (``hash`` in hex). ``alive()`` returning False (QEMU
    exited) ends the wait early. Raises FlashError with the last link error."""
    from edgesnn.device import connect

    deadline = time.monotonic() + timeout
    last = None
    while True:
        if alive is not None and not alive():
            raise FlashError(f"the board stopped before it answered HELLO ({last})")
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with connect(url, timeout=min(2.0, max(0.5, left)), baudrate=baudrate) as dev:
                return _info_dict(dev.info)
        except (EdgeSNNError, OSError) as e:
            last = e
            time.sleep(0.1)
    raise FlashError(f"no HELLO answer from {url} within {timeout:g} s ({last}); check that the firmware "
                     f"was exported by this edgesnn (older firmware spoke another protocol: export and flash "
                     f"again), the baud rate and the cable")


# ------------------------------------------------------------------ QEMU

def _parse_tcp(port) -> tuple[str, int | None]:
    if port is None:
        return "127.0.0.1", None
    u = urlparse(port if "://" in str(port) else f"socket://{port}")
    if u.scheme not in ("socket", "tcp") or not u.port:
        raise FlashError(f"--port {port}: an emulated board's UART goes on a TCP socket; give "
                         f"socket://127.0.0.1:PORT (or tcp://127.0.0.1:PORT), or leave --port out for a free port")
    return u.hostname or "127.0.0.1", u.port


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent():
    """In the child: SIGTERM when the parent (the foreground `edgesnn flash`) dies, however it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)       # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _tail(path, n=30) -> str:
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def start_qemu(elf, prof: Profile, port=None, timeout: float = HELLO_TIMEOUT, detach: bool = False,
               log=None, icount_shift: int | None = 0, say=None) -> Flashed:
    """QEMU running ``elf`` with its UART on TCP; returns once the firmware answered HELLO."""
    host, fixed = _parse_tcp(port)
    log = Path(log) if log else Path(elf).parent / "qemu.log"
    for attempt in range(3):
        p = fixed or free_port(host)
        # nodelay: without it each small reply waits for the peer's delayed ACK (~40 ms a round trip)
        cmd = Q.command(elf, prof, serial=f"tcp:{host}:{p},server=on,wait=off,nodelay=on",
                        icount_shift=icount_shift)
        with open(log, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True,
                                    preexec_fn=None if detach else _die_with_parent)
        url = f"socket://{host}:{p}"
        if say:
            say(f"QEMU {prof.qemu['machine']} (pid {proc.pid}) runs {elf}; UART on {url}; waiting for HELLO ...")
        try:
            info = wait_hello(url, timeout=timeout, alive=lambda: proc.poll() is None)
        except FlashError as e:
            code = proc.poll()
            text = _tail(log)                  # before stopping it: QEMU then only logs the signal
            stop_process(proc)
            if code is not None and fixed is None and "in use" in text and attempt < 2:
                continue                       # the free port was taken in between: another one
            state = (f"QEMU exited with status {code}" if code is not None
                     else f"QEMU was stopped after {timeout:g} s")
            raise FlashError(
                f"the firmware on {prof.name} did not answer HELLO: {e}. {state}. QEMU's stderr ({log}):\n"
                f"{text or '(empty)'}\nCommand: {shlex.join(cmd)}\nWhat to do: export the project again with "
                f"this edgesnn (`edgesnn export MODEL --target c --device {prof.name} --out DIR`) so that its "
                f"firmware speaks docs/protocol.md; if the port is busy, leave --port out; a longer "
                f"--timeout helps a slow machine") from None
        return Flashed(method="qemu", profile=prof.name, project=str(Path(elf).parent.parent), image=str(elf),
                       url=url, pid=proc.pid, hash=info.get("hash"), hello=info, proc=proc, log=str(log),
                       details={"command": cmd})
    raise AssertionError("unreachable")


# ------------------------------------------------------------------ real boards

def _default_command(method: str, prof: Profile) -> str | None:
    fm = prof.flash_method
    if fm.get("method") == method and fm.get("command"):
        return fm["command"]
    if method == "pyocd":
        t = PYOCD_TARGETS.get(prof.name)
        return f"pyocd flash {'-t ' + t + ' ' if t else ''}build/firmware.elf"
    if method == "st-flash":
        return f"st-flash --reset write build/firmware.bin 0x{prof.flash_origin:08X}"
    if method == "nrfjprog":
        return "nrfjprog --program build/firmware.hex --chiperase --verify --reset"
    if method == "picotool":
        return "picotool load -x build/firmware.uf2"
    return None


def tool_command(method: str, prof: Profile, project: Path) -> list[str]:
    """The tool's argument list: the profile's command (or the method's default) with the image paths
    (build/firmware.*) made absolute and $USER expanded."""
    line = _default_command(method, prof)
    if line is None:
        raise FlashError(f"profile {prof.name} has no {method} command ([flash_method] command in "
                         f"{prof.path}); add one, or use its own method {prof.flash_method['method']}")
    line = line.replace("$USER", os.environ.get("USER") or getpass.getuser())
    build_dir = str((project / "build").resolve())
    return [re.sub(r"(?<![\w/.])build/(firmware\.\w+)", lambda m: f"{build_dir}/{m.group(1)}", a)
            for a in shlex.split(line)]


def _check_method(method: str, prof: Profile):
    if method == "none":
        raise FlashError(f"profile {prof.name} has no flash method ([flash_method] method = \"none\" in "
                         f"{prof.path}); give one with --method ({', '.join(METHODS[1:])})")
    if method not in METHODS:
        raise FlashError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if method == "qemu" and not prof.emulated:
        raise FlashError(f"{prof.name} is a real board; QEMU runs only the qemu-* profiles")
    if prof.emulated and method != "qemu":
        raise FlashError(f"{prof.name} is emulated here: it is flashed by starting QEMU (leave --method out)")
    stm32 = prof.uart["kind"] == "stm32-usart"
    if method in ("stm32-uart", "st-flash") and not stm32:
        raise FlashError(f"--method {method} is for STM32 parts; {prof.name} is not one "
                         f"(its method is {prof.flash_method['method']})")
    if method == "nrfjprog" and prof.uart["kind"] != "nrf-uarte":
        raise FlashError(f"--method nrfjprog is for Nordic nRF parts; {prof.name} is not one")


def run_tool(method: str, prof: Profile, project: Path, image: Path, say=None, timeout: float = TOOL_TIMEOUT) -> dict:
    """Run the flashing tool in the project directory; its output goes to ``say`` line by line."""
    argv = tool_command(method, prof, project)
    exe = argv[0]
    if shutil.which(exe) is None:
        raise ToolMissing(f"{exe} is not installed (not found on PATH), so {prof.name} cannot be flashed with "
                          f"{method}. Install it: {INSTALL.get(exe, INSTALL.get(method, exe))}. Or flash "
                          f"{image.resolve()} by other means (the command would be: {shlex.join(argv)})")
    if not image.is_file():
        raise FlashError(f"the image {image} does not exist (the profile's images: {list(prof.images)})")
    if say:
        say(f"$ {shlex.join(argv)}")
    lines = []
    proc = subprocess.Popen(argv, cwd=project, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    t0 = time.monotonic()
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if say:
                say(line.rstrip("\n"))
            if time.monotonic() - t0 > timeout:
                break
        proc.wait(timeout=max(1.0, timeout - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            stop_process(proc)
            raise FlashError(f"{exe} did not finish within {timeout:g} s and was stopped ({shlex.join(argv)})")
    if proc.returncode != 0:
        tail = "\n".join(lines[-25:])
        raise FlashError(f"{exe} failed with exit status {proc.returncode} flashing {prof.name} "
                         f"({shlex.join(argv)}, in {project}):\n{tail}\nCheck that the board is connected and "
                         f"powered, and that no other debugger session holds it")
    return {"command": argv, "output_lines": len(lines)}


def uf2_drives(drive=None) -> list[Path]:
    """Mounted UF2 boot drives (folders holding INFO_UF2.TXT): ``drive``, or under /media/$USER,
    /run/media/$USER; RPI-RP2 first."""
    if drive is not None:
        d = Path(drive)
        return [d] if (d / "INFO_UF2.TXT").is_file() else []
    user = os.environ.get("USER") or getpass.getuser()
    found = []
    for root in (Path("/media") / user, Path("/run/media") / user):
        try:
            subdirs = sorted(root.iterdir())
        except OSError:
            continue
        found += [d for d in subdirs if (d / "INFO_UF2.TXT").is_file()]
    return sorted(found, key=lambda d: 0 if "RPI-RP2" in d.name or "RPI-RP2" in _info_uf2(d) else 1)


def _info_uf2(d: Path) -> str:
    try:
        return (d / "INFO_UF2.TXT").read_text(errors="replace")
    except OSError:
        return ""


def copy_uf2(image: Path, prof: Profile, drive=None, say=None) -> dict:
    drives = uf2_drives(drive)
    if not drives:
        user = os.environ.get("USER") or getpass.getuser()
        where = (f"{drive} (it has no INFO_UF2.TXT)" if drive is not None
                 else f"/media/{user}/* and /run/media/{user}/*")
        raise FlashError(f"no UF2 boot drive is mounted (looked for INFO_UF2.TXT in {where}). Hold BOOTSEL "
                         f"while plugging the {prof.name} in: it mounts as a drive named RPI-RP2; then run this "
                         f"again, give --drive PATH if it is mounted elsewhere, or copy {image.resolve()} onto "
                         f"the drive yourself")
    if not image.is_file():
        raise FlashError(f"the UF2 image {image} does not exist (the profile's images: {list(prof.images)})")
    target = drives[0] / image.name
    if say:
        say(f"copying {image} to {target} ({_info_uf2(drives[0]).splitlines()[0:1]})")
    data = image.read_bytes()
    try:
        with open(target, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise FlashError(f"copying {image} to {target} failed: {e} (is the drive still mounted and writable?)") from None
    return {"drive": str(drives[0]), "copied": str(target), "bytes": len(data)}


def flash_stm32_uart(project: Path, prof: Profile, port: str, progress=None, say=None, **kw) -> dict:
    from . import stm32boot

    if not port:
        raise FlashError("--method stm32-uart needs --port: the serial port wired to the part's USART1 "
                         "(PA9 TX, PA10 RX), e.g. --port /dev/ttyUSB0; set BOOT0 high and reset the board first")
    image, base = binary_image(project)
    if base != prof.flash_origin:
        raise FlashError(f"{image} starts at 0x{base:08X}, not at the flash of {prof.name} (0x{prof.flash_origin:08X})")
    data = image.read_bytes()
    if say:
        say(f"writing {image} ({len(data):,} bytes) at 0x{base:08X} through the STM32 boot loader on {port}")
    return stm32boot.flash_binary(port, data, address=base, flash_size=prof.flash_size, progress=progress, **kw)


# ------------------------------------------------------------------ the verb

def flash(project_dir, profile=None, port=None, method=None, drive=None, timeout: float = HELLO_TIMEOUT,
          detach: bool = False, progress=None, say=None, build: bool = True, stm32_options=None) -> Flashed:
    """Build and flash the project; see the module's docstring. ``profile`` defaults to the one the
    project was exported for. For emulated boards the returned Flashed holds the running QEMU (``proc``;
    ``detach`` only stops it from dying with this process). ``say(text)`` receives progress messages,
    ``progress(done, total, note)`` the stm32-uart write."""
    project = Path(project_dir).resolve()
    meta, prof = project_profile(project, profile)
    method = method or prof.flash_method["method"]
    _check_method(method, prof)
    rep = ensure_built(project, prof, say) if build else None
    if method == "qemu":
        res = start_qemu(project / "build" / "firmware.elf", prof, port=port, timeout=timeout,
                         detach=detach, say=say)
        res.project, res.build = str(project), rep
        return res
    if method == "stm32-uart":
        details = flash_stm32_uart(project, prof, port, progress=progress, say=say, **(stm32_options or {}))
        return Flashed(method=method, profile=prof.name, project=str(project),
                       image=str(project / "build" / "firmware.bin"), build=rep, details=details)
    image = _image_for(method, project, prof)
    if method == "uf2":
        details = copy_uf2(image, prof, drive, say)
    else:
        details = run_tool(method, prof, project, image, say)
    res = Flashed(method=method, profile=prof.name, project=str(project), image=str(image), build=rep,
                  details=details)
    if port:
        if say:
            say(f"waiting for HELLO on {port} ...")
        res.hello = wait_hello(port, timeout=timeout, baudrate=prof.uart["baud"])
        res.url, res.hash = port, res.hello.get("hash")
    return res


def hold(res: Flashed, say=None) -> int:
    """Keep the foreground `edgesnn flash` alive with its QEMU until Ctrl-C or SIGTERM (QEMU is then
    stopped: exit 0) or until QEMU ends by itself (exit 2, its log shown)."""
    stop = {"sig": None}

    def handler(signum, _frame):
        stop["sig"] = signum

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        while stop["sig"] is None:
            try:
                code = res.proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            if say:
                say(f"QEMU ended by itself (exit status {code}); its stderr ({res.log}):\n{_tail(res.log) or '(empty)'}")
            return 2
        res.stop()
        if say:
            say(f"stopped QEMU (pid {res.pid})")
        return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":      # pragma: no cover
    sys.exit("use `edgesnn flash DIR`")
