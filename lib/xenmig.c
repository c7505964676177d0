/* The Xen migration engine: libxl does the work (its save helper writes the
 * migration stream, create_restore rebuilds the domain), as in xl's own
 * migrate; vmmig only carries the stream and decides the commit point. */
#define _GNU_SOURCE
#include "migengine.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <libxl.h>
#include <libxl_utils.h>
#define XC_WANT_COMPAT_MAP_FOREIGN_API /* xc_map_foreign_range: one page, read-only */
#include <xenctrl.h>
#include <xen/io/console.h>
#include <xenstore.h>
#include <xentoollog.h>

#include "xenstophook.h"

#define GUEST_HOLD_NODE "control/migration-lock"

struct engine_logger {
    xentoollog_logger vtable;
    struct mig_engine *e;
};

struct mig_engine {
    libxl_ctx *ctx;
    struct engine_logger lg;
    struct xs_handle *xsh;
    xc_interface *xch; /* its own handle: is_suspended() runs beside libxl */
    mig_progress_fn *progress;
    void *progress_arg;
    char last_error[300]; /* libxl's last complaint, for err */
    bool verbose;
    mig_stop_hook_fn *stop_hook;
    void *stop_hook_arg;
};

static void lg_vmessage(xentoollog_logger *l, xentoollog_level level, int errnoval,
                        const char *context, const char *fmt, va_list ap)
{
    struct mig_engine *e = ((struct engine_logger *)l)->e;
    char msg[400];

    if (level < XTL_WARN && !e->verbose)
        return;
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = 0;
    if (level >= XTL_ERROR) {
        if (errnoval > 0)
            snprintf(e->last_error, sizeof e->last_error, "%s: %s", msg, strerror(errnoval));
        else
            strlcpy0(e->last_error, msg, sizeof e->last_error);
    }
    fprintf(stderr, "%s: %s%s%s%s%s\n", toolname, context ? context : "", context ? ": " : "", msg,
            errnoval > 0 ? ": " : "", errnoval > 0 ? strerror(errnoval) : "");
}

/* libxc names the rounds "Frames iteration N of MAX"; N == MAX is the
 * final, stop-and-copy round (xg_sr_save.c). */
static void lg_progress(xentoollog_logger *l, const char *context, const char *doing_what,
                        int percent, unsigned long done, unsigned long total)
{
    struct mig_engine *e = ((struct engine_logger *)l)->e;
    unsigned n, max;

    (void)context, (void)percent;
    if (e->verbose)
        fprintf(stderr, "%s: progress %s: %s %lu/%lu\n", toolname, context ? context : "",
                doing_what ? doing_what : "", done, total);
    if (!e->progress || !doing_what)
        return;
    if (sscanf(doing_what, "Frames iteration %u of %u", &n, &max) == 2)
        e->progress(e->progress_arg, n + 1, n >= max, done, total);
    else if (!strcmp(doing_what, "Frames"))
        e->progress(e->progress_arg, 1, true, done, total);
}

static void lg_destroy(xentoollog_logger *l)
{
    (void)l;
}

static void set_err(struct mig_engine *e, char *err, size_t errlen, const char *what, int rc)
{
    if (e->last_error[0])
        snprintf(err, errlen, "%s: %s", what, e->last_error);
    else
        snprintf(err, errlen, "%s failed (libxl error %d)", what, rc);
    e->last_error[0] = 0;
}

static int xm_open(struct mig_engine **out, mig_progress_fn *progress, void *arg, char *err,
                   size_t errlen)
{
    struct mig_engine *e = xzalloc(sizeof *e);
    int rc;

    e->lg.vtable.vmessage = lg_vmessage;
    e->lg.vtable.progress = lg_progress;
    e->lg.vtable.destroy = lg_destroy;
    e->lg.e = e;
    e->progress = progress;
    e->progress_arg = arg;
    e->verbose = getenv("VMMIG_DEBUG") != NULL;
    rc = libxl_ctx_alloc(&e->ctx, LIBXL_VERSION, 0, &e->lg.vtable);
    if (rc) {
        snprintf(err, errlen, "cannot open libxl (is this a Xen dom0?)%s%s",
                 e->last_error[0] ? ": " : "", e->last_error);
        free(e);
        return -ENODEV;
    }
    e->xsh = xs_open(0);
    if (!e->xsh) {
        snprintf(err, errlen, "cannot open xenstore: %s", strerror(errno));
        libxl_ctx_free(e->ctx);
        free(e);
        return -ENODEV;
    }
    e->xch = xc_interface_open(NULL, NULL, 0);
    *out = e;
    return 0;
}

static void xm_close(struct mig_engine *e)
{
    if (!e)
        return;
    xs_close(e->xsh);
    if (e->xch)
        xc_interface_close(e->xch);
    libxl_ctx_free(e->ctx);
    free(e);
}

static void fill_dom(struct mig_engine *e, const libxl_dominfo *info, struct mig_dom *out)
{
    char *name = libxl_domid_to_name(e->ctx, info->domid);

    memset(out, 0, sizeof *out);
    out->domid = info->domid;
    strlcpy0(out->name, name ? name : "", sizeof out->name);
    free(name);
    snprintf(out->uuid, sizeof out->uuid, LIBXL_UUID_FMT, LIBXL_UUID_BYTES(info->uuid));
    out->mem_kib = info->current_memkb;
    out->vcpus = info->vcpu_online;
    out->paused = info->paused;
    out->suspended = info->shutdown && info->shutdown_reason == LIBXL_SHUTDOWN_REASON_SUSPEND;
    out->dying = info->dying;
}

static int xm_lookup(struct mig_engine *e, const char *what, struct mig_dom *out)
{
    libxl_dominfo info;
    uint32_t domid;
    char *end;
    long v;
    int rc;

    errno = 0;
    v = strtol(what, &end, 10);
    if (*what && !*end && !errno && v >= 0 && v < 0x7ff0)
        domid = (uint32_t)v;
    else if (libxl_name_to_domid(e->ctx, what, &domid))
        return -ENOENT;
    libxl_dominfo_init(&info);
    rc = libxl_domain_info(e->ctx, &info, domid);
    if (rc) {
        libxl_dominfo_dispose(&info);
        return -ENOENT;
    }
    fill_dom(e, &info, out);
    libxl_dominfo_dispose(&info);
    return 0;
}

static int xm_lookup_uuid(struct mig_engine *e, const char *uuid, struct mig_dom *out)
{
    int n = 0, rc = -ENOENT;
    libxl_dominfo *list = libxl_list_domain(e->ctx, &n);
    char s[40];

    if (!list)
        return -EIO;
    for (int i = 0; i < n; i++) {
        snprintf(s, sizeof s, LIBXL_UUID_FMT, LIBXL_UUID_BYTES(list[i].uuid));
        if (list[i].domid != 0 && !strcasecmp(s, uuid)) {
            fill_dom(e, &list[i], out);
            rc = 0;
            break;
        }
    }
    libxl_dominfo_list_free(list, n);
    return rc;
}

static int xm_free_kib(struct mig_engine *e, uint64_t *kib)
{
    return libxl_get_free_memory(e->ctx, kib) ? -EIO : 0;
}

static int xm_get_config(struct mig_engine *e, uint32_t domid, struct strbuf *neutral,
                         char **native, char *err, size_t errlen)
{
    libxl_domain_config cfg;
    int rc;

    libxl_domain_config_init(&cfg);
    rc = libxl_retrieve_domain_configuration(e->ctx, domid, &cfg, NULL);
    if (rc) {
        set_err(e, err, errlen, "reading the domain's configuration", rc);
        rc = -EIO;
        goto out;
    }
    *native = libxl_domain_config_to_json(e->ctx, &cfg);
    if (!*native) {
        snprintf(err, errlen, "cannot turn the configuration into JSON");
        rc = -EIO;
        goto out;
    }
    /* The neutral form: what another hypervisor's agent (or an admin) needs
     * to judge and rebuild the domain, without libxl's JSON. */
    sb_printf(neutral, "name = %s\n", cfg.c_info.name ? cfg.c_info.name : "");
    sb_printf(neutral, "uuid = " LIBXL_UUID_FMT "\n", LIBXL_UUID_BYTES(cfg.c_info.uuid));
    sb_printf(neutral, "type = %s\n", libxl_domain_type_to_string(cfg.c_info.type));
    sb_printf(neutral, "memory_kib = %llu\n", (unsigned long long)cfg.b_info.target_memkb);
    sb_printf(neutral, "maxmem_kib = %llu\n", (unsigned long long)cfg.b_info.max_memkb);
    sb_printf(neutral, "vcpus = %d\n", cfg.b_info.max_vcpus);
    if (cfg.b_info.kernel)
        sb_printf(neutral, "kernel = %s\n", cfg.b_info.kernel);
    if (cfg.b_info.ramdisk)
        sb_printf(neutral, "ramdisk = %s\n", cfg.b_info.ramdisk);
    if (cfg.b_info.cmdline)
        sb_printf(neutral, "cmdline = %s\n", cfg.b_info.cmdline);
    for (int i = 0; i < cfg.num_disks; i++)
        sb_printf(neutral, "disk = %s:%s\n", cfg.disks[i].vdev ? cfg.disks[i].vdev : "",
                  cfg.disks[i].pdev_path ? cfg.disks[i].pdev_path : "");
    for (int i = 0; i < cfg.num_nics; i++)
        sb_printf(neutral, "nic = %02x:%02x:%02x:%02x:%02x:%02x\n", cfg.nics[i].mac[0],
                  cfg.nics[i].mac[1], cfg.nics[i].mac[2], cfg.nics[i].mac[3], cfg.nics[i].mac[4],
                  cfg.nics[i].mac[5]);
    rc = 0;
out:
    libxl_domain_config_dispose(&cfg);
    return rc;
}

static int xm_save(struct mig_engine *e, uint32_t domid, int fd, bool live, char *err,
                   size_t errlen)
{
    char why[300];

    if (e->stop_hook)
        xen_stop_hook_arm(domid, e->stop_hook, e->stop_hook_arg);
    int rc = libxl_domain_suspend(e->ctx, domid, fd, live ? LIBXL_SUSPEND_LIVE : 0, NULL);
    int hooked = e->stop_hook ? xen_stop_hook_result(why, sizeof why) : -1;
    xen_stop_hook_arm(domid, NULL, NULL);
    if (rc && hooked > 0) {
        /* The barrier said no: libxl gave up before the guest was asked. */
        snprintf(err, errlen, "the domain was not stopped: %s", why);
        return -ECANCELED;
    }
    if (rc) {
        set_err(e, err, errlen, "saving the domain", rc);
        return -EIO;
    }
    if (e->stop_hook && live && hooked < 0)
        fprintf(stderr, "%s: domain %u stopped without libxl's xenstore suspend request: "
                "the stop barrier was not applied\n", toolname, domid);
    return 0;
}

static void xm_set_stop_hook(struct mig_engine *e, mig_stop_hook_fn *fn, void *arg)
{
    e->stop_hook = fn;
    e->stop_hook_arg = arg;
}

static int xm_is_suspended(struct mig_engine *e, uint32_t domid)
{
    xc_domaininfo_t info;

    if (!e->xch)
        return -ENODEV;
    if (xc_domain_getinfolist(e->xch, domid, 1, &info) != 1 || info.domain != domid)
        return -ENOENT;
    if (!(info.flags & XEN_DOMINF_shutdown))
        return 0;
    return ((info.flags >> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask) ==
           SHUTDOWN_suspend;
}

static int xm_resume(struct mig_engine *e, uint32_t domid, char *err, size_t errlen)
{
    /* Co-operative resume (suspend_cancel): the guest carries on where it was. */
    int rc = libxl_domain_resume(e->ctx, domid, 1, NULL);
    if (rc) {
        set_err(e, err, errlen, "resuming the domain", rc);
        return -EIO;
    }
    return 0;
}

static int xm_restore(struct mig_engine *e, const char *native, const char *name, int fd,
                      uint32_t *domid, char *err, size_t errlen)
{
    libxl_domain_config cfg;
    libxl_domain_restore_params params;
    int rc;

    *domid = INVALID_DOMID;
    libxl_domain_config_init(&cfg);
    libxl_domain_restore_params_init(&params);
    rc = libxl_domain_config_from_json(e->ctx, &cfg, native);
    if (rc) {
        set_err(e, err, errlen, "reading the domain's configuration", rc);
        rc = -EINVAL;
        goto out;
    }
    free(cfg.c_info.name);
    cfg.c_info.name = xstrdup(name);
    params.checkpointed_stream = LIBXL_CHECKPOINTED_STREAM_NONE;
    params.stream_version = 2; /* what libxl_domain_suspend writes since 4.7 */
    rc = libxl_domain_create_restore(e->ctx, &cfg, domid, fd, -1, &params, NULL, NULL);
    if (rc) {
        set_err(e, err, errlen, "restoring the domain", rc);
        rc = -EIO;
        goto out;
    }
    rc = 0;
out:
    libxl_domain_restore_params_dispose(&params);
    libxl_domain_config_dispose(&cfg);
    return rc;
}

static int xm_unpause(struct mig_engine *e, uint32_t domid, char *err, size_t errlen)
{
    int rc = libxl_domain_unpause(e->ctx, domid, NULL);
    if (rc) {
        set_err(e, err, errlen, "unpausing the domain", rc);
        return -EIO;
    }
    return 0;
}

static int xm_rename(struct mig_engine *e, uint32_t domid, const char *from, const char *to,
                     char *err, size_t errlen)
{
    int rc = libxl_domain_rename(e->ctx, domid, from, to);
    if (rc) {
        set_err(e, err, errlen, "renaming the domain", rc);
        return -EIO;
    }
    return 0;
}

static int xm_destroy(struct mig_engine *e, uint32_t domid, char *err, size_t errlen)
{
    int rc = libxl_domain_destroy(e->ctx, domid, NULL);
    if (rc) {
        set_err(e, err, errlen, "destroying the domain", rc);
        return -EIO;
    }
    return 0;
}

static int xm_guest_hold_get(struct mig_engine *e, uint32_t domid, char *buf, size_t size)
{
    char path[96];
    unsigned len;
    char *v;

    snprintf(path, sizeof path, "/local/domain/%u/" GUEST_HOLD_NODE, domid);
    v = xs_read(e->xsh, XBT_NULL, path, &len);
    if (!v)
        return -errno;
    if (len >= size) {
        free(v);
        return -E2BIG;
    }
    memcpy(buf, v, len);
    buf[len] = 0;
    free(v);
    return 0;
}

static int xm_guest_hold_put(struct mig_engine *e, uint32_t domid, const char *value)
{
    char path[96];
    /* Owned by the guest, as vmmigfs creates it: only it (and dom0) may touch it. */
    struct xs_permissions perm = {.id = domid, .perms = XS_PERM_NONE};

    snprintf(path, sizeof path, "/local/domain/%u/" GUEST_HOLD_NODE, domid);
    if (!xs_write(e->xsh, XBT_NULL, path, value, strlen(value)))
        return -errno;
    if (!xs_set_permissions(e->xsh, XBT_NULL, path, &perm, 1))
        return -errno;
    return 0;
}

static long long mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Wait until the guest has read all the input in its console ring and no
 * more has come for a while (xenconsoled may still be moving bytes from
 * its pty into the ring).  Restore clears that page, so unread input would
 * be lost across the migration. */
static int xm_console_drain(struct mig_engine *e, uint32_t domid, int timeout_ms)
{
    enum { SETTLE_MS = 20, POLL_US = 2000 };
    char path[96], *v;
    unsigned len;
    unsigned long gfn;
    int rc;

    if (!e->xch || !e->xsh)
        return -ENODEV;
    snprintf(path, sizeof path, "/local/domain/%u/console/ring-ref", domid);
    v = xs_read(e->xsh, XBT_NULL, path, &len);
    if (!v)
        return -errno;
    errno = 0;
    char *end;
    gfn = strtoul(v, &end, 10);
    bool bad = errno || end == v || *end;
    free(v);
    if (bad)
        return -EINVAL;
    struct xencons_interface *ring =
        xc_map_foreign_range(e->xch, domid, XC_PAGE_SIZE, PROT_READ, gfn);
    if (!ring)
        return -errno;
    long long start = mono_ms(), quiet_since = start;
    XENCONS_RING_IDX last_prod = __atomic_load_n(&ring->in_prod, __ATOMIC_ACQUIRE);
    for (;;) {
        XENCONS_RING_IDX prod = __atomic_load_n(&ring->in_prod, __ATOMIC_ACQUIRE);
        XENCONS_RING_IDX cons = __atomic_load_n(&ring->in_cons, __ATOMIC_ACQUIRE);
        long long now = mono_ms();
        if (prod != last_prod || cons != prod) {
            last_prod = prod;
            quiet_since = now;
        } else if (now - quiet_since >= SETTLE_MS) {
            rc = 0;
            break;
        }
        if (now - start >= timeout_ms) {
            rc = (int)(XENCONS_RING_IDX)(prod - cons);
            break;
        }
        usleep(POLL_US);
    }
    munmap(ring, XC_PAGE_SIZE);
    return rc;
}

/* xenconsoled's pty for the domain's first console (what xl console opens). */
static int xm_console_path(struct mig_engine *e, uint32_t domid, char *buf, size_t size)
{
    char *path = NULL;
    int rc = libxl_console_get_tty(e->ctx, domid, 0, LIBXL_CONSOLE_TYPE_PV, &path);
    if (rc || !path) {
        free(path);
        return -ENOENT;
    }
    strlcpy0(buf, path, size);
    free(path);
    return 0;
}

const struct mig_engine_ops xen_mig_engine = {
    .name = "xen",
    .algorithms = "precopy,stopcopy",
    .open = xm_open,
    .close = xm_close,
    .lookup = xm_lookup,
    .lookup_uuid = xm_lookup_uuid,
    .free_kib = xm_free_kib,
    .get_config = xm_get_config,
    .save = xm_save,
    .is_suspended = xm_is_suspended,
    .resume = xm_resume,
    .restore = xm_restore,
    .unpause = xm_unpause,
    .rename = xm_rename,
    .destroy = xm_destroy,
    .guest_hold_get = xm_guest_hold_get,
    .guest_hold_put = xm_guest_hold_put,
    .console_path = xm_console_path,
    .console_hold_at_stop = true,
    .console_drain = xm_console_drain,
    .set_stop_hook = xm_set_stop_hook,
};
