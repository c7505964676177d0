/* The control protocol over socketpairs and pipes, with a thread for the
 * peer: the handshake (and every way it can fail), round trips, and every
 * malformed, forged, replayed or mistimed input refused with the right
 * error and a clear message; then chunks, key=value payloads and key files. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "tap.h"

#define PSK ((const uint8_t *)"correct horse battery staple")
#define PSKLEN 28
#define BADPSK ((const uint8_t *)"correct horse battery stapler")
#define BADPSKLEN 29

/* The session key of the "already authenticated" connections the framing
 * tests start from (they set it directly: the struct is public). */
static uint8_t KEY[32];

/* The byte-at-a-time writers signal the reader between bytes. */
static volatile sig_atomic_t signals;
static void on_usr1(int sig)
{
    (void)sig;
    signals++;
}

static bool has(const char *s, const char *sub)
{
    return s && strstr(s, sub);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void sockpair(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        perror("socketpair");
        exit(2);
    }
}

static void authed(struct proto_conn *c, int rfd, int wfd, enum proto_role role, int timeout)
{
    proto_init(c, rfd, wfd, timeout);
    c->role = role;
    proto_set_session_key(c, KEY);
}

/* A frame by hand: header, payload, and the MAC under KEY when mac. */
static size_t frame(uint8_t *buf, int type, uint32_t seq, const void *p, uint32_t len, bool mac)
{
    memcpy(buf, "VMMG", 4);
    buf[4] = PROTO_VERSION;
    buf[5] = (uint8_t)type;
    buf[6] = buf[7] = 0;
    put32(buf + 8, seq);
    put32(buf + 12, len);
    put32(buf + 16, 0);
    if (len)
        memcpy(buf + 20, p, len);
    if (!mac)
        return 20 + len;
    uint8_t m[32];
    hmac_sha256(KEY, sizeof KEY, buf, 20 + len, m);
    memcpy(buf + 20 + len, m, 16);
    return 20 + len + 16;
}

/* After editing a header: a valid MAC again, so that only the edited field
 * can be what is refused. */
static void remac(uint8_t *buf, uint32_t len)
{
    uint8_t m[32];
    hmac_sha256(KEY, sizeof KEY, buf, 20 + len, m);
    memcpy(buf + 20 + len, m, 16);
}

/* ---- a peer thread that writes bytes --------------------------------------- */

struct inject {
    int fd;
    const uint8_t *buf;
    size_t len;
    bool close_after; /* shut the stream after the bytes */
    int delay_us;     /* > 0: one byte at a time, with a signal to the reader */
    pthread_t reader;
};

static void *inject_thread(void *arg)
{
    struct inject *in = arg;
    size_t off = 0;

    while (off < in->len) {
        size_t n = in->delay_us ? 1 : in->len - off;
        ssize_t r = send(in->fd, in->buf + off, n, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        off += (size_t)r;
        if (in->delay_us) {
            usleep((useconds_t)in->delay_us);
            /* One signal at a time, each handled before the next byte: a
             * busy machine would otherwise merge pending ones. */
            sig_atomic_t before = signals;
            pthread_kill(in->reader, SIGUSR1);
            for (int i = 0; i < 10000 && signals == before; i++)
                usleep(100);
        }
    }
    if (in->close_after)
        shutdown(in->fd, SHUT_WR);
    return NULL;
}

struct rx {
    int rc, rc2, type;
    uint8_t *payload;
    uint32_t len;
    char err[256], err2[256];
    long ms; /* how long proto_recv took */
};

static long elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Feed bytes to a fresh destination-side connection (authenticated or not)
 * and receive one message; then once more, to see the failure stick. */
static void recv_raw(const uint8_t *bytes, size_t n, bool close_after, bool is_authed,
                     int timeout, struct rx *out)
{
    int sv[2];
    struct proto_conn c;
    struct inject in = {.buf = bytes, .len = n, .close_after = close_after};
    pthread_t t;
    struct timespec t0;

    memset(out, 0, sizeof *out);
    sockpair(sv);
    in.fd = sv[0];
    if (is_authed)
        authed(&c, sv[1], sv[1], PROTO_ROLE_DEST, timeout);
    else {
        proto_init(&c, sv[1], sv[1], timeout);
        c.role = PROTO_ROLE_DEST;
    }
    /* What fits in the socket's buffer is there before the receiver starts:
     * on a loaded machine the thread may not run within a short timeout,
     * and a "stall" test must see the bytes before the stall. */
    if (n <= 65536 && !in.delay_us) {
        inject_thread(&in);
        in.len = 0;
    }
    pthread_create(&t, NULL, inject_thread, &in);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    out->rc = proto_recv(&c, &out->type, &out->payload, &out->len, out->err, sizeof out->err);
    out->ms = elapsed_ms(&t0);
    if (out->rc) {
        uint8_t *p2;
        uint32_t l2;
        int ty2;
        out->rc2 = proto_recv(&c, &ty2, &p2, &l2, out->err2, sizeof out->err2);
        free(p2);
    }
    /* Closing our end first unblocks a writer the refusal left hanging. */
    close(sv[1]);
    pthread_join(t, NULL);
    close(sv[0]);
}

/* A refusal: the error, the message, nothing handed out, and the same error
 * again on the next call. */
static void refused(struct rx *r, int want, const char *sub, const char *what)
{
    is_int(r->rc, want, "%s: refused with %s", what, strerror(-want));
    ok(has(r->err, sub), "%s: message says '%s'", what, sub);
    if (!has(r->err, sub))
        printf("#   message: %s\n", r->err);
    ok(!r->payload && !r->len && !r->type, "%s: no payload handed out", what);
    ok(r->rc2 == r->rc && !strcmp(r->err, r->err2), "%s: the receive side stays failed", what);
    free(r->payload);
}

/* ---- handshakes ------------------------------------------------------------- */

struct peer {
    int rfd, wfd;
    const uint8_t *psk;
    size_t psklen;
    const char *host;
    int rc;
    char err[256];
    struct proto_conn c;
    /* the source script after the handshake (round trips) */
    bool script;
    int reply_type;
    char reply_alg[32];
};

static uint8_t *big;
#define BIG (1u << 20)

static void *client_thread(void *arg)
{
    struct peer *p = arg;
    proto_init(&p->c, p->rfd, p->wfd, 5000);
    p->rc = proto_handshake_client(&p->c, p->psk, p->psklen, p->host, p->err, sizeof p->err);
    /* A failed client hangs up (the fds are closed by the test later). */
    if (p->rc)
        shutdown(p->wfd, SHUT_WR);
    if (p->rc || !p->script)
        return NULL;

    struct strbuf sb = {0};
    kv_add(&sb, "name", "guest-1");
    kv_add(&sb, "memory_kib", "%d", 1048576);
    kv_add(&sb, "peer", "%s", "uuid-a");
    kv_add(&sb, "peer", "%s", "uuid-b");
    kv_add(&sb, "config", "%s", "name = \"guest-1\"\nmemory = 1024\\n\n");
    if ((p->rc = proto_send(&p->c, MSG_MIG_REQ, sb.s, (uint32_t)sb.len)) ||
        (p->rc = proto_send_chunk(&p->c, 0, big, BIG)) ||
        (p->rc = proto_send_chunk(&p->c, 1, big, 0)) ||
        (p->rc = proto_send(&p->c, MSG_PROGRESS, "stage=1\n", 8)) ||
        (p->rc = proto_send(&p->c, MSG_DONE, NULL, 0)))
        goto out;
    uint8_t *pl;
    uint32_t len;
    p->rc = proto_recv(&p->c, &p->reply_type, &pl, &len, p->err, sizeof p->err);
    if (!p->rc) {
        kv_get(pl, len, "algorithm", p->reply_alg, sizeof p->reply_alg);
        free(pl);
    }
out:
    sb_free(&sb);
    return NULL;
}

static void test_handshake_ok(void)
{
    int sv[2];
    struct peer cl = {.psk = PSK, .psklen = PSKLEN, .host = "hostA", .script = true};
    struct proto_conn s;
    pthread_t t;
    char err[256] = "";
    int rc, type;
    uint8_t *pl;
    uint32_t len;

    sockpair(sv);
    cl.rfd = cl.wfd = sv[0];
    pthread_create(&t, NULL, client_thread, &cl);
    proto_init(&s, sv[1], sv[1], 5000);
    rc = proto_handshake_server(&s, PSK, PSKLEN, err, sizeof err);
    is_int(rc, 0, "handshake: server side succeeds");
    if (rc)
        printf("#   %s\n", err);
    ok(s.authed && s.role == PROTO_ROLE_DEST, "handshake: server is authed, destination");
    is_str(s.peer_host, "hostA", "handshake: server learns the client's host name");
    is_int(s.send_seq, 2, "handshake: CHALLENGE and AUTH_OK took server seqs 0 and 1");
    is_int(s.recv_seq, 2, "handshake: HELLO and AUTH took client seqs 0 and 1");

    /* The source's script, in order. */
    rc = proto_recv(&s, &type, &pl, &len, err, sizeof err);
    is_int(rc, 0, "round trip: MIG_REQ received");
    is_int(type, MSG_MIG_REQ, "round trip: type MIG_REQ");
    ok(pl && pl[len] == 0, "round trip: payload is NUL-terminated");
    {
        char v[64];
        size_t pos = 0;
        char k[32];
        int n = 0, peers = 0;
        is_int(kv_get(pl, len, "name", v, sizeof v), 0, "round trip: name= found");
        is_str(v, "guest-1", "round trip: name= value");
        kv_get(pl, len, "memory_kib", v, sizeof v);
        is_str(v, "1048576", "round trip: memory_kib= value");
        kv_get(pl, len, "config", v, sizeof v);
        is_str(v, "name = \"guest-1\"\nmemory = 1024\\n\n",
               "round trip: a multi-line value with a backslash survives escaping");
        while (kv_next(pl, len, &pos, k, sizeof k, v, sizeof v) == 1) {
            n++;
            peers += !strcmp(k, "peer");
        }
        ok(n == 5 && peers == 2, "round trip: kv_next walks 5 lines, 2 of them peer=");
    }
    free(pl);

    rc = proto_recv(&s, &type, &pl, &len, err, sizeof err);
    ok(!rc && type == MSG_CHUNK && len == BIG + PROTO_CHUNK_HDR,
       "round trip: a 1 MiB CHUNK arrives whole");
    {
        uint64_t idx = 99;
        const uint8_t *d;
        uint32_t dlen;
        rc = proto_chunk_parse(&s, pl, len, &idx, &d, &dlen, err, sizeof err);
        ok(!rc && idx == 0 && dlen == BIG && !memcmp(d, big, BIG),
           "round trip: chunk 0 parses, content id verified, data intact");
    }
    free(pl);
    rc = proto_recv(&s, &type, &pl, &len, err, sizeof err);
    {
        uint64_t idx = 99;
        const uint8_t *d;
        uint32_t dlen = 7;
        ok(!rc && type == MSG_CHUNK && !proto_chunk_parse(&s, pl, len, &idx, &d, &dlen, err, 256) &&
               idx == 1 && dlen == 0,
           "round trip: an empty chunk 1");
    }
    free(pl);
    rc = proto_recv(&s, &type, &pl, &len, err, sizeof err);
    ok(!rc && type == MSG_PROGRESS && len == 8 && !strcmp((char *)pl, "stage=1\n"),
       "round trip: PROGRESS");
    free(pl);
    rc = proto_recv(&s, &type, &pl, &len, err, sizeof err);
    ok(!rc && type == MSG_DONE && len == 0 && pl && pl[0] == 0,
       "round trip: empty DONE gives an empty, NUL-terminated payload");
    free(pl);

    struct strbuf sb = {0};
    kv_add(&sb, "algorithm", "precopy");
    kv_add(&sb, "reservation", "%d", 42);
    rc = proto_send(&s, MSG_REQ_OK, sb.s, (uint32_t)sb.len);
    sb_free(&sb);
    is_int(rc, 0, "round trip: destination sends REQ_OK");
    pthread_join(t, NULL);
    is_int(cl.rc, 0, "round trip: client side handshake and script succeed");
    if (cl.rc)
        printf("#   %s\n", cl.err);
    ok(cl.c.authed && cl.c.role == PROTO_ROLE_SOURCE, "handshake: client is authed, source");
    ok(!memcmp(cl.c.key, s.key, 32), "handshake: both sides derived the same session key");
    ok(cl.reply_type == MSG_REQ_OK && !strcmp(cl.reply_alg, "precopy"),
       "round trip: client receives REQ_OK algorithm=precopy");
    close(sv[0]);
    close(sv[1]);
    proto_wipe(&s);
    uint8_t zero[32] = {0};
    ok(!s.authed && !memcmp(s.key, zero, 32), "proto_wipe clears the session key");
}

/* Two sessions with the same key get different session keys (fresh nonces),
 * so a frame from one is a MAC failure in the other. */
static void test_sessions_differ(void)
{
    uint8_t keys[2][32];
    for (int i = 0; i < 2; i++) {
        int sv[2];
        struct peer cl = {.psk = PSK, .psklen = PSKLEN, .host = "h"};
        struct proto_conn s;
        pthread_t t;
        char err[256];
        sockpair(sv);
        cl.rfd = cl.wfd = sv[0];
        pthread_create(&t, NULL, client_thread, &cl);
        proto_init(&s, sv[1], sv[1], 5000);
        proto_handshake_server(&s, PSK, PSKLEN, err, sizeof err);
        pthread_join(t, NULL);
        memcpy(keys[i], s.key, 32);
        close(sv[0]);
        close(sv[1]);
    }
    ok(memcmp(keys[0], keys[1], 32), "two sessions under one key get different session keys");
}

static void handshake_pair(const uint8_t *cpsk, size_t clen, const uint8_t *spsk, size_t slen,
                           int *crc, char *cerr, int *src, char *serr, bool pipes)
{
    int a[2], b[2];
    struct peer cl = {.psk = cpsk, .psklen = clen, .host = "hostA"};
    struct proto_conn s;
    pthread_t t;

    if (pipes) {
        if (pipe2(a, O_CLOEXEC) || pipe2(b, O_CLOEXEC))
            exit(2);
        cl.rfd = a[0], cl.wfd = b[1];
        proto_init(&s, b[0], a[1], 5000);
    } else {
        sockpair(a);
        b[0] = b[1] = -1;
        cl.rfd = cl.wfd = a[0];
        proto_init(&s, a[1], a[1], 5000);
    }
    pthread_create(&t, NULL, client_thread, &cl);
    *src = proto_handshake_server(&s, spsk, slen, serr, 256);
    pthread_join(t, NULL);
    *crc = cl.rc;
    strcpy(cerr, cl.err);
    for (int i = 0; i < 2; i++) {
        close(a[i]);
        if (b[i] >= 0)
            close(b[i]);
    }
}

static void test_wrong_keys(void)
{
    int crc, src;
    char cerr[256] = "", serr[256] = "";

    handshake_pair(BADPSK, BADPSKLEN, PSK, PSKLEN, &crc, cerr, &src, serr, false);
    is_int(crc, -EACCES, "wrong key on the client: client refuses (-EACCES)");
    ok(has(cerr, "server could not prove"), "wrong key on the client: client says why");
    is_int(src, -EACCES, "wrong key on the client: server refuses too (-EACCES)");
    ok(has(serr, "could not verify this server's key proof"),
       "wrong key on the client: server says why");

    handshake_pair(PSK, PSKLEN, BADPSK, BADPSKLEN, &crc, cerr, &src, serr, false);
    is_int(crc, -EACCES, "wrong key on the server: the client checks the server's proof");
    ok(has(cerr, "authentication failed"), "wrong key on the server: client message");
    is_int(src, -EACCES, "wrong key on the server: server refuses too (-EACCES)");
    ok(has(serr, "authentication failed"), "wrong key on the server: server message: %s", serr);

    /* The same over a pipe pair, as the exec transport does it. */
    handshake_pair(PSK, PSKLEN, PSK, PSKLEN, &crc, cerr, &src, serr, true);
    ok(!crc && !src, "handshake over a pipe pair (exec transport)");
    handshake_pair(BADPSK, BADPSKLEN, PSK, PSKLEN, &crc, cerr, &src, serr, true);
    ok(crc == -EACCES && src == -EACCES, "wrong key over a pipe pair: -EACCES on both sides");

    handshake_pair(PSK, 8, PSK, PSKLEN, &crc, cerr, &src, serr, false);
    ok(crc == -EINVAL && has(cerr, "too short"), "client refuses a key under 16 bytes");
    ok(src == -ECONNRESET && has(serr, "peer closed the connection"),
       "... and the server sees it hang up: %s", serr);
}

/* A fake server: answers HELLO with a CHALLENGE whose proof is made up.
 * The client must refuse, and must not hand over its own proof. */
static void test_fake_server(void)
{
    int sv[2];
    struct peer cl = {.psk = PSK, .psklen = PSKLEN, .host = "hostA"};
    struct proto_conn s;
    pthread_t t;
    char err[256];
    uint8_t *pl, junk[64];
    uint32_t len;
    int type, rc;

    sockpair(sv);
    cl.rfd = cl.wfd = sv[0];
    pthread_create(&t, NULL, client_thread, &cl);
    proto_init(&s, sv[1], sv[1], 5000);
    s.role = PROTO_ROLE_DEST;
    rc = proto_recv(&s, &type, &pl, &len, err, sizeof err);
    ok(!rc && type == MSG_HELLO && len > 32 && has((char *)pl + 32, "host=hostA\n"),
       "fake server: HELLO is nonce || host=hostA");
    free(pl);
    memset(junk, 0x5a, sizeof junk);
    proto_send(&s, MSG_CHALLENGE, junk, sizeof junk);
    rc = proto_recv(&s, &type, &pl, &len, err, sizeof err);
    ok(!rc && type == MSG_AUTH && len == 0,
       "fake server: the client answers with an empty AUTH, not its proof");
    free(pl);
    pthread_join(t, NULL);
    is_int(cl.rc, -EACCES, "fake server: client refuses it (-EACCES)");
    ok(!cl.c.authed, "fake server: client is not authed");
    close(sv[0]);
    close(sv[1]);
}

/* A fake client: sends a made-up proof.  Then: no host=, and the wrong
 * first message. */
struct fake_client {
    int fd;
    const uint8_t *hello;
    uint32_t hello_len;
    int first_type;
    int got_type;
    char reason[128];
};

static void *fake_client_thread(void *arg)
{
    struct fake_client *f = arg;
    struct proto_conn c;
    uint8_t *pl, junk[32];
    uint32_t len;
    int type;
    char err[256];

    proto_init(&c, f->fd, f->fd, 5000);
    if (f->first_type == MSG_AUTH) {
        /* AUTH first: not what the server waits for */
        memset(junk, 1, sizeof junk);
        proto_send(&c, MSG_AUTH, junk, sizeof junk);
    } else
        proto_send(&c, MSG_HELLO, f->hello, f->hello_len);
    if (proto_recv(&c, &type, &pl, &len, err, sizeof err))
        return NULL;
    if (type == MSG_CHALLENGE) {
        free(pl);
        memset(junk, 0xa5, sizeof junk);
        proto_send(&c, MSG_AUTH, junk, sizeof junk);
        if (proto_recv(&c, &type, &pl, &len, err, sizeof err))
            return NULL;
    }
    f->got_type = type;
    kv_get(pl, len, "reason", f->reason, sizeof f->reason);
    free(pl);
    return NULL;
}

static int fake_client(const void *hello, uint32_t hlen, int first, struct fake_client *f,
                       char *err, struct proto_conn *s)
{
    int sv[2], rc;
    pthread_t t;

    memset(f, 0, sizeof *f);
    sockpair(sv);
    f->fd = sv[0];
    f->hello = hello;
    f->hello_len = hlen;
    f->first_type = first;
    pthread_create(&t, NULL, fake_client_thread, f);
    proto_init(s, sv[1], sv[1], 5000);
    rc = proto_handshake_server(s, PSK, PSKLEN, err, 256);
    pthread_join(t, NULL);
    close(sv[0]);
    close(sv[1]);
    return rc;
}

static void test_fake_clients(void)
{
    struct fake_client f;
    struct proto_conn s;
    char err[256] = "";
    uint8_t hello[128];
    int rc;

    memset(hello, 7, 32);
    memcpy(hello + 32, "host=mallory\n", 13);
    rc = fake_client(hello, 45, MSG_HELLO, &f, err, &s);
    is_int(rc, -EACCES, "fake client with a made-up proof: refused (-EACCES)");
    ok(has(err, "could not prove it knows the key") && has(err, "mallory"),
       "fake client: message names the client: %s", err);
    ok(f.got_type == MSG_AUTH_FAIL && !strcmp(f.reason, "authentication failed"),
       "fake client: it gets AUTH_FAIL reason=authentication failed");
    ok(!s.authed, "fake client: server is not authed");

    memcpy(hello + 32, "name=x\n", 7);
    rc = fake_client(hello, 39, MSG_HELLO, &f, err, &s);
    ok(rc == -EBADMSG && has(err, "no host="), "HELLO without host= refused: %s", err);
    ok(f.got_type == MSG_AUTH_FAIL && has(f.reason, "malformed HELLO"),
       "HELLO without host=: client told 'malformed HELLO'");

    rc = fake_client(hello, 20, MSG_HELLO, &f, err, &s);
    ok(rc == -EBADMSG && has(err, "HELLO of 20 bytes"), "HELLO shorter than the nonce refused");

    memcpy(hello + 32, "host=a\x01z\n", 9);
    rc = fake_client(hello, 41, MSG_HELLO, &f, err, &s);
    ok(rc == -EBADMSG, "HELLO with a control character in host= refused");

    rc = fake_client(hello, 0, MSG_AUTH, &f, err, &s);
    ok(rc == -EPROTO && has(err, "expected HELLO, got AUTH"), "AUTH before HELLO refused: %s",
       err);
}

/* A client that trickles its HELLO a byte at a time cannot stretch the
 * handshake past one timeout. */
static void test_handshake_deadline(void)
{
    int sv[2];
    struct proto_conn s;
    uint8_t buf[128], hello[45];
    char err[256];
    struct inject in = {.delay_us = 40000};
    pthread_t t;
    struct timespec t0;

    memset(hello, 1, 32);
    memcpy(hello + 32, "host=slowpoke\n", 13);
    in.len = frame(buf, MSG_HELLO, 0, hello, 45, false);
    in.buf = buf;
    in.reader = pthread_self();
    sockpair(sv);
    in.fd = sv[0];
    pthread_create(&t, NULL, inject_thread, &in);
    proto_init(&s, sv[1], sv[1], 300);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = proto_handshake_server(&s, PSK, PSKLEN, err, sizeof err);
    long ms = elapsed_ms(&t0);
    is_int(rc, -ETIMEDOUT, "trickled HELLO: the handshake times out");
    ok(ms >= 250 && ms < 1500, "trickled HELLO: after the one timeout (%ld ms)", ms);
    close(sv[1]);
    pthread_join(t, NULL);
    close(sv[0]);

    /* And a silent one. */
    sockpair(sv);
    proto_init(&s, sv[1], sv[1], 100);
    rc = proto_handshake_server(&s, PSK, PSKLEN, err, sizeof err);
    ok(rc == -ETIMEDOUT && has(err, "timed out"), "silent client: -ETIMEDOUT: %s", err);
    close(sv[0]);
    close(sv[1]);
}

/* ---- framing: each bad input ------------------------------------------------ */

static void test_bad_frames(void)
{
    static uint8_t buf[2 * BIG];
    struct rx r;
    size_t n;
    const char *text = "reason=test\n";

    /* A good one first, so the rest are known to fail for their reason. */
    n = frame(buf, MSG_ABORT, 0, text, 12, true);
    recv_raw(buf, n, false, true, 2000, &r);
    ok(r.rc == 0 && r.type == MSG_ABORT && r.len == 12 && !memcmp(r.payload, text, 12),
       "a hand-made frame is accepted");
    free(r.payload);

    recv_raw(buf, 10, true, true, 2000, &r);
    refused(&r, -ECONNRESET, "10 bytes into a 20-byte header", "truncated header");

    recv_raw(buf, 0, true, true, 2000, &r);
    refused(&r, -ECONNRESET, "peer closed the connection", "EOF between messages");

    recv_raw(buf, 26, true, true, 2000, &r);
    refused(&r, -ECONNRESET, "6 bytes into the 28 bytes", "truncated payload");

    recv_raw(buf, n - 3, true, true, 2000, &r);
    refused(&r, -ECONNRESET, "truncated message", "truncated MAC");

    n = frame(buf, MSG_ABORT, 0, text, 12, true);
    memcpy(buf, "SSH-", 4);
    remac(buf, 12);
    recv_raw(buf, n, false, true, 2000, &r);
    refused(&r, -EPROTO, "bad magic \"SSH-\"", "wrong magic");

    n = frame(buf, MSG_ABORT, 0, text, 12, true);
    buf[4] = 2; /* version 2 had unkeyed BLAKE2b-256 content ids */
    remac(buf, 12);
    recv_raw(buf, n, false, true, 2000, &r);
    refused(&r, -EPROTO, "unsupported protocol version 2 (this side speaks 3)",
            "wrong version (an older peer)");

    n = frame(buf, MSG_ABORT, 0, text, 12, true);
    buf[4] = 4;
    remac(buf, 12);
    recv_raw(buf, n, false, true, 2000, &r);
    refused(&r, -EPROTO, "unsupported protocol version 4", "wrong version (a newer peer)");

    n = frame(buf, MSG_ABORT, 0, text, 12, true);
    buf[7] = 1;
    remac(buf, 12);
    recv_raw(buf, n, false, true, 2000, &r);
    refused(&r, -EPROTO, "non-zero flags 0x0001", "non-zero flags");

    n = frame(buf, MSG_ABORT, 0, text, 12, true);
    buf[19] = 1;
    remac(buf, 12);
    recv_raw(buf, n, false, true, 2000, &r);
    refused(&r, -EPROTO, "reserved", "non-zero reserved field");

    /* 2^31 bytes claimed, nothing follows and the stream stays open: only a
     * refusal before reading (and allocating) answers at once instead of
     * timing out. */
    n = frame(buf, MSG_ABORT, 0, NULL, 0, false);
    put32(buf + 12, 1u << 31);
    recv_raw(buf, n, false, true, 3000, &r);
    refused(&r, -EMSGSIZE, "message of 2147483648 bytes refused", "length 2^31");
    ok(r.ms < 1000, "length 2^31: refused at once (%ld ms), not after waiting for the body",
       r.ms);

    put32(buf + 12, PROTO_MAX_PAYLOAD + 1);
    recv_raw(buf, n, false, true, 3000, &r);
    refused(&r, -EMSGSIZE, "at most 1048640", "length PROTO_MAX_PAYLOAD + 1");

    /* Exactly the bound is fine. */
    memset(buf + 20, 'x', PROTO_MAX_PAYLOAD);
    n = frame(buf, MSG_PROGRESS, 0, buf + 20, PROTO_MAX_PAYLOAD, true);
    recv_raw(buf, n, false, true, 3000, &r);
    ok(r.rc == 0 && r.len == PROTO_MAX_PAYLOAD, "length exactly PROTO_MAX_PAYLOAD accepted");
    free(r.payload);

    n = frame(buf, MSG_ABORT, 0, text, 12, true);
    buf[25] ^= 0x20;
    recv_raw(buf, n, false, true, 2000, &r);
    refused(&r, -EBADMSG, "MAC mismatch", "a payload byte flipped");

    /* A CHUNK's MAC covers its index and content id; the data is bound by
     * the content id, which proto_recv checks. */
    {
        uint8_t cp[PROTO_CHUNK_HDR + 100], m[32];
        memset(cp, 0, 8);
        cp[7] = 0;
        memset(cp + PROTO_CHUNK_HDR, 'd', 100);
        struct proto_conn kc;
        authed(&kc, -1, -1, PROTO_ROLE_SOURCE, 0);
        proto_chunk_id(&kc, cp + PROTO_CHUNK_HDR, 100, cp + 8);
        n = frame(buf, MSG_CHUNK, 0, cp, sizeof cp, false);
        hmac_sha256(KEY, sizeof KEY, buf, 20 + PROTO_CHUNK_HDR, m);
        memcpy(buf + n, m, 16);
        recv_raw(buf, n + 16, false, true, 2000, &r);
        ok(r.rc == 0 && r.type == MSG_CHUNK && r.len == sizeof cp,
           "a CHUNK whose MAC covers header, index and content id is accepted");
        free(r.payload);
        buf[20 + PROTO_CHUNK_HDR + 50] ^= 1;
        recv_raw(buf, n + 16, false, true, 2000, &r);
        refused(&r, -EBADMSG, "content id does not match", "a CHUNK data byte flipped");
        buf[20 + PROTO_CHUNK_HDR + 50] ^= 1;
        buf[20 + 7] ^= 1;
        recv_raw(buf, n + 16, false, true, 2000, &r);
        refused(&r, -EBADMSG, "MAC mismatch", "a CHUNK index changed without the key");
        buf[20 + 7] ^= 1;

    }

    n = frame(buf, MSG_ABORT, 0, text, 12, true);
    buf[n - 1] ^= 1;
    recv_raw(buf, n, false, true, 2000, &r);
    refused(&r, -EBADMSG, "MAC mismatch", "a MAC byte flipped");

    n = frame(buf, MSG_ABORT, 0, text, 12, true);
    buf[5] = MSG_DONE;
    recv_raw(buf, n, false, true, 2000, &r);
    refused(&r, -EBADMSG, "MAC mismatch", "the type changed without the key");

    n = frame(buf, MSG_ABORT, 0, text, 12, false);
    recv_raw(buf, n, false, true, 300, &r);
    is_int(r.rc, -ETIMEDOUT, "no MAC after authentication: the receiver waits for it, "
           "then times out");
    free(r.payload);

    n = frame(buf, 99, 0, text, 12, true);
    recv_raw(buf, n, false, true, 2000, &r);
    refused(&r, -EPROTO, "unknown message type 99", "unknown type");

    n = frame(buf, MSG_HELLO, 0, text, 12, true);
    recv_raw(buf, n, false, true, 2000, &r);
    refused(&r, -EPROTO, "handshake message HELLO after authentication", "HELLO after auth");

    n = frame(buf, MSG_REQ_OK, 0, text, 12, true);
    recv_raw(buf, n, false, true, 2000, &r);
    refused(&r, -EPROTO, "REQ_OK from the source", "a destination's message at the destination "
            "(reflection)");

    n = frame(buf, MSG_ABORT, 5, text, 12, true);
    recv_raw(buf, n, false, true, 2000, &r);
    refused(&r, -EPROTO, "replayed or out-of-order message (seq 5, expected 0)",
            "seq ahead (out of order)");

    /* Before authentication. */
    n = frame(buf, MSG_MIG_REQ, 0, text, 12, false);
    recv_raw(buf, n, false, false, 2000, &r);
    refused(&r, -EPROTO, "MIG_REQ before authentication", "data message before auth");

    /* A data header claiming a body that never comes: refused at the header. */
    n = frame(buf, MSG_CHUNK, 0, NULL, 0, false);
    put32(buf + 12, 500);
    recv_raw(buf, n, false, false, 3000, &r);
    refused(&r, -EPROTO, "CHUNK before authentication", "data header before auth");
    ok(r.ms < 1000, "data header before auth: refused without waiting for the body");

    n = frame(buf, MSG_HELLO, 0, NULL, 0, false);
    put32(buf + 12, PROTO_MAX_HANDSHAKE_PAYLOAD + 1);
    recv_raw(buf, n, false, false, 2000, &r);
    refused(&r, -EMSGSIZE, "before authentication", "a big message before auth");

    n = frame(buf, MSG_CHALLENGE, 0, text, 12, false);
    recv_raw(buf, n, false, false, 2000, &r);
    refused(&r, -EPROTO, "CHALLENGE from the source", "pre-auth: CHALLENGE sent to the server");

    n = frame(buf, MSG_HELLO, 1, text, 12, false);
    recv_raw(buf, n, false, false, 2000, &r);
    refused(&r, -EPROTO, "seq 1, expected 0", "pre-auth: wrong seq");

    /* A stall in the middle of a header, and silence. */
    n = frame(buf, MSG_ABORT, 0, text, 12, true);
    recv_raw(buf, 7, false, true, 200, &r);
    refused(&r, -ETIMEDOUT, "in a message header", "stall mid-header");
    ok(r.ms >= 150 && r.ms < 1500, "stall mid-header: after the timeout (%ld ms)", r.ms);
    recv_raw(buf, 30, false, true, 200, &r);
    refused(&r, -ETIMEDOUT, "message body", "stall mid-payload");
    recv_raw(buf, 0, false, true, 100, &r);
    refused(&r, -ETIMEDOUT, "no message", "silent peer");
}

/* Capture what a sender writes, to replay it. */
static size_t drain(int fd, uint8_t *buf, size_t size)
{
    size_t n = 0;
    ssize_t r;
    while (n < size && (r = recv(fd, buf + n, size - n, MSG_DONTWAIT)) > 0)
        n += (size_t)r;
    return n;
}

static void test_replay(void)
{
    int cap[2], sv[2];
    struct proto_conn src, dst;
    uint8_t wire[512], *pl;
    size_t off[4], n = 0;
    uint32_t len;
    int type, rc;
    char err[256];

    /* Three messages from a source, captured off the wire. */
    sockpair(cap);
    authed(&src, cap[0], cap[0], PROTO_ROLE_SOURCE, 2000);
    off[0] = 0;
    proto_send(&src, MSG_PROGRESS, "stage=1\n", 8);
    off[1] = n += drain(cap[1], wire + n, sizeof wire - n);
    proto_send(&src, MSG_PROGRESS, "stage=2\n", 8);
    off[2] = n += drain(cap[1], wire + n, sizeof wire - n);
    proto_send(&src, MSG_PROGRESS, "stage=3\n", 8);
    off[3] = n += drain(cap[1], wire + n, sizeof wire - n);
    ok(off[1] == 44 && n == 132, "three captured frames of 20 + 8 + 16 bytes");
    close(cap[0]);
    close(cap[1]);

    /* Deliver 0, 1, then 1 again. */
    sockpair(sv);
    authed(&dst, sv[1], sv[1], PROTO_ROLE_DEST, 2000);
    if (write(sv[0], wire, off[2]) < 0 || write(sv[0], wire + off[1], off[2] - off[1]) < 0)
        exit(2);
    rc = proto_recv(&dst, &type, &pl, &len, err, sizeof err);
    free(pl);
    ok(!rc, "replay: message 0 accepted");
    rc = proto_recv(&dst, &type, &pl, &len, err, sizeof err);
    ok(!rc && !strcmp((char *)pl, "stage=2\n"), "replay: message 1 accepted");
    free(pl);
    rc = proto_recv(&dst, &type, &pl, &len, err, sizeof err);
    is_int(rc, -EPROTO, "replay: message 1 resent is refused");
    is_str(err, "replayed or out-of-order message (seq 1, expected 2)", "replay: message");
    ok(!pl, "replay: nothing handed out");
    close(sv[0]);
    close(sv[1]);

    /* Deliver 0 then 2: a dropped message. */
    sockpair(sv);
    authed(&dst, sv[1], sv[1], PROTO_ROLE_DEST, 2000);
    if (write(sv[0], wire, off[1]) < 0 || write(sv[0], wire + off[2], off[3] - off[2]) < 0)
        exit(2);
    rc = proto_recv(&dst, &type, &pl, &len, err, sizeof err);
    free(pl);
    rc = proto_recv(&dst, &type, &pl, &len, err, sizeof err);
    ok(rc == -EPROTO && has(err, "(seq 2, expected 1)"), "a dropped message is noticed: %s",
       err);
    close(sv[0]);
    close(sv[1]);

    /* Out of order from a sender whose counter was pushed on. */
    sockpair(sv);
    authed(&src, sv[0], sv[0], PROTO_ROLE_SOURCE, 2000);
    authed(&dst, sv[1], sv[1], PROTO_ROLE_DEST, 2000);
    src.send_seq = 7;
    proto_send(&src, MSG_DONE, NULL, 0);
    rc = proto_recv(&dst, &type, &pl, &len, err, sizeof err);
    ok(rc == -EPROTO && has(err, "(seq 7, expected 0)"), "out-of-order seq refused");

    /* A frame from the source sent back to it (reflection). */
    close(sv[0]);
    close(sv[1]);
    sockpair(sv);
    authed(&src, sv[0], sv[0], PROTO_ROLE_SOURCE, 2000);
    if (write(sv[1], wire, off[1]) < 0)
        exit(2);
    rc = proto_recv(&src, &type, &pl, &len, err, sizeof err);
    ok(rc == -EPROTO && has(err, "PROGRESS from the destination"),
       "a source's own message reflected back to it is refused: %s", err);
    close(sv[0]);
    close(sv[1]);

    /* No room for a message is fine too. */
    sockpair(sv);
    close(sv[0]);
    authed(&dst, sv[1], sv[1], PROTO_ROLE_DEST, 2000);
    rc = proto_recv(&dst, &type, &pl, &len, NULL, 0);
    ok(rc == -ECONNRESET && !pl, "proto_recv with no error buffer");
    close(sv[1]);
}

/* ---- sending ------------------------------------------------------------------ */

static void test_send_refusals(void)
{
    int sv[2];
    struct proto_conn c;
    uint8_t b[1];

    sockpair(sv);
    proto_init(&c, sv[0], sv[0], 1000);
    is_int(proto_send(&c, MSG_MIG_REQ, "x=1\n", 4), -EPROTO, "send: data before auth refused");
    is_int(recv(sv[1], b, 1, MSG_DONTWAIT), -1, "send: ... and nothing was written");
    is_int(proto_send(&c, MSG_HELLO, b, PROTO_MAX_HANDSHAKE_PAYLOAD + 1), -EMSGSIZE,
           "send: big handshake message refused");
    authed(&c, sv[0], sv[0], PROTO_ROLE_DEST, 1000);
    is_int(proto_send(&c, 99, NULL, 0), -EPROTO, "send: unknown type refused");
    is_int(proto_send(&c, MSG_AUTH_OK, NULL, 0), -EPROTO, "send: handshake type after auth");
    is_int(proto_send(&c, MSG_CHUNK, NULL, 0), -EPROTO, "send: destination may not send CHUNK");
    /* post-copy's return path goes one way only */
    is_str(msg_type_name(MSG_RETURN), "RETURN", "type 35 is RETURN");
    uint8_t ret[3] = {RETURN_DATA, 1, 2};
    is_int(proto_send(&c, MSG_RETURN, ret, sizeof ret), 0, "send: the destination sends RETURN");
    {
        struct proto_conn s2;
        int sv2[2];
        sockpair(sv2);
        authed(&s2, sv2[0], sv2[0], PROTO_ROLE_SOURCE, 1000);
        is_int(proto_send(&s2, MSG_RETURN, ret, sizeof ret), -EPROTO,
               "send: the source may not send RETURN");
        close(sv2[0]);
        close(sv2[1]);
    }
    /* post-copy recovery: the source asks, the destination answers */
    is_str(msg_type_name(MSG_RECOVER), "RECOVER", "type 96 is RECOVER");
    is_str(msg_type_name(MSG_RECOVER_OK), "RECOVER_OK", "type 97 is RECOVER_OK");
    is_str(msg_type_name(MSG_RECOVER_FAIL), "RECOVER_FAIL", "type 98 is RECOVER_FAIL");
    is_int(proto_send(&c, MSG_RECOVER, "uuid=x\n", 7), -EPROTO,
           "send: the destination may not send RECOVER");
    is_int(proto_send(&c, MSG_RECOVER_FAIL, "code=busy\n", 10), 0,
           "send: the destination sends RECOVER_FAIL");
    {
        struct proto_conn s2;
        int sv2[2];
        sockpair(sv2);
        authed(&s2, sv2[0], sv2[0], PROTO_ROLE_SOURCE, 1000);
        is_int(proto_send(&s2, MSG_RECOVER, "uuid=x\n", 7), 0, "send: the source sends RECOVER");
        is_int(proto_send(&s2, MSG_RECOVER_OK, NULL, 0), -EPROTO,
               "send: the source may not send RECOVER_OK");
        close(sv2[0]);
        close(sv2[1]);
    }
    is_int(proto_send(&c, MSG_ABORT, "reason=x\n", 9), 0, "send: either side may send ABORT");
    is_int(proto_send(&c, MSG_REQ_FAIL, b, PROTO_MAX_PAYLOAD + 1), -EMSGSIZE,
           "send: oversized payload refused");
    c.role = PROTO_ROLE_SOURCE;
    is_int(proto_send_chunk(&c, 0, b, PROTO_CHUNK_MAX + 1), -EMSGSIZE,
           "send_chunk: more than 1 MiB of data refused");
    c.send_seq = UINT32_MAX;
    is_int(proto_send(&c, MSG_DONE, NULL, 0), -EOVERFLOW, "send: seq never wraps");
    close(sv[0]);
    close(sv[1]);

    /* Writing into a pipe nobody reads: -EPIPE, not death by SIGPIPE. */
    int p[2];
    sigset_t pend;
    if (pipe(p))
        exit(2);
    close(p[0]);
    authed(&c, p[0], p[1], PROTO_ROLE_SOURCE, 1000);
    is_int(proto_send(&c, MSG_DONE, NULL, 0), -EPIPE,
           "send into a closed pipe: -EPIPE and the process lives");
    sigpending(&pend);
    ok(!sigismember(&pend, SIGPIPE), "send into a closed pipe: no SIGPIPE left pending");
    close(p[1]);
    sockpair(sv);
    close(sv[1]);
    authed(&c, sv[0], sv[0], PROTO_ROLE_SOURCE, 1000);
    is_int(proto_send(&c, MSG_DONE, NULL, 0), -EPIPE, "send into a closed socket: -EPIPE");
    close(sv[0]);
}

/* ---- partial I/O, EINTR and pipes ------------------------------------------------- */

static void test_partial_eintr(void)
{
    static uint8_t buf[256];
    struct rx r;
    size_t n;

    signals = 0;
    n = frame(buf, MSG_PROGRESS, 0, "stage=2\nround=3\n", 16, true);
    /* recv_raw's thread writes a byte at a time and signals us between. */
    int sv[2];
    struct proto_conn c;
    struct inject in = {.buf = buf, .len = n, .delay_us = 1000, .reader = pthread_self()};
    pthread_t t;
    sockpair(sv);
    in.fd = sv[0];
    authed(&c, sv[1], sv[1], PROTO_ROLE_DEST, 2000);
    pthread_create(&t, NULL, inject_thread, &in);
    r.rc = proto_recv(&c, &r.type, &r.payload, &r.len, r.err, sizeof r.err);
    pthread_join(t, NULL);
    ok(r.rc == 0 && r.type == MSG_PROGRESS && r.len == 16,
       "a frame arriving a byte at a time, with signals between, is read whole");
    ok(signals > 20, "... while %d signals interrupted the waits", (int)signals);
    free(r.payload);
    close(sv[0]);
    close(sv[1]);
}

struct pipe_rx {
    struct proto_conn c;
    int rc, chunks;
    bool intact;
};

static void *pipe_reader(void *arg)
{
    struct pipe_rx *p = arg;
    char err[256];
    for (int i = 0; i < 3; i++) {
        int type;
        uint8_t *pl;
        uint32_t len, dlen;
        uint64_t idx;
        const uint8_t *d;
        p->rc = proto_recv(&p->c, &type, &pl, &len, err, sizeof err);
        if (p->rc)
            return NULL;
        if (!proto_chunk_parse(&p->c, pl, len, &idx, &d, &dlen, err, sizeof err) &&
            idx == (uint64_t)i &&
            dlen == BIG && !memcmp(d, big, BIG))
            p->chunks++;
        free(pl);
        usleep(2000); /* a slow reader: the writer sees a full pipe */
    }
    return NULL;
}

static void test_pipe_stream(void)
{
    int p[2];
    struct proto_conn src;
    struct pipe_rx rx;
    pthread_t t;
    int rc = 0;

    if (pipe(p))
        exit(2);
    authed(&src, -1, p[1], PROTO_ROLE_SOURCE, 5000);
    authed(&rx.c, p[0], -1, PROTO_ROLE_DEST, 5000);
    rx.chunks = 0;
    pthread_create(&t, NULL, pipe_reader, &rx);
    for (int i = 0; i < 3 && !rc; i++)
        rc = proto_send_chunk(&src, (uint64_t)i, big, BIG);
    pthread_join(t, NULL);
    ok(!rc && !rx.rc && rx.chunks == 3, "three 1 MiB chunks through a pipe to a slow reader");
    close(p[0]);
    close(p[1]);
}

/* proto_recv_buf: into the caller's buffers, a CHUNK's content id left for
 * proto_chunks_verify, which checks several at once. */
struct batch_tx {
    struct proto_conn c;
    int rc;
};

static void *batch_sender(void *arg)
{
    struct batch_tx *t = arg;
    uint8_t id[PROTO_CID_LEN], wrong[PROTO_CID_LEN];

    proto_chunk_id(&t->c, big, 300000, id);
    proto_chunk_id(&t->c, big + 1, 300000, wrong);
    if ((t->rc = proto_send_chunk(&t->c, 0, big, 1000)) ||
        (t->rc = proto_send_chunk_id(&t->c, 1, id, big, 300000)) ||
        (t->rc = proto_send_chunk_id(&t->c, 2, wrong, big, 300000)) || /* MAC good, data not */
        (t->rc = proto_send_chunk(&t->c, 3, big, 0)) ||
        (t->rc = proto_send(&t->c, MSG_PROGRESS, "stage=x\n", 8)))
        return NULL;
    return NULL;
}

static void test_recv_buf(void)
{
    int sv[2];
    struct batch_tx tx;
    struct proto_conn c;
    pthread_t t;
    uint8_t *buf[5];
    const uint8_t *pl[5];
    uint32_t len[5];
    int type[5], rc = 0;
    char err[256] = "";
    size_t bad = 99;

    sockpair(sv);
    authed(&tx.c, sv[0], sv[0], PROTO_ROLE_SOURCE, 5000);
    authed(&c, sv[1], sv[1], PROTO_ROLE_DEST, 5000);
    pthread_create(&t, NULL, batch_sender, &tx);
    for (int i = 0; i < 5; i++) {
        buf[i] = malloc(PROTO_MAX_PAYLOAD + 1);
        pl[i] = buf[i];
        if (!rc)
            rc = proto_recv_buf(&c, &type[i], buf[i], &len[i], err, sizeof err);
    }
    pthread_join(t, NULL);
    ok(!rc && !tx.rc && type[0] == MSG_CHUNK && type[2] == MSG_CHUNK && type[4] == MSG_PROGRESS &&
           len[1] == PROTO_CHUNK_HDR + 300000 && len[3] == PROTO_CHUNK_HDR,
       "recv_buf: four CHUNKs (one with a wrong content id) and a PROGRESS received (%s)", err);
    ok(len[4] == 8 && !memcmp(buf[4], "stage=x\n", 9), "recv_buf: a text payload, NUL after it");
    ok(!memcmp(buf[1] + PROTO_CHUNK_HDR, big, 300000), "recv_buf: chunk data intact");
    is_int(proto_chunks_verify(&c, pl, len, 2, &bad, err, sizeof err), 0,
           "chunks_verify: two good ones at once");
    is_int(proto_chunks_verify(&c, pl, len, 4, &bad, err, sizeof err), -EBADMSG,
           "chunks_verify: a batch with a wrong content id refused");
    ok(bad == 2 && has(err, "chunk 2: content id does not match its 300000 data bytes"),
       "chunks_verify: the third named, position %zu: %s", bad, err);
    is_int(proto_chunks_verify(&c, pl + 3, len + 3, 1, &bad, err, sizeof err), 0,
           "chunks_verify: an empty chunk alone");
    len[0] = PROTO_CHUNK_HDR - 1;
    ok(proto_chunks_verify(&c, pl, len, 2, &bad, err, sizeof err) == -EBADMSG && bad == 0 &&
           has(err, "chunk too short"),
       "chunks_verify: a payload too short for a chunk refused");
    is_int(proto_chunks_verify(&c, pl, len, PROTO_VERIFY_MAX + 1, &bad, err, sizeof err), -E2BIG,
           "chunks_verify: more than PROTO_VERIFY_MAX at once refused");
    for (int i = 0; i < 5; i++)
        free(buf[i]);
    close(sv[0]);
    close(sv[1]);
}

/* ---- chunks -------------------------------------------------------------------- */

static void test_chunks(void)
{
    uint8_t pl[PROTO_CHUNK_HDR + 100];
    uint64_t idx;
    const uint8_t *d;
    uint32_t dlen;
    char err[256] = "";
    struct proto_conn c;

    authed(&c, -1, -1, PROTO_ROLE_DEST, 0);
    memset(pl, 0, sizeof pl);
    pl[7] = 5;
    for (int i = 0; i < 100; i++)
        pl[PROTO_CHUNK_HDR + i] = (uint8_t)i;
    /* The construction of vmmig-protocol(7), CHUNKS, computed independently
     * (Python: hmac, hashlib and a POLYVAL checked against RFC 8452's test
     * vector) for the session key 0x42 x 32 and data 0, 1, ..., n-1. */
    {
        static const struct {
            uint32_t n;
            const char *id;
        } kat[] = {
            {0, "5f9024f18308216b157536a6b3e6edb4c8efbc4c1463861357446f7f53f520f3"},
            {17, "bf347754a3a243d4b27e39bd46896277d5886cd2cae7857c7ce99af51884f768"},
            {100, "a2643345e639754e82e24d60ea430718fdc221f570887e393516ed52e84f7d1e"},
        };
        for (size_t k = 0; k < sizeof kat / sizeof kat[0]; k++) {
            uint8_t id[PROTO_CID_LEN];
            char hex[2 * PROTO_CID_LEN + 1];
            for (int mode = 0; mode < 2; mode++) {
                if (mode && !polyval_clmul_available())
                    break;
                polyval_use_clmul(mode);
                proto_chunk_id(&c, pl + PROTO_CHUNK_HDR, kat[k].n, id);
                for (int b = 0; b < PROTO_CID_LEN; b++)
                    snprintf(hex + 2 * b, 3, "%02x", id[b]);
                is_str(hex, kat[k].id, "chunk id of %u bytes (%s POLYVAL): the documented "
                       "construction", kat[k].n, mode ? "PCLMULQDQ" : "portable");
            }
        }
        polyval_use_clmul(true);
    }
    {
        uint8_t id1[PROTO_CID_LEN], id2[PROTO_CID_LEN], other_key[32] = {0x43};
        struct proto_conn o;
        authed(&o, -1, -1, PROTO_ROLE_DEST, 0);
        proto_set_session_key(&o, other_key);
        proto_chunk_id(&c, pl + PROTO_CHUNK_HDR, 100, id1);
        proto_chunk_id(&o, pl + PROTO_CHUNK_HDR, 100, id2);
        ok(memcmp(id1, id2, sizeof id1), "chunk id: another session key, another id");
        memcpy(pl + 8, id2, PROTO_CID_LEN);
        is_int(proto_chunk_parse(&c, pl, sizeof pl, &idx, &d, &dlen, err, sizeof err), -EBADMSG,
               "chunk: an id under another session's key refused");
        proto_wipe(&o);
        proto_chunk_id(&o, pl + PROTO_CHUNK_HDR, 100, id1);
        ok(memcmp(id1, id2, sizeof id1), "chunk id: proto_wipe clears the chunk keys too");
    }
    proto_chunk_id(&c, pl + PROTO_CHUNK_HDR, 100, pl + 8);
    ok(!proto_chunk_parse(&c, pl, sizeof pl, &idx, &d, &dlen, err, sizeof err) && idx == 5 &&
           dlen == 100 && d == pl + PROTO_CHUNK_HDR,
       "chunk: a good one parses");

    pl[PROTO_CHUNK_HDR + 50] ^= 1;
    is_int(proto_chunk_parse(&c, pl, sizeof pl, &idx, &d, &dlen, err, sizeof err), -EBADMSG,
           "chunk: data changed under its content id refused");
    ok(has(err, "chunk 5: content id does not match"), "chunk: message: %s", err);
    pl[PROTO_CHUNK_HDR + 50] ^= 1;
    pl[20] ^= 0x80;
    is_int(proto_chunk_parse(&c, pl, sizeof pl, &idx, &d, &dlen, err, sizeof err), -EBADMSG,
           "chunk: wrong content id refused");

    is_int(proto_chunk_parse(&c, pl, PROTO_CHUNK_HDR - 1, &idx, &d, &dlen, err, sizeof err), -EBADMSG,
           "chunk: 39 bytes (too short) refused");
    ok(has(err, "chunk too short (39 bytes"), "chunk too short: message: %s", err);
    is_int(proto_chunk_parse(&c, pl, 0, &idx, &d, &dlen, NULL, 0), -EBADMSG,
           "chunk: empty payload refused (NULL err is fine)");

    uint8_t *huge = calloc(1, PROTO_CHUNK_HDR + PROTO_CHUNK_MAX + 1);
    is_int(proto_chunk_parse(&c, huge, PROTO_CHUNK_HDR + PROTO_CHUNK_MAX + 1, &idx, &d, &dlen, err,
                             sizeof err),
           -EBADMSG, "chunk: more than 1 MiB of data refused");
    free(huge);
}

/* ---- key=value ------------------------------------------------------------------ */

#define KV(s) (const uint8_t *)(s), (uint32_t)(sizeof(s) - 1)

static void test_kv(void)
{
    char v[16];
    size_t pos;
    char k[8];

    is_int(kv_get(KV("a=1\nb=2\n"), "b", v, sizeof v), 0, "kv_get: second line");
    is_str(v, "2", "kv_get: value");
    is_int(kv_get(KV("a=1\nb=2"), "b", v, sizeof v), 0, "kv_get: last line without newline");
    is_str(v, "2", "kv_get: value without newline");
    is_int(kv_get(KV("a=1\n"), "c", v, sizeof v), -ENOENT, "kv_get: missing key");
    is_str(v, "", "kv_get: out is empty after ENOENT");
    is_int(kv_get(KV("hostname=x\n"), "host", v, sizeof v), -ENOENT,
           "kv_get: a key that is a prefix of another is not it");
    is_int(kv_get(KV("host=x\n"), "hostname", v, sizeof v), -ENOENT,
           "kv_get: a key longer than the line's is not it");
    is_int(kv_get(KV("xhost=1\nhost=2\n"), "host", v, sizeof v), 0,
           "kv_get: a key that ends another is not it");
    is_str(v, "2", "kv_get: ... the whole-key line is found");
    is_int(kv_get(KV("a=b=c\n"), "a", v, sizeof v), 0, "kv_get: '=' in a value");
    is_str(v, "b=c", "kv_get: value keeps its '='");
    is_int(kv_get(KV("a=\n"), "a", v, sizeof v), 0, "kv_get: empty value");
    is_str(v, "", "kv_get: empty value is \"\"");
    is_int(kv_get(KV("p=1\np=2\n"), "p", v, sizeof v), 0, "kv_get: repeated key");
    is_str(v, "1", "kv_get: repeated key gives the first");
    is_int(kv_get(KV("a=0123456789abcdef\n"), "a", v, sizeof v), -E2BIG,
           "kv_get: value of 16 bytes into 16 refused (-E2BIG)");
    is_str(v, "", "kv_get: out is empty after E2BIG");
    is_int(kv_get(KV("a=0123456789abcde\n"), "a", v, sizeof v), 0,
           "kv_get: value of 15 bytes into 16 fits");
    is_int(kv_get(KV("a=1\0\nb=2\n"), "b", v, sizeof v), -EBADMSG, "kv_get: NUL byte refused");
    is_int(kv_get(KV("a=1\nb=2\n\0"), "a", v, sizeof v), -EBADMSG,
           "kv_get: NUL after the match refused too");
    is_int(kv_get(KV("a=1\ngarbage\n"), "a", v, sizeof v), -EBADMSG,
           "kv_get: a line without '=' refused");
    is_int(kv_get(KV("=1\n"), "a", v, sizeof v), -EBADMSG, "kv_get: an empty key refused");
    is_int(kv_get(KV("a=1\n\n\nb=2\n"), "b", v, sizeof v), 0, "kv_get: empty lines skipped");
    is_int(kv_get(KV(""), "a", v, sizeof v), -ENOENT, "kv_get: empty payload");
    is_int(kv_get(NULL, 0, "a", v, sizeof v), -ENOENT, "kv_get: NULL empty payload");
    is_int(kv_get(KV("a=1\n"), "", v, sizeof v), -EINVAL, "kv_get: empty key asked");
    is_int(kv_get(KV("a=1\n"), "a=", v, sizeof v), -EINVAL, "kv_get: key with '=' asked");
    is_int(kv_get(KV("a=x\\ny\\\\z\n"), "a", v, sizeof v), 0, "kv_get: escapes");
    is_str(v, "x\ny\\z", "kv_get: escapes undone");
    is_int(kv_get(KV("a=x\\q\n"), "a", v, sizeof v), -EBADMSG, "kv_get: unknown escape refused");
    is_int(kv_get(KV("a=x\\"), "a", v, sizeof v), -EBADMSG, "kv_get: dangling backslash refused");
    is_int(kv_get(KV("a=1\n"), "a", v, 0), -E2BIG, "kv_get: outlen 0");

    struct strbuf sb = {0};
    kv_add(&sb, "k", "%s|%d", "a\\b\nc\r", 7);
    is_str(sb.s, "k=a\\\\b\\nc\\r|7\n", "kv_add: formats and escapes");
    is_int(kv_get((uint8_t *)sb.s, (uint32_t)sb.len, "k", v, sizeof v), 0, "kv_add -> kv_get");
    is_str(v, "a\\b\nc\r|7", "kv_add -> kv_get round trip");
    sb_free(&sb);

    pos = 0;
    int n = 0, rc;
    while ((rc = kv_next(KV("\na=1\n\nbb=2\nc=3"), &pos, k, sizeof k, v, sizeof v)) == 1)
        n++;
    ok(n == 3 && rc == 0, "kv_next: three lines, empty ones skipped, then 0");
    pos = 0;
    is_int(kv_next(KV("verylongkey=1\n"), &pos, k, sizeof k, v, sizeof v), -E2BIG,
           "kv_next: key too long");
    pos = 0;
    is_int(kv_next(KV("junk\n"), &pos, k, sizeof k, v, sizeof v), -EBADMSG,
           "kv_next: line without '='");
    pos = 0;
    is_int(kv_next(KV("a=\0\n"), &pos, k, sizeof k, v, sizeof v), -EBADMSG, "kv_next: NUL");
}

/* ---- key files ------------------------------------------------------------------ */

static int write_key(const char *path, const char *data, size_t n, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || write(fd, data, n) != (ssize_t)n)
        return -1;
    fchmod(fd, mode);
    close(fd);
    return 0;
}

static void test_load_key(void)
{
    char dir[] = "/tmp/vmmig-proto-test.XXXXXX", path[64], err[256];
    uint8_t psk[PROTO_KEY_MAX];
    size_t len = 0;
    int rc;

    if (!mkdtemp(dir))
        exit(2);
    snprintf(path, sizeof path, "%s/key", dir);

    write_key(path, "0123456789abcdef\n", 17, 0600);
    rc = proto_load_key(path, psk, &len, err, sizeof err);
    ok(!rc && len == 16 && !memcmp(psk, "0123456789abcdef", 16),
       "load_key: 16 bytes and a newline: the newline is stripped");
    write_key(path, "0123456789abcdef\n\n", 18, 0400);
    rc = proto_load_key(path, psk, &len, err, sizeof err);
    ok(!rc && len == 17, "load_key: only one trailing newline is stripped (mode 0400 is fine)");
    write_key(path, "\x00\xff\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f", 17,
              0600);
    rc = proto_load_key(path, psk, &len, err, sizeof err);
    ok(!rc && len == 17 && psk[0] == 0 && psk[1] == 0xff, "load_key: binary keys work");

    write_key(path, "0123456789abcde\n", 16, 0600);
    rc = proto_load_key(path, psk, &len, err, sizeof err);
    ok(rc == -EINVAL && has(err, "too short (15 bytes, at least 16)"),
       "load_key: 15 bytes refused: %s", err);

    write_key(path, "0123456789abcdef0123\n", 21, 0644);
    rc = proto_load_key(path, psk, &len, err, sizeof err);
    is_int(rc, -EACCES, "load_key: a world-readable key file refused");
    ok(has(err, "mode 0644") && has(err, "chmod 600"), "load_key: message: %s", err);
    write_key(path, "0123456789abcdef0123\n", 21, 0620);
    rc = proto_load_key(path, psk, &len, err, sizeof err);
    is_int(rc, -EACCES, "load_key: a group-writable key file refused");

    char *huge = malloc(PROTO_KEY_MAX + 2);
    memset(huge, 'k', PROTO_KEY_MAX + 2);
    write_key(path, huge, PROTO_KEY_MAX + 1, 0600);
    rc = proto_load_key(path, psk, &len, err, sizeof err);
    is_int(rc, -EFBIG, "load_key: a key file over the maximum refused");
    write_key(path, huge, PROTO_KEY_MAX, 0600);
    rc = proto_load_key(path, psk, &len, err, sizeof err);
    ok(!rc && len == PROTO_KEY_MAX, "load_key: a key of exactly the maximum works");
    free(huge);
    unlink(path);

    rc = proto_load_key(path, psk, &len, err, sizeof err);
    ok(rc == -ENOENT && has(err, "cannot open key file"), "load_key: missing file: %s", err);
    rc = proto_load_key(dir, psk, &len, err, sizeof err);
    ok(rc == -EINVAL || rc == -EACCES, "load_key: a directory refused (%d): %s", rc, err);
    mkfifo(path, 0600);
    rc = proto_load_key(path, psk, &len, err, sizeof err);
    ok(rc == -EINVAL && has(err, "not a regular file"), "load_key: a FIFO refused, not hung on");
    unlink(path);
    rmdir(dir);

    unsetenv("VMMIG_KEY_FILE");
    is_str(proto_key_file(), "/etc/vmmig/key", "proto_key_file: the default");
    setenv("VMMIG_KEY_FILE", "", 1);
    is_str(proto_key_file(), "/etc/vmmig/key", "proto_key_file: empty VMMIG_KEY_FILE ignored");
    setenv("VMMIG_KEY_FILE", "/tmp/k", 1);
    is_str(proto_key_file(), "/tmp/k", "proto_key_file: VMMIG_KEY_FILE");
    unsetenv("VMMIG_KEY_FILE");
}

int main(void)
{
    struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART: calls see EINTR */
    sigaction(SIGUSR1, &sa, NULL);
    memset(KEY, 0x42, sizeof KEY);
    big = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        big[i] = (uint8_t)(i * 2654435761u >> 13);

    is_str(msg_type_name(MSG_HELLO), "HELLO", "msg_type_name(HELLO)");
    is_str(msg_type_name(MSG_ABORT), "ABORT", "msg_type_name(ABORT)");
    is_str(msg_type_name(0), "unknown", "msg_type_name(0)");
    is_str(msg_type_name(300), "unknown", "msg_type_name(300)");

    test_handshake_ok();
    test_sessions_differ();
    test_wrong_keys();
    test_fake_server();
    test_fake_clients();
    test_handshake_deadline();
    test_bad_frames();
    test_replay();
    test_send_refusals();
    test_partial_eintr();
    test_pipe_stream();
    test_recv_buf();
    test_chunks();
    test_kv();
    test_load_key();
    free(big);
    return done_testing();
}
