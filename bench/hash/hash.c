/* bench/hash/hash.c - MiB/s of vmmig's hashes over 1 MiB buffers (a chunk of
 * the migration stream, a blockmirror hash run), best of BENCH_HASH_ROUNDS
 * timings of BENCH_HASH_MB MiB each: BLAKE2b-256 (the stream's content id;
 * also as four 256 KiB chunks in one blake2b_many(), portable and AVX2),
 * SHA-256 portable and SHA-256 with the CPU's SHA extensions (blockmirror's
 * block hashes, cold migration's file check, the MAC).  One line each:
 * NAME MIB_PER_S. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blake2b.h"
#include "sha256.h"

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
            if (which == 0) {
                blake2b(buf, n, d, 32);
            } else if (which == 2) {
                /* four 256 KiB chunks of the MiB at once (vmmig send's split) */
                const void *p[4] = {buf, buf + n / 4, buf + n / 2, buf + 3 * n / 4};
                size_t l[4] = {n / 4, n / 4, n / 4, n / 4};
                unsigned char d4[4][32];
                uint8_t *o[4] = {d4[0], d4[1], d4[2], d4[3]};
                blake2b_many(p, l, 4, o, 32);
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
    printf("blake2b-256 %.0f\n", best_mibps(0, buf, n, mb, rounds));
    blake2b_use_simd(false);
    printf("blake2b-256-x4-portable %.0f\n", best_mibps(2, buf, n, mb, rounds));
    if (blake2b_simd_available()) {
        blake2b_use_simd(true);
        printf("blake2b-256-x4-avx2 %.0f\n", best_mibps(2, buf, n, mb, rounds));
    }
    sha256_use_hw(false);
    printf("sha256-portable %.0f\n", best_mibps(1, buf, n, mb, rounds));
    if (sha256_hw_available()) {
        sha256_use_hw(true);
        printf("sha256-shani %.0f\n", best_mibps(1, buf, n, mb, rounds));
    }
    free(buf);
    return 0;
}
