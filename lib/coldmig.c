/* Cold migration between hypervisors (coldmig.h): the source's and the
 * destination's halves of the conversation in vmmig-protocol(7), COLD.
 *
 *   S MIG_REQ cold=1, name, uuid, memory_kib, vcpus, backend, source_host
 *   D REQ_OK | REQ_FAIL code, reason
 *   S MIG_CFG config=NEUTRAL, file=ROLE:SIZE per file (kernel, ramdisk, vda..)
 *   D CFG_OK | CFG_FAIL reason
 *   S CHUNK... (the files back to back, no chunk spans two), STREAM_END
 *     chunks, bytes, sha256=ROLE:HEX per file
 *   D RECEIVED (every file written, synced, read back and equal) | ABORT
 *   S COMMIT
 *   D ACTIVATED result=ok domid | result=failed reason (its copies removed)
 *   S DONE, then marks its own copy moved
 */
#define _GNU_SOURCE
#include "coldmig.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "applet.h"
#include "coldcfg.h"
#include "lock.h"
#include "migjob.h"
#include "qemudom.h"
#include "sha256.h"
#include "state.h"

#define COLD_FILES_MAX (COLD_MAX_DISKS + 2)

struct cold_file {
    char role[16];      /* kernel, ramdisk, vda, vdb ... */
    char src[256];      /* source: its path */
    char dst[4200];     /* destination: its final path */
    char part[4300];    /* destination: where it is written first */
    uint64_t size, done;
    int fd;
    struct sha256_ctx sha;
    uint8_t digest[SHA256_LEN];
};

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

static void hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void send_kv(struct proto_conn *c, int type, const char *k1, const char *v1,
                    const char *k2, const char *v2)
{
    struct strbuf sb = {0};
    if (k1)
        kv_add(&sb, k1, "%s", v1);
    if (k2)
        kv_add(&sb, k2, "%s", v2);
    proto_send(c, type, sb.s, (uint32_t)sb.len);
    sb_free(&sb);
}

/* Send type with sb's pairs and expect the reply want.  0, or -1 with the
 * error printed: what the link said, or the refusal (refusal's %s is the
 * host) with the destination's reason. */
static int cold_exchange(struct proto_conn *c, const struct cold_send_opts *o, int type,
                         const struct strbuf *sb, int want, const char *refusal)
    __attribute__((format(printf, 6, 0)));
static int cold_exchange(struct proto_conn *c, const struct cold_send_opts *o, int type,
                         const struct strbuf *sb, int want, const char *refusal)
{
    char why[300] = "", what[300], reason[300] = "";
    uint8_t *pl = NULL;
    uint32_t len;
    int got, rc = -1;

    if (proto_send(c, type, sb->s, (uint32_t)sb->len)) {
        error_msg("%s: %s: the %s was not sent", o->name, o->host, msg_type_name(type));
        goto out;
    }
    if (proto_recv(c, &got, &pl, &len, why, sizeof why)) {
        error_msg("%s: %s: %s", o->name, o->host, why);
        goto out;
    }
    if (got != want) {
        kv_get(pl, len, "reason", reason, sizeof reason);
        snprintf(what, sizeof what, refusal, o->host);
        error_msg("%s: %s: %s", o->name, what, reason[0] ? reason : msg_type_name(got));
        goto out;
    }
    rc = 0;
out:
    free(pl);
    return rc;
}

/* A file's size: a regular file's, or a block device's. */
static int file_size(int fd, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st))
        return -errno;
    if (S_ISREG(st.st_mode)) {
        *size = (uint64_t)st.st_size;
        return 0;
    }
    if (!S_ISBLK(st.st_mode))
        return -EINVAL;
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0)
        return -errno;
    *size = (uint64_t)end;
    return lseek(fd, 0, SEEK_SET) < 0 ? -errno : 0;
}

/* ======================= the source ======================= */

static const char *xen_cfg_dir(void)
{
    return env_or("VMMIG_XEN_CONFIG_DIR", "/etc/xen");
}

/* Is the domain there as a running (or paused) domain?  0 no; 1 with why. */
static int source_busy(const struct mig_engine_ops *eng, const char *name, char *why, size_t len)
{
    if (!strcmp(eng->name, "qemu")) {
        struct qemu_dom d;
        char status[64];
        if (qemu_dom_find(name, &d) || !d.pid || (kill(d.pid, 0) && errno == ESRCH))
            return 0;
        if (qemu_dom_status(&d, status, sizeof status))
            strlcpy0(status, "unknown", sizeof status);
        if (!strcmp(status, "running"))
            snprintf(why, len, "%s is running: shut it down or migrate it live", name);
        else
            snprintf(why, len, "%s is %s (its QEMU runs, with its memory): its memory cannot "
                     "cross hypervisors; shut it down to move it cold, or migrate it live", name,
                     status);
        return 1;
    }
    struct mig_engine *e;
    struct mig_dom d;
    char err[300];
    if (eng->open(&e, NULL, NULL, err, sizeof err)) {
        snprintf(why, len, "cannot ask Xen whether %s runs: %s", name, err);
        return 1;
    }
    int found = !eng->lookup(e, name, &d);
    eng->close(e);
    if (!found)
        return 0;
    if (d.paused || d.suspended)
        snprintf(why, len, "%s is paused (domid %u): its memory cannot cross hypervisors; shut "
                 "it down (xl shutdown %s) to move it cold and boot it afresh there, or migrate "
                 "it live", name, d.domid, name);
    else
        snprintf(why, len, "%s is running: shut it down or migrate it live", name);
    return 1;
}

/* Does host run (or hold paused) the domain?  1 yes, 0 no, -1 unknown. */
static int cold_recover_query(const struct cold_send_opts *o, const struct cold_cfg *cfg,
                              const uint8_t *psk, size_t psklen)
{
    char err[300], state[32];

    if (mig_query(o->host, o->port, NULL, o->timeout_ms, psk, psklen, NULL, cfg->uuid, cfg->name,
                  state, sizeof state, err, sizeof err))
        return -1;
    return !strcmp(state, "active") || !strcmp(state, "paused");
}

/* Mark this host's copy moved: the domain runs on host now. */
static void mark_moved(const struct mig_engine_ops *eng, bool instance, const char *cfgpath,
                       const char *name, const char *host)
{
    char moved[4300], err[300];

    if (!strcmp(eng->name, "qemu") && instance) {
        struct qemu_dom d;
        if (!qemu_dom_find(name, &d) && qemu_dom_remove(&d, err, sizeof err))
            error_msg("%s: removing its stopped instance: %s", name, err);
        return;
    }
    snprintf(moved, sizeof moved, "%s.moved-to-%s", cfgpath, host);
    if (rename(cfgpath, moved))
        error_msg("%s: cannot rename %s to %s: %s", name, cfgpath, moved, strerror(errno));
}

int cold_send(const struct cold_send_opts *o)
{
    const struct mig_engine_ops *eng = mig_engine_select();
    struct cold_cfg *cfg = xzalloc(sizeof *cfg);
    struct cold_file *files = xzalloc(COLD_FILES_MAX * sizeof *files);
    struct strbuf sb = {0}, neutral = {0};
    struct proto_conn c;
    static uint8_t psk[PROTO_KEY_MAX];
    size_t psklen = 0;
    char cfgpath[4200], why[600], v[600];
    char *text = NULL;
    uint8_t *pl = NULL, *buf = NULL;
    uint32_t len;
    int nfiles = 0, fd = -1, lockfd = -1, type, rc = 1;
    pid_t pid = 0;
    bool committed = false, instance = false;
    struct timespec t0, t1;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(&c, 0, sizeof c);
    for (int i = 0; i < COLD_FILES_MAX; i++)
        files[i].fd = -1;
    if (!eng) {
        error_msg("unknown VMMIG_BACKEND '%s'", getenv("VMMIG_BACKEND"));
        goto out;
    }
    /* the configuration */
    if (o->config) {
        strlcpy0(cfgpath, o->config, sizeof cfgpath);
    } else if (!strcmp(eng->name, "qemu")) {
        instance = true;
        struct qemu_dom d;
        if (qemu_dom_find(o->name, &d)) {
            error_msg("%s: no such QEMU domain in %s (give its configuration with --config)",
                      o->name, qemu_run_dir());
            goto out;
        }
        qemu_dom_path(&d, "domain.cfg", cfgpath, sizeof cfgpath);
    } else {
        snprintf(cfgpath, sizeof cfgpath, "%s/%s.cfg", xen_cfg_dir(), o->name);
    }
    int r = read_file(cfgpath, &text, NULL);
    if (r) {
        error_msg("%s: its configuration %s: %s", o->name, cfgpath, strerror(-r));
        goto out;
    }
    if ((!strcmp(eng->name, "qemu") ? cold_from_neutral : cold_from_xl)(text, cfg, why,
                                                                         sizeof why)) {
        error_msg("%s: cannot be moved cold to %s: %s (in %s)", o->name,
                  !strcmp(eng->name, "qemu") ? "Xen" : "QEMU", why, cfgpath);
        goto out;
    }
    if (strcmp(cfg->name, o->name)) {
        error_msg("%s: %s names the domain %s", o->name, cfgpath, cfg->name);
        goto out;
    }
    /* one cold move of it at a time, and none while its config changes */
    lockfd = open(cfgpath, O_RDONLY | O_CLOEXEC);
    if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB)) {
        error_msg("%s: busy: another vmmig migrate --cold of it runs", o->name);
        goto out;
    }
    if (source_busy(eng, o->name, why, sizeof why)) {
        error_msg("%s", why);
        goto out;
    }
    if (cfg->nomigrate) {
        error_msg("%s: locked: %s in %s", o->name, cfg->nomigrate_what, cfgpath);
        goto out;
    }
    if (!cfg->uuid[0]) {
        /* xl gives such a domain a new UUID at every start: fix one. */
        uint8_t u[16];
        if (getentropy(u, sizeof u)) {
            error_msg("getentropy: %s", strerror(errno));
            goto out;
        }
        u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
        u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
        snprintf(cfg->uuid, sizeof cfg->uuid,
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
                 u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
                 u[14], u[15]);
        cold_note(cfg, "no uuid in %s: it gets %s there", cfgpath, cfg->uuid);
    }
    struct domstate st;
    if (state_load(o->state_dir, cfg->uuid, &st, why, sizeof why)) {
        error_msg("%s: its state record: %s", o->name, why);
        goto out;
    }
    if (hold_in_force(&st.admin, time(NULL))) {
        error_msg("%s: locked: an admin hold by %s (%s)", o->name, st.admin.by, st.admin.reason);
        goto out;
    }
    if (st.npeers) {
        error_msg("%s: has peers (a group that migrates together, first %s): a cold move "
                  "takes one domain; remove its peers or migrate the group live", o->name,
                  st.peers[0]);
        goto out;
    }
    /* the files: kernel, ramdisk, disks */
    const char *kinds[COLD_FILES_MAX];
    if (cfg->kernel[0]) {
        strlcpy0(files[nfiles].role, "kernel", sizeof files[0].role);
        strlcpy0(files[nfiles++].src, cfg->kernel, sizeof files[0].src);
    }
    if (cfg->ramdisk[0]) {
        strlcpy0(files[nfiles].role, "ramdisk", sizeof files[0].role);
        strlcpy0(files[nfiles++].src, cfg->ramdisk, sizeof files[0].src);
    }
    for (int i = 0; i < cfg->ndisks; i++) {
        snprintf(files[nfiles].role, sizeof files[0].role, "vd%c", 'a' + i);
        strlcpy0(files[nfiles++].src, cfg->disks[i].path, sizeof files[0].src);
    }
    for (int i = 0; i < nfiles; i++) {
        struct cold_file *f = &files[i];
        f->fd = open(f->src, O_RDONLY | O_CLOEXEC);
        if (f->fd < 0 || (r = file_size(f->fd, &f->size))) {
            error_msg("%s: its %s %s: %s", o->name, f->role, f->src,
                      f->fd < 0 ? strerror(errno) : r == -EINVAL ? "not a file or block device"
                                                                 : strerror(-r));
            goto out;
        }
        if (!f->size) {
            error_msg("%s: its %s %s is empty", o->name, f->role, f->src);
            goto out;
        }
        kinds[i] = f->role;
    }
    (void)kinds;
    for (int i = 0; i < cfg->nnotes; i++)
        printf("%s: %s\n", o->name, cfg->notes[i]);
    fflush(stdout);

    /* the destination */
    if (proto_load_key(o->key_file, psk, &psklen, why, sizeof why)) {
        error_msg("key %s: %s", o->key_file, why);
        goto out;
    }
    if (mig_connect(o->host, o->port, NULL, o->timeout_ms, &fd, &pid, why, sizeof why)) {
        error_msg("%s: cannot reach %s: %s", o->name, o->host, why);
        goto out;
    }
    proto_init(&c, fd, fd, o->timeout_ms);
    if (proto_handshake_client(&c, psk, psklen, NULL, why, sizeof why)) {
        error_msg("%s: %s: %s", o->name, o->host, why);
        goto out;
    }
    char bootid[64];
    mig_boot_id(bootid, sizeof bootid);
    kv_add(&sb, "cold", "1");
    kv_add(&sb, "name", "%s", cfg->name);
    kv_add(&sb, "uuid", "%s", cfg->uuid);
    kv_add(&sb, "memory_kib", "%llu", (unsigned long long)cfg->memory_mib * 1024);
    kv_add(&sb, "vcpus", "%u", cfg->vcpus);
    kv_add(&sb, "backend", "%s", eng->name);
    kv_add(&sb, "boot_id", "%s", bootid);
    if (cold_exchange(&c, o, MSG_MIG_REQ, &sb, MSG_REQ_OK, "refused by %s"))
        goto out;
    sb_reset(&sb);
    char *paths[COLD_MAX_DISKS];
    for (int i = 0; i < cfg->ndisks; i++)
        paths[i] = cfg->disks[i].path;
    cold_to_neutral(cfg, cfg->kernel[0] ? cfg->kernel : NULL,
                    cfg->ramdisk[0] ? cfg->ramdisk : NULL, paths, &neutral);
    kv_add(&sb, "config", "%s", neutral.s);
    for (int i = 0; i < nfiles; i++)
        kv_add(&sb, "file", "%s:%llu", files[i].role, (unsigned long long)files[i].size);
    if (cold_exchange(&c, o, MSG_MIG_CFG, &sb, MSG_CFG_OK, "%s refused its configuration"))
        goto out;

    /* the files, back to back */
    uint64_t index = 0, bytes = 0;
    long delay = mig_test_delay(getenv("VMMIG_TEST_DELAY"), "cold-stream", o->name);
    buf = xmalloc(PROTO_CHUNK_MAX);
    for (int i = 0; i < nfiles; i++) {
        struct cold_file *f = &files[i];
        printf("%s: copying %s %s (%.1f MiB)\n", o->name, f->role, f->src,
               (double)f->size / 1048576.0);
        fflush(stdout);
        sha256_init(&f->sha);
        while (f->done < f->size) {
            size_t want = f->size - f->done < PROTO_CHUNK_MAX ? (size_t)(f->size - f->done)
                                                               : PROTO_CHUNK_MAX;
            ssize_t n = pread(f->fd, buf, want, (off_t)f->done);
            if (n <= 0) {
                snprintf(why, sizeof why, "reading %s: %s", f->src,
                         n ? strerror(errno) : "it shrank");
                send_kv(&c, MSG_ABORT, "reason", why, NULL, NULL);
                error_msg("%s: %s", o->name, why);
                goto out;
            }
            sha256_update(&f->sha, buf, (size_t)n);
            if ((r = proto_send_chunk(&c, index++, buf, (uint32_t)n))) {
                error_msg("%s: sending to %s: %s", o->name, o->host, strerror(-r));
                goto out;
            }
            f->done += (uint64_t)n;
            bytes += (uint64_t)n;
            if (delay > 0 && index == 1) {
                printf("%s: test delay at cold-stream: %ld s\n", o->name, delay);
                fflush(stdout);
                sleep((unsigned)delay);
            }
        }
        sha256_final(&f->sha, f->digest);
    }
    sb_reset(&sb);
    kv_add(&sb, "chunks", "%llu", (unsigned long long)index);
    kv_add(&sb, "bytes", "%llu", (unsigned long long)bytes);
    for (int i = 0; i < nfiles; i++) {
        char h[2 * SHA256_LEN + 1];
        hex(files[i].digest, SHA256_LEN, h);
        kv_add(&sb, "sha256", "%s:%s", files[i].role, h);
    }
    if (cold_exchange(&c, o, MSG_STREAM_END, &sb, MSG_RECEIVED, "%s did not take the copy"))
        goto out;
    /* the commit point: from here the domain is the destination's to start */
    if (proto_send(&c, MSG_COMMIT, NULL, 0)) {
        error_msg("%s: %s: the commit was not sent", o->name, o->host);
        goto out;
    }
    committed = true;
    if (proto_recv(&c, &type, &pl, &len, why, sizeof why) || type != MSG_ACTIVATED) {
        /* Did it start there?  Ask on a new connection. */
        int q = cold_recover_query(o, cfg, psk, psklen);
        if (q == 1) {
            mark_moved(eng, instance, cfgpath, o->name, o->host);
            printf("%s: runs on %s (the link broke after the commit; %s says it runs)\n",
                   o->name, o->host, o->host);
            rc = 0;
        } else if (q == 0) {
            error_msg("%s: %s did not start it (the link broke after the commit): its copy "
                      "here is intact", o->name, o->host);
        } else {
            error_msg("%s: unknown: the link to %s broke after the commit and it cannot be "
                      "asked; check there before starting it here (%s)", o->name, o->host, why);
            rc = 3;
        }
        goto out;
    }
    kv_get(pl, len, "result", v, sizeof v);
    if (strcmp(v, "ok")) {
        kv_get(pl, len, "reason", v, sizeof v);
        error_msg("%s: %s could not start it: %s (its copy here is intact)", o->name, o->host, v);
        proto_send(&c, MSG_DONE, NULL, 0);
        goto out;
    }
    char domid[16] = "";
    kv_get(pl, len, "domid", domid, sizeof domid);
    proto_send(&c, MSG_DONE, NULL, 0);
    mark_moved(eng, instance, cfgpath, o->name, o->host);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%s: moved cold to %s in %.1f s (%.1f MiB, verified), booted afresh there "
           "(domid %s)\n",
           o->name, o->host,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
           (double)bytes / 1048576.0, domid);
    if (cfg->ndisks) {
        printf("%s: its disks here are no longer used by it:", o->name);
        for (int i = 0; i < cfg->ndisks; i++)
            printf(" %s", cfg->disks[i].path);
        printf("\n");
    }
    rc = 0;
out:
    (void)committed;
    for (int i = 0; i < COLD_FILES_MAX; i++)
        if (files[i].fd >= 0)
            close(files[i].fd);
    if (fd >= 0) {
        proto_wipe(&c);
        close(fd);
    }
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
    if (lockfd >= 0)
        close(lockfd);
    secure_zero(psk, sizeof psk);
    free(buf);
    free(pl);
    free(text);
    free(cfg);
    free(files);
    sb_free(&sb);
    sb_free(&neutral);
    fflush(stdout);
    return rc;
}

/* ======================= the destination ======================= */

struct cold_dest {
    struct proto_conn *c;
    const struct mig_engine_ops *eng;
    struct mig_engine *e;
    const char *peer;
    char name[64], uuid[37];
    struct cold_file files[COLD_FILES_MAX];
    int nfiles;
    char cfgpath[4200]; /* Xen: the xl.cfg written */
};

static void dsay(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void dsay(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", toolname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
}

static int dest_refuse(struct cold_dest *d, int type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int dest_refuse(struct cold_dest *d, int type, const char *code, const char *fmt, ...)
{
    char why[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    dsay("cold: refused %s from %s: %s", d->name[0] ? d->name : "a domain", d->peer, why);
    send_kv(d->c, type, code ? "code" : "reason", code ? code : why, code ? "reason" : NULL, why);
    return 1;
}

static void dest_drop_files(struct cold_dest *d)
{
    for (int i = 0; i < d->nfiles; i++) {
        struct cold_file *f = &d->files[i];
        if (f->fd >= 0) {
            close(f->fd);
            f->fd = -1;
        }
        if (f->part[0])
            unlink(f->part);
    }
}

static const char *xl_cmd(void)
{
    return env_or("VMMIG_XL", "xl");
}

/* Start the domain from the files in place: 0, or -1 with why. */
static int dest_start(struct cold_dest *d, const struct cold_cfg *cfg, uint32_t *domid, char *why,
                      size_t whylen)
{
    const char *kernel = NULL, *ramdisk = NULL;
    char *disks[COLD_MAX_DISKS];
    struct strbuf sb = {0};
    int rc = -1, n = 0;

    for (int i = 0; i < d->nfiles; i++) {
        if (!strcmp(d->files[i].role, "kernel"))
            kernel = d->files[i].dst;
        else if (!strcmp(d->files[i].role, "ramdisk"))
            ramdisk = d->files[i].dst;
        else
            disks[n++] = d->files[i].dst;
    }
    if (!strcmp(d->eng->name, "qemu")) {
        struct qemu_dom qd;
        char err[400];
        cold_to_neutral(cfg, kernel, ramdisk, disks, &sb);
        if (qemu_dom_start(sb.s, cfg->name, false, NULL, &qd, err, sizeof err)) {
            snprintf(why, whylen, "%s", err);
            if (qd.domid)
                qemu_dom_remove(&qd, err, sizeof err);
            goto out;
        }
        *domid = qd.domid;
        rc = 0;
        goto out;
    }
    /* Xen: an xl.cfg where xl looks for it, then xl create */
    char err[400];
    sb_printf(&sb, "# moved here cold by vmmig from %s\n", d->peer);
    if (cold_to_xl(cfg, kernel, ramdisk, disks, &sb, err, sizeof err)) {
        snprintf(why, whylen, "%s", err);
        goto out;
    }
    /* This host's own settings for such domains (tsc_mode, on_crash...). */
    const char *extra = env_or("VMMIG_COLD_XL_DEFAULTS", "/etc/vmmig/cold-xl.cfg");
    char *more = NULL;
    if (!read_file(extra, &more, NULL)) {
        sb_printf(&sb, "# from %s\n%s%s", extra, more,
                  *more && more[strlen(more) - 1] != '\n' ? "\n" : "");
        free(more);
    }
    int r = atomic_write(d->cfgpath, sb.s, sb.len, 0644);
    if (r) {
        snprintf(why, whylen, "cannot write %s: %s", d->cfgpath, strerror(-r));
        goto out;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int nul = open("/dev/null", O_RDWR);
        dup2(nul, 0);
        dup2(nul, 1);
        /* xl's messages go to our stderr (the agent's log) */
        execlp(xl_cmd(), xl_cmd(), "create", d->cfgpath, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) {
        snprintf(why, whylen, "%s create %s failed (status %d; see this host's agent log)",
                 xl_cmd(), d->cfgpath, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        unlink(d->cfgpath);
        goto out;
    }
    struct mig_dom md;
    if (d->eng->lookup(d->e, cfg->name, &md)) {
        snprintf(why, whylen, "%s create said yes but no domain %s runs", xl_cmd(), cfg->name);
        unlink(d->cfgpath);
        goto out;
    }
    *domid = md.domid;
    rc = 0;
out:
    sb_free(&sb);
    return rc;
}

/* Verify a written file by reading it back: 0 equal to digest. */
static int read_back(const char *path, const uint8_t *digest, uint64_t size)
{
    struct sha256_ctx s;
    uint8_t got[SHA256_LEN], *buf = xmalloc(1 << 20);
    uint64_t total = 0;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        free(buf);
        return -errno;
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    sha256_init(&s);
    while ((n = read(fd, buf, 1 << 20)) > 0) {
        sha256_update(&s, buf, (size_t)n);
        total += (uint64_t)n;
    }
    close(fd);
    free(buf);
    sha256_final(&s, got);
    return n < 0 ? -EIO : total != size || memcmp(got, digest, SHA256_LEN) ? -EBADMSG : 0;
}

int cold_receive(struct proto_conn *c, const struct mig_engine_ops *eng, struct mig_engine *e,
                 const struct policy *pol, const uint8_t *req, uint32_t reqlen,
                 const char *state_dir, const char *disk_dir, const char *peer)
{
    struct cold_dest *d = xzalloc(sizeof *d);
    struct cold_cfg *cfg = xzalloc(sizeof *cfg);
    char v[600], why[600], lockpath[4300];
    char *cfgtext = NULL;
    uint8_t *pl = NULL;
    uint32_t len;
    int type, rc = 1, lockfd = -1, r;
    struct mig_dom md;
    bool received = false;

    d->c = c;
    d->eng = eng;
    d->e = e;
    d->peer = peer;
    for (int i = 0; i < COLD_FILES_MAX; i++)
        d->files[i].fd = -1;
    /* the request */
    uint64_t need = 0, freekib = 0;
    if (kv_get(req, reqlen, "name", d->name, sizeof d->name) || !d->name[0] ||
        strchr(d->name, '/') || d->name[0] == '.' ||
        kv_get(req, reqlen, "uuid", d->uuid, sizeof d->uuid) || !uuid_valid(d->uuid) ||
        kv_get(req, reqlen, "memory_kib", v, sizeof v) || !(need = strtoull(v, NULL, 10))) {
        dest_refuse(d, MSG_REQ_FAIL, "bad-request", "the request lacks a valid name, uuid or "
                    "memory_kib");
        goto out;
    }
    kv_get(req, reqlen, "backend", v, sizeof v);
    dsay("cold migration of %s (%s) from %s, a %s domain, to this %s host", d->name, d->uuid,
         peer, v, eng->name);
    if (!pol->accept_incoming) {
        dest_refuse(d, MSG_REQ_FAIL, "policy", "this host does not accept migrations "
                    "(accept_incoming = no)");
        goto out;
    }
    if (strcmp(v, "xen") && strcmp(v, "qemu")) {
        dest_refuse(d, MSG_REQ_FAIL, "backend", "a domain from the hypervisor '%s'", v);
        goto out;
    }
    if (!eng->lookup_uuid(e, d->uuid, &md)) {
        dest_refuse(d, MSG_REQ_FAIL, "clash", "a domain with UUID %s is here already (%s)",
                    d->uuid, md.name);
        goto out;
    }
    if (!eng->lookup(e, d->name, &md)) {
        dest_refuse(d, MSG_REQ_FAIL, "clash", "a domain named %s is here already (domid %u)",
                    d->name, md.domid);
        goto out;
    }
    if (!strcmp(eng->name, "xen")) {
        snprintf(d->cfgpath, sizeof d->cfgpath, "%s/%s.cfg", xen_cfg_dir(), d->name);
        if (!access(d->cfgpath, F_OK)) {
            dest_refuse(d, MSG_REQ_FAIL, "clash", "a configuration for %s is here already (%s)",
                        d->name, d->cfgpath);
            goto out;
        }
    }
    if (!eng->free_kib(e, &freekib) && freekib < need + need / 64) {
        dest_refuse(d, MSG_REQ_FAIL, "nomem", "needs %llu KiB, %llu KiB free here",
                    (unsigned long long)need, (unsigned long long)freekib);
        goto out;
    }
    struct domstate st;
    if (state_load(state_dir, d->uuid, &st, why, sizeof why)) {
        dest_refuse(d, MSG_REQ_FAIL, "locked", "this host's state record for %s is unreadable: "
                    "%s", d->uuid, why);
        goto out;
    }
    if (hold_in_force(&st.admin, time(NULL))) {
        dest_refuse(d, MSG_REQ_FAIL, "locked", "an admin hold for %s exists here (by %s: %s)",
                    d->name, st.admin.by, st.admin.reason);
        goto out;
    }
    if ((r = mkdir_p(disk_dir, 0750))) {
        dest_refuse(d, MSG_REQ_FAIL, "backend", "cannot create %s: %s", disk_dir, strerror(-r));
        goto out;
    }
    snprintf(lockpath, sizeof lockpath, "%s/.%s.cold.lock", disk_dir, d->name);
    lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB)) {
        dest_refuse(d, MSG_REQ_FAIL, "busy", "another migration of %s is arriving", d->name);
        goto out;
    }
    send_kv(c, MSG_REQ_OK, "algorithm", "cold", "reservation", d->uuid);

    /* the configuration and the files it comes with */
    if (proto_recv(c, &type, &pl, &len, why, sizeof why) || type != MSG_MIG_CFG) {
        dsay("cold: %s: expected MIG_CFG: %s", peer, type == MSG_ABORT ? "aborted" : why);
        goto out;
    }
    cfgtext = xmalloc(len + 1);
    if (kv_get(pl, len, "config", cfgtext, len + 1) ||
        cold_from_neutral(cfgtext, cfg, why, sizeof why)) {
        dest_refuse(d, MSG_CFG_FAIL, NULL, "its configuration: %s",
                    cfgtext[0] ? why : "missing");
        goto out;
    }
    if (strcmp(cfg->name, d->name) || strcmp(cfg->uuid, d->uuid)) {
        dest_refuse(d, MSG_CFG_FAIL, NULL, "its configuration names another domain (%s %s)",
                    cfg->name, cfg->uuid);
        goto out;
    }
    /* the bridges, before any file is copied (Xen's hotplug script needs
     * them in dom0 as much as QEMU's taps do) */
    if (qemu_net_check(cfg->vifs, cfg->nvifs, why, sizeof why)) {
        dest_refuse(d, MSG_CFG_FAIL, NULL, "%s", why);
        goto out;
    }
    if (!strcmp(eng->name, "xen")) {
        struct strbuf t = {0};
        char *dummy[COLD_MAX_DISKS];
        for (int i = 0; i < cfg->ndisks; i++)
            dummy[i] = "/x";
        r = cold_to_xl(cfg, "/x", NULL, dummy, &t, why, sizeof why);
        sb_free(&t);
        if (r) {
            dest_refuse(d, MSG_CFG_FAIL, NULL, "cannot be a PVH domain here: %s", why);
            goto out;
        }
    }
    size_t pos = 0;
    char key[32];
    uint64_t total = 0;
    while ((r = kv_next(pl, len, &pos, key, sizeof key, v, sizeof v)) > 0) {
        if (strcmp(key, "file"))
            continue;
        char *colon = strchr(v, ':');
        struct cold_file *f = &d->files[d->nfiles];
        unsigned long long size;
        if (d->nfiles == COLD_FILES_MAX || !colon || (size = strtoull(colon + 1, NULL, 10)) == 0 ||
            (size_t)(colon - v) >= sizeof f->role) {
            dest_refuse(d, MSG_CFG_FAIL, NULL, "a bad file= line '%s'", v);
            goto out;
        }
        *colon = 0;
        strlcpy0(f->role, v, sizeof f->role);
        f->size = size;
        total += size;
        bool ok = !strcmp(f->role, "kernel") ? cfg->kernel[0] != 0
                  : !strcmp(f->role, "ramdisk") ? cfg->ramdisk[0] != 0
                  : f->role[0] == 'v' && f->role[1] == 'd' && f->role[2] - 'a' == d->nfiles -
                        (cfg->kernel[0] ? 1 : 0) - (cfg->ramdisk[0] ? 1 : 0) && !f->role[3];
        if (!ok) {
            dest_refuse(d, MSG_CFG_FAIL, NULL, "file %s does not belong to its configuration",
                        f->role);
            goto out;
        }
        const char *suffix = !strcmp(f->role, "kernel") || !strcmp(f->role, "ramdisk") ? "" : ".img";
        /* Xen calls vda xvda */
        char dst[4200], role[16], nm[64];
        strlcpy0(role, f->role, sizeof role);
        strlcpy0(nm, d->name, sizeof nm);
        snprintf(dst, sizeof dst, "%s/%s.%s%s%s", disk_dir, nm,
                 !strcmp(eng->name, "xen") && suffix[0] ? "x" : "", role, suffix);
        strlcpy0(f->dst, dst, sizeof f->dst);
        d->nfiles++;
    }
    if (r < 0 || d->nfiles != cfg->ndisks + (cfg->kernel[0] ? 1 : 0) + (cfg->ramdisk[0] ? 1 : 0)) {
        dest_refuse(d, MSG_CFG_FAIL, NULL, "the files do not match its configuration");
        goto out;
    }
    struct statvfs sv;
    if (!statvfs(disk_dir, &sv) && (uint64_t)sv.f_bavail * sv.f_frsize < total + total / 64) {
        dest_refuse(d, MSG_CFG_FAIL, NULL, "needs %llu bytes in %s, %llu free",
                    (unsigned long long)total, disk_dir,
                    (unsigned long long)sv.f_bavail * sv.f_frsize);
        goto out;
    }
    for (int i = 0; i < d->nfiles; i++) {
        struct cold_file *f = &d->files[i];
        if (!access(f->dst, F_OK)) {
            dest_refuse(d, MSG_CFG_FAIL, NULL, "%s exists here already", f->dst);
            goto out;
        }
        char part[4300];
        snprintf(part, sizeof part, "%s.part", f->dst);
        strlcpy0(f->part, part, sizeof f->part);
        unlink(f->part); /* a leftover of a broken copy (we hold the name's lock) */
        f->fd = open(f->part, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        if (f->fd < 0) {
            int er = errno;
            f->part[0] = 0;
            dest_refuse(d, MSG_CFG_FAIL, NULL, "cannot create %s.part: %s", f->dst, strerror(er));
            goto out;
        }
        sha256_init(&f->sha);
    }
    free(pl);
    pl = NULL;
    send_kv(c, MSG_CFG_OK, NULL, NULL, NULL, NULL);

    /* the files */
    uint64_t expect = 0, bytes = 0;
    int cur = 0;
    for (;;) {
        if (proto_recv(c, &type, &pl, &len, why, sizeof why)) {
            dsay("cold: %s: the copy of %s broke off: %s (removed what had arrived)", peer,
                 d->name, why);
            goto out;
        }
        if (type == MSG_STREAM_END)
            break;
        if (type == MSG_ABORT) {
            kv_get(pl, len, "reason", v, sizeof v);
            dsay("cold: %s aborted %s: %s", peer, d->name, v);
            goto out;
        }
        uint64_t idx;
        const uint8_t *data;
        uint32_t dlen;
        if (type != MSG_CHUNK || proto_chunk_split(pl, len, &idx, &data, &dlen, why, sizeof why)) {
            send_kv(c, MSG_ABORT, "reason", "expected CHUNK or STREAM_END", NULL, NULL);
            dsay("cold: %s sent %s in the stream", peer, msg_type_name(type));
            goto out;
        }
        while (cur < d->nfiles && d->files[cur].done == d->files[cur].size)
            cur++;
        if (idx != expect++ || cur == d->nfiles ||
            dlen > d->files[cur].size - d->files[cur].done) {
            send_kv(c, MSG_ABORT, "reason", "a chunk out of order or past the files' sizes",
                    NULL, NULL);
            dsay("cold: %s: chunk %llu out of order or too long", peer, (unsigned long long)idx);
            goto out;
        }
        struct cold_file *f = &d->files[cur];
        const uint8_t *p = data;
        uint32_t left = dlen;
        while (left) {
            ssize_t n = pwrite(f->fd, p, left, (off_t)f->done);
            if (n <= 0) {
                snprintf(why, sizeof why, "writing %s: %s", f->part, n ? strerror(errno) : "short");
                send_kv(c, MSG_ABORT, "reason", why, NULL, NULL);
                dsay("cold: %s", why);
                goto out;
            }
            sha256_update(&f->sha, p, (size_t)n);
            p += n;
            left -= (uint32_t)n;
            f->done += (uint64_t)n;
        }
        bytes += dlen;
        free(pl);
        pl = NULL;
    }
    kv_get(pl, len, "bytes", v, sizeof v);
    if (strtoull(v, NULL, 10) != bytes) {
        send_kv(c, MSG_ABORT, "reason", "STREAM_END's bytes differ from what arrived", NULL, NULL);
        goto out;
    }
    for (int i = 0; i < d->nfiles; i++) {
        struct cold_file *f = &d->files[i];
        char h[2 * SHA256_LEN + 1], want[128] = "";
        pos = 0;
        while (kv_next(pl, len, &pos, key, sizeof key, v, sizeof v) > 0)
            if (!strcmp(key, "sha256") && !strncmp(v, f->role, strlen(f->role)) &&
                v[strlen(f->role)] == ':')
                strlcpy0(want, v + strlen(f->role) + 1, sizeof want);
        sha256_final(&f->sha, f->digest);
        hex(f->digest, SHA256_LEN, h);
        if (f->done != f->size || strcmp(h, want)) {
            snprintf(why, sizeof why, "%s: %s (%llu of %llu bytes, sha256 %s, the source's %s)",
                     f->role, f->done != f->size ? "incomplete" : "differs from the source's",
                     (unsigned long long)f->done, (unsigned long long)f->size, h,
                     want[0] ? want : "missing");
            send_kv(c, MSG_ABORT, "reason", why, NULL, NULL);
            dsay("cold: %s", why);
            goto out;
        }
        if (fsync(f->fd) || close(f->fd)) {
            f->fd = -1;
            snprintf(why, sizeof why, "syncing %s: %s", f->part, strerror(errno));
            send_kv(c, MSG_ABORT, "reason", why, NULL, NULL);
            goto out;
        }
        f->fd = -1;
        if ((r = read_back(f->part, f->digest, f->size))) {
            snprintf(why, sizeof why, "%s read back %s", f->part,
                     r == -EBADMSG ? "differs from what was written" : strerror(-r));
            send_kv(c, MSG_ABORT, "reason", why, NULL, NULL);
            dsay("cold: %s", why);
            goto out;
        }
    }
    free(pl);
    pl = NULL;
    send_kv(c, MSG_RECEIVED, NULL, NULL, NULL, NULL);
    dsay("cold: %s: %llu bytes in %d files, verified (sha256)", d->name,
         (unsigned long long)bytes, d->nfiles);
    received = true;

    /* the commit point */
    if (proto_recv(c, &type, &pl, &len, why, sizeof why) || type != MSG_COMMIT) {
        dsay("cold: %s: no COMMIT for %s: %s (removed its copy)", peer, d->name,
             type == MSG_ABORT ? "aborted" : why);
        goto out;
    }
    free(pl);
    pl = NULL;
    for (int i = 0; i < d->nfiles; i++) {
        struct cold_file *f = &d->files[i];
        if (rename(f->part, f->dst)) {
            snprintf(why, sizeof why, "cannot rename %s: %s", f->part, strerror(errno));
            goto start_failed;
        }
        f->part[0] = 0;
    }
    uint32_t domid = 0;
    if (dest_start(d, cfg, &domid, why, sizeof why))
        goto start_failed;
    char num[16];
    snprintf(num, sizeof num, "%u", domid);
    struct strbuf sb = {0};
    kv_add(&sb, "result", "ok");
    kv_add(&sb, "domid", "%s", num);
    kv_add(&sb, "resumed_ms", "%lld", epoch_ms());
    proto_send(c, MSG_ACTIVATED, sb.s, (uint32_t)sb.len);
    sb_free(&sb);
    dsay("cold: %s runs here (domid %u), booted afresh from its disks", d->name, domid);
    /* DONE, or the source hanging up: the domain is ours either way */
    if (!proto_recv(c, &type, &pl, &len, why, sizeof why) && type != MSG_DONE)
        dsay("cold: %s sent %s after ACTIVATED", peer, msg_type_name(type));
    rc = 0;
    goto out;

start_failed:
    dsay("cold: %s could not start: %s (removed its copy)", d->name, why);
    send_kv(c, MSG_ACTIVATED, "result", "failed", "reason", why);
    for (int i = 0; i < d->nfiles; i++) {
        if (!d->files[i].part[0])
            unlink(d->files[i].dst);
    }
out:
    if (rc)
        dest_drop_files(d);
    (void)received;
    if (lockfd >= 0) {
        unlink(lockpath);
        close(lockfd);
    }
    free(pl);
    free(cfgtext);
    free(cfg);
    free(d);
    return rc;
}
