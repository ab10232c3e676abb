/*
 * edgesnn C runtime: see edgesnn.h and docs/c_runtime.md.
 *
 * Every operation follows docs/numerics.md in the order of edgesnn/kernels (network.py, synapses.py,
 * neurons.py), so spikes and every state value equal the emulator's at every step. Rules kept here:
 *  - no right shift of a negative value, no signed overflow: magnitudes are unsigned, sums that can
 *    leave int32 are int64 or modular uint32 tested for overflow, and synaptic accumulators are uint32
 *    (modular, like the emulator's int32 array, so even the sums the contract bounds away would wrap
 *    the same way);
 *  - no float, no malloc; no library calls in the source but memcpy (a 4-byte load, the int16 lanes) in
 *    the SIMD rows, and the ACLE intrinsics (SXTAB16, QADD) where the DSP extension is.
 *    GCC may add memset for the zeroing loops and, on ARMv6-M, integer division and 64-bit multiply
 *    helpers (libgcc).
 */
#include "edgesnn.h"

#include <stddef.h>

#define I32_MAX 2147483647
#define I32_MIN (-2147483647 - 1)
#define Q24_ONE (1u << 24)
#define ROWS_PER_INT16 256u   /* 256 * 127 = 32512 <= 32767: an int16 lane cannot overflow */
#define MAX_FAN_IN_INT16 65535u
#define MAX_DIM 65535         /* conv / pool sizes, kernels, strides, padding: int32 index math is safe */
#define ESNN_MAX_LAYERS 256u  /* keeps the O(L^2) overlap check of esnn_model_check short */

/* a function specialised at each call (constant arguments fold away); only a hint elsewhere */
#if defined(__GNUC__) || defined(__clang__)
#define ESNN_INLINE inline __attribute__((always_inline))
#define ESNN_NOINLINE __attribute__((noinline))   /* a hot loop with the registers to itself */
#else
#define ESNN_INLINE inline
#define ESNN_NOINLINE
#endif

/* Cortex-M0/M0+ (ARMv6-M) have no 32x32->64 multiply: use the exact 32-bit form there by default. */
#ifndef ESNN_DECAY_32BIT
#if defined(__ARM_ARCH_6M__)
#define ESNN_DECAY_32BIT 1
#else
#define ESNN_DECAY_32BIT 0
#endif
#endif

/* ------------------------------------------------------------------ arithmetic of the contract */

/* floor(m * q / 2^24) for m <= 2^31, q <= 2^24 (both decay forms reduce to this exactly). */
static uint32_t mul_q24(uint32_t m, uint32_t q)
{
#if ESNN_DECAY_32BIT
    /* m = mh 2^16 + ml, q = qh 2^12 + ql: m q = A 2^28 + B 2^16 + C 2^12 + E with every partial product
       below 2^28; the parts at or above 2^24 are taken out whole, the rest (< 2^29) floored once. */
    uint32_t mh = m >> 16, ml = m & 0xFFFFu, qh = q >> 12, ql = q & 0xFFFu;
    uint32_t A = mh * qh, B = mh * ql, C = ml * qh, E = ml * ql;
    uint32_t rest = ((B & 0xFFu) << 16) + ((C & 0xFFFu) << 12) + E;
    return (A << 4) + (B >> 8) + (C >> 12) + (rest >> 24);
#else
    return (uint32_t)(((uint64_t)m * q) >> 24);
#endif
}

/* sign(x) * floor(|x| q / 2^24): rounds toward zero, never grows, never flips sign. */
static int32_t decay(int32_t x, uint32_t q)
{
    uint32_t r;
    if (x >= 0)
        return (int32_t)mul_q24((uint32_t)x, q);   /* <= x */
    r = mul_q24(0u - (uint32_t)x, q);              /* |x| <= 2^31, so r <= 2^31 */
    return r == 0u ? 0 : -(int32_t)(r - 1u) - 1;   /* -r without overflow at r = 2^31 */
}

/* the int32 a modular uint32 sum stands for (two's complement), without implementation-defined casts */
static int32_t as_i32(uint32_t u)
{
    return u <= 0x7FFFFFFFu ? (int32_t)u : -(int32_t)(~u) - 1;
}

/* min(max(a + b, -2^31), 2^31 - 1): the modular sum, unless it overflowed (both operands' sign differs
   from the sum's), then the bound on the operands' side; no 64-bit compare */
static int32_t sat_add(int32_t a, int32_t b)
{
    const uint32_t s = (uint32_t)a + (uint32_t)b;
    if (((((uint32_t)a ^ s) & ((uint32_t)b ^ s)) >> 31) != 0u)
        return a < 0 ? I32_MIN : I32_MAX;
    return as_i32(s);
}

int32_t esnn_decay(int32_t x, uint32_t q24)
{
    return decay(x, q24 > Q24_ONE ? Q24_ONE : q24);
}

int32_t esnn_sat_add(int32_t a, int32_t b)
{
    return sat_add(a, b);
}

/* ------------------------------------------------------------------ synaptic input */

/* acc[:] += sum of rows src[0..n) of the input-major int8 matrix w (n_out per row). Any grouping of the
   exact sum gives the same result (and the accumulator is modular anyway). Two implementations:
   - portable: four rows per pass straight into the uint32 accumulator (on a Cortex-M4 ~2.5 instructions
     per synapse: 4 LDRSB, 3 ADD, LDR/ADD/STR of the accumulator per output and 4 rows);
   - packed SIMD (ESNN_SIMD, default where the DSP extension is: Cortex-M4/M7/M33): four outputs per
     32-bit load, sign-extended and added two int16 lanes at a time with SXTAB16 into partial sums of at
     most 256 rows (256 * 127 <= 32767: a lane cannot overflow), flushed into the accumulator; ~1.5
     instructions per synapse. With ESNN_SIMD=1 on a host without the DSP extension, SXTAB16 is emulated
     in portable C, so the host tests run the very same lane arithmetic. The ROR of the odd lanes is
   one instruction GCC does not fold into SXTAB16's rotate operand (inline asm could). */
#ifndef ESNN_SIMD
#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_UNALIGNED) && defined(__ARM_ARCH_7EM__)
#define ESNN_SIMD 1
#elif defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_UNALIGNED) && defined(__ARM_ARCH_8M_MAIN__)
#define ESNN_SIMD 1
#else
#define ESNN_SIMD 0
#endif
#endif

#if ESNN_SIMD
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ESNN_SIMD assumes a little-endian target (output o of a row is byte o % 4 of a word)"
#endif
#include <string.h>
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#define SXTAB16(a, b) __sxtab16((a), (b))
#else
/* the lanes of x: byte 0 (2) sign-extended, as a uint32 modulo 2^32 */
static uint32_t sext8(uint32_t x)
{
    return ((x & 0xFFu) ^ 0x80u) - 0x80u;
}

/* SXTAB16: each int16 lane of a plus the sign-extended byte 0 (lane 0) or byte 2 (lane 1) of b */
static uint32_t SXTAB16(uint32_t a, uint32_t b)
{
    return ((a + sext8(b)) & 0xFFFFu) | (((a >> 16) + sext8(b >> 16)) & 0xFFFFu) << 16;
}
#endif

/* bytes 1 and 3 to where SXTAB16 reads (0 and 2) */
#define ROR8(x) (((x) >> 8) | ((x) << 24))

static uint32_t load4(const int8_t *p)
{
    uint32_t w;
    memcpy(&w, p, 4);   /* one unaligned LDR on a Cortex-M4 */
    return w;
}

/* acc[0..3] += the int16 lanes of two packed sums: even = (0, 2), odd = (1, 3). The lanes are read
   through memcpy as int16_t (exact: int16_t is two's complement; little-endian is checked above), which
   GCC turns into SXTAH and ADD ..., ASR #16: two instructions a lane less than masking them out. */
static void add_lanes(uint32_t *acc, uint32_t even, uint32_t odd)
{
    int16_t e[2], o[2];
    memcpy(e, &even, 4);
    memcpy(o, &odd, 4);
    acc[0] += (uint32_t)(int32_t)e[0];
    acc[1] += (uint32_t)(int32_t)o[0];
    acc[2] += (uint32_t)(int32_t)e[1];
    acc[3] += (uint32_t)(int32_t)o[1];
}

/* output o of the first c rows of r0..r3 */
static ESNN_INLINE int32_t col(const int8_t *r0, const int8_t *r1, const int8_t *r2, const int8_t *r3,
                               uint32_t c, uint32_t o)
{
    int32_t x = r0[o];
    if (c > 1u)
        x += r1[o];
    if (c > 2u)
        x += r2[o];
    if (c > 3u)
        x += r3[o];
    return x;
}

/* the last n_out - o < 4 outputs (those of no 4-byte block) of c rows: straight code, no loop, since in
   narrow layers (11 outputs: 3 of them) a loop's overhead would cost as much as the adds */
static ESNN_INLINE void tail_rows(const int8_t *r0, const int8_t *r1, const int8_t *r2, const int8_t *r3,
                                  uint32_t c, uint32_t o, uint32_t n_out, uint32_t *acc)
{
    if (o < n_out) {
        acc[o] += (uint32_t)col(r0, r1, r2, r3, c, o);
        if (o + 1u < n_out) {
            acc[o + 1u] += (uint32_t)col(r0, r1, r2, r3, c, o + 1u);
            if (o + 2u < n_out)
                acc[o + 2u] += (uint32_t)col(r0, r1, r2, r3, c, o + 2u);
        }
    }
}

/* Few rows (c = 1..4 of r0..r3; the unused pointers repeat r0 and are not read): the partial sums of
   each block of 4 outputs stay in registers and go straight into the accumulator, so there is no part[]
   to clear, load, store and flush. For few events per step this halves a small layer's synaptic cost. */
static ESNN_INLINE void rows_i8_few(const int8_t *r0, const int8_t *r1, const int8_t *r2, const int8_t *r3,
                                    uint32_t c, uint32_t n_out, uint32_t *acc)
{
    const uint32_t nb = n_out / 4u;
    uint32_t b;
    for (b = 0; b < nb; b++) {
        uint32_t x = load4(r0 + 4u * b), even = SXTAB16(0u, x), odd = SXTAB16(0u, ROR8(x));
        if (c > 1u) {
            x = load4(r1 + 4u * b);
            even = SXTAB16(even, x);
            odd = SXTAB16(odd, ROR8(x));
        }
        if (c > 2u) {
            x = load4(r2 + 4u * b);
            even = SXTAB16(even, x);
            odd = SXTAB16(odd, ROR8(x));
        }
        if (c > 3u) {
            x = load4(r3 + 4u * b);
            even = SXTAB16(even, x);
            odd = SXTAB16(odd, ROR8(x));
        }
        add_lanes(acc + 4u * b, even, odd);
    }
    tail_rows(r0, r1, r2, r3, c, 4u * nb, n_out, acc);
}

/* below this many rows the register form (rows_i8_few, one accumulator pass per 4 rows) beats the
   packed partial sums (one clear and one flush of part[] per call): measured on QEMU's Cortex-M4 */
#define FEW_ROWS 16u

/* Narrow layers (4..11 outputs: nb = 1 or 2 blocks, then t = 0..3 outputs): every partial sum stays in a
   register across all the rows, so a row costs its pointer, nb word loads with their SXTAB16 pairs and
   t byte loads and adds; the int16 lanes are flushed every 256 rows. Specialised per (nb, t). */
static ESNN_INLINE void rows_i8_narrow(const int8_t *w, uint32_t n_out, uint32_t nb, uint32_t t,
                                       const int32_t *src, uint32_t n, uint32_t *acc)
{
    const uint32_t o = 4u * nb;   /* the first output of the tail */
    const int32_t *end = src + n;
    while (src != end) {
        const int32_t *stop = end - src > (ptrdiff_t)ROWS_PER_INT16 ? src + ROWS_PER_INT16 : end;
        uint32_t e0 = 0, o0 = 0, e1 = 0, o1 = 0;
        int32_t t0 = 0, t1 = 0, t2 = 0;
        for (; src != stop; src++) {   /* a pointer, no counter: one register fewer (no spill) */
            const int8_t *r = w + (uint32_t)*src * n_out;
            uint32_t x = load4(r);
            e0 = SXTAB16(e0, x);
            o0 = SXTAB16(o0, ROR8(x));
            if (nb > 1u) {
                x = load4(r + 4);
                e1 = SXTAB16(e1, x);
                o1 = SXTAB16(o1, ROR8(x));
            }
            if (t > 0u)
                t0 += r[o];
            if (t > 1u)
                t1 += r[o + 1u];
            if (t > 2u)
                t2 += r[o + 2u];
        }
        add_lanes(acc, e0, o0);
        if (nb > 1u)
            add_lanes(acc + 4, e1, o1);
        if (t > 0u)
            acc[o] += (uint32_t)t0;
        if (t > 1u)
            acc[o + 1u] += (uint32_t)t1;
        if (t > 2u)
            acc[o + 2u] += (uint32_t)t2;
    }
}

static void rows_i8(const int8_t *w, uint32_t n_out, const int32_t *src, uint32_t n, uint32_t *acc,
                    uint32_t *part)
{
    const uint32_t nb = n_out / 4u, tail = 4u * nb;   /* blocks of 4 outputs; the rest one by one */
    uint32_t k = 0, b;
    if (n_out >= 4u && n_out <= 11u) {
        /* constant (nb, t) per (inlined) call: each copy is straight code */
        switch (n_out) {
        case 4u: rows_i8_narrow(w, n_out, 1u, 0u, src, n, acc); break;
        case 5u: rows_i8_narrow(w, n_out, 1u, 1u, src, n, acc); break;
        case 6u: rows_i8_narrow(w, n_out, 1u, 2u, src, n, acc); break;
        case 7u: rows_i8_narrow(w, n_out, 1u, 3u, src, n, acc); break;
        case 8u: rows_i8_narrow(w, n_out, 2u, 0u, src, n, acc); break;
        case 9u: rows_i8_narrow(w, n_out, 2u, 1u, src, n, acc); break;
        case 10u: rows_i8_narrow(w, n_out, 2u, 2u, src, n, acc); break;
        default: rows_i8_narrow(w, n_out, 2u, 3u, src, n, acc); break;
        }
        return;
    }
    if (n < FEW_ROWS) {
        for (; k < n; k += 4u) {
            const uint32_t c = n - k < 4u ? n - k : 4u;
            const int8_t *r0 = w + (uint32_t)src[k] * n_out;
            const int8_t *r1 = c > 1u ? w + (uint32_t)src[k + 1u] * n_out : r0;
            const int8_t *r2 = c > 2u ? w + (uint32_t)src[k + 2u] * n_out : r0;
            const int8_t *r3 = c > 3u ? w + (uint32_t)src[k + 3u] * n_out : r0;
            /* a constant row count per (inlined) call: each copy is compiled without the tests */
            if (c == 4u)
                rows_i8_few(r0, r1, r2, r3, 4u, n_out, acc);
            else if (c == 3u)
                rows_i8_few(r0, r1, r2, r3, 3u, n_out, acc);
            else if (c == 2u)
                rows_i8_few(r0, r1, r2, r3, 2u, n_out, acc);
            else
                rows_i8_few(r0, r1, r2, r3, 1u, n_out, acc);
        }
        return;
    }
    while (k < n) {
        const uint32_t stop = n - k > ROWS_PER_INT16 ? k + ROWS_PER_INT16 : n;
        /* part[2b]: lanes (4b, 4b + 2); part[2b + 1]: lanes (4b + 1, 4b + 3) */
        for (b = 0; b < 2u * nb; b++)
            part[b] = 0;
        for (; k + 4u <= stop; k += 4u) {   /* four rows per pass: the partial sums move once */
            const int8_t *r0 = w + (uint32_t)src[k] * n_out;
            const int8_t *r1 = w + (uint32_t)src[k + 1u] * n_out;
            const int8_t *r2 = w + (uint32_t)src[k + 2u] * n_out;
            const int8_t *r3 = w + (uint32_t)src[k + 3u] * n_out;
            for (b = 0; b < nb; b++) {
                const uint32_t x0 = load4(r0 + 4u * b), x1 = load4(r1 + 4u * b);
                const uint32_t x2 = load4(r2 + 4u * b), x3 = load4(r3 + 4u * b);
                uint32_t even = part[2u * b], odd = part[2u * b + 1u];
                even = SXTAB16(SXTAB16(SXTAB16(SXTAB16(even, x0), x1), x2), x3);
                odd = SXTAB16(SXTAB16(SXTAB16(SXTAB16(odd, ROR8(x0)), ROR8(x1)), ROR8(x2)), ROR8(x3));
                part[2u * b] = even;
                part[2u * b + 1u] = odd;
            }
            tail_rows(r0, r1, r2, r3, 4u, tail, n_out, acc);
        }
        for (; k < stop; k++) {
            const int8_t *r0 = w + (uint32_t)src[k] * n_out;
            for (b = 0; b < nb; b++) {
                const uint32_t x = load4(r0 + 4u * b);
                part[2u * b] = SXTAB16(part[2u * b], x);
                part[2u * b + 1u] = SXTAB16(part[2u * b + 1u], ROR8(x));
            }
            tail_rows(r0, r0, r0, r0, 1u, tail, n_out, acc);
        }
        for (b = 0; b < nb; b++)
            add_lanes(acc + 4u * b, part[2u * b], part[2u * b + 1u]);
    }
}
#else
static void rows_i8(const int8_t *w, uint32_t n_out, const int32_t *src, uint32_t n, uint32_t *acc,
                    uint32_t *part)
{
    uint32_t k = 0, o;
    (void)part;
    for (; k + 4u <= n; k += 4u) {
        const int8_t *r0 = w + (uint32_t)src[k] * n_out;
        const int8_t *r1 = w + (uint32_t)src[k + 1u] * n_out;
        const int8_t *r2 = w + (uint32_t)src[k + 2u] * n_out;
        const int8_t *r3 = w + (uint32_t)src[k + 3u] * n_out;
        for (o = 0; o < n_out; o++)
            acc[o] += (uint32_t)((r0[o] + r1[o]) + (r2[o] + r3[o]));
    }
    for (; k < n; k++) {
        const int8_t *r0 = w + (uint32_t)src[k] * n_out;
        for (o = 0; o < n_out; o++)
            acc[o] += (uint32_t)(int32_t)r0[o];
    }
}
#endif

/* int16 (plastic) rows add straight into the accumulator, two per pass. */
static void rows_i16(const int16_t *w, uint32_t n_out, const int32_t *src, uint32_t n, uint32_t *acc)
{
    uint32_t k = 0, o;
    for (; k + 2u <= n; k += 2u) {
        const int16_t *r0 = w + (uint32_t)src[k] * n_out;
        const int16_t *r1 = w + (uint32_t)src[k + 1u] * n_out;
        for (o = 0; o < n_out; o++)
            acc[o] += (uint32_t)(r0[o] + r1[o]);
    }
    if (k < n) {
        const int16_t *r0 = w + (uint32_t)src[k] * n_out;
        for (o = 0; o < n_out; o++)
            acc[o] += (uint32_t)(int32_t)r0[o];
    }
}

static void rows(const esnn_model_t *m, const int32_t *row, int32_t off, uint32_t n_out, const int32_t *src,
                 uint32_t n, uint32_t *acc, uint32_t *part)
{
    if (n == 0u)
        return;
    if (row[ESNN_L_W_POOL] == 0)
        rows_i8(m->wa + off, n_out, src, n, acc, part);
    else
        rows_i16(m->wb + off, n_out, src, n, acc);
}

/* a[o * ohw] += wk[o] for the out_c output channels of one kernel tap: four channels a pass, the
   accumulators ohw apart reached through offsets hoisted out of the loop */
static ESNN_INLINE void conv_taps8(uint32_t *a, const int8_t *wk, int32_t out_c, int32_t ohw)
{
    const int32_t ohw2 = 2 * ohw, ohw3 = 3 * ohw, ohw4 = 4 * ohw;
    int32_t o;
    for (o = 0; o + 4 <= out_c; o += 4) {
        a[0] += (uint32_t)(int32_t)wk[0];
        a[ohw] += (uint32_t)(int32_t)wk[1];
        a[ohw2] += (uint32_t)(int32_t)wk[2];
        a[ohw3] += (uint32_t)(int32_t)wk[3];
        a += ohw4;
        wk += 4;
    }
    for (; o < out_c; o++) {
        *a += (uint32_t)(int32_t)*wk++;
        a += ohw;
    }
}

/* Each input spike (c, y, x) scatters through the kernel (weights stored (c_in, kh, kw, c_out)) to the
   outputs (o, oy, ox) with y + pad - ky = oy * stride (likewise in x); conv_scatter in synapses.py. */
static void conv_scatter(const esnn_model_t *m, const int32_t *row, const int32_t *src, uint32_t n,
                         uint32_t *acc)
{
    const int32_t in_h = row[ESNN_L_IN_H], in_w = row[ESNN_L_IN_W];
    const int32_t out_c = row[ESNN_L_OUT_C], out_h = row[ESNN_L_OUT_H], out_w = row[ESNN_L_OUT_W];
    const int32_t kh = row[ESNN_L_KH], kw = row[ESNN_L_KW], stride = row[ESNN_L_STRIDE];
    const int32_t pad = row[ESNN_L_PAD];
    const int32_t hw = in_h * in_w, ohw = out_h * out_w;
    const int8_t *w8 = row[ESNN_L_W_POOL] == 0 ? m->wa + row[ESNN_L_W_OFF] : NULL;
    const int16_t *w16 = row[ESNN_L_W_POOL] != 0 ? m->wb + row[ESNN_L_W_OFF] : NULL;
    uint32_t k;
    if (stride == 1 && w8 != NULL) {
        /* stride 1 (int8): the taps that land inside the output are one range of ky and of kx,
           0 <= y + pad - ky < out_h, so no division and no test per tap */
        for (k = 0; k < n; k++) {
            const int32_t e = src[k];
            const int32_t c = e / hw, r = e - c * hw;   /* e >= 0: division of non-negatives */
            const int32_t y = r / in_w, x = r - y * in_w;
            const int32_t ky0 = y + pad - out_h + 1 > 0 ? y + pad - out_h + 1 : 0;
            const int32_t ky1 = y + pad < kh - 1 ? y + pad : kh - 1;
            const int32_t kx0 = x + pad - out_w + 1 > 0 ? x + pad - out_w + 1 : 0;
            const int32_t kx1 = x + pad < kw - 1 ? x + pad : kw - 1;
            int32_t ky, kx;
            for (ky = ky0; ky <= ky1; ky++) {
                const int8_t *wk = w8 + ((c * kh + ky) * kw + kx0) * out_c;
                const int32_t at = (y + pad - ky) * out_w + x + pad;   /* output (oy, ox) at kx = 0 */
                for (kx = kx0; kx <= kx1; kx++) {
                    conv_taps8(acc + (at - kx), wk, out_c, ohw);
                    wk += out_c;
                }
            }
        }
        return;
    }
    for (k = 0; k < n; k++) {
        const int32_t e = src[k];
        const int32_t c = e / hw, r = e - c * hw;   /* e >= 0: division of non-negatives */
        const int32_t y = r / in_w, x = r - y * in_w;
        int32_t ky, kx, o;
        for (ky = 0; ky < kh; ky++) {
            const int32_t ny = y + pad - ky;
            int32_t oy;
            if (ny < 0)
                break;
            oy = ny / stride;
            if (oy * stride != ny || oy >= out_h)
                continue;
            for (kx = 0; kx < kw; kx++) {
                const int32_t nx = x + pad - kx;
                int32_t ox, base;
                uint32_t *a;
                if (nx < 0)
                    break;
                ox = nx / stride;
                if (ox * stride != nx || ox >= out_w)
                    continue;
                base = ((c * kh + ky) * kw + kx) * out_c;
                a = acc + oy * out_w + ox;
                if (w8 != NULL) {
                    conv_taps8(a, w8 + base, out_c, ohw);
                } else {
                    const int16_t *wk = w16 + base;
                    for (o = 0; o < out_c; o++)
                        a[o * ohw] += (uint32_t)(int32_t)wk[o];
                }
            }
        }
    }
}

/* Sum pooling per channel: each spike adds the shared weight to every window that holds it. */
static void pool_scatter(const int32_t *row, int32_t pool_w, const int32_t *src, uint32_t n, uint32_t *acc)
{
    const int32_t in_h = row[ESNN_L_IN_H], in_w = row[ESNN_L_IN_W];
    const int32_t out_h = row[ESNN_L_OUT_H], out_w = row[ESNN_L_OUT_W];
    const int32_t ks = row[ESNN_L_KH], stride = row[ESNN_L_STRIDE];
    const int32_t hw = in_h * in_w, ohw = out_h * out_w;
    const uint32_t pw = (uint32_t)pool_w;   /* modular, like every accumulator add */
    uint32_t k;
    for (k = 0; k < n; k++) {
        const int32_t e = src[k];
        const int32_t c = e / hw, r = e - c * hw;
        const int32_t y = r / in_w, x = r - y * in_w;
        int32_t ky, kx;
        for (ky = 0; ky < ks; ky++) {
            const int32_t ny = y - ky;
            int32_t oy;
            if (ny < 0)
                break;
            oy = ny / stride;
            if (oy * stride != ny || oy >= out_h)
                continue;
            for (kx = 0; kx < ks; kx++) {
                const int32_t nx = x - kx;
                int32_t ox;
                if (nx < 0)
                    break;
                ox = nx / stride;
                if (ox * stride != nx || ox >= out_w)
                    continue;
                acc[c * ohw + oy * out_w + ox] += pw;
            }
        }
    }
}

/* ------------------------------------------------------------------ neurons */

/* The hot loop's decay: the layer's Q24 multiplier is prepared once per layer (prep_q24), so that a
   neuron pays only the multiply and the sign. On targets with a 32x32->64 multiply, q < 2^24 is kept as
   q * 2^8 (< 2^32): floor(m q / 2^24) = floor(m (q 2^8) / 2^32) is then the high word of one UMULL.
   q = 2^24 (no leak) never reaches it: the callers skip the multiply there. */
static uint32_t prep_q24(uint32_t q)
{
#if ESNN_DECAY_32BIT
    return q;
#else
    return q << 8;   /* q < 2^24 here */
#endif
}

/* decay(x, q) for q < 2^24 with qp = prep_q24(q); branch-free: the magnitude, one multiply, the sign */
static int32_t leak(int32_t x, uint32_t qp)
{
    const uint32_t s = 0u - ((uint32_t)x >> 31);   /* all ones when x < 0 */
    const uint32_t m = ((uint32_t)x ^ s) - s;      /* |x| <= 2^31 */
#if ESNN_DECAY_32BIT
    const uint32_t r = mul_q24(m, qp);
#else
    const uint32_t r = (uint32_t)(((uint64_t)m * qp) >> 32);
#endif
    return as_i32((r ^ s) - s);   /* r <= |x|: -r is an int32 */
}

/* sat_add as one instruction where the DSP extension has QADD (the same saturating int32 sum) */
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#define SAT_ADD(a, b) __qadd((a), (b))
#else
#define SAT_ADD(a, b) sat_add((a), (b))
#endif

/* One LIF / IF neuron k without refractory steps: v = sat(decay(v) + acc); spike and reset at v >= theta.
   Inlined with constant leaky / subtract, so each loop below is straight code. */
static ESNN_INLINE uint32_t lif_one(uint32_t k, int leaky, uint32_t qp, int32_t theta, int subtract,
                                    const uint32_t *acc, int32_t *v, int32_t *spk, uint32_t cnt)
{
    int32_t vk = SAT_ADD(leaky ? leak(v[k], qp) : v[k], as_i32(acc[k]));
    if (vk >= theta) {   /* rare: spikes are sparse */
        vk = subtract ? vk - theta : 0;   /* vk >= theta >= 1: no overflow */
        spk[cnt++] = (int32_t)k;
    }
    v[k] = vk;
    return cnt;
}

/* The common case, the same operations as the general loop of update with the per-layer constants
   hoisted: one loop per decay kind (no leak: IF, tau = inf) and reset, two neurons a pass. */
#define LIF_LOOP(leaky, subtract)                                            \
    do {                                                                     \
        for (k = 0; k + 2u <= n; k += 2u) {                                  \
            cnt = lif_one(k, leaky, qp, theta, subtract, acc, v, spk, cnt);  \
            cnt = lif_one(k + 1u, leaky, qp, theta, subtract, acc, v, spk, cnt); \
        }                                                                    \
        if (k < n)                                                           \
            cnt = lif_one(k, leaky, qp, theta, subtract, acc, v, spk, cnt);  \
    } while (0)

static ESNN_NOINLINE uint32_t update_lif(uint32_t n, uint32_t dv, int32_t theta, int subtract,
                                         const uint32_t *acc, int32_t *v, int32_t *spk)
{
    const uint32_t qp = dv < Q24_ONE ? prep_q24(dv) : 0u;
    uint32_t k, cnt = 0;
    if (dv >= Q24_ONE) {
        if (subtract)
            LIF_LOOP(0, 1);
        else
            LIF_LOOP(0, 0);
    } else {
        if (subtract)
            LIF_LOOP(1, 1);
        else
            LIF_LOOP(1, 0);
    }
    return cnt;
}

/* One population update (neurons.py, update_population); returns the number of spikes written. */
static uint32_t update(const int32_t *row, const int32_t *prm, const uint32_t *acc, int32_t *vs, int32_t *ist)
{
    const uint32_t n = (uint32_t)row[ESNN_L_N_OUT];
    const int32_t neuron = row[ESNN_L_NEURON];
    const int32_t ref_steps = row[ESNN_L_REF_STEPS];
    const int subtract = row[ESNN_L_RESET] == ESNN_RESET_SUBTRACT;
    const uint32_t dv = (uint32_t)prm[ESNN_P_DV];
    const int32_t theta = prm[ESNN_P_THETA];
    int32_t *v = vs + row[ESNN_L_V_OFF];
    int32_t *spk = ist + row[ESNN_L_S_OFF];
    int32_t *cur, *ad, *r;
    uint32_t k, cnt = 0;

    if (neuron == ESNN_LI) {   /* the readout: v = sat(decay(v) + acc), never spikes */
        if (dv >= Q24_ONE) {
            for (k = 0; k < n; k++)
                v[k] = SAT_ADD(v[k], as_i32(acc[k]));
        } else {
            const uint32_t qp = prep_q24(dv);
            for (k = 0; k < n; k++)
                v[k] = SAT_ADD(leak(v[k], qp), as_i32(acc[k]));
        }
        return 0;
    }
    if ((neuron == ESNN_LIF || neuron == ESNN_IF) && ref_steps == 0)
        return update_lif(n, dv, theta, subtract, acc, v, spk);

    cur = neuron == ESNN_CUBA ? vs + row[ESNN_L_I_OFF] : NULL;
    ad = neuron == ESNN_ALIF ? vs + row[ESNN_L_A_OFF] : NULL;
    r = ref_steps > 0 ? ist + row[ESNN_L_R_OFF] : NULL;
    for (k = 0; k < n; k++) {
        int32_t x = as_i32(acc[k]), vk;
        int64_t th = theta;
        int refractory = 0, fired;
        if (cur != NULL) {
            x = sat_add(decay(cur[k], (uint32_t)prm[ESNN_P_DI]), x);
            cur[k] = x;
        }
        vk = decay(v[k], dv);
        if (r != NULL && r[k] > 0) {   /* input is ignored while refractory; the leak goes on */
            r[k] -= 1;
            refractory = 1;
        } else {
            vk = sat_add(vk, x);
        }
        if (ad != NULL)
            th += ad[k];   /* theta + a in 64 bits: no overflow, as in the emulator */
        fired = !refractory && (int64_t)vk >= th;
        if (fired) {
            /* vk >= theta + a with a >= -2^31 and theta >= 1: vk - theta stays in int32 */
            vk = subtract ? vk - theta : 0;
            if (r != NULL)
                r[k] = ref_steps;
            spk[cnt++] = (int32_t)k;
        }
        if (ad != NULL)
            ad[k] = sat_add(decay(ad[k], (uint32_t)prm[ESNN_P_DA]), fired ? prm[ESNN_P_A_INC] : 0);
        v[k] = vk;
    }
    return cnt;
}

/* ------------------------------------------------------------------ step */

void esnn_reset(const esnn_model_t *model, esnn_state_t *state)
{
    uint32_t k;
    if (model == NULL || state == NULL || state->model != model)
        return;
    for (k = 0; k < model->n_vs; k++)
        state->vs[k] = 0;
    for (k = 0; k < model->n_ist; k++)
        state->ist[k] = 0;
}

/* The previous step's spike lists of recurrent layers index weight rows: check them before use, so
   that a state overwritten by the application cannot make the step read outside the weights. */
static int state_ok(const esnn_model_t *m, const esnn_state_t *s)
{
    const int32_t *cnt = s->ist + (m->n_ist - m->n_layers);
    uint32_t l, k;
    for (l = 0; l < m->n_layers; l++) {
        const int32_t *row = m->ltab + l * ESNN_NL;
        const int32_t *spk = s->ist + row[ESNN_L_S_OFF];
        if (row[ESNN_L_KIND] != ESNN_RECURRENT)
            continue;
        if (cnt[l] < 0 || cnt[l] > row[ESNN_L_N_OUT])
            return 0;
        for (k = 0; k < (uint32_t)cnt[l]; k++)
            if (spk[k] < 0 || spk[k] >= row[ESNN_L_N_OUT])
                return 0;
    }
    return 1;
}

int32_t esnn_step(const esnn_model_t *model, esnn_state_t *state, const int32_t *events, uint32_t n_events)
{
    const esnn_model_t *m = model;
    const int32_t *src = events;
    uint32_t n_src = n_events, l, k, n_in0;
    int32_t *cnt;
    if (m == NULL || state == NULL || state->model != m || (n_events > 0u && events == NULL))
        return ESNN_ERR_ARG;
    /* refuse bad input before any state changes */
    if (n_events > ESNN_MAX_EVENTS)
        return ESNN_ERR_INPUT_COUNT;
    n_in0 = (uint32_t)m->ltab[ESNN_L_N_IN];
    for (k = 0; k < n_events; k++)
        if ((uint32_t)events[k] >= n_in0)   /* a negative index converts to >= 2^31 > n_in0 */
            return ESNN_ERR_INPUT_INDEX;
    /* a first Flatten layer keeps its input events as its spike list, which has n_out slots */
    if (m->ltab[ESNN_L_KIND] == ESNN_FLATTEN && n_events > (uint32_t)m->ltab[ESNN_L_N_OUT])
        return ESNN_ERR_INPUT_COUNT;
    /* an int16 recurrent first layer also adds its own previous spikes (at most n_out, and its fan-in
       check keeps n_out <= 65535): events + n_out weights of 32767 must stay within int32 */
    if (m->ltab[ESNN_L_KIND] == ESNN_RECURRENT && m->ltab[ESNN_L_W_POOL] == 1 &&
        n_events > ESNN_MAX_EVENTS - (uint32_t)m->ltab[ESNN_L_N_OUT])
        return ESNN_ERR_INPUT_COUNT;
    if (!state_ok(m, state))
        return ESNN_ERR_STATE;

    cnt = state->ist + (m->n_ist - m->n_layers);
    for (l = 0; l < m->n_layers; l++) {
        const int32_t *row = m->ltab + l * ESNN_NL;
        const int32_t *prm = m->ptab + l * ESNN_NP;
        const int32_t kind = row[ESNN_L_KIND];
        const uint32_t n_out = (uint32_t)row[ESNN_L_N_OUT];
        int32_t *spk = state->ist + row[ESNN_L_S_OFF];
        uint32_t *acc = state->acc;
        if (kind == ESNN_FLATTEN) {   /* same indices, kept so that every layer has a spike list */
            for (k = 0; k < n_src; k++)
                spk[k] = src[k];
            cnt[l] = (int32_t)n_src;
            src = spk;
            continue;
        }
        for (k = 0; k < n_out; k++)
            acc[k] = 0;
        if (kind == ESNN_DENSE || kind == ESNN_RECURRENT) {
            rows(m, row, row[ESNN_L_W_OFF], n_out, src, n_src, acc, state->part);
            if (kind == ESNN_RECURRENT)   /* the layer's own spikes of the previous step */
                rows(m, row, row[ESNN_L_WREC_OFF], n_out, spk, (uint32_t)cnt[l], acc, state->part);
        } else if (kind == ESNN_CONV2D) {
            conv_scatter(m, row, src, n_src, acc);
        } else {   /* ESNN_SUMPOOL2D */
            pool_scatter(row, prm[ESNN_P_POOL_W], src, n_src, acc);
        }
        n_src = update(row, prm, acc, state->vs, state->ist);
        cnt[l] = (int32_t)n_src;
        src = spk;
    }
    return ESNN_OK;
}

/* ------------------------------------------------------------------ accessors */

static const int32_t *layer_row(const esnn_model_t *m, uint32_t *layer)
{
    if (m == NULL || m->n_layers == 0u)
        return NULL;
    if (*layer == ESNN_LAST_LAYER)
        *layer = m->n_layers - 1u;
    return *layer < m->n_layers ? m->ltab + *layer * ESNN_NL : NULL;
}

uint32_t esnn_layer_size(const esnn_model_t *model, uint32_t layer)
{
    const int32_t *row = layer_row(model, &layer);
    return row != NULL ? (uint32_t)row[ESNN_L_N_OUT] : 0u;
}

uint32_t esnn_n_inputs(const esnn_model_t *model)
{
    return model != NULL && model->n_layers > 0u ? (uint32_t)model->ltab[ESNN_L_N_IN] : 0u;
}

uint32_t esnn_n_outputs(const esnn_model_t *model)
{
    return esnn_layer_size(model, ESNN_LAST_LAYER);
}

const int32_t *esnn_spikes(const esnn_model_t *model, const esnn_state_t *state, uint32_t layer,
                           uint32_t *count)
{
    const int32_t *row = layer_row(model, &layer);
    int32_t c;
    if (count != NULL)
        *count = 0;
    if (row == NULL || state == NULL || state->model != model)
        return NULL;
    c = state->ist[model->n_ist - model->n_layers + layer];
    if (count != NULL)
        *count = c > 0 ? (uint32_t)c : 0u;
    return state->ist + row[ESNN_L_S_OFF];
}

static int32_t *values(const esnn_model_t *model, esnn_state_t *state, uint32_t layer, int field)
{
    const int32_t *row = layer_row(model, &layer);
    if (row == NULL || state == NULL || state->model != model || row[field] < 0)
        return NULL;
    return state->vs + row[field];
}

int32_t *esnn_v(const esnn_model_t *model, esnn_state_t *state, uint32_t layer)
{
    return values(model, state, layer, ESNN_L_V_OFF);
}

int32_t *esnn_i(const esnn_model_t *model, esnn_state_t *state, uint32_t layer)
{
    return values(model, state, layer, ESNN_L_I_OFF);
}

int32_t *esnn_a(const esnn_model_t *model, esnn_state_t *state, uint32_t layer)
{
    return values(model, state, layer, ESNN_L_A_OFF);
}

/* ------------------------------------------------------------------ state memory */

uint32_t esnn_vs_words(const esnn_model_t *model)
{
    return model != NULL ? model->n_vs : 0u;
}

uint32_t esnn_ist_words(const esnn_model_t *model)
{
    return model != NULL ? model->n_ist : 0u;
}

uint32_t esnn_scratch_words(const esnn_model_t *model)
{
    /* width uint32 accumulators, then the packed int16 partial sums of the SIMD rows (two per word) */
    return model != NULL ? model->width + (model->width + 1u) / 2u : 0u;
}

uint32_t esnn_state_bytes(const esnn_model_t *model)
{
    return 4u * (esnn_vs_words(model) + esnn_ist_words(model) + esnn_scratch_words(model));
}

int32_t esnn_state_bind(const esnn_model_t *model, esnn_state_t *state, int32_t *vs, int32_t *ist,
                        int32_t *scratch)
{
    int32_t st;
    if (model == NULL || state == NULL)
        return ESNN_ERR_ARG;
    state->model = NULL;
    st = esnn_model_check(model);
    if (st != ESNN_OK)
        return st;
    if ((vs == NULL && model->n_vs > 0u) || ist == NULL || scratch == NULL)
        return ESNN_ERR_ARG;
    state->model = model;
    state->vs = vs;
    state->ist = ist;
    /* the int32 words are used as uint32 only (signed and unsigned variants may alias) */
    state->acc = (uint32_t *)(void *)scratch;
    state->part = (uint32_t *)(void *)(scratch + model->width);
    esnn_reset(model, state);
    return ESNN_OK;
}

int32_t esnn_state_init(const esnn_model_t *model, esnn_state_t *state, int32_t *buffer, uint32_t bytes)
{
    if (model == NULL || state == NULL || buffer == NULL)
        return ESNN_ERR_ARG;
    state->model = NULL;
    /* more state than any device holds; the bound also keeps the byte count inside 32 bits */
    if (model->n_vs > 0xFFFFFFu || model->n_ist > 0xFFFFFFu || model->width > 0xFFFFFFu)
        return ESNN_ERR_MODEL;
    if (bytes < esnn_state_bytes(model))
        return ESNN_ERR_ARG;
    return esnn_state_bind(model, state, buffer, buffer + model->n_vs, buffer + model->n_vs + model->n_ist);
}

/* ------------------------------------------------------------------ model check */

/* One state region of a layer: which = 0..4 for v, i, a (in vs), s, r (in ist). */
static int region(const int32_t *row, int which, int *space, int32_t *off)
{
    static const int fields[5] = {ESNN_L_V_OFF, ESNN_L_I_OFF, ESNN_L_A_OFF, ESNN_L_S_OFF, ESNN_L_R_OFF};
    *space = which < 3 ? 0 : 1;
    *off = row[fields[which]];
    return *off >= 0;
}

static int fits(int64_t off, uint64_t len, uint64_t size)
{
    return off >= 0 && (uint64_t)off + len <= size;
}

static int in_dim(int32_t x)
{
    return x >= 1 && x <= MAX_DIM;
}

static int decay_ok(int32_t q)
{
    return q >= 0 && (uint32_t)q <= Q24_ONE;
}

/* One layer's fields: kinds known, sizes chained, weights inside their pool, state inside its buffer. */
static int layer_ok(const esnn_model_t *m, uint32_t l)
{
    const int32_t *row = m->ltab + l * ESNN_NL, *prm = m->ptab + l * ESNN_NP;
    const int32_t kind = row[ESNN_L_KIND], neuron = row[ESNN_L_NEURON];
    const int32_t n_in = row[ESNN_L_N_IN], n_out = row[ESNN_L_N_OUT];
    const uint64_t lists = (uint64_t)m->n_ist - m->n_layers;
    const uint64_t pool = row[ESNN_L_W_POOL] == 0 ? m->n_wa : m->n_wb;
    uint64_t fan_in = 0;
    int spiking;
    if (kind < ESNN_DENSE || kind > ESNN_RECURRENT || n_in < 1 || n_out < 1 || (uint32_t)n_out > m->width)
        return 0;
    if (l > 0u && n_in != m->ltab[(l - 1u) * ESNN_NL + ESNN_L_N_OUT])
        return 0;
    /* (c, h, w) shapes matter to conv and pool only (dense, recurrent and flatten use n_in, n_out) */
    if ((kind == ESNN_CONV2D || kind == ESNN_SUMPOOL2D)
        && (row[ESNN_L_IN_C] < 1 || row[ESNN_L_IN_H] < 1 || row[ESNN_L_IN_W] < 1 || row[ESNN_L_OUT_C] < 1
            || row[ESNN_L_OUT_H] < 1 || row[ESNN_L_OUT_W] < 1
            || (uint64_t)row[ESNN_L_IN_C] * (uint64_t)row[ESNN_L_IN_H] * (uint64_t)row[ESNN_L_IN_W] != (uint64_t)n_in
            || (uint64_t)row[ESNN_L_OUT_C] * (uint64_t)row[ESNN_L_OUT_H] * (uint64_t)row[ESNN_L_OUT_W]
                   != (uint64_t)n_out))
        return 0;
    if (!fits(row[ESNN_L_S_OFF], (uint64_t)n_out, lists))
        return 0;
    if (kind == ESNN_FLATTEN)
        return neuron == ESNN_NONE && n_in == n_out && row[ESNN_L_V_OFF] == -1 && row[ESNN_L_I_OFF] == -1
               && row[ESNN_L_A_OFF] == -1 && row[ESNN_L_R_OFF] == -1;

    /* neurons */
    if (neuron < ESNN_LIF || neuron > ESNN_LI || row[ESNN_L_REF_STEPS] < 0
        || (row[ESNN_L_RESET] != ESNN_RESET_SUBTRACT && row[ESNN_L_RESET] != ESNN_RESET_ZERO)
        || (row[ESNN_L_DECAY_FORM] != ESNN_FORM_MULTIPLY && row[ESNN_L_DECAY_FORM] != ESNN_FORM_SHIFT))
        return 0;
    spiking = neuron != ESNN_LI;
    if (!decay_ok(prm[ESNN_P_DV]) || !decay_ok(prm[ESNN_P_DI]) || !decay_ok(prm[ESNN_P_DA])
        || (spiking && prm[ESNN_P_THETA] < 1))
        return 0;
    if (!fits(row[ESNN_L_V_OFF], (uint64_t)n_out, m->n_vs))
        return 0;
    if ((neuron == ESNN_CUBA) != (row[ESNN_L_I_OFF] >= 0) || (neuron == ESNN_ALIF) != (row[ESNN_L_A_OFF] >= 0)
        || (spiking && row[ESNN_L_REF_STEPS] > 0) != (row[ESNN_L_R_OFF] >= 0))
        return 0;
    if ((row[ESNN_L_I_OFF] >= 0 && !fits(row[ESNN_L_I_OFF], (uint64_t)n_out, m->n_vs))
        || (row[ESNN_L_A_OFF] >= 0 && !fits(row[ESNN_L_A_OFF], (uint64_t)n_out, m->n_vs))
        || (row[ESNN_L_R_OFF] >= 0 && !fits(row[ESNN_L_R_OFF], (uint64_t)n_out, lists))
        || (row[ESNN_L_I_OFF] < -1 || row[ESNN_L_A_OFF] < -1 || row[ESNN_L_R_OFF] < -1))
        return 0;

    /* synapses */
    if (kind == ESNN_SUMPOOL2D) {
        const int32_t k = row[ESNN_L_KH], s = row[ESNN_L_STRIDE];
        return in_dim(k) && row[ESNN_L_KW] == k && in_dim(s) && row[ESNN_L_PAD] == 0
               && in_dim(row[ESNN_L_IN_H]) && in_dim(row[ESNN_L_IN_W]) && row[ESNN_L_IN_H] >= k
               && row[ESNN_L_IN_W] >= k && row[ESNN_L_OUT_C] == row[ESNN_L_IN_C]
               && row[ESNN_L_OUT_H] == (row[ESNN_L_IN_H] - k) / s + 1
               && row[ESNN_L_OUT_W] == (row[ESNN_L_IN_W] - k) / s + 1;
    }
    if (row[ESNN_L_W_POOL] != 0 && row[ESNN_L_W_POOL] != 1)
        return 0;
    if (kind == ESNN_CONV2D) {
        const int32_t kh = row[ESNN_L_KH], kw = row[ESNN_L_KW], s = row[ESNN_L_STRIDE], p = row[ESNN_L_PAD];
        const int32_t h = row[ESNN_L_IN_H], w = row[ESNN_L_IN_W];
        if (!in_dim(kh) || !in_dim(kw) || !in_dim(s) || p < 0 || p > MAX_DIM || !in_dim(h) || !in_dim(w)
            || row[ESNN_L_OUT_C] > MAX_DIM || h + 2 * p < kh || w + 2 * p < kw
            || row[ESNN_L_OUT_H] != (h + 2 * p - kh) / s + 1 || row[ESNN_L_OUT_W] != (w + 2 * p - kw) / s + 1)
            return 0;
        fan_in = (uint64_t)row[ESNN_L_IN_C] * (uint64_t)kh * (uint64_t)kw;
        /* the kernel's weight index is int32 arithmetic in conv_scatter */
        if (fan_in * (uint64_t)row[ESNN_L_OUT_C] > 0x7FFFFFFFu
            || !fits(row[ESNN_L_W_OFF], fan_in * (uint64_t)row[ESNN_L_OUT_C], pool))
            return 0;
    } else {   /* dense, recurrent */
        fan_in = (uint64_t)n_in;
        if (!fits(row[ESNN_L_W_OFF], (uint64_t)n_in * (uint64_t)n_out, pool))
            return 0;
        if (kind == ESNN_RECURRENT) {
            fan_in += (uint64_t)n_out;
            if (!fits(row[ESNN_L_WREC_OFF], (uint64_t)n_out * (uint64_t)n_out, pool))
                return 0;
        }
    }
    /* int16 sums stay exact in int32 only for fan-in <= 65535 (docs/numerics.md, "Saturation") */
    return row[ESNN_L_W_POOL] == 0 || fan_in <= MAX_FAN_IN_INT16;
}

/* No two state regions of the model overlap (a layer would silently overwrite another's state). */
static int regions_disjoint(const esnn_model_t *m)
{
    uint32_t l1, l2;
    int w1, w2;
    for (l1 = 0; l1 < m->n_layers; l1++) {
        const int32_t *r1 = m->ltab + l1 * ESNN_NL;
        const int64_t n1 = r1[ESNN_L_N_OUT];
        for (w1 = 0; w1 < 5; w1++) {
            int s1, s2;
            int32_t o1, o2;
            if (!region(r1, w1, &s1, &o1))
                continue;
            for (l2 = l1; l2 < m->n_layers; l2++) {
                const int32_t *r2 = m->ltab + l2 * ESNN_NL;
                const int64_t n2 = r2[ESNN_L_N_OUT];
                for (w2 = l2 == l1 ? w1 + 1 : 0; w2 < 5; w2++) {
                    if (!region(r2, w2, &s2, &o2) || s1 != s2)
                        continue;
                    if ((int64_t)o1 < (int64_t)o2 + n2 && (int64_t)o2 < (int64_t)o1 + n1)
                        return 0;
                }
            }
        }
    }
    return 1;
}

int32_t esnn_model_check(const esnn_model_t *model)
{
    const esnn_model_t *m = model;
    uint32_t l;
    if (m == NULL)
        return ESNN_ERR_ARG;
    if (m->n_layers < 1u || m->n_layers > ESNN_MAX_LAYERS || m->ltab == NULL || m->ptab == NULL
        || (m->wa == NULL && m->n_wa > 0u) || (m->wb == NULL && m->n_wb > 0u) || m->n_ist < m->n_layers
        || m->width < 1u || m->n_vs > 0x7FFFFFFFu || m->n_ist > 0x7FFFFFFFu || m->width > 0x7FFFFFFFu)
        return ESNN_ERR_MODEL;
    for (l = 0; l < m->n_layers; l++)
        if (!layer_ok(m, l))
            return ESNN_ERR_MODEL;
    return regions_disjoint(m) ? ESNN_OK : ESNN_ERR_MODEL;
}

/* ------------------------------------------------------------------ weight blob */

/* CRC32 of zlib (reflected polynomial 0xEDB88320), four bits at a time: a 64-byte table. */
uint32_t esnn_crc32_update(uint32_t crc, const uint8_t *data, uint32_t len)
{
    static const uint32_t tab[16] = {
        0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
        0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
    };
    uint32_t c = ~crc, k;
    for (k = 0; k < len; k++) {
        c ^= data[k];
        c = (c >> 4) ^ tab[c & 15u];
        c = (c >> 4) ^ tab[c & 15u];
    }
    return ~c;
}

uint32_t esnn_crc32(const uint8_t *data, uint32_t len)
{
    return esnn_crc32_update(0u, data, len);
}

static uint32_t rd16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t align_up(uint64_t x, uint64_t a)
{
    return (x + a - 1u) / a * a;
}

static int zeros(const uint8_t *p, uint64_t from, uint64_t to)
{
    for (; from < to; from++)
        if (p[from] != 0u)
            return 0;
    return 1;
}

/* header field offsets (docs/c_runtime.md) */
#define B_VERSION 8u
#define B_HEADER_BYTES 10u
#define B_TOTAL 12u
#define B_N_LAYERS 16u
#define B_NL 20u
#define B_NP 24u
#define B_N_WA 28u
#define B_N_WB 32u
#define B_N_VS 36u
#define B_N_IST 40u
#define B_FLAGS 44u
#define B_HASH 48u
#define B_RESERVED 80u

int32_t esnn_model_from_blob(const uint8_t *blob, uint32_t len, esnn_model_t *out)
{
    static const char magic[8] = ESNN_BLOB_MAGIC;
    uint64_t ltab_at, ptab_at, wa_at, wb_at, crc_at, end;
    uint32_t k, n_layers, n_wa, n_wb, width = 1u;
    int32_t st;
    esnn_model_t m;
    if (out == NULL)
        return ESNN_ERR_ARG;
    out->n_layers = 0u;
    out->ltab = out->ptab = NULL;
    out->wa = NULL;
    out->wb = NULL;
    out->n_wa = out->n_wb = out->n_vs = out->n_ist = out->width = 0u;
    out->hash = NULL;
    /* the tables are used in place as int32 / int16: the blob must be 4-byte aligned (the one place a
       pointer is looked at as a number) */
    if (blob == NULL || ((uintptr_t)(const void *)blob & 3u) != 0u)
        return ESNN_ERR_ARG;
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    return ESNN_ERR_BLOB_FORMAT;   /* the tables are little-endian and used in place */
#endif
    if (len < 16u)
        return ESNN_ERR_BLOB_SIZE;
    for (k = 0; k < 8u; k++)
        if (blob[k] != (uint8_t)magic[k])
            return ESNN_ERR_BLOB_MAGIC;
    if (rd16(blob + B_VERSION) != ESNN_BLOB_VERSION)
        return ESNN_ERR_BLOB_VERSION;
    if (rd32(blob + B_TOTAL) != len)
        return ESNN_ERR_BLOB_SIZE;
    if (esnn_crc32(blob, len - 4u) != rd32(blob + len - 4u))
        return ESNN_ERR_BLOB_CRC;

    /* from here on the bytes are as written: what is wrong is the writer's layout */
    if (len < ESNN_BLOB_HEADER_BYTES + 4u || rd16(blob + B_HEADER_BYTES) != ESNN_BLOB_HEADER_BYTES
        || rd32(blob + B_NL) != ESNN_NL || rd32(blob + B_NP) != ESNN_NP || rd32(blob + B_FLAGS) != 0u
        || !zeros(blob, B_RESERVED, ESNN_BLOB_HEADER_BYTES))
        return ESNN_ERR_BLOB_FORMAT;
    n_layers = rd32(blob + B_N_LAYERS);
    n_wa = rd32(blob + B_N_WA);
    n_wb = rd32(blob + B_N_WB);
    if (n_layers < 1u || n_layers > ESNN_MAX_LAYERS)
        return ESNN_ERR_BLOB_FORMAT;
    ltab_at = ESNN_BLOB_HEADER_BYTES;
    ptab_at = align_up(ltab_at + 4u * (uint64_t)n_layers * ESNN_NL, ESNN_BLOB_ALIGN);
    wa_at = align_up(ptab_at + 4u * (uint64_t)n_layers * ESNN_NP, ESNN_BLOB_ALIGN);
    wb_at = align_up(wa_at + (uint64_t)n_wa, ESNN_BLOB_ALIGN);
    end = wb_at + 2u * (uint64_t)n_wb;
    crc_at = align_up(end, 4u);
    if (crc_at + 4u != len)
        return ESNN_ERR_BLOB_FORMAT;
    if (!zeros(blob, ltab_at + 4u * (uint64_t)n_layers * ESNN_NL, ptab_at)
        || !zeros(blob, ptab_at + 4u * (uint64_t)n_layers * ESNN_NP, wa_at) || !zeros(blob, wa_at + n_wa, wb_at)
        || !zeros(blob, end, crc_at))
        return ESNN_ERR_BLOB_FORMAT;

    m.n_layers = n_layers;
    m.ltab = (const int32_t *)(const void *)(blob + ltab_at);
    m.ptab = (const int32_t *)(const void *)(blob + ptab_at);
    m.wa = (const int8_t *)(const void *)(blob + wa_at);
    m.n_wa = n_wa;
    m.wb = (const int16_t *)(const void *)(blob + wb_at);
    m.n_wb = n_wb;
    m.n_vs = rd32(blob + B_N_VS);
    m.n_ist = rd32(blob + B_N_IST);
    m.hash = blob + B_HASH;
    for (k = 0; k < n_layers; k++) {   /* the accumulators' size: the widest layer */
        int32_t n = m.ltab[k * ESNN_NL + ESNN_L_N_OUT];
        if (n > 0 && (uint32_t)n > width)
            width = (uint32_t)n;
    }
    m.width = width;
    st = esnn_model_check(&m);
    if (st != ESNN_OK)
        return st;
    *out = m;
    return ESNN_OK;
}

const char *esnn_status_str(int32_t status)
{
    switch (status) {
    case ESNN_OK: return "ok";
    case ESNN_ERR_INPUT_INDEX: return "input index outside the network's inputs; the step was not applied";
    case ESNN_ERR_INPUT_COUNT: return "too many input events for one step; the step was not applied";
    case ESNN_ERR_ARG: return "bad argument (NULL, buffer too small or misaligned, layer, state of another model)";
    case ESNN_ERR_MODEL: return "model tables are inconsistent";
    case ESNN_ERR_BLOB_SIZE: return "blob truncated or of the wrong length";
    case ESNN_ERR_BLOB_MAGIC: return "not an edgesnn weight blob";
    case ESNN_ERR_BLOB_VERSION: return "blob format version not supported by this runtime";
    case ESNN_ERR_BLOB_CRC: return "blob CRC32 mismatch: the blob is damaged";
    case ESNN_ERR_BLOB_FORMAT: return "blob header is inconsistent";
    case ESNN_ERR_STATE: return "state holds values no step produces";
    default: return "unknown status";
    }
}
