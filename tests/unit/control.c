/* The control core against an in-memory backend: every operation behind the
 * control files, their failure paths, expiry, persistence and peer groups;
 * migration jobs (modes, the engine's progress and result lines, failure
 * reasons) and forwarding entries. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control.h"
#include "tap.h"

/* ---- the in-memory backend -------------------------------------------------- */

#define NDOM 16
static struct vm_info mock_vms[NDOM];
static char mock_node[NDOM][LOCK_REQUEST_MAX + 8];
static bool mock_static[NDOM];
static size_t mock_n;
static unsigned mock_pending;
static const char *mock_cmd = "exit 0";
/* what `send --recover` does, when the core runs it after a killed agent */
static const char *mock_recover_cmd = "echo 'result failed why=\"mock recovery\"'; exit 1";
static int mock_stray;    /* backend calls for a domain not in the list (e.g. a forwarding entry) */
static struct {
    int calls;
    char host[256];
    bool force, recover;
    char transport[200];
    char algorithm[32];
    char stream[16];
    unsigned port, timeout_s;
    uint32_t members[GROUP_MAX];
    size_t nmembers;
} mock_req;               /* the last mig_request */

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
    if (i < 0)
        return mock_stray++, -ENOENT;
    if (!mock_node[i][0])
        strcpy(mock_node[i], "0");
    return 0;
}
static void m_forget(struct backend *b, uint32_t domid) { (void)b, (void)domid; }
static int m_get(struct backend *b, const struct vm_info *vm, char *buf, size_t size)
{
    (void)b;
    int i = idx(vm);
    if (i < 0)
        return mock_stray++, -ENOENT;
    if (strlen(mock_node[i]) >= size)
        return -E2BIG;
    strcpy(buf, mock_node[i]);
    return 0;
}
static int m_set(struct backend *b, const struct vm_info *vm, const char *v)
{
    (void)b;
    if (idx(vm) < 0)
        return mock_stray++, -ENOENT;
    snprintf(mock_node[idx(vm)], sizeof mock_node[0], "%s", v);
    return 0;
}
static int m_static(struct backend *b, const struct vm_info *vm, struct hold *out)
{
    (void)b;
    memset(out, 0, sizeof *out);
    if (idx(vm) < 0)
        return mock_stray++, -ENOENT;
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
    (void)b, (void)vm;
    mock_req.calls++;
    snprintf(mock_req.host, sizeof mock_req.host, "%s", req->host);
    mock_req.force = req->force;
    snprintf(mock_req.algorithm, sizeof mock_req.algorithm, "%s",
             req->algorithm ? req->algorithm : "");
    snprintf(mock_req.transport, sizeof mock_req.transport, "%s", req->transport);
    snprintf(mock_req.stream, sizeof mock_req.stream, "%s", req->stream ? req->stream : "");
    mock_req.port = req->port;
    mock_req.timeout_s = req->timeout_s;
    mock_req.recover = req->recover;
    mock_req.nmembers = req->nmembers;
    for (size_t i = 0; i < req->nmembers && i < GROUP_MAX; i++)
        mock_req.members[i] = req->members[i];
    char **a = xzalloc(4 * sizeof *a);
    a[0] = xstrdup("sh");
    a[1] = xstrdup("-c");
    a[2] = xstrdup(req->recover ? mock_recover_cmd : mock_cmd);
    *argv = a;
    return 0;
}
/* The hypervisor's own lock (hyp-patches): the last admin state mirrored. */
static int mock_hyp_admin = -1, mock_hyp_calls;
static int m_admin_sync(struct backend *b, const struct vm_info *vm, bool on)
{
    (void)b, (void)vm;
    mock_hyp_calls++;
    mock_hyp_admin = on;
    return 0;
}
static const struct backend_ops mock_ops = {
    .name = "mock", .open = m_open, .close = m_close, .list = m_list, .event_fd = m_event_fd,
    .read_events = m_read_events, .guest_hold_prepare = m_prepare,
    .guest_hold_forget = m_forget, .guest_hold_get = m_get, .guest_hold_set = m_set,
    .static_hold = m_static, .migrate_argv = m_argv, .admin_hold_sync = m_admin_sync,
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
        setpgid(0, 0); /* as the helper's setsid: stop reaches the whole command */
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        execvp(argv[0], argv);
        _exit(127);
    }
    setpgid(*pid, *pid);
    close(p[1]);
    *out_fd = p[0];
    return 0;
}
static int direct_stop(void *arg, pid_t pid)
{
    (void)arg;
    return kill(-pid, SIGTERM) ? -errno : 0;
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
/* Also the recovery job the core may start when the first one died. */
static void finish_migration(struct ctl *c, struct domain *d)
{
    while (d->mig_pid > 0) {
        pid_t pid = d->mig_pid;
        int st;
        fcntl(d->mig_fd, F_SETFL, 0);
        while (d->mig_fd >= 0)
            ctl_migration_io(c, d);
        waitpid(pid, &st, 0);
        ctl_migration_exited(c, pid, st);
        if (d->mig_pid == pid)
            break;
    }
}

/* ---- migration jobs --------------------------------------------------------- */

static void mock_reset(void)
{
    mock_n = 0;
    memset(mock_node, 0, sizeof mock_node);
    memset(mock_static, 0, sizeof mock_static);
    mock_pending = 0;
    mock_stray = 0;
    mock_cmd = "exit 0";
}

static void del_vm(uint32_t domid)
{
    for (size_t i = 0; i < mock_n; i++)
        if (mock_vms[i].domid == domid) {
            memmove(&mock_vms[i], &mock_vms[i + 1], sizeof mock_vms[0] * (mock_n - i - 1));
            memmove(&mock_node[i], &mock_node[i + 1], sizeof mock_node[0] * (mock_n - i - 1));
            memmove(&mock_static[i], &mock_static[i + 1], sizeof mock_static[0] * (mock_n - i - 1));
            mock_n--;
            return;
        }
}

static char *mig_of(struct ctl *c, struct domain *d)
{
    static struct strbuf sb;
    sb_reset(&sb);
    ctl_format_migration(c, d, &sb);
    return sb.s;
}

static char *lock_of(struct ctl *c, struct domain *d)
{
    static struct strbuf sb;
    sb_reset(&sb);
    ctl_format_lock(c, d, &sb);
    return sb.s;
}

/* Feed the job's output to the core, as vmmigfs's loop does, until the
 * migrate file contains want (or 5 s pass). */
static bool pump_until(struct ctl *c, struct domain *d, const char *want)
{
    if (d->mig_fd >= 0)
        fcntl(d->mig_fd, F_SETFL, O_NONBLOCK);
    for (int i = 0; i < 500; i++) {
        if (strstr(mig_of(c, d), want))
            return true;
        if (d->mig_fd < 0)
            return false;
        struct pollfd p = {.fd = d->mig_fd, .events = POLLIN};
        if (poll(&p, 1, 10) > 0)
            ctl_migration_io(c, d);
    }
    return strstr(mig_of(c, d), want) != NULL;
}

static char gone_names[512];
static void record_gone(void *arg, const char *name)
{
    (void)arg;
    size_t n = strlen(gone_names);
    snprintf(gone_names + n, sizeof gone_names - n, "%s ", name);
}

static void open_fresh(struct ctl *c, char *dir, char *policy, size_t psize)
{
    char err[300];
    strcpy(dir, "/tmp/vmmig-ctl-XXXXXX");
    if (!mkdtemp(dir))
        abort();
    snprintf(policy, psize, "%s/policy", dir);
    is_int(ctl_open_ops(c, &mock_ops, dir, policy, err, 300), 0, "fresh controller: %s", err);
    c->run = (struct runner){.start = direct_start, .stop = direct_stop};
    c->name_gone = record_gone;
}

static void close_fresh(struct ctl *c, const char *dir)
{
    char cmd[300];
    ctl_close(c);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd))
        printf("# cleanup of %s failed\n", dir);
}

#define PROGRESS_012                                                                       \
    "echo 'progress stage=0 name=pre-migration'; "                                         \
    "echo 'progress stage=1 name=reservation'; "                                           \
    "echo 'progress stage=2 name=iterative-pre-copy round=3 sent=123456789 dirty_pages=40 " \
    "dirty_rate=310'; "

/* A request as it can be shown on one TAP line. */
static const char *vis(const char *s)
{
    static char buf[128];
    size_t n = 0;
    for (; *s && n < sizeof buf - 5; s++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, *s >= ' ' ? "%c" : "\\x%02x",
                              (unsigned char)*s);
    buf[n] = 0;
    return buf;
}

static void test_requests(void)
{
    char dir[64], policy[128], err[300];
    struct ctl c;
    const char *u = "00000000-0000-0000-0000-0000000000a1";

    mock_reset();
    add_vm(11, "web1", u);
    open_fresh(&c, dir, policy, sizeof policy);
    struct domain *d = ctl_find(&c, "web1");

    /* Bad requests: EINVAL, explained, nothing started, nothing changed. */
    static const char *const bad[] = {
        "", "\n", "   ", "hostB wait force", "hostB force wait", "hostB wait=abc", "hostB wait=0",
        "hostB wait=-1", "hostB wait=", "hostB wait=1e3", "hostB wait=99999999999", "hostB wait wait",
        "hostB force force", "hostB now", "hostB wait 5", "hostB force extra", "wait", "force hostB",
        "wait=5", "cancel now", "cancel hostB", "-oProxyCommand=x", "host/b", "hostB\x01",
        "hostB\nwait", "hostB algo=turbo", "hostB algo=", "hostB algo=PRECOPY",
        "hostB algo=postcopy algo=precopy", "algo=postcopy", "hostB algo=postcopy,stopcopy",
        "cancel algo=postcopy",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        uint64_t gen = d->gen;
        int calls = mock_req.calls;
        err[0] = 0;
        int rc = wm(&c, d, bad[i], err);
        ok(rc == -EINVAL && err[0], "migrate '%s': EINVAL: %s", vis(bad[i]), err);
        ok(d->gen == gen && !strcmp(d->migration, "idle") && mock_req.calls == calls && !d->waiting,
           "  ...and nothing changed");
    }
    char nul[] = "hostB\0wait";
    is_int(ctl_migrate_write(&c, d, nul, sizeof nul - 1, &(struct caller){.pid = getpid()}, err,
                             sizeof err),
           -EINVAL, "a NUL byte: EINVAL");
    wm(&c, d, "hostB wait force", err);
    ok(strstr(err, "cannot be combined"), "wait with force says why: %s", err);
    wm(&c, d, "hostB wait=abc", err);
    ok(strstr(err, "number of seconds"), "wait=abc says why: %s", err);
    ok(events_have(&c, "web1 write-rejected file=migrate"), "rejections are in events");
    wm(&c, d, "hostB algo=turbo", err);
    ok(strstr(err, "unknown algorithm 'turbo'"), "algo=turbo says why: %s", err);
    ok(events_have(&c, "unknown algorithm 'turbo'"), "  and events has it");
    is_int(wm(&c, d, "cancel", err), -ESRCH, "cancel with nothing running or waiting: ESRCH");
    ok(strstr(err, "no migration"), "says so: %s", err);

    /* The request the backend gets: policy and mode. */
    mock_cmd = "exit 0";
    is_int(wm(&c, d, "hostB\n", err), 0, "plain request starts: %s", err);
    is_str(mock_req.host, "hostB", "request: host");
    ok(!mock_req.force, "request: no force");
    is_str(mock_req.transport, "tcp", "request: transport tcp by default");
    is_int(mock_req.port, 8123, "request: port 8123 by default");
    is_int(mock_req.timeout_s, 30, "request: timeout 30 by default");
    is_str(mock_req.algorithm, "", "request: no algorithm asked for by default");
    finish_migration(&c, d);
    for (int k = 0; k < 3; k++) {
        static const char *const algs[] = {"precopy", "postcopy", "stopcopy"};
        char line[64];
        snprintf(line, sizeof line, "hostB algo=%s", algs[k]);
        is_int(wm(&c, d, line, err), 0, "'%s' starts: %s", line, err);
        is_str(mock_req.algorithm, algs[k], "  the request asks for %s", algs[k]);
        ok(strstr(mig_of(&c, d), "algorithm=") && strstr(mig_of(&c, d), algs[k]),
           "  migrate shows it: %s", mig_of(&c, d));
        ok(strstr(status_of(&c, d), "algorithm: ") && strstr(status_of(&c, d), algs[k]),
           "  status too");
        ok(events_have(&c, "migrate-started to=hostB") && events_have(&c, line + 6),
           "  and the migrate-started event");
        finish_migration(&c, d);
    }
    is_int(wm(&c, d, "hostB force algo=stopcopy", err), 0, "force with algo=: %s", err);
    is_str(mock_req.algorithm, "stopcopy", "  both reach the request");
    finish_migration(&c, d);
    is_str(d->migration, "done hostB", "exit 0 without a result line: done");
    struct caller me = {.pid = getpid()};
    const char *pl[] = {"transport = ssh %h vmmig receive", "port=2222", "migrate_timeout=5"};
    for (size_t i = 0; i < ARRAY_SIZE(pl); i++)
        is_int(ctl_policy_write(&c, pl[i], strlen(pl[i]), &me, err, sizeof err), 0, "policy %s",
               pl[i]);
    is_int(wm(&c, d, "hostC", err), 0, "request after a policy change");
    is_str(mock_req.transport, "ssh %h vmmig receive", "request: transport template from the policy");
    is_int(mock_req.port, 2222, "request: port from the policy");
    is_int(mock_req.timeout_s, 5, "request: migrate_timeout from the policy");
    is_int(wm(&c, d, "hostC", err), -EBUSY, "a second request while running: EBUSY");
    ok(strstr(err, "already running"), "says so: %s", err);
    finish_migration(&c, d);
    is_int(mock_stray, 0, "no backend call for an unknown domain");
    close_fresh(&c, dir);
}

/* stream=relay|direct in the migrate file: checked, passed on, refused for
 * a group and on a Xen host. */
static void test_stream_mode(void)
{
    char dir[64], policy[128], err[300];
    struct ctl c;
    const char *u = "00000000-0000-0000-0000-0000000000c3";

    mock_reset();
    add_vm(28, "web1", u);
    add_vm(29, "domr-web1", "00000000-0000-0000-0000-0000000000c4");
    open_fresh(&c, dir, policy, sizeof policy);
    struct domain *d = ctl_find(&c, "web1");
    static const char *const bad[] = {
        "hostB stream=", "hostB stream=fast", "hostB stream=DIRECT", "hostB stream=direct stream=relay",
        "stream=direct", "cancel stream=direct", "hostB stream",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        int calls = mock_req.calls;
        err[0] = 0;
        ok(wm(&c, d, bad[i], err) == -EINVAL && err[0], "migrate '%s': EINVAL: %s", bad[i], err);
        ok(mock_req.calls == calls && !strcmp(d->migration, "idle"), "  ...and nothing started");
    }
    wm(&c, d, "hostB stream=fast", err);
    ok(strstr(err, "unknown stream 'fast' (stream=relay or stream=direct)"), "says why: %s", err);

    mock_cmd = "exit 0";
    is_int(wm(&c, d, "hostB stream=direct", err), 0, "'hostB stream=direct' starts: %s", err);
    is_str(mock_req.stream, "direct", "  the request asks for a direct stream");
    ok(events_have(&c, "stream=direct"), "  the migrate-started event says so");
    finish_migration(&c, d);
    is_int(wm(&c, d, "hostB stream=relay algo=stopcopy", err), 0, "stream=relay with algo=: %s", err);
    is_str(mock_req.stream, "", "  the relay is the default: nothing asked for");
    is_str(mock_req.algorithm, "stopcopy", "  algo= still reaches the request");
    finish_migration(&c, d);
    is_int(wm(&c, d, "hostB", err), 0, "a plain request after it");
    is_str(mock_req.stream, "", "  no stream asked for");
    finish_migration(&c, d);

    /* the policy's stream = direct: the default for a domain alone */
    struct caller me = {.pid = getpid()};
    is_int(ctl_policy_write(&c, "stream = direct", 15, &me, err, sizeof err), 0, "policy stream = direct");
    is_int(wm(&c, d, "hostB", err), 0, "a plain request: %s", err);
    is_str(mock_req.stream, "direct", "  asks for a direct stream (the policy)");
    finish_migration(&c, d);
    is_int(wm(&c, d, "hostB stream=relay", err), 0, "stream=relay over the policy");
    is_str(mock_req.stream, "", "  the relay");
    finish_migration(&c, d);
    is_int(ctl_policy_write(&c, "transport = ssh %h vmmig receive", 32, &me, err, sizeof err), 0,
           "policy: an exec transport");
    is_int(wm(&c, d, "hostB", err), 0, "a plain request");
    is_str(mock_req.stream, "", "  the policy's direct is not used with an exec transport");
    finish_migration(&c, d);
    is_int(ctl_policy_write(&c, "transport = tcp", 15, &me, err, sizeof err), 0, "policy: tcp");

    /* a Xen host: refused at the write */
    struct backend_ops xen_named = mock_ops;
    xen_named.name = "xen";
    const struct backend_ops *saved = c.ops;
    c.ops = &xen_named;
    int calls = mock_req.calls;
    is_int(wm(&c, d, "hostB stream=direct", err), -EINVAL, "stream=direct on a xen host: EINVAL");
    ok(strstr(err, "xen backend takes its stream through the relay only"), "  says why: %s", err);
    ok(mock_req.calls == calls && !strcmp(d->migration, "done hostB"), "  nothing started");
    is_int(wm(&c, d, "hostB stream=relay", err), 0, "stream=relay on a xen host: fine");
    finish_migration(&c, d);
    is_int(wm(&c, d, "hostB", err), 0, "a plain request on a xen host");
    is_str(mock_req.stream, "", "  the policy's direct is not used on a xen host");
    finish_migration(&c, d);
    c.ops = saved;

    /* a group: each member's stream direct (vmmig comigrate --stream) */
    is_int(wp(&c, d, "domr-web1", err), 0, "web1 and domr-web1 form a group");
    is_int(wm(&c, d, "hostB stream=direct", err), 0, "stream=direct for a group: %s", err);
    is_str(mock_req.stream, "direct", "  the group's command asks for direct streams");
    is_int((int)mock_req.nmembers, 2, "  for both members");
    finish_migration(&c, d);
    is_int(wm(&c, d, "hostB", err), 0, "a plain request for the group");
    is_str(mock_req.stream, "direct", "  the policy's direct is used for a group too");
    finish_migration(&c, d);
    calls = mock_req.calls;
    is_int(wm(&c, d, "hostB algo=stopcopy", err), -EINVAL, "algo= for a group: EINVAL");
    ok(strstr(err, "algo= applies to a domain alone; web1 moves with its peer group") != NULL,
       "  says why: %s", err);
    ok(mock_req.calls == calls, "  nothing started");
    close_fresh(&c, dir);
}

/* The algorithm the agent reports, and post-copy's lost outcome. */
static void test_algorithm_report(void)
{
    char dir[64], policy[128], err[300];
    struct ctl c;
    const char *u = "00000000-0000-0000-0000-0000000000b7";

    mock_reset();
    add_vm(27, "web1", u);
    open_fresh(&c, dir, policy, sizeof policy);
    struct domain *d = ctl_find(&c, "web1");

    mock_cmd = "echo 'progress stage=1 name=reservation sent=0 algorithm=stopcopy'; exec sleep 30";
    is_int(wm(&c, d, "hostB", err), 0, "migration starts");
    ok(pump_until(&c, d, "algorithm=stopcopy"), "the chosen algorithm shows in migrate: %s",
       mig_of(&c, d));
    ok(strstr(status_of(&c, d), "algorithm: stopcopy\n"), "and in status");
    wm(&c, d, "cancel", err);
    finish_migration(&c, d);

    mock_cmd = "echo 'progress stage=4 name=commitment sent=9 algorithm=postcopy'; "
               "echo 'result failed stage=5 domain=lost algorithm=postcopy why=\"link cut\"'; "
               "exit 1";
    is_int(wm(&c, d, "hostB algo=postcopy", err), 0, "post-copy starts");
    finish_migration(&c, d);
    ok(strstr(d->migration, "failed hostB: stage 5: link cut") && strstr(d->migration, "LOST"),
       "a lost domain says so in migrate: %s", d->migration);
    ok(strstr(status_of(&c, d), "domain: lost"), "and in status");
    ok(strstr(status_of(&c, d), "algorithm: postcopy"), "with the algorithm");
    close_fresh(&c, dir);
}

static void test_progress(void)
{
    char dir[64], policy[128], err[300];
    struct ctl c;
    const char *u = "00000000-0000-0000-0000-0000000000b1";

    mock_reset();
    add_vm(21, "web1", u);
    open_fresh(&c, dir, policy, sizeof policy);
    struct domain *d = ctl_find(&c, "web1");

    /* While it runs: the migrate line, the status lines, a stage event each. */
    mock_cmd = PROGRESS_012 "exec sleep 30";
    is_int(wm(&c, d, "hostB", err), 0, "migration starts");
    is_str(mig_of(&c, d), "running hostB\n", "before any progress: running hostB");
    uint64_t gen = d->gen;
    ok(pump_until(&c, d, "round=3"), "progress lines read");
    is_str(mig_of(&c, d),
           "running hostB stage=2 iterative-pre-copy round=3 sent=123456789 dirty_rate=310\n",
           "migrate: one line with stage, round, bytes sent and dirty rate");
    ok(strstr(status_of(&c, d), "migration: running hostB\nstage: 2 iterative-pre-copy\nround: 3\n"
                                "bytes_sent: 123456789\ndirty_rate: 310 pages/s\n"),
       "status: migration, stage, round, bytes_sent, dirty_rate lines");
    ok(d->gen > gen + 2, "every change bumps the generation (poll wakes)");
    ok(events_have(&c, "web1 migrate-stage to=hostB stage=0 name=pre-migration") &&
           events_have(&c, "web1 migrate-stage to=hostB stage=1 name=reservation") &&
           events_have(&c, "web1 migrate-stage to=hostB stage=2 name=iterative-pre-copy"),
       "an event per stage");
    ok(!events_have(&c, "migrate-progress"), "no event per progress line");
    is_int(wm(&c, d, "cancel", err), 0, "cancel a running job");
    ok(events_have(&c, "web1 migrate-cancel by=root uid=0 to=hostB"), "event migrate-cancel");
    finish_migration(&c, d);
    is_str(d->migration, "failed hostB: stage 2: cancelled by root", "cancelled: stage and who");
    ok(!strstr(status_of(&c, d), "round:"), "no progress lines once it ended");
    ok(events_have(&c, "web1 migrate-failed to=hostB why=\"stage 2: cancelled by root\""),
       "event migrate-failed with the why");

    /* Stage changes reset what belongs to a stage; lines arrive in pieces. */
    mock_cmd = "printf 'progress stage=2 name=iterative-pre-copy round=1 sent=10 dirty_rate=5\\n"
               "progress stage=3 na'; sleep 0.3; printf 'me=stop-and-copy sent=20 dirty_pages=7\\n'; "
               "exec sleep 30";
    is_int(wm(&c, d, "hostB", err), 0, "migration starts");
    ok(pump_until(&c, d, "stage=3 stop-and-copy"), "a line split across reads is put together");
    is_str(mig_of(&c, d), "running hostB stage=3 stop-and-copy sent=20\n",
           "a new stage drops the old round and dirty rate");
    wm(&c, d, "cancel", err);
    finish_migration(&c, d);

    /* result ok: done, with downtime and total time. */
    mock_cmd = PROGRESS_012
        "echo 'progress stage=3 name=stop-and-copy sent=200000000 dirty_pages=12'; "
        "echo 'vmmig send: some text for people'; "
        "echo 'progress stage=4 name=commitment sent=200000001 future=yes'; "
        "echo 'progress stage=5 name=activation sent=200000002'; "
        "echo 'result ok host=hostB domid=7 total_ms=1234 downtime_ms=56 sent=200000003 rounds=4 "
        "color=blue'";
    is_int(wm(&c, d, "hostB", err), 0, "successful migration starts");
    finish_migration(&c, d);
    is_str(d->migration, "done hostB", "result ok: done hostB");
    is_str(mig_of(&c, d), "done hostB\n", "migrate reads done hostB");
    ok(strstr(status_of(&c, d), "migration: done hostB\nbytes_sent: 200000003\ndowntime_ms: 56\n"
                                "total_ms: 1234\n"),
       "status: bytes_sent, downtime_ms, total_ms");
    ok(events_have(&c, "web1 migrate-done to=hostB uuid=" "00000000-0000-0000-0000-0000000000b1"
                       " domid=21 new_domid=7 total_ms=1234 downtime_ms=56"),
       "event migrate-done with the new domid and times");
    ok(events_have(&c, "migrate-stage to=hostB stage=5 name=activation"), "stage 5 event");

    /* result failed: the engine's why and stage. */
    mock_cmd = PROGRESS_012 "echo 'vmmig send: destination said no'; "
                            "echo 'result failed stage=1 why=\"not enough memory on hostB "
                            "(need 2048 MiB)\" domain=running-here'; exit 1";
    is_int(wm(&c, d, "hostB", err), 0, "failing migration starts");
    finish_migration(&c, d);
    is_str(d->migration, "failed hostB: stage 1: not enough memory on hostB (need 2048 MiB)",
           "result failed: its stage and why");
    ok(events_have(&c, "web1 migrate-failed to=hostB why=\"stage 1: not enough memory on hostB "
                       "(need 2048 MiB)\""),
       "event migrate-failed with the why");

    mock_cmd = "echo 'progress stage=4 name=commitment'; "
               "echo 'result failed stage=4 why=\"peer \"hostB\" went silent\" "
               "domain=left-suspended-here'; exit 1";
    is_int(wm(&c, d, "hostB", err), 0, "migration that leaves the domain suspended");
    finish_migration(&c, d);
    is_str(d->migration,
           "failed hostB: stage 4: peer 'hostB' went silent (the domain is left suspended here)",
           "quotes in why are kept readable; a suspended domain is said so");

    mock_cmd = "echo 'result failed'; exit 1";
    is_int(wm(&c, d, "hostB", err), 0, "bare result failed");
    finish_migration(&c, d);
    is_str(d->migration, "failed hostB: no reason given", "no why: said so");

    /* Killed without a result: the core runs `send --recover`, whose result
     * decides; the stage, the signal and the last line for people stay. */
    mock_cmd = PROGRESS_012 "echo 'vmmig send: lost the peer'; echo 'progress stage=2 round=4'; "
                            "kill -9 $$";
    mock_recover_cmd = "echo 'result failed stage=0 domain=running-here why=\"the domain kept "
                       "running here\"'; exit 1";
    is_int(wm(&c, d, "hostB", err), 0, "migration that gets killed");
    mock_req.recover = false;
    finish_migration(&c, d);
    ok(mock_req.recover, "the core ran the recovery (send --recover)");
    is_str(d->migration,
           "failed hostB: stage 2: the agent was killed by signal 9: vmmig send: lost the peer; "
           "the domain kept running here",
           "killed: the stage, the signal, the last line for people, and the recovery's finding");
    ok(events_have(&c, "web1 migrate-recover to=hostB why=\"stage 2: the agent was killed by "
                       "signal 9: vmmig send: lost the peer\""),
       "event migrate-recover");
    mock_recover_cmd = "echo 'result ok host=hostB recovered=destination-runs-it'";
    is_int(wm(&c, d, "hostB", err), 0, "migration that gets killed after the commit");
    finish_migration(&c, d);
    is_str(d->migration, "done hostB", "the recovery finds hostB runs it: done");
    ok(events_have(&c, "web1 migrate-done to=hostB uuid=00000000-0000-0000-0000-0000000000b1 "
                       "domid=21 recovered=yes"),
       "event migrate-done says recovered=yes");
    mock_recover_cmd = "kill -9 $$";
    is_int(wm(&c, d, "hostB", err), 0, "migration that gets killed, and its recovery too");
    finish_migration(&c, d);
    is_str(d->migration,
           "failed hostB: stage 2: the agent was killed by signal 9: vmmig send: lost the peer; "
           "recovery failed too",
           "a recovery killed too is not retried: failed, saying so");
    mock_cmd = "echo 'only text'; exit 3";
    is_int(wm(&c, d, "hostB", err), 0, "migration that exits 3");
    finish_migration(&c, d);
    is_str(d->migration, "failed hostB: exit 3: only text", "no progress: exit status and last line");
    mock_cmd = "echo 'result ok host=hostB'; exit 0";
    is_int(wm(&c, d, "hostB", err), 0, "result ok without numbers");
    finish_migration(&c, d);
    ok(!strcmp(d->migration, "done hostB") && !strstr(status_of(&c, d), "downtime_ms"),
       "done, and no made-up numbers");
    mock_cmd = "echo 'result failed stage=2 why=\"x\"'; exit 0";
    is_int(wm(&c, d, "hostB", err), 0, "result failed, exit 0");
    finish_migration(&c, d);
    is_str(d->migration, "failed hostB: stage 2: x", "the result line decides");

    /* Garbage is ignored, never a crash. */
    mock_cmd = "echo 'progress stage=abc name=x'; echo 'progressive stage=3'; echo 'result maybe'; "
               "echo 'progress stage=2 round=-4 sent=12x dirty_rate=99999999999999999999999'; "
               "echo 'progress stage=999 name=bad'; echo 'progress name=\"a b\" stage=1'; "
               "echo 'progress'; echo 'result'; echo 'result failed why=\"'; "
               "head -c 5000 /dev/zero | tr '\\0' a; echo; exit 2";
    is_int(wm(&c, d, "hostB", err), 0, "migration with garbage output");
    finish_migration(&c, d);
    ok(!strncmp(d->migration, "failed hostB: ", 14), "garbage: still a clear end: %s", d->migration);
    is_int(d->prog.round, -1, "bad numbers ignored");
    is_int(d->prog.sent, -1, "bad sent ignored");
    is_int(d->prog.stage, 1, "out-of-range stage ignored, later good one taken");
    is_int(mock_stray, 0, "no backend call for an unknown domain");
    close_fresh(&c, dir);
}

static void test_wait_force(void)
{
    char dir[64], policy[128], err[300];
    struct ctl c;
    const char *u1 = "00000000-0000-0000-0000-0000000000c1";
    const char *u2 = "00000000-0000-0000-0000-0000000000c2";
    time_t now = time(NULL);

    mock_reset();
    add_vm(31, "web1", u1);
    add_vm(32, "db", u2);
    open_fresh(&c, dir, policy, sizeof policy);
    struct domain *d = ctl_find(&c, "web1"), *db = ctl_find(&c, "db");

    /* wait: accepted at once, deferred until the holds are gone. */
    is_int(w(&c, d, "1 reason=maint", err), 0, "admin hold");
    int calls = mock_req.calls;
    is_int(wm(&c, d, "hostB wait=60\n", err), 0, "HOST wait=60 on a locked domain: accepted");
    is_str(mig_of(&c, d), "waiting hostB: locked: admin hold by root (maint)\n",
           "migrate: waiting HOST: locked: WHY");
    ok(strstr(status_of(&c, d), "migration: waiting hostB: locked: admin hold by root (maint)\n"
                                "wait_until: "),
       "status: the waiting job and until when");
    ok(events_have(&c, "web1 migrate-waiting to=hostB by=root uid=0 timeout=60 why=\"admin hold"),
       "event migrate-waiting");
    is_int(mock_req.calls, calls, "nothing started");
    is_int(wm(&c, d, "hostC", err), -EBUSY, "another request while waiting: EBUSY");
    ok(strstr(err, "already waiting"), "says so: %s", err);
    is_int(w(&c, d, "1 reason=other", err), 0, "the hold changes");
    is_str(mig_of(&c, d), "waiting hostB: locked: admin hold by root (other)\n",
           "the waiting line follows the holds");
    strcpy(mock_node[0], "1 reason=guest job");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    is_int(w(&c, d, "0", err), 0, "admin hold released, guest hold left");
    ok(d->waiting && strstr(mig_of(&c, d), "guest hold (guest job)"), "still waiting, for the guest");
    mock_cmd = "echo 'result ok host=hostB'";
    strcpy(mock_node[0], "0");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    ok(!d->waiting && d->mig_pid > 0, "the guest's release starts it");
    is_str(mock_req.host, "hostB", "  ...to the host asked for");
    ok(!mock_req.force, "  ...without force");
    ok(events_have(&c, "web1 migrate-started to=hostB by=root uid=0"), "  ...in the requester's name");
    finish_migration(&c, d);
    is_str(d->migration, "done hostB", "and it completes");

    /* wait on an unlocked domain: now. */
    is_int(wm(&c, d, "hostB wait", err), 0, "HOST wait on an unlocked domain");
    ok(d->mig_pid > 0 && !d->waiting, "starts at once");
    finish_migration(&c, d);

    /* wait ends when a ttl runs out, or times out. */
    is_int(w(&c, d, "1 reason=short ttl=3", err), 0, "admin hold with ttl=3");
    is_int(wm(&c, d, "hostB wait=10", err), 0, "HOST wait=10");
    ctl_tick(&c, time(NULL) + 4);
    ok(!d->waiting && d->mig_pid > 0, "the hold's expiry starts the job in the same tick");
    finish_migration(&c, d);
    is_int(w(&c, d, "1 reason=long", err), 0, "admin hold without ttl");
    now = time(NULL);
    is_int(wm(&c, d, "hostB wait=5", err), 0, "HOST wait=5");
    ctl_tick(&c, now + 4);
    ok(d->waiting, "still waiting after 4 s");
    ctl_tick(&c, now + 5);
    is_str(d->migration, "failed hostB: still locked after 5 s: admin hold by root (long)",
           "timeout: failed HOST: still locked after S s: WHY");
    ok(events_have(&c, "web1 migrate-failed to=hostB why=\"still locked after 5 s"),
       "event migrate-failed");

    /* cancel a waiting job */
    is_int(wm(&c, d, "hostB wait", err), 0, "HOST wait without a limit");
    ok(strstr(status_of(&c, d), "wait_until: never"), "status: wait_until never");
    ctl_tick(&c, time(NULL) + 86400 * 30);
    ok(d->waiting, "still waiting a month later");
    is_int(wm(&c, d, "cancel", err), 0, "cancel the waiting job");
    is_str(d->migration, "failed hostB: cancelled by root while waiting", "cancelled while waiting");
    ok(events_have(&c, "web1 migrate-cancel by=root uid=0 to=hostB waiting=yes"), "event");
    is_int(wm(&c, d, "cancel", err), -ESRCH, "nothing left to cancel");

    /* A waiting job checked one group; joining another one ends it. */
    is_int(wm(&c, d, "hostB wait", err), 0, "waiting");
    is_int(wp(&c, d, "db", err), 0, "grouped while waiting");
    is_int(w(&c, d, "0", err), 0, "released");
    is_str(d->migration, "failed hostB: the peer group changed while waiting (ask again)",
           "the deferred start does not move a group it did not check");
    is_int(wp(&c, d, "", err), 0, "group dissolved");

    /* force */
    struct hold *g = &d->locks.h[HOLD_GUEST];
    strcpy(mock_node[0], "1 reason=stuck");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    is_int(wm(&c, d, "hostB", err), -EBUSY, "guest hold: plain request EBUSY");
    calls = mock_req.calls;
    is_int(wm(&c, d, "hostB force", err), -EPERM, "force within the guest quota: EPERM");
    ok(strstr(err, "within its quota") && strstr(err, "guest_max_hold=3600"), "says why: %s", err);
    ok(events_have(&c, "web1 migrate-refused to=hostB by=root uid=0 why=\"guest hold (stuck) is "
                       "within its quota"),
       "refusal in events");
    is_int(mock_req.calls, calls, "nothing started");
    ok(g->active, "the guest hold is untouched");
    g->since -= 3601;
    is_int(w(&c, d, "1 reason=admin", err), 0, "an admin hold as well");
    is_int(wm(&c, d, "hostB force", err), -EBUSY, "force with an admin hold: EBUSY");
    ok(strstr(err, "admin hold by root (admin)") && strstr(err, "force overrides only"),
       "says why: %s", err);
    is_int(w(&c, d, "0", err), 0, "admin hold released");
    mock_static[0] = true;
    ctl_refresh(&c);
    is_int(wm(&c, d, "hostB force", err), -EBUSY, "force with a static hold: EBUSY");
    mock_static[0] = false;
    ctl_refresh(&c);
    is_int(wm(&c, d, "hostB", err), -EBUSY, "past the quota, a plain request is still EBUSY");
    mock_cmd = "exit 0";
    is_int(wm(&c, d, "hostB force", err), 0, "force past the guest quota: started");
    ok(mock_req.force, "the request carries force (the engine ignores that hold too)");
    ok(events_have(&c, "web1 migrate-forced to=hostB by=root uid=0 holder=guest held_since=") &&
           events_have(&c, "reason=\"stuck\""),
       "audited: migrate-forced with the overridden hold");
    ok(events_have(&c, "web1 migrate-started to=hostB by=root uid=0 domid=31 force=yes"),
       "migrate-started says force");
    ok(g->active && !strcmp(mock_node[0], "1 reason=stuck"), "the guest hold itself stays");
    finish_migration(&c, d);
    strcpy(mock_node[0], "0");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    is_int(wm(&c, db, "hostB force", err), 0, "force on an unlocked domain: just a migration");
    ok(!mock_req.force, "  ...without force in the request");
    finish_migration(&c, db);
    is_int(c.pol.guest_max_hold, 3600, "policy untouched");
    struct caller me = {.pid = getpid()};
    is_int(ctl_policy_write(&c, "guest_max_hold=0", 16, &me, err, sizeof err), 0, "guest_max_hold=0");
    strcpy(mock_node[0], "1 reason=forever");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    g->since -= 100000;
    is_int(wm(&c, d, "hostB force", err), -EPERM, "guest_max_hold=0: never forced");
    ok(strstr(err, "never"), "says so: %s", err);
    is_int(mock_stray, 0, "no backend call for an unknown domain");
    close_fresh(&c, dir);
}

static void test_forwarding(void)
{
    char dir[64], policy[128], err[300];
    struct ctl c;
    const char *u1 = "00000000-0000-0000-0000-0000000000d1";
    const char *u2 = "00000000-0000-0000-0000-0000000000d2";
    const char *u3 = "00000000-0000-0000-0000-0000000000d3";
    struct caller me = {.pid = getpid()};

    mock_reset();
    add_vm(41, "web1", u1);
    add_vm(42, "db", u2);
    open_fresh(&c, dir, policy, sizeof policy);
    struct domain *d = ctl_find(&c, "web1");

    /* Moved: the domain goes away after done -> a forwarding entry. */
    mock_cmd = "echo 'result ok host=hostB domid=3 total_ms=10 downtime_ms=2'";
    is_int(wm(&c, d, "hostB", err), 0, "migration starts");
    finish_migration(&c, d);
    del_vm(41);
    gone_names[0] = 0;
    time_t t0 = time(NULL);
    ctl_refresh(&c);
    struct domain *g = ctl_find(&c, "web1");
    ok(g && g->ghost, "web1 stays as a forwarding entry");
    is_int(c.ndoms, 2, "listed with the others");
    char want[300], when[32];
    fmt_time(g ? g->mig_end : 0, when, sizeof when);
    snprintf(want, sizeof want,
             "name: web1\nuuid: %s\nstate: migrated\nmigration: migrated to hostB at %s\n"
             "downtime_ms: 2\ntotal_ms: 10\n", u1, when);
    is_str(status_of(&c, g), want, "status of a forwarding entry");
    is_str(mig_of(&c, g), "migrated hostB\n", "migrate: migrated hostB");
    is_str(lock_of(&c, g), "0\n", "lock: 0");
    struct strbuf sb = {0};
    ctl_format_peers(&c, g, &sb);
    ok(!sb.s || !sb.s[0], "peer: empty");
    sb_free(&sb);
    is_int(w(&c, g, "1 reason=x", err), -EREMOTE, "lock write: EREMOTE");
    is_str(err, "web1 has migrated to hostB", "  ...with the explanation");
    is_int(wm(&c, g, "hostC", err), -EREMOTE, "migrate write: EREMOTE");
    is_int(wm(&c, g, "cancel", err), -EREMOTE, "cancel: EREMOTE");
    is_int(wp(&c, g, "db", err), -EREMOTE, "peer write: EREMOTE");
    is_int(wp(&c, ctl_find(&c, "db"), "web1", err), -EINVAL, "naming it as a peer: EINVAL");
    ok(strstr(err, "has migrated to hostB"), "  ...says why: %s", err);
    ok(events_have(&c, "web1 forward-added to=hostB"), "event forward-added");
    ok(events_have(&c, "web1 write-rejected file=lock") && events_have(&c, "why=\"web1 has migrated"),
       "refused writes in events");
    strcpy(mock_node[0], "1 reason=whatever");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    ctl_tick(&c, t0 + 10);
    is_int(mock_stray, 0, "the forwarding entry is never handed to the backend");
    ok(ctl_find(&c, "web1") == g, "still there before forward_ttl");
    ctl_tick(&c, t0 + 3600 + 2);
    ok(!ctl_find(&c, "web1"), "gone after forward_ttl (3600 s)");
    ok(strstr(gone_names, "web1 "), "name_gone told: %s", gone_names);
    ok(events_have(&c, "web1 forward-removed to=hostB why=expired"), "event forward-removed");
    is_int(c.ndoms, 1, "one domain left");

    /* A new domain with the same name or UUID replaces it. */
    add_vm(43, "web2", u3);
    ctl_refresh(&c);
    d = ctl_find(&c, "web2");
    is_int(wm(&c, d, "hostB", err), 0, "web2 migrates");
    /* xl-style: renamed, and gone before the command ends. */
    strcpy(mock_vms[1].name, "web2--migratedaway");
    ctl_refresh(&c);
    del_vm(43);
    ctl_refresh(&c);
    ok(ctl_find(&c, "web2--migratedaway") && !ctl_find(&c, "web2--migratedaway")->ghost,
       "the running job keeps its entry");
    finish_migration(&c, d);
    g = ctl_find(&c, "web2");
    ok(g && g->ghost && !ctl_find(&c, "web2--migratedaway"),
       "the entry is under the name the job started with");
    add_vm(44, "web2", "00000000-0000-0000-0000-0000000000d4");
    ctl_refresh(&c);
    d = ctl_find(&c, "web2");
    ok(d && !d->ghost && d->vm.domid == 44, "a new domain of that name replaces it");
    is_int(c.ndoms, 2, "no entry left behind");
    ok(events_have(&c, "web2 forward-removed to=hostB why=replaced domid=44"), "event: replaced");

    is_int(wm(&c, d, "hostB", err), 0, "migrates");
    finish_migration(&c, d);
    del_vm(44);
    ctl_refresh(&c);
    ok(ctl_find(&c, "web2") && ctl_find(&c, "web2")->ghost, "forwarding entry");
    add_vm(45, "web2-back", "00000000-0000-0000-0000-0000000000d4");
    ctl_refresh(&c);
    ok(!ctl_find(&c, "web2") && ctl_find(&c, "web2-back"), "the same UUID under another name replaces it");

    /* No entry: within the host, a failure, forward_ttl=0. */
    d = ctl_find(&c, "web2-back");
    is_int(wm(&c, d, "localhost", err), 0, "migration within the host");
    add_vm(46, "web2-back--incoming", "00000000-0000-0000-0000-0000000000d4");
    ctl_refresh(&c);
    finish_migration(&c, d);
    del_vm(45);
    ctl_refresh(&c);
    ok(!ctl_find(&c, "web2-back"), "moved within the host: no forwarding entry");
    d = ctl_find(&c, "web2-back--incoming");
    mock_cmd = "exit 1";
    is_int(wm(&c, d, "hostB", err), 0, "failing migration");
    finish_migration(&c, d);
    del_vm(46);
    ctl_refresh(&c);
    ok(!ctl_find(&c, "web2-back--incoming"), "failed, then destroyed: no forwarding entry");
    is_int(ctl_policy_write(&c, "forward_ttl=0", 13, &me, err, sizeof err), 0, "forward_ttl=0");
    add_vm(47, "web3", "00000000-0000-0000-0000-0000000000d7");
    ctl_refresh(&c);
    d = ctl_find(&c, "web3");
    mock_cmd = "exit 0";
    is_int(wm(&c, d, "hostB", err), 0, "migration");
    finish_migration(&c, d);
    del_vm(47);
    ctl_refresh(&c);
    ok(!ctl_find(&c, "web3"), "forward_ttl=0: no forwarding entry");
    is_int(mock_stray, 0, "no backend call for an unknown domain");
    close_fresh(&c, dir);
}

/* An incoming migration: the state record first, the domain, then (late)
 * the guest's hold value. */
static void test_guest_since(void)
{
    char dir[64], policy[128];
    struct ctl c;
    const char *u1 = "00000000-0000-0000-0000-0000000000e1";
    const char *u2 = "00000000-0000-0000-0000-0000000000e2";
    struct domstate st = {0};
    time_t t0 = time(NULL);

    mock_reset();
    add_vm(51, "old", u2);
    strcpy(mock_node[0], "0");
    open_fresh(&c, dir, policy, sizeof policy);
    st.guest_since = t0 - 1000;
    is_int(state_save(dir, u1, &st), 0, "record written before the domain exists");
    add_vm(52, "moved", u1);
    ctl_refresh(&c);
    struct domain *d = ctl_find(&c, "moved");
    ok(d && !d->locks.h[HOLD_GUEST].active, "no guest hold yet (node reads 0)");
    strcpy(mock_node[1], "1 reason=carried over");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    is_int(d->locks.h[HOLD_GUEST].since, t0 - 1000, "the late hold keeps the record's since");
    strcpy(mock_node[1], "0");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    strcpy(mock_node[1], "1 reason=new one");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    ok(d->locks.h[HOLD_GUEST].since >= t0, "a later hold starts now");

    /* A domain already here at start: its node says it all. */
    st.guest_since = t0 - 500;
    state_save(dir, u2, &st);
    ctl_close(&c);
    char err[300];
    is_int(ctl_open_ops(&c, &mock_ops, dir, policy, err, sizeof err), 0, "restart");
    c.run = (struct runner){.start = direct_start, .stop = direct_stop};
    d = ctl_find(&c, "old");
    strcpy(mock_node[0], "1 reason=fresh");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    ok(d->locks.h[HOLD_GUEST].since >= t0, "an old record does not date a new hold");
    close_fresh(&c, dir);
}

/* Feed the lead's job output to the core until member m's migrate file
 * contains want (or 5 s pass). */
static bool pump_member(struct ctl *c, struct domain *lead, struct domain *m, const char *want)
{
    if (lead->mig_fd >= 0)
        fcntl(lead->mig_fd, F_SETFL, O_NONBLOCK);
    for (int i = 0; i < 500; i++) {
        if (strstr(mig_of(c, m), want))
            return true;
        if (lead->mig_fd < 0)
            return false;
        struct pollfd p = {.fd = lead->mig_fd, .events = POLLIN};
        if (poll(&p, 1, 10) > 0)
            ctl_migration_io(c, lead);
    }
    return strstr(mig_of(c, m), want) != NULL;
}

/* A status line's value ("" if absent). */
static const char *status_field(struct ctl *c, struct domain *d, const char *key)
{
    static char val[300];
    char want[64];
    const char *s = status_of(c, d), *p;

    snprintf(want, sizeof want, "\n%s: ", key);
    val[0] = 0;
    p = s ? strstr(s, want) : NULL;
    if (p) {
        p += strlen(want);
        snprintf(val, sizeof val, "%.*s", (int)strcspn(p, "\n"), p);
    }
    return val;
}

/* Co-migration: one `vmmig comigrate` for the whole peer group, all or
 * nothing on holds, each member following its own member= lines. */
static void test_group(void)
{
    char dir[64], policy[128], err[300];
    struct ctl c;
    const char *u1 = "00000000-0000-0000-0000-0000000000e1";
    const char *u2 = "00000000-0000-0000-0000-0000000000e2";
    const char *u3 = "00000000-0000-0000-0000-0000000000e3";
    const char *saved_recover = mock_recover_cmd;

    mock_reset();
    add_vm(51, "web1", u1);
    add_vm(52, "domr-web1", u2);
    add_vm(53, "db", u3);
    open_fresh(&c, dir, policy, sizeof policy);
    struct domain *web = ctl_find(&c, "web1"), *domr = ctl_find(&c, "domr-web1"),
                  *db = ctl_find(&c, "db");
    is_int(wp(&c, web, "domr-web1", err), 0, "web1 and domr-web1 form a group");
    int calls0 = mock_req.calls;
    is_int(wm(&c, web, "hostB algo=postcopy", err), -EINVAL, "algo= for a group: EINVAL");
    ok(strstr(err, "algo= applies to a domain alone"), "  says why: %s", err);
    ok(mock_req.calls == calls0 && !strcmp(web->migration, "idle"), "  nothing started");
    ok(events_have(&c, "algo= applies to a domain alone"), "  events has it");

    /* A hold on the peer refuses the group, written to either member. */
    strcpy(mock_node[1], "1 reason=console session");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);
    int calls = mock_req.calls;
    is_int(wm(&c, web, "hostB", err), -EBUSY, "the peer is held: EBUSY for web1");
    is_str(err, "domr-web1 is locked: guest hold (console session)", "  ...naming the member and why");
    is_int(wm(&c, domr, "hostB", err), -EBUSY, "  ...and for domr-web1");
    is_int(mock_req.calls, calls, "  ...nothing started");
    is_str(web->migration, "refused hostB: domr-web1 is locked: guest hold (console session)",
           "migrate of web1 says which member refused it");
    is_str(domr->migration, web->migration, "  ...so does domr-web1's");
    ok(strstr(status_field(&c, web, "last_refusal"), "domr-web1 is locked"), "status: last_refusal");
    ok(events_have(&c, "web1 migrate-refused to=hostB by=root uid=0 why=\"domr-web1 is locked: "
                       "guest hold (console session)\""),
       "event migrate-refused names the member");
    is_int(w(&c, web, "1 reason=backup", err), 0, "web1 held as well");
    wm(&c, web, "hostB", err);
    is_str(err, "web1 is locked: admin hold by root (backup); domr-web1 is locked: guest hold "
                "(console session)", "every held member is named");

    /* force: every hold left must be a guest's past its quota. */
    is_int(wm(&c, web, "hostB force", err), -EBUSY, "force with an admin hold on a member: EBUSY");
    is_str(err, "web1 is locked: admin hold by root (backup) (force overrides only a guest hold "
                "past its quota)", "  ...says why");
    is_int(w(&c, web, "0", err), 0, "web1 released");
    is_int(wm(&c, web, "hostB force", err), -EPERM, "force, the peer's guest hold within its quota: EPERM");
    ok(!strncmp(err, "domr-web1: guest hold (console session) is within its quota", 59),
       "  ...naming the member: %s", err);
    is_int(mock_req.calls, calls, "nothing started");
    domr->locks.h[HOLD_GUEST].since -= 3601;
    mock_cmd = "exit 0";
    is_int(wm(&c, web, "hostB force", err), 0, "force past the quota: started");
    ok(mock_req.force, "  ...the command gets --force");
    ok(events_have(&c, "domr-web1 migrate-forced to=hostB by=root uid=0 holder=guest") &&
           !events_have(&c, " web1 migrate-forced"),
       "  ...audited on the member whose hold is overridden");
    finish_migration(&c, web);
    strcpy(mock_node[1], "0");
    mock_pending = BE_EV_HOLDS;
    ctl_backend_event(&c);

    /* Running: one command, each member follows its own lines. */
    mock_cmd = "echo 'progress member=51 stage=2 name=iterative-pre-copy round=3 sent=1000 "
               "dirty_rate=40'; "
               "echo 'progress member=52 stage=3 name=stop-and-copy sent=2000'; "
               "echo 'progress stage=4 name=not-a-member'; "
               "echo 'progress member=99 stage=5 name=not-ours'; "
               "echo 'vmmig comigrate: text for people'; "
               "sleep 0.2; "
               "echo 'result member=51 ok host=hostB domid=61 total_ms=900 downtime_ms=30 "
               "stop_ms=1700000000100 resume_ms=1700000000130 sent=5000 rounds=3'; "
               "echo 'result member=52 ok host=hostB domid=62 total_ms=910 downtime_ms=33 "
               "stop_ms=1700000000103 resume_ms=1700000000136 sent=6000 rounds=2'; "
               "echo 'result ok group=51,52 stop_skew_ms=3 resume_skew_ms=6 total_ms=950'";
    uint64_t gen = domr->gen;
    is_int(wm(&c, web, "hostB", err), 0, "echo hostB > web1/migrate: accepted: %s", err);
    is_int((int)mock_req.nmembers, 2, "one command for two members");
    ok(mock_req.members[0] == 51 && mock_req.members[1] == 52,
       "  ...the written domain first, then its peer");
    ok(domr->mig_pid == 0 && domr->mig_lead == web, "  ...run by web1 for both");
    is_str(mig_of(&c, domr), "running hostB\n", "domr-web1: running hostB");
    ok(pump_member(&c, web, domr, "stage=3"), "domr-web1's progress line reaches domr-web1");
    ok(pump_member(&c, web, web, "round=3"), "web1's reaches web1");
    is_str(mig_of(&c, web), "running hostB stage=2 iterative-pre-copy round=3 sent=1000 dirty_rate=40\n",
           "web1: its own stage");
    is_str(mig_of(&c, domr), "running hostB stage=3 stop-and-copy sent=2000\n", "domr-web1: its own");
    ok(domr->gen > gen + 1, "every change wakes domr-web1's pollers");
    is_str(status_field(&c, domr, "group"), "web1 domr-web1", "status: group: the members");
    is_str(status_field(&c, domr, "stage"), "3 stop-and-copy", "status: stage");
    ok(events_have(&c, "domr-web1 migrate-stage to=hostB stage=3 name=stop-and-copy"),
       "event migrate-stage under the member's name");
    ok(!events_have(&c, "not-a-member") && !events_have(&c, "not-ours"),
       "progress without a member of ours goes nowhere");
    is_int(wm(&c, domr, "hostC", err), -EBUSY, "a second request on the peer: EBUSY");
    ok(strstr(err, "already running"), "  ...says so: %s", err);
    is_int(wm(&c, db, "hostC", err), 0, "a domain outside the group moves on its own");
    finish_migration(&c, db);
    finish_migration(&c, web);
    is_str(web->migration, "done hostB", "web1: done");
    is_str(domr->migration, "done hostB", "domr-web1: done");
    ok(!web->mig_lead && !domr->mig_lead && !web->ngrp, "the group job is over");
    is_str(status_field(&c, domr, "downtime_ms"), "33", "status: downtime_ms per member");
    is_str(status_field(&c, domr, "stop_ms"), "1700000000103", "status: stop_ms");
    is_str(status_field(&c, domr, "resume_ms"), "1700000000136", "status: resume_ms");
    is_str(status_field(&c, web, "downtime_ms"), "30", "status: web1's own downtime");
    is_str(status_field(&c, web, "group_stop_skew_ms"), "3", "status: group_stop_skew_ms");
    is_str(status_field(&c, domr, "group_resume_skew_ms"), "6", "status: group_resume_skew_ms");
    is_str(status_field(&c, domr, "group_stop_request_skew_ms"), "",
           "status: no group_stop_request_skew_ms when the group's result has none");
    ok(events_have(&c, "domr-web1 migrate-done to=hostB uuid=" ) &&
           events_have(&c, "domid=52 new_domid=62 total_ms=910 downtime_ms=33 stop_ms=1700000000103 "
                           "resume_ms=1700000000136"),
       "event migrate-done per member");
    ok(events_have(&c, "web1 comigrate-done to=hostB group=web1,domr-web1 stop_skew_ms=3 "
                       "resume_skew_ms=6 total_ms=950"),
       "event comigrate-done with the skews");

    /* One member fails before the commit point: the group failed, both stay. */
    mock_cmd = "echo 'progress member=51 stage=2 name=iterative-pre-copy'; "
               "echo 'progress member=52 stage=1 name=reservation'; "
               "echo 'result member=52 failed stage=1 domain=running-here "
               "why=\"no room for domr-web1 on hostB\"'; "
               "echo 'result failed group=51,52 stage=1 why=\"domr-web1: no room on hostB\"'; "
               "exit 1";
    is_int(wm(&c, domr, "hostB", err), 0, "written to the peer: started");
    ok(mock_req.members[0] == 52 && mock_req.members[1] == 51, "  ...the peer first this time");
    finish_migration(&c, domr);
    is_str(domr->migration, "failed hostB: stage 1: no room for domr-web1 on hostB",
           "the failing member: its own reason");
    is_str(web->migration, "failed hostB: stage 1: domr-web1: no room on hostB",
           "the other member, without a result line: the group's reason");
    ctl_refresh(&c);
    ok(ctl_find(&c, "web1") == web && ctl_find(&c, "domr-web1") == domr && !web->ghost &&
           !domr->ghost, "both stay here");
    ok(events_have(&c, "domr-web1 comigrate-failed to=hostB group=domr-web1,web1 "
                       "why=\"domr-web1: no room on hostB\""),
       "event comigrate-failed");

    /* The coordinator is killed: comigrate --recover for the same members. */
    mock_cmd = "echo 'progress member=51 stage=2 name=iterative-pre-copy'; "
               "echo 'vmmig comigrate: lost hostB'; kill -9 $$";
    mock_recover_cmd = "echo 'result member=51 failed stage=0 domain=running-here why=\"kept "
                       "running here\"'; echo 'result member=52 failed stage=0 "
                       "domain=left-suspended-here why=\"could not resume\"'; exit 1";
    is_int(wm(&c, web, "hostB", err), 0, "started");
    finish_migration(&c, web);
    ok(mock_req.recover && mock_req.nmembers == 2 && mock_req.members[0] == 51 &&
           mock_req.members[1] == 52, "the recovery got --recover and both members");
    is_str(web->migration, "failed hostB: stage 2: the agent was killed by signal 9: vmmig "
                           "comigrate: lost hostB; kept running here",
           "web1: killed, and what the recovery found");
    is_str(domr->migration, "failed hostB: stage 2: the agent was killed by signal 9: vmmig "
                            "comigrate: lost hostB; could not resume (the domain is left "
                            "suspended here)",
           "domr-web1: its own recovery result");
    ok(events_have(&c, "domr-web1 migrate-recover to=hostB why=\"stage 2: the agent was killed"),
       "event migrate-recover per member");
    mock_recover_cmd = saved_recover;

    /* cancel written to the peer stops the group's command. */
    mock_cmd = "echo 'progress member=51 stage=2 name=iterative-pre-copy'; "
               "echo 'progress member=52 stage=2 name=iterative-pre-copy'; exec sleep 30";
    is_int(wm(&c, web, "hostB", err), 0, "started");
    ok(pump_member(&c, web, domr, "stage=2"), "running");
    is_int(wm(&c, domr, "cancel", err), 0, "echo cancel > domr-web1/migrate");
    ok(events_have(&c, "domr-web1 migrate-cancel by=root uid=0 to=hostB group=web1,domr-web1"),
       "event migrate-cancel names the group");
    finish_migration(&c, web);
    is_str(web->migration, "failed hostB: stage 2: cancelled by root", "web1 cancelled");
    is_str(domr->migration, "failed hostB: stage 2: cancelled by root", "domr-web1 cancelled");
    is_int(wm(&c, domr, "cancel", err), -ESRCH, "nothing left to cancel");

    /* wait: until no member is held. */
    is_int(w(&c, domr, "1 reason=console", err), 0, "domr-web1 held");
    calls = mock_req.calls;
    is_int(wm(&c, web, "hostB wait=60", err), 0, "hostB wait=60 on web1: accepted");
    is_str(mig_of(&c, web), "waiting hostB: domr-web1 is locked: admin hold by root (console)\n",
           "web1 waits for its peer");
    is_str(mig_of(&c, domr), mig_of(&c, web), "  ...and so does domr-web1");
    ok(strcmp(status_field(&c, domr, "wait_until"), "never"), "status: wait_until on the peer too");
    ok(events_have(&c, "web1 migrate-waiting to=hostB by=root uid=0 timeout=60 why=\"domr-web1 is "
                       "locked: admin hold by root (console)\" group=web1,domr-web1"),
       "event migrate-waiting");
    is_int(wm(&c, domr, "hostC", err), -EBUSY, "another request on the peer: EBUSY");
    ok(strstr(err, "already waiting"), "  ...says so: %s", err);
    is_int(w(&c, web, "1 reason=other", err), 0, "web1 held too");
    is_int(w(&c, domr, "0", err), 0, "domr-web1 released");
    is_str(mig_of(&c, domr), "waiting hostB: web1 is locked: admin hold by root (other)\n",
           "the waiting line follows every member's holds");
    is_int(mock_req.calls, calls, "nothing started");
    mock_cmd = "exit 0";
    is_int(w(&c, web, "0", err), 0, "web1 released");
    ok(!web->waiting && web->mig_pid > 0, "the last release starts the group");
    ok(mock_req.nmembers == 2 && !mock_req.force, "  ...one command for both, without force");
    is_str(domr->migration, "running hostB", "domr-web1 runs");
    finish_migration(&c, web);
    ok(!strcmp(web->migration, "done hostB") && !strcmp(domr->migration, "done hostB"), "both done");
    is_int(w(&c, domr, "1 reason=long", err), 0, "domr-web1 held");
    time_t now = time(NULL);
    is_int(wm(&c, web, "hostB wait=5", err), 0, "hostB wait=5");
    ctl_tick(&c, now + 5);
    is_str(domr->migration, "failed hostB: still locked after 5 s: domr-web1 is locked: admin hold "
                            "by root (long)", "timeout: failed, naming the member");
    is_str(web->migration, domr->migration, "  ...for both");
    is_int(wm(&c, domr, "hostB wait", err), 0, "waiting again, written to the peer");
    is_int(wm(&c, web, "cancel", err), 0, "cancel on the other member");
    ok(!strcmp(web->migration, "failed hostB: cancelled by root while waiting") &&
           !strcmp(domr->migration, web->migration) && !domr->waiting && !web->mig_lead,
       "the waiting group is cancelled");
    is_int(wm(&c, web, "hostB wait", err), 0, "waiting again");
    is_int(wp(&c, web, "", err), 0, "the group is dissolved while it waits");
    ctl_tick(&c, time(NULL));
    is_str(domr->migration, "failed hostB: the peer group changed while waiting (ask again)",
           "the waiting job ends");
    is_int(w(&c, domr, "0", err), 0, "released");
    is_int(wp(&c, web, "domr-web1", err), 0, "grouped again");

    /* A member that went away while the group waited. */
    is_int(w(&c, domr, "1 reason=going", err), 0, "held");
    is_int(wm(&c, web, "hostB wait", err), 0, "waiting");
    del_vm(52);
    ctl_refresh(&c);
    is_str(web->migration, "failed hostB: domr-web1 went away while waiting",
           "the member's departure ends the group's wait");
    ok(!web->waiting && !web->ngrp, "  ...nothing left waiting");
    is_int(wm(&c, web, "hostB", err), -ENXIO, "a peer not on this host: ENXIO");
    ok(strstr(err, u2), "  ...naming it: %s", err);
    add_vm(52, "domr-web1", u2);
    ctl_refresh(&c);
    domr = ctl_find(&c, "domr-web1");
    is_int(w(&c, domr, "0", err), 0, "back, and released");

    /* Moved: both leave forwarding entries that tell how it went (member= may
     * also follow ok). */
    mock_cmd = "echo 'result member=51 ok host=hostB domid=61 downtime_ms=30 stop_ms=100 "
               "resume_ms=130'; echo 'result ok member=52 host=hostB domid=62 downtime_ms=31 "
               "stop_ms=102 resume_ms=131'; echo 'result ok group=51,52 stop_skew_ms=2 "
               "stop_request_skew_ms=1 resume_skew_ms=1 total_ms=700'";
    is_int(wm(&c, web, "hostB", err), 0, "started");
    del_vm(51);
    del_vm(52);
    ctl_refresh(&c);
    ok(ctl_find(&c, "domr-web1") == domr && !domr->ghost, "a member gone mid-job stays listed");
    finish_migration(&c, web);
    struct domain *g1 = ctl_find(&c, "web1"), *g2 = ctl_find(&c, "domr-web1");
    ok(g1 && g1->ghost && g2 && g2->ghost, "both are forwarding entries");
    if (g2) {
        is_str(status_field(&c, g2, "downtime_ms"), "31", "forwarding entry: downtime_ms");
        is_str(status_field(&c, g2, "group"), "web1 domr-web1", "  ...group");
        is_str(status_field(&c, g2, "group_resume_skew_ms"), "1", "  ...group_resume_skew_ms");
        is_str(status_field(&c, g2, "group_stop_request_skew_ms"), "1",
               "  ...group_stop_request_skew_ms");
    }
    ok(events_have(&c, "comigrate-done to=hostB group=web1,domr-web1 stop_skew_ms=2 "
                       "stop_request_skew_ms=1 resume_skew_ms=1 total_ms=700"),
       "event comigrate-done with the stop request skew");
    {
    }
    is_int(mock_stray, 0, "no backend call for an unknown domain");
    close_fresh(&c, dir);
}

/* The admin hold is mirrored into the hypervisor's lock: set, released,
 * and set again for a domain that arrives with an admin hold. */
static void test_hypervisor_lock(void)
{
    char dir[64], policy[128], err[300];
    struct ctl c;
    const char *u1 = "00000000-0000-0000-0000-0000000000f1";
    const char *u2 = "00000000-0000-0000-0000-0000000000f2";

    mock_reset();
    mock_hyp_admin = -1, mock_hyp_calls = 0;
    add_vm(61, "hyp", u1);
    open_fresh(&c, dir, policy, sizeof policy);
    struct domain *d = ctl_find(&c, "hyp");
    is_int(mock_hyp_calls, 0, "no admin hold: the hypervisor's lock is left alone");
    is_int(w(&c, d, "1 reason=maintenance", err), 0, "admin hold");
    is_int(mock_hyp_admin, 1, "  ...set in the hypervisor too");
    int calls = mock_hyp_calls;
    is_int(w(&c, d, "1 reason=still", err), 0, "admin hold again");
    is_int(mock_hyp_calls, calls, "  ...no second call while it is set");
    is_int(w(&c, d, "0", err), 0, "released");
    is_int(mock_hyp_admin, 0, "  ...released in the hypervisor");
    struct domstate st = {0};
    st.admin.active = true;
    st.admin.since = time(NULL);
    strcpy(st.admin.by, "root");
    strcpy(st.admin.reason, "came along");
    is_int(state_save(dir, u2, &st), 0, "a record with an admin hold, before its domain");
    add_vm(62, "arrived", u2);
    ctl_refresh(&c);
    ok(ctl_find(&c, "arrived") && mock_hyp_admin == 1,
       "a domain that arrives with an admin hold gets it in the hypervisor");
    close_fresh(&c, dir);
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
    mock_cmd = "exit 0";
    is_int(wm(&c, web, "localhost", err), 0, "a grouped domain moves with its group: %s", err);
    is_int((int)mock_req.nmembers, 2, "  ...one command for both members");
    finish_migration(&c, web);
    ok(!strcmp(web->migration, "done localhost") && !strcmp(domr->migration, "done localhost"),
       "  ...both done: %s / %s", web->migration, domr->migration);
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
    is_str(solo->migration, "failed localhost: cancelled by root", "cancelled: says who");
    ok(events_have(&c, "db migrate-cancel by=root uid=0 to=localhost"), "event migrate-cancel");

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

    test_requests();
    test_progress();
    test_algorithm_report();
    test_stream_mode();
    test_wait_force();
    test_forwarding();
    test_guest_since();
    test_hypervisor_lock();
    test_group();
    return done_testing();
}
