"""Build an exported firmware project with the cross toolchain and check its footprint against the board.

    rep = build_project("out/kws")      # {"flash_bytes", "ram_bytes", "flash_limit", "ram_limit", "fits", "elf", ...}
    check_fits(rep)                     # FootprintError naming what to shrink when it does not fit

Flash is text + data of the ELF (``arm-none-eabi-size``: code, constants, the model's weights and tables,
the initial values of .data), RAM is data + bss (the model's state and scratch, the UART ring buffer,
and the stack the linker script reserves, which is a NOLOAD section counted in bss). When the firmware
overflows the board, the linker refuses it; the project is then linked once more against enlarged
memories (board/link_measure.ld -> build/measure.elf, never to be flashed) so that the report can say by
how much and which layers to shrink.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from edgesnn.errors import EdgeSNNError

from .export import read_project


class BuildError(EdgeSNNError):
    """The firmware did not compile or link (the compiler's messages are in the text)."""


class ToolchainMissing(BuildError):
    """No arm-none-eabi-gcc or make."""


class FootprintError(EdgeSNNError):
    """The firmware does not fit the board's flash or RAM; ``report`` has the numbers."""

    def __init__(self, msg: str, report: dict):
        super().__init__(msg)
        self.report = report


CROSS = os.environ.get("EDGESNN_CROSS", "arm-none-eabi-")


def need_toolchain():
    missing = [t for t in (f"{CROSS}gcc", f"{CROSS}size", "make") if shutil.which(t) is None]
    if missing:
        raise ToolchainMissing(f"{', '.join(missing)} not found; install the ARM cross toolchain (Debian: "
                               f"gcc-arm-none-eabi libnewlib-arm-none-eabi binutils-arm-none-eabi make; "
                               f".ci/setup-toolchain.sh installs them)")


def _jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _make(project: Path, *targets, timeout: float = 900) -> subprocess.CompletedProcess:
    cmd = ["make", "-C", str(project), f"-j{_jobs()}", f"CROSS={CROSS}", *targets]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BuildError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from None


def elf_size(elf) -> dict:
    """text, data, bss of an ELF (arm-none-eabi-size, Berkeley format)."""
    res = subprocess.run([f"{CROSS}size", "-B", str(elf)], capture_output=True, text=True)
    if res.returncode != 0:
        raise BuildError(f"{CROSS}size {elf} failed: {res.stderr}")
    line = res.stdout.strip().splitlines()[-1].split()
    return {"text": int(line[0]), "data": int(line[1]), "bss": int(line[2])}


def build_project(project_dir, clean: bool = False, timeout: float = 900) -> dict:
    """Run make in an exported project and measure the ELF. Returns the report whether or not the
    firmware fits (``fits``); raises BuildError if it does not compile."""
    need_toolchain()
    project = Path(project_dir)
    meta = read_project(project)
    prof = meta["profile"]
    if clean:
        _make(project, "clean")
    res = _make(project, "all", timeout=timeout)
    overflow = re.findall(r"region [`']?(\w+)'? overflowed by (\d+) bytes", res.stderr)
    elf = project / "build" / "firmware.elf"
    if res.returncode != 0 and not overflow:
        raise BuildError(f"the firmware for {prof['name']} did not build (make in {project}):\n"
                         f"{_tail(res.stderr or res.stdout)}")
    if overflow:
        m = _make(project, "build/measure.elf", timeout=timeout)
        if m.returncode != 0:
            raise BuildError(f"the oversized firmware could not even be linked for measurement:\n{_tail(m.stderr)}")
        elf = project / "build" / "measure.elf"
        stale = project / "build" / "firmware.elf"
        if stale.exists():
            stale.unlink()       # never leave an ELF that does not fit where a flasher would find it
    sz = elf_size(elf)
    flash = sz["text"] + sz["data"]
    ram = sz["data"] + sz["bss"]
    rep = {
        "profile": prof["name"], "mode": meta["mode"], "model": meta["model"]["name"],
        "flash_bytes": flash, "ram_bytes": ram,
        "flash_limit": prof["flash"]["size"], "ram_limit": prof["ram"]["size"],
        "stack_bytes": prof["stack_bytes"],
        "fits": flash <= prof["flash"]["size"] and ram <= prof["ram"]["size"],
        "elf": str(elf), "size": sz,
        "images": [str(project / "build" / f"firmware.{im}") for im in prof["images"]] if not overflow else [],
    }
    if not rep["fits"]:
        rep["advice"] = advice(rep, meta)
    return rep


def _tail(text: str, n: int = 40) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[-n:])


def _fmt(n: int) -> str:
    return f"{n:,} B"


def advice(rep: dict, meta: dict) -> str:
    """What does not fit, by how much, and which layers to shrink (largest first)."""
    fp = meta["footprint"]
    layers = fp["layers"]
    parts = [f"model {rep['model']!r} does not fit {rep['profile']}:"]
    if rep["flash_bytes"] > rep["flash_limit"]:
        parts.append(f"flash needs {_fmt(rep['flash_bytes'])} of {_fmt(rep['flash_limit'])} "
                     f"(over by {_fmt(rep['flash_bytes'] - rep['flash_limit'])}).")
        big = sorted((l for l in layers if l["weight_bytes"]), key=lambda l: -l["weight_bytes"])[:3]
        if big:
            desc = ", ".join(f"layer {l['index']} {l['kind']} {_fmt(l['weight_bytes'])} "
                             f"({' x '.join(map(str, l['weight_shape']))} weights)" for l in big)
            top = big[0]
            parts.append(f"The largest weights: {desc}. Shrink layer {top['index']} ({top['kind']}, "
                         f"{_fmt(top['weight_bytes'])} of weights) first: fewer neurons or inputs, or a "
                         f"smaller kernel.")
        if meta.get("mode") == "verify":
            parts.append("The verify firmware also stores its input events in flash: try fewer --steps.")
    if rep["ram_bytes"] > rep["ram_limit"]:
        parts.append(f"RAM needs {_fmt(rep['ram_bytes'])} of {_fmt(rep['ram_limit'])} "
                     f"(over by {_fmt(rep['ram_bytes'] - rep['ram_limit'])}, including a "
                     f"{_fmt(rep['stack_bytes'])} stack).")
        users = [(l["state_bytes"], f"layer {l['index']} {l['kind']} state {_fmt(l['state_bytes'])} "
                                    f"({l['neurons']:,} neurons)", l) for l in layers]
        users.append((fp["scratch_bytes"], f"step scratch {_fmt(fp['scratch_bytes'])} (sized by the widest "
                                           f"layer, {fp['width']:,} neurons)", None))
        users.sort(key=lambda u: -u[0])
        parts.append("The largest RAM users: " + ", ".join(u[1] for u in users[:3]) + ".")
        top = next(u[2] for u in users if u[2] is not None)
        parts.append(f"Shrink layer {top['index']} ({top['kind']}, {top['neurons']:,} neurons) first: fewer "
                     f"channels or neurons, or a stride.")
    parts.append("Or choose a board with more memory (`edgesnn devices` lists them).")
    return " ".join(parts)


def check_fits(rep: dict):
    """Raise FootprintError (with the advice) unless the firmware fits; call before running or flashing."""
    if not rep["fits"]:
        raise FootprintError(rep.get("advice") or f"the firmware does not fit {rep['profile']}", rep)
