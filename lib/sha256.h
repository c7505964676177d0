/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), written here because the
 * static musl build links no crypto library.  Also the two helpers every
 * user of a MAC needs: a constant-time comparison and a wipe the compiler
 * cannot drop. */
#ifndef VMMIG_SHA256_H
#define VMMIG_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32   /* digest bytes */
#define SHA256_BLOCK 64 /* block bytes */

struct sha256_ctx {
    uint32_t h[8];
    uint64_t nbytes;          /* message length so far */
    uint8_t buf[SHA256_BLOCK]; /* a partial block */
    size_t nbuf;
};

void sha256_init(struct sha256_ctx *ctx);
void sha256_update(struct sha256_ctx *ctx, const void *data, size_t len);
/* Writes the digest and wipes the context. */
void sha256_final(struct sha256_ctx *ctx, uint8_t out[SHA256_LEN]);
void sha256(const void *data, size_t len, uint8_t out[SHA256_LEN]);
/* Does this CPU have the SHA extensions (x86-64 SHA-NI)?  They are used
 * when it has; sha256_use_hw(false) makes this process use the portable
 * code (tests and benchmarks compare the two). */
bool sha256_hw_available(void);
void sha256_use_hw(bool on);

struct hmac_sha256_ctx {
    struct sha256_ctx inner, outer;
};

/* Keys longer than a block are hashed first (RFC 2104 section 2). */
void hmac_sha256_init(struct hmac_sha256_ctx *ctx, const void *key, size_t keylen);
void hmac_sha256_update(struct hmac_sha256_ctx *ctx, const void *data, size_t len);
void hmac_sha256_final(struct hmac_sha256_ctx *ctx, uint8_t out[SHA256_LEN]);
void hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                 uint8_t out[SHA256_LEN]);

/* Equal?  Takes the same time wherever the first difference is, so a peer
 * cannot learn a MAC byte by byte from response times. */
bool ct_memeq(const void *a, const void *b, size_t n);

/* memset(0) that survives dead-store elimination: for keys on the stack. */
void secure_zero(void *p, size_t n);

#endif
