/* ARM CMSDK APB UART (the MPS2 boards): DATA, STATE, CTRL, INTSTATUS/INTCLEAR, BAUDDIV. */
#include "board.h"

#define UART_DATA BOARD_REG(BOARD_UART_BASE + 0x00u)
#define UART_STATE BOARD_REG(BOARD_UART_BASE + 0x04u)
#define UART_CTRL BOARD_REG(BOARD_UART_BASE + 0x08u)
#define UART_INT BOARD_REG(BOARD_UART_BASE + 0x0Cu)
#define UART_BAUDDIV BOARD_REG(BOARD_UART_BASE + 0x10u)

#define STATE_TXFULL 0x1u
#define STATE_RXFULL 0x2u
#define STATE_OVERRUN 0xCu
#define CTRL_TX_EN 0x1u
#define CTRL_RX_EN 0x2u
#define CTRL_RX_INT 0x8u
#define INT_RX 0x2u

void uart_init(void)
{
    UART_BAUDDIV = BOARD_UART_DIVISOR;   /* clock / baud, at least 16 */
    UART_CTRL = CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_INT;
}

void uart_putc(uint8_t c)
{
    while (UART_STATE & STATE_TXFULL) {
    }
    UART_DATA = c;
}

void uart_irq_handler(void)
{
    UART_INT = INT_RX;                   /* clear first: a byte arriving during the loop raises it again */
    while (UART_STATE & STATE_RXFULL) {
        board_rx_push((uint8_t)UART_DATA);
    }
    if (UART_STATE & STATE_OVERRUN) {
        UART_STATE = STATE_OVERRUN;      /* write 1 to clear */
    }
}
