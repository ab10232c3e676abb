/*
 * edgesnn device link: frames and messages of docs/protocol.md on the device (see esnn_link.h).
 *
 * Receiving is a state machine fed one byte (or, inside a payload, a run of bytes) at a time, so the
 * same code serves a UART ring buffer, a USB packet or a fuzzer's input. Nothing here allocates, and
 * every length read from the wire is checked against the caller's buffers before it is used.
 */
#include "esnn_link.h"

#include <stddef.h>
#include <string.h>

/* receiver phases */
#define RX_SYNC0 0u      /* looking for 0xA5 */
#define RX_SYNC1 1u      /* had 0xA5, looking for 0x5A */
#define RX_HEADER 2u     /* collecting header bytes 2..9 */
#define RX_PAYLOAD 3u
#define RX_TRAILER 4u

/* ------------------------------------------------------------------ checks */

uint16_t esnn_link_crc16(uint16_t crc, const uint8_t *data, uint32_t n)
{
    uint32_t c = crc, k, b;
    for (k = 0; k < n; k++) {
        c ^= (uint32_t)data[k] << 8;
        for (b = 0; b < 8u; b++)
            c = (c & 0x8000u) ? ((c << 1) ^ 0x1021u) : (c << 1);
        c &= 0xFFFFu;
    }
    return (uint16_t)c;
}

uint32_t esnn_link_crc32(uint32_t crc, const uint8_t *data, uint32_t n)
{
    return esnn_crc32_update(crc, data, n);
}

/* ------------------------------------------------------------------ little-endian fields */

static uint32_t rd16(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* The reply under construction: its payload is written at tx_buf + 10; a write past max_payload only
   sets `over` (the handlers check sizes first; this is the backstop that turns a miscount into
   REPLY_TOO_BIG instead of a buffer overrun). */
typedef struct {
    uint8_t *p;
    uint32_t n, cap;
    int over;
} out_t;

static void put8(out_t *o, uint32_t v)
{
    if (o->n + 1u > o->cap) {
        o->over = 1;
        return;
    }
    o->p[o->n++] = (uint8_t)(v & 0xFFu);
}

static void put16(out_t *o, uint32_t v)
{
    put8(o, v);
    put8(o, v >> 8);
}

static void put32(out_t *o, uint32_t v)
{
    put16(o, v & 0xFFFFu);
    put16(o, v >> 16);
}

static void put64(out_t *o, uint64_t v)
{
    put32(o, (uint32_t)(v & 0xFFFFFFFFu));
    put32(o, (uint32_t)(v >> 32));
}

static void put_bytes(out_t *o, const uint8_t *d, uint32_t n)
{
    if (n > o->cap - o->n) {
        o->over = 1;
        return;
    }
    if (n > 0u)
        memcpy(o->p + o->n, d, n);
    o->n += n;
}

/* ------------------------------------------------------------------ sending */

static void send_frame(esnn_link_t *L, uint32_t type, uint32_t seq, uint32_t n)
{
    uint8_t *f = L->cfg.tx_buf;
    uint32_t crc;
    uint16_t hc;
    f[0] = ESNN_LINK_SYNC0;
    f[1] = ESNN_LINK_SYNC1;
    f[2] = ESNN_LINK_PROTOCOL;
    f[3] = (uint8_t)type;
    f[4] = (uint8_t)(seq & 0xFFu);
    f[5] = (uint8_t)(seq >> 8);
    f[6] = (uint8_t)(n & 0xFFu);
    f[7] = (uint8_t)(n >> 8);
    hc = esnn_link_crc16(0xFFFFu, f + 2, 6u);
    f[8] = (uint8_t)(hc & 0xFFu);
    f[9] = (uint8_t)(hc >> 8);
    crc = esnn_link_crc32(0u, f + 2, 8u + n);
    f[10u + n] = (uint8_t)(crc & 0xFFu);
    f[11u + n] = (uint8_t)((crc >> 8) & 0xFFu);
    f[12u + n] = (uint8_t)((crc >> 16) & 0xFFu);
    f[13u + n] = (uint8_t)(crc >> 24);
    L->cfg.write(L->cfg.ctx, f, n + ESNN_LINK_OVERHEAD);
}

static void send_error(esnn_link_t *L, uint32_t req_type, uint32_t seq, int32_t code, uint32_t detail)
{
    out_t o;
    o.p = L->cfg.tx_buf + ESNN_LINK_HEADER_BYTES;
    o.n = 0;
    o.cap = L->cfg.max_payload;
    o.over = 0;
    put8(&o, req_type);
    put8(&o, 0u);
    put16(&o, (uint32_t)code);
    put32(&o, detail);   /* i32 on the wire: runtime statuses arrive here converted modulo 2^32 */
    if (code == ESNN_LINK_E_CRC || code == ESNN_LINK_E_VERSION || code == ESNN_LINK_E_TOO_LONG
        || code == ESNN_LINK_E_MALFORMED)
        L->refused++;
    send_frame(L, ESNN_MSG_ERROR, seq, o.n);
}

/* ------------------------------------------------------------------ the running model */

/* Bytes of state memory a model needs: the runtime's state and the class counts. 0 if it overflows. */
static uint32_t state_need(const esnn_model_t *m)
{
    uint64_t need = (uint64_t)esnn_state_bytes(m) + 4u * (uint64_t)esnn_n_outputs(m);
    return need > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)need;
}

static void clear_counts(esnn_link_t *L)
{
    uint32_t k, n = esnn_n_outputs(L->model);
    for (k = 0; k < n; k++)
        L->counts[k] = 0;
}

/* Bind the state memory to model m (reset); the class counts follow the runtime's state. */
static int32_t bind(esnn_link_t *L, const esnn_model_t *m)
{
    uint32_t sb = esnn_state_bytes(m);
    int32_t st = esnn_state_init(m, &L->state, L->cfg.state_mem, sb);
    if (st != ESNN_OK)
        return st;
    L->counts = (uint32_t *)(void *)(L->cfg.state_mem + sb / 4u);
    return ESNN_OK;
}

/* The most input events one step may carry: the configured limit, lowered to what esnn_step accepts
   for this model (docs/protocol.md, STEP), so that a request checked here never fails in the runtime. */
static uint32_t max_events(const esnn_link_t *L)
{
    const int32_t *row0 = L->model->ltab;
    uint32_t lim = L->cfg.max_events;
    if (lim > ESNN_MAX_EVENTS)
        lim = ESNN_MAX_EVENTS;
    if (row0[ESNN_L_KIND] == ESNN_FLATTEN && lim > (uint32_t)row0[ESNN_L_N_OUT])
        lim = (uint32_t)row0[ESNN_L_N_OUT];
    if (row0[ESNN_L_KIND] == ESNN_RECURRENT && row0[ESNN_L_W_POOL] == 1
        && lim > ESNN_MAX_EVENTS - (uint32_t)row0[ESNN_L_N_OUT])
        lim = ESNN_MAX_EVENTS - (uint32_t)row0[ESNN_L_N_OUT];
    return lim;
}

static uint32_t capabilities(const esnn_link_t *L)
{
    uint32_t c = ESNN_CAP_READ_WEIGHTS | ESNN_CAP_READ_STATE | ESNN_CAP_READOUT;
    if (L->cfg.upload_capacity > 0u)
        c |= ESNN_CAP_UPLOAD;
    if (L->cfg.cycles != NULL)
        c |= ESNN_CAP_CYCLES;
#ifdef ESNN_LINK_LEARN
    if (L->learning)
        c |= ESNN_CAP_LEARNING;
#endif
    return c;
}

static uint32_t cycles_now(const esnn_link_t *L)
{
    return L->cfg.cycles != NULL ? L->cfg.cycles(L->cfg.ctx) : 0u;
}

static uint32_t dropped_now(const esnn_link_t *L)
{
    return L->cfg.rx_dropped != NULL ? L->cfg.rx_dropped(L->cfg.ctx) : 0u;
}

/* ------------------------------------------------------------------ init */

int32_t esnn_link_init(esnn_link_t *link, const esnn_link_config_t *config)
{
    const esnn_link_config_t *c = config;
    int32_t st;
    if (link == NULL || c == NULL || c->model == NULL || c->state_mem == NULL || c->rx_buf == NULL
        || c->tx_buf == NULL || c->write == NULL || c->max_payload < ESNN_LINK_MIN_PAYLOAD
        || c->max_payload > 0xFFFFu || c->events == NULL || c->max_events < 1u || c->max_steps < 1u
        || c->max_steps > 0xFFFFu || ((uintptr_t)c->state_mem & 3u) != 0u)
        return ESNN_ERR_ARG;
    if (c->upload_capacity > 0u
        && (c->upload[0] == NULL || c->upload[1] == NULL || ((uintptr_t)c->upload[0] & 15u) != 0u
            || ((uintptr_t)c->upload[1] & 15u) != 0u))
        return ESNN_ERR_ARG;
    if (c->cycles != NULL && (c->cycles_mask & (c->cycles_mask + 1u)) != 0u)
        return ESNN_ERR_ARG;   /* not 2^k - 1 */
    memset(link, 0, sizeof *link);
    link->cfg = *c;
    st = esnn_model_check(c->model);
    if (st != ESNN_OK)
        return st;
    if (state_need(c->model) > c->state_bytes)
        return ESNN_ERR_ARG;
    link->model = c->model;
    link->active = -1;
#ifdef ESNN_LINK_LEARN
    if (c->learn_cfg != NULL) {
        /* the compiled-in model learns on a RAM copy of its int16 pool */
        st = esnn_learn_model_copy(c->model, &link->learn_model, c->learn_wb, c->learn_n_wb);
        if (st != ESNN_OK)
            return st;
        link->model = &link->learn_model;
        st = esnn_learn_init(&link->learner, link->model, c->learn_wb, c->learn_cfg, c->learn_buf,
                             c->learn_bytes);
        if (st != ESNN_OK)
            return st;
        link->learning = 1;
    }
#endif
    st = bind(link, link->model);
    if (st != ESNN_OK)
        return st;
    clear_counts(link);
    link->rx_phase = RX_SYNC0;
    link->dropped_base = dropped_now(link);
    return ESNN_OK;
}

const esnn_model_t *esnn_link_model(const esnn_link_t *link)
{
    return link->model;
}

esnn_state_t *esnn_link_state(esnn_link_t *link)
{
    return &link->state;
}

/* ------------------------------------------------------------------ handlers */

/* A handler writes its reply payload into o and returns 0, or returns an error code with *detail. */
#define MALFORMED(off) do { *detail = (off); return ESNN_LINK_E_MALFORMED; } while (0)

/* Payloads of a fixed size: the offset of a missing field or of the first extra byte (the fields'
   starting offsets are in `starts`, the last entry being the full size). */
static int32_t check_size(uint32_t len, const uint32_t *starts, uint32_t n_starts, uint32_t *detail)
{
    uint32_t k;
    for (k = 0; k + 1u < n_starts; k++)
        if (len < starts[k + 1u]) {
            *detail = starts[k];
            return ESNN_LINK_E_MALFORMED;
        }
    if (len > starts[n_starts - 1u]) {
        *detail = starts[n_starts - 1u];
        return ESNN_LINK_E_MALFORMED;
    }
    return 0;
}

static int32_t do_hello(esnn_link_t *L, uint32_t len, out_t *o, uint32_t *detail)
{
    const esnn_model_t *m = L->model;
    uint32_t k, name_len = 0;
    if (len != 0u)
        MALFORMED(0);
    put16(o, ESNN_LINK_PROTOCOL);
    put16(o, L->cfg.max_payload);
    put32(o, capabilities(L));
    put32(o, esnn_n_inputs(m));
    put32(o, esnn_n_outputs(m));
    put32(o, m->n_layers);
    put32(o, L->cfg.clock_hz);
    put32(o, L->cfg.upload_capacity);
    put32(o, max_events(L));
    put32(o, L->cfg.max_steps);
    for (k = 0; k < ESNN_HASH_BYTES; k++)
        put8(o, m->hash != NULL ? m->hash[k] : 0u);
    if (L->cfg.name != NULL)
        while (name_len < 255u && L->cfg.name[name_len] != '\0')
            name_len++;
    put8(o, name_len);
    put_bytes(o, (const uint8_t *)L->cfg.name, name_len);
    return 0;
}

static int32_t do_reset(esnn_link_t *L, uint32_t len, uint32_t *detail)
{
    if (len != 0u)
        MALFORMED(0);
    esnn_reset(L->model, &L->state);
    clear_counts(L);
    return 0;
}

static int32_t do_stats(esnn_link_t *L, const uint8_t *p, uint32_t len, out_t *o, uint32_t *detail)
{
    static const uint32_t starts[] = {0u, 1u};
    int32_t e = check_size(len, starts, 2u, detail);
    uint32_t dropped;
    if (e != 0)
        return e;
    if (p[0] > 1u)
        MALFORMED(0);
    dropped = dropped_now(L);
    put64(o, L->n_steps);
    put64(o, L->n_events);
    put64(o, L->n_spikes);
    put64(o, L->n_synops);
    put64(o, L->n_cycles);
    put32(o, L->last_cycles);
    put32(o, L->frames);
    put32(o, L->refused);
    put32(o, dropped - L->dropped_base);   /* modular: the board's counter may wrap */
    if (p[0] == 1u) {
        L->n_steps = L->n_events = L->n_spikes = L->n_synops = L->n_cycles = 0;
        L->last_cycles = L->frames = L->refused = 0;
        L->dropped_base = dropped;
    }
    return 0;
}

/* Weights each input event of layer l reaches (docs/protocol.md, STATS). */
static uint32_t fan_out(const int32_t *row)
{
    switch (row[ESNN_L_KIND]) {
    case ESNN_DENSE:
    case ESNN_RECURRENT:
        return (uint32_t)row[ESNN_L_N_OUT];
    case ESNN_CONV2D:
        return (uint32_t)row[ESNN_L_OUT_C] * (uint32_t)row[ESNN_L_KH] * (uint32_t)row[ESNN_L_KW];
    case ESNN_SUMPOOL2D:
        return 1u;
    default:
        return 0u;
    }
}

/* One step of a checked request: run it, count it, and append its record to the reply. */
#ifdef ESNN_LINK_LEARN
/* label (-1: none) and reward (ESNN_LEARN_REWARD_AUTO: automatic): the step's teaching signals */
#define TEACH_PARAMS , int32_t label, int32_t reward
#define TEACH_ARGS , label, reward
#else
#define TEACH_PARAMS
#define TEACH_ARGS
#endif

static int32_t run_step(esnn_link_t *L, uint32_t flags, const uint8_t *idx, uint32_t n_ev TEACH_PARAMS, out_t *o)
{
    const esnn_model_t *m = L->model;
    const uint32_t nl = m->n_layers, n_out = esnn_n_outputs(m);
    const int32_t *last = m->ltab + (nl - 1u) * ESNN_NL;
    const int32_t *spk, *v;
    uint64_t synops = 0;
    uint32_t k, l, t0, t1, cyc, cnt, prev, in_ev = n_ev;
    int32_t st, cls = -1;
    for (k = 0; k < n_ev; k++)
        L->cfg.events[k] = (int32_t)rd16(idx + 2u * k);
    /* recurrent layers also read their own spikes of the previous step: count them before it changes */
    for (l = 0; l < nl; l++) {
        const int32_t *row = m->ltab + l * ESNN_NL;
        if (row[ESNN_L_KIND] == ESNN_RECURRENT) {
            (void)esnn_spikes(m, &L->state, l, &prev);
            synops += (uint64_t)prev * (uint32_t)row[ESNN_L_N_OUT];
        }
    }
    t0 = cycles_now(L);
#ifdef ESNN_LINK_LEARN
    if (L->learning)   /* every step goes through the learner (it learns when enabled) */
        st = esnn_learn_step(&L->learner, &L->state, L->cfg.events, n_ev, label, reward);
    else
#endif
        st = esnn_step(m, &L->state, L->cfg.events, n_ev);
    t1 = cycles_now(L);
    if (st != ESNN_OK)
        return st;   /* not reached for a checked request (max_events holds the runtime's limits) */
    cyc = L->cfg.cycles != NULL ? (t1 - t0) & L->cfg.cycles_mask : 0u;
    L->n_steps++;
    L->n_events += n_ev;
    L->n_cycles += cyc;
    L->last_cycles = cyc;
    for (l = 0; l < nl; l++) {
        const int32_t *row = m->ltab + l * ESNN_NL;
        synops += (uint64_t)in_ev * fan_out(row);
        (void)esnn_spikes(m, &L->state, l, &cnt);
        if (row[ESNN_L_KIND] != ESNN_FLATTEN && row[ESNN_L_NEURON] != ESNN_LI)
            L->n_spikes += cnt;
        in_ev = cnt;   /* a Flatten layer's list is its input events: they go on to the next layer */
    }
    L->n_synops += synops;
    /* the class: a leaky-integrator readout's largest v, else the most spikes since RESET / upload */
    spk = esnn_spikes(m, &L->state, ESNN_LAST_LAYER, &cnt);
    v = esnn_v(m, &L->state, ESNN_LAST_LAYER);
    if (last[ESNN_L_NEURON] == ESNN_LI && v != NULL) {
        cls = 0;
        for (k = 1; k < n_out; k++)
            if (v[k] > v[cls])
                cls = (int32_t)k;
    } else {
        uint32_t best = 0;
        for (k = 0; k < cnt; k++)
            if (L->counts[spk[k]] != 0xFFFFFFFFu)   /* saturate rather than wrap */
                L->counts[spk[k]]++;
        for (k = 0; k < n_out; k++)
            if (L->counts[k] > best) {
                best = L->counts[k];
                cls = (int32_t)k;
            }
    }
    put16(o, (uint32_t)cls & 0xFFFFu);   /* i16 on the wire: -1 is 0xFFFF */
    if (flags & ESNN_STEP_CYCLES)
        put32(o, cyc);
    if (flags & ESNN_STEP_SPIKES) {
        put16(o, cnt);
        for (k = 0; k < cnt; k++)
            put16(o, (uint32_t)spk[k]);
    }
    if (flags & ESNN_STEP_READOUT)
        for (k = 0; k < n_out; k++)
            put32(o, v != NULL ? (uint32_t)v[k] : 0u);
    return ESNN_OK;
}

static int32_t do_step(esnn_link_t *L, const uint8_t *p, uint32_t len, out_t *o, uint32_t *detail)
{
    const esnn_model_t *m = L->model;
    const uint32_t n_in = esnn_n_inputs(m), n_out = esnn_n_outputs(m), lim = max_events(L);
    uint32_t flags, n_steps, pos, t, k, n_ev, teach;
    uint64_t per, worst;
    int32_t st;
    if (len < 1u)
        MALFORMED(0);
    flags = p[0];
    if (flags & ~0x7u)
        MALFORMED(0);
    if (len < 3u)
        MALFORMED(1);
    n_steps = rd16(p + 1);
    if (n_steps < 1u || n_steps > L->cfg.max_steps)
        MALFORMED(1);
    per = 2u + ((flags & ESNN_STEP_CYCLES) ? 4u : 0u)
          + ((flags & ESNN_STEP_SPIKES) ? 2u + 2u * (uint64_t)n_out : 0u)
          + ((flags & ESNN_STEP_READOUT) ? 4u * (uint64_t)n_out : 0u);
    worst = 3u + (uint64_t)n_steps * per;
    if (worst > L->cfg.max_payload) {
        *detail = L->cfg.max_payload;
        return ESNN_LINK_E_REPLY_TOO_BIG;
    }
    /* first pass: check every record; nothing runs unless the whole request is good */
    pos = 3u;
    for (t = 0; t < n_steps; t++) {
        if (pos + 1u > len)
            MALFORMED(pos);
        teach = p[pos];
        if (teach & ~0x3u)
            MALFORMED(pos);
        pos++;
        if (teach & 1u) {   /* label */
            if (pos + 2u > len)
                MALFORMED(pos);
#ifdef ESNN_LINK_LEARN
            if (L->learning && rd16(p + pos) >= n_out) {
                *detail = rd16(p + pos);
                return ESNN_LINK_E_ARGUMENT;
            }
#endif
            pos += 2u;
        }
        if (teach & 2u) {   /* reward */
            if (pos + 2u > len)
                MALFORMED(pos);
            pos += 2u;
        }
        if (pos + 2u > len)
            MALFORMED(pos);
        n_ev = rd16(p + pos);
        if (n_ev > lim) {
            *detail = (uint32_t)ESNN_ERR_INPUT_COUNT;
            return ESNN_LINK_E_STEP;
        }
        pos += 2u;
        if (2u * n_ev > len - pos)
            MALFORMED(pos);
        for (k = 0; k < n_ev; k++)
            if (rd16(p + pos + 2u * k) >= n_in) {
                *detail = (uint32_t)ESNN_ERR_INPUT_INDEX;
                return ESNN_LINK_E_STEP;
            }
        pos += 2u * n_ev;
    }
    if (pos != len)
        MALFORMED(pos);
    /* second pass: run (labels and rewards teach a learning model; otherwise they are ignored) */
    put8(o, flags);
    put16(o, n_steps);
    pos = 3u;
    for (t = 0; t < n_steps; t++) {
#ifdef ESNN_LINK_LEARN
        int32_t label = -1, reward = ESNN_LEARN_REWARD_AUTO;   /* absent: no label; automatic */
        teach = p[pos++];
        if (teach & 1u) {
            label = (int32_t)rd16(p + pos);
            pos += 2u;
        }
        if (teach & 2u) {
            reward = (int32_t)rd16(p + pos) - ((rd16(p + pos) & 0x8000u) ? 65536 : 0);   /* i16 */
            pos += 2u;
        }
#else
        teach = p[pos++];
        pos += ((teach & 1u) ? 2u : 0u) + ((teach & 2u) ? 2u : 0u);
#endif
        n_ev = rd16(p + pos);
        pos += 2u;
        st = run_step(L, flags, p + pos, n_ev TEACH_ARGS, o);
        if (st != ESNN_OK) {
            *detail = (uint32_t)st;
            return ESNN_LINK_E_STEP;
        }
        pos += 2u * n_ev;
    }
    return 0;
}

/* ---- learning */

#ifdef ESNN_LINK_LEARN
/* The LEARN reply: u8 rule, u8 enabled, u32 mask, u16 n_layers, n_layers x u8 eta shift (0xFF: no learning),
   17 x i32 the learner's configuration (esnn_learn_config_t in field order). */
static void learn_status(const esnn_link_t *L, out_t *o)
{
    const esnn_learn_t *lr = &L->learner;
    uint32_t l, mask = 0;
    for (l = 0; l < lr->n_layers && l < 32u; l++)
        if (lr->layers[l].role != ESNN_ROLE_NONE && lr->layers[l].on)
            mask |= 1u << l;
    put8(o, (uint32_t)lr->cfg.rule);
    put8(o, lr->enabled ? 1u : 0u);
    put32(o, mask);
    put16(o, lr->n_layers);
    for (l = 0; l < lr->n_layers; l++)
        put8(o, lr->layers[l].role == ESNN_ROLE_NONE ? 0xFFu : lr->layers[l].k);
    put32(o, (uint32_t)lr->cfg.rule);        /* esnn_learn_config_t, field order */
    put32(o, lr->cfg.seed);
    put32(o, (uint32_t)lr->cfg.y_one);
    put32(o, (uint32_t)lr->cfg.decolle_target);
    put32(o, (uint32_t)lr->cfg.a_plus);
    put32(o, (uint32_t)lr->cfg.a_minus);
    put32(o, lr->cfg.d_post);
    put32(o, lr->cfg.d_elig);
    put32(o, (uint32_t)lr->cfg.reg);
    put32(o, (uint32_t)lr->cfg.reg_lo);
    put32(o, (uint32_t)lr->cfg.reg_hi);
    put32(o, lr->cfg.reg_d);
    put32(o, lr->cfg.reg_shift);
    put32(o, lr->cfg.center);
    put32(o, (uint32_t)lr->cfg.hinge);
    put32(o, (uint32_t)lr->cfg.nlms);
    put32(o, lr->cfg.trial);
}

static int32_t do_learn(esnn_link_t *L, const uint8_t *p, uint32_t len, out_t *o, uint32_t *detail)
{
    esnn_learn_t *lr = &L->learner;
    uint32_t op, l, mask, layer;
    if (!L->learning)
        return ESNN_LINK_E_UNSUPPORTED;
    if (len < 1u)
        MALFORMED(0);
    op = p[0];
    /* the format, front to back */
    switch (op) {
    case ESNN_LEARN_OP_QUERY:
    case ESNN_LEARN_OP_RESET:
        if (len > 1u)
            MALFORMED(1);
        break;
    case ESNN_LEARN_OP_ENABLE:
        if (len < 2u || p[1] > 1u)
            MALFORMED(1);
        if (len > 2u)
            MALFORMED(2);
        break;
    case ESNN_LEARN_OP_MASK:
        if (len < 5u)
            MALFORMED(1);
        if (len > 5u)
            MALFORMED(5);
        break;
    case ESNN_LEARN_OP_ETA:
        if (len < 3u)
            MALFORMED(1);
        if (len < 4u || p[3] > ESNN_LEARN_K_MAX)
            MALFORMED(3);
        if (len > 4u)
            MALFORMED(4);
        break;
    default:
        MALFORMED(0);
    }
    /* the model */
    if (op == ESNN_LEARN_OP_MASK) {
        mask = rd32(p + 1);
        for (l = 0; l < 32u; l++)
            if (((mask >> l) & 1u) != 0u && (l >= lr->n_layers || lr->layers[l].role == ESNN_ROLE_NONE)) {
                *detail = l;
                return ESNN_LINK_E_ARGUMENT;
            }
        for (l = 0; l < lr->n_layers && l < 32u; l++)
            if (lr->layers[l].role != ESNN_ROLE_NONE)
                (void)esnn_learn_set_mask(lr, l, (int32_t)((mask >> l) & 1u));
    } else if (op == ESNN_LEARN_OP_ETA) {
        layer = rd16(p + 1);
        if (layer >= lr->n_layers || lr->layers[layer].role == ESNN_ROLE_NONE) {
            *detail = layer;
            return ESNN_LINK_E_ARGUMENT;
        }
        (void)esnn_learn_set_eta(lr, layer, p[3]);
    } else if (op == ESNN_LEARN_OP_ENABLE) {
        esnn_learn_enable(lr, (int32_t)p[1]);
    } else if (op == ESNN_LEARN_OP_RESET) {
        esnn_learn_reset(lr, &L->state);   /* the network state too */
        clear_counts(L);
    }
    learn_status(L, o);
    return 0;
}
#endif

/* ---- upload */

static int32_t staging(const esnn_link_t *L)
{
    return L->active == 0 ? 1 : 0;
}

static int32_t do_upload_begin(esnn_link_t *L, const uint8_t *p, uint32_t len, out_t *o, uint32_t *detail)
{
    static const uint32_t starts[] = {0u, 4u, 8u};
    int32_t e;
    uint32_t total;
    if (L->cfg.upload_capacity == 0u)
        return ESNN_LINK_E_UNSUPPORTED;
    e = check_size(len, starts, 3u, detail);
    if (e != 0)
        return e;
    L->upload_open = 0;   /* a BEGIN discards any unfinished upload, refused or not */
    total = rd32(p);
    if (total > L->cfg.upload_capacity) {
        *detail = L->cfg.upload_capacity;
        return ESNN_LINK_E_TOO_BIG;
    }
    L->upload_open = 1;
    L->up_total = total;
    L->up_crc = rd32(p + 4);
    L->up_got = 0;
    put32(o, L->cfg.upload_capacity);
    put16(o, L->cfg.max_payload - 4u);
    return 0;
}

static int32_t do_upload_chunk(esnn_link_t *L, const uint8_t *p, uint32_t len, out_t *o, uint32_t *detail)
{
    uint32_t off, n;
    if (L->cfg.upload_capacity == 0u)
        return ESNN_LINK_E_UNSUPPORTED;
    if (len < 4u)
        MALFORMED(0);
    if (!L->upload_open)
        return ESNN_LINK_E_NO_UPLOAD;
    off = rd32(p);
    if (off != L->up_got) {
        *detail = L->up_got;
        return ESNN_LINK_E_OFFSET;
    }
    n = len - 4u;
    if (n > L->up_total - L->up_got)
        MALFORMED(4);
    if (n > 0u)
        memcpy(L->cfg.upload[staging(L)] + off, p + 4, n);   /* off + n <= total <= capacity */
    L->up_got += n;
    put32(o, L->up_got);
    return 0;
}

static int32_t do_upload_commit(esnn_link_t *L, uint32_t len, out_t *o, uint32_t *detail)
{
    const int32_t s = staging(L);
    esnn_model_t *nm = &L->uploaded[s];
    const uint8_t *blob = L->cfg.upload[s];
    uint32_t need, k;
    int32_t st;
    if (L->cfg.upload_capacity == 0u)
        return ESNN_LINK_E_UNSUPPORTED;
    if (len != 0u)
        MALFORMED(0);
    if (!L->upload_open)
        return ESNN_LINK_E_NO_UPLOAD;
    if (L->up_got < L->up_total) {
        *detail = L->up_got;
        return ESNN_LINK_E_INCOMPLETE;
    }
    L->upload_open = 0;   /* from here on every outcome ends the upload */
    if (esnn_link_crc32(0u, blob, L->up_total) != L->up_crc)
        return ESNN_LINK_E_UPLOAD_CRC;
    st = esnn_model_from_blob(blob, L->up_total, nm);
    if (st != ESNN_OK) {
        *detail = (uint32_t)st;
        return ESNN_LINK_E_MODEL;
    }
    need = state_need(nm);
    if (need > L->cfg.state_bytes) {
        *detail = need;
        return ESNN_LINK_E_STATE_TOO_BIG;
    }
    /* The new model is valid and its state fits. Binding resets the state memory for the new model
       (esnn_state_init checks it again: it cannot fail here); the old model's state is not needed any
       more. Then the switch: one assignment. */
    st = bind(L, nm);
    if (st != ESNN_OK) {
        (void)bind(L, L->model);   /* keep the old model running */
        clear_counts(L);
        *detail = (uint32_t)st;
        return ESNN_LINK_E_MODEL;
    }
    L->model = nm;
    L->active = s;
#ifdef ESNN_LINK_LEARN
    L->learning = 0;   /* an uploaded model does not learn (docs/protocol.md, LEARN) */
#endif
    clear_counts(L);
    for (k = 0; k < ESNN_HASH_BYTES; k++)
        put8(o, nm->hash != NULL ? nm->hash[k] : 0u);
    return 0;
}

static int32_t do_upload_abort(esnn_link_t *L, uint32_t len, uint32_t *detail)
{
    if (L->cfg.upload_capacity == 0u)
        return ESNN_LINK_E_UNSUPPORTED;
    if (len != 0u)
        MALFORMED(0);
    L->upload_open = 0;
    return 0;
}

/* ---- reading the model and its state */

static const uint32_t read_starts[] = {0u, 2u, 3u, 7u, 9u};   /* u16 layer, u8 which, u32 first, u16 count */

static int32_t do_read_weights(esnn_link_t *L, const uint8_t *p, uint32_t len, out_t *o, uint32_t *detail)
{
    const esnn_model_t *m = L->model;
    const int32_t *row;
    uint32_t layer, which, first, count, size, bpw, k, off;
    int32_t kind, e = check_size(len, read_starts, 5u, detail);
    if (e != 0)
        return e;
    layer = rd16(p);
    which = p[2];
    first = rd32(p + 3);
    count = rd16(p + 7);
    if (layer >= m->n_layers) {
        *detail = layer;
        return ESNN_LINK_E_ARGUMENT;
    }
    row = m->ltab + layer * ESNN_NL;
    kind = row[ESNN_L_KIND];
    if (which > 1u || kind == ESNN_SUMPOOL2D || kind == ESNN_FLATTEN
        || (which == 1u && kind != ESNN_RECURRENT)) {
        *detail = which;
        return ESNN_LINK_E_ARGUMENT;
    }
    /* the model check bounds every matrix inside its pool (< 2^32 weights) */
    if (which == 1u) {
        size = (uint32_t)row[ESNN_L_N_OUT] * (uint32_t)row[ESNN_L_N_OUT];
        off = (uint32_t)row[ESNN_L_WREC_OFF];
    } else if (kind == ESNN_CONV2D) {
        size = (uint32_t)row[ESNN_L_IN_C] * (uint32_t)row[ESNN_L_KH] * (uint32_t)row[ESNN_L_KW]
               * (uint32_t)row[ESNN_L_OUT_C];
        off = (uint32_t)row[ESNN_L_W_OFF];
    } else {
        size = (uint32_t)row[ESNN_L_N_IN] * (uint32_t)row[ESNN_L_N_OUT];
        off = (uint32_t)row[ESNN_L_W_OFF];
    }
    if ((uint64_t)first + count > size) {
        *detail = first;
        return ESNN_LINK_E_ARGUMENT;
    }
    bpw = row[ESNN_L_W_POOL] == 0 ? 1u : 2u;
    if (1u + (uint64_t)count * bpw > L->cfg.max_payload) {
        *detail = L->cfg.max_payload;
        return ESNN_LINK_E_REPLY_TOO_BIG;
    }
    put8(o, bpw);
    for (k = 0; k < count; k++) {
        if (bpw == 1u)
            put8(o, (uint32_t)(int32_t)m->wa[off + first + k] & 0xFFu);
        else
            put16(o, (uint32_t)(int32_t)m->wb[off + first + k] & 0xFFFFu);
    }
    return 0;
}

static int32_t do_read_state(esnn_link_t *L, const uint8_t *p, uint32_t len, out_t *o, uint32_t *detail)
{
    const esnn_model_t *m = L->model;
    const int32_t *vals = NULL;
    uint32_t layer, field, first, count, size, k;
    int32_t e = check_size(len, read_starts, 5u, detail);
    if (e != 0)
        return e;
    layer = rd16(p);
    field = p[2];
    first = rd32(p + 3);
    count = rd16(p + 7);
    if (layer >= m->n_layers) {
        *detail = layer;
        return ESNN_LINK_E_ARGUMENT;
    }
    if (field == 0u)
        vals = esnn_v(m, &L->state, layer);
    else if (field == 1u)
        vals = esnn_i(m, &L->state, layer);
    else if (field == 2u)
        vals = esnn_a(m, &L->state, layer);
    if (vals == NULL) {
        *detail = field;
        return ESNN_LINK_E_ARGUMENT;
    }
    size = esnn_layer_size(m, layer);
    if ((uint64_t)first + count > size) {
        *detail = first;
        return ESNN_LINK_E_ARGUMENT;
    }
    if (4u * count > L->cfg.max_payload) {
        *detail = L->cfg.max_payload;
        return ESNN_LINK_E_REPLY_TOO_BIG;
    }
    for (k = 0; k < count; k++)
        put32(o, (uint32_t)vals[first + k]);
    return 0;
}

/* ------------------------------------------------------------------ dispatch */

static void handle(esnn_link_t *L, uint32_t type, uint32_t seq, const uint8_t *p, uint32_t len)
{
    out_t o;
    int32_t err;
    uint32_t detail = 0;
    o.p = L->cfg.tx_buf + ESNN_LINK_HEADER_BYTES;
    o.n = 0;
    o.cap = L->cfg.max_payload;
    o.over = 0;
    switch (type) {
    case ESNN_MSG_HELLO: err = do_hello(L, len, &o, &detail); break;
    case ESNN_MSG_RESET: err = do_reset(L, len, &detail); break;
    case ESNN_MSG_STATS: err = do_stats(L, p, len, &o, &detail); break;
    case ESNN_MSG_ECHO: put_bytes(&o, p, len); err = 0; break;   /* len <= max_payload: it fits */
    case ESNN_MSG_STEP: err = do_step(L, p, len, &o, &detail); break;
    case ESNN_MSG_UPLOAD_BEGIN: err = do_upload_begin(L, p, len, &o, &detail); break;
    case ESNN_MSG_UPLOAD_CHUNK: err = do_upload_chunk(L, p, len, &o, &detail); break;
    case ESNN_MSG_UPLOAD_COMMIT: err = do_upload_commit(L, len, &o, &detail); break;
    case ESNN_MSG_UPLOAD_ABORT: err = do_upload_abort(L, len, &detail); break;
#ifdef ESNN_LINK_LEARN
    case ESNN_MSG_LEARN: err = do_learn(L, p, len, &o, &detail); break;
#else
    case ESNN_MSG_LEARN: err = ESNN_LINK_E_UNSUPPORTED; break;
#endif
    case ESNN_MSG_READ_WEIGHTS: err = do_read_weights(L, p, len, &o, &detail); break;
    case ESNN_MSG_READ_STATE: err = do_read_state(L, p, len, &o, &detail); break;
    default: err = ESNN_LINK_E_UNKNOWN; detail = type; break;
    }
    if (err == 0 && o.over) {
        err = ESNN_LINK_E_REPLY_TOO_BIG;
        detail = L->cfg.max_payload;
    }
    if (err != 0)
        send_error(L, type, seq, err, detail);
    else
        send_frame(L, type | ESNN_MSG_REPLY, seq, o.n);
}

/* ------------------------------------------------------------------ receiving */

static void rx_byte(esnn_link_t *L, uint8_t b);

/* The header is complete: check it and decide what to do with the rest of the frame. */
static void header_done(esnn_link_t *L)
{
    const uint8_t *h = L->hdr;
    uint32_t k;
    if (esnn_link_crc16(0xFFFFu, h + 2, 6u) != rd16(h + 8)) {
        /* Not a header we can trust: drop the first sync byte only and rescan the other nine bytes, in
           which a real frame may start. Nine bytes cannot complete a header, so this never recurses
           further than one level. */
        uint8_t again[ESNN_LINK_HEADER_BYTES - 1u];
        memcpy(again, h + 1, sizeof again);
        L->rx_phase = RX_SYNC0;
        for (k = 0; k < sizeof again; k++)
            rx_byte(L, again[k]);
        return;
    }
    L->frames++;
    L->pay_len = rd16(h + 6);
    L->pay_n = 0;
    L->trailer_n = 0;
    L->skip_error = 0;
    if (h[2] != ESNN_LINK_PROTOCOL)
        L->skip_error = ESNN_LINK_E_VERSION;
    else if (L->pay_len > L->cfg.max_payload)
        L->skip_error = ESNN_LINK_E_TOO_LONG;
    L->rx_phase = L->pay_len > 0u ? RX_PAYLOAD : RX_TRAILER;
}

/* The frame is complete (payload and trailer received or skipped). */
static void frame_done(esnn_link_t *L)
{
    const uint8_t *h = L->hdr;
    const uint32_t type = h[3], seq = rd16(h + 4);
    L->rx_phase = RX_SYNC0;
    if (L->skip_error == ESNN_LINK_E_VERSION) {
        send_error(L, type, seq, ESNN_LINK_E_VERSION, h[2]);
    } else if (L->skip_error == ESNN_LINK_E_TOO_LONG) {
        send_error(L, type, seq, ESNN_LINK_E_TOO_LONG, L->cfg.max_payload);
    } else {
        uint32_t crc = esnn_link_crc32(esnn_link_crc32(0u, h + 2, 8u), L->cfg.rx_buf, L->pay_len);
        if (crc != rd32(L->trailer))
            send_error(L, type, seq, ESNN_LINK_E_CRC, 0u);
        else
            handle(L, type, seq, L->cfg.rx_buf, L->pay_len);
    }
}

static void rx_byte(esnn_link_t *L, uint8_t b)
{
    switch (L->rx_phase) {
    case RX_SYNC0:
        if (b == ESNN_LINK_SYNC0) {
            L->hdr[0] = b;
            L->rx_phase = RX_SYNC1;
        }
        break;
    case RX_SYNC1:
        if (b == ESNN_LINK_SYNC1) {
            L->hdr[1] = b;
            L->hdr_n = 2;
            L->rx_phase = RX_HEADER;
        } else if (b != ESNN_LINK_SYNC0) {   /* 0xA5 0xA5: the second may start the frame */
            L->rx_phase = RX_SYNC0;
        }
        break;
    case RX_HEADER:
        L->hdr[L->hdr_n++] = b;
        if (L->hdr_n == ESNN_LINK_HEADER_BYTES)
            header_done(L);
        break;
    case RX_PAYLOAD:
        if (L->skip_error == 0)
            L->cfg.rx_buf[L->pay_n] = b;
        if (++L->pay_n == L->pay_len)
            L->rx_phase = RX_TRAILER;
        break;
    default:   /* RX_TRAILER */
        L->trailer[L->trailer_n++] = b;
        if (L->trailer_n == 4u)
            frame_done(L);
        break;
    }
}

void esnn_link_feed(esnn_link_t *link, const uint8_t *data, uint32_t n)
{
    uint32_t i = 0;
    if (link == NULL || (data == NULL && n > 0u))
        return;
    while (i < n) {
        if (link->rx_phase == RX_PAYLOAD) {
            /* a run of payload bytes at once: the common case for uploads and long steps */
            uint32_t k = link->pay_len - link->pay_n;
            if (k > n - i)
                k = n - i;
            if (link->skip_error == 0)
                memcpy(link->cfg.rx_buf + link->pay_n, data + i, k);
            link->pay_n += k;
            i += k;
            if (link->pay_n == link->pay_len)
                link->rx_phase = RX_TRAILER;
        } else {
            rx_byte(link, data[i++]);
        }
    }
}
