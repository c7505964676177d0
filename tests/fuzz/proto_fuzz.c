/* libFuzzer target for the control protocol: arbitrary bytes as what the
 * peer sent.  The first byte picks the situation, the rest is the stream:
 *
 *   0 PRE_DEST     proto_recv before authentication, as the destination
 *   1 PRE_SOURCE   the same as the source
 *   2 DEST         proto_recv after authentication (a fixed session key)
 *   3 SOURCE       the same as the source
 *   4 DEST_MACFIX  as DEST, but the harness first makes every MAC in the
 *                  stream valid, so inputs reach the checks behind the MAC
 *                  (sequence numbers, types, payload parsing)
 *   5 SOURCE_MACFIX
 *   6 SERVER       proto_handshake_server reading the stream, then the session
 *   7 CLIENT       proto_handshake_client reading the stream, then the session
 *   8 PARSE        the stream as one payload: proto_chunk_parse, kv_get, kv_next
 *
 * Every payload proto_recv hands out is also given to proto_chunk_parse
 * (CHUNK) or the key=value parsers (the rest).  The stream comes from a
 * memfd, so proto_recv runs its real read path; what we send goes to
 * /dev/null.  The library is built with -DPROTO_FUZZING=0x5a: every nonce
 * is that byte repeated, so inputs can carry valid handshake proofs.
 * tests/fuzz/mkcorpus.c writes the seeds in the same format. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "proto.h"
#include "fuzz_common.h"

static int memfd = -1, nullfd = -1;

static void feed(const uint8_t *d, size_t n)
{
    if (ftruncate(memfd, 0) < 0 || (n && pwrite(memfd, d, n, 0) != (ssize_t)n) ||
        lseek(memfd, 0, SEEK_SET) < 0)
        abort();
}

static void check_err(const char *err)
{
    /* Every failure explains itself in one line. */
    if (!err[0] || strchr(err, '\n'))
        abort();
}

static void parse_payload(const struct proto_conn *c, int type, const uint8_t *p, uint32_t len)
{
    char err[256] = "", key[64], val[256];
    uint64_t idx;
    const uint8_t *d;
    uint32_t dlen;
    size_t pos = 0;
    int rc;

    if (type == MSG_CHUNK || type < 0) {
        rc = proto_chunk_parse(c, p, len, &idx, &d, &dlen, err, sizeof err);
        if (rc)
            check_err(err);
        else if (d != p + PROTO_CHUNK_HDR || dlen != len - PROTO_CHUNK_HDR)
            abort();
        if (type == MSG_CHUNK)
            return;
    }
    static const char *const keys[] = {"reason", "host", "name", "algorithm", "peer", "config"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        rc = kv_get(p, len, keys[i], val, sizeof val);
        if (rc == 0 && strlen(val) >= sizeof val)
            abort();
    }
    rc = kv_get(p, len, "k", val, 4); /* tiny buffer: E2BIG paths */
    for (int i = 0; i < 1000 && (rc = kv_next(p, len, &pos, key, sizeof key, val, sizeof val)) == 1;
         i++)
        if (pos > len)
            abort();
}

static void recv_all(struct proto_conn *c)
{
    for (int i = 0; i < 64; i++) {
        int type = -1;
        uint8_t *p = (uint8_t *)1;
        uint32_t len = 1;
        char err[256] = "";
        int rc = proto_recv(c, &type, &p, &len, err, sizeof err);
        if (rc) {
            check_err(err);
            if (p || len || type)
                abort();
            return;
        }
        if (!p || p[len] != 0)
            abort();
        parse_payload(c, type, p, len);
        free(p);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proto_conn c;
    char err[256] = "";
    uint8_t *copy;
    int mode, rc;

    if (memfd < 0) {
        memfd = memfd_create("proto_fuzz", MFD_CLOEXEC);
        nullfd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (memfd < 0 || nullfd < 0)
            abort();
    }
    if (size < 1)
        return 0;
    mode = data[0] % FUZZ_MODES;
    data++, size--;

    switch (mode) {
    case FUZZ_PRE_DEST:
    case FUZZ_PRE_SOURCE:
        feed(data, size);
        proto_init(&c, memfd, nullfd, 1000);
        c.role = mode == FUZZ_PRE_DEST ? PROTO_ROLE_DEST : PROTO_ROLE_SOURCE;
        recv_all(&c);
        break;
    case FUZZ_DEST:
    case FUZZ_SOURCE:
    case FUZZ_DEST_MACFIX:
    case FUZZ_SOURCE_MACFIX:
        copy = malloc(size ? size : 1);
        if (size)
            memcpy(copy, data, size);
        if (mode == FUZZ_DEST_MACFIX || mode == FUZZ_SOURCE_MACFIX)
            fuzz_fix_macs(copy, size);
        feed(copy, size);
        free(copy);
        proto_init(&c, memfd, nullfd, 1000);
        c.role = mode == FUZZ_DEST || mode == FUZZ_DEST_MACFIX ? PROTO_ROLE_DEST
                                                               : PROTO_ROLE_SOURCE;
        proto_set_session_key(&c, FUZZ_SESSION_KEY);
        recv_all(&c);
        break;
    case FUZZ_SERVER:
    case FUZZ_CLIENT:
        /* The nonces are fixed in this build, so an input can hold valid
         * proofs; after a successful handshake the rest of the stream is the
         * session (seeds carry MACs under the derived key). */
        feed(data, size);
        proto_init(&c, memfd, nullfd, 1000);
        if (mode == FUZZ_SERVER)
            rc = proto_handshake_server(&c, FUZZ_PSK, FUZZ_PSKLEN, err, sizeof err);
        else
            rc = proto_handshake_client(&c, FUZZ_PSK, FUZZ_PSKLEN, "fuzz", err, sizeof err);
        if (rc) {
            if (c.authed)
                abort();
            check_err(err);
            break;
        }
        if (!c.authed || c.send_seq != 2 || c.recv_seq != 2)
            abort();
        recv_all(&c);
        break;
    case FUZZ_PARSE:
        /* An exact-size heap copy, so ASan sees any read past the end. */
        copy = malloc(size ? size : 1);
        if (size)
            memcpy(copy, data, size);
        proto_init(&c, -1, -1, 1000);
        proto_set_session_key(&c, FUZZ_SESSION_KEY); /* the seeds' content ids */
        parse_payload(&c, -1, copy, (uint32_t)size);
        free(copy);
        break;
    }
    return 0;
}
