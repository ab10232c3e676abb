"""Generate C for a device from a FixedModel, and run that C on the host.

    runtime/        the C runtime (edgesnn.h, edgesnn.c): one step of the flat program, bit-exact with
                    the emulator (docs/numerics.md, docs/c_runtime.md); esnn_link.{h,c}: the device
                    side of the wire protocol (docs/protocol.md)
    blob.py         the weight blob: the program as one checksummed little-endian binary
    codegen.py      model_data.h / model_data.c (const arrays, a ready esnn_model, the blob) and a project
    hostlib.py      build the C for the host (shared library or sanitizer driver) and run it from Python
    status.py       the runtime's status codes
    host/           host-only C: the record loop used by hostlib, the sanitizer test driver

Board support (docs/devices.md):

    profiles.py     board profiles (devices/*.toml): core, FPU, clock, memories, UART, init sequence, QEMU
    export.py       a self-contained firmware project for a profile (board glue, linker script, Makefile)
    build.py        make with arm-none-eabi-gcc; flash and RAM against the board, refusal with advice
    qemu.py         run firmware on an emulated board (file or socket UART, semihosting exit, -icount)
    verify.py       the device and the emulator on the same input, compared step by step; .bs2 input
    linkverify.py   the same check over the device link, for a board running the application firmware
    flash.py        `edgesnn flash`: QEMU with its UART on TCP, the boards' own tools, the STM32 ROM
                    boot loader (stm32boot.py, ST AN3155 over pyserial)
    hostdevice.py   esnn_link.c on the host (boards/host_main.c: a device on stdin/stdout) and the
                    libFuzzer target (fuzz/link_fuzz.c): build, seeds, runs
    boot2.py        the RP2040 second-stage boot loader image; uf2.py: UF2 images
    boards/         C board glue: start-up, UART drivers, ring buffer, the app and verify main loops,
                    host_main.c
"""
