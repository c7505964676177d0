/* POLYVAL as specified in RFC 8452 section 3 (see polyval.h).  Portable C
 * with the carry-less multiply done in integer multiplies, and on x86 CPUs
 * with PCLMULQDQ the same hash eight blocks per reduction, or sixteen per
 * reduction in 512-bit VPCLMULQDQ where the CPU and the OS have AVX-512,
 * chosen at run time: every byte of a migration stream is hashed on both
 * hosts, and the portable C is 15 to 45 times slower (bench/hash). */
#include "polyval.h"

#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define POLYVAL_X86 1
#include <cpuid.h>
#include <immintrin.h>
#include <wmmintrin.h>
#endif

/* The helpers of the loops inlined in the -Os static build too, where a
 * call per multiply would cost half the speed. */
#if defined(__GNUC__) || defined(__clang__)
#define INLINE static inline __attribute__((always_inline))
#else
#define INLINE static inline
#endif

static inline uint64_t load64le(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8); /* one load where the byte order already matches */
    return v;
#else
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
#endif
}

static inline void store64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> 8 * i);
}

/* The low 64 bits of the carry-less product x*y in integer multiplies,
 * BearSSL's bmul64 trick: each operand split into four sets of bits 4
 * apart, so that an integer product of two sets sums at most 15 terms at
 * any bit below 60 (16 at 60..63, whose carries leave the word), and the
 * carries never reach the next bit of the same set.  No table, no branch:
 * constant time where multiplication is. */
INLINE uint64_t bmul64(uint64_t x, uint64_t y)
{
    const uint64_t m0 = 0x1111111111111111u, m1 = m0 << 1, m2 = m0 << 2, m3 = m0 << 3;
    uint64_t x0 = x & m0, x1 = x & m1, x2 = x & m2, x3 = x & m3;
    uint64_t y0 = y & m0, y1 = y & m1, y2 = y & m2, y3 = y & m3;
    uint64_t z0 = (x0 * y0) ^ (x1 * y3) ^ (x2 * y2) ^ (x3 * y1);
    uint64_t z1 = (x0 * y1) ^ (x1 * y0) ^ (x2 * y3) ^ (x3 * y2);
    uint64_t z2 = (x0 * y2) ^ (x1 * y1) ^ (x2 * y0) ^ (x3 * y3);
    uint64_t z3 = (x0 * y3) ^ (x1 * y2) ^ (x2 * y1) ^ (x3 * y0);
    return (z0 & m0) | (z1 & m1) | (z2 & m2) | (z3 & m3);
}

INLINE uint64_t rev64(uint64_t x)
{
    x = (x & 0x5555555555555555u) << 1 | (x >> 1 & 0x5555555555555555u);
    x = (x & 0x3333333333333333u) << 2 | (x >> 2 & 0x3333333333333333u);
    x = (x & 0x0f0f0f0f0f0f0f0fu) << 4 | (x >> 4 & 0x0f0f0f0f0f0f0f0fu);
    x = (x & 0x00ff00ff00ff00ffu) << 8 | (x >> 8 & 0x00ff00ff00ff00ffu);
    x = (x & 0x0000ffff0000ffffu) << 16 | (x >> 16 & 0x0000ffff0000ffffu);
    return x << 32 | x >> 32;
}

/* One operand of the portable multiply: its words, their xor (Karatsuba's
 * middle term) and the three bit-reversed, for the high halves: bit i of
 * rev64(bmul64(rev64(x), rev64(y))) is bit 63 + i of x*y. */
struct op {
    uint64_t w[3], r[3];
};

INLINE void op_init(struct op *o, uint64_t lo, uint64_t hi)
{
    o->w[0] = lo, o->w[1] = hi, o->w[2] = lo ^ hi;
    o->r[0] = rev64(lo), o->r[1] = rev64(hi), o->r[2] = o->r[0] ^ o->r[1];
}

/* r = a*b*x^-128 mod x^128 + x^127 + x^126 + x^121 + 1: RFC 8452's dot. */
static void dot_portable(uint64_t r[2], const struct op *a, const struct op *b)
{
    uint64_t z[3], zh[3];
    for (int i = 0; i < 3; i++) {
        z[i] = bmul64(a->w[i], b->w[i]);
        zh[i] = rev64(bmul64(a->r[i], b->r[i])) >> 1;
    }
    z[2] ^= z[0] ^ z[1];
    zh[2] ^= zh[0] ^ zh[1];
    uint64_t t0 = z[0], t1 = zh[0] ^ z[2], t2 = z[1] ^ zh[2], t3 = zh[1];
    /* Montgomery reduction, 64 bits at a time: adding L*P for the lowest
     * word L clears it (P's constant term), the rest of L*P is L times
     * x^121 + x^126 + x^127 + x^128; then the word is dropped (/ x^64). */
    t1 ^= t0 << 57 ^ t0 << 62 ^ t0 << 63;
    t2 ^= t0 ^ t0 >> 7 ^ t0 >> 2 ^ t0 >> 1;
    t2 ^= t1 << 57 ^ t1 << 62 ^ t1 << 63;
    t3 ^= t1 ^ t1 >> 7 ^ t1 >> 2 ^ t1 >> 1;
    r[0] = t2, r[1] = t3;
}

static void blocks_portable(const struct polyval_key *k, uint8_t acc[POLYVAL_LEN],
                            const uint8_t *p, size_t n)
{
    struct op h, s;
    uint64_t v[2] = {load64le(acc), load64le(acc + 8)};

    op_init(&h, k->pow[0][0], k->pow[0][1]);
    for (; n; n--, p += 16) {
        op_init(&s, v[0] ^ load64le(p), v[1] ^ load64le(p + 8));
        dot_portable(v, &s, &h);
    }
    store64le(acc, v[0]);
    store64le(acc + 8, v[1]);
}

#ifdef POLYVAL_X86
/* A block times a power of H as Karatsuba's three 64x64 products (a
 * quarter faster than four on an EPYC), added to the sums lo, hi, mid: the
 * products of 8 blocks are summed, then reduced once.  Loads are
 * unaligned: pages of guest memory, any offset. */
#define CLMUL_FN __attribute__((target("pclmul,sse4.1")))

CLMUL_FN INLINE void mulacc(const struct polyval_key *k, int i, __m128i x, __m128i *lo,
                            __m128i *hi, __m128i *mid)
{
    __m128i h = _mm_loadu_si128((const __m128i *)k->pow[i]);
    __m128i hk = _mm_loadl_epi64((const __m128i *)&k->khalf[i]);
    __m128i xk = _mm_xor_si128(x, _mm_shuffle_epi32(x, 0x4e));
    *lo = _mm_xor_si128(*lo, _mm_clmulepi64_si128(x, h, 0x00));
    *hi = _mm_xor_si128(*hi, _mm_clmulepi64_si128(x, h, 0x11));
    *mid = _mm_xor_si128(*mid, _mm_clmulepi64_si128(xk, hk, 0x00));
}

/* (lo + mid x^64 + hi x^128) x^-128 mod P, mid the cross products.  The
 * Montgomery reduction of dot_portable() with L*(x^121 + x^126 + x^127) as
 * one carry-less multiply by 0xc2 << 56 (P's high word, at x^64), two
 * rounds of 64 bits. */
CLMUL_FN INLINE __m128i reduce(__m128i lo, __m128i hi, __m128i mid)
{
    const __m128i poly = _mm_set_epi64x((long long)0xc200000000000000u, 1);
    lo = _mm_xor_si128(lo, _mm_slli_si128(mid, 8));
    hi = _mm_xor_si128(hi, _mm_srli_si128(mid, 8));
    lo = _mm_xor_si128(_mm_shuffle_epi32(lo, 0x4e), _mm_clmulepi64_si128(lo, poly, 0x10));
    lo = _mm_xor_si128(_mm_shuffle_epi32(lo, 0x4e), _mm_clmulepi64_si128(lo, poly, 0x10));
    return _mm_xor_si128(hi, lo);
}

/* S_8 = (S_0 + X_1) H^8 + X_2 H^7 + ... + X_8 H: eight independent
 * products a reduction, so the multiplier's latency hides behind its
 * throughput; a shorter run at the end uses H^n..H^1 the same way. */
CLMUL_FN static void blocks_clmul(const struct polyval_key *k, uint8_t acc[POLYVAL_LEN],
                                  const uint8_t *p, size_t n)
{
    __m128i s = _mm_loadu_si128((const __m128i *)acc);

    for (; n >= 8; n -= 8, p += 128) {
        __m128i lo = _mm_setzero_si128(), hi = lo, mid = lo;
        mulacc(k, 7, _mm_xor_si128(s, _mm_loadu_si128((const __m128i *)p)), &lo, &hi, &mid);
        mulacc(k, 6, _mm_loadu_si128((const __m128i *)(p + 16)), &lo, &hi, &mid);
        mulacc(k, 5, _mm_loadu_si128((const __m128i *)(p + 32)), &lo, &hi, &mid);
        mulacc(k, 4, _mm_loadu_si128((const __m128i *)(p + 48)), &lo, &hi, &mid);
        mulacc(k, 3, _mm_loadu_si128((const __m128i *)(p + 64)), &lo, &hi, &mid);
        mulacc(k, 2, _mm_loadu_si128((const __m128i *)(p + 80)), &lo, &hi, &mid);
        mulacc(k, 1, _mm_loadu_si128((const __m128i *)(p + 96)), &lo, &hi, &mid);
        mulacc(k, 0, _mm_loadu_si128((const __m128i *)(p + 112)), &lo, &hi, &mid);
        s = reduce(lo, hi, _mm_xor_si128(mid, _mm_xor_si128(lo, hi))); /* Karatsuba */
    }
    if (n) {
        __m128i lo = _mm_setzero_si128(), hi = lo, mid = lo;
        mulacc(k, (int)n - 1, _mm_xor_si128(s, _mm_loadu_si128((const __m128i *)p)), &lo, &hi,
               &mid);
        for (size_t i = 1; i < n; i++)
            mulacc(k, (int)(n - 1 - i), _mm_loadu_si128((const __m128i *)(p + 16 * i)), &lo,
                   &hi, &mid);
        s = reduce(lo, hi, _mm_xor_si128(mid, _mm_xor_si128(lo, hi)));
    }
    _mm_storeu_si128((__m128i *)acc, s);
}

/* Sixteen blocks a reduction, four to a 512-bit register: block j of the
 * sixteen times H^(16-j), the four products of each 128-bit lane summed
 * across lanes, then reduce() as above.  Whole groups of 16 only; returns
 * how many blocks it did. */
#define ZMM_FN __attribute__((target("avx512f,vpclmulqdq,pclmul,sse4.1")))

ZMM_FN INLINE __m128i fold4(__m512i v)
{
    __m128i a = _mm_xor_si128(_mm512_castsi512_si128(v), _mm512_extracti32x4_epi32(v, 1));
    __m128i b = _mm_xor_si128(_mm512_extracti32x4_epi32(v, 2), _mm512_extracti32x4_epi32(v, 3));
    return _mm_xor_si128(a, b);
}

ZMM_FN static size_t blocks_zmm(const struct polyval_key *k, uint8_t acc[POLYVAL_LEN],
                                const uint8_t *p, size_t n)
{
    /* pow[] ascending, four to a register, lanes reversed: block 0 of a
     * group meets H^16, block 15 H^1. */
    const __m512i k0 = _mm512_shuffle_i64x2(_mm512_loadu_si512(k->pow[12]),
                                            _mm512_loadu_si512(k->pow[12]), 0x1b);
    const __m512i k1 = _mm512_shuffle_i64x2(_mm512_loadu_si512(k->pow[8]),
                                            _mm512_loadu_si512(k->pow[8]), 0x1b);
    const __m512i k2 = _mm512_shuffle_i64x2(_mm512_loadu_si512(k->pow[4]),
                                            _mm512_loadu_si512(k->pow[4]), 0x1b);
    const __m512i k3 = _mm512_shuffle_i64x2(_mm512_loadu_si512(k->pow[0]),
                                            _mm512_loadu_si512(k->pow[0]), 0x1b);
    __m128i s = _mm_loadu_si128((const __m128i *)acc);
    size_t done = 0;

    for (; n - done >= 16; done += 16, p += 256) {
        __m512i x0 = _mm512_xor_si512(_mm512_loadu_si512(p),
                                      _mm512_inserti32x4(_mm512_setzero_si512(), s, 0));
        __m512i x1 = _mm512_loadu_si512(p + 64), x2 = _mm512_loadu_si512(p + 128),
                x3 = _mm512_loadu_si512(p + 192);
        /* schoolbook, four multiplies: no per-lane shuffles, and 5% faster
         * than Karatsuba's three on an AVX-512 EPYC */
        __m512i lo = _mm512_xor_si512(
            _mm512_xor_si512(_mm512_clmulepi64_epi128(x0, k0, 0x00),
                             _mm512_clmulepi64_epi128(x1, k1, 0x00)),
            _mm512_xor_si512(_mm512_clmulepi64_epi128(x2, k2, 0x00),
                             _mm512_clmulepi64_epi128(x3, k3, 0x00)));
        __m512i hi = _mm512_xor_si512(
            _mm512_xor_si512(_mm512_clmulepi64_epi128(x0, k0, 0x11),
                             _mm512_clmulepi64_epi128(x1, k1, 0x11)),
            _mm512_xor_si512(_mm512_clmulepi64_epi128(x2, k2, 0x11),
                             _mm512_clmulepi64_epi128(x3, k3, 0x11)));
        __m512i mid = _mm512_xor_si512(
            _mm512_xor_si512(_mm512_clmulepi64_epi128(x0, k0, 0x01),
                             _mm512_clmulepi64_epi128(x1, k1, 0x01)),
            _mm512_xor_si512(_mm512_clmulepi64_epi128(x2, k2, 0x01),
                             _mm512_clmulepi64_epi128(x3, k3, 0x01)));
        mid = _mm512_xor_si512(
            mid, _mm512_xor_si512(_mm512_xor_si512(_mm512_clmulepi64_epi128(x0, k0, 0x10),
                                                   _mm512_clmulepi64_epi128(x1, k1, 0x10)),
                                  _mm512_xor_si512(_mm512_clmulepi64_epi128(x2, k2, 0x10),
                                                   _mm512_clmulepi64_epi128(x3, k3, 0x10))));
        s = reduce(fold4(lo), fold4(hi), fold4(mid));
    }
    _mm_storeu_si128((__m128i *)acc, s);
    return done;
}

static bool cpu_has_clmul(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_PCLMUL) && (c & bit_SSE4_1);
}

static bool cpu_has_zmm_clmul(void)
{
    unsigned a, b, c, d, lo, hi;
    if (!cpu_has_clmul() || !__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
        return false;
    /* the OS saves the SSE, AVX and all three AVX-512 parts (opmask, upper
     * ZMM0-15, ZMM16-31) of the register state (XCR0) */
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    if ((lo & 0xe6) != 0xe6)
        return false;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_AVX512F) && (b & bit_AVX2) &&
           (c & bit_VPCLMULQDQ);
}
#endif

/* 2 VPCLMULQDQ (runs of 16 blocks) and PCLMULQDQ, 1 PCLMULQDQ, 0 the
 * portable C, -1 not yet asked. */
static int use_impl = -1;

static int best_impl(void)
{
#ifdef POLYVAL_X86
    return cpu_has_zmm_clmul() ? 2 : cpu_has_clmul() ? 1 : 0;
#else
    return 0;
#endif
}

bool polyval_clmul_available(void)
{
#ifdef POLYVAL_X86
    return cpu_has_clmul();
#else
    return false;
#endif
}

void polyval_use_clmul(bool on)
{
    __atomic_store_n(&use_impl, on ? best_impl() : 0, __ATOMIC_RELAXED);
}

void polyval_key_init(struct polyval_key *k, const uint8_t h[POLYVAL_LEN])
{
    struct op hop, cur;

    k->pow[0][0] = load64le(h);
    k->pow[0][1] = load64le(h + 8);
    op_init(&hop, k->pow[0][0], k->pow[0][1]);
    for (int i = 1; i < 16; i++) {
        op_init(&cur, k->pow[i - 1][0], k->pow[i - 1][1]);
        dot_portable(k->pow[i], &cur, &hop);
    }
    for (int i = 0; i < 16; i++)
        k->khalf[i] = k->pow[i][0] ^ k->pow[i][1];
}

void polyval_blocks(const struct polyval_key *k, uint8_t acc[POLYVAL_LEN], const void *blocks,
                    size_t nblocks)
{
    const uint8_t *p = blocks;
#ifdef POLYVAL_X86
    int impl = __atomic_load_n(&use_impl, __ATOMIC_RELAXED);
    if (impl < 0) {
        impl = best_impl();
        __atomic_store_n(&use_impl, impl, __ATOMIC_RELAXED);
    }
    if (impl > 0) {
        if (impl == 2 && nblocks >= 16) {
            size_t done = blocks_zmm(k, acc, p, nblocks);
            p += 16 * done;
            nblocks -= done;
        }
        if (nblocks)
            blocks_clmul(k, acc, p, nblocks);
        return;
    }
#endif
    blocks_portable(k, acc, p, nblocks);
}

void polyval_msg(const struct polyval_key *k, const void *data, size_t len,
                 uint8_t out[POLYVAL_LEN])
{
    uint8_t acc[POLYVAL_LEN] = {0}, tail[2 * POLYVAL_LEN] = {0};
    size_t full = len / POLYVAL_LEN, rest = len % POLYVAL_LEN;

    polyval_blocks(k, acc, data, full);
    /* the partial block (zero-padded) and the length block in one call */
    if (rest)
        memcpy(tail, (const uint8_t *)data + full * POLYVAL_LEN, rest);
    uint8_t *lenblk = tail + (rest ? POLYVAL_LEN : 0);
    store64le(lenblk, (uint64_t)len * 8);
    polyval_blocks(k, acc, tail, rest ? 2 : 1);
    memcpy(out, acc, POLYVAL_LEN);
}

/* Through a volatile pointer: the compiler can't prove the call is
 * memset's, so it can't drop it as a store to memory never read again. */
static void *(*const volatile wipe_memset)(void *, int, size_t) = memset;

void polyval_wipe(struct polyval_key *k)
{
    wipe_memset(k, 0, sizeof *k);
}
