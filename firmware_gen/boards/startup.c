/*
 * Reset handler and fault handling. Compiled with -fno-tree-loop-distribute-patterns: at -O2 GCC would
 * otherwise turn the .data copy and .bss clear loops into calls to memcpy / memset. The vector table is
 * generated (board/vectors.c) from the profile's interrupt count.
 */
#include <stdint.h>

#include "board.h"

extern uint32_t _sidata;   /* the linker script's symbols: .data in flash, .data and .bss in RAM */
extern uint32_t _sdata;
extern uint32_t _edata;
extern uint32_t _sbss;
extern uint32_t _ebss;

int main(void);
void Reset_Handler(void);
void Default_Handler(void);

void Reset_Handler(void)
{
    uint32_t *src;
    uint32_t *dst;
#if BOARD_HAS_FPU
    /* CPACR: full access to CP10 and CP11, before any floating-point instruction can run */
    BOARD_REG(0xE000ED88u) |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    BOARD_REG(0xE000ED08u) = (uint32_t)(uintptr_t)board_vectors;   /* VTOR */
    src = &_sidata;
    for (dst = &_sdata; dst < &_edata; dst++) {
        *dst = *src++;
    }
    for (dst = &_sbss; dst < &_ebss; dst++) {
        *dst = 0u;
    }
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    (void)main();
    board_exit(0u);
}

/* Every exception without a handler, faults included. On an emulated board this ends QEMU with exit
   status 0x80 + the exception number (a HardFault gives 131), so a test never waits for a timeout. */
void Default_Handler(void)
{
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    board_exit(0x80u + (ipsr & 0x1FFu));
}
