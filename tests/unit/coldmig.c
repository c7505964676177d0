/* The destination of a cold migration (lib/coldmig.c, cold_receive) on a
 * QEMU host with an empty run directory, driven by a hand-written source
 * over a socketpair: each refusal and fault is answered as
 * vmmig-protocol(7), COLD says, and leaves nothing in the disk directory. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coldmig.h"
#include "sha256.h"
#include "tap.h"

#define UUID "6a1c0f4e-7d2b-4c11-9e0a-c01d00000001"

static char dir[256], state[300], disks[300], run[300];
static uint8_t KEY[32] = {7};
static struct policy pol;

struct dest {
    int fd;
    int rc;
    pthread_t t;
};

static void *dest_main(void *arg)
{
    struct dest *d = arg;
    struct proto_conn c;
    struct mig_engine *e;
    char err[300];
    uint8_t *pl = NULL;
    uint32_t len;
    int type;

    proto_init(&c, d->fd, d->fd, 5000);
    c.role = PROTO_ROLE_DEST;
    proto_set_session_key(&c, KEY);
    d->rc = -1;
    if (qemu_mig_engine.open(&e, NULL, NULL, err, sizeof err))
        return NULL;
    if (!proto_recv(&c, &type, &pl, &len, err, sizeof err) && type == MSG_MIG_REQ)
        d->rc = cold_receive(&c, &qemu_mig_engine, e, &pol, pl, len, state, disks, "hostA");
    free(pl);
    qemu_mig_engine.close(e);
    close(d->fd);
    return NULL;
}

static struct proto_conn src;
static struct dest dst;

static void start(const char *name)
{
    int sv[2];
    struct strbuf sb = {0};
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    dst.fd = sv[1];
    pthread_create(&dst.t, NULL, dest_main, &dst);
    proto_init(&src, sv[0], sv[0], 5000);
    src.role = PROTO_ROLE_SOURCE;
    proto_set_session_key(&src, KEY);
    kv_add(&sb, "cold", "1");
    kv_add(&sb, "name", "%s", name);
    kv_add(&sb, "uuid", UUID);
    kv_add(&sb, "memory_kib", "1024");
    kv_add(&sb, "vcpus", "1");
    kv_add(&sb, "backend", "xen");
    proto_send(&src, MSG_MIG_REQ, sb.s, (uint32_t)sb.len);
    sb_free(&sb);
}

static int finish(void)
{
    close(src.rfd);
    pthread_join(dst.t, NULL);
    return dst.rc;
}

/* The next message: its type, and the value of key into val. */
static int next(const char *key, char *val, size_t size)
{
    uint8_t *pl = NULL;
    uint32_t len;
    int type;
    char err[200];
    val[0] = 0;
    if (proto_recv(&src, &type, &pl, &len, err, sizeof err))
        return -1;
    if (key)
        kv_get(pl, len, key, val, size);
    free(pl);
    return type;
}

static void send_cfg(const char *files)
{
    struct strbuf sb = {0};
    kv_add(&sb, "config", "name = \"web1\"\nuuid = \"" UUID "\"\nkernel = \"/src/k\"\n"
                          "cmdline = \"root=/dev/vda\"\ndisk = [ 'vdev=vda, target=/src/d.img' ]\n");
    for (const char *p = files; *p;) {
        const char *sp = strchr(p, ' ');
        size_t n = sp ? (size_t)(sp - p) : strlen(p);
        kv_add(&sb, "file", "%.*s", (int)n, p);
        p += n + (sp ? 1 : 0);
    }
    proto_send(&src, MSG_MIG_CFG, sb.s, (uint32_t)sb.len);
    sb_free(&sb);
}

static void hexsum(const char *data, size_t n, char *out)
{
    uint8_t d[32];
    sha256(data, n, d);
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void send_end(const char *ksum, const char *dsum, unsigned long long bytes)
{
    struct strbuf sb = {0};
    kv_add(&sb, "chunks", "2");
    kv_add(&sb, "bytes", "%llu", bytes);
    kv_add(&sb, "sha256", "kernel:%s", ksum);
    kv_add(&sb, "sha256", "vda:%s", dsum);
    proto_send(&src, MSG_STREAM_END, sb.s, (uint32_t)sb.len);
    sb_free(&sb);
}

static bool disks_empty(void)
{
    DIR *d = opendir(disks);
    struct dirent *de;
    bool empty = true;
    if (!d)
        return true;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            empty = false;
    closedir(d);
    return empty;
}

/* Up to CFG_OK with a 5-byte kernel and an 8-byte disk. */
static bool to_stream(void)
{
    char v[300];
    start("web1");
    if (next("reservation", v, sizeof v) != MSG_REQ_OK)
        return false;
    send_cfg("kernel:5 vda:8");
    return next(NULL, v, sizeof v) == MSG_CFG_OK;
}

int main(void)
{
    char v[600], ks[65], ds[65];

    snprintf(dir, sizeof dir, "/tmp/vmmig-coldmig-test.%d", (int)getpid());
    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(disks, sizeof disks, "%s/disks", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    mkdir(dir, 0700);
    mkdir(state, 0700);
    mkdir(run, 0700);
    setenv("VMMIG_QEMU_DIR", run, 1);
    setenv("VMMIG_QEMU", "/bin/false", 1); /* a start fails (the last test) */
    toolname = "coldmig-test";
    policy_defaults(&pol);
    hexsum("hello", 5, ks);
    hexsum("12345678", 8, ds);

    /* refusals at the request */
    pol.accept_incoming = false;
    start("web1");
    is_int(next("code", v, sizeof v), MSG_REQ_FAIL, "accept_incoming = no: REQ_FAIL");
    is_str(v, "policy", "  code=policy");
    is_int(finish(), 1, "  the destination reports a failure");
    pol.accept_incoming = true;

    char p[600];
    snprintf(p, sizeof p, "%s/.dom", run);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/.dom/7", run);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/.dom/7/domain.cfg", run);
    atomic_write(p, "name = \"taken\"\nkernel = \"/k\"\n", 29, 0600);
    snprintf(p, sizeof p, "%s/taken", run);
    symlink(".dom/7", p);
    start("taken");
    is_int(next("reason", v, sizeof v), MSG_REQ_FAIL, "a (stopped) domain of that name here: REQ_FAIL");
    ok(strstr(v, "a domain named taken is here already") != NULL, "  reason: %s", v);
    finish();

    /* refusals of the configuration */
    start("web1");
    is_int(next(NULL, v, sizeof v), MSG_REQ_OK, "web1: REQ_OK");
    send_cfg("kernel:5");
    is_int(next("reason", v, sizeof v), MSG_CFG_FAIL, "files that do not match the config: CFG_FAIL");
    ok(strstr(v, "the files do not match its configuration") != NULL, "  reason: %s", v);
    finish();
    start("web1");
    next(NULL, v, sizeof v);
    send_cfg("kernel:5 vdb:8");
    is_int(next("reason", v, sizeof v), MSG_CFG_FAIL, "a disk role out of place: CFG_FAIL");
    ok(strstr(v, "file vdb does not belong") != NULL, "  reason: %s", v);
    finish();
    start("web1");
    next(NULL, v, sizeof v);
    {
        struct strbuf sb = {0};
        kv_add(&sb, "config", "name = \"web1\"\nuuid = \"" UUID "\"\nkernel = \"/src/k\"\n"
                              "vif = [ 'bridge=vmmig-nobr0' ]\n");
        kv_add(&sb, "file", "kernel:5");
        proto_send(&src, MSG_MIG_CFG, sb.s, (uint32_t)sb.len);
        sb_free(&sb);
    }
    is_int(next("reason", v, sizeof v), MSG_CFG_FAIL, "a vif on a bridge this host lacks: CFG_FAIL");
    ok(strstr(v, "vif 0: no bridge vmmig-nobr0 on this host") != NULL, "  reason: %s", v);
    finish();
    ok(disks_empty(), "nothing in the disk directory");

    /* faults in the stream */
    ok(to_stream(), "to the stream: CFG_OK");
    proto_send_chunk(&src, 0, "hello", 5);
    proto_send_chunk(&src, 1, "12345679", 8);
    send_end(ks, ds, 13);
    is_int(next("reason", v, sizeof v), MSG_ABORT, "a disk that differs from the source's digest: ABORT");
    ok(strstr(v, "vda: differs from the source's") != NULL, "  reason: %s", v);
    is_int(finish(), 1, "  the destination fails");
    ok(disks_empty(), "  and removes what had arrived");

    ok(to_stream(), "to the stream again");
    proto_send_chunk(&src, 1, "hello", 5);
    is_int(next("reason", v, sizeof v), MSG_ABORT, "a chunk out of order: ABORT");
    ok(strstr(v, "out of order") != NULL, "  reason: %s", v);
    finish();
    ok(disks_empty(), "  nothing left");

    ok(to_stream(), "to the stream again");
    proto_send_chunk(&src, 0, "hello", 5);
    proto_send_chunk(&src, 1, "123456789", 9);
    is_int(next("reason", v, sizeof v), MSG_ABORT, "a chunk past the files' sizes: ABORT");
    finish();
    ok(disks_empty(), "  nothing left");

    ok(to_stream(), "to the stream again");
    proto_send_chunk(&src, 0, "hello", 5);
    proto_send_chunk(&src, 1, "123", 3);
    is_int(finish(), 1, "the link closed in the middle of the copy: the destination fails");
    ok(disks_empty(), "  and removes what had arrived");

    ok(to_stream(), "to the stream again");
    proto_send_chunk(&src, 0, "hello", 5);
    proto_send_chunk(&src, 1, "12345678", 8);
    send_end(ks, ds, 13);
    is_int(next(NULL, v, sizeof v), MSG_RECEIVED, "every file verified: RECEIVED");
    snprintf(p, sizeof p, "%s/web1.vda.img.part", disks);
    char *got = NULL;
    size_t glen = 0;
    ok(!read_file(p, &got, &glen) && glen == 8 && !memcmp(got, "12345678", 8),
       "  the disk is written (not yet in place)");
    free(got);
    is_int(finish(), 1, "the link closed before COMMIT: the destination fails");
    ok(disks_empty(), "  and removes its copy");

    ok(to_stream(), "to the stream again");
    proto_send_chunk(&src, 0, "hello", 5);
    proto_send_chunk(&src, 1, "12345678", 8);
    send_end(ks, ds, 13);
    next(NULL, v, sizeof v);
    proto_send(&src, MSG_COMMIT, NULL, 0);
    char res[32];
    is_int(next("result", res, sizeof res), MSG_ACTIVATED, "COMMIT, QEMU cannot start: ACTIVATED");
    is_str(res, "failed", "  result=failed");
    is_int(finish(), 1, "  the destination fails");
    ok(disks_empty(), "  and removes its copy");
    snprintf(p, sizeof p, "%s/web1", run);
    struct stat st;
    ok(lstat(p, &st) != 0, "  no domain web1 is left in the run directory");

    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd))
        printf("# cannot remove %s\n", dir);
    return done_testing();
}
