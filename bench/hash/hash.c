/* bench/hash/hash.c - MiB/s of vmmig's hashes over 1 MiB buffers (a chunk of
 * the migration stream, a blockmirror hash run), best of BENCH_HASH_ROUNDS
 * timings of BENCH_HASH_MB MiB each: SHA-256 portable and SHA-256 with the CPU's SHA extensions (blockmirror's
 * block hashes, cold migration's file check, the MAC), POLYVAL (the
 * stream's chunks, under the content id's HMAC) portable, PCLMULQDQ alone (calls of 15 blocks, which the
 * AVX-512 code never takes) and the default choice in 1 MiB calls.  One
 * line each: NAME MIB_PER_S. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "polyval.h"
#include "sha256.h"

static struct polyval_key pv_key;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double best_mibps(int which, const unsigned char *buf, size_t n, int mb, int rounds)
{
    unsigned char d[32];
    double best = 0;
    for (int r = 0; r < rounds; r++) {
        double t = now_s();
        for (int i = 0; i < mb; i++) {
            if (which == 3) {
                polyval_msg(&pv_key, buf, n, d);
            } else if (which == 4) {
                /* at most 15 blocks a call: PCLMULQDQ even with AVX-512 */
                memset(d, 0, POLYVAL_LEN);
                for (size_t o = 0; o < n; o += 15 * 16)
                    polyval_blocks(&pv_key, d, buf + o, (n - o) / 16 < 15 ? (n - o) / 16 : 15);
            } else {
                sha256(buf, n, d);
            }
        }
        double v = mb / (now_s() - t);
        if (v > best)
            best = v;
    }
    return best;
}

int main(void)
{
    const char *e = getenv("BENCH_HASH_MB"), *f = getenv("BENCH_HASH_ROUNDS");
    int mb = e ? atoi(e) : 256, rounds = f ? atoi(f) : 3;
    size_t n = 1 << 20;
    unsigned char *buf = malloc(n);
    unsigned x = 1;

    if (!buf || mb < 1 || rounds < 1)
        return 2;
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)((x = x * 1103515245 + 12345) >> 16);
    sha256_use_hw(false);
    printf("sha256-portable %.0f\n", best_mibps(1, buf, n, mb, rounds));
    if (sha256_hw_available()) {
        sha256_use_hw(true);
        printf("sha256-shani %.0f\n", best_mibps(1, buf, n, mb, rounds));
    }
    {
        static const uint8_t h[POLYVAL_LEN] = {0x25, 0x62, 0x93, 0x47, 0x58, 0x92, 0x42, 0x76,
                                               0x1d, 0x31, 0xf8, 0x26, 0xba, 0x4b, 0x75, 0x7b};
        polyval_key_init(&pv_key, h);
    }
    polyval_use_clmul(false);
    printf("polyval-portable %.0f\n", best_mibps(3, buf, n, mb, rounds));
    if (polyval_clmul_available()) {
        polyval_use_clmul(true);
        printf("polyval-clmul %.0f\n", best_mibps(4, buf, n, mb, rounds));
        printf("polyval-fast %.0f\n", best_mibps(3, buf, n, mb, rounds));
    }
    polyval_wipe(&pv_key);
    free(buf);
    return 0;
}
