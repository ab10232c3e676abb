/*
 * Test driver: runs the runtime in its own process (for the sanitizer build, where loading an ASan
 * library into Python would need LD_PRELOAD). Reads a weight blob and input events from files, runs
 * every step, writes every step's spikes and state to a file (firmware_gen.hostlib reads it back).
 *
 *     esnn_driver BLOB EVENTS OUT        (BLOB "-": the model_data.c linked in, -DESNN_DRIVER_ARRAYS)
 *
 * EVENTS: u32 n_steps, u32 0, i64 ptr[n_steps + 1], i32 idx[ptr[n_steps]]       (little-endian)
 * OUT:    i32 status, u32 done, u32 spike width, u32 n_vs, u32 n_ist,
 *         i8 spikes[done][width], i32 vs[done][n_vs], i32 final ist[n_ist],
 *         i32 status of a step with a bad index, u32 1 if that step left the state untouched
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgesnn.h"
#include "esnn_host.h"
#ifdef ESNN_DRIVER_ARRAYS
#include "model_data.h"
#endif

static int put(FILE *f, const void *p, size_t n)
{
    return n == 0u || fwrite(p, 1, n, f) == n;
}

int main(int argc, char **argv)
{
    esnn_model_t model;
    const esnn_model_t *m = &model;
    esnn_state_t state;
    unsigned char *blob = NULL, *events;
    uint32_t blob_len = 0, ev_len = 0, n_steps, done = 0, width = 0, l, n_vs = 0, n_ist = 0, untouched = 0;
    int32_t st, bad_st = 0, *buf = NULL, *before = NULL;
    const int64_t *ptr;
    const int32_t *idx;
    int8_t *spk = NULL;
    int32_t *vs = NULL;
    FILE *out;

    if (argc != 4) {
        fprintf(stderr, "usage: %s BLOB|- EVENTS OUT\n", argv[0]);
        return 2;
    }
    events = esnn_host_read_file(argv[2], &ev_len);
    if (events == NULL || ev_len < 4u) {
        fprintf(stderr, "cannot read events %s\n", argv[2]);
        return 2;
    }
    memcpy(&n_steps, events, 4);
    ptr = (const int64_t *)(const void *)(events + 8);   /* malloc'd + 8: aligned for int64 */
    if (ev_len < 8u + 8u * ((uint64_t)n_steps + 1u)) {
        fprintf(stderr, "events file too short\n");
        return 2;
    }
    idx = (const int32_t *)(const void *)(events + 8 + 8 * ((size_t)n_steps + 1u));

    if (strcmp(argv[1], "-") == 0) {
#ifdef ESNN_DRIVER_ARRAYS
        m = &esnn_model;
        st = ESNN_OK;
#else
        fprintf(stderr, "built without a linked model (ESNN_DRIVER_ARRAYS)\n");
        return 2;
#endif
    } else {
        blob = esnn_host_read_file(argv[1], &blob_len);
        if (blob == NULL) {
            fprintf(stderr, "cannot read blob %s\n", argv[1]);
            return 2;
        }
        st = esnn_model_from_blob(blob, blob_len, &model);
    }
    if (st == ESNN_OK) {
        buf = malloc(esnn_state_bytes(m));   /* exactly the size asked for: ASan sees any overrun */
        st = buf == NULL ? ESNN_ERR_ARG : esnn_state_init(m, &state, buf, esnn_state_bytes(m));
    }
    if (st == ESNN_OK) {
        n_vs = m->n_vs;
        n_ist = m->n_ist;
        for (l = 0; l < m->n_layers; l++)
            width += esnn_layer_size(m, l);
        spk = calloc((size_t)n_steps * width + 1u, 1);
        vs = calloc((size_t)n_steps * m->n_vs + 1u, 4);
        st = esnn_host_run(m, &state, idx, ptr, n_steps, spk, vs, &done);
        /* a bad step must leave the state as it was */
        before = malloc(esnn_state_bytes(m));
        memcpy(before, buf, 4u * (m->n_vs + m->n_ist));
        {
            int32_t bad = (int32_t)esnn_n_inputs(m);
            bad_st = esnn_step(m, &state, &bad, 1);
        }
        untouched = memcmp(before, buf, 4u * (m->n_vs + m->n_ist)) == 0;
    }

    out = fopen(argv[3], "wb");
    if (out == NULL)
        return 2;
    /* n_vs = n_ist = 0 when the model or the state was refused: nothing ran */
    if (!put(out, &st, 4) || !put(out, &done, 4) || !put(out, &width, 4) || !put(out, &n_vs, 4)
        || !put(out, &n_ist, 4) || (spk != NULL && !put(out, spk, (size_t)done * width))
        || (vs != NULL && !put(out, vs, (size_t)done * n_vs * 4u))
        || (n_ist > 0u && !put(out, buf + n_vs, (size_t)n_ist * 4u))
        || !put(out, &bad_st, 4) || !put(out, &untouched, 4)) {
        fclose(out);
        return 2;
    }
    fclose(out);
    free(blob);
    free(events);
    free(buf);
    free(before);
    free(spk);
    free(vs);
    return 0;
}
