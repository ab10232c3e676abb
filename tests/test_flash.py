"""`edgesnn flash` (firmware_gen/flash.py) and the STM32 ROM boot loader client (firmware_gen/stm32boot.py).

- stm32-uart: a real firmware built for stm32f4-discovery is written through stm32boot over a real
  pseudo-terminal to an emulated STM32F407 boot loader (tests/stm32_bootloader.py: the one test double,
  a chip these machines do not have); its flash then equals the objcopy binary. Bad paths: a write
  NACK (write protection), a checksum error on the line (resent) and a persistent one, no answer to
  0x7F, an image larger than the flash, the older Erase (0x43).
- QEMU: `edgesnn flash DIR --device qemu-mps2-an386` as a process; its first line is the URL; the
  firmware answers HELLO there with the model's hash; terminating the process stops QEMU. --detach
  leaves QEMU running and prints its pid.
- Real boards without their tools: openocd missing (PATH without it), no UF2 drive mounted.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import need
from stm32_bootloader import F407_SECTORS, EmulatedSTM32

from edgesnn import cli
from edgesnn.model import modelfile, presets
from edgesnn.model.quantize import quantize
from firmware_gen import export
from firmware_gen import flash as F
from firmware_gen import stm32boot as S

ROOT = Path(__file__).resolve().parent.parent
FLASH = 0x08000000


@pytest.fixture(scope="module")
def cross():
    need("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-objcopy", "make")


@pytest.fixture(scope="module")
def model():
    return quantize(presets.make("w2"))


@pytest.fixture(scope="module")
def projects(tmp_path_factory, model):
    """Exported (not yet built) w2 projects, one per profile, made on first use."""
    root = tmp_path_factory.mktemp("flash")
    made = {}

    def get(profile):
        if profile not in made:
            out = root / profile
            export.export_project(model, profile, out)
            made[profile] = out
        return made[profile]
    return get


def image(n, seed=1):
    import random
    return random.Random(seed).randbytes(n)


# ================================================================== stm32-uart: AN3155 over a pty

def test_stm32_uart_flashes_the_built_firmware(cross, projects, capsys):
    """The CLI builds the project, makes the flat binary, and writes it through the boot loader: the
    emulated flash then holds exactly that binary, the rest erased; the part is started at 0x08000000."""
    project = projects("stm32f4-discovery")
    with EmulatedSTM32() as chip:
        rc = cli.main(["flash", str(project), "--method", "stm32-uart", "--port", chip.port, "--json"])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        assert chip.error is None
    rep = json.loads(captured.out)
    binary = (project / "build" / "firmware.bin").read_bytes()
    # the flat binary is objcopy's, and it is a Cortex-M image for this board's flash and RAM
    ref = project / "build" / "ref.bin"
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", str(project / "build" / "firmware.elf"), str(ref)],
                   check=True)
    assert binary == ref.read_bytes()
    sp, reset = int.from_bytes(binary[:4], "little"), int.from_bytes(binary[4:8], "little")
    assert 0x20000000 < sp <= 0x20020000 and FLASH < reset < FLASH + len(binary) and reset & 1
    assert chip.flash_bytes(n=len(binary)) == binary
    assert chip.flash_bytes(FLASH + len(binary)) == b"\xff" * (chip.flash_size - len(binary))
    assert chip.jumped_to == FLASH
    det = rep["details"]
    assert det["bytes"] == len(binary) and det["pid"] == 0x413 and det["verified"] and det["resent_blocks"] == 0
    covered = S.pages_for(S.PARTS[0x413], 0, len(binary))
    assert det["pages"] == covered and chip.erased == covered      # only the sectors the image covers
    assert "stm32-uart" in captured.err                              # the progress bar, on stderr


def test_write_refused_by_write_protection_names_command_and_address():
    img = image(40_000)                                              # sectors 0, 1, 2
    with EmulatedSTM32(write_protected={1}) as chip:
        # the erase of a protected sector is refused as a whole: nothing erased
        with pytest.raises(S.Stm32BootError) as e:
            S.flash_binary(chip.port, img)
        msg = str(e.value)
        assert "Extended Erase (0x44) of pages [0, 1, 2]" in msg and "NACK" in msg and "write-protected" in msg
        assert chip.erased == []
        # writing without erasing first: the block at the start of sector 1 is refused every time
        with pytest.raises(S.Stm32BootError) as e:
            S.flash_binary(chip.port, img, erase="none")
        msg = str(e.value)
        assert "Write Memory (0x31) at 0x08004000" in msg and "NACK" in msg and "write-protected" in msg
        assert "sent 3 times" in msg
        assert chip.flash_bytes(n=0x4000) == img[:0x4000]           # sector 0 was written before it
        assert chip.flash_bytes(FLASH + 0x4000, 0x4000) == b"\xff" * 0x4000
        assert chip.jumped_to is None


def test_a_checksum_error_on_the_line_is_resent_and_a_persistent_one_named():
    img = image(5000)
    with EmulatedSTM32(line_errors={3}) as chip:                     # the third block is damaged once
        rep = S.flash_binary(chip.port, img)
        assert rep["resent_blocks"] == 1 and chip.flash_bytes(n=len(img)) == img
        assert ("Write Memory", FLASH + 0x200, "NACK checksum") in chip.log
    with EmulatedSTM32(line_errors={3, 4, 5}) as chip:               # and every time it is sent
        with pytest.raises(S.Stm32BootError, match=r"Write Memory \(0x31\) at 0x08000200: 256 bytes: refused "
                                                   r"\(NACK\).*checksum error on the line.*sent 3 times"):
            S.flash_binary(chip.port, img)
        assert chip.jumped_to is None


def test_no_answer_to_the_init_byte_is_a_timeout_naming_port_and_boot0():
    with EmulatedSTM32(silent=True) as chip:
        t0 = time.monotonic()
        with pytest.raises(S.Stm32BootError) as e:
            S.flash_binary(chip.port, image(100), timeout=0.5)
        assert time.monotonic() - t0 < 5
    msg = str(e.value)
    assert "no answer to the boot loader init byte 0x7F" in msg and chip.port in msg and "BOOT0" in msg


def test_an_image_larger_than_the_flash_is_refused_before_anything_is_erased():
    with EmulatedSTM32() as chip:
        with pytest.raises(S.Stm32BootError, match=r"does not fit the part's 1,048,576-byte flash.*over by 4 "
                                                   r"bytes.*nothing was erased"):
            S.flash_binary(chip.port, image(1024 * 1024 + 4))
        assert chip.erased == [] and chip.flash_bytes() == b"\xff" * chip.flash_size
    # the size comes from the part's flash size register, not from the product ID alone
    with EmulatedSTM32(sectors=F407_SECTORS[:4]) as chip:           # a 64 KiB part
        with pytest.raises(S.Stm32BootError, match="65,536-byte flash"):
            S.flash_binary(chip.port, image(70_000))
        assert chip.erased == []


def test_older_erase_command_and_one_command_at_a_time():
    img = image(3000)
    with EmulatedSTM32(extended_erase=False) as chip:
        with S.Stm32Boot.open(chip.port) as boot:
            boot.init()
            info = boot.get()
            assert info.version == 0x31 and S.CMD_ERASE in info.commands and not info.extended_erase
            assert boot.get_version() == (0x31, 0, 0)
            assert boot.get_id() == 0x413
            rep = S.flash_binary(boot, img, go=False)
            assert rep["erase"] == "pages" and chip.erased == [0]
            assert boot.read_memory(FLASH + 1000, 7) == img[1000:1007]
            with pytest.raises(S.Stm32BootError, match=r"Read Memory \(0x11\) at 0x30000000: address: refused"):
                boot.read_memory(0x30000000, 4)
            with pytest.raises(S.Stm32BootError, match=r"Extended Erase \(0x44\).*does not offer it"):
                boot._command(S.CMD_EXT_ERASE)
            boot.mass_erase()                                        # Erase 0x43 with 0xFF 0x00
            assert chip.erased[-1] == "mass" and chip.flash_bytes() == b"\xff" * chip.flash_size
            S.flash_binary(boot, img, go=False)
            boot.go(FLASH)
        assert chip.jumped_to == FLASH and chip.flash_bytes(n=len(img)) == img
    with EmulatedSTM32() as chip:                                   # Extended Erase 0xFFFF
        rep = S.flash_binary(chip.port, img, erase="mass")
        assert rep["erase"] == "mass" and chip.erased == ["mass"] and chip.flash_bytes(n=len(img)) == img


def test_stm32_uart_is_refused_for_other_boards_and_without_a_port(projects):
    with pytest.raises(F.FlashError, match="for STM32 parts; rpi-pico is not one"):
        F.flash(projects("rpi-pico"), method="stm32-uart", port="/dev/null")
    with pytest.raises(F.FlashError, match="exported for rpi-pico, not stm32f4-discovery"):
        F.flash(projects("rpi-pico"), "stm32f4-discovery")


# ================================================================== QEMU: the UART on TCP, HELLO

@pytest.fixture(scope="module")
def emu(cross):
    need("qemu-system-arm")


def _cli(*args):
    return subprocess.Popen([sys.executable, "-m", "edgesnn", "flash", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _children(pid):
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _gone(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def _hello(url):
    from edgesnn import device
    with device.connect(url, timeout=10) as dev:
        return dev.hello()


def test_qemu_flash_end_to_end(emu, projects, model):
    """`edgesnn flash DIR --device qemu-mps2-an386`: the URL first, HELLO answers there with the model's
    hash (more than once: QEMU takes a new connection after one closes); SIGTERM stops QEMU, exit 0."""
    project = projects("qemu-mps2-an386")
    proc = _cli(str(project), "--device", "qemu-mps2-an386", "--timeout", "60")
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("socket://127.0.0.1:"), (url, proc.stderr.read() if proc.poll() is not None else "")
        qemus = [p for p in _children(proc.pid) if "qemu-system-arm" in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(qemus) == 1
        for _ in range(2):
            info = _hello(url)
            assert info.hash_hex == modelfile.model_hash(model)
            assert info.name == "qemu-mps2-an386" and info.n_inputs == 64
    finally:
        proc.terminate()
        rc = proc.wait(timeout=30)
    err = proc.stderr.read()
    assert rc == 0, err
    assert "stopped QEMU" in err
    assert _gone(qemus[0])


def test_qemu_flash_detach_json(emu, projects, model):
    project = projects("qemu-mps2-an386")
    proc = _cli(str(project), "--detach", "--json", "--port", "socket://127.0.0.1:0")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "socket://127.0.0.1:PORT" in err    # port 0 is no port to connect to
    proc = _cli(str(project), "--detach", "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    rep = json.loads(out.splitlines()[0])
    assert set(rep) >= {"url", "pid", "profile", "hash"} and rep["profile"] == "qemu-mps2-an386"
    assert rep["hash"] == modelfile.model_hash(model)
    try:
        assert not _gone(rep["pid"])                                 # outlives the command
        assert _hello(rep["url"]).hash_hex == rep["hash"]
    finally:
        os.kill(rep["pid"], 15)
    for _ in range(100):
        if _gone(rep["pid"]):
            break
        time.sleep(0.1)
    assert _gone(rep["pid"])


def test_a_firmware_that_never_answers_stops_qemu_with_its_stderr(emu, projects, tmp_path, model):
    """A firmware that does not speak the protocol (here: one that answers every byte with 0xE5, the
    sync byte of the old provisional frames) is refused after --timeout: QEMU stopped, its stderr and
    the remedy in the message."""
    project = tmp_path / "mute"
    export.export_project(model, "qemu-mps2-an386", project)
    main = project / "board" / "main.c"
    main.write_text('#include "board.h"\nint main(void) {\n    board_init();\n    for (;;) {\n'
                    '        board_wait_rx();\n        while (board_getc() >= 0) board_putc(0xE5u);\n    }\n}\n')
    t0 = time.monotonic()
    with pytest.raises(F.FlashError) as e:
        F.flash(project, timeout=3)
    assert time.monotonic() - t0 < 60
    msg = str(e.value)
    assert "did not answer HELLO" in msg and "QEMU was stopped after 3 s" in msg and "QEMU's stderr" in msg
    assert "export and flash again" in msg and "no answer to HELLO" in msg
    assert not any("qemu-system-arm" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
                   for p in _children(os.getpid()) if not _gone(p))


# ================================================================== real boards without their tools

def _toolchain_only_path(tmp_path) -> str:
    """A PATH holding the cross toolchain, make and python, and no flashing tool."""
    import shutil
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("make", "arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-objcopy", "python3"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    return str(bin_dir)


def test_missing_openocd_says_what_to_install_and_which_file(cross, projects, tmp_path, monkeypatch, capsys):
    project = projects("stm32f4-discovery")
    monkeypatch.setenv("PATH", _toolchain_only_path(tmp_path))
    assert cli.main(["flash", str(project), "--device", "stm32f4-discovery"]) == 2
    err = capsys.readouterr().err
    elf = str((project / "build" / "firmware.elf").resolve())
    assert "openocd is not installed" in err and "apt-get install openocd" in err and elf in err
    assert "board/stm32f4discovery.cfg" in err                       # the command it would have run
    with pytest.raises(F.ToolMissing, match="pip install pyocd"):
        F.flash(project, method="pyocd")
    with pytest.raises(F.ToolMissing, match="apt-get install stlink-tools"):
        F.flash(project, method="st-flash")


def test_uf2_without_a_mounted_drive_and_with_one(cross, projects, tmp_path, monkeypatch, model):
    project = projects("rpi-pico")
    monkeypatch.setenv("USER", "esnn-test-nobody")                  # no /media/esnn-test-nobody
    with pytest.raises(F.FlashError) as e:
        F.flash(project)
    msg = str(e.value)
    assert "no UF2 boot drive is mounted" in msg and "/media/esnn-test-nobody/*" in msg and "BOOTSEL" in msg
    assert str((project / "build" / "firmware.uf2").resolve()) in msg
    empty = tmp_path / "not-a-drive"
    empty.mkdir()
    with pytest.raises(F.FlashError, match="has no INFO_UF2.TXT"):
        F.flash(project, drive=empty)
    drive = tmp_path / "RPI-RP2"                                     # what the boot ROM's drive holds
    drive.mkdir()
    (drive / "INFO_UF2.TXT").write_text("UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n")
    res = F.flash(project, drive=drive)
    assert (drive / "firmware.uf2").read_bytes() == (project / "build" / "firmware.uf2").read_bytes()
    assert res.details["drive"] == str(drive) and res.method == "uf2" and res.hello is None
    # with --port, HELLO is awaited there after flashing; the protocol's emulated device on a pty stands
    # in for the flashed board's UART (no Pico is attached here)
    from edgesnn.device import EmulatedDevice
    with EmulatedDevice(model).serve_pty() as srv:
        res = F.flash(project, drive=drive, port=srv.url, timeout=10)
    assert res.url == srv.url and res.hash == modelfile.model_hash(model)


def test_hello_after_flashing_times_out_clearly(tmp_path):
    """Nothing answering on the port given after a flash: the error names the port and what came back."""
    with EmulatedSTM32(silent=True) as chip:                         # a pty where nobody answers
        with pytest.raises(F.FlashError, match=f"no HELLO answer from {chip.port} within 1 s"):
            F.wait_hello(chip.port, timeout=1)
