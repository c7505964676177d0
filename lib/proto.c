/* The vmmig control protocol v1: framing, the PSK handshake, MACs, sequence
 * numbers and the key=value payloads.  See proto.h and vmmig-protocol(7). */
#define _GNU_SOURCE
#include "proto.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static const uint8_t MAGIC[4] = {'V', 'M', 'M', 'G'};

enum { FROM_SOURCE = 1, FROM_DEST = 2, FROM_EITHER = 3 };

static const struct msg_info {
    uint8_t type;
    uint8_t from;
    bool handshake;
    const char *name;
} msgs[] = {
    {MSG_HELLO, FROM_SOURCE, true, "HELLO"},
    {MSG_CHALLENGE, FROM_DEST, true, "CHALLENGE"},
    {MSG_AUTH, FROM_SOURCE, true, "AUTH"},
    {MSG_AUTH_OK, FROM_DEST, true, "AUTH_OK"},
    {MSG_AUTH_FAIL, FROM_DEST, true, "AUTH_FAIL"},
    {MSG_MIG_REQ, FROM_SOURCE, false, "MIG_REQ"},
    {MSG_REQ_OK, FROM_DEST, false, "REQ_OK"},
    {MSG_REQ_FAIL, FROM_DEST, false, "REQ_FAIL"},
    {MSG_MIG_CFG, FROM_SOURCE, false, "MIG_CFG"},
    {MSG_CFG_OK, FROM_DEST, false, "CFG_OK"},
    {MSG_CFG_FAIL, FROM_DEST, false, "CFG_FAIL"},
    {MSG_CHUNK, FROM_SOURCE, false, "CHUNK"},
    {MSG_STREAM_END, FROM_SOURCE, false, "STREAM_END"},
    {MSG_PROGRESS, FROM_SOURCE, false, "PROGRESS"},
    {MSG_RETURN, FROM_DEST, false, "RETURN"},
    {MSG_RECEIVED, FROM_DEST, false, "RECEIVED"},
    {MSG_COMMIT, FROM_SOURCE, false, "COMMIT"},
    {MSG_ACTIVATED, FROM_DEST, false, "ACTIVATED"},
    {MSG_DONE, FROM_SOURCE, false, "DONE"},
    {MSG_ABORT, FROM_EITHER, false, "ABORT"},
    {MSG_PAUSED, FROM_DEST, false, "PAUSED"},
    {MSG_RESUME, FROM_SOURCE, false, "RESUME"},
    {MSG_QUERY, FROM_SOURCE, false, "QUERY"},
    {MSG_STATE, FROM_DEST, false, "STATE"},
    {MSG_CONSOLE, FROM_SOURCE, false, "CONSOLE"},
    {MSG_CONSOLE_DATA, FROM_EITHER, false, "CONSOLE_DATA"},
    {MSG_CONSOLE_STATE, FROM_DEST, false, "CONSOLE_STATE"},
    {MSG_CONSOLE_RETURN, FROM_DEST, false, "CONSOLE_RETURN"},
    {MSG_DISK_PREP, FROM_SOURCE, false, "DISK_PREP"},
    {MSG_DISK_READY, FROM_DEST, false, "DISK_READY"},
    {MSG_DISK_FAIL, FROM_DEST, false, "DISK_FAIL"},
    {MSG_DISKS_SYNCED, FROM_SOURCE, false, "DISKS_SYNCED"},
    {MSG_RECOVER, FROM_SOURCE, false, "RECOVER"},
    {MSG_RECOVER_OK, FROM_DEST, false, "RECOVER_OK"},
    {MSG_RECOVER_FAIL, FROM_DEST, false, "RECOVER_FAIL"},
};

static const struct msg_info *msg_info(int type)
{
    for (size_t i = 0; i < ARRAY_SIZE(msgs); i++)
        if (msgs[i].type == type)
            return &msgs[i];
    return NULL;
}

const char *msg_type_name(int type)
{
    const struct msg_info *m = msg_info(type);
    return m ? m->name : "unknown";
}

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static const char *role_name(unsigned from)
{
    return from == FROM_SOURCE ? "source" : "destination";
}

/* May this message go this way now?  The direction check is what stops a
 * man in the middle reflecting a side's own messages back to it: both
 * directions share one session key, so the MAC alone would not. */
static int check_type(const struct proto_conn *c, int type, bool sending, char *err,
                      size_t errlen)
{
    const struct msg_info *m = msg_info(type);

    if (!m) {
        seterr(err, errlen, "unknown message type %d", type);
        return -EPROTO;
    }
    if (!c->authed && !m->handshake) {
        seterr(err, errlen, "%s before authentication (only the handshake may come first)",
               m->name);
        return -EPROTO;
    }
    if (c->authed && m->handshake) {
        seterr(err, errlen, "handshake message %s after authentication", m->name);
        return -EPROTO;
    }
    if (c->role != PROTO_ROLE_ANY) {
        unsigned me = c->role == PROTO_ROLE_SOURCE ? FROM_SOURCE : FROM_DEST;
        unsigned from = sending ? me : me ^ FROM_EITHER;
        if (!(m->from & from)) {
            seterr(err, errlen, "%s from the %s (only the %s sends it)", m->name,
                   role_name(from), role_name(m->from));
            return -EPROTO;
        }
    }
    return 0;
}

/* ---- I/O with a timeout ----------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until fd is ready.  The timeout counts from this call, so an EINTR
 * neither restarts nor cuts it; the handshake's overall deadline caps it. */
static int wait_fd(const struct proto_conn *c, int fd, short events)
{
    int64_t deadline = c->timeout_ms > 0 ? now_ms() + c->timeout_ms : 0;
    struct pollfd p = {.fd = fd, .events = events};
    int r;

    if (c->deadline_ms && (!deadline || c->deadline_ms < deadline))
        deadline = c->deadline_ms;
    for (;;) {
        int t = -1;
        if (deadline) {
            int64_t left = deadline - now_ms();
            if (left <= 0)
                return -ETIMEDOUT;
            t = left > INT_MAX ? INT_MAX : (int)left;
        }
        r = poll(&p, 1, t);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -ETIMEDOUT;
        if (p.revents & POLLNVAL)
            return -EBADF;
        /* POLLHUP/POLLERR: the read or write says what happened. */
        return 0;
    }
}

/* Read exactly n bytes; *got says how many came (for the "truncated" text).
 * End of stream is -ECONNRESET. */
static int read_full(struct proto_conn *c, void *buf, size_t n, size_t *got)
{
    uint8_t *p = buf;
    size_t done = 0;
    int rc = 0;
    ssize_t r;

    while (done < n) {
        rc = wait_fd(c, c->rfd, POLLIN);
        if (rc)
            goto out;
        r = read(c->rfd, p + done, n - done);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            rc = -errno;
            goto out;
        }
        if (r == 0) {
            rc = -ECONNRESET;
            goto out;
        }
        done += (size_t)r;
    }
out:
    *got = done;
    return rc;
}

static int write_full(struct proto_conn *c, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    sigset_t pipe_set, old, pending;
    bool pending_before;
    int rc = 0;
    ssize_t r;

    /* A write to a pipe whose reader is gone raises SIGPIPE, fatal by
     * default.  A library must not change the process's disposition, so the
     * signal is blocked around the writes and the one we cause swallowed
     * (unless one was pending already: that one is not ours).  Sockets get
     * MSG_NOSIGNAL instead. */
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    sigpending(&pending);
    pending_before = sigismember(&pending, SIGPIPE);

    while (n) {
        rc = wait_fd(c, c->wfd, POLLOUT);
        if (rc)
            goto out;
        if (!c->wfd_not_socket) {
            /* MSG_DONTWAIT: poll() said there is room, but a blocking send
             * of a megabyte would then wait for all of it, past the timeout. */
            r = send(c->wfd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r < 0 && errno == ENOTSOCK) {
                c->wfd_not_socket = true;
                continue;
            }
        } else {
            /* For a pipe poll() promises room for PIPE_BUF bytes, no more. */
            r = write(c->wfd, p, n < PIPE_BUF ? n : PIPE_BUF);
        }
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            rc = -errno;
            goto out;
        }
        p += r;
        n -= (size_t)r;
    }
out:
    if (rc == -EPIPE && !pending_before) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

#ifdef PROTO_FUZZING
/* The fuzzing build only (tests/fuzz/run.sh defines PROTO_FUZZING as a
 * byte): fixed nonces, so that an input can carry valid proofs and take the
 * fuzzer through the whole handshake into the session. */
static int random_bytes(void *buf, size_t n)
{
    memset(buf, PROTO_FUZZING, n);
    return 0;
}
#else
static int random_bytes(void *buf, size_t n)
{
    uint8_t *p = buf;
    ssize_t r;

    while (n) {
        r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}
#endif

/* ---- framing ------------------------------------------------------------------ */

void proto_init(struct proto_conn *c, int rfd, int wfd, int timeout_ms)
{
    memset(c, 0, sizeof *c);
    c->rfd = rfd;
    c->wfd = wfd;
    c->timeout_ms = timeout_ms;
}

void proto_wipe(struct proto_conn *c)
{
    secure_zero(c->key, sizeof c->key);
    polyval_wipe(&c->chunk.hash);
    secure_zero(&c->chunk.id, sizeof c->chunk.id);
    c->authed = false;
}

/* HMAC-SHA256(key, label): a key of its own for each use of the session key. */
static void subkey(const uint8_t key[SHA256_LEN], const char *label, uint8_t out[SHA256_LEN])
{
    struct hmac_sha256_ctx hc;

    hmac_sha256_init(&hc, key, SHA256_LEN);
    hmac_sha256_update(&hc, label, strlen(label));
    hmac_sha256_final(&hc, out);
    secure_zero(&hc, sizeof hc);
}

void proto_set_session_key(struct proto_conn *c, const uint8_t key[SHA256_LEN])
{
    uint8_t k[SHA256_LEN];

    memmove(c->key, key, sizeof c->key);
    subkey(c->key, "vmmig-chunk-polyval", k);
    polyval_key_init(&c->chunk.hash, k); /* its first 16 bytes: H */
    subkey(c->key, "vmmig-chunk-id", k);
    hmac_sha256_init(&c->chunk.id, k, sizeof k);
    secure_zero(k, sizeof k);
    c->authed = true;
}

/* One frame from the pieces of its payload, written with a single write
 * where the fd allows: the copy costs far less than the hashing. */
/* How much of a payload the MAC covers: all of it, except for a CHUNK,
 * where it covers the index and the content id; the content id (a keyed
 * hash of the data) is checked on receipt, so the data is bound all the
 * same, and each byte goes through POLYVAL alone, not through SHA-256. */
static uint32_t mac_covers(int type, uint32_t len)
{
    if (type == MSG_CHUNK && len >= PROTO_CHUNK_HDR)
        return PROTO_CHUNK_HDR;
    return len;
}

/* A frame onto a socket straight from its pieces (sendmsg), without
 * first copying a megabyte of stream into one buffer: under emulation
 * every copy of every migrated byte costs.  1 all sent, 0 not a socket
 * (nothing sent: the caller writes a flat copy), else -errno. */
static int sendv_full(struct proto_conn *c, struct iovec *iov, int niov)
{
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)niov};
    bool any = false;
    int rc;

    while (mh.msg_iovlen) {
        if ((rc = wait_fd(c, c->wfd, POLLOUT)))
            return rc;
        /* MSG_DONTWAIT: poll() said there is room, but a blocking send of a
         * megabyte would then wait for all of it, past the timeout. */
        ssize_t r = sendmsg(c->wfd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r < 0 && errno == ENOTSOCK && !any) {
            c->wfd_not_socket = true;
            return 0;
        }
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            return -errno;
        }
        any = true;
        size_t done = (size_t)r;
        while (mh.msg_iovlen && done >= mh.msg_iov->iov_len) {
            done -= mh.msg_iov->iov_len;
            mh.msg_iov++;
            mh.msg_iovlen--;
        }
        if (mh.msg_iovlen) {
            mh.msg_iov->iov_base = (uint8_t *)mh.msg_iov->iov_base + done;
            mh.msg_iov->iov_len -= done;
        }
    }
    return 1;
}

#define SEND_FRAME_MAX_IOV 8

static int send_frame(struct proto_conn *c, int type, const struct iovec *iov, int niov)
{
    uint8_t hdr[PROTO_HEADER_LEN], mac[SHA256_LEN], *buf = NULL, *p;
    struct iovec parts[SEND_FRAME_MAX_IOV + 2];
    size_t len = 0;
    uint32_t limit = c->authed ? PROTO_MAX_PAYLOAD : PROTO_MAX_HANDSHAKE_PAYLOAD;
    int rc, nparts = 0;

    rc = check_type(c, type, true, NULL, 0);
    if (rc)
        goto out;
    if (niov > SEND_FRAME_MAX_IOV) {
        rc = -E2BIG;
        goto out;
    }
    for (int i = 0; i < niov; i++)
        len += iov[i].iov_len;
    if (len > limit) {
        rc = -EMSGSIZE;
        goto out;
    }
    /* seq must never wrap: a wrapped counter would accept old frames again. */
    if (c->send_seq == UINT32_MAX) {
        rc = -EOVERFLOW;
        goto out;
    }
    memcpy(hdr, MAGIC, 4);
    hdr[4] = PROTO_VERSION;
    hdr[5] = (uint8_t)type;
    hdr[6] = hdr[7] = 0;
    put_be32(hdr + 8, c->send_seq);
    put_be32(hdr + 12, (uint32_t)len);
    put_be32(hdr + 16, 0);
    parts[nparts++] = (struct iovec){.iov_base = hdr, .iov_len = sizeof hdr};
    for (int i = 0; i < niov; i++)
        if (iov[i].iov_len)
            parts[nparts++] = iov[i];
    if (c->authed) {
        /* The MAC covers the header and mac_covers() bytes of the payload. */
        struct hmac_sha256_ctx hc;
        size_t left = mac_covers(type, (uint32_t)len);
        hmac_sha256_init(&hc, c->key, sizeof c->key);
        hmac_sha256_update(&hc, hdr, sizeof hdr);
        for (int i = 0; i < niov && left; i++) {
            size_t n = iov[i].iov_len < left ? iov[i].iov_len : left;
            hmac_sha256_update(&hc, iov[i].iov_base, n);
            left -= n;
        }
        hmac_sha256_final(&hc, mac);
        parts[nparts++] = (struct iovec){.iov_base = mac, .iov_len = PROTO_MAC_LEN};
    }
    if (!c->wfd_not_socket) {
        rc = sendv_full(c, parts, nparts);
        if (rc == 1) {
            rc = 0;
            c->send_seq++;
            goto out;
        }
        if (rc < 0)
            goto out;
    }
    /* A pipe (exec transport): one flat buffer, written PIPE_BUF at a time. */
    buf = malloc(PROTO_HEADER_LEN + len + PROTO_MAC_LEN);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    p = buf;
    for (int i = 0; i < nparts; i++) {
        memcpy(p, parts[i].iov_base, parts[i].iov_len);
        p += parts[i].iov_len;
    }
    rc = write_full(c, buf, (size_t)(p - buf));
    if (!rc)
        c->send_seq++;
out:
    free(buf);
    return rc;
}

int proto_send(struct proto_conn *c, int type, const void *payload, uint32_t len)
{
    struct iovec iov = {.iov_base = (void *)payload, .iov_len = len};
    return send_frame(c, type, &iov, 1);
}

/* The first bytes of a stream that is not ours, for the message: "SSH-" or
 * "HTTP" says more than "bad magic". */
static void show_bytes(const uint8_t *p, size_t n, char *out, size_t outlen)
{
    size_t o = 0;

    for (size_t i = 0; i < n && o + 5 < outlen; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
            out[o++] = (char)p[i];
        else
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", p[i]);
    }
    out[o] = 0;
}

/* ext: the caller's buffer (PROTO_MAX_PAYLOAD + 1 bytes), and a CHUNK's
 * data left for proto_chunks_verify(); NULL: malloc'd, and verified here. */
static int recv_msg(struct proto_conn *c, int *type, uint8_t *ext, uint8_t **payload,
                    uint32_t *len, char *err, size_t errlen)
{
    uint8_t h[PROTO_HEADER_LEN], mac[PROTO_MAC_LEN], want[SHA256_LEN];
    uint8_t *buf = NULL;
    char msg[sizeof c->rx_errmsg];
    uint32_t seq, n, limit;
    size_t got;
    int rc, mtype;

    *type = 0;
    *payload = NULL;
    *len = 0;
    msg[0] = 0;
    if (c->rx_err) {
        seterr(err, errlen, "%s", c->rx_errmsg);
        return c->rx_err;
    }

    rc = read_full(c, h, sizeof h, &got);
    if (rc) {
        if (rc == -ECONNRESET && !got)
            snprintf(msg, sizeof msg, "the peer closed the connection");
        else if (rc == -ECONNRESET)
            snprintf(msg, sizeof msg, "truncated message: the stream ended %zu bytes into a "
                     "%d-byte header", got, PROTO_HEADER_LEN);
        else if (rc == -ETIMEDOUT)
            snprintf(msg, sizeof msg, "timed out waiting for the peer (%s)",
                     got ? "in a message header" : "no message");
        else
            snprintf(msg, sizeof msg, "reading from the peer: %s", strerror(-rc));
        goto out;
    }
    if (memcmp(h, MAGIC, sizeof MAGIC)) {
        char shown[24];
        show_bytes(h, 4, shown, sizeof shown);
        rc = -EPROTO;
        snprintf(msg, sizeof msg, "bad magic \"%s\": the peer does not speak the vmmig protocol",
                 shown);
        goto out;
    }
    if (h[4] != PROTO_VERSION) {
        rc = -EPROTO;
        snprintf(msg, sizeof msg, "unsupported protocol version %u (this side speaks %d)", h[4],
                 PROTO_VERSION);
        goto out;
    }
    if (h[6] || h[7]) {
        rc = -EPROTO;
        snprintf(msg, sizeof msg, "non-zero flags 0x%02x%02x (reserved, must be 0)", h[6], h[7]);
        goto out;
    }
    if (get_be32(h + 16)) {
        rc = -EPROTO;
        snprintf(msg, sizeof msg, "non-zero reserved header field 0x%08x", get_be32(h + 16));
        goto out;
    }
    mtype = h[5];
    seq = get_be32(h + 8);
    n = get_be32(h + 12);
    /* Before anything is read or allocated for it. */
    limit = c->authed ? PROTO_MAX_PAYLOAD : PROTO_MAX_HANDSHAKE_PAYLOAD;
    if (n > limit) {
        rc = -EMSGSIZE;
        snprintf(msg, sizeof msg, "message of %u bytes refused (at most %u%s)", n, limit,
                 c->authed ? "" : " before authentication");
        goto out;
    }
    /* Nothing authenticates a handshake message, so waiting for its payload
     * before refusing a data type would only let a stranger hold us. */
    if (!c->authed) {
        rc = check_type(c, mtype, false, msg, sizeof msg);
        if (rc)
            goto out;
    }

    buf = ext ? ext : malloc((size_t)n + 1);
    if (!buf) {
        rc = -ENOMEM;
        snprintf(msg, sizeof msg, "no memory for a %u-byte message", n);
        goto out;
    }
    rc = read_full(c, buf, n, &got);
    if (!rc && c->authed) {
        size_t mgot;
        rc = read_full(c, mac, sizeof mac, &mgot);
        got += mgot;
    }
    if (rc) {
        size_t total = n + (c->authed ? PROTO_MAC_LEN : 0);
        if (rc == -ECONNRESET)
            snprintf(msg, sizeof msg, "truncated message: the stream ended %zu bytes into the "
                     "%zu bytes after a header", got, total);
        else if (rc == -ETIMEDOUT)
            snprintf(msg, sizeof msg, "timed out waiting for the peer (%zu of %zu bytes of a "
                     "message body)", got, total);
        else
            snprintf(msg, sizeof msg, "reading from the peer: %s", strerror(-rc));
        goto out;
    }
    if (c->authed) {
        struct hmac_sha256_ctx hc;
        hmac_sha256_init(&hc, c->key, sizeof c->key);
        hmac_sha256_update(&hc, h, sizeof h);
        hmac_sha256_update(&hc, buf, mac_covers(h[5], n));
        hmac_sha256_final(&hc, want);
        if (!ct_memeq(want, mac, PROTO_MAC_LEN)) {
            rc = -EBADMSG;
            snprintf(msg, sizeof msg, "MAC mismatch on a %u-byte message (seq %u): corrupted, "
                     "forged, or from another session", n, seq);
            goto out;
        }
    }
    if (seq != c->recv_seq) {
        rc = -EPROTO;
        snprintf(msg, sizeof msg, "replayed or out-of-order message (seq %u, expected %u)", seq,
                 c->recv_seq);
        goto out;
    }
    if (c->authed) {
        rc = check_type(c, mtype, false, msg, sizeof msg);
        if (rc)
            goto out;
    }
    if (c->authed && mtype == MSG_CHUNK) {
        /* The MAC covered only the content id: the data must match it. */
        uint64_t ci;
        const uint8_t *cd;
        uint32_t cl;
        if (ext)
            rc = proto_chunk_split(buf, n, &ci, &cd, &cl, msg, sizeof msg);
        else
            rc = proto_chunk_parse(c, buf, n, &ci, &cd, &cl, msg, sizeof msg);
        if (rc)
            goto out;
    }
    c->recv_seq++;
    buf[n] = 0;
    *type = mtype;
    *payload = buf;
    *len = n;
    buf = NULL;
out:
    if (buf != ext)
        free(buf);
    if (rc) {
        c->rx_err = rc;
        memcpy(c->rx_errmsg, msg, sizeof msg);
        seterr(err, errlen, "%s", msg);
    }
    return rc;
}

int proto_recv(struct proto_conn *c, int *type, uint8_t **payload, uint32_t *len, char *err,
               size_t errlen)
{
    return recv_msg(c, type, NULL, payload, len, err, errlen);
}

int proto_recv_buf(struct proto_conn *c, int *type, uint8_t *buf, uint32_t *len, char *err,
                   size_t errlen)
{
    uint8_t *p;
    return recv_msg(c, type, buf, &p, len, err, errlen);
}

/* ---- chunks ------------------------------------------------------------------- */

void proto_chunk_id(const struct proto_conn *c, const void *data, uint32_t len,
                    uint8_t id[PROTO_CID_LEN])
{
    /* POLYVAL's output would give its key away (a polynomial in H with
     * known coefficients): it goes out only under the HMAC. */
    uint8_t u[POLYVAL_LEN];
    struct hmac_sha256_ctx hc = c->chunk.id;

    polyval_msg(&c->chunk.hash, data, len, u);
    hmac_sha256_update(&hc, u, sizeof u);
    hmac_sha256_final(&hc, id);
    secure_zero(u, sizeof u);
    secure_zero(&hc, sizeof hc);
}

int proto_send_chunk(struct proto_conn *c, uint64_t index, const void *data, uint32_t len)
{
    uint8_t id[PROTO_CID_LEN];

    if (len > PROTO_CHUNK_MAX)
        return -EMSGSIZE;
    proto_chunk_id(c, data, len, id);
    return proto_send_chunk_id(c, index, id, data, len);
}

int proto_send_chunk_id(struct proto_conn *c, uint64_t index, const uint8_t *id, const void *data,
                        uint32_t len)
{
    uint8_t hdr[PROTO_CHUNK_HDR];
    struct iovec iov[2];

    if (len > PROTO_CHUNK_MAX)
        return -EMSGSIZE;
    put_be32(hdr, (uint32_t)(index >> 32));
    put_be32(hdr + 4, (uint32_t)index);
    memcpy(hdr + 8, id, PROTO_CID_LEN);
    iov[0] = (struct iovec){.iov_base = hdr, .iov_len = sizeof hdr};
    iov[1] = (struct iovec){.iov_base = (void *)data, .iov_len = len};
    return send_frame(c, MSG_CHUNK, iov, 2);
}

static int chunk_split(const struct proto_conn *c, const uint8_t *payload, uint32_t len,
                       uint64_t *index, const uint8_t **data, uint32_t *dlen, char *err,
                       size_t errlen);

int proto_chunk_parse(const struct proto_conn *c, const uint8_t *payload, uint32_t len,
                      uint64_t *index, const uint8_t **data, uint32_t *dlen, char *err,
                      size_t errlen)
{
    return chunk_split(c, payload, len, index, data, dlen, err, errlen);
}

int proto_chunk_split(const uint8_t *payload, uint32_t len, uint64_t *index,
                      const uint8_t **data, uint32_t *dlen, char *err, size_t errlen)
{
    return chunk_split(NULL, payload, len, index, data, dlen, err, errlen);
}

int proto_chunks_verify(const struct proto_conn *c, const uint8_t *const payload[],
                        const uint32_t len[], size_t n, size_t *bad, char *err, size_t errlen)
{
    uint64_t index;
    const uint8_t *d;
    uint32_t dl;
    int rc;

    *bad = 0;
    if (n > PROTO_VERIFY_MAX)
        return -E2BIG;
    for (size_t i = 0; i < n; i++) {
        rc = chunk_split(c, payload[i], len[i], &index, &d, &dl, err, errlen);
        if (rc) {
            *bad = i;
            return rc;
        }
    }
    return 0;
}

/* c: verify the content id under c's keys; NULL: the shape only. */
static int chunk_split(const struct proto_conn *c, const uint8_t *payload, uint32_t len,
                       uint64_t *index, const uint8_t **data, uint32_t *dlen, char *err,
                       size_t errlen)
{
    uint8_t id[PROTO_CID_LEN];
    uint64_t i;
    uint32_t n;

    if (len < PROTO_CHUNK_HDR) {
        seterr(err, errlen, "chunk too short (%u bytes; index and content id take %d)", len,
               PROTO_CHUNK_HDR);
        return -EBADMSG;
    }
    n = len - PROTO_CHUNK_HDR;
    i = (uint64_t)get_be32(payload) << 32 | get_be32(payload + 4);
    if (n > PROTO_CHUNK_MAX) {
        seterr(err, errlen, "chunk %llu has %u data bytes (at most %u)", (unsigned long long)i, n,
               PROTO_CHUNK_MAX);
        return -EBADMSG;
    }
    if (c) {
        proto_chunk_id(c, payload + PROTO_CHUNK_HDR, n, id);
        if (!ct_memeq(id, payload + 8, PROTO_CID_LEN)) {
            seterr(err, errlen, "chunk %llu: content id does not match its %u data bytes",
                   (unsigned long long)i, n);
            return -EBADMSG;
        }
    }
    *index = i;
    *data = payload + PROTO_CHUNK_HDR;
    *dlen = n;
    return 0;
}

/* ---- key=value ---------------------------------------------------------------- */

/* Split one line (no newline) at its first '='; a line without one, or
 * with an empty key, is malformed. */
static int kv_split(const char *line, size_t n, size_t *klen)
{
    const char *eq = memchr(line, '=', n);

    if (!eq || eq == line)
        return -EBADMSG;
    *klen = (size_t)(eq - line);
    return 0;
}

static int kv_unescape(const char *v, size_t n, char *out, size_t outlen)
{
    size_t o = 0;

    if (!outlen)
        return -E2BIG;
    out[0] = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = v[i];
        if (ch == '\\') {
            if (++i == n)
                return -EBADMSG;
            switch (v[i]) {
            case '\\': ch = '\\'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            default: return -EBADMSG;
            }
        }
        if (o + 1 >= outlen) {
            out[0] = 0;
            return -E2BIG;
        }
        out[o++] = ch;
    }
    out[o] = 0;
    return 0;
}

int kv_next(const uint8_t *payload, uint32_t len, size_t *pos, char *key, size_t keylen,
            char *val, size_t vallen)
{
    const char *s = (const char *)payload;
    size_t p = *pos, end, klen;
    const char *nl;
    int rc;

    while (p < len && s[p] == '\n')
        p++;
    if (p >= len) {
        *pos = len;
        return 0;
    }
    nl = memchr(s + p, '\n', len - p);
    end = nl ? (size_t)(nl - s) : len;
    if (memchr(s + p, 0, end - p))
        return -EBADMSG;
    rc = kv_split(s + p, end - p, &klen);
    if (rc)
        return rc;
    if (klen + 1 > keylen)
        return -E2BIG;
    memcpy(key, s + p, klen);
    key[klen] = 0;
    rc = kv_unescape(s + p + klen + 1, end - p - klen - 1, val, vallen);
    if (rc)
        return rc;
    *pos = nl ? end + 1 : end;
    return 1;
}

int kv_get(const uint8_t *payload, uint32_t len, const char *key, char *out, size_t outlen)
{
    const char *s = (const char *)payload;
    size_t p = 0, klen, want = key ? strlen(key) : 0;
    int rc = -ENOENT;
    bool found = false;

    if (outlen)
        out[0] = 0;
    if (!want || strpbrk(key, "=\n"))
        return -EINVAL;
    if (!len)
        return -ENOENT;
    if (memchr(s, 0, len))
        return -EBADMSG;
    /* Every line is checked, not only up to the match: a malformed payload
     * is refused the same whichever key is asked for. */
    while (p < len) {
        const char *nl = memchr(s + p, '\n', len - p);
        size_t end = nl ? (size_t)(nl - s) : len;
        if (end > p) {
            if (kv_split(s + p, end - p, &klen)) {
                if (outlen)
                    out[0] = 0;
                return -EBADMSG;
            }
            if (!found && klen == want && !memcmp(s + p, key, want)) {
                found = true;
                rc = kv_unescape(s + p + klen + 1, end - p - klen - 1, out, outlen);
            }
        }
        p = end + 1;
    }
    return rc;
}

void kv_add(struct strbuf *sb, const char *key, const char *fmt, ...)
{
    struct strbuf v = {0};
    va_list ap;

    va_start(ap, fmt);
    sb_vprintf(&v, fmt, ap);
    va_end(ap);
    sb_add(sb, key, strlen(key));
    sb_add(sb, "=", 1);
    for (size_t i = 0; i < v.len; i++) {
        switch (v.s[i]) {
        case '\\': sb_add(sb, "\\\\", 2); break;
        case '\n': sb_add(sb, "\\n", 2); break;
        case '\r': sb_add(sb, "\\r", 2); break;
        default: sb_add(sb, v.s + i, 1); break;
        }
    }
    sb_add(sb, "\n", 1);
    sb_free(&v);
}

/* ---- keys and the handshake ----------------------------------------------------- */

int proto_load_key(const char *path, uint8_t *psk, size_t *len, char *err, size_t errlen)
{
    uint8_t buf[PROTO_KEY_MAX + 1];
    struct stat st;
    size_t n = 0;
    ssize_t r;
    int fd, rc = 0;

    /* O_NONBLOCK: a FIFO planted at the path must not hang us before the
     * S_ISREG check. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        rc = -errno;
        seterr(err, errlen, "cannot open key file %s: %s", path, strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        seterr(err, errlen, "cannot stat key file %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        seterr(err, errlen, "key file %s is not a regular file", path);
        goto out;
    }
    /* Whoever can read the key can impersonate either side; whoever can
     * write it can lock us out or plant their own. */
    if (st.st_uid != 0 && st.st_uid != geteuid()) {
        rc = -EACCES;
        seterr(err, errlen, "key file %s is owned by uid %u, not by root or this user (uid %u)",
               path, (unsigned)st.st_uid, (unsigned)geteuid());
        goto out;
    }
    if (st.st_mode & 077) {
        rc = -EACCES;
        seterr(err, errlen, "key file %s is accessible to group or others (mode %04o); "
               "refusing it: run chmod 600 %s", path, (unsigned)(st.st_mode & 07777), path);
        goto out;
    }
    while (n < sizeof buf) {
        r = read(fd, buf + n, sizeof buf - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            seterr(err, errlen, "reading key file %s: %s", path, strerror(errno));
            goto out;
        }
        if (!r)
            break;
        n += (size_t)r;
    }
    if (n > PROTO_KEY_MAX) {
        rc = -EFBIG;
        seterr(err, errlen, "key file %s is longer than %d bytes", path, PROTO_KEY_MAX);
        goto out;
    }
    n = chomp((const char *)buf, n);
    if (n < PROTO_KEY_MIN) {
        rc = -EINVAL;
        seterr(err, errlen, "key in %s is too short (%zu bytes, at least %d)", path, n,
               PROTO_KEY_MIN);
        goto out;
    }
    memcpy(psk, buf, n);
    *len = n;
out:
    secure_zero(buf, sizeof buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

const char *proto_key_file(void)
{
    const char *e = getenv("VMMIG_KEY_FILE");
    return e && *e ? e : PROTO_DEFAULT_KEY_FILE;
}

/* HMAC-SHA256(psk, label || a || b): the two proofs and the session key. */
static void derive(const uint8_t *psk, size_t psklen, const char *label, const uint8_t *a,
                   const uint8_t *b, uint8_t out[SHA256_LEN])
{
    struct hmac_sha256_ctx hc;

    hmac_sha256_init(&hc, psk, psklen);
    hmac_sha256_update(&hc, label, strlen(label));
    hmac_sha256_update(&hc, a, PROTO_NONCE_LEN);
    hmac_sha256_update(&hc, b, PROTO_NONCE_LEN);
    hmac_sha256_final(&hc, out);
}

/* The reason in an AUTH_FAIL ("reason=TEXT", or bare text from a peer that
 * sends it so), made safe to print. */
static void fail_reason(const uint8_t *p, uint32_t n, char *out, size_t outlen)
{
    char tmp[200];

    if (kv_get(p, n, "reason", tmp, sizeof tmp) == 0 && printable(tmp, strlen(tmp))) {
        strlcpy0(out, tmp, outlen);
        return;
    }
    n = (uint32_t)chomp((const char *)p, n);
    if (n && n < sizeof tmp && !memchr(p, 0, n) && printable((const char *)p, n)) {
        memcpy(tmp, p, n);
        tmp[n] = 0;
        strlcpy0(out, tmp, outlen);
        return;
    }
    strlcpy0(out, "no reason given", outlen);
}

/* Refuse the client, telling it why; the connection is closed next, so a
 * failure to say it does not matter. */
static void send_auth_fail(struct proto_conn *c, const char *reason)
{
    struct strbuf sb = {0};

    kv_add(&sb, "reason", "%s", reason);
    proto_send(c, MSG_AUTH_FAIL, sb.s, (uint32_t)sb.len);
    sb_free(&sb);
}

static void start_handshake(struct proto_conn *c, enum proto_role role)
{
    c->role = role;
    c->authed = false;
    c->send_seq = c->recv_seq = 0;
    c->rx_err = 0;
    /* The whole handshake gets one timeout, not each read: otherwise a
     * stranger trickling a byte per timeout could hold a slot for hours. */
    c->deadline_ms = c->timeout_ms > 0 ? now_ms() + c->timeout_ms : 0;
}

int proto_handshake_client(struct proto_conn *c, const uint8_t *psk, size_t psklen,
                           const char *myhost, char *err, size_t errlen)
{
    uint8_t nc[PROTO_NONCE_LEN], ns[PROTO_NONCE_LEN], proof[SHA256_LEN];
    uint8_t *msg = NULL;
    char host[HOST_NAME_MAX + 1], reason[200];
    struct strbuf hello = {0};
    uint32_t len;
    int rc, type;

    start_handshake(c, PROTO_ROLE_SOURCE);
    if (psklen < PROTO_KEY_MIN) {
        rc = -EINVAL;
        seterr(err, errlen, "key too short (%zu bytes, at least %d)", psklen, PROTO_KEY_MIN);
        goto out;
    }
    if (!myhost) {
        if (gethostname(host, sizeof host) < 0) {
            rc = -errno;
            seterr(err, errlen, "gethostname: %s", strerror(errno));
            goto out;
        }
        host[sizeof host - 1] = 0;
        myhost = host;
    }
    if (!*myhost || strlen(myhost) >= sizeof c->peer_host ||
        !printable(myhost, strlen(myhost))) {
        rc = -EINVAL;
        seterr(err, errlen, "host name \"%.80s\" is empty, longer than %zu bytes or not "
               "printable", myhost, sizeof c->peer_host - 1);
        goto out;
    }

    rc = random_bytes(nc, sizeof nc);
    if (rc) {
        seterr(err, errlen, "getrandom: %s", strerror(-rc));
        goto out;
    }
    sb_add(&hello, (const char *)nc, sizeof nc);
    kv_add(&hello, "host", "%s", myhost);
    rc = proto_send(c, MSG_HELLO, hello.s, (uint32_t)hello.len);
    if (rc) {
        seterr(err, errlen, "sending HELLO: %s", strerror(-rc));
        goto out;
    }

    rc = proto_recv(c, &type, &msg, &len, err, errlen);
    if (rc)
        goto out;
    if (type == MSG_AUTH_FAIL) {
        fail_reason(msg, len, reason, sizeof reason);
        rc = -EACCES;
        seterr(err, errlen, "the server refused the connection: %s", reason);
        goto out;
    }
    if (type != MSG_CHALLENGE) {
        rc = -EPROTO;
        seterr(err, errlen, "expected CHALLENGE, got %s", msg_type_name(type));
        goto out;
    }
    if (len != PROTO_NONCE_LEN + SHA256_LEN) {
        rc = -EBADMSG;
        seterr(err, errlen, "CHALLENGE of %u bytes (want %d)", len,
               PROTO_NONCE_LEN + SHA256_LEN);
        goto out;
    }
    memcpy(ns, msg, sizeof ns);
    derive(psk, psklen, "vmmig-server", nc, ns, proof);
    if (!ct_memeq(proof, msg + PROTO_NONCE_LEN, SHA256_LEN)) {
        /* Our own proof stays with us: an impostor learns nothing.  The
         * empty AUTH tells an honest server with another key why we stop. */
        proto_send(c, MSG_AUTH, NULL, 0);
        rc = -EACCES;
        seterr(err, errlen, "authentication failed: the server could not prove it knows the "
               "key (the two sides' keys differ, or this is not the expected server)");
        goto out;
    }
    free(msg);
    msg = NULL;

    derive(psk, psklen, "vmmig-client", ns, nc, proof);
    rc = proto_send(c, MSG_AUTH, proof, sizeof proof);
    if (rc) {
        seterr(err, errlen, "sending AUTH: %s", strerror(-rc));
        goto out;
    }
    rc = proto_recv(c, &type, &msg, &len, err, errlen);
    if (rc)
        goto out;
    if (type == MSG_AUTH_FAIL) {
        fail_reason(msg, len, reason, sizeof reason);
        rc = -EACCES;
        seterr(err, errlen, "authentication failed: the server refused this side's proof: %s",
               reason);
        goto out;
    }
    if (type != MSG_AUTH_OK) {
        rc = -EPROTO;
        seterr(err, errlen, "expected AUTH_OK, got %s", msg_type_name(type));
        goto out;
    }
    if (len) {
        rc = -EBADMSG;
        seterr(err, errlen, "AUTH_OK with a %u-byte payload (want none)", len);
        goto out;
    }
    derive(psk, psklen, "vmmig-session", nc, ns, c->key);
    proto_set_session_key(c, c->key);
out:
    c->deadline_ms = 0;
    free(msg);
    sb_free(&hello);
    secure_zero(proof, sizeof proof);
    return rc;
}

int proto_handshake_server(struct proto_conn *c, const uint8_t *psk, size_t psklen, char *err,
                           size_t errlen)
{
    uint8_t nc[PROTO_NONCE_LEN], ns[PROTO_NONCE_LEN], proof[SHA256_LEN];
    uint8_t challenge[PROTO_NONCE_LEN + SHA256_LEN];
    uint8_t *msg = NULL;
    uint32_t len;
    int rc, type;

    start_handshake(c, PROTO_ROLE_DEST);
    c->peer_host[0] = 0;
    if (psklen < PROTO_KEY_MIN) {
        rc = -EINVAL;
        seterr(err, errlen, "key too short (%zu bytes, at least %d)", psklen, PROTO_KEY_MIN);
        goto out;
    }
    rc = proto_recv(c, &type, &msg, &len, err, errlen);
    if (rc)
        goto out;
    if (type != MSG_HELLO) {
        rc = -EPROTO;
        seterr(err, errlen, "expected HELLO, got %s", msg_type_name(type));
        send_auth_fail(c, "expected HELLO");
        goto out;
    }
    if (len < PROTO_NONCE_LEN) {
        rc = -EBADMSG;
        seterr(err, errlen, "HELLO of %u bytes (want a %d-byte nonce and host=)", len,
               PROTO_NONCE_LEN);
        send_auth_fail(c, "malformed HELLO");
        goto out;
    }
    memcpy(nc, msg, sizeof nc);
    rc = kv_get(msg + PROTO_NONCE_LEN, len - PROTO_NONCE_LEN, "host", c->peer_host,
                sizeof c->peer_host);
    if (!rc && (!c->peer_host[0] || !printable(c->peer_host, strlen(c->peer_host))))
        rc = -EBADMSG;
    if (rc) {
        seterr(err, errlen, "malformed HELLO: %s",
               rc == -ENOENT  ? "no host="
               : rc == -E2BIG ? "host name too long"
                              : "bad host= text");
        rc = -EBADMSG;
        c->peer_host[0] = 0;
        send_auth_fail(c, "malformed HELLO");
        goto out;
    }
    free(msg);
    msg = NULL;

    rc = random_bytes(ns, sizeof ns);
    if (rc) {
        seterr(err, errlen, "getrandom: %s", strerror(-rc));
        goto out;
    }
    memcpy(challenge, ns, sizeof ns);
    derive(psk, psklen, "vmmig-server", nc, ns, challenge + PROTO_NONCE_LEN);
    rc = proto_send(c, MSG_CHALLENGE, challenge, sizeof challenge);
    if (rc) {
        seterr(err, errlen, "sending CHALLENGE: %s", strerror(-rc));
        goto out;
    }

    rc = proto_recv(c, &type, &msg, &len, err, errlen);
    if (rc)
        goto out;
    if (type != MSG_AUTH) {
        rc = -EPROTO;
        seterr(err, errlen, "expected AUTH, got %s", msg_type_name(type));
        send_auth_fail(c, "expected AUTH");
        goto out;
    }
    if (!len) {
        rc = -EACCES;
        seterr(err, errlen, "authentication failed: client %s could not verify this server's "
               "key proof (the two sides' keys differ)", c->peer_host);
        send_auth_fail(c, "authentication failed");
        goto out;
    }
    derive(psk, psklen, "vmmig-client", ns, nc, proof);
    if (len != SHA256_LEN || !ct_memeq(proof, msg, SHA256_LEN)) {
        rc = -EACCES;
        seterr(err, errlen, "authentication failed: client %s could not prove it knows the key",
               c->peer_host);
        send_auth_fail(c, "authentication failed");
        goto out;
    }
    rc = proto_send(c, MSG_AUTH_OK, NULL, 0);
    if (rc) {
        seterr(err, errlen, "sending AUTH_OK: %s", strerror(-rc));
        goto out;
    }
    derive(psk, psklen, "vmmig-session", nc, ns, c->key);
    proto_set_session_key(c, c->key);
out:
    c->deadline_ms = 0;
    free(msg);
    secure_zero(proof, sizeof proof);
    secure_zero(challenge, sizeof challenge);
    return rc;
}
