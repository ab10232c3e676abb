/*
 * The device link on the host: esnn_link.c and the runtime behind stdin / stdout, with the model of
 * model_data.c compiled in. The third implementation of docs/protocol.md (after the firmware, which
 * runs the same esnn_link.c, and the Python emulated device): tests feed it byte streams and compare
 * the reply bytes (firmware_gen/hostdevice.py builds and runs it).
 *
 *     host_device [--max-payload N] [--max-events N] [--max-steps N] [--upload BYTES] [--state BYTES]
 *                 [--name NAME] [--clock HZ]
 *
 * Compiled with -DESNN_LINK_LEARN (and esnn_learn.c), `--learn W0,W1,...,W16` (the 17 words of
 * esnn_learn_config_t, firmware_gen.hostlib.learn_config) makes the compiled-in model learn (LEARN).
 *
 * Reads stdin until end of file, writes every reply frame to stdout as it is produced. Exit status 0,
 * or 2 for bad arguments / a configuration the link refuses.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgesnn.h"
#include "esnn_link.h"
#include "model_data.h"

static void write_all(void *ctx, const uint8_t *data, uint32_t n)
{
    (void)ctx;
    while (n > 0u) {
        ssize_t k = write(1, data, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            exit(3);   /* the reader went away */
        data += k;
        n -= (uint32_t)k;
    }
}

/* a 16-byte aligned block that is never freed (the process lives as long as the link) */
static void *aligned(size_t n)
{
    uint8_t *p = malloc(n + 16u);
    if (p == NULL)
        exit(2);
    memset(p, 0, n + 16u);
    return p + (16u - (uintptr_t)p % 16u) % 16u;
}

static uint32_t arg_u32(const char *s)
{
    char *end;
    unsigned long v = strtoul(s, &end, 0);
    if (*s == '\0' || *end != '\0' || v > 0xFFFFFFFFul) {
        fprintf(stderr, "host_device: bad number %s\n", s);
        exit(2);
    }
    return (uint32_t)v;
}

int main(int argc, char **argv)
{
    static esnn_link_t link;
    esnn_link_config_t cfg;
    uint32_t upload = 65536u, state = 0u;
    uint8_t buf[4096];
    int i;
#ifdef ESNN_LINK_LEARN
    static esnn_learn_config_t lcfg;
    const char *learn = NULL;
#endif
    memset(&cfg, 0, sizeof cfg);
    cfg.max_payload = 4096u;
    cfg.max_events = 2045u;
    cfg.max_steps = 256u;
    cfg.name = "host";
    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--max-payload") == 0)
            cfg.max_payload = arg_u32(argv[i + 1]);
        else if (strcmp(argv[i], "--max-events") == 0)
            cfg.max_events = arg_u32(argv[i + 1]);
        else if (strcmp(argv[i], "--max-steps") == 0)
            cfg.max_steps = arg_u32(argv[i + 1]);
        else if (strcmp(argv[i], "--upload") == 0)
            upload = arg_u32(argv[i + 1]);
        else if (strcmp(argv[i], "--state") == 0)
            state = arg_u32(argv[i + 1]);
        else if (strcmp(argv[i], "--name") == 0)
            cfg.name = argv[i + 1];
        else if (strcmp(argv[i], "--clock") == 0)
            cfg.clock_hz = arg_u32(argv[i + 1]);
#ifdef ESNN_LINK_LEARN
        else if (strcmp(argv[i], "--learn") == 0)
            learn = argv[i + 1];
#endif
        else
            break;
    }
    if (i != argc) {
        fprintf(stderr, "usage: host_device [--max-payload N] [--max-events N] [--max-steps N] "
                        "[--upload BYTES] [--state BYTES] [--name NAME] [--clock HZ]\n");
        return 2;
    }
    if (state == 0u)   /* default: the compiled-in model's state and class counts, and room to spare */
        state = 4u * ESNN_MODEL_STATE_WORDS + 4u * ESNN_MODEL_N_OUTPUTS + 65536u;
    cfg.model = &esnn_model;
    cfg.state_mem = aligned((state + 3u) & ~3u);
    cfg.state_bytes = state;
    cfg.rx_buf = aligned(cfg.max_payload);
    cfg.tx_buf = aligned(cfg.max_payload + ESNN_LINK_OVERHEAD);
    cfg.events = aligned(4u * (size_t)(cfg.max_events ? cfg.max_events : 1u));
    if (upload > 0u) {
        cfg.upload[0] = aligned(upload);
        cfg.upload[1] = aligned(upload);
        cfg.upload_capacity = upload;
    }
    cfg.write = write_all;
#ifdef ESNN_LINK_LEARN
    if (learn != NULL) {
        int32_t w[17];
        const char *q = learn;
        int k;
        for (k = 0; k < 17; k++) {
            char *end;
            long long v = strtoll(q, &end, 0);
            if (end == q || v < -2147483648LL || v > 4294967295LL || (k < 16 && *end != ',')
                || (k == 16 && *end != '\0')) {
                fprintf(stderr, "host_device: --learn takes 17 comma-separated integers\n");
                return 2;
            }
            w[k] = (int32_t)(uint32_t)(v & 0xFFFFFFFFLL);
            q = end + 1;
        }
        lcfg.rule = w[0];
        lcfg.seed = (uint32_t)w[1];
        lcfg.y_one = w[2];
        lcfg.decolle_target = w[3];
        lcfg.a_plus = w[4];
        lcfg.a_minus = w[5];
        lcfg.d_post = (uint32_t)w[6];
        lcfg.d_elig = (uint32_t)w[7];
        lcfg.reg = w[8];
        lcfg.reg_lo = w[9];
        lcfg.reg_hi = w[10];
        lcfg.reg_d = (uint32_t)w[11];
        lcfg.reg_shift = (uint32_t)w[12];
        lcfg.center = (uint32_t)w[13];
        lcfg.hinge = w[14];
        lcfg.nlms = w[15];
        lcfg.trial = (uint32_t)w[16];
        cfg.learn_cfg = &lcfg;
        cfg.learn_n_wb = ESNN_MODEL_N_WB > 0u ? ESNN_MODEL_N_WB : 1u;
        cfg.learn_wb = aligned(2u * (size_t)cfg.learn_n_wb);
        cfg.learn_bytes = esnn_learn_bytes(&esnn_model, &lcfg);
        cfg.learn_buf = aligned(cfg.learn_bytes > 0u ? cfg.learn_bytes : 8u);
    }
#endif
    if (esnn_link_init(&link, &cfg) != ESNN_OK) {
        fprintf(stderr, "host_device: esnn_link_init refused the configuration\n");
        return 2;
    }
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        esnn_link_feed(&link, buf, (uint32_t)n);
    }
    return 0;
}
