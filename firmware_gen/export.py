"""A self-contained C99 firmware project for a board profile: `edgesnn export MODEL --target c --device P`.

    export_project(model, profile, "out/kws")                      # the application firmware
    export_project(model, profile, "work", mode="verify", events=ev)   # the verify firmware

The directory holds what codegen.write_project writes (the runtime, model_data.{h,c}, model.blob) and,
through its ``extra_files``, the board glue and the build:

    board/board_config.h   generated from the profile: clock, UART, init sequence, FPU, semihosting
    board/vectors.c        generated vector table (16 + irq_count entries, the UART's IRQ wired)
    board/startup.c        reset handler (FPU on, .data, .bss, VTOR), fault handler
    board/board.{c,h}      init sequence, receive ring buffer, wfi, SysTick, semihosting exit
    board/uart.c           the driver of the profile's UART kind
    board/main.c           app: the device link (esnn_link.c, docs/protocol.md) on the UART; verify: the
                           embedded-input run
    esnn_link.{h,c}        (copied with the runtime) the wire protocol, compiled into the app firmware
    board/link.ld          linker script from the profile's flash and RAM; link_measure.ld: the same
                           with room to spare, to measure a firmware that does not fit
    board/boot2.c          (RP2040) the 256-byte second-stage boot loader with its CRC
    verify_data.{h,c}      (verify) the input events as const CSR arrays
    tools/uf2conv.py       (UF2 profiles) binary -> UF2
    Makefile               arm-none-eabi-gcc with the profile's flags
    project.json           profile, mode and the model's per-layer footprint (read by `edgesnn build`)

Files are rewritten only when their content changes, so re-exporting into the same directory (say, a new
input for the verify firmware) rebuilds only what changed.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from edgesnn.errors import InputError
from edgesnn.kernels import layout as K
from edgesnn.model.program import build_fixed

from . import boot2 as BOOT2
from . import codegen
from .profiles import Profile, load as load_profile, nrf_baud_register

BOARD_DIR = Path(__file__).parent / "boards"
UF2_TOOL = Path(__file__).parent / "uf2.py"
UART_SOURCES = {"cmsdk": "uart_cmsdk.c", "pl011": "uart_pl011.c", "rp2040-pl011": "uart_pl011.c",
                "stm32-usart": "uart_stm32.c", "nrf-uarte": "uart_nrf_uarte.c"}
MODES = ("app", "verify", "learn")   # learn: board/learn_main.c with runtime/esnn_learn.c (tests)
CALIB_ITERS = 100_000      # the verify firmware's calibration loop: 2 * CALIB_ITERS instructions
C_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
LD_FLAGS = ("-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections")
STARTUP_FLAGS = ("-fno-tree-loop-distribute-patterns",)
MEASURE_BYTES = 0x08000000   # region size of link_measure.ld (128 MiB: nothing real overflows it)

# The application firmware's link buffers (board/app_main.c, esnn_link.h), sized from the board's RAM
BIG_RAM = 128 * 1024          # from this much RAM on: 4 KiB payloads; below: 1 KiB
RAM_RESERVE = 4096            # left free besides the stack: the UART ring, globals, the runtime's statics
UPLOAD_MAX = 1 << 20          # a default upload buffer is never larger than 1 MiB (two are reserved)
# esnn_learn_config_t's members in field order (Learner.CONFIG_FIELDS), and those declared uint32_t
LEARN_CONFIG_MEMBERS = ("rule", "seed", "y_one", "decolle_target", "a_plus", "a_minus", "d_post", "d_elig", "reg",
                        "reg_lo", "reg_hi", "reg_d", "reg_shift", "center", "hinge", "nlms", "trial")
LEARN_CONFIG_UNSIGNED = {"seed", "d_post", "d_elig", "reg_d", "reg_shift", "center", "trial"}


# ------------------------------------------------------------------ generated board files

def _hex(v: int) -> str:
    return f"0x{v:08X}u"


def uart_divisor(profile: Profile) -> dict:
    """The UART's clock divisor macros for the profile."""
    u = profile.uart
    baud = u["baud"]
    clk = u.get("pclk_hz", profile.clock_hz)
    kind = u["kind"]
    if kind == "cmsdk":
        return {"BOARD_UART_DIVISOR": f"{clk // baud}u"}
    if kind in ("pl011", "rp2040-pl011"):
        div = (4 * clk + baud // 2) // baud        # 64 x clk / (16 baud), rounded
        return {"BOARD_UART_IBRD": f"{div >> 6}u", "BOARD_UART_FBRD": f"{div & 63}u"}
    if kind == "stm32-usart":
        return {"BOARD_UART_DIVISOR": f"{(clk + baud // 2) // baud}u",
                "BOARD_USART_LAYOUT_F4": "1" if u["layout"] == "f4" else "0"}
    if kind == "nrf-uarte":
        return {"BOARD_UART_DIVISOR": _hex(nrf_baud_register(baud)),
                "BOARD_UART_TX_PIN": f"{u['tx_pin']}u", "BOARD_UART_RX_PIN": f"{u['rx_pin']}u"}
    raise AssertionError(kind)


def app_sizes(profile: Profile, model=None, upload_bytes: int | None = None, learn_bytes: int = 0) -> dict:
    """The buffers of the application firmware for a profile (and the compiled-in model):

    max_payload  4096 with at least BIG_RAM of RAM, else 1024 (the receive buffer; the reply buffer has
                 14 bytes more)
    max_events   the input indices that fit one STEP request of max_payload ((max_payload - 6) / 2)
    max_steps    steps per STEP request
    state_bytes  state memory: the model's state and class counts, or more (room for a larger uploaded
                 model): a quarter of what the buffers and the stack leave free
    upload_bytes each of the two upload buffers (ping-pong): a quarter of the free RAM, at most 1 MiB, a
                 multiple of 16; ``upload_bytes`` overrides it (0: no upload)
    rx_ring_bytes the UART receive ring: one whole frame, rounded up to a power of two

    ``learn_bytes``: RAM the learner takes (app_learn: its buffer and the int16 weights' copy), set aside
    before the quarters are taken.

    The rest stays free. A model or an override that does not fit is refused by the build (RAM)."""
    payload = 4096 if profile.ram_size >= BIG_RAM else 1024
    events = (payload - 6) // 2
    steps = 256 if payload >= 4096 else 64
    # the UART receive ring holds one whole frame, so a request is never lost while the main loop is held
    # up behind the receive interrupt (QEMU can deliver bytes faster than any real UART)
    ring = 1 << (payload + 14 - 1).bit_length()
    buffers = payload + (payload + 14) + 4 * events + ring
    need = 0
    if model is not None:
        prog = build_fixed(model)
        width = max(1, int(prog.ltab[:, K.L_N_OUT].max()))
        need = 4 * (int(prog.n_vs) + int(prog.n_ist) + width + (width + 1) // 2) + 4 * int(model.network.n_outputs)
    free = max(0, profile.ram_size - profile.stack_bytes - RAM_RESERVE - buffers - need - int(learn_bytes))
    quarter = (free // 4) & ~15
    state = max(need, quarter) & ~3
    if upload_bytes is None:
        upload = min(UPLOAD_MAX, quarter)
    else:
        upload = int(upload_bytes)
        if upload < 0:
            raise InputError(f"upload_bytes must be >= 0, got {upload}")
        upload = (upload + 15) & ~15
    return {"max_payload": payload, "max_events": events, "max_steps": steps, "state_bytes": max(4, state),
            "upload_bytes": upload, "rx_ring_bytes": ring}


def board_config_h(profile: Profile, mode: str, app: dict | None = None, learn: dict | None = None) -> str:
    semihost = 1 if profile.emulated else 0
    lines = [f"/* Board configuration for profile {profile.name} ({profile.description}).",
             f" * Generated by `edgesnn export` from {Path(profile.path).name}; do not edit: change the profile. */",
             "#ifndef EDGESNN_BOARD_CONFIG_H", "#define EDGESNN_BOARD_CONFIG_H", "",
             f'#define BOARD_NAME "{profile.name}"',
             f"#define BOARD_CLOCK_HZ {profile.clock_hz}u",
             f"#define BOARD_HAS_FPU {1 if profile.has_fpu and profile.float_abi != 'soft' else 0}",
             f"#define BOARD_SEMIHOSTING {semihost}   /* board_exit leaves QEMU through semihosting */",
             f"#define BOARD_MODE_{mode.upper()} 1",
             f"#define BOARD_UART_BASE {_hex(profile.uart['base'])}",
             f"#define BOARD_UART_IRQ {profile.uart['irq']}u",
             f"#define BOARD_UART_BAUD {profile.uart['baud']}u"]
    for k, v in uart_divisor(profile).items():
        lines.append(f"#define {k} {v}")
    if mode == "app":
        a = app or app_sizes(profile)
        lines += ["", "/* the device link's buffers (firmware_gen.export.app_sizes) */",
                  f"#define APP_MAX_PAYLOAD {a['max_payload']}u",
                  f"#define BOARD_RX_RING_SIZE {a['rx_ring_bytes']}u   /* one whole frame (a power of two) */",
                  f"#define APP_MAX_EVENTS {a['max_events']}u",
                  f"#define APP_MAX_STEPS {a['max_steps']}u",
                  f"#define APP_STATE_BYTES {a['state_bytes']}u",
                  f"#define APP_UPLOAD_BYTES {a['upload_bytes']}u   /* each of two buffers; 0: no upload */"]
        if learn is not None:
            lines += ["", f"/* on-device learning, rule {learn['rule']} (export_project learn_rule; esnn_learn.h) */",
                      f"#define APP_LEARN_BYTES {learn['bytes']}u",
                      f"#define APP_LEARN_CONFIG {{ {', '.join(learn['config'])} }}"]
    ops = []
    for op in profile.init:
        if op.kind == "write":
            ops.append(f"    {{{_hex(op.addr)}, 0u, 0u, {_hex(op.set)}}},   /* write */")
        elif op.kind == "rmw":
            ops.append(f"    {{{_hex(op.addr)}, 1u, {_hex(op.clear)}, {_hex(op.set)}}},   /* clear, set */")
        else:
            ops.append(f"    {{{_hex(op.addr)}, 2u, {_hex(op.wait_mask)}, {_hex(op.wait_value)}}},   /* wait */")
    if not ops:
        ops.append("    {0u, 3u, 0u, 0u}   /* nothing to do */")
    lines += ["", "/* {address, kind (0 write, 1 read-modify-write, 2 wait, 3 none), clear or mask, set or value} */",
              "#define BOARD_INIT_OPS { \\"]
    lines += [o + " \\" for o in ops]
    lines += ["}", "", "#endif /* EDGESNN_BOARD_CONFIG_H */", ""]
    return "\n".join(lines)


_SYSTEM_VECTORS = [
    ("Reset_Handler", "reset"), ("Default_Handler", "NMI"), ("Default_Handler", "HardFault"),
    ("Default_Handler", "MemManage"), ("Default_Handler", "BusFault"), ("Default_Handler", "UsageFault"),
    ("0", "reserved"), ("0", "reserved"), ("0", "reserved"), ("0", "reserved"),
    ("Default_Handler", "SVCall"), ("Default_Handler", "DebugMonitor"), ("0", "reserved"),
    ("Default_Handler", "PendSV"), ("Default_Handler", "SysTick"),
]
_ARMV6M_RESERVED = {"MemManage", "BusFault", "UsageFault", "DebugMonitor"}


def vectors_c(profile: Profile) -> str:
    n = 16 + profile.irq_count
    rows = ["    (board_vector_t)(uintptr_t)&_estack,   /* initial stack pointer */"]
    for handler, what in _SYSTEM_VECTORS:
        if profile.arch == "armv6-m" and what in _ARMV6M_RESERVED:
            handler, what = "0", f"reserved on ARMv6-M ({what})"
        rows.append(f"    {handler},   /* {what} */")
    irq = profile.uart["irq"]
    for i in range(profile.irq_count):
        rows.append(f"    uart_irq_handler,   /* IRQ {i}: UART */" if i == irq else f"    Default_Handler,   /* IRQ {i} */")
    return "\n".join([
        f"/* Vector table for profile {profile.name}: 16 system exceptions and {profile.irq_count} interrupts.",
        " * Generated by `edgesnn export`. */",
        '#include "board.h"', "",
        "extern uint32_t _estack;", "void Reset_Handler(void);", "void Default_Handler(void);", "",
        f'__attribute__((section(".isr_vector"), used)) const board_vector_t board_vectors[{n}] = {{',
        *rows, "};", ""])


def linker_script(profile: Profile, measure: bool = False) -> str:
    flash_len = MEASURE_BYTES if measure else profile.flash_size
    ram_len = MEASURE_BYTES if measure else profile.ram_size
    table = 4 * (16 + profile.irq_count)
    vtor_align = max(128, 1 << (table - 1).bit_length())     # VTOR: the table's size, to a power of two
    boot2 = ""
    if profile.boot2:
        boot2 = ("    .boot2 : {\n        KEEP(*(.boot2))\n    } > FLASH\n"
                 f"    ASSERT(SIZEOF(.boot2) == {BOOT2.SIZE}, \"boot2 must be exactly {BOOT2.SIZE} bytes\")\n\n")
    note = (" * MEASURE ONLY: regions enlarged so that an oversized firmware links and can be measured;\n"
            " * never flash build/measure.elf.\n" if measure else "")
    return f"""/* Linker script for profile {profile.name}, generated by `edgesnn export`.
{note} * The stack comes first in RAM, so that an overflow runs off the bottom of RAM into a fault instead
 * of silently into .data and .bss. */
ENTRY(Reset_Handler)

MEMORY
{{
    FLASH (rx)  : ORIGIN = 0x{profile.flash_origin:08X}, LENGTH = 0x{flash_len:08X}
    RAM   (rwx) : ORIGIN = 0x{profile.ram_origin:08X}, LENGTH = 0x{ram_len:08X}
}}

__stack_size = {profile.stack_bytes};

SECTIONS
{{
{boot2}    .isr_vector : {{
        . = ALIGN({vtor_align});
        KEEP(*(.isr_vector))
    }} > FLASH

    .text : {{
        *(.text .text.*)
        *(.rodata .rodata.*)
        . = ALIGN(4);
    }} > FLASH

    .ARM.extab : {{ *(.ARM.extab* .gnu.linkonce.armextab.*) }} > FLASH
    .ARM.exidx : {{
        __exidx_start = .;
        *(.ARM.exidx* .gnu.linkonce.armexidx.*)
        __exidx_end = .;
    }} > FLASH

    .stack (NOLOAD) : {{
        . = ALIGN(8);
        _sstack = .;
        . = . + __stack_size;
        . = ALIGN(8);
        _estack = .;
    }} > RAM

    .data : {{
        . = ALIGN(4);
        _sdata = .;
        *(.data .data.*)
        . = ALIGN(4);
        _edata = .;
    }} > RAM AT > FLASH
    _sidata = LOADADDR(.data);

    .bss (NOLOAD) : {{
        . = ALIGN(4);
        _sbss = .;
        __bss_start__ = .;
        *(.bss .bss.*)
        *(COMMON)
        . = ALIGN(4);
        _ebss = .;
        __bss_end__ = .;
    }} > RAM

    end = .;
    _end = .;
}}
"""


def makefile(profile: Profile, sources: list[str], mode: str, defines: tuple = ()) -> str:
    cpu = " ".join(profile.cpu_flags)
    images = ["$(BUILD)/firmware.elf"] + [f"$(BUILD)/firmware.{im}" for im in profile.images if im != "elf"]
    fm = profile.flash_method
    if fm["method"] == "qemu":
        flash = ("\t@echo \"$(PROFILE) is emulated: `make qemu` runs the firmware (or `edgesnn verify`)\"")
    elif fm.get("command"):
        flash = "\t" + fm["command"].replace("$", "$$").replace("$$(", "$(")
    else:
        flash = f"\t@echo \"flash build/firmware.* with {fm['method']}\""
    qemu = ""
    if profile.qemu:
        extra = " ".join(profile.qemu.get("extra_args", []))
        qemu = (f"\nqemu: $(BUILD)/firmware.elf\n"
                f"\tqemu-system-arm -M {profile.qemu['machine']} -display none -monitor none -serial stdio "
                f"-semihosting-config enable=on,target=native {extra} -kernel $<\n").replace("  ", " ")
    uf2 = ""
    if "uf2" in profile.images:
        uf2 = (f"\n$(BUILD)/firmware.uf2: $(BUILD)/firmware.bin tools/uf2conv.py\n"
               f"\t$(PYTHON) tools/uf2conv.py $< $@ --base 0x{profile.flash_origin:08X} "
               f"--family 0x{profile.uf2_family:08X}\n")
    extra_cflags = " ".join(list(profile.cflags) + [f"-D{d}" for d in defines])
    return f"""# Firmware for board profile {profile.name} ({mode} build), generated by `edgesnn export`.
# make            build/firmware.elf and the images ({', '.join(profile.images)})
# make size       flash and RAM use (text + data = flash, data + bss = RAM; bss holds the stack)
# make measure    link against enlarged memories (board/link_measure.ld) to measure a firmware that does
#                 not fit; never flash build/measure.elf
# make flash      {fm['method']}
PROFILE := {profile.name}
CROSS ?= arm-none-eabi-
CC := $(CROSS)gcc
OBJCOPY := $(CROSS)objcopy
SIZE := $(CROSS)size
PYTHON ?= python3
BUILD ?= build

CPU := {cpu}
OPT ?= -O2
CFLAGS := $(CPU) $(OPT) -g {' '.join(C_FLAGS)} -ffunction-sections -fdata-sections -I. -Iboard {extra_cflags} $(EXTRA_CFLAGS)
STARTUP_CFLAGS := {' '.join(STARTUP_FLAGS)}
LDFLAGS := $(CPU) {' '.join(LD_FLAGS)}

SRCS := {' '.join(sources)}
OBJS := $(SRCS:%.c=$(BUILD)/%.o)

all: {' '.join(images)}

$(BUILD)/%.o: %.c Makefile
\t@mkdir -p $(@D)
\t$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# GCC may turn the .data / .bss loops of the reset handler into memcpy / memset calls
$(BUILD)/board/startup.o: board/startup.c Makefile
\t@mkdir -p $(@D)
\t$(CC) $(CFLAGS) $(STARTUP_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/firmware.elf: $(OBJS) board/link.ld
\t$(CC) $(LDFLAGS) -T board/link.ld -Wl,-Map=$(BUILD)/firmware.map $(OBJS) -o $@

$(BUILD)/measure.elf: $(OBJS) board/link_measure.ld
\t$(CC) $(LDFLAGS) -T board/link_measure.ld $(OBJS) -o $@

$(BUILD)/firmware.bin: $(BUILD)/firmware.elf
\t$(OBJCOPY) -O binary $< $@

$(BUILD)/firmware.hex: $(BUILD)/firmware.elf
\t$(OBJCOPY) -O ihex $< $@
{uf2}
size: $(BUILD)/firmware.elf
\t$(SIZE) $<

measure: $(BUILD)/measure.elf
\t$(SIZE) $<

flash: all
{flash}
{qemu}
clean:
\trm -rf $(BUILD)

.PHONY: all size measure flash clean{' qemu' if profile.qemu else ''}

-include $(OBJS:.o=.d)
"""


# ------------------------------------------------------------------ the verify firmware's input

def verify_data(events, n_inputs: int, dump_from: int = 0, dump_to: int = 0) -> dict[str, str]:
    """verify_data.h / verify_data.c: the input events (CSR: step t's indices are idx[ptr[t]:ptr[t+1]])
    as const arrays, uint16 indices when the network has at most 65536 inputs."""
    ptr = np.asarray(events.ptr, np.int64)
    idx = np.asarray(events.idx, np.int64)
    T = ptr.size - 1
    if idx.size and (idx.min() < 0 or idx.max() >= n_inputs):
        bad = int(idx[(idx < 0) | (idx >= n_inputs)][0])
        raise InputError(f"input index {bad} is outside the network's {n_inputs} inputs")
    if idx.size >= 2**32:
        raise InputError("too many input events for one verify firmware")
    idx16 = n_inputs <= 65536
    per_step = np.diff(ptr)
    max_step = int(per_step.max()) if T else 0
    typ = "uint16_t" if idx16 else "int32_t"
    h = ["/* Input events of the verify firmware, generated by `edgesnn verify`. */",
         "#ifndef EDGESNN_VERIFY_DATA_H", "#define EDGESNN_VERIFY_DATA_H", "", "#include <stdint.h>", "",
         f"#define VERIFY_N_STEPS {T}u",
         f"#define VERIFY_N_EVENTS {idx.size}u",
         f"#define VERIFY_MAX_STEP_EVENTS {max_step}u",
         f"#define VERIFY_IDX16 {1 if idx16 else 0}",
         f"#define VERIFY_DUMP_FROM {int(dump_from)}u   /* steps dump_from <= t < dump_to send the whole state */",
         f"#define VERIFY_DUMP_TO {int(dump_to)}u",
         f"#define VERIFY_CALIB_ITERS {CALIB_ITERS}u", "",
         f"extern const uint32_t verify_ptr[{T + 1}];",
         f"extern const {typ} verify_idx[{max(1, idx.size)}];", "", "#endif", ""]

    def rows(vals, per):
        vals = [str(int(v)) for v in vals] or ["0"]
        return ",\n".join("    " + ", ".join(vals[i:i + per]) for i in range(0, len(vals), per))

    c = ['#include "verify_data.h"', "",
         f"const uint32_t verify_ptr[{T + 1}] = {{", rows(ptr.tolist(), 16), "};", "",
         f"const {typ} verify_idx[{max(1, idx.size)}] = {{", rows(idx.tolist(), 20), "};", ""]
    return {"verify_data.h": "\n".join(h), "verify_data.c": "\n".join(c)}


# ------------------------------------------------------------------ the learn firmware's input

def learn_bytes_bound(learner) -> int:
    """An upper bound of esnn_learn_bytes for a Learner's model and rule on a 32- or 64-bit target (the
    learn firmware's static buffer; the firmware checks the exact size at run time)."""
    prog = learner.sim.program
    n_layers = len(prog.ltab)
    C = int(learner.n_classes)
    width = max(1, int(prog.ltab[:, K.L_N_OUT].max()))
    xw = 1
    total = 64 + n_layers * 192 + 8 * (3 * C + 5 * width) + 4 * width + width + 8 * 16
    for L in learner.layers.values():
        n_in, n, rec = L.n_in, L.n_out, L.recurrent
        xw = max(xw, n_in, n)
        words = n_in + (2 * n if rec else 0) + (n if L.role in ("stdp", "rstdp") else 0)
        words += n if (learner.reg is not None and L.role != "readout") else 0
        words += C if L.role == "decolle" else 0
        words += n_in if (L.role == "readout" and learner.center) else 0
        words += (n_in + 2 * n + 2) if (L.role == "readout" and learner.trial) else 0   # acc, int64 vsum (+ align)
        words += n if L.kind == "alif" else 0
        words += (n_in * n + (n * n if rec else 0)) if L.role == "rstdp" else 0
        total += 4 * words + (C * n if L.role in ("etlp", "eprop", "decolle") else 0) + 8 * 12
    return (total + 4 * xw + 15) & ~7


def learn_data(learner, events, labels, rewards=None, flags=None) -> dict[str, str]:
    """learn_data.h / learn_data.c: the learner's constants (esnn_learn_config_t, eta and mask per layer)
    and the labelled steps (CSR events, label, reward, flags per step: bit 0 reset before the step, bit 1
    learning on, bits 8..15 weight decay kd) as const arrays, for board/learn_main.c."""
    from .hostlib import learn_config
    cfg = learn_config(learner)
    n_layers = len(learner.sim.program.ltab)
    ptr = np.asarray(events.ptr, np.int64)
    idx = np.asarray(events.idx, np.int64)
    T = ptr.size - 1
    labels = [int(v) for v in labels]
    rewards = [-(2**31)] * T if rewards is None else [int(v) for v in rewards]
    flags = [2] * T if flags is None else [int(v) for v in flags]
    if not len(labels) == len(rewards) == len(flags) == T:
        raise InputError("labels, rewards and flags need one value per step")
    eta = [int(learner.eta_shift.get(l, -1)) for l in range(n_layers)]
    mask = [1 if l in learner.mask else 0 for l in range(n_layers)]
    max_step = int(np.diff(ptr).max()) if T else 0

    def rows(vals, per=16):
        vals = [str(int(v)) for v in vals] or ["0"]
        return ",\n".join("    " + ", ".join(vals[i:i + per]) for i in range(0, len(vals), per))

    h = ["/* Labelled steps of the learn firmware, generated by firmware_gen.export.learn_data. */",
         "#ifndef EDGESNN_LEARN_DATA_H", "#define EDGESNN_LEARN_DATA_H", "", "#include <stdint.h>", "",
         '#include "esnn_learn.h"', "",
         f"#define LEARN_N_STEPS {T}u", f"#define LEARN_MAX_STEP_EVENTS {max_step}u",
         f"#define LEARN_BYTES {learn_bytes_bound(learner)}u   /* a bound; esnn_learn_bytes is checked at run time */",
         f"#define LEARN_CALIB_ITERS {CALIB_ITERS}u", "",
         "extern const esnn_learn_config_t learn_cfg;",
         f"extern const int32_t learn_eta[{n_layers}];", f"extern const int32_t learn_mask[{n_layers}];",
         f"extern const uint32_t learn_ptr[{T + 1}];", f"extern const int32_t learn_idx[{max(1, idx.size)}];",
         f"extern const int32_t learn_label[{max(1, T)}];", f"extern const int32_t learn_reward[{max(1, T)}];",
         f"extern const uint32_t learn_flags[{max(1, T)}];", "", "#endif", ""]
    fields = ",\n".join(f"    .{n} = {v}" for n, v in zip(LEARN_CONFIG_MEMBERS, learn_config_literals(cfg)))
    c = ['#include "learn_data.h"', "",
         "const esnn_learn_config_t learn_cfg = {", fields, "};", "",
         f"const int32_t learn_eta[{n_layers}] = {{", rows(eta), "};",
         f"const int32_t learn_mask[{n_layers}] = {{", rows(mask), "};",
         f"const uint32_t learn_ptr[{T + 1}] = {{", rows(ptr.tolist()), "};",
         f"const int32_t learn_idx[{max(1, idx.size)}] = {{", rows(idx.tolist(), 20), "};",
         f"const int32_t learn_label[{max(1, T)}] = {{", rows(labels), "};",
         f"const int32_t learn_reward[{max(1, T)}] = {{", ",\n".join("    " + c_int32(v) for v in rewards) or "    0", "};",
         f"const uint32_t learn_flags[{max(1, T)}] = {{", rows(flags), "};", ""]
    return {"learn_data.h": "\n".join(h), "learn_data.c": "\n".join(c)}


# ------------------------------------------------------------------ footprint of the model, per layer

def footprint(model) -> dict:
    """Bytes each layer puts in flash (weights) and RAM (state), and the step's scratch: what `edgesnn
    build` names when a model does not fit."""
    net = model.network
    prog = build_fixed(model)
    layers = []
    for i, (layer, q) in enumerate(zip(net.layers, model.layers)):
        row = prog.ltab[i]
        n_out = int(row[K.L_N_OUT])
        kind = type(layer).__name__.lower()
        if hasattr(layer, "weight_rec"):
            n_w = int(layer.weight.size + layer.weight_rec.size)
        elif kind in ("dense", "conv2d"):
            n_w = int(layer.weight.size)
        else:
            n_w = 0
        bits = q.bits if q is not None and n_w else 8
        words = n_out + 1
        for f in (K.L_V_OFF, K.L_I_OFF, K.L_A_OFF, K.L_R_OFF):
            if row[f] >= 0:
                words += n_out
        shape = list(getattr(layer, "weight").shape) if n_w else []
        layers.append({"index": i, "kind": kind, "neurons": 0 if kind == "flatten" else n_out,
                       "weights": n_w, "weight_bytes": n_w * bits // 8, "weight_shape": shape,
                       "state_bytes": 4 * words})
    width = int(prog.ltab[:, K.L_N_OUT].max())
    return {"name": net.name, "layers": layers, "width": width,
            "scratch_bytes": 4 * (width + (width + 1) // 2),
            "table_bytes": 4 * (K.NL + K.NP) * len(net.layers)}


# ------------------------------------------------------------------ the project

def _sync(src: Path, dst: Path) -> list[Path]:
    """Copy every file of src into dst where it differs (so make rebuilds only what changed)."""
    out = []
    for p in sorted(src.rglob("*")):
        if p.is_dir():
            continue
        q = dst / p.relative_to(src)
        data = p.read_bytes()
        if not (q.exists() and q.read_bytes() == data):
            q.parent.mkdir(parents=True, exist_ok=True)
            q.write_bytes(data)
        out.append(q)
    return out


def _write_if_changed(path: Path, text: str):
    if not (path.exists() and path.read_text() == text):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def board_files(profile: Profile, mode: str, app: dict | None = None, learn: dict | None = None) -> dict[str, str]:
    """Board glue, linker scripts and Makefile for a profile (the extra files of codegen.write_project);
    ``app``: the application firmware's buffer sizes (app_sizes; default: for no particular model);
    ``learn``: the app firmware's learner (app_learn; None: inference only)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    files = {
        "board/board.h": (BOARD_DIR / "board.h").read_text(),
        "board/board.c": (BOARD_DIR / "board.c").read_text(),
        "board/startup.c": (BOARD_DIR / "startup.c").read_text(),
        "board/uart.c": (BOARD_DIR / UART_SOURCES[profile.uart["kind"]]).read_text(),
        "board/main.c": (BOARD_DIR / f"{mode}_main.c").read_text(),
        "board/board_config.h": board_config_h(profile, mode, app, learn if mode == "app" else None),
        "board/vectors.c": vectors_c(profile),
        "board/link.ld": linker_script(profile),
        "board/link_measure.ld": linker_script(profile, measure=True),
    }
    sources = ["edgesnn.c", "model_data.c", "board/board.c", "board/uart.c", "board/vectors.c",
               "board/startup.c", "board/main.c"]
    if profile.boot2:
        files["board/boot2.c"] = BOOT2.c_source()
        files["board/rp2040_boot2_03h.S"] = (BOARD_DIR / "rp2040_boot2_03h.S").read_text()
        sources.append("board/boot2.c")
    if "uf2" in profile.images:
        files["tools/uf2conv.py"] = UF2_TOOL.read_text()
    if mode == "verify":
        sources.append("verify_data.c")
    elif mode == "learn":
        for f in ("esnn_learn.h", "esnn_learn.c"):
            files[f] = (codegen.RUNTIME_DIR / f).read_text()
        sources[1:1] = ["esnn_learn.c", "learn_data.c"]
    else:
        sources.insert(1, "esnn_link.c")
        if learn is not None:
            for f in ("esnn_learn.h", "esnn_learn.c"):
                files[f] = (codegen.RUNTIME_DIR / f).read_text()
            sources.insert(2, "esnn_learn.c")
    files["Makefile"] = makefile(profile, sources, mode,
                                 ("ESNN_LINK_LEARN",) if (learn is not None and mode == "app") else ())
    return files


def c_int32(v) -> str:
    """A C literal of the int32 v: (v), or INT32_MIN (-2147483648 is not a literal in C)."""
    return f"({int(v)})" if int(v) != -(2**31) else "INT32_MIN"


def learn_config_literals(cfg) -> list[str]:
    """C literals of the esnn_learn_config_t words ``cfg`` in field order: ``Nu`` for the uint32_t members,
    c_int32 for the int32_t ones."""
    return [f"{int(v)}u" if n in LEARN_CONFIG_UNSIGNED else c_int32(v) for n, v in zip(LEARN_CONFIG_MEMBERS, cfg)]


def app_learn(model, rule: str, options: dict | None = None) -> dict:
    """The app firmware's learner for ``rule`` and the Learner keyword ``options`` (center, hinge, nlms,
    trial, ...): the esnn_learn_config_t initialiser (the fixed-point Learner's constants: the network's seed,
    y_one of the readout) and a bound of its buffer. Raises ModelError when the model cannot learn with
    the rule (as the Learner does)."""
    from edgesnn.learning.learner import Learner

    from .hostlib import learn_config
    lr = Learner(model, rule, mode="fixed", **(options or {}))
    cfg = learn_config_literals(learn_config(lr))
    n_wb = int(lr.sim.program.wb.size)
    nbytes = learn_bytes_bound(lr)
    return {"rule": rule, "options": dict(options or {}), "bytes": nbytes, "config": cfg,
            "ram": nbytes + 2 * max(1, n_wb) + 8}


def export_project(model, profile, out_dir, mode: str = "app", events=None, dump=(0, 0),
                   upload_bytes: int | None = None, learn: dict | None = None,
                   learn_rule: str | None = None, learn_options: dict | None = None) -> dict:
    """Write the firmware project for ``profile`` (a Profile or a name) into ``out_dir``; ``mode``
    'verify' embeds ``events`` (an edgesnn.simulator.Events) and streams results (board/verify_main.c),
    with the whole state for steps dump[0] <= t < dump[1]. ``upload_bytes`` overrides the size of each
    of the app firmware's two upload buffers (app_sizes; 0: no model upload). Returns a summary (also in
    project.json). Mode 'learn' (board/learn_main.c) embeds ``learn``, the keyword arguments of
    learn_data (a Learner, events, labels, ...). ``learn_rule`` (app mode; None: inference only): the
    compiled-in model learns on the device with this rule (edgesnn.learning.RULES): LEARN and the STEP
    teach fields of docs/protocol.md, bit-exact with the fixed-point Learner made with the keyword
    arguments ``learn_options`` (e.g. {"center": 6, "trial": 4})."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    out = Path(out_dir)
    app_lr = None
    if learn_rule is not None:
        if mode != "app":
            raise InputError(f"learn_rule is an option of the app firmware, not of mode {mode!r}")
        app_lr = app_learn(model, learn_rule, learn_options)
    app = (app_sizes(prof, model, upload_bytes, app_lr["ram"] if app_lr else 0) if mode == "app" else None)
    extra = board_files(prof, mode, app, app_lr)
    if mode == "verify":
        if events is None:
            raise InputError("a verify firmware needs input events")
        extra.update(verify_data(events, int(model.network.n_inputs), *dump))
    if mode == "learn":
        if learn is None:
            raise InputError("a learn firmware needs its learner, input events and labels")
        extra.update(learn_data(**learn))
    fp = footprint(model)
    meta = {
        "edgesnn_project": 1, "mode": mode, "profile": prof.summary(),
        "model": {"name": model.network.name, "n_inputs": int(model.network.n_inputs),
                  "n_outputs": int(model.network.n_outputs), "n_layers": len(model.network.layers)},
        "footprint": fp,
        "verify": ({"steps": int(events.n_steps), "events": int(events.idx.size), "dump": list(dump)}
                   if mode == "verify" else None),
        "app": app,
    }
    if app_lr is not None:
        meta["learn"] = {"rule": app_lr["rule"], "options": app_lr["options"], "bytes": app_lr["bytes"]}
    extra["project.json"] = json.dumps(meta, indent=2) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="esnn-export-") as tmp:
        codegen.write_project(model, tmp, extra_files=extra)
        written = _sync(Path(tmp), out)
    res = {"dir": str(out), "profile": prof.name, "mode": mode, "files": [str(p) for p in written]}
    if app is not None:
        res["app"] = app
    if app_lr is not None:
        res["learn"] = {"rule": app_lr["rule"], "bytes": app_lr["bytes"]}
    return res


def update_verify_data(out_dir, events, n_inputs: int, dump=(0, 0)) -> None:
    """Replace only the verify firmware's input (and dump window) in an exported verify project."""
    out = Path(out_dir)
    for name, text in verify_data(events, n_inputs, *dump).items():
        _write_if_changed(out / name, text)
    meta_path = out / "project.json"
    meta = json.loads(meta_path.read_text())
    meta["verify"] = {"steps": int(events.n_steps), "events": int(events.idx.size), "dump": list(dump)}
    _write_if_changed(meta_path, json.dumps(meta, indent=2) + "\n")


def read_project(out_dir) -> dict:
    p = Path(out_dir) / "project.json"
    if not p.is_file():
        raise InputError(f"{out_dir} is not an exported firmware project (no project.json); create one with "
                         f"`edgesnn export MODEL --target c --device PROFILE --out {out_dir}`")
    return json.loads(p.read_text())

