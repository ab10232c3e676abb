/*
 * RP2040 second-stage boot loader (boot2) for edgesnn firmware: generic 03h serial reads.
 *
 * Written for edgesnn from the RP2040 datasheet (section 2.8.1, boot sequence; 4.10, SSI). The boot ROM
 * copies the first 256 bytes of flash to SRAM, checks the CRC32 in their last 4 bytes and runs them. This
 * code sets the flash interface (XIP SSI) up so that every read of the XIP window becomes a standard-SPI
 * 03h read command (8 command bits, 24 address bits, 32 data bits): any SPI NOR flash answers it; it
 * is about 3x slower than the quad-SPI set-up of the Pico SDK's W25Q080 boot2. It then points VTOR at
 * the vector table that follows at 0x10000100, loads the stack pointer and jumps to the reset handler.
 * It is position independent (the ROM runs it at 0x20041F00) and uses no stack beyond the pushed lr.
 *
 * firmware_gen/boot2.py holds the assembled bytes (a test re-assembles this file and compares) and
 * appends the CRC32 (polynomial 0x04C11DB7, no reflection, initial value 0xFFFFFFFF, no final XOR).
 */
    .cpu cortex-m0plus
    .thumb
    .syntax unified
    .section .text
    .global edgesnn_boot2
    .type edgesnn_boot2, %function
    .thumb_func
edgesnn_boot2:
    push {lr}
    ldr r3, =0x18000000      /* XIP_SSI_BASE */
    movs r1, #0
    str r1, [r3, #0x08]      /* SSIENR = 0: the SSI must be disabled while it is configured */
    movs r1, #4
    str r1, [r3, #0x14]      /* BAUDR: SPI clock = clk_sys / 4 */
    ldr r1, =0x001F0300      /* CTRLR0: standard SPI frames, 32 clocks per data frame, EEPROM read */
    str r1, [r3, #0x00]
    ldr r1, =0x03000218      /* SPI_CTRLR0: XIP command 03h, 8-bit instruction, 24-bit address, both serial */
    ldr r0, =0x180000F4
    str r1, [r0]
    movs r1, #0
    str r1, [r3, #0x04]      /* CTRLR1: NDF = 0 (one 32-bit frame per read) */
    movs r1, #1
    str r1, [r3, #0x08]      /* SSIENR = 1: XIP reads now go through the SSI */
    pop {r0}
    cmp r0, #0
    beq 1f
    bx r0                    /* called as a function (lr != 0): return to the caller */
1:
    ldr r0, =0x10000100      /* entered from the boot ROM (lr = 0): vector through the flash image */
    ldr r1, =0xE000ED08      /* VTOR */
    str r0, [r1]
    ldmia r0, {r0, r1}       /* initial stack pointer, reset handler */
    msr msp, r0
    bx r1
    .ltorg
