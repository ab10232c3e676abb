/*
 * edgesnn C runtime: one time step of a fixed-point spiking network, bit-exact with the Numba emulator
 * (edgesnn/kernels) under the numeric contract of docs/numerics.md.
 *
 * C99, no malloc, no float, no implementation-defined arithmetic. The network is a flat program (the
 * layout of edgesnn/kernels/layout.py): a const layer table, a const parameter table and two const
 * weight pools, either generated as C arrays (firmware_gen.codegen: model_data.c) or found inside a
 * weight blob in flash or RAM (esnn_model_from_blob). The state lives in a buffer the caller owns.
 *
 *     static int32_t buf[ESNN_MODEL_STATE_WORDS];          // from model_data.h
 *     esnn_state_t st;
 *     if (esnn_state_init(&esnn_model, &st, buf, sizeof buf) != ESNN_OK) { ... }
 *     for (;;) {
 *         int32_t st_ = esnn_step(&esnn_model, &st, events, n_events);   // events: input indices
 *         const int32_t *out = esnn_spikes(&esnn_model, &st, ESNN_LAST_LAYER, &n_out);
 *     }
 *
 * See docs/c_runtime.md for the API, the blob format and the notes on speed.
 */
#ifndef EDGESNN_H
#define EDGESNN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ESNN_RUNTIME_VERSION 1

/* alignas is C11: use the GCC/Clang attribute where it exists (arm-none-eabi-gcc, gcc, clang) */
#if defined(__GNUC__) || defined(__clang__)
#define ESNN_ALIGNED(n) __attribute__((aligned(n)))
#else
#define ESNN_ALIGNED(n)
#endif

/* ---- status codes (ESNN_OK and ESNN_ERR_INPUT_INDEX are the numbers of edgesnn/kernels/layout.py) */
#define ESNN_OK 0
#define ESNN_ERR_INPUT_INDEX (-1)   /* an input index outside 0..n_inputs-1: the step was not applied */
#define ESNN_ERR_INPUT_COUNT (-2)   /* more than ESNN_MAX_EVENTS events, or more than a first Flatten
                                       layer can hold: the step was not applied */
#define ESNN_ERR_ARG (-3)           /* a NULL pointer, a buffer too small or misaligned, a layer number
                                       out of range, or a state bound to another model */
#define ESNN_ERR_MODEL (-4)         /* the tables are inconsistent (kinds, sizes, offsets, constants) */
#define ESNN_ERR_BLOB_SIZE (-5)     /* blob truncated, or its length field differs from its length */
#define ESNN_ERR_BLOB_MAGIC (-6)    /* not a weight blob */
#define ESNN_ERR_BLOB_VERSION (-7)  /* a blob format version this runtime does not read */
#define ESNN_ERR_BLOB_CRC (-8)      /* CRC32 mismatch: the blob was damaged */
#define ESNN_ERR_BLOB_FORMAT (-9)   /* header fields inconsistent (row widths, reserved bytes, padding) */
#define ESNN_ERR_STATE (-10)        /* the state holds values no step can produce (overwritten?) */

#define ESNN_MAX_EVENTS 65535u      /* input events of one step (docs/numerics.md) */

/* ---- the flat program (edgesnn/kernels/layout.py; a test checks these numbers against it) */
/* layer kinds */
#define ESNN_DENSE 0
#define ESNN_CONV2D 1
#define ESNN_SUMPOOL2D 2
#define ESNN_FLATTEN 3
#define ESNN_RECURRENT 4
/* neuron kinds */
#define ESNN_LIF 0
#define ESNN_IF 1
#define ESNN_CUBA 2
#define ESNN_ALIF 3
#define ESNN_LI 4
#define ESNN_NONE (-1)
/* resets */
#define ESNN_RESET_SUBTRACT 0
#define ESNN_RESET_ZERO 1
/* decay forms: both are executed as the Q24 multiplier of the parameter table */
#define ESNN_FORM_MULTIPLY 0
#define ESNN_FORM_SHIFT 1

/* layer table fields: one row of ESNN_NL int32 per layer (-1 where a field does not apply) */
#define ESNN_L_KIND 0
#define ESNN_L_NEURON 1
#define ESNN_L_N_IN 2
#define ESNN_L_N_OUT 3
#define ESNN_L_IN_C 4
#define ESNN_L_IN_H 5
#define ESNN_L_IN_W 6
#define ESNN_L_OUT_C 7
#define ESNN_L_OUT_H 8
#define ESNN_L_OUT_W 9
#define ESNN_L_KH 10
#define ESNN_L_KW 11
#define ESNN_L_STRIDE 12
#define ESNN_L_PAD 13
#define ESNN_L_W_POOL 14      /* 0: int8 pool wa, 1: int16 pool wb (plastic layers) */
#define ESNN_L_W_OFF 15
#define ESNN_L_WREC_OFF 16
#define ESNN_L_V_OFF 17       /* offsets into the int32 numeric state vs */
#define ESNN_L_I_OFF 18
#define ESNN_L_A_OFF 19
#define ESNN_L_R_OFF 20       /* offsets into the int32 state ist */
#define ESNN_L_S_OFF 21
#define ESNN_L_RESET 22
#define ESNN_L_REF_STEPS 23
#define ESNN_L_DECAY_FORM 24
#define ESNN_NL 25

/* parameter table fields: one row of ESNN_NP int32 per layer */
#define ESNN_P_DV 0           /* decay of v, i, a: Q24 multipliers in 0..2^24 */
#define ESNN_P_DI 1
#define ESNN_P_DA 2
#define ESNN_P_THETA 3        /* threshold, >= 1 for spiking neurons */
#define ESNN_P_A_INC 4        /* adaptation step (alif) */
#define ESNN_P_POOL_W 5       /* the shared weight of a sum-pooling layer */
#define ESNN_NP 6

#define ESNN_HASH_BYTES 32

/* the weight blob (docs/c_runtime.md): header, tables, pools, CRC32 trailer; little-endian */
#define ESNN_BLOB_MAGIC "ESNNBLOB"
#define ESNN_BLOB_VERSION 1
#define ESNN_BLOB_HEADER_BYTES 96u
#define ESNN_BLOB_ALIGN 16u         /* every section starts at a multiple of 16 from the blob start */

/* A model: the flat program, read-only, usually in flash. Built by codegen or by esnn_model_from_blob. */
typedef struct esnn_model {
    uint32_t n_layers;
    const int32_t *ltab;      /* n_layers * ESNN_NL */
    const int32_t *ptab;      /* n_layers * ESNN_NP */
    const int8_t *wa;         /* int8 weights (frozen layers) */
    uint32_t n_wa;
    const int16_t *wb;        /* int16 weights (plastic layers) */
    uint32_t n_wb;
    uint32_t n_vs;            /* words of membrane / current / adaptation state */
    uint32_t n_ist;           /* words of refractory counters, spike lists and spike counts */
    uint32_t width;           /* the widest layer: the size of the step's accumulators */
    const uint8_t *hash;      /* ESNN_HASH_BYTES of SHA-256 identifying the model, or NULL */
} esnn_model_t;

/* The state of a running network, in caller-owned memory (esnn_state_init / esnn_state_bind). */
typedef struct esnn_state {
    const esnn_model_t *model;  /* the model this state belongs to */
    int32_t *vs;                /* n_vs: every v, i, a (the layout of edgesnn.simulator.Record.state) */
    int32_t *ist;               /* n_ist: refractory counters, spike lists, then one count per layer */
    uint32_t *acc;              /* width: synaptic accumulators (scratch, modular uint32) */
    uint32_t *part;             /* (width + 1) / 2: packed int16 partial sums of int8 rows (scratch) */
} esnn_state_t;

/* ---- model */
/* Check every table of a model (esnn_state_init and esnn_model_from_blob do it): ESNN_OK or ESNN_ERR_MODEL */
int32_t esnn_model_check(const esnn_model_t *model);
/* Point a model into a weight blob (no copy; the blob must stay alive, 4-byte aligned). Validates length,
   magic, version, CRC32, header and tables; on an error *out is left zeroed. */
int32_t esnn_model_from_blob(const uint8_t *blob, uint32_t len, esnn_model_t *out);
uint32_t esnn_crc32(const uint8_t *data, uint32_t len);   /* zlib's CRC32 */
uint32_t esnn_crc32_update(uint32_t crc, const uint8_t *data, uint32_t len);   /* zlib's crc32(data, crc) */

uint32_t esnn_n_inputs(const esnn_model_t *model);
uint32_t esnn_n_outputs(const esnn_model_t *model);
uint32_t esnn_layer_size(const esnn_model_t *model, uint32_t layer);   /* 0 for a bad layer */
#define ESNN_LAST_LAYER 0xFFFFFFFFu   /* accepted wherever a layer number is */

/* ---- state memory: one buffer (esnn_state_init) or three (esnn_state_bind) */
uint32_t esnn_vs_words(const esnn_model_t *model);
uint32_t esnn_ist_words(const esnn_model_t *model);
uint32_t esnn_scratch_words(const esnn_model_t *model);   /* int32 words for acc and part */
uint32_t esnn_state_bytes(const esnn_model_t *model);     /* 4 * (vs + ist + scratch words) */
/* Split a buffer of at least esnn_state_bytes(model) bytes, check the model (esnn_model_check), reset. */
int32_t esnn_state_init(const esnn_model_t *model, esnn_state_t *state, int32_t *buffer, uint32_t bytes);
/* The same with three separate int32 buffers of esnn_vs_words, esnn_ist_words, esnn_scratch_words
   (to place them in different RAM banks); a NULL pointer is allowed for a size of 0. */
int32_t esnn_state_bind(const esnn_model_t *model, esnn_state_t *state, int32_t *vs, int32_t *ist,
                        int32_t *scratch);

/* ---- execution */
void esnn_reset(const esnn_model_t *model, esnn_state_t *state);   /* every v, i, a, r, spike to 0 */
/* One time step. events: the active input indices of this step (an index may repeat: it counts twice).
   Refuses bad input (ESNN_ERR_INPUT_INDEX, ESNN_ERR_INPUT_COUNT) before any state changes. */
int32_t esnn_step(const esnn_model_t *model, esnn_state_t *state, const int32_t *events, uint32_t n_events);

/* ---- results of the last step and state, by layer (ESNN_LAST_LAYER: the output layer) */
/* The layer's spike indices, increasing (for Flatten: its input events); *count gets their number. NULL
   (and *count = 0) for a bad layer. */
const int32_t *esnn_spikes(const esnn_model_t *model, const esnn_state_t *state, uint32_t layer,
                           uint32_t *count);
/* The layer's v, i or a values (esnn_layer_size of them), or NULL where the layer has none. Writable so
   that an application (or a learning rule) may set them. */
int32_t *esnn_v(const esnn_model_t *model, esnn_state_t *state, uint32_t layer);
int32_t *esnn_i(const esnn_model_t *model, esnn_state_t *state, uint32_t layer);
int32_t *esnn_a(const esnn_model_t *model, esnn_state_t *state, uint32_t layer);

/* ---- arithmetic of the contract, for learning rules and tests */
int32_t esnn_decay(int32_t x, uint32_t q24);   /* sign(x) * ((|x| * q24) >> 24), q24 <= 2^24 */
int32_t esnn_sat_add(int32_t a, int32_t b);    /* min(max(a + b, -2^31), 2^31 - 1) */

const char *esnn_status_str(int32_t status);

#ifdef __cplusplus
}
#endif

#endif /* EDGESNN_H */
