"""Board profiles: what a firmware build needs to know about a board, one TOML file per board.

    names()                          # every profile in the profile directory, sorted
    p = load("qemu-mps2-an386")      # a Profile, validated; a path to a .toml file works too
    p.cpu_flags                      # -mcpu=... -mthumb [-mfloat-abi=hard -mfpu=...]

The profiles live in ``devices/`` at the repository root (``$EDGESNN_DEVICES`` points elsewhere).
docs/devices.md describes every field. A profile that is wrong in any way (a missing or unknown key, a
value of the wrong type or out of range, overlapping memories, an IRQ the vector table does not have,
an FPU the core does not have) is refused with a ProfileError that names the file and the key.
"""
from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgesnn.errors import EdgeSNNError


class ProfileError(EdgeSNNError, ValueError):
    """A board profile that is missing, unreadable or inconsistent."""


PROFILE_DIR = Path(__file__).resolve().parent.parent / "devices"

# core -> (architecture, FPUs it can have, has the DSP extension (SIMD), default float ABI without FPU)
CORES = {
    "cortex-m0": ("armv6-m", (), False),
    "cortex-m0plus": ("armv6-m", (), False),
    "cortex-m3": ("armv7-m", (), False),
    "cortex-m4": ("armv7e-m", ("fpv4-sp-d16",), True),
    "cortex-m7": ("armv7e-m", ("fpv5-sp-d16", "fpv5-d16"), True),
    "cortex-m33": ("armv8-m.main", ("fpv5-sp-d16",), True),
}
UART_KINDS = {
    "cmsdk": "ARM CMSDK APB UART (MPS2)",
    "pl011": "ARM PrimeCell PL011 (Stellaris)",
    "rp2040-pl011": "the RP2040's PL011 UARTs",
    "stm32-usart": "STM32 USART (layout f4: F1/F2/F4 registers; h7: F7/H7/L4 registers)",
    "nrf-uarte": "Nordic nRF52 UARTE (EasyDMA)",
}
STM32_LAYOUTS = ("f4", "h7")
FLASH_METHODS = ("qemu", "openocd", "pyocd", "st-flash", "nrfjprog", "uf2", "none")
IMAGES = ("elf", "bin", "hex", "uf2")
BOOT2 = ("generic-03h",)
# peripheral space of every Cortex-M: 0x40000000..0x5FFFFFFF (the STM32H7 puts RCC and GPIO at 0x58...)
PERIPH_LO, PERIPH_HI = 0x40000000, 0x60000000

_TOP_KEYS = {
    "name": (str, True), "description": (str, True), "core": (str, True), "fpu": (str, True),
    "float_abi": (str, True), "clock_hz": (int, True), "irq_count": (int, True), "stack_bytes": (int, True),
    "flash": (dict, True), "ram": (dict, True), "uart": (dict, True), "flash_method": (dict, True),
    "init": (list, False), "qemu": (dict, False), "boot2": (str, False), "images": (list, False),
    "uf2_family": (int, False), "cflags": (list, False),
}
_MEM_KEYS = {"origin": (int, True), "size": (int, True)}
_UART_KEYS = {
    "kind": (str, True), "base": (int, True), "irq": (int, True), "baud": (int, True),
    "layout": (str, False), "pclk_hz": (int, False), "tx_pin": (int, False), "rx_pin": (int, False),
}
_INIT_KEYS = {"addr": (int, True), "set": (int, False), "clear": (int, False), "write": (int, False),
              "wait_mask": (int, False), "wait_value": (int, False)}
_FLASH_KEYS = {"method": (str, True), "command": (str, False)}
_QEMU_KEYS = {"machine": (str, True), "systick_hz": (int, True), "extra_args": (list, False)}


@dataclass(frozen=True)
class InitOp:
    """One register operation before the UART starts: a write, a read-modify-write, or a wait."""

    addr: int
    kind: str            # "write", "rmw" or "wait"
    clear: int = 0
    set: int = 0
    wait_mask: int = 0
    wait_value: int = 0


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    core: str
    fpu: str                 # "none" or the -mfpu name
    float_abi: str           # hard, softfp, soft
    clock_hz: int
    irq_count: int
    stack_bytes: int
    flash_origin: int
    flash_size: int
    ram_origin: int
    ram_size: int
    uart: dict
    init: tuple = ()
    flash_method: dict = field(default_factory=dict)
    qemu: dict | None = None
    boot2: str | None = None
    images: tuple = ("elf", "bin", "hex")
    uf2_family: int | None = None
    cflags: tuple = ()
    path: str = ""

    @property
    def arch(self) -> str:
        return CORES[self.core][0]

    @property
    def has_fpu(self) -> bool:
        return self.fpu != "none"

    @property
    def has_dsp(self) -> bool:
        return CORES[self.core][2]

    @property
    def emulated(self) -> bool:
        """True when QEMU emulates this board here (verify and instruction counts run)."""
        return self.qemu is not None

    @property
    def cpu_flags(self) -> tuple:
        flags = (f"-mcpu={self.core}", "-mthumb")
        if self.float_abi != "soft":
            flags += (f"-mfloat-abi={self.float_abi}", f"-mfpu={self.fpu}")
        else:
            flags += ("-mfloat-abi=soft",)
        return flags

    def summary(self) -> dict:
        """A JSON-serialisable description (what `edgesnn devices --json` prints)."""
        return {
            "name": self.name, "description": self.description, "core": self.core, "arch": self.arch,
            "fpu": self.fpu, "float_abi": self.float_abi, "clock_hz": self.clock_hz,
            "flash": {"origin": self.flash_origin, "size": self.flash_size},
            "ram": {"origin": self.ram_origin, "size": self.ram_size},
            "stack_bytes": self.stack_bytes,
            "uart": dict(self.uart), "flash_method": dict(self.flash_method),
            "qemu_machine": self.qemu["machine"] if self.qemu else None,
            "images": list(self.images), "boot2": self.boot2, "path": self.path,
        }


def profile_dir() -> Path:
    env = os.environ.get("EDGESNN_DEVICES")
    return Path(env) if env else PROFILE_DIR


def names() -> list[str]:
    d = profile_dir()
    if not d.is_dir():
        raise ProfileError(f"no profile directory {d} (set EDGESNN_DEVICES to the folder of the *.toml "
                           f"board profiles)")
    return sorted(p.stem for p in d.glob("*.toml"))


def all_profiles() -> list[Profile]:
    return [load(n) for n in names()]


def load(name_or_path) -> Profile:
    """A profile by name (devices/NAME.toml) or by the path of a .toml file; validated."""
    s = str(name_or_path)
    path = Path(s)
    if not (s.endswith(".toml") or os.sep in s or path.is_file()):
        path = profile_dir() / f"{s}.toml"
        if not path.is_file():
            known = names()
            close = difflib.get_close_matches(s, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ProfileError(f"no board profile {s!r}{hint} Known profiles: {', '.join(known)} "
                               f"(`edgesnn devices` lists them)")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"board profile {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: not valid TOML: {e}") from None
    return from_dict(data, str(path))


# ------------------------------------------------------------------ validation

def _bad(where: str, msg: str):
    raise ProfileError(f"{where}: {msg}")


def _check_keys(d: dict, spec: dict, where: str):
    if not isinstance(d, dict):
        _bad(where, f"must be a table, got {type(d).__name__}")
    for k in d:
        if k not in spec:
            close = difflib.get_close_matches(k, list(spec), n=1)
            _bad(where, f"unknown key {k!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                 + f"; allowed: {', '.join(spec)}")
    for k, (typ, required) in spec.items():
        if k not in d:
            if required:
                _bad(where, f"missing key {k!r}")
            continue
        v = d[k]
        if typ is int and (isinstance(v, bool) or not isinstance(v, int)):
            _bad(where, f"{k} must be an integer, got {v!r}")
        if typ is not int and not isinstance(v, typ):
            _bad(where, f"{k} must be a {typ.__name__}, got {type(v).__name__} {v!r}")


def _u32(v: int, where: str, key: str):
    if not 0 <= v < 2**32:
        _bad(where, f"{key} = {v:#x} does not fit 32 bits")


def from_dict(d: dict, path: str = "<profile>") -> Profile:
    """Validate a parsed profile; every error names the file and the key."""
    w = path
    _check_keys(d, _TOP_KEYS, w)
    stem = Path(path).stem
    if path != "<profile>" and d["name"] != stem:
        _bad(w, f"name = {d['name']!r} must equal the file name {stem!r}")
    core = d["core"]
    if core not in CORES:
        _bad(w, f"core = {core!r} is not one of {', '.join(CORES)}")
    fpu, abi = d["fpu"], d["float_abi"]
    allowed_fpu = CORES[core][1]
    if fpu != "none" and fpu not in allowed_fpu:
        _bad(w, f"fpu = {fpu!r}: a {core} has " + (f"fpu {' or '.join(allowed_fpu)} (or 'none')"
                                                  if allowed_fpu else "no FPU; write fpu = \"none\""))
    if abi not in ("hard", "softfp", "soft"):
        _bad(w, f"float_abi = {abi!r} must be hard, softfp or soft")
    if fpu == "none" and abi != "soft":
        _bad(w, f"float_abi = {abi!r} needs an FPU; with fpu = \"none\" write float_abi = \"soft\"")
    if not 1_000 <= d["clock_hz"] <= 2_000_000_000:
        _bad(w, f"clock_hz = {d['clock_hz']} is not a plausible core clock (1 kHz .. 2 GHz)")
    if not 1 <= d["irq_count"] <= 496:
        _bad(w, f"irq_count = {d['irq_count']} must be in 1..496 (external interrupts of the NVIC)")
    stack = d["stack_bytes"]
    if stack < 512 or stack % 8:
        _bad(w, f"stack_bytes = {stack} must be a multiple of 8 and at least 512")

    mems = {}
    for key in ("flash", "ram"):
        m = d[key]
        _check_keys(m, _MEM_KEYS, f"{w} [{key}]")
        _u32(m["origin"], f"{w} [{key}]", "origin")
        if m["size"] <= 0 or m["size"] % 4:
            _bad(f"{w} [{key}]", f"size = {m['size']} must be a positive multiple of 4")
        if m["origin"] % 4:
            _bad(f"{w} [{key}]", f"origin = {m['origin']:#x} must be 4-byte aligned")
        if m["origin"] + m["size"] > 2**32:
            _bad(f"{w} [{key}]", "origin + size passes the end of the 32-bit address space")
        mems[key] = (m["origin"], m["size"])
    (fo, fs), (ro, rs) = mems["flash"], mems["ram"]
    if fo < ro + rs and ro < fo + fs:
        _bad(w, f"[flash] {fo:#x}..{fo + fs:#x} and [ram] {ro:#x}..{ro + rs:#x} overlap")
    if stack >= rs:
        _bad(w, f"stack_bytes = {stack} does not leave any RAM ({rs} bytes)")

    u = d["uart"]
    wu = f"{w} [uart]"
    _check_keys(u, _UART_KEYS, wu)
    if u["kind"] not in UART_KINDS:
        _bad(wu, f"kind = {u['kind']!r} is not one of {', '.join(UART_KINDS)}")
    if not PERIPH_LO <= u["base"] < PERIPH_HI:
        _bad(wu, f"base = {u['base']:#x} is outside the peripheral region {PERIPH_LO:#x}..{PERIPH_HI - 1:#x}")
    if not 0 <= u["irq"] < d["irq_count"]:
        _bad(wu, f"irq = {u['irq']} is not below irq_count = {d['irq_count']}")
    if not 300 <= u["baud"] <= 10_000_000:
        _bad(wu, f"baud = {u['baud']} is out of range")
    kind = u["kind"]
    if kind == "stm32-usart":
        if u.get("layout") not in STM32_LAYOUTS:
            _bad(wu, f"an stm32-usart needs layout = one of {', '.join(STM32_LAYOUTS)}, got {u.get('layout')!r}")
        if "pclk_hz" not in u:
            _bad(wu, "an stm32-usart needs pclk_hz (the USART's clock; BRR = pclk_hz / baud)")
    elif "layout" in u:
        _bad(wu, f"layout applies to stm32-usart only, not {kind}")
    if kind == "nrf-uarte":
        for k in ("tx_pin", "rx_pin"):
            if k not in u:
                _bad(wu, f"an nrf-uarte needs {k} (the GPIO number, port 1 pins are 32 + n)")
            if not 0 <= u[k] < 48:
                _bad(wu, f"{k} = {u[k]} is not a GPIO of an nRF52840 (0..47)")
        if u["baud"] not in _NRF_BAUD:
            _bad(wu, f"baud = {u['baud']} is not one the UARTE has ({', '.join(map(str, _NRF_BAUD))})")
    elif "tx_pin" in u or "rx_pin" in u:
        _bad(wu, "tx_pin / rx_pin apply to nrf-uarte only (other UARTs take their pins from [[init]])")
    if "pclk_hz" in u and not 1_000 <= u["pclk_hz"] <= 1_000_000_000:
        _bad(wu, f"pclk_hz = {u['pclk_hz']} is out of range")
    if kind in ("cmsdk", "pl011", "rp2040-pl011"):
        clk = u.get("pclk_hz", d["clock_hz"])
        if kind == "cmsdk" and clk // u["baud"] < 16:
            _bad(wu, f"a CMSDK UART needs clock / baud >= 16, got {clk} / {u['baud']}")
        if kind != "cmsdk" and clk / (16 * u["baud"]) < 1:
            _bad(wu, f"a PL011 needs clock >= 16 x baud, got {clk} and {u['baud']}")

    ops = []
    for i, op in enumerate(d.get("init", [])):
        wi = f"{w} [[init]] #{i + 1}"
        _check_keys(op, _INIT_KEYS, wi)
        for k, v in op.items():
            _u32(v, wi, k)
        has_write, has_rmw = "write" in op, ("set" in op or "clear" in op)
        has_wait = "wait_mask" in op or "wait_value" in op
        if has_write + has_rmw + has_wait != 1:
            _bad(wi, "give exactly one of: write = V; set = S and/or clear = C; wait_mask = M with wait_value = V")
        if has_wait:
            if "wait_mask" not in op or "wait_value" not in op:
                _bad(wi, "a wait needs both wait_mask and wait_value")
            if op["wait_value"] & ~op["wait_mask"]:
                _bad(wi, "wait_value has bits outside wait_mask: the wait could never end")
            ops.append(InitOp(op["addr"], "wait", wait_mask=op["wait_mask"], wait_value=op["wait_value"]))
        elif has_write:
            ops.append(InitOp(op["addr"], "write", set=op["write"]))
        else:
            ops.append(InitOp(op["addr"], "rmw", clear=op.get("clear", 0), set=op.get("set", 0)))
        if op["addr"] % 4:
            _bad(wi, f"addr = {op['addr']:#x} is not 4-byte aligned")

    fm = d["flash_method"]
    _check_keys(fm, _FLASH_KEYS, f"{w} [flash_method]")
    if fm["method"] not in FLASH_METHODS:
        _bad(f"{w} [flash_method]", f"method = {fm['method']!r} is not one of {', '.join(FLASH_METHODS)}")

    qemu = d.get("qemu")
    if qemu is not None:
        _check_keys(qemu, _QEMU_KEYS, f"{w} [qemu]")
        if not 1_000 <= qemu["systick_hz"] <= 2_000_000_000:
            _bad(f"{w} [qemu]", f"systick_hz = {qemu['systick_hz']} is out of range")
        if not all(isinstance(a, str) for a in qemu.get("extra_args", [])):
            _bad(f"{w} [qemu]", "extra_args must be a list of strings")
    if fm["method"] == "qemu" and qemu is None:
        _bad(w, "flash_method qemu needs a [qemu] table (machine, systick_hz)")

    images = tuple(d.get("images", ["elf", "bin", "hex"]))
    for im in images:
        if im not in IMAGES:
            _bad(w, f"images: {im!r} is not one of {', '.join(IMAGES)}")
    if "elf" not in images:
        _bad(w, "images must include 'elf'")
    uf2_family = d.get("uf2_family")
    if "uf2" in images and uf2_family is None:
        _bad(w, "a uf2 image needs uf2_family (e.g. 0xE48BFF56 for the RP2040)")
    if uf2_family is not None:
        _u32(uf2_family, w, "uf2_family")
    boot2 = d.get("boot2")
    if boot2 is not None:
        if boot2 not in BOOT2:
            _bad(w, f"boot2 = {boot2!r} is not one of {', '.join(BOOT2)}")
        if core != "cortex-m0plus":
            _bad(w, "boot2 is the RP2040's second-stage boot loader; it needs core = cortex-m0plus")
    cflags = tuple(d.get("cflags", []))
    if not all(isinstance(c, str) and c.startswith("-") for c in cflags):
        _bad(w, "cflags must be a list of compiler options (strings starting with '-')")

    return Profile(
        name=d["name"], description=d["description"], core=core, fpu=fpu, float_abi=abi,
        clock_hz=d["clock_hz"], irq_count=d["irq_count"], stack_bytes=stack,
        flash_origin=fo, flash_size=fs, ram_origin=ro, ram_size=rs, uart=dict(u), init=tuple(ops),
        flash_method=dict(fm), qemu=dict(qemu) if qemu else None, boot2=boot2, images=images,
        uf2_family=uf2_family, cflags=cflags, path=path)


_NRF_BAUD = {1200: 0x0004F000, 2400: 0x0009D000, 4800: 0x0013B000, 9600: 0x00275000, 14400: 0x003AF000,
             19200: 0x004EA000, 28800: 0x0075C000, 38400: 0x009D0000, 57600: 0x00EB0000,
             76800: 0x013A9000, 115200: 0x01D60000, 230400: 0x03B00000, 250000: 0x04000000,
             460800: 0x07400000, 921600: 0x0F000000, 1000000: 0x10000000}


def nrf_baud_register(baud: int) -> int:
    """The UARTE BAUDRATE register value for a baud rate (nRF52840 product specification)."""
    return _NRF_BAUD[baud]
