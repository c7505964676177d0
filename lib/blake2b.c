/* BLAKE2b as specified in RFC 7693 (see blake2b.h). */
#include "blake2b.h"

#include <string.h>

static const uint64_t blake2b_iv[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

/* The message word schedule of each round (rounds 10 and 11 reuse 0 and 1). */
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

static inline uint64_t rotr64(uint64_t x, unsigned n) { return x >> n | x << (64 - n); }

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
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

static void compress(struct blake2b_ctx *ctx, const uint8_t *block, int last)
{
    uint64_t m[16], v[16];

    for (int i = 0; i < 16; i++)
        m[i] = load64(block + 8 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = ctx->h[i];
        v[i + 8] = blake2b_iv[i];
    }
    v[12] ^= ctx->t[0];
    v[13] ^= ctx->t[1];
    if (last)
        v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = sigma[r % 10];
        G(v[0], v[4], v[8], v[12], m[s[0]], m[s[1]]);
        G(v[1], v[5], v[9], v[13], m[s[2]], m[s[3]]);
        G(v[2], v[6], v[10], v[14], m[s[4]], m[s[5]]);
        G(v[3], v[7], v[11], v[15], m[s[6]], m[s[7]]);
        G(v[0], v[5], v[10], v[15], m[s[8]], m[s[9]]);
        G(v[1], v[6], v[11], v[12], m[s[10]], m[s[11]]);
        G(v[2], v[7], v[8], v[13], m[s[12]], m[s[13]]);
        G(v[3], v[4], v[9], v[14], m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++)
        ctx->h[i] ^= v[i] ^ v[i + 8];
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
