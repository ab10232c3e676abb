/*
 * Learning test driver: runs the runtime and the learning rules (esnn_learn.c) in their own process (the
 * sanitizer build runs there), on a weight blob in RAM, with labelled steps and run-time controls from a
 * file; writes the int16 weights and every learning state after every K steps (firmware_gen.hostlib
 * writes the input and reads the output: learn_driver, run_learn_driver).
 *
 *     esnn_learn_driver BLOB INPUT OUT
 *
 * INPUT (little-endian int32 words): cfg[17] (esnn_learn_config_t in field order), L, eta[L] (-1: default),
 *     mask[L], T, K, n_idx, ptr[T + 1], idx[n_idx], label[T], reward[T], flags[T]
 *     flags, in this order before the step: bit 0 esnn_learn_reset, bit 1 learning enabled for the step,
 *            bit 3 every learning layer masked for the step (else mask[]), bit 2 esnn_learn_end_trial,
 *            bits 8..15 weight decay kd (0: none)
 * OUT (int32 words): init status, n_wb; per snapshot: steps done, status of the last step, updates,
 *     wb[n_wb], then per layer and ESNN_LS_* 0..8: count, values
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgesnn.h"
#include "esnn_learn.h"
#include "esnn_host.h"

#define CFG_WORDS 17u
#define LS_COUNT 9

static void put(FILE *f, int32_t w)
{
    fwrite(&w, 4, 1, f);
}

static void snapshot(FILE *f, const esnn_model_t *m, const esnn_learn_t *lr, uint32_t done, int32_t st)
{
    uint32_t k, l;
    int32_t which;
    put(f, (int32_t)done);
    put(f, st);
    put(f, (int32_t)lr->updates);
    for (k = 0; k < m->n_wb; k++)
        put(f, m->wb[k]);
    for (l = 0; l < m->n_layers; l++)
        for (which = 0; which < LS_COUNT; which++) {
            uint32_t n;
            const int32_t *p = esnn_learn_layer_state(lr, l, which, &n);
            put(f, (int32_t)n);
            for (k = 0; k < n; k++)
                put(f, p[k]);
        }
}

int main(int argc, char **argv)
{
    esnn_model_t model;
    esnn_state_t state;
    esnn_learn_t lr;
    esnn_learn_config_t cfg;
    unsigned char *blob, *in;
    uint32_t blob_len = 0, in_len = 0, L, T, K, n_idx, t, l, pos;
    const int32_t *w;
    const int32_t *eta, *mask, *ptr, *idx, *label, *reward, *flags;
    int32_t st, *sbuf = NULL;
    uint64_t *lbuf = NULL;
    int16_t *wb;
    FILE *out;
    if (argc != 4)
        return 64;
    blob = esnn_host_read_file(argv[1], &blob_len);
    in = esnn_host_read_file(argv[2], &in_len);
    out = fopen(argv[3], "wb");
    if (blob == NULL || in == NULL || out == NULL)
        return 66;
    w = (const int32_t *)(const void *)in;   /* malloc aligns for any type */
    memcpy(&cfg, w, sizeof cfg);
    pos = CFG_WORDS;
    L = (uint32_t)w[pos++];
    eta = w + pos;
    pos += L;
    mask = w + pos;
    pos += L;
    T = (uint32_t)w[pos++];
    K = (uint32_t)w[pos++];
    n_idx = (uint32_t)w[pos++];
    ptr = w + pos;
    pos += T + 1u;
    idx = w + pos;
    pos += n_idx;
    label = w + pos;
    pos += T;
    reward = w + pos;
    pos += T;
    flags = w + pos;
    pos += T;
    if (4u * pos > in_len || K == 0u)
        return 65;

    st = esnn_model_from_blob(blob, blob_len, &model);
    wb = st == ESNN_OK ? esnn_learn_blob_wb(blob, blob_len, &model) : NULL;
    if (st == ESNN_OK) {
        sbuf = malloc(esnn_state_bytes(&model) + 4u);
        st = esnn_state_init(&model, &state, sbuf, esnn_state_bytes(&model));
    }
    if (st == ESNN_OK) {
        uint32_t nb = esnn_learn_bytes(&model, &cfg);
        lbuf = malloc(nb + 8u);
        st = esnn_learn_init(&lr, &model, wb, &cfg, lbuf, nb);   /* nb 0: init says why (model, config) */
    }
    if (st == ESNN_OK && L == model.n_layers) {
        for (l = 0; l < L; l++) {
            if (esnn_learn_role(&lr, l) == ESNN_ROLE_NONE)
                continue;
            if (eta[l] >= 0 && st == ESNN_OK)
                st = esnn_learn_set_eta(&lr, l, (uint32_t)eta[l]);
            if (st == ESNN_OK)
                st = esnn_learn_set_mask(&lr, l, mask[l]);
        }
    }
    put(out, st);
    put(out, st == ESNN_OK ? (int32_t)model.n_wb : 0);
    if (st == ESNN_OK) {
        for (t = 0; t < T; t++) {
            const uint32_t kd = ((uint32_t)flags[t] >> 8) & 0xFFu;
            if (flags[t] & 1)
                esnn_learn_reset(&lr, &state);
            esnn_learn_enable(&lr, (flags[t] & 2) != 0);
            for (l = 0; l < L; l++)
                if (esnn_learn_role(&lr, l) != ESNN_ROLE_NONE)
                    (void)esnn_learn_set_mask(&lr, l, (flags[t] & 8) ? 0 : mask[l]);
            if (flags[t] & 4)
                (void)esnn_learn_end_trial(&lr);
            if (kd != 0u && esnn_learn_weight_decay(&lr, kd) != ESNN_OK)
                st = ESNN_ERR_ARG;
            if (st == ESNN_OK)
                st = esnn_learn_step(&lr, &state, idx + ptr[t], (uint32_t)(ptr[t + 1u] - ptr[t]), label[t],
                                     reward[t]);
            if (st != ESNN_OK || (t + 1u) % K == 0u || t + 1u == T)
                snapshot(out, &model, &lr, t + 1u, st);
            if (st != ESNN_OK)
                break;
        }
    }
    fclose(out);
    free(lbuf);
    free(sbuf);
    free(in);
    free(blob);
    return 0;
}
