/* BLAKE2b as specified in RFC 7693 (see blake2b.h); blake2b_many() does
 * four messages at once in the 64-bit lanes of AVX2 registers. */
#include "blake2b.h"

#include <string.h>

/* blake2b_many() in AVX2 where the CPU has it (chosen at run time). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define BLAKE2B_HAVE_AVX2 1
#include <cpuid.h>
#include <immintrin.h>
#endif

static const uint64_t blake2b_iv[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static inline uint64_t rotr64(uint64_t x, unsigned n) { return x >> n | x << (64 - n); }

static inline uint64_t load64(const uint8_t *p)
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

#define G(a, b, c, d, x, y)                                                                \
    do {                                                                                   \
        a = a + b + (x);                                                                   \
        d = rotr64(d ^ a, 32);                                                             \
        c = c + d;                                                                         \
        b = rotr64(b ^ c, 24);                                                             \
        a = a + b + (y);                                                                   \
        d = rotr64(d ^ a, 16);                                                             \
        c = c + d;                                                                         \
        b = rotr64(b ^ c, 63);                                                             \
    } while (0)

/* The rounds unrolled with the schedule as constants, the state in locals:
 * no table lookups and no array traffic in the inner loop.  That is 1.6
 * times faster natively and more under emulation (QEMU's TCG pays for
 * every memory access), where vmmig's dom0 hashes every migrated byte. */
#define ROUND(s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15)           \
    do {                                                                                   \
        G(v0, v4, v8, v12, m##s0, m##s1);                                                  \
        G(v1, v5, v9, v13, m##s2, m##s3);                                                  \
        G(v2, v6, v10, v14, m##s4, m##s5);                                                 \
        G(v3, v7, v11, v15, m##s6, m##s7);                                                 \
        G(v0, v5, v10, v15, m##s8, m##s9);                                                 \
        G(v1, v6, v11, v12, m##s10, m##s11);                                               \
        G(v2, v7, v8, v13, m##s12, m##s13);                                                \
        G(v3, v4, v9, v14, m##s14, m##s15);                                                \
    } while (0)

static void compress(struct blake2b_ctx *ctx, const uint8_t *block, int last)
{
    const uint64_t m0 = load64(block), m1 = load64(block + 8), m2 = load64(block + 16),
                   m3 = load64(block + 24), m4 = load64(block + 32), m5 = load64(block + 40),
                   m6 = load64(block + 48), m7 = load64(block + 56), m8 = load64(block + 64),
                   m9 = load64(block + 72), m10 = load64(block + 80), m11 = load64(block + 88),
                   m12 = load64(block + 96), m13 = load64(block + 104), m14 = load64(block + 112),
                   m15 = load64(block + 120);
    uint64_t v0 = ctx->h[0], v1 = ctx->h[1], v2 = ctx->h[2], v3 = ctx->h[3], v4 = ctx->h[4],
             v5 = ctx->h[5], v6 = ctx->h[6], v7 = ctx->h[7];
    uint64_t v8 = blake2b_iv[0], v9 = blake2b_iv[1], v10 = blake2b_iv[2], v11 = blake2b_iv[3];
    uint64_t v12 = blake2b_iv[4] ^ ctx->t[0], v13 = blake2b_iv[5] ^ ctx->t[1];
    uint64_t v14 = last ? ~blake2b_iv[6] : blake2b_iv[6], v15 = blake2b_iv[7];

    ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    ROUND(14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3);
    ROUND(11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4);
    ROUND(7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8);
    ROUND(9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13);
    ROUND(2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9);
    ROUND(12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11);
    ROUND(13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10);
    ROUND(6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5);
    ROUND(10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0);
    ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    ROUND(14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3);

    ctx->h[0] ^= v0 ^ v8;
    ctx->h[1] ^= v1 ^ v9;
    ctx->h[2] ^= v2 ^ v10;
    ctx->h[3] ^= v3 ^ v11;
    ctx->h[4] ^= v4 ^ v12;
    ctx->h[5] ^= v5 ^ v13;
    ctx->h[6] ^= v6 ^ v14;
    ctx->h[7] ^= v7 ^ v15;
}

static void count(struct blake2b_ctx *ctx, size_t n)
{
    ctx->t[0] += n;
    if (ctx->t[0] < n)
        ctx->t[1]++;
}

void blake2b_init(struct blake2b_ctx *ctx, size_t outlen)
{
    memset(ctx, 0, sizeof *ctx);
    if (!outlen || outlen > BLAKE2B_MAX_OUT)
        outlen = BLAKE2B_MAX_OUT;
    ctx->outlen = outlen;
    memcpy(ctx->h, blake2b_iv, sizeof ctx->h);
    ctx->h[0] ^= 0x01010000ULL ^ outlen; /* depth 1, fanout 1, no key */
}

void blake2b_update(struct blake2b_ctx *ctx, const void *data, size_t len)
{
    const uint8_t *p = data;

    /* The last block is compressed by final() with its flag: keep one back. */
    while (len) {
        if (ctx->nbuf == BLAKE2B_BLOCK) {
            count(ctx, BLAKE2B_BLOCK);
            compress(ctx, ctx->buf, 0);
            ctx->nbuf = 0;
        }
        if (!ctx->nbuf && len > BLAKE2B_BLOCK) {
            count(ctx, BLAKE2B_BLOCK);
            compress(ctx, p, 0);
            p += BLAKE2B_BLOCK;
            len -= BLAKE2B_BLOCK;
            continue;
        }
        size_t n = BLAKE2B_BLOCK - ctx->nbuf;
        if (n > len)
            n = len;
        memcpy(ctx->buf + ctx->nbuf, p, n);
        ctx->nbuf += n;
        p += n;
        len -= n;
    }
}

void blake2b_final(struct blake2b_ctx *ctx, uint8_t *out)
{
    uint8_t full[BLAKE2B_MAX_OUT];

    count(ctx, ctx->nbuf);
    memset(ctx->buf + ctx->nbuf, 0, BLAKE2B_BLOCK - ctx->nbuf);
    compress(ctx, ctx->buf, 1);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++)
            full[8 * i + j] = (uint8_t)(ctx->h[i] >> (8 * j));
    memcpy(out, full, ctx->outlen);
    memset(ctx, 0, sizeof *ctx);
}

void blake2b(const void *data, size_t len, uint8_t *out, size_t outlen)
{
    struct blake2b_ctx ctx;
    blake2b_init(&ctx, outlen);
    blake2b_update(&ctx, data, len);
    blake2b_final(&ctx, out);
}

/* ---- four messages at once (AVX2) ------------------------------------------- */

#ifdef BLAKE2B_HAVE_AVX2

/* RFC 7693 section 2.7; rounds 10 and 11 use rows 0 and 1 again. */
static const uint8_t sigma[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

#define ADD4 _mm256_add_epi64
#define XOR4 _mm256_xor_si256
/* Rotations by whole bytes are shuffles; 63 is a left shift by one. */
#define ROT32(x) _mm256_shuffle_epi32((x), _MM_SHUFFLE(2, 3, 0, 1))
#define ROT24(x) _mm256_shuffle_epi8((x), r24)
#define ROT16(x) _mm256_shuffle_epi8((x), r16)
#define ROT63(x) _mm256_or_si256(_mm256_srli_epi64((x), 63), ADD4((x), (x)))

#define G4(a, b, c, d, x, y)                                                               \
    do {                                                                                   \
        a = ADD4(ADD4(a, b), (x));                                                         \
        d = ROT32(XOR4(d, a));                                                             \
        c = ADD4(c, d);                                                                    \
        b = ROT24(XOR4(b, c));                                                             \
        a = ADD4(ADD4(a, b), (y));                                                         \
        d = ROT16(XOR4(d, a));                                                             \
        c = ADD4(c, d);                                                                    \
        b = ROT63(XOR4(b, c));                                                             \
    } while (0)

/* Rounds in a loop, not unrolled: this code is for throughput, and the
 * static binary has little room.  The non-last blocks of four messages,
 * block b of each at once; a lane whose message has fewer keeps its state
 * (blended back).  The last block of each, and its length, is the caller's. */
__attribute__((target("avx2"))) static void compress_x4(uint64_t hs[8][4],
                                                        const uint8_t *const p[4],
                                                        const uint64_t nblk[4])
{
    static const uint8_t zero[BLAKE2B_BLOCK];
    const __m256i r24 = _mm256_setr_epi8(3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10,
                                         3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10);
    const __m256i r16 = _mm256_setr_epi8(2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9,
                                         2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9);
    const __m256i nb = _mm256_loadu_si256((const __m256i *)nblk);
    __m256i h[8], m[16];
    uint64_t most = 0;

    for (int i = 0; i < 8; i++)
        h[i] = _mm256_loadu_si256((const __m256i *)hs[i]);
    for (int l = 0; l < 4; l++)
        if (nblk[l] > most)
            most = nblk[l];
    for (uint64_t b = 0; b < most; b++) {
        const uint8_t *q[4];
        for (int l = 0; l < 4; l++)
            q[l] = b < nblk[l] ? p[l] + b * BLAKE2B_BLOCK : zero;
        /* Transpose: m[j] holds word j of the four blocks. */
        for (int j = 0; j < 16; j += 4) {
            __m256i a0 = _mm256_loadu_si256((const __m256i *)(q[0] + 8 * j));
            __m256i a1 = _mm256_loadu_si256((const __m256i *)(q[1] + 8 * j));
            __m256i a2 = _mm256_loadu_si256((const __m256i *)(q[2] + 8 * j));
            __m256i a3 = _mm256_loadu_si256((const __m256i *)(q[3] + 8 * j));
            __m256i t0 = _mm256_unpacklo_epi64(a0, a1), t1 = _mm256_unpackhi_epi64(a0, a1);
            __m256i t2 = _mm256_unpacklo_epi64(a2, a3), t3 = _mm256_unpackhi_epi64(a2, a3);
            m[j] = _mm256_permute2x128_si256(t0, t2, 0x20);
            m[j + 1] = _mm256_permute2x128_si256(t1, t3, 0x20);
            m[j + 2] = _mm256_permute2x128_si256(t0, t2, 0x31);
            m[j + 3] = _mm256_permute2x128_si256(t1, t3, 0x31);
        }
        __m256i v0 = h[0], v1 = h[1], v2 = h[2], v3 = h[3], v4 = h[4], v5 = h[5], v6 = h[6],
                v7 = h[7];
        __m256i v8 = _mm256_set1_epi64x((long long)blake2b_iv[0]);
        __m256i v9 = _mm256_set1_epi64x((long long)blake2b_iv[1]);
        __m256i v10 = _mm256_set1_epi64x((long long)blake2b_iv[2]);
        __m256i v11 = _mm256_set1_epi64x((long long)blake2b_iv[3]);
        __m256i v12 = _mm256_set1_epi64x((long long)(blake2b_iv[4] ^ (b + 1) * BLAKE2B_BLOCK));
        __m256i v13 = _mm256_set1_epi64x((long long)blake2b_iv[5]);
        __m256i v14 = _mm256_set1_epi64x((long long)blake2b_iv[6]);
        __m256i v15 = _mm256_set1_epi64x((long long)blake2b_iv[7]);
        for (int r = 0; r < 12; r++) {
            const uint8_t *s = sigma[r < 10 ? r : r - 10];
            G4(v0, v4, v8, v12, m[s[0]], m[s[1]]);
            G4(v1, v5, v9, v13, m[s[2]], m[s[3]]);
            G4(v2, v6, v10, v14, m[s[4]], m[s[5]]);
            G4(v3, v7, v11, v15, m[s[6]], m[s[7]]);
            G4(v0, v5, v10, v15, m[s[8]], m[s[9]]);
            G4(v1, v6, v11, v12, m[s[10]], m[s[11]]);
            G4(v2, v7, v8, v13, m[s[12]], m[s[13]]);
            G4(v3, v4, v9, v14, m[s[14]], m[s[15]]);
        }
        /* Lanes past their message's blocks keep what they had. */
        __m256i live = _mm256_cmpgt_epi64(nb, _mm256_set1_epi64x((long long)b));
        h[0] = _mm256_blendv_epi8(h[0], XOR4(h[0], XOR4(v0, v8)), live);
        h[1] = _mm256_blendv_epi8(h[1], XOR4(h[1], XOR4(v1, v9)), live);
        h[2] = _mm256_blendv_epi8(h[2], XOR4(h[2], XOR4(v2, v10)), live);
        h[3] = _mm256_blendv_epi8(h[3], XOR4(h[3], XOR4(v3, v11)), live);
        h[4] = _mm256_blendv_epi8(h[4], XOR4(h[4], XOR4(v4, v12)), live);
        h[5] = _mm256_blendv_epi8(h[5], XOR4(h[5], XOR4(v5, v13)), live);
        h[6] = _mm256_blendv_epi8(h[6], XOR4(h[6], XOR4(v6, v14)), live);
        h[7] = _mm256_blendv_epi8(h[7], XOR4(h[7], XOR4(v7, v15)), live);
    }
    for (int i = 0; i < 8; i++)
        _mm256_storeu_si256((__m256i *)hs[i], h[i]);
}

static bool cpu_has_avx2(void)
{
    unsigned a, b, c, d, lo, hi;
    /* AVX2 in the CPU, and an OS that saves the YMM registers (XCR0). */
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) || !(c & bit_AVX))
        return false;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    if ((lo & 6) != 6)
        return false;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_AVX2);
}

/* Up to four messages: their non-last blocks in the lanes, then each one's
 * last block by the portable code from the state its lane left. */
static void many_avx2(const void *const data[], const size_t len[], size_t n,
                      uint8_t *const out[], size_t outlen)
{
    struct blake2b_ctx ctx;
    uint64_t hs[8][4], nblk[4];
    const uint8_t *p[4];

    blake2b_init(&ctx, outlen);
    for (size_t l = 0; l < 4; l++) {
        /* a missing message: lane 0's again, its result unused */
        size_t k = l < n ? l : 0;
        p[l] = data[k];
        nblk[l] = len[k] ? (len[k] - 1) / BLAKE2B_BLOCK : 0;
        for (int i = 0; i < 8; i++)
            hs[i][l] = ctx.h[i];
    }
    compress_x4(hs, p, nblk);
    for (size_t l = 0; l < n; l++) {
        size_t done = (size_t)nblk[l] * BLAKE2B_BLOCK;
        blake2b_init(&ctx, outlen);
        for (int i = 0; i < 8; i++)
            ctx.h[i] = hs[i][l];
        ctx.t[0] = done;
        blake2b_update(&ctx, p[l] + done, len[l] - done);
        blake2b_final(&ctx, out[l]);
    }
}
#endif

/* 1 AVX2, 0 portable, -1 not yet asked. */
static int use_simd = -1;

bool blake2b_simd_available(void)
{
#ifdef BLAKE2B_HAVE_AVX2
    return cpu_has_avx2();
#else
    return false;
#endif
}

void blake2b_use_simd(bool on)
{
    __atomic_store_n(&use_simd, on && blake2b_simd_available(), __ATOMIC_RELAXED);
}

void blake2b_many(const void *const data[], const size_t len[], size_t n, uint8_t *const out[],
                  size_t outlen)
{
    size_t i = 0;
#ifdef BLAKE2B_HAVE_AVX2
    int simd = __atomic_load_n(&use_simd, __ATOMIC_RELAXED);
    if (simd < 0) {
        simd = cpu_has_avx2();
        __atomic_store_n(&use_simd, simd, __ATOMIC_RELAXED);
    }
    /* one message alone gains nothing from the lanes */
    while (simd && n - i >= 2) {
        size_t k = n - i < 4 ? n - i : 4;
        many_avx2(data + i, len + i, k, out + i, outlen);
        i += k;
    }
#endif
    for (; i < n; i++)
        blake2b(data[i], len[i], out[i], outlen);
}
