/* blockmirror: bitmap logic, byte-range diffs, and the engine against an
 * in-process secondary (bm_file_ops on a unix socket): initial sync,
 * synchronous writes, a peer that dies with a write unanswered, verify
 * naming a corrupted range, disconnect and
 * dirty-only resync, the bitmap across a clean restart and across a crash
 * (activity log), stale-replica delta, and the switch. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blockmirror.h"
#include "tap.h"

#define BS 65536U
#define SIZE (64ULL * BS + 1000) /* a short last block on purpose */

static char dir[] = "/tmp/vmmig-unit-bm.XXXXXX";
static char pri[256], sec[256], sock[256], url[300];

/* ---- the secondary: accept loop, one thread per connection ---- */

static struct bm_file peer_file;
static int peer_lfd = -1;
static pthread_t peer_thread;

/* A write at cut_at makes the peer die with it taken but neither applied
 * nor answered (the connection is shut down under the primary). */
static uint64_t cut_at = UINT64_MAX;
static int last_conn_fd = -1;

static int cut_pwrite(void *h, const void *buf, uint32_t len, uint64_t off, uint32_t flags)
{
    if (off == __atomic_load_n(&cut_at, __ATOMIC_SEQ_CST)) {
        __atomic_store_n(&cut_at, UINT64_MAX, __ATOMIC_SEQ_CST);
        shutdown(__atomic_load_n(&last_conn_fd, __ATOMIC_SEQ_CST), SHUT_RDWR);
        return -EIO; /* never reaches the primary */
    }
    return bm_file_ops.pwrite(h, buf, len, off, flags);
}

static struct nbd_ops peer_ops;

static void *peer_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    __atomic_store_n(&last_conn_fd, fd, __ATOMIC_SEQ_CST);
    struct nbd_export exp = {.size = peer_file.size, .ops = &peer_ops, .h = &peer_file};
    nbd_serve(fd, fd, &exp, 2);
    close(fd);
    return NULL;
}

static void *peer_accept(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(peer_lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        pthread_t t;
        pthread_create(&t, NULL, peer_conn, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
}

static void peer_start(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, sock);
    unlink(sock);
    if (bm_file_open(&peer_file, sec, false))
        abort();
    peer_lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(peer_lfd, (struct sockaddr *)&sa, sizeof sa) || listen(peer_lfd, 8))
        abort();
    pthread_create(&peer_thread, NULL, peer_accept, NULL);
}

/* Stop listening; the connections die with the shutdown of the listener's
 * peers only when the primary notices, so also cut the file (EIO). */
static void peer_stop(void)
{
    shutdown(peer_lfd, SHUT_RDWR);
    close(peer_lfd);
    pthread_join(peer_thread, NULL);
    unlink(sock);
}

static void fill(const char *path, uint64_t size, int seed)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    uint8_t *b = malloc(size);
    for (uint64_t i = 0; i < size; i++)
        b[i] = seed ? (uint8_t)(i * 7 + (uint64_t)seed + i / 4093) : 0;
    if (pwrite(fd, b, size, 0) != (ssize_t)size)
        abort();
    free(b);
    close(fd);
}

static bool same_files(const char *a, const char *b)
{
    int fa = open(a, O_RDONLY), fb = open(b, O_RDONLY);
    uint8_t *x = malloc(SIZE), *y = malloc(SIZE);
    bool same = pread(fa, x, SIZE, 0) == (ssize_t)SIZE && pread(fb, y, SIZE, 0) == (ssize_t)SIZE &&
                !memcmp(x, y, SIZE);
    free(x);
    free(y);
    close(fa);
    close(fb);
    return same;
}

static void poke(const char *path, uint64_t off, const void *d, size_t n)
{
    int fd = open(path, O_RDWR);
    if (pwrite(fd, d, n, (off_t)off) != (ssize_t)n)
        abort();
    close(fd);
}

static struct bm_status status(struct bm *m)
{
    struct bm_status st;
    bm_get_status(m, &st);
    return st;
}

static bool wait_state(struct bm *m, enum bm_state want)
{
    for (int i = 0; i < 500; i++) {
        if (status(m).state == want)
            return true;
        usleep(10000);
    }
    return false;
}

struct ranges {
    int n;
    uint64_t off[8], len[8];
};

static void collect(void *arg, uint64_t off, uint64_t len)
{
    struct ranges *r = arg;
    if (r->n < 8) {
        r->off[r->n] = off;
        r->len[r->n] = len;
    }
    r->n++;
}

static struct bm *open_bm(void)
{
    struct bm_opts o = {.image = pri, .block_size = BS, .timeout_ms = 3000, .retry_ms = 100};
    struct bm *m;
    char err[512];
    int rc = bm_open(&o, &m, err, sizeof err);
    if (rc)
        printf("# bm_open: %s\n", err);
    return rc ? NULL : m;
}

int main(void)
{
    /* ---- bitmaps ---- */
    {
        struct bm_bitmap b;
        bm_bitmap_init(&b, 200);
        bm_bitmap_set_range(&b, 60, 80);
        is_int(bm_bitmap_count(&b), 80, "set 60..139 across two word boundaries: 80 bits");
        ok(!bm_bitmap_test(&b, 59) && bm_bitmap_test(&b, 60) && bm_bitmap_test(&b, 139) &&
               !bm_bitmap_test(&b, 140),
           "exactly the range");
        is_int(bm_bitmap_next_set(&b, 0), 60, "next_set from 0");
        is_int(bm_bitmap_next_set(&b, 140), 200, "next_set past the range: nbits");
        bm_bitmap_clear_range(&b, 64, 64);
        is_int(bm_bitmap_count(&b), 16, "clear one whole word");
        ok(bm_bitmap_any(&b, 0, 65) && !bm_bitmap_any(&b, 64, 64) && bm_bitmap_any(&b, 127, 2),
           "any()");
        bm_bitmap_set_range(&b, 190, 1000);
        is_int(bm_bitmap_count(&b), 26, "a range past the end is cut at nbits");
        ok(!bm_bitmap_test(&b, 200) && !bm_bitmap_test(&b, 5000), "no bit beyond nbits");
        uint8_t bytes[25];
        bm_bitmap_to_bytes(&b, bytes);
        struct bm_bitmap c;
        bm_bitmap_init(&c, 200);
        bm_bitmap_or_bytes(&c, bytes);
        ok(bm_bitmap_count(&c) == 26 && bm_bitmap_test(&c, 60) && bm_bitmap_test(&c, 199) &&
               !bm_bitmap_test(&c, 64),
           "to_bytes/or_bytes round trip");
        memset(bytes, 0xff, sizeof bytes);
        struct bm_bitmap d;
        bm_bitmap_init(&d, 196);
        bm_bitmap_or_bytes(&d, bytes);
        is_int(bm_bitmap_count(&d), 196, "or_bytes ignores bits past nbits in the last byte");
        bm_bitmap_free(&b);
        bm_bitmap_free(&c);
        bm_bitmap_free(&d);
    }

    /* ---- byte-range diffs ---- */
    {
        uint8_t a[100] = {0}, b[100] = {0};
        struct ranges r = {0};
        is_int(bm_diff_ranges(a, b, 100, 0, collect, &r), 0, "equal: no difference");
        is_int(r.n, 0, "and no range");
        b[0] = 1;
        b[10] = b[11] = b[12] = 1;
        b[99] = 1;
        is_int(bm_diff_ranges(a, b, 100, 1000, collect, &r), 5, "5 differing bytes");
        ok(r.n == 3 && r.off[0] == 1000 && r.len[0] == 1 && r.off[1] == 1010 && r.len[1] == 3 &&
               r.off[2] == 1099 && r.len[2] == 1,
           "three ranges, at the start, inside, at the end, offset by the base");
    }

    if (!mkdtemp(dir))
        abort();
    snprintf(pri, sizeof pri, "%s/pri.img", dir);
    snprintf(sec, sizeof sec, "%s/sec.img", dir);
    snprintf(sock, sizeof sock, "%s/sec.sock", dir);
    snprintf(url, sizeof url, "nbd+unix:///?socket=%s", sock);
    fill(pri, SIZE, 1);
    fill(sec, SIZE, 0);
    signal(SIGPIPE, SIG_IGN); /* as vmmig does: the cut peer's reply is an EPIPE */
    peer_ops = bm_file_ops;
    peer_ops.pwrite = cut_pwrite;
    peer_start();

    struct bm *m = open_bm();
    ok(m != NULL, "bm_open");
    struct bm_status st = status(m);
    is_str(bm_state_name(st.state), "standalone", "no peer: standalone");
    is_int(st.dirty_bytes, SIZE, "a new image: everything is dirty");
    char err[512];
    uint8_t buf[BS];

    /* Initial sync with a vmmig peer (hash compare, then copy). */
    is_int(bm_attach(m, url, true, err, sizeof err), 0, "attach and wait for the sync (%s)", err);
    st = status(m);
    is_str(bm_state_name(st.state), "synced", "synced");
    is_int(st.dirty_bytes, 0, "nothing dirty");
    ok(same_files(pri, sec), "the images are identical");
    ok(st.bytes_sent <= SIZE && st.bytes_sent > SIZE / 2, "about the image was sent (%llu)",
       (unsigned long long)st.bytes_sent);

    /* A guest write while attached: on both before the ack. */
    memset(buf, 0xab, sizeof buf);
    is_int(bm_nbd_ops.pwrite(m, buf, 1000, 5 * BS + 100, 0), 0, "guest write while synced");
    uint8_t got[1000];
    int sfd = open(sec, O_RDONLY);
    ok(pread(sfd, got, 1000, 5 * BS + 100) == 1000 && !memcmp(got, buf, 1000),
       "the peer has it when the write returns");
    is_int(status(m).dirty_bytes, 0, "still nothing dirty");
    is_int(status(m).writes_mirrored, 1, "one write mirrored");

    /* The peer dies with a guest write taken but unanswered (the writer
     * reads its own reply): acknowledged once it is on the local disk, its
     * block dirty, resent after the reconnect.  Not listening meanwhile, so
     * that the state can be looked at before the resync. */
    peer_stop();
    memset(buf, 0x77, sizeof buf);
    __atomic_store_n(&cut_at, 7 * BS + 3000, __ATOMIC_SEQ_CST);
    is_int(bm_nbd_ops.pwrite(m, buf, 2000, 7 * BS + 3000, NBD_CMD_FLAG_FUA), 0,
           "a write whose peer dies before answering: done locally");
    ok(wait_state(m, BM_DISCONNECTED), "disconnected");
    st = status(m);
    is_int(st.dirty_bytes, BS, "its block is dirty");
    ok(st.last_error[0], "an error is shown (%s)", st.last_error);
    is_int(status(m).writes_mirrored, 1, "not counted as mirrored");
    uint64_t resyncs0 = st.resyncs;
    bm_file_close(&peer_file);
    peer_start();
    ok(wait_state(m, BM_SYNCED) && status(m).resyncs > resyncs0, "reconnected and resynced");
    ok(same_files(pri, sec), "the peer has the write now");

    /* Verify: identical, then a corruption on the peer named exactly. */
    struct ranges r = {0};
    uint64_t differing;
    is_int(bm_verify(m, false, collect, &r, &differing, err, sizeof err), 0, "verify: identical");
    uint8_t junk[300];
    if (pread(sfd, junk, sizeof junk, 10 * BS - 100) != (ssize_t)sizeof junk)
        abort();
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] ^= 0xff; /* every byte differs */
    poke(sec, 10 * BS - 100, junk, sizeof junk); /* across a block boundary */
    memset(&r, 0, sizeof r);
    is_int(bm_verify(m, false, collect, &r, &differing, err, sizeof err), 1, "verify: differs");
    ok(r.n == 1 && r.off[0] == 10 * BS - 100 && r.len[0] == 300,
       "verify names the one corrupted range across two blocks (%llu+%llu)",
       (unsigned long long)r.off[0], (unsigned long long)r.len[0]);
    is_int(differing, 300, "300 bytes differ");
    memset(&r, 0, sizeof r);
    is_int(bm_verify(m, true, collect, &r, &differing, err, sizeof err), 1, "verify --resync");
    ok(wait_state(m, BM_SYNCED), "synced again");
    is_int(bm_verify(m, false, NULL, NULL, &differing, err, sizeof err), 0,
           "after the resync: identical");

    /* Disconnect: writes go on locally, dirty; reconnect sends only them. */
    bm_detach(m);
    is_str(bm_state_name(status(m).state), "standalone", "detached");
    memset(buf, 0xcd, sizeof buf);
    is_int(bm_nbd_ops.pwrite(m, buf, 10, 20 * BS + 5, 0), 0, "write while detached");
    is_int(bm_nbd_ops.pwrite(m, buf, BS, 30 * BS, 0), 0, "a second one");
    is_int(bm_nbd_ops.zero(m, 2 * BS, 40 * BS, 0), 0, "write-zeroes while detached");
    is_int(status(m).dirty_bytes, 4 * BS, "4 blocks dirty");

    /* A clean restart keeps them. */
    bm_close(m);
    m = open_bm();
    ok(m != NULL, "reopened");
    is_int(status(m).dirty_bytes, 4 * BS, "after a clean restart: the same 4 blocks dirty");
    uint64_t sent0 = status(m).bytes_sent;
    is_int(bm_attach(m, url, true, err, sizeof err), 0, "reattach to the same peer");
    st = status(m);
    ok(st.bytes_sent - sent0 <= 2 * BS, "only the data blocks sent (%llu bytes; zeroes as WRITE_ZEROES)",
       (unsigned long long)(st.bytes_sent - sent0));
    is_int(st.hash_bytes, 0, "no hash comparison for the known peer");
    ok(same_files(pri, sec), "identical again");

    /* A crash: the activity log makes the extent dirty. */
    bm_close(m);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        struct bm *cm = open_bm();
        bm_set_peer(cm, "nbd+unix:///?socket=/nonexistent");
        memset(buf, 0xee, sizeof buf);
        bm_nbd_ops.pwrite(cm, buf, 100, 50 * BS + 7, 0);
        _exit(0); /* no bm_close: as if killed */
    }
    waitpid(pid, NULL, 0);
    m = open_bm();
    ok(m != NULL, "reopened after a crash");
    st = status(m);
    ok(st.dirty_bytes >= BS && st.dirty_bytes <= BM_AL_BLOCKS * (uint64_t)BS,
       "the crashed write's extent is dirty (%llu bytes)", (unsigned long long)st.dirty_bytes);
    is_int(bm_attach(m, url, true, err, sizeof err), 0, "resync after the crash");
    ok(same_files(pri, sec), "identical after the crash resync");

    /* A stale replica: the peer under another name, a few blocks changed. */
    bm_detach(m);
    memset(buf, 0x42, sizeof buf);
    for (int i = 0; i < 3; i++)
        bm_nbd_ops.pwrite(m, buf, BS, (uint64_t)(3 + i * 17) * BS, 0);
    char url2[400];
    snprintf(url2, sizeof url2, "%s/./sec.sock", dir);
    sent0 = status(m).bytes_sent;
    uint64_t hash0 = status(m).hash_bytes;
    is_int(bm_attach(m, url2, true, err, sizeof err), 0, "attach to a stale replica (%s)", err);
    st = status(m);
    is_int(st.bytes_sent - sent0, 3 * BS, "delta: exactly the 3 changed blocks sent");
    is_int(st.hash_bytes - hash0, 65 * 32, "one hash per block compared");
    ok(same_files(pri, sec), "identical after the delta");

    /* The switch: writes stop here, the peer is promoted. */
    is_int(bm_switch(m, 5000, err, sizeof err), 0, "switch (%s)", err);
    is_str(bm_state_name(status(m).state), "switched", "state: switched");
    is_int(bm_nbd_ops.pwrite(m, buf, 10, 0, 0), -ESHUTDOWN, "a write after the switch: -ESHUTDOWN");
    ok(peer_file.promoted, "the secondary was told it is the primary now");
    is_int(bm_nbd_ops.pread(m, got, 10, 0), 0, "reads still work");
    bm_close(m);
    m = open_bm();
    ok(m == NULL, "a switched image is not served again");

    peer_stop();
    bm_file_close(&peer_file);
    close(sfd);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    int rc = system(cmd);
    (void)rc;
    return done_testing();
}
