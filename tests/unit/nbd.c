/* NBD: the request checks as a table (bad magic, out of range, oversized,
 * unknown commands and flags, the vmmig extension), the server driven byte
 * by byte over a socketpair (handshake options, errors that keep the stream
 * in step, a malformed stream that closes it), URL parsing, and our client
 * against our server. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "nbd.h"
#include "sha256.h"
#include "tap.h"

/* ---- an in-memory backend ---- */

#define MEMSIZE (1U << 20)
static uint8_t mem[MEMSIZE];
static int flushes, commits;

static int m_pread(void *h, void *buf, uint32_t len, uint64_t off)
{
    (void)h;
    memcpy(buf, mem + off, len);
    return 0;
}
static int m_pwrite(void *h, const void *buf, uint32_t len, uint64_t off, uint32_t flags)
{
    (void)h, (void)flags;
    if (off == 4096 * 7) /* a place that fails like a full disk */
        return -EDQUOT;
    memcpy(mem + off, buf, len);
    return 0;
}
static int m_flush(void *h)
{
    (void)h;
    flushes++;
    return 0;
}
static int m_zero(void *h, uint32_t len, uint64_t off, uint32_t flags)
{
    (void)h, (void)flags;
    memset(mem + off, 0, len);
    return 0;
}
static int m_hash(void *h, uint8_t *out, uint32_t len, uint64_t off, uint32_t block)
{
    (void)h;
    for (uint32_t d = 0; d < len; d += block, out += 32)
        sha256(mem + off + d, len - d < block ? len - d : block, out);
    return 0;
}
static int m_commit(void *h)
{
    (void)h;
    commits++;
    return 0;
}

static const struct nbd_ops mem_ops = {m_pread, m_pwrite, m_flush, m_zero, m_zero, m_hash,
                                       m_commit};

/* ---- the server in a thread ---- */

struct srv {
    int fd;
    struct nbd_export exp;
    int workers;
    int rc;
    pthread_t t;
};

static void *srv_main(void *arg)
{
    struct srv *s = arg;
    s->rc = nbd_serve(s->fd, s->fd, &s->exp, s->workers);
    shutdown(s->fd, SHUT_RDWR);
    return NULL;
}

/* Start a server on one end of a socketpair; returns the client end. */
static int srv_start(struct srv *s, const char *name, int workers)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        abort();
    memset(s, 0, sizeof *s);
    s->fd = sv[0];
    s->workers = workers;
    s->exp = (struct nbd_export){.name = name, .size = MEMSIZE, .ops = &mem_ops};
    pthread_create(&s->t, NULL, srv_main, s);
    return sv[1];
}

static int srv_end(struct srv *s, int cfd)
{
    close(cfd);
    pthread_join(s->t, NULL);
    close(s->fd);
    return s->rc;
}

/* ---- raw client helpers ---- */

static void be16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void be32(uint8_t *p, uint32_t v) { for (int i = 3; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v; }
static void be64(uint8_t *p, uint64_t v) { for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v; }
static uint32_t g32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static uint64_t g64(const uint8_t *p) { return (uint64_t)g32(p) << 32 | g32(p + 4); }

static void send_opt(int fd, uint32_t opt, const void *data, uint32_t len)
{
    uint8_t h[16];
    be64(h, NBD_IHAVEOPT);
    be32(h + 8, opt);
    be32(h + 12, len);
    nbd_write_full(fd, h, 16);
    if (len)
        nbd_write_full(fd, data, len);
}

/* Reads one option reply; returns its type (0 on a broken stream). */
static uint32_t read_rep(int fd, uint8_t *data, uint32_t *len)
{
    uint8_t h[20];
    if (nbd_read_full(fd, h, 20) || g64(h) != NBD_REP_MAGIC)
        return 0;
    *len = g32(h + 16);
    if (*len > 4096 || nbd_read_full(fd, data, *len))
        return 0;
    return g32(h + 12);
}

/* Handshake up to option haggling; returns the handshake flags. */
static int greet(int fd, uint32_t cflags)
{
    uint8_t h[18], c[4];
    if (nbd_read_full(fd, h, 18) || g64(h) != NBD_MAGIC || g64(h + 8) != NBD_IHAVEOPT)
        return -1;
    be32(c, cflags);
    nbd_write_full(fd, c, 4);
    return h[17];
}

/* NBD_OPT_GO for name; returns the export size or 0. */
static uint64_t go(int fd, const char *name)
{
    uint8_t d[64], r[4096];
    uint32_t nl = (uint32_t)strlen(name), len, type;
    uint64_t size = 0;
    be32(d, nl);
    memcpy(d + 4, name, nl);
    be16(d + 4 + nl, 0);
    send_opt(fd, NBD_OPT_GO, d, 6 + nl);
    while ((type = read_rep(fd, r, &len)) == NBD_REP_INFO)
        if (len >= 12 && r[0] == 0 && r[1] == NBD_INFO_EXPORT)
            size = g64(r + 2);
    return type == NBD_REP_ACK ? size : 0;
}

static void send_req(int fd, uint16_t flags, uint16_t type, uint64_t cookie, uint64_t off,
                     uint32_t len)
{
    struct nbd_request r = {flags, type, cookie, off, len};
    uint8_t h[NBD_REQUEST_SIZE];
    nbd_request_encode(&r, h);
    nbd_write_full(fd, h, sizeof h);
}

/* Reads a simple reply header; returns the error, or -1 on a broken stream. */
static long read_reply(int fd, uint64_t *cookie)
{
    uint8_t h[16];
    if (nbd_read_full(fd, h, 16) || g32(h) != NBD_SIMPLE_REPLY_MAGIC)
        return -1;
    *cookie = g64(h + 8);
    return g32(h + 4);
}

/* ---- client side against our server over a unix socket ---- */

static const char *sock_path = "/tmp/vmmig-unit-nbd.sock";

struct lsrv {
    int lfd;
    struct nbd_export exp;
    pthread_t t;
};

static void *lsrv_main(void *arg)
{
    struct lsrv *l = arg;
    int fd = accept(l->lfd, NULL, NULL);
    if (fd >= 0) {
        nbd_serve(fd, fd, &l->exp, 4);
        close(fd);
    }
    return NULL;
}

static void lsrv_start(struct lsrv *l, const struct nbd_ops *ops)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, sock_path);
    unlink(sock_path);
    l->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(l->lfd, (struct sockaddr *)&sa, sizeof sa) || listen(l->lfd, 4))
        abort();
    l->exp = (struct nbd_export){.size = MEMSIZE, .ops = ops};
    pthread_create(&l->t, NULL, lsrv_main, l);
}

static void lsrv_end(struct lsrv *l)
{
    pthread_join(l->t, NULL);
    close(l->lfd);
    unlink(sock_path);
}

/* ---- a scripted server, for the client's reply paths ---- */

/* What the scripted server does once the client is in transmission. */
enum script { S_REORDER, S_CLOSE, S_SILENT, S_IDLE_CLOSE, S_BAD_COOKIE };

struct fake {
    int lfd;
    enum script script;
    pthread_t t;
};

static void fake_reply(int fd, uint32_t error, uint64_t cookie)
{
    uint8_t h[16];
    be32(h, NBD_SIMPLE_REPLY_MAGIC);
    be32(h + 4, error);
    be64(h + 8, cookie);
    nbd_write_full(fd, h, 16);
}

/* One request and its payload; the cookie, or 0 at the end of the stream. */
static uint64_t fake_request(int fd, struct nbd_request *r)
{
    uint8_t h[NBD_REQUEST_SIZE], junk[4096];
    if (nbd_read_full(fd, h, sizeof h) || nbd_request_decode(h, r) || r->type == NBD_CMD_DISC)
        return 0;
    for (uint32_t n = nbd_request_payload(r), k; n; n -= k)
        if (nbd_read_full(fd, junk, k = n < sizeof junk ? n : sizeof junk))
            return 0;
    return r->cookie;
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    struct nbd_request r1, r2;
    uint8_t h[20], d[64], info[12];
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    /* The handshake: greeting, the client's flags, NBD_OPT_GO answered. */
    be64(h, NBD_MAGIC);
    be64(h + 8, NBD_IHAVEOPT);
    be16(h + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    nbd_write_full(fd, h, 18);
    if (nbd_read_full(fd, h, 4) || nbd_read_full(fd, h, 16) || g32(h + 12) > sizeof d ||
        nbd_read_full(fd, d, g32(h + 12)))
        goto out;
    be16(info, NBD_INFO_EXPORT);
    be64(info + 2, MEMSIZE);
    be16(info + 10, NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH);
    uint8_t rep[20];
    be64(rep, NBD_REP_MAGIC);
    be32(rep + 8, NBD_OPT_GO);
    be32(rep + 12, NBD_REP_INFO);
    be32(rep + 16, sizeof info);
    nbd_write_full(fd, rep, 20);
    nbd_write_full(fd, info, sizeof info);
    be32(rep + 12, NBD_REP_ACK);
    be32(rep + 16, 0);
    nbd_write_full(fd, rep, 20);

    switch (f->script) {
    case S_REORDER: /* two requests answered last first, the second with an error */
        if (!fake_request(fd, &r1) || !fake_request(fd, &r2))
            break;
        fake_reply(fd, NBD_ENOSPC, r2.cookie);
        usleep(50000);
        fake_reply(fd, 0, r1.cookie);
        if (fake_request(fd, &r1)) { /* then a read, with its data */
            uint8_t data[16];
            memset(data, 0x5a, sizeof data);
            fake_reply(fd, 0, r1.cookie);
            nbd_write_full(fd, data, sizeof data);
        }
        while (fake_request(fd, &r1)) /* until the client's DISC */
            ;
        break;
    case S_CLOSE: /* the request is taken, the server dies before answering */
        fake_request(fd, &r1);
        break;
    case S_SILENT: /* the request is taken and never answered */
        fake_request(fd, &r1);
        while (read(fd, h, sizeof h) > 0)
            ;
        break;
    case S_IDLE_CLOSE: /* gone while nothing is asked */
        break;
    case S_BAD_COOKIE:
        if (fake_request(fd, &r1))
            fake_reply(fd, 0, r1.cookie + 1000);
        while (read(fd, h, sizeof h) > 0)
            ;
        break;
    }
out:
    close(fd);
    return NULL;
}

static void fake_start(struct fake *f, enum script script)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, sock_path);
    unlink(sock_path);
    f->script = script;
    f->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(f->lfd, (struct sockaddr *)&sa, sizeof sa) || listen(f->lfd, 4))
        abort();
    pthread_create(&f->t, NULL, fake_main, f);
}

static void fake_end(struct fake *f)
{
    pthread_join(f->t, NULL);
    close(f->lfd);
    unlink(sock_path);
}

struct waiter {
    struct nbd_client *c;
    struct nbd_pending *p;
    int rc;
};

static void *wait_main(void *arg)
{
    struct waiter *w = arg;
    w->rc = nbd_client_wait(w->c, w->p);
    return NULL;
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

int main(void)
{
    /* ---- request checks: the table ---- */
    {
        static const struct {
            uint16_t type, flags;
            uint64_t off;
            uint32_t len;
            bool ro;
            uint32_t hash_block;
            uint32_t want;
            const char *what;
        } t[] = {
            {NBD_CMD_READ, 0, 0, 4096, 0, 0, 0, "read at 0"},
            {NBD_CMD_READ, 0, MEMSIZE - 1, 1, 0, 0, 0, "read of the last byte"},
            {NBD_CMD_READ, 0, MEMSIZE - 1, 2, 0, 0, NBD_EINVAL, "read past the end: EINVAL"},
            {NBD_CMD_READ, 0, MEMSIZE, 1, 0, 0, NBD_EINVAL, "read at the end: EINVAL"},
            {NBD_CMD_READ, 0, UINT64_MAX, 2, 0, 0, NBD_EINVAL, "read offset+length wraps: EINVAL"},
            {NBD_CMD_READ, 0, 0, 0, 0, 0, NBD_EINVAL, "zero-length read: EINVAL"},
            {NBD_CMD_READ, 0, 0, NBD_MAX_PAYLOAD + 1, 0, 0, NBD_EINVAL, "read over 32 MiB: EINVAL"},
            {NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 1, 0, 0, NBD_EINVAL, "read with FUA: EINVAL"},
            {NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 0, 512, 0, 0, 0, "write with FUA"},
            {NBD_CMD_WRITE, 0, MEMSIZE - 10, 11, 0, 0, NBD_ENOSPC, "write past the end: ENOSPC"},
            {NBD_CMD_WRITE, 0, 0, NBD_MAX_PAYLOAD + 1, 0, 0, NBD_EINVAL, "write over 32 MiB: EINVAL"},
            {NBD_CMD_WRITE, 0, 0, 512, 1, 0, NBD_EPERM, "write to a read-only export: EPERM"},
            {NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 512, 0, 0, NBD_EINVAL, "write with NO_HOLE: EINVAL"},
            {NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA, 0, MEMSIZE, 0, 0, 0,
             "write-zeroes of everything, NO_HOLE|FUA"},
            {NBD_CMD_WRITE_ZEROES, 0, 1, MEMSIZE, 0, 0, NBD_ENOSPC, "write-zeroes past the end: ENOSPC"},
            {NBD_CMD_TRIM, 0, MEMSIZE, 1, 0, 0, NBD_EINVAL, "trim past the end: EINVAL"},
            {NBD_CMD_TRIM, 0, 0, MEMSIZE, 1, 0, NBD_EPERM, "trim on read-only: EPERM"},
            {NBD_CMD_FLUSH, 0, 0, 0, 0, 0, 0, "flush"},
            {NBD_CMD_FLUSH, NBD_CMD_FLAG_FUA, 0, 0, 0, 0, NBD_EINVAL, "flush with FUA: EINVAL"},
            {5, 0, 0, 1, 0, 0, NBD_EINVAL, "CACHE (not offered): EINVAL"},
            {7, 0, 0, 1, 0, 0, NBD_EINVAL, "BLOCK_STATUS (not negotiated): EINVAL"},
            {0x1234, 0, 0, 1, 0, 0, NBD_EINVAL, "unknown command: EINVAL"},
            {NBD_CMD_VMMIG_HASH, 0, 0, 65536, 0, 0, NBD_EINVAL, "hash without the extension: EINVAL"},
            {NBD_CMD_VMMIG_HASH, 0, 0, 65536, 0, 4096, 0, "hash of 16 blocks"},
            {NBD_CMD_VMMIG_HASH, 0, 4095, 4096, 0, 4096, NBD_EINVAL, "hash unaligned: EINVAL"},
            {NBD_CMD_VMMIG_HASH, 0, 4096, 100, 0, 4096, NBD_EINVAL, "hash of a partial block: EINVAL"},
            {NBD_CMD_VMMIG_HASH, 0, MEMSIZE - 4096, 4096, 0, 4096, 0, "hash of the last block"},
            {NBD_CMD_VMMIG_COMMIT, 0, 0, 0, 0, 4096, 0, "commit with the extension"},
            {NBD_CMD_VMMIG_COMMIT, 0, 0, 0, 0, 0, NBD_EINVAL, "commit without it: EINVAL"},
        };
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
            struct nbd_request r = {t[i].flags, t[i].type, 1, t[i].off, t[i].len};
            struct nbd_limits lim = {MEMSIZE, t[i].ro, t[i].hash_block};
            is_int(nbd_request_check(&r, &lim), t[i].want, "check: %s", t[i].what);
        }
        uint8_t h[NBD_REQUEST_SIZE];
        struct nbd_request r = {NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 0x1122334455667788ULL, 4096, 512}, d;
        nbd_request_encode(&r, h);
        ok(!nbd_request_decode(h, &d) && d.cookie == r.cookie && d.offset == 4096 &&
               d.length == 512 && d.type == NBD_CMD_WRITE && d.flags == NBD_CMD_FLAG_FUA,
           "encode/decode round trip");
        h[0] ^= 1;
        is_int(nbd_request_decode(h, &d), -EPROTO, "bad request magic: -EPROTO");
        is_int(nbd_request_payload(&r), 512, "a write carries its length as payload");
        r.type = NBD_CMD_WRITE_ZEROES;
        is_int(nbd_request_payload(&r), 0, "write-zeroes carries none");
        is_int(nbd_errno_to_wire(-EDQUOT), NBD_ENOSPC, "EDQUOT goes on the wire as ENOSPC");
        is_int(nbd_errno_to_wire(-ENOTSUP), NBD_ENOTSUP, "ENOTSUP as ENOTSUP");
        is_int(nbd_errno_to_wire(-ENOENT), NBD_EIO, "anything else as EIO");
        is_int(nbd_wire_to_errno(NBD_ESHUTDOWN), -ESHUTDOWN, "ESHUTDOWN back");
    }

    /* ---- handshake options ---- */
    {
        struct srv s;
        uint8_t r[4096];
        uint32_t len;
        int fd = srv_start(&s, "disk", 1);
        int hf = greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
        is_int(hf, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, "server: fixed newstyle, no zeroes");
        send_opt(fd, NBD_OPT_LIST, NULL, 0);
        is_int(read_rep(fd, r, &len), NBD_REP_SERVER, "LIST: one SERVER reply");
        ok(len == 8 && g32(r) == 4 && !memcmp(r + 4, "disk", 4), "LIST names the export");
        is_int(read_rep(fd, r, &len), NBD_REP_ACK, "LIST: then ACK");
        send_opt(fd, NBD_OPT_LIST, "x", 1);
        is_int(read_rep(fd, r, &len), NBD_REP_ERR_INVALID, "LIST with data: ERR_INVALID");
        send_opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
        is_int(read_rep(fd, r, &len), NBD_REP_ERR_UNSUP, "STRUCTURED_REPLY: ERR_UNSUP (simple replies)");
        send_opt(fd, NBD_OPT_STARTTLS, NULL, 0);
        is_int(read_rep(fd, r, &len), NBD_REP_ERR_UNSUP, "STARTTLS: ERR_UNSUP");
        send_opt(fd, 0x12345, NULL, 0);
        is_int(read_rep(fd, r, &len), NBD_REP_ERR_UNSUP, "unknown option: ERR_UNSUP");
        uint8_t bad[8] = {0, 0, 0, 9, 'x', 'y', 0, 0};
        send_opt(fd, NBD_OPT_INFO, bad, sizeof bad);
        is_int(read_rep(fd, r, &len), NBD_REP_ERR_INVALID, "INFO with a name longer than the data: ERR_INVALID");
        uint8_t other[10] = {0, 0, 0, 4, 'n', 'o', 'n', 'e', 0, 0};
        send_opt(fd, NBD_OPT_GO, other, sizeof other);
        is_int(read_rep(fd, r, &len), NBD_REP_ERR_UNKNOWN, "GO to another export: ERR_UNKNOWN");
        uint8_t b[4];
        be32(b, 1000);
        send_opt(fd, NBD_OPT_VMMIG, b, 4);
        is_int(read_rep(fd, r, &len), NBD_REP_ERR_INVALID, "vmmig option with a bad block size: ERR_INVALID");
        be32(b, 4096);
        send_opt(fd, NBD_OPT_VMMIG, b, 4);
        is_int(read_rep(fd, r, &len), NBD_REP_ACK, "vmmig option, 4096: ACK");
        uint8_t *big = calloc(1, NBD_OPTION_MAX + 100);
        send_opt(fd, 0x777, big, NBD_OPTION_MAX + 100);
        free(big);
        is_int(read_rep(fd, r, &len), NBD_REP_ERR_INVALID, "overlong option: drained, ERR_INVALID");
        is_int(go(fd, "disk"), MEMSIZE, "GO disk: the size, then ACK");

        /* Transmission: every error keeps the stream in step. */
        uint64_t ck;
        uint8_t buf[8192];
        memset(buf, 0x5a, sizeof buf);
        send_req(fd, 0, NBD_CMD_WRITE, 1, 8192, 4096);
        nbd_write_full(fd, buf, 4096);
        ok(read_reply(fd, &ck) == 0 && ck == 1, "write: ok");
        send_req(fd, 0, NBD_CMD_WRITE, 2, MEMSIZE - 100, 4096);
        nbd_write_full(fd, buf, 4096);
        ok(read_reply(fd, &ck) == NBD_ENOSPC && ck == 2, "write past the end: ENOSPC, payload drained");
        send_req(fd, 0, NBD_CMD_WRITE, 3, 4096 * 7, 10);
        nbd_write_full(fd, buf, 10);
        ok(read_reply(fd, &ck) == NBD_ENOSPC && ck == 3, "backend EDQUOT: ENOSPC on the wire");
        send_req(fd, 0, NBD_CMD_READ, 4, MEMSIZE, 1);
        ok(read_reply(fd, &ck) == NBD_EINVAL && ck == 4, "read past the end: EINVAL, no data");
        send_req(fd, 0, NBD_CMD_READ, 5, 0, NBD_MAX_PAYLOAD + 1);
        ok(read_reply(fd, &ck) == NBD_EINVAL && ck == 5, "oversized read: EINVAL");
        send_req(fd, 0, 0x99, 6, 0, 1);
        ok(read_reply(fd, &ck) == NBD_EINVAL && ck == 6, "unknown command: EINVAL");
        send_req(fd, 0x80, NBD_CMD_WRITE, 7, 0, 16);
        nbd_write_full(fd, buf, 16);
        ok(read_reply(fd, &ck) == NBD_EINVAL && ck == 7, "unknown flag on a write: EINVAL, drained");
        send_req(fd, 0, NBD_CMD_READ, 8, 8192, 4096);
        ok(read_reply(fd, &ck) == 0 && ck == 8 && !nbd_read_full(fd, buf + 4096, 4096) &&
               !memcmp(buf, buf + 4096, 4096),
           "after all that, a read gives back what was written");
        send_req(fd, 0, NBD_CMD_VMMIG_HASH, 9, 8192, 8192);
        uint8_t hh[64], want[32];
        sha256(mem + 8192, 4096, want);
        ok(read_reply(fd, &ck) == 0 && !nbd_read_full(fd, hh, 64) && !memcmp(hh, want, 32),
           "hash: two SHA-256, the first of the block written");
        send_req(fd, 0, NBD_CMD_FLUSH, 10, 0, 0);
        ok(read_reply(fd, &ck) == 0 && flushes == 1, "flush reaches the backend");
        send_req(fd, 0, NBD_CMD_VMMIG_COMMIT, 11, 0, 0);
        ok(read_reply(fd, &ck) == 0 && commits == 1, "commit reaches the backend");
        send_req(fd, 0, NBD_CMD_DISC, 12, 0, 0);
        is_int(srv_end(&s, fd), 0, "DISC: a clean end");
    }

    /* ---- oversized write: 33 MiB of payload drained, threaded server ---- */
    {
        struct srv s;
        int fd = srv_start(&s, NULL, 4);
        greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
        uint8_t en[4] = "any";
        send_opt(fd, NBD_OPT_EXPORT_NAME, en, 3);
        uint8_t r[134];
        ok(!nbd_read_full(fd, r, 134) && g64(r) == MEMSIZE,
           "EXPORT_NAME with any name (export without a name): size and 124 zeroes");
        size_t n = NBD_MAX_PAYLOAD + 4096;
        uint8_t *p = calloc(1, n);
        send_req(fd, 0, NBD_CMD_WRITE, 77, 0, (uint32_t)n);
        nbd_write_full(fd, p, n);
        free(p);
        uint64_t ck;
        ok(read_reply(fd, &ck) == NBD_EINVAL && ck == 77, "write of 32 MiB + 4 KiB: EINVAL");
        send_req(fd, 0, NBD_CMD_READ, 78, 0, 512);
        uint8_t b[512];
        ok(read_reply(fd, &ck) == 0 && ck == 78 && !nbd_read_full(fd, b, 512),
           "and the stream is still in step");
        is_int(srv_end(&s, fd), 0, "EOF between requests: a clean end");
    }

    /* ---- malformed streams close the connection ---- */
    {
        struct srv s;
        int fd = srv_start(&s, NULL, 1);
        greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
        go(fd, "");
        uint8_t junk[NBD_REQUEST_SIZE];
        memset(junk, 0xee, sizeof junk);
        nbd_write_full(fd, junk, sizeof junk);
        uint64_t ck;
        is_int(read_reply(fd, &ck), -1, "bad request magic: no reply, the connection closes");
        is_int(srv_end(&s, fd), -EPROTO, "the server reports -EPROTO");

        fd = srv_start(&s, NULL, 4);
        greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
        go(fd, "");
        send_req(fd, 0, NBD_CMD_WRITE, 1, 0, 4096);
        nbd_write_full(fd, junk, sizeof junk); /* the payload stops short */
        shutdown(fd, SHUT_WR);
        is_int(srv_end(&s, fd), -EPROTO, "truncated write payload: -EPROTO");

        fd = srv_start(&s, NULL, 1);
        greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
        go(fd, "");
        nbd_write_full(fd, junk, 10);
        shutdown(fd, SHUT_WR);
        is_int(srv_end(&s, fd), -EPROTO, "truncated request header: -EPROTO");

        fd = srv_start(&s, NULL, 1);
        greet(fd, 0x80);
        is_int(srv_end(&s, fd), -EPROTO, "unknown client flags: dropped");

        fd = srv_start(&s, NULL, 1);
        greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
        nbd_write_full(fd, junk, 16);
        is_int(srv_end(&s, fd), -EPROTO, "bad option magic: dropped");

        fd = srv_start(&s, NULL, 1);
        greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
        send_opt(fd, NBD_OPT_ABORT, NULL, 0);
        uint8_t r[16];
        uint32_t len;
        is_int(read_rep(fd, r, &len), NBD_REP_ACK, "ABORT: ACK");
        is_int(srv_end(&s, fd), 0, "ABORT: a clean end");

        fd = srv_start(&s, "disk", 1);
        greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
        send_opt(fd, NBD_OPT_EXPORT_NAME, "nope", 4);
        is_int(srv_end(&s, fd), -ENOENT, "EXPORT_NAME of an unknown export: dropped");
    }

    /* ---- URLs ---- */
    {
        char path[108], host[64], port[16], name[64];
        ok(!nbd_url_parse("nbd+unix:///?socket=/run/x.sock", path, sizeof path, host, sizeof host,
                          port, sizeof port, name, sizeof name) &&
               !strcmp(path, "/run/x.sock") && !name[0],
           "nbd+unix:///?socket=PATH");
        ok(!nbd_url_parse("nbd+unix:///disk?socket=/s&x=1", path, sizeof path, host, sizeof host,
                          port, sizeof port, name, sizeof name) &&
               !strcmp(path, "/s") && !strcmp(name, "disk"),
           "nbd+unix:///NAME?socket=PATH&more");
        ok(!nbd_url_parse("nbd://127.0.0.1:10900/exp", path, sizeof path, host, sizeof host, port,
                          sizeof port, name, sizeof name) &&
               !strcmp(host, "127.0.0.1") && !strcmp(port, "10900") && !strcmp(name, "exp"),
           "nbd://HOST:PORT/NAME");
        ok(!nbd_url_parse("nbd://[::1]", path, sizeof path, host, sizeof host, port, sizeof port,
                          name, sizeof name) &&
               !strcmp(host, "::1") && !strcmp(port, "10809"),
           "nbd://[::1] with the default port");
        ok(!nbd_url_parse("/run/y.sock", path, sizeof path, host, sizeof host, port, sizeof port,
                          name, sizeof name) &&
               !strcmp(path, "/run/y.sock"),
           "a bare socket path");
        ok(nbd_url_parse("http://x", path, sizeof path, host, sizeof host, port, sizeof port, name,
                         sizeof name) &&
               nbd_url_parse("nbd+unix:///x", path, sizeof path, host, sizeof host, port,
                             sizeof port, name, sizeof name) &&
               nbd_url_parse("nbd://", path, sizeof path, host, sizeof host, port, sizeof port,
                             name, sizeof name),
           "not NBD URLs: refused");
    }

    /* ---- our client against our server ---- */
    {
        struct lsrv l;
        struct nbd_client *c;
        char err[256], url[200];
        lsrv_start(&l, &mem_ops);
        snprintf(url, sizeof url, "nbd+unix:///?socket=%s", sock_path);
        struct nbd_client_opts o = {.hash_block = 65536, .timeout_ms = 5000};
        is_int(nbd_client_connect(url, &o, &c, err, sizeof err), 0, "client connects (%s)", err);
        is_int(nbd_client_size(c), MEMSIZE, "client: size");
        ok(nbd_client_has_vmmig(c), "client: the vmmig extension is on");
        uint8_t w[65536], rd[65536], hs[64], want[32];
        for (size_t i = 0; i < sizeof w; i++)
            w[i] = (uint8_t)(i * 13);
        is_int(nbd_client_pwrite(c, w, sizeof w, 65536, NBD_CMD_FLAG_FUA), 0, "client write");
        is_int(nbd_client_pread(c, rd, sizeof rd, 65536), 0, "client read");
        ok(!memcmp(w, rd, sizeof w), "read gives back the write");
        is_int(nbd_client_hash(c, hs, 65536 * 2, 65536), 0, "client hash of two blocks");
        sha256(w, sizeof w, want);
        ok(!memcmp(hs, want, 32), "the hash is the SHA-256 of the block");
        is_int(nbd_client_zero(c, 65536, 65536, 0), 0, "client write-zeroes");
        nbd_client_pread(c, rd, 16, 65536);
        ok(!rd[0] && !rd[15], "zeroed");
        is_int(nbd_client_pwrite(c, w, 16, MEMSIZE - 8, 0), -ENOSPC, "write past the end: -ENOSPC");
        ok(nbd_client_alive(c), "and the connection stays up");
        is_int(nbd_client_commit(c), 0, "commit");
        nbd_client_close(c);
        lsrv_end(&l);

        /* A server without the extension: the client does without. */
        static const struct nbd_ops plain = {m_pread, m_pwrite, m_flush, m_zero, m_zero, NULL, NULL};
        lsrv_start(&l, &plain);
        is_int(nbd_client_connect(url, &o, &c, err, sizeof err), 0, "client connects to a plain server");
        ok(!nbd_client_has_vmmig(c), "no vmmig extension there");
        is_int(nbd_client_hash(c, hs, 65536, 0), -ENOTSUP, "hash: -ENOTSUP");
        nbd_client_close(c);
        lsrv_end(&l);

        is_int(nbd_client_connect(url, &o, &c, err, sizeof err), -ENOENT, "nobody listening: -ENOENT");
        ok(strstr(err, sock_path) != NULL, "the error names the socket (%s)", err);
    }
    /* ---- the client's reply paths, against a scripted server ---- */
    {
        struct fake f;
        struct nbd_client *c;
        struct nbd_pending p1, p2;
        char err[256], url[200];
        uint8_t w[4096], rd[16];
        memset(w, 1, sizeof w);
        snprintf(url, sizeof url, "nbd+unix:///?socket=%s", sock_path);
        struct nbd_client_opts o = {.timeout_ms = 5000};

        /* Replies out of order: whichever waiter reads hands the other its
         * reply (here the second request's waiter reads first). */
        fake_start(&f, S_REORDER);
        is_int(nbd_client_connect(url, &o, &c, err, sizeof err), 0, "scripted: connects (%s)", err);
        nbd_client_pwrite_start(c, &p1, w, sizeof w, 0, NBD_CMD_FLAG_FUA);
        nbd_client_pwrite_start(c, &p2, w, sizeof w, 4096, 0);
        struct waiter wt = {c, &p1, 1};
        pthread_t t;
        pthread_create(&t, NULL, wait_main, &wt);
        is_int(nbd_client_wait(c, &p2), -ENOSPC, "the second request's own reply (an error)");
        pthread_join(t, NULL);
        is_int(wt.rc, 0, "the first one's reply, answered later, reaches its waiter");
        is_int(nbd_client_pread(c, rd, sizeof rd, 0), 0, "then a read");
        ok(rd[0] == 0x5a && rd[15] == 0x5a, "with its data");
        ok(nbd_client_alive(c), "the connection is up");
        nbd_client_close(c);
        fake_end(&f);

        /* The server dies after taking a write, before answering it: the
         * waiter, reading its own reply, gets an error, not a success. */
        fake_start(&f, S_CLOSE);
        nbd_client_connect(url, &o, &c, err, sizeof err);
        nbd_client_pwrite_start(c, &p1, w, sizeof w, 0, NBD_CMD_FLAG_FUA);
        is_int(nbd_client_wait(c, &p1), -ECONNRESET, "server gone before the reply: -ECONNRESET");
        ok(!nbd_client_alive(c), "the connection is down");
        is_int(nbd_client_pwrite(c, w, sizeof w, 0, 0), -ECONNRESET, "later requests fail at once");
        nbd_client_close(c);
        fake_end(&f);

        /* A reply that never comes: the request's timeout ends it. */
        fake_start(&f, S_SILENT);
        o.timeout_ms = 300;
        nbd_client_connect(url, &o, &c, err, sizeof err);
        double t0 = now_ms();
        is_int(nbd_client_pwrite(c, w, sizeof w, 0, 0), -ETIMEDOUT, "no reply: -ETIMEDOUT");
        double el = now_ms() - t0;
        ok(el >= 250 && el < 2500, "after about the timeout (%.0f ms)", el);
        ok(!nbd_client_alive(c), "and the connection is down");
        nbd_client_close(c);
        fake_end(&f);
        o.timeout_ms = 5000;

        /* The server goes away while the connection is idle: nobody reads,
         * nbd_client_alive finds it. */
        fake_start(&f, S_IDLE_CLOSE);
        nbd_client_connect(url, &o, &c, err, sizeof err);
        fake_end(&f);
        ok(!nbd_client_alive(c), "an idle connection whose server left: not alive");
        is_int(nbd_client_flush(c), -ECONNRESET, "and a request on it fails");
        nbd_client_close(c);

        /* A reply to a request never made: the stream is not trusted. */
        fake_start(&f, S_BAD_COOKIE);
        nbd_client_connect(url, &o, &c, err, sizeof err);
        is_int(nbd_client_flush(c), -EPROTO, "a reply with an unknown cookie: -EPROTO");
        ok(!nbd_client_alive(c), "the connection is dropped");
        nbd_client_close(c);
        fake_end(&f);
    }
    return done_testing();
}
