/* STM32 USART. BOARD_USART_LAYOUT_F4: SR/DR/BRR/CR1 (F1, F2, F4); BOARD_USART_LAYOUT_H7: CR1/BRR/ISR/
   ICR/RDR/TDR (F0, F7, H7, L4). 8N1, oversampling by 16, receive-not-empty interrupt. */
#include "board.h"

#if BOARD_USART_LAYOUT_F4
#define USART_SR BOARD_REG(BOARD_UART_BASE + 0x00u)
#define USART_RDR BOARD_REG(BOARD_UART_BASE + 0x04u)
#define USART_TDR BOARD_REG(BOARD_UART_BASE + 0x04u)
#define USART_BRR BOARD_REG(BOARD_UART_BASE + 0x08u)
#define USART_CR1 BOARD_REG(BOARD_UART_BASE + 0x0Cu)
#define CR1_UE 0x2000u
#else
#define USART_CR1 BOARD_REG(BOARD_UART_BASE + 0x00u)
#define USART_BRR BOARD_REG(BOARD_UART_BASE + 0x0Cu)
#define USART_SR BOARD_REG(BOARD_UART_BASE + 0x1Cu)   /* ISR */
#define USART_ICR BOARD_REG(BOARD_UART_BASE + 0x20u)
#define USART_RDR BOARD_REG(BOARD_UART_BASE + 0x24u)
#define USART_TDR BOARD_REG(BOARD_UART_BASE + 0x28u)
#define CR1_UE 0x0001u
#endif
#define CR1_RE 0x0004u
#define CR1_TE 0x0008u
#define CR1_RXNEIE 0x0020u
#define SR_ORE 0x0008u
#define SR_RXNE 0x0020u
#define SR_TXE 0x0080u

void uart_init(void)
{
    USART_CR1 = 0u;
    USART_BRR = BOARD_UART_DIVISOR;      /* pclk / baud */
    USART_CR1 = CR1_UE | CR1_TE | CR1_RE | CR1_RXNEIE;
}

void uart_putc(uint8_t c)
{
    while (!(USART_SR & SR_TXE)) {
    }
    USART_TDR = c;
}

void uart_irq_handler(void)
{
    uint32_t sr = USART_SR;
    while (sr & (SR_RXNE | SR_ORE)) {
        uint8_t c = (uint8_t)(USART_RDR & 0xFFu);   /* reading RDR clears RXNE (and, after SR, ORE on F4) */
        if (sr & SR_RXNE) {
            board_rx_push(c);
        }
#if !BOARD_USART_LAYOUT_F4
        USART_ICR = SR_ORE;
#endif
        sr = USART_SR;
    }
}
