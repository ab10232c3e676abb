/*
 * edgesnn on-device learning: the fixed-point learning rules of docs/learning.md in C99, bit-exact with
 * the Python fixed-point Learner (edgesnn/learning/learner.py, mode "fixed").
 *
 * Integer only, no malloc, nothing implementation-defined (right shifts of non-negative values only,
 * no signed overflow: products and sums that the contract bounds are int64, the few the contract does
 * not bound are formed modulo 2^64 like the emulator's int64 arrays). The learner's state lives in one
 * caller-owned buffer (esnn_learn_bytes); the plastic weights are the model's int16 pool, which must be
 * writable memory: the learner writes through the non-const pointer it is given, which must be the
 * address the model's wb points at (esnn_learn_model_copy / esnn_learn_blob_wb make one).
 *
 *     static int16_t wb[ESNN_MODEL_N_WB];            // the plastic weights, in RAM
 *     static esnn_model_t model;                    // a copy of the flash model, wb -> RAM
 *     static uint64_t lbuf[LEARN_BYTES / 8];         // esnn_learn_bytes(&model, &cfg), 8-byte aligned
 *     esnn_learn_model_copy(&esnn_model, &model, wb, ESNN_MODEL_N_WB);
 *     esnn_state_init(&model, &st, state_mem, sizeof state_mem);
 *     esnn_learn_config_default(&cfg, ESNN_RULE_EPROP, seed);   cfg.y_one = ...;
 *     esnn_learn_init(&lr, &model, wb, &cfg, lbuf, sizeof lbuf);
 *     esnn_learn_reset(&lr, &st);                                // start of a sample
 *     esnn_learn_step(&lr, &st, events, n, label, ESNN_LEARN_REWARD_AUTO);   // forward + learning
 *
 * See docs/learning.md, "The C implementation".
 */
#ifndef ESNN_LEARN_H
#define ESNN_LEARN_H

#include <stdint.h>

#include "edgesnn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* rules (edgesnn.learning.RULES, same order) */
#define ESNN_RULE_READOUT 0
#define ESNN_RULE_ETLP 1
#define ESNN_RULE_DECOLLE 2
#define ESNN_RULE_EPROP 3
#define ESNN_RULE_STDP 4
#define ESNN_RULE_RSTDP 5
#define ESNN_RULE_COUNT 6

/* the role of a layer (ESNN_ROLE_NONE: it does not learn); readout = the delta rule of the LI readout */
#define ESNN_ROLE_NONE (-1)
#define ESNN_ROLE_READOUT 0
#define ESNN_ROLE_ETLP 1
#define ESNN_ROLE_DECOLLE 2
#define ESNN_ROLE_EPROP 3
#define ESNN_ROLE_STDP 4
#define ESNN_ROLE_RSTDP 5

#define ESNN_LEARN_NO_LABEL (-1)
#define ESNN_LEARN_REWARD_AUTO INT32_MIN   /* reward: +1 / -1 from the readout's decision (label given), else 0 */
#define ESNN_LEARN_K_MAX 31u               /* eta = 2^-k */
#define ESNN_STREAM_LEARN 0x4C524E00u      /* 'LRN\0' + layer: stochastic rounding */
#define ESNN_STREAM_FEEDBACK 0x46424B00u   /* 'FBK\0' + layer: feedback / local readout matrix */

/* which state esnn_learn_layer_state returns */
#define ESNN_LS_TRACE 0       /* e: n_in presynaptic traces */
#define ESNN_LS_TRACE_REC 1   /* e_rec: n_out (Recurrent) */
#define ESNN_LS_POST 2        /* y: n_out STDP post traces */
#define ESNN_LS_RATE 3        /* q: n_out rate traces (regulariser) */
#define ESNN_LS_LOCAL 4       /* y_loc: n_classes DECOLLE local readout */
#define ESNN_LS_MEAN 5        /* m: n_in running mean (readout center) */
#define ESNN_LS_ELIG 6        /* c: n_in * n_out R-STDP eligibility */
#define ESNN_LS_ELIG_REC 7    /* c_rec: n_out * n_out */
#define ESNN_LS_TRIAL 8       /* acc: n_in summed trace of the pending trial (readout, trial mode) */

/* Constants of a learner (edgesnn.learning.Learner's arguments, in integers). esnn_learn_config_default
   fills the Learner's defaults except y_one, which depends on the readout's scale. */
typedef struct esnn_learn_config {
    int32_t rule;             /* ESNN_RULE_* */
    uint32_t seed;            /* the model's seed (Network.seed): PRNG streams of rounding and feedback */
    int32_t y_one;            /* the readout target in readout units: round(y_one * 2^shift_out) */
    int32_t decolle_target;   /* 512 */
    int32_t a_plus, a_minus;  /* 4, 3 */
    uint32_t d_post, d_elig;  /* Q24 decays of the STDP post trace (tau 20 steps) and R-STDP eligibility (50) */
    int32_t reg;              /* 1: rate regulariser on */
    int32_t reg_lo, reg_hi;   /* bounds of the rate trace (-1: none) */
    uint32_t reg_d;           /* Q24 decay of the rate trace */
    uint32_t reg_shift;       /* 0..62 */
    uint32_t center;          /* 0 off, 1..30 */
    int32_t hinge;            /* 1: one-sided readout error */
    int32_t nlms;             /* 1: normalised rate */
    uint32_t trial;           /* 0 off; 1..31: the readout learns once per trial, keeping 2^-trial of the mean */
} esnn_learn_config_t;

/* Per-layer constants and state pointers (inside the learner's buffer). */
typedef struct esnn_learn_layer {
    int32_t role;             /* ESNN_ROLE_* */
    int32_t on;               /* in the layer mask */
    uint32_t k;               /* eta shift */
    uint32_t n_in, n_out;
    uint32_t w_off, wrec_off; /* offsets into the int16 pool */
    int32_t recurrent, alif, reset_sub;
    int32_t theta;
    uint32_t R;               /* floor(2^24 / theta) */
    uint32_t D;               /* the layer's membrane decay (Q24) */
    uint32_t rng[4];          /* xoshiro128**, stream ESNN_STREAM_LEARN + layer */
    uint32_t n_prev;          /* spikes of the last learning step (Recurrent) */
    int32_t *e, *e_rec, *prev, *y, *q, *y_loc, *m, *a_old, *c, *c_rec;
    int8_t *B;                /* (n_classes, n_out) row-major, Q6 */
    /* trial mode (the readout): the pending trial's summed trace (n_in) and membrane (n_out), its
       labelled steps and its label (n_trial 0: none pending, label -1) */
    int32_t *acc;
    int64_t *vsum;
    uint32_t n_trial;
    int32_t trial_label;
} esnn_learn_layer_t;

typedef struct esnn_learn {
    const esnn_model_t *model;
    int16_t *wb;              /* the model's int16 pool, writable (== model->wb) */
    esnn_learn_config_t cfg;
    uint32_t n_layers, n_classes, width;
    int32_t readout_li;
    int32_t enabled;
    uint32_t t;               /* steps since the last reset */
    uint32_t updates;         /* synapses updated (modulo 2^32) */
    esnn_learn_layer_t *layers;   /* n_layers */
    int64_t *score;           /* n_classes: summed readout membrane (or spike counts) since the reset */
    int64_t *err;             /* n_classes */
    int64_t *err2;            /* n_classes: DECOLLE local error */
    int64_t *psi, *L, *greg, *g, *g2;   /* width: scratch of a step */
    int32_t *nz;              /* width */
    int32_t *x;               /* max(n_in, n_out) over the layers: event counts, centred trace */
    uint8_t *flag;            /* width */
} esnn_learn_t;

/* Learner defaults: decolle_target 512, a_plus 4, a_minus 3, d_post / d_elig of tau 20 / 50 steps
   (multiply form), no regulariser, no option; y_one 0 (set it). ESNN_ERR_ARG for an unknown rule. */
int32_t esnn_learn_config_default(esnn_learn_config_t *cfg, int32_t rule, uint32_t seed);

/* Bytes of the learner's buffer for a model and a config (0 if the model cannot learn with it). */
uint32_t esnn_learn_bytes(const esnn_model_t *model, const esnn_learn_config_t *cfg);
uint32_t esnn_learn_sizeof(void);   /* sizeof(esnn_learn_t), for foreign-function callers */

/* Set up a learner: roles, constants, PRNG streams, feedback matrices (drawn here, from the seed), the
   default eta shifts (readout 12, etlp / decolle / eprop 14, stdp 18, rstdp 26), every learning layer in
   the mask, learning enabled, state reset. wb: writable memory holding the model's int16 pool, the very
   address model->wb points at (else ESNN_ERR_ARG). buffer: 8-byte aligned, esnn_learn_bytes long.
   ESNN_ERR_MODEL when no layer learns with the rule, a plastic layer is not Dense / Recurrent, or the rule
   needs an LI readout the model does not end with (the Learner's refusals). */
int32_t esnn_learn_init(esnn_learn_t *lr, const esnn_model_t *model, int16_t *wb, const esnn_learn_config_t *cfg,
                        void *buffer, uint32_t bytes);

/* Make *dst a copy of *src whose int16 pool is wb (n_wb >= src->n_wb words), filled from src's pool:
   the usual way to learn on a model in flash. */
int32_t esnn_learn_model_copy(const esnn_model_t *src, esnn_model_t *dst, int16_t *wb, uint32_t n_wb);
/* The writable address of the int16 pool of a model loaded (esnn_model_from_blob) from a blob in RAM,
   found from the writable blob pointer (NULL if the model does not point into that blob). The blob's
   CRC no longer holds once learning changed the weights. */
int16_t *esnn_learn_blob_wb(uint8_t *blob, uint32_t len, const esnn_model_t *model);

/* Start of a sample: ends a pending trial (esnn_learn_end_trial), then the network state (esnn_reset;
   state may be NULL to skip), traces, eligibilities, local readouts, the previous-spike lists and the
   decision score to 0. The running mean (center) and the PRNG streams are kept, as in the Learner. */
void esnn_learn_reset(esnn_learn_t *lr, esnn_state_t *state);

/* Trial mode (cfg.trial != 0): the readout's update of the pending trial, now (esnn_learn_reset and a
   labelled step with another label do it too): dw_ij = 2^-k err_i ec_j from the trial's mean membrane
   and centred mean trace (docs/learning.md). Dropped if learning is off or the readout masked at this
   moment; the trial is cleared either way. Nothing pending (or trial mode off): nothing. */
int32_t esnn_learn_end_trial(esnn_learn_t *lr);

/* One forward step (esnn_step) then, if enabled, the learning update of every learning layer in the mask.
   In trial mode the readout's labelled steps add to the pending trial instead of updating every step.
   label: the class of this step (ESNN_LEARN_NO_LABEL: none); reward: R-STDP's reward, or
   ESNN_LEARN_REWARD_AUTO. A label >= n_classes is refused (ESNN_ERR_ARG) before anything changes; so
   are the step's own refusals (its status is returned, nothing changed). */
int32_t esnn_learn_step(esnn_learn_t *lr, esnn_state_t *state, const int32_t *events, uint32_t n_events,
                        int32_t label, int32_t reward);

/* L2 weight decay of the LI readout (once per sample, by the trainer): kd 1..31 (0: nothing). */
int32_t esnn_learn_weight_decay(esnn_learn_t *lr, uint32_t kd);

/* Run-time control */
int32_t esnn_learn_set_eta(esnn_learn_t *lr, uint32_t layer, uint32_t k);    /* k 0..31 */
int32_t esnn_learn_set_mask(esnn_learn_t *lr, uint32_t layer, int32_t on);
void esnn_learn_enable(esnn_learn_t *lr, int32_t on);
int32_t esnn_learn_role(const esnn_learn_t *lr, uint32_t layer);             /* ESNN_ROLE_*, NONE if bad */

/* A layer's learning state (ESNN_LS_*), *count its length; NULL (count 0) where it has none. */
const int32_t *esnn_learn_layer_state(const esnn_learn_t *lr, uint32_t layer, int32_t which, uint32_t *count);
/* The layer's feedback / local-readout matrix (n_classes * n_out int8, row-major) or NULL. */
const int8_t *esnn_learn_feedback(const esnn_learn_t *lr, uint32_t layer);

/* The project PRNG (docs/numerics.md): xoshiro128** seeded by splitmix32 */
void esnn_prng_seed(uint32_t s[4], uint32_t seed, uint32_t stream);
uint32_t esnn_prng_next(uint32_t s[4]);

#ifdef __cplusplus
}
#endif

#endif /* ESNN_LEARN_H */
