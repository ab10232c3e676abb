/*
 * libFuzzer target for the device link (esnn_link.c): arbitrary bytes into esnn_link_feed, with a real
 * model compiled in (model_data.c from codegen) and upload enabled. Built by firmware_gen/hostdevice.py
 * (build_fuzzer) with clang -fsanitize=fuzzer,address,undefined; run by tests/test_device_firmware.py
 * (bounded) and benchmarks/fuzz_link.py (longer).
 *
 * The first input byte picks the mode:
 *   even: the rest is a raw byte stream (garbage, truncated and corrupted frames, resynchronisation);
 *   odd:  the rest is a list of records that the harness turns into frames with correct checks, so the
 *         mutations reach the message handlers instead of dying in the CRC checks:
 *           u8 kind, u16 length, length bytes (cut short at the end of the input)
 *           kind 0xF0: the bytes as they are (raw)
 *           kind 0xF1: bytes[0] type, bytes[1] version, bytes[2] bit 0: corrupt the frame check; the rest
 *                      is the payload
 *           kind 0xF2: a weight blob: its own CRC-32 trailer is recomputed, then it is uploaded (BEGIN with
 *                      the right size and CRC, chunks, COMMIT), so mutated models reach the model check,
 *                      the switch and, with later STEP records, the runtime
 *           any other kind: a frame of that type with the bytes as payload
 * The feed is split into chunks of varying size (byte-wise and bulk paths of the receiver).
 *
 * Every reply is checked: a well-formed frame (sync, version 1, header check, length <= max_payload,
 * frame check), and exactly one for a frame sent at a frame boundary; a violation aborts (a crash for
 * libFuzzer).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edgesnn.h"
#include "esnn_link.h"
#include "model_data.h"

#define MAX_PAYLOAD 512u
#define MAX_EVENTS 200u
#define MAX_STEPS 8u
#define UPLOAD_BYTES 32768u
#define STATE_BYTES 65536u

static int32_t state_mem[STATE_BYTES / 4u];
static uint8_t rx_buf[MAX_PAYLOAD];
static uint8_t tx_buf[MAX_PAYLOAD + ESNN_LINK_OVERHEAD];
static int32_t events[MAX_EVENTS];
ESNN_ALIGNED(16) static uint8_t upload0[UPLOAD_BYTES];
ESNN_ALIGNED(16) static uint8_t upload1[UPLOAD_BYTES];
static esnn_link_t link;
static uint32_t replies;
static uint8_t frame[MAX_PAYLOAD + 64u + ESNN_LINK_OVERHEAD];
static uint8_t blob[UPLOAD_BYTES + 16u];

static void check_reply(void *ctx, const uint8_t *f, uint32_t n)
{
    uint32_t len;
    (void)ctx;
    if (n < ESNN_LINK_OVERHEAD || f[0] != 0xA5u || f[1] != 0x5Au || f[2] != 1u)
        abort();
    len = (uint32_t)f[6] | ((uint32_t)f[7] << 8);
    if (len > MAX_PAYLOAD || n != len + ESNN_LINK_OVERHEAD)
        abort();
    if (esnn_link_crc16(0xFFFFu, f + 2, 6u) != ((uint32_t)f[8] | ((uint32_t)f[9] << 8)))
        abort();
    if (esnn_link_crc32(0u, f + 2, 8u + len)
        != ((uint32_t)f[10u + len] | ((uint32_t)f[11u + len] << 8) | ((uint32_t)f[12u + len] << 16)
            | ((uint32_t)f[13u + len] << 24)))
        abort();
    replies++;
}

static uint32_t chunk_state;

/* varying chunk sizes: 1 byte, a few, many */
static void feed(const uint8_t *d, uint32_t n)
{
    while (n > 0u) {
        uint32_t k;
        chunk_state = chunk_state * 1103515245u + 12345u;
        k = (chunk_state >> 16) % 4u == 0u ? 1u : 1u + (chunk_state >> 8) % 97u;
        if (k > n)
            k = n;
        esnn_link_feed(&link, d, k);
        d += k;
        n -= k;
    }
}

static void send(uint32_t type, uint32_t version, const uint8_t *p, uint32_t n, int corrupt)
{
    uint16_t hc;
    uint32_t crc, before = replies;
    int at_boundary;
    frame[0] = 0xA5u;
    frame[1] = 0x5Au;
    frame[2] = (uint8_t)version;
    frame[3] = (uint8_t)type;
    frame[4] = 0x34u;
    frame[5] = 0x12u;
    frame[6] = (uint8_t)(n & 0xFFu);
    frame[7] = (uint8_t)(n >> 8);
    hc = esnn_link_crc16(0xFFFFu, frame + 2, 6u);
    frame[8] = (uint8_t)(hc & 0xFFu);
    frame[9] = (uint8_t)(hc >> 8);
    if (n > 0u)
        memcpy(frame + 10, p, n);
    crc = esnn_link_crc32(0u, frame + 2, 8u + n) ^ (corrupt ? 1u : 0u);
    frame[10u + n] = (uint8_t)(crc & 0xFFu);
    frame[11u + n] = (uint8_t)((crc >> 8) & 0xFFu);
    frame[12u + n] = (uint8_t)((crc >> 16) & 0xFFu);
    frame[13u + n] = (uint8_t)(crc >> 24);
    /* Only when the receiver waits for a new frame (esnn_link.c's RX_SYNC0 is 0) is the count exact:
       after raw bytes it may still be inside an earlier frame, and this frame's bytes its payload. */
    at_boundary = link.rx_phase == 0u;
    feed(frame, n + ESNN_LINK_OVERHEAD);
    if (at_boundary && n <= MAX_PAYLOAD + 64u && replies != before + 1u)
        abort();   /* a frame whose header check holds gets exactly one reply */
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)(v >> 24);
}

static void upload(const uint8_t *d, uint32_t n)
{
    uint8_t p[MAX_PAYLOAD];
    uint32_t off, crc;
    if (n > UPLOAD_BYTES)
        n = UPLOAD_BYTES;
    memcpy(blob, d, n);
    if (n >= 8u) {
        crc = esnn_link_crc32(0u, blob, n - 4u);
        put32(blob + n - 4u, crc);
    }
    put32(p, n);
    put32(p + 4, esnn_link_crc32(0u, blob, n));
    send(ESNN_MSG_UPLOAD_BEGIN, 1u, p, 8u, 0);
    for (off = 0; off < n; off += MAX_PAYLOAD - 4u) {
        uint32_t k = n - off < MAX_PAYLOAD - 4u ? n - off : MAX_PAYLOAD - 4u;
        put32(p, off);
        memcpy(p + 4, blob + off, k);
        send(ESNN_MSG_UPLOAD_CHUNK, 1u, p, 4u + k, 0);
    }
    send(ESNN_MSG_UPLOAD_COMMIT, 1u, NULL, 0u, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    esnn_link_config_t cfg;
    uint32_t pos = 1, n = size > 0xFFFFFFu ? 0xFFFFFFu : (uint32_t)size;
    memset(&cfg, 0, sizeof cfg);
    cfg.model = &esnn_model;
    cfg.state_mem = state_mem;
    cfg.state_bytes = sizeof state_mem;
    cfg.rx_buf = rx_buf;
    cfg.tx_buf = tx_buf;
    cfg.max_payload = MAX_PAYLOAD;
    cfg.events = events;
    cfg.max_events = MAX_EVENTS;
    cfg.max_steps = MAX_STEPS;
    cfg.upload[0] = upload0;
    cfg.upload[1] = upload1;
    cfg.upload_capacity = UPLOAD_BYTES;
    cfg.name = "fuzz";
    cfg.write = check_reply;
    if (esnn_link_init(&link, &cfg) != ESNN_OK)
        abort();
    replies = 0;
    chunk_state = n;
    if (n == 0u)
        return 0;
    if ((data[0] & 1u) == 0u) {
        feed(data + 1, n - 1u);
        return 0;
    }
    while (pos + 3u <= n) {
        uint32_t kind = data[pos], len = (uint32_t)data[pos + 1] | ((uint32_t)data[pos + 2] << 8);
        const uint8_t *p = data + pos + 3u;
        pos += 3u;
        if (len > n - pos)
            len = n - pos;
        pos += len;
        if (kind == 0xF0u) {
            feed(p, len);
        } else if (kind == 0xF1u) {
            if (len >= 3u)
                send(p[0], p[1], p + 3, len - 3u > MAX_PAYLOAD + 64u ? MAX_PAYLOAD + 64u : len - 3u, p[2] & 1u);
        } else if (kind == 0xF2u) {
            upload(p, len);
        } else {
            send(kind, 1u, p, len > MAX_PAYLOAD + 64u ? MAX_PAYLOAD + 64u : len, 0);
        }
    }
    return 0;
}
