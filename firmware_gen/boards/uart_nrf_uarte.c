/* Nordic nRF52 UARTE: EasyDMA moves data between the UART and RAM. Reception runs one byte at a time
   (RXD.MAXCNT = 1) with the ENDRX -> STARTRX shortcut, so the next byte is awaited while the interrupt
   hands this one to the ring buffer; transmission copies each byte to RAM (EasyDMA cannot read flash). */
#include "board.h"

#define UARTE_TASKS_STARTRX BOARD_REG(BOARD_UART_BASE + 0x000u)
#define UARTE_TASKS_STARTTX BOARD_REG(BOARD_UART_BASE + 0x008u)
#define UARTE_TASKS_STOPTX BOARD_REG(BOARD_UART_BASE + 0x00Cu)
#define UARTE_EVENTS_ENDRX BOARD_REG(BOARD_UART_BASE + 0x110u)
#define UARTE_EVENTS_ENDTX BOARD_REG(BOARD_UART_BASE + 0x120u)
#define UARTE_EVENTS_ERROR BOARD_REG(BOARD_UART_BASE + 0x124u)
#define UARTE_SHORTS BOARD_REG(BOARD_UART_BASE + 0x200u)
#define UARTE_INTENSET BOARD_REG(BOARD_UART_BASE + 0x304u)
#define UARTE_ERRORSRC BOARD_REG(BOARD_UART_BASE + 0x480u)
#define UARTE_ENABLE BOARD_REG(BOARD_UART_BASE + 0x500u)
#define UARTE_PSEL_RTS BOARD_REG(BOARD_UART_BASE + 0x508u)
#define UARTE_PSEL_TXD BOARD_REG(BOARD_UART_BASE + 0x50Cu)
#define UARTE_PSEL_CTS BOARD_REG(BOARD_UART_BASE + 0x510u)
#define UARTE_PSEL_RXD BOARD_REG(BOARD_UART_BASE + 0x514u)
#define UARTE_BAUDRATE BOARD_REG(BOARD_UART_BASE + 0x524u)
#define UARTE_RXD_PTR BOARD_REG(BOARD_UART_BASE + 0x534u)
#define UARTE_RXD_MAXCNT BOARD_REG(BOARD_UART_BASE + 0x538u)
#define UARTE_TXD_PTR BOARD_REG(BOARD_UART_BASE + 0x544u)
#define UARTE_TXD_MAXCNT BOARD_REG(BOARD_UART_BASE + 0x548u)
#define UARTE_CONFIG BOARD_REG(BOARD_UART_BASE + 0x56Cu)

#define SHORTS_ENDRX_STARTRX 0x20u
#define INT_ENDRX 0x10u
#define PSEL_DISCONNECTED 0xFFFFFFFFu

static volatile uint8_t rx_byte;
static volatile uint8_t tx_byte;

void uart_init(void)
{
    UARTE_ENABLE = 0u;
    UARTE_PSEL_TXD = BOARD_UART_TX_PIN;
    UARTE_PSEL_RXD = BOARD_UART_RX_PIN;
    UARTE_PSEL_RTS = PSEL_DISCONNECTED;
    UARTE_PSEL_CTS = PSEL_DISCONNECTED;
    UARTE_BAUDRATE = BOARD_UART_DIVISOR;   /* the BAUDRATE register value of the profile's baud */
    UARTE_CONFIG = 0u;                      /* 8N1, no flow control */
    UARTE_ENABLE = 8u;
    UARTE_RXD_PTR = (uint32_t)(uintptr_t)&rx_byte;
    UARTE_RXD_MAXCNT = 1u;
    UARTE_SHORTS = SHORTS_ENDRX_STARTRX;
    UARTE_EVENTS_ENDRX = 0u;
    UARTE_INTENSET = INT_ENDRX;
    UARTE_TASKS_STARTRX = 1u;
}

void uart_putc(uint8_t c)
{
    tx_byte = c;
    UARTE_TXD_PTR = (uint32_t)(uintptr_t)&tx_byte;
    UARTE_TXD_MAXCNT = 1u;
    UARTE_EVENTS_ENDTX = 0u;
    UARTE_TASKS_STARTTX = 1u;
    while (UARTE_EVENTS_ENDTX == 0u) {
    }
    UARTE_EVENTS_ENDTX = 0u;
    UARTE_TASKS_STOPTX = 1u;
}

void uart_irq_handler(void)
{
    if (UARTE_EVENTS_ENDRX) {
        UARTE_EVENTS_ENDRX = 0u;
        board_rx_push(rx_byte);
    }
    if (UARTE_EVENTS_ERROR) {
        UARTE_EVENTS_ERROR = 0u;
        UARTE_ERRORSRC = UARTE_ERRORSRC;    /* write 1 to clear the error flags */
    }
}
