/* Host-only helpers (esnn_host.c): see there. */
#ifndef ESNN_HOST_H
#define ESNN_HOST_H

#include "edgesnn.h"

uint32_t esnn_host_sizeof_model(void);
uint32_t esnn_host_sizeof_state(void);
/* Run n_steps; step t's events are ev_idx[ev_ptr[t] .. ev_ptr[t + 1]). Records (when not NULL) every
   layer's spikes as int8 rows of sum(layer sizes) (layers concatenated) and every v, i, a as rows of
   n_vs in the layout of the state. Stops at the first refused step; *done = steps applied. */
int32_t esnn_host_run(const esnn_model_t *m, esnn_state_t *s, const int32_t *ev_idx, const int64_t *ev_ptr,
                      uint32_t n_steps, int8_t *rec_spk, int32_t *rec_vs, uint32_t *done);
void esnn_host_decay_many(const int32_t *x, const uint32_t *q24, int32_t *out, uint32_t n);
void esnn_host_sat_add_many(const int32_t *a, const int32_t *b, int32_t *out, uint32_t n);
/* A whole file in a malloc'ed buffer (8 spare bytes; malloc aligns for any type, so a blob may be used in
   place), *len its size; NULL if it cannot be read. The caller frees it. */
unsigned char *esnn_host_read_file(const char *path, uint32_t *len);

#endif
