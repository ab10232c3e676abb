/* ARM PrimeCell PL011 (Stellaris, RP2040): FIFOs on, receive and receive-timeout interrupts. */
#include "board.h"

#define UART_DR BOARD_REG(BOARD_UART_BASE + 0x000u)
#define UART_RSR BOARD_REG(BOARD_UART_BASE + 0x004u)
#define UART_FR BOARD_REG(BOARD_UART_BASE + 0x018u)
#define UART_IBRD BOARD_REG(BOARD_UART_BASE + 0x024u)
#define UART_FBRD BOARD_REG(BOARD_UART_BASE + 0x028u)
#define UART_LCR_H BOARD_REG(BOARD_UART_BASE + 0x02Cu)
#define UART_CR BOARD_REG(BOARD_UART_BASE + 0x030u)
#define UART_IFLS BOARD_REG(BOARD_UART_BASE + 0x034u)
#define UART_IMSC BOARD_REG(BOARD_UART_BASE + 0x038u)
#define UART_ICR BOARD_REG(BOARD_UART_BASE + 0x044u)

#define FR_RXFE 0x10u
#define FR_TXFF 0x20u
#define CR_UARTEN 0x001u
#define CR_TXE 0x100u
#define CR_RXE 0x200u
#define LCR_FEN 0x10u
#define LCR_WLEN8 0x60u
#define INT_RX 0x10u
#define INT_RT 0x40u

void uart_init(void)
{
    UART_CR = 0u;
    UART_IBRD = BOARD_UART_IBRD;        /* clock / (16 baud) = IBRD + FBRD / 64 */
    UART_FBRD = BOARD_UART_FBRD;
    UART_LCR_H = LCR_WLEN8 | LCR_FEN;   /* 8N1, FIFOs (written after the divisors: it latches them) */
    UART_IFLS = 0u;                      /* receive interrupt at 1/8 full; the timeout takes the rest */
    UART_ICR = 0x7FFu;
    UART_IMSC = INT_RX | INT_RT;
    UART_CR = CR_UARTEN | CR_TXE | CR_RXE;
}

void uart_putc(uint8_t c)
{
    while (UART_FR & FR_TXFF) {
    }
    UART_DR = c;
}

void uart_irq_handler(void)
{
    /* Clear first: a byte that arrives after the last FIFO check raises the interrupt again. Cleared
       after the loop, such a byte would sit in the FIFO with no interrupt pending until the next one
       came (a frame's last byte could wait for ever). */
    UART_ICR = INT_RX | INT_RT;
    while (!(UART_FR & FR_RXFE)) {
        board_rx_push((uint8_t)(UART_DR & 0xFFu));
    }
    UART_RSR = 0u;                       /* clear receive errors */
}
