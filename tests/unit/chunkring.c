/* lib/chunkring.c: the receiving end's writer, which verifies CHUNKs in
 * batches (proto_chunks_verify) before their data goes into the fd.  All
 * good: every byte in order, then EOF.  A corrupted chunk inside a batch:
 * refused with the content id message, the chunks before it written,
 * nothing of it or after it; so is a chunk whose id was made under another
 * session's key.  A reader that went away: the write's error.  With the
 * CPU's carry-less multiply and with the portable POLYVAL. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chunkring.h"
#include "proto.h"
#include "tap.h"

#define NCH 6
static const uint32_t sizes[NCH] = {256 << 10, 1 << 20, 100, 0, 256 << 10, 77777};
static uint8_t *src; /* the stream: the chunks' data one after another */
static size_t src_len;
static struct proto_conn conn, other; /* the session's keys; another session's */

struct sink {
    int fd;
    atomic_bool go; /* read only from then on: the writer blocks, chunks queue up */
    uint8_t *got;
    size_t n;
};

static void *sink_main(void *arg)
{
    struct sink *s = arg;
    ssize_t r;

    while (!atomic_load(&s->go))
        usleep(1000);
    while ((r = read(s->fd, s->got + s->n, 4 << 20)) > 0)
        s->n += (size_t)r;
    return NULL;
}

static int nwritten;
static void count_written(void *arg)
{
    (void)arg;
    nwritten++;
}

/* The stream's chunks into a ring over a pipe; chunk bad (or -1: none)
 * has a data byte changed after its content id was computed, chunk foreign
 * (or -1) its id under another session's keys.  The sink starts reading
 * once all are queued, so the writer finds them waiting. */
static int run_with(int bad, int foreign, size_t *got_n, uint8_t *got, unsigned *max_batch,
                    char *err, size_t errlen)
{
    struct chunkring q = {.peer = "hostA", .conn = &conn, .written = count_written};
    struct sink s = {.got = got};
    pthread_t t;
    int p[2], rc;
    size_t off = 0;

    if (pipe(p))
        return -errno;
    q.fd = p[1];
    s.fd = p[0];
    nwritten = 0;
    pthread_create(&t, NULL, sink_main, &s);
    chunkring_start(&q);
    for (int i = 0; i < NCH; i++) {
        uint8_t *pl = chunkring_slot(&q);
        if (!pl)
            break;
        memset(pl, 0, 8);
        pl[7] = (uint8_t)i;
        memcpy(pl + PROTO_CHUNK_HDR, src + off, sizes[i]);
        proto_chunk_id(i == foreign ? &other : &conn, pl + PROTO_CHUNK_HDR, sizes[i], pl + 8);
        if (i == bad)
            pl[PROTO_CHUNK_HDR + sizes[i] / 2] ^= 0x40;
        chunkring_put(&q, PROTO_CHUNK_HDR + sizes[i]);
        off += sizes[i];
    }
    atomic_store(&s.go, true);
    rc = chunkring_finish(&q, false, err, errlen);
    pthread_join(t, NULL);
    close(p[0]);
    *got_n = s.n;
    *max_batch = q.max_batch;
    return rc;
}

static int run(int bad, size_t *got_n, uint8_t *got, unsigned *max_batch, char *err,
               size_t errlen)
{
    return run_with(bad, -1, got_n, got, max_batch, err, errlen);
}

static size_t before(int i)
{
    size_t n = 0;
    for (int k = 0; k < i; k++)
        n += sizes[k];
    return n;
}

static void check_all(const char *how, uint8_t *got)
{
    char err[300] = "";
    size_t n;
    unsigned mb;
    int rc;

    rc = run(-1, &n, got, &mb, err, sizeof err);
    ok(!rc && n == src_len && !memcmp(got, src, src_len),
       "%s: %d good chunks: all %zu bytes written in order, then EOF", how, NCH, src_len);
    is_int(nwritten, NCH, "%s: the callback after each chunk", how);
    ok(mb >= 2 && mb <= PROTO_VERIFY_MAX, "%s: chunks that waited verified together (%u at once)",
       how, mb);

    /* the bad one is sixth-byte-flipped chunk 4 (1 MiB before it) */
    rc = run(4, &n, got, &mb, err, sizeof err);
    is_int(rc, -EBADMSG, "%s: a corrupted chunk in a batch: refused", how);
    ok(strstr(err, "hostA: chunk 4: content id does not match its 262144 data bytes") != NULL,
       "%s: ...with the content id message (%s)", how, err);
    ok(n == before(4) && !memcmp(got, src, n),
       "%s: ...the chunks before it written (%zu bytes), nothing of it or after it", how, n);
    is_int(nwritten, 4, "%s: ...four written", how);

    rc = run(0, &n, got, &mb, err, sizeof err);
    ok(rc == -EBADMSG && n == 0 && strstr(err, "chunk 0: content id does not match"),
       "%s: the first chunk corrupted: nothing written", how);
    rc = run(2, &n, got, &mb, err, sizeof err);
    ok(rc == -EBADMSG && n == before(2) && !memcmp(got, src, n) &&
           strstr(err, "chunk 2: content id does not match its 100 data bytes"),
       "%s: chunk 2 (100 bytes) corrupted: chunks 0 and 1 written", how);
    rc = run_with(-1, 1, &n, got, &mb, err, sizeof err);
    ok(rc == -EBADMSG && n == before(1) && !memcmp(got, src, n) &&
           strstr(err, "chunk 1: content id does not match its 1048576 data bytes"),
       "%s: chunk 1's id under another session's keys: refused, chunk 0 written", how);
}

int main(void)
{
    uint8_t *got;
    unsigned x = 7;

    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < NCH; i++)
        src_len += sizes[i];
    src = malloc(src_len);
    got = malloc(src_len + (4 << 20));
    if (!src || !got)
        return 1;
    for (size_t i = 0; i < src_len; i++)
        src[i] = (uint8_t)((x = x * 1103515245 + 12345) >> 16);

    {
        uint8_t k1[SHA256_LEN] = {1}, k2[SHA256_LEN] = {2};
        proto_init(&conn, -1, -1, 0);
        proto_set_session_key(&conn, k1);
        proto_init(&other, -1, -1, 0);
        proto_set_session_key(&other, k2);
    }
    polyval_use_clmul(false);
    check_all("portable", got);
    if (polyval_clmul_available()) {
        polyval_use_clmul(true);
        check_all("PCLMULQDQ", got);
    }

    /* The reader went away: the write's error, the stream's message. */
    {
        struct chunkring q = {.peer = "hostA", .conn = &conn};
        char err[300] = "";
        int p[2];
        if (pipe(p))
            return 1;
        close(p[0]);
        q.fd = p[1];
        chunkring_start(&q);
        uint8_t *pl = chunkring_slot(&q);
        memset(pl, 0, 8);
        memcpy(pl + PROTO_CHUNK_HDR, src, 1000);
        proto_chunk_id(&conn, pl + PROTO_CHUNK_HDR, 1000, pl + 8);
        chunkring_put(&q, PROTO_CHUNK_HDR + 1000);
        /* the writer fails: a slot is refused, or all queue and finish says */
        for (int i = 0; i < 3 * CHUNKRING_SLOTS && chunkring_slot(&q); i++)
            usleep(1000);
        is_int(chunkring_finish(&q, false, err, sizeof err), -EPIPE,
               "the pipe's reader gone: -EPIPE");
        ok(strstr(err, "stopped reading the stream") != NULL, "...and says so (%s)", err);
    }
    free(src);
    free(got);
    return done_testing();
}
