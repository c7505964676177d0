/* The QMP client (see qmp.h).  QEMU writes one JSON message per line, so
 * messages are framed by newlines and parsed whole with lib/json.c. */
#define _GNU_SOURCE
#include "qmp.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define QMP_LINE_MAX (4 << 20) /* a query-* reply can be large; a monitor never sends more */

struct qmp {
    int fd;
    struct strbuf in;       /* bytes read, not yet a whole line */
    struct json **events;   /* queued events, oldest first */
    size_t nevents;
    unsigned long next_id;
    char version[32];
};

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* One whole line into *msg (parsed), reading as needed until deadline. */
static int read_message(struct qmp *q, struct json **msg, long long deadline, char *err,
                        size_t errlen)
{
    for (;;) {
        char *nl = q->in.len ? memchr(q->in.s, '\n', q->in.len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - q->in.s);
            char jerr[120];
            int rc = json_parse(q->in.s, n, msg, jerr, sizeof jerr);
            memmove(q->in.s, nl + 1, q->in.len - n - 1);
            q->in.len -= n + 1;
            if (rc) {
                snprintf(err, errlen, "QEMU's monitor sent something that is not JSON (%s)", jerr);
                return -EPROTO;
            }
            if ((*msg)->type != JSON_OBJECT) {
                json_free(*msg);
                *msg = NULL;
                snprintf(err, errlen, "QEMU's monitor sent a JSON value that is not an object");
                return -EPROTO;
            }
            return 0;
        }
        if (q->in.len > QMP_LINE_MAX) {
            snprintf(err, errlen, "QEMU's monitor sent a message longer than %d bytes",
                     QMP_LINE_MAX);
            return -EPROTO;
        }
        long long left = deadline - now_ms();
        if (left < 0)
            left = 0;
        struct pollfd p = {.fd = q->fd, .events = POLLIN};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "waiting for QEMU's monitor: %s", strerror(errno));
            return -errno;
        }
        if (r == 0) {
            snprintf(err, errlen, "QEMU's monitor did not answer in time");
            return -ETIMEDOUT;
        }
        char buf[8192];
        ssize_t got = read(q->fd, buf, sizeof buf);
        if (got < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (got <= 0) {
            if (q->in.len)
                snprintf(err, errlen, "QEMU's monitor closed the connection in the middle of a "
                         "message");
            else
                snprintf(err, errlen, "QEMU's monitor closed the connection%s%s",
                         got < 0 ? ": " : " (did QEMU exit?)", got < 0 ? strerror(errno) : "");
            return -EPIPE;
        }
        sb_add(&q->in, buf, (size_t)got);
    }
}

static void queue_event(struct qmp *q, struct json *ev)
{
    q->events = xrealloc(q->events, (q->nevents + 1) * sizeof *q->events);
    q->events[q->nevents++] = ev;
}

static int send_all(struct qmp *q, const char *text, size_t len, int pass_fd, char *err,
                    size_t errlen)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    bool fd_sent = pass_fd < 0;

    while (len) {
        struct iovec iov = {.iov_base = (void *)text, .iov_len = len};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        if (!fd_sent) {
            /* The descriptor rides with the command's first bytes, where
             * QEMU's monitor picks it up for getfd. */
            memset(&ctl, 0, sizeof ctl);
            mh.msg_control = ctl.buf;
            mh.msg_controllen = sizeof ctl.buf;
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
        }
        ssize_t r = sendmsg(q->fd, &mh, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            snprintf(err, errlen, "writing to QEMU's monitor: %s", strerror(e));
            return e == EPIPE || e == ECONNRESET ? -EPIPE : -e;
        }
        fd_sent = true;
        text += r;
        len -= (size_t)r;
    }
    return 0;
}

static int execute(struct qmp *q, const char *how, const char *cmd, const char *args,
                   int pass_fd, struct json **ret, int timeout_ms, char *err, size_t errlen);

static int handshake(struct qmp *q, bool oob, int timeout_ms, char *err, size_t errlen)
{
    struct json *msg = NULL;
    int rc = read_message(q, &msg, now_ms() + timeout_ms, err, errlen);

    if (rc)
        goto out;
    const struct json *greet = json_get(msg, "QMP");
    if (!greet) {
        snprintf(err, errlen, "not a QMP monitor (no greeting)");
        rc = -EPROTO;
        goto out;
    }
    snprintf(q->version, sizeof q->version, "%lld.%lld.%lld",
             json_int(greet, "version.qemu.major", 0), json_int(greet, "version.qemu.minor", 0),
             json_int(greet, "version.qemu.micro", 0));
    rc = qmp_execute(q, "qmp_capabilities", oob ? "{\"enable\": [\"oob\"]}" : NULL, -1, NULL,
                     timeout_ms, err, errlen);
out:
    json_free(msg);
    return rc;
}

static int open_fd(struct qmp **out, int fd, bool oob, int timeout_ms, char *err, size_t errlen)
{
    struct qmp *q = xzalloc(sizeof *q);
    int rc;

    q->fd = fd;
    q->next_id = 1;
    rc = handshake(q, oob, timeout_ms, err, errlen);
    if (rc) {
        qmp_close(q);
        *out = NULL;
        return rc;
    }
    *out = q;
    return 0;
}

int qmp_open_fd(struct qmp **out, int fd, int timeout_ms, char *err, size_t errlen)
{
    return open_fd(out, fd, false, timeout_ms, err, errlen);
}

static int connect_path(struct qmp **out, const char *path, bool oob, int timeout_ms, char *err,
                        size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd, rc;

    *out = NULL;
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "monitor socket path too long: %s", path);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return rc;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        rc = -errno;
        snprintf(err, errlen, "cannot connect to QEMU's monitor %s: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    return open_fd(out, fd, oob, timeout_ms, err, errlen);
}

int qmp_connect(struct qmp **out, const char *path, int timeout_ms, char *err, size_t errlen)
{
    return connect_path(out, path, false, timeout_ms, err, errlen);
}

int qmp_connect_oob(struct qmp **out, const char *path, int timeout_ms, char *err,
                    size_t errlen)
{
    return connect_path(out, path, true, timeout_ms, err, errlen);
}

int qmp_fd(const struct qmp *q)
{
    return q->fd;
}

void qmp_close(struct qmp *q)
{
    if (!q)
        return;
    if (q->fd >= 0)
        close(q->fd);
    for (size_t i = 0; i < q->nevents; i++)
        json_free(q->events[i]);
    free(q->events);
    sb_free(&q->in);
    free(q);
}

/* QMP's error classes, as errno values the callers can act on. */
static int map_error(const char *cls)
{
    if (!strcmp(cls, "CommandNotFound"))
        return -ENOSYS;
    if (!strcmp(cls, "DeviceNotFound"))
        return -ENODEV;
    return -EREMOTEIO;
}

int qmp_execute(struct qmp *q, const char *cmd, const char *args, int pass_fd, struct json **ret,
                int timeout_ms, char *err, size_t errlen)
{
    return execute(q, "execute", cmd, args, pass_fd, ret, timeout_ms, err, errlen);
}

int qmp_execute_oob(struct qmp *q, const char *cmd, const char *args, struct json **ret,
                    int timeout_ms, char *err, size_t errlen)
{
    return execute(q, "exec-oob", cmd, args, -1, ret, timeout_ms, err, errlen);
}

static int execute(struct qmp *q, const char *how, const char *cmd, const char *args,
                   int pass_fd, struct json **ret, int timeout_ms, char *err, size_t errlen)
{
    struct strbuf sb = {0};
    struct json *msg = NULL;
    char id[32];
    long long deadline = now_ms() + timeout_ms;
    int rc;

    if (ret)
        *ret = NULL;
    snprintf(id, sizeof id, "vmmig-%lu", q->next_id++);
    sb_printf(&sb, "{\"%s\": ", how);
    json_quote(&sb, cmd);
    if (args && *args)
        sb_printf(&sb, ", \"arguments\": %s", args);
    sb_printf(&sb, ", \"id\": \"%s\"}\n", id);
    rc = send_all(q, sb.s, sb.len, pass_fd, err, errlen);
    if (rc)
        goto out;
    for (;;) {
        rc = read_message(q, &msg, deadline, err, errlen);
        if (rc)
            goto out;
        if (json_get(msg, "event")) {
            queue_event(q, msg);
            msg = NULL;
            continue;
        }
        /* A reply to someone else's id (an earlier command we gave up on). */
        const char *rid = json_str(msg, "id", NULL);
        if (!rid || strcmp(rid, id)) {
            json_free(msg);
            msg = NULL;
            continue;
        }
        break;
    }
    const struct json *e = json_get(msg, "error");
    if (e) {
        const char *cls = json_str(e, "class", "GenericError");
        snprintf(err, errlen, "%s: %s", cmd, json_str(e, "desc", cls));
        rc = map_error(cls);
        goto out;
    }
    if (!json_get(msg, "return")) {
        snprintf(err, errlen, "%s: QEMU's reply has neither return nor error", cmd);
        rc = -EPROTO;
        goto out;
    }
    if (ret) {
        /* Detach the return value from the message. */
        for (size_t i = 0; i < msg->n; i++)
            if (!strcmp(msg->keys[i], "return")) {
                *ret = msg->items[i];
                msg->items[i] = NULL;
                break;
            }
    }
    rc = 0;
out:
    sb_free(&sb);
    json_free(msg);
    return rc;
}

int qmp_next_event(struct qmp *q, struct json **ev, int timeout_ms, char *err, size_t errlen)
{
    long long deadline = now_ms() + timeout_ms;
    struct json *msg = NULL;
    int rc;

    *ev = NULL;
    while (!q->nevents) {
        rc = read_message(q, &msg, deadline, err, errlen);
        if (rc)
            return rc;
        if (json_get(msg, "event"))
            queue_event(q, msg);
        else
            json_free(msg); /* a late reply nobody waits for */
        msg = NULL;
    }
    *ev = q->events[0];
    memmove(q->events, q->events + 1, --q->nevents * sizeof *q->events);
    return 0;
}

int qmp_getfd(struct qmp *q, int fd, const char *name, char *err, size_t errlen)
{
    struct strbuf args = {0};
    int rc;

    sb_add(&args, "{\"fdname\": ", 11);
    json_quote(&args, name);
    sb_add(&args, "}", 1);
    rc = qmp_execute(q, "getfd", args.s, fd, NULL, QMP_TIMEOUT_MS, err, errlen);
    sb_free(&args);
    return rc;
}

const char *qmp_version(const struct qmp *q)
{
    return q->version;
}
