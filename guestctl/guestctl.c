/* guestctl: a guest holds itself against migration.  Inside a QEMU/KVM
 * guest of vmmig it talks to the host's vmmigfs over the virtio-serial port
 * org.vmmig.hold (lib/holdchan.h); inside a Xen guest it writes its own
 * xenstore node control/migration-lock (through /dev/xen/xenbus), which
 * dom0's vmmigfs created writable for this guest only. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <xenstore.h>

#include "applet.h"
#include "holdchan.h"
#include "lock.h"

static const char guestctl_help[] =
    "usage: guestctl lock [--reason TEXT] [--ttl SECONDS]\n"
    "       guestctl unlock\n"
    "       guestctl status\n"
    "\n"
    "Run inside a guest: hold this domain against live migration, release the\n"
    "hold, or show it.  The host's vmmigfs honours the hold; after the host\n"
    "policy's guest_max_hold an administrator may override it.  On a QEMU/KVM\n"
    "host it goes through the virtio-serial port\n"
    "/dev/virtio-ports/org.vmmig.hold (and status shows what the host holds),\n"
    "on Xen through the xenstore node control/migration-lock.\n"
    "\n"
    "  -r, --reason TEXT     why (shown to the host administrator)\n"
    "  -t, --ttl SECONDS     the hold expires after this long\n"
    "  -h, --help            show this help\n"
    "\n"
    "Exit status: 0 done, 1 failed (e.g. no vmmigfs on the host, or it refused\n"
    "the request), 2 usage.\n";

#define NODE "control/migration-lock"

#define VIRTIO_PORT "/dev/virtio-ports/org.vmmig.hold"
#define ANSWER_MS 5000 /* the host's vmmigfs answers at once; longer means it is not there */

/* The guest's channel to the host, one per hypervisor.  A refusal comes
 * back as -EREMOTEIO with the host's reason in why. */
struct guest_channel_ops {
    const char *name, *where;
    void *(*open)(void);
    int (*get)(void *h, char *buf, size_t size, char *why, size_t whylen);
    int (*set)(void *h, const char *value, char *why, size_t whylen);
    void (*close)(void *h);
};

static void *xs_chan_open(void)
{
    /* Falls back from the dom0 socket to /dev/xen/xenbus, which is what a guest has. */
    return xs_open(0);
}

static int xs_chan_get(void *h, char *buf, size_t size, char *why, size_t whylen)
{
    unsigned len;
    char *v = xs_read(h, XBT_NULL, NODE, &len);
    (void)why, (void)whylen;
    if (!v)
        return -errno;
    snprintf(buf, size, "%.*s", (int)len, v);
    free(v);
    return 0;
}

static int xs_chan_set(void *h, const char *value, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    return xs_write(h, XBT_NULL, NODE, value, (unsigned)strlen(value)) ? 0 : -errno;
}

static void xs_chan_close(void *h)
{
    xs_close(h);
}

static const struct guest_channel_ops xen_channel = {
    .name = "xenstore",
    .where = NODE,
    .open = xs_chan_open,
    .get = xs_chan_get,
    .set = xs_chan_set,
    .close = xs_chan_close,
};

struct vport {
    int fd;
};

static void *vp_open(void)
{
    /* Non-blocking: a port whose host end is not connected blocks writes. */
    int fd = open(VIRTIO_PORT, O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct vport *v = xmalloc(sizeof *v);
    v->fd = fd;
    return v;
}

static long long mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Wait for events on the port until the deadline; POLLHUP is the host end
 * not being connected (no vmmigfs there). */
static int vp_wait(struct vport *v, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - mono_ms();
        struct pollfd p = {.fd = v->fd, .events = events};
        if (left <= 0)
            return -ETIMEDOUT;
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r && (p.revents & events))
            return 0;
        if (r && (p.revents & (POLLHUP | POLLERR)))
            return -ENOTCONN;
    }
}

/* The request, then its answer: the line after our "#TOKEN" comes back;
 * what comes before it is left over from an earlier guestctl that gave up. */
static int vp_exchange(struct vport *v, const char *line, char *value, size_t size, char *why,
                       size_t whylen)
{
    char buf[LOCK_REQUEST_MAX + 64], msg[LOCK_REQUEST_MAX + HOLDCHAN_TOKEN_MAX + 4], token[40];
    size_t have = 0;
    long long deadline = mono_ms() + ANSWER_MS;
    bool synced = false;
    int rc, len;

    snprintf(token, sizeof token, "#guestctl-%d-%lld", (int)getpid(), mono_ms());
    len = snprintf(msg, sizeof msg, "%s\n%s\n", token, line);
    if (len < 0 || (size_t)len >= sizeof msg)
        return -E2BIG;
    for (size_t off = 0; off < (size_t)len;) {
        if ((rc = vp_wait(v, POLLOUT, deadline)))
            return rc;
        ssize_t w = write(v->fd, msg + off, (size_t)len - off);
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return -errno;
        if (w > 0)
            off += (size_t)w;
    }
    for (;;) {
        char *nl;
        while (!(nl = memchr(buf, '\n', have))) {
            if (have == sizeof buf)
                have = 0; /* not ours: no answer is that long */
            if ((rc = vp_wait(v, POLLIN, deadline)))
                return rc;
            ssize_t r = read(v->fd, buf + have, sizeof buf - have);
            if (r == 0)
                return -ENOTCONN;
            if (r < 0 && errno != EAGAIN && errno != EINTR)
                return -errno;
            if (r > 0)
                have += (size_t)r;
        }
        *nl = 0;
        if (!synced) {
            synced = !strcmp(buf, token);
        } else {
            rc = holdchan_answer_parse(buf, value, size);
            if (rc == -EREMOTEIO)
                strlcpy0(why, value, whylen);
            return rc == -EINVAL ? -EPROTO : rc;
        }
        have -= (size_t)(nl + 1 - buf);
        memmove(buf, nl + 1, have);
    }
}

static int vp_get(void *h, char *buf, size_t size, char *why, size_t whylen)
{
    return vp_exchange(h, "?", buf, size, why, whylen);
}

static int vp_set(void *h, const char *value, char *why, size_t whylen)
{
    char held[LOCK_REQUEST_MAX + 1];
    return vp_exchange(h, value, held, sizeof held, why, whylen);
}

static void vp_close(void *h)
{
    struct vport *v = h;
    close(v->fd);
    free(v);
}

static const struct guest_channel_ops virtio_channel = {
    .name = "virtio-serial",
    .where = VIRTIO_PORT,
    .open = vp_open,
    .get = vp_get,
    .set = vp_set,
    .close = vp_close,
};

static _Noreturn void channel_error(const struct guest_channel_ops *ch, int rc, const char *what,
                                    const char *why)
{
    errno = -rc;
    if (rc == -EREMOTEIO)
        error_exit("the host refused the request: %s", why);
    if (rc == -ENOENT || rc == -EACCES || rc == -ENOTCONN || rc == -ETIMEDOUT)
        error_exit("cannot %s %s: %s (is vmmigfs running on the host?)", what, ch->where,
                   strerror(-rc));
    perror_exit("cannot %s %s", what, ch->where);
}

static int guestctl_main(int argc, char **argv)
{
    static const struct option longopts[] = {{"reason", required_argument, 0, 'r'},
                                             {"ttl", required_argument, 0, 't'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    /* QEMU/KVM's port when this guest has it, else Xen's xenstore. */
    const struct guest_channel_ops *ch =
        access(VIRTIO_PORT, F_OK) ? &xen_channel : &virtio_channel;
    char why[300] = "";
    struct lock_request req = {0};
    const char *reason = NULL;
    long ttl = 0;
    int opt, rc;

    while ((opt = getopt_long(argc, argv, "r:t:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'r': reason = optarg; break;
        case 't':
            if (parse_long(optarg, 1, POLICY_MAX_SECONDS, &ttl))
                usage_exit(&applet_guestctl, "--ttl: '%s' is not a number of seconds from 1 to %ld",
                           optarg, POLICY_MAX_SECONDS);
            break;
        case 'h': help_exit_ok(&applet_guestctl);
        default: usage_exit(&applet_guestctl, "unknown option");
        }
    }
    if (optind + 1 != argc)
        usage_exit(&applet_guestctl, optind == argc ? "missing command (lock, unlock, status)"
                                                    : "too many arguments");
    const char *cmd = argv[optind];
    if (strcmp(cmd, "lock") && (reason || ttl))
        usage_exit(&applet_guestctl, "--reason and --ttl go with lock");

    void *h = ch->open();
    if (!h)
        perror_exit("cannot reach the host through %s", ch->name);

    if (!strcmp(cmd, "lock") || !strcmp(cmd, "unlock")) {
        struct strbuf sb = {0};
        char err[300];
        req.value = !strcmp(cmd, "lock");
        req.ttl = ttl;
        if (reason) {
            if (strlen(reason) > REASON_MAX)
                usage_exit(&applet_guestctl, "--reason: longer than %d characters", REASON_MAX);
            strlcpy0(req.reason, reason, sizeof req.reason);
        }
        lock_request_format(&req, &sb);
        struct lock_request check;
        if (lock_request_parse(sb.s, sb.len, POLICY_MAX_SECONDS, 0, &check, err, sizeof err))
            usage_exit(&applet_guestctl, "%s", err);
        rc = ch->set(h, sb.s, why, sizeof why);
        sb_free(&sb);
        if (rc)
            channel_error(ch, rc, "write", why);
    } else if (!strcmp(cmd, "status")) {
        char val[LOCK_REQUEST_MAX + 1];
        rc = ch->get(h, val, sizeof val, why, sizeof why);
        if (rc)
            channel_error(ch, rc, "read", why);
        printf("locked: %d\n", val[0] == '1' ? 1 : 0);
        printf("request: %s\n", val[0] ? val : "0");
    } else {
        usage_exit(&applet_guestctl, "unknown command '%s' (lock, unlock, status)", cmd);
    }
    ch->close(h);
    return 0;
}

const struct applet applet_guestctl = {
    .name = "guestctl",
    .main = guestctl_main,
    .summary = "inside a guest: hold this domain against migration",
    .help = guestctl_help,
};
