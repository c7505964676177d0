/* The QEMU backend for vmmigfs: domains from the run directory
 * (lib/qemudom.h, watched with inotify), their state from QMP, static holds
 * from migration = "no" in their domain.cfg, and guest holds from each
 * domain's virtio-serial hold channel (hold.sock, lib/holdchan.h): the
 * guest's last accepted request is kept in the domain's guest-hold file,
 * where the agents read it and `vmmig receive` puts a carried one (watched
 * too, so that vmmigfs sees that).  Whatever the guest sends, the host
 * never blocks on it: a bounded read per wakeup, answers that do not fit
 * the socket are dropped, bad lines and floods are refused and reported
 * (guest_channel_note). */
#define _GNU_SOURCE
#include "backend.h"
#include "holdchan.h"
#include "qemudom.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHANNELS 256
#define EV_INOTIFY UINT32_MAX
#define EV_TIMER (UINT32_MAX - 1)
#define READ_BUDGET 16384   /* bytes read from one guest per wakeup */
#define RETRY_MS 1000       /* reconnecting a channel QEMU closed */
#define MAX_NOTES 64
#define FLOOD_NOTE_MS 1000  /* at most one flood note a second per guest */

struct hold_channel {
    uint32_t domid; /* 0: free slot */
    int fd;         /* -1 while not connected */
    int wd;         /* inotify watch on the instance directory */
    char sock[108], file[600];
    struct holdchan hc;
    bool changed;   /* the guest-hold file was written for this channel */
    bool waiting;   /* not connected, and said so in a note */
    bool gone;      /* no such domain any more: not retried */
    char lost_why[64]; /* why QEMU closed it */
    long long flood_noted_ms;
    unsigned flooded; /* lines refused for the rate since the last note */
};

struct note {
    uint32_t domid;
    char event[40];
    char detail[300];
};

struct backend {
    int epfd, inofd, tfd, run_wd;
    bool timer_armed;
    struct hold_channel ch[MAX_CHANNELS];
    struct note notes[MAX_NOTES];
    size_t nnotes;
    unsigned notes_lost;
};

static long long mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void note_add(struct backend *b, uint32_t domid, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void note_add(struct backend *b, uint32_t domid, const char *event, const char *fmt, ...)
{
    va_list ap;
    if (b->nnotes == MAX_NOTES) {
        b->notes_lost++; /* vmmigfs reads them after every wakeup: never reached in practice */
        return;
    }
    struct note *n = &b->notes[b->nnotes++];
    n->domid = domid;
    strlcpy0(n->event, event, sizeof n->event);
    va_start(ap, fmt);
    vsnprintf(n->detail, sizeof n->detail, fmt, ap);
    va_end(ap);
}

static int qb_open(struct backend **out, char *err, size_t errlen)
{
    struct backend *b = xzalloc(sizeof *b);
    const char *dir = qemu_run_dir();
    int rc;

    b->epfd = b->inofd = b->tfd = -1;
    for (int i = 0; i < MAX_CHANNELS; i++)
        b->ch[i].fd = b->ch[i].wd = -1;
    if ((rc = mkdir_p(dir, 0755))) {
        snprintf(err, errlen, "cannot create the QEMU run directory %s: %s", dir, strerror(-rc));
        goto fail;
    }
    b->epfd = epoll_create1(EPOLL_CLOEXEC);
    b->inofd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    b->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (b->epfd < 0 || b->inofd < 0 || b->tfd < 0 ||
        (b->run_wd = inotify_add_watch(b->inofd, dir,
                                       IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO)) < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot watch %s: %s", dir, strerror(errno));
        goto fail;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = EV_INOTIFY};
    struct epoll_event tev = {.events = EPOLLIN, .data.u32 = EV_TIMER};
    if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->inofd, &ev) ||
        epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->tfd, &tev)) {
        rc = -errno;
        snprintf(err, errlen, "epoll: %s", strerror(errno));
        goto fail;
    }
    *out = b;
    return 0;
fail:
    if (b->epfd >= 0)
        close(b->epfd);
    if (b->inofd >= 0)
        close(b->inofd);
    if (b->tfd >= 0)
        close(b->tfd);
    free(b);
    return rc;
}

static void channel_disconnect(struct backend *b, struct hold_channel *c)
{
    if (c->fd < 0)
        return;
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

static void channel_close(struct backend *b, struct hold_channel *c)
{
    if (!c->domid)
        return;
    channel_disconnect(b, c);
    if (c->wd >= 0)
        inotify_rm_watch(b->inofd, c->wd);
    memset(c, 0, sizeof *c);
    c->fd = c->wd = -1;
}

static void qb_close(struct backend *b)
{
    if (!b)
        return;
    for (int i = 0; i < MAX_CHANNELS; i++)
        channel_close(b, &b->ch[i]);
    close(b->epfd);
    close(b->inofd);
    close(b->tfd);
    free(b);
}

static enum vm_state state_of(const char *s)
{
    if (!strcmp(s, "running"))
        return VM_RUNNING;
    if (!strcmp(s, "shutdown") || !strcmp(s, "postmigrate"))
        return VM_SHUTDOWN;
    if (!strcmp(s, "unknown"))
        return VM_UNKNOWN;
    return VM_PAUSED; /* paused, prelaunch, inmigrate, finish-migrate, ... */
}

static int qb_list(struct backend *b, struct vm_info **out, size_t *np)
{
    struct qemu_dom *doms;
    size_t n;
    int rc;

    (void)b;
    if ((rc = qemu_dom_list(&doms, &n)))
        return rc;
    struct vm_info *vms = xzalloc(sizeof *vms * (n + 1));
    for (size_t i = 0; i < n; i++) {
        char status[32];
        vms[i].domid = doms[i].domid;
        strlcpy0(vms[i].name, doms[i].name, sizeof vms[i].name);
        strlcpy0(vms[i].uuid, doms[i].cfg.uuid, sizeof vms[i].uuid);
        vms[i].mem_kib = (uint64_t)doms[i].cfg.memory_mib * 1024;
        vms[i].vcpus = doms[i].cfg.vcpus;
        vms[i].state = qemu_dom_status(&doms[i], status, sizeof status) ? VM_DYING
                                                                          : state_of(status);
    }
    free(doms);
    *out = vms;
    *np = n;
    return 0;
}

static int qb_event_fd(struct backend *b)
{
    return b->epfd;
}

static struct hold_channel *channel_of(struct backend *b, uint32_t domid)
{
    for (int i = 0; i < MAX_CHANNELS; i++)
        if (b->ch[i].domid == domid)
            return &b->ch[i];
    return NULL;
}

static int file_get(const char *path, char *buf, size_t size)
{
    char *text;
    size_t len;
    int rc;

    if ((rc = read_file(path, &text, &len)))
        return rc;
    len = chomp(text, len);
    rc = len < size && !memchr(text, 0, len) ? 0 : -E2BIG;
    if (!rc) {
        memcpy(buf, text, len);
        buf[len] = 0;
    }
    free(text);
    return rc;
}

/* An answer to the guest, if its side of the socket has room: a guest that
 * does not read its answers only loses them. */
static void answer(struct hold_channel *c, const char *kind, const char *text)
{
    char msg[LOCK_REQUEST_MAX + 32];
    int n = snprintf(msg, sizeof msg, "%s %s\n", kind, text);
    if (c->fd >= 0 && n > 0)
        send(c->fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* Guest text for an events line: printable, no quotes, at most size - 4
 * characters and "..." when cut. */
static void clean(const char *s, char *out, size_t size)
{
    size_t i, n = strlen(s), max = size - 4;
    for (i = 0; i < n && i < max; i++)
        out[i] = s[i] == '"' || s[i] == '\\' || !printable(s + i, 1) ? '?' : s[i];
    strcpy(out + i, n > max ? "..." : "");
}

struct feed_ctx {
    struct backend *b;
    struct hold_channel *c;
    long long now;
};

static void on_line(void *arg, enum holdchan_msg m, const char *line, const char *why)
{
    struct feed_ctx *f = arg;
    struct hold_channel *c = f->c;
    char cur[LOCK_REQUEST_MAX + 1], whyc[200], req[64];
    int rc;

    switch (m) {
    case HC_REQUEST:
        if ((rc = atomic_write(c->file, line, strlen(line), 0644))) {
            note_add(f->b, c->domid, "guest-request-failed", "why=\"cannot write %s: %s\"",
                     c->file, strerror(-rc));
            answer(c, "error", "the host cannot record the request");
            return;
        }
        c->changed = true;
        answer(c, "ok", line);
        return;
    case HC_QUERY:
        if (file_get(c->file, cur, sizeof cur))
            strlcpy0(cur, "0", sizeof cur);
        answer(c, "ok", cur[0] ? cur : "0");
        return;
    case HC_SYNC:
        if (c->fd >= 0) {
            char msg[HOLDCHAN_TOKEN_MAX + 3];
            int k = snprintf(msg, sizeof msg, "%s\n", line);
            send(c->fd, msg, (size_t)k, MSG_DONTWAIT | MSG_NOSIGNAL);
        }
        return;
    case HC_INVALID:
        clean(why, whyc, sizeof whyc);
        clean(line, req, sizeof req);
        note_add(f->b, c->domid, "guest-request-invalid", "why=\"%s\" request=\"%s\" counted=refused",
                 whyc, req);
        answer(c, "error", whyc);
        return;
    case HC_FLOODED:
        c->flooded++;
        if (f->now - c->flood_noted_ms >= FLOOD_NOTE_MS) {
            note_add(f->b, c->domid, "guest-channel-flood",
                     "refused=%u rate=%d/s burst=%d", c->flooded, HOLDCHAN_RATE, HOLDCHAN_BURST);
            c->flood_noted_ms = f->now;
            c->flooded = 0;
        }
        answer(c, "error", why);
        return;
    }
}

static void arm_retry(struct backend *b)
{
    if (b->timer_armed)
        return;
    struct itimerspec its = {.it_value = {.tv_sec = RETRY_MS / 1000,
                                          .tv_nsec = (RETRY_MS % 1000) * 1000000L}};
    if (!timerfd_settime(b->tfd, 0, &its, NULL))
        b->timer_armed = true;
}

/* What the guest sent, up to READ_BUDGET bytes (epoll is level-triggered:
 * the rest comes at the next wakeup, after vmmigfs served its clients). */
static void channel_read(struct backend *b, struct hold_channel *c)
{
    struct feed_ctx f = {.b = b, .c = c, .now = mono_ms()};
    char buf[4096];
    size_t total = 0;

    while (total < READ_BUDGET && c->fd >= 0) {
        ssize_t r = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0) {
            /* QEMU closed it: it exits (the domain is leaving, said
             * nothing about), or it dropped us: tried again below. */
            strlcpy0(c->lost_why, r ? strerror(errno) : "closed by QEMU", sizeof c->lost_why);
            channel_disconnect(b, c);
            arm_retry(b);
            return;
        }
        total += (size_t)r;
        holdchan_feed(&c->hc, buf, (size_t)r, f.now, on_line, &f);
    }
}

static int channel_connect(struct backend *b, struct hold_channel *c)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int rc, fd;

    strlcpy0(sa.sun_path, c->sock, sizeof sa.sun_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    /* A unix socket connects at once or not at all (EAGAIN: QEMU's backlog is full). */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        rc = -errno;
        close(fd);
        return rc;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = c->domid};
    if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, fd, &ev)) {
        rc = -errno;
        close(fd);
        return rc;
    }
    c->fd = fd;
    holdchan_init(&c->hc, mono_ms());
    return 0;
}

static void retry_channels(struct backend *b)
{
    uint64_t n;
    bool again = false;

    if (read(b->tfd, &n, sizeof n) < 0 && errno != EAGAIN)
        return;
    b->timer_armed = false;
    for (int i = 0; i < MAX_CHANNELS; i++) {
        struct hold_channel *c = &b->ch[i];
        struct qemu_dom d;
        if (!c->domid || c->fd >= 0 || c->gone)
            continue;
        /* Gone from the run directory: vmmigfs forgets it soon. */
        if (qemu_dom_find_domid(c->domid, &d)) {
            c->gone = true;
            continue;
        }
        int rc = channel_connect(b, c);
        if (!rc && c->waiting) {
            note_add(b, c->domid, "guest-channel-connected", "socket=%s", c->sock);
        } else if (rc && !c->waiting && c->lost_why[0]) {
            note_add(b, c->domid, "guest-channel-closed", "why=\"%s\" retry_ms=%d", c->lost_why,
                     RETRY_MS);
        }
        c->waiting = rc != 0;
        again |= rc != 0;
    }
    if (again)
        arm_retry(b);
}

/* inotify: the run directory (domains) and each instance directory (its
 * guest-hold file, which `vmmig receive` writes for a carried hold). */
static unsigned inotify_drain(struct backend *b)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    unsigned what = 0;
    ssize_t r;

    while ((r = read(b->inofd, buf, sizeof buf)) > 0) {
        for (char *p = buf; p < buf + r;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            if (ev->wd == b->run_wd || (ev->mask & IN_Q_OVERFLOW))
                what |= BE_EV_DOMAINS | BE_EV_HOLDS;
            else if (ev->len && !strcmp(ev->name, "guest-hold"))
                what |= BE_EV_HOLDS;
            p += sizeof *ev + ev->len;
        }
    }
    return what;
}

static int qb_read_events(struct backend *b, unsigned *what)
{
    struct epoll_event evs[16];
    int n;

    *what = 0;
    /* Each ready source once: a guest that keeps its socket readable must
     * not keep vmmigfs here. */
    if ((n = epoll_wait(b->epfd, evs, 16, 0)) > 0) {
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u32 == EV_INOTIFY) {
                *what |= inotify_drain(b);
                continue;
            }
            if (evs[i].data.u32 == EV_TIMER) {
                retry_channels(b);
                continue;
            }
            struct hold_channel *c = channel_of(b, evs[i].data.u32);
            if (c && c->fd >= 0)
                channel_read(b, c);
            if (c && c->changed) {
                c->changed = false;
                *what |= BE_EV_HOLDS;
            }
        }
    }
    return n < 0 && errno != EINTR ? -errno : 0;
}

static int qb_guest_hold_prepare(struct backend *b, const struct vm_info *vm)
{
    struct qemu_dom d;
    struct hold_channel *c;
    int rc;

    if ((rc = qemu_dom_find_domid(vm->domid, &d)))
        return rc;
    char path[600];
    qemu_dom_path(&d, "guest-hold", path, sizeof path);
    /* Only if missing, never over a hold `vmmig receive` put there. */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno != EEXIST)
        return -errno;
    if (fd >= 0) {
        rc = write(fd, "0", 1) == 1 ? 0 : -EIO;
        close(fd);
        if (rc)
            return rc;
    }
    if ((c = channel_of(b, vm->domid))) {
        /* Known: connect now if it is not (QEMU restarted it). */
        c->gone = false;
        if (c->fd < 0 && channel_connect(b, c))
            arm_retry(b);
        return 0;
    }
    if (!(c = channel_of(b, 0)))
        return -EMFILE;
    strlcpy0(c->file, path, sizeof c->file);
    qemu_dom_path(&d, "hold.sock", c->sock, sizeof c->sock);
    c->fd = -1;
    c->domid = vm->domid;
    /* d.dir is the instance directory itself: renames do not move it. */
    c->wd = inotify_add_watch(b->inofd, d.dir, IN_MOVED_TO | IN_CLOSE_WRITE);
    if (c->wd < 0) {
        rc = -errno;
        channel_close(b, c);
        return rc;
    }
    /* The domain shows in the run directory before its QEMU listens (and
     * vmmigfs may find a QEMU that is still starting): retried each second
     * until it does, or the domain is gone. */
    if ((rc = channel_connect(b, c))) {
        c->waiting = true;
        note_add(b, c->domid, "guest-channel-waiting", "socket=%s why=\"%s\" retry_ms=%d",
                 c->sock, strerror(-rc), RETRY_MS);
        arm_retry(b);
    }
    return 0;
}

static void qb_guest_hold_forget(struct backend *b, uint32_t domid)
{
    struct hold_channel *c = channel_of(b, domid);
    if (c)
        channel_close(b, c);
}

static int qb_guest_hold_get(struct backend *b, const struct vm_info *vm, char *buf, size_t size)
{
    struct qemu_dom d;
    char path[600];
    int rc;

    (void)b;
    if ((rc = qemu_dom_find_domid(vm->domid, &d)))
        return rc;
    qemu_dom_path(&d, "guest-hold", path, sizeof path);
    return file_get(path, buf, size);
}

/* The host's word on the hold (expired, overridden): the guest reads it
 * with "?" (guestctl status). */
static int qb_guest_hold_set(struct backend *b, const struct vm_info *vm, const char *value)
{
    struct qemu_dom d;
    char path[600];
    int rc;

    (void)b;
    if ((rc = qemu_dom_find_domid(vm->domid, &d)))
        return rc;
    qemu_dom_path(&d, "guest-hold", path, sizeof path);
    return atomic_write(path, value, strlen(value), 0644);
}

static int qb_guest_channel_note(struct backend *b, uint32_t *domid, char *event, size_t esize,
                                 char *detail, size_t dsize)
{
    if (!b->nnotes)
        return -EAGAIN;
    struct note *n = &b->notes[0];
    *domid = n->domid;
    strlcpy0(event, n->event, esize);
    strlcpy0(detail, n->detail, dsize);
    memmove(b->notes, b->notes + 1, sizeof *n * --b->nnotes);
    return 0;
}

static int qb_static_hold(struct backend *b, const struct vm_info *vm, struct hold *out)
{
    struct qemu_dom d;

    (void)b;
    memset(out, 0, sizeof *out);
    if (qemu_dom_find_domid(vm->domid, &d) || !d.cfg.nomigrate)
        return 0;
    out->active = true;
    qemu_dom_path(&d, "domain.cfg", out->by, sizeof out->by);
    snprintf(out->reason, sizeof out->reason, "%s in the domain's configuration",
             d.cfg.nomigrate_what);
    return 0;
}

/* `vmmig send DOMID HOST` (or comigrate), as the Xen backend builds it; the
 * agent finds the QEMU engine itself (mig_engine_select). */
static int qb_migrate_argv(struct backend *b, const struct vm_info *vm,
                           const struct mig_request *req, char ***argvp)
{
    return xen_backend_ops.migrate_argv(b, vm, req, argvp);
}

const struct backend_ops qemu_backend_ops = {
    .name = "qemu",
    .open = qb_open,
    .close = qb_close,
    .list = qb_list,
    .event_fd = qb_event_fd,
    .read_events = qb_read_events,
    .guest_hold_prepare = qb_guest_hold_prepare,
    .guest_hold_forget = qb_guest_hold_forget,
    .guest_hold_get = qb_guest_hold_get,
    .guest_hold_set = qb_guest_hold_set,
    .guest_channel_note = qb_guest_channel_note,
    .static_hold = qb_static_hold,
    .migrate_argv = qb_migrate_argv,
};
