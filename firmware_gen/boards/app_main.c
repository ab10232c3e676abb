/*
 * Application firmware: the model from model_data.c behind the device link (esnn_link.c, the wire
 * protocol of docs/protocol.md) on the UART. This file is only glue: the received bytes go from the
 * interrupt-driven ring buffer (board.c) into esnn_link_feed, the replies out through board_write, and
 * the core sleeps in wfi whenever no byte is waiting. The firmware never sends anything unasked.
 *
 * The buffer sizes come from board_config.h (firmware_gen.export.app_sizes, from the profile's RAM):
 * APP_MAX_PAYLOAD, APP_MAX_EVENTS, APP_MAX_STEPS, APP_STATE_BYTES and APP_UPLOAD_BYTES (each of the two
 * upload buffers; 0: no model upload).
 *
 * Exported with a learning rule (export_project(..., learn_rule=...)), the build defines ESNN_LINK_LEARN
 * and board_config.h APP_LEARN_BYTES and APP_LEARN_CONFIG (the esnn_learn_config_t initialiser): the
 * compiled-in model learns on a RAM copy of its int16 weights (LEARN and the STEP teach fields).
 */
#include "board.h"
#include "edgesnn.h"
#include "esnn_link.h"
#include "model_data.h"

#define RX_CHUNK 64u   /* bytes taken from the ring per esnn_link_feed call */

static int32_t state_mem[APP_STATE_BYTES / 4u];
static uint8_t rx_buf[APP_MAX_PAYLOAD];
static uint8_t tx_buf[APP_MAX_PAYLOAD + ESNN_LINK_OVERHEAD];
static int32_t events[APP_MAX_EVENTS];
#if APP_UPLOAD_BYTES > 0
/* uploaded weight blobs: esnn_model_from_blob reads them in place (16-byte aligned sections) */
ESNN_ALIGNED(16) static uint8_t upload0[APP_UPLOAD_BYTES];
ESNN_ALIGNED(16) static uint8_t upload1[APP_UPLOAD_BYTES];
#endif
static esnn_link_t link;
#ifdef ESNN_LINK_LEARN
#define APP_LEARN_N_WB (ESNN_MODEL_N_WB > 0u ? ESNN_MODEL_N_WB : 1u)
static int16_t learn_wb[APP_LEARN_N_WB];                  /* the plastic weights, in RAM */
static uint64_t learn_mem[(APP_LEARN_BYTES + 7u) / 8u];   /* the learner's state */
static const esnn_learn_config_t learn_cfg = APP_LEARN_CONFIG;
#endif

static void write_uart(void *ctx, const uint8_t *data, uint32_t n)
{
    (void)ctx;
    board_write(data, n);
}

/* SysTick counts down over 24 bits: turned into an up-counter, (end - start) & 0xFFFFFF is
   BOARD_TICKS_ELAPSED(start, end), the core clock cycles of a step (under QEMU -icount: instructions) */
static uint32_t cycles_up(void *ctx)
{
    (void)ctx;
    return 0x00FFFFFFu - board_ticks();
}

static uint32_t rx_dropped(void *ctx)
{
    (void)ctx;
    return board_rx_dropped();
}

int main(void)
{
    esnn_link_config_t cfg;
    uint8_t chunk[RX_CHUNK];
    board_init();
    cfg.model = &esnn_model;
    cfg.state_mem = state_mem;
    cfg.state_bytes = sizeof state_mem;
    cfg.rx_buf = rx_buf;
    cfg.tx_buf = tx_buf;
    cfg.max_payload = APP_MAX_PAYLOAD;
    cfg.events = events;
    cfg.max_events = APP_MAX_EVENTS;
    cfg.max_steps = APP_MAX_STEPS;
#if APP_UPLOAD_BYTES > 0
    cfg.upload[0] = upload0;
    cfg.upload[1] = upload1;
    cfg.upload_capacity = APP_UPLOAD_BYTES;
#else
    cfg.upload[0] = 0;
    cfg.upload[1] = 0;
    cfg.upload_capacity = 0u;
#endif
    cfg.name = BOARD_NAME;
    cfg.clock_hz = BOARD_CLOCK_HZ;
    cfg.cycles = cycles_up;
    cfg.cycles_mask = 0x00FFFFFFu;
    cfg.rx_dropped = rx_dropped;
    cfg.write = write_uart;
    cfg.ctx = 0;
#ifdef ESNN_LINK_LEARN
    cfg.learn_cfg = &learn_cfg;
    cfg.learn_buf = learn_mem;
    cfg.learn_bytes = sizeof learn_mem;
    cfg.learn_wb = learn_wb;
    cfg.learn_n_wb = APP_LEARN_N_WB;
#endif
    if (esnn_link_init(&link, &cfg) != ESNN_OK) {
        board_exit(3u);   /* the build sized the state memory for this model: not expected */
    }
    for (;;) {
        uint32_t n = 0;
        int32_t c;
        while (n < RX_CHUNK && (c = board_getc()) >= 0) {
            chunk[n++] = (uint8_t)c;
        }
        if (n == 0u) {
            board_wait_rx();
            continue;
        }
        esnn_link_feed(&link, chunk, n);
    }
}
