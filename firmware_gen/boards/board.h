/*
 * Board glue of an edgesnn firmware (firmware_gen/boards, docs/devices.md): start-up, the UART with
 * interrupt-driven reception into a ring buffer, sleeping in wfi while idle, SysTick as a cycle
 * counter, and (on emulated boards) leaving QEMU with an exit code through semihosting.
 *
 * board_config.h is generated from the board profile (devices/NAME.toml). C99, no libc needed.
 */
#ifndef EDGESNN_BOARD_H
#define EDGESNN_BOARD_H

#include <stdint.h>

#include "board_config.h"

#define BOARD_REG(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

typedef void (*board_vector_t)(void);
extern const board_vector_t board_vectors[];   /* board/vectors.c, generated */

/* Clocks and pins (the profile's [[init]] sequence), the UART, its interrupt, SysTick. */
void board_init(void);

/* ---- UART: transmission blocks until the byte is in the transmitter; reception is interrupt driven */
void board_putc(uint8_t c);
void board_write(const void *data, uint32_t n);
int32_t board_getc(void);           /* the next received byte, or -1 when none is waiting */
uint32_t board_rx_dropped(void);    /* bytes lost because the ring buffer was full */
void board_wait_rx(void);           /* sleep (wfi) until a byte is waiting (returns at once if one is) */

/* ---- SysTick: a free-running 24-bit down-counter at the core clock (BOARD_CLOCK_HZ). Under QEMU with
   -icount it advances with the instruction count (docs/devices.md, "Counting instructions"). */
uint32_t board_ticks(void);         /* the current counter value */
#define BOARD_TICKS_ELAPSED(start, end) (((start) - (end)) & 0x00FFFFFFu)

/* ---- the word streams of the verify and learn firmware: little-endian 32-bit words, FNV-1a hashed */
#define BOARD_FNV_BASIS 0x811C9DC5u
#define BOARD_FNV_PRIME 0x01000193u
void board_send_word(uint32_t w, uint32_t *hash);   /* w on the UART, LSB first; *hash = (*hash ^ w) * prime */
/* SysTick ticks of a loop of exactly 2 * n instructions (subs, bne): checks the tick -> instruction relation */
uint32_t board_calibrate(uint32_t n);

/* ---- ending a run: exit QEMU with a status (semihosting SYS_EXIT_EXTENDED) where semihosting is on;
   elsewhere sleep forever */
void board_exit(uint32_t code);

/* implemented by the UART driver (board/uart.c) */
void uart_init(void);
void uart_putc(uint8_t c);
void uart_irq_handler(void);
void board_rx_push(uint8_t c);      /* called by the driver's interrupt handler */

#endif /* EDGESNN_BOARD_H */
