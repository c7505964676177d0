/* vmmig blockmirror: serve a local disk over NBD and mirror it to a peer
 * (the primary), receive such a mirror (the secondary), and the control
 * subcommands that talk to a running primary over its unix socket.
 *
 * Control protocol (one connection per command): the client sends one line
 * "COMMAND [ARG...]\n"; the server answers with "key: value" or "differs:"
 * lines and a last line "ok", "fail: WHY" (verify found differences) or
 * "error: WHY". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "applet.h"
#include "blockmirror.h"
#include "diskmig.h"
#include "nbd.h"
#include "nbddev.h"
#include "util.h"

static const char blockmirror_help[] =
    "usage: vmmig blockmirror serve IMAGE (-s PATH | -l [ADDR:]PORT | -d DEV | --disk NAME)\n"
    "                                 [-p URL] [OPTIONS]\n"
    "       vmmig blockmirror receive IMAGE (-s PATH | -l [ADDR:]PORT) [--size BYTES]\n"
    "                                 [(-d DEV | --disk NAME) [--agent-fd FD]]\n"
    "       vmmig blockmirror attach URL [-w] [-c PATH | --disk NAME | IMAGE]\n"
    "       vmmig blockmirror detach|status [-c PATH | --disk NAME | IMAGE]\n"
    "       vmmig blockmirror verify [-r] [-c PATH | --disk NAME | IMAGE]\n"
    "       vmmig blockmirror switch [-t SECONDS] [-c PATH | --disk NAME | IMAGE]\n"
    "\n"
    "Serve a local disk image (raw file or block device) over NBD to a domain's\n"
    "disk backend and mirror it synchronously to a peer: a write is acknowledged\n"
    "once it is on both sides.  Without the peer writes go on locally and their\n"
    "blocks are remembered (in IMAGE.bmstate) and sent on reconnect.\n"
    "\n"
    "serve     the primary: export IMAGE, mirror it to the --peer when given\n"
    "receive   the secondary: export IMAGE for a primary to mirror into; after a\n"
    "          switch it exits and IMAGE is standalone (with --nbd-device or --disk\n"
    "          it stays: the primary of DEV or NAME from then on)\n"
    "attach    start mirroring to the NBD server at URL (nbd+unix:///?socket=PATH,\n"
    "          nbd://HOST:PORT); a stale copy there is compared by block hashes\n"
    "detach    stop mirroring; writes are tracked for a later attach\n"
    "status    state (standalone, syncing, synced, disconnected, switched), size,\n"
    "          dirty_bytes, synced_bytes, bytes_sent, rate, peer, one per line\n"
    "verify    compare both sides block by block, print each differing range\n"
    "switch    at the migration's commit point: wait until the peer has every\n"
    "          block, flush both, make the peer the standalone primary, exit\n"
    "\n"
    "  -s, --socket PATH      serve NBD on a unix socket\n"
    "  -l, --listen [ADDR:]PORT  serve NBD on TCP (default address: all)\n"
    "  -p, --peer URL         (serve) mirror to URL, reconnecting until detach\n"
    "  -d, --nbd-device DEV   connect the kernel's NBD device DEV (/dev/nbdN) to\n"
    "                         IMAGE: the disk of a Xen domain (phy:/dev/nbdN)\n"
    "      --disk NAME        serve IMAGE to QEMU on the unix socket\n"
    "                         $VMMIG_STATE_DIR/blockmirror/NAME.nbd: the disk of a\n"
    "                         QEMU domain (target=blockmirror:NAME)\n"
    "      --agent-fd FD      (receive) report to the migration agent on FD\n"
    "  -c, --control PATH     control socket (default IMAGE.bmctl; with --nbd-device\n"
    "                         or --disk $VMMIG_STATE_DIR/blockmirror/nbdN.bmctl or\n"
    "                         NAME.bmctl)\n"
    "  -n, --name NAME        export name (default: answer to any name)\n"
    "      --state FILE       (serve) dirty bitmap file (default IMAGE.bmstate)\n"
    "  -b, --block-size BYTES (serve) tracking and hashing block (default 64K)\n"
    "  -t, --timeout SECONDS  (serve) a peer request unanswered this long cuts the\n"
    "                         link (default 10); (switch) wait for sync (default 30)\n"
    "      --size BYTES       (receive) create IMAGE this large if it is missing\n"
    "  -w, --wait             (attach) return when the first sync is done\n"
    "  -r, --resync           (verify) send the differing blocks again\n"
    "  -h, --help             show this help\n"
    "\n"
    "Exit status: 0 done (verify: identical), 1 failed (verify: differences),\n"
    "2 usage.\n";

struct bm_args {
    const char *sub, *image, *url, *socket, *listen, *peer, *control, *name, *state, *nbd_device;
    const char *disk;     /* --disk NAME */
    char disk_sock[4200]; /* its NBD socket, STATE_DIR/blockmirror/NAME.nbd */
    int agent_fd;
    uint32_t block_size;
    long timeout;
    uint64_t size;
    bool wait, resync;
};

/* "64K", "1G", "4096" */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return -EINVAL;
    int shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    }
    if (*end || (shift && v > (~0ULL >> shift)))
        return -EINVAL;
    *out = v << shift;
    return 0;
}

/* A block device's state and control files are named after it in
 * $VMMIG_STATE_DIR/blockmirror/; the migration agents find a domain's
 * phy:/dev/nbdN disk's primary there (nbdN.bmctl), and a QEMU domain's
 * blockmirror:NAME disk's (NAME.bmctl, see control_path()). */
static void default_control(const char *image, char *out, size_t size)
{
    struct stat st;
    if (!stat(image, &st) && S_ISBLK(st.st_mode)) {
        const char *base = strrchr(image, '/');
        snprintf(out, size, "%s/blockmirror/%s.bmctl",
                 env_default("VMMIG_STATE_DIR", DEFAULT_STATE_DIR), base ? base + 1 : image);
    } else {
        snprintf(out, size, "%s.bmctl", image);
    }
}

/* ---- listening ---- */

static int listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    int fd;

    if (strlen(path) >= sizeof sa.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa.sun_path, path);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    /* A socket left by a killed process: take its place; one that a live
     * server answers on is that server's. */
    if (!lstat(path, &st) && S_ISSOCK(st.st_mode)) {
        if (!connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
            close(fd);
            errno = EADDRINUSE;
            return -1;
        }
        close(fd);
        unlink(path);
        if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
            return -1;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 16) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int listen_tcp(const char *spec)
{
    char host[256] = "";
    const char *port = spec, *colon = strrchr(spec, ':');
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res, *ai;
    int fd = -1, one = 1;

    if (colon) {
        size_t n = (size_t)(colon - spec);
        if (n >= sizeof host) {
            errno = EINVAL;
            return -1;
        }
        memcpy(host, spec, n);
        host[n] = 0;
        if (host[0] == '[' && n > 1 && host[n - 1] == ']') {
            memmove(host, host + 1, n - 2);
            host[n - 2] = 0;
        }
        port = colon + 1;
    }
    if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res)) {
        errno = EINVAL;
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        if ((fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol)) < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (!bind(fd, ai->ai_addr, ai->ai_addrlen) && !listen(fd, 16))
            break;
        int e = errno;
        close(fd);
        fd = -1;
        errno = e;
    }
    freeaddrinfo(res);
    return fd;
}

static int open_listener(const struct bm_args *a)
{
    int fd = a->socket ? listen_unix(a->socket) : listen_tcp(a->listen);
    if (fd < 0)
        perror_exit("%s", a->socket ? a->socket : a->listen);
    return fd;
}

/* --disk: the domain's NBD socket, its directory made.  -1 with a message. */
static int open_disk_listener(const struct bm_args *a)
{
    char dir[4200];
    int fd;

    snprintf(dir, sizeof dir, "%s/blockmirror", env_default("VMMIG_STATE_DIR", DEFAULT_STATE_DIR));
    mkdir_p(dir, 0700);
    if ((fd = listen_unix(a->disk_sock)) < 0) {
        int e = errno;
        perror_msg("--disk %s: %s%s", a->disk, a->disk_sock,
                   e == EADDRINUSE ? " (served by another blockmirror)" : "");
        errno = e;
    }
    return fd;
}

/* ---- the server loop shared by serve and receive ---- */

static int stop_pipe[2] = {-1, -1};
static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    int saved = errno;
    got_signal = sig;
    if (write(stop_pipe[1], "s", 1) < 0) {
        /* nothing to do: the loop also wakes on its poll timeout */
    }
    errno = saved;
}

static void request_stop(void)
{
    if (write(stop_pipe[1], "x", 1) < 0) {
        /* as above */
    }
}

/* The open NBD connections, so that a stop can cut them: those of the
 * export (--socket, --listen: the primary's peers and clients) and those
 * of the domain's socket (--disk: QEMU), which a secondary keeps across
 * its switch to the primary. */
struct conn_set {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int fds[256];
    int n;
};
static struct conn_set conns = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0};
static struct conn_set disk_conns = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0};

struct nbd_conn {
    int fd;
    const struct nbd_export *exp;
    struct conn_set *set;
};

static void *nbd_conn_main(void *arg)
{
    struct nbd_conn *nc = arg;
    struct conn_set *set = nc->set;
    int rc = nbd_serve(nc->fd, nc->fd, nc->exp, 4);

    if (rc && rc != -EPIPE && rc != -ECONNRESET)
        error_msg("NBD connection: %s", rc == -EPROTO ? "malformed request stream, closed"
                                                       : strerror(-rc));
    pthread_mutex_lock(&set->lock);
    for (int i = 0; i < set->n; i++)
        if (set->fds[i] == nc->fd) {
            set->fds[i] = set->fds[--set->n];
            break;
        }
    close(nc->fd);
    pthread_cond_broadcast(&set->cond);
    pthread_mutex_unlock(&set->lock);
    free(nc);
    return NULL;
}

static void start_nbd_conn(struct conn_set *set, int lfd, const struct nbd_export *exp)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    pthread_t t;

    if (fd < 0)
        return;
    pthread_mutex_lock(&set->lock);
    if (set->n == (int)ARRAY_SIZE(set->fds)) {
        pthread_mutex_unlock(&set->lock);
        close(fd);
        return;
    }
    struct nbd_conn *nc = xzalloc(sizeof *nc);
    nc->fd = fd;
    nc->exp = exp;
    nc->set = set;
    set->fds[set->n++] = fd;
    pthread_mutex_unlock(&set->lock);
    if (pthread_create(&t, NULL, nbd_conn_main, nc)) {
        pthread_mutex_lock(&set->lock);
        set->fds[--set->n] = -1;
        pthread_mutex_unlock(&set->lock);
        close(fd);
        free(nc);
        return;
    }
    pthread_detach(t);
}

static int nbd_conn_count(struct conn_set *set)
{
    pthread_mutex_lock(&set->lock);
    int n = set->n;
    pthread_mutex_unlock(&set->lock);
    return n;
}

static void close_nbd_conns(struct conn_set *set)
{
    pthread_mutex_lock(&set->lock);
    for (int i = 0; i < set->n; i++)
        shutdown(set->fds[i], SHUT_RDWR);
    while (set->n)
        pthread_cond_wait(&set->cond, &set->lock);
    pthread_mutex_unlock(&set->lock);
}

static void setup_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal};

    if (pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        perror_exit("pipe");
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a vanished peer is an EPIPE, not a death */
}

/* ---- the control socket (serve) ---- */

static struct bm *the_bm;
static volatile bool switched_away;

static void ctl_printf(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ctl_printf(int fd, const char *fmt, ...)
{
    struct strbuf sb = {0};
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(&sb, fmt, ap);
    va_end(ap);
    nbd_write_full(fd, sb.s, sb.len);
    sb_free(&sb);
}

static void ctl_status(int fd)
{
    struct bm_status st;

    bm_get_status(the_bm, &st);
    ctl_printf(fd,
               "state: %s\nrole: primary\nsize: %llu\nblock_size: %u\ndirty_bytes: %llu\n"
               "synced_bytes: %llu\nbytes_sent: %llu\nhash_bytes: %llu\ncompared_bytes: %llu\n"
               "rate: %llu\nwrites_mirrored: %llu\nresyncs: %llu\npeer: %s\nlast_error: %s\n"
               "state_file: %s\nok\n",
               bm_state_name(st.state), (unsigned long long)st.size, st.block_size,
               (unsigned long long)st.dirty_bytes, (unsigned long long)st.synced_bytes,
               (unsigned long long)st.bytes_sent, (unsigned long long)st.hash_bytes,
               (unsigned long long)st.compared_bytes, (unsigned long long)st.rate,
               (unsigned long long)st.writes_mirrored, (unsigned long long)st.resyncs, st.peer,
               st.last_error[0] ? st.last_error : "none", st.state_path);
}

static void report_range(void *arg, uint64_t off, uint64_t len)
{
    ctl_printf(*(int *)arg, "differs: %llu+%llu\n", (unsigned long long)off,
               (unsigned long long)len);
}

static void ctl_command(int fd, char *line)
{
    char err[400] = "", *arg = strchr(line, ' ');
    int rc;

    if (arg)
        *arg++ = 0;
    if (!strcmp(line, "status")) {
        ctl_status(fd);
    } else if (!strcmp(line, "attach") && arg && *arg) {
        char *opt = strchr(arg, ' ');
        if (opt)
            *opt++ = 0;
        rc = bm_attach(the_bm, arg, opt && !strcmp(opt, "wait"), err, sizeof err);
        if (rc)
            ctl_printf(fd, "error: %s\n", err);
        else
            ctl_printf(fd, "ok\n");
    } else if (!strcmp(line, "detach")) {
        bm_detach(the_bm);
        ctl_printf(fd, "ok\n");
    } else if (!strcmp(line, "verify")) {
        uint64_t differing;
        rc = bm_verify(the_bm, arg && !strcmp(arg, "resync"), report_range, &fd, &differing,
                       err, sizeof err);
        if (rc < 0) {
            ctl_printf(fd, "error: verify: %s\n", err);
        } else {
            struct bm_status st;
            bm_get_status(the_bm, &st);
            ctl_printf(fd, "compared: %llu\ndiffering_bytes: %llu\n", (unsigned long long)st.size,
                       (unsigned long long)differing);
            if (rc)
                ctl_printf(fd, "fail: %llu bytes differ\n", (unsigned long long)differing);
            else
                ctl_printf(fd, "ok\n");
        }
    } else if (!strcmp(line, "switch")) {
        long ms = 30000;
        if (arg && parse_long(arg, 0, 86400000, &ms)) {
            ctl_printf(fd, "error: switch: bad timeout\n");
            return;
        }
        rc = bm_switch(the_bm, (int)ms, err, sizeof err);
        if (rc) {
            ctl_printf(fd, "error: switch: %s\n", err);
            return;
        }
        struct bm_status st;
        bm_get_status(the_bm, &st);
        ctl_printf(fd, "peer: %s\nok\n", st.peer);
        switched_away = true;
        request_stop();
    } else {
        ctl_printf(fd, "error: unknown command '%s'\n", line);
    }
}

static void *ctl_conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char line[1024];
    size_t n = 0;

    while (n < sizeof line - 1) {
        ssize_t r = read(fd, line + n, sizeof line - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        if (memchr(line, '\n', n))
            break;
    }
    line[n] = 0;
    line[strcspn(line, "\n")] = 0;
    if (n)
        ctl_command(fd, line);
    close(fd);
    return NULL;
}

static void start_ctl_conn(int lfd)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    pthread_t t;

    if (fd < 0)
        return;
    if (pthread_create(&t, NULL, ctl_conn_main, (void *)(intptr_t)fd)) {
        close(fd);
        return;
    }
    pthread_detach(t);
}

/* ---- the domain's disk: the kernel's NBD device (--nbd-device) or
 * QEMU's unix socket (--disk) ---- */

/* The disk's backend: the secondary's image while this copy is the
 * secondary (reads only: the incoming domain is paused, and a write before
 * the switch would be lost to the primary's copy, so writes wait), then
 * the primary.  The rwlock lets the handover swap it under no request. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_rwlock_t rw;
    const struct nbd_ops *ops;
    void *h;
    bool writable, stopping;
} dev_be = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_RWLOCK_INITIALIZER,
            NULL, NULL, false, false};

static int dev_enter(bool write)
{
    bool stopping;

    pthread_mutex_lock(&dev_be.lock);
    while (write && !dev_be.writable && !dev_be.stopping)
        pthread_cond_wait(&dev_be.cond, &dev_be.lock);
    stopping = dev_be.stopping;
    pthread_mutex_unlock(&dev_be.lock);
    if (stopping)
        return -ESHUTDOWN;
    pthread_rwlock_rdlock(&dev_be.rw);
    return 0;
}

static int dev_pread(void *h, void *buf, uint32_t len, uint64_t off)
{
    int rc = dev_enter(false);
    (void)h;
    if (rc)
        return rc;
    rc = dev_be.ops->pread(dev_be.h, buf, len, off);
    pthread_rwlock_unlock(&dev_be.rw);
    return rc;
}

static int dev_pwrite(void *h, const void *buf, uint32_t len, uint64_t off, uint32_t flags)
{
    int rc = dev_enter(true);
    (void)h;
    if (rc)
        return rc;
    rc = dev_be.ops->pwrite(dev_be.h, buf, len, off, flags);
    pthread_rwlock_unlock(&dev_be.rw);
    return rc;
}

static int dev_flush(void *h)
{
    int rc = dev_enter(false);
    (void)h;
    if (rc)
        return rc;
    rc = dev_be.ops->flush(dev_be.h);
    pthread_rwlock_unlock(&dev_be.rw);
    return rc;
}

static int dev_trim(void *h, uint32_t len, uint64_t off, uint32_t flags)
{
    int rc = dev_enter(true);
    (void)h;
    if (rc)
        return rc;
    rc = dev_be.ops->trim(dev_be.h, len, off, flags);
    pthread_rwlock_unlock(&dev_be.rw);
    return rc;
}

static int dev_zero(void *h, uint32_t len, uint64_t off, uint32_t flags)
{
    int rc = dev_enter(true);
    (void)h;
    if (rc)
        return rc;
    rc = dev_be.ops->zero(dev_be.h, len, off, flags);
    pthread_rwlock_unlock(&dev_be.rw);
    return rc;
}

static const struct nbd_ops dev_ops = {
    .pread = dev_pread,
    .pwrite = dev_pwrite,
    .flush = dev_flush,
    .trim = dev_trim,
    .zero = dev_zero,
};

static struct nbd_dev *the_dev;
static struct nbd_export dev_exp = {.ops = &dev_ops};
static pthread_t dev_thread;
/* --disk: QEMU connects here (any export name), to the same backend */
static int disk_lfd = -1;
static const char *disk_sock;
static struct nbd_export disk_exp = {.ops = &dev_ops};

static void *dev_main(void *arg)
{
    int fd = nbd_dev_sock(the_dev);
    int rc = nbd_serve_transmission(fd, fd, &dev_exp, 4);

    (void)arg;
    if (rc && rc != -EPIPE && rc != -ECONNRESET)
        error_msg("%s: %s", dev_exp.name, rc == -EPROTO ? "malformed request stream from the kernel"
                                                         : strerror(-rc));
    /* The kernel's NBD_DO_IT returns once our end is gone. */
    shutdown(fd, SHUT_RDWR);
    return NULL;
}

static void dev_set_backend(const struct nbd_ops *ops, void *h, bool writable)
{
    pthread_rwlock_wrlock(&dev_be.rw);
    dev_be.ops = ops;
    dev_be.h = h;
    pthread_rwlock_unlock(&dev_be.rw);
    pthread_mutex_lock(&dev_be.lock);
    dev_be.writable = writable;
    pthread_cond_broadcast(&dev_be.cond);
    pthread_mutex_unlock(&dev_be.lock);
}

static int dev_start(const char *path, uint64_t size)
{
    char err[600];
    int rc;

    dev_exp.name = path;
    dev_exp.size = size;
    if ((rc = nbd_dev_connect(path, size, nbd_export_flags(&dev_exp), &the_dev, err, sizeof err))) {
        error_msg("%s", err);
        return rc;
    }
    if ((rc = -pthread_create(&dev_thread, NULL, dev_main, NULL))) {
        error_msg("%s: thread: %s", path, strerror(-rc));
        nbd_dev_disconnect(the_dev);
        the_dev = NULL;
    }
    return rc;
}

/* --disk: listen on its socket for QEMU; 0 or -1 (said why). */
static int disk_start(const struct bm_args *a, uint64_t size)
{
    if ((disk_lfd = open_disk_listener(a)) < 0)
        return -1;
    disk_sock = a->disk_sock;
    disk_exp.size = size;
    return 0;
}

static void dev_stop(void)
{
    if (!the_dev && disk_lfd < 0)
        return;
    pthread_mutex_lock(&dev_be.lock);
    dev_be.stopping = true; /* a write waiting for the handover fails now */
    pthread_cond_broadcast(&dev_be.cond);
    pthread_mutex_unlock(&dev_be.lock);
    if (the_dev) {
        nbd_dev_disconnect(the_dev);
        pthread_join(dev_thread, NULL);
        the_dev = NULL;
    }
    if (disk_lfd >= 0) {
        close(disk_lfd);
        unlink(disk_sock);
        disk_lfd = -1;
        close_nbd_conns(&disk_conns);
    }
}

/* ---- serve ---- */

/* The primary's loop: NBD connections on lfd (-1: none) and on the
 * --disk socket, control commands on cfd, until a signal or a switch. */
static void primary_loop(int lfd, const struct nbd_export *exp, int cfd)
{
    struct pollfd p[4] = {{.fd = cfd, .events = POLLIN},
                          {.fd = stop_pipe[0], .events = POLLIN},
                          {.fd = disk_lfd, .events = POLLIN},
                          {.fd = lfd, .events = POLLIN}};
    while (!got_signal && !switched_away) {
        if (poll(p, lfd >= 0 ? 4 : 3, 1000) < 0 && errno != EINTR)
            break;
        if (p[0].revents & POLLIN)
            start_ctl_conn(cfd);
        if (disk_lfd >= 0 && (p[2].revents & POLLIN))
            start_nbd_conn(&disk_conns, disk_lfd, &disk_exp);
        if (lfd >= 0 && (p[3].revents & POLLIN))
            start_nbd_conn(&conns, lfd, exp);
    }
}

static void control_path(const struct bm_args *a, char *out, size_t size)
{
    if (a->control)
        snprintf(out, size, "%s", a->control);
    else if (a->disk)
        snprintf(out, size, "%s/blockmirror/%s.bmctl",
                 env_default("VMMIG_STATE_DIR", DEFAULT_STATE_DIR), a->disk);
    else
        default_control(a->nbd_device ? a->nbd_device : a->image, out, size);
}

/* The control socket, its directory made when it is the default one. */
static int open_control(const struct bm_args *a, char *ctl, size_t size)
{
    int cfd;

    control_path(a, ctl, size);
    if (!a->control && (a->nbd_device || a->disk)) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/blockmirror", env_default("VMMIG_STATE_DIR", DEFAULT_STATE_DIR));
        mkdir_p(dir, 0700);
    }
    if ((cfd = listen_unix(ctl)) < 0)
        perror_msg("control socket %s%s", ctl,
                   errno == EADDRINUSE ? " (another blockmirror answers there)" : "");
    return cfd;
}

static int do_serve(const struct bm_args *a)
{
    struct bm_opts o = {
        .image = a->image,
        .state_path = a->state,
        .state_dir = env_default("VMMIG_STATE_DIR", DEFAULT_STATE_DIR),
        .block_size = a->block_size,
        .timeout_ms = (int)(a->timeout * 1000),
    };
    char err[600], ctl[4200];
    int rc, lfd = -1, cfd;

    setup_signals();
    if ((rc = bm_open(&o, &the_bm, err, sizeof err)))
        error_exit("%s", err);
    if (a->socket || a->listen)
        lfd = open_listener(a);
    if ((cfd = open_control(a, ctl, sizeof ctl)) < 0) {
        bm_close(the_bm);
        return 1;
    }
    if (a->peer)
        bm_set_peer(the_bm, a->peer);

    struct nbd_export exp = {
        .name = a->name,
        .size = bm_size(the_bm),
        .ops = &bm_nbd_ops,
        .h = the_bm,
    };
    rc = 0;
    if (a->nbd_device || a->disk)
        dev_set_backend(&bm_nbd_ops, the_bm, true);
    if (a->nbd_device)
        rc = dev_start(a->nbd_device, bm_size(the_bm));
    if (!rc && a->disk)
        rc = disk_start(a, bm_size(the_bm));
    if (!rc)
        primary_loop(lfd, &exp, cfd);
    dev_stop();
    if (lfd >= 0)
        close(lfd);
    if (a->socket)
        unlink(a->socket);
    close_nbd_conns(&conns);
    close(cfd);
    unlink(ctl);
    bm_close(the_bm);
    if (switched_away)
        fprintf(stderr, "%s: %s: switched; the peer is the primary now\n", toolname, a->image);
    return rc ? 1 : 0;
}

/* ---- receive ---- */

static void agent_say(const struct bm_args *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void agent_say(const struct bm_args *a, const char *fmt, ...)
{
    struct strbuf sb = {0};
    va_list ap;
    if (a->agent_fd < 0)
        return;
    va_start(ap, fmt);
    sb_vprintf(&sb, fmt, ap);
    va_end(ap);
    sb_add(&sb, "\n", 1);
    nbd_write_full(a->agent_fd, sb.s, sb.len);
    sb_free(&sb);
}

static unsigned listen_port(int lfd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;

    if (getsockname(lfd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

/* --nbd-device or --disk after the switch: this copy is the primary of the
 * domain's disk from now on, as `serve IMAGE --nbd-device DEV` (--disk
 * NAME) would be; QEMU's connections stay. */
static int become_primary(const struct bm_args *a, struct bm_file *f)
{
    struct bm_opts o = {
        .image = a->image,
        .state_dir = env_default("VMMIG_STATE_DIR", DEFAULT_STATE_DIR),
        .timeout_ms = (int)(a->timeout * 1000),
    };
    char err[600], ctl[4200];
    int cfd, rc;

    if ((rc = bm_open(&o, &the_bm, err, sizeof err))) {
        error_msg("%s", err);
        agent_say(a, "error: %s", err);
        return 1;
    }
    dev_set_backend(&bm_nbd_ops, the_bm, true);
    bm_file_close(f);
    if ((cfd = open_control(a, ctl, sizeof ctl)) < 0) {
        agent_say(a, "error: control socket %s: %s", ctl, strerror(errno));
        /* The device is served all the same; only the controls are missing. */
    }
    fprintf(stderr, "%s: %s: switched; the primary of %s now (control %s)\n", toolname, a->image,
            a->nbd_device ? a->nbd_device : a->disk_sock, ctl);
    agent_say(a, "primary control=%s", ctl);
    if (cfd >= 0) {
        primary_loop(-1, NULL, cfd);
    } else {
        struct pollfd p[2] = {{.fd = stop_pipe[0], .events = POLLIN},
                              {.fd = disk_lfd, .events = POLLIN}};
        while (!got_signal && poll(p, 2, 1000) >= 0)
            if (disk_lfd >= 0 && (p[1].revents & POLLIN))
                start_nbd_conn(&disk_conns, disk_lfd, &disk_exp);
    }
    dev_stop();
    if (cfd >= 0) {
        close(cfd);
        unlink(ctl);
    }
    bm_close(the_bm);
    if (switched_away)
        fprintf(stderr, "%s: %s: switched; the peer is the primary now\n", toolname, a->image);
    return 0;
}

static int do_receive(const struct bm_args *a)
{
    struct bm_file f;
    int rc, lfd;
    bool agent_gone = false;

    setup_signals();
    if (a->size) {
        int fd = open(a->image, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            if (ftruncate(fd, (off_t)a->size) < 0)
                perror_exit("%s", a->image);
            close(fd);
        } else if (errno != EEXIST) {
            perror_exit("%s", a->image);
        }
    }
    if ((rc = bm_file_open(&f, a->image, false))) {
        errno = -rc;
        perror_exit("%s", a->image);
    }
    if (a->size && f.size < a->size)
        error_exit("%s: %llu bytes, smaller than --size %llu", a->image,
                   (unsigned long long)f.size, (unsigned long long)a->size);
    lfd = open_listener(a);

    struct nbd_export exp = {.name = a->name, .size = f.size, .ops = &bm_file_ops, .h = &f};
    if (a->nbd_device || a->disk)
        dev_set_backend(&bm_file_ops, &f, false);
    if (a->nbd_device && dev_start(a->nbd_device, f.size)) {
        agent_say(a, "error: cannot connect %s (see the log)", a->nbd_device);
        return 1;
    }
    if (a->disk && disk_start(a, f.size)) {
        agent_say(a, "error: cannot serve %s: %s", a->disk_sock,
                  errno == EADDRINUSE ? "another blockmirror serves it" : strerror(errno));
        return 1;
    }
    agent_say(a, "ready port=%u", listen_port(lfd));
    struct pollfd p[4] = {{.fd = lfd, .events = POLLIN},
                          {.fd = stop_pipe[0], .events = POLLIN},
                          {.fd = disk_lfd, .events = POLLIN},
                          {.fd = a->agent_fd, .events = POLLIN}};
    while (!got_signal) {
        if (poll(p, a->agent_fd >= 0 && !agent_gone ? 4 : 3, 200) < 0 && errno != EINTR)
            break;
        if (p[0].revents & POLLIN)
            start_nbd_conn(&conns, lfd, &exp);
        if (disk_lfd >= 0 && (p[2].revents & POLLIN))
            start_nbd_conn(&disk_conns, disk_lfd, &disk_exp);
        if (a->agent_fd >= 0 && !agent_gone && (p[3].revents & (POLLIN | POLLHUP | POLLERR))) {
            char buf[64];
            ssize_t r = read(a->agent_fd, buf, sizeof buf);
            if (r <= 0 && !(r < 0 && errno == EINTR)) {
                agent_gone = true;
                /* The migration failed before the switch: this copy is
                 * not the disk's; a later attempt finds it as a stale
                 * replica. */
                if (!f.promoted) {
                    fprintf(stderr, "%s: %s: the migration agent went away before the switch; "
                                    "stopping\n", toolname, a->image);
                    break;
                }
            }
        }
        /* After the switch, once the old primary has let go: standalone. */
        if (f.promoted && !nbd_conn_count(&conns))
            break;
    }
    close(lfd);
    if (a->socket)
        unlink(a->socket);
    close_nbd_conns(&conns);
    if (f.promoted && (a->nbd_device || a->disk) && !got_signal)
        return become_primary(a, &f);
    dev_stop();
    rc = fdatasync(f.fd) < 0 && errno != EINVAL ? 1 : 0;
    bm_file_close(&f);
    if (f.promoted)
        fprintf(stderr, "%s: %s: switched; this image is the standalone primary now\n", toolname,
                a->image);
    else if (agent_gone)
        rc = 1;
    return rc;
}

/* ---- the control client ---- */

static int control_call(const struct bm_args *a, const char *req)
{
    char path[4200], err[600];
    struct strbuf body = {0};

    control_path(a, path, sizeof path);
    int rc = bmctl_call(path, req, &body, err, sizeof err);
    /* Everything before the verdict line is for stdout, also on failure. */
    if (body.len)
        fputs(body.s, stdout);
    fflush(stdout);
    if (rc == -ENOENT || rc == -ECONNREFUSED)
        error_msg("%s (is 'vmmig blockmirror serve' running?): %s", path, strerror(-rc));
    else if (rc)
        error_msg("%s", err);
    sb_free(&body);
    return rc ? 1 : 0;
}

/* ---- main ---- */

static int blockmirror_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"socket", required_argument, 0, 's'},  {"listen", required_argument, 0, 'l'},
        {"peer", required_argument, 0, 'p'},    {"control", required_argument, 0, 'c'},
        {"name", required_argument, 0, 'n'},    {"state", required_argument, 0, 'S'},
        {"block-size", required_argument, 0, 'b'}, {"timeout", required_argument, 0, 't'},
        {"size", required_argument, 0, 'Z'},    {"wait", no_argument, 0, 'w'},
        {"resync", no_argument, 0, 'r'},        {"help", no_argument, 0, 'h'},
        {"nbd-device", required_argument, 0, 'd'}, {"agent-fd", required_argument, 0, 'A'},
        {"disk", required_argument, 0, 'D'},    {0, 0, 0, 0}};
    const struct applet *me = &applet_blockmirror;
    struct bm_args a = {.timeout = -1, .agent_fd = -1};
    long fdv;
    const char *pos[2] = {0};
    int npos = 0, opt;
    uint64_t v;

    while ((opt = getopt_long(argc, argv, "-s:l:p:c:n:b:t:wrhd:", opts, NULL)) != -1) {
        switch (opt) {
        case 1:
            if (!a.sub)
                a.sub = optarg;
            else if (npos < 2)
                pos[npos++] = optarg;
            else
                usage_exit(me, "too many arguments");
            break;
        case 's': a.socket = optarg; break;
        case 'l': a.listen = optarg; break;
        case 'p': a.peer = optarg; break;
        case 'c': a.control = optarg; break;
        case 'n': a.name = optarg; break;
        case 'S': a.state = optarg; break;
        case 'b':
            if (parse_size(optarg, &v) || v < NBD_HASH_MIN_BLOCK || v > NBD_MAX_PAYLOAD ||
                (v & (v - 1)))
                usage_exit(me, "--block-size: '%s' is not a power of two from 4K to 32M", optarg);
            a.block_size = (uint32_t)v;
            break;
        case 't':
            if (parse_long(optarg, 1, 86400, &a.timeout))
                usage_exit(me, "--timeout: '%s' is not a number of seconds from 1 to 86400",
                           optarg);
            break;
        case 'Z':
            if (parse_size(optarg, &v) || !v)
                usage_exit(me, "--size: '%s' is not a size in bytes (K, M, G, T allowed)", optarg);
            a.size = v;
            break;
        case 'd': a.nbd_device = optarg; break;
        case 'D':
            if (!diskmig_disk_name_valid(optarg))
                usage_exit(me, "--disk: '%s' is not a disk name (1-%d letters, digits, '.', "
                           "'-', '_', not starting with '.', not nbdN)", optarg,
                           DISKMIG_NAME_MAX);
            a.disk = optarg;
            diskmig_socket_path(env_default("VMMIG_STATE_DIR", DEFAULT_STATE_DIR), a.disk,
                                a.disk_sock, sizeof a.disk_sock);
            if (strlen(a.disk_sock) >= sizeof ((struct sockaddr_un *)0)->sun_path - 2)
                usage_exit(me, "--disk: its socket %s is too long for a unix socket "
                           "(shorten NAME or VMMIG_STATE_DIR)", a.disk_sock);
            break;
        case 'A':
            if (parse_long(optarg, 3, 1023, &fdv) || fcntl((int)fdv, F_GETFD) < 0)
                usage_exit(me, "--agent-fd: '%s' is not an open descriptor from 3 to 1023", optarg);
            a.agent_fd = (int)fdv;
            fcntl(a.agent_fd, F_SETFD, FD_CLOEXEC);
            break;
        case 'w': a.wait = true; break;
        case 'r': a.resync = true; break;
        case 'h': help_exit_ok(me);
        default: usage_exit(me, "unknown option");
        }
    }
    if (!a.sub)
        usage_exit(me, "missing subcommand (serve, receive, attach, detach, status, verify, "
                       "switch)");

    bool server = !strcmp(a.sub, "serve") || !strcmp(a.sub, "receive");
    if (server) {
        if (npos != 1)
            usage_exit(me, "%s: needs exactly one IMAGE", a.sub);
        a.image = pos[0];
        bool receive = !strcmp(a.sub, "receive");
        if (a.socket && a.listen)
            usage_exit(me, "%s: --socket and --listen exclude each other", a.sub);
        if (!a.socket && !a.listen && (receive || (!a.nbd_device && !a.disk)))
            usage_exit(me, "%s: needs one of --socket or --listen%s", a.sub,
                       receive ? "" : " or --nbd-device or --disk");
        if (a.nbd_device && a.disk)
            usage_exit(me, "%s: --nbd-device and --disk exclude each other", a.sub);
        if (receive &&
            (a.peer || a.state || a.block_size || (a.control && !a.nbd_device && !a.disk)))
            usage_exit(me, "receive: --peer, --state and --block-size are for serve, "
                           "--control for serve or receive --nbd-device/--disk");
        if (a.agent_fd >= 0 && !receive)
            usage_exit(me, "serve: --agent-fd is for receive");
        if (a.nbd_device) {
            char err[600];
            if (nbd_dev_check(a.nbd_device, err, sizeof err))
                usage_exit(me, "--nbd-device: %s", err);
        }
        if (!strcmp(a.sub, "serve") && a.size)
            usage_exit(me, "serve: --size is for receive");
        if (a.timeout < 0)
            a.timeout = 10;
        return !strcmp(a.sub, "serve") ? do_serve(&a) : do_receive(&a);
    }
    if (a.socket || a.listen || a.peer || a.name || a.state || a.block_size || a.size ||
        a.nbd_device || a.agent_fd >= 0)
        usage_exit(me, "%s: takes only --control or --disk (and its own options)", a.sub);
    if (a.control && a.disk)
        usage_exit(me, "%s: --control and --disk exclude each other", a.sub);

    struct strbuf req = {0};
    int want = 0;
    if (!strcmp(a.sub, "attach")) {
        if (npos < 1)
            usage_exit(me, "attach: missing URL");
        a.url = pos[0];
        a.image = npos > 1 ? pos[1] : NULL;
        if (strchr(a.url, ' ') || strchr(a.url, '\n'))
            usage_exit(me, "attach: bad URL");
        sb_printf(&req, "attach %s%s", a.url, a.wait ? " wait" : "");
        want = 1;
    } else if (!strcmp(a.sub, "detach") || !strcmp(a.sub, "status")) {
        sb_printf(&req, "%s", a.sub);
    } else if (!strcmp(a.sub, "verify")) {
        sb_printf(&req, "verify%s", a.resync ? " resync" : "");
    } else if (!strcmp(a.sub, "switch")) {
        sb_printf(&req, "switch %ld", (a.timeout < 0 ? 30 : a.timeout) * 1000);
    } else {
        usage_exit(me, "unknown subcommand '%s'", a.sub);
    }
    if ((a.wait && strcmp(a.sub, "attach")) || (a.resync && strcmp(a.sub, "verify")) ||
        (a.timeout >= 0 && strcmp(a.sub, "switch")))
        usage_exit(me, "%s: option not for this subcommand", a.sub);
    if (!want)
        a.image = npos ? pos[0] : NULL;
    if (npos > want + 1)
        usage_exit(me, "too many arguments");
    if (a.disk && a.image)
        usage_exit(me, "%s: --disk NAME or the IMAGE, not both", a.sub);
    if (!a.image && !a.control && !a.disk)
        usage_exit(me, "%s: needs --control PATH, --disk NAME or the IMAGE", a.sub);
    int rc = control_call(&a, req.s);
    sb_free(&req);
    return rc;
}

const struct applet applet_blockmirror = {
    .name = "blockmirror",
    .main = blockmirror_main,
    .summary = "serve a local disk over NBD, mirrored synchronously to a peer",
    .help = blockmirror_help,
};
