/* Shared by the fuzz target and the seed writer: the situations (first byte
 * of an input), the fixed keys, and the MAC fix-up. */
#ifndef VMMIG_FUZZ_COMMON_H
#define VMMIG_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto.h"
#include "sha256.h"

enum {
    FUZZ_PRE_DEST,
    FUZZ_PRE_SOURCE,
    FUZZ_DEST,
    FUZZ_SOURCE,
    FUZZ_DEST_MACFIX,
    FUZZ_SOURCE_MACFIX,
    FUZZ_SERVER,
    FUZZ_CLIENT,
    FUZZ_PARSE,
    FUZZ_MODES
};

/* The fuzzing build of lib/proto.c uses this byte for every nonce. */
#ifndef PROTO_FUZZING
#error "build with -DPROTO_FUZZING=0x5a, as tests/fuzz/run.sh does"
#endif

/* A session key fixed for fuzzing only: it stands for "after the handshake". */
static const uint8_t FUZZ_SESSION_KEY[32] = {
    0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x73, 0x65, 0x73, 0x73, 0x69, 0x6f, 0x6e, 0x2d, 0x6b, 0x65, 0x79,
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
};
#define FUZZ_PSK ((const uint8_t *)"fuzzing pre-shared key")
#define FUZZ_PSKLEN 22

static inline uint32_t fuzz_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Rewrite the MAC of every whole frame in the stream to the valid one. */
static inline void fuzz_fix_macs(uint8_t *d, size_t n)
{
    size_t off = 0;

    while (n - off >= PROTO_HEADER_LEN) {
        uint32_t len = fuzz_be32(d + off + 12);
        uint8_t mac[SHA256_LEN];
        if (len > PROTO_MAX_PAYLOAD || n - off - PROTO_HEADER_LEN < (size_t)len + PROTO_MAC_LEN)
            return;
        hmac_sha256(FUZZ_SESSION_KEY, sizeof FUZZ_SESSION_KEY, d + off, PROTO_HEADER_LEN + len,
                    mac);
        memcpy(d + off + PROTO_HEADER_LEN + len, mac, PROTO_MAC_LEN);
        off += PROTO_HEADER_LEN + len + PROTO_MAC_LEN;
    }
}

#endif
