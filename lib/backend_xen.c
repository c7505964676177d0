/* The Xen backend: domains from libxenctrl, names and guest hold nodes from
 * libxenstore, static holds from libxl's stored domain configuration and
 * xl config files, live migration through xl. */
#define _GNU_SOURCE
#include "backend.h"
#include "hypflag.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xenctrl.h>
#include <xenstore.h>

#define MAX_DOMAINS 1024
#define GUEST_HOLD_NODE "control/migration-lock"

struct backend {
    xc_interface *xch;
    struct xs_handle *xsh;
};

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

static int xen_open(struct backend **out, char *err, size_t errlen)
{
    struct backend *b = xzalloc(sizeof *b);
    int rc;

    b->xch = xc_interface_open(NULL, NULL, 0);
    if (!b->xch) {
        rc = errno ? -errno : -ENODEV;
        snprintf(err, errlen, "cannot open the Xen control interface (is this a Xen dom0?): %s",
                 strerror(-rc));
        goto fail;
    }
    /* UNWATCH_FILTER: no stale events for a domain we stopped watching. */
    b->xsh = xs_open(XS_UNWATCH_FILTER);
    if (!b->xsh) {
        rc = errno ? -errno : -ENODEV;
        snprintf(err, errlen, "cannot connect to xenstored: %s", strerror(-rc));
        goto fail;
    }
    if (!xs_watch(b->xsh, "@introduceDomain", "domains") ||
        !xs_watch(b->xsh, "@releaseDomain", "domains")) {
        rc = -errno;
        snprintf(err, errlen, "cannot watch domain changes in xenstore: %s", strerror(errno));
        goto fail;
    }
    *out = b;
    return 0;
fail:
    if (b->xsh)
        xs_close(b->xsh);
    if (b->xch)
        xc_interface_close(b->xch);
    free(b);
    return rc;
}

static void xen_close(struct backend *b)
{
    if (!b)
        return;
    xs_close(b->xsh);
    xc_interface_close(b->xch);
    free(b);
}

static enum vm_state state_from_flags(uint32_t f)
{
    if (f & XEN_DOMINF_dying)
        return VM_DYING;
    if (f & XEN_DOMINF_shutdown)
        return VM_SHUTDOWN;
    if (f & XEN_DOMINF_paused)
        return VM_PAUSED;
    if (f & XEN_DOMINF_running)
        return VM_RUNNING;
    if (f & XEN_DOMINF_blocked)
        return VM_BLOCKED;
    return VM_RUNNABLE; /* waiting for a CPU: xl shows "------" */
}

static int xen_list(struct backend *b, struct vm_info **out, size_t *np)
{
    xc_domaininfo_t *info = xzalloc(sizeof *info * MAX_DOMAINS);
    struct vm_info *vms;
    size_t n = 0;
    int r;

    r = xc_domain_getinfolist(b->xch, 0, MAX_DOMAINS, info);
    if (r < 0) {
        r = -errno;
        free(info);
        return r;
    }
    vms = xzalloc(sizeof *vms * ((size_t)r + 1));
    for (int i = 0; i < r; i++) {
        const xc_domaininfo_t *d = &info[i];
        struct vm_info *vm = &vms[n];
        char path[64];
        unsigned len;

        if (d->domain == 0)
            continue;
        vm->domid = d->domain;
        snprintf(path, sizeof path, "/local/domain/%u/name", d->domain);
        char *name = xs_read(b->xsh, XBT_NULL, path, &len);
        if (!name)
            continue; /* not (or no longer) set up by a toolstack */
        strlcpy0(vm->name, name, sizeof vm->name);
        free(name);
        const uint8_t *h = d->handle;
        snprintf(vm->uuid, sizeof vm->uuid,
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", h[0],
                 h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11], h[12], h[13],
                 h[14], h[15]);
        vm->state = state_from_flags(d->flags);
        vm->mem_kib = (uint64_t)d->tot_pages * (XC_PAGE_SIZE / 1024);
        vm->vcpus = d->nr_online_vcpus ? d->nr_online_vcpus : d->max_vcpu_id + 1;
        n++;
    }
    free(info);
    *out = vms;
    *np = n;
    return 0;
}

static int xen_event_fd(struct backend *b)
{
    return xs_fileno(b->xsh);
}

static int xen_read_events(struct backend *b, unsigned *what)
{
    char **vec;

    *what = 0;
    while ((vec = xs_check_watch(b->xsh))) {
        if (!strcmp(vec[XS_WATCH_TOKEN], "domains"))
            *what |= BE_EV_DOMAINS;
        else
            *what |= BE_EV_HOLDS;
        free(vec);
    }
    return errno == EAGAIN ? 0 : -errno;
}

static void hold_path(const struct vm_info *vm, char *buf, size_t size)
{
    snprintf(buf, size, "/local/domain/%u/" GUEST_HOLD_NODE, vm->domid);
}

static int xen_guest_hold_prepare(struct backend *b, const struct vm_info *vm)
{
    char path[96], token[32];
    unsigned len;
    /* The guest owns its node: it (and dom0) may read and write it, no other guest may. */
    struct xs_permissions perm = {.id = vm->domid, .perms = XS_PERM_NONE};
    char *cur;

    hold_path(vm, path, sizeof path);
    cur = xs_read(b->xsh, XBT_NULL, path, &len);
    if (!cur) {
        if (errno != ENOENT)
            return -errno;
        if (!xs_write(b->xsh, XBT_NULL, path, "0", 1))
            return -errno;
    }
    free(cur);
    if (!xs_set_permissions(b->xsh, XBT_NULL, path, &perm, 1))
        return -errno;
    snprintf(token, sizeof token, "hold:%u", vm->domid);
    if (!xs_watch(b->xsh, path, token))
        return -errno;
    return 0;
}

static void xen_guest_hold_forget(struct backend *b, uint32_t domid)
{
    char path[96], token[32];

    snprintf(path, sizeof path, "/local/domain/%u/" GUEST_HOLD_NODE, domid);
    snprintf(token, sizeof token, "hold:%u", domid);
    xs_unwatch(b->xsh, path, token);
}

static int xen_guest_hold_get(struct backend *b, const struct vm_info *vm, char *buf, size_t size)
{
    char path[96];
    unsigned len;
    char *v;

    hold_path(vm, path, sizeof path);
    v = xs_read(b->xsh, XBT_NULL, path, &len);
    if (!v)
        return -errno;
    if (len >= size || memchr(v, 0, len)) {
        /* Longer than any valid request: report it as such, never truncate silently. */
        free(v);
        return -E2BIG;
    }
    memcpy(buf, v, len);
    buf[len] = 0;
    free(v);
    return 0;
}

static int xen_guest_hold_set(struct backend *b, const struct vm_info *vm, const char *value)
{
    char path[96];

    hold_path(vm, path, sizeof path);
    if (!xs_write(b->xsh, XBT_NULL, path, value, (unsigned)strlen(value)))
        return -errno;
    return 0;
}

/* libxl keeps each domain's configuration as JSON; xl's nomigrate=1 becomes
 * "disable_migrate": "True" there. */
static bool libxl_json_disables_migrate(const char *text)
{
    const char *p = strstr(text, "\"disable_migrate\"");
    if (!p)
        return false;
    p += strlen("\"disable_migrate\"");
    while (*p == ' ' || *p == ':' || *p == '\t' || *p == '\n')
        p++;
    return !strncmp(p, "\"True\"", 6) || !strncmp(p, "true", 4);
}

/* An xl.cfg line "migration = "no"" or "nomigrate = 1". */
static bool xl_cfg_forbids_migration(const char *text, char *what, size_t whatlen)
{
    const char *l = text;

    while (l && *l) {
        const char *nl = strchr(l, '\n');
        size_t ll = nl ? (size_t)(nl - l) : strlen(l);
        char line[256], key[64], val[64];

        if (ll < sizeof line) {
            memcpy(line, l, ll);
            line[ll] = 0;
            char *hash = strchr(line, '#');
            if (hash)
                *hash = 0;
            if (sscanf(line, " %63[A-Za-z_] = %63s", key, val) == 2) {
                size_t vl = strlen(val);
                if (vl >= 2 && (val[0] == '"' || val[0] == '\'') && val[vl - 1] == val[0]) {
                    memmove(val, val + 1, vl - 2);
                    val[vl - 2] = 0;
                }
                if (!strcmp(key, "migration") && (!strcmp(val, "no") || !strcmp(val, "0"))) {
                    snprintf(what, whatlen, "migration=\"%s\"", val);
                    return true;
                }
                if (!strcmp(key, "nomigrate") && (!strcmp(val, "1") || !strcmp(val, "true"))) {
                    snprintf(what, whatlen, "nomigrate=%s", val);
                    return true;
                }
            }
        }
        l = nl ? nl + 1 : NULL;
    }
    return false;
}

static int xen_static_hold(struct backend *b, const struct vm_info *vm, struct hold *out)
{
    const char *userdata = env_or("VMMIG_XEN_USERDATA_DIR", "/var/lib/xen");
    const char *cfgdir = env_or("VMMIG_XEN_CONFIG_DIR", "/etc/xen");
    char path[512], what[80];
    char *text;
    struct stat st;

    memset(out, 0, sizeof *out);
    /* A patched hypervisor's own lock (hyp-patches/): Xen refuses to migrate
     * the domain itself, so vmmig holds it too, whoever took it. */
    struct hypflag hf;
    /* (the admin holder alone is vmmig's own admin hold, mirrored there) */
    if (!hypflag_get(b->xch, vm->domid, &hf) && (hf.holders & ~HYPFLAG_ADMIN)) {
        char who[32];
        out->active = true;
        out->since = time(NULL) - (time_t)(hf.held_ms / 1000);
        strlcpy0(out->by, "hypervisor", sizeof out->by);
        snprintf(out->reason, sizeof out->reason, "hypervisor migration lock held by %s",
                 hypflag_holders(hf.holders, who, sizeof who));
        return 0;
    }
    snprintf(path, sizeof path, "%s/userdata-d.%u.%s.libxl-json", userdata, vm->domid, vm->uuid);
    if (!read_file(path, &text, NULL)) {
        bool off = libxl_json_disables_migrate(text);
        free(text);
        if (off) {
            out->active = true;
            strlcpy0(out->by, path, sizeof out->by);
            strlcpy0(out->reason, "nomigrate=1 in the domain's configuration", sizeof out->reason);
            return 0;
        }
    }
    const char *fmts[] = {"%s/%s.cfg", "%s/%s"};
    for (size_t i = 0; i < ARRAY_SIZE(fmts); i++) {
        snprintf(path, sizeof path, fmts[i], cfgdir, vm->name);
        if (stat(path, &st) || !S_ISREG(st.st_mode) || read_file(path, &text, NULL))
            continue;
        bool off = xl_cfg_forbids_migration(text, what, sizeof what);
        free(text);
        if (off) {
            out->active = true;
            strlcpy0(out->by, path, sizeof out->by);
            snprintf(out->reason, sizeof out->reason, "%s in the domain's configuration", what);
            return 0;
        }
    }
    return 0;
}

/* `vmmig send DOMID HOST`, or for a group `vmmig comigrate HOST DOMID...`:
 * this very binary ($VMMIG_SEND replaces it, for tests). */
static int xen_migrate_argv(struct backend *b, const struct vm_info *vm,
                            const struct mig_request *req, char ***argvp)
{
    bool group = req->nmembers > 1;
    /* binary, applet, 8 options at most, the host, the domains, NULL */
    char **argv = xzalloc(sizeof *argv * (12 + (group ? req->nmembers : 1)));
    char self[PATH_MAX], num[32];
    const char *send = getenv("VMMIG_SEND");
    int i = 0;

    (void)b;
    if (!send || !*send) {
        ssize_t r = readlink("/proc/self/exe", self, sizeof self - 1);
        if (r <= 0) {
            free(argv);
            return r < 0 ? -errno : -ENOENT;
        }
        self[r] = 0;
        send = self;
    }
    argv[i++] = xstrdup(send);
    argv[i++] = xstrdup(group ? "comigrate" : "send");
    if (req->force)
        argv[i++] = xstrdup("--force");
    if (req->recover)
        argv[i++] = xstrdup("--recover");
    if (req->algorithm && *req->algorithm && !req->recover) {
        snprintf(num, sizeof num, "--algorithm=%s", req->algorithm);
        argv[i++] = xstrdup(num);
    }
    if (req->stream && *req->stream && !req->recover) {
        snprintf(num, sizeof num, "--stream=%s", req->stream);
        argv[i++] = xstrdup(num);
    }
    if (req->transport && *req->transport && strcmp(req->transport, "tcp")) {
        argv[i++] = xstrdup("--via");
        argv[i++] = xstrdup(req->transport);
    } else if (req->port) {
        snprintf(num, sizeof num, "--port=%u", req->port);
        argv[i++] = xstrdup(num);
    }
    if (req->timeout_s) {
        snprintf(num, sizeof num, "--timeout=%u", req->timeout_s);
        argv[i++] = xstrdup(num);
    }
    if (group) {
        argv[i++] = xstrdup(req->host);
        for (size_t m = 0; m < req->nmembers; m++) {
            snprintf(num, sizeof num, "%u", req->members[m]);
            argv[i++] = xstrdup(num);
        }
    } else {
        snprintf(num, sizeof num, "%u", vm->domid);
        argv[i++] = xstrdup(num);
        argv[i++] = xstrdup(req->host);
    }
    *argvp = argv;
    return 0;
}

static int xen_admin_hold_sync(struct backend *b, const struct vm_info *vm, bool on)
{
    int rc = hypflag_set(b->xch, vm->domid, HYPFLAG_ADMIN, on);
    return rc == -ENOSYS ? 0 : rc; /* an unpatched hypervisor has no lock */
}

const struct backend_ops xen_backend_ops = {
    .name = "xen",
    .open = xen_open,
    .close = xen_close,
    .list = xen_list,
    .event_fd = xen_event_fd,
    .read_events = xen_read_events,
    .guest_hold_prepare = xen_guest_hold_prepare,
    .guest_hold_forget = xen_guest_hold_forget,
    .guest_hold_get = xen_guest_hold_get,
    .guest_hold_set = xen_guest_hold_set,
    .static_hold = xen_static_hold,
    .migrate_argv = xen_migrate_argv,
    .admin_hold_sync = xen_admin_hold_sync,
};
