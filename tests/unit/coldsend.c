/* The source of a cold migration (lib/coldmig.c, cold_send) against a
 * hand-written destination on 127.0.0.1: what it sends (the request, the
 * neutral configuration, the files and their digests), and what it does
 * with each answer: refused (its copy untouched), started there (its
 * configuration renamed), the link broken after the commit point (it asks
 * on a new connection: runs there -> marked; absent -> untouched; nobody
 * to ask -> exit 3, untouched). */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coldmig.h"
#include "state.h"
#include "tap.h"

static char dir[256], cfgpath[300], keypath[300], statedir[300], kernel[300], disk[300];
static uint8_t psk[32];

enum script { REFUSE, START, CUT_AFTER_COMMIT };

struct fake {
    int lfd;
    enum script how;
    const char *query_state; /* the answer to a QUERY, or NULL: no second connection */
    /* what it saw */
    char req_backend[32], cfg[2000], files[200], sums[400];
    unsigned long long bytes;
    char data[64];
    size_t ndata;
    bool queried;
};

static int serve_one(struct fake *f, struct proto_conn *c)
{
    char err[300];
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0)
        return -1;
    proto_init(c, fd, fd, 5000);
    if (proto_handshake_server(c, psk, sizeof psk, err, sizeof err)) {
        close(fd);
        return -1;
    }
    return fd;
}

static void reply(struct proto_conn *c, int type, const char *k, const char *v)
{
    struct strbuf sb = {0};
    if (k)
        kv_add(&sb, k, "%s", v);
    proto_send(c, type, sb.s, (uint32_t)sb.len);
    sb_free(&sb);
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    struct proto_conn c;
    uint8_t *pl = NULL;
    uint32_t len;
    int type, fd;
    char err[300];

    if ((fd = serve_one(f, &c)) < 0)
        return NULL;
    if (proto_recv(&c, &type, &pl, &len, err, sizeof err) || type != MSG_MIG_REQ)
        goto out;
    kv_get(pl, len, "backend", f->req_backend, sizeof f->req_backend);
    free(pl);
    pl = NULL;
    if (f->how == REFUSE) {
        struct strbuf sb = {0};
        kv_add(&sb, "code", "clash");
        kv_add(&sb, "reason", "a domain named web1 is here already (domid 3)");
        proto_send(&c, MSG_REQ_FAIL, sb.s, (uint32_t)sb.len);
        sb_free(&sb);
        goto out;
    }
    reply(&c, MSG_REQ_OK, "algorithm", "cold");
    if (proto_recv(&c, &type, &pl, &len, err, sizeof err) || type != MSG_MIG_CFG)
        goto out;
    kv_get(pl, len, "config", f->cfg, sizeof f->cfg);
    size_t pos = 0;
    char k[32], v[2000];
    while (kv_next(pl, len, &pos, k, sizeof k, v, sizeof v) > 0)
        if (!strcmp(k, "file"))
            snprintf(f->files + strlen(f->files), sizeof f->files - strlen(f->files), "%s ", v);
    free(pl);
    pl = NULL;
    reply(&c, MSG_CFG_OK, NULL, NULL);
    for (;;) {
        if (proto_recv(&c, &type, &pl, &len, err, sizeof err))
            goto out;
        if (type == MSG_STREAM_END)
            break;
        uint64_t idx;
        const uint8_t *data;
        uint32_t dlen;
        if (type == MSG_CHUNK && !proto_chunk_split(pl, len, &idx, &data, &dlen, err, sizeof err) &&
            f->ndata + dlen <= sizeof f->data) {
            memcpy(f->data + f->ndata, data, dlen);
            f->ndata += dlen;
        }
        free(pl);
        pl = NULL;
    }
    pos = 0;
    while (kv_next(pl, len, &pos, k, sizeof k, v, sizeof v) > 0) {
        if (!strcmp(k, "sha256"))
            snprintf(f->sums + strlen(f->sums), sizeof f->sums - strlen(f->sums), "%s ", v);
        if (!strcmp(k, "bytes"))
            f->bytes = strtoull(v, NULL, 10);
    }
    free(pl);
    pl = NULL;
    reply(&c, MSG_RECEIVED, NULL, NULL);
    if (proto_recv(&c, &type, &pl, &len, err, sizeof err) || type != MSG_COMMIT)
        goto out;
    if (f->how == START) {
        struct strbuf sb = {0};
        kv_add(&sb, "result", "ok");
        kv_add(&sb, "domid", "4");
        proto_send(&c, MSG_ACTIVATED, sb.s, (uint32_t)sb.len);
        sb_free(&sb);
        free(pl);
        pl = NULL;
        proto_recv(&c, &type, &pl, &len, err, sizeof err);
        goto out;
    }
    /* CUT_AFTER_COMMIT: hang up; then answer the source's QUERY */
    proto_wipe(&c);
    close(fd);
    fd = -1;
    if (!f->query_state) {
        close(f->lfd);
        f->lfd = -1;
        goto out;
    }
    if ((fd = serve_one(f, &c)) < 0)
        goto out;
    free(pl);
    pl = NULL;
    if (!proto_recv(&c, &type, &pl, &len, err, sizeof err) && type == MSG_QUERY) {
        f->queried = true;
        reply(&c, MSG_STATE, "state", f->query_state);
    }
out:
    free(pl);
    if (fd >= 0) {
        proto_wipe(&c);
        close(fd);
    }
    return NULL;
}

static int run(struct fake *f, enum script how, const char *query_state)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    pthread_t t;

    memset(f, 0, sizeof *f);
    f->how = how;
    f->query_state = query_state;
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bind(f->lfd, (struct sockaddr *)&a, sizeof a);
    listen(f->lfd, 4);
    getsockname(f->lfd, (struct sockaddr *)&a, &al);
    pthread_create(&t, NULL, fake_main, f);
    struct cold_send_opts o = {
        .name = "web1",
        .host = "127.0.0.1",
        .port = ntohs(a.sin_port),
        .config = cfgpath,
        .key_file = keypath,
        .state_dir = statedir,
        .timeout_ms = 3000,
    };
    fflush(stdout);
    int rc = cold_send(&o);
    /* a source that refused by itself never connected: wake the accept() */
    if (f->lfd >= 0)
        shutdown(f->lfd, SHUT_RDWR);
    pthread_join(t, NULL);
    if (f->lfd >= 0)
        close(f->lfd);
    return rc;
}

static bool exists(const char *p)
{
    struct stat st;
    return !stat(p, &st);
}

static void write_cfg(const char *extra)
{
    char text[1500];
    int n = snprintf(text, sizeof text,
                     "name = \"web1\"\nuuid = \"6a1c0f4e-7d2b-4c11-9e0a-c01d00000001\"\n"
                     "memory = 64\nkernel = \"%s\"\ncmdline = \"root=/dev/vda console=ttyS0\"\n"
                     "disk = [ 'target=%s' ]\n%s",
                     kernel, disk, extra);
    atomic_write(cfgpath, text, (size_t)n, 0644);
}

int main(void)
{
    struct fake f;
    char moved[400];

    snprintf(dir, sizeof dir, "/tmp/vmmig-coldsend-test.%d", (int)getpid());
    mkdir(dir, 0700);
    snprintf(cfgpath, sizeof cfgpath, "%s/web1.cfg", dir);
    snprintf(keypath, sizeof keypath, "%s/key", dir);
    snprintf(statedir, sizeof statedir, "%s/state", dir);
    snprintf(kernel, sizeof kernel, "%s/vmlinuz", dir);
    snprintf(disk, sizeof disk, "%s/web1.img", dir);
    snprintf(moved, sizeof moved, "%s.moved-to-127.0.0.1", cfgpath);
    mkdir(statedir, 0700);
    for (size_t i = 0; i < sizeof psk; i++)
        psk[i] = (uint8_t)(i * 7 + 1);
    atomic_write(keypath, psk, sizeof psk, 0600);
    atomic_write(kernel, "hello", 5, 0644);
    atomic_write(disk, "12345678", 8, 0644);
    char run_dir[300];
    snprintf(run_dir, sizeof run_dir, "%s/run", dir);
    setenv("VMMIG_QEMU_DIR", run_dir, 1);
    setenv("VMMIG_BACKEND", "qemu", 1);
    toolname = "coldsend-test";

    write_cfg("");
    is_int(run(&f, REFUSE, NULL), 1, "the destination refuses: exit 1");
    ok(exists(cfgpath) && !exists(moved), "  the configuration here is untouched");
    is_str(f.req_backend, "qemu", "  the request said where it comes from (backend=qemu)");

    is_int(run(&f, START, NULL), 0, "the destination starts it: exit 0");
    ok(strstr(f.cfg, "kernel = \"") && strstr(f.cfg, "disk = [ 'vdev=vda, target=") &&
           strstr(f.cfg, "cmdline = \"root=/dev/vda console=ttyS0\""),
       "  the neutral configuration went first");
    is_str(f.files, "kernel:5 vda:8 ", "  then the files' roles and sizes");
    ok(f.ndata == 13 && !memcmp(f.data, "hello12345678", 13), "  then their bytes, back to back");
    is_int(f.bytes, 13, "  STREAM_END counts them");
    ok(strstr(f.sums, "kernel:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824") &&
           strstr(f.sums, "vda:ef797c8118f02dfb649607dd5d3f8c7623048c9c063d532cc95c5ed7a898a64f"),
       "  with each file's SHA-256");
    ok(!exists(cfgpath) && exists(moved), "  the configuration here is renamed .moved-to-HOST");
    ok(exists(disk), "  the disk image is left in place");

    write_cfg("");
    is_int(run(&f, CUT_AFTER_COMMIT, "active"), 0,
           "the link breaks after COMMIT, the destination says it runs: exit 0");
    ok(f.queried, "  it was asked on a new connection (QUERY)");
    ok(!exists(cfgpath) && exists(moved), "  the configuration here is marked moved");

    write_cfg("");
    unlink(moved);
    is_int(run(&f, CUT_AFTER_COMMIT, "absent"), 1,
           "the link breaks after COMMIT, the domain is not there: exit 1");
    ok(exists(cfgpath) && !exists(moved), "  the configuration here is untouched");

    is_int(run(&f, CUT_AFTER_COMMIT, NULL), 3,
           "the link breaks after COMMIT and nobody answers: exit 3 (unknown)");
    ok(exists(cfgpath) && !exists(moved), "  the configuration here is untouched");

    /* refused here, before any connection */
    write_cfg("migration = \"no\"\n");
    is_int(run(&f, START, NULL), 1, "migration = \"no\": refused here, exit 1");
    is_str(f.req_backend, "", "  nothing was asked of the destination");
    write_cfg("vga = \"std\"\n");
    is_int(run(&f, START, NULL), 1, "a key vmmig cannot carry: refused here, exit 1");
    is_str(f.req_backend, "", "  nothing was asked of the destination");
    write_cfg("");
    char hold[1000];
    snprintf(hold, sizeof hold, "%s/domains", statedir);
    mkdir(hold, 0700);
    struct domstate st;
    memset(&st, 0, sizeof st);
    st.admin.active = true;
    st.admin.since = time(NULL);
    strcpy(st.admin.by, "root");
    strcpy(st.admin.reason, "backup");
    state_save(statedir, "6a1c0f4e-7d2b-4c11-9e0a-c01d00000001", &st);
    is_int(run(&f, START, NULL), 1, "an admin hold: refused here, exit 1");
    is_str(f.req_backend, "", "  nothing was asked of the destination");
    ok(exists(cfgpath), "  the configuration here is untouched");
    memset(&st, 0, sizeof st);
    strcpy(st.peers[0], "11111111-2222-4333-8444-555555555555");
    st.npeers = 1;
    state_save(statedir, "6a1c0f4e-7d2b-4c11-9e0a-c01d00000001", &st);
    is_int(run(&f, START, NULL), 1, "a member of a peer group: refused here, exit 1");
    is_str(f.req_backend, "", "  nothing was asked of the destination");

    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd))
        printf("# cannot remove %s\n", dir);
    return done_testing();
}
