/*
 * Host-only helpers around the runtime, for firmware_gen.hostlib (ctypes) and the test driver: struct
 * sizes (so Python need not mirror the structs), a loop that runs many steps and records what
 * edgesnn.simulator.Record holds, and array forms of the contract's arithmetic. Never built for a device.
 * The record goes through the public accessors only, so the tests exercise them too.
 */
#include "edgesnn.h"
#include "esnn_host.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

unsigned char *esnn_host_read_file(const char *path, uint32_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long n;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        if (f != NULL)
            fclose(f);
        return NULL;
    }
    buf = malloc((size_t)n + 8u);
    if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (uint32_t)n;
    return buf;
}

uint32_t esnn_host_sizeof_model(void)
{
    return (uint32_t)sizeof(esnn_model_t);
}

uint32_t esnn_host_sizeof_state(void)
{
    return (uint32_t)sizeof(esnn_state_t);
}

/* Copy the layer's v, i, a into a row laid out as the emulator's vs (offsets from the layer table). */
static void record_values(const esnn_model_t *m, esnn_state_t *s, uint32_t l, int32_t *out)
{
    static const int fields[3] = {ESNN_L_V_OFF, ESNN_L_I_OFF, ESNN_L_A_OFF};
    const int32_t *row = m->ltab + l * ESNN_NL;
    const uint32_t n = esnn_layer_size(m, l);
    int f;
    for (f = 0; f < 3; f++) {
        const int32_t *src = f == 0 ? esnn_v(m, s, l) : f == 1 ? esnn_i(m, s, l) : esnn_a(m, s, l);
        uint32_t k;
        if (src == NULL)
            continue;
        for (k = 0; k < n; k++)
            out[row[fields[f]] + (int32_t)k] = src[k];
    }
}

int32_t esnn_host_run(const esnn_model_t *m, esnn_state_t *s, const int32_t *ev_idx, const int64_t *ev_ptr,
                      uint32_t n_steps, int8_t *rec_spk, int32_t *rec_vs, uint32_t *done)
{
    uint32_t t, l, width = 0;
    for (l = 0; l < m->n_layers; l++)
        width += esnn_layer_size(m, l);
    *done = 0;
    for (t = 0; t < n_steps; t++) {
        const uint32_t n = (uint32_t)(ev_ptr[t + 1] - ev_ptr[t]);
        const int32_t st = esnn_step(m, s, ev_idx + ev_ptr[t], n);
        uint32_t base = 0;
        if (st != ESNN_OK)
            return st;
        for (l = 0; l < m->n_layers; l++) {
            uint32_t count, k;
            const int32_t *spk = esnn_spikes(m, s, l, &count);
            if (rec_spk != NULL)
                for (k = 0; k < count; k++)
                    rec_spk[(size_t)t * width + base + (uint32_t)spk[k]] = 1;
            if (rec_vs != NULL)
                record_values(m, s, l, rec_vs + (size_t)t * m->n_vs);
            base += esnn_layer_size(m, l);
        }
        *done = t + 1;
    }
    return ESNN_OK;
}

void esnn_host_decay_many(const int32_t *x, const uint32_t *q24, int32_t *out, uint32_t n)
{
    uint32_t k;
    for (k = 0; k < n; k++)
        out[k] = esnn_decay(x[k], q24[k]);
}

void esnn_host_sat_add_many(const int32_t *a, const int32_t *b, int32_t *out, uint32_t n)
{
    uint32_t k;
    for (k = 0; k < n; k++)
        out[k] = esnn_sat_add(a[k], b[k]);
}
