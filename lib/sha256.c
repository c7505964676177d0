/* SHA-256 per FIPS 180-4 section 6.2, HMAC per RFC 2104.  Portable C, and
 * on x86-64 CPUs with the SHA extensions (Intel since Goldmont and Ice Lake,
 * AMD since Zen) the same compression in SHA-NI instructions, chosen at run
 * time: every byte of a migration's stream is hashed on both hosts
 * (vmmig-protocol(7)), and SHA-NI does it several times faster. */
#include "sha256.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SHA256_HAVE_NI 1
#include <cpuid.h>
#include <immintrin.h>
#endif

/* FIPS 180-4 section 4.2.2: the first 32 bits of the fractional parts of the
 * cube roots of the first 64 primes. */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t ror(uint32_t x, unsigned n)
{
    return (x >> n) | (x << (32 - n));
}

static inline uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void compress_c(uint32_t h[8], const uint8_t *block)
{
    uint32_t w[64], a, b, c, d, e, f, g, hh, t1, t2;
    int t;

    for (t = 0; t < 16; t++)
        w[t] = load_be32(block + 4 * t);
    for (t = 16; t < 64; t++) {
        uint32_t s0 = ror(w[t - 15], 7) ^ ror(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = ror(w[t - 2], 17) ^ ror(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (t = 0; t < 64; t++) {
        t1 = hh + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t];
        t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

#ifdef SHA256_HAVE_NI
/* The same 64 rounds, four at a time: the state in the order the
 * instructions want (ABEF, CDGH), the schedule W[t..t+3] in a ring of four
 * registers, each made from the four before it (sha256msg1/msg2). */
__attribute__((target("sha,sse4.1,ssse3"))) static void compress_ni(uint32_t h[8],
                                                                    const uint8_t *block)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i dcba = _mm_loadu_si128((const __m128i *)&h[0]);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)&h[4]);
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xb1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1b);
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xf0);
    __m128i abef0 = abef, cdgh0 = cdgh, m[4];

    for (int i = 0; i < 4; i++)
        m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(block + 16 * i)), bswap);
    /* Unrolled, the ring stays in registers. */
#pragma GCC unroll 16
    for (int r = 0; r < 16; r++) {
        if (r >= 4) { /* W[t] from W[t-16], W[t-15], W[t-7], W[t-2] */
            __m128i x = _mm_sha256msg1_epu32(m[r % 4], m[(r + 1) % 4]);
            x = _mm_add_epi32(x, _mm_alignr_epi8(m[(r + 3) % 4], m[(r + 2) % 4], 4));
            m[r % 4] = _mm_sha256msg2_epu32(x, m[(r + 3) % 4]);
        }
        __m128i wk = _mm_add_epi32(m[r % 4], _mm_loadu_si128((const __m128i *)&K[4 * r]));
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0e));
    }
    abef = _mm_add_epi32(abef, abef0);
    cdgh = _mm_add_epi32(cdgh, cdgh0);
    __m128i feba = _mm_shuffle_epi32(abef, 0x1b);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xb1);
    _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(feba, dchg, 0xf0));
    _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(dchg, feba, 8));
}

static bool cpu_has_sha_ni(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3))
        return false;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA);
}
#endif

/* 1 SHA-NI, 0 portable, -1 not yet asked. */
static int use_ni = -1;

bool sha256_hw_available(void)
{
#ifdef SHA256_HAVE_NI
    return cpu_has_sha_ni();
#else
    return false;
#endif
}

void sha256_use_hw(bool on)
{
    use_ni = on && sha256_hw_available();
}

static void compress(uint32_t h[8], const uint8_t *block)
{
#ifdef SHA256_HAVE_NI
    int ni = __atomic_load_n(&use_ni, __ATOMIC_RELAXED);
    if (ni < 0) {
        ni = cpu_has_sha_ni();
        __atomic_store_n(&use_ni, ni, __ATOMIC_RELAXED);
    }
    if (ni) {
        compress_ni(h, block);
        return;
    }
#endif
    compress_c(h, block);
}

void sha256_init(struct sha256_ctx *ctx)
{
    /* Section 5.3.3: square roots of the first 8 primes. */
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(ctx->h, iv, sizeof iv);
    ctx->nbytes = 0;
    ctx->nbuf = 0;
}

void sha256_update(struct sha256_ctx *ctx, const void *data, size_t len)
{
    const uint8_t *p = data;

    ctx->nbytes += len;
    if (ctx->nbuf) {
        size_t n = SHA256_BLOCK - ctx->nbuf;
        if (n > len)
            n = len;
        memcpy(ctx->buf + ctx->nbuf, p, n);
        ctx->nbuf += n;
        p += n;
        len -= n;
        if (ctx->nbuf < SHA256_BLOCK)
            return;
        compress(ctx->h, ctx->buf);
        ctx->nbuf = 0;
    }
    /* Whole blocks straight from the caller's buffer: no copy. */
    for (; len >= SHA256_BLOCK; p += SHA256_BLOCK, len -= SHA256_BLOCK)
        compress(ctx->h, p);
    if (len) {
        memcpy(ctx->buf, p, len);
        ctx->nbuf = len;
    }
}

void sha256_final(struct sha256_ctx *ctx, uint8_t out[SHA256_LEN])
{
    uint64_t bits = ctx->nbytes * 8;

    /* Section 5.1.1: a 1 bit, zeros, then the length in bits as 64 bits,
     * ending on a block boundary. */
    ctx->buf[ctx->nbuf++] = 0x80;
    if (ctx->nbuf > SHA256_BLOCK - 8) {
        memset(ctx->buf + ctx->nbuf, 0, SHA256_BLOCK - ctx->nbuf);
        compress(ctx->h, ctx->buf);
        ctx->nbuf = 0;
    }
    memset(ctx->buf + ctx->nbuf, 0, SHA256_BLOCK - 8 - ctx->nbuf);
    store_be32(ctx->buf + 56, (uint32_t)(bits >> 32));
    store_be32(ctx->buf + 60, (uint32_t)bits);
    compress(ctx->h, ctx->buf);
    for (int i = 0; i < 8; i++)
        store_be32(out + 4 * i, ctx->h[i]);
    /* The state of an HMAC's inner hash is as good as the key. */
    secure_zero(ctx, sizeof *ctx);
}

void sha256(const void *data, size_t len, uint8_t out[SHA256_LEN])
{
    struct sha256_ctx ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, data, len);
    sha256_final(&ctx, out);
}

void hmac_sha256_init(struct hmac_sha256_ctx *ctx, const void *key, size_t keylen)
{
    uint8_t k[SHA256_BLOCK] = {0}, pad[SHA256_BLOCK];

    if (keylen > SHA256_BLOCK)
        sha256(key, keylen, k);
    else if (keylen)
        memcpy(k, key, keylen);
    for (int i = 0; i < SHA256_BLOCK; i++)
        pad[i] = k[i] ^ 0x36;
    sha256_init(&ctx->inner);
    sha256_update(&ctx->inner, pad, sizeof pad);
    for (int i = 0; i < SHA256_BLOCK; i++)
        pad[i] = k[i] ^ 0x5c;
    sha256_init(&ctx->outer);
    sha256_update(&ctx->outer, pad, sizeof pad);
    secure_zero(k, sizeof k);
    secure_zero(pad, sizeof pad);
}

void hmac_sha256_update(struct hmac_sha256_ctx *ctx, const void *data, size_t len)
{
    sha256_update(&ctx->inner, data, len);
}

void hmac_sha256_final(struct hmac_sha256_ctx *ctx, uint8_t out[SHA256_LEN])
{
    uint8_t ih[SHA256_LEN];

    sha256_final(&ctx->inner, ih);
    sha256_update(&ctx->outer, ih, sizeof ih);
    sha256_final(&ctx->outer, out);
    secure_zero(ih, sizeof ih);
}

void hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                 uint8_t out[SHA256_LEN])
{
    struct hmac_sha256_ctx ctx;
    hmac_sha256_init(&ctx, key, keylen);
    hmac_sha256_update(&ctx, data, len);
    hmac_sha256_final(&ctx, out);
}

bool ct_memeq(const void *a, const void *b, size_t n)
{
    /* volatile: keep the compiler from turning the loop into an early-exit
     * memcmp. */
    const volatile uint8_t *x = a, *y = b;
    uint8_t d = 0;

    for (size_t i = 0; i < n; i++)
        d |= x[i] ^ y[i];
    return d == 0;
}

void secure_zero(void *p, size_t n)
{
    volatile uint8_t *v = p;
    while (n--)
        *v++ = 0;
}
