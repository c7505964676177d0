#define _GNU_SOURCE
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/capability.h>

#define MIG_OUTPUT_KEEP 16384

void caller_name(uid_t uid, char *buf, size_t size)
{
    /* Every write names its caller: remember the last few to spare /etc/passwd. */
    static struct {
        uid_t uid;
        char name[64];
        time_t when;
    } cache[8];
    struct passwd pw, *res = NULL;
    char tmp[1024];
    time_t now = time(NULL);
    size_t slot = uid % ARRAY_SIZE(cache);

    if (cache[slot].when && cache[slot].uid == uid && now - cache[slot].when < 60) {
        strlcpy0(buf, cache[slot].name, size);
        return;
    }
    if (!getpwuid_r(uid, &pw, tmp, sizeof tmp, &res) && res)
        strlcpy0(cache[slot].name, res->pw_name, sizeof cache[slot].name);
    else
        snprintf(cache[slot].name, sizeof cache[slot].name, "uid%u", (unsigned)uid);
    cache[slot].uid = uid;
    cache[slot].when = now;
    strlcpy0(buf, cache[slot].name, size);
}

static void touch(struct ctl *c, struct domain *d)
{
    c->gen++;
    if (d)
        d->gen++;
}

/* ---- opening ---------------------------------------------------------------- */

int ctl_open(struct ctl *c, const char *backend, const char *state_dir, const char *policy_path,
             char *err, size_t errlen)
{
    const struct backend_ops *ops = backend_find(backend);

    if (!ops) {
        memset(c, 0, sizeof *c);
        c->lock_fd = -1;
        if (!backend || !strcmp(backend, "auto"))
            snprintf(err, errlen, "no supported hypervisor found (no /proc/xen, /dev/xen or "
                                  "XENSTORED_PATH); use --backend");
        else
            snprintf(err, errlen, "unknown backend '%s' (known: xen)", backend);
        return -ENODEV;
    }
    return ctl_open_ops(c, ops, state_dir, policy_path, err, errlen);
}

int ctl_open_ops(struct ctl *c, const struct backend_ops *ops, const char *state_dir,
                 const char *policy_path, char *err, size_t errlen)
{
    char path[600];
    int rc;

    memset(c, 0, sizeof *c);
    c->lock_fd = -1;
    strlcpy0(c->state_dir, state_dir, sizeof c->state_dir);
    strlcpy0(c->policy_path, policy_path, sizeof c->policy_path);

    rc = policy_load(policy_path, &c->pol, err, errlen);
    if (rc)
        return rc;
    rc = mkdir_p(state_dir, 0755);
    if (rc) {
        snprintf(err, errlen, "cannot create state directory %s: %s", state_dir, strerror(-rc));
        return rc;
    }
    snprintf(path, sizeof path, "%s/lock", state_dir);
    c->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (c->lock_fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return rc;
    }
    /* Two controllers writing the same state would lose each other's holds. */
    if (flock(c->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        rc = -errno;
        snprintf(err, errlen, "state directory %s is in use by another vmmig (a running vmmigfs?)",
                 state_dir);
        goto fail;
    }
    c->ops = ops;
    rc = c->ops->open(&c->be, err, errlen);
    if (rc)
        goto fail;
    rc = ctl_refresh(c);
    if (rc) {
        snprintf(err, errlen, "cannot list domains: %s", strerror(-rc));
        goto fail;
    }
    return 0;
fail:
    if (c->be)
        c->ops->close(c->be);
    c->be = NULL;
    close(c->lock_fd);
    c->lock_fd = -1;
    return rc;
}

static void domain_free(struct domain *d)
{
    if (d->mig_fd >= 0)
        close(d->mig_fd);
    sb_free(&d->mig_out);
    free(d);
}

void ctl_close(struct ctl *c)
{
    ctl_flush(c);
    for (size_t i = 0; i < c->ndoms; i++)
        domain_free(c->doms[i]);
    free(c->doms);
    c->doms = NULL;
    c->ndoms = 0;
    if (c->be)
        c->ops->close(c->be);
    c->be = NULL;
    events_free(&c->ev);
    if (c->lock_fd >= 0)
        close(c->lock_fd);
    c->lock_fd = -1;
}

struct domain *ctl_find(struct ctl *c, const char *name)
{
    for (size_t i = 0; i < c->ndoms; i++)
        if (!strcmp(c->doms[i]->vm.name, name))
            return c->doms[i];
    return NULL;
}

static struct domain *find_domid(struct ctl *c, uint32_t domid)
{
    for (size_t i = 0; i < c->ndoms; i++)
        if (c->doms[i]->vm.domid == domid)
            return c->doms[i];
    return NULL;
}

/* ---- persistence ------------------------------------------------------------ */

static int save_domain(struct ctl *c, struct domain *d)
{
    struct domstate st = {0};

    st.admin = d->locks.h[HOLD_ADMIN];
    st.guest_since = d->locks.h[HOLD_GUEST].active ? d->locks.h[HOLD_GUEST].since : 0;
    st.guest_expires = d->locks.h[HOLD_GUEST].active ? d->locks.h[HOLD_GUEST].expires : 0;
    memcpy(st.peers, d->peers, sizeof st.peers);
    st.npeers = d->npeers;
    return state_save(c->state_dir, d->vm.uuid, &st);
}

/* ---- guest holds ------------------------------------------------------------ */

/* Re-read the guest's request and turn it into the guest hold.  A value that
 * does not parse counts as a hold: the guest asked for something, and failing
 * closed never migrates a domain that wanted to stay. */
static void guest_hold_update(struct ctl *c, struct domain *d, const struct domstate *saved)
{
    char raw[LOCK_REQUEST_MAX + 1], err[200];
    struct lock_request req;
    struct hold *h = &d->locks.h[HOLD_GUEST];
    struct hold nh = {0};
    time_t now = time(NULL);
    int rc;

    rc = c->ops->guest_hold_get(c->be, &d->vm, raw, sizeof raw);
    if (rc == -ENOENT || rc == -EACCES)
        raw[0] = 0;
    else if (rc == -E2BIG)
        strlcpy0(raw, "(overlong)", sizeof raw);
    else if (rc)
        return;
    if (!strcmp(raw, d->guest_raw) && d->prepared)
        return;
    bool first = !d->prepared && !d->guest_raw[0];
    strlcpy0(d->guest_raw, raw, sizeof d->guest_raw);

    if (!raw[0] || !strcmp(raw, "0")) {
        nh.active = false;
    } else if (rc == -E2BIG ||
               lock_request_parse(raw, strlen(raw), POLICY_MAX_SECONDS, 0, &req, err, sizeof err)) {
        if (rc == -E2BIG)
            snprintf(err, sizeof err, "request longer than %d bytes", LOCK_REQUEST_MAX);
        events_emit(&c->ev, d->vm.name, "guest-request-invalid", "why=\"%s\" counted=hold", err);
        nh.active = true;
        snprintf(nh.reason, sizeof nh.reason, "invalid request from guest: %.170s", err);
    } else if (req.value == 0) {
        nh.active = false;
    } else {
        nh.active = true;
        strlcpy0(nh.reason, req.reason, sizeof nh.reason);
        if (req.ttl > c->pol.max_ttl) {
            events_emit(&c->ev, d->vm.name, "guest-ttl-clamped", "asked=%ld max_ttl=%ld", req.ttl,
                        c->pol.max_ttl);
            req.ttl = c->pol.max_ttl;
        }
        nh.expires = req.ttl; /* relative for now */
    }

    if (nh.active) {
        /* A hold that was already there keeps its start time (the quota runs
         * from it), also across restarts; a new ttl counts from now. */
        bool restored = !h->active && saved && saved->guest_since;
        nh.since = h->active ? h->since : restored ? saved->guest_since : now;
        if (restored && nh.expires && saved->guest_expires)
            nh.expires = saved->guest_expires;
        else
            nh.expires = nh.expires ? now + nh.expires : 0;
        strlcpy0(nh.by, "guest", sizeof nh.by);
        if (!h->active || strcmp(h->reason, nh.reason) || h->expires != nh.expires) {
            char exp[32];
            fmt_time(nh.expires, exp, sizeof exp);
            events_emit(&c->ev, d->vm.name, "hold-set", "holder=guest domid=%u expires=%s reason=\"%s\"",
                        d->vm.domid, exp, nh.reason);
        }
    } else if (h->active && !first) {
        events_emit(&c->ev, d->vm.name, "hold-released", "holder=guest domid=%u", d->vm.domid);
    }
    bool changed = h->active != nh.active || h->since != nh.since || h->expires != nh.expires;
    *h = nh;
    /* xenstore holds the request itself; we only keep its start time.  Saving
     * after pollers are woken keeps the disk off the visibility path. */
    if (changed)
        d->dirty = true;
    touch(c, d);
}

void ctl_flush(struct ctl *c)
{
    for (size_t i = 0; i < c->ndoms; i++)
        if (c->doms[i]->dirty) {
            int rc = save_domain(c, c->doms[i]);
            if (rc)
                events_emit(&c->ev, c->doms[i]->vm.name, "write-failed", "file=state why=\"%s\"",
                            strerror(-rc));
            c->doms[i]->dirty = false;
        }
}

/* ---- discovery -------------------------------------------------------------- */

/* A migration belongs to the domain (its UUID), not to one domid: during a
 * migration within this host the incoming copy, with the same UUID, takes the
 * name, and must show the same job. */
static void share_job(struct ctl *c, const struct domain *from)
{
    for (size_t i = 0; i < c->ndoms; i++) {
        struct domain *d = c->doms[i];
        if (d == from || strcmp(d->vm.uuid, from->vm.uuid))
            continue;
        strlcpy0(d->migration, from->migration, sizeof d->migration);
        strlcpy0(d->last_refusal, from->last_refusal, sizeof d->last_refusal);
        touch(c, d);
    }
}

static bool name_usable(const char *name)
{
    static const char *const reserved[] = {"host", "backend", "policy", "events", ".", ".."};
    if (!*name || strchr(name, '/'))
        return false;
    for (size_t i = 0; i < ARRAY_SIZE(reserved); i++)
        if (!strcmp(name, reserved[i]))
            return false;
    return true;
}

static void static_hold_update(struct ctl *c, struct domain *d)
{
    struct hold sh;
    struct hold *h = &d->locks.h[HOLD_STATIC];

    if (c->ops->static_hold(c->be, &d->vm, &sh))
        return;
    if (sh.active == h->active && !strcmp(sh.by, h->by))
        return;
    sh.since = h->active ? h->since : time(NULL);
    if (sh.active)
        events_emit(&c->ev, d->vm.name, "hold-set", "holder=static source=%s reason=\"%s\"", sh.by,
                    sh.reason);
    else if (h->active)
        events_emit(&c->ev, d->vm.name, "hold-released", "holder=static source=%s", h->by);
    *h = sh;
    touch(c, d);
}

static struct domain *domain_add(struct ctl *c, const struct vm_info *vm)
{
    struct domain *d = xzalloc(sizeof *d);
    struct domstate st;
    char err[300];

    d->vm = *vm;
    d->mig_fd = -1;
    d->mig_exit = -1;
    strlcpy0(d->migration, "idle", sizeof d->migration);
    if (state_load(c->state_dir, vm->uuid, &st, err, sizeof err)) {
        /* Fail closed: an unreadable record may have held an admin lock. */
        events_emit(&c->ev, vm->name, "state-invalid", "why=\"%s\" counted=hold", err);
        memset(&st, 0, sizeof st);
        st.admin.active = true;
        st.admin.since = time(NULL);
        strlcpy0(st.admin.by, "vmmig", sizeof st.admin.by);
        snprintf(st.admin.reason, sizeof st.admin.reason, "unreadable state record");
    }
    for (size_t i = 0; i < c->ndoms; i++)
        if (!strcmp(c->doms[i]->vm.uuid, vm->uuid) && c->doms[i]->mig_pid > 0) {
            strlcpy0(d->migration, c->doms[i]->migration, sizeof d->migration);
            strlcpy0(d->last_refusal, c->doms[i]->last_refusal, sizeof d->last_refusal);
        }
    d->locks.h[HOLD_ADMIN] = st.admin;
    memcpy(d->peers, st.peers, sizeof d->peers);
    d->npeers = st.npeers;
    c->doms = xrealloc(c->doms, sizeof *c->doms * (c->ndoms + 1));
    c->doms[c->ndoms++] = d;
    events_emit(&c->ev, vm->name, "domain-added", "domid=%u uuid=%s", vm->domid, vm->uuid);

    int rc = c->ops->guest_hold_prepare(c->be, &d->vm);
    if (rc)
        events_emit(&c->ev, vm->name, "guest-channel-failed", "domid=%u error=\"%s\"", vm->domid,
                    strerror(-rc));
    guest_hold_update(c, d, &st);
    d->prepared = rc == 0;
    static_hold_update(c, d);
    touch(c, d);
    return d;
}

int ctl_refresh(struct ctl *c)
{
    struct vm_info *vms;
    size_t n;
    int rc;

    rc = c->ops->list(c->be, &vms, &n);
    if (rc)
        return rc;
    for (size_t i = 0; i < c->ndoms; i++)
        c->doms[i]->seen = false;
    for (size_t i = 0; i < n; i++) {
        struct domain *d = find_domid(c, vms[i].domid);
        if (!name_usable(vms[i].name)) {
            if (!d)
                continue;
        }
        if (!d) {
            d = domain_add(c, &vms[i]);
        } else {
            if (strcmp(d->vm.name, vms[i].name)) {
                events_emit(&c->ev, vms[i].name, "domain-renamed", "from=%s domid=%u", d->vm.name,
                            d->vm.domid);
                if (c->name_gone)
                    c->name_gone(c->name_gone_arg, d->vm.name);
                touch(c, d);
            }
            if (d->vm.state != vms[i].state || d->vm.mem_kib != vms[i].mem_kib)
                touch(c, d);
            d->vm = vms[i];
            if (!d->prepared) {
                d->prepared = c->ops->guest_hold_prepare(c->be, &d->vm) == 0;
                if (d->prepared)
                    guest_hold_update(c, d, NULL);
            }
            static_hold_update(c, d);
        }
        d->seen = true;
    }
    free(vms);
    /* Sweep domains that are gone; a running migration's child keeps its entry. */
    size_t j = 0;
    for (size_t i = 0; i < c->ndoms; i++) {
        struct domain *d = c->doms[i];
        if (d->seen || d->mig_pid > 0) {
            c->doms[j++] = d;
            continue;
        }
        events_emit(&c->ev, d->vm.name, "domain-removed", "domid=%u uuid=%s", d->vm.domid,
                    d->vm.uuid);
        if (d->dirty)
            save_domain(c, d);
        if (c->name_gone)
            c->name_gone(c->name_gone_arg, d->vm.name);
        c->ops->guest_hold_forget(c->be, d->vm.domid);
        domain_free(d);
        c->gen++;
    }
    c->ndoms = j;
    return 0;
}

int ctl_backend_event(struct ctl *c)
{
    unsigned what = 0;
    int rc = c->ops->read_events(c->be, &what);

    if (what & BE_EV_DOMAINS)
        ctl_refresh(c);
    if (what & BE_EV_HOLDS)
        for (size_t i = 0; i < c->ndoms; i++)
            guest_hold_update(c, c->doms[i], NULL);
    return rc;
}

void ctl_tick(struct ctl *c, time_t now)
{
    for (size_t i = 0; i < c->ndoms; i++) {
        struct domain *d = c->doms[i];
        struct hold *a = &d->locks.h[HOLD_ADMIN], *g = &d->locks.h[HOLD_GUEST];

        if (a->active && a->expires && now >= a->expires) {
            events_emit(&c->ev, d->vm.name, "hold-expired", "holder=admin by=%s reason=\"%s\"",
                        a->by, a->reason);
            memset(a, 0, sizeof *a);
            save_domain(c, d);
            touch(c, d);
        }
        if (g->active && g->expires && now >= g->expires) {
            events_emit(&c->ev, d->vm.name, "hold-expired", "holder=guest reason=\"%s\"",
                        g->reason);
            /* Tell the guest its hold is gone, so it does not believe it is still protected. */
            if (!c->ops->guest_hold_set(c->be, &d->vm, "0"))
                strlcpy0(d->guest_raw, "0", sizeof d->guest_raw);
            memset(g, 0, sizeof *g);
            save_domain(c, d);
            touch(c, d);
        }
    }
}

/* ---- permission ------------------------------------------------------------- */

static bool pid_has_sys_admin(pid_t pid)
{
    cap_t caps = cap_get_pid(pid);
    cap_flag_value_t v = CAP_CLEAR;

    if (!caps)
        return false;
    cap_get_flag(caps, CAP_SYS_ADMIN, CAP_EFFECTIVE, &v);
    cap_free(caps);
    return v == CAP_SET;
}

static bool pid_in_group(pid_t pid, gid_t fsgid, gid_t want)
{
    char path[64], *text, *p;
    bool found = fsgid == want;

    if (found)
        return true;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    if (read_file(path, &text, NULL))
        return false;
    p = strstr(text, "\nGroups:");
    if (p) {
        p += 8;
        while (*p && *p != '\n') {
            char *end;
            unsigned long g = strtoul(p, &end, 10);
            if (end == p)
                break;
            if ((gid_t)g == want)
                found = true;
            p = end;
            while (*p == ' ' || *p == '\t')
                p++;
        }
    }
    free(text);
    return found;
}

bool ctl_may_write(struct ctl *c, const struct caller *who)
{
    if (pid_has_sys_admin(who->pid))
        return true;
    if (c->pol.admin_group[0]) {
        struct group gr, *res = NULL;
        char buf[4096];
        if (!getgrnam_r(c->pol.admin_group, &gr, buf, sizeof buf, &res) && res)
            return pid_in_group(who->pid, who->gid, res->gr_gid);
    }
    return false;
}

void ctl_reject(struct ctl *c, const char *domain, const char *file, const struct caller *who,
                const char *why)
{
    char user[64], safe[512];

    caller_name(who->uid, user, sizeof user);
    /* why= may quote what the caller wrote: keep the event line parseable. */
    strlcpy0(safe, why, sizeof safe);
    for (char *p = safe; *p; p++)
        if (*p == '"')
            *p = '\'';
    events_emit(&c->ev, domain, "write-rejected", "file=%s by=%s uid=%u pid=%d why=\"%s\"", file,
                user, (unsigned)who->uid, (int)who->pid, safe);
}

/* ---- lock ------------------------------------------------------------------- */

int ctl_lock_write(struct ctl *c, struct domain *d, const char *buf, size_t len,
                   const struct caller *who, char *err, size_t errlen)
{
    struct lock_request req;
    struct hold *a = &d->locks.h[HOLD_ADMIN], *g = &d->locks.h[HOLD_GUEST];
    struct hold saved_a = *a;
    time_t now = time(NULL);
    char user[64];
    int rc;

    rc = lock_request_parse(buf, len, c->pol.max_ttl, LOCKREQ_ALLOW_FORCE, &req, err, errlen);
    if (rc) {
        ctl_reject(c, d->vm.name, "lock", who, err);
        return rc;
    }
    caller_name(who->uid, user, sizeof user);

    if (req.value == 1) {
        struct hold nh = {.active = true, .since = now, .uid = who->uid};
        nh.expires = req.ttl ? now + req.ttl : 0;
        strlcpy0(nh.by, user, sizeof nh.by);
        strlcpy0(nh.reason, req.reason, sizeof nh.reason);
        *a = nh;
        rc = save_domain(c, d);
        if (rc)
            goto save_failed;
        events_emit(&c->ev, d->vm.name, "hold-set", "holder=admin by=%s uid=%u ttl=%ld reason=\"%s\"",
                    user, (unsigned)who->uid, req.ttl, req.reason);
        touch(c, d);
        return 0;
    }

    if (req.force && hold_in_force(g, now)) {
        time_t at = guest_hold_overridable_at(g, &c->pol);
        if (!at || now < at) {
            char when[32];
            fmt_time(at, when, sizeof when);
            snprintf(err, errlen,
                     "guest hold (%s) is within its quota: it may be overridden %s%s "
                     "(policy guest_max_hold=%ld)",
                     g->reason[0] ? g->reason : "no reason", at ? "after " : "", when,
                     c->pol.guest_max_hold);
            events_emit(&c->ev, d->vm.name, "force-refused", "by=%s uid=%u why=\"%s\"", user,
                        (unsigned)who->uid, err);
            return -EPERM;
        }
    }
    bool had_admin = a->active;
    memset(a, 0, sizeof *a);
    struct hold saved_g = *g;
    bool override = req.force && hold_in_force(g, now);
    if (override)
        memset(g, 0, sizeof *g);
    rc = save_domain(c, d);
    if (rc) {
        *g = saved_g;
        goto save_failed;
    }
    if (had_admin)
        events_emit(&c->ev, d->vm.name, "hold-released", "holder=admin by=%s uid=%u", user,
                    (unsigned)who->uid);
    if (override) {
        /* The guest learns that its hold was taken back. */
        rc = c->ops->guest_hold_set(c->be, &d->vm, "0");
        if (!rc)
            strlcpy0(d->guest_raw, "0", sizeof d->guest_raw);
        char held[32];
        fmt_time(saved_g.since, held, sizeof held);
        events_emit(&c->ev, d->vm.name, "hold-overridden",
                    "holder=guest by=%s uid=%u held_since=%s reason=\"%s\"%s", user,
                    (unsigned)who->uid, held, saved_g.reason,
                    rc ? " guest-node=unwritable" : "");
    }
    touch(c, d);
    return 0;

save_failed:
    *a = saved_a;
    snprintf(err, errlen, "cannot record the hold in %s: %s", c->state_dir, strerror(-rc));
    events_emit(&c->ev, d->vm.name, "write-failed", "file=lock why=\"%s\"", err);
    return -EIO;
}

/* ---- migrate ---------------------------------------------------------------- */

static void peers_on_one_line(struct ctl *c, struct domain *d, struct strbuf *sb);

static bool host_valid(const char *h)
{
    size_t n = strlen(h);
    if (!n || n > 253 || h[0] == '-')
        return false;
    for (; *h; h++)
        if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') || (*h >= '0' && *h <= '9') ||
              *h == '.' || *h == '-' || *h == ':' || *h == '_' || *h == '[' || *h == ']'))
            return false;
    return true;
}

int ctl_migrate_write(struct ctl *c, struct domain *d, const char *buf, size_t len,
                      const struct caller *who, char *err, size_t errlen)
{
    char text[300], host[256], user[64];
    struct strbuf why = {0};
    time_t now = time(NULL);
    char **argv = NULL;
    int rc;

    if (memchr(buf, 0, len)) {
        snprintf(err, errlen, "request contains a NUL byte");
        goto invalid;
    }
    len = chomp(buf, len);
    if (len >= sizeof text) {
        snprintf(err, errlen, "request too long (%zu bytes, at most %zu)", len, sizeof text - 1);
        goto invalid;
    }
    memcpy(text, buf, len);
    text[len] = 0;
    if (sscanf(text, " %255s", host) != 1) {
        snprintf(err, errlen, "empty request (expected a host name or cancel)");
        goto invalid;
    }
    {
        char extra[8];
        if (sscanf(text, " %*s %7s", extra) == 1) {
            snprintf(err, errlen, "unexpected words after '%s' (expected: HOST, or cancel)", host);
            goto invalid;
        }
    }
    caller_name(who->uid, user, sizeof user);

    if (!strcmp(host, "cancel")) {
        if (d->mig_pid <= 0) {
            snprintf(err, errlen, "no migration is running");
            ctl_reject(c, d->vm.name, "migrate", who, err);
            return -ESRCH;
        }
        c->run.stop(c->run.arg, d->mig_pid);
        events_emit(&c->ev, d->vm.name, "migrate-cancel", "by=%s uid=%u", user, (unsigned)who->uid);
        return 0;
    }
    if (!host_valid(host)) {
        snprintf(err, errlen, "'%s' is not a valid host name", host);
        goto invalid;
    }
    if (d->mig_pid > 0) {
        snprintf(err, errlen, "a migration to %s is already running", d->mig_host);
        ctl_reject(c, d->vm.name, "migrate", who, err);
        return -EBUSY;
    }
    if (lockset_locked(&d->locks, now)) {
        char when[32];
        lockset_describe(&d->locks, now, &why);
        fmt_time(now, when, sizeof when);
        snprintf(err, errlen, "locked: %s", why.s);
        snprintf(d->last_refusal, sizeof d->last_refusal, "%s to %s by %s: %s", when, host, user,
                 err);
        snprintf(d->migration, sizeof d->migration, "refused %s: %s", host, err);
        events_emit(&c->ev, d->vm.name, "migrate-refused", "to=%s by=%s uid=%u why=\"%s\"", host,
                    user, (unsigned)who->uid, why.s);
        sb_free(&why);
        touch(c, d);
        return -EBUSY;
    }
    if (d->npeers) {
        struct strbuf names = {0};
        peers_on_one_line(c, d, &names);
        snprintf(err, errlen,
                 "%s must migrate together with its peers (%s); this version cannot co-migrate",
                 d->vm.name, names.s ? names.s : "");
        sb_free(&names);
        events_emit(&c->ev, d->vm.name, "migrate-refused", "to=%s by=%s uid=%u why=\"%s\"", host,
                    user, (unsigned)who->uid, err);
        return -EOPNOTSUPP;
    }
    struct mig_request mreq = {.host = host};
    rc = c->ops->migrate_argv(c->be, &d->vm, &mreq, &argv);
    if (!rc)
        rc = c->run.start(c->run.arg, argv, &d->mig_pid, &d->mig_fd);
    argv_free(argv);
    if (rc) {
        snprintf(err, errlen, "cannot start the migration: %s", strerror(-rc));
        snprintf(d->migration, sizeof d->migration, "failed %s: %s", host, err);
        events_emit(&c->ev, d->vm.name, "migrate-failed", "to=%s why=\"%s\"", host, err);
        d->mig_pid = 0;
        touch(c, d);
        return rc;
    }
    strlcpy0(d->mig_host, host, sizeof d->mig_host);
    strlcpy0(d->mig_name, d->vm.name, sizeof d->mig_name);
    d->mig_exit = -1;
    sb_reset(&d->mig_out);
    snprintf(d->migration, sizeof d->migration, "running %s", host);
    events_emit(&c->ev, d->vm.name, "migrate-started", "to=%s by=%s uid=%u domid=%u", host, user,
                (unsigned)who->uid, d->vm.domid);
    touch(c, d);
    return 0;

invalid:
    ctl_reject(c, d->vm.name, "migrate", who, err);
    return -EINVAL;
}

static void migration_finish(struct ctl *c, struct domain *d)
{
    int st = d->mig_exit;

    if (d->mig_fd >= 0 || st < 0)
        return; /* wait for both the end of output and the exit status */
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        snprintf(d->migration, sizeof d->migration, "done %s", d->mig_host);
        events_emit(&c->ev, d->mig_name, "migrate-done", "to=%s uuid=%s domid=%u", d->mig_host,
                    d->vm.uuid, d->vm.domid);
    } else {
        /* The last line the migration command printed says why. */
        char last[300] = "";
        if (d->mig_out.len) {
            char *s = d->mig_out.s;
            size_t n = d->mig_out.len;
            while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
                n--;
            size_t b = n;
            while (b && s[b - 1] != '\n')
                b--;
            snprintf(last, sizeof last, "%.*s", (int)(n - b), s + b);
        }
        if (WIFSIGNALED(st))
            snprintf(d->migration, sizeof d->migration, "failed %s: killed by signal %d%s%s",
                     d->mig_host, WTERMSIG(st), last[0] ? ": " : "", last);
        else
            snprintf(d->migration, sizeof d->migration, "failed %s: exit %d%s%s", d->mig_host,
                     WEXITSTATUS(st), last[0] ? ": " : "", last);
        /* "failed HOST: why" -> why */
        const char *why = d->migration + 7 + strlen(d->mig_host) + 2;
        events_emit(&c->ev, d->mig_name, "migrate-failed", "to=%s why=\"%s\"", d->mig_host, why);
    }
    d->mig_pid = 0;
    d->mig_exit = -1;
    touch(c, d);
    share_job(c, d);
    ctl_refresh(c);
}

void ctl_migration_io(struct ctl *c, struct domain *d)
{
    char buf[4096];
    ssize_t r;

    for (;;) {
        r = read(d->mig_fd, buf, sizeof buf);
        if (r > 0) {
            sb_add(&d->mig_out, buf, (size_t)r);
            if (d->mig_out.len > MIG_OUTPUT_KEEP) {
                size_t drop = d->mig_out.len - MIG_OUTPUT_KEEP / 2;
                memmove(d->mig_out.s, d->mig_out.s + drop, d->mig_out.len - drop + 1);
                d->mig_out.len -= drop;
            }
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        break;
    }
    close(d->mig_fd);
    d->mig_fd = -1;
    migration_finish(c, d);
}

void ctl_migration_exited(struct ctl *c, pid_t pid, int status)
{
    for (size_t i = 0; i < c->ndoms; i++) {
        struct domain *d = c->doms[i];
        if (d->mig_pid == pid) {
            d->mig_exit = status;
            migration_finish(c, d);
            return;
        }
    }
}

/* ---- policy ----------------------------------------------------------------- */

int ctl_policy_write(struct ctl *c, const char *buf, size_t len, const struct caller *who,
                     char *err, size_t errlen)
{
    struct policy np = c->pol;
    char user[64];
    int rc;

    rc = policy_set(&np, buf, len, err, errlen);
    if (rc) {
        ctl_reject(c, NULL, "policy", who, err);
        return rc;
    }
    rc = policy_save(c->policy_path, &np);
    if (rc) {
        snprintf(err, errlen, "cannot write %s: %s", c->policy_path, strerror(-rc));
        events_emit(&c->ev, NULL, "write-failed", "file=policy why=\"%s\"", err);
        return -EIO;
    }
    c->pol = np;
    caller_name(who->uid, user, sizeof user);
    events_emit(&c->ev, NULL, "policy-changed", "by=%s uid=%u set=\"%.*s\"", user,
                (unsigned)who->uid, (int)chomp(buf, len), buf);
    touch(c, NULL);
    for (size_t i = 0; i < c->ndoms; i++)
        touch(c, c->doms[i]);
    return 0;
}

/* ---- formatting ------------------------------------------------------------- */

void ctl_format_lock(struct ctl *c, struct domain *d, struct strbuf *sb)
{
    (void)c;
    sb_printf(sb, "%d\n", lockset_locked(&d->locks, time(NULL)) ? 1 : 0);
}

void ctl_format_migration(struct ctl *c, struct domain *d, struct strbuf *sb)
{
    (void)c;
    sb_printf(sb, "%s\n", d->migration);
}

void ctl_format_status(struct ctl *c, struct domain *d, struct strbuf *sb)
{
    time_t now = time(NULL);

    sb_printf(sb, "name: %s\n", d->vm.name);
    sb_printf(sb, "domid: %u\n", d->vm.domid);
    sb_printf(sb, "uuid: %s\n", d->vm.uuid);
    sb_printf(sb, "state: %s\n", vm_state_name(d->vm.state));
    sb_printf(sb, "memory_kib: %llu\n", (unsigned long long)d->vm.mem_kib);
    sb_printf(sb, "vcpus: %u\n", d->vm.vcpus);
    sb_printf(sb, "locked: %d\n", lockset_locked(&d->locks, now) ? 1 : 0);
    lockset_format(&d->locks, &c->pol, now, sb);
    if (d->npeers) {
        struct strbuf peers = {0};
        peers_on_one_line(c, d, &peers);
        sb_printf(sb, "peers: %s\n", peers.s);
        sb_free(&peers);
    }
    sb_printf(sb, "migration: %s\n", d->migration);
    if (d->last_refusal[0])
        sb_printf(sb, "last_refusal: %s\n", d->last_refusal);
}

/* ---- peer groups ------------------------------------------------------------ */

static struct domain *find_uuid(struct ctl *c, const char *uuid)
{
    for (size_t i = 0; i < c->ndoms; i++)
        if (!strcmp(c->doms[i]->vm.uuid, uuid))
            return c->doms[i];
    return NULL;
}

static bool in_group(const struct domain *d, const char *uuid)
{
    for (int i = 0; i < d->npeers; i++)
        if (!strcmp(d->peers[i], uuid))
            return true;
    return false;
}

void ctl_format_peers(struct ctl *c, struct domain *d, struct strbuf *sb)
{
    for (int i = 0; i < d->npeers; i++) {
        struct domain *p = find_uuid(c, d->peers[i]);
        /* A member not on this host is named by its UUID. */
        sb_printf(sb, "%s\n", p ? p->vm.name : d->peers[i]);
    }
}

/* Groups are symmetric: every member lists every other member.  Writing a
 * domain's peer file makes {domain} + the names its whole group; an empty
 * write takes it out of its group. */
int ctl_peer_write(struct ctl *c, struct domain *d, const char *buf, size_t len,
                   const struct caller *who, char *err, size_t errlen)
{
    char text[LOCK_REQUEST_MAX + 1], user[64];
    struct domain *members[PEERS_MAX + 1];
    int n = 0;
    char *tok, *save = NULL;

    if (memchr(buf, 0, len)) {
        snprintf(err, errlen, "request contains a NUL byte");
        goto invalid;
    }
    len = chomp(buf, len);
    if (len > LOCK_REQUEST_MAX || !printable(buf, len)) {
        snprintf(err, errlen, "request too long or with control characters");
        goto invalid;
    }
    memcpy(text, buf, len);
    text[len] = 0;
    for (char *p = text; *p; p++)
        if (*p == '\n')
            *p = ' ';
    members[n++] = d;
    for (tok = strtok_r(text, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        struct domain *p = ctl_find(c, tok);
        if (!p) {
            snprintf(err, errlen, "unknown domain '%.64s'", tok);
            goto invalid;
        }
        if (p == d) {
            snprintf(err, errlen, "%s cannot be its own peer", d->vm.name);
            goto invalid;
        }
        for (int i = 0; i < n; i++)
            if (members[i] == p) {
                snprintf(err, errlen, "'%s' named twice", tok);
                goto invalid;
            }
        if (n > PEERS_MAX) {
            snprintf(err, errlen, "a group has at most %d members", PEERS_MAX + 1);
            goto invalid;
        }
        /* Joining is fine from no group or from d's own group; not from another. */
        if (p->npeers && !in_group(d, p->vm.uuid)) {
            struct domain *q = find_uuid(c, p->peers[0]);
            snprintf(err, errlen, "%s is already in a group with %s", p->vm.name,
                     q ? q->vm.name : p->peers[0]);
            goto invalid;
        }
        members[n++] = p;
    }

    /* Old members left out lose d and the new members; new members get the new group. */
    for (int i = 0; i < d->npeers; i++) {
        struct domain *old = find_uuid(c, d->peers[i]);
        bool kept = false;
        for (int j = 0; j < n; j++)
            kept |= members[j] == old;
        if (old && !kept) {
            old->npeers = 0;
            save_domain(c, old);
            touch(c, old);
        }
    }
    for (int i = 0; i < n; i++) {
        struct domain *m = members[i];
        m->npeers = 0;
        if (n > 1)
            for (int j = 0; j < n; j++)
                if (j != i)
                    strlcpy0(m->peers[m->npeers++], members[j]->vm.uuid, 37);
        int rc = save_domain(c, m);
        if (rc) {
            snprintf(err, errlen, "cannot record the group in %s: %s", c->state_dir,
                     strerror(-rc));
            events_emit(&c->ev, d->vm.name, "write-failed", "file=peer why=\"%s\"", err);
            return -EIO;
        }
        touch(c, m);
    }
    struct strbuf names = {0};
    for (int i = 1; i < n; i++)
        sb_printf(&names, "%s%s", i > 1 ? "," : "", members[i]->vm.name);
    caller_name(who->uid, user, sizeof user);
    events_emit(&c->ev, d->vm.name, n > 1 ? "peers-set" : "peers-cleared", "peers=%s by=%s uid=%u",
                names.s ? names.s : "", user, (unsigned)who->uid);
    sb_free(&names);
    return 0;

invalid:
    ctl_reject(c, d->vm.name, "peer", who, err);
    return -EINVAL;
}

/* "a b c": the peer file's names, space-separated, for messages and status. */
static void peers_on_one_line(struct ctl *c, struct domain *d, struct strbuf *sb)
{
    ctl_format_peers(c, d, sb);
    for (char *p = sb->s; p && *p; p++)
        if (*p == '\n')
            *p = p[1] ? ' ' : 0;
}
