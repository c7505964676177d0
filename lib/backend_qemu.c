/* The QEMU backend for vmmigfs: domains from the run directory
 * (lib/qemudom.h, watched with inotify), their state from QMP, static holds
 * from migration = "no" in their domain.cfg, and guest holds read from each
 * domain's virtio-serial hold channel (hold.sock): the guest writes one
 * request per line ("1 reason=...", "0"), kept in the domain's guest-hold
 * file, where the agents read it too. */
#define _GNU_SOURCE
#include "backend.h"
#include "qemudom.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHANNELS 256

struct hold_channel {
    uint32_t domid; /* 0: free slot */
    int fd;
    char line[LOCK_REQUEST_MAX + 2];
    size_t len;
};

struct backend {
    int epfd, inofd;
    struct hold_channel ch[MAX_CHANNELS];
};

static int qb_open(struct backend **out, char *err, size_t errlen)
{
    struct backend *b = xzalloc(sizeof *b);
    const char *dir = qemu_run_dir();
    int rc;

    b->epfd = b->inofd = -1;
    if ((rc = mkdir_p(dir, 0755))) {
        snprintf(err, errlen, "cannot create the QEMU run directory %s: %s", dir, strerror(-rc));
        goto fail;
    }
    b->epfd = epoll_create1(EPOLL_CLOEXEC);
    b->inofd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (b->epfd < 0 || b->inofd < 0 ||
        inotify_add_watch(b->inofd, dir, IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO) < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot watch %s: %s", dir, strerror(errno));
        goto fail;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->inofd, &ev)) {
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
    free(b);
    return rc;
}

static void channel_close(struct backend *b, struct hold_channel *c)
{
    if (!c->domid)
        return;
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    memset(c, 0, sizeof *c);
}

static void qb_close(struct backend *b)
{
    if (!b)
        return;
    for (int i = 0; i < MAX_CHANNELS; i++)
        channel_close(b, &b->ch[i]);
    close(b->epfd);
    close(b->inofd);
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

static int hold_file_write(uint32_t domid, const char *value)
{
    struct qemu_dom d;
    char path[600];
    int rc = qemu_dom_find_domid(domid, &d);

    if (rc)
        return rc;
    qemu_dom_path(&d, "guest-hold", path, sizeof path);
    return atomic_write(path, value, strlen(value), 0644);
}

/* Whole lines from the guest; the last one is its request now. */
static bool channel_read(struct backend *b, struct hold_channel *c)
{
    char buf[512];
    bool changed = false;

    for (;;) {
        ssize_t r = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return changed;
        if (r <= 0) {
            channel_close(b, c); /* QEMU went away */
            return changed;
        }
        for (ssize_t i = 0; i < r; i++) {
            char ch = buf[i];
            if (ch == '\n') {
                c->line[c->len] = 0;
                if (c->len && c->len <= LOCK_REQUEST_MAX && !hold_file_write(c->domid, c->line))
                    changed = true;
                c->len = 0;
            } else if (ch != '\r' && c->len < sizeof c->line - 1) {
                c->line[c->len++] = ch;
            } else if (ch != '\r') {
                c->len = sizeof c->line - 1; /* too long: dropped at its newline */
            }
        }
    }
}

static int qb_read_events(struct backend *b, unsigned *what)
{
    struct epoll_event evs[16];
    int n;

    *what = 0;
    while ((n = epoll_wait(b->epfd, evs, 16, 0)) > 0) {
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u32 == UINT32_MAX) {
                char buf[4096];
                while (read(b->inofd, buf, sizeof buf) > 0)
                    ;
                *what |= BE_EV_DOMAINS;
                continue;
            }
            struct hold_channel *c = channel_of(b, evs[i].data.u32);
            if (c && channel_read(b, c))
                *what |= BE_EV_HOLDS;
        }
    }
    return n < 0 && errno != EINTR ? -errno : 0;
}

static int qb_guest_hold_prepare(struct backend *b, const struct vm_info *vm)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct qemu_dom d;
    struct hold_channel *c;
    int rc, fd;

    if ((rc = qemu_dom_find_domid(vm->domid, &d)))
        return rc;
    char path[600];
    qemu_dom_path(&d, "guest-hold", path, sizeof path);
    if (access(path, F_OK) && (rc = atomic_write(path, "0", 1, 0644)))
        return rc;
    if (channel_of(b, vm->domid))
        return 0;
    if (!(c = channel_of(b, 0)))
        return -EMFILE;
    qemu_dom_path(&d, "hold.sock", sa.sun_path, sizeof sa.sun_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        rc = -errno;
        close(fd);
        return rc;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = vm->domid};
    if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, fd, &ev)) {
        rc = -errno;
        close(fd);
        return rc;
    }
    c->domid = vm->domid;
    c->fd = fd;
    c->len = 0;
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
    char path[600], *text;
    size_t len;
    int rc;

    (void)b;
    if ((rc = qemu_dom_find_domid(vm->domid, &d)))
        return rc;
    qemu_dom_path(&d, "guest-hold", path, sizeof path);
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

static int qb_guest_hold_set(struct backend *b, const struct vm_info *vm, const char *value)
{
    (void)b;
    return hold_file_write(vm->domid, value);
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
    .static_hold = qb_static_hold,
    .migrate_argv = qb_migrate_argv,
};
