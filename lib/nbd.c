/* NBD protocol: request checks, the server side (handshake + transmission)
 * and a pipelining client.  See nbd.h for the vmmig extension. */
#define _GNU_SOURCE
#include "nbd.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---- wire helpers ---- */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

/* *got says how far we came: 0 at a clean end of stream. */
static int read_full_n(int fd, void *buf, size_t len, size_t *got)
{
    size_t done = 0;

    while (done < len) {
        ssize_t r = read(fd, (char *)buf + done, len - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            *got = done;
            return -errno;
        }
        if (r == 0) {
            *got = done;
            return -EPIPE;
        }
        done += (size_t)r;
    }
    *got = done;
    return 0;
}

int nbd_read_full(int fd, void *buf, size_t len)
{
    size_t got;
    return read_full_n(fd, buf, len, &got);
}

int nbd_write_full(int fd, const void *buf, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t r = write(fd, (const char *)buf + done, len - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        done += (size_t)r;
    }
    return 0;
}

static int writev_full(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t r = writev(fd, iov, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        while (n > 0 && (size_t)r >= iov->iov_len) {
            r -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + r;
            iov->iov_len -= (size_t)r;
        }
    }
    return 0;
}

/* Read and throw away len bytes (an option or payload we refuse). */
static int drain(int fd, uint64_t len)
{
    char scratch[65536];

    while (len) {
        size_t n = len < sizeof scratch ? (size_t)len : sizeof scratch;
        int rc = nbd_read_full(fd, scratch, n);
        if (rc)
            return rc;
        len -= n;
    }
    return 0;
}

/* ---- requests ---- */

int nbd_request_decode(const uint8_t hdr[NBD_REQUEST_SIZE], struct nbd_request *req)
{
    if (get32(hdr) != NBD_REQUEST_MAGIC)
        return -EPROTO;
    req->flags = get16(hdr + 4);
    req->type = get16(hdr + 6);
    req->cookie = get64(hdr + 8);
    req->offset = get64(hdr + 16);
    req->length = get32(hdr + 24);
    return 0;
}

void nbd_request_encode(const struct nbd_request *req, uint8_t hdr[NBD_REQUEST_SIZE])
{
    put32(hdr, NBD_REQUEST_MAGIC);
    put16(hdr + 4, req->flags);
    put16(hdr + 6, req->type);
    put64(hdr + 8, req->cookie);
    put64(hdr + 16, req->offset);
    put32(hdr + 24, req->length);
}

uint32_t nbd_request_payload(const struct nbd_request *req)
{
    return req->type == NBD_CMD_WRITE ? req->length : 0;
}

static bool in_range(const struct nbd_request *req, uint64_t size)
{
    return req->offset <= size && req->length <= size - req->offset;
}

uint32_t nbd_request_check(const struct nbd_request *req, const struct nbd_limits *lim)
{
    uint32_t allowed;

    switch (req->type) {
    case NBD_CMD_READ: allowed = 0; break;
    case NBD_CMD_WRITE:
    case NBD_CMD_TRIM: allowed = NBD_CMD_FLAG_FUA; break;
    case NBD_CMD_WRITE_ZEROES: allowed = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE; break;
    case NBD_CMD_FLUSH:
    case NBD_CMD_DISC: allowed = 0; break;
    case NBD_CMD_VMMIG_HASH:
    case NBD_CMD_VMMIG_COMMIT:
        if (!lim->hash_block)
            return NBD_EINVAL; /* not negotiated: as unknown */
        allowed = 0;
        break;
    default: return NBD_EINVAL; /* unknown command */
    }
    if (req->flags & ~allowed)
        return NBD_EINVAL;

    switch (req->type) {
    case NBD_CMD_READ:
        if (!req->length || req->length > NBD_MAX_PAYLOAD)
            return NBD_EINVAL;
        return in_range(req, lim->size) ? 0 : NBD_EINVAL;
    case NBD_CMD_WRITE:
        if (!req->length || req->length > NBD_MAX_PAYLOAD)
            return NBD_EINVAL;
        if (lim->read_only)
            return NBD_EPERM;
        return in_range(req, lim->size) ? 0 : NBD_ENOSPC;
    case NBD_CMD_WRITE_ZEROES:
        if (!req->length)
            return NBD_EINVAL;
        if (lim->read_only)
            return NBD_EPERM;
        return in_range(req, lim->size) ? 0 : NBD_ENOSPC;
    case NBD_CMD_TRIM:
        if (!req->length)
            return NBD_EINVAL;
        if (lim->read_only)
            return NBD_EPERM;
        return in_range(req, lim->size) ? 0 : NBD_EINVAL;
    case NBD_CMD_VMMIG_HASH: {
        uint64_t b = lim->hash_block;
        if (!req->length || req->length > NBD_HASH_MAX_LEN || !in_range(req, lim->size))
            return NBD_EINVAL;
        if (req->offset % b || (req->length % b && req->offset + req->length != lim->size))
            return NBD_EINVAL;
        return 0;
    }
    case NBD_CMD_VMMIG_COMMIT:
        return lim->read_only ? NBD_EPERM : 0;
    default: return 0;
    }
}

uint32_t nbd_errno_to_wire(int err)
{
    if (err < 0)
        err = -err;
    switch (err) {
    case 0: return 0;
    case EPERM:
    case EROFS:
    case EACCES: return NBD_EPERM;
    case ENOMEM: return NBD_ENOMEM;
    case EINVAL: return NBD_EINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG: return NBD_ENOSPC;
    case EOVERFLOW: return NBD_EOVERFLOW;
    case ENOTSUP: return NBD_ENOTSUP;
    case ESHUTDOWN: return NBD_ESHUTDOWN;
    default: return NBD_EIO;
    }
}

int nbd_wire_to_errno(uint32_t err)
{
    switch (err) {
    case 0: return 0;
    case NBD_EPERM: return -EPERM;
    case NBD_ENOMEM: return -ENOMEM;
    case NBD_EINVAL: return -EINVAL;
    case NBD_ENOSPC: return -ENOSPC;
    case NBD_EOVERFLOW: return -EOVERFLOW;
    case NBD_ENOTSUP: return -ENOTSUP;
    case NBD_ESHUTDOWN: return -ESHUTDOWN;
    default: return -EIO;
    }
}

const char *nbd_cmd_name(uint16_t type)
{
    switch (type) {
    case NBD_CMD_READ: return "read";
    case NBD_CMD_WRITE: return "write";
    case NBD_CMD_DISC: return "disconnect";
    case NBD_CMD_FLUSH: return "flush";
    case NBD_CMD_TRIM: return "trim";
    case NBD_CMD_WRITE_ZEROES: return "write-zeroes";
    case NBD_CMD_VMMIG_HASH: return "vmmig-hash";
    case NBD_CMD_VMMIG_COMMIT: return "vmmig-commit";
    default: return "unknown";
    }
}

/* ---- server: handshake ---- */

struct conn {
    int rfd, wfd;
    const struct nbd_export *exp;
    struct nbd_limits lim;
    bool no_zeroes;
    pthread_mutex_t wlock; /* one reply at a time on wfd */
};

static uint16_t transmission_flags(const struct nbd_export *exp)
{
    uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                 NBD_FLAG_CAN_MULTI_CONN;
    if (exp->read_only)
        f |= NBD_FLAG_READ_ONLY;
    else
        f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
    return f;
}

static int opt_reply(struct conn *c, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
    uint8_t h[20];
    put64(h, NBD_REP_MAGIC);
    put32(h + 8, opt);
    put32(h + 12, type);
    put32(h + 16, len);
    struct iovec iov[2] = {{h, sizeof h}, {(void *)data, len}};
    return writev_full(c->wfd, iov, len ? 2 : 1);
}

static int opt_error(struct conn *c, uint32_t opt, uint32_t type, const char *msg)
{
    return opt_reply(c, opt, type, msg, (uint32_t)strlen(msg));
}

static bool name_matches(const struct nbd_export *exp, const uint8_t *name, uint32_t len)
{
    if (!exp->name)
        return true;
    return strlen(exp->name) == len && !memcmp(exp->name, name, len);
}

/* NBD_OPT_INFO / NBD_OPT_GO; *go set when transmission starts. */
static int opt_info(struct conn *c, uint32_t opt, const uint8_t *d, uint32_t len, bool *go)
{
    uint32_t namelen;
    uint16_t nreq;
    bool want_bs = false;
    uint8_t info[14];

    if (len < 6 || (namelen = get32(d)) > len - 6)
        return opt_error(c, opt, NBD_REP_ERR_INVALID, "malformed info request");
    nreq = get16(d + 4 + namelen);
    if ((uint64_t)len != 6ULL + namelen + 2ULL * nreq)
        return opt_error(c, opt, NBD_REP_ERR_INVALID, "malformed info request");
    if (!name_matches(c->exp, d + 4, namelen))
        return opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "no such export");
    for (uint16_t i = 0; i < nreq; i++)
        want_bs |= get16(d + 6 + namelen + 2 * i) == NBD_INFO_BLOCK_SIZE;

    put16(info, NBD_INFO_EXPORT);
    put64(info + 2, c->exp->size);
    put16(info + 10, transmission_flags(c->exp));
    int rc = opt_reply(c, opt, NBD_REP_INFO, info, 12);
    if (!rc && want_bs) {
        put16(info, NBD_INFO_BLOCK_SIZE);
        put32(info + 2, 1);
        put32(info + 6, 4096);
        put32(info + 10, NBD_MAX_PAYLOAD);
        rc = opt_reply(c, opt, NBD_REP_INFO, info, 14);
    }
    if (!rc)
        rc = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
    if (!rc && opt == NBD_OPT_GO)
        *go = true;
    return rc;
}

/* The handshake: 1 when transmission starts, 0 when the client aborted,
 * -errno (or -EPROTO) when the connection is to be dropped. */
static int handshake(struct conn *c)
{
    uint8_t h[18], *data = NULL;
    int rc;

    put64(h, NBD_MAGIC);
    put64(h + 8, NBD_IHAVEOPT);
    put16(h + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    if ((rc = nbd_write_full(c->wfd, h, 18)))
        return rc;
    if ((rc = nbd_read_full(c->rfd, h, 4)))
        return rc;
    uint32_t cflags = get32(h);
    if (cflags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
        return -EPROTO; /* the spec: drop a client with unknown flags */
    c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

    data = malloc(NBD_OPTION_MAX);
    if (!data)
        return -ENOMEM;
    for (;;) {
        bool go = false;
        if ((rc = nbd_read_full(c->rfd, h, 16)))
            goto out;
        if (get64(h) != NBD_IHAVEOPT) {
            rc = -EPROTO;
            goto out;
        }
        uint32_t opt = get32(h + 8), len = get32(h + 12);
        if (len > NBD_OPTION_MAX) {
            /* Too long for any option we know: refuse it, but keep the
             * stream in step if the client is not plainly hostile. */
            if (opt == NBD_OPT_EXPORT_NAME || len > (1U << 20)) {
                rc = -EPROTO;
                goto out;
            }
            if ((rc = drain(c->rfd, len)) ||
                (rc = opt_error(c, opt, NBD_REP_ERR_INVALID, "option too long")))
                goto out;
            continue;
        }
        if ((rc = nbd_read_full(c->rfd, data, len)))
            goto out;
        switch (opt) {
        case NBD_OPT_EXPORT_NAME: {
            if (!name_matches(c->exp, data, len)) {
                rc = -ENOENT; /* this option cannot fail politely */
                goto out;
            }
            uint8_t r[10 + 124] = {0};
            put64(r, c->exp->size);
            put16(r + 8, transmission_flags(c->exp));
            rc = nbd_write_full(c->wfd, r, c->no_zeroes ? 10 : sizeof r);
            rc = rc ? rc : 1;
            goto out;
        }
        case NBD_OPT_ABORT:
            opt_reply(c, opt, NBD_REP_ACK, NULL, 0); /* the client may be gone already */
            rc = 0;
            goto out;
        case NBD_OPT_LIST: {
            if (len) {
                rc = opt_error(c, opt, NBD_REP_ERR_INVALID, "LIST takes no data");
                break;
            }
            const char *n = c->exp->name ? c->exp->name : "";
            uint8_t r[4 + 256];
            uint32_t nl = (uint32_t)strnlen(n, 256);
            put32(r, nl);
            memcpy(r + 4, n, nl);
            rc = opt_reply(c, opt, NBD_REP_SERVER, r, 4 + nl);
            if (!rc)
                rc = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
            break;
        }
        case NBD_OPT_INFO:
        case NBD_OPT_GO:
            rc = opt_info(c, opt, data, len, &go);
            if (!rc && go) {
                rc = 1;
                goto out;
            }
            break;
        case NBD_OPT_VMMIG: {
            uint32_t b = len == 4 ? get32(data) : 0;
            if (!c->exp->ops->hash)
                rc = opt_error(c, opt, NBD_REP_ERR_UNSUP, "no vmmig extension here");
            else if (b < NBD_HASH_MIN_BLOCK || b > NBD_MAX_PAYLOAD || (b & (b - 1)))
                rc = opt_error(c, opt, NBD_REP_ERR_INVALID, "bad hash block size");
            else {
                c->lim.hash_block = b;
                rc = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
            }
            break;
        }
        case NBD_OPT_STARTTLS:
        case NBD_OPT_STRUCTURED_REPLY:
        default:
            /* No TLS, simple replies only, no metadata contexts. */
            rc = opt_error(c, opt, NBD_REP_ERR_UNSUP, "not supported");
            break;
        }
        if (rc)
            goto out;
    }
out:
    free(data);
    return rc;
}

/* ---- server: transmission ---- */

struct job {
    struct nbd_request req;
    uint32_t error; /* from the checks; the backend is not called */
    uint8_t *buf;   /* the write payload, or room for the read data */
    struct job *next;
};

static int send_reply(struct conn *c, uint64_t cookie, uint32_t error, const void *data,
                      uint32_t len)
{
    uint8_t h[16];
    put32(h, NBD_SIMPLE_REPLY_MAGIC);
    put32(h + 4, error);
    put64(h + 8, cookie);
    struct iovec iov[2] = {{h, sizeof h}, {(void *)data, len}};
    pthread_mutex_lock(&c->wlock);
    int rc = writev_full(c->wfd, iov, error || !len ? 1 : 2);
    pthread_mutex_unlock(&c->wlock);
    return rc;
}

/* Run one checked request and reply. */
static int execute(struct conn *c, struct job *j)
{
    const struct nbd_ops *ops = c->exp->ops;
    void *h = c->exp->h;
    struct nbd_request *r = &j->req;
    uint32_t replylen = 0;
    int rc = 0;

    if (j->error)
        return send_reply(c, r->cookie, j->error, NULL, 0);
    switch (r->type) {
    case NBD_CMD_READ:
        rc = ops->pread(h, j->buf, r->length, r->offset);
        replylen = r->length;
        break;
    case NBD_CMD_WRITE: rc = ops->pwrite(h, j->buf, r->length, r->offset, r->flags); break;
    case NBD_CMD_FLUSH: rc = ops->flush(h); break;
    case NBD_CMD_TRIM: rc = ops->trim(h, r->length, r->offset, r->flags); break;
    case NBD_CMD_WRITE_ZEROES: rc = ops->zero(h, r->length, r->offset, r->flags); break;
    case NBD_CMD_VMMIG_HASH: {
        uint32_t b = c->lim.hash_block;
        replylen = (uint32_t)((r->length + (uint64_t)b - 1) / b * 32);
        rc = ops->hash(h, j->buf, r->length, r->offset, b);
        break;
    }
    case NBD_CMD_VMMIG_COMMIT: rc = ops->commit ? ops->commit(h) : -EINVAL; break;
    }
    return send_reply(c, r->cookie, nbd_errno_to_wire(rc), j->buf, rc ? 0 : replylen);
}

/* Read the next request and its payload into a new job.  NULL with *rc:
 * 0 at a clean end (DISC, or EOF between requests), -EPROTO for a broken
 * stream, -errno otherwise. */
static struct job *next_job(struct conn *c, int *rc)
{
    uint8_t hdr[NBD_REQUEST_SIZE];
    size_t got;
    struct job *j;

    *rc = read_full_n(c->rfd, hdr, sizeof hdr, &got);
    if (*rc) {
        if (*rc == -EPIPE)
            *rc = got ? -EPROTO : 0;
        return NULL;
    }
    j = calloc(1, sizeof *j);
    if (!j) {
        *rc = -ENOMEM;
        return NULL;
    }
    if ((*rc = nbd_request_decode(hdr, &j->req)))
        goto fail;
    if (j->req.type == NBD_CMD_DISC) {
        *rc = 0;
        goto fail;
    }
    j->error = nbd_request_check(&j->req, &c->lim);
    uint32_t payload = nbd_request_payload(&j->req);
    if (j->error) {
        /* Keep the stream in step: the payload follows whatever we think of it. */
        if (payload && (*rc = drain(c->rfd, payload)))
            goto fail;
        return j;
    }
    size_t buflen = j->req.type == NBD_CMD_READ || j->req.type == NBD_CMD_WRITE
                        ? j->req.length
                        : j->req.type == NBD_CMD_VMMIG_HASH
                              ? (j->req.length + (size_t)c->lim.hash_block - 1) /
                                    c->lim.hash_block * 32
                              : 0;
    if (buflen && !(j->buf = malloc(buflen))) {
        j->error = NBD_ENOMEM;
        if (payload && (*rc = drain(c->rfd, payload)))
            goto fail;
        return j;
    }
    if (payload && (*rc = nbd_read_full(c->rfd, j->buf, payload))) {
        if (*rc == -EPIPE)
            *rc = -EPROTO;
        goto fail;
    }
    return j;
fail:
    free(j->buf);
    free(j);
    return NULL;
}

static void job_free(struct job *j)
{
    free(j->buf);
    free(j);
}

/* Worker threads: a queue the reading thread fills, bounded so that a
 * client cannot make us hold more than QUEUE_MAX requests at once. */
#define QUEUE_MAX 16

struct pool {
    struct conn *c;
    pthread_mutex_t lock;
    pthread_cond_t more, room;
    struct job *head, *tail;
    int queued;
    bool closing;
    int error; /* the first failed reply write: the connection is lost */
};

static void *worker(void *arg)
{
    struct pool *p = arg;

    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (!p->head && !p->closing)
            pthread_cond_wait(&p->more, &p->lock);
        struct job *j = p->head;
        if (!j) {
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        pthread_mutex_unlock(&p->lock);

        int rc = execute(p->c, j);
        job_free(j);
        pthread_mutex_lock(&p->lock);
        p->queued--;
        if (rc && !p->error)
            p->error = rc;
        pthread_cond_signal(&p->room);
        pthread_mutex_unlock(&p->lock);
    }
}

static int transmit_threaded(struct conn *c, int nworkers)
{
    struct pool p = {.c = c};
    pthread_t *tids = calloc((size_t)nworkers, sizeof *tids);
    int started = 0, rc = 0;

    if (!tids)
        return -ENOMEM;
    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.more, NULL);
    pthread_cond_init(&p.room, NULL);
    for (; started < nworkers; started++)
        if (pthread_create(&tids[started], NULL, worker, &p))
            break;
    if (!started) {
        rc = -EAGAIN;
        goto out;
    }
    for (;;) {
        pthread_mutex_lock(&p.lock);
        while (p.queued >= QUEUE_MAX && !p.error)
            pthread_cond_wait(&p.room, &p.lock);
        int err = p.error;
        pthread_mutex_unlock(&p.lock);
        if (err) {
            rc = err;
            break;
        }
        struct job *j = next_job(c, &rc);
        if (!j)
            break;
        pthread_mutex_lock(&p.lock);
        int avail = 0;
        if (!p.queued && !ioctl(c->rfd, FIONREAD, &avail) && !avail) {
            /* Nothing else in flight or waiting to be read (a client at
             * queue depth 1): run it here, without handing it to a worker
             * and back.  A request that comes meanwhile waits for this one
             * to finish, as it would with one worker. */
            pthread_mutex_unlock(&p.lock);
            rc = execute(c, j);
            job_free(j);
            if (rc)
                break;
            continue;
        }
        if (p.tail)
            p.tail->next = j;
        else
            p.head = j;
        p.tail = j;
        p.queued++;
        pthread_cond_signal(&p.more);
        pthread_mutex_unlock(&p.lock);
    }
    /* The spec: finish what is in flight before closing. */
    pthread_mutex_lock(&p.lock);
    p.closing = true;
    pthread_cond_broadcast(&p.more);
    pthread_mutex_unlock(&p.lock);
out:
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    if (!rc && p.error)
        rc = p.error;
    pthread_cond_destroy(&p.more);
    pthread_cond_destroy(&p.room);
    pthread_mutex_destroy(&p.lock);
    free(tids);
    return rc;
}

uint16_t nbd_export_flags(const struct nbd_export *exp)
{
    return transmission_flags(exp);
}

static int serve(int rfd, int wfd, const struct nbd_export *exp, int workers, bool negotiate)
{
    struct conn c = {.rfd = rfd, .wfd = wfd, .exp = exp};
    int rc;

    c.lim.size = exp->size;
    c.lim.read_only = exp->read_only;
    pthread_mutex_init(&c.wlock, NULL);
    rc = negotiate ? handshake(&c) : 1;
    if (rc <= 0)
        goto out;
    if (workers > 1) {
        rc = transmit_threaded(&c, workers);
        goto out;
    }
    for (;;) {
        struct job *j = next_job(&c, &rc);
        if (!j)
            break;
        rc = execute(&c, j);
        job_free(j);
        if (rc)
            break;
    }
out:
    pthread_mutex_destroy(&c.wlock);
    return rc;
}

int nbd_serve(int rfd, int wfd, const struct nbd_export *exp, int workers)
{
    return serve(rfd, wfd, exp, workers, true);
}

int nbd_serve_transmission(int rfd, int wfd, const struct nbd_export *exp, int workers)
{
    return serve(rfd, wfd, exp, workers, false);
}

/* ---- client ---- */


struct nbd_client {
    int fd;
    uint64_t size;
    uint16_t flags;
    bool vmmig;
    uint32_t hash_block; /* with vmmig */
    uint32_t max_payload;
    int timeout_ms;
    pthread_mutex_t lock; /* pending list, dead, reading */
    pthread_cond_t cond;
    pthread_mutex_t send_lock;
    bool reading; /* a waiter is reading replies off the socket */
    struct nbd_pending *pending;
    uint64_t next_cookie;
    int dead; /* 0 while up, else the errno that ended it */
};

uint64_t nbd_client_size(const struct nbd_client *c)
{
    return c->size;
}

uint16_t nbd_client_flags(const struct nbd_client *c)
{
    return c->flags;
}

bool nbd_client_has_vmmig(const struct nbd_client *c)
{
    return c->vmmig;
}

uint32_t nbd_client_max_payload(const struct nbd_client *c)
{
    return c->max_payload;
}

/* Called with c->lock held. */
static void mark_dead(struct nbd_client *c, int err)
{
    if (c->dead)
        return;
    c->dead = err ? err : ECONNRESET;
    shutdown(c->fd, SHUT_RDWR);
    for (struct nbd_pending *p = c->pending; p; p = p->next)
        if (!p->done) {
            p->done = true;
            p->err = -c->dead;
        }
    c->pending = NULL;
    pthread_cond_broadcast(&c->cond);
}

/* Read len bytes of a reply.  The socket's receive timeout (SO_RCVTIMEO,
 * the request timeout) bounds each read: at a clean boundary (before any
 * byte of a reply) we keep waiting until the deadline, but a reply cut in
 * the middle for that long, or nothing at all by the deadline, is the
 * end of the connection. */
static int reply_read(struct nbd_client *c, void *buf, size_t len, bool boundary,
                      const struct timespec *deadline)
{
    size_t done = 0;

    while (done < len) {
        ssize_t r = read(c->fd, (char *)buf + done, len - done);
        if (r > 0) {
            done += (size_t)r;
            continue;
        }
        if (r == 0)
            return -EPIPE;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!boundary || done || !deadline || now.tv_sec > deadline->tv_sec ||
            (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec))
            return -ETIMEDOUT;
    }
    return 0;
}

/* The reader's role, taken by a waiter (no reader thread: at queue depth 1
 * the thread that sent a request reads its reply itself, with no handoff
 * between threads).  Reads replies, each to its request, until p is done;
 * other waiters are woken for theirs.  No lock held on entry; 0, or -errno
 * when the connection is lost (the caller marks it dead). */
static int read_replies(struct nbd_client *c, struct nbd_pending *p,
                        const struct timespec *deadline)
{
    uint8_t h[16];
    int rc;

    for (;;) {
        if ((rc = reply_read(c, h, sizeof h, true, deadline)))
            return rc;
        if (get32(h) != NBD_SIMPLE_REPLY_MAGIC)
            return -EPROTO;
        uint32_t error = get32(h + 4);
        uint64_t cookie = get64(h + 8);
        pthread_mutex_lock(&c->lock);
        struct nbd_pending **pp = &c->pending, *q;
        while ((q = *pp) && q->cookie != cookie)
            pp = &q->next;
        if (q)
            *pp = q->next; /* ours now: a timed-out waiter still waits for done */
        pthread_mutex_unlock(&c->lock);
        if (!q)
            return -EPROTO;
        if (!error && q->rlen && (rc = reply_read(c, q->rbuf, q->rlen, false, deadline))) {
            pthread_mutex_lock(&c->lock);
            q->done = true;
            q->err = rc;
            pthread_mutex_unlock(&c->lock);
            return rc;
        }
        pthread_mutex_lock(&c->lock);
        q->done = true;
        q->err = nbd_wire_to_errno(error);
        if (q != p)
            pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
        if (q == p)
            return 0;
        if (deadline) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec > deadline->tv_sec ||
                (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec))
                return -ETIMEDOUT; /* others are answered, ours is not */
        }
    }
}

/* Send a request; its reply is waited for by request_wait (p lives until then). */
static void request_send(struct nbd_client *c, struct nbd_pending *p, uint16_t type, uint16_t flags,
                         uint64_t off, uint32_t len, const void *payload, void *rbuf, uint32_t rlen)
{
    struct nbd_request req = {.flags = flags, .type = type, .offset = off, .length = len};
    uint8_t hdr[NBD_REQUEST_SIZE];
    int rc;

    memset(p, 0, sizeof *p);
    p->rbuf = rbuf;
    p->rlen = rlen;
    pthread_mutex_lock(&c->lock);
    if (c->dead) {
        p->err = -c->dead;
        p->done = true;
        pthread_mutex_unlock(&c->lock);
        return;
    }
    p->cookie = req.cookie = ++c->next_cookie;
    p->next = c->pending;
    c->pending = p;
    pthread_mutex_unlock(&c->lock);

    nbd_request_encode(&req, hdr);
    struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)payload, payload ? len : 0}};
    pthread_mutex_lock(&c->send_lock);
    rc = writev_full(c->fd, iov, payload ? 2 : 1);
    pthread_mutex_unlock(&c->send_lock);
    if (rc) {
        pthread_mutex_lock(&c->lock);
        mark_dead(c, -rc);
        pthread_mutex_unlock(&c->lock);
    }
}

static int request_wait(struct nbd_client *c, struct nbd_pending *p)
{
    struct timespec deadline;
    int rc;

    pthread_mutex_lock(&c->lock);
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += c->timeout_ms / 1000;
    deadline.tv_nsec += (long)(c->timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    while (!p->done) {
        if (!c->reading && !c->dead) {
            /* Nobody reads: we do, until our reply is in. */
            c->reading = true;
            pthread_mutex_unlock(&c->lock);
            rc = read_replies(c, p, c->timeout_ms ? &deadline : NULL);
            pthread_mutex_lock(&c->lock);
            c->reading = false;
            if (rc)
                mark_dead(c, rc == -EPIPE ? ECONNRESET : -rc); /* fails p too */
            /* The role is free: another waiter takes it (or close goes on).
             * Without waiters this is no system call. */
            pthread_cond_broadcast(&c->cond);
            continue;
        }
        if (!c->timeout_ms || c->dead) {
            pthread_cond_wait(&c->cond, &c->lock);
            continue;
        }
        if (pthread_cond_timedwait(&c->cond, &c->lock, &deadline) == ETIMEDOUT && !p->done)
            mark_dead(c, ETIMEDOUT); /* fails p too, and every other request */
    }
    rc = p->err;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static int request(struct nbd_client *c, uint16_t type, uint16_t flags, uint64_t off, uint32_t len,
                   const void *payload, void *rbuf, uint32_t rlen)
{
    struct nbd_pending p;
    request_send(c, &p, type, flags, off, len, payload, rbuf, rlen);
    return request_wait(c, &p);
}

void nbd_client_pwrite_start(struct nbd_client *c, struct nbd_pending *p, const void *buf,
                             uint32_t len, uint64_t off, uint32_t flags)
{
    request_send(c, p, NBD_CMD_WRITE, (uint16_t)(flags & NBD_CMD_FLAG_FUA), off, len, buf, NULL, 0);
}

int nbd_client_wait(struct nbd_client *c, struct nbd_pending *p)
{
    return request_wait(c, p);
}

int nbd_client_pread(struct nbd_client *c, void *buf, uint32_t len, uint64_t off)
{
    return request(c, NBD_CMD_READ, 0, off, len, NULL, buf, len);
}

int nbd_client_pwrite(struct nbd_client *c, const void *buf, uint32_t len, uint64_t off,
                      uint32_t flags)
{
    return request(c, NBD_CMD_WRITE, (uint16_t)(flags & NBD_CMD_FLAG_FUA), off, len, buf, NULL, 0);
}

int nbd_client_flush(struct nbd_client *c)
{
    if (!(c->flags & NBD_FLAG_SEND_FLUSH))
        return 0;
    return request(c, NBD_CMD_FLUSH, 0, 0, 0, NULL, NULL, 0);
}

int nbd_client_trim(struct nbd_client *c, uint32_t len, uint64_t off, uint32_t flags)
{
    if (!(c->flags & NBD_FLAG_SEND_TRIM))
        return 0; /* advisory */
    return request(c, NBD_CMD_TRIM, (uint16_t)(flags & NBD_CMD_FLAG_FUA), off, len, NULL, NULL,
                   0);
}

int nbd_client_zero(struct nbd_client *c, uint32_t len, uint64_t off, uint32_t flags)
{
    uint16_t f = (uint16_t)(flags & NBD_CMD_FLAG_FUA);

    if (c->flags & NBD_FLAG_SEND_WRITE_ZEROES)
        return request(c, NBD_CMD_WRITE_ZEROES, f, off, len, NULL, NULL, 0);
    uint32_t chunk = len < (1U << 20) ? len : (1U << 20);
    void *z = calloc(1, chunk);
    int rc = 0;
    if (!z)
        return -ENOMEM;
    while (len && !rc) {
        uint32_t n = len < chunk ? len : chunk;
        rc = request(c, NBD_CMD_WRITE, f, off, n, z, NULL, 0);
        off += n;
        len -= n;
    }
    free(z);
    return rc;
}

int nbd_client_hash(struct nbd_client *c, uint8_t *out, uint32_t len, uint64_t off)
{
    if (!c->vmmig)
        return -ENOTSUP;
    uint32_t n = (uint32_t)((len + (uint64_t)c->hash_block - 1) / c->hash_block);
    return request(c, NBD_CMD_VMMIG_HASH, 0, off, len, NULL, out, n * 32);
}

int nbd_client_commit(struct nbd_client *c)
{
    if (!c->vmmig)
        return -ENOTSUP;
    return request(c, NBD_CMD_VMMIG_COMMIT, 0, 0, 0, NULL, NULL, 0);
}

bool nbd_client_alive(struct nbd_client *c)
{
    pthread_mutex_lock(&c->lock);
    /* With nothing asked and nobody reading, anything readable (the end of
     * the stream, an error, unasked bytes) means the connection is gone:
     * found here since no thread sits reading an idle connection. */
    if (!c->dead && !c->reading && !c->pending) {
        struct pollfd pf = {.fd = c->fd, .events = POLLIN | POLLRDHUP};
        if (poll(&pf, 1, 0) > 0)
            mark_dead(c, ECONNRESET);
    }
    bool up = !c->dead;
    pthread_mutex_unlock(&c->lock);
    return up;
}

void nbd_client_kill(struct nbd_client *c)
{
    pthread_mutex_lock(&c->lock);
    mark_dead(c, ECONNABORTED);
    pthread_mutex_unlock(&c->lock);
}

void nbd_client_close(struct nbd_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    bool up = !c->dead;
    pthread_mutex_unlock(&c->lock);
    if (up) {
        uint8_t hdr[NBD_REQUEST_SIZE];
        struct nbd_request req = {.type = NBD_CMD_DISC};
        nbd_request_encode(&req, hdr);
        pthread_mutex_lock(&c->send_lock);
        nbd_write_full(c->fd, hdr, sizeof hdr);
        pthread_mutex_unlock(&c->send_lock);
    }
    pthread_mutex_lock(&c->lock);
    mark_dead(c, ECONNABORTED);
    while (c->reading) /* a waiter still on its way out of read_replies */
        pthread_cond_wait(&c->cond, &c->lock);
    pthread_mutex_unlock(&c->lock);
    close(c->fd);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->send_lock);
    pthread_cond_destroy(&c->cond);
    free(c);
}

/* ---- client: URL, connection, handshake ---- */

static void copy_span(char *dst, size_t size, const char *s, size_t n)
{
    if (!size)
        return;
    if (n >= size)
        n = size - 1;
    memcpy(dst, s, n);
    dst[n] = 0;
}

int nbd_url_parse(const char *url, char *path, size_t pathlen, char *host, size_t hostlen,
                  char *port, size_t portlen, char *name, size_t namelen)
{
    path[0] = host[0] = name[0] = 0;
    copy_span(port, portlen, "10809", 5);
    if (url[0] == '/') {
        copy_span(path, pathlen, url, strlen(url));
        return strlen(url) < pathlen ? 0 : -ENAMETOOLONG;
    }
    if (!strncmp(url, "unix:", 5)) {
        copy_span(path, pathlen, url + 5, strlen(url + 5));
        return url[5] && strlen(url + 5) < pathlen ? 0 : -EINVAL;
    }
    if (!strncmp(url, "nbd+unix://", 11)) {
        const char *p = url + 11, *q = strchr(p, '?');
        if (*p != '/' || !q)
            return -EINVAL;
        copy_span(name, namelen, p + 1, (size_t)(q - p - 1));
        const char *s = strstr(q, "socket=");
        if (!s || (s[-1] != '?' && s[-1] != '&'))
            return -EINVAL;
        s += 7;
        size_t n = strcspn(s, "&");
        if (!n || n >= pathlen)
            return -EINVAL;
        copy_span(path, pathlen, s, n);
        return 0;
    }
    if (!strncmp(url, "nbd://", 6)) {
        const char *p = url + 6, *end = p + strcspn(p, "/?"), *colon;
        if (*p == '[') { /* [v6]:port */
            const char *rb = memchr(p, ']', (size_t)(end - p));
            if (!rb)
                return -EINVAL;
            copy_span(host, hostlen, p + 1, (size_t)(rb - p - 1));
            colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
        } else {
            colon = memchr(p, ':', (size_t)(end - p));
            copy_span(host, hostlen, p, (size_t)((colon ? colon : end) - p));
        }
        if (colon)
            copy_span(port, portlen, colon + 1, (size_t)(end - colon - 1));
        if (*end == '/')
            copy_span(name, namelen, end + 1, strcspn(end + 1, "?"));
        return host[0] && port[0] ? 0 : -EINVAL;
    }
    return -EINVAL;
}

static int dial(const char *path, const char *host, const char *port, char *err, size_t errlen)
{
    int fd, r;

    if (path[0]) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof sa.sun_path) {
            snprintf(err, errlen, "%s: socket path too long", path);
            return -ENAMETOOLONG;
        }
        strcpy(sa.sun_path, path);
        if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
            return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            int e = errno;
            snprintf(err, errlen, "%s: %s", path, strerror(e));
            close(fd);
            return -e;
        }
        return fd;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
    if ((r = getaddrinfo(host, port, &hints, &res))) {
        snprintf(err, errlen, "%s: %s", host, gai_strerror(r));
        return -EHOSTUNREACH;
    }
    int e = ECONNREFUSED;
    fd = -1;
    for (ai = res; ai; ai = ai->ai_next) {
        if ((fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol)) < 0) {
            e = errno;
            continue;
        }
        if (!connect(fd, ai->ai_addr, ai->ai_addrlen))
            break;
        e = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "%s port %s: %s", host, port, strerror(e));
        return -e;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int send_option(int fd, uint32_t opt, const void *data, uint32_t len)
{
    uint8_t h[16];
    put64(h, NBD_IHAVEOPT);
    put32(h + 8, opt);
    put32(h + 12, len);
    struct iovec iov[2] = {{h, sizeof h}, {(void *)data, len}};
    return writev_full(fd, iov, len ? 2 : 1);
}

/* One option reply; data (up to size bytes, NUL-terminated) into buf. */
static int read_opt_reply(int fd, uint32_t opt, uint32_t *type, uint8_t *buf, size_t size,
                          uint32_t *len)
{
    uint8_t h[20];
    int rc;

    if ((rc = nbd_read_full(fd, h, sizeof h)))
        return rc;
    if (get64(h) != NBD_REP_MAGIC || get32(h + 8) != opt)
        return -EPROTO;
    *type = get32(h + 12);
    *len = get32(h + 16);
    if (*len >= size)
        return -EPROTO;
    if ((rc = nbd_read_full(fd, buf, *len)))
        return rc;
    buf[*len] = 0;
    return 0;
}

static int client_handshake(struct nbd_client *c, const char *name, uint32_t hash_block,
                            char *err, size_t errlen)
{
    uint8_t h[18], buf[4200];
    uint32_t type, len, nl = (uint32_t)strlen(name);
    int rc;

    if ((rc = nbd_read_full(c->fd, h, 18)) || get64(h) != NBD_MAGIC) {
        snprintf(err, errlen, "not an NBD server");
        return rc ? rc : -EPROTO;
    }
    if (get64(h + 8) != NBD_IHAVEOPT) {
        snprintf(err, errlen, "oldstyle NBD servers are not supported");
        return -EPROTO;
    }
    uint16_t gflags = get16(h + 16);
    bool fixed = gflags & NBD_FLAG_FIXED_NEWSTYLE, nozero = gflags & NBD_FLAG_NO_ZEROES;
    uint8_t cf[4];
    put32(cf, (fixed ? NBD_FLAG_C_FIXED_NEWSTYLE : 0) | (nozero ? NBD_FLAG_C_NO_ZEROES : 0));
    if ((rc = nbd_write_full(c->fd, cf, 4)))
        goto io;
    c->max_payload = NBD_MAX_PAYLOAD;

    if (fixed && hash_block) {
        uint8_t b[4];
        put32(b, hash_block);
        if ((rc = send_option(c->fd, NBD_OPT_VMMIG, b, 4)) ||
            (rc = read_opt_reply(c->fd, NBD_OPT_VMMIG, &type, buf, sizeof buf, &len)))
            goto io;
        c->vmmig = type == NBD_REP_ACK;
        c->hash_block = hash_block;
    }
    if (fixed) {
        uint8_t go[4 + 4096 + 4];
        if (nl > 4096) {
            snprintf(err, errlen, "export name too long");
            return -EINVAL;
        }
        put32(go, nl);
        memcpy(go + 4, name, nl);
        put16(go + 4 + nl, 1);
        put16(go + 6 + nl, NBD_INFO_BLOCK_SIZE);
        if ((rc = send_option(c->fd, NBD_OPT_GO, go, 8 + nl)))
            goto io;
        bool have_export = false;
        for (;;) {
            if ((rc = read_opt_reply(c->fd, NBD_OPT_GO, &type, buf, sizeof buf, &len)))
                goto io;
            if (type == NBD_REP_INFO && len >= 12 && get16(buf) == NBD_INFO_EXPORT) {
                c->size = get64(buf + 2);
                c->flags = get16(buf + 10);
                have_export = true;
            } else if (type == NBD_REP_INFO && len >= 14 && get16(buf) == NBD_INFO_BLOCK_SIZE) {
                uint32_t max = get32(buf + 10);
                if (max && max < c->max_payload)
                    c->max_payload = max;
            } else if (type == NBD_REP_ACK) {
                if (!have_export) {
                    snprintf(err, errlen, "server sent no export information");
                    return -EPROTO;
                }
                return 0;
            } else if (type == NBD_REP_ERR_UNSUP) {
                break; /* an old server: EXPORT_NAME below */
            } else if (type & 0x80000000U) {
                snprintf(err, errlen, "export '%s' refused%s%s", name, len ? ": " : "",
                         (char *)buf);
                return type == NBD_REP_ERR_UNKNOWN ? -ENOENT : -EACCES;
            }
        }
    }
    if ((rc = send_option(c->fd, NBD_OPT_EXPORT_NAME, name, nl)) ||
        (rc = nbd_read_full(c->fd, buf, nozero ? 10 : 134)))
        goto io;
    c->size = get64(buf);
    c->flags = get16(buf + 8);
    return 0;
io:
    snprintf(err, errlen, "handshake: %s", rc == -EPIPE ? "server closed the connection"
                                                        : strerror(-rc));
    return rc;
}

int nbd_client_connect(const char *url, const struct nbd_client_opts *o, struct nbd_client **out,
                       char *err, size_t errlen)
{
    char path[108], host[256], port[32], name[4097];
    struct nbd_client *c;
    int rc, fd;

    *out = NULL;
    if (nbd_url_parse(url, path, sizeof path, host, sizeof host, port, sizeof port, name,
                      sizeof name)) {
        snprintf(err, errlen, "%s: not an NBD URL (nbd+unix:///?socket=PATH or nbd://HOST:PORT)",
                 url);
        return -EINVAL;
    }
    if ((fd = dial(path, host, port, err, errlen)) < 0)
        return fd;
    if (!(c = calloc(1, sizeof *c))) {
        close(fd);
        return -ENOMEM;
    }
    c->fd = fd;
    c->timeout_ms = o ? o->timeout_ms : 0;
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->send_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    /* A server that never answers the handshake must not hang us either. */
    if (c->timeout_ms) {
        struct timeval tv = {.tv_sec = c->timeout_ms / 1000,
                             .tv_usec = (c->timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    if ((rc = client_handshake(c, name, o ? o->hash_block : 0, err, errlen)))
        goto fail;
    /* SO_RCVTIMEO stays: it bounds each read of a reply (reply_read). */
    *out = c;
    return 0;
fail:
    c->dead = EPROTO;
    nbd_client_close(c);
    return rc;
}
