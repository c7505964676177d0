/* The control core against an in-memory backend: every operation behind the
 * control files, their failure paths, expiry, persistence and peer groups. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control.h"
#include "tap.h"

/* ---- the in-memory backend -------------------------------------------------- */

#define NDOM 4
static struct vm_info mock_vms[NDOM];
static char mock_node[NDOM][LOCK_REQUEST_MAX + 8];
static bool mock_static[NDOM];
static size_t mock_n;
static unsigned mock_pending;
static const char *mock_cmd = "exit 0";

struct backend { int dummy; };
static struct backend mock_be;

static int m_open(struct backend **out, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    *out = &mock_be;
    return 0;
}
static void m_close(struct backend *b) { (void)b; }
static int m_list(struct backend *b, struct vm_info **out, size_t *n)
{
    (void)b;
    *out = xmalloc(sizeof mock_vms);
    memcpy(*out, mock_vms, sizeof mock_vms);
    *n = mock_n;
    return 0;
}
static int m_event_fd(struct backend *b) { (void)b; return -1; }
static int m_read_events(struct backend *b, unsigned *what)
{
    (void)b;
    *what = mock_pending;
    mock_pending = 0;
    return 0;
}
static int idx(const struct vm_info *vm)
{
    for (size_t i = 0; i < mock_n; i++)
        if (mock_vms[i].domid == vm->domid)
            return (int)i;
    return -1;
}
static int m_prepare(struct backend *b, const struct vm_info *vm)
{
    (void)b;
    int i = idx(vm);
    if (!mock_node[i][0])
        strcpy(mock_node[i], "0");
    return 0;
}
static void m_forget(struct backend *b, uint32_t domid) { (void)b, (void)domid; }
static int m_get(struct backend *b, const struct vm_info *vm, char *buf, size_t size)
{
    (void)b;
    int i = idx(vm);
    if (strlen(mock_node[i]) >= size)
        return -E2BIG;
    strcpy(buf, mock_node[i]);
    return 0;
}
static int m_set(struct backend *b, const struct vm_info *vm, const char *v)
{
    (void)b;
    snprintf(mock_node[idx(vm)], sizeof mock_node[0], "%s", v);
    return 0;
}
static int m_static(struct backend *b, const struct vm_info *vm, struct hold *out)
{
    (void)b;
    memset(out, 0, sizeof *out);
    if (mock_static[idx(vm)]) {
        out->active = true;
        strcpy(out->by, "/etc/xen/test.cfg");
        strcpy(out->reason, "migration=\"no\" in the domain's configuration");
    }
    return 0;
}
static int m_argv(struct backend *b, const struct vm_info *vm, const struct mig_request *req,
                  char ***argv)
{
    (void)b, (void)vm, (void)req;
    char **a = xzalloc(4 * sizeof *a);
    a[0] = xstrdup("sh");
    a[1] = xstrdup("-c");
    a[2] = xstrdup(mock_cmd);
    *argv = a;
    return 0;
}
static const struct backend_ops mock_ops = {
    .name = "mock", .open = m_open, .close = m_close, .list = m_list, .event_fd = m_event_fd,
    .read_events = m_read_events, .guest_hold_prepare = m_prepare,
    .guest_hold_forget = m_forget, .guest_hold_get = m_get, .guest_hold_set = m_set,
    .static_hold = m_static, .migrate_argv = m_argv,
};

/* A runner that forks directly (vmmigfs uses its privileged helper instead). */
static int direct_start(void *arg, char *const argv[], pid_t *pid, int *out_fd)
{
    int p[2];
    (void)arg;
    if (pipe(p) < 0)
        return -errno;
    *pid = fork();
    if (*pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    *out_fd = p[0];
    return 0;
}
static int direct_stop(void *arg, pid_t pid)
{
    (void)arg;
    return kill(pid, SIGTERM) ? -errno : 0;
}

static void add_vm(uint32_t domid, const char *name, const char *uuid)
{
    struct vm_info *v = &mock_vms[mock_n++];
    memset(v, 0, sizeof *v);
    v->domid = domid;
    strcpy(v->name, name);
    strcpy(v->uuid, uuid);
    v->mem_kib = 131072;
    v->vcpus = 1;
}

static bool events_have(struct ctl *c, const char *needle)
{
    struct strbuf sb = {0};
    events_format(&c->ev, &sb);
    bool r = sb.s && strstr(sb.s, needle);
    sb_free(&sb);
    return r;
}

static char *status_of(struct ctl *c, struct domain *d)
{
    static struct strbuf sb;
    sb_reset(&sb);
    ctl_format_status(c, d, &sb);
    return sb.s;
}

static int w(struct ctl *c, struct domain *d, const char *s, char *err)
{
    struct caller me = {.uid = 0, .gid = 0, .pid = getpid()};
    return ctl_lock_write(c, d, s, strlen(s), &me, err, 300);
}

static int wm(struct ctl *c, struct domain *d, const char *s, char *err)
{
    struct caller me = {.uid = 0, .gid = 0, .pid = getpid()};
    return ctl_migrate_write(c, d, s, strlen(s), &me, err, 300);
}

static int wp(struct ctl *c, struct domain *d, const char *s, char *err)
{
    struct caller me = {.uid = 0, .gid = 0, .pid = getpid()};
    return ctl_peer_write(c, d, s, strlen(s), &me, err, 300);
}

/* Run the migration command to its end, as vmmigfs's loop would. */
static void finish_migration(struct ctl *c, struct domain *d)
{
    pid_t pid = d->mig_pid;
    int st;
    fcntl(d->mig_fd, F_SETFL, 0);
    while (d->mig_fd >= 0)
        ctl_migration_io(c, d);
    waitpid(pid, &st, 0);
    ctl_migration_exited(c, pid, st);
}

int main(void)
{
    char dir[] = "/tmp/vmmig-ctl-XXXXXX", policy[128], err[300];
    struct ctl c, c2;
    const char *u1 = "00000000-0000-0000-0000-000000000001";
    const char *u2 = "00000000-0000-0000-0000-000000000002";
    const char *u3 = "00000000-0000-0000-0000-000000000003";

    ok(mkdtemp(dir) != NULL, "state dir");
    snprintf(policy, sizeof policy, "%s/policy", dir);
    add_vm(1, "web1", u1);
    add_vm(2, "domr-web1", u2);
    add_vm(3, "db", u3);

    is_int(ctl_open_ops(&c, &mock_ops, dir, policy, err, sizeof err), 0, "open: %s", err);
    c.run = (struct runner){.start = direct_start, .stop = direct_stop};
    is_int(c.ndoms, 3, "three domains");
    struct domain *web = ctl_find(&c, "web1"), *domr = ctl_find(&c, "domr-web1"),
                  *db = ctl_find(&c, "db");
    ok(web && domr && db, "found by name");
    ok(!ctl_find(&c, "nosuch"), "unknown name not found");
    is_str(mock_node[0], "0", "guest hold node prepared with 0");
    ok(ctl_open_ops(&c2, &mock_ops, dir, policy, err, sizeof err) == -EWOULDBLOCK &&
           strstr(err, "in use"),
       "a second controller on the same state is refused: %s", err);

    /* Admin holds. */
    is_int(w(&c, web, "1 reason=backup ttl=600\n", err), 0, "admin lock");
    ok(strstr(status_of(&c, web), "locked: 1\nhold: admin by=root(uid 0)"), "status: admin hold");
    ok(events_have(&c, "web1 hold-set holder=admin by=root"), "event hold-set");
    uint64_t gen = web->gen;
    is_int(w(&c, web, "1 ttl=-5", err), -EINVAL, "bad ttl refused");
    ok(strstr(status_of(&c, web), "reason=backup") && web->gen == gen, "bad write changed nothing");
    ok(events_have(&c, "web1 write-rejected file=lock"), "bad write explained in events");

    /* Refused migration. */
    is_int(wm(&c, web, "localhost\n", err), -EBUSY, "locked domain: EBUSY");
    ok(strstr(err, "admin hold by root (backup)"), "error names the hold: %s", err);
    ok(strstr(status_of(&c, web), "last_refusal: ") && strstr(status_of(&c, web), "to localhost"),
       "status: last_refusal");
    ok(events_have(&c, "web1 migrate-refused to=localhost"), "event migrate-refused");
    is_int(wm(&c, web, "", err), -EINVAL, "empty migrate request");
    is_int(wm(&c, web, "host two\n", err), -EINVAL, "two words");
    is_int(wm(&c, web, "-oProxyCommand=x\n", err), -EINVAL, "option-like host refused");
    is_int(wm(&c, web, "cancel\n", err), -ESRCH, "cancel with nothing running");

    /* Expiry of an admin hold. */
    ctl_tick(&c, time(NULL) + 601);
    ok(!lockset_locked(&web->locks, time(NULL)), "admin hold expired after its ttl");
    ok(events_have(&c, "web1 hold-expired holder=admin"), "event hold-expired");

    /* Guest holds. */
    strcpy(mock_node[0], "1 reason=db checkpoint ttl=300");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    ok(strstr(status_of(&c, web), "hold: guest since=") &&
           strstr(status_of(&c, web), "reason=db checkpoint"),
       "guest hold from the node");
    strcpy(mock_node[0], "1 ttl=banana");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    ok(strstr(status_of(&c, web), "reason=invalid request from guest"),
       "an invalid guest request counts as a hold");
    ok(events_have(&c, "web1 guest-request-invalid"), "and is reported");
    memset(mock_node[0], 'x', sizeof mock_node[0] - 1);
    mock_node[0][0] = '1';
    mock_node[0][sizeof mock_node[0] - 1] = 0;
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    ok(strstr(status_of(&c, web), "longer than"), "an overlong guest request counts as a hold");
    strcpy(mock_node[0], "1 reason=job");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);

    /* Force: refused within the quota, and then nothing changes. */
    is_int(w(&c, web, "1 reason=maint", err), 0, "admin hold again");
    is_int(w(&c, web, "0 force", err), -EPERM, "force within the guest quota: EPERM");
    ok(strstr(err, "quota"), "says why: %s", err);
    ok(web->locks.h[HOLD_ADMIN].active, "the admin hold is still there (nothing half-done)");
    ok(events_have(&c, "web1 force-refused"), "event force-refused");
    web->locks.h[HOLD_GUEST].since -= 3601;
    is_int(w(&c, web, "0 force", err), 0, "force after the quota");
    ok(!lockset_locked(&web->locks, time(NULL)), "unlocked");
    is_str(mock_node[0], "0", "the guest's node was reset");
    ok(events_have(&c, "web1 hold-overridden holder=guest by=root"), "override audited");

    /* A guest ttl above max_ttl is clamped, not an eternal hold. */
    strcpy(mock_node[0], "1 ttl=999999");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    ok(web->locks.h[HOLD_GUEST].expires && web->locks.h[HOLD_GUEST].expires <= time(NULL) + 86400,
       "guest ttl clamped to max_ttl");
    ok(events_have(&c, "web1 guest-ttl-clamped asked=999999 max_ttl=86400"), "clamp reported");
    /* Asking again with a ttl extends from now; the quota clock keeps running. */
    time_t since = web->locks.h[HOLD_GUEST].since;
    web->locks.h[HOLD_GUEST].since -= 100;
    since -= 100;
    strcpy(mock_node[0], "1 ttl=50");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    ok(web->locks.h[HOLD_GUEST].since == since, "since kept on a new request");
    ok(web->locks.h[HOLD_GUEST].expires >= time(NULL) + 49, "ttl counts from the new request");
    strcpy(mock_node[0], "0");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);

    /* Guest ttl expiry resets the node. */
    strcpy(mock_node[0], "1 ttl=5");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    ok(lockset_locked(&web->locks, time(NULL)), "guest hold with ttl");
    ctl_tick(&c, time(NULL) + 6);
    ok(!lockset_locked(&web->locks, time(NULL) + 6), "expired");
    is_str(mock_node[0], "0", "expiry resets the node");

    /* Static holds: not removable, not forced. */
    mock_static[2] = true;
    ctl_refresh(&c);
    ok(strstr(status_of(&c, db), "hold: static source=/etc/xen/test.cfg"), "static hold");
    is_int(w(&c, db, "0 force", err), 0, "force with only a static hold");
    ok(lockset_locked(&db->locks, time(NULL)), "static hold survives force");
    is_int(wm(&c, db, "localhost", err), -EBUSY, "statically locked: EBUSY");
    mock_static[2] = false;
    ctl_refresh(&c);
    ok(!lockset_locked(&db->locks, time(NULL)), "static hold gone with the config");

    /* Peer groups. */
    is_int(wp(&c, web, "domr-web1\n", err), 0, "web1 peers with domr-web1");
    struct strbuf sb = {0};
    ctl_format_peers(&c, domr, &sb);
    is_str(sb.s, "web1\n", "symmetric: domr-web1 lists web1");
    sb_free(&sb);
    is_int(wp(&c, web, "nosuch", err), -EINVAL, "unknown peer: %s", err);
    is_int(wp(&c, web, "web1", err), -EINVAL, "self as peer: %s", err);
    is_int(wp(&c, web, "db db", err), -EINVAL, "named twice: %s", err);
    is_int(wp(&c, db, "domr-web1", err), -EINVAL, "member of another group: %s", err);
    ok(strstr(err, "already in a group"), "says so");
    is_int(web->npeers, 1, "group unchanged after refusals");
    is_int(wm(&c, web, "localhost", err), -EOPNOTSUPP, "grouped domain is not migrated alone");
    ok(strstr(err, "domr-web1"), "names the peer: %s", err);
    is_int(wp(&c, web, "domr-web1 db", err), 0, "grow the group to three");
    is_int(db->npeers, 2, "db has two peers");
    is_int(wp(&c, web, "db", err), 0, "rewrite: web1 + db");
    is_int(domr->npeers, 0, "domr-web1 left the group");
    is_int(wp(&c, db, "\n", err), 0, "empty write leaves the group");
    ok(web->npeers == 0 && db->npeers == 0, "group dissolved");
    is_int(wp(&c, web, "domr-web1", err), 0, "group again for persistence");

    /* Migration through the runner. */
    struct domain *solo = db;
    is_int(wm(&c, solo, "localhost\n", err), 0, "migration starts: %s", err);
    ok(strstr(status_of(&c, solo), "migration: running localhost"), "running");
    is_int(wm(&c, solo, "localhost\n", err), -EBUSY, "second migration: EBUSY");
    finish_migration(&c, solo);
    ok(strstr(status_of(&c, solo), "migration: done localhost"), "done");
    ok(events_have(&c, "db migrate-done to=localhost"), "event migrate-done");
    /* Within one host the incoming copy (same UUID, new domid) shows the same job. */
    mock_cmd = "exit 0";
    is_int(wm(&c, solo, "localhost\n", err), 0, "migration within the host starts");
    add_vm(9, "db--incoming", u3);
    ctl_refresh(&c);
    struct domain *incoming = ctl_find(&c, "db--incoming");
    ok(incoming && !strcmp(incoming->migration, "running localhost"),
       "the incoming copy shows the running job");
    /* xl renames the source before it finishes. */
    strcpy(mock_vms[2].name, "db--migratedaway");
    ctl_refresh(&c);
    finish_migration(&c, solo);
    ok(events_have(&c, "db migrate-done to=localhost"), "events name the job by its starting name");
    strcpy(mock_vms[2].name, "db");
    ok(incoming && !strcmp(incoming->migration, "done localhost"),
       "and its end: %s", incoming ? incoming->migration : "(none)");
    mock_n--;
    ctl_refresh(&c);
    solo = db = ctl_find(&c, "db");
    ok(solo != NULL, "db still there");

    mock_cmd = "echo first; echo 'xl: cannot connect'; exit 3";
    is_int(wm(&c, solo, "localhost\n", err), 0, "failing migration starts");
    finish_migration(&c, solo);
    ok(strstr(status_of(&c, solo), "failed localhost: exit 3: xl: cannot connect"),
       "failure shows the command's last line: %s", solo->migration);
    ok(events_have(&c, "db migrate-failed"), "event migrate-failed");
    mock_cmd = "sleep 30";
    is_int(wm(&c, solo, "localhost\n", err), 0, "slow migration starts");
    is_int(wm(&c, solo, "cancel\n", err), 0, "cancel");
    finish_migration(&c, solo);
    ok(strstr(solo->migration, "killed by signal 15"), "cancelled: %s", solo->migration);

    /* Policy writes. */
    struct caller me = {.pid = getpid()};
    is_int(ctl_policy_write(&c, "guest_max_hold=60\n", 18, &me, err, sizeof err), 0, "policy write");
    is_int(c.pol.guest_max_hold, 60, "applied");
    is_int(ctl_policy_write(&c, "bogus=1\n", 8, &me, err, sizeof err), -EINVAL, "bad policy write");
    is_int(c.pol.guest_max_hold, 60, "unchanged");
    ok(access(policy, F_OK) == 0, "policy file written");

    /* Persistence across a restart. */
    is_int(w(&c, web, "1 reason=persist", err), 0, "admin hold before restart");
    ctl_close(&c);
    is_int(ctl_open_ops(&c, &mock_ops, dir, policy, err, sizeof err), 0, "reopen");
    web = ctl_find(&c, "web1");
    ok(web && strstr(status_of(&c, web), "reason=persist"), "admin hold survived");
    ok(web && web->npeers == 1, "peer group survived");
    is_int(c.pol.guest_max_hold, 60, "policy survived");
    ctl_close(&c);

    /* A damaged record fails closed. */
    char path[256];
    snprintf(path, sizeof path, "%s/domains/%s", dir, u3);
    FILE *f = fopen(path, "w");
    fputs("admin=banana\n", f);
    fclose(f);
    is_int(ctl_open_ops(&c, &mock_ops, dir, policy, err, sizeof err), 0, "reopen with damage");
    db = ctl_find(&c, "db");
    ok(db && lockset_locked(&db->locks, time(NULL)), "damaged record counts as a hold");
    ok(events_have(&c, "db state-invalid"), "and is reported");
    ctl_close(&c);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ok(system(cmd) == 0, "cleanup");
    return done_testing();
}
