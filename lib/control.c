#define _GNU_SOURCE
#include "control.h"
#include "migjob.h"

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

static void waiters_run(struct ctl *c, time_t now);
static void group_member_gone(struct ctl *c, struct domain *d);

/* The domain whose command runs (or whose request waits for) d's job: the
 * group's lead in a co-migration, else d itself. */
static struct domain *job_lead(struct domain *d)
{
    return d->mig_lead ? d->mig_lead : d;
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
            snprintf(err, errlen, "unknown backend '%s' (known: xen, qemu)", backend);
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
    c->started = true;
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
    struct domain *ghost = NULL;

    for (size_t i = 0; i < c->ndoms; i++)
        if (!strcmp(c->doms[i]->vm.name, name)) {
            if (!c->doms[i]->ghost)
                return c->doms[i];
            ghost = c->doms[i];
        }
    return ghost;
}

/* Only live domains: a forwarding entry keeps the domid it had. */
static struct domain *find_domid(struct ctl *c, uint32_t domid)
{
    for (size_t i = 0; i < c->ndoms; i++)
        if (c->doms[i]->vm.domid == domid && !c->doms[i]->ghost)
            return c->doms[i];
    return NULL;
}

/* ---- persistence ------------------------------------------------------------ */

/* The admin hold, also in the hypervisor's own lock where there is one. */
static void admin_hold_sync(struct ctl *c, struct domain *d)
{
    bool on = d->locks.h[HOLD_ADMIN].active;
    if (!c->ops->admin_hold_sync || d->ghost || on == d->hyp_admin)
        return;
    int rc = c->ops->admin_hold_sync(c->be, &d->vm, on);
    if (rc)
        events_emit(&c->ev, d->vm.name, "hypervisor-lock-failed", "admin=%s error=\"%s\"",
                    on ? "on" : "off", strerror(-rc));
    else
        d->hyp_admin = on;
}

static int save_domain(struct ctl *c, struct domain *d)
{
    struct domstate st = {0};

    st.admin = d->locks.h[HOLD_ADMIN];
    st.guest_since = d->locks.h[HOLD_GUEST].active ? d->locks.h[HOLD_GUEST].since : 0;
    st.guest_expires = d->locks.h[HOLD_GUEST].active ? d->locks.h[HOLD_GUEST].expires : 0;
    memcpy(st.peers, d->peers, sizeof st.peers);
    st.npeers = d->npeers;
    int rc = state_save(c->state_dir, d->vm.uuid, &st);
    if (!rc)
        admin_hold_sync(c, d);
    return rc;
}

/* ---- guest holds ------------------------------------------------------------ */

/* How long after a domain appears its state record's guest_since still
 * applies to a guest hold that shows up late: `vmmig receive` writes the
 * record before it creates the domain, and the hold value into the guest's
 * node only once the domain's memory has arrived. */
#define SAVED_SINCE_GRACE 600

/* Re-read the guest's request and turn it into the guest hold.  A value that
 * does not parse counts as a hold: the guest asked for something, and failing
 * closed never migrates a domain that wanted to stay. */
static void guest_hold_update(struct ctl *c, struct domain *d)
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
         * from it), also across restarts and migrations; a new ttl counts
         * from now. */
        bool restored = !h->active && d->saved_guest_since &&
                        (!d->added || now - d->added <= SAVED_SINCE_GRACE);
        nh.since = h->active ? h->since : restored ? d->saved_guest_since : now;
        if (restored && nh.expires && d->saved_guest_expires)
            nh.expires = d->saved_guest_expires;
        else
            nh.expires = nh.expires ? now + nh.expires : 0;
        /* Only the first hold can be the one the record was about. */
        d->saved_guest_since = d->saved_guest_expires = 0;
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
        if (d == from || d->ghost || strcmp(d->vm.uuid, from->vm.uuid))
            continue;
        strlcpy0(d->migration, from->migration, sizeof d->migration);
        strlcpy0(d->last_refusal, from->last_refusal, sizeof d->last_refusal);
        strlcpy0(d->mig_group, from->mig_group, sizeof d->mig_group);
        d->prog = from->prog;
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
    d->added = c->started ? time(NULL) : 0;
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
        if (!strcmp(c->doms[i]->vm.uuid, vm->uuid) && job_lead(c->doms[i])->mig_pid > 0) {
            strlcpy0(d->migration, c->doms[i]->migration, sizeof d->migration);
            strlcpy0(d->last_refusal, c->doms[i]->last_refusal, sizeof d->last_refusal);
            d->prog = c->doms[i]->prog;
        }
    d->locks.h[HOLD_ADMIN] = st.admin;
    d->saved_guest_since = st.guest_since;
    d->saved_guest_expires = st.guest_expires;
    memcpy(d->peers, st.peers, sizeof d->peers);
    d->npeers = st.npeers;
    c->doms = xrealloc(c->doms, sizeof *c->doms * (c->ndoms + 1));
    c->doms[c->ndoms++] = d;
    events_emit(&c->ev, vm->name, "domain-added", "domid=%u uuid=%s", vm->domid, vm->uuid);

    int rc = c->ops->guest_hold_prepare(c->be, &d->vm);
    if (rc)
        events_emit(&c->ev, vm->name, "guest-channel-failed", "domid=%u error=\"%s\"", vm->domid,
                    strerror(-rc));
    guest_hold_update(c, d);
    /* Restarted on a domain that is already here: its node says it all. */
    if (!d->added)
        d->saved_guest_since = d->saved_guest_expires = 0;
    d->prepared = rc == 0;
    static_hold_update(c, d);
    admin_hold_sync(c, d); /* an admin hold that came with the domain */
    touch(c, d);
    return d;
}

/* ---- forwarding entries ------------------------------------------------------ */

/* A domain that went away after its job ended "done HOST" has moved there,
 * unless it is still here under its UUID or name (a move within this host). */
static bool forward_wanted(struct ctl *c, const struct domain *d)
{
    const char *name = d->mig_name[0] ? d->mig_name : d->vm.name;

    if (!d->mig_done || d->waiting || c->pol.forward_ttl <= 0 || !name_usable(name))
        return false;
    for (size_t i = 0; i < c->ndoms; i++) {
        const struct domain *o = c->doms[i];
        /* (An older entry under this name gave way when the domain took it.) */
        if (o != d && !o->ghost && o->seen &&
            (!strcmp(o->vm.uuid, d->vm.uuid) || !strcmp(o->vm.name, name)))
            return false;
    }
    return true;
}

/* Remove c->doms[i], a forwarding entry. */
static void ghost_drop(struct ctl *c, size_t i)
{
    struct domain *g = c->doms[i];

    memmove(&c->doms[i], &c->doms[i + 1], sizeof *c->doms * (c->ndoms - i - 1));
    c->ndoms--;
    if (c->name_gone)
        c->name_gone(c->name_gone_arg, g->vm.name);
    domain_free(g);
    c->gen++;
}

/* Turn d into a forwarding entry: its name, UUID and where it went, nothing
 * the backend knows about any more. */
static void ghost_make(struct ctl *c, struct domain *d, time_t now)
{
    char until[32];

    if (d->mig_name[0])
        strlcpy0(d->vm.name, d->mig_name, sizeof d->vm.name);
    d->ghost = true;
    d->ghost_until = now + c->pol.forward_ttl;
    d->vm.state = VM_UNKNOWN;
    memset(&d->locks, 0, sizeof d->locks);
    d->npeers = 0;
    d->prepared = false;
    d->guest_raw[0] = 0;
    d->dirty = false;
    d->saved_guest_since = d->saved_guest_expires = 0;
    fmt_time(d->ghost_until, until, sizeof until);
    events_emit(&c->ev, d->vm.name, "forward-added", "to=%s uuid=%s expires=%s", d->mig_host,
                d->vm.uuid, until);
    touch(c, d);
}

static void backend_notes(struct ctl *c);

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
                    guest_hold_update(c, d);
            }
            static_hold_update(c, d);
        }
        d->seen = true;
    }
    free(vms);
    /* A live domain takes over a forwarding entry's name, UUID or domid. */
    for (size_t i = 0; i < c->ndoms;) {
        struct domain *g = c->doms[i], *by = NULL;
        for (size_t k = 0; g->ghost && !by && k < c->ndoms; k++) {
            struct domain *d = c->doms[k];
            if (!d->ghost && d->seen &&
                (!strcmp(d->vm.name, g->vm.name) || !strcmp(d->vm.uuid, g->vm.uuid) ||
                 d->vm.domid == g->vm.domid))
                by = d;
        }
        if (!by) {
            i++;
            continue;
        }
        events_emit(&c->ev, g->vm.name, "forward-removed", "to=%s why=replaced domid=%u",
                    g->mig_host, by->vm.domid);
        ghost_drop(c, i);
    }
    /* Sweep domains that are gone; a running migration's child keeps its entry,
     * and one that has migrated away leaves a forwarding entry. */
    time_t now = time(NULL);
    size_t j = 0;
    for (size_t i = 0; i < c->ndoms; i++) {
        struct domain *d = c->doms[i];
        if (d->seen || d->ghost || job_lead(d)->mig_pid > 0) {
            c->doms[j++] = d;
            continue;
        }
        events_emit(&c->ev, d->vm.name, "domain-removed", "domid=%u uuid=%s", d->vm.domid,
                    d->vm.uuid);
        if (job_lead(d)->waiting) {
            events_emit(&c->ev, d->vm.name, "migrate-failed", "to=%s why=\"%s\"", d->mig_host,
                        "the domain went away while waiting");
            if (d->mig_lead)
                group_member_gone(c, d);
        }
        if (d->dirty)
            save_domain(c, d);
        if (c->name_gone)
            c->name_gone(c->name_gone_arg, d->vm.name);
        c->ops->guest_hold_forget(c->be, d->vm.domid);
        if (forward_wanted(c, d)) {
            ghost_make(c, d, now);
            c->doms[j++] = d;
            continue;
        }
        domain_free(d);
        c->gen++;
    }
    c->ndoms = j;
    backend_notes(c);
    waiters_run(c, now);
    return 0;
}

/* What the backend has to say about guests' channels, into events. */
static void backend_notes(struct ctl *c)
{
    char event[40], detail[300];
    uint32_t domid;

    while (c->ops->guest_channel_note &&
           !c->ops->guest_channel_note(c->be, &domid, event, sizeof event, detail, sizeof detail)) {
        struct domain *d = find_domid(c, domid);
        events_emit(&c->ev, d ? d->vm.name : NULL, event, "domid=%u %s", domid, detail);
    }
}

int ctl_backend_event(struct ctl *c)
{
    unsigned what = 0;
    int rc = c->ops->read_events(c->be, &what);

    if (what & BE_EV_DOMAINS)
        ctl_refresh(c);
    backend_notes(c);
    if (what & BE_EV_HOLDS)
        for (size_t i = 0; i < c->ndoms; i++)
            if (!c->doms[i]->ghost)
                guest_hold_update(c, c->doms[i]);
    waiters_run(c, time(NULL));
    return rc;
}

void ctl_tick(struct ctl *c, time_t now)
{
    for (size_t i = 0; i < c->ndoms; i++) {
        struct domain *d = c->doms[i];
        struct hold *a = &d->locks.h[HOLD_ADMIN], *g = &d->locks.h[HOLD_GUEST];

        if (d->ghost)
            continue;
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
    for (size_t i = 0; i < c->ndoms;) {
        struct domain *d = c->doms[i];
        if (!d->ghost || now < d->ghost_until) {
            i++;
            continue;
        }
        events_emit(&c->ev, d->vm.name, "forward-removed", "to=%s why=expired", d->mig_host);
        ghost_drop(c, i);
    }
    waiters_run(c, now);
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

/* A write to a forwarding entry: the domain lives elsewhere now. */
static int ghost_refuse(struct ctl *c, struct domain *d, const char *file, const struct caller *who,
                        char *err, size_t errlen)
{
    snprintf(err, errlen, "%s has migrated to %s", d->vm.name, d->mig_host);
    ctl_reject(c, d->vm.name, file, who, err);
    return -EREMOTE;
}

/* May an admin override this guest hold now (force)?  If not, err says until when. */
static bool guest_within_quota(struct ctl *c, const struct hold *g, time_t now, char *err,
                               size_t errlen)
{
    time_t at = guest_hold_overridable_at(g, &c->pol);
    char when[32];

    if (!hold_in_force(g, now) || (at && now >= at))
        return false;
    fmt_time(at, when, sizeof when);
    if (at)
        snprintf(err, errlen,
                 "guest hold (%s) is within its quota: it may be overridden after %s "
                 "(policy guest_max_hold=%ld)",
                 g->reason[0] ? g->reason : "no reason", when, c->pol.guest_max_hold);
    else
        snprintf(err, errlen, "guest hold (%s) may never be overridden (policy guest_max_hold=0)",
                 g->reason[0] ? g->reason : "no reason");
    return true;
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

    if (d->ghost)
        return ghost_refuse(c, d, "lock", who, err, errlen);
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
        waiters_run(c, now);
        return 0;
    }

    if (req.force && guest_within_quota(c, g, now, err, errlen)) {
        events_emit(&c->ev, d->vm.name, "force-refused", "by=%s uid=%u why=\"%s\"", user,
                    (unsigned)who->uid, err);
        return -EPERM;
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
    waiters_run(c, now);
    return 0;

save_failed:
    *a = saved_a;
    snprintf(err, errlen, "cannot record the hold in %s: %s", c->state_dir, strerror(-rc));
    events_emit(&c->ev, d->vm.name, "write-failed", "file=lock why=\"%s\"", err);
    return -EIO;
}

/* ---- migrate ---------------------------------------------------------------- */

static void peers_on_one_line(struct ctl *c, struct domain *d, struct strbuf *sb);
static struct domain *find_uuid(struct ctl *c, const char *uuid);
static bool in_group(const struct domain *d, const char *uuid);

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

/* A write to the migrate file: "HOST [wait[=SECONDS]|force] [algo=NAME]
 * [stream=relay|direct]" or "cancel". */
struct mig_mode {
    char host[256];
    char algo[MIG_ALGO_MAX];
    char stream[8];
    bool cancel, wait, force;
    long wait_s; /* 0: no limit */
};

static int mig_mode_parse(const char *buf, size_t len, struct mig_mode *m, char *err, size_t errlen)
{
    char text[300], *tok, *save = NULL;
    int n = 0;

    memset(m, 0, sizeof *m);
    if (memchr(buf, 0, len)) {
        snprintf(err, errlen, "request contains a NUL byte");
        return -EINVAL;
    }
    len = chomp(buf, len);
    if (len >= sizeof text) {
        snprintf(err, errlen, "request too long (%zu bytes, at most %zu)", len, sizeof text - 1);
        return -EINVAL;
    }
    if (!printable(buf, len)) {
        snprintf(err, errlen, "request contains control characters");
        return -EINVAL;
    }
    memcpy(text, buf, len);
    text[len] = 0;
    for (tok = strtok_r(text, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save), n++) {
        if (n == 0) {
            if (!strcmp(tok, "cancel")) {
                m->cancel = true;
            } else if (!strcmp(tok, "wait") || !strcmp(tok, "force") || !strncmp(tok, "wait=", 5) ||
                       !strncmp(tok, "algo=", 5) || !strncmp(tok, "stream=", 7)) {
                snprintf(err, errlen, "'%s' needs a host before it (HOST %s)", tok, tok);
                return -EINVAL;
            } else if (!host_valid(tok)) {
                snprintf(err, errlen, "'%.64s' is not a valid host name", tok);
                return -EINVAL;
            }
            strlcpy0(m->host, tok, sizeof m->host);
            continue;
        }
        if (m->cancel) {
            snprintf(err, errlen, "unexpected words after 'cancel'");
            return -EINVAL;
        }
        if (!strcmp(tok, "force")) {
            if (m->force) {
                snprintf(err, errlen, "'force' given twice");
                return -EINVAL;
            }
            m->force = true;
        } else if (!strcmp(tok, "wait") || !strncmp(tok, "wait=", 5)) {
            if (m->wait) {
                snprintf(err, errlen, "'wait' given twice");
                return -EINVAL;
            }
            m->wait = true;
            if (tok[4] == '=' && parse_long(tok + 5, 1, POLICY_MAX_SECONDS, &m->wait_s)) {
                snprintf(err, errlen, "'%.64s': wait= takes a number of seconds from 1 to %ld",
                         tok, POLICY_MAX_SECONDS);
                return -EINVAL;
            }
        } else if (!strncmp(tok, "algo=", 5)) {
            if (m->algo[0]) {
                snprintf(err, errlen, "'algo=' given twice");
                return -EINVAL;
            }
            if (!mig_algo_known(tok + 5)) {
                snprintf(err, errlen, "unknown algorithm '%.32s' (algo=precopy, algo=postcopy or "
                                      "algo=stopcopy)", tok + 5);
                return -EINVAL;
            }
            strlcpy0(m->algo, tok + 5, sizeof m->algo);
        } else if (!strncmp(tok, "stream=", 7)) {
            if (m->stream[0]) {
                snprintf(err, errlen, "'stream=' given twice");
                return -EINVAL;
            }
            if (!mig_stream_known(tok + 7)) {
                snprintf(err, errlen, "unknown stream '%.32s' (stream=relay or stream=direct)",
                         tok + 7);
                return -EINVAL;
            }
            strlcpy0(m->stream, tok + 7, sizeof m->stream);
        } else {
            snprintf(err, errlen,
                     "unexpected word '%.64s' after the host (expected wait, wait=SECONDS, force, "
                     "algo=NAME or stream=MODE)", tok);
            return -EINVAL;
        }
    }
    if (n == 0) {
        snprintf(err, errlen, "empty request (expected HOST [wait[=SECONDS]|force], or cancel)");
        return -EINVAL;
    }
    if (m->wait && m->force) {
        snprintf(err, errlen, "wait and force cannot be combined (force overrides a guest hold "
                              "past its quota now; wait waits until no hold is left)");
        return -EINVAL;
    }
    return 0;
}

static void progress_reset(struct mig_progress *p)
{
    memset(p, 0, sizeof *p);
    p->stage = p->fail_stage = -1;
    p->round = p->sent = p->dirty_pages = p->dirty_rate = -1;
    p->new_domid = p->total_ms = p->downtime_ms = p->rounds = -1;
    p->stop_ms = p->resume_ms = p->stop_skew_ms = p->resume_skew_ms = -1;
    p->stop_request_skew_ms = -1;
    p->disk_size = p->disk_sent = p->disk_compared = -1;
    p->postcopy_recovered = -1;
}

/* Event values are quoted: a quote inside becomes an apostrophe. */
static void unquote(char *s)
{
    for (; *s; s++)
        if (*s == '"')
            *s = '\'';
}

/* The job ends failed with why (also a deferred job that never started). */
static void job_fail(struct ctl *c, struct domain *d, const char *why)
{
    char w[400];

    strlcpy0(w, why, sizeof w);
    unquote(w);
    snprintf(d->migration, sizeof d->migration, "failed %s: %s", d->mig_host, w);
    events_emit(&c->ev, d->mig_name[0] ? d->mig_name : d->vm.name, "migrate-failed",
                "to=%s why=\"%s\"", d->mig_host, w);
    d->mig_end = time(NULL);
    touch(c, d);
}

/* The domains lead's job moves into ms: its group, or lead alone. */
static int job_members(struct domain *lead, struct domain *ms[GROUP_MAX])
{
    if (!lead->ngrp) {
        ms[0] = lead;
        return 1;
    }
    memcpy(ms, lead->grp, sizeof *ms * (size_t)lead->ngrp);
    return lead->ngrp;
}

/* "web1,domr-web1": the group's names joined by sep, for events and status. */
static void group_names(struct domain *lead, const char *sep, char *buf, size_t size)
{
    size_t n = 0;

    buf[0] = 0;
    for (int i = 0; i < lead->ngrp && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%s", i ? sep : "", lead->grp[i]->mig_name);
}

/* " group=web1,domr-web1" for a group job's events, "" otherwise. */
static void group_suffix(struct domain *lead, char *buf, size_t size)
{
    char names[GROUP_MAX * 65];

    buf[0] = 0;
    if (!lead->ngrp)
        return;
    group_names(lead, ",", names, sizeof names);
    snprintf(buf, size, " group=%s", names);
}

/* Every member takes on the job lead asks for: where to, under which name,
 * no progress yet, and (in a group) who runs it. */
static void job_prepare(struct ctl *c, struct domain *lead, const char *host)
{
    struct domain *ms[GROUP_MAX];
    int n = job_members(lead, ms);
    char h[256];

    strlcpy0(h, host, sizeof h); /* host may be lead->mig_host itself */
    for (int i = 0; i < n; i++) {
        struct domain *m = ms[i];
        strlcpy0(m->mig_host, h, sizeof m->mig_host);
        strlcpy0(m->mig_name, m->vm.name, sizeof m->mig_name);
        m->mig_done = false;
        progress_reset(&m->prog);
        m->mig_lead = lead->ngrp ? lead : NULL;
        if (lead->ngrp)
            lead->grp_domid[i] = m->vm.domid;
    }
    for (int i = 0; i < n; i++)
        group_names(lead, " ", ms[i]->mig_group, sizeof ms[i]->mig_group);
    progress_reset(&lead->grp_prog);
    touch(c, lead);
}

/* The job is over (or never started): the members are on their own again. */
static void group_end(struct domain *lead)
{
    for (int i = 0; i < lead->ngrp; i++)
        lead->grp[i]->mig_lead = NULL;
    lead->ngrp = 0;
    lead->waiting = false;
}

/* Run the backend's migration command for lead (and its group) to
 * lead->mig_host with the policy's transport, port and timeout: a new job
 * (recover false) or the settling of one whose agent died.  On success
 * lead's output is read afresh; on failure nothing runs (-errno). */
static int job_spawn(struct ctl *c, struct domain *lead, bool force, bool recover)
{
    struct mig_request req = {
        .host = lead->mig_host,
        .force = force,
        .recover = recover,
        .algorithm = lead->mig_algo,
        .stream = lead->mig_stream,
        .transport = c->pol.transport,
        .port = (unsigned)c->pol.port,
        .timeout_s = (unsigned)c->pol.migrate_timeout,
        .members = lead->grp_domid,
        .nmembers = (size_t)lead->ngrp,
    };
    char **argv = NULL;
    int rc = c->ops->migrate_argv(c->be, &lead->vm, &req, &argv);
    if (!rc)
        rc = c->run.start(c->run.arg, argv, &lead->mig_pid, &lead->mig_fd);
    argv_free(argv);
    if (rc) {
        lead->mig_pid = 0;
        return rc;
    }
    lead->mig_exit = -1;
    sb_reset(&lead->mig_out);
    lead->mig_line_len = 0;
    return 0;
}

/* Start the migration command now for lead and its group (if any); when it
 * cannot start, the job ends failed for every member. */
static int job_start(struct ctl *c, struct domain *lead, const char *host, bool force,
                     const char *user, uid_t uid, char *err, size_t errlen)
{
    struct domain *ms[GROUP_MAX];
    char group[GROUP_MAX * 65 + 8];
    int n, rc;

    job_prepare(c, lead, host);
    n = job_members(lead, ms);
    lead->mig_cancel_by[0] = 0;
    lead->mig_died[0] = 0;
    rc = job_spawn(c, lead, force, false);
    if (rc) {
        snprintf(err, errlen, "cannot start the migration: %s", strerror(-rc));
        for (int i = 0; i < n; i++)
            job_fail(c, ms[i], err);
        group_end(lead);
        return rc;
    }
    group_suffix(lead, group, sizeof group);
    for (int i = 0; i < n; i++) {
        struct domain *m = ms[i];
        snprintf(m->migration, sizeof m->migration, "running %s", m->mig_host);
        events_emit(&c->ev, m->vm.name, "migrate-started", "to=%s by=%s uid=%u domid=%u%s%s%s%s%s",
                    m->mig_host, user, (unsigned)uid, m->vm.domid, force ? " force=yes" : "",
                    lead->mig_algo[0] ? " algorithm=" : "", lead->mig_algo,
                    lead->mig_stream[0] ? " stream=direct" : "", group);
        touch(c, m);
    }
    return 0;
}

/* lead's job waits: has its group changed since it was asked for (a write to
 * a peer file)?  Then what was checked no longer describes what would move. */
static bool group_changed(struct domain *lead)
{
    if (lead->npeers != (lead->ngrp ? lead->ngrp - 1 : 0))
        return true;
    for (int i = 1; i < lead->ngrp; i++)
        if (!in_group(lead, lead->grp[i]->vm.uuid))
            return true;
    return false;
}

/* Which members hold the job back: for a domain alone its holds ("admin hold
 * by root (x)"), for a group "NAME is locked: HOLDS" per locked member.
 * False if none. */
static bool job_locks(struct domain **ms, int n, bool group, time_t now, struct strbuf *why)
{
    bool locked = false;

    for (int i = 0; i < n; i++) {
        struct strbuf one = {0};
        if (!lockset_locked(&ms[i]->locks, now))
            continue;
        lockset_describe(&ms[i]->locks, now, &one);
        if (group)
            sb_printf(why, "%s%s is locked: %s", locked ? "; " : "", ms[i]->vm.name, one.s);
        else
            sb_printf(why, "%s", one.s);
        sb_free(&one);
        locked = true;
    }
    return locked;
}

/* A waiting job's text: "waiting HOST: locked: HOLDS" for a domain alone,
 * "waiting HOST: NAME is locked: HOLDS" for a group. */
static void waiting_text(struct domain *lead, const char *why, char *buf, size_t size)
{
    snprintf(buf, size, "waiting %s: %s%s", lead->mig_host, lead->ngrp ? "" : "locked: ", why);
}

/* Every member's job ends failed with the same reason. */
static void job_fail_all(struct ctl *c, struct domain *lead, const char *why)
{
    struct domain *ms[GROUP_MAX];
    int n = job_members(lead, ms);

    for (int i = 0; i < n; i++)
        job_fail(c, ms[i], why);
    group_end(lead);
}

/* Deferred jobs: start those whose members have no hold left, end those that
 * waited too long.  Run on every hold change and once a second. */
static void waiters_run(struct ctl *c, time_t now)
{
    for (size_t i = 0; i < c->ndoms; i++) {
        struct domain *d = c->doms[i], *ms[GROUP_MAX];
        char text[600];
        int n;

        if (!d->waiting || d->ghost)
            continue;
        n = job_members(d, ms);
        if (group_changed(d)) {
            job_fail_all(c, d, "the peer group changed while waiting (ask again)");
            continue;
        }
        struct strbuf why = {0};
        if (job_locks(ms, n, d->ngrp > 0, now, &why)) {
            if (d->wait_until && now >= d->wait_until) {
                snprintf(text, sizeof text, "still locked after %lld s: %s",
                         (long long)(d->wait_until - d->wait_since), why.s);
                job_fail_all(c, d, text);
            } else {
                waiting_text(d, why.s, text, sizeof text);
                for (int k = 0; k < n; k++)
                    if (strcmp(text, ms[k]->migration)) {
                        strlcpy0(ms[k]->migration, text, sizeof ms[k]->migration);
                        touch(c, ms[k]);
                    }
            }
            sb_free(&why);
            continue;
        }
        d->waiting = false;
        job_start(c, d, d->mig_host, false, d->wait_by, d->wait_uid, text, sizeof text);
    }
}

/* A member of a waiting group went away: the others cannot move without it. */
static void group_member_gone(struct ctl *c, struct domain *d)
{
    struct domain *lead = d->mig_lead;
    char why[200];

    snprintf(why, sizeof why, "%s went away while waiting", d->vm.name);
    for (int i = 0; i < lead->ngrp; i++)
        if (lead->grp[i] != d)
            job_fail(c, lead->grp[i], why);
    group_end(lead);
}

/* cancel, written to any member: stops the whole job. */
static int job_cancel(struct ctl *c, struct domain *d, const struct caller *who, const char *user,
                      char *err, size_t errlen)
{
    struct domain *lead = job_lead(d);
    char group[GROUP_MAX * 65 + 8];

    group_suffix(lead, group, sizeof group);
    if (lead->waiting) {
        char why[128];
        events_emit(&c->ev, d->vm.name, "migrate-cancel", "by=%s uid=%u to=%s waiting=yes%s", user,
                    (unsigned)who->uid, d->mig_host, group);
        snprintf(why, sizeof why, "cancelled by %s while waiting", user);
        job_fail_all(c, lead, why);
        return 0;
    }
    if (lead->mig_pid <= 0) {
        snprintf(err, errlen, "no migration is running or waiting");
        ctl_reject(c, d->vm.name, "migrate", who, err);
        return -ESRCH;
    }
    c->run.stop(c->run.arg, lead->mig_pid);
    strlcpy0(lead->mig_cancel_by, user, sizeof lead->mig_cancel_by);
    events_emit(&c->ev, d->vm.name, "migrate-cancel", "by=%s uid=%u to=%s%s", user,
                (unsigned)who->uid, d->mig_host, group);
    return 0;
}

/* A refusal is remembered by every member: the migrate file, last_refusal
 * and events say why. */
static int job_refuse(struct ctl *c, struct domain **ms, int n, const char *host,
                      const struct caller *who, const char *user, const char *why, int rc,
                      const char *err)
{
    char when[32];

    fmt_time(time(NULL), when, sizeof when);
    for (int i = 0; i < n; i++) {
        struct domain *d = ms[i];
        snprintf(d->last_refusal, sizeof d->last_refusal, "%s to %s by %s: %s", when, host, user,
                 err);
        snprintf(d->migration, sizeof d->migration, "refused %s: %s", host, err);
        d->mig_done = false;
        d->mig_group[0] = 0;
        events_emit(&c->ev, d->vm.name, "migrate-refused", "to=%s by=%s uid=%u why=\"%s\"", host,
                    user, (unsigned)who->uid, why);
        touch(c, d);
    }
    return rc;
}

/* d and its peers, d first: every member must be here to move together. */
static int group_collect(struct ctl *c, struct domain *d, struct domain **ms, int *n, char *err,
                         size_t errlen)
{
    *n = 0;
    ms[(*n)++] = d;
    for (int i = 0; i < d->npeers; i++) {
        struct domain *p = find_uuid(c, d->peers[i]);
        if (!p) {
            snprintf(err, errlen,
                     "%s's peer %s is not on this host (empty its peer file to move it alone)",
                     d->vm.name, d->peers[i]);
            return -ENXIO;
        }
        ms[(*n)++] = p;
    }
    return 0;
}

/* HOST [wait|force] for d moves d's whole peer group or nothing: every
 * member is checked first (busy, holds), and one command moves them all. */
int ctl_migrate_write(struct ctl *c, struct domain *d, const char *buf, size_t len,
                      const struct caller *who, char *err, size_t errlen)
{
    struct mig_mode m;
    struct strbuf why = {0};
    struct domain *ms[GROUP_MAX];
    bool forced[GROUP_MAX] = {false}, any_forced = false;
    time_t now = time(NULL);
    char user[64];
    int n, rc;

    if (d->ghost)
        return ghost_refuse(c, d, "migrate", who, err, errlen);
    rc = mig_mode_parse(buf, len, &m, err, errlen);
    if (rc) {
        ctl_reject(c, d->vm.name, "migrate", who, err);
        return rc;
    }
    caller_name(who->uid, user, sizeof user);
    if (m.cancel)
        return job_cancel(c, d, who, user, err, errlen);
    rc = group_collect(c, d, ms, &n, err, errlen);
    if (rc) {
        rc = job_refuse(c, ms, 1, m.host, who, user, err, rc, err);
        goto out;
    }
    bool group = n > 1;
    if (group && m.algo[0]) {
        /* a group moves with vmmig comigrate, whose commit point is
         * stop-and-copy's (after every member's pre-copy) */
        snprintf(err, errlen, "algo= applies to a domain alone; %s moves with its peer group",
                 d->vm.name);
        ctl_reject(c, d->vm.name, "migrate", who, err);
        rc = -EINVAL;
        goto out;
    }
    if (!strcmp(m.stream, "direct") && !strcmp(c->ops->name, "xen")) {
        /* Xen's rounds are read off the relayed stream */
        snprintf(err, errlen, "stream=direct: this host's xen backend takes its stream through "
                              "the relay only");
        ctl_reject(c, d->vm.name, "migrate", who, err);
        rc = -EINVAL;
        goto out;
    }
    for (int i = 0; i < n; i++) {
        struct domain *lead = job_lead(ms[i]);
        if (lead->mig_pid <= 0 && !lead->waiting)
            continue;
        snprintf(err, errlen, "%s%sa migration to %s is already %s", group ? ms[i]->vm.name : "",
                 group ? ": " : "", ms[i]->mig_host,
                 lead->waiting ? "waiting (write cancel first)" : "running");
        ctl_reject(c, d->vm.name, "migrate", who, err);
        rc = -EBUSY;
        goto out;
    }

    bool locked = job_locks(ms, n, group, now, &why);
    if (locked && !m.wait) {
        if (!m.force) {
            snprintf(err, errlen, "%s%s", group ? "" : "locked: ", why.s);
            rc = job_refuse(c, ms, n, m.host, who, user, why.s, -EBUSY, err);
            goto out;
        }
        /* force needs every hold left to be a guest's past its quota. */
        for (int i = 0; i < n; i++) {
            const struct lockset *l = &ms[i]->locks;
            char qerr[400], name[80] = "";
            if (!lockset_locked(l, now))
                continue;
            if (group)
                snprintf(name, sizeof name, "%s: ", ms[i]->vm.name);
            if (hold_in_force(&l->h[HOLD_STATIC], now) || hold_in_force(&l->h[HOLD_ADMIN], now)) {
                struct strbuf one = {0};
                lockset_describe(l, now, &one);
                snprintf(err, errlen, "%s%s%s (force overrides only a guest hold past its quota)",
                         group ? ms[i]->vm.name : "", group ? " is locked: " : "locked: ", one.s);
                rc = job_refuse(c, ms, n, m.host, who, user, group ? err : one.s, -EBUSY, err);
                sb_free(&one);
                goto out;
            }
            if (guest_within_quota(c, &l->h[HOLD_GUEST], now, qerr, sizeof qerr)) {
                snprintf(err, errlen, "%s%s", name, qerr);
                rc = job_refuse(c, ms, n, m.host, who, user, err, -EPERM, err);
                goto out;
            }
            forced[i] = any_forced = true;
        }
    }

    d->ngrp = 0;
    if (group) {
        memcpy(d->grp, ms, sizeof *ms * (size_t)n);
        d->ngrp = n;
    }
    strlcpy0(d->mig_algo, m.algo, sizeof d->mig_algo);
    /* The policy's stream = direct where a direct stream can be: a QEMU
     * domain (or group), over tcp; else (and with stream=relay) the relay. */
    bool direct = m.stream[0] ? !strcmp(m.stream, "direct")
                              : c->pol.stream_direct && strcmp(c->ops->name, "xen") &&
                                    !strcmp(c->pol.transport, "tcp");
    strlcpy0(d->mig_stream, direct ? "direct" : "", sizeof d->mig_stream);
    if (m.wait && locked) {
        char text[600], limit[32] = "none";
        job_prepare(c, d, m.host);
        d->waiting = true;
        d->wait_since = now;
        d->wait_until = m.wait_s ? now + m.wait_s : 0;
        d->wait_uid = who->uid;
        strlcpy0(d->wait_by, user, sizeof d->wait_by);
        waiting_text(d, why.s, text, sizeof text);
        for (int i = 0; i < n; i++) {
            strlcpy0(ms[i]->migration, text, sizeof ms[i]->migration);
            touch(c, ms[i]);
        }
        if (m.wait_s)
            snprintf(limit, sizeof limit, "%ld", m.wait_s);
        char gsuffix[GROUP_MAX * 65 + 8];
        group_suffix(d, gsuffix, sizeof gsuffix);
        events_emit(&c->ev, d->vm.name, "migrate-waiting",
                    "to=%s by=%s uid=%u timeout=%s why=\"%s\"%s", m.host, user,
                    (unsigned)who->uid, limit, why.s, gsuffix);
        rc = 0;
        goto out;
    }
    for (int i = 0; i < n; i++) {
        const struct hold *g = &ms[i]->locks.h[HOLD_GUEST];
        char held[32];
        if (!forced[i])
            continue;
        fmt_time(g->since, held, sizeof held);
        events_emit(&c->ev, ms[i]->vm.name, "migrate-forced",
                    "to=%s by=%s uid=%u holder=guest held_since=%s reason=\"%s\"", m.host, user,
                    (unsigned)who->uid, held, g->reason);
    }
    rc = job_start(c, d, m.host, any_forced, user, who->uid, err, errlen);
out:
    sb_free(&why);
    return rc;
}

static const char *const stage_names[] = {"pre-migration",  "reservation", "iterative-pre-copy",
                                          "stop-and-copy",  "commitment",  "activation"};

/* A number the engine gave: whole and not negative, else left as it was. */
static void take_num(long long *out, const char *v)
{
    char *end;
    long long n;

    if (*v < '0' || *v > '9')
        return;
    errno = 0;
    n = strtoll(v, &end, 10);
    if (!*end && !errno)
        *out = n;
}

/* A word shown as is: letters, digits, '-', '_', '.'. */
static void take_word(char *out, size_t size, const char *v)
{
    size_t n = strlen(v);

    if (!n || n >= size)
        return;
    for (const char *p = v; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return;
    memcpy(out, v, n + 1);
}

/* One line of the engine's output.  "progress ..." and "result ..." lines
 * are key=value words (unknown keys ignored; why="..." runs to the line's
 * last quote); everything else is text for people, kept in mig_out.  In a
 * group job (d runs `vmmig comigrate`) member=DOMID says which member a line
 * is about; a result line without it is the group's. */
static void mig_parse_line(struct ctl *c, struct domain *d, char *line)
{
    struct domain *to = d; /* the member the line is about; NULL: the group */
    struct mig_progress np;
    long long stage = -1, round = -1, sent = -1, pages = -1, rate = -1, member = -1;
    long long new_domid = -1, total = -1, downtime = -1, rounds = -1, stop = -1, resume = -1,
              stop_skew = -1, resume_skew = -1, stop_request_skew = -1;
    long long disk_size = -1, disk_sent = -1, disk_compared = -1, pc_recovered = -1;
    char name[32] = "", where[32] = "", why[300], algo[16] = "";
    bool result = false, ok = false, have_why = false;
    char *p;

    if (!strncmp(line, "progress ", 9)) {
        p = line + 9;
    } else if (!strncmp(line, "result ", 7)) {
        p = line + 7;
        /* comigrate names the member first: "result member=M ok ...". */
        if (!strncmp(p, "member=", 7)) {
            char *end = p + strcspn(p, " \t"), was = *end;
            *end = 0;
            take_num(&member, p + 7);
            *end = was;
            p = end + strspn(end, " \t");
        }
        if (!strncmp(p, "ok", 2) && (!p[2] || p[2] == ' '))
            result = ok = true, p += 2;
        else if (!strncmp(p, "failed", 6) && (!p[6] || p[6] == ' '))
            result = true, p += 6;
        else
            return;
    } else {
        return;
    }
    while (*p) {
        char *key, *val, *eq;
        p += strspn(p, " \t");
        if (!*p)
            break;
        key = p;
        if (!strncmp(p, "why=\"", 5)) {
            char *q = strrchr(p + 5, '"');
            val = p + 5;
            if (q && q >= val) {
                *q = 0;
                p = q + 1;
            } else {
                p += strlen(p);
            }
            strlcpy0(why, val, sizeof why);
            unquote(why);
            have_why = true;
            continue;
        }
        p += strcspn(p, " \t");
        if (*p)
            *p++ = 0;
        eq = strchr(key, '=');
        if (!eq)
            continue;
        *eq = 0;
        val = eq + 1;
        if (!strcmp(key, "stage"))
            take_num(&stage, val);
        else if (!strcmp(key, "member"))
            take_num(&member, val);
        else if (!strcmp(key, "name"))
            take_word(name, sizeof name, val);
        else if (!strcmp(key, "sent"))
            take_num(&sent, val);
        else if (!strcmp(key, "round"))
            take_num(&round, val);
        else if (!strcmp(key, "dirty_pages"))
            take_num(&pages, val);
        else if (!strcmp(key, "dirty_rate"))
            take_num(&rate, val);
        else if (!strcmp(key, "domid"))
            take_num(&new_domid, val);
        else if (!strcmp(key, "total_ms"))
            take_num(&total, val);
        else if (!strcmp(key, "downtime_ms"))
            take_num(&downtime, val);
        else if (!strcmp(key, "rounds"))
            take_num(&rounds, val);
        else if (!strcmp(key, "stop_ms"))
            take_num(&stop, val);
        else if (!strcmp(key, "resume_ms"))
            take_num(&resume, val);
        else if (!strcmp(key, "stop_skew_ms"))
            take_num(&stop_skew, val);
        else if (!strcmp(key, "resume_skew_ms"))
            take_num(&resume_skew, val);
        else if (!strcmp(key, "stop_request_skew_ms"))
            take_num(&stop_request_skew, val);
        else if (!strcmp(key, "disk_size"))
            take_num(&disk_size, val);
        else if (!strcmp(key, "disk_sent"))
            take_num(&disk_sent, val);
        else if (!strcmp(key, "disk_compared"))
            take_num(&disk_compared, val);
        else if (!strcmp(key, "postcopy_recovered"))
            take_num(&pc_recovered, val);
        else if (!strcmp(key, "domain"))
            take_word(where, sizeof where, val);
        else if (!strcmp(key, "algorithm"))
            take_word(algo, sizeof algo, val);
    }
    if (d->ngrp) {
        to = NULL;
        for (int i = 0; i < d->ngrp && member >= 0; i++)
            if (d->grp_domid[i] == member)
                to = d->grp[i];
        if (!to && (member >= 0 || !result))
            return; /* a member that is not ours, or group progress: text */
    }
    np = to ? to->prog : d->grp_prog;
    if (stage > 99)
        stage = -1;
    if (sent >= 0)
        np.sent = sent;
    if (algo[0])
        strlcpy0(np.algorithm, algo, sizeof np.algorithm);
    /* disk_size also comes with each disk's first progress line: the
     * counts come together, once the disks are synced. */
    if (disk_sent >= 0 && disk_size >= 0) {
        np.disk_size = disk_size;
        np.disk_sent = disk_sent;
        np.disk_compared = disk_compared;
    }
    if (result) {
        np.result = true;
        np.ok = ok;
        if (!ok && stage >= 0)
            np.fail_stage = (int)stage;
        if (have_why)
            strlcpy0(np.why, why, sizeof np.why);
        if (where[0])
            strlcpy0(np.where, where, sizeof np.where);
        const long long *from[] = {&new_domid, &total, &downtime, &rounds,
                                   &stop, &resume, &stop_skew, &resume_skew, &stop_request_skew,
                                   &pc_recovered};
        long long *into[] = {&np.new_domid, &np.total_ms, &np.downtime_ms, &np.rounds,
                             &np.stop_ms, &np.resume_ms, &np.stop_skew_ms, &np.resume_skew_ms,
                             &np.stop_request_skew_ms, &np.postcopy_recovered};
        for (size_t i = 0; i < ARRAY_SIZE(from); i++)
            if (*from[i] >= 0)
                *into[i] = *from[i];
    } else {
        if (stage >= 0 && stage != np.stage) {
            np.stage = (int)stage;
            np.round = np.dirty_pages = np.dirty_rate = -1;
            strlcpy0(np.stage_name, stage < (long long)ARRAY_SIZE(stage_names) ? stage_names[stage] : "",
                     sizeof np.stage_name);
        }
        if (name[0])
            strlcpy0(np.stage_name, name, sizeof np.stage_name);
        if (round >= 0)
            np.round = round;
        if (pages >= 0)
            np.dirty_pages = pages;
        if (rate >= 0)
            np.dirty_rate = rate;
    }
    if (!to) {
        d->grp_prog = np; /* shows when the job ends */
        return;
    }
    if (!memcmp(&np, &to->prog, sizeof np))
        return;
    if (np.stage != to->prog.stage)
        events_emit(&c->ev, to->mig_name, "migrate-stage", "to=%s stage=%d name=%s", to->mig_host,
                    np.stage, np.stage_name[0] ? np.stage_name : "-");
    to->prog = np;
    touch(c, to);
    share_job(c, to);
}

/* Output as it arrives: split into lines (an overlong line is cut). */
static void mig_feed(struct ctl *c, struct domain *d, const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] != '\n') {
            if (d->mig_line_len < sizeof d->mig_line - 1)
                d->mig_line[d->mig_line_len++] = buf[i];
            continue;
        }
        while (d->mig_line_len && d->mig_line[d->mig_line_len - 1] == '\r')
            d->mig_line_len--;
        d->mig_line[d->mig_line_len] = 0;
        d->mig_line_len = 0;
        mig_parse_line(c, d, d->mig_line);
    }
}

/* The last line for people the command printed ("" if none). */
static void last_text_line(const struct strbuf *out, char *last, size_t size)
{
    size_t n = out->len;

    last[0] = 0;
    while (n) {
        while (n && (out->s[n - 1] == '\n' || out->s[n - 1] == ' ' || out->s[n - 1] == '\r'))
            n--;
        size_t b = n;
        while (b && out->s[b - 1] != '\n')
            b--;
        const char *l = out->s + b;
        if (n > b && strncmp(l, "progress ", 9) && strncmp(l, "result ", 7)) {
            snprintf(last, size, "%.*s", (int)(n - b), l);
            return;
        }
        n = b;
    }
}

/* The agent died without a result (killed): the domains may be left
 * suspended or renamed here, so run `send --recover` (`comigrate --recover`
 * for a group), which asks the destination and settles each domain so that
 * exactly one copy runs.  0 if started. */
static int recovery_start(struct ctl *c, struct domain *lead, const char *died)
{
    struct domain *ms[GROUP_MAX];
    int n = job_members(lead, ms);
    int rc = job_spawn(c, lead, false, true);

    if (rc)
        return rc;
    strlcpy0(lead->mig_died, died, sizeof lead->mig_died);
    progress_reset(&lead->grp_prog);
    for (int i = 0; i < n; i++) {
        struct domain *m = ms[i];
        progress_reset(&m->prog);
        snprintf(m->migration, sizeof m->migration, "recovering %s: %s", m->mig_host, died);
        events_emit(&c->ev, m->mig_name, "migrate-recover", "to=%s why=\"%s\" domid=%u",
                    m->mig_host, died, m->vm.domid);
        touch(c, m);
    }
    return 0;
}

/* How the job ended for d, one of the domains lead's command moved: d's own
 * result line decides; without one, the group's; without that (killed), the
 * command's exit status. */
static void job_settle(struct ctl *c, struct domain *d, struct domain *lead)
{
    const struct mig_progress *own = &d->prog;
    const struct mig_progress *p = own->result || !lead->ngrp ? own : &lead->grp_prog;
    int st = lead->mig_exit;

    if (p->result ? p->ok : WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        struct strbuf extra = {0};
        if (own->new_domid >= 0)
            sb_printf(&extra, " new_domid=%lld", own->new_domid);
        if (own->total_ms >= 0)
            sb_printf(&extra, " total_ms=%lld", own->total_ms);
        if (own->downtime_ms >= 0)
            sb_printf(&extra, " downtime_ms=%lld", own->downtime_ms);
        if (own->stop_ms >= 0)
            sb_printf(&extra, " stop_ms=%lld", own->stop_ms);
        if (own->resume_ms >= 0)
            sb_printf(&extra, " resume_ms=%lld", own->resume_ms);
        if (own->disk_sent >= 0)
            sb_printf(&extra, " disk_size=%lld disk_sent=%lld disk_compared=%lld", own->disk_size,
                      own->disk_sent, own->disk_compared);
        d->mig_done = true;
        d->mig_end = time(NULL);
        snprintf(d->migration, sizeof d->migration, "done %s", d->mig_host);
        if (own->postcopy_recovered > 0) {
            /* the stream broke after the post-copy switch and was resumed */
            snprintf(d->migration + strlen(d->migration),
                     sizeof d->migration - strlen(d->migration), " postcopy_recovered=%lld",
                     own->postcopy_recovered);
            sb_printf(&extra, " postcopy_recovered=%lld", own->postcopy_recovered);
        }
        if (lead->mig_died[0])
            sb_printf(&extra, " recovered=yes");
        events_emit(&c->ev, d->mig_name, "migrate-done", "to=%s uuid=%s domid=%u%s", d->mig_host,
                    d->vm.uuid, d->vm.domid, extra.s ? extra.s : "");
        sb_free(&extra);
        touch(c, d);
        return;
    }
    char tail[360], why[400];
    int stage = p->result && p->fail_stage >= 0 ? p->fail_stage : own->stage;
    if (lead->mig_cancel_by[0]) {
        snprintf(tail, sizeof tail, "cancelled by %s", lead->mig_cancel_by);
    } else if (lead->mig_died[0]) {
        /* The recovery's own result says where the domain runs. */
        snprintf(tail, sizeof tail, "%s; %s", lead->mig_died,
                 p->result ? (p->why[0] ? p->why : "recovered") : "recovery failed too");
        stage = -1;
    } else if (p->result) {
        snprintf(tail, sizeof tail, "%s", p->why[0] ? p->why : "no reason given");
    } else {
        char last[300];
        last_text_line(&lead->mig_out, last, sizeof last);
        if (WIFSIGNALED(st))
            snprintf(tail, sizeof tail, "killed by signal %d%s%s", WTERMSIG(st),
                     last[0] ? ": " : "", last);
        else
            snprintf(tail, sizeof tail, "exit %d%s%s", WEXITSTATUS(st), last[0] ? ": " : "", last);
    }
    if (stage >= 0)
        snprintf(why, sizeof why, "stage %d: %s", stage, tail);
    else
        snprintf(why, sizeof why, "%s", tail);
    if (!strcmp(own->where, "left-suspended-here"))
        strlcpy0(why + strlen(why), " (the domain is left suspended here)",
                 sizeof why - strlen(why));
    else if (!strcmp(own->where, "lost"))
        strlcpy0(why + strlen(why), " (the domain is LOST: post-copy had switched, its memory is "
                 "split between the hosts)", sizeof why - strlen(why));
    job_fail(c, d, why);
}

/* The group's end in one event: the skews when it moved, else why not. */
static void group_report(struct ctl *c, struct domain *lead, struct domain **ms, int n)
{
    const struct mig_progress *g = &lead->grp_prog;
    char names[GROUP_MAX * 65], extra[200] = "";
    bool moved = true;

    group_names(lead, ",", names, sizeof names);
    for (int i = 0; i < n; i++)
        moved &= ms[i]->mig_done;
    if (moved) {
        size_t k = 0;
        if (g->stop_skew_ms >= 0)
            k += (size_t)snprintf(extra + k, sizeof extra - k, " stop_skew_ms=%lld", g->stop_skew_ms);
        if (g->stop_request_skew_ms >= 0 && k < sizeof extra)
            k += (size_t)snprintf(extra + k, sizeof extra - k, " stop_request_skew_ms=%lld",
                                  g->stop_request_skew_ms);
        if (g->resume_skew_ms >= 0 && k < sizeof extra)
            k += (size_t)snprintf(extra + k, sizeof extra - k, " resume_skew_ms=%lld",
                                  g->resume_skew_ms);
        if (g->total_ms >= 0 && k < sizeof extra)
            snprintf(extra + k, sizeof extra - k, " total_ms=%lld", g->total_ms);
        events_emit(&c->ev, lead->mig_name, "comigrate-done", "to=%s group=%s%s", lead->mig_host,
                    names, extra);
        return;
    }
    /* The group's own reason, else the first member's that failed. */
    const char *why = g->result && g->why[0] ? g->why : NULL;
    for (int i = 0; i < n && !why; i++)
        if (!ms[i]->mig_done) {
            why = ms[i]->migration;
            if (!strncmp(why, "failed ", 7) && strstr(why, ": "))
                why = strstr(why, ": ") + 2;
        }
    events_emit(&c->ev, lead->mig_name, "comigrate-failed", "to=%s group=%s why=\"%s\"",
                lead->mig_host, names, why ? why : "no reason given");
}

static void migration_finish(struct ctl *c, struct domain *d)
{
    struct domain *ms[GROUP_MAX];
    int n = job_members(d, ms);
    int st = d->mig_exit;
    bool reported = true;

    if (d->mig_fd >= 0 || st < 0)
        return; /* wait for both the end of output and the exit status */
    for (int i = 0; i < n; i++)
        reported &= ms[i]->prog.result;
    /* A cancelled agent reports by itself (it stops on SIGTERM); one that
     * died otherwise may have left domains suspended or renamed. */
    if (!reported && !d->mig_died[0] && !d->mig_cancel_by[0] && WIFSIGNALED(st)) {
        char died[160], last[100], stage[16] = "";
        last_text_line(&d->mig_out, last, sizeof last);
        if (d->prog.stage >= 0)
            snprintf(stage, sizeof stage, "stage %d: ", d->prog.stage);
        snprintf(died, sizeof died, "%sthe agent was killed by signal %d%s%s", stage,
                 WTERMSIG(st), last[0] ? ": " : "", last);
        d->mig_pid = 0;
        if (!recovery_start(c, d, died))
            return;
    }
    for (int i = 0; i < n; i++) {
        /* The group's skews belong to every member's outcome. */
        ms[i]->prog.stop_skew_ms = d->grp_prog.stop_skew_ms;
        ms[i]->prog.resume_skew_ms = d->grp_prog.resume_skew_ms;
        ms[i]->prog.stop_request_skew_ms = d->grp_prog.stop_request_skew_ms;
        job_settle(c, ms[i], d);
    }
    if (d->ngrp)
        group_report(c, d, ms, n);
    d->mig_pid = 0;
    d->mig_exit = -1;
    d->mig_died[0] = 0;
    group_end(d);
    for (int i = 0; i < n; i++)
        share_job(c, ms[i]);
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
            mig_feed(c, d, buf, (size_t)r);
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        break;
    }
    if (d->mig_line_len)
        mig_feed(c, d, "\n", 1); /* a last line without its newline */
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
    sb_printf(sb, "%d\n", !d->ghost && lockset_locked(&d->locks, time(NULL)) ? 1 : 0);
}

static bool job_running(const struct domain *d)
{
    return !strncmp(d->migration, "running ", 8);
}

void ctl_format_migration(struct ctl *c, struct domain *d, struct strbuf *sb)
{
    const struct mig_progress *p = &d->prog;

    (void)c;
    if (d->ghost) {
        sb_printf(sb, "migrated %s", d->mig_host);
        if (p->postcopy_recovered > 0)
            sb_printf(sb, " postcopy_recovered=%lld", p->postcopy_recovered);
        sb_printf(sb, "\n");
        return;
    }
    sb_printf(sb, "%s", d->migration);
    if (job_running(d)) {
        if (p->stage >= 0)
            sb_printf(sb, " stage=%d%s%s", p->stage, p->stage_name[0] ? " " : "", p->stage_name);
        if (p->round >= 0)
            sb_printf(sb, " round=%lld", p->round);
        if (p->sent >= 0)
            sb_printf(sb, " sent=%lld", p->sent);
        if (p->dirty_rate >= 0)
            sb_printf(sb, " dirty_rate=%lld", p->dirty_rate);
    }
    if (job_running(d) || !strncmp(d->migration, "waiting ", 8)) {
        if (p->algorithm[0])
            sb_printf(sb, " algorithm=%s", p->algorithm);
        else if (d->mig_algo[0])
            sb_printf(sb, " algorithm=%s", d->mig_algo);
    }
    sb_printf(sb, "\n");
}

/* Mirrored disks, once synced: their size, the bytes copied, and the
 * bytes compared by hash with a copy the destination already had. */
static void status_disk_bytes(struct strbuf *sb, const struct mig_progress *p)
{
    if (p->disk_sent < 0)
        return;
    sb_printf(sb, "disk_size: %lld\n", p->disk_size);
    sb_printf(sb, "disk_bytes_sent: %lld\n", p->disk_sent);
    sb_printf(sb, "disk_bytes_compared: %lld\n", p->disk_compared);
}

/* The lines after "migration:" in status: the job's progress or outcome. */
static void format_job(const struct domain *d, struct strbuf *sb)
{
    const struct mig_progress *p = &d->prog;
    const struct domain *lead = d->mig_lead ? d->mig_lead : d;

    if (lead->waiting) {
        char until[32];
        fmt_time(lead->wait_until, until, sizeof until);
        sb_printf(sb, "wait_until: %s\n", until);
    } else if (job_running(d)) {
        if (p->stage >= 0)
            sb_printf(sb, "stage: %d%s%s\n", p->stage, p->stage_name[0] ? " " : "",
                      p->stage_name);
        if (p->round >= 0)
            sb_printf(sb, "round: %lld\n", p->round);
        if (p->sent >= 0)
            sb_printf(sb, "bytes_sent: %lld\n", p->sent);
        if (p->dirty_rate >= 0)
            sb_printf(sb, "dirty_rate: %lld pages/s\n", p->dirty_rate);
        status_disk_bytes(sb, p);
    } else if (!strncmp(d->migration, "done ", 5)) {
        status_disk_bytes(sb, p);
        if (p->sent >= 0)
            sb_printf(sb, "bytes_sent: %lld\n", p->sent);
        if (p->downtime_ms >= 0)
            sb_printf(sb, "downtime_ms: %lld\n", p->downtime_ms);
        if (p->total_ms >= 0)
            sb_printf(sb, "total_ms: %lld\n", p->total_ms);
        if (p->stop_ms >= 0)
            sb_printf(sb, "stop_ms: %lld\n", p->stop_ms);
        if (p->resume_ms >= 0)
            sb_printf(sb, "resume_ms: %lld\n", p->resume_ms);
    }
    if (p->algorithm[0])
        sb_printf(sb, "algorithm: %s\n", p->algorithm);
    else if (d->mig_algo[0] && strcmp(d->migration, "idle"))
        sb_printf(sb, "algorithm: %s (asked for)\n", d->mig_algo);
    if (p->postcopy_recovered > 0)
        sb_printf(sb, "postcopy_recovered: %lld (the stream broke after the post-copy switch and "
                      "was resumed)\n", p->postcopy_recovered);
    if (!strcmp(p->where, "lost"))
        sb_printf(sb, "domain: lost (post-copy had switched when it failed: the guest's memory is "
                      "split between the hosts; neither copy can run without the other)\n");
    /* A co-migration's members, and how close together they stopped and resumed. */
    if (d->mig_group[0]) {
        sb_printf(sb, "group: %s\n", d->mig_group);
        if (p->stop_skew_ms >= 0)
            sb_printf(sb, "group_stop_skew_ms: %lld\n", p->stop_skew_ms);
        if (p->stop_request_skew_ms >= 0)
            sb_printf(sb, "group_stop_request_skew_ms: %lld\n", p->stop_request_skew_ms);
        if (p->resume_skew_ms >= 0)
            sb_printf(sb, "group_resume_skew_ms: %lld\n", p->resume_skew_ms);
    }
}

void ctl_format_status(struct ctl *c, struct domain *d, struct strbuf *sb)
{
    time_t now = time(NULL);

    if (d->ghost) {
        char when[32];
        fmt_time(d->mig_end, when, sizeof when);
        sb_printf(sb, "name: %s\nuuid: %s\nstate: migrated\nmigration: migrated to %s at %s\n",
                  d->vm.name, d->vm.uuid, d->mig_host, when);
        format_job(d, sb); /* what the move took */
        return;
    }
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
    format_job(d, sb);
    if (d->last_refusal[0])
        sb_printf(sb, "last_refusal: %s\n", d->last_refusal);
}

/* ---- peer groups ------------------------------------------------------------ */

static struct domain *find_uuid(struct ctl *c, const char *uuid)
{
    for (size_t i = 0; i < c->ndoms; i++)
        if (!strcmp(c->doms[i]->vm.uuid, uuid) && !c->doms[i]->ghost)
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

    if (d->ghost)
        return ghost_refuse(c, d, "peer", who, err, errlen);
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
        if (p->ghost) {
            snprintf(err, errlen, "'%.64s' has migrated to %s", tok, p->mig_host);
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
