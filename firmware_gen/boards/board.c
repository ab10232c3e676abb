/* Board glue common to every board: the init sequence of the profile, the receive ring buffer, sleeping,
   SysTick and semihosting. The UART itself is in board/uart.c (one driver per UART kind). */
#include "board.h"

/* ---- the profile's register operations before the UART starts (clocks, resets, pins) */
typedef struct {
    uint32_t addr;
    uint32_t kind;        /* 0: write, 1: read-modify-write, 2: wait until (reg & mask) == value */
    uint32_t clear;       /* rmw: bits cleared; wait: the mask */
    uint32_t set;         /* write: the value; rmw: bits set; wait: the value */
} board_init_op_t;

static const board_init_op_t board_init_ops[] = BOARD_INIT_OPS;

#define BOARD_WAIT_LIMIT 10000000u   /* a wait gives up after this many polls (a clock that never starts) */

static void board_run_init_ops(void)
{
    uint32_t i;
    for (i = 0; i < sizeof board_init_ops / sizeof board_init_ops[0]; i++) {
        const board_init_op_t *op = &board_init_ops[i];
        if (op->kind == 0u) {
            BOARD_REG(op->addr) = op->set;
        } else if (op->kind == 1u) {
            BOARD_REG(op->addr) = (BOARD_REG(op->addr) & ~op->clear) | op->set;
        } else if (op->kind == 2u) {
            uint32_t n = 0;
            while ((BOARD_REG(op->addr) & op->clear) != op->set && n < BOARD_WAIT_LIMIT) {
                n++;
            }
        }
    }
}

/* ---- receive ring buffer: the UART interrupt writes head, the main loop reads tail */
#ifdef BOARD_RX_RING_SIZE
#define RX_RING_SIZE BOARD_RX_RING_SIZE   /* board_config.h: one whole frame of the device link */
#else
#define RX_RING_SIZE 512u    /* a power of two */
#endif
static volatile uint8_t rx_ring[RX_RING_SIZE];
static volatile uint32_t rx_head;
static volatile uint32_t rx_tail;
static volatile uint32_t rx_dropped;

void board_rx_push(uint8_t c)
{
    uint32_t head = rx_head;
    uint32_t next = (head + 1u) & (RX_RING_SIZE - 1u);
    if (next == rx_tail) {
        rx_dropped++;
        return;
    }
    rx_ring[head] = c;
    rx_head = next;
}

int32_t board_getc(void)
{
    uint32_t tail = rx_tail;
    int32_t c;
    if (tail == rx_head) {
        return -1;
    }
    c = (int32_t)rx_ring[tail];
    rx_tail = (tail + 1u) & (RX_RING_SIZE - 1u);
    return c;
}

uint32_t board_rx_dropped(void)
{
    return rx_dropped;
}

void board_wait_rx(void)
{
    /* With interrupts masked, a byte that arrives between the check and the wfi still wakes the core
       (wfi returns on a pending interrupt even while PRIMASK is set); the handler runs after cpsie. */
    __asm__ volatile("cpsid i" ::: "memory");
    if (rx_head == rx_tail) {
        __asm__ volatile("dsb\n\twfi" ::: "memory");
    }
    __asm__ volatile("cpsie i" ::: "memory");
}

/* ---- UART transmission */
void board_putc(uint8_t c)
{
    uart_putc(c);
}

void board_write(const void *data, uint32_t n)
{
    const uint8_t *p = (const uint8_t *)data;
    uint32_t i;
    for (i = 0; i < n; i++) {
        uart_putc(p[i]);
    }
}

/* ---- NVIC and SysTick */
#define NVIC_ISER(n) BOARD_REG(0xE000E100u + 4u * (n))
#define SYST_CSR BOARD_REG(0xE000E010u)
#define SYST_RVR BOARD_REG(0xE000E014u)
#define SYST_CVR BOARD_REG(0xE000E018u)

uint32_t board_ticks(void)
{
    return SYST_CVR;
}

void board_send_word(uint32_t w, uint32_t *hash)
{
    board_putc((uint8_t)(w & 0xFFu));
    board_putc((uint8_t)((w >> 8) & 0xFFu));
    board_putc((uint8_t)((w >> 16) & 0xFFu));
    board_putc((uint8_t)(w >> 24));
    *hash = (*hash ^ w) * BOARD_FNV_PRIME;
}

uint32_t board_calibrate(uint32_t n)
{
    uint32_t t0, t1;
    uint32_t r = n;
    t0 = board_ticks();
#if defined(__thumb2__)
    __asm__ volatile("1:\n\tsubs %0, %0, #1\n\tbne 1b" : "+l"(r) : : "cc", "memory");
#else /* ARMv6-M: GCC hands inline assembly to the assembler in divided syntax, where this sub sets flags */
    __asm__ volatile("1:\n\tsub %0, #1\n\tbne 1b" : "+l"(r) : : "cc", "memory");
#endif
    t1 = board_ticks();
    return BOARD_TICKS_ELAPSED(t0, t1);
}

void board_init(void)
{
    board_run_init_ops();
    uart_init();
    NVIC_ISER(BOARD_UART_IRQ / 32u) = 1u << (BOARD_UART_IRQ % 32u);
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 0x5u;          /* ENABLE, CLKSOURCE = processor clock, no interrupt */
    __asm__ volatile("cpsie i" ::: "memory");
}

/* ---- exit */
void board_exit(uint32_t code)
{
#if BOARD_SEMIHOSTING
    /* SYS_EXIT_EXTENDED (0x20) with {ADP_Stopped_ApplicationExit, code}: QEMU exits with `code`. QEMU
       must run with -semihosting-config enable=on,target=native; without it the bkpt locks the core. */
    volatile uint32_t block[2];
    block[0] = 0x20026u;
    block[1] = code;
    {
        register uint32_t r0 __asm__("r0") = 0x20u;
        register volatile uint32_t *r1 __asm__("r1") = block;
        __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    }
#else
    (void)code;
#endif
    for (;;) {
        __asm__ volatile("wfi" ::: "memory");
    }
}
