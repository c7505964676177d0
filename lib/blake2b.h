/* BLAKE2b (RFC 7693), unkeyed, for the content ids of stream chunks: about
 * three times fewer instructions a byte than SHA-256 in portable C, which
 * counts where dom0 runs on one emulated CPU. */
#ifndef VMMIG_BLAKE2B_H
#define VMMIG_BLAKE2B_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BLAKE2B_BLOCK 128
#define BLAKE2B_MAX_OUT 64

struct blake2b_ctx {
    uint64_t h[8];
    uint64_t t[2];               /* bytes compressed so far (128-bit counter) */
    uint8_t buf[BLAKE2B_BLOCK];  /* the block not yet compressed */
    size_t nbuf;
    size_t outlen;
};

/* outlen: 1..64 digest bytes. */
void blake2b_init(struct blake2b_ctx *ctx, size_t outlen);
void blake2b_update(struct blake2b_ctx *ctx, const void *data, size_t len);
void blake2b_final(struct blake2b_ctx *ctx, uint8_t *out);
void blake2b(const void *data, size_t len, uint8_t *out, size_t outlen);

/* blake2b() of n independent messages, each digest outlen bytes into
 * out[i]: the same digests, computed four at a time where the CPU has AVX2
 * (one message per 64-bit lane; messages of different lengths are fine,
 * equal ones waste nothing).  Any n; batches of BLAKE2B_LANES use the lanes
 * fully.  Without AVX2, or after blake2b_use_simd(false) (tests and
 * benchmarks compare the two), a loop over blake2b(). */
#define BLAKE2B_LANES 4
void blake2b_many(const void *const data[], const size_t len[], size_t n, uint8_t *const out[],
                  size_t outlen);
bool blake2b_simd_available(void);
void blake2b_use_simd(bool on);

#endif
