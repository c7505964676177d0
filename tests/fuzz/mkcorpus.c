/* Write the fuzz seeds: valid streams for each situation of proto_fuzz.c,
 * made with the library's own sender so they stay valid when the framing
 * changes.  Usage: mkcorpus DIR (tests/fuzz/run.sh --seeds runs it). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "proto.h"

static const char *dir;
static int fd = -1;
static struct proto_conn c;
static int nfiles;

/* Start a seed: the situation byte, then a sender writing into the file in
 * the state the fuzz target will read it in. */
static void start(const char *name, int mode, enum proto_role sender, bool authed)
{
    char path[512];
    uint8_t m = (uint8_t)mode;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, &m, 1) != 1) {
        perror(path);
        exit(1);
    }
    proto_init(&c, -1, fd, 1000);
    c.role = sender;
    c.authed = false;
    if (authed)
        proto_set_session_key(&c, FUZZ_SESSION_KEY);
}

static void finish(void)
{
    close(fd);
    fd = -1;
    nfiles++;
}

static void msg(int type, const char *text)
{
    int rc = proto_send(&c, type, text, text ? (uint32_t)strlen(text) : 0);
    if (rc) {
        fprintf(stderr, "mkcorpus: sending %s: %s\n", msg_type_name(type), strerror(-rc));
        exit(1);
    }
}

static void raw(int type, const void *p, uint32_t len)
{
    if (proto_send(&c, type, p, len))
        exit(1);
}

static void chunk(uint64_t idx, uint32_t len)
{
    uint8_t *d = malloc(len ? len : 1);
    for (uint32_t i = 0; i < len; i++)
        d[i] = (uint8_t)(i * 7 + idx);
    if (proto_send_chunk(&c, idx, d, len))
        exit(1);
    free(d);
}

/* HMAC-SHA256(FUZZ_PSK, label || a || b), as the handshake computes it. */
static void derive(const char *label, const uint8_t *a, const uint8_t *b, uint8_t out[32])
{
    struct hmac_sha256_ctx h;
    hmac_sha256_init(&h, FUZZ_PSK, FUZZ_PSKLEN);
    hmac_sha256_update(&h, label, strlen(label));
    hmac_sha256_update(&h, a, 32);
    hmac_sha256_update(&h, b, 32);
    hmac_sha256_final(&h, out);
}

/* After the handshake messages of a seed: the session, as the handshake
 * leaves it (seq 2 in both directions). */
static void session(const uint8_t *nc, const uint8_t *ns)
{
    derive("vmmig-session", nc, ns, c.key);
    proto_set_session_key(&c, c.key);
    c.send_seq = 2;
}

/* A whole file as one payload, for FUZZ_PARSE. */
static void payload(const char *name, const void *p, size_t n)
{
    start(name, FUZZ_PARSE, PROTO_ROLE_ANY, false);
    if (write(fd, p, n) != (ssize_t)n)
        exit(1);
    finish();
}

int main(int argc, char **argv)
{
    uint8_t nonce[64];
    struct strbuf sb = {0};

    if (argc != 2) {
        fprintf(stderr, "usage: mkcorpus DIR\n");
        return 2;
    }
    dir = argv[1];
    memset(nonce, 0x11, sizeof nonce);

    /* What a destination hears before authentication: HELLO, AUTH. */
    start("pre-dest-hello-auth", FUZZ_PRE_DEST, PROTO_ROLE_SOURCE, false);
    sb_add(&sb, (const char *)nonce, 32);
    kv_add(&sb, "host", "hostA");
    raw(MSG_HELLO, sb.s, (uint32_t)sb.len);
    raw(MSG_AUTH, nonce, 32);
    finish();
    /* ... and a source: CHALLENGE, AUTH_OK / AUTH_FAIL. */
    start("pre-source-challenge-ok", FUZZ_PRE_SOURCE, PROTO_ROLE_DEST, false);
    raw(MSG_CHALLENGE, nonce, 64);
    msg(MSG_AUTH_OK, NULL);
    finish();
    start("pre-source-auth-fail", FUZZ_PRE_SOURCE, PROTO_ROLE_DEST, false);
    msg(MSG_AUTH_FAIL, "reason=authentication failed\n");
    finish();

    /* The handshakes themselves, from the other side's messages. */
    start("server-hello-auth", FUZZ_SERVER, PROTO_ROLE_SOURCE, false);
    raw(MSG_HELLO, sb.s, (uint32_t)sb.len);
    raw(MSG_AUTH, nonce, 32);
    finish();
    start("server-hello-empty-auth", FUZZ_SERVER, PROTO_ROLE_SOURCE, false);
    raw(MSG_HELLO, sb.s, (uint32_t)sb.len);
    raw(MSG_AUTH, NULL, 0);
    finish();
    start("client-challenge", FUZZ_CLIENT, PROTO_ROLE_DEST, false);
    raw(MSG_CHALLENGE, nonce, 64);
    msg(MSG_AUTH_OK, NULL);
    finish();
    start("client-auth-fail", FUZZ_CLIENT, PROTO_ROLE_DEST, false);
    msg(MSG_AUTH_FAIL, "reason=malformed HELLO\n");
    finish();
    start("client-auth-fail-bare", FUZZ_CLIENT, PROTO_ROLE_DEST, false);
    msg(MSG_AUTH_FAIL, "go away");
    finish();

    /* Whole sessions: valid proofs (the fuzzing build's nonces are all
     * PROTO_FUZZING), then MAC-protected messages under the session key. */
    {
        uint8_t fixed[32], peer[32], proof[64];
        memset(fixed, PROTO_FUZZING, sizeof fixed);
        memset(peer, 0x11, sizeof peer);

        /* The server's nonce is fixed; the client's comes from the HELLO. */
        start("server-session", FUZZ_SERVER, PROTO_ROLE_SOURCE, false);
        raw(MSG_HELLO, sb.s, (uint32_t)sb.len); /* nonce 0x11..., host=hostA */
        derive("vmmig-client", fixed, peer, proof);
        raw(MSG_AUTH, proof, 32);
        session(peer, fixed);
        msg(MSG_MIG_REQ, "name=guest-1\nmemory_kib=1024\npeer=a\n");
        msg(MSG_MIG_CFG, "config=name = \"x\"\\nmemory = 1\n");
        chunk(0, 100);
        msg(MSG_STREAM_END, "chunks=1\nbytes=100\n");
        msg(MSG_COMMIT, NULL);
        msg(MSG_DONE, NULL);
        finish();

        /* The client's nonce is fixed; the server's is in the CHALLENGE. */
        start("client-session", FUZZ_CLIENT, PROTO_ROLE_DEST, false);
        memcpy(proof, peer, 32);
        derive("vmmig-server", fixed, peer, proof + 32);
        raw(MSG_CHALLENGE, proof, 64);
        msg(MSG_AUTH_OK, NULL);
        session(fixed, peer);
        msg(MSG_REQ_OK, "algorithm=precopy\nreservation=1\n");
        msg(MSG_CFG_OK, NULL);
        msg(MSG_RECEIVED, NULL);
        msg(MSG_ACTIVATED, "result=failed\nreason=no memory\ndomid=0\n");
        msg(MSG_ABORT, "reason=bye\n");
        finish();

        start("client-proof-ok-then-fail", FUZZ_CLIENT, PROTO_ROLE_DEST, false);
        raw(MSG_CHALLENGE, proof, 64);
        msg(MSG_AUTH_FAIL, "reason=authentication failed\n");
        finish();
    }

    /* A whole migration as the destination hears it, MACs valid. */
    for (int fix = 0; fix < 2; fix++) {
        start(fix ? "dest-migration-macfix" : "dest-migration",
              fix ? FUZZ_DEST_MACFIX : FUZZ_DEST, PROTO_ROLE_SOURCE, true);
        sb_reset(&sb);
        kv_add(&sb, "name", "guest-1");
        kv_add(&sb, "uuid", "6f1c1f8e-0000-4000-8000-00000000a001");
        kv_add(&sb, "memory_kib", "%d", 1048576);
        kv_add(&sb, "vcpus", "%d", 2);
        kv_add(&sb, "algorithms", "precopy,stopcopy");
        kv_add(&sb, "backend", "xen");
        kv_add(&sb, "hold.admin", "0");
        kv_add(&sb, "peer", "6f1c1f8e-0000-4000-8000-00000000a002");
        kv_add(&sb, "peer", "6f1c1f8e-0000-4000-8000-00000000a003");
        raw(MSG_MIG_REQ, sb.s, (uint32_t)sb.len);
        sb_reset(&sb);
        kv_add(&sb, "config", "name = \"guest-1\"\nmemory = 1024\nvcpus = 2\n");
        kv_add(&sb, "libxl_json", "{\"c_info\": {\"name\": \"guest-1\\n\"}}");
        raw(MSG_MIG_CFG, sb.s, (uint32_t)sb.len);
        chunk(0, 64);
        chunk(1, 0);
        chunk(2, 300);
        msg(MSG_PROGRESS, "stage=1\nround=2\nbytes=364\ndirty_rate=0\n");
        msg(MSG_STREAM_END, "chunks=3\nbytes=364\n");
        msg(MSG_COMMIT, NULL);
        msg(MSG_DONE, NULL);
        finish();
    }
    start("dest-abort", FUZZ_DEST, PROTO_ROLE_SOURCE, true);
    msg(MSG_ABORT, "reason=operator pressed ^C\\n twice\n");
    finish();

    /* And as the source hears it. */
    for (int fix = 0; fix < 2; fix++) {
        start(fix ? "source-migration-macfix" : "source-migration",
              fix ? FUZZ_SOURCE_MACFIX : FUZZ_SOURCE, PROTO_ROLE_DEST, true);
        msg(MSG_REQ_OK, "algorithm=precopy\nreservation=17\n");
        msg(MSG_CFG_OK, NULL);
        msg(MSG_RECEIVED, NULL);
        msg(MSG_ACTIVATED, "result=ok\nreason=\ndomid=7\n");
        finish();
    }
    start("source-refusals", FUZZ_SOURCE_MACFIX, PROTO_ROLE_DEST, true);
    msg(MSG_REQ_FAIL, "code=nomem\nreason=only 512 MiB free\n");
    msg(MSG_CFG_FAIL, "reason=bad config\n");
    msg(MSG_ABORT, "reason=x\n");
    finish();

    /* Payloads alone. */
    {
        uint8_t p[PROTO_CHUNK_HDR + 16];
        memset(p, 0, sizeof p);
        p[7] = 3;
        memset(p + PROTO_CHUNK_HDR, 0xab, 16);
        proto_chunk_id(&c, p + PROTO_CHUNK_HDR, 16, p + 8);
        payload("parse-chunk", p, sizeof p);
    }
    {
        const char *kv = "name=guest-1\npeer=a\npeer=b\nconfig=x\\ny\\\\z\nreason=";
        payload("parse-kv", kv, strlen(kv));
    }

    sb_free(&sb);
    printf("mkcorpus: %d seeds in %s\n", nfiles, dir);
    return 0;
}
