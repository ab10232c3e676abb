"""Board support (firmware_gen: profiles, export, build, verify, QEMU; docs/devices.md).

- Every board profile loads; a bad profile is refused with a message naming the file and the key.
- Every profile's export compiles with -Werror and links, real boards included (they cannot run here).
- The firmware on emulated boards (QEMU) equals the emulator bit for bit at every step: random networks
  of every layer and neuron kind, the edges (empty input, every input active, repeated indices), the
  presets, and the dvs-conv preset on the real DVS Gesture recordings; a corrupted weight in the device
  build is caught and named.
- A model too big for a board is refused before anything runs, naming the layer to shrink.
- The UF2 image, the RP2040 boot2 checksum, the .bs2 reader, instruction counting under -icount.

Tests that need arm-none-eabi-gcc / make / qemu-system-arm skip when they are missing and fail when
EDGESNN_REQUIRE_TOOLCHAIN=1. The DVS Gesture test finds the recordings at ../shared/data (from the
repository root) or $EDGESNN_DATA, and skips without them unless EDGESNN_REQUIRE_DATA=1.
"""
import json
import os
import re
import struct
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import need

from edgesnn import cli
from edgesnn.model import modelfile, presets
from edgesnn.model.quantize import quantize
from edgesnn.model.spec import Dense, Network, Neuron
from edgesnn.simulator import Events
from firmware_gen import boot2, build, export, profiles, qemu, uf2
from firmware_gen import verify as V

from netgen import random_events, random_network

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_DATA = os.environ.get("EDGESNN_REQUIRE_DATA", "") not in ("", "0")
EMULATED = ["qemu-mps2-an386", "qemu-mps2-an385", "qemu-netduinoplus2", "qemu-lm3s6965evb"]
REAL = ["stm32f4-discovery", "nucleo-h743zi", "nrf52840-dk", "rpi-pico"]
QEMU_TIMEOUT = 120


@pytest.fixture(scope="module")
def cross():
    need("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-objcopy", "make")


@pytest.fixture(scope="module")
def emu(cross):
    need("qemu-system-arm")


def data_dir() -> Path | None:
    for d in (os.environ.get("EDGESNN_DATA"), ROOT.parent / "shared" / "data"):
        if d and (Path(d) / "dvs_gesture_10").is_dir():
            return Path(d)
    return None


def small_model(seed=3, conv=False, readout=True):
    return quantize(random_network(seed, conv=conv, readout=readout))


def check_identical(res, what=""):
    assert res["identical"], f"{what}: first mismatch {res['first_mismatch']}"
    assert abs(res["icount_check"]["ratio"] - 1) < 0.005, f"{what}: SysTick does not count instructions: {res['icount_check']}"


# ================================================================== profiles (no toolchain)

def test_every_profile_loads_and_the_required_boards_exist():
    names = profiles.names()
    for n in EMULATED + REAL:
        assert n in names
    ps = {p.name: p for p in profiles.all_profiles()}
    a = ps["qemu-mps2-an386"]
    assert (a.core, a.fpu, a.float_abi, a.uart["kind"], a.uart["base"], a.uart["irq"]) == \
        ("cortex-m4", "fpv4-sp-d16", "hard", "cmsdk", 0x40004000, 0)
    assert a.qemu["machine"] == "mps2-an386" and a.emulated
    assert ps["qemu-mps2-an385"].core == "cortex-m3" and not ps["qemu-mps2-an385"].has_fpu
    n2 = ps["qemu-netduinoplus2"]
    assert (n2.uart["kind"], n2.uart["base"]) == ("stm32-usart", 0x40011000)
    assert ps["nucleo-h743zi"].core == "cortex-m7" and ps["nrf52840-dk"].fpu == "fpv4-sp-d16"
    pico = ps["rpi-pico"]
    assert pico.core == "cortex-m0plus" and "uf2" in pico.images and pico.uf2_family == 0xE48BFF56
    assert pico.boot2 == "generic-03h"
    for p in REAL:
        assert not ps[p].emulated
    for p in ps.values():
        assert p.cpu_flags[0] == f"-mcpu={p.core}"
        assert ("-mfloat-abi=hard" in p.cpu_flags) == (p.float_abi == "hard")


def _an386() -> dict:
    return tomllib.loads((profiles.profile_dir() / "qemu-mps2-an386.toml").read_text())


def _write_profile(tmp_path, d, name="qemu-mps2-an386"):
    lines = []

    def val(v):
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return str(v)

    tables = {}
    for k, v in d.items():
        if isinstance(v, dict):
            tables[k] = v
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            tables[k] = v
        else:
            lines.append(f"{k} = {val(v)}")
    for k, v in tables.items():
        if isinstance(v, list):
            for item in v:
                lines.append(f"[[{k}]]")
                lines += [f"{kk} = {val(vv)}" for kk, vv in item.items()]
        else:
            lines.append(f"[{k}]")
            lines += [f"{kk} = {val(vv)}" for kk, vv in v.items()]
    p = tmp_path / f"{name}.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_profile_round_trip_through_the_test_writer(tmp_path):
    p = profiles.load(_write_profile(tmp_path, _an386()))
    assert p.name == "qemu-mps2-an386" and p.ram_size == 0x400000


BAD = [
    (lambda d: d.pop("core"), "missing key 'core'"),
    (lambda d: d.update(cor="cortex-m4"), "unknown key 'cor'"),
    (lambda d: d.update(core="cortex-m5"), "core = 'cortex-m5'"),
    (lambda d: d.update(core="cortex-m3"), "a cortex-m3 has no FPU"),
    (lambda d: d.update(fpu="none"), "needs an FPU"),
    (lambda d: d.update(clock_hz="25 MHz"), "clock_hz must be an integer"),
    (lambda d: d["ram"].update(origin=0x100000), "overlap"),
    (lambda d: d["flash"].update(size=0), "positive multiple of 4"),
    (lambda d: d["uart"].update(kind="usb"), "kind = 'usb'"),
    (lambda d: d["uart"].update(irq=40), "irq = 40 is not below irq_count"),
    (lambda d: d["uart"].update(base=0x10000000), "outside the peripheral region"),
    (lambda d: d["uart"].update(layout="f4"), "layout applies to stm32-usart only"),
    (lambda d: d.update(stack_bytes=0x500000), "does not leave any RAM"),
    (lambda d: d.update(stack_bytes=1001), "multiple of 8"),
    (lambda d: d.update(init=[{"addr": 0x40000000, "set": 1, "write": 2}]), "exactly one of"),
    (lambda d: d.update(init=[{"addr": 0x40000000, "wait_mask": 1, "wait_value": 2}]), "could never end"),
    (lambda d: d["flash_method"].update(method="jtag"), "method = 'jtag'"),
    (lambda d: d.pop("qemu"), "needs a [qemu] table"),
    (lambda d: d.update(images=["elf", "uf2"]), "needs uf2_family"),
    (lambda d: d.update(boot2="generic-03h"), "needs core = cortex-m0plus"),
    (lambda d: d.update(name="other"), "must equal the file name"),
]


@pytest.mark.parametrize("mutate,message", BAD, ids=[m for _, m in BAD])
def test_bad_profiles_are_refused_with_the_key_named(tmp_path, mutate, message):
    d = _an386()
    mutate(d)
    path = _write_profile(tmp_path, d)
    with pytest.raises(profiles.ProfileError) as e:
        profiles.load(path)
    assert message in str(e.value)
    assert str(path) in str(e.value)


def test_profile_file_errors(tmp_path):
    with pytest.raises(profiles.ProfileError, match="did you mean qemu-mps2-an386"):
        profiles.load("qemu-mps2-an368")
    bad = tmp_path / "broken.toml"
    bad.write_text("name = \n")
    with pytest.raises(profiles.ProfileError, match="not valid TOML"):
        profiles.load(bad)


def test_cli_devices_lists_every_profile(capsys):
    assert cli.main(["devices", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = [d["name"] for d in out["devices"]]
    assert names == profiles.names()
    an386 = next(d for d in out["devices"] if d["name"] == "qemu-mps2-an386")
    assert an386["qemu_machine"] == "mps2-an386" and an386["ram"]["size"] == 4 << 20
    assert cli.main(["devices"]) == 0
    assert "rpi-pico" in capsys.readouterr().out


# ================================================================== UF2, boot2, .bs2 (no toolchain)

def test_uf2_blocks():
    data = bytes(range(256)) * 3 + b"\x01\x02"
    img = uf2.convert(data, 0x10000000, uf2.FAMILY_RP2040)
    assert len(img) == 4 * 512
    m0, m1, flags, addr, size, no, total, fam = struct.unpack_from("<8I", img, 512)
    assert (m0, m1, flags, addr, size, no, total, fam) == \
        (0x0A324655, 0x9E5D5157, 0x2000, 0x10000100, 256, 1, 4, 0xE48BFF56)
    assert struct.unpack_from("<I", img, 1024 - 4)[0] == 0x0AB16F30
    blocks = uf2.parse(img)
    assert b"".join(b[1] for b in blocks)[:len(data)] == data
    assert [b[0] for b in blocks] == [0x10000000 + 256 * i for i in range(4)]
    assert all(b[4] == 0xE48BFF56 for b in blocks)
    assert blocks[-1][1][2:] == bytes(254)            # the last payload is zero padded
    with pytest.raises(ValueError, match="multiple"):
        uf2.convert(data, 0x10000001, 1)
    with pytest.raises(ValueError, match="magic"):
        uf2.parse(bytes(512))


def test_boot2_image_and_checksum():
    im = boot2.image()
    assert len(im) == 256 and im[:len(boot2.CODE)] == boot2.CODE
    assert im[len(boot2.CODE):252] == bytes(252 - len(boot2.CODE))
    # an independent check of the CRC: a CRC-32/MPEG-2 over data followed by its CRC (big-endian) is 0
    crc = int.from_bytes(im[252:], "little")
    assert boot2.crc32_mpeg2(im[:252] + crc.to_bytes(4, "big")) == 0
    assert boot2.crc32_mpeg2(b"123456789") == 0x0376E6E7      # the catalogued check value of CRC-32/MPEG-2
    # the code ends by loading SP and PC from the vector table at 0x10000100 (a literal in the pool)
    assert struct.pack("<I", 0x10000100) in boot2.CODE and struct.pack("<I", 0xE000ED08) in boot2.CODE
    with pytest.raises(ValueError):
        boot2.image(bytes(253))


def _bs2(events) -> bytes:
    out = bytearray()
    for x, y, p, t in events:
        out += bytes([x, y, (p << 7) | (t >> 16) & 0x7F, (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def test_bs2_reader_and_binning(tmp_path):
    ev = [(0, 0, 0, 10), (127, 127, 1, 999), (4, 8, 1, 1000), (5, 9, 1, 1500), (127, 0, 0, 0x7FFFFF)]
    f = tmp_path / "x.bs2"
    f.write_bytes(_bs2(ev))
    r = V.read_bs2(f)
    assert r["x"].tolist() == [0, 127, 4, 5, 127] and r["y"].tolist() == [0, 127, 8, 9, 0]
    assert r["p"].tolist() == [0, 1, 1, 1, 0] and r["t"].tolist() == [10, 999, 1000, 1500, 0x7FFFFF]
    out = V.bin_dvs(r[:4], (2, 32, 32), 1e-3, sensor=(128, 128))
    assert out.n_steps == 2
    # index = p * 1024 + (y // 4) * 32 + x // 4; (4, 8) and (5, 9) fall on the same input: it repeats
    assert out.step(0).tolist() == [0, 1024 + 31 * 32 + 31]
    assert out.step(1).tolist() == [1024 + 2 * 32 + 1] * 2
    assert V.bin_dvs(r[:4], (2, 32, 32), 1e-3, n_steps=1).n_steps == 1     # sensor size guessed: 128
    with pytest.raises(Exception, match="downsample"):
        V.bin_dvs(r[:4], (2, 30, 30), 1e-3, sensor=(128, 128))
    with pytest.raises(Exception, match=r"\(2, H, W\)"):
        V.bin_dvs(r[:4], (64,), 1e-3)
    (tmp_path / "bad.bs2").write_bytes(b"1234")
    with pytest.raises(Exception, match="5-byte events"):
        V.read_bs2(tmp_path / "bad.bs2")


def test_input_sources():
    m = quantize(presets.make("w2"))
    ev, what = V.load_input("random:0.1", m, 50)
    assert ev.n_steps == 50 and 0.05 < ev.idx.size / (50 * 64) < 0.15 and "seed 0" in what
    ev2, _ = V.load_input("random:0.1", m, 50)
    assert np.array_equal(ev.idx, ev2.idx)                               # the model's seed: reproducible
    assert V.load_input("empty", m, 7)[0].idx.size == 0
    assert V.load_input("all", m, 3)[0].idx.size == 3 * 64
    for bad in ("random:2", "random:x", "nothing.txt", "missing.bs2"):
        with pytest.raises(Exception):
            V.load_input(bad, m, 5)


# ================================================================== export (no toolchain)

def test_export_layout(tmp_path):
    prof = profiles.load("qemu-mps2-an386")
    res = export.export_project(small_model(), prof, tmp_path / "p")
    d = Path(res["dir"])
    for f in ("edgesnn.c", "edgesnn.h", "model_data.c", "model_data.h", "model.blob", "Makefile",
              "project.json", "board/board.c", "board/board.h", "board/startup.c", "board/uart.c",
              "board/main.c", "board/vectors.c", "board/board_config.h", "board/link.ld"):
        assert (d / f).is_file(), f
    mk = (d / "Makefile").read_text()
    for flag in ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-nostartfiles", "--specs=nano.specs",
                 "--specs=nosys.specs", "-Wl,--gc-sections", "-fno-tree-loop-distribute-patterns",
                 "-mcpu=cortex-m4", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"):
        assert flag in mk, flag
    ld = (d / "board/link.ld").read_text()
    assert "ORIGIN = 0x00000000, LENGTH = 0x00400000" in ld and "ORIGIN = 0x20000000, LENGTH = 0x00400000" in ld
    assert "__stack_size = 4096" in ld
    vec = (d / "board/vectors.c").read_text()
    assert "board_vectors[48]" in vec and "uart_irq_handler,   /* IRQ 0: UART */" in vec
    cfg = (d / "board/board_config.h").read_text()
    assert "BOARD_HAS_FPU 1" in cfg and "BOARD_UART_BASE 0x40004000u" in cfg and "BOARD_SEMIHOSTING 1" in cfg
    assert "CPACR" in (d / "board/startup.c").read_text()
    # unchanged files are not rewritten (a re-export rebuilds nothing)
    before = {p: p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}
    export.export_project(small_model(), prof, d)
    assert before == {p: p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}
    pico = export.board_files(profiles.load("rpi-pico"), "app")
    assert "board/boot2.c" in pico and "tools/uf2conv.py" in pico and "firmware.uf2" in pico["Makefile"]
    assert "BOARD_SEMIHOSTING 0" in pico["board/board_config.h"]


# ================================================================== builds (cross toolchain)

def _no_fp_instructions(elf):
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True).stdout
    fp = re.findall(r"\tv(?:ldr|str|mov|add|sub|mul|div|cvt|cmp|push|pop|mrs|msr|fma|neg|abs)\S*\s", dis)
    return fp


@pytest.mark.parametrize("name", EMULATED + REAL)
def test_every_profile_exports_compiles_and_links(cross, tmp_path, name):
    prof = profiles.load(name)
    model = small_model(seed=5, conv=True)
    for mode in ("app", "verify"):
        d = tmp_path / mode
        ev = Events.from_lists(random_events(5, int(model.network.n_inputs), 5)) if mode == "verify" else None
        export.export_project(model, prof, d, mode=mode, events=ev)
        rep = build.build_project(d)
        assert rep["fits"], rep
        assert rep["flash_limit"] == prof.flash_size and rep["ram_limit"] == prof.ram_size
        assert rep["ram_bytes"] >= prof.stack_bytes and rep["flash_bytes"] > 7000
        for im in prof.images:
            assert (d / "build" / f"firmware.{im}").is_file(), im
        assert _no_fp_instructions(rep["elf"]) == []       # the runtime and the glue use no float at all
    if "uf2" in prof.images:
        bin_ = (d / "build/firmware.bin").read_bytes()
        blocks = uf2.parse((d / "build/firmware.uf2").read_bytes())
        assert blocks[0][0] == prof.flash_origin and blocks[0][4] == prof.uf2_family
        assert b"".join(b[1] for b in blocks)[:len(bin_)] == bin_
    if prof.boot2:
        bin_ = (d / "build/firmware.bin").read_bytes()
        assert bin_[:256] == boot2.image()
        sp, reset = struct.unpack_from("<II", bin_, 256)       # the vector table follows boot2
        assert sp & 0xF0000000 == 0x20000000 and reset & 1 and 0x10000100 < reset < 0x10200000


def test_boot2_source_assembles_to_the_stored_code(cross, tmp_path):
    src = export.BOARD_DIR / "rp2040_boot2_03h.S"
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m0plus", "-mthumb", "-c", str(src), "-o",
                    str(tmp_path / "b.o")], check=True)
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "-j", ".text", str(tmp_path / "b.o"),
                    str(tmp_path / "b.bin")], check=True)
    assert (tmp_path / "b.bin").read_bytes() == boot2.CODE


def _tiny_flash_profile(tmp_path):
    d = _an386()
    d["name"] = "tiny"
    d["flash"]["size"] = 64 * 1024
    d["ram"]["size"] = 32 * 1024
    return profiles.load(_write_profile(tmp_path, d, "tiny"))


def test_a_model_too_big_for_flash_is_refused_naming_the_layer(cross, tmp_path, capsys):
    rng = np.random.default_rng(0)
    net = Network((300,), [Dense(rng.normal(0, 0.1, (200, 300)), Neuron("lif")),
                           Dense(rng.normal(0, 0.1, (10, 200)), Neuron("li"))], name="big")
    model = quantize(net)
    prof = _tiny_flash_profile(tmp_path)
    d = tmp_path / "p"
    export.export_project(model, prof, d)
    rep = build.build_project(d)
    assert not rep["fits"] and rep["flash_bytes"] > 64 * 1024 and rep["flash_limit"] == 64 * 1024
    assert not (d / "build/firmware.elf").exists() and rep["elf"].endswith("measure.elf")
    with pytest.raises(build.FootprintError) as e:
        build.check_fits(rep)
    msg = str(e.value)
    assert "does not fit tiny" in msg and "flash needs" in msg
    assert "Shrink layer 0 (dense, 60,000 B of weights)" in msg and "200 x 300" in msg
    # the command line refuses it too (exit status 2), the JSON report on stdout
    assert cli.main(["build", str(d), "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["fits"] is False and "Shrink layer 0" in out["advice"]


def test_a_model_too_big_for_ram_is_refused_before_it_runs(cross, tmp_path):
    model = quantize(presets.make("dvs-conv"))
    d = tmp_path / "p"
    export.export_project(model, "nrf52840-dk", d)
    rep = build.build_project(d)
    assert not rep["fits"] and rep["ram_bytes"] > rep["ram_limit"] == 256 * 1024
    assert "RAM needs" in rep["advice"] and "Shrink layer 0 (conv2d, 16,384 neurons)" in rep["advice"]
    # verify refuses a model too big for its board before QEMU starts: 9000 neurons need ~100 KiB of
    # state and scratch, the lm3s6965 has 64 KiB
    rng = np.random.default_rng(0)
    wide = quantize(Network((4,), [Dense(rng.normal(0, 0.3, (9000, 4)), Neuron("lif"))], name="wide"))
    with pytest.raises(build.FootprintError, match="does not fit qemu-lm3s6965evb: RAM needs") as e:
        V.verify(wide, "qemu-lm3s6965evb", V.load_input("random:0.5", wide, 3)[0], work_dir=tmp_path / "v")
    assert "Shrink layer 0 (dense, 9,000 neurons)" in str(e.value)
    assert not (tmp_path / "v/build/firmware.elf").exists()


def test_verify_refuses_real_boards_and_ports(tmp_path, capsys):
    m = quantize(presets.make("w2"))
    with pytest.raises(V.VerifyError, match="real board"):
        V.verify(m, "nrf52840-dk", V.load_input("empty", m, 2)[0])
    path = tmp_path / "w2.esnn"
    modelfile.save(m, path)
    # --port: over the device link (tests/test_device_cli.py); a port that is not there is said plainly
    assert cli.main(["verify", str(path), "--input", "empty", "--port", "/dev/no-such-board"]) == 2
    assert "cannot open '/dev/no-such-board'" in capsys.readouterr().err


# ================================================================== QEMU: bit-exact with the emulator

@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    """One verify project per board, reused (only the model and input change)."""
    root = tmp_path_factory.mktemp("verify")
    return {n: root / n for n in EMULATED}


SEEDS = list(range(10))


def test_random_networks_cover_every_kind():
    kinds, neurons, plastic = set(), set(), set()
    for s in SEEDS:
        net = random_network(s, conv=s % 2 == 0, readout=s % 3 == 0)
        for layer in net.layers:
            kinds.add(type(layer).__name__)
            if getattr(layer, "neuron", None) is not None:
                neurons.add(layer.neuron.kind)
            plastic.add(bool(getattr(layer, "plastic", False)))
    assert kinds == {"Conv2d", "SumPool2d", "Flatten", "Dense", "Recurrent"}
    assert neurons == {"lif", "if", "cuba", "alif", "li"} and plastic == {True, False}


@pytest.mark.parametrize("seed", SEEDS)
def test_random_networks_are_bit_exact_on_mps2_an386(emu, workdirs, seed):
    net = random_network(seed, conv=seed % 2 == 0, readout=seed % 3 == 0)
    model = quantize(net)
    ev = Events.from_lists(random_events(seed, int(net.n_inputs), 40))   # empty, full and repeated steps
    res = V.verify(model, "qemu-mps2-an386", ev, work_dir=workdirs["qemu-mps2-an386"], timeout=QEMU_TIMEOUT)
    check_identical(res, f"seed {seed}")
    assert res["steps"] == 40 and res["checked"].startswith("spike lists and whole state")


@pytest.mark.parametrize("source", ["empty", "all"])
def test_edges_empty_and_full_input(emu, workdirs, source):
    model = quantize(random_network(11, conv=True, readout=False))
    ev = V.load_input(source, model, 30)[0]
    res = V.verify(model, "qemu-mps2-an386", ev, work_dir=workdirs["qemu-mps2-an386"], timeout=QEMU_TIMEOUT)
    check_identical(res, source)
    # every input twice in one step: repeated indices count twice
    n = int(model.network.n_inputs)
    ev2 = Events.from_lists([list(range(n)) * 2, [], [n - 1] * 5])
    check_identical(V.verify(model, "qemu-mps2-an386", ev2, work_dir=workdirs["qemu-mps2-an386"],
                             timeout=QEMU_TIMEOUT), "repeats")


@pytest.mark.parametrize("board", ["qemu-mps2-an385", "qemu-netduinoplus2", "qemu-lm3s6965evb"])
def test_other_emulated_boards_are_bit_exact(emu, workdirs, board):
    for seed in (20, 21):
        model = quantize(random_network(seed, conv=seed % 2 == 0))
        ev = Events.from_lists(random_events(seed, int(model.network.n_inputs), 30))
        check_identical(V.verify(model, board, ev, work_dir=workdirs[board], timeout=QEMU_TIMEOUT),
                        f"{board} seed {seed}")


@pytest.mark.parametrize("preset,rate", [("w2", 0.05), ("kws", 0.05)])
def test_presets_are_bit_exact(emu, workdirs, preset, rate):
    model = quantize(presets.make(preset, seed=1))
    ev = V.load_input(f"random:{rate}", model, 100)[0]
    res = V.verify(model, "qemu-mps2-an386", ev, work_dir=workdirs["qemu-mps2-an386"], timeout=QEMU_TIMEOUT)
    check_identical(res, preset)
    assert 1000 < res["instructions_per_step"] < 200_000


def _corrupt_one_weight(project):
    p = Path(project) / "model_data.c"
    s = p.read_text()
    start = s.index("{", s.index("esnn_model_wa[")) + 1
    m = re.compile(r"-?\d+").search(s, start)
    v = int(m.group())
    p.write_text(s[:m.start()] + str(v - 40 if v > 0 else v + 40) + s[m.end():])


@pytest.mark.parametrize("dump", ["all", "none"])
def test_a_corrupted_weight_in_the_device_build_is_caught(emu, tmp_path, dump):
    """The first int8 weight is W[0, 0] of layer 0 (input 0 -> neuron 0): the first step where input 0
    is active must differ in neuron 0's membrane, found from the whole state or, with hashes only, by the
    rebuild that dumps that step."""
    model = quantize(presets.make("w2"))
    ev = V.load_input("random:0.05", model, 60)[0]
    first = next(t for t in range(ev.n_steps) if 0 in ev.step(t).tolist())
    res = V.verify(model, "qemu-mps2-an386", ev, work_dir=tmp_path, dump=dump, tamper=_corrupt_one_weight,
                   timeout=QEMU_TIMEOUT)
    assert res["identical"] is False
    m = res["first_mismatch"]
    assert (m["step"], m["layer"], m["neuron"], m["what"]) == (first, 0, 0, "v")
    assert m["emulator"] != m["device"]
    # the same project, rebuilt from the model, agrees again
    check_identical(V.verify(model, "qemu-mps2-an386", ev, work_dir=tmp_path, timeout=QEMU_TIMEOUT), "restored")


def test_a_fault_ends_qemu_with_a_clear_error(emu, tmp_path):
    model = small_model()

    def crash(project):
        p = Path(project) / "board/main.c"
        p.write_text(p.read_text().replace("    board_init();\n    calib",
                                           "    board_init();\n    ((void (*)(void))0x30000001u)();\n    calib"))
    with pytest.raises(V.VerifyError, match="QEMU exit status 131"):
        V.verify(model, "qemu-mps2-an386", V.load_input("empty", model, 3)[0], work_dir=tmp_path,
                 tamper=crash, timeout=QEMU_TIMEOUT)


def test_instruction_count_relation(emu, workdirs):
    """-icount shift=0: the calibration loop of 2 * 100000 instructions reads back as exactly that many
    on every emulated board (SysTick at its profile's systick_hz)."""
    model = small_model()
    ev = V.load_input("empty", model, 2)[0]
    for board in EMULATED:
        res = V.verify(model, board, ev, work_dir=workdirs[board], timeout=QEMU_TIMEOUT)
        assert res["icount_check"]["loop_instructions"] == 200_000
        assert abs(res["icount_check"]["measured"] - 200_000) <= res["instructions"]["resolution"] + 20, board


# ================================================================== the real recordings

@pytest.fixture(scope="module")
def dvs_files():
    d = data_dir()
    if d is None:
        msg = "DVS Gesture recordings not found at ../shared/data/dvs_gesture_10 or $EDGESNN_DATA"
        if REQUIRE_DATA:
            pytest.fail(msg + " and EDGESNN_REQUIRE_DATA is set")
        pytest.skip(msg)
    files = sorted((d / "dvs_gesture_10").glob("*.bs2"), key=lambda p: int(p.stem))
    assert len(files) == 10
    return files


def test_dvs_conv_on_the_dvs_gesture_recordings(emu, dvs_files, tmp_path):
    """dvs-conv fed the first 300 ms of each of the ten recordings (128x128 -> 2x32x32), bit-exact. About
    1.6 M instructions per step under QEMU: the recordings run on two workers (one project each)."""
    from concurrent.futures import ThreadPoolExecutor

    model = quantize(presets.make("dvs-conv"))
    inputs = []
    for f in dvs_files:
        ev, what = V.load_input(str(f), model, 300)
        assert ev.n_steps == 300 and ev.idx.size > 5000
        inputs.append((f.name, ev))
    workers = max(1, min(2, os.cpu_count() or 1))

    def run(k):
        results = []
        for name, ev in inputs[k::workers]:
            results.append((name, V.verify(model, "qemu-mps2-an386", ev, work_dir=tmp_path / f"w{k}",
                                           timeout=QEMU_TIMEOUT)))
        return results

    with ThreadPoolExecutor(workers) as pool:
        done = [r for rs in pool.map(run, range(workers)) for r in rs]
    assert len(done) == 10
    for name, res in done:
        check_identical(res, name)
        assert res["steps"] == 300


# ================================================================== the application firmware's UART

@pytest.mark.parametrize("board", ["qemu-mps2-an386", "qemu-netduinoplus2", "qemu-lm3s6965evb"])
def test_app_firmware_steps_over_the_uart(emu, tmp_path, board):
    """The exported application firmware, driven over its interrupt-driven UART with the wire protocol
    (docs/protocol.md) by edgesnn.device (the netduinoplus2 drops what arrives before its USART is on:
    the client repeats its HELLO). tests/test_device_firmware.py covers the protocol in depth."""
    from edgesnn.device import DeviceError, connect
    from edgesnn.device import protocol as P
    from edgesnn.simulator import Simulator
    model = quantize(presets.make("w2"))
    export.export_project(model, board, tmp_path)
    rep = build.build_project(tmp_path)
    sim = Simulator.fixed(model)
    rng = np.random.default_rng(4)
    with qemu.Session(rep["elf"], board, tcp=True) as s, connect(s.url, timeout=10) as dev:
        info = dev.info
        assert info.n_inputs == 64 and info.model_hash.hex() == V._hash_hex(model) and info.name == board
        steps = [np.flatnonzero(rng.random(64) < 0.2).tolist() for _ in range(25)]
        out = dev.run(steps)
        for t, ev in enumerate(steps):
            assert out.spikes[t].tolist() == sim.step(ev).tolist(), t
        dev.reset()
        sim.reset()
        big = list(range(64)) * (info.max_events // 64)              # longer than the receive ring
        assert dev.step(big).spikes.tolist() == sim.step(big).tolist()
        req = P.pack_step_request(0, [P.StepIn([64])])                # out of range: refused, state kept
        with pytest.raises(DeviceError) as e:
            dev.request(P.Msg.STEP, req)
        assert e.value.code == P.Err.STEP and e.value.detail == -1


# ================================================================== the command line, end to end

def test_cli_export_build_verify(emu, tmp_path, capsys):
    model = quantize(presets.make("w2"))
    path = tmp_path / "w2.esnn"
    modelfile.save(model, path)
    out = tmp_path / "fw"
    assert cli.main(["export", str(path), "--target", "c", "--device", "rpi-pico", "--out", str(out),
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["profile"] == "rpi-pico"
    assert cli.main(["build", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep) >= {"flash_bytes", "ram_bytes", "flash_limit", "ram_limit", "fits", "elf"} and rep["fits"]
    assert (out / "build/firmware.uf2").is_file()
    assert cli.main(["export", str(path), "--target", "rust", "--device", "rpi-pico", "--out", str(out)]) == 2
    assert "only 'c'" in capsys.readouterr().err
    assert cli.main(["verify", str(path), "--device", "qemu-mps2-an386", "--input", "random:0.05",
                     "--steps", "20", "--json", "--keep", str(tmp_path / "v")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["identical"] is True and res["steps"] == 20 and res["first_mismatch"] is None
    assert res["instructions_per_step"] > 1000 and "per_step" not in res["instructions"]
    assert cli.main(["verify", str(path), "--device", "qemu-mps2-an386", "--input", "random:0.05",
                     "--steps", "20", "--keep", str(tmp_path / "v")]) == 0
    assert "identical: every layer's spikes" in capsys.readouterr().out
