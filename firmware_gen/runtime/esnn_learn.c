/*
 * edgesnn on-device learning: see esnn_learn.h and docs/learning.md.
 *
 * Every kernel is a transcription of edgesnn/learning/rules.py in the order of
 * edgesnn/learning/learner.py (Learner.step, _layer_fixed), so the weights, traces and PRNG streams equal
 * the Python fixed-point learner's after every step. Rules kept here, as in edgesnn.c:
 *  - no right shift of a negative value: rs() floors with shifts of magnitudes (uint64);
 *  - no signed overflow: int64 products and sums that docs/learning.md bounds cannot overflow; the few it
 *    does not bound (STDP factors with a large regulariser, R-STDP rewards) are formed modulo 2^64 through
 *    uint64, which is what the emulator's int64 arithmetic does, and converted back without
 *    implementation-defined casts;
 *  - no float, no malloc, no library call (GCC may add memset / libgcc helpers on small cores).
 */
#include "esnn_learn.h"

#include <stddef.h>

#define I32_MAX 2147483647
#define I32_MIN (-2147483647 - 1)
#define I64_MAX 9223372036854775807LL
#define W_MAX 32767
#define ERR_MAX 32767
#define TRACE_ONE 256
#define PSI_ONE 256
#define PSI_BITS 8u
#define FB_BITS 6u

/* ------------------------------------------------------------------ the PRNG (docs/numerics.md) */

static uint32_t rotl32(uint32_t x, uint32_t k)
{
    return (x << k) | (x >> (32u - k));
}

uint32_t esnn_prng_next(uint32_t s[4])
{
    const uint32_t result = rotl32(s[1] * 5u, 7u) * 9u;
    const uint32_t t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl32(s[3], 11u);
    return result;
}

void esnn_prng_seed(uint32_t s[4], uint32_t seed, uint32_t stream)
{
    uint32_t x = seed ^ (stream * 0x632BE5ABu);
    int i;
    for (i = 0; i < 4; i++) {
        uint32_t z;
        x += 0x9E3779B9u;
        z = (x ^ (x >> 16)) * 0x85EBCA6Bu;
        z = (z ^ (z >> 13)) * 0xC2B2AE35u;
        s[i] = z ^ (z >> 16);
    }
    if (s[0] == 0u && s[1] == 0u && s[2] == 0u && s[3] == 0u)
        s[0] = 1u;
}

/* ------------------------------------------------------------------ integer helpers */

/* the int64 a uint64 stands for (two's complement), without an implementation-defined conversion */
static int64_t i64_of(uint64_t u)
{
    return u <= (uint64_t)I64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
}

/* a * b and a + b modulo 2^64 (exact whenever the true result fits int64, as the contract's bounds say) */
static int64_t mulw(int64_t a, int64_t b)
{
    return i64_of((uint64_t)a * (uint64_t)b);
}

static int64_t addw(int64_t a, int64_t b)
{
    return i64_of((uint64_t)a + (uint64_t)b);
}

/* the int32 an int64 stands for modulo 2^32 (stores of values the contract keeps inside int32) */
static int32_t i32_of(int64_t v)
{
    const uint32_t u = (uint32_t)(uint64_t)v;
    return u <= 0x7FFFFFFFu ? (int32_t)u : -(int32_t)(~u) - 1;
}

/* rs(a, k) = floor(a / 2^k), 0 <= k <= 62, shifting magnitudes only */
static int64_t rs(int64_t a, uint32_t k)
{
    uint64_t m, q;
    if (a >= 0)
        return (int64_t)((uint64_t)a >> k);
    m = 0u - (uint64_t)a;                            /* |a| <= 2^63 */
    q = (m + (((uint64_t)1 << k) - 1u)) >> k;        /* ceil(|a| / 2^k), no overflow: 2^k - 1 < 2^62 */
    return i64_of(0u - q);
}

static int64_t clip64(int64_t x, int64_t lo, int64_t hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

/* floor(a / n), n >= 1, dividing magnitudes only: ceil(|a| / n) = (|a| - 1) / n + 1 for a < 0 (no
   overflow). The 32-bit form serves int32 sums (one udiv on Cortex-M3/M4), the 64-bit form the int64
   membrane sums (libgcc's __aeabi_uldivmod on 32-bit cores: n_out divisions per trial). */
static int32_t floor_div32(int32_t a, uint32_t n)
{
    uint32_t m;
    if (a >= 0)
        return (int32_t)((uint32_t)a / n);
    m = 0u - (uint32_t)a;                            /* |a| <= 2^31 */
    return i32_of(-(int64_t)((m - 1u) / n + 1u));
}

static int64_t floor_div64(int64_t a, uint32_t n)
{
    uint64_t m;
    if (a >= 0)
        return (int64_t)((uint64_t)a / n);
    m = 0u - (uint64_t)a;                            /* |a| <= 2^63 */
    return i64_of(0u - ((m - 1u) / n + 1u));
}

static int16_t clip_w(int64_t x)
{
    return (int16_t)clip64(x, -W_MAX, W_MAX);
}

static int32_t decay(int32_t x, uint32_t d)
{
    return esnn_decay(x, d);
}

/* ------------------------------------------------------------------ kernels (rules.py) */

/* e_j = decay(e_j, D); then e_j = sat(e_j + 256) per event j of src[0..n) (repeats count) */
static void trace(int32_t *e, uint32_t n_e, uint32_t D, const int32_t *src, uint32_t n)
{
    uint32_t j;
    for (j = 0; j < n_e; j++)
        e[j] = decay(e[j], D);
    for (j = 0; j < n; j++)
        e[src[j]] = esnn_sat_add(e[src[j]], TRACE_ONE);
}

/* m_j += floor((e_j - m_j) / 2^cs); ec_j = e_j - m_j */
static void center(const int32_t *e, int32_t *m, uint32_t n, uint32_t cs, int32_t *ec)
{
    uint32_t j;
    for (j = 0; j < n; j++) {
        m[j] = i32_of((int64_t)m[j] + rs((int64_t)e[j] - (int64_t)m[j], cs));
        ec[j] = i32_of((int64_t)e[j] - (int64_t)m[j]);
    }
}

/* psi_i (Q8) of a spiking layer after its step (surrogate_fixed) */
static void surrogate(const int32_t *v, uint32_t n, const int32_t *spk, uint32_t n_spk, const int32_t *a_old,
                      int32_t theta, int reset_sub, uint32_t R, uint8_t *flag, int64_t *psi)
{
    uint32_t i;
    for (i = 0; i < n; i++)
        flag[i] = 0u;
    for (i = 0; i < n_spk; i++)
        flag[spk[i]] = 1u;
    for (i = 0; i < n; i++) {
        int64_t th = theta, u, m;
        if (a_old != NULL)
            th += a_old[i];
        if (flag[i] && !reset_sub)
            u = 0;
        else
            u = (int64_t)v[i] + (flag[i] ? (int64_t)theta : 0) - th;
        m = u < 0 ? -u : u;   /* |u| < 2^33 */
        if (m >= theta)
            psi[i] = 0;
        else
            psi[i] = (int64_t)(((uint64_t)(theta - m) * (uint64_t)R) >> 16);
    }
}

/* the error of one class: clip(tgt - v, +-32767), tgt = y1 for the label's class (is_label), else 0;
   hinge: one-sided. v is an int32 membrane or a trial's mean membrane (within int32 too). */
static int64_t class_error(int64_t v, int is_label, int32_t y1, int hinge)
{
    int64_t d = clip64((is_label ? (int64_t)y1 : 0) - v, -ERR_MAX, ERR_MAX);
    if (hinge)
        d = is_label ? (d > 0 ? d : 0) : (d < 0 ? d : 0);
    return d;
}

/* err_k = class_error(v_k, k == label); no label: 0 */
static void readout_error(const int32_t *v, uint32_t C, int32_t label, int32_t y1, int hinge, int64_t *err)
{
    uint32_t k;
    for (k = 0; k < C; k++)
        err[k] = label < 0 ? 0 : class_error(v[k], (int32_t)k == label, y1, hinge);
}

/* L_i = clip(floor(sum_k B[k, i] err_k / 2^6), +-(2^31 - 1)) */
static void project(const int8_t *B, uint32_t C, uint32_t n, const int64_t *err, int64_t *L)
{
    uint32_t i, k;
    for (i = 0; i < n; i++) {
        int64_t s = 0;
        for (k = 0; k < C; k++)
            s += (int64_t)B[k * n + i] * err[k];
        L[i] = clip64(rs(s, FB_BITS), -I32_MAX, I32_MAX);
    }
}

/* ETLP: L_i = floor(B[label, i] y1 / 2^6); no label: 0 */
static void target_signal(const int8_t *B, uint32_t n, int32_t label, int32_t y1, int64_t *L)
{
    uint32_t i;
    for (i = 0; i < n; i++)
        L[i] = label < 0 ? 0
                         : clip64(rs((int64_t)B[(uint32_t)label * n + i] * (int64_t)y1, FB_BITS), -I32_MAX, I32_MAX);
}

/* DECOLLE local readout: y_k = sat(decay(y_k, D) + sum over spikes i of G[k, i]) */
static void local_readout(int32_t *y, uint32_t C, uint32_t D, const int8_t *G, uint32_t n, const int32_t *spk,
                          uint32_t n_spk)
{
    uint32_t k, s;
    for (k = 0; k < C; k++) {
        int64_t acc = 0;
        for (s = 0; s < n_spk; s++)
            acc += G[k * n + (uint32_t)spk[s]];
        y[k] = esnn_sat_add(decay(y[k], D), (int32_t)clip64(acc, -I32_MAX, I32_MAX));
    }
}

/* rate trace and its regulariser greg (rate_reg_fixed) */
static void rate_reg(int32_t *q, uint32_t n, uint32_t D, const int32_t *spk, uint32_t n_spk, int32_t lo, int32_t hi,
                     uint32_t sh, int64_t *greg)
{
    uint32_t i;
    for (i = 0; i < n; i++)
        q[i] = decay(q[i], D);
    for (i = 0; i < n_spk; i++)
        q[spk[i]] = esnn_sat_add(q[spk[i]], TRACE_ONE);
    for (i = 0; i < n; i++) {
        const int64_t x = q[i];
        int64_t r = 0;
        if (lo >= 0 && x < lo)
            r = rs((int64_t)lo - x, sh);
        else if (hi >= 0 && x > hi)
            r = rs((int64_t)hi - x, sh);
        greg[i] = r;
    }
}

/* g_i = clip(floor(L_i psi_i / 2^8) + greg_i, +-(2^31 - 1)) */
static void gate(const int64_t *L, const int64_t *psi, const int64_t *greg, uint32_t n, int64_t *g)
{
    uint32_t i;
    for (i = 0; i < n; i++)
        g[i] = clip64(addw(rs(mulw(L[i], psi[i]), PSI_BITS), greg[i]), -I32_MAX, I32_MAX);
}

/* the three-factor update (update_fixed): for j ascending with e_j != 0, i ascending with g_i != 0:
   w[j n_out + i] = clip(w + floor((g_i e_j + r) / 2^k), +-32767), r = next >> (32 - k) (k = 0: no draw) */
static uint32_t update(int16_t *w, uint32_t n_out, const int32_t *e, uint32_t n_e, const int64_t *g, uint32_t k,
                       uint32_t rng[4], int32_t *nz)
{
    uint32_t m = 0, cnt = 0, i, j, t;
    int small = 1;
    for (i = 0; i < n_out; i++)
        if (g[i] != 0) {
            nz[m++] = (int32_t)i;
            if (g[i] < -I32_MAX || g[i] > I32_MAX)
                small = 0;
        }
    if (m == 0u)
        return 0u;
    if (small) {
        /* every factor in +-(2^31 - 1) (the gate of the three-factor rules always is): |g e| <= 2^62 - 2^31
           and r < 2^k <= 2^31, so p = g e + r lies in (-2^62, 2^62) and u = p + 2^62 in (0, 2^63): exact in
           uint64 and in int64 after the shift; floor(p / 2^k) = (u >> k) - 2^(62-k) since 2^62 is a multiple
           of 2^k. One 32x32->64 multiply and no branch, the same value as rs(). */
        const uint64_t bias = (uint64_t)1 << 62;
        const int64_t unbias = (int64_t)1 << (62u - k);
        for (j = 0; j < n_e; j++) {
            const int32_t ej = e[j];
            int16_t *row = w + j * n_out;
            if (ej == 0)
                continue;
            for (t = 0; t < m; t++) {
                const uint32_t ii = (uint32_t)nz[t];
                uint64_t u = (uint64_t)((int64_t)(int32_t)g[ii] * (int64_t)ej) + bias;
                int64_t d;
                if (k > 0u)
                    u += esnn_prng_next(rng) >> (32u - k);
                d = (int64_t)(u >> k) - unbias;
                row[ii] = clip_w((int64_t)row[ii] + d);
            }
            cnt += m;
        }
        return cnt;
    }
    for (j = 0; j < n_e; j++) {
        const int64_t ej = e[j];
        int16_t *row = w + j * n_out;
        if (ej == 0)
            continue;
        for (t = 0; t < m; t++) {
            const uint32_t ii = (uint32_t)nz[t];
            int64_t p = mulw(g[ii], ej);
            if (k > 0u)
                p = addw(p, (int64_t)(esnn_prng_next(rng) >> (32u - k)));
            row[ii] = clip_w(addw((int64_t)row[ii], rs(p, k)));
            cnt++;
        }
    }
    return cnt;
}

/* normalised rate: k = clip(k_base + ilog2(S), 0, 31), S = sum (|e_j| >> 4)^2 saturated at 2^62 */
static uint32_t nlms_k(const int32_t *e, uint32_t n, const int32_t *e2, uint32_t n2, uint32_t k_base)
{
    const uint64_t cap = (uint64_t)1 << 62;
    uint64_t S = 0;
    uint32_t j, lg = 0, k;
    for (j = 0; j < n + n2; j++) {
        const int32_t a = j < n ? e[j] : e2[j - n];
        const uint64_t m = (uint64_t)((a < 0 ? 0u - (uint32_t)a : (uint32_t)a) >> 4);
        S += m * m;
        if (S > cap)
            S = cap;
    }
    while (S > 1u) {
        S >>= 1;
        lg++;
    }
    k = k_base + lg;
    return k > ESNN_LEARN_K_MAX ? ESNN_LEARN_K_MAX : k;
}

/* x_j = 256 * (events of j in src[0..n)) */
static void counts(const int32_t *src, uint32_t n, int32_t *x, uint32_t n_x)
{
    uint32_t j;
    for (j = 0; j < n_x; j++)
        x[j] = 0;
    for (j = 0; j < n; j++)
        x[src[j]] += TRACE_ONE;   /* at most 65535 events of 256: no overflow */
}

/* R-STDP eligibility: c_ij = sat32(decay(c_ij, D) + g_ltp_i e_j + g_ltd_i x_j) */
static void eligibility(int32_t *c, uint32_t D, uint32_t n_out, const int32_t *e, const int32_t *x, uint32_t n_in,
                        const int64_t *g_ltp, const int64_t *g_ltd)
{
    uint32_t i, j;
    for (j = 0; j < n_in; j++) {
        const int64_t ej = e[j], xj = x[j];
        int32_t *row = c + j * n_out;
        for (i = 0; i < n_out; i++) {
            int64_t val = addw(addw((int64_t)decay(row[i], D), mulw(g_ltp[i], ej)), mulw(g_ltd[i], xj));
            row[i] = (int32_t)clip64(val, I32_MIN, I32_MAX);
        }
    }
}

/* w_ij = clip(w_ij + floor((R c_ij + r) / 2^k), +-32767) for j, i ascending with c_ij != 0 (R != 0) */
static uint32_t reward_update(int16_t *w, uint32_t n_out, const int32_t *c, uint32_t n_in, int64_t R, uint32_t k,
                              uint32_t rng[4])
{
    uint32_t s, cnt = 0;
    for (s = 0; s < n_in * n_out; s++) {
        int64_t p;
        if (c[s] == 0)
            continue;
        p = mulw(R, (int64_t)c[s]);
        if (k > 0u)
            p = addw(p, (int64_t)(esnn_prng_next(rng) >> (32u - k)));
        w[s] = clip_w(addw((int64_t)w[s], rs(p, k)));
        cnt++;
    }
    return cnt;
}

/* ------------------------------------------------------------------ set-up */

static const uint32_t default_k[ESNN_RULE_COUNT] = {12u, 14u, 14u, 14u, 18u, 26u};

int32_t esnn_learn_config_default(esnn_learn_config_t *cfg, int32_t rule, uint32_t seed)
{
    if (cfg == NULL || rule < 0 || rule >= ESNN_RULE_COUNT)
        return ESNN_ERR_ARG;
    cfg->rule = rule;
    cfg->seed = seed;
    cfg->y_one = 0;
    cfg->decolle_target = 512;
    cfg->a_plus = 4;
    cfg->a_minus = 3;
    cfg->d_post = 3896u << 12;   /* round(exp(-1/20) 4096), multiply form */
    cfg->d_elig = 4015u << 12;   /* round(exp(-1/50) 4096) */
    cfg->reg = 0;
    cfg->reg_lo = cfg->reg_hi = -1;
    cfg->reg_d = 0u;
    cfg->reg_shift = 0u;
    cfg->center = 0u;
    cfg->hinge = 0;
    cfg->nlms = 0;
    cfg->trial = 0u;
    return ESNN_OK;
}

uint32_t esnn_learn_sizeof(void)
{
    return (uint32_t)sizeof(esnn_learn_t);
}

/* The role of layer l under cfg (the Learner's __init__), or an error status (< ESNN_ROLE_NONE - 1 is
   never a role: errors are returned through *status). */
static int32_t role_of(const esnn_model_t *m, const esnn_learn_config_t *cfg, uint32_t l, int32_t *status)
{
    const int32_t *row = m->ltab + l * ESNN_NL;
    const int32_t *last = m->ltab + (m->n_layers - 1u) * ESNN_NL;
    const int readout_li = last[ESNN_L_NEURON] == ESNN_LI;
    int32_t role;
    if (row[ESNN_L_W_POOL] != 1)
        return ESNN_ROLE_NONE;   /* not plastic */
    if (row[ESNN_L_KIND] != ESNN_DENSE && row[ESNN_L_KIND] != ESNN_RECURRENT) {
        *status = ESNN_ERR_MODEL;   /* only Dense and Recurrent layers learn */
        return ESNN_ROLE_NONE;
    }
    if (row[ESNN_L_NEURON] == ESNN_LI)
        return l == m->n_layers - 1u ? ESNN_ROLE_READOUT : ESNN_ROLE_NONE;
    if (cfg->rule == ESNN_RULE_READOUT)
        return ESNN_ROLE_NONE;
    role = cfg->rule;   /* the rule numbers are the role numbers */
    if ((role == ESNN_ROLE_ETLP || role == ESNN_ROLE_EPROP) && !readout_li)
        *status = ESNN_ERR_MODEL;   /* the readout's error is the signal */
    return role;
}

static int cfg_ok(const esnn_learn_config_t *cfg)
{
    return cfg->rule >= 0 && cfg->rule < ESNN_RULE_COUNT && cfg->center <= 30u && cfg->trial <= 31u
           && cfg->reg_shift <= 62u
           && cfg->d_post <= (1u << 24) && cfg->d_elig <= (1u << 24) && cfg->reg_d <= (1u << 24);
}

/* the next n bytes of the buffer at *off (aligned to a), or NULL when only measuring */
static void *carve(uint8_t *base, uint64_t *off, uint64_t n, uint64_t a)
{
    void *p;
    *off = (*off + a - 1u) / a * a;
    p = base != NULL ? (void *)(base + *off) : NULL;
    *off += n;
    return p;
}

/* Lay the learner out in base (NULL: measure only). Returns the bytes needed, 0 on a refusal (*status). */
static uint64_t plan(const esnn_model_t *m, const esnn_learn_config_t *cfg, esnn_learn_t *lr, uint8_t *base,
                     int32_t *status)
{
    uint64_t off = 0;
    uint32_t l, C, width, xw = 1u, n_learn = 0;
    esnn_learn_layer_t *layers;
    *status = ESNN_OK;
    if (m == NULL || cfg == NULL || !cfg_ok(cfg)) {
        *status = ESNN_ERR_ARG;
        return 0u;
    }
    if (esnn_model_check(m) != ESNN_OK) {
        *status = ESNN_ERR_MODEL;
        return 0u;
    }
    C = esnn_n_outputs(m);
    width = m->width;
    for (l = 0; l < m->n_layers; l++) {
        const int32_t *row = m->ltab + l * ESNN_NL;
        if (role_of(m, cfg, l, status) != ESNN_ROLE_NONE) {
            const uint32_t n_in = (uint32_t)row[ESNN_L_N_IN], n_out = (uint32_t)row[ESNN_L_N_OUT];
            n_learn++;
            if (n_in > xw)
                xw = n_in;
            if (n_out > xw)
                xw = n_out;
        }
        if (*status != ESNN_OK)
            return 0u;
    }
    if (n_learn == 0u) {
        *status = ESNN_ERR_MODEL;   /* no plastic layer learns with this rule */
        return 0u;
    }
    layers = (esnn_learn_layer_t *)carve(base, &off, (uint64_t)m->n_layers * sizeof(esnn_learn_layer_t), 8u);
    if (lr != NULL) {
        lr->layers = layers;
        lr->n_classes = C;
        lr->width = width;
    }
    {
        int64_t *score = (int64_t *)carve(base, &off, 8u * C, 8u);
        int64_t *err = (int64_t *)carve(base, &off, 8u * C, 8u);
        int64_t *err2 = (int64_t *)carve(base, &off, 8u * C, 8u);
        int64_t *psi = (int64_t *)carve(base, &off, 8u * width, 8u);
        int64_t *L = (int64_t *)carve(base, &off, 8u * width, 8u);
        int64_t *greg = (int64_t *)carve(base, &off, 8u * width, 8u);
        int64_t *g = (int64_t *)carve(base, &off, 8u * width, 8u);
        int64_t *g2 = (int64_t *)carve(base, &off, 8u * width, 8u);
        int32_t *nz = (int32_t *)carve(base, &off, 4u * width, 4u);
        int32_t *x = (int32_t *)carve(base, &off, 4u * xw, 4u);
        uint8_t *flag = (uint8_t *)carve(base, &off, width, 1u);
        if (lr != NULL) {
            lr->score = score;
            lr->err = err;
            lr->err2 = err2;
            lr->psi = psi;
            lr->L = L;
            lr->greg = greg;
            lr->g = g;
            lr->g2 = g2;
            lr->nz = nz;
            lr->x = x;
            lr->flag = flag;
        }
    }
    for (l = 0; l < m->n_layers; l++) {
        const int32_t *row = m->ltab + l * ESNN_NL;
        const int32_t role = role_of(m, cfg, l, status);
        const uint32_t n_in = (uint32_t)row[ESNN_L_N_IN], n_out = (uint32_t)row[ESNN_L_N_OUT];
        const int rec = row[ESNN_L_KIND] == ESNN_RECURRENT;
        const int alif = row[ESNN_L_NEURON] == ESNN_ALIF;
        const int stdp = role == ESNN_ROLE_STDP || role == ESNN_ROLE_RSTDP;
        const int fb = role == ESNN_ROLE_ETLP || role == ESNN_ROLE_EPROP || role == ESNN_ROLE_DECOLLE;
        esnn_learn_layer_t *L = lr != NULL ? &lr->layers[l] : NULL;
        const int trial = role == ESNN_ROLE_READOUT && cfg->trial != 0u;
        int32_t *p[11];
        int64_t *vsum;
        int8_t *B;
        uint32_t sizes[11], k, q;
        if (role == ESNN_ROLE_NONE) {
            if (L != NULL) {
                L->role = ESNN_ROLE_NONE;
                L->on = 0;
            }
            continue;
        }
        sizes[0] = n_in;                                                  /* e */
        sizes[1] = rec ? n_out : 0u;                                      /* e_rec */
        sizes[2] = rec ? n_out : 0u;                                      /* prev */
        sizes[3] = stdp ? n_out : 0u;                                     /* y */
        sizes[4] = cfg->reg && role != ESNN_ROLE_READOUT ? n_out : 0u;    /* q */
        sizes[5] = role == ESNN_ROLE_DECOLLE ? C : 0u;                    /* y_loc */
        sizes[6] = role == ESNN_ROLE_READOUT && cfg->center ? n_in : 0u;  /* m */
        sizes[7] = alif ? n_out : 0u;                                     /* a_old */
        sizes[8] = role == ESNN_ROLE_RSTDP ? n_in * n_out : 0u;           /* c */
        sizes[9] = role == ESNN_ROLE_RSTDP && rec ? n_out * n_out : 0u;   /* c_rec */
        sizes[10] = trial ? n_in : 0u;                                    /* acc */
        for (k = 0; k < 11u; k++)
            p[k] = sizes[k] ? (int32_t *)carve(base, &off, 4u * (uint64_t)sizes[k], 4u) : NULL;
        vsum = trial ? (int64_t *)carve(base, &off, 8u * (uint64_t)n_out, 8u) : NULL;
        B = fb ? (int8_t *)carve(base, &off, (uint64_t)C * n_out, 1u) : NULL;
        if (L != NULL) {
            const int32_t *prm = m->ptab + l * ESNN_NP;
            L->role = role;
            L->on = 1;
            L->k = default_k[role];
            L->n_in = n_in;
            L->n_out = n_out;
            L->w_off = (uint32_t)row[ESNN_L_W_OFF];
            L->wrec_off = rec ? (uint32_t)row[ESNN_L_WREC_OFF] : 0u;
            L->recurrent = rec;
            L->alif = alif;
            L->reset_sub = row[ESNN_L_RESET] == ESNN_RESET_SUBTRACT;
            L->theta = prm[ESNN_P_THETA];
            L->R = prm[ESNN_P_THETA] > 0 ? (1u << 24) / (uint32_t)prm[ESNN_P_THETA] : 0u;
            L->D = (uint32_t)prm[ESNN_P_DV];
            esnn_prng_seed(L->rng, cfg->seed, ESNN_STREAM_LEARN + l);
            L->n_prev = 0u;
            L->e = p[0];
            L->e_rec = p[1];
            L->prev = p[2];
            L->y = p[3];
            L->q = p[4];
            L->y_loc = p[5];
            L->m = p[6];
            L->a_old = p[7];
            L->c = p[8];
            L->c_rec = p[9];
            L->acc = p[10];
            L->vsum = vsum;
            L->n_trial = 0u;   /* esnn_learn_reset (from init) clears acc and vsum */
            L->trial_label = ESNN_LEARN_NO_LABEL;
            L->B = B;
            if (B != NULL) {   /* the feedback matrix, drawn on the device: b = (next >> 25) - 64 */
                uint32_t s[4];
                esnn_prng_seed(s, cfg->seed, ESNN_STREAM_FEEDBACK + l);
                for (q = 0; q < C * n_out; q++)
                    B[q] = (int8_t)((int32_t)(esnn_prng_next(s) >> 25) - 64);
            }
            if (L->m != NULL)
                for (q = 0; q < n_in; q++)
                    L->m[q] = 0;
        }
    }
    return off;
}

uint32_t esnn_learn_bytes(const esnn_model_t *model, const esnn_learn_config_t *cfg)
{
    int32_t st;
    const uint64_t n = plan(model, cfg, NULL, NULL, &st);
    return st == ESNN_OK && n <= 0xFFFFFFFFu ? (uint32_t)n : 0u;
}

int32_t esnn_learn_init(esnn_learn_t *lr, const esnn_model_t *model, int16_t *wb, const esnn_learn_config_t *cfg,
                        void *buffer, uint32_t bytes)
{
    int32_t st;
    uint64_t need;
    if (lr == NULL || model == NULL || cfg == NULL || buffer == NULL)
        return ESNN_ERR_ARG;
    lr->model = NULL;
    if (((uintptr_t)buffer & 7u) != 0u)
        return ESNN_ERR_ARG;
    /* the plastic weights are written through wb: it must be the very pool the model reads */
    if (model->n_wb > 0u && (wb == NULL || (const int16_t *)wb != model->wb))
        return ESNN_ERR_ARG;
    need = plan(model, cfg, NULL, NULL, &st);
    if (st != ESNN_OK)
        return st;
    if (need > bytes)
        return ESNN_ERR_ARG;
    lr->cfg = *cfg;
    (void)plan(model, cfg, lr, (uint8_t *)buffer, &st);
    lr->model = model;
    lr->wb = wb;
    lr->n_layers = model->n_layers;
    lr->readout_li = model->ltab[(model->n_layers - 1u) * ESNN_NL + ESNN_L_NEURON] == ESNN_LI;
    lr->enabled = 1;
    lr->updates = 0u;
    esnn_learn_reset(lr, NULL);
    return ESNN_OK;
}

int32_t esnn_learn_model_copy(const esnn_model_t *src, esnn_model_t *dst, int16_t *wb, uint32_t n_wb)
{
    uint32_t k;
    if (src == NULL || dst == NULL || (wb == NULL && src->n_wb > 0u) || n_wb < src->n_wb)
        return ESNN_ERR_ARG;
    for (k = 0; k < src->n_wb; k++)
        wb[k] = src->wb[k];
    *dst = *src;
    dst->wb = wb;
    return ESNN_OK;
}

int16_t *esnn_learn_blob_wb(uint8_t *blob, uint32_t len, const esnn_model_t *model)
{
    uint32_t k;
    if (blob == NULL || model == NULL || model->wb == NULL)
        return NULL;
    /* find the offset by comparing addresses with each 2-byte position of the blob: no pointer
       subtraction across objects, no cast of a const pointer */
    for (k = 0; k + 2u * model->n_wb <= len; k += 2u)
        if ((const void *)(blob + k) == (const void *)model->wb)
            return (int16_t *)(void *)(blob + k);
    return NULL;
}

/* ------------------------------------------------------------------ trial mode (the readout) */

static void clear_trial(esnn_learn_layer_t *L)
{
    uint32_t k;
    for (k = 0; k < L->n_in; k++)
        L->acc[k] = 0;
    for (k = 0; k < L->n_out; k++)
        L->vsum[k] = 0;
    L->n_trial = 0u;
    L->trial_label = ESNN_LEARN_NO_LABEL;
}

/* The pending trial's update (Learner._end_trial_layer, rules.trial_means_fixed), then clear it:
   ebar_j = floor(acc_j / n), the running mean m_j += floor((ebar_j - m_j) / 2^center) (center 0: m = 0),
   ec_j = clip(ebar_j - m_j + floor(m_j / 2^trial), +-(2^31 - 1)); vbar_i = floor(vsum_i / n) and
   err_i = class_error(vbar_i, i == label); k (nlms: on ec); update(w, ec, err, k). Scratch: x (n_in,
   the readout's n_in <= its size) for ec, g (width >= n_classes) for err. */
static void end_trial_layer(esnn_learn_t *lr, esnn_learn_layer_t *L)
{
    const esnn_learn_config_t *cfg = &lr->cfg;
    const uint32_t n = L->n_trial;
    int32_t *ec = lr->x;
    int64_t *err = lr->g;
    uint32_t j, i, k = L->k;
    for (j = 0; j < L->n_in; j++) {
        const int64_t eb = floor_div32(L->acc[j], n);
        int64_t m = 0;
        if (cfg->center) {   /* between m_j and ebar_j: stays in int32 */
            m = (int64_t)L->m[j] + rs(eb - (int64_t)L->m[j], cfg->center);
            L->m[j] = i32_of(m);
        }
        ec[j] = (int32_t)clip64(eb - m + rs(m, cfg->trial), -I32_MAX, I32_MAX);
    }
    for (i = 0; i < L->n_out; i++)   /* the mean of int32 membranes is an int32 */
        err[i] = class_error(floor_div64(L->vsum[i], n), (int32_t)i == L->trial_label, cfg->y_one, cfg->hinge);
    if (cfg->nlms)
        k = nlms_k(ec, L->n_in, NULL, 0u, k);
    lr->updates += update(lr->wb + L->w_off, L->n_out, ec, L->n_in, err, k, L->rng, lr->nz);
    clear_trial(L);
}

/* A labelled step of the readout in trial mode (Learner._trial_step): another label first ends the
   pending trial; then acc_j = sat(acc_j + e_j), vsum_i += v_i (v: the readout's membrane after the
   step). Unlabelled steps leave the trial as it is. */
static void trial_step(esnn_learn_t *lr, esnn_learn_layer_t *L, const int32_t *v, int32_t label)
{
    uint32_t k;
    if (label < 0)
        return;
    if (L->n_trial != 0u && label != L->trial_label)
        end_trial_layer(lr, L);
    for (k = 0; k < L->n_in; k++)
        L->acc[k] = esnn_sat_add(L->acc[k], L->e[k]);
    for (k = 0; k < L->n_out; k++)   /* modulo 2^64 like the Learner's int64 (2^32 steps of int32 fit) */
        L->vsum[k] = addw(L->vsum[k], v[k]);
    if (L->n_trial < 0xFFFFFFFFu)   /* a trial of 2^32 - 1 steps (49 days at 1 kHz): the count stops there */
        L->n_trial++;
    L->trial_label = label;
}

int32_t esnn_learn_end_trial(esnn_learn_t *lr)
{
    uint32_t l;
    if (lr == NULL || lr->model == NULL)
        return ESNN_ERR_ARG;
    for (l = 0; l < lr->n_layers; l++) {
        esnn_learn_layer_t *L = &lr->layers[l];
        if (L->role != ESNN_ROLE_READOUT || lr->cfg.trial == 0u || L->n_trial == 0u)
            continue;
        if (lr->enabled && L->on)
            end_trial_layer(lr, L);
        clear_trial(L);
    }
    return ESNN_OK;
}

void esnn_learn_reset(esnn_learn_t *lr, esnn_state_t *state)
{
    uint32_t l, k;
    if (lr == NULL || lr->model == NULL)
        return;
    (void)esnn_learn_end_trial(lr);   /* the Learner's reset ends the pending trial first */
    if (state != NULL)
        esnn_reset(lr->model, state);
    for (l = 0; l < lr->n_layers; l++) {
        esnn_learn_layer_t *L = &lr->layers[l];
        if (L->role == ESNN_ROLE_NONE)
            continue;
        for (k = 0; k < L->n_in; k++)
            L->e[k] = 0;
        if (L->e_rec != NULL)
            for (k = 0; k < L->n_out; k++)
                L->e_rec[k] = 0;
        L->n_prev = 0u;
        if (L->y != NULL)
            for (k = 0; k < L->n_out; k++)
                L->y[k] = 0;
        if (L->q != NULL)
            for (k = 0; k < L->n_out; k++)
                L->q[k] = 0;
        if (L->y_loc != NULL)
            for (k = 0; k < lr->n_classes; k++)
                L->y_loc[k] = 0;
        if (L->c != NULL)
            for (k = 0; k < L->n_in * L->n_out; k++)
                L->c[k] = 0;
        if (L->c_rec != NULL)
            for (k = 0; k < L->n_out * L->n_out; k++)
                L->c_rec[k] = 0;
        if (L->role == ESNN_ROLE_READOUT && lr->cfg.trial != 0u)
            clear_trial(L);
    }
    for (k = 0; k < lr->n_classes; k++) {
        lr->score[k] = 0;
        lr->err[k] = 0;
    }
    lr->t = 0u;
}

/* ------------------------------------------------------------------ one step */

static void layer_stdp(esnn_learn_t *lr, esnn_learn_layer_t *L, const int32_t *src, uint32_t n_src,
                       const int32_t *spk, uint32_t n_spk, int32_t reward)
{
    const esnn_learn_config_t *cfg = &lr->cfg;
    int16_t *w = lr->wb + L->w_off;
    int16_t *wr = lr->wb + L->wrec_off;
    const uint32_t n = L->n_out;
    uint32_t i;
    trace(L->e, L->n_in, L->D, src, n_src);
    if (L->recurrent)
        trace(L->e_rec, n, L->D, L->prev, L->n_prev);
    for (i = 0; i < n; i++) {   /* g_ltp = a_plus s_i, g_ltd = -a_minus y_i (y before this step) */
        lr->g[i] = 0;
        lr->g2[i] = -(int64_t)cfg->a_minus * (int64_t)L->y[i];
    }
    for (i = 0; i < n_spk; i++)
        lr->g[spk[i]] = cfg->a_plus;
    if (cfg->reg) {
        rate_reg(L->q, n, cfg->reg_d, spk, n_spk, cfg->reg_lo, cfg->reg_hi, cfg->reg_shift, lr->greg);
        for (i = 0; i < n; i++)
            lr->g[i] = addw(lr->g[i], lr->greg[i]);
    }
    counts(src, n_src, lr->x, L->n_in);
    if (L->role == ESNN_ROLE_STDP) {
        lr->updates += update(w, n, L->e, L->n_in, lr->g, L->k, L->rng, lr->nz);
        lr->updates += update(w, n, lr->x, L->n_in, lr->g2, L->k, L->rng, lr->nz);
        if (L->recurrent) {
            lr->updates += update(wr, n, L->e_rec, n, lr->g, L->k, L->rng, lr->nz);
            counts(L->prev, L->n_prev, lr->x, n);
            lr->updates += update(wr, n, lr->x, n, lr->g2, L->k, L->rng, lr->nz);
        }
    } else {
        eligibility(L->c, cfg->d_elig, n, L->e, lr->x, L->n_in, lr->g, lr->g2);
        if (L->recurrent) {
            counts(L->prev, L->n_prev, lr->x, n);
            eligibility(L->c_rec, cfg->d_elig, n, L->e_rec, lr->x, n, lr->g, lr->g2);
        }
        if (reward != 0) {
            lr->updates += reward_update(w, n, L->c, L->n_in, reward, L->k, L->rng);
            if (L->recurrent)
                lr->updates += reward_update(wr, n, L->c_rec, n, reward, L->k, L->rng);
        }
    }
    trace(L->y, n, cfg->d_post, spk, n_spk);   /* post trace after this step's updates */
}

static void layer_three_factor(esnn_learn_t *lr, esnn_learn_layer_t *L, uint32_t l, esnn_state_t *state,
                               const int32_t *src, uint32_t n_src, const int32_t *spk, uint32_t n_spk,
                               int32_t label)
{
    const esnn_learn_config_t *cfg = &lr->cfg;
    const uint32_t n = L->n_out;
    const int32_t *e;
    uint32_t i, k = L->k;
    trace(L->e, L->n_in, L->D, src, n_src);
    if (L->recurrent)
        trace(L->e_rec, n, L->D, L->prev, L->n_prev);
    if (L->role == ESNN_ROLE_READOUT && cfg->trial != 0u) {   /* trial mode: no update every step */
        trial_step(lr, L, esnn_v(lr->model, state, l), label);
        return;
    }
    if (L->role == ESNN_ROLE_READOUT) {
        for (i = 0; i < n; i++) {
            lr->L[i] = lr->err[i];
            lr->psi[i] = PSI_ONE;
        }
    } else {
        surrogate(esnn_v(lr->model, state, l), n, spk, n_spk, L->alif ? L->a_old : NULL, L->theta, L->reset_sub,
                  L->R, lr->flag, lr->psi);
        if (L->role == ESNN_ROLE_EPROP) {
            project(L->B, lr->n_classes, n, lr->err, lr->L);
        } else if (L->role == ESNN_ROLE_ETLP) {
            target_signal(L->B, n, label, cfg->y_one, lr->L);
        } else {   /* DECOLLE */
            local_readout(L->y_loc, lr->n_classes, L->D, L->B, n, spk, n_spk);
            readout_error(L->y_loc, lr->n_classes, label, cfg->decolle_target, 0, lr->err2);
            project(L->B, lr->n_classes, n, lr->err2, lr->L);
        }
    }
    for (i = 0; i < n; i++)
        lr->greg[i] = 0;
    if (cfg->reg && L->q != NULL)
        rate_reg(L->q, n, cfg->reg_d, spk, n_spk, cfg->reg_lo, cfg->reg_hi, cfg->reg_shift, lr->greg);
    gate(lr->L, lr->psi, lr->greg, n, lr->g);
    e = L->e;
    if (cfg->center && L->role == ESNN_ROLE_READOUT) {
        center(L->e, L->m, L->n_in, cfg->center, lr->x);
        e = lr->x;
    }
    if (cfg->nlms)
        k = nlms_k(e, L->n_in, L->recurrent ? L->e_rec : NULL, L->recurrent ? n : 0u, k);
    lr->updates += update(lr->wb + L->w_off, n, e, L->n_in, lr->g, k, L->rng, lr->nz);
    if (L->recurrent)
        lr->updates += update(lr->wb + L->wrec_off, n, L->e_rec, n, lr->g, k, L->rng, lr->nz);
}

int32_t esnn_learn_step(esnn_learn_t *lr, esnn_state_t *state, const int32_t *events, uint32_t n_events,
                        int32_t label, int32_t reward)
{
    const esnn_model_t *m;
    uint32_t l, k, last, C;
    int32_t st;
    if (lr == NULL || lr->model == NULL || state == NULL || state->model != lr->model)
        return ESNN_ERR_ARG;
    m = lr->model;
    C = lr->n_classes;
    last = m->n_layers - 1u;
    if (label >= (int32_t)C)
        return ESNN_ERR_ARG;
    if (label < 0)
        label = ESNN_LEARN_NO_LABEL;
    /* the adaptation before the step, for the surrogate of ALIF layers that learn */
    for (l = 0; l < lr->n_layers; l++) {
        esnn_learn_layer_t *L = &lr->layers[l];
        if (L->role != ESNN_ROLE_NONE && L->alif && lr->enabled && L->on) {
            const int32_t *a = esnn_a(m, state, l);
            for (k = 0; k < L->n_out; k++)
                L->a_old[k] = a[k];
        }
    }
    st = esnn_step(m, state, events, n_events);
    if (st != ESNN_OK)
        return st;
    if (lr->readout_li) {
        const int32_t *v = esnn_v(m, state, last);
        for (k = 0; k < C; k++)
            lr->score[k] += v[k];
    } else {
        uint32_t n_out;
        const int32_t *out = esnn_spikes(m, state, last, &n_out);
        for (k = 0; k < n_out; k++)
            lr->score[out[k]] += 1;
    }
    lr->t++;
    if (!lr->enabled)
        return ESNN_OK;
    if (lr->readout_li)
        readout_error(esnn_v(m, state, last), C, label, lr->cfg.y_one, lr->cfg.hinge, lr->err);
    if (reward == ESNN_LEARN_REWARD_AUTO) {
        reward = 0;
        if (label >= 0) {   /* +1 when the argmax (first maximum) of the score is the label */
            uint32_t best = 0;
            for (k = 1; k < C; k++)
                if (lr->score[k] > lr->score[best])
                    best = k;
            reward = (int32_t)best == label ? 1 : -1;
        }
    }
    for (l = 0; l < lr->n_layers; l++) {
        esnn_learn_layer_t *L = &lr->layers[l];
        const int32_t *src, *spk = NULL;
        uint32_t n_src, n_spk = 0;
        if (L->role == ESNN_ROLE_NONE || !L->on)
            continue;
        if (l == 0u) {
            src = events;
            n_src = n_events;
        } else {
            src = esnn_spikes(m, state, l - 1u, &n_src);
        }
        if (m->ltab[l * ESNN_NL + ESNN_L_NEURON] != ESNN_LI)
            spk = esnn_spikes(m, state, l, &n_spk);
        if (L->role == ESNN_ROLE_STDP || L->role == ESNN_ROLE_RSTDP)
            layer_stdp(lr, L, src, n_src, spk, n_spk, reward);
        else
            layer_three_factor(lr, L, l, state, src, n_src, spk, n_spk, label);
        if (L->recurrent) {
            for (k = 0; k < n_spk; k++)
                L->prev[k] = spk[k];
            L->n_prev = n_spk;
        }
    }
    return ESNN_OK;
}

int32_t esnn_learn_weight_decay(esnn_learn_t *lr, uint32_t kd)
{
    uint32_t l, s;
    if (lr == NULL || lr->model == NULL || kd > 31u)
        return ESNN_ERR_ARG;
    if (kd == 0u || !lr->enabled)
        return ESNN_OK;
    for (l = 0; l < lr->n_layers; l++) {
        esnn_learn_layer_t *L = &lr->layers[l];
        int16_t *w = lr->wb + L->w_off;
        if (L->role != ESNN_ROLE_READOUT || !L->on)
            continue;
        for (s = 0; s < L->n_in * L->n_out; s++) {
            const int64_t p = (int64_t)w[s] + (int64_t)(esnn_prng_next(L->rng) >> (32u - kd));
            w[s] = (int16_t)((int64_t)w[s] - rs(p, kd));   /* |w - floor((w + r) / 2^kd)| <= |w| */
        }
    }
    return ESNN_OK;
}

/* ------------------------------------------------------------------ control and access */

static esnn_learn_layer_t *learning_layer(const esnn_learn_t *lr, uint32_t layer)
{
    if (lr == NULL || lr->model == NULL)
        return NULL;
    if (layer == ESNN_LAST_LAYER)
        layer = lr->n_layers - 1u;
    if (layer >= lr->n_layers || lr->layers[layer].role == ESNN_ROLE_NONE)
        return NULL;
    return &lr->layers[layer];
}

int32_t esnn_learn_set_eta(esnn_learn_t *lr, uint32_t layer, uint32_t k)
{
    esnn_learn_layer_t *L = learning_layer(lr, layer);
    if (L == NULL || k > ESNN_LEARN_K_MAX)
        return ESNN_ERR_ARG;
    L->k = k;
    return ESNN_OK;
}

int32_t esnn_learn_set_mask(esnn_learn_t *lr, uint32_t layer, int32_t on)
{
    esnn_learn_layer_t *L = learning_layer(lr, layer);
    if (L == NULL)
        return ESNN_ERR_ARG;
    L->on = on != 0;
    return ESNN_OK;
}

void esnn_learn_enable(esnn_learn_t *lr, int32_t on)
{
    if (lr != NULL)
        lr->enabled = on != 0;
}

int32_t esnn_learn_role(const esnn_learn_t *lr, uint32_t layer)
{
    const esnn_learn_layer_t *L = learning_layer(lr, layer);
    return L != NULL ? L->role : ESNN_ROLE_NONE;
}

const int32_t *esnn_learn_layer_state(const esnn_learn_t *lr, uint32_t layer, int32_t which, uint32_t *count)
{
    const esnn_learn_layer_t *L = learning_layer(lr, layer);
    const int32_t *p = NULL;
    uint32_t n = 0;
    if (L != NULL) {
        switch (which) {
        case ESNN_LS_TRACE: p = L->e; n = L->n_in; break;
        case ESNN_LS_TRACE_REC: p = L->e_rec; n = L->n_out; break;
        case ESNN_LS_POST: p = L->y; n = L->n_out; break;
        case ESNN_LS_RATE: p = L->q; n = L->n_out; break;
        case ESNN_LS_LOCAL: p = L->y_loc; n = lr->n_classes; break;
        case ESNN_LS_MEAN: p = L->m; n = L->n_in; break;
        case ESNN_LS_ELIG: p = L->c; n = L->n_in * L->n_out; break;
        case ESNN_LS_ELIG_REC: p = L->c_rec; n = L->n_out * L->n_out; break;
        case ESNN_LS_TRIAL: p = L->acc; n = L->n_in; break;
        default: break;
        }
    }
    if (p == NULL)
        n = 0;
    if (count != NULL)
        *count = n;
    return p;
}

const int8_t *esnn_learn_feedback(const esnn_learn_t *lr, uint32_t layer)
{
    const esnn_learn_layer_t *L = learning_layer(lr, layer);
    return L != NULL ? L->B : NULL;
}
