/* vmmigfs: the control filesystem.  Each FUSE operation is dispatched by path
 * to a small per-file handler (lxcfs style); content is generated on read so
 * st_size is real and `cat` works; control files use direct_io.  One thread:
 * the loop below polls the FUSE channel, the backend's watch fd, migration
 * output and the privileged helper. */
#define _GNU_SOURCE
#define FUSE_USE_VERSION 35
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <getopt.h>
#include <grp.h>
#include <poll.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "applet.h"
#include "control.h"
#include "spawn.h"

static const char vmmigfs_help[] =
    "usage: vmmigfs [OPTIONS] MOUNTPOINT\n"
    "\n"
    "Mount the vmmig control filesystem: a directory per domain with the files\n"
    "lock, migrate, peer and status, and the top-level files host, backend,\n"
    "policy and events.  Drive it with echo and cat; see vmmigfs(8).\n"
    "\n"
    "  -f, --foreground      stay in the foreground\n"
    "  -d, --debug           print every FUSE request (implies -f)\n"
    "  -o OPT[,OPT...]       extra FUSE mount options\n"
    "      --backend NAME    hypervisor backend: xen, qemu (domains of vmmig create;\n"
    "                        guest holds over their virtio-serial port) or auto\n"
    "                        (default: xen on a dom0, qemu with a QEMU run directory)\n"
    "      --state-dir DIR   where holds are kept (default $VMMIG_STATE_DIR or " DEFAULT_STATE_DIR ")\n"
    "      --policy FILE     policy file (default $VMMIG_POLICY or " DEFAULT_POLICY ")\n"
    "      --keep-caps       do not drop capabilities after mounting\n"
    "  -l, --listen [ADDR:]PORT  receive migrations on this TCP port (each\n"
    "                        connection runs 'vmmig receive'; default: no listener)\n"
    "  -h, --help            show this help\n";

enum fkind { FK_ROOT, FK_DOMDIR, FK_HOST, FK_BACKEND, FK_POLICY, FK_EVENTS, FK_LOCK, FK_MIGRATE, FK_PEER,
             FK_STATUS };

struct file_def {
    const char *name;
    enum fkind kind;
    bool writable;
};

static const struct file_def top_files[] = {
    {"host", FK_HOST, false},
    {"backend", FK_BACKEND, false},
    {"policy", FK_POLICY, true},
    {"events", FK_EVENTS, false},
};
static const struct file_def dom_files[] = {
    {"lock", FK_LOCK, true},
    {"migrate", FK_MIGRATE, true},
    {"peer", FK_PEER, true},
    {"status", FK_STATUS, false},
};

/* Per-open state: what was last shown, to answer poll() with "changed since". */
struct open_file {
    enum fkind kind;
    uint32_t domid;
    uint64_t gen_seen;
    struct strbuf content;
    struct fuse_pollhandle *ph;
};

static struct {
    struct ctl ctl;
    struct spawner helper;
    char hostname[256];
    gid_t admin_gid;
    time_t started;
    struct open_file *pollers[256];
    size_t npollers;
    int listen_fd;            /* incoming migrations; -1 when not listening */
    char self[4096];          /* this binary, to run `vmmig receive` */
    const char *state_dir, *policy;
    struct incoming {         /* running `vmmig receive` agents and their stderr */
        pid_t pid;
        int fd;
        struct strbuf line;
    } incoming[8];
} fs; /* zero here (listen_fd set in vmmigfs_main): an initialised copy would cost 12 KB */

static struct ctl *C(void)
{
    return &fs.ctl;
}

/* Resolve a path to the file it names.  Returns 0 or -ENOENT. */
static int resolve(const char *path, const struct file_def **def, struct domain **dom,
                   enum fkind *kind)
{
    char name[128];
    const char *rest;
    size_t n;

    *def = NULL;
    *dom = NULL;
    if (!strcmp(path, "/")) {
        *kind = FK_ROOT;
        return 0;
    }
    path++;
    rest = strchr(path, '/');
    n = rest ? (size_t)(rest - path) : strlen(path);
    if (n >= sizeof name)
        return -ENOENT;
    memcpy(name, path, n);
    name[n] = 0;
    if (!rest) {
        for (size_t i = 0; i < ARRAY_SIZE(top_files); i++)
            if (!strcmp(name, top_files[i].name)) {
                *def = &top_files[i];
                *kind = top_files[i].kind;
                return 0;
            }
    }
    *dom = ctl_find(C(), name);
    if (!*dom)
        return -ENOENT;
    if (!rest || !rest[1]) {
        *kind = FK_DOMDIR;
        return 0;
    }
    for (size_t i = 0; i < ARRAY_SIZE(dom_files); i++)
        if (!strcmp(rest + 1, dom_files[i].name)) {
            *def = &dom_files[i];
            *kind = dom_files[i].kind;
            return 0;
        }
    return -ENOENT;
}

static uint64_t gen_of(enum fkind kind, struct domain *d)
{
    if (kind == FK_EVENTS)
        return C()->ev.gen;
    if (d)
        return d->gen;
    return C()->gen;
}

static void show(enum fkind kind, struct domain *d, struct strbuf *sb)
{
    struct ctl *c = C();

    sb_reset(sb);
    switch (kind) {
    case FK_HOST:
        sb_printf(sb, "%s\n", fs.hostname);
        break;
    case FK_BACKEND:
        sb_printf(sb, "%s\n", c->ops->name);
        break;
    case FK_POLICY:
        policy_format(&c->pol, sb);
        break;
    case FK_EVENTS:
        events_format(&c->ev, sb);
        break;
    case FK_LOCK:
        ctl_format_lock(c, d, sb);
        break;
    case FK_MIGRATE:
        ctl_format_migration(c, d, sb);
        break;
    case FK_PEER:
        ctl_format_peers(c, d, sb);
        break;
    case FK_STATUS:
        ctl_format_status(c, d, sb);
        break;
    default:
        break;
    }
    if (!sb->s)
        sb_add(sb, "", 0);
}

static struct caller current_caller(void)
{
    struct fuse_context *fc = fuse_get_context();
    struct caller who = {.uid = fc->uid, .gid = fc->gid, .pid = fc->pid};
    return who;
}

/* ---- FUSE operations -------------------------------------------------------- */

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)conn;
    /* Content changes behind the kernel's back: never cache it. */
    cfg->direct_io = 1;
    cfg->kernel_cache = 0;
    /* Names are cached for a second; removals and renames invalidate them at once. */
    cfg->entry_timeout = 1.0;
    cfg->attr_timeout = 0;
    cfg->negative_timeout = 0;
    return NULL;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    const struct file_def *def;
    struct domain *d;
    enum fkind kind;
    int rc;

    (void)fi;
    rc = resolve(path, &def, &d, &kind);
    if (rc)
        return rc;
    memset(st, 0, sizeof *st);
    st->st_mtime = st->st_ctime = st->st_atime = fs.started;
    if (kind == FK_ROOT || kind == FK_DOMDIR) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
        return 0;
    }
    struct strbuf sb = {0};
    show(kind, d, &sb);
    st->st_size = (off_t)sb.len;
    sb_free(&sb);
    st->st_nlink = 1;
    st->st_mode = S_IFREG | (def->writable ? 0644 : 0444);
    if (def->writable && fs.admin_gid != (gid_t)-1) {
        st->st_mode |= 0020;
        st->st_gid = fs.admin_gid;
    }
    st->st_mtime = time(NULL);
    return 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    const struct file_def *def;
    struct domain *d;
    enum fkind kind;
    int rc;

    (void)off;
    (void)fi;
    (void)flags;
    rc = resolve(path, &def, &d, &kind);
    if (rc)
        return rc;
    if (kind != FK_ROOT && kind != FK_DOMDIR)
        return -ENOTDIR;
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    if (kind == FK_ROOT) {
        for (size_t i = 0; i < ARRAY_SIZE(top_files); i++)
            fill(buf, top_files[i].name, NULL, 0, 0);
        for (size_t i = 0; i < C()->ndoms; i++)
            fill(buf, C()->doms[i]->vm.name, NULL, 0, 0);
    } else {
        for (size_t i = 0; i < ARRAY_SIZE(dom_files); i++)
            fill(buf, dom_files[i].name, NULL, 0, 0);
    }
    return 0;
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
    const struct file_def *def;
    struct domain *d;
    enum fkind kind;
    struct caller who = current_caller();
    int rc;

    rc = resolve(path, &def, &d, &kind);
    if (rc)
        return rc;
    if (!def)
        return -EISDIR;
    if ((fi->flags & O_ACCMODE) != O_RDONLY) {
        if (!def->writable)
            return -EACCES;
        if (!ctl_may_write(C(), &who)) {
            ctl_reject(C(), d ? d->vm.name : NULL, def->name, &who,
                       "permission denied: needs CAP_SYS_ADMIN or the policy's admin_group");
            return -EACCES;
        }
    }
    struct open_file *of = xzalloc(sizeof *of);
    of->kind = kind;
    of->domid = d ? d->vm.domid : 0;
    of->gen_seen = gen_of(kind, d);
    fi->fh = (uint64_t)(uintptr_t)of;
    fi->direct_io = 1;
    return 0;
}

static struct domain *open_domain(struct open_file *of)
{
    if (of->kind < FK_LOCK)
        return NULL;
    for (size_t i = 0; i < C()->ndoms; i++)
        if (C()->doms[i]->vm.domid == of->domid)
            return C()->doms[i];
    return NULL;
}

static int op_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
    struct domain *d = open_domain(of);

    (void)path;
    if (of->kind >= FK_LOCK && !d)
        return -ENODEV; /* the domain went away while the file was open */
    /* Like sysfs: reading from the start shows the current state. */
    if (off == 0 || !of->content.s) {
        show(of->kind, d, &of->content);
        of->gen_seen = gen_of(of->kind, d);
    }
    if ((size_t)off >= of->content.len)
        return 0;
    if (size > of->content.len - (size_t)off)
        size = of->content.len - (size_t)off;
    memcpy(buf, of->content.s + off, size);
    return (int)size;
}

static int op_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
    struct domain *d = open_domain(of);
    struct caller who = current_caller();
    char err[400] = "";
    int rc;

    (void)path;
    (void)off;
    if (of->kind >= FK_LOCK && !d)
        return -ENODEV;
    if (size > LOCK_REQUEST_MAX) {
        snprintf(err, sizeof err, "write too long (%zu bytes, at most %d)", size, LOCK_REQUEST_MAX);
        ctl_reject(C(), d ? d->vm.name : NULL,
                   of->kind == FK_POLICY ? "policy" : of->kind == FK_LOCK ? "lock"
                                                   : of->kind == FK_MIGRATE ? "migrate" : "peer",
                   &who, err);
        return -EINVAL;
    }
    switch (of->kind) {
    case FK_LOCK:
        rc = ctl_lock_write(C(), d, buf, size, &who, err, sizeof err);
        break;
    case FK_MIGRATE:
        rc = ctl_migrate_write(C(), d, buf, size, &who, err, sizeof err);
        break;
    case FK_POLICY:
        rc = ctl_policy_write(C(), buf, size, &who, err, sizeof err);
        if (!rc)
            fs.admin_gid = (gid_t)-1;
        break;
    case FK_PEER:
        rc = ctl_peer_write(C(), d, buf, size, &who, err, sizeof err);
        break;
    default:
        rc = -EACCES;
        break;
    }
    if (of->kind == FK_POLICY && C()->pol.admin_group[0]) {
        struct group *g = getgrnam(C()->pol.admin_group);
        fs.admin_gid = g ? g->gr_gid : (gid_t)-1;
    }
    return rc ? rc : (int)size;
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    const struct file_def *def;
    struct domain *d;
    enum fkind kind;

    (void)size;
    (void)fi;
    /* `echo x > file` truncates first; control files have nothing to truncate. */
    int rc = resolve(path, &def, &d, &kind);
    if (rc)
        return rc;
    return def && def->writable ? 0 : -EACCES;
}

static void poller_drop(struct open_file *of)
{
    for (size_t i = 0; i < fs.npollers; i++)
        if (fs.pollers[i] == of) {
            fs.pollers[i] = fs.pollers[--fs.npollers];
            break;
        }
    if (of->ph) {
        fuse_pollhandle_destroy(of->ph);
        of->ph = NULL;
    }
}

static int op_poll(const char *path, struct fuse_file_info *fi, struct fuse_pollhandle *ph,
                   unsigned *reventsp)
{
    struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
    struct domain *d = open_domain(of);

    (void)path;
    if (of->kind >= FK_LOCK && !d) {
        if (ph)
            fuse_pollhandle_destroy(ph);
        *reventsp = POLLERR | POLLHUP;
        return 0;
    }
    /* Ready when something changed since this descriptor last read (sysfs style). */
    if (gen_of(of->kind, d) != of->gen_seen) {
        *reventsp = POLLIN | POLLRDNORM | POLLPRI;
        if (ph)
            fuse_pollhandle_destroy(ph);
        return 0;
    }
    *reventsp = 0;
    if (ph) {
        poller_drop(of);
        if (fs.npollers < ARRAY_SIZE(fs.pollers)) {
            of->ph = ph;
            fs.pollers[fs.npollers++] = of;
        } else {
            fuse_pollhandle_destroy(ph);
            *reventsp = POLLIN; /* too many pollers: let it re-read rather than hang */
        }
    }
    return 0;
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
    struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;

    (void)path;
    poller_drop(of);
    sb_free(&of->content);
    free(of);
    return 0;
}

static int op_opendir(const char *path, struct fuse_file_info *fi)
{
    const struct file_def *def;
    struct domain *d;
    enum fkind kind;

    (void)fi;
    int rc = resolve(path, &def, &d, &kind);
    if (rc)
        return rc;
    return def ? -ENOTDIR : 0;
}

static const struct fuse_operations vmmigfs_ops = {
    .init = op_init,
    .getattr = op_getattr,
    .readdir = op_readdir,
    .opendir = op_opendir,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .truncate = op_truncate,
    .poll = op_poll,
    .release = op_release,
};

/* Wake every poller whose file changed. */
static void notify_pollers(void)
{
    for (size_t i = 0; i < fs.npollers;) {
        struct open_file *of = fs.pollers[i];
        struct domain *d = open_domain(of);
        if (gen_of(of->kind, d) != of->gen_seen || (of->kind >= FK_LOCK && !d)) {
            fuse_notify_poll(of->ph);
            fuse_pollhandle_destroy(of->ph);
            of->ph = NULL;
            fs.pollers[i] = fs.pollers[--fs.npollers];
            continue;
        }
        i++;
    }
}

/* ---- capabilities ----------------------------------------------------------- */

/* Nothing the daemon does after mounting needs a capability: xenstore and the
 * hypervisor are reached through descriptors already open, the state is owned
 * by our uid, and commands that need privilege go through the helper. */
static int drop_capabilities(void)
{
    cap_t none = cap_init();
    int rc = 0;

    for (cap_value_t v = 0; v <= CAP_LAST_CAP; v++)
        if (cap_drop_bound(v) < 0 && errno != EINVAL) {
            rc = -errno;
            break;
        }
    if (!rc && CAP_AMBIENT_SUPPORTED() && cap_reset_ambient() < 0)
        rc = -errno;
    if (!rc && cap_set_proc(none) < 0)
        rc = -errno;
    if (!rc && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        rc = -errno;
    cap_free(none);
    return rc;
}

/* ---- main loop -------------------------------------------------------------- */

static struct fuse *fs_fuse;

static void invalidate_name(void *arg, const char *name)
{
    char path[128];
    (void)arg;
    snprintf(path, sizeof path, "/%s", name);
    if (fs_fuse)
        fuse_invalidate_path(fs_fuse, path);
}

/* ---- incoming migrations ---------------------------------------------------- */

static int listen_on(const char *spec, char *err, size_t errlen)
{
    char host[256] = "", port[16];
    const char *colon = strrchr(spec, ':');
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
    long v;
    int fd, r, one = 1;

    if (colon) {
        snprintf(host, sizeof host, "%.*s", (int)(colon - spec), spec);
        if (host[0] == '[' && host[strlen(host) - 1] == ']') {
            memmove(host, host + 1, strlen(host));
            host[strlen(host) - 1] = 0;
        }
    }
    snprintf(port, sizeof port, "%s", colon ? colon + 1 : spec);
    if (parse_long(port, 1, 65535, &v)) {
        snprintf(err, errlen, "bad --listen '%s' (expected [ADDR:]PORT)", spec);
        return -EINVAL;
    }
    r = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (r) {
        snprintf(err, errlen, "--listen %s: %s", spec, gai_strerror(r));
        return -EINVAL;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 8)) {
        r = -errno;
        snprintf(err, errlen, "cannot listen on %s: %s", spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return r;
    }
    freeaddrinfo(res);
    return fd;
}

static void incoming_accept(void)
{
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    char addr[INET6_ADDRSTRLEN + 8] = "?";
    int conn = accept4(fs.listen_fd, (struct sockaddr *)&sa, &sl, SOCK_CLOEXEC);
    struct incoming *in = NULL;

    if (conn < 0)
        return;
    if (sa.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, addr, sizeof addr);
    else if (sa.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, addr, sizeof addr);
    for (size_t i = 0; i < ARRAY_SIZE(fs.incoming); i++)
        if (!fs.incoming[i].pid) {
            in = &fs.incoming[i];
            break;
        }
    if (!in) {
        events_emit(&C()->ev, NULL, "incoming-refused", "from=%s why=\"too many at once\"", addr);
        close(conn);
        return;
    }
    char timeout[32];
    snprintf(timeout, sizeof timeout, "--timeout=%ld", C()->pol.migrate_timeout);
    char *argv[] = {fs.self, "receive", "--state-dir", (char *)fs.state_dir, "--policy",
                    (char *)fs.policy, timeout, NULL};
    int r = spawner_run_io(&fs.helper, argv, conn, &in->pid, &in->fd);
    close(conn);
    if (r) {
        events_emit(&C()->ev, NULL, "incoming-failed", "from=%s why=\"%s\"", addr, strerror(-r));
        in->pid = 0;
        return;
    }
    events_emit(&C()->ev, NULL, "incoming", "from=%s pid=%d", addr, (int)in->pid);
}

/* The receive agent's messages become events on this host. */
static void incoming_io(struct incoming *in)
{
    char buf[2048];
    ssize_t r;

    while ((r = read(in->fd, buf, sizeof buf)) > 0) {
        sb_add(&in->line, buf, (size_t)r);
        char *nl;
        while (in->line.s && (nl = memchr(in->line.s, '\n', in->line.len))) {
            *nl = 0;
            const char *msg = in->line.s;
            if (!strncmp(msg, "vmmig receive: ", 15))
                msg += 15;
            if (*msg)
                events_emit(&C()->ev, NULL, "incoming", "pid=%d msg=\"%s\"", (int)in->pid, msg);
            size_t used = (size_t)(nl - in->line.s) + 1;
            memmove(in->line.s, in->line.s + used, in->line.len - used + 1);
            in->line.len -= used;
        }
        if (in->line.len > 4096)
            sb_reset(&in->line);
    }
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        close(in->fd);
        sb_free(&in->line);
        memset(in, 0, sizeof *in);
        in->fd = -1;
        ctl_refresh(C()); /* the new domain has its final name now */
    }
}

static void drain_helper(void)
{
    pid_t pid;
    int status;

    while (spawner_next_exit(&fs.helper, &pid, &status) == 1)
        ctl_migration_exited(C(), pid, status);
}

static int run_loop(struct fuse_session *se)
{
    struct fuse_buf buf = {0};
    time_t last_tick = 0, last_refresh = time(NULL), dirty_since = 0;
    int rc = 0;

    while (!fuse_session_exited(se)) {
        struct pollfd p[64];
        struct domain *migrating[64];
        int n = 0, nm = 0;

        p[n++] = (struct pollfd){.fd = fuse_session_fd(se), .events = POLLIN};
        p[n++] = (struct pollfd){.fd = C()->ops->event_fd(C()->be), .events = POLLIN};
        p[n++] = (struct pollfd){.fd = fs.helper.sock, .events = POLLIN};
        p[n++] = (struct pollfd){.fd = fs.listen_fd, .events = POLLIN};
        int first_in = n;
        for (size_t i = 0; i < ARRAY_SIZE(fs.incoming); i++)
            p[n++] = (struct pollfd){.fd = fs.incoming[i].pid ? fs.incoming[i].fd : -1,
                                     .events = POLLIN};
        int first_mig = n;
        for (size_t i = 0; i < C()->ndoms && n < (int)ARRAY_SIZE(p); i++)
            if (C()->doms[i]->mig_fd >= 0) {
                migrating[nm++] = C()->doms[i];
                p[n++] = (struct pollfd){.fd = C()->doms[i]->mig_fd, .events = POLLIN};
            }

        /* Dirty records are saved when the loop is idle (or within a second
         * under load), so a reader woken by a change is answered first. */
        bool dirty = false;
        for (size_t i = 0; i < C()->ndoms; i++)
            dirty |= C()->doms[i]->dirty;
        if (dirty && !dirty_since)
            dirty_since = time(NULL);
        int r = poll(p, (nfds_t)n, dirty ? 5 : 250);
        if (r < 0 && errno != EINTR) {
            rc = -errno;
            break;
        }
        if (r > 0 && p[0].revents) {
            int res = fuse_session_receive_buf(se, &buf);
            if (res == -EINTR || res == -EAGAIN)
                continue;
            if (res <= 0) {
                if (res < 0 && res != -ENODEV)
                    rc = res;
                break; /* unmounted */
            }
            fuse_session_process_buf(se, &buf);
        }
        if (r > 0 && p[1].revents)
            ctl_backend_event(C());
        if (r > 0 && p[2].revents) {
            if (p[2].revents & (POLLHUP | POLLERR)) {
                syslog(LOG_ERR, "privileged helper died; exiting");
                rc = -EPIPE;
                break;
            }
            drain_helper();
        }
        if (r > 0 && p[3].revents)
            incoming_accept();
        for (size_t i = 0; i < ARRAY_SIZE(fs.incoming); i++)
            if (p[first_in + (int)i].revents && fs.incoming[i].pid)
                incoming_io(&fs.incoming[i]);
        for (int i = 0; i < nm; i++)
            if (p[first_mig + i].revents)
                ctl_migration_io(C(), migrating[i]);
        if (fs.helper.npending)
            drain_helper();

        time_t now = time(NULL);
        if (now != last_tick) {
            ctl_tick(C(), now);
            last_tick = now;
        }
        /* Renames (xl rename, an incoming migration taking its final name) fire no watch. */
        if (now - last_refresh >= 2) {
            ctl_refresh(C());
            last_refresh = now;
        }
        notify_pollers();
        if (dirty_since && (r == 0 || now - dirty_since >= 1)) {
            ctl_flush(C());
            dirty_since = 0;
        }
    }
    free(buf.mem);
    return rc;
}

/* ---- detaching -------------------------------------------------------------- */

static int ready_fd = -1;

/* Detach before anything starts threads or opens connections: libxenstore's
 * reader thread (started by the first watch) would not survive a later fork.
 * The parent returns when the child says the mount is up, with its status. */
static void detach(void)
{
    int p[2];
    pid_t pid;

    /* A daemon keeps none of its caller's descriptors but stdio (until ready). */
    for (int fd = 3; fd < 1024; fd++)
        close(fd);
    if (pipe2(p, O_CLOEXEC) < 0)
        perror_exit("pipe");
    pid = fork();
    if (pid < 0)
        perror_exit("fork");
    if (pid > 0) {
        char st = 1;
        close(p[1]);
        if (read(p[0], &st, 1) != 1)
            st = 1; /* the child died: it said why on stderr */
        _exit(st ? 1 : 0);
    }
    close(p[0]);
    ready_fd = p[1];
    setsid();
}

static void report_ready(void)
{
    int null;

    if (ready_fd < 0)
        return;
    if (chdir("/") < 0)
        perror_msg("chdir /");
    null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2)
            close(null);
    }
    (void)!write(ready_fd, "", 1);
    close(ready_fd);
    ready_fd = -1;
}

static int vmmigfs_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"foreground", no_argument, 0, 'f'}, {"debug", no_argument, 0, 'd'},
        {"backend", required_argument, 0, 'B'}, {"state-dir", required_argument, 0, 'S'},
        {"policy", required_argument, 0, 'P'}, {"keep-caps", no_argument, 0, 'K'},
        {"listen", required_argument, 0, 'l'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *listen_spec = NULL;
    const char *backend = "auto";
    const char *state_dir = env_default("VMMIG_STATE_DIR", DEFAULT_STATE_DIR);
    const char *policy = env_default("VMMIG_POLICY", DEFAULT_POLICY);
    bool foreground = false, debug = false, keep_caps = false;
    struct strbuf mopts = {0};
    char err[512];
    struct fuse *fuse = NULL;
    int opt, rc = 1;

    fs.listen_fd = -1;
    sb_printf(&mopts, "allow_other,fsname=vmmigfs,subtype=vmmigfs");
    while ((opt = getopt_long(argc, argv, "fdo:l:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'l': listen_spec = optarg; break;
        case 'f': foreground = true; break;
        case 'd': debug = foreground = true; break;
        case 'o': sb_printf(&mopts, ",%s", optarg); break;
        case 'B': backend = optarg; break;
        case 'S': state_dir = optarg; break;
        case 'P': policy = optarg; break;
        case 'K': keep_caps = true; break;
        case 'h': help_exit_ok(&applet_vmmigfs);
        default: usage_exit(&applet_vmmigfs, "unknown option");
        }
    }
    if (optind + 1 != argc)
        usage_exit(&applet_vmmigfs, optind == argc ? "missing MOUNTPOINT" : "too many arguments");
    const char *mnt = argv[optind];
    char mntabs[4096];
    if (!realpath(mnt, mntabs))
        perror_exit("%s", mnt);

    /* The daemon changes to /: relative paths must be resolved first. */
    char state_abs[4096], policy_abs[4096];
    if (mkdir_p(state_dir, 0755) == 0 && realpath(state_dir, state_abs))
        state_dir = state_abs;
    if (policy[0] != '/' && getcwd(policy_abs, sizeof policy_abs - strlen(policy) - 2)) {
        strcat(policy_abs, "/");
        strcat(policy_abs, policy);
        policy = policy_abs;
    }
    if (!foreground)
        detach();
    prctl(PR_SET_NAME, "vmmigfs");
    for (size_t i = 0; i < ARRAY_SIZE(fs.incoming); i++)
        fs.incoming[i].fd = -1;
    fs.state_dir = state_dir;
    fs.policy = policy;
    {
        ssize_t r = readlink("/proc/self/exe", fs.self, sizeof fs.self - 1);
        fs.self[r > 0 ? r : 0] = 0;
        const char *env = getenv("VMMIG_RECEIVE");
        if (env && *env)
            strlcpy0(fs.self, env, sizeof fs.self);
    }
    if (listen_spec) {
        fs.listen_fd = listen_on(listen_spec, err, sizeof err);
        if (fs.listen_fd < 0)
            error_exit("%s", err);
    }
    openlog("vmmigfs", LOG_PID, LOG_DAEMON);
    if (ctl_open(&fs.ctl, backend, state_dir, policy, err, sizeof err))
        error_exit("%s", err);
    fs.ctl.ev.use_syslog = 1;
    gethostname(fs.hostname, sizeof fs.hostname - 1);
    fs.started = time(NULL);
    fs.admin_gid = (gid_t)-1;
    if (fs.ctl.pol.admin_group[0]) {
        struct group *g = getgrnam(fs.ctl.pol.admin_group);
        if (g)
            fs.admin_gid = g->gr_gid;
    }

    rc = spawner_start(&fs.helper, mntabs);
    if (rc) {
        errno = -rc;
        perror_exit("cannot start the privileged helper");
    }
    fs.ctl.run = (struct runner){.start = spawner_run, .stop = spawner_stop, .arg = &fs.helper};

    char *fargv[] = {argv[0], "-o", mopts.s, debug ? "-d" : NULL, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(debug ? 4 : 3, fargv);
    fuse = fuse_new(&args, &vmmigfs_ops, sizeof vmmigfs_ops, NULL);
    fuse_opt_free_args(&args);
    if (!fuse) {
        error_msg("cannot set up FUSE (bad -o option?)");
        rc = 1;
        goto out;
    }
    if (fuse_mount(fuse, mntabs)) {
        error_msg("cannot mount on %s", mntabs);
        fuse_destroy(fuse);
        fuse = NULL;
        rc = 1;
        goto out;
    }
    if (!keep_caps && (rc = drop_capabilities())) {
        errno = -rc;
        perror_msg("cannot drop capabilities");
        rc = 1;
        goto out;
    }
    events_emit(&fs.ctl.ev, NULL, "mounted", "at=%s backend=%s domains=%zu listen=%s", mntabs,
                fs.ctl.ops->name, fs.ctl.ndoms, listen_spec ? listen_spec : "off");
    report_ready();
    fs_fuse = fuse;
    fs.ctl.name_gone = invalidate_name;
    struct fuse_session *se = fuse_get_session(fuse);
    if (fuse_set_signal_handlers(se)) {
        rc = 1;
        goto out;
    }
    rc = run_loop(se);
    fuse_remove_signal_handlers(se);
    if (rc) {
        errno = -rc;
        perror_msg("stopped");
    }
    rc = rc ? 1 : 0;
out:
    spawner_unmount_and_quit(&fs.helper);
    if (fuse) {
        /* Already unmounted by the helper: this only closes the channel and frees. */
        fuse_unmount(fuse);
        fuse_destroy(fuse);
    }
    ctl_close(&fs.ctl);
    sb_free(&mopts);
    return rc;
}

const struct applet applet_vmmigfs = {
    .name = "vmmigfs",
    .main = vmmigfs_main,
    .summary = "mount the control filesystem (also: vmmig fs)",
    .help = vmmigfs_help,
};
