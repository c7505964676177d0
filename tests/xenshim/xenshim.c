/*
 * xenshim.so - LD_PRELOAD stand-in for the Xen device libraries, so that
 * Debian's unmodified xenstored and vmmig's own daemon run without a
 * hypervisor (test use only).
 *
 * The set of "existing" domains is read, on every query, from the text file
 * named by $XENSHIM_DOMAINS, one domain per line:
 *
 *     DOMID UUID MEM_KIB VCPUS [STATE]
 *
 * STATE is optional: running (default), paused, blocked, shutdown, crashed
 * or dying.  Blank lines and lines starting with '#' are ignored.  Domain 0
 * always exists (a line for domid 0 overrides its defaults).
 *
 * Stood in for (what /usr/lib/xen-4.17/bin/xenstored imports, plus what
 * vmmig's xen backend and the notes list):
 *   libxenctrl:  xc_interface_open, xc_interface_close, xc_domain_getinfo,
 *                xc_domain_getinfolist, xc_map_foreign_range, xc_domctl (ENOSYS)
 *   libxenevtchn: xenevtchn_open, _fdopen, _close, _fd, _notify,
 *                _bind_unbound_port, _bind_interdomain, _bind_virq, _unbind,
 *                _pending, _unmask, _restrict
 *   libxengnttab: xengnttab_open, _close, _set_max_grants, _map_grant_ref,
 *                _map_grant_refs, _unmap
 *   libc:        open/open64 of /proc/xen/xsd_port and /proc/xen/xsd_kva,
 *                redirected to plain files in $XENSHIM_DIR (default
 *                $XENSTORED_RUNDIR, else /tmp) holding "1" and 4096 zero bytes.
 *
 * Liveness: the event-channel fd handed to xenstored is an inotify fd
 * watching the directory of $XENSHIM_DOMAINS.  Any change there makes
 * xenevtchn_pending() report the VIRQ_DOM_EXC port, so xenstored re-checks
 * every domain with xc_domain_getinfo(); a domain that vanished from the file
 * is released and @releaseDomain fires, as after a real domain destruction.
 *
 * XENSHIM_DEBUG=1 logs every call to stderr.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xenctrl.h>
#include <xenevtchn.h>
#include <xengnttab.h>

#define SHIM_PAGE 4096
#define SHIM_MAX_DOMS 1024

#define EXPORT __attribute__((visibility("default")))

static int shim_debug(void)
{
    static int dbg = -1;

    if (dbg < 0) {
        const char *e = getenv("XENSHIM_DEBUG");
        dbg = (e && *e && strcmp(e, "0") != 0);
    }
    return dbg;
}

static void dbg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void dbg(const char *fmt, ...)
{
    va_list ap;
    char buf[512];
    int n;

    if (!shim_debug())
        return;
    n = snprintf(buf, sizeof(buf), "xenshim[%d]: ", (int)getpid());
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
    va_end(ap);
    strncat(buf, "\n", sizeof(buf) - strlen(buf) - 1);
    if (write(2, buf, strlen(buf)) < 0) {
        /* nothing to do */
    }
}

/* ------------------------------------------------------------------ */
/* The domains file                                                   */

struct shim_dom {
    unsigned int domid;
    unsigned char uuid[16];
    unsigned long mem_kib;
    unsigned int vcpus;
    unsigned int dying:1, crashed:1, shutdown:1, paused:1, blocked:1,
                 running:1;
};

static int parse_uuid(const char *s, unsigned char out[16])
{
    int i = 0;

    while (*s && i < 32) {
        int v;

        if (*s == '-') {
            s++;
            continue;
        }
        if (*s >= '0' && *s <= '9')
            v = *s - '0';
        else if (*s >= 'a' && *s <= 'f')
            v = *s - 'a' + 10;
        else if (*s >= 'A' && *s <= 'F')
            v = *s - 'A' + 10;
        else
            return -1;
        if (i % 2 == 0)
            out[i / 2] = (unsigned char)(v << 4);
        else
            out[i / 2] |= (unsigned char)v;
        i++;
        s++;
    }
    return (i == 32 && *s == '\0') ? 0 : -1;
}

static void set_state(struct shim_dom *d, const char *st)
{
    d->running = d->paused = d->blocked = d->shutdown = d->crashed =
        d->dying = 0;
    if (!st || !strcmp(st, "running"))
        d->running = 1;
    else if (!strcmp(st, "paused"))
        d->paused = 1;
    else if (!strcmp(st, "blocked"))
        d->blocked = 1;
    else if (!strcmp(st, "shutdown"))
        d->shutdown = 1;
    else if (!strcmp(st, "crashed"))
        d->crashed = d->shutdown = 1;
    else if (!strcmp(st, "dying"))
        d->dying = 1;
    else
        d->running = 1;
}

static int cmp_dom(const void *a, const void *b)
{
    const struct shim_dom *x = a, *y = b;

    return (x->domid > y->domid) - (x->domid < y->domid);
}

/*
 * Read the domains file into doms[] sorted by domid, dom0 included.
 * Returns the number of domains.
 */
static int load_domains(struct shim_dom *doms, int max)
{
    const char *path = getenv("XENSHIM_DOMAINS");
    FILE *f;
    char line[512];
    int n = 0, i, have0 = 0;

    if (path && *path && (f = fopen(path, "re")) != NULL) {
        while (n < max && fgets(line, sizeof(line), f)) {
            char uuid[128], state[64];
            unsigned int domid, vcpus;
            unsigned long mem;
            struct shim_dom d;
            int k;

            if (line[0] == '#' || line[0] == '\n')
                continue;
            state[0] = '\0';
            k = sscanf(line, "%u %127s %lu %u %63s", &domid, uuid, &mem,
                       &vcpus, state);
            if (k < 4 || domid >= DOMID_FIRST_RESERVED ||
                parse_uuid(uuid, d.uuid) < 0) {
                dbg("ignoring malformed line in %s: %s", path, line);
                continue;
            }
            d.domid = domid;
            d.mem_kib = mem;
            d.vcpus = vcpus;
            set_state(&d, k == 5 ? state : NULL);
            for (i = 0; i < n; i++)
                if (doms[i].domid == domid)
                    break;
            doms[i] = d;          /* a later line overrides an earlier one */
            if (i == n)
                n++;
            if (domid == 0)
                have0 = 1;
        }
        fclose(f);
    }
    if (!have0 && n < max) {
        memset(&doms[n], 0, sizeof(doms[n]));
        doms[n].domid = 0;
        doms[n].mem_kib = 1048576;
        doms[n].vcpus = 1;
        doms[n].running = 1;
        n++;
    }
    qsort(doms, n, sizeof(doms[0]), cmp_dom);
    return n;
}

/* ------------------------------------------------------------------ */
/* libxenctrl                                                         */

struct xc_shim_handle { int magic; };

EXPORT xc_interface *xc_interface_open(xentoollog_logger *logger,
                                       xentoollog_logger *dombuild_logger,
                                       unsigned open_flags)
{
    struct xc_shim_handle *h;

    (void)logger; (void)dombuild_logger; (void)open_flags;
    h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->magic = 0x5843;
    dbg("xc_interface_open -> %p", (void *)h);
    return (xc_interface *)h;
}

EXPORT int xc_interface_close(xc_interface *xch)
{
    dbg("xc_interface_close(%p)", (void *)xch);
    free(xch);
    return 0;
}

EXPORT int xc_domain_getinfo(xc_interface *xch, uint32_t first_domid,
                             unsigned int max_doms, xc_dominfo_t *info)
{
    struct shim_dom *doms = calloc(SHIM_MAX_DOMS, sizeof(*doms));
    int n, i;
    unsigned int out = 0;

    (void)xch;
    if (!doms) {
        errno = ENOMEM;
        return -1;
    }
    n = load_domains(doms, SHIM_MAX_DOMS);
    for (i = 0; i < n && out < max_doms; i++) {
        xc_dominfo_t *o;

        if (doms[i].domid < first_domid)
            continue;
        o = &info[out++];
        memset(o, 0, sizeof(*o));
        o->domid = doms[i].domid;
        o->dying = doms[i].dying;
        o->crashed = doms[i].crashed;
        o->shutdown = doms[i].shutdown;
        o->paused = doms[i].paused;
        o->blocked = doms[i].blocked;
        o->running = doms[i].running;
        o->nr_pages = doms[i].mem_kib / 4;
        o->max_memkb = doms[i].mem_kib;
        o->nr_online_vcpus = doms[i].vcpus;
        o->max_vcpu_id = doms[i].vcpus ? doms[i].vcpus - 1 : 0;
        memcpy(o->handle, doms[i].uuid, 16);
    }
    free(doms);
    dbg("xc_domain_getinfo(first=%u, max=%u) -> %u", first_domid, max_doms,
        out);
    return (int)out;
}

/* Debian's Xen has no XEN_DOMCTL_migration_lock (hyp-patches adds it): an
 * unknown domctl fails with ENOSYS, as the real hypervisor answers. */
EXPORT int xc_domctl(xc_interface *xch, struct xen_domctl *domctl)
{
    (void)xch;
    dbg("xc_domctl cmd %u -> ENOSYS", domctl ? domctl->cmd : 0);
    errno = ENOSYS;
    return -1;
}

EXPORT int xc_domain_getinfolist(xc_interface *xch, uint32_t first_domain,
                                 unsigned int max_domains,
                                 xc_domaininfo_t *info)
{
    struct shim_dom *doms = calloc(SHIM_MAX_DOMS, sizeof(*doms));
    int n, i;
    unsigned int out = 0;

    (void)xch;
    if (!doms) {
        errno = ENOMEM;
        return -1;
    }
    n = load_domains(doms, SHIM_MAX_DOMS);
    for (i = 0; i < n && out < max_domains; i++) {
        xc_domaininfo_t *o;

        if (doms[i].domid < first_domain)
            continue;
        o = &info[out++];
        memset(o, 0, sizeof(*o));
        o->domain = (domid_t)doms[i].domid;
        o->flags = (doms[i].dying ? XEN_DOMINF_dying : 0) |
                   (doms[i].shutdown ? XEN_DOMINF_shutdown : 0) |
                   (doms[i].paused ? XEN_DOMINF_paused : 0) |
                   (doms[i].blocked ? XEN_DOMINF_blocked : 0) |
                   (doms[i].running ? XEN_DOMINF_running : 0);
        if (doms[i].crashed)
            o->flags |= (SHUTDOWN_crash & XEN_DOMINF_shutdownmask)
                        << XEN_DOMINF_shutdownshift;
        o->tot_pages = doms[i].mem_kib / 4;
        o->max_pages = doms[i].mem_kib / 4;
        o->nr_online_vcpus = doms[i].vcpus;
        o->max_vcpu_id = doms[i].vcpus ? doms[i].vcpus - 1
                                       : XEN_INVALID_MAX_VCPU_ID;
        memcpy(o->handle, doms[i].uuid, 16);
    }
    free(doms);
    dbg("xc_domain_getinfolist(first=%u, max=%u) -> %u", first_domain,
        max_domains, out);
    return (int)out;
}

EXPORT void *xc_map_foreign_range(xc_interface *xch, uint32_t dom, int size,
                                  int prot, unsigned long mfn)
{
    void *p;

    (void)xch; (void)prot; (void)mfn;
    if (size <= 0)
        size = SHIM_PAGE;
    p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    dbg("xc_map_foreign_range(dom=%u, size=%d) -> %p", dom, size, p);
    return p == MAP_FAILED ? NULL : p;
}

/* ------------------------------------------------------------------ */
/* libxenevtchn                                                       */

struct xenevtchn_handle {
    int fd;                 /* inotify fd (or eventfd) xenstored polls */
    int virq_port;          /* port returned for VIRQ_DOM_EXC, 0 = none */
    int next_port;
};

static xenevtchn_handle *evtchn_new(void)
{
    xenevtchn_handle *h = calloc(1, sizeof(*h));
    const char *path = getenv("XENSHIM_DOMAINS");

    if (!h)
        return NULL;
    h->next_port = 10;
    h->fd = -1;
    if (path && *path) {
        char dir[PATH_MAX];
        char *slash;

        snprintf(dir, sizeof(dir), "%s", path);
        slash = strrchr(dir, '/');
        if (!slash)
            snprintf(dir, sizeof(dir), ".");
        else if (slash == dir)
            dir[1] = '\0';
        else
            *slash = '\0';
        h->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (h->fd >= 0 &&
            inotify_add_watch(h->fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO |
                              IN_MOVED_FROM | IN_DELETE) < 0) {
            dbg("inotify_add_watch(%s): %s", dir, strerror(errno));
            close(h->fd);
            h->fd = -1;
        }
    }
    if (h->fd < 0)
        h->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (h->fd < 0) {
        free(h);
        return NULL;
    }
    return h;
}

EXPORT xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *logger,
                                        unsigned int flags)
{
    (void)logger; (void)flags;
    dbg("xenevtchn_open");
    return evtchn_new();
}

EXPORT xenevtchn_handle *xenevtchn_fdopen(struct xentoollog_logger *logger,
                                          int fd, unsigned int flags)
{
    (void)logger; (void)flags;
    dbg("xenevtchn_fdopen(%d)", fd);
    if (fd >= 0)
        close(fd);
    return evtchn_new();
}

EXPORT int xenevtchn_close(xenevtchn_handle *xce)
{
    if (!xce)
        return 0;
    close(xce->fd);
    free(xce);
    return 0;
}

EXPORT int xenevtchn_fd(xenevtchn_handle *xce)
{
    return xce->fd;
}

EXPORT int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port)
{
    (void)xce; (void)port;
    return 0;
}

EXPORT xenevtchn_port_or_error_t
xenevtchn_bind_unbound_port(xenevtchn_handle *xce, uint32_t domid)
{
    (void)domid;
    return xce->next_port++;
}

EXPORT xenevtchn_port_or_error_t
xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid,
                           evtchn_port_t remote_port)
{
    int p = xce->next_port++;

    dbg("xenevtchn_bind_interdomain(dom=%u, remote=%u) -> %d", domid,
        remote_port, p);
    return p;
}

EXPORT xenevtchn_port_or_error_t
xenevtchn_bind_virq(xenevtchn_handle *xce, unsigned int virq)
{
    int p = xce->next_port++;

    if (virq == VIRQ_DOM_EXC)
        xce->virq_port = p;
    dbg("xenevtchn_bind_virq(%u) -> %d", virq, p);
    return p;
}

EXPORT int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port)
{
    if ((int)port == xce->virq_port)
        xce->virq_port = 0;
    return 0;
}

EXPORT xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *xce)
{
    char buf[4096];

    /* Drain whatever made the fd readable; report a domain-state change. */
    while (read(xce->fd, buf, sizeof(buf)) > 0)
        ;
    dbg("xenevtchn_pending -> virq port %d", xce->virq_port);
    return xce->virq_port ? xce->virq_port : xce->next_port;
}

EXPORT int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port)
{
    (void)xce; (void)port;
    return 0;
}

EXPORT int xenevtchn_restrict(xenevtchn_handle *xce, domid_t domid)
{
    (void)xce; (void)domid;
    return 0;
}

/* ------------------------------------------------------------------ */
/* libxengnttab                                                       */

struct xengntdev_handle { int magic; };

EXPORT xengnttab_handle *xengnttab_open(struct xentoollog_logger *logger,
                                        unsigned open_flags)
{
    xengnttab_handle *h = calloc(1, sizeof(*h));

    (void)logger; (void)open_flags;
    dbg("xengnttab_open -> %p", (void *)h);
    return h;
}

EXPORT int xengnttab_close(xengnttab_handle *xgt)
{
    free(xgt);
    return 0;
}

EXPORT int xengnttab_set_max_grants(xengnttab_handle *xgt, uint32_t nr_grants)
{
    (void)xgt; (void)nr_grants;
    return 0;
}

EXPORT void *xengnttab_map_grant_refs(xengnttab_handle *xgt, uint32_t count,
                                      uint32_t *domids, uint32_t *refs,
                                      int prot)
{
    void *p;

    (void)xgt; (void)domids; (void)refs; (void)prot;
    p = mmap(NULL, (size_t)count * SHIM_PAGE, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

EXPORT void *xengnttab_map_grant_ref(xengnttab_handle *xgt, uint32_t domid,
                                     grant_ref_t ref, int prot)
{
    void *p = xengnttab_map_grant_refs(xgt, 1, &domid, &ref, prot);

    dbg("xengnttab_map_grant_ref(dom=%u, ref=%u) -> %p", domid, ref, p);
    return p;
}

EXPORT int xengnttab_unmap(xengnttab_handle *xgt, void *start_address,
                           uint32_t count)
{
    (void)xgt;
    return munmap(start_address, (size_t)count * SHIM_PAGE);
}

/* ------------------------------------------------------------------ */
/* open() of /proc/xen/xsd_port and /proc/xen/xsd_kva                 */

typedef int (*open_fn)(const char *, int, ...);

static const char *shim_dir(void)
{
    const char *d = getenv("XENSHIM_DIR");

    if (!d || !*d)
        d = getenv("XENSTORED_RUNDIR");
    if (!d || !*d)
        d = "/tmp";
    return d;
}

/* Create DIR/NAME with the given content unless it exists. */
static void ensure_file(open_fn real, const char *path, const void *data,
                        size_t len)
{
    struct stat st;
    int fd;

    if (stat(path, &st) == 0 && (size_t)st.st_size == len)
        return;
    fd = real(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    if (write(fd, data, len) != (ssize_t)len)
        dbg("short write to %s", path);
    close(fd);
}

static const char *redirect(open_fn real, const char *path, char *buf,
                            size_t size)
{
    static const char port[] = "1\n";
    static const char zero[SHIM_PAGE];

    if (!path || strncmp(path, "/proc/xen/xsd_", 14) != 0)
        return path;
    if (!strcmp(path + 14, "port")) {
        snprintf(buf, size, "%s/xsd_port", shim_dir());
        ensure_file(real, buf, port, sizeof(port) - 1);
    } else if (!strcmp(path + 14, "kva")) {
        snprintf(buf, size, "%s/xsd_kva", shim_dir());
        ensure_file(real, buf, zero, sizeof(zero));
    } else {
        return path;
    }
    dbg("open(%s) -> %s", path, buf);
    return buf;
}

static int do_open(const char *sym, const char *path, int flags, mode_t mode)
{
    open_fn real = (open_fn)dlsym(RTLD_NEXT, sym);
    char buf[PATH_MAX];

    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    return real(redirect(real, path, buf, sizeof(buf)), flags, mode);
}

#define OPEN_MODE(flags, mode)                                   \
    do {                                                         \
        if ((flags) & (O_CREAT | __O_TMPFILE)) {                 \
            va_list ap;                                          \
            va_start(ap, flags);                                 \
            mode = va_arg(ap, mode_t);                           \
            va_end(ap);                                          \
        }                                                        \
    } while (0)

EXPORT int open(const char *path, int flags, ...)
{
    mode_t mode = 0;

    OPEN_MODE(flags, mode);
    return do_open("open", path, flags, mode);
}

EXPORT int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;

    OPEN_MODE(flags, mode);
    return do_open("open64", path, flags, mode);
}
