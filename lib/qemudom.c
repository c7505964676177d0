/* QEMU domains in the run directory (see qemudom.h): the configuration
 * reader, the command line, starting and ending QEMU. */
#define _GNU_SOURCE
#include "qemudom.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "applet.h"
#include "backend.h"
#include "diskmig.h"
#include "qmp.h"

static const char *env_or_default(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

const char *qemu_run_dir(void)
{
    const char *v = getenv("VMMIG_QEMU_DIR");
    return v && *v ? v : QEMU_DEFAULT_RUN_DIR;
}

/* ---- the configuration: xl.cfg's syntax ---- */

struct cfg_reader {
    const char *p;
    int line;
};

static void skip_space(struct cfg_reader *r, bool newlines)
{
    for (;;) {
        if (*r->p == '#') {
            while (*r->p && *r->p != '\n')
                r->p++;
        } else if (*r->p == ' ' || *r->p == '\t' || *r->p == '\r' || *r->p == ';' ||
                   (newlines && *r->p == '\n')) {
            if (*r->p == '\n')
                r->line++;
            r->p++;
        } else {
            return;
        }
    }
}

/* A quoted string or a bare word/number into buf. */
static int read_scalar(struct cfg_reader *r, char *buf, size_t size)
{
    size_t n = 0;

    if (*r->p == '"' || *r->p == '\'') {
        char q = *r->p++;
        while (*r->p && *r->p != q && *r->p != '\n') {
            if (n + 1 < size)
                buf[n++] = *r->p;
            r->p++;
        }
        if (*r->p != q)
            return -EINVAL;
        r->p++;
    } else {
        while (*r->p && (isalnum((unsigned char)*r->p) || strchr("._-:/+", *r->p))) {
            if (n + 1 < size)
                buf[n++] = *r->p;
            r->p++;
        }
        if (!n)
            return -EINVAL;
    }
    buf[n] = 0;
    return 0;
}

/* xl's disk spec "format=raw, vdev=xvda, access=rw, target=/path" (or
 * the positional "/path,raw,xvda,rw"): the image's path. */
static void disk_target(const char *spec, char *out, size_t size)
{
    const char *t = strstr(spec, "target=");
    const char *s = t ? t + 7 : spec;
    size_t n;

    while (*s == ' ')
        s++;
    n = t ? strlen(s) : strcspn(s, ",");
    if (n >= size)
        n = size - 1;
    memcpy(out, s, n);
    out[n] = 0;
    while (n && out[n - 1] == ' ')
        out[--n] = 0;
}

static bool yes_no_off(const char *v)
{
    return !strcmp(v, "no") || !strcmp(v, "0") || !strcmp(v, "false");
}

int qemu_cfg_parse(const char *text, struct qemu_cfg *cfg, char *err, size_t errlen)
{
    struct cfg_reader r = {.p = text, .line = 1};
    char key[64], val[512];

    memset(cfg, 0, sizeof *cfg);
    cfg->memory_mib = 128;
    cfg->vcpus = 1;
    for (;;) {
        skip_space(&r, true);
        if (!*r.p)
            break;
        size_t n = 0;
        while (isalnum((unsigned char)*r.p) || *r.p == '_') {
            if (n + 1 < sizeof key)
                key[n++] = *r.p;
            r.p++;
        }
        key[n] = 0;
        skip_space(&r, false);
        if (!n || *r.p != '=') {
            snprintf(err, errlen, "line %d: expected KEY = VALUE", r.line);
            return -EINVAL;
        }
        r.p++;
        skip_space(&r, false);
        if (*r.p == '[') {
            r.p++;
            for (;;) {
                skip_space(&r, true);
                if (*r.p == ']') {
                    r.p++;
                    break;
                }
                if (read_scalar(&r, val, sizeof val)) {
                    snprintf(err, errlen, "line %d: bad list item in %s", r.line, key);
                    return -EINVAL;
                }
                if (!strcmp(key, "vif")) {
                    char why[400];
                    if (cfg->nvifs == QEMU_MAX_VIFS) {
                        snprintf(err, errlen, "more than %d vifs", QEMU_MAX_VIFS);
                        return -E2BIG;
                    }
                    if (qemu_vif_parse(val, &cfg->vifs[cfg->nvifs++], why, sizeof why)) {
                        snprintf(err, errlen, "line %d: %s", r.line, why);
                        return -EINVAL;
                    }
                }
                if (!strcmp(key, "disk")) {
                    if (cfg->ndisks == QEMU_MAX_DISKS) {
                        snprintf(err, errlen, "more than %d disks", QEMU_MAX_DISKS);
                        return -E2BIG;
                    }
                    char *target = cfg->disks[cfg->ndisks++];
                    disk_target(val, target, sizeof cfg->disks[0]);
                    if (!strncmp(target, DISKMIG_TARGET_PREFIX, strlen(DISKMIG_TARGET_PREFIX)) &&
                        !diskmig_disk_name(target)) {
                        snprintf(err, errlen, "line %d: bad disk target '%s' (blockmirror:NAME, "
                                 "NAME of letters, digits, '.', '-', '_', at most %d, not nbdN)",
                                 r.line, target, DISKMIG_NAME_MAX);
                        return -EINVAL;
                    }
                }
                skip_space(&r, true);
                if (*r.p == ',')
                    r.p++;
            }
            continue;
        }
        if (read_scalar(&r, val, sizeof val)) {
            snprintf(err, errlen, "line %d: bad value for %s", r.line, key);
            return -EINVAL;
        }
        if (!strcmp(key, "name")) {
            strlcpy0(cfg->name, val, sizeof cfg->name);
        } else if (!strcmp(key, "uuid")) {
            strlcpy0(cfg->uuid, val, sizeof cfg->uuid);
        } else if (!strcmp(key, "memory") || !strcmp(key, "vcpus")) {
            long v;
            if (parse_long(val, 1, !strcmp(key, "memory") ? 1 << 22 : 256, &v)) {
                snprintf(err, errlen, "line %d: bad %s '%s'", r.line, key, val);
                return -EINVAL;
            }
            *(!strcmp(key, "memory") ? &cfg->memory_mib : &cfg->vcpus) = (unsigned)v;
        } else if (!strcmp(key, "kernel")) {
            strlcpy0(cfg->kernel, val, sizeof cfg->kernel);
        } else if (!strcmp(key, "ramdisk") || !strcmp(key, "initrd")) {
            strlcpy0(cfg->initrd, val, sizeof cfg->initrd);
        } else if (!strcmp(key, "cmdline") || !strcmp(key, "extra")) {
            strlcpy0(cfg->cmdline, val, sizeof cfg->cmdline);
        } else if (!strcmp(key, "migration") && yes_no_off(val)) {
            cfg->nomigrate = true;
            snprintf(cfg->nomigrate_what, sizeof cfg->nomigrate_what, "migration=\"%s\"", val);
        } else if (!strcmp(key, "nomigrate") && !yes_no_off(val)) {
            cfg->nomigrate = true;
            snprintf(cfg->nomigrate_what, sizeof cfg->nomigrate_what, "nomigrate=%s", val);
        }
    }
    if (!cfg->kernel[0] && !cfg->ndisks) {
        snprintf(err, errlen, "neither a kernel nor a disk to boot from");
        return -EINVAL;
    }
    qemu_cfg_vif_macs(cfg);
    return 0;
}

void qemu_cfg_vif_macs(struct qemu_cfg *cfg)
{
    for (int i = 0; i < cfg->nvifs && cfg->uuid[0]; i++)
        if (!cfg->vifs[i].mac_given)
            qemu_vif_default_mac(cfg->uuid, i, cfg->vifs[i].mac);
}

/* ---- the run directory ---- */

void qemu_dom_path(const struct qemu_dom *d, const char *file, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", d->dir, file);
}

/* The instance directory .dom/DOMID holds everything; NAME is a symlink
 * to it.  QEMU removes its sockets by the paths it was given when it
 * exits, so those paths never carry a name that may pass to the next copy
 * of the domain. */
static int load_instance(uint32_t domid, const char *name, struct qemu_dom *d)
{
    char path[600], *text = NULL, err[200];
    long v;
    int rc;

    memset(d, 0, sizeof *d);
    strlcpy0(d->name, name, sizeof d->name);
    d->domid = domid;
    snprintf(d->dir, sizeof d->dir, "%s/" QEMU_INSTANCE_DIR "/%u", qemu_run_dir(), domid);
    qemu_dom_path(d, "domain.cfg", path, sizeof path);
    if ((rc = read_file(path, &text, NULL)))
        return rc;
    rc = qemu_cfg_parse(text, &d->cfg, err, sizeof err);
    free(text);
    if (rc)
        return rc;
    qemu_dom_path(d, "qemu.pid", path, sizeof path);
    if (!read_file(path, &text, NULL)) {
        text[strcspn(text, "\n")] = 0;
        if (!parse_long(text, 1, 0x7fffffff, &v))
            d->pid = (int)v;
        free(text);
    }
    return 0;
}

static int load_dom(const char *name, struct qemu_dom *d)
{
    char path[600], target[128];
    unsigned domid;
    int n;
    ssize_t r;

    snprintf(path, sizeof path, "%s/%s", qemu_run_dir(), name);
    r = readlink(path, target, sizeof target - 1);
    if (r < 0)
        return -errno;
    target[r] = 0;
    if (sscanf(target, QEMU_INSTANCE_DIR "/%u%n", &domid, &n) != 1 || target[n] || !domid)
        return -EINVAL;
    return load_instance(domid, name, d);
}

int qemu_dom_list(struct qemu_dom **out, size_t *np)
{
    DIR *dir = opendir(qemu_run_dir());
    struct qemu_dom *doms = NULL;
    size_t n = 0;
    struct dirent *de;

    *out = NULL;
    *np = 0;
    if (!dir)
        return errno == ENOENT ? 0 : -errno;
    while ((de = readdir(dir))) {
        struct qemu_dom d;
        if (de->d_name[0] == '.' || load_dom(de->d_name, &d))
            continue; /* not a domain (yet): no domid or config */
        doms = xrealloc(doms, (n + 1) * sizeof *doms);
        doms[n++] = d;
    }
    closedir(dir);
    *out = doms;
    *np = n;
    return 0;
}

static int find_by(int what, const char *s, uint32_t domid, struct qemu_dom *out)
{
    struct qemu_dom *doms;
    size_t n;
    int rc = qemu_dom_list(&doms, &n);

    if (rc)
        return rc;
    rc = -ENOENT;
    for (size_t i = 0; i < n && rc; i++)
        if ((what == 0 && !strcmp(doms[i].name, s)) || (what == 1 && doms[i].domid == domid) ||
            (what == 2 && !strcasecmp(doms[i].cfg.uuid, s))) {
            *out = doms[i];
            rc = 0;
        }
    free(doms);
    return rc;
}

int qemu_dom_find_domid(uint32_t domid, struct qemu_dom *out)
{
    int rc = find_by(1, NULL, domid, out);
    /* An instance whose name is not linked (yet, or any more). */
    if (rc == -ENOENT && !load_instance(domid, "", out))
        rc = 0;
    return rc;
}

int qemu_dom_find_uuid(const char *uuid, struct qemu_dom *out)
{
    return find_by(2, uuid, 0, out);
}

int qemu_dom_find(const char *what, struct qemu_dom *out)
{
    long v;
    if (!parse_long(what, 1, 0x7fffffff, &v))
        return qemu_dom_find_domid((uint32_t)v, out);
    return find_by(0, what, 0, out);
}

/* ---- starting QEMU ---- */

static void random_uuid(char *buf, size_t size)
{
    uint8_t u[16];
    if (getentropy(u, sizeof u)) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        for (size_t i = 0; i < sizeof u; i++)
            u[i] = (uint8_t)((t.tv_nsec >> (i % 4 * 8)) ^ (getpid() >> (i % 2 * 8)) ^ i);
    }
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
    snprintf(buf, size, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
             u[13], u[14], u[15]);
}

void qemu_disk_socket(const char *name, char *out, size_t size)
{
    diskmig_socket_path(env_or_default("VMMIG_STATE_DIR", DEFAULT_STATE_DIR), name, out, size);
}

/* QEMU splits option values at ',' (and keys at '='): such paths cannot be
 * passed safely. */
static bool qemu_safe_path(const char *p)
{
    return !strchr(p, ',') && !strchr(p, '=');
}

static void add_arg(char ***argv, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_arg(char ***argv, size_t *n, const char *fmt, ...)
{
    struct strbuf sb = {0};
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(&sb, fmt, ap);
    va_end(ap);
    *argv = xrealloc(*argv, (*n + 2) * sizeof **argv);
    (*argv)[(*n)++] = sb.s;
    (*argv)[*n] = NULL;
}

static char **build_argv(const struct qemu_cfg *c, const struct qemu_dom *d, bool incoming,
                         const int *tapfds)
{
    const char *accel = getenv("VMMIG_QEMU_ACCEL");
    char **argv = NULL;
    size_t n = 0;

    if (!accel || !*accel)
        accel = access("/dev/kvm", R_OK | W_OK) ? "tcg" : "kvm";
    add_arg(&argv, &n, "%s", env_or_default("VMMIG_QEMU", "qemu-system-x86_64"));
    add_arg(&argv, &n, "-name");
    add_arg(&argv, &n, "%s", d->name);
    add_arg(&argv, &n, "-uuid");
    add_arg(&argv, &n, "%s", c->uuid);
    add_arg(&argv, &n, "-nodefaults");
    add_arg(&argv, &n, "-no-user-config");
    add_arg(&argv, &n, "-machine");
    add_arg(&argv, &n, "q35,accel=%s", accel);
    add_arg(&argv, &n, "-m");
    add_arg(&argv, &n, "%u", c->memory_mib);
    add_arg(&argv, &n, "-smp");
    add_arg(&argv, &n, "%u", c->vcpus);
    add_arg(&argv, &n, "-display");
    add_arg(&argv, &n, "none");
    add_arg(&argv, &n, "-qmp");
    add_arg(&argv, &n, "unix:%s/qmp.sock,server=on,wait=off", d->dir);
    add_arg(&argv, &n, "-qmp");
    add_arg(&argv, &n, "unix:%s/status.sock,server=on,wait=off", d->dir);
    /* Post-copy recovery's: a monitor kept in out-of-band mode by a keeper
     * (lib/qemumig.c), for when the main thread waits for a page. */
    add_arg(&argv, &n, "-qmp");
    add_arg(&argv, &n, "unix:%s/rqmp.sock,server=on,wait=off", d->dir);
    add_arg(&argv, &n, "-chardev");
    add_arg(&argv, &n, "socket,id=ser0,path=%s/serial.sock,server=on,wait=off,logfile=%s/serial.log",
            d->dir, d->dir);
    add_arg(&argv, &n, "-serial");
    add_arg(&argv, &n, "chardev:ser0");
    add_arg(&argv, &n, "-device");
    add_arg(&argv, &n, "virtio-serial-pci,id=vser0");
    /* vmmig console's: hvc0 in the guest.  Its own chardev, so that
     * serial.sock stays free for whoever uses the serial port, and a log
     * that records every byte, connected or not (the relay reads it). */
    add_arg(&argv, &n, "-chardev");
    add_arg(&argv, &n, "socket,id=con0,path=%s/console.sock,server=on,wait=off,logfile=%s/console.log",
            d->dir, d->dir);
    add_arg(&argv, &n, "-device");
    add_arg(&argv, &n, "virtconsole,bus=vser0.0,chardev=con0,name=" QEMU_CONSOLE_PORT);
    add_arg(&argv, &n, "-chardev");
    add_arg(&argv, &n, "socket,id=hold0,path=%s/hold.sock,server=on,wait=off", d->dir);
    add_arg(&argv, &n, "-device");
    add_arg(&argv, &n, "virtserialport,bus=vser0.0,chardev=hold0,name=" QEMU_HOLD_PORT);
    if (c->kernel[0]) {
        add_arg(&argv, &n, "-kernel");
        add_arg(&argv, &n, "%s", c->kernel);
        if (c->initrd[0]) {
            add_arg(&argv, &n, "-initrd");
            add_arg(&argv, &n, "%s", c->initrd);
        }
        if (c->cmdline[0]) {
            add_arg(&argv, &n, "-append");
            add_arg(&argv, &n, "%s", c->cmdline);
        }
    }
    for (int i = 0; i < c->ndisks; i++) {
        const char *bm = diskmig_disk_name(c->disks[i]);
        char sock[600];
        add_arg(&argv, &n, "-drive");
        /* cache=none: nothing of the disk is left in this host's page
         * cache when the destination takes over. */
        if (bm) {
            /* blockmirror:NAME, this host's primary (or, for an incoming
             * domain, the secondary) of the disk, over NBD */
            qemu_disk_socket(bm, sock, sizeof sock);
            add_arg(&argv, &n, "format=raw,file.driver=nbd,file.server.type=unix,"
                    "file.server.path=%s,if=virtio,cache=none", sock);
        } else {
            add_arg(&argv, &n, "file=%s,format=raw,if=virtio,cache=none", c->disks[i]);
        }
    }
    /* After every other device: the same command line on both ends of a
     * migration puts each NIC in the same PCI slot. */
    for (int i = 0; i < c->nvifs; i++) {
        add_arg(&argv, &n, "-netdev");
        add_arg(&argv, &n, "tap,id=net%d,fd=%d", i, tapfds[i]);
        add_arg(&argv, &n, "-device");
        add_arg(&argv, &n, "%s,netdev=net%d,id=nic%d,mac=%s", c->vifs[i].model, i, i,
                c->vifs[i].mac);
    }
    add_arg(&argv, &n, "-pidfile");
    add_arg(&argv, &n, "%s/qemu.pid", d->dir);
    add_arg(&argv, &n, "-daemonize");
    if (incoming) {
        add_arg(&argv, &n, "-incoming");
        add_arg(&argv, &n, "defer");
        add_arg(&argv, &n, "-S");
    }
    return argv;
}

/* The last line QEMU wrote to its log, for the error message. */
static void log_tail(const struct qemu_dom *d, char *buf, size_t size)
{
    char path[600], *text;
    size_t len;

    buf[0] = 0;
    qemu_dom_path(d, "qemu.log", path, sizeof path);
    if (read_file(path, &text, &len))
        return;
    while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        text[--len] = 0;
    char *nl = strrchr(text, '\n');
    strlcpy0(buf, nl ? nl + 1 : text, size);
    free(text);
}

int qemu_dom_start(const char *cfg_text, const char *name, bool incoming, const int *given_taps,
                   struct qemu_dom *out, char *err, size_t errlen)
{
    struct qemu_cfg cfg;
    struct strbuf text = {0};
    char path[600], num[32], why[300];
    char **argv = NULL;
    int rc, status, tapfds[QEMU_MAX_VIFS];
    pid_t pid;

    memset(out, 0, sizeof *out);
    for (int i = 0; i < QEMU_MAX_VIFS; i++)
        tapfds[i] = -1;
    if ((rc = qemu_cfg_parse(cfg_text, &cfg, why, sizeof why))) {
        snprintf(err, errlen, "the configuration: %s", why);
        return rc;
    }
    if (!*name || strchr(name, '/') || name[0] == '.') {
        snprintf(err, errlen, "bad domain name '%s'", name);
        return -EINVAL;
    }
    strlcpy0(out->name, name, sizeof out->name);
    snprintf(out->dir, sizeof out->dir, "%s/%s", qemu_run_dir(), name);
    /* the longest socket path inside must fit sockaddr_un */
    if (strlen(out->dir) + sizeof "/status.sock" > sizeof ((struct sockaddr_un *)0)->sun_path ||
        !qemu_safe_path(out->dir)) {
        snprintf(err, errlen, "the run directory %s is too long or has ',' or '='", out->dir);
        return -ENAMETOOLONG;
    }
    const char *paths[] = {cfg.kernel, cfg.initrd};
    for (size_t i = 0; i < ARRAY_SIZE(paths); i++)
        if (!qemu_safe_path(paths[i])) {
            snprintf(err, errlen, "QEMU cannot take the path '%s' (',' or '=')", paths[i]);
            return -EINVAL;
        }
    for (int i = 0; i < cfg.ndisks; i++) {
        const char *bm = diskmig_disk_name(cfg.disks[i]);
        char sock[600];
        struct stat st;
        if (bm) {
            qemu_disk_socket(bm, sock, sizeof sock);
            if (!qemu_safe_path(sock) ||
                strlen(sock) >= sizeof ((struct sockaddr_un *)0)->sun_path) {
                snprintf(err, errlen, "disk %s: its socket %s is too long or has ',' or '='",
                         cfg.disks[i], sock);
                return -EINVAL;
            }
            /* QEMU would only say it cannot connect */
            if (stat(sock, &st) || !S_ISSOCK(st.st_mode)) {
                snprintf(err, errlen, "disk %s is not served here (no %s): run 'vmmig "
                         "blockmirror serve IMAGE --disk %s' first", cfg.disks[i], sock, bm);
                return -ENOENT;
            }
        } else if (!qemu_safe_path(cfg.disks[i])) {
            snprintf(err, errlen, "QEMU cannot take the disk path '%s' (',' or '=')", cfg.disks[i]);
            return -EINVAL;
        }
    }
    snprintf(path, sizeof path, "%s/" QEMU_INSTANCE_DIR, qemu_run_dir());
    if ((rc = mkdir_p(path, 0755))) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(-rc));
        return rc;
    }
    /* The lowest free domid, claimed by creating its directory. */
    for (uint32_t id = 1;; id++) {
        snprintf(out->dir, sizeof out->dir, "%s/" QEMU_INSTANCE_DIR "/%u", qemu_run_dir(), id);
        if (!mkdir(out->dir, 0750)) {
            out->domid = id;
            break;
        }
        if (errno != EEXIST || id == 0x7fffffff) {
            rc = -errno;
            snprintf(err, errlen, "cannot create %s: %s", out->dir, strerror(errno));
            return rc;
        }
    }
    /* the longest socket path inside must fit sockaddr_un */
    if (strlen(out->dir) + sizeof "/status.sock" > sizeof ((struct sockaddr_un *)0)->sun_path ||
        !qemu_safe_path(out->dir)) {
        snprintf(err, errlen, "the run directory %s is too long or has ',' or '='", out->dir);
        rc = -ENAMETOOLONG;
        goto out;
    }
    snprintf(num, sizeof num, QEMU_INSTANCE_DIR "/%u", out->domid);
    snprintf(path, sizeof path, "%s/%s", qemu_run_dir(), name);
    if (symlink(num, path)) {
        rc = -errno;
        snprintf(err, errlen, rc == -EEXIST ? "a domain named %s exists already" : "%s: %s",
                 rc == -EEXIST ? name : path, strerror(errno));
        goto out;
    }
    /* The UUID is what migration and the admin holds follow: fix it now. */
    sb_printf(&text, "%s", cfg_text);
    if (!cfg.uuid[0]) {
        random_uuid(cfg.uuid, sizeof cfg.uuid);
        sb_printf(&text, "%suuid = \"%s\"\n",
                  text.len && text.s[text.len - 1] != '\n' ? "\n" : "", cfg.uuid);
    }
    qemu_dom_path(out, "domain.cfg", path, sizeof path);
    if ((rc = atomic_write(path, text.s, text.len, 0640))) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(-rc));
        goto out;
    }
    snprintf(num, sizeof num, "%u\n", out->domid);
    qemu_dom_path(out, "domid", path, sizeof path);
    if ((rc = atomic_write(path, num, strlen(num), 0644))) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(-rc));
        goto out;
    }
    qemu_cfg_vif_macs(&cfg);
    out->cfg = cfg;
    char tapnames[QEMU_MAX_VIFS][QEMU_IFNAME_MAX];
    struct strbuf taps = {0};
    if (given_taps) {
        for (int i = 0; i < cfg.nvifs; i++) {
            struct ifreq ifr = {0};
            strlcpy0(tapnames[i], ioctl(given_taps[i], TUNGETIFF, &ifr) ? "?" : ifr.ifr_name,
                     sizeof tapnames[i]);
        }
    } else if ((rc = qemu_net_taps(cfg.vifs, cfg.nvifs, tapfds, tapnames, err, errlen))) {
        goto out;
    }
    for (int i = 0; i < cfg.nvifs; i++)
        sb_printf(&taps, "%s %s %s\n", tapnames[i], cfg.vifs[i].bridge, cfg.vifs[i].mac);
    qemu_dom_path(out, "taps", path, sizeof path);
    rc = cfg.nvifs ? atomic_write(path, taps.s, taps.len, 0644) : 0;
    sb_free(&taps);
    if (rc) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(-rc));
        goto out;
    }
    const int *fds = given_taps ? given_taps : tapfds;
    argv = build_argv(&cfg, out, incoming, fds);
    qemu_dom_path(out, "qemu.log", path, sizeof path);
    pid = fork();
    if (pid < 0) {
        rc = -errno;
        snprintf(err, errlen, "fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        int nul = open("/dev/null", O_RDWR);
        int log = open(path, O_WRONLY | O_CREAT | O_APPEND, 0640);
        dup2(nul, 0);
        dup2(log >= 0 ? log : nul, 1);
        dup2(log >= 0 ? log : nul, 2);
        /* QEMU outlives us: it must not keep our connections open, only
         * its taps (O_CLOEXEC in here, against other forks). */
        for (int fd = 3; fd < 1024; fd++) {
            bool tap = false;
            for (int i = 0; i < cfg.nvifs; i++)
                tap = tap || fds[i] == fd;
            if (!tap)
                close(fd);
            else
                fcntl(fd, F_SETFD, 0);
        }
        setsid();
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    /* -daemonize: the first process exits once QEMU is set up (its
     * sockets listen), with QEMU's verdict as its status. */
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status)) {
        log_tail(out, why, sizeof why);
        snprintf(err, errlen, "QEMU did not start: %s", why[0] ? why : "no message");
        rc = -EIO;
        goto out;
    }
    qemu_dom_path(out, "qemu.pid", path, sizeof path);
    char *pidtext;
    long v;
    if (!read_file(path, &pidtext, NULL)) {
        pidtext[strcspn(pidtext, "\n")] = 0;
        if (!parse_long(pidtext, 1, 0x7fffffff, &v))
            out->pid = (int)v;
        free(pidtext);
    }
    rc = 0;
out:
    /* QEMU holds its own copies; on a failure this removes the taps */
    qemu_net_close(tapfds, cfg.nvifs);
    argv_free(argv);
    sb_free(&text);
    return rc;
}

static bool pid_alive(int pid)
{
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

int qemu_dom_remove(const struct qemu_dom *d, char *err, size_t errlen)
{
    char path[600], e2[200];
    struct qmp *q;
    int rc = 0;

    qemu_dom_path(d, "qmp.sock", path, sizeof path);
    if (pid_alive(d->pid) && !qmp_connect(&q, path, 2000, e2, sizeof e2)) {
        qmp_execute(q, "quit", NULL, -1, NULL, 2000, e2, sizeof e2);
        qmp_close(q);
    }
    for (int i = 0; i < 200 && pid_alive(d->pid); i++)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    if (pid_alive(d->pid)) {
        kill(d->pid, SIGKILL);
        for (int i = 0; i < 100 && pid_alive(d->pid); i++)
            nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    DIR *dir = opendir(d->dir);
    if (dir) {
        struct dirent *de;
        while ((de = readdir(dir)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
                qemu_dom_path(d, de->d_name, path, sizeof path);
                unlink(path);
            }
        closedir(dir);
    }
    /* The name, if it still leads here. */
    char target[128], want[64];
    snprintf(path, sizeof path, "%s/%s", qemu_run_dir(), d->name);
    snprintf(want, sizeof want, QEMU_INSTANCE_DIR "/%u", d->domid);
    ssize_t r = d->name[0] ? readlink(path, target, sizeof target - 1) : -1;
    if (r > 0) {
        target[r] = 0;
        if (!strcmp(target, want))
            unlink(path);
    }
    if (rmdir(d->dir) && errno != ENOENT) {
        rc = -errno;
        snprintf(err, errlen, "cannot remove %s: %s", d->dir, strerror(errno));
    }
    return rc;
}

int qemu_dom_status(const struct qemu_dom *d, char *status, size_t size)
{
    char path[600], err[200];
    struct qmp *q;
    struct json *ret = NULL;
    int rc;

    strlcpy0(status, "unknown", size);
    qemu_dom_path(d, "status.sock", path, sizeof path);
    if ((rc = qmp_connect(&q, path, 2000, err, sizeof err)))
        return rc;
    rc = qmp_execute(q, "query-status", NULL, -1, &ret, 2000, err, sizeof err);
    if (!rc)
        strlcpy0(status, json_str(ret, "status", "unknown"), size);
    json_free(ret);
    qmp_close(q);
    return rc;
}
