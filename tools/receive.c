/* vmmig receive: the destination agent of one live migration
 * (vmmig-protocol(7)).  vmmigfs runs it on each accepted TCP connection;
 * `ssh HOST vmmig receive` is the exec transport. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "applet.h"
#include "chunkring.h"
#include "consolerelay.h"
#include "directstream.h"
#include "diskmig.h"
#include "nbddev.h"
#include "pcrecover.h"
#include "coldmig.h"
#include "lock.h"
#include "migengine.h"
#include "migjob.h"
#include "policy.h"
#include "proto.h"
#include "state.h"
#include "util.h"

static const char receive_help[] =
    "usage: vmmig receive [OPTIONS]\n"
    "\n"
    "Receive one live migration from a 'vmmig send' on another host, over\n"
    "stdin/stdout (the exec transport: 'ssh HOST vmmig receive') or over the\n"
    "connected socket given with --fd (what vmmigfs does when it listens).\n"
    "\n"
    "  -F, --fd N            use the connected socket N instead of stdin/stdout\n"
    "  -t, --timeout S       longest silence from the peer (default 30)\n"
    "  -k, --key FILE        pre-shared key (default $VMMIG_KEY_FILE or /etc/vmmig/key)\n"
    "  -d, --state-dir DIR   default $VMMIG_STATE_DIR or " DEFAULT_STATE_DIR "\n"
    "  -P, --policy FILE     default $VMMIG_POLICY or " DEFAULT_POLICY "\n"
    "  -D, --disk-dir DIR    where the local disks of incoming domains go (default\n"
    "                        $VMMIG_DISK_DIR or STATE_DIR/disks)\n"
    "  -A, --algorithms LIST the migration algorithms to accept, comma-separated\n"
    "                        (default $VMMIG_ALGORITHMS, else all the engine can do:\n"
    "                        precopy,postcopy,stopcopy for QEMU, precopy,stopcopy for Xen)\n"
    "  -h, --help            show this help\n"
    "\n"
    "It refuses a domain whose name or UUID is taken here, that needs more memory\n"
    "than is free, or any domain when the policy says accept_incoming = no.\n"
    "Progress and the outcome go to stderr and syslog.  Exit status: 0 received\n"
    "and running here (or a query answered), 1 failed or refused, 2 usage.\n";

/* A local disk arriving with the domain: its secondary, a `vmmig
 * blockmirror receive --nbd-device` (--disk for QEMU's blockmirror:NAME)
 * child that also serves the device here
 * and becomes its primary at the switch. */
struct rdisk {
    struct diskmig d;
    char image[4200];
    pid_t pid;
    int agent_fd; /* closing it before the switch makes the child stop */
};

struct rjob {
    struct proto_conn conn;
    int rfd;
    const char *disk_dir;
    bool same_host, committed;
    struct rdisk disks[DISKMIG_MAX];
    int ndisks;
    /* the first message of the memory stream, read before the pump started */
    int first_type;
    uint8_t *first_pl;
    uint32_t first_len;
    const struct mig_engine_ops *eng;
    struct mig_engine *e;
    const char *state_dir;
    char name[64], uuid[37], peer[64];
    int pipe_w;
    /* post-copy: pipe_w is our end of a socket, which also carries the
     * return path; COMMIT comes inside the stream, before the switch */
    bool sock;
    atomic_bool commit_seen;
    atomic_bool renamed;
    bool running;
    uint32_t *domidp;
    char incoming[128];
    long long resumed_ms;
    int ret_rc;
    uint64_t chunks, bytes;
    int pump_rc;
    char pump_err[300];
    /* the state record as it was before we wrote ours (to put back on failure) */
    bool had_state;
    char *old_state;
    int lock_fd;
    char guest_hold[LOCK_REQUEST_MAX + 1]; /* the guest's raw request, if any */
    char mig_id[PCREC_ID_LEN + 1]; /* the source's migration id ("" if it sent none) */
    /* the direct stream (directstream.h): listening until the source connects */
    bool direct;
    int direct_lfd, direct_fd;
    unsigned direct_port;
    uint8_t direct_token[DSTREAM_TOKEN_LEN];
    char direct_hex[DSTREAM_TOKEN_HEX];
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\n", toolname, msg);
    syslog(LOG_INFO, "%s", msg);
}

/* A reply of up to three key=value pairs (a NULL key ends them). */
static void reply3(struct rjob *r, int type, const char *k1, const char *v1, const char *k2,
                   const char *v2, const char *k3, const char *v3)
{
    struct strbuf sb = {0};
    if (k1)
        kv_add(&sb, k1, "%s", v1);
    if (k1 && k2)
        kv_add(&sb, k2, "%s", v2);
    if (k1 && k2 && k3)
        kv_add(&sb, k3, "%s", v3);
    proto_send(&r->conn, type, sb.s, (uint32_t)sb.len);
    sb_free(&sb);
}

static void reply(struct rjob *r, int type, const char *k1, const char *v1, const char *k2,
                  const char *v2)
{
    reply3(r, type, k1, v1, k2, v2, NULL, NULL);
}

/* Co-migration's second phase: the domain is committed here and stays
 * paused until the source says RESUME, so that the whole group starts
 * together.  Past the commit point it is ours: a lost link or a silent
 * source must not leave it paused, so it runs then anyway. */
static void await_resume(struct rjob *r)
{
    char e2[300];
    uint8_t *pl = NULL;
    uint32_t len;
    int type = -1;

    reply(r, MSG_PAUSED, NULL, NULL, NULL, NULL);
    if (proto_recv(&r->conn, &type, &pl, &len, e2, sizeof e2))
        say("%s: no RESUME for %s (%s): resuming it anyway", r->peer, r->name, e2);
    else if (type != MSG_RESUME)
        say("%s sent %s instead of RESUME for %s: resuming it anyway", r->peer,
            msg_type_name(type), r->name);
    free(pl);
}

static void state_path(struct rjob *r, char *buf, size_t size)
{
    snprintf(buf, size, "%s/domains/%s", r->state_dir, r->uuid);
}

static void state_rollback(struct rjob *r)
{
    char path[600];
    state_path(r, path, sizeof path);
    if (r->had_state)
        atomic_write(path, r->old_state, strlen(r->old_state), 0600);
    else
        unlink(path);
}

/* One incoming migration per UUID at a time; the lock also tells a later
 * QUERY whether a --incoming copy still has an owner. */
static int lock_incoming(struct rjob *r, bool wait)
{
    char path[600];
    snprintf(path, sizeof path, "%s/incoming", r->state_dir);
    mkdir_p(path, 0700);
    snprintf(path, sizeof path, "%s/incoming/%s.lock", r->state_dir, r->uuid);
    r->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (r->lock_fd < 0)
        return -errno;
    if (flock(r->lock_fd, LOCK_EX | (wait ? 0 : LOCK_NB)))
        return -errno;
    return 0;
}

/* Test seams: VMMIG_TEST_DELAY=POINT:SECONDS sleeps once at POINT, so
 * that a test can kill this agent there: running (a post-copy domain runs
 * here and its missing pages wait) or activating (committed and renamed,
 * not yet unpaused). */
static void test_delay(const char *point)
{
    static bool done;
    const char *v = getenv("VMMIG_TEST_DELAY");
    size_t n = strlen(point);
    if (done || !v || strncmp(v, point, n) || v[n] != ':')
        return;
    done = true;
    say("test delay at %s", point);
    sleep((unsigned)atoi(v + n + 1));
}

/* Committed here, not yet activated: a marker beside the incoming lock, so
 * that when this agent dies in between (killed), a later QUERY from the
 * source knows the paused domain is ours to run rather than an admin's
 * `xl pause`. */
static void committed_marker_path(const char *state_dir, const char *uuid, char *buf, size_t size)
{
    snprintf(buf, size, "%s/incoming/%s.committed", state_dir, uuid);
}

static void committed_marker_set(struct rjob *r, uint32_t domid)
{
    char path[600], text[32];
    committed_marker_path(r->state_dir, r->uuid, path, sizeof path);
    int n = snprintf(text, sizeof text, "%u\n", domid);
    int rc = atomic_write_mkdir(path, text, (size_t)n, 0600);
    if (rc)
        say("could not record that %s is committed here: %s", r->name, strerror(-rc));
}

static void committed_marker_clear(struct rjob *r)
{
    char path[600];
    committed_marker_path(r->state_dir, r->uuid, path, sizeof path);
    unlink(path);
}

/* The domain id the marker names, or MIG_NO_DOMID when there is none. */
static uint32_t committed_marker_domid(struct rjob *r)
{
    char path[600], *text = NULL;
    long v = -1;
    committed_marker_path(r->state_dir, r->uuid, path, sizeof path);
    if (!read_file(path, &text, NULL)) {
        text[strcspn(text, "\n")] = 0;
        if (parse_long(text, 1, (long)UINT32_MAX - 1, &v))
            v = -1;
    }
    free(text);
    return v < 0 ? MIG_NO_DOMID : (uint32_t)v;
}

static void chunk_written(void *arg)
{
    struct rjob *r = arg;
    if (r->renamed)
        test_delay("running");
}

/* The stream into the hypervisor's pipe: chunks are received here into the
 * ring's buffers and verified and written by its writer (chunkring.h). */
static void *pump_main(void *arg)
{
    struct rjob *r = arg;
    struct chunkring q = {.fd = r->pipe_w, .sock = r->sock, .peer = r->peer,
                          .conn = &r->conn, .written = chunk_written, .arg = r};
    int type, wrc;
    uint8_t *pl;
    uint32_t len, dlen;
    const uint8_t *data;
    uint64_t index;
    char perr[200];

    chunkring_start(&q);
    for (;;) {
        pl = chunkring_slot(&q);
        if (!pl)
            break; /* the writer failed */
        if (r->first_type >= 0) {
            /* read before the pump started (and verified: again is cheap) */
            type = r->first_type, len = r->first_len;
            memcpy(pl, r->first_pl, len);
            free(r->first_pl);
            r->first_type = -1, r->first_pl = NULL;
            r->pump_rc = 0;
        } else {
            r->pump_rc = proto_recv_buf(&r->conn, &type, pl, &len, perr, sizeof perr);
        }
        if (r->pump_rc) {
            snprintf(r->pump_err, sizeof r->pump_err, "%s: %s", r->peer, perr);
            break;
        }
        if (type == MSG_PROGRESS)
            continue;
        if (type == MSG_COMMIT && r->sock && !atomic_load(&r->commit_seen)) {
            /* post-copy's commit point: the switch follows */
            say("%s committed %s; post-copy follows", r->peer, r->name);
            atomic_store(&r->commit_seen, true);
            continue;
        }
        if (type == MSG_ABORT) {
            char why[200] = "no reason given";
            kv_get(pl, len, "reason", why, sizeof why);
            snprintf(r->pump_err, sizeof r->pump_err, "the source aborted: %s", why);
            r->pump_rc = -ECANCELED;
            break;
        }
        if (type == MSG_STREAM_END) {
            char n[32] = "", b[32] = "";
            kv_get(pl, len, "chunks", n, sizeof n);
            kv_get(pl, len, "bytes", b, sizeof b);
            if (strtoull(n, NULL, 10) != r->chunks || strtoull(b, NULL, 10) != r->bytes) {
                snprintf(r->pump_err, sizeof r->pump_err,
                         "stream incomplete: %s chunks / %s bytes announced, %llu / %llu received",
                         n, b, (unsigned long long)r->chunks, (unsigned long long)r->bytes);
                r->pump_rc = -EBADMSG;
            }
            break;
        }
        if (type != MSG_CHUNK) {
            snprintf(r->pump_err, sizeof r->pump_err, "%s sent %s inside the stream", r->peer,
                     msg_type_name(type));
            r->pump_rc = -EPROTO;
            break;
        }
        r->pump_rc = proto_chunk_split(pl, len, &index, &data, &dlen, perr, sizeof perr);
        if (!r->pump_rc && index != r->chunks) {
            snprintf(perr, sizeof perr, "chunk %llu where %llu was due",
                     (unsigned long long)index, (unsigned long long)r->chunks);
            r->pump_rc = -EBADMSG;
        }
        if (r->pump_rc) {
            snprintf(r->pump_err, sizeof r->pump_err, "bad chunk: %s", perr);
            break;
        }
        /* To the writer, which verifies it before anything is written. */
        chunkring_put(&q, len);
        r->chunks++;
        r->bytes += dlen;
    }
    /* After a failure here what is queued is not written.  The writer's
     * failure came earlier in the stream than anything seen after it. */
    wrc = chunkring_finish(&q, r->pump_rc != 0, r->pump_err, sizeof r->pump_err);
    if (wrc)
        r->pump_rc = wrc;
    if (!r->sock)
        r->pipe_w = -1; /* closed by the writer */
    return NULL;
}

/* The direct stream: the source's connection with the token, taken while
 * the control connection is watched (an ABORT before the stream, as a
 * co-migration member sends when another failed, ends the wait).  0 with
 * r->direct_fd; non-zero after saying why. */
static int direct_accept(struct rjob *r, int timeout_ms)
{
    long long end = epoch_ms() + timeout_ms;
    unsigned rejected = 0;
    char err[300];
    int type, rc;
    uint8_t *pl;
    uint32_t len;

    for (;;) {
        long long left = end - epoch_ms();
        rc = dstream_accept(r->direct_lfd, r->rfd, r->direct_token, left > 0 ? (int)left : 1,
                            &r->direct_fd, &rejected, err, sizeof err);
        if (rc <= 0)
            break;
        pl = NULL;
        if (proto_recv(&r->conn, &type, &pl, &len, err, sizeof err)) {
            say("%s: %s (waiting for the direct stream)", r->peer, err);
            return -1;
        }
        if (type == MSG_PROGRESS) {
            free(pl);
            continue;
        }
        if (type == MSG_ABORT) {
            char why[200] = "no reason given";
            kv_get(pl, len, "reason", why, sizeof why);
            say("%s aborted before the direct stream: %s", r->peer, why);
        } else {
            say("%s sent %s where the direct stream was due", r->peer, msg_type_name(type));
            reply(r, MSG_ABORT, "reason", "a message where the direct stream was due", NULL, NULL);
        }
        free(pl);
        return -1;
    }
    if (rejected)
        say("closed %u direct stream connection%s without the token", rejected,
            rejected == 1 ? "" : "s");
    close(r->direct_lfd);
    r->direct_lfd = -1;
    if (rc) {
        say("%s: %s", r->peer, err);
        reply(r, MSG_ABORT, "reason", err, NULL, NULL);
        return -1;
    }
    return 0;
}

/* The control connection while the direct stream runs: keep-alives, then
 * STREAM_END (or an ABORT).  A failure shuts the stream so that QEMU's
 * restore ends too. */
static void *direct_main(void *arg)
{
    struct rjob *r = arg;
    char perr[200];
    int type;
    uint8_t *pl = NULL;
    uint32_t len;

    for (;;) {
        free(pl);
        pl = NULL;
        r->pump_rc = proto_recv(&r->conn, &type, &pl, &len, perr, sizeof perr);
        if (r->pump_rc) {
            snprintf(r->pump_err, sizeof r->pump_err, "%s: %s", r->peer, perr);
            break;
        }
        if (type == MSG_PROGRESS)
            continue;
        if (type == MSG_STREAM_END) {
            char b[32] = "";
            kv_get(pl, len, "bytes", b, sizeof b);
            r->bytes = strtoull(b, NULL, 10);
            break;
        }
        if (type == MSG_ABORT) {
            char why[200] = "no reason given";
            kv_get(pl, len, "reason", why, sizeof why);
            snprintf(r->pump_err, sizeof r->pump_err, "the source aborted: %s", why);
            r->pump_rc = -ECANCELED;
        } else {
            snprintf(r->pump_err, sizeof r->pump_err, "%s sent %s during the direct stream",
                     r->peer, msg_type_name(type));
            r->pump_rc = -EPROTO;
        }
        break;
    }
    free(pl);
    if (r->pump_rc)
        shutdown(r->direct_fd, SHUT_RDWR);
    return NULL;
}

static int send_return(struct rjob *r, char kind, const uint8_t *data, size_t n)
{
    uint8_t buf[1 + 65536];

    buf[0] = (uint8_t)kind;
    if (n)
        memcpy(buf + 1, data, n);
    return proto_send(&r->conn, MSG_RETURN, buf, (uint32_t)(n + 1));
}

/* Post-copy's return path: what QEMU writes back on the stream socket
 * (page requests) goes to the source as RETURN messages, a keep-alive
 * when it is quiet (the source reads nothing else), and an end marker
 * once QEMU closes it or the restore is over (the caller shuts it). */
static void *return_main(void *arg)
{
    struct rjob *r = arg;
    uint8_t buf[65536];
    int tick_ms = r->conn.timeout_ms > 0 ? r->conn.timeout_ms / 3 : 10000;

    for (;;) {
        struct pollfd p = {.fd = r->pipe_w, .events = POLLIN};
        int n = poll(&p, 1, tick_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0) {
            if ((r->ret_rc = send_return(r, RETURN_KEEPALIVE, NULL, 0)))
                break;
            continue;
        }
        ssize_t got = read(r->pipe_w, buf, sizeof buf);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        if ((r->ret_rc = send_return(r, RETURN_DATA, buf, (size_t)got)))
            break;
    }
    if (!r->ret_rc)
        r->ret_rc = send_return(r, RETURN_END, NULL, 0);
    return NULL;
}

static void disks_commit(struct rjob *r);

/* QEMU is in post-copy: the source has committed and switched, so the
 * domain is ours and runs here while its memory still arrives.  Without a
 * COMMIT first it must not run. */
static int postcopy_run(void *arg)
{
    struct rjob *r = arg;
    char e2[300];

    if (!atomic_load(&r->commit_seen))
        return -1;
    signal(SIGTERM, SIG_IGN);
    disks_commit(r);
    /* Never as NAME--incoming: a later QUERY would take that for an
     * orphan, and the source would run it again. */
    if (r->eng->rename(r->e, *r->domidp, r->incoming, r->name, e2, sizeof e2)) {
        say("activating %s failed: %s", r->name, e2);
        return -1;
    }
    r->renamed = true;
    r->resumed_ms = epoch_ms();
    /* From here on a broken stream leaves it paused, and a fresh agent
     * needs this to take a RECOVER for it. */
    if (r->mig_id[0]) {
        struct pcrec_marker m = {.domid = *r->domidp, .resumed_ms = r->resumed_ms};
        memcpy(m.id, r->mig_id, sizeof m.id);
        int mrc = pcrec_marker_write(r->state_dir, r->uuid, &m);
        if (mrc)
            say("could not record %s's post-copy for a recovery: %s", r->name, strerror(-mrc));
    }
    say("%s runs here in post-copy; its memory still arrives from %s", r->name, r->peer);
    return 0;
}

static void pcrec_marker_clear(struct rjob *r)
{
    char path[600];
    pcrec_marker_path(r->state_dir, r->uuid, path, sizeof path);
    unlink(path);
}

static int recover_refuse(struct rjob *r, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int recover_refuse(struct rjob *r, const char *code, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    say("refused to recover %s for %s: %s", r->name[0] ? r->name : "a domain", r->peer, why);
    reply(r, MSG_RECOVER_FAIL, "code", code, "reason", why);
    return 1;
}

static void *pump_main(void *arg);
static void *return_main(void *arg);

/* The hypervisor listens on the fresh channel: say so, and relay. */
struct recover_run {
    struct rjob *r;
    uint32_t domid;
    pthread_t pump, ret;
    bool started;
};

static int recover_ready(void *arg, int fd)
{
    struct recover_run *rr = arg;
    char ds[16];

    rr->r->pipe_w = fd;
    snprintf(ds, sizeof ds, "%u", rr->domid);
    reply(rr->r, MSG_RECOVER_OK, "domid", ds, NULL, NULL);
    pthread_create(&rr->pump, NULL, pump_main, rr->r);
    pthread_create(&rr->ret, NULL, return_main, rr->r);
    rr->started = true;
    return 0;
}

/* RECOVER: a post-copy whose stream broke after the switch, asked for
 * again by its source on this new connection.  Refused, with nothing
 * changed here, unless the domain is that migration's and waits. */
static int answer_recover(struct rjob *r, const uint8_t *pl, uint32_t len)
{
    struct pcrec_req req;
    struct pcrec_marker m;
    struct mig_dom d;
    char e2[300];
    int rc;

    if (pcrec_req_parse(pl, len, &req, e2, sizeof e2))
        return recover_refuse(r, "bad-request", "%s", e2);
    strlcpy0(r->name, req.name, sizeof r->name);
    strlcpy0(r->uuid, req.uuid, sizeof r->uuid);
    if (r->eng->lookup_uuid(r->e, req.uuid, &d))
        return recover_refuse(r, "unknown", "no domain with UUID %s here", req.uuid);
    rc = pcrec_marker_read(r->state_dir, req.uuid, &m);
    if (rc == -ENOENT)
        return recover_refuse(r, "unknown", "%s (domid %u) is not a post-copy that switched to "
                              "this host", d.name, d.domid);
    if (rc)
        return recover_refuse(r, "unknown", "the post-copy record of %s is unreadable", d.name);
    if (strcmp(m.id, req.id) || m.domid != d.domid)
        return recover_refuse(r, "mismatch", "%s (domid %u) came here in another migration",
                              d.name, d.domid);
    if (!r->eng->recover_postcopy)
        return recover_refuse(r, "unsupported", "the %s engine cannot recover a post-copy",
                              r->eng->name);
    /* The agent that received it may still hold the stream (a link that
     * is silent, not yet broken): the source asks again later. */
    if (lock_incoming(r, false))
        return recover_refuse(r, "busy", "the agent of that migration of %s is still at work",
                              d.name);
    r->sock = true;
    r->renamed = true; /* it runs as NAME already */
    struct recover_run rr = {.r = r, .domid = d.domid};
    rc = r->eng->recover_postcopy(r->e, d.domid, recover_ready, &rr, e2, sizeof e2);
    if (!rr.started)
        return recover_refuse(r, rc == -EINVAL ? "not-paused" : rc == -ESRCH ? "gone" : "engine",
                              "%s", e2);
    say("recovering the post-copy of %s from %s", r->name, r->peer);
    if (rc)
        shutdown(r->pipe_w, SHUT_RDWR);
    pthread_join(rr.pump, NULL);
    shutdown(r->pipe_w, SHUT_RD);
    pthread_join(rr.ret, NULL);
    close(r->pipe_w);
    r->pipe_w = -1;
    if (rc || r->pump_rc) {
        /* Paused again (or failed): the source may try once more. */
        say("the recovery of %s broke off: %s", r->name, r->pump_rc ? r->pump_err : e2);
        reply(r, MSG_ACTIVATED, "result", "failed", "reason", r->pump_rc ? r->pump_err : e2);
        return 1;
    }
    pcrec_marker_clear(r);
    char ds[16], resumed[24];
    snprintf(ds, sizeof ds, "%u", d.domid);
    snprintf(resumed, sizeof resumed, "%lld", m.resumed_ms);
    struct strbuf sb = {0};
    kv_add(&sb, "result", "ok");
    kv_add(&sb, "domid", "%s", ds);
    kv_add(&sb, "resumed_ms", "%s", resumed);
    kv_add(&sb, "postcopy_recovered", "1");
    proto_send(&r->conn, MSG_ACTIVATED, sb.s, (uint32_t)sb.len);
    sb_free(&sb);
    say("%s runs here as domid %u: its post-copy was recovered", r->name, d.domid);
    uint8_t *dpl = NULL;
    uint32_t dlen;
    int type;
    if (!proto_recv(&r->conn, &type, &dpl, &dlen, e2, sizeof e2) && type == MSG_DONE)
        say("%s: DONE", r->peer);
    free(dpl);
    char myhost[64] = "";
    gethostname(myhost, sizeof myhost - 1);
    mig_run_hooks("destination", r->name, r->uuid, r->peer, myhost);
    return 0;
}

/* QUERY: after a lost ACTIVATED the source asks whether we run the domain. */
static int answer_query(struct rjob *r, const uint8_t *pl, uint32_t len)
{
    struct mig_dom d;
    char err[300];

    if (kv_get(pl, len, "uuid", r->uuid, sizeof r->uuid) || !uuid_valid(r->uuid)) {
        reply(r, MSG_ABORT, "reason", "QUERY without a valid uuid", NULL, NULL);
        return 1;
    }
    if (r->eng->lookup_uuid(r->e, r->uuid, &d)) {
        reply(r, MSG_STATE, "state", "absent", NULL, NULL);
        return 0;
    }
    if (mig_strip_suffix(d.name, MIG_INCOMING_SUFFIX)) {
        /* An uncommitted copy: ours to remove once no agent owns it. */
        if (lock_incoming(r, false)) {
            reply(r, MSG_STATE, "state", "busy", NULL, NULL);
            return 0;
        }
        if (r->eng->destroy(r->e, d.domid, err, sizeof err))
            say("removing the orphaned copy %s: %s", d.name, err);
        else
            say("removed the orphaned copy %s (domid %u)", d.name, d.domid);
        reply(r, MSG_STATE, "state", "absent", NULL, NULL);
        return 0;
    }
    if (d.paused && committed_marker_domid(r) == d.domid) {
        /* Committed here but not activated: its agent is still at it, or
         * it died (killed) in between and the domain is ours to run. */
        if (lock_incoming(r, false)) {
            reply(r, MSG_STATE, "state", "busy", NULL, NULL);
            return 0;
        }
        if (r->eng->unpause(r->e, d.domid, err, sizeof err)) {
            say("activating the orphaned %s (domid %u): %s", d.name, d.domid, err);
        } else {
            say("activated %s (domid %u): committed here, its agent had gone", d.name, d.domid);
            committed_marker_clear(r);
            d.paused = false;
        }
    }
    char domid[16];
    snprintf(domid, sizeof domid, "%u", d.domid);
    reply(r, MSG_STATE, "state", d.paused ? "paused" : "active", "domid", domid);
    return 0;
}

static int refuse(struct rjob *r, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(struct rjob *r, const char *code, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    say("refused %s from %s: %s", r->name[0] ? r->name : "a domain", r->peer, why);
    reply(r, MSG_REQ_FAIL, "code", code, "reason", why);
    return 1;
}

/* The request: 0 accepted (state record written), 1 refused (answered). */
static int judge_request(struct rjob *r, const struct policy *pol, const uint8_t *pl, uint32_t len,
                         const char *mine, char *algo, size_t algolen)
{
    char want[64] = "", v[64], algs[128] = "", bootid[64] = "", mybootid[64], srcdomid[16] = "";
    struct domstate st;
    struct mig_dom d;
    uint64_t need, freekib = 0;
    char *stext = xmalloc(8192), err[300];
    int rc = 1;

    if (kv_get(pl, len, "name", r->name, sizeof r->name) || !r->name[0] ||
        kv_get(pl, len, "uuid", r->uuid, sizeof r->uuid) || !uuid_valid(r->uuid) ||
        kv_get(pl, len, "memory_kib", v, sizeof v) || !(need = strtoull(v, NULL, 10))) {
        rc = refuse(r, "bad-request", "the request lacks a valid name, uuid or memory_kib");
        goto out;
    }
    if (!pol->accept_incoming) {
        rc = refuse(r, "policy", "this host does not accept migrations (accept_incoming = no)");
        goto out;
    }
    kv_get(pl, len, "backend", v, sizeof v);
    if (strcmp(v, r->eng->name)) {
        rc = refuse(r, "backend", "this host runs %s, the domain comes from %s", r->eng->name, v);
        goto out;
    }
    kv_get(pl, len, "algorithms", algs, sizeof algs);
    kv_get(pl, len, "algorithm", want, sizeof want);
    if (mig_algo_choose(algs, want, mine, algo, algolen, err, sizeof err)) {
        rc = refuse(r, "algorithm", "%s", err);
        goto out;
    }
    /* stream=direct: the hypervisor's stream on its own connection */
    v[0] = 0;
    kv_get(pl, len, "stream", v, sizeof v);
    if (v[0] && !mig_stream_known(v)) {
        rc = refuse(r, "bad-request", "unknown stream '%.20s' asked for (relay or direct)", v);
        goto out;
    }
    if (!strcmp(v, "direct")) {
        if (!r->eng->direct_stream) {
            rc = refuse(r, "stream", "this host's %s engine takes its stream through the relay only",
                        r->eng->name);
            goto out;
        }
        if (!strcmp(algo, "postcopy")) {
            rc = refuse(r, "stream", "post-copy takes its stream through the relay (its recovery "
                                     "needs the relay)");
            goto out;
        }
        if (dstream_listen(r->rfd, &r->direct_lfd, &r->direct_port, r->direct_token, r->direct_hex,
                           err, sizeof err)) {
            rc = refuse(r, "stream", "%s", err);
            goto out;
        }
        r->direct = true;
    }
    kv_get(pl, len, "boot_id", bootid, sizeof bootid);
    kv_get(pl, len, "domid", srcdomid, sizeof srcdomid);
    mig_boot_id(mybootid, sizeof mybootid);
    bool same_host = !strcmp(bootid, mybootid);
    r->same_host = same_host;
    /* Within one host the source copy itself has the name and UUID. */
    if (!r->eng->lookup_uuid(r->e, r->uuid, &d) &&
        !(same_host && (unsigned)atoi(srcdomid) == d.domid)) {
        rc = refuse(r, "clash", "a domain with UUID %s already runs here (%s)", r->uuid, d.name);
        goto out;
    }
    if (!r->eng->lookup(r->e, r->name, &d) && !(same_host && (unsigned)atoi(srcdomid) == d.domid)) {
        rc = refuse(r, "clash", "a domain named %s already runs here (domid %u)", r->name, d.domid);
        goto out;
    }
    if (!r->eng->free_kib(r->e, &freekib) && freekib < need + need / 64) {
        rc = refuse(r, "nomem", "needs %llu KiB, %llu KiB free here",
                    (unsigned long long)need, (unsigned long long)freekib);
        goto out;
    }
    if (state_load(r->state_dir, r->uuid, &st, err, sizeof err)) {
        rc = refuse(r, "locked", "this host's state record for %s is unreadable: %s", r->uuid, err);
        goto out;
    }
    if (hold_in_force(&st.admin, time(NULL)) && !same_host) {
        rc = refuse(r, "locked", "an admin hold for %s exists here (by %s: %s)", r->name,
                    st.admin.by, st.admin.reason);
        goto out;
    }
    if (lock_incoming(r, false)) {
        rc = refuse(r, "busy", "another migration of %s is arriving", r->name);
        goto out;
    }
    /* The holds and peers travel: the record is in place before the domain
     * appears, so this host's vmmigfs finds them when it sees it. */
    if (kv_get(pl, len, "state", stext, 8192) ||
        state_parse(stext, strlen(stext), &st, err, sizeof err)) {
        rc = refuse(r, "bad-request", "the domain's state record is malformed");
        goto out;
    }
    char path[600], *old = NULL;
    size_t oldlen;
    state_path(r, path, sizeof path);
    r->had_state = !read_file(path, &old, &oldlen);
    r->old_state = old;
    if (!same_host && state_save(r->state_dir, r->uuid, &st)) {
        rc = refuse(r, "backend", "cannot write the state record in %s", r->state_dir);
        goto out;
    }
    if (kv_get(pl, len, "guest_hold", r->guest_hold, sizeof r->guest_hold))
        r->guest_hold[0] = 0;
    /* A source that can recover a post-copy names its migration. */
    if (kv_get(pl, len, "migration", r->mig_id, sizeof r->mig_id) || !pcrec_id_valid(r->mig_id))
        r->mig_id[0] = 0;
    rc = 0;
out:
    free(stext);
    return rc;
}

/* ---- local disks (DISK_PREP .. DISKS_SYNCED; vmmig-protocol(7), DISKS) ---- */

static void disk_fail(struct rjob *r, const char *vdev, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void disk_fail(struct rjob *r, const char *vdev, const char *fmt, ...)
{
    char why[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    say("disk %s of %s: %s", vdev, r->name, why);
    reply(r, MSG_DISK_FAIL, "vdev", vdev, "reason", why);
}

/* The address the source reached us on: the secondary listens there only
 * (all addresses over the exec transport, which has none). */
static void listen_spec(struct rjob *r, char *out, size_t size)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char addr[INET6_ADDRSTRLEN] = "";

    snprintf(out, size, "0");
    if (getsockname(r->rfd, (struct sockaddr *)&ss, &len) < 0)
        return;
    if (ss.ss_family == AF_INET &&
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, addr, sizeof addr))
        snprintf(out, size, "%s:0", addr);
    else if (ss.ss_family == AF_INET6 &&
             inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, addr, sizeof addr))
        snprintf(out, size, "[%s]:0", addr);
}

/* One line from a disk child, within ms: 0 (line), -ETIMEDOUT, -EPIPE (EOF). */
static int child_line(int fd, char *line, size_t size, int ms)
{
    size_t n = 0;
    struct timespec t0, now;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        int left = ms - (int)((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0)
            return -ETIMEDOUT;
        int pr = poll(&p, 1, left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return -ETIMEDOUT;
        char ch;
        ssize_t got = read(fd, &ch, 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -EPIPE;
        if (ch == '\n')
            break;
        if (n < size - 1)
            line[n++] = ch;
    }
    line[n] = 0;
    return 0;
}

/* The last line a disk child wrote to its log: why it failed. */
static void child_last_words(const char *log, char *out, size_t size)
{
    char *text = NULL, *p;
    size_t len;

    snprintf(out, size, "see %s", log);
    if (read_file(log, &text, &len) || !len) {
        free(text);
        return;
    }
    while (len && text[len - 1] == '\n')
        text[--len] = 0;
    p = strrchr(text, '\n');
    snprintf(out, size, "%s", p ? p + 1 : text);
    free(text);
}

/* DISK_PREP: a local image, its secondary and the device here.  0 answered
 * DISK_READY; -1 answered DISK_FAIL (the migration is over). */
static int disk_prep(struct rjob *r, const uint8_t *pl, uint32_t len)
{
    struct rdisk *rd = &r->disks[r->ndisks];
    char err[600], dir[4200], logp[4200], spec[80], port[16], line[600], self[4096];
    int sp[2] = {-1, -1}, fd;

    if (diskmig_prep_parse(pl, len, &rd->d, err, sizeof err)) {
        disk_fail(r, "?", "%s", err);
        return -1;
    }
    for (int i = 0; i < r->ndisks; i++)
        if (!strcmp(r->disks[i].d.vdev, rd->d.vdev) || !strcmp(r->disks[i].d.device, rd->d.device)) {
            disk_fail(r, rd->d.vdev, "a second DISK_PREP for %s / %s", rd->d.vdev, rd->d.device);
            return -1;
        }
    if (r->ndisks == DISKMIG_MAX) {
        disk_fail(r, rd->d.vdev, "more than %d disks", DISKMIG_MAX);
        return -1;
    }
    /* blockmirror:NAME: a QEMU domain's, served on a socket, no device */
    const char *qemu_disk = diskmig_disk_name(rd->d.device);
    if (r->same_host) {
        /* Within one host the disk is already where the domain goes; a
         * QEMU disk only if the source's primary is the one of this state
         * directory (two "hosts" of one kernel may each have their own). */
        struct stat mine, theirs;
        diskmig_control_path(r->state_dir, rd->d.device, dir, sizeof dir);
        bool here = !qemu_disk || (rd->d.control[0] && !stat(dir, &mine) &&
                                   !stat(rd->d.control, &theirs) && mine.st_dev == theirs.st_dev &&
                                   mine.st_ino == theirs.st_ino);
        if (here) {
            reply(r, MSG_DISK_READY, "vdev", rd->d.vdev, "same_host", "1");
            return 0;
        }
    }
    if (!qemu_disk && nbd_dev_check(rd->d.device, err, sizeof err)) {
        disk_fail(r, rd->d.vdev, "%s (is the nbd module loaded here?)", err);
        return -1;
    }
    if (mkdir_p(r->disk_dir, 0700)) {
        disk_fail(r, rd->d.vdev, "cannot make %s: %s", r->disk_dir, strerror(errno));
        return -1;
    }
    bool plain = true;
    for (const char *c = r->name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '-' || *c == '_' || *c == '.'))
            plain = false;
    char image[sizeof rd->image];
    snprintf(image, sizeof image, "%s/%s.%s.img", r->disk_dir,
             plain && r->name[0] != '.' ? r->name : r->uuid, rd->d.vdev);
    memcpy(rd->image, image, sizeof image);
    /* An image left by an earlier attempt is a stale replica: the primary
     * compares it by hashes.  Its state file is of no use any more. */
    snprintf(line, sizeof line, "%s.bmstate", rd->image);
    unlink(line);
    fd = open(rd->image, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)rd->d.size) < 0) {
        disk_fail(r, rd->d.vdev, "%s: %s", rd->image, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    snprintf(dir, sizeof dir, "%s/blockmirror", r->state_dir);
    mkdir_p(dir, 0700);
    snprintf(logp, sizeof logp, "%s/%s.log", dir, diskmig_device_name(rd->d.device));
    listen_spec(r, spec, sizeof spec);
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
        disk_fail(r, rd->d.vdev, "cannot start the secondary: %s", strerror(errno));
        return -1;
    }
    self[sl] = 0;
    rd->pid = fork();
    if (rd->pid == 0) {
        /* The secondary outlives this agent once it is the primary: its
         * own session, its output in the log. */
        int nul = open("/dev/null", O_RDONLY);
        int lfd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0600);
        setsid();
        if (nul >= 0)
            dup2(nul, 0);
        if (lfd >= 0)
            dup2(lfd, 1), dup2(lfd, 2);
        dup2(sp[1], 3); /* dup2 clears close-on-exec */
        signal(SIGTERM, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        execl(self, "vmmig", "blockmirror", "receive", rd->image, "--listen", spec,
              qemu_disk ? "--disk" : "--nbd-device", qemu_disk ? qemu_disk : rd->d.device,
              "--agent-fd", "3", (char *)NULL);
        fprintf(stderr, "vmmig receive: exec %s: %s\n", self, strerror(errno));
        _exit(127);
    }
    close(sp[1]);
    rd->agent_fd = sp[0];
    if (rd->pid < 0) {
        disk_fail(r, rd->d.vdev, "fork: %s", strerror(errno));
        close(sp[0]);
        return -1;
    }
    r->ndisks++; /* from here on a failure drops it */
    int lrc = child_line(rd->agent_fd, line, sizeof line, 30000);
    if (lrc || strncmp(line, "ready port=", 11)) {
        char why[600];
        if (!lrc && !strncmp(line, "error: ", 7))
            snprintf(why, sizeof why, "%s", line + 7);
        else if (lrc == -ETIMEDOUT)
            snprintf(why, sizeof why, "the secondary did not start within 30 s");
        else
            child_last_words(logp, why, sizeof why);
        disk_fail(r, rd->d.vdev, "blockmirror receive %s: %s", rd->d.device, why);
        return -1;
    }
    snprintf(port, sizeof port, "%s", line + 11);
    say("disk %s of %s: %s into %s on port %s (pid %d)", rd->d.vdev, r->name, rd->d.device,
        rd->image, port, (int)rd->pid);
    reply(r, MSG_DISK_READY, "vdev", rd->d.vdev, "port", port);
    return 0;
}

/* Before the commit point: stop the secondaries (their device lets go);
 * their copies stay as stale replicas.  After it the copies are the disks. */
static void disks_drop(struct rjob *r)
{
    for (int i = 0; i < r->ndisks; i++) {
        struct rdisk *rd = &r->disks[i];
        int status;
        if (rd->agent_fd >= 0)
            close(rd->agent_fd);
        rd->agent_fd = -1;
        if (r->committed)
            continue;
        /* EOF on its agent fd stops it; give it 10 s to let go of the device. */
        for (int t = 0; t < 100 && waitpid(rd->pid, &status, WNOHANG) == 0; t++)
            nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
        if (waitpid(rd->pid, &status, WNOHANG) == 0) {
            kill(rd->pid, SIGKILL);
            waitpid(rd->pid, &status, 0);
        }
        /* The copy stays: a later attempt finds it as a stale replica and
         * is sent only the blocks that differ.  Its state file is of no
         * use any more. */
        char st[4300];
        snprintf(st, sizeof st, "%s.bmstate", rd->image);
        unlink(st);
        if (!access(rd->image, F_OK))
            say("kept the copy of %s's disk %s for a later attempt (a stale replica; remove %s "
                "to free its space)", r->name, rd->d.vdev, rd->image);
    }
    r->ndisks = 0;
}

/* A test seam: VMMIG_TEST_DISK_SNAPSHOT=DIR copies each disk image to
 * DIR/ at the commit point, before the domain runs here, so that a test
 * can compare it with the source's image as the switch left it. */
static void disks_snapshot(struct rjob *r)
{
    const char *dir = getenv("VMMIG_TEST_DISK_SNAPSHOT");

    for (int i = 0; dir && i < r->ndisks; i++) {
        const char *base = strrchr(r->disks[i].image, '/');
        char path[4300], *buf = xmalloc(1 << 20);
        snprintf(path, sizeof path, "%s/%s", dir, base ? base + 1 : r->disks[i].image);
        int in = open(r->disks[i].image, O_RDONLY | O_CLOEXEC);
        int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ssize_t n = 0;
        while (in >= 0 && out >= 0 && (n = read(in, buf, 1 << 20)) > 0)
            if (write(out, buf, (size_t)n) != n)
                break;
        say("test: snapshot of %s in %s", r->disks[i].image, path);
        if (in >= 0)
            close(in);
        if (out >= 0)
            close(out);
        free(buf);
    }
}

/* At the commit point the source has switched: each secondary holds every
 * write and becomes the device's primary once the old one lets go. */
static void disks_commit(struct rjob *r)
{
    char line[600];

    r->committed = true;
    disks_snapshot(r);
    for (int i = 0; i < r->ndisks; i++) {
        struct rdisk *rd = &r->disks[i];
        if (child_line(rd->agent_fd, line, sizeof line, 10000) || strncmp(line, "primary", 7))
            say("disk %s of %s: its copy did not report being the primary (%s); the domain's "
                "writes wait for it", rd->d.vdev, r->name, line);
        else
            say("disk %s of %s: %s is served from %s here (%s)", rd->d.vdev, r->name,
                rd->d.device, rd->image, line);
        close(rd->agent_fd);
        rd->agent_fd = -1;
    }
}

/* While the memory arrives: a QEMU disk's secondary that dies (killed)
 * has taken the incoming QEMU's NBD server with it, and that QEMU may stop
 * reading its stream for good.  End the incoming copy at once: the stream
 * fails, and the source keeps the domain and its disk. */
struct disk_watch {
    struct rjob *r;
    atomic_bool stop;
};

static void *disk_watch_main(void *arg)
{
    struct disk_watch *w = arg;
    struct rjob *r = w->r;
    struct pollfd p[DISKMIG_MAX];
    int n = 0;

    for (int i = 0; i < r->ndisks; i++)
        if (diskmig_disk_name(r->disks[i].d.device) && r->disks[i].agent_fd >= 0)
            p[n++] = (struct pollfd){.fd = r->disks[i].agent_fd, .events = 0};
    while (n && !atomic_load(&w->stop)) {
        if (poll(p, (nfds_t)n, 200) <= 0)
            continue;
        /* nothing is written to the agent fd before the switch: a hangup */
        for (int i = 0; i < n; i++) {
            if (!(p[i].revents & (POLLHUP | POLLERR)))
                continue;
            struct mig_dom d;
            char e2[300];
            say("a disk secondary of %s went away while its memory arrived: ending the "
                "incoming copy", r->name);
            if (!r->eng->lookup(r->e, r->incoming, &d) &&
                r->eng->destroy(r->e, d.domid, e2, sizeof e2))
                say("ending the incoming copy: %s", e2);
            return NULL;
        }
    }
    return NULL;
}

/* Between CFG_OK and the memory stream: the disks, if any.  0 with the
 * first message of the stream kept for the pump, or -1 (the migration is
 * over; the caller drops what was prepared). */
static int receive_disks(struct rjob *r)
{
    char e2[300];
    uint8_t *pl = NULL;
    uint32_t len;
    int type;

    for (;;) {
        if (proto_recv(&r->conn, &type, &pl, &len, e2, sizeof e2)) {
            say("%s: %s", r->peer, e2);
            return -1;
        }
        switch (type) {
        case MSG_DISK_PREP:
            if (disk_prep(r, pl, len)) {
                free(pl);
                return -1;
            }
            break;
        case MSG_PROGRESS:
            break;
        case MSG_DISKS_SYNCED:
            if (r->ndisks) /* a direct stream's source says so without disks too */
                say("%s: %d disk(s) of %s in sync", r->peer, r->ndisks, r->name);
            free(pl);
            return 0;
        case MSG_CHUNK:
        case MSG_STREAM_END:
            r->first_type = type, r->first_pl = pl, r->first_len = len;
            return 0;
        case MSG_ABORT: {
            char why[300] = "no reason given";
            kv_get(pl, len, "reason", why, sizeof why);
            say("%s aborted %s: %s", r->peer, r->name, why);
            free(pl);
            return -1;
        }
        default:
            say("%s sent %s before the memory stream", r->peer, msg_type_name(type));
            reply(r, MSG_ABORT, "reason", "unexpected message before the memory stream", NULL,
                  NULL);
            free(pl);
            return -1;
        }
        free(pl);
        pl = NULL;
    }
}

static int receive_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"fd", required_argument, 0, 'F'},        {"timeout", required_argument, 0, 't'},
        {"key", required_argument, 0, 'k'},       {"state-dir", required_argument, 0, 'd'},
        {"policy", required_argument, 0, 'P'},    {"help", no_argument, 0, 'h'},
        {"disk-dir", required_argument, 0, 'D'},  {"algorithms", required_argument, 0, 'A'},
        {0, 0, 0, 0},
    };
    const char *policy_path = env_default("VMMIG_POLICY", DEFAULT_POLICY);
    const char *key_file = proto_key_file();
    const char *algos = getenv("VMMIG_ALGORITHMS");
    struct rjob r = {.pipe_w = -1, .lock_fd = -1, .first_type = -1, .direct_lfd = -1,
                     .direct_fd = -1};
    char disk_dir[4200];
    int rfd = 0, wfd = 1, timeout_ms = PROTO_DEFAULT_TIMEOUT_MS, opt, type, rc = 1;
    static uint8_t psk[PROTO_KEY_MAX];
    size_t psklen;
    char err[400], e2[300];
    long v;
    uint8_t *pl = NULL;
    uint32_t len;
    uint32_t domid = MIG_NO_DOMID;
    struct policy pol;

    toolname = "vmmig receive";
    r.state_dir = env_default("VMMIG_STATE_DIR", DEFAULT_STATE_DIR);
    r.disk_dir = getenv("VMMIG_DISK_DIR");
    while ((opt = getopt_long(argc, argv, "F:t:k:d:P:D:A:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'F':
            if (parse_long(optarg, 0, 65535, &v) || fcntl((int)v, F_GETFD) < 0)
                usage_exit(&applet_receive, "bad --fd '%s' (an open socket)", optarg);
            rfd = wfd = (int)v;
            break;
        case 't':
            if (parse_long(optarg, 1, 3600, &v))
                usage_exit(&applet_receive, "bad timeout '%s' (1-3600 seconds)", optarg);
            timeout_ms = (int)v * 1000;
            break;
        case 'k': key_file = optarg; break;
        case 'd': r.state_dir = optarg; break;
        case 'P': policy_path = optarg; break;
        case 'D':
            if (optarg[0] != '/')
                usage_exit(&applet_receive, "bad --disk-dir '%s' (an absolute path)", optarg);
            r.disk_dir = optarg;
            break;
        case 'A':
            if (mig_algo_list_check(optarg, NULL, err, sizeof err))
                usage_exit(&applet_receive, "bad --algorithms '%s': %s", optarg, err);
            algos = optarg;
            break;
        case 'h': help_exit_ok(&applet_receive);
        default: usage_exit(&applet_receive, "unknown option");
        }
    }
    if (optind != argc)
        usage_exit(&applet_receive, "unexpected argument '%s'", argv[optind]);
    /* The disks' secondaries and QEMU find blockmirror:NAME's sockets there. */
    setenv("VMMIG_STATE_DIR", r.state_dir, 1);
    if (!r.disk_dir || !r.disk_dir[0]) {
        snprintf(disk_dir, sizeof disk_dir, "%s/disks", r.state_dir);
        r.disk_dir = disk_dir;
    }
    r.rfd = rfd;
    openlog("vmmig-receive", LOG_PID, LOG_DAEMON);
    signal(SIGPIPE, SIG_IGN);
    /* stdout may be the transport itself: nothing else may go there. */
    if (wfd != 1) {
        int nul = open("/dev/null", O_WRONLY);
        if (nul >= 0)
            dup2(nul, 1);
    }

    policy_defaults(&pol);
    if (policy_load(policy_path, &pol, e2, sizeof e2)) {
        say("policy %s: %s", policy_path, e2);
        return 1;
    }
    if (proto_load_key(key_file, psk, &psklen, e2, sizeof e2)) {
        say("key %s: %s", key_file, e2);
        return 1;
    }
    proto_init(&r.conn, rfd, wfd, timeout_ms);
    if (proto_handshake_server(&r.conn, psk, psklen, e2, sizeof e2)) {
        say("handshake refused: %s", e2);
        return 1;
    }
    strlcpy0(r.peer, r.conn.peer_host, sizeof r.peer);
    r.eng = mig_engine_select();
    if (!r.eng) {
        say("unknown VMMIG_BACKEND '%s'", getenv("VMMIG_BACKEND"));
        reply(&r, MSG_ABORT, "reason", "this host's agent has no such backend", NULL, NULL);
        return 1;
    }
    if (r.eng->open(&r.e, NULL, NULL, err, sizeof err)) {
        say("%s", err);
        reply(&r, MSG_ABORT, "reason", err, NULL, NULL);
        return 1;
    }

    if (proto_recv(&r.conn, &type, &pl, &len, e2, sizeof e2)) {
        say("%s: %s", r.peer, e2);
        goto out;
    }
    if (type == MSG_QUERY) {
        rc = answer_query(&r, pl, len);
        goto out;
    }
    if (type == MSG_RECOVER) {
        rc = answer_recover(&r, pl, len);
        goto out;
    }
    if (type == MSG_CONSOLE) {
        /* vmmig console: relay the domain's console; never a migration */
        say("%s attaches to a console", r.peer);
        rc = console_serve(&r.conn, r.eng, r.e, pl, len, env_default("VMMIG_MOUNT", DEFAULT_MOUNT),
                           r.state_dir,
                           60 * 1000) ? 1 : 0;
        goto out;
    }
    if (type != MSG_MIG_REQ) {
        say("%s sent %s first; expected MIG_REQ, QUERY, RECOVER or CONSOLE", r.peer,
            msg_type_name(type));
        reply(&r, MSG_ABORT, "reason", "expected MIG_REQ, QUERY, RECOVER or CONSOLE", NULL, NULL);
        goto out;
    }
    char cold[8] = "";
    if (!kv_get(pl, len, "cold", cold, sizeof cold) && !strcmp(cold, "1")) {
        /* vmmig migrate --cold: a stopped domain's files, booted afresh here */
        rc = cold_receive(&r.conn, r.eng, r.e, &pol, pl, len, r.state_dir, r.disk_dir, r.peer);
        goto out;
    }
    /* What this host accepts: all the engine can do, or fewer (a QUERY
     * is answered all the same). */
    if (!algos || !*algos)
        algos = r.eng->algorithms;
    if (mig_algo_list_check(algos, r.eng->algorithms, e2, sizeof e2)) {
        snprintf(err, sizeof err, "this host's algorithms (--algorithms or VMMIG_ALGORITHMS): %s",
                 e2);
        say("%s", err);
        reply(&r, MSG_ABORT, "reason", err, NULL, NULL);
        goto out;
    }
    char algo[MIG_ALGO_MAX];
    if (judge_request(&r, &pol, pl, len, algos, algo, sizeof algo))
        goto out;
    free(pl);
    pl = NULL;
    r.sock = !strcmp(algo, "postcopy");
    say("accepted %s (%s) from %s, %s%s", r.name, r.uuid, r.peer, algo,
        r.direct ? ", direct stream" : "");
    if (r.direct) {
        struct strbuf ok = {0};
        kv_add(&ok, "algorithm", "%s", algo);
        kv_add(&ok, "reservation", "%s", r.uuid);
        kv_add(&ok, "stream", "direct");
        kv_add(&ok, "stream_port", "%u", r.direct_port);
        kv_add(&ok, "stream_token", "%s", r.direct_hex);
        proto_send(&r.conn, MSG_REQ_OK, ok.s, (uint32_t)ok.len);
        sb_free(&ok);
    } else {
        reply(&r, MSG_REQ_OK, "algorithm", algo, "reservation", r.uuid);
    }

    /* the configuration */
    char *json = NULL;
    if (proto_recv(&r.conn, &type, &pl, &len, e2, sizeof e2) || type != MSG_MIG_CFG) {
        say("%s: expected MIG_CFG: %s", r.peer, type == MSG_ABORT ? "aborted" : e2);
        goto fail_state;
    }
    json = xmalloc(len + 1);
    if (kv_get(pl, len, "libxl_json", json, len + 1)) {
        reply(&r, MSG_CFG_FAIL, "reason", "no libxl_json in the configuration", NULL, NULL);
        say("%s: no libxl_json in MIG_CFG", r.peer);
        goto fail_state;
    }
    if (r.eng->prepare && r.eng->prepare(r.e, json, e2, sizeof e2)) {
        reply(&r, MSG_CFG_FAIL, "reason", e2, NULL, NULL);
        say("refused the configuration of %s from %s: %s", r.name, r.peer, e2);
        free(json);
        goto fail_state;
    }
    free(pl);
    pl = NULL;
    reply(&r, MSG_CFG_OK, NULL, NULL, NULL, NULL);
    if (receive_disks(&r)) {
        free(json);
        goto fail_state;
    }

    /* the stream */
    /* Post-copy needs a socket: QEMU's return path goes back on it. */
    int pfd[2], qfd;
    pthread_t pump, ret;
    if (r.direct) {
        if (direct_accept(&r, timeout_ms)) {
            free(json);
            goto fail_state;
        }
        qfd = r.direct_fd;
        pthread_create(&pump, NULL, direct_main, &r);
    } else {
        if (r.sock ? socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pfd) : pipe2(pfd, O_CLOEXEC)) {
            say("%s: %s", r.sock ? "socketpair" : "pipe", strerror(errno));
            free(json);
            goto fail_state;
        }
        if (!r.sock)
            fcntl(pfd[1], F_SETPIPE_SZ, PROTO_CHUNK_MAX);
        r.pipe_w = pfd[1];
        qfd = pfd[0];
        pthread_create(&pump, NULL, pump_main, &r);
    }
    if (r.sock)
        pthread_create(&ret, NULL, return_main, &r);
    char *incoming = r.incoming;
    snprintf(r.incoming, sizeof r.incoming, "%s" MIG_INCOMING_SUFFIX, r.name);
    r.domidp = &domid;
    struct disk_watch watch = {.r = &r};
    pthread_t watcher;
    pthread_create(&watcher, NULL, disk_watch_main, &watch);
    int xrc;
    if (r.sock)
        xrc = r.eng->restore_postcopy(r.e, json, incoming, qfd, postcopy_run, &r, &domid,
                                      &r.running, e2, sizeof e2);
    else
        xrc = r.eng->restore(r.e, json, incoming, qfd, &domid, e2, sizeof e2);
    atomic_store(&watch.stop, true);
    pthread_join(watcher, NULL);
    if (r.direct) {
        /* the source's QEMU sees a failure here; the thread its ABORT */
        if (xrc)
            shutdown(qfd, SHUT_RDWR);
        pthread_join(pump, NULL);
        close(qfd);
        r.direct_fd = -1;
    } else {
        close(qfd);
    }
    if (r.sock && xrc)
        shutdown(r.pipe_w, SHUT_RDWR); /* the pump stops writing to a QEMU that failed */
    if (!r.direct)
        pthread_join(pump, NULL);
    if (r.sock) {
        /* what QEMU wrote back last is still read, then the end marker */
        shutdown(r.pipe_w, SHUT_RD);
        pthread_join(ret, NULL);
        close(r.pipe_w);
        r.pipe_w = -1;
    }
    free(json);
    if ((xrc || r.pump_rc) && r.running) {
        /* The source switched and it ran here: its memory is split
         * between the hosts.  Destroying it would lose the pages that did
         * arrive; QEMU keeps it (postcopy-paused) as it is. */
        say("post-copy of %s broke off after it started here: %s; it is kept paused as %s "
            "(lost unless post-copy is recovered)", r.name, r.pump_rc ? r.pump_err : e2,
            r.renamed ? r.name : r.incoming);
        reply(&r, MSG_ACTIVATED, "result", "failed", "reason", r.pump_rc ? r.pump_err : e2);
        rc = 1;
        goto out;
    }
    if (xrc || r.pump_rc) {
        say("receiving %s failed: %s", r.name, r.pump_rc ? r.pump_err : e2);
        if (!r.pump_rc)
            reply(&r, MSG_ABORT, "reason", e2, NULL, NULL);
        goto fail_domain;
    }
    /* The guest's hold travels in its own channel too. */
    if (r.guest_hold[0] && r.eng->guest_hold_put(r.e, domid, r.guest_hold))
        say("could not restore the guest's hold node for %s", r.name);
    say("received %s as %s (domid %u), %llu bytes", r.name, incoming, domid,
        (unsigned long long)r.bytes);
    bool later = false;
    if (!atomic_load(&r.commit_seen)) {
        reply(&r, MSG_RECEIVED, NULL, NULL, NULL, NULL);

        /* the commit point; a source waiting for its group says it is there */
        int crc;
        while (!(crc = proto_recv(&r.conn, &type, &pl, &len, e2, sizeof e2)) &&
               type == MSG_PROGRESS) {
            free(pl);
            pl = NULL;
        }
        if (crc || type != MSG_COMMIT) {
            say("no COMMIT for %s (%s): dropping the copy", r.name,
                type == MSG_ABORT ? "the source aborted" : e2);
            goto fail_domain;
        }
        char when[16] = "";
        later = !kv_get(pl, len, "activate", when, sizeof when) && !strcmp(when, "later");
        free(pl);
        pl = NULL;
    }
    /* Ours now, whatever happens to the link.  (Post-copy: committed in
     * the stream, and running already unless it converged before the
     * switch.) */
    signal(SIGTERM, SIG_IGN);
    if (!r.running)
        committed_marker_set(&r, domid);
    if (!r.committed)
        disks_commit(&r);
    if (!r.renamed && r.eng->rename(r.e, domid, incoming, r.name, e2, sizeof e2)) {
        say("activating %s failed: %s", r.name, e2);
        reply(&r, MSG_ACTIVATED, "result", "failed", "reason", e2);
        if (r.running)
            goto out; /* it runs as NAME--incoming: never destroy it */
        goto fail_domain;
    }
    if (later)
        await_resume(&r);
    if (!r.running)
        test_delay("activating");
    if (!r.running && r.eng->unpause(r.e, domid, e2, sizeof e2)) {
        say("activating %s failed: %s", r.name, e2);
        reply(&r, MSG_ACTIVATED, "result", "failed", "reason", e2);
        goto fail_domain;
    }
    committed_marker_clear(&r);
    pcrec_marker_clear(&r);
    char ds[16], resumed[24];
    snprintf(ds, sizeof ds, "%u", domid);
    snprintf(resumed, sizeof resumed, "%lld", r.running ? r.resumed_ms : epoch_ms());
    reply3(&r, MSG_ACTIVATED, "result", "ok", "domid", ds, "resumed_ms", resumed);
    say("%s runs here as domid %u", r.name, domid);
    if (!proto_recv(&r.conn, &type, &pl, &len, e2, sizeof e2) && type == MSG_DONE)
        say("%s: DONE", r.peer);
    free(pl);
    pl = NULL;
    rc = 0;
    char myhost[64] = "";
    gethostname(myhost, sizeof myhost - 1);
    r.eng->close(r.e);
    r.e = NULL;
    mig_run_hooks("destination", r.name, r.uuid, r.peer, myhost);
    goto out;

fail_domain:
    /* libxl may have created the copy and failed before it said its domid
     * (the source aborted before the stream began, as a co-migration
     * member does when another member fails): find it by its name. */
    if (domid == MIG_NO_DOMID) {
        char incoming_name[128];
        struct mig_dom left;
        snprintf(incoming_name, sizeof incoming_name, "%s" MIG_INCOMING_SUFFIX, r.name);
        if (!r.eng->lookup(r.e, incoming_name, &left))
            domid = left.domid;
    }
    if (domid != MIG_NO_DOMID && r.eng->destroy(r.e, domid, e2, sizeof e2))
        say("destroying the incoming copy: %s", e2);
    committed_marker_clear(&r);
fail_state:
    disks_drop(&r);
    state_rollback(&r);
    rc = 1;
out:
    if (r.direct_lfd >= 0)
        close(r.direct_lfd);
    free(r.first_pl);
    free(pl);
    free(r.old_state);
    proto_wipe(&r.conn);
    if (r.e)
        r.eng->close(r.e);
    return rc;
}

const struct applet applet_receive = {
    .name = "receive",
    .main = receive_main,
    .summary = "destination agent: receive one live migration",
    .help = receive_help,
};
