/*
 * xsfake - create and destroy fake Xen domains for vmmig's hypervisor-less
 * tests: keeps $XENSHIM_DOMAINS (read by xenshim.so) and the userspace
 * xenstored ($XENSTORED_PATH) in step, the way libxl would.
 *
 *   xsfake add DOMID NAME UUID [MEM_KIB VCPUS]
 *   xsfake del DOMID
 *   xsfake state DOMID running|paused|blocked|shutdown|crashed|dying
 *   xsfake list
 *
 * Exit codes: 0 ok, 1 failure, 2 usage.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <xenstore.h>

#define DOMID_MAX 32751            /* DOMID_FIRST_RESERVED - 1 */
#define MAX_LINES 1024

static const char *prog = "xsfake";

static void die(int code, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 2, 3)));
static void die(int code, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: %s add DOMID NAME UUID [MEM_KIB VCPUS]\n"
        "       %s del DOMID\n"
        "       %s state DOMID running|paused|blocked|shutdown|crashed|dying\n"
        "       %s list\n"
        "Keeps $XENSHIM_DOMAINS and the xenstored at $XENSTORED_PATH in step.\n",
        prog, prog, prog, prog);
}

static void usage_error(const char *fmt, ...)
    __attribute__((noreturn, format(printf, 1, 2)));
static void usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    usage(stderr);
    exit(2);
}

/* ------------------------------------------------------------------ */
/* argument checking                                                  */

static bool parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    unsigned long v;

    if (!s || !isdigit((unsigned char)s[0]))
        return false;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

static bool valid_uuid(const char *s)
{
    static const int dash[] = { 8, 13, 18, 23 };
    int i, d = 0;

    if (strlen(s) != 36)
        return false;
    for (i = 0; i < 36; i++) {
        if (d < 4 && i == dash[d]) {
            if (s[i] != '-')
                return false;
            d++;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 64)
        return false;
    for (; *s; s++)
        if (!isgraph((unsigned char)*s) || *s == '/')
            return false;
    return true;
}

static bool valid_state(const char *s)
{
    static const char *const st[] = { "running", "paused", "blocked",
                                      "shutdown", "crashed", "dying", NULL };
    int i;

    for (i = 0; st[i]; i++)
        if (!strcmp(s, st[i]))
            return true;
    return false;
}

/* ------------------------------------------------------------------ */
/* the domains file                                                   */

struct dfile {
    const char *path;
    int lockfd;
    char *lines[MAX_LINES];     /* without trailing newline */
    int n;
};

static void dfile_open(struct dfile *df)
{
    char lockpath[PATH_MAX];
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;

    memset(df, 0, sizeof(*df));
    df->path = getenv("XENSHIM_DOMAINS");
    if (!df->path || !*df->path)
        die(1, "XENSHIM_DOMAINS is not set (it names the fake domains file)");
    if (snprintf(lockpath, sizeof(lockpath), "%s.lock", df->path)
        >= (int)sizeof(lockpath))
        die(1, "XENSHIM_DOMAINS path too long");
    df->lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (df->lockfd < 0)
        die(1, "cannot open lock file %s: %s", lockpath, strerror(errno));
    if (flock(df->lockfd, LOCK_EX) < 0)
        die(1, "cannot lock %s: %s", lockpath, strerror(errno));

    f = fopen(df->path, "re");
    if (!f) {
        if (errno == ENOENT)
            return;
        die(1, "cannot read %s: %s", df->path, strerror(errno));
    }
    while ((len = getline(&line, &cap, f)) >= 0) {
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        if (df->n == MAX_LINES)
            die(1, "%s: too many lines", df->path);
        df->lines[df->n] = strdup(line);
        if (!df->lines[df->n])
            die(1, "out of memory");
        df->n++;
    }
    free(line);
    fclose(f);
}

/* Index of the line describing DOMID, or -1. */
static int dfile_find(const struct dfile *df, unsigned long domid)
{
    int i;

    for (i = 0; i < df->n; i++) {
        unsigned long d;
        char *end;
        const char *l = df->lines[i];

        if (!isdigit((unsigned char)l[0]))
            continue;
        d = strtoul(l, &end, 10);
        if (d == domid && (*end == ' ' || *end == '\t' || *end == '\0'))
            return i;
    }
    return -1;
}

/* Atomically replace the file: write a temporary file, then rename. */
static int dfile_write(const struct dfile *df)
{
    char tmp[PATH_MAX];
    FILE *f;
    int i;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", df->path, (int)getpid())
        >= (int)sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    f = fopen(tmp, "we");
    if (!f)
        return -1;
    for (i = 0; i < df->n; i++)
        if (df->lines[i])
            fprintf(f, "%s\n", df->lines[i]);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        int e = errno;

        fclose(f);
        unlink(tmp);
        errno = e;
        return -1;
    }
    if (fclose(f) != 0 || rename(tmp, df->path) != 0) {
        int e = errno;

        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

static void dfile_close(struct dfile *df)
{
    int i;

    for (i = 0; i < df->n; i++)
        free(df->lines[i]);
    close(df->lockfd);
}

/* ------------------------------------------------------------------ */
/* xenstore                                                           */

static struct xs_handle *xs_connect(void)
{
    struct xs_handle *xs = xs_open(0);
    const char *p = getenv("XENSTORED_PATH");

    if (!xs)
        die(1, "cannot connect to xenstored (XENSTORED_PATH=%s): %s",
            p ? p : "unset", strerror(errno));
    return xs;
}

struct txn_ctx {
    struct xs_handle *xs;
    xs_transaction_t t;
    const char *what;
    bool failed;
};

static void tx_write(struct txn_ctx *c, const char *path, const char *val)
{
    if (c->failed)
        return;
    if (!xs_write(c->xs, c->t, path, val, strlen(val))) {
        fprintf(stderr, "%s: xenstore write %s: %s\n", prog, path,
                strerror(errno));
        c->failed = true;
    }
}

static void tx_mkdir(struct txn_ctx *c, const char *path)
{
    if (c->failed)
        return;
    if (!xs_mkdir(c->xs, c->t, path)) {
        fprintf(stderr, "%s: xenstore mkdir %s: %s\n", prog, path,
                strerror(errno));
        c->failed = true;
    }
}

static void tx_perms(struct txn_ctx *c, const char *path,
                     struct xs_permissions *p, unsigned int n)
{
    if (c->failed)
        return;
    if (!xs_set_permissions(c->xs, c->t, path, p, n)) {
        fprintf(stderr, "%s: xenstore set permissions %s: %s\n", prog, path,
                strerror(errno));
        c->failed = true;
    }
}

static void tx_rm(struct txn_ctx *c, const char *path)
{
    if (c->failed)
        return;
    if (!xs_rm(c->xs, c->t, path) && errno != ENOENT) {
        fprintf(stderr, "%s: xenstore rm %s: %s\n", prog, path,
                strerror(errno));
        c->failed = true;
    }
}

/* Lay out the nodes libxl creates for a new domain (libxl__domain_make). */
static bool xs_make_domain(struct xs_handle *xs, unsigned long domid,
                           const char *name, const char *uuid,
                           unsigned long mem_kib)
{
    char dom[64], vm[64], p[160], v[64];
    /* roperm: owned by dom0, readable by the domain; rwperm: owned by it */
    struct xs_permissions roperm[2] = {
        { .id = 0, .perms = XS_PERM_NONE },
        { .id = (unsigned int)domid, .perms = XS_PERM_READ },
    };
    struct xs_permissions rwperm[1] = {
        { .id = (unsigned int)domid, .perms = XS_PERM_NONE },
    };
    struct xs_permissions noperm[1] = {
        { .id = 0, .perms = XS_PERM_NONE },
    };
    int tries;

    snprintf(dom, sizeof(dom), "/local/domain/%lu", domid);
    snprintf(vm, sizeof(vm), "/vm/%s", uuid);

    for (tries = 0; tries < 20; tries++) {
        struct txn_ctx c = { .xs = xs, .what = "add" };

        c.t = xs_transaction_start(xs);
        if (c.t == XBT_NULL) {
            fprintf(stderr, "%s: xenstore transaction start: %s\n", prog,
                    strerror(errno));
            return false;
        }
        tx_rm(&c, dom);
        tx_mkdir(&c, dom);
        tx_perms(&c, dom, roperm, 2);
        tx_rm(&c, vm);
        tx_mkdir(&c, vm);
        tx_perms(&c, vm, roperm, 2);
        snprintf(p, sizeof(p), "/libxl/%lu", domid);
        tx_rm(&c, p);
        tx_mkdir(&c, p);
        tx_perms(&c, p, noperm, 1);

        snprintf(p, sizeof(p), "%s/uuid", vm);
        tx_write(&c, p, uuid);
        snprintf(p, sizeof(p), "%s/name", vm);
        tx_write(&c, p, name);

        snprintf(p, sizeof(p), "%s/vm", dom);
        tx_write(&c, p, vm);
        snprintf(p, sizeof(p), "%s/name", dom);
        tx_write(&c, p, name);
        snprintf(p, sizeof(p), "%s/domid", dom);
        snprintf(v, sizeof(v), "%lu", domid);
        tx_write(&c, p, v);

        /* control: dom0's, the guest may read; shutdown is the guest's */
        snprintf(p, sizeof(p), "%s/control", dom);
        tx_mkdir(&c, p);
        tx_perms(&c, p, roperm, 2);
        snprintf(p, sizeof(p), "%s/control/shutdown", dom);
        tx_write(&c, p, "");
        tx_perms(&c, p, rwperm, 1);

        snprintf(p, sizeof(p), "%s/device", dom);
        tx_mkdir(&c, p);
        tx_perms(&c, p, roperm, 2);

        /* data, memory: the guest's own */
        snprintf(p, sizeof(p), "%s/data", dom);
        tx_mkdir(&c, p);
        tx_perms(&c, p, rwperm, 1);
        snprintf(p, sizeof(p), "%s/memory", dom);
        tx_mkdir(&c, p);
        tx_perms(&c, p, rwperm, 1);
        snprintf(v, sizeof(v), "%lu", mem_kib);
        snprintf(p, sizeof(p), "%s/memory/static-max", dom);
        tx_write(&c, p, v);
        snprintf(p, sizeof(p), "%s/memory/target", dom);
        tx_write(&c, p, v);

        if (c.failed) {
            xs_transaction_end(xs, c.t, true);
            return false;
        }
        if (xs_transaction_end(xs, c.t, false))
            return true;
        if (errno != EAGAIN) {
            fprintf(stderr, "%s: xenstore transaction commit: %s\n", prog,
                    strerror(errno));
            return false;
        }
    }
    fprintf(stderr, "%s: xenstore transaction kept conflicting\n", prog);
    return false;
}

static bool xs_remove_domain(struct xs_handle *xs, unsigned long domid,
                             const char *vm)
{
    char dom[64], lx[64];
    int tries;

    snprintf(dom, sizeof(dom), "/local/domain/%lu", domid);
    snprintf(lx, sizeof(lx), "/libxl/%lu", domid);
    for (tries = 0; tries < 20; tries++) {
        struct txn_ctx c = { .xs = xs, .what = "del" };

        c.t = xs_transaction_start(xs);
        if (c.t == XBT_NULL) {
            fprintf(stderr, "%s: xenstore transaction start: %s\n", prog,
                    strerror(errno));
            return false;
        }
        tx_rm(&c, dom);
        if (vm && *vm)
            tx_rm(&c, vm);
        tx_rm(&c, lx);
        if (c.failed) {
            xs_transaction_end(xs, c.t, true);
            return false;
        }
        if (xs_transaction_end(xs, c.t, false))
            return true;
        if (errno != EAGAIN) {
            fprintf(stderr, "%s: xenstore transaction commit: %s\n", prog,
                    strerror(errno));
            return false;
        }
    }
    fprintf(stderr, "%s: xenstore transaction kept conflicting\n", prog);
    return false;
}

/* ------------------------------------------------------------------ */
/* commands                                                           */

static int cmd_add(int argc, char **argv)
{
    unsigned long domid, mem = 524288, vcpus = 1;
    const char *name, *uuid;
    struct dfile df;
    struct xs_handle *xs;
    char line[256];
    int idx;

    if (argc != 4 && argc != 6)
        usage_error("add takes DOMID NAME UUID [MEM_KIB VCPUS]");
    if (!parse_uint(argv[1], DOMID_MAX, &domid) || domid == 0)
        usage_error("bad DOMID '%s' (1..%d; domain 0 is implicit)", argv[1],
                    DOMID_MAX);
    name = argv[2];
    if (!valid_name(name))
        usage_error("bad NAME '%s' (1-64 printable characters, no '/' or "
                    "spaces)", name);
    uuid = argv[3];
    if (!valid_uuid(uuid))
        usage_error("bad UUID '%s' (want xxxxxxxx-xxxx-xxxx-xxxx-"
                    "xxxxxxxxxxxx)", uuid);
    if (argc == 6) {
        if (!parse_uint(argv[4], 1UL << 40, &mem) || mem == 0)
            usage_error("bad MEM_KIB '%s'", argv[4]);
        if (!parse_uint(argv[5], 4096, &vcpus) || vcpus == 0)
            usage_error("bad VCPUS '%s' (1..4096)", argv[5]);
    }

    xs = xs_connect();
    dfile_open(&df);
    if (dfile_find(&df, domid) >= 0)
        die(1, "domain %lu already exists in %s", domid, df.path);
    if (df.n == MAX_LINES)
        die(1, "%s: too many domains", df.path);

    /* 1. the hypervisor's view: the domain now exists */
    snprintf(line, sizeof(line), "%lu %s %lu %lu", domid, uuid, mem, vcpus);
    idx = df.n;
    df.lines[df.n++] = strdup(line);
    if (!df.lines[idx])
        die(1, "out of memory");
    if (dfile_write(&df) < 0)
        die(1, "cannot write %s: %s", df.path, strerror(errno));

    /* 2. the toolstack's nodes, 3. introduce it to xenstored */
    if (!xs_make_domain(xs, domid, name, uuid, mem))
        goto undo;
    if (!xs_introduce_domain(xs, (unsigned int)domid, domid + 0x1000, 1)) {
        fprintf(stderr, "%s: xs_introduce_domain(%lu): %s\n", prog, domid,
                strerror(errno));
        char vm[64];
        snprintf(vm, sizeof(vm), "/vm/%s", uuid);
        xs_remove_domain(xs, domid, vm);
        goto undo;
    }
    dfile_close(&df);
    xs_close(xs);
    return 0;

undo:
    free(df.lines[idx]);
    df.lines[idx] = NULL;
    if (dfile_write(&df) < 0)
        fprintf(stderr, "%s: cannot restore %s: %s\n", prog, df.path,
                strerror(errno));
    die(1, "adding domain %lu failed", domid);
}

static int cmd_del(int argc, char **argv)
{
    unsigned long domid;
    struct dfile df;
    struct xs_handle *xs;
    char dom[64], *vm, *p;
    unsigned int len;
    int idx;
    bool in_xs;

    if (argc != 2)
        usage_error("del takes DOMID");
    if (!parse_uint(argv[1], DOMID_MAX, &domid) || domid == 0)
        usage_error("bad DOMID '%s' (1..%d)", argv[1], DOMID_MAX);

    xs = xs_connect();
    dfile_open(&df);
    snprintf(dom, sizeof(dom), "/local/domain/%lu/vm", domid);
    vm = xs_read(xs, XBT_NULL, dom, &len);
    snprintf(dom, sizeof(dom), "/local/domain/%lu", domid);
    p = xs_read(xs, XBT_NULL, dom, &len);
    in_xs = (p != NULL);
    free(p);

    idx = dfile_find(&df, domid);
    if (idx < 0 && !in_xs)
        die(1, "no domain %lu (not in %s nor in xenstore)", domid, df.path);

    /* 1. the domain is gone from the hypervisor */
    if (idx >= 0) {
        if (!vm) {
            /* recover the uuid from the file: "DOMID UUID ..." */
            char u[64];

            if (sscanf(df.lines[idx], "%*u %63s", u) == 1) {
                vm = malloc(strlen(u) + 5);
                if (vm)
                    sprintf(vm, "/vm/%s", u);
            }
        }
        free(df.lines[idx]);
        df.lines[idx] = NULL;
        if (dfile_write(&df) < 0)
            die(1, "cannot write %s: %s", df.path, strerror(errno));
    }
    /* 2. the toolstack removes its nodes, 3. and tells xenstored */
    if (!xs_remove_domain(xs, domid, vm))
        die(1, "removing the xenstore nodes of domain %lu failed", domid);
    if (!xs_release_domain(xs, (unsigned int)domid) &&
        errno != ENOENT && errno != EINVAL) {
        /* ENOENT/EINVAL: xenstored already noticed the domain was gone */
        die(1, "xs_release_domain(%lu): %s", domid, strerror(errno));
    }
    free(vm);
    dfile_close(&df);
    xs_close(xs);
    return 0;
}

static int cmd_state(int argc, char **argv)
{
    unsigned long domid;
    struct dfile df;
    char uuid[64], line[256];
    unsigned long mem, vcpus;
    int idx;

    if (argc != 3)
        usage_error("state takes DOMID STATE");
    if (!parse_uint(argv[1], DOMID_MAX, &domid))
        usage_error("bad DOMID '%s'", argv[1]);
    if (!valid_state(argv[2]))
        usage_error("bad STATE '%s'", argv[2]);
    dfile_open(&df);
    idx = dfile_find(&df, domid);
    if (idx < 0)
        die(1, "no domain %lu in %s", domid, df.path);
    if (sscanf(df.lines[idx], "%*u %63s %lu %lu", uuid, &mem, &vcpus) != 3)
        die(1, "%s: malformed line for domain %lu", df.path, domid);
    snprintf(line, sizeof(line), "%lu %s %lu %lu %s", domid, uuid, mem, vcpus,
             argv[2]);
    free(df.lines[idx]);
    df.lines[idx] = strdup(line);
    if (!df.lines[idx] || dfile_write(&df) < 0)
        die(1, "cannot write %s: %s", df.path, strerror(errno));
    dfile_close(&df);
    return 0;
}

static int cmd_list(int argc, char **argv)
{
    struct dfile df;
    int i;

    (void)argv;
    if (argc != 1)
        usage_error("list takes no arguments");
    dfile_open(&df);
    for (i = 0; i < df.n; i++)
        printf("%s\n", df.lines[i]);
    dfile_close(&df);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage_error("missing command");
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "add"))
        return cmd_add(argc - 1, argv + 1);
    if (!strcmp(argv[1], "del"))
        return cmd_del(argc - 1, argv + 1);
    if (!strcmp(argv[1], "state"))
        return cmd_state(argc - 1, argv + 1);
    if (!strcmp(argv[1], "list"))
        return cmd_list(argc - 1, argv + 1);
    usage_error("unknown command '%s'", argv[1]);
}
