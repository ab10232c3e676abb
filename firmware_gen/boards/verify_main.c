/*
 * Verify firmware (edgesnn verify): runs the model on input events embedded in flash (verify_data.c)
 * and streams, for every step, a hash of every layer's spike list and numeric state (or the spike lists
 * and the whole state, for the steps the build asks for) over the UART; then leaves QEMU through
 * semihosting. Hashes keep the stream small: the emulated UART moves a byte per trap into QEMU.
 * The host (firmware_gen/verify.py) runs the emulator on the same events and compares.
 *
 * Stream: little-endian 32-bit words. Every record ends with an FNV-1a hash of its words.
 *   header: 'ESNV' version n_layers n_vs n_steps flags dump_from dump_to init_status calib_iters
 *           calib_ticks clock_hz hash[8] (the model's SHA-256) | fnv
 *   step:   'STEP' t status ticks full, per layer: count and either (full) the spike indices (two
 *           uint16 per word when flags & 1, else one per word, the last word zero-padded) or the FNV-1a
 *           of the spike list's int32 words, then per layer: FNV-1a of its v, i, a words, then (full)
 *           the n_vs state words | fnv.  full = 1 for the steps dump_from <= t < dump_to.
 *   end:    'DONE' steps_run last_status rx_dropped | fnv
 * ticks: SysTick ticks spent in esnn_step (at the core clock; under QEMU -icount, instructions).
 */
#include "board.h"
#include "edgesnn.h"
#include "model_data.h"
#include "verify_data.h"

#define MAGIC_HEADER 0x564E5345u   /* "ESNV" */
#define MAGIC_STEP 0x50455453u     /* "STEP" */
#define MAGIC_DONE 0x454E4F44u     /* "DONE" */
#define FLAG_IDX16 0x1u

static int32_t state_mem[ESNN_MODEL_STATE_WORDS];
static esnn_state_t state;
static int32_t events[VERIFY_MAX_STEP_EVENTS > 0u ? VERIFY_MAX_STEP_EVENTS : 1u];
static uint32_t record_hash;
/* variables, not macros: comparing with a constant 0 would trip -Wtype-limits */
static const uint32_t dump_from = VERIFY_DUMP_FROM;
static const uint32_t dump_len = VERIFY_DUMP_TO - VERIFY_DUMP_FROM;

static void send_word(uint32_t w)
{
    board_send_word(w, &record_hash);
}

static void begin_record(uint32_t magic)
{
    record_hash = BOARD_FNV_BASIS;
    send_word(magic);
}

static void end_record(void)
{
    uint32_t h = record_hash;
    send_word(h);
}

static uint32_t hash_words(uint32_t h, const int32_t *w, uint32_t n)
{
    uint32_t k;
    if (w == 0) {
        return h;
    }
    for (k = 0; k < n; k++) {
        h = (h ^ (uint32_t)w[k]) * BOARD_FNV_PRIME;
    }
    return h;
}

static void send_step(uint32_t t, int32_t status, uint32_t ticks)
{
    uint32_t l, k, n;
    const uint32_t n_layers = ESNN_MODEL_N_LAYERS;
    const uint32_t full = (t - dump_from < dump_len) ? 1u : 0u;   /* unsigned: t below dump_from wraps */
    begin_record(MAGIC_STEP);
    send_word(t);
    send_word((uint32_t)status);
    send_word(ticks);
    send_word(full);
    for (l = 0; l < n_layers; l++) {
        const int32_t *s = esnn_spikes(&esnn_model, &state, l, &n);
        send_word(n);
        if (!full) {
            send_word(hash_words(BOARD_FNV_BASIS, s, n));   /* the spike list as FNV-1a over its int32 words */
            continue;
        }
#if VERIFY_IDX16
        for (k = 0; k + 1u < n; k += 2u) {
            send_word(((uint32_t)s[k] & 0xFFFFu) | ((uint32_t)s[k + 1u] << 16));
        }
        if (k < n) {
            send_word((uint32_t)s[k] & 0xFFFFu);
        }
#else
        for (k = 0; k < n; k++) {
            send_word((uint32_t)s[k]);
        }
#endif
    }
    for (l = 0; l < n_layers; l++) {
        uint32_t size = esnn_layer_size(&esnn_model, l);
        uint32_t h = BOARD_FNV_BASIS;
        h = hash_words(h, esnn_v(&esnn_model, &state, l), size);
        h = hash_words(h, esnn_i(&esnn_model, &state, l), size);
        h = hash_words(h, esnn_a(&esnn_model, &state, l), size);
        send_word(h);
    }
    if (full) {
        for (k = 0; k < ESNN_MODEL_N_VS; k++) {
            send_word((uint32_t)state.vs[k]);
        }
    }
    end_record();
}

int main(void)
{
    uint32_t calib, t, k;
    int32_t status;
    board_init();
    calib = board_calibrate(VERIFY_CALIB_ITERS);
    status = esnn_state_init(&esnn_model, &state, state_mem, sizeof state_mem);

    begin_record(MAGIC_HEADER);
    send_word(1u);
    send_word(ESNN_MODEL_N_LAYERS);
    send_word(ESNN_MODEL_N_VS);
    send_word(VERIFY_N_STEPS);
    send_word(VERIFY_IDX16 ? FLAG_IDX16 : 0u);
    send_word(VERIFY_DUMP_FROM);
    send_word(VERIFY_DUMP_TO);
    send_word((uint32_t)status);
    send_word(VERIFY_CALIB_ITERS);
    send_word(calib);
    send_word(BOARD_CLOCK_HZ);
    for (k = 0; k < ESNN_HASH_BYTES; k += 4u) {
        send_word((uint32_t)esnn_model_hash[k] | ((uint32_t)esnn_model_hash[k + 1u] << 8)
                  | ((uint32_t)esnn_model_hash[k + 2u] << 16) | ((uint32_t)esnn_model_hash[k + 3u] << 24));
    }
    end_record();

    t = 0;
    if (status == ESNN_OK) {
        for (t = 0; t < VERIFY_N_STEPS; t++) {
            uint32_t lo = verify_ptr[t], hi = verify_ptr[t + 1u], n = hi - lo, t0, t1;
            for (k = 0; k < n; k++) {
                events[k] = (int32_t)verify_idx[lo + k];
            }
            t0 = board_ticks();
            status = esnn_step(&esnn_model, &state, events, n);
            t1 = board_ticks();
            send_step(t, status, BOARD_TICKS_ELAPSED(t0, t1));
            if (status != ESNN_OK) {
                t++;
                break;
            }
        }
    }
    begin_record(MAGIC_DONE);
    send_word(t);
    send_word((uint32_t)status);
    send_word(board_rx_dropped());
    end_record();
    board_exit(status == ESNN_OK ? 0u : 2u);
    return 0;
}
