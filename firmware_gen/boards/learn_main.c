/*
 * Learn firmware: runs labelled learning steps (esnn_learn_step, runtime/esnn_learn.c) on input events,
 * labels, rewards and controls embedded in flash (learn_data.c), on a RAM copy of the model's int16
 * weights; then runs the same steps again with learning off (the forward pass alone, for the cost of
 * learning), and sends the learned weights over the UART; then leaves QEMU through semihosting. The host
 * (tests/test_learn_c.py) runs the Python fixed-point Learner on the same input and compares the weights.
 *
 * Stream: little-endian 32-bit words, FNV-1a of every word before it at the end:
 *     'ESNL' version init_status learn_bytes steps_run last_status updates ticks_learn ticks_forward
 *     calib_iters calib_ticks n_wb wb[n_wb] (two int16 per word, the last zero-padded) fnv
 * ticks: SysTick ticks summed over the steps (at the core clock; under QEMU -icount, instructions).
 */
#include "board.h"
#include "edgesnn.h"
#include "esnn_learn.h"
#include "learn_data.h"
#include "model_data.h"

#define MAGIC_LEARN 0x4C4E5345u   /* "ESNL" */
#define N_WB_WORDS (ESNN_MODEL_N_WB > 0u ? ESNN_MODEL_N_WB : 1u)

static int16_t wb_ram[N_WB_WORDS];
static esnn_model_t model;
static esnn_state_t state;
static esnn_learn_t learner;
static int32_t state_mem[ESNN_MODEL_STATE_WORDS];
static uint64_t learn_mem[(LEARN_BYTES + 7u) / 8u];
static int32_t events[LEARN_MAX_STEP_EVENTS > 0u ? LEARN_MAX_STEP_EVENTS : 1u];
static uint32_t stream_hash = BOARD_FNV_BASIS;

static void send_word(uint32_t w)
{
    board_send_word(w, &stream_hash);
}

/* every step of the embedded input; returns the number run, *last the last status, *ticks their sum */
static uint32_t run_steps(int learn, int32_t *last, uint32_t *ticks)
{
    uint32_t t, k;
    *last = ESNN_OK;
    *ticks = 0u;
    for (t = 0; t < LEARN_N_STEPS; t++) {
        const uint32_t lo = learn_ptr[t], n = learn_ptr[t + 1u] - lo;
        const uint32_t f = learn_flags[t], kd = (f >> 8) & 0xFFu;
        uint32_t t0, t1;
        for (k = 0; k < n; k++)
            events[k] = (int32_t)learn_idx[lo + k];
        if (f & 1u)
            esnn_learn_reset(&learner, &state);
        esnn_learn_enable(&learner, learn && (f & 2u) != 0u);
        if (kd != 0u)
            (void)esnn_learn_weight_decay(&learner, kd);
        t0 = board_ticks();
        *last = esnn_learn_step(&learner, &state, events, n, learn_label[t], learn_reward[t]);
        t1 = board_ticks();
        *ticks += BOARD_TICKS_ELAPSED(t0, t1);
        if (*last != ESNN_OK)
            return t + 1u;
    }
    return LEARN_N_STEPS;
}

int main(void)
{
    uint32_t calib, k, done = 0, updates = 0, ticks_learn = 0, ticks_fwd = 0, need = 0;
    int32_t status, last = ESNN_OK;
    board_init();
    calib = board_calibrate(LEARN_CALIB_ITERS);
    status = esnn_learn_model_copy(&esnn_model, &model, wb_ram, N_WB_WORDS);
    if (status == ESNN_OK)
        status = esnn_state_init(&model, &state, state_mem, sizeof state_mem);
    if (status == ESNN_OK) {
        need = esnn_learn_bytes(&model, &learn_cfg);
        status = need == 0u ? ESNN_ERR_MODEL : esnn_learn_init(&learner, &model, wb_ram, &learn_cfg, learn_mem,
                                                                sizeof learn_mem);
    }
    for (k = 0; status == ESNN_OK && k < ESNN_MODEL_N_LAYERS; k++) {
        if (esnn_learn_role(&learner, k) == ESNN_ROLE_NONE)
            continue;
        if (learn_eta[k] >= 0)
            status = esnn_learn_set_eta(&learner, k, (uint32_t)learn_eta[k]);
        if (status == ESNN_OK)
            status = esnn_learn_set_mask(&learner, k, learn_mask[k]);
    }
    if (status == ESNN_OK) {
        done = run_steps(1, &last, &ticks_learn);
        updates = learner.updates;
        if (last == ESNN_OK) {   /* the same steps with learning off: the forward pass alone */
            int32_t last2;
            esnn_learn_reset(&learner, &state);
            (void)run_steps(0, &last2, &ticks_fwd);
        }
    }
    send_word(MAGIC_LEARN);
    send_word(1u);
    send_word((uint32_t)status);
    send_word(need);
    send_word(done);
    send_word((uint32_t)last);
    send_word(updates);
    send_word(ticks_learn);
    send_word(ticks_fwd);
    send_word(LEARN_CALIB_ITERS);
    send_word(calib);
    send_word(ESNN_MODEL_N_WB);
    for (k = 0; k < ESNN_MODEL_N_WB; k += 2u) {
        const uint32_t lo = (uint16_t)wb_ram[k];
        const uint32_t hi = k + 1u < ESNN_MODEL_N_WB ? (uint16_t)wb_ram[k + 1u] : 0u;
        send_word(lo | (hi << 16));
    }
    {
        const uint32_t h = stream_hash;
        send_word(h);
    }
    board_exit(status == ESNN_OK && last == ESNN_OK ? 0u : 2u);
    return 0;
}
