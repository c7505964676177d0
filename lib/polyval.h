/* POLYVAL (RFC 8452 section 3), the GF(2^128) universal hash of
 * AES-GCM-SIV, as the keyed per-chunk hash of migration streams: several
 * times cheaper a byte than BLAKE2b or SHA-256 with the CPU's carry-less
 * multiply (PCLMULQDQ, and VPCLMULQDQ with AVX-512, chosen at run time;
 * see bench/hash), portable C elsewhere.  A universal hash, not a MAC on
 * its own: its key must be secret and its result must not be shown (the
 * protocol sends only an HMAC of it, proto_chunk_id); the empty message
 * hashes to zero under every key. */
#ifndef VMMIG_POLYVAL_H
#define VMMIG_POLYVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define POLYVAL_LEN 16

/* H and its first 16 powers, each as two 64-bit words (lo, hi), bit i of
 * lo the coefficient of x^i: pow[i] = H^(i+1) x^(-128 i), so that a
 * carry-less product of a block with pow[i] and one reduction by x^-128
 * (RFC 8452's dot) multiplies it by the (i+1)th power of the hash key,
 * and the fast paths sum the products of 8 or 16 blocks before reducing
 * once.  khalf[i] = lo ^ hi of pow[i], Karatsuba's middle operand.  Plain
 * data: copy it freely, wipe it with polyval_wipe(). */
struct polyval_key {
    uint64_t pow[16][2];
    uint64_t khalf[16];
};

void polyval_key_init(struct polyval_key *k, const uint8_t h[POLYVAL_LEN]);

/* RFC 8452's POLYVAL(H, X_1, ..., X_n) over nblocks whole 16-byte blocks
 * (any alignment), continuing from acc (16 zero bytes to start); acc is
 * updated in place, so a message may be hashed in pieces of whole blocks. */
void polyval_blocks(const struct polyval_key *k, uint8_t acc[POLYVAL_LEN], const void *blocks,
                    size_t nblocks);

/* A message of any length: POLYVAL from zero over the data, its last block
 * zero-padded to 16 bytes, then one length block: the data's length in
 * bits (mod 2^64) as a little-endian 64-bit integer, then 8 zero bytes.
 * That is AES-GCM-SIV's POLYVAL input (RFC 8452 section 4) with the data
 * as the AAD and an empty plaintext (with the data as the plaintext and an
 * empty AAD, the bit length would be in the second 8 bytes instead).
 * out = the final accumulator. */
void polyval_msg(const struct polyval_key *k, const void *data, size_t len,
                 uint8_t out[POLYVAL_LEN]);

/* The CPU has PCLMULQDQ (and SSE4.1). */
bool polyval_clmul_available(void);
/* Tests and benchmarks: false forces the portable C, true the fastest
 * path the CPU has (PCLMULQDQ; VPCLMULQDQ with AVX-512 for runs of 16
 * blocks and more where the CPU and the OS have it). */
void polyval_use_clmul(bool on);

/* Zero the key in a way the compiler cannot drop as a dead store. */
void polyval_wipe(struct polyval_key *k);

#endif
