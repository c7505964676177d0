/* blake2b_many() (lib/blake2b.c, four messages per AVX2 call) against
 * blake2b(): the published digests, every length 0..300, lengths around
 * the 128-byte blocks, four different lengths in one call, misaligned
 * inputs, 1 MiB random buffers, fewer than four messages, outlen 32 and
 * 64; with AVX2 where the CPU has it and with the portable loop forced. */
#include <stdlib.h>

#include "blake2b.h"
#include "tap.h"

static uint8_t *rnd;
#define RND_LEN ((1 << 20) + 64)

static const char *hex(const uint8_t *d, size_t n)
{
    static char s[2 * BLAKE2B_MAX_OUT + 1];
    for (size_t i = 0; i < n; i++)
        snprintf(s + 2 * i, 3, "%02x", d[i]);
    return s;
}

/* n messages in one call; 1 when each digest equals blake2b()'s. */
static int same(const uint8_t *const msg[], const size_t len[], size_t n, size_t outlen)
{
    uint8_t d[8][BLAKE2B_MAX_OUT], want[BLAKE2B_MAX_OUT];
    uint8_t *out[8] = {0};
    const void *data[8] = {0};

    for (size_t i = 0; i < n; i++)
        out[i] = d[i], data[i] = msg[i];
    blake2b_many(data, len, n, out, outlen);
    for (size_t i = 0; i < n; i++) {
        blake2b(msg[i], len[i], want, outlen);
        if (memcmp(d[i], want, outlen)) {
            printf("# message %zu of %zu (%zu bytes, outlen %zu) differs\n", i, n, len[i],
                   outlen);
            return 0;
        }
    }
    return 1;
}

static void check_all(const char *how)
{
    /* Published digests (RFC 7693 appendix A; Python's hashlib), the four
     * in one call. */
    {
        static uint8_t ys[129];
        memset(ys, 'y', sizeof ys);
        const void *m[4] = {"", "abc", ys, "abc"};
        size_t l[4] = {0, 3, 129, 3};
        uint8_t d[4][64], *o[4] = {d[0], d[1], d[2], d[3]};
        blake2b_many(m, l, 3, o, 32);
        is_str(hex(d[0], 32), "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8",
               "%s: BLAKE2b-256 of the empty message", how);
        is_str(hex(d[1], 32), "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319",
               "%s: BLAKE2b-256 of abc", how);
        is_str(hex(d[2], 32), "1fae0060de404a27c2a5cb5668c24b7277cc51ddd2c3dae88b8a824a81193a49",
               "%s: BLAKE2b-256 of 129 y", how);
        blake2b_many(m + 1, l + 1, 3, o, 64);
        is_str(hex(d[2], 64),
               "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
               "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923",
               "%s: BLAKE2b-512 of abc (RFC 7693 appendix A)", how);
    }
    /* Every length 0..300, four consecutive lengths a call (so the lanes
     * differ by a byte), outlen 32 and 64. */
    for (size_t outlen = 32; outlen <= 64; outlen += 32) {
        int bad = 0;
        for (size_t n = 0; n <= 300; n++) {
            const uint8_t *m[4] = {rnd, rnd + 1, rnd + 2, rnd + 3};
            size_t l[4] = {n, n + 1 > 300 ? n : n + 1, n + 2 > 300 ? n : n + 2, n};
            bad += !same(m, l, 4, outlen);
        }
        ok(!bad, "%s: lengths 0..300, outlen %zu", how, outlen);
    }
    /* Around the block boundaries, all four the same length. */
    {
        static const size_t edge[] = {127, 128, 129, 255, 256, 257, 383, 384, 385, 1023,
                                      1024, 1025, 4095, 4096, 4097, 65536, 262144};
        int bad = 0;
        for (size_t e = 0; e < sizeof edge / sizeof *edge; e++) {
            const uint8_t *m[4] = {rnd, rnd + 300000, rnd + 600000, rnd + 700001};
            size_t l[4] = {edge[e], edge[e], edge[e], edge[e]};
            bad += !same(m, l, 4, 32);
        }
        ok(!bad, "%s: four of one length around block boundaries", how);
    }
    /* Four very different lengths: the lanes finish blocks apart. */
    {
        const uint8_t *m[4] = {rnd + 5, rnd + 100003, rnd + 200000, rnd + 400007};
        size_t l[4] = {0, 200000, 129, 77777};
        ok(same(m, l, 4, 32), "%s: lengths 0, 200000, 129 and 77777 in one call", how);
        size_t l2[4] = {128, 1, 640, 65535};
        ok(same(m, l2, 4, 64), "%s: lengths 128, 1, 640 and 65535, outlen 64", how);
    }
    /* Misaligned starts (each offset 1..7 from the buffer's alignment). */
    {
        int bad = 0;
        for (size_t a = 1; a < 8; a++) {
            const uint8_t *m[4] = {rnd + a, rnd + 1000 + a, rnd + 3000 + 2 * a, rnd + 9000 + 3 * a};
            size_t l[4] = {1000 + a, 1000, 999 + a, 4096};
            bad += !same(m, l, 4, 32);
        }
        ok(!bad, "%s: misaligned inputs", how);
    }
    /* 1 MiB random buffers (a whole chunk each), and one at an odd offset. */
    {
        const uint8_t *m[4] = {rnd, rnd + 1, rnd + 7, rnd + 64};
        size_t l[4] = {1 << 20, 1 << 20, 1 << 20, 1 << 20};
        ok(same(m, l, 4, 32), "%s: four 1 MiB random buffers", how);
    }
    /* Fewer than four (and more: two calls' worth). */
    for (size_t n = 0; n <= 7; n++) {
        const uint8_t *m[7] = {rnd, rnd + 11, rnd + 222, rnd + 3333, rnd + 44, rnd + 5, rnd + 6};
        size_t l[7] = {4096, 300, 128, 0, 70000, 1, 129};
        ok(same(m, l, n, 32), "%s: %zu message(s) in one call", how, n);
    }
}

int main(void)
{
    unsigned x = 12345;
    rnd = malloc(RND_LEN);
    if (!rnd)
        return 1;
    for (size_t i = 0; i < RND_LEN; i++)
        rnd[i] = (uint8_t)((x = x * 1103515245 + 12345) >> 16);

    blake2b_use_simd(false);
    check_all("portable");
    if (blake2b_simd_available()) {
        blake2b_use_simd(true);
        check_all("AVX2");
    } else {
        ok(1, "# SKIP this CPU has no AVX2");
    }
    free(rnd);
    return done_testing();
}
