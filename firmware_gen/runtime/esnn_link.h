/*
 * edgesnn device link: the wire protocol of docs/protocol.md (version 1) on the device side. A
 * byte-at-a-time frame parser with the spec's resynchronisation, and a handler for every message,
 * driving the runtime (edgesnn.h). Board independent: the board glue feeds received bytes in and gets
 * reply frames out through a callback. C99, no malloc, integer only; every buffer belongs to the caller.
 *
 *     static esnn_link_t link;
 *     esnn_link_config_t cfg = {0};
 *     cfg.model = &esnn_model;                               // the compiled-in model, running first
 *     cfg.state_mem = state_mem;  cfg.state_bytes = sizeof state_mem;
 *     cfg.rx_buf = rx;  cfg.tx_buf = tx;  cfg.max_payload = 4096u;   // tx: max_payload + 14 bytes
 *     cfg.events = events;  cfg.max_events = 2000u;  cfg.max_steps = 64u;
 *     cfg.upload[0] = up0;  cfg.upload[1] = up1;  cfg.upload_capacity = sizeof up0;   // optional
 *     cfg.name = "qemu-mps2-an386";  cfg.clock_hz = 25000000u;
 *     cfg.write = uart_write;  cfg.ctx = NULL;
 *     if (esnn_link_init(&link, &cfg) != ESNN_OK) { ... }
 *     for (;;) { n = read_some(buf); esnn_link_feed(&link, buf, n); }
 *
 * The device never sends anything unasked: every frame whose header check holds gets exactly one reply,
 * written (whole, in one call of cfg.write) before esnn_link_feed returns.
 *
 * Memory, all given by the caller in the configuration:
 *   state_mem     the running model's state (esnn_state_bytes) plus 4 bytes per output neuron for the
 *                 class counts; an uploaded model must fit it too (else ERROR STATE_TOO_BIG)
 *   rx_buf        max_payload bytes (the payload of the frame being received)
 *   tx_buf        max_payload + ESNN_LINK_OVERHEAD bytes (the reply frame being built)
 *   events        max_events int32 (one step's input indices for esnn_step)
 *   upload[0..1]  two staging buffers of upload_capacity bytes each, 16-byte aligned, or NULL (no upload):
 *                 an upload is received into the one the running model does not use (ping-pong), so a
 *                 failed or interrupted upload leaves the running model untouched
 */
#ifndef ESNN_LINK_H
#define ESNN_LINK_H

#include <stdint.h>

#include "edgesnn.h"
#ifdef ESNN_LINK_LEARN
#include "esnn_learn.h"
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define ESNN_LINK_PROTOCOL 1u
#define ESNN_LINK_SYNC0 0xA5u
#define ESNN_LINK_SYNC1 0x5Au
#define ESNN_LINK_HEADER_BYTES 10u
#define ESNN_LINK_OVERHEAD 14u          /* header + CRC-32 trailer */
#define ESNN_LINK_MIN_PAYLOAD 128u      /* the smallest max_payload esnn_link_init accepts (HELLO fits) */

/* message types */
#define ESNN_MSG_HELLO 0x01u
#define ESNN_MSG_RESET 0x02u
#define ESNN_MSG_STATS 0x03u
#define ESNN_MSG_ECHO 0x04u
#define ESNN_MSG_STEP 0x10u
#define ESNN_MSG_UPLOAD_BEGIN 0x20u
#define ESNN_MSG_UPLOAD_CHUNK 0x21u
#define ESNN_MSG_UPLOAD_COMMIT 0x22u
#define ESNN_MSG_UPLOAD_ABORT 0x23u
#define ESNN_MSG_LEARN 0x30u
#define ESNN_MSG_READ_WEIGHTS 0x31u
#define ESNN_MSG_READ_STATE 0x32u
#define ESNN_MSG_ERROR 0xFFu
#define ESNN_MSG_REPLY 0x80u            /* reply type = request type | ESNN_MSG_REPLY */

/* ERROR codes */
#define ESNN_LINK_E_CRC 1
#define ESNN_LINK_E_VERSION 2
#define ESNN_LINK_E_TOO_LONG 3
#define ESNN_LINK_E_UNKNOWN 4
#define ESNN_LINK_E_MALFORMED 5
#define ESNN_LINK_E_STEP 6
#define ESNN_LINK_E_REPLY_TOO_BIG 7
#define ESNN_LINK_E_NO_UPLOAD 8
#define ESNN_LINK_E_OFFSET 9
#define ESNN_LINK_E_TOO_BIG 10
#define ESNN_LINK_E_INCOMPLETE 11
#define ESNN_LINK_E_UPLOAD_CRC 12
#define ESNN_LINK_E_MODEL 13
#define ESNN_LINK_E_STATE_TOO_BIG 14
#define ESNN_LINK_E_UNSUPPORTED 15
#define ESNN_LINK_E_ARGUMENT 16

/* HELLO capability bits */
#define ESNN_CAP_UPLOAD 0x01u
#define ESNN_CAP_CYCLES 0x02u
#define ESNN_CAP_READ_WEIGHTS 0x04u
#define ESNN_CAP_READ_STATE 0x08u
#define ESNN_CAP_LEARNING 0x10u
#define ESNN_CAP_READOUT 0x20u

/* LEARN operations (docs/protocol.md) */
#define ESNN_LEARN_OP_QUERY 0u
#define ESNN_LEARN_OP_ENABLE 1u
#define ESNN_LEARN_OP_MASK 2u
#define ESNN_LEARN_OP_ETA 3u
#define ESNN_LEARN_OP_RESET 4u

/* STEP flags */
#define ESNN_STEP_SPIKES 0x01u
#define ESNN_STEP_READOUT 0x02u
#define ESNN_STEP_CYCLES 0x04u

typedef struct esnn_link_config {
    const esnn_model_t *model;     /* the model running after init (usually in flash) */
    int32_t *state_mem;            /* state memory, 4-byte aligned */
    uint32_t state_bytes;
    uint8_t *rx_buf;               /* max_payload bytes */
    uint8_t *tx_buf;               /* max_payload + ESNN_LINK_OVERHEAD bytes */
    uint32_t max_payload;          /* ESNN_LINK_MIN_PAYLOAD .. 65535 */
    int32_t *events;               /* max_events int32 */
    uint32_t max_events;           /* input events of one step (HELLO lowers it to the runtime's limits) */
    uint32_t max_steps;            /* steps of one STEP request, 1 .. 65535 */
    uint8_t *upload[2];            /* staging buffers, 16-byte aligned; NULL with capacity 0: no upload */
    uint32_t upload_capacity;      /* bytes of each */
    const char *name;              /* the board profile's name (HELLO), NUL-terminated, or NULL */
    uint32_t clock_hz;             /* core clock (HELLO), 0 if unknown */
    /* A free-running up-counter of core clock cycles, counting modulo cycles_mask + 1 (cycles_mask is
       2^k - 1: 0x00FFFFFF for SysTick turned into an up-counter); a step's cycles are
       (end - start) & cycles_mask. NULL: no cycle counter (capability bit 1 clear, cycles read 0). */
    uint32_t (*cycles)(void *ctx);
    uint32_t cycles_mask;
    /* Bytes the receive buffer has lost since start-up (monotonic, modulo 2^32); NULL: none. */
    uint32_t (*rx_dropped)(void *ctx);
    /* Sends a whole reply frame; must not call back into the link. */
    void (*write)(void *ctx, const uint8_t *data, uint32_t n);
    void *ctx;                     /* passed to the callbacks */
#ifdef ESNN_LINK_LEARN
    /* On-device learning (compiled with ESNN_LINK_LEARN and esnn_learn.c). learn_cfg NULL: none. Else the
       compiled-in model's int16 pool is copied to learn_wb (learn_n_wb >= the model's n_wb words) and
       learns there, with a learner in learn_buf (8-byte aligned, learn_bytes >= esnn_learn_bytes). */
    const esnn_learn_config_t *learn_cfg;
    void *learn_buf;
    uint32_t learn_bytes;
    int16_t *learn_wb;
    uint32_t learn_n_wb;
#endif
} esnn_link_config_t;

/* Everything below is private to esnn_link.c (a struct so that the caller can place it statically). */
typedef struct esnn_link {
    esnn_link_config_t cfg;
    const esnn_model_t *model;     /* the running model: cfg.model or uploaded[active] */
    esnn_model_t uploaded[2];      /* models pointing into cfg.upload[0], cfg.upload[1] */
    int32_t active;                /* -1: cfg.model; 0 or 1: uploaded[active] */
    esnn_state_t state;
    uint32_t *counts;              /* n_outputs spike counts since RESET / upload (the class) */
    /* receiver */
    uint32_t rx_phase;
    uint8_t hdr[ESNN_LINK_HEADER_BYTES];
    uint32_t hdr_n;
    uint32_t pay_len, pay_n;       /* payload length, bytes of it received (or skipped) */
    uint8_t trailer[4];
    uint32_t trailer_n;
    int32_t skip_error;            /* 0, or the error to answer once a skipped frame has passed */
    /* upload */
    int32_t upload_open;
    uint32_t up_total, up_crc, up_got;
    /* STATS */
    uint64_t n_steps, n_events, n_spikes, n_synops, n_cycles;
    uint32_t last_cycles, frames, refused, dropped_base;
#ifdef ESNN_LINK_LEARN
    int32_t learning;              /* 1: the running model learns (the compiled-in model, in RAM) */
    esnn_model_t learn_model;      /* cfg.model with its int16 pool in cfg.learn_wb */
    esnn_learn_t learner;
#endif
} esnn_link_t;

/* Check the configuration and the model, bind the state (reset) and start receiving: ESNN_OK, or
   ESNN_ERR_ARG (a missing buffer or callback, a max_payload out of range, state memory too small for
   the model plus its class counts, unaligned upload buffers) or the model's error. */
int32_t esnn_link_init(esnn_link_t *link, const esnn_link_config_t *config);

/* Receive n bytes; every frame they complete is answered (through cfg.write) before this returns. */
void esnn_link_feed(esnn_link_t *link, const uint8_t *data, uint32_t n);

/* The running model and its state (e.g. for an application that also steps it itself). */
const esnn_model_t *esnn_link_model(const esnn_link_t *link);
esnn_state_t *esnn_link_state(esnn_link_t *link);

/* The checks of the frame format, exposed for tests: CRC-16/CCITT-FALSE and zlib's CRC-32, continued
   from a previous value (start CRC-16 at 0xFFFF; CRC-32 at 0, as zlib's crc32(data, value)). */
uint16_t esnn_link_crc16(uint16_t crc, const uint8_t *data, uint32_t n);
uint32_t esnn_link_crc32(uint32_t crc, const uint8_t *data, uint32_t n);

#ifdef __cplusplus
}
#endif

#endif /* ESNN_LINK_H */
