/*
 * Application firmware: the model from model_data.c, driven over the UART with a small provisional
 * frame format (to be replaced by the wire protocol of the device link; docs/devices.md). Reception is
 * interrupt driven into a ring buffer; the core sleeps in wfi whenever no byte is waiting.
 *
 * Frame, both directions: 0xE5, command, length (uint16 LE), payload, checksum (the low byte of the
 * sum of command, both length bytes and every payload byte).
 *   'H' hello  -> 'H' version, n_inputs, n_outputs, n_layers, clock_hz (uint32 each), model hash[32]
 *   'R' reset  -> 'R' status (int32)
 *   'S' step, payload n input indices (uint16 LE) -> 'S' status (int32), SysTick ticks of the step
 *       (uint32), count (uint16), the output layer's spike indices (uint16 LE)
 *   anything malformed -> 'E' code (uint8): 1 checksum, 2 unknown command, 3 frame too long
 * The firmware also sends an 'H' frame once at start-up (lost when no host is listening yet).
 */
#include "board.h"
#include "edgesnn.h"
#include "model_data.h"

#define SYNC 0xE5u
#define MAX_EVENTS 2048u             /* input indices of one 'S' frame */
#define MAX_PAYLOAD (2u * MAX_EVENTS)

static int32_t state_mem[ESNN_MODEL_STATE_WORDS];
static esnn_state_t state;
static int32_t events[MAX_EVENTS];
static uint8_t payload[MAX_PAYLOAD];
static uint8_t tx_sum;

static uint8_t next_byte(void)
{
    int32_t c;
    while ((c = board_getc()) < 0) {
        board_wait_rx();
    }
    return (uint8_t)c;
}

static void put(uint8_t b)
{
    tx_sum = (uint8_t)(tx_sum + b);
    board_putc(b);
}

static void put32(uint32_t w)
{
    put((uint8_t)(w & 0xFFu));
    put((uint8_t)((w >> 8) & 0xFFu));
    put((uint8_t)((w >> 16) & 0xFFu));
    put((uint8_t)(w >> 24));
}

static void put16(uint32_t w)
{
    put((uint8_t)(w & 0xFFu));
    put((uint8_t)((w >> 8) & 0xFFu));
}

static void begin(uint8_t cmd, uint32_t len)
{
    board_putc(SYNC);
    tx_sum = 0;
    put(cmd);
    put16(len);
}

static void finish(void)
{
    board_putc(tx_sum);
}

static void send_hello(void)
{
    uint32_t k;
    begin('H', 20u + ESNN_HASH_BYTES);
    put32(1u);
    put32(ESNN_MODEL_N_INPUTS);
    put32(ESNN_MODEL_N_OUTPUTS);
    put32(ESNN_MODEL_N_LAYERS);
    put32(BOARD_CLOCK_HZ);
    for (k = 0; k < ESNN_HASH_BYTES; k++) {
        put(esnn_model_hash[k]);
    }
    finish();
}

static void send_error(uint8_t code)
{
    begin('E', 1u);
    put(code);
    finish();
}

static void do_step(uint32_t len)
{
    uint32_t n = len / 2u, k, count, t0, t1;
    int32_t status;
    const int32_t *out;
    for (k = 0; k < n; k++) {
        events[k] = (int32_t)((uint32_t)payload[2u * k] | ((uint32_t)payload[2u * k + 1u] << 8));
    }
    t0 = board_ticks();
    status = esnn_step(&esnn_model, &state, events, n);
    t1 = board_ticks();
    out = esnn_spikes(&esnn_model, &state, ESNN_LAST_LAYER, &count);
    begin('S', 10u + 2u * count);
    put32((uint32_t)status);
    put32(BOARD_TICKS_ELAPSED(t0, t1));
    put16(count);
    for (k = 0; k < count; k++) {
        put16((uint32_t)out[k]);
    }
    finish();
}

int main(void)
{
    int32_t status;
    board_init();
    status = esnn_state_init(&esnn_model, &state, state_mem, sizeof state_mem);
    if (status != ESNN_OK) {
        board_exit(3u);
    }
    send_hello();
    for (;;) {
        uint8_t cmd, sum;
        uint32_t len, k;
        if (next_byte() != SYNC) {
            continue;
        }
        cmd = next_byte();
        len = next_byte();
        len |= (uint32_t)next_byte() << 8;
        sum = (uint8_t)(cmd + (len & 0xFFu) + (len >> 8));
        if (len > MAX_PAYLOAD) {
            send_error(3u);
            continue;
        }
        for (k = 0; k < len; k++) {
            payload[k] = next_byte();
            sum = (uint8_t)(sum + payload[k]);
        }
        if (next_byte() != sum) {
            send_error(1u);
            continue;
        }
        if (cmd == 'H') {
            send_hello();
        } else if (cmd == 'R') {
            esnn_reset(&esnn_model, &state);
            begin('R', 4u);
            put32(0u);
            finish();
        } else if (cmd == 'S' && (len % 2u) == 0u) {
            do_step(len);
        } else {
            send_error(2u);
        }
    }
}
