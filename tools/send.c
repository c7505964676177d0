/* vmmig send: the source agent of one live migration (vmmig-protocol(7)).
 * vmmigfs runs it for `echo HOST > DOMAIN/migrate`; its "progress" and
 * "result" lines are how vmmigfs follows the job. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "applet.h"
#include "backend.h"
#include "consolehold.h"
#include "diskmig.h"
#include "lock.h"
#include "migengine.h"
#include "migjob.h"
#include "pcrecover.h"
#include "policy.h"
#include "directstream.h"
#include "proto.h"
#include "state.h"
#include "util.h"
#include "xcstream.h"

static const char send_help[] =
    "usage: vmmig send [OPTIONS] DOMAIN HOST\n"
    "\n"
    "Live-migrate DOMAIN (a name or domid) to the vmmig agent on HOST through\n"
    "the vmmig control protocol.  vmmigfs runs this for 'echo HOST > DOMAIN/migrate';\n"
    "run by hand it refuses a locked domain all the same.\n"
    "\n"
    "  -p, --port N          destination agent's TCP port (default 8123)\n"
    "  -s, --via CMD         exec transport instead of TCP: run CMD through /bin/sh,\n"
    "                        %h replaced by HOST, e.g. 'ssh %h vmmig receive'\n"
    "  -a, --algorithm A     precopy (live, default), postcopy (live, then the\n"
    "                        destination runs it and pulls the rest; QEMU only) or\n"
    "                        stopcopy (paused copy); HOST must support it\n"
    "      --stream MODE     relay (default): the stream goes in authenticated\n"
    "                        chunks over the control connection; direct: on its\n"
    "                        own TCP connection, opened with a one-time token but\n"
    "                        not authenticated byte by byte (faster; QEMU only,\n"
    "                        not post-copy, not --via)\n"
    "  -f, --force           go ahead over a guest hold that is past its quota\n"
    "  -t, --timeout S       longest silence from the peer (default 30); a post-copy\n"
    "                        stream lost after the switch is recovered (RECOVER)\n"
    "                        for at most twice as long\n"
    "  -R, --recover         settle DOMAIN after a job whose agent died: resume it\n"
    "                        here, or remove it if HOST's agent says it runs there;\n"
    "                        a switched post-copy is recovered and finished first\n"
    "  -S, --sync-fd FD      one member of a co-migration: stop at the group's\n"
    "                        synchronization points on FD (vmmig comigrate uses it)\n"
    "  -k, --key FILE        pre-shared key (default $VMMIG_KEY_FILE or /etc/vmmig/key)\n"
    "  -d, --state-dir DIR   default $VMMIG_STATE_DIR or " DEFAULT_STATE_DIR "\n"
    "  -P, --policy FILE     default $VMMIG_POLICY or " DEFAULT_POLICY "\n"
    "  -h, --help            show this help\n"
    "\n"
    "Output: 'progress stage=N name=... ' lines while it runs, then one\n"
    "'result ok ...' or 'result failed stage=N why=\"...\" domain=...' line.\n"
    "Exit status: 0 migrated, 1 failed (the domain still runs here unless the\n"
    "result says domain=left-suspended-here, or domain=lost: post-copy had\n"
    "switched and its stream could not be recovered, the guest's memory is split\n"
    "between the hosts), 2 usage.  A recovered post-copy ends 'result ok ...\n"
    "postcopy_recovered=N'.\n";

struct job {
    struct proto_conn conn;
    int fd;
    pid_t transport;
    const struct mig_engine_ops *eng;
    struct mig_engine *e;
    struct mig_dom dom;
    const char *host;
    char myhost[64];
    enum mig_stage stage;
    bool live;
    int timeout_ms;
    char algo[MIG_ALGO_MAX]; /* the one the destination chose */
    /* post-copy: the stream is a socket, the return path comes back on
     * it; the commit point is taken inside save_postcopy() */
    bool sock;
    /* the stream on its own connection (directstream.h): qemu_fd is it */
    bool direct;
    pthread_mutex_t send_lock; /* the pump and the commit both send */
    atomic_bool committed;      /* COMMIT went out */
    bool renamed, switched;
    char away[128];
    char commit_err[400];
    int back_rc;
    char back_err[300];

    /* what the commit point checks again */
    const struct vm_info *vm;
    const struct policy *pol;
    const char *state_dir;
    bool force;
    struct domstate *st;
    char *guest_raw;
    size_t rawlen;
    /* the stream pump */
    int pipe_r;
    atomic_ullong sent;
    uint64_t chunks;
    int pump_rc;
    char pump_err[200];
    /* rounds */
    unsigned round;
    atomic_bool final_seen; /* set by the monitor, read by the pump */
    unsigned long round_pages;
    struct timespec round_start, t0, t_suspend;
    unsigned long long dirty_rate;
    bool engine_rounds;    /* the engine reports rounds itself */
    long long stop_ms;     /* when the domain was seen suspended (epoch ms) */
    long long stop_req_ms; /* when libxl was let ask it to stop (0: no stop hook ran) */
    int console_hold_fd;   /* held from the stop on (consolehold.h), or -1 */
    long long console_drain_ms; /* how long the guest took to read its console input */
    struct xcstream xcs;   /* else they are read off the stream */
    /* post-copy recovery (vmmig-protocol(7), POST-COPY RECOVERY) */
    char mig_id[PCREC_ID_LEN + 1]; /* names this migration to the destination */
    pthread_t pump_t, back_t;      /* the relay threads of the current connection */
    bool relay_up;                 /* they run (or are to be joined) */
    int qemu_fd;                   /* QEMU's end of the current stream socket */
    unsigned long long sent_base;  /* bytes sent before the current connection */
    unsigned recovered;            /* resumes that took */
    long long recover_deadline;    /* epoch ms: no more attempts after it (0: none yet) */
};

static volatile sig_atomic_t cancelled;
static volatile sig_atomic_t cancel_fd = -1, cancel_pid;
static volatile sig_atomic_t cancel_stream_fd = -1; /* a direct stream's socket */

static void on_cancel(int sig)
{
    (void)sig;
    cancelled = 1;
    if (cancel_fd >= 0)
        shutdown(cancel_fd, SHUT_RDWR);
    if (cancel_stream_fd >= 0)
        shutdown(cancel_stream_fd, SHUT_RDWR);
    if (cancel_pid > 0)
        kill(cancel_pid, SIGTERM);
}

/* A test seam: VMMIG_TEST_DELAY=POINT[@DOMAIN]:SECONDS sleeps at POINT
 * (reserved: after REQ_OK, in stage 1; stop: the engine is about to stop
 * the domain, before the group's stop barrier; stopped: in stage 3, the
 * domain suspended and its last pages on their way; received: after
 * RECEIVED, before the commit; committed: after COMMIT was sent; switch:
 * post-copy's commit point), so that the fault tests can kill an agent or
 * cut the link at exactly that point; @DOMAIN picks one member of a group. */
static const char *test_delay_domain; /* the domain being sent, once known */
static void test_delay(const char *point)
{
    long secs = mig_test_delay(getenv("VMMIG_TEST_DELAY"), point, test_delay_domain);
    if (secs >= 0) {
        fprintf(stderr, "%s: test delay at %s\n", toolname, point);
        sleep((unsigned)secs);
    }
}

static int64_t ms_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)(now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

static void progress_line(struct job *j, const char *extra)
{
    printf("progress stage=%d name=%s sent=%llu%s%s\n", j->stage, mig_stage_name(j->stage),
           (unsigned long long)atomic_load(&j->sent), extra ? " " : "", extra ? extra : "");
    fflush(stdout);
}

static void set_stage(struct job *j, enum mig_stage s)
{
    j->stage = s;
    progress_line(j, NULL);
}

/* libxc's round reports, from inside save(). */
static void on_progress(void *arg, unsigned round, bool final, unsigned long done,
                        unsigned long total)
{
    struct job *j = arg;
    char extra[160];

    (void)done;
    j->engine_rounds = true;
    if (atomic_load(&j->committed))
        return; /* post-copy: the rounds are over */
    if (final && !j->final_seen) {
        j->final_seen = true;
        clock_gettime(CLOCK_MONOTONIC, &j->t_suspend);
        j->stage = STAGE_STOPCOPY;
        snprintf(extra, sizeof extra, "dirty_pages=%lu", total);
        progress_line(j, extra);
        return;
    }
    if (final || round == j->round)
        return;
    /* A new live round: its page count is what the last round left dirty. */
    if (j->round) {
        int64_t ms = ms_since(&j->round_start);
        j->dirty_rate = ms > 0 ? (unsigned long long)total * 1000 / (unsigned long long)ms : 0;
    }
    j->round = round;
    j->round_pages = total;
    clock_gettime(CLOCK_MONOTONIC, &j->round_start);
    j->stage = STAGE_PRECOPY;
    snprintf(extra, sizeof extra, "round=%u dirty_pages=%lu dirty_rate=%llu", round, total,
             j->dirty_rate);
    progress_line(j, extra);
}

/* Co-migration: `vmmig comigrate` runs one `send` per member with a socket
 * on --sync-fd.  At each synchronization point the member says "sync
 * POINT" and waits for "go", or "abort WHY" (a closed socket is an abort
 * too); "event POINT ..." lines only inform.  See vmmig-comigrate(1). */
static int sync_fd = -1;
static pthread_mutex_t sync_lock = PTHREAD_MUTEX_INITIALIZER;
/* While the stream runs and until the commit, a member waiting for the
 * group says every second that it is still there, so that the
 * destination's silence timeout does not end a wait at a barrier (a
 * member ready to stop waits for the others' last rounds). */
static struct job *keepalive_job;
static int keepalive_stage;
static pthread_mutex_t sync_wait_lock = PTHREAD_MUTEX_INITIALIZER;

static void sync_event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sync_event(const char *fmt, ...)
{
    char line[200];
    va_list ap;
    if (sync_fd < 0)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    strcat(line, "\n");
    pthread_mutex_lock(&sync_lock);
    if (write(sync_fd, line, strlen(line)) < 0) {
        /* the coordinator is gone: the next barrier says so */
    }
    pthread_mutex_unlock(&sync_lock);
}

/* 0 go on; -1 abort, with why (no coordinator: always go on). */
static int sync_point(const char *point, char *why, size_t whylen)
{
    char line[300];
    size_t n = 0;

    if (sync_fd < 0)
        return 0;
    /* One point at a time: the pump (round) and libxl's thread (stop)
     * both wait here, and the answer must reach the one that asked. */
    pthread_mutex_lock(&sync_wait_lock);
    sync_event("sync %s", point);
    for (;;) {
        char ch;
        struct pollfd pf = {.fd = sync_fd, .events = POLLIN};
        int pr = poll(&pf, 1, 1000);
        if (pr == 0 && keepalive_job) {
            struct strbuf ka = {0};
            kv_add(&ka, "stage", "%d", keepalive_stage);
            kv_add(&ka, "waiting", "%s", point);
            /* The job's send lock: the pump's sender writes the same
             * connection.  A failure shows in the next real frame. */
            pthread_mutex_lock(&keepalive_job->send_lock);
            (void)proto_send(&keepalive_job->conn, MSG_PROGRESS, ka.s, (uint32_t)ka.len);
            pthread_mutex_unlock(&keepalive_job->send_lock);
            sb_free(&ka);
            continue;
        }
        if (pr < 0 && errno == EINTR)
            continue;
        ssize_t r = read(sync_fd, &ch, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            pthread_mutex_unlock(&sync_wait_lock);
            snprintf(why, whylen, "co-migration: the coordinator went away at %s", point);
            return -1;
        }
        if (ch == '\n')
            break;
        if (n < sizeof line - 1)
            line[n++] = ch;
    }
    pthread_mutex_unlock(&sync_wait_lock);
    line[n] = 0;
    if (!strcmp(line, "go"))
        return 0;
    snprintf(why, whylen, "co-migration: %s", !strncmp(line, "abort ", 6) ? line + 6 : line);
    return -1;
}

/* A new round seen in libxl's stream (the engine did not report it). */
static void stream_round(struct job *j)
{
    const struct xcs_rounds *r = &j->xcs.r;
    char extra[160];

    if (j->engine_rounds)
        return;
    j->round = r->round;
    j->dirty_rate = r->dirty_rate;
    if (j->stage != STAGE_PRECOPY)
        return; /* the last round, after the suspend: counted, not announced */
    /* Co-migration keeps the members' rounds in step (holding this one's
     * stream holds libxc back), so that their last rounds, and so their
     * stops, come close together. */
    char why[300];
    if (sync_point("round", why, sizeof why)) {
        j->pump_rc = -ECANCELED;
        snprintf(j->pump_err, sizeof j->pump_err, "%s", why);
        return;
    }
    /* Round 1 sends every page; what the guest dirties shows from round 2 on,
     * known once round 2 is over. */
    if (r->round >= 3)
        snprintf(extra, sizeof extra, "round=%u dirty_pages=%llu dirty_rate=%llu", r->round,
                 (unsigned long long)r->last_round_pages, (unsigned long long)r->dirty_rate);
    else
        snprintf(extra, sizeof extra, "round=%u", r->round);
    progress_line(j, extra);
}

static bool stopped_delay_done;

/* The stream goes out through a short queue: the pump reads from the pipe
 * and computes the content ids while the sender thread puts the previous
 * read on the wire, so that hashing and sending use two CPUs where there
 * are two (on one they cost the same as before).  A large read goes out as
 * up to four chunks of about equal size, so that the receiver can check
 * and pass on the first while the rest arrive; a small one, such as
 * post-copy's answer to a page request, as one chunk at once. */
#define PUMP_SLOTS 3
#define PUMP_SPLIT_MIN (16u << 10) /* smaller pieces cost more in frames than they save */

struct pump_slot {
    uint8_t *buf;
    uint32_t len;    /* bytes read */
    uint32_t part;   /* bytes in each chunk but the last */
    unsigned nparts; /* chunks: 1..PROTO_VERIFY_MAX */
    uint64_t index;  /* of the first chunk (the end: how many came before) */
    uint8_t id[PROTO_VERIFY_MAX][PROTO_CID_LEN];
    bool end; /* STREAM_END, after the last chunk */
};

struct pump_queue {
    pthread_mutex_t m;
    pthread_cond_t cv;
    struct pump_slot slot[PUMP_SLOTS];
    unsigned head, count;
    bool stop;   /* the pump is done: the sender drains the queue and leaves */
    bool drop;   /* the job failed: the sender sends nothing more */
    bool failed; /* the sender failed: the pump stops reading */
};

static struct pump_queue pq = {.m = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void pump_fail(struct job *j, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pump_fail(struct job *j, int rc, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&pq.m);
    if (!j->pump_rc) {
        j->pump_rc = rc;
        va_start(ap, fmt);
        vsnprintf(j->pump_err, sizeof j->pump_err, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&pq.m);
}

static void *sender_main(void *arg)
{
    struct job *j = arg;

    for (;;) {
        pthread_mutex_lock(&pq.m);
        while (!pq.count && !pq.stop && !pq.drop)
            pthread_cond_wait(&pq.cv, &pq.m);
        if (!pq.count || pq.drop) { /* nothing left that may go */
            pthread_mutex_unlock(&pq.m);
            return NULL;
        }
        struct pump_slot *sl = &pq.slot[pq.head];
        pthread_mutex_unlock(&pq.m);

        int rc;
        pthread_mutex_lock(&j->send_lock);
        if (sl->end) {
            struct strbuf sb = {0};
            kv_add(&sb, "chunks", "%llu", (unsigned long long)sl->index);
            kv_add(&sb, "bytes", "%llu",
                   (unsigned long long)atomic_load(&j->sent) - j->sent_base);
            rc = proto_send(&j->conn, MSG_STREAM_END, sb.s, (uint32_t)sb.len);
            sb_free(&sb);
        } else {
            rc = 0;
            for (unsigned i = 0; i < sl->nparts && !rc; i++) {
                uint32_t off = i * sl->part;
                uint32_t n = i + 1 < sl->nparts ? sl->part : sl->len - off;
                rc = proto_send_chunk_id(&j->conn, sl->index + i, sl->id[i], sl->buf + off, n);
            }
        }
        pthread_mutex_unlock(&j->send_lock);
        if (rc) {
            if (sl->end)
                pump_fail(j, rc, "sending STREAM_END: %s", strerror(-rc));
            else
                pump_fail(j, rc, "sending to %s: %s", j->host, strerror(-rc));
            pthread_mutex_lock(&pq.m);
            pq.failed = true;
            pthread_cond_broadcast(&pq.cv);
            pthread_mutex_unlock(&pq.m);
            return NULL;
        }
        if (!sl->end)
            atomic_fetch_add(&j->sent, (unsigned long long)sl->len);
        bool was_end = sl->end;
        pthread_mutex_lock(&pq.m);
        pq.head = (pq.head + 1) % PUMP_SLOTS;
        pq.count--;
        pthread_cond_broadcast(&pq.cv);
        pthread_mutex_unlock(&pq.m);
        if (was_end)
            return NULL;
    }
}

/* Reads the hypervisor's stream from the pipe; sender_main sends it. */
static void *pump_main(void *arg)
{
    struct job *j = arg;
    pthread_t sender;
    unsigned tail = 0;
    ssize_t r;

    for (int i = 0; i < PUMP_SLOTS; i++)
        pq.slot[i].buf = xmalloc(PROTO_CHUNK_MAX);
    pthread_create(&sender, NULL, sender_main, j);
    for (;;) {
        /* A free slot, unless the sender gave up. */
        pthread_mutex_lock(&pq.m);
        while (pq.count == PUMP_SLOTS && !pq.failed)
            pthread_cond_wait(&pq.cv, &pq.m);
        bool failed = pq.failed;
        pthread_mutex_unlock(&pq.m);
        if (failed)
            break;
        struct pump_slot *sl = &pq.slot[tail];
        r = read(j->pipe_r, sl->buf, PROTO_CHUNK_MAX);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            pump_fail(j, -errno, "reading the stream: %s", strerror(errno));
            break;
        }
        if (r == 0 && j->final_seen && !stopped_delay_done) {
            /* QEMU's engine reports the stop once it has written it all,
             * maybe after the last read: the end waits here instead */
            stopped_delay_done = true;
            test_delay("stopped");
        }
        sl->end = r == 0;
        sl->len = (uint32_t)r;
        sl->index = j->chunks; /* for the end: how many chunks came before */
        if (r > 0) {
            uint32_t k = sl->len / PUMP_SPLIT_MIN;
            sl->nparts = k < 1 ? 1 : k > PROTO_VERIFY_MAX ? PROTO_VERIFY_MAX : k;
            sl->part = (sl->len + sl->nparts - 1) / sl->nparts;
            for (unsigned i = 0; i < sl->nparts; i++) {
                uint32_t off = i * sl->part;
                proto_chunk_id(&j->conn, sl->buf + off,
                               i + 1 < sl->nparts ? sl->part : sl->len - off, sl->id[i]);
            }
            j->chunks += sl->nparts;
        }
        pthread_mutex_lock(&pq.m);
        pq.count++;
        tail = (tail + 1) % PUMP_SLOTS;
        pthread_cond_broadcast(&pq.cv);
        pthread_mutex_unlock(&pq.m);
        if (r == 0)
            break;
        if (j->final_seen && !stopped_delay_done) {
            stopped_delay_done = true;
            test_delay("stopped"); /* holding the stream holds libxc in stage 3 */
        }
        if (xcs_feed(&j->xcs, sl->buf, (size_t)r)) {
            stream_round(j);
            if (j->pump_rc)
                break;
        }
    }
    /* Closing our end makes libxl's writer fail fast when we gave up.  A
     * socket also carries the return path: shut it, the caller closes it. */
    if (!j->sock) {
        close(j->pipe_r);
        j->pipe_r = -1;
    } else if (j->pump_rc) {
        shutdown(j->pipe_r, SHUT_RDWR);
    }
    pthread_mutex_lock(&pq.m);
    pq.stop = true;           /* after a good end the end marker is queued */
    pq.drop = !!j->pump_rc;   /* after a failure what is queued is not sent */
    pthread_cond_broadcast(&pq.cv);
    pthread_mutex_unlock(&pq.m);
    pthread_join(sender, NULL);
    for (int i = 0; i < PUMP_SLOTS; i++) {
        free(pq.slot[i].buf);
        pq.slot[i].buf = NULL;
    }
    return NULL;
}

/* Post-copy's return path, destination to source: RETURN messages carry
 * what the destination's QEMU wrote back (vmmig-protocol(7), POST-COPY);
 * their bytes go into our end of the stream socket, where the source's
 * QEMU reads them.  Ends at the destination's end marker, an ABORT or a
 * broken link (then the socket is shut, so that QEMU notices). */
static void *back_main(void *arg)
{
    struct job *j = arg;
    char perr[200];

    for (;;) {
        int type;
        uint8_t *pl;
        uint32_t len;
        int rc = proto_recv(&j->conn, &type, &pl, &len, perr, sizeof perr);
        if (rc) {
            j->back_rc = rc;
            snprintf(j->back_err, sizeof j->back_err, "%s: %s", j->host, perr);
            break;
        }
        if (type == MSG_ABORT) {
            char why[200] = "no reason given";
            kv_get(pl, len, "reason", why, sizeof why);
            snprintf(j->back_err, sizeof j->back_err, "%s aborted: %s", j->host, why);
            j->back_rc = -ECANCELED;
            free(pl);
            break;
        }
        if (type != MSG_RETURN || !len) {
            snprintf(j->back_err, sizeof j->back_err, "%s sent %s%s during the stream", j->host,
                     msg_type_name(type), type == MSG_RETURN ? " without a kind" : "");
            j->back_rc = -EPROTO;
            free(pl);
            break;
        }
        if (pl[0] == RETURN_END) {
            free(pl);
            break;
        }

        /* keep-alives carry nothing; a QEMU that stopped reading has failed
         * its migration already, so what cannot be written is dropped */
        for (uint32_t off = 1; pl[0] == RETURN_DATA && off < len;) {
            ssize_t w = send(j->pipe_r, pl + off, len - off, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            off += (uint32_t)w;
        }
        free(pl);
    }
    /* The return path is over: QEMU sees its end (or the failure). */
    shutdown(j->pipe_r, j->back_rc ? SHUT_RDWR : SHUT_WR);
    return NULL;
}

/* A direct stream's bytes so far: what the destination acknowledged, less
 * the token. */
static unsigned long long direct_sent(int fd)
{
    unsigned long long acked = dstream_bytes_acked(fd);
    return acked > DSTREAM_TOKEN_LEN ? acked - DSTREAM_TOKEN_LEN : 0;
}

/* Watches the domain while save() runs: libxl does not say when it
 * suspends the domain, so stage 3 starts when we see it suspended; also a
 * progress line with the bytes sent each second. */
static atomic_bool monitor_stop;
static atomic_bool stop_released; /* the stop barrier said go */
static void *monitor_main(void *arg)
{
    struct job *j = arg;
    int ticks = 0;

    while (!atomic_load(&monitor_stop)) {
        /* Once the stop barrier let the suspend request go, the moment the
         * domain stops is what the group's stop skew is made of: look
         * every millisecond until it is seen. */
        bool close_watch = atomic_load(&stop_released) && !j->final_seen;
        nanosleep(&(struct timespec){0, (close_watch ? 1 : 10) * 1000 * 1000}, NULL);
        if (close_watch && j->eng->is_suspended(j->e, j->dom.domid) != 1)
            continue;
        if (!j->final_seen && j->eng->is_suspended(j->e, j->dom.domid) == 1) {
            j->final_seen = true;
            clock_gettime(CLOCK_MONOTONIC, &j->t_suspend);
            j->stop_ms = epoch_ms();
            sync_event("event stopped %lld", j->stop_ms);
            /* Post-copy: stopped here means switched; it runs there now. */
            bool pc = atomic_load(&j->committed);
            j->stage = pc ? STAGE_ACTIVATE : STAGE_STOPCOPY;
            progress_line(j, pc ? "postcopy=active" : NULL);
        } else if (++ticks % 100 == 0) {
            if (j->direct) {
                /* Nothing else crosses the control connection while QEMU
                 * writes the stream on its own: keep the destination's
                 * silence timeout from ending it. */
                atomic_store(&j->sent, direct_sent(j->qemu_fd));
                struct strbuf ka = {0};
                kv_add(&ka, "stage", "%d", j->stage);
                kv_add(&ka, "sent", "%llu", (unsigned long long)atomic_load(&j->sent));
                pthread_mutex_lock(&j->send_lock);
                (void)proto_send(&j->conn, MSG_PROGRESS, ka.s, (uint32_t)ka.len);
                pthread_mutex_unlock(&j->send_lock);
                sb_free(&ka);
            }
            progress_line(j, NULL);
        }
    }
    return NULL;
}

/* Console input stops here, before the domain is asked to stop (QEMU: at
 * the latest before its device state goes), and what the guest was given
 * is read by it first: Xen's restore clears the console ring, and what
 * QEMU has not read from its console socket stays behind with the source's
 * QEMU, so unread input would be lost (consolehold.h).  Until here it
 * flowed (the relay writes only without this lock). */
static void console_hold(struct job *j)
{
    if (!j->eng->console_hold_at_stop || j->console_hold_fd >= 0)
        return;
    const char *dir = j->state_dir ? j->state_dir : env_default("VMMIG_STATE_DIR", DEFAULT_STATE_DIR);
    long long t0 = epoch_ms();
    int fd = console_hold_open(dir, j->dom.uuid);
    int r = fd < 0 ? fd : console_hold_take(fd, 1000);
    if (r) {
        error_msg("cannot hold %s's console input (%s/console): %s", j->dom.name, dir,
                  strerror(-r));
        if (fd >= 0)
            close(fd);
        return;
    }
    j->console_hold_fd = fd; /* held until this process ends */
    long long t1 = epoch_ms();
    int unread = j->eng->console_drain ? j->eng->console_drain(j->e, j->dom.domid, 1000) : 0;
    j->console_drain_ms = epoch_ms() - t1;
    if (t1 - t0 + j->console_drain_ms > 100)
        error_msg("holding %s's console input took %lld ms (the lock %lld ms, the guest reading "
                  "its ring %lld ms)", j->dom.name, t1 - t0 + j->console_drain_ms, t1 - t0,
                  j->console_drain_ms);
    if (unread > 0)
        error_msg("%s has not read %d bytes of console input after 1 s: they may be lost",
                  j->dom.name, unread);
    else if (unread < 0)
        error_msg("cannot see %s's console ring: %s", j->dom.name, strerror(-unread));
}

static void console_hook(void *arg)
{
    console_hold(arg);
}

static void console_release(struct job *j)
{
    if (j->console_hold_fd >= 0)
        close(j->console_hold_fd);
    j->console_hold_fd = -1;
}

/* The engine is about to ask the domain to stop: say so (stage 3), and in
 * a group wait until every member is ready too (the stop barrier), so that
 * they are asked together. */
static int stop_barrier(void *arg, char *why, size_t whylen)
{
    struct job *j = arg;

    j->stage = STAGE_STOPCOPY;
    progress_line(j, NULL);
    test_delay("stop");
    /* Console input is held and drained before the barrier, not after it:
     * each member's drain takes its own time, which after the barrier
     * would spread the members' stops apart. */
    console_hold(j);
    if (sync_point("stop", why, whylen)) {
        console_release(j); /* the domain runs on here: input flows again */
        return 1;
    }
    j->stop_req_ms = epoch_ms();
    atomic_store(&stop_released, true);
    return 0;
}

/* Wait for one of the wanted replies; anything else (ABORT included) fails. */
static int expect(struct job *j, int want1, int want2, int *type, uint8_t **pl, uint32_t *len,
                  char *err, size_t errlen)
{
    char perr[200];
    int rc = proto_recv(&j->conn, type, pl, len, perr, sizeof perr);
    if (rc) {
        snprintf(err, errlen, "%s: %s", j->host, perr);
        return rc;
    }
    if (*type == want1 || *type == want2)
        return 0;
    if (*type == MSG_ABORT) {
        char why[300];
        if (kv_get(*pl, *len, "reason", why, sizeof why))
            strlcpy0(why, "no reason given", sizeof why);
        snprintf(err, errlen, "%s aborted: %s", j->host, why);
    } else {
        snprintf(err, errlen, "%s sent %s where %s was expected", j->host, msg_type_name(*type),
                 msg_type_name(want1));
    }
    free(*pl);
    *pl = NULL;
    return -EPROTO;
}

static void send_abort(struct job *j, const char *why)
{
    struct strbuf sb = {0};
    kv_add(&sb, "reason", "%s", why);
    proto_send(&j->conn, MSG_ABORT, sb.s, (uint32_t)sb.len);
    sb_free(&sb);
}

/* ---- local disks (vmmig-protocol(7), DISKS) ---- */

static struct {
    struct diskmig d[DISKMIG_MAX];
    int n;
    bool attached[DISKMIG_MAX];
    bool switched; /* a disk was handed over: the copy here must not run again */
    /* Once every disk is there: bytes copied, bytes compared by hash with a
     * copy the destination already had (a stale replica: only what differs
     * is copied), and their sizes; all -1 without mirrored disks. */
    long long sent, compared, size;
    /* each primary's counters when it was attached: they count from its start */
    long long sent0[DISKMIG_MAX], compared0[DISKMIG_MAX];
} disks; /* zero here, -1 set in send_main: an initialised copy would cost 69 KB in the binary */

/* Stop mirroring to the destination: the primaries here keep serving. */
static void disks_detach(void)
{
    char err[300];

    for (int i = 0; i < disks.n; i++) {
        if (!disks.attached[i])
            continue;
        if (bmctl_call(disks.d[i].control, "detach", NULL, err, sizeof err))
            error_msg("disk %s: detach: %s", disks.d[i].vdev, err);
        disks.attached[i] = false;
    }
}

/* What the copy of the disks to this destination cost, from their
 * primaries' counters (a primary may have served earlier attempts). */
static int disks_count_bytes(char *err, size_t errlen)
{
    struct strbuf ans = {0};
    char v[32], e2[300];
    int rc = -1;

    disks.sent = disks.compared = disks.size = 0;
    for (int i = 0; i < disks.n; i++) {
        if (!disks.attached[i])
            continue;
        sb_reset(&ans);
        if (bmctl_call(disks.d[i].control, "status", &ans, e2, sizeof e2) ||
            bmctl_field(&ans, "bytes_sent", v, sizeof v)) {
            snprintf(err, errlen, "disk %s: %s", disks.d[i].vdev, e2);
            goto out;
        }
        disks.sent += strtoll(v, NULL, 10) - disks.sent0[i];
        if (!bmctl_field(&ans, "compared_bytes", v, sizeof v))
            disks.compared += strtoll(v, NULL, 10) - disks.compared0[i];
        disks.size += (long long)disks.d[i].size;
    }
    rc = 0;
out:
    sb_free(&ans);
    return rc;
}

/* The domain's local disks to the destination, before its memory: each
 * primary attached to a secondary there, and every block in sync.  From
 * then on every write is on both hosts before the guest sees it done.
 * 0, or -1 with err (the caller aborts; disks_detach() undoes it). */
static int disks_mirror(struct job *j, const char *config, const char *state_dir, char *err,
                        size_t errlen)
{
    struct strbuf skipped = {0}, ans = {0};
    char e2[400], v[64], url[300];
    int type, rc = -1;
    uint8_t *pl = NULL;
    uint32_t len;

    disks.n = diskmig_find(config, state_dir, disks.d, DISKMIG_MAX, &skipped, e2, sizeof e2);
    if (disks.n < 0) {
        disks.n = 0;
        snprintf(err, errlen, "%s", e2);
        goto out;
    }
    if (skipped.len)
        fprintf(stderr, "%s: disks without a blockmirror primary stay where they are: %s\n",
                toolname, skipped.s);
    for (int i = 0; i < disks.n; i++) {
        struct diskmig *d = &disks.d[i];
        char state[32] = "", peer[300] = "";
        sb_reset(&ans);
        if (bmctl_call(d->control, "status", &ans, e2, sizeof e2) ||
            bmctl_field(&ans, "size", v, sizeof v) || bmctl_field(&ans, "state", state, sizeof state)) {
            snprintf(err, errlen, "disk %s (%s): %s", d->vdev, d->device, e2);
            goto out;
        }
        bmctl_field(&ans, "peer", peer, sizeof peer);
        d->size = strtoull(v, NULL, 10);
        disks.sent0[i] = !bmctl_field(&ans, "bytes_sent", v, sizeof v) ? strtoll(v, NULL, 10) : 0;
        disks.compared0[i] =
            !bmctl_field(&ans, "compared_bytes", v, sizeof v) ? strtoll(v, NULL, 10) : 0;
        if (!strcmp(state, "switched") || (peer[0] && strcmp(peer, "none"))) {
            snprintf(err, errlen, "disk %s (%s): its primary is %s%s%s; 'vmmig blockmirror "
                     "detach -c %s' first", d->vdev, d->device, state, peer[0] ? " with peer " : "",
                     peer, d->control);
            goto out;
        }
        struct strbuf prep = {0};
        kv_add(&prep, "vdev", "%s", d->vdev);
        kv_add(&prep, "device", "%s", d->device);
        kv_add(&prep, "size", "%llu", (unsigned long long)d->size);
        kv_add(&prep, "control", "%s", d->control); /* one kernel: is it the same primary? */
        int src = proto_send(&j->conn, MSG_DISK_PREP, prep.s, (uint32_t)prep.len);
        sb_free(&prep);
        if (src) {
            snprintf(err, errlen, "%s: sending DISK_PREP failed", j->host);
            goto out;
        }
        if (expect(j, MSG_DISK_READY, MSG_DISK_FAIL, &type, &pl, &len, err, errlen))
            goto out;
        if (type == MSG_DISK_FAIL) {
            char reason[300] = "no reason given";
            kv_get(pl, len, "reason", reason, sizeof reason);
            snprintf(err, errlen, "%s cannot take disk %s: %s", j->host, d->vdev, reason);
            goto out;
        }
        if (!kv_get(pl, len, "same_host", v, sizeof v) && !strcmp(v, "1")) {
            free(pl);
            pl = NULL;
            continue; /* one host: the disk is already there */
        }
        long port;
        if (kv_get(pl, len, "port", v, sizeof v) || parse_long(v, 1, 65535, &port)) {
            snprintf(err, errlen, "%s answered DISK_READY for %s without a valid port", j->host,
                     d->vdev);
            goto out;
        }
        free(pl);
        pl = NULL;
        snprintf(url, sizeof url, "nbd://%s:%ld", j->host, port);
        char req[400];
        snprintf(req, sizeof req, "attach %s", url);
        if (bmctl_call(d->control, req, NULL, e2, sizeof e2)) {
            snprintf(err, errlen, "disk %s: attaching to %s: %s", d->vdev, url, e2);
            goto out;
        }
        disks.attached[i] = true;
        printf("progress stage=%d name=%s sent=0 disk=%s device=%s mirror=%s size=%llu\n",
               j->stage, mig_stage_name(j->stage), d->vdev, d->device, url,
               (unsigned long long)d->size);
    }
    /* Until every block is there.  PROGRESS keeps the link from going
     * silent; a peer lost for longer than the timeout fails the job. */
    int64_t lost_ms = 0, ticks = 0;
    for (;;) {
        uint64_t synced = 0, total = 0;
        int nsynced = 0, nmirrored = 0;
        char lost[300] = "";
        for (int i = 0; i < disks.n; i++) {
            char state[32] = "";
            if (!disks.attached[i])
                continue;
            nmirrored++;
            sb_reset(&ans);
            if (bmctl_call(disks.d[i].control, "status", &ans, e2, sizeof e2) ||
                bmctl_field(&ans, "state", state, sizeof state)) {
                snprintf(err, errlen, "disk %s: %s", disks.d[i].vdev, e2);
                goto out;
            }
            if (!bmctl_field(&ans, "synced_bytes", v, sizeof v))
                synced += strtoull(v, NULL, 10);
            total += disks.d[i].size;
            if (!strcmp(state, "synced"))
                nsynced++;
            else if ((!strcmp(state, "disconnected") || !strcmp(state, "standalone")) &&
                     (bmctl_field(&ans, "last_error", lost, sizeof lost) || !strcmp(lost, "none")))
                snprintf(lost, sizeof lost, "%s", state);
        }
        if (nsynced == nmirrored) {
            if (nmirrored && disks_count_bytes(err, errlen))
                goto out;
            break;
        }
        if (cancelled) {
            snprintf(err, errlen, "cancelled");
            goto out;
        }
        lost_ms = lost[0] ? lost_ms + 200 : 0;
        if (lost_ms > j->timeout_ms) {
            snprintf(err, errlen, "the disk mirror to %s is lost: %s", j->host, lost);
            goto out;
        }
        if (++ticks % 5 == 0) {
            struct strbuf pr = {0};
            kv_add(&pr, "stage", "%d", (int)j->stage);
            kv_add(&pr, "disk_synced", "%llu", (unsigned long long)synced);
            kv_add(&pr, "disk_size", "%llu", (unsigned long long)total);
            int prc = proto_send(&j->conn, MSG_PROGRESS, pr.s, (uint32_t)pr.len);
            sb_free(&pr);
            if (prc) {
                snprintf(err, errlen, "%s: the link failed while the disks were copied: %s",
                         j->host, strerror(-prc));
                goto out;
            }
            printf("progress stage=%d name=%s sent=0 disk_synced=%llu disk_size=%llu\n", j->stage,
                   mig_stage_name(j->stage), (unsigned long long)synced,
                   (unsigned long long)total);
        }
        nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
    }
    if (disks.n) {
        struct strbuf sy = {0};
        kv_add(&sy, "disks", "%d", disks.n);
        int yrc = proto_send(&j->conn, MSG_DISKS_SYNCED, sy.s, (uint32_t)sy.len);
        sb_free(&sy);
        if (yrc) {
            snprintf(err, errlen, "%s: sending DISKS_SYNCED failed", j->host);
            goto out;
        }
        printf("progress stage=%d name=%s sent=0 disks=%d disks_synced=yes disk_size=%lld "
               "disk_sent=%lld disk_compared=%lld\n", j->stage, mig_stage_name(j->stage), disks.n,
               disks.size, disks.sent, disks.compared);
    }
    rc = 0;
out:
    free(pl);
    sb_free(&ans);
    sb_free(&skipped);
    return rc;
}

/* The commit point, the domain suspended: each secondary gets every write
 * and becomes the primary; the primaries here stop.  0, or -1 with err
 * (nothing handed over unless disks.switched). */
static int disks_switch(struct job *j, char *err, size_t errlen)
{
    char e2[400], req[64];

    snprintf(req, sizeof req, "switch %d", j->timeout_ms);
    for (int i = 0; i < disks.n; i++) {
        if (!disks.attached[i])
            continue;
        if (bmctl_call(disks.d[i].control, req, NULL, e2, sizeof e2)) {
            snprintf(err, errlen, "disk %s: switch: %s", disks.d[i].vdev, e2);
            return -1;
        }
        disks.attached[i] = false;
        disks.switched = true;
        printf("progress stage=%d name=%s sent=%llu disk=%s switched=yes\n", j->stage,
               mig_stage_name(j->stage), (unsigned long long)atomic_load(&j->sent),
               disks.d[i].vdev);
    }
    return 0;
}

/* The holds that forbid the move (vmmigfs checked too; this is the last word). */
static int check_holds(struct job *j, const struct vm_info *vm, const struct policy *pol,
                       const char *state_dir, bool force, struct domstate *st, char *guest_raw,
                       size_t rawlen, char *err, size_t errlen)
{
    const struct backend_ops *bops = backend_find(j->eng->name); /* same hypervisor */
    struct backend *be = NULL;
    struct hold sh = {0};
    time_t now = time(NULL);
    char e2[200];
    int rc;

    rc = state_load(state_dir, vm->uuid, st, e2, sizeof e2);
    if (rc) {
        snprintf(err, errlen, "cannot read the domain's state record: %s", e2);
        return -EIO;
    }
    if (hold_in_force(&st->admin, now)) {
        snprintf(err, errlen, "locked: admin hold by %s (%s)", st->admin.by, st->admin.reason);
        return -EBUSY;
    }
    if (bops && !bops->open(&be, e2, sizeof e2)) {
        if (!bops->static_hold(be, vm, &sh) && sh.active) {
            snprintf(err, errlen, "locked: static hold from %s (%s)", sh.by, sh.reason);
            bops->close(be);
            return -EBUSY;
        }
        bops->close(be);
    }
    guest_raw[0] = 0;
    if (!j->eng->guest_hold_get(j->e, vm->domid, guest_raw, rawlen) && guest_raw[0] &&
        strcmp(guest_raw, "0")) {
        struct hold g = {.active = true, .since = st->guest_since ? st->guest_since : now,
                         .expires = st->guest_expires};
        struct lock_request req;
        if (!lock_request_parse(guest_raw, strlen(guest_raw), POLICY_MAX_SECONDS, 0, &req, e2,
                                sizeof e2) &&
            req.value == 0)
            return 0;
        if (!hold_in_force(&g, now))
            return 0;
        time_t at = guest_hold_overridable_at(&g, pol);
        if (!force || !at || now < at) {
            snprintf(err, errlen, "locked: guest hold (%s)%s", guest_raw,
                     force ? "; still within the policy quota" : "");
            return force ? -EPERM : -EBUSY;
        }
    }
    return 0;
}

static int resume_here(struct job *j, char *why, size_t whylen)
{
    struct mig_dom now;
    char err[300], domid[16];

    snprintf(domid, sizeof domid, "%u", j->dom.domid);
    if (j->eng->lookup(j->e, domid, &now))
        return -ENOENT;
    if (!now.suspended)
        return 0;
    if (j->eng->resume(j->e, now.domid, err, sizeof err)) {
        snprintf(why + strlen(why), whylen - strlen(why), "; resume failed: %s", err);
        return -EIO;
    }
    return 0;
}

static int query_destination(struct job *j, const uint8_t *psk, size_t psklen, unsigned port,
                             const char *via);
static struct {
    const uint8_t *psk;
    size_t psklen;
    unsigned port;
    const char *via;
    bool stream_started;
} peer;

static const char *onetime_key; /* a localhost migration's key file */

static _Noreturn void finish_failed(struct job *j, const char *why, bool suspended_here)
{
    if (onetime_key)
        unlink(onetime_key);
    disks_detach(); /* the primaries here keep serving, the domain here */
    /* The destination may hold a half-received copy its agent could not
     * remove (killed, or cut off): ask it to drop it. */
    if (peer.stream_started && !suspended_here) {
        if (j->transport > 0) {
            kill(j->transport, SIGTERM);
            waitpid(j->transport, NULL, 0);
            j->transport = 0;
        }
        query_destination(j, peer.psk, peer.psklen, peer.port, peer.via);
    }
    printf("result failed stage=%d domain=%s why=\"%s\"\n", j->stage,
           suspended_here ? "left-suspended-here" : "running-here", why);
    fflush(stdout);
    if (j->transport > 0)
        kill(j->transport, SIGTERM);
    j->eng->close(j->e);
    exit(1);
}

/* A failure before the destination owns the domain: tell it (tell_peer),
 * take back the name the source copy had before the commit (away, or NULL),
 * run the domain here again, and end the job. */
static _Noreturn void fail_here(struct job *j, char *why, size_t whylen, const char *away,
                                bool tell_peer)
{
    char err[300];

    if (tell_peer)
        send_abort(j, why);
    if (disks.switched) {
        /* Its disks are the destination's now: running it here again
         * would write to disks that are not its own any more. */
        snprintf(why + strlen(why), whylen - strlen(why),
                 "; its disks were handed over to %s, so it stays suspended here", j->host);
        finish_failed(j, why, true);
    }
    if (away)
        j->eng->rename(j->e, j->dom.domid, away, j->dom.name, err, sizeof err);
    finish_failed(j, why, resume_here(j, why, whylen) != 0);
}

/* After the commit point the destination did not confirm: ask it (on a new
 * connection) whether it runs the domain.  1 it does, 0 it does not (and
 * holds no copy), -1 unknown. */
static int query_destination(struct job *j, const uint8_t *psk, size_t psklen, unsigned port,
                             const char *via)
{
    char err[300], state[32];

    for (int attempt = 0; attempt < 3; attempt++) {
        if (attempt)
            sleep(2);
        if (mig_query(j->host, port, via, j->timeout_ms, psk, psklen, j->myhost, j->dom.uuid,
                      j->dom.name, state, sizeof state, err, sizeof err))
            continue;
        if (!strcmp(state, "active"))
            return 1;
        if (!strcmp(state, "absent"))
            return 0;
    }
    return -1;
}

/* --recover: a job whose agent died (killed) may have left the domain
 * suspended or renamed here; settle it so that exactly one copy runs. */
/* --recover: a killed agent may have left the domain's disks mirrored to
 * a destination that will never take them; the primaries keep serving. */
static void recover_disks(struct job *j, const char *state_dir)
{
    struct strbuf neutral = {0}, ans = {0};
    char *native = NULL, err[300], state[32];

    if (j->eng->get_config(j->e, j->dom.domid, &neutral, &native, err, sizeof err))
        return;
    disks.n = diskmig_find(neutral.s ? neutral.s : "", state_dir, disks.d, DISKMIG_MAX, NULL, err,
                           sizeof err);
    for (int i = 0; i < disks.n; i++) {
        sb_reset(&ans);
        if (!bmctl_call(disks.d[i].control, "status", &ans, err, sizeof err) &&
            !bmctl_field(&ans, "state", state, sizeof state) && strcmp(state, "switched") &&
            strcmp(state, "standalone"))
            disks.attached[i] = true;
    }
    disks_detach();
    sb_free(&neutral);
    sb_free(&ans);
    free(native);
}

static int resume_postcopy_here(struct job *j, const uint8_t *psk, size_t psklen, unsigned port,
                                const char *via, const char *state_dir);

static int recover(struct job *j, const char *what, const uint8_t *psk, size_t psklen,
                   unsigned port, const char *via, const char *state_dir)
{
    char err[300], base[64];
    size_t n;

    if (j->eng->lookup(j->e, what, &j->dom)) {
        /* Gone from here: it is wherever it went. */
        printf("result ok host=%s recovered=absent-here\n", j->host);
        return 0;
    }
    strlcpy0(base, j->dom.name, sizeof base);
    n = mig_strip_suffix(base, MIG_AWAY_SUFFIX);
    bool away = n > 0;
    if (away)
        base[n] = 0;
    if (!away) {
        /* Never committed: the copy here is the one. */
        bool susp = j->dom.suspended;
        if (susp && j->eng->resume(j->e, j->dom.domid, err, sizeof err)) {
            printf("result failed stage=%d domain=left-suspended-here why=\"recovery: %s\"\n",
                   STAGE_PRE, err);
            return 1;
        }
        query_destination(j, psk, psklen, port, via); /* drops a half-received copy there */
        recover_disks(j, state_dir);
        printf("result failed stage=%d domain=running-here why=\"the migration agent died; "
               "the domain %s here\"\n", STAGE_PRE, susp ? "was resumed" : "kept running");
        return 1;
    }
    strlcpy0(j->dom.name, base, sizeof j->dom.name);
    /* A post-copy that switched: the destination runs the domain while
     * part of its memory is still only here, so this copy must live on
     * until it is all there. */
    if (j->eng->resume_postcopy) {
        int prc = resume_postcopy_here(j, psk, psklen, port, via, state_dir);
        if (prc >= 0)
            return prc;
    }
    int q = query_destination(j, psk, psklen, port, via);
    if (q == 1) {
        if (j->eng->destroy(j->e, j->dom.domid, err, sizeof err))
            error_msg("the old copy: %s", err);
        printf("result ok host=%s recovered=destination-runs-it\n", j->host);
        return 0;
    }
    if (q == 0) {
        char awayname[128];
        snprintf(awayname, sizeof awayname, "%s" MIG_AWAY_SUFFIX, base);
        if (j->eng->rename(j->e, j->dom.domid, awayname, base, err, sizeof err) ||
            (j->dom.suspended && j->eng->resume(j->e, j->dom.domid, err, sizeof err))) {
            printf("result failed stage=%d domain=left-suspended-here why=\"recovery: %s\"\n",
                   STAGE_COMMIT, err);
            return 1;
        }
        printf("result failed stage=%d domain=running-here why=\"the migration agent died at "
               "the commit point; %s does not run the domain, resumed here\"\n",
               STAGE_COMMIT, j->host);
        return 1;
    }
    printf("result failed stage=%d domain=left-suspended-here why=\"the migration agent died "
           "at the commit point and %s cannot be asked; %s stays suspended here\"\n",
           STAGE_COMMIT, j->host, j->dom.name);
    return 1;
}

/* Post-copy once the source has switched: the guest's memory is split
 * between the hosts and it can run here no more.  QEMU keeps both halves
 * (postcopy-paused); the recovery (postcopy_recover) did not take, or
 * could not be tried: say so and stop. */
static _Noreturn void finish_lost(struct job *j, const char *why)
{
    printf("result failed stage=%d domain=lost algorithm=%s why=\"%s; post-copy had switched, "
           "so the guest cannot run on %s again: it is lost unless %s runs it (both halves are "
           "left as they are)\"\n",
           j->stage, j->algo, why, j->myhost, j->host);
    fflush(stdout);
    if (j->transport > 0)
        kill(j->transport, SIGTERM);
    j->eng->close(j->e);
    exit(1);
}

/* A post-copy that failed after the switch.  If the destination holds no
 * copy (QUERY: absent), the guest never ran there and its memory here is
 * whole: run it here again.  Otherwise it is lost. */
static _Noreturn void switched_failed(struct job *j, const char *why, const uint8_t *psk,
                                      size_t psklen, unsigned port, const char *via)
{
    char err[300], msg[600];

    if (j->transport > 0) {
        kill(j->transport, SIGTERM);
        waitpid(j->transport, NULL, 0);
        j->transport = 0;
    }
    /* A recovery that was tried and failed had the destination's answer
     * already; a domain absent there now may have run there before its
     * QEMU went away, so running it here again could lose its writes. */
    if (j->recover_deadline || query_destination(j, psk, psklen, port, via) != 0)
        finish_lost(j, why);
    snprintf(msg, sizeof msg, "%s; post-copy had switched, but %s never ran the domain", why,
             j->host);
    if (j->eng->rename(j->e, j->dom.domid, j->away, j->dom.name, err, sizeof err) ||
        j->eng->resume(j->e, j->dom.domid, err, sizeof err)) {
        snprintf(msg + strlen(msg), sizeof msg - strlen(msg), "; resuming it here failed: %s",
                 err);
        peer.stream_started = false;
        finish_failed(j, msg, true);
    }
    snprintf(msg + strlen(msg), sizeof msg - strlen(msg), ": resumed here");
    if (j->state_dir)
        pcrec_source_remove(j->state_dir, j->dom.uuid);
    peer.stream_started = false;
    finish_failed(j, msg, false);
}

/* Post-copy's commit point, called by the engine once the first pass is
 * over and before it switches: a hold that arrived meanwhile still wins;
 * then the copy here is renamed and COMMIT goes out inside the stream.
 * Non-zero: no switch, the guest runs on here (commit_err says why). */
/* A direct stream starts once the destination's QEMU reads it: save()
 * waits here after setting up the source's QEMU (set_stream_gate), so
 * that the two hosts set up at the same time. */
static int direct_stream_gate(void *arg, char *why, size_t whylen)
{
    struct job *j = arg;
    char e2[300];
    int rc = dstream_wait_ready(j->qemu_fd, j->timeout_ms, e2, sizeof e2);

    if (rc)
        snprintf(why, whylen, "%s: %s", j->host, cancelled ? "cancelled" : e2);
    return rc;
}

static int postcopy_commit(void *arg)
{
    struct job *j = arg;
    char e2[300];

    set_stage(j, STAGE_COMMIT);
    test_delay("switch");
    if (cancelled) {
        snprintf(j->commit_err, sizeof j->commit_err, "cancelled");
        return -1;
    }
    if (j->pump_rc || j->back_rc) {
        snprintf(j->commit_err, sizeof j->commit_err, "%s", j->pump_rc ? j->pump_err : j->back_err);
        return -1;
    }
    /* A destination agent that died has closed its end; only a reader
     * would notice the FIN, and the return path's reader may be done: a
     * COMMIT written now would still "succeed" into the socket. */
    struct pollfd pf = {.fd = j->conn.rfd, .events = POLLRDHUP};
    if (poll(&pf, 1, 0) > 0 && (pf.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
        snprintf(j->commit_err, sizeof j->commit_err, "%s: the destination agent closed the connection",
                 j->host);
        return -1;
    }
    if (check_holds(j, j->vm, j->pol, j->state_dir, j->force, j->st, j->guest_raw, j->rawlen,
                    j->commit_err, sizeof j->commit_err))
        return -1;
    /* From here on the job is not cancellable: exactly one side must run it. */
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, NULL);
    snprintf(j->away, sizeof j->away, "%s" MIG_AWAY_SUFFIX, j->dom.name);
    if (j->eng->rename(j->e, j->dom.domid, j->dom.name, j->away, e2, sizeof e2)) {
        snprintf(j->commit_err, sizeof j->commit_err, "%s", e2);
        return -1;
    }
    j->renamed = true;
    /* If this agent dies after the switch, a fresh one (--recover) takes
     * the post-copy on: it needs the migration's id and where it goes. */
    struct pcrec_source rec = {0};
    strlcpy0(rec.id, j->mig_id, sizeof rec.id);
    strlcpy0(rec.host, j->host, sizeof rec.host);
    int wrc = j->mig_id[0] ? pcrec_source_write(j->state_dir, j->dom.uuid, &rec) : 0;
    if (wrc) {
        snprintf(j->commit_err, sizeof j->commit_err,
                 "cannot record the post-copy for a recovery in %s/outgoing: %s", j->state_dir,
                 strerror(-wrc));
        return -1;
    }
    struct strbuf commit = {0};
    kv_add(&commit, "postcopy", "1");
    pthread_mutex_lock(&j->send_lock);
    int rc = proto_send(&j->conn, MSG_COMMIT, commit.s, (uint32_t)commit.len);
    pthread_mutex_unlock(&j->send_lock);
    sb_free(&commit);
    if (rc) {
        /* Without the switch the destination cannot run it. */
        snprintf(j->commit_err, sizeof j->commit_err, "%s: the link failed before COMMIT was sent",
                 j->host);
        pcrec_source_remove(j->state_dir, j->dom.uuid);
        return -1;
    }
    atomic_store(&j->committed, true);
    fprintf(stderr, "%s: committed %s to %s; switching to post-copy\n", toolname, j->dom.name,
            j->host);
    return 0;
}

/* How long the source keeps asking the destination to resume a post-copy
 * whose stream broke after the switch: twice the silence timeout, so that
 * the agent that had the stream there has noticed the silence and let go. */
#define RECOVER_BUDGET_FACTOR 2

/* One attempt: a new connection, RECOVER, and its answer.  0 accepted (the
 * connection in *c, fd, pid), 1 worth another attempt, -1 refused for good
 * (why says why). */
static int recover_attempt(struct job *j, struct proto_conn *c, int *fd, pid_t *pid, char *why,
                           size_t whylen)
{
    char e2[300], code[32] = "", reason[300] = "";
    uint8_t *pl = NULL;
    uint32_t len;
    int type, rc = 1;

    if (mig_dial(j->host, peer.port, peer.via, j->timeout_ms, peer.psk, peer.psklen, j->myhost, c,
                 fd, pid, why, whylen))
        return 1;
    struct strbuf sb = {0};
    kv_add(&sb, "uuid", "%s", j->dom.uuid);
    kv_add(&sb, "name", "%s", j->dom.name);
    kv_add(&sb, "migration", "%s", j->mig_id);
    int src = proto_send(c, MSG_RECOVER, sb.s, (uint32_t)sb.len);
    sb_free(&sb);
    if (src || proto_recv(c, &type, &pl, &len, e2, sizeof e2)) {
        snprintf(why, whylen, "%s: %s", j->host, src ? strerror(-src) : e2);
        goto out;
    }
    if (type == MSG_RECOVER_OK) {
        rc = 0;
        goto out;
    }
    kv_get(pl, len, "code", code, sizeof code);
    kv_get(pl, len, "reason", reason, sizeof reason);
    if (type == MSG_RECOVER_FAIL) {
        snprintf(why, whylen, "%s refused the recovery (%s): %s", j->host, code, reason);
        /* busy: the agent that had the stream has not let go yet;
         * not-paused: its QEMU has not seen the break yet */
        rc = strcmp(code, "busy") && strcmp(code, "not-paused") ? -1 : 1;
    } else {
        snprintf(why, whylen, "%s answered %s to RECOVER%s%s", j->host, msg_type_name(type),
                 reason[0] ? ": " : "", reason);
        rc = -1; /* an agent without recovery */
    }
out:
    free(pl);
    if (rc)
        mig_hangup(c, fd, pid);
    return rc;
}

/* Wind the relay of the current connection down: its threads end once
 * their ends are shut. */
static void relay_stop(struct job *j)
{
    shutdown(j->fd, SHUT_RDWR);
    shutdown(j->pipe_r, SHUT_RDWR);
    pthread_join(j->pump_t, NULL);
    pthread_join(j->back_t, NULL);
    j->relay_up = false;
}

/* The engine's post-copy recovery hook: the stream broke after the
 * switch, both halves wait.  The old connection's relay is wound down, a
 * new one asks the destination's agent to RECOVER, and on its yes a fresh
 * stream socket goes to QEMU for migrate resume.  Non-zero: give up. */
static int postcopy_recover(void *arg, int *qfd, char *why, size_t whylen)
{
    struct job *j = arg;
    char e2[400] = "";

    if (!j->mig_id[0]) {
        snprintf(why, whylen, "this migration has no id to recover it by");
        return -1;
    }
    /* The broken relay.  (An agent taking over after the one that ran the
     * job died has none.) */
    if (j->relay_up) {
        relay_stop(j);
        snprintf(e2, sizeof e2, "%s", j->pump_rc ? j->pump_err : j->back_rc ? j->back_err : "");
    } else {
        snprintf(e2, sizeof e2, "the agent that ran the migration died");
    }
    if (j->pipe_r >= 0)
        close(j->pipe_r);
    j->pipe_r = -1;
    if (j->qemu_fd >= 0)
        close(j->qemu_fd);
    j->qemu_fd = -1;
    if (j->fd >= 0) {
        proto_wipe(&j->conn);
        close(j->fd);
    }
    j->fd = -1;
    cancel_fd = -1;
    if (j->transport > 0) {
        kill(j->transport, SIGTERM);
        waitpid(j->transport, NULL, 0);
    }
    j->transport = 0;
    cancel_pid = 0;
    long long now = epoch_ms();
    if (!j->recover_deadline)
        j->recover_deadline = now + (long long)j->timeout_ms * RECOVER_BUDGET_FACTOR;
    fprintf(stderr, "%s: the post-copy stream to %s broke after the switch (%s); recovering\n",
            toolname, j->host, e2[0] ? e2 : "QEMU paused it");
    progress_line(j, "postcopy=paused");

    struct proto_conn c;
    int fd = -1, attempt = 0, arc;
    pid_t pid = 0;
    char last[400] = "no attempt";
    for (;;) {
        if (attempt++)
            sleep(1);
        arc = recover_attempt(j, &c, &fd, &pid, last, sizeof last);
        if (arc <= 0)
            break;
        if (epoch_ms() >= j->recover_deadline) {
            snprintf(why, whylen, "recovery gave up after %d attempts in %d s: %s", attempt,
                     j->timeout_ms * RECOVER_BUDGET_FACTOR / 1000, last);
            return -1;
        }
    }
    if (arc < 0) {
        snprintf(why, whylen, "%s", last);
        return -1;
    }
    /* A fresh relay on the new connection. */
    int pfd[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pfd)) {
        snprintf(why, whylen, "socketpair: %s", strerror(errno));
        mig_hangup(&c, &fd, &pid);
        return -1;
    }
    j->conn = c;
    j->fd = fd;
    j->transport = pid;
    cancel_fd = fd;
    cancel_pid = pid;
    j->pipe_r = pfd[0];
    j->qemu_fd = pfd[1];
    j->pump_rc = j->back_rc = 0;
    j->pump_err[0] = j->back_err[0] = 0;
    j->chunks = 0;
    j->sent_base = atomic_load(&j->sent);
    memset(&pq.slot, 0, sizeof pq.slot);
    pq.head = pq.count = 0;
    pq.stop = pq.drop = pq.failed = false;
    pthread_create(&j->pump_t, NULL, pump_main, j);
    pthread_create(&j->back_t, NULL, back_main, j);
    j->relay_up = true;
    j->recovered++;
    char extra[64];
    snprintf(extra, sizeof extra, "postcopy=recovering postcopy_recovered=%u", j->recovered);
    progress_line(j, extra);
    fprintf(stderr, "%s: %s takes the rest of %s's post-copy; resuming\n", toolname, j->host,
            j->dom.name);
    *qfd = pfd[1];
    return 0;
}

/* --recover for a post-copy whose agent died after the switch: take it
 * on as the agent would have after a broken stream (postcopy_recover: a
 * RECOVER to the destination's agent, QEMU resumed into a fresh relay),
 * then finish the job (ACTIVATED, the old copy removed, DONE).  -1: no
 * post-copy is unfinished here (the caller settles the domain as after any
 * other job); else the exit status, the result line printed. */
static int resume_postcopy_here(struct job *j, const uint8_t *psk, size_t psklen, unsigned port,
                                const char *via, const char *state_dir)
{
    struct pcrec_source rec;
    char err[400] = "", status[32] = "", result[16] = "", reason[300] = "", newdomid[16] = "?";
    uint8_t *pl = NULL;
    uint32_t len;
    int type, rrc;

    rrc = pcrec_source_read(state_dir, j->dom.uuid, &rec);
    if (!rrc && !strcmp(rec.host, j->host))
        strlcpy0(j->mig_id, rec.id, sizeof j->mig_id);
    peer.psk = psk, peer.psklen = psklen, peer.port = port, peer.via = via;
    j->state_dir = state_dir;
    j->sock = true;
    j->switched = true;
    j->renamed = true;
    atomic_store(&j->committed, true);
    snprintf(j->away, sizeof j->away, "%s" MIG_AWAY_SUFFIX, j->dom.name);
    strlcpy0(j->algo, "postcopy", sizeof j->algo);
    j->stage = STAGE_ACTIVATE;
    xcs_init(&j->xcs);
    j->eng->set_postcopy_recover(j->e, postcopy_recover, j);
    int rc = j->eng->resume_postcopy(j->e, j->dom.domid, j->timeout_ms, status, sizeof status,
                                     err, sizeof err);
    if (rc == -EINVAL && !j->relay_up && strncmp(status, "postcopy", 8))
        return -1; /* no post-copy waits here (or it completed) */
    if (!rc && !j->relay_up)
        rc = -EIO, snprintf(err, sizeof err, "QEMU completed without a new stream");
    if (rc) {
        if (j->relay_up)
            relay_stop(j);
        if (!j->mig_id[0])
            snprintf(err + strlen(err), sizeof err - strlen(err),
                     "%sno record of the migration's id in %s/outgoing (%s)", err[0] ? "; " : "",
                     state_dir, rrc ? strerror(-rrc) : "for another host");
        char why[600];
        snprintf(why, sizeof why, "the migration agent died after the post-copy switch; "
                 "recovering it: %s", err);
        finish_lost(j, why);
    }
    /* as at the end of the agent that died: the return path ends first */
    close(j->qemu_fd);
    j->qemu_fd = -1;
    pthread_join(j->pump_t, NULL);
    pthread_join(j->back_t, NULL);
    j->relay_up = false;
    if (j->pump_rc || j->back_rc)
        finish_lost(j, j->pump_rc ? j->pump_err : j->back_err);
    close(j->pipe_r);
    j->pipe_r = -1;
    if (expect(j, MSG_ACTIVATED, MSG_ACTIVATED, &type, &pl, &len, err, sizeof err)) {
        /* every page went: whether it runs there is the destination's to say */
        int q = query_destination(j, psk, psklen, port, via);
        if (q != 1)
            finish_lost(j, err);
        strlcpy0(result, "ok", sizeof result);
    } else {
        kv_get(pl, len, "result", result, sizeof result);
        kv_get(pl, len, "reason", reason, sizeof reason);
        kv_get(pl, len, "domid", newdomid, sizeof newdomid);
        free(pl);
    }
    if (strcmp(result, "ok")) {
        snprintf(err, sizeof err, "%s could not activate the domain: %s", j->host,
                 reason[0] ? reason : "no reason given");
        finish_lost(j, err);
    }
    if (j->eng->destroy(j->e, j->dom.domid, err, sizeof err))
        error_msg("the old copy %s: %s", j->away, err);
    pcrec_source_remove(state_dir, j->dom.uuid);
    proto_send(&j->conn, MSG_DONE, NULL, 0);
    proto_wipe(&j->conn);
    close(j->fd);
    j->fd = -1;
    if (j->transport > 0)
        waitpid(j->transport, NULL, 0);
    printf("result ok host=%s domid=%s recovered=postcopy algorithm=postcopy postcopy=switched "
           "postcopy_recovered=%u sent=%llu\n",
           j->host, newdomid, j->recovered, (unsigned long long)atomic_load(&j->sent));
    return 0;
}

static int send_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", required_argument, 0, 'p'},      {"via", required_argument, 0, 's'},
        {"algorithm", required_argument, 0, 'a'}, {"force", no_argument, 0, 'f'},
        {"timeout", required_argument, 0, 't'},   {"key", required_argument, 0, 'k'},
        {"state-dir", required_argument, 0, 'd'}, {"policy", required_argument, 0, 'P'},
        {"recover", no_argument, 0, 'R'},         {"sync-fd", required_argument, 0, 'S'},
        {"stream", required_argument, 0, 'M'},    {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    bool recovering = false;
    const char *state_dir = env_default("VMMIG_STATE_DIR", DEFAULT_STATE_DIR);
    const char *policy_path = env_default("VMMIG_POLICY", DEFAULT_POLICY);
    const char *key_file = proto_key_file(), *via = NULL, *algorithm = "precopy";
    unsigned port = PROTO_DEFAULT_PORT;
    bool force = false;
    long v;
    int opt;
    struct job j = {.fd = -1, .pipe_r = -1, .qemu_fd = -1, .console_hold_fd = -1, .live = true,
                    .send_lock = PTHREAD_MUTEX_INITIALIZER};
    char err[400], e2[300];
    static uint8_t psk[PROTO_KEY_MAX];
    size_t psklen;

    toolname = "vmmig send";
    disks.sent = disks.compared = disks.size = -1; /* no mirrored disks yet */
    j.timeout_ms = PROTO_DEFAULT_TIMEOUT_MS;
    while ((opt = getopt_long(argc, argv, "p:s:a:ft:k:d:P:RS:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'p':
            if (parse_long(optarg, 1, 65535, &v))
                usage_exit(&applet_send, "bad port '%s' (1-65535)", optarg);
            port = (unsigned)v;
            break;
        case 's': via = optarg; break;
        case 'a':
            if (!mig_algo_known(optarg))
                usage_exit(&applet_send, "unknown algorithm '%s' (precopy, postcopy or stopcopy)",
                           optarg);
            algorithm = optarg;
            break;
        case 'f': force = true; break;
        case 'M':
            if (!mig_stream_known(optarg))
                usage_exit(&applet_send, "unknown stream '%s' (relay or direct)", optarg);
            j.direct = !strcmp(optarg, "direct");
            break;
        case 't':
            if (parse_long(optarg, 1, 3600, &v))
                usage_exit(&applet_send, "bad timeout '%s' (1-3600 seconds)", optarg);
            j.timeout_ms = (int)v * 1000;
            break;
        case 'k': key_file = optarg; break;
        case 'd': state_dir = optarg; break;
        case 'P': policy_path = optarg; break;
        case 'R': recovering = true; break;
        case 'S':
            if (parse_long(optarg, 3, 1023, &v) || fcntl((int)v, F_GETFD) < 0)
                usage_exit(&applet_send, "bad --sync-fd '%s' (an open descriptor, 3-1023)", optarg);
            sync_fd = (int)v;
            fcntl(sync_fd, F_SETFD, FD_CLOEXEC);
            break;
        case 'h': help_exit_ok(&applet_send);
        default: usage_exit(&applet_send, "unknown option");
        }
    }
    if (argc - optind != 2)
        usage_exit(&applet_send, "expected DOMAIN and HOST");
    j.host = argv[optind + 1];
    if (!*j.host || j.host[0] == '-')
        usage_exit(&applet_send, "bad host '%s'", j.host);
    setvbuf(stdout, NULL, _IOLBF, 0);
    clock_gettime(CLOCK_MONOTONIC, &j.t0);
    gethostname(j.myhost, sizeof j.myhost - 1);

    /* ---- stage 0: pre-migration ---- */
    set_stage(&j, STAGE_PRE);
    j.eng = mig_engine_select();
    if (!j.eng) {
        printf("result failed stage=0 domain=running-here why=\"unknown VMMIG_BACKEND '%s'\"\n",
               getenv("VMMIG_BACKEND"));
        return 1;
    }
    if (j.eng->open(&j.e, on_progress, &j, err, sizeof err)) {
        printf("result failed stage=0 domain=running-here why=\"%s\"\n", err);
        return 1;
    }
    if (j.eng->set_stop_hook && (sync_fd >= 0 || !j.eng->stop_hook_group_only))
        j.eng->set_stop_hook(j.e, stop_barrier, &j);
    if (j.eng->set_console_hook)
        j.eng->set_console_hook(j.e, console_hook, &j);
    /* Seen stopped is not past the stop barrier for such an engine. */
    if (j.eng->set_stop_hook && j.eng->stop_hook_always)
        sync_event("event stop-hook");
    if (recovering) {
        if (proto_load_key(key_file, psk, &psklen, e2, sizeof e2))
            psklen = 0;
        int rrc = recover(&j, argv[optind], psk, psklen, port, via, state_dir);
        j.eng->close(j.e);
        return rrc;
    }
    if (!mig_algo_listed(j.eng->algorithms, algorithm)) {
        snprintf(err, sizeof err, "this host's %s engine cannot do %s (it does %s)", j.eng->name,
                 algorithm, j.eng->algorithms);
        finish_failed(&j, err, false);
    }
    if (j.direct && !j.eng->direct_stream) {
        snprintf(err, sizeof err, "this host's %s engine takes its stream through the relay only",
                 j.eng->name);
        finish_failed(&j, err, false);
    }
    if (j.direct && !strcmp(algorithm, "postcopy")) {
        snprintf(err, sizeof err, "post-copy takes its stream through the relay (its recovery "
                                  "needs the relay): no --stream=direct");
        finish_failed(&j, err, false);
    }
    if (!strcmp(algorithm, "postcopy") && sync_fd >= 0) {
        /* the group's barriers assume the stop-and-copy commit point */
        snprintf(err, sizeof err, "post-copy is not available in a co-migration");
        finish_failed(&j, err, false);
    }
    if (j.eng->lookup(j.e, argv[optind], &j.dom)) {
        snprintf(err, sizeof err, "no domain '%s' here", argv[optind]);
        finish_failed(&j, err, false);
    }
    test_delay_domain = j.dom.name;
    if (j.dom.suspended || j.dom.dying || strstr(j.dom.name, MIG_AWAY_SUFFIX) ||
        strstr(j.dom.name, MIG_INCOMING_SUFFIX)) {
        snprintf(err, sizeof err, "domain %s is in the middle of another migration or shutdown",
                 j.dom.name);
        finish_failed(&j, err, false);
    }
    struct policy pol;
    policy_defaults(&pol);
    if (policy_load(policy_path, &pol, e2, sizeof e2)) {
        snprintf(err, sizeof err, "policy %s: %s", policy_path, e2);
        finish_failed(&j, err, false);
    }
    struct vm_info vm = {.domid = j.dom.domid};
    strlcpy0(vm.name, j.dom.name, sizeof vm.name);
    strlcpy0(vm.uuid, j.dom.uuid, sizeof vm.uuid);
    struct domstate st;
    char guest_raw[LOCK_REQUEST_MAX + 1];
    if (check_holds(&j, &vm, &pol, state_dir, force, &st, guest_raw, sizeof guest_raw, err,
                    sizeof err))
        finish_failed(&j, err, false);
    /* Within this host no configuration is needed: a one-time key, and
     * the receiving agent runs as our child (the exec transport). */
    char onetime[64] = "", localvia[8192];
    if (!strcmp(j.host, "localhost") && !via) {
        char self[4096];
        ssize_t r = readlink("/proc/self/exe", self, sizeof self - 1);
        uint8_t rnd[32];
        snprintf(onetime, sizeof onetime, "/tmp/vmmig-key.XXXXXX");
        int kfd = mkstemp(onetime);
        if (r <= 0 || kfd < 0 || getentropy(rnd, sizeof rnd) ||
            write(kfd, rnd, sizeof rnd) != (ssize_t)sizeof rnd) {
            snprintf(err, sizeof err, "cannot set up the local transport: %s", strerror(errno));
            if (kfd >= 0)
                unlink(onetime), close(kfd);
            finish_failed(&j, err, false);
        }
        close(kfd);
        self[r] = 0;
        snprintf(localvia, sizeof localvia, "exec '%s' receive --key '%s' --state-dir '%s' "
                 "--policy '%s' --timeout=%d", self, onetime, state_dir, policy_path,
                 j.timeout_ms / 1000);
        via = localvia;
        key_file = onetime;
    }
    if (j.direct && via) {
        snprintf(err, sizeof err, "a direct stream needs a TCP connection to %s's agent, not %s",
                 j.host, onetime[0] ? "this host's own exec transport" : "--via");
        if (onetime[0])
            unlink(onetime);
        finish_failed(&j, err, false);
    }
    int krc = proto_load_key(key_file, psk, &psklen, e2, sizeof e2);
    if (onetime[0])
        onetime_key = onetime; /* removed once the receiver has read it */
    if (krc) {
        snprintf(err, sizeof err, "key %s: %s", key_file, e2);
        finish_failed(&j, err, false);
    }

    struct sigaction sa = {.sa_handler = on_cancel};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (mig_connect(j.host, port, via, j.timeout_ms, &j.fd, &j.transport, e2, sizeof e2)) {
        finish_failed(&j, e2, false);
    }
    cancel_fd = j.fd;
    cancel_pid = j.transport;
    proto_init(&j.conn, j.fd, j.fd, j.timeout_ms);
    if (proto_handshake_client(&j.conn, psk, psklen, j.myhost, e2, sizeof e2)) {
        snprintf(err, sizeof err, "%s: %s", j.host, e2);
        finish_failed(&j, err, false);
    }
    if (onetime_key) {
        unlink(onetime_key); /* the receiver has proved it read it */
        onetime_key = NULL;
    }

    /* ---- stage 1: reservation ---- */
    set_stage(&j, STAGE_RESERVE);
    struct strbuf req = {0}, stext = {0}, neutral = {0};
    char bootid[64], *native = NULL, alg[32] = "";
    int type;
    uint8_t *pl = NULL;
    uint32_t len;
    mig_boot_id(bootid, sizeof bootid);
    kv_add(&req, "name", "%s", j.dom.name);
    kv_add(&req, "uuid", "%s", j.dom.uuid);
    kv_add(&req, "domid", "%u", j.dom.domid);
    kv_add(&req, "memory_kib", "%llu", (unsigned long long)j.dom.mem_kib);
    kv_add(&req, "vcpus", "%u", j.dom.vcpus);
    kv_add(&req, "backend", "%s", j.eng->name);
    kv_add(&req, "algorithms", "%s", j.eng->algorithms);
    kv_add(&req, "algorithm", "%s", algorithm);
    if (j.direct)
        kv_add(&req, "stream", "direct");
    kv_add(&req, "source_host", "%s", j.myhost);
    kv_add(&req, "boot_id", "%s", bootid);
    /* names the migration for a post-copy recovery */
    if (!pcrec_id_new(j.mig_id))
        kv_add(&req, "migration", "%s", j.mig_id);
    state_format(&st, &stext);
    kv_add(&req, "state", "%s", stext.s ? stext.s : "");
    if (guest_raw[0])
        kv_add(&req, "guest_hold", "%s", guest_raw);
    for (int i = 0; i < st.npeers; i++)
        kv_add(&req, "peer", "%s", st.peers[i]);
    sb_free(&stext);
    if (proto_send(&j.conn, MSG_MIG_REQ, req.s, (uint32_t)req.len)) {
        snprintf(err, sizeof err, "%s: sending the request failed", j.host);
        finish_failed(&j, err, false);
    }
    sb_free(&req);
    if (expect(&j, MSG_REQ_OK, MSG_REQ_FAIL, &type, &pl, &len, err, sizeof err))
        finish_failed(&j, err, false);
    if (type == MSG_REQ_FAIL) {
        char code[32] = "", reason[300] = "";
        kv_get(pl, len, "code", code, sizeof code);
        kv_get(pl, len, "reason", reason, sizeof reason);
        snprintf(err, sizeof err, "%s refused (%s): %s", j.host, code, reason);
        free(pl);
        finish_failed(&j, err, false);
    }
    kv_get(pl, len, "algorithm", alg, sizeof alg);
    char stream[16] = "", stream_port[16] = "", stream_token[DSTREAM_TOKEN_HEX + 1] = "";
    kv_get(pl, len, "stream", stream, sizeof stream);
    kv_get(pl, len, "stream_port", stream_port, sizeof stream_port);
    kv_get(pl, len, "stream_token", stream_token, sizeof stream_token);
    free(pl);
    if (j.direct && strcmp(stream, "direct")) {
        snprintf(err, sizeof err, "%s did not offer a direct stream (an agent without it)", j.host);
        fail_here(&j, err, sizeof err, NULL, true);
    }
    if (strcmp(alg, algorithm)) {
        /* an agent that ignores the request's algorithm= chose for itself */
        snprintf(err, sizeof err, "%s chose %s, not %s", j.host, alg[0] ? alg : "nothing",
                 algorithm);
        fail_here(&j, err, sizeof err, NULL, true);
    }
    strlcpy0(j.algo, alg, sizeof j.algo);
    j.live = strcmp(alg, "stopcopy") != 0;
    j.sock = !strcmp(alg, "postcopy");
    snprintf(e2, sizeof e2, "algorithm=%s", j.algo);
    progress_line(&j, e2);
    test_delay("reserved");

    if (j.eng->get_config(j.e, j.dom.domid, &neutral, &native, e2, sizeof e2)) {
        send_abort(&j, e2);
        finish_failed(&j, e2, false);
    }
    struct strbuf cfg = {0};
    kv_add(&cfg, "config", "%s", neutral.s);
    kv_add(&cfg, "libxl_json", "%s", native);
    char *config_text = xstrdup(neutral.s ? neutral.s : "");
    sb_free(&neutral);
    free(native);
    if (proto_send(&j.conn, MSG_MIG_CFG, cfg.s, (uint32_t)cfg.len)) {
        snprintf(err, sizeof err, "%s: sending the configuration failed", j.host);
        finish_failed(&j, err, false);
    }
    sb_free(&cfg);
    if (expect(&j, MSG_CFG_OK, MSG_CFG_FAIL, &type, &pl, &len, err, sizeof err))
        finish_failed(&j, err, false);
    if (type == MSG_CFG_FAIL) {
        char reason[300] = "";
        kv_get(pl, len, "reason", reason, sizeof reason);
        snprintf(err, sizeof err, "%s refused the configuration: %s", j.host, reason);
        free(pl);
        finish_failed(&j, err, false);
    }
    free(pl);
    /* The local disks go first: the memory stream starts with every block
     * on the destination and every write mirrored. */
    int drc = disks_mirror(&j, config_text, state_dir, err, sizeof err);
    free(config_text);
    if (drc)
        fail_here(&j, err, sizeof err, NULL, true);
    if (j.sock && disks.n) {
        /* the disks switch with a suspended domain, post-copy has none */
        snprintf(err, sizeof err, "post-copy with local disks is not supported");
        fail_here(&j, err, sizeof err, NULL, true);
    }
    test_delay("disksynced");
    /* Co-migration: every member's destination has accepted it before any
     * memory moves. */
    if (sync_point("reserved", err, sizeof err))
        fail_here(&j, err, sizeof err, NULL, true);

    /* ---- stages 2 and 3: the hypervisor's stream ---- */
    peer.psk = psk, peer.psklen = psklen, peer.port = port, peer.via = via;
    peer.stream_started = true;
    /* Post-copy needs a socket: QEMU's return path comes back on it. */
    int pfd[2];
    if (j.direct) {
        /* QEMU writes to the destination's QEMU itself; pfd[0] is unused */
        long v2;
        if (parse_long(stream_port, 1, 65535, &v2))
            v2 = 0;
        /* The destination waits on the control connection until the disks
         * are in sync; without disks nothing else would end that wait, as
         * a relayed stream's first chunk does. */
        if (!disks.n && proto_send(&j.conn, MSG_DISKS_SYNCED, "disks=0", 7)) {
            snprintf(err, sizeof err, "%s: sending DISKS_SYNCED failed", j.host);
            fail_here(&j, err, sizeof err, NULL, false);
        }
        if (dstream_connect(j.fd, (unsigned)v2, stream_token, j.timeout_ms, &pfd[1], e2,
                            sizeof e2)) {
            snprintf(err, sizeof err, "%s: %s", j.host, e2);
            fail_here(&j, err, sizeof err, NULL, true);
        }
        pfd[0] = -1;
        cancel_stream_fd = pfd[1];
        if (cancelled)
            shutdown(pfd[1], SHUT_RDWR);
        /* QEMU's stream starts once the destination's QEMU reads it:
         * where the engine can, it waits itself once it is set up. */
        if (j.eng->set_stream_gate)
            j.eng->set_stream_gate(j.e, direct_stream_gate, &j);
        else if (dstream_wait_ready(pfd[1], j.timeout_ms, e2, sizeof e2)) {
            close(pfd[1]);
            cancel_stream_fd = -1;
            snprintf(err, sizeof err, "%s: %s", j.host, cancelled ? "cancelled" : e2);
            fail_here(&j, err, sizeof err, NULL, true);
        }
    } else if (j.sock ? socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pfd) : pipe2(pfd, O_CLOEXEC)) {
        snprintf(err, sizeof err, "%s: %s", j.sock ? "socketpair" : "pipe", strerror(errno));
        finish_failed(&j, err, false);
    }
    if (!j.sock && !j.direct)
        fcntl(pfd[0], F_SETPIPE_SZ, PROTO_CHUNK_MAX);
    j.pipe_r = pfd[0];
    xcs_init(&j.xcs);
    j.stage = j.live ? STAGE_PRECOPY : STAGE_STOPCOPY;
    progress_line(&j, j.live ? "round=1" : NULL);
    j.qemu_fd = pfd[1];
    pthread_t monitor;
    keepalive_stage = j.stage;
    keepalive_job = &j;
    if (!j.direct)
        pthread_create(&j.pump_t, NULL, pump_main, &j);
    pthread_create(&monitor, NULL, monitor_main, &j);
    if (j.sock) {
        j.vm = &vm, j.pol = &pol, j.state_dir = state_dir, j.force = force, j.st = &st;
        j.guest_raw = guest_raw, j.rawlen = sizeof guest_raw;
        pthread_create(&j.back_t, NULL, back_main, &j);
        j.relay_up = true;
        if (j.eng->set_postcopy_recover)
            j.eng->set_postcopy_recover(j.e, postcopy_recover, &j);
    }
    int save_rc;
    if (cancelled)
        save_rc = -ECANCELED;
    else if (j.sock)
        save_rc = j.eng->save_postcopy(j.e, j.dom.domid, pfd[1], postcopy_commit, &j, &j.switched,
                                       e2, sizeof e2);
    else
        save_rc = j.eng->save(j.e, j.dom.domid, pfd[1], j.live, e2, sizeof e2);
    bool monitor_joined = false;
    if (j.direct) {
        /* the monitor reads the socket's counters: done before it closes */
        atomic_store(&monitor_stop, true);
        pthread_join(monitor, NULL);
        monitor_joined = true;
        cancel_stream_fd = -1;
        if (save_rc)
            shutdown(j.qemu_fd, SHUT_RDWR); /* the destination's QEMU sees it end */
        atomic_store(&j.sent, direct_sent(j.qemu_fd));
    }
    close(j.qemu_fd); /* after a recovery, the resumed stream's */
    j.qemu_fd = -1;
    if (j.direct && !save_rc && !cancelled) {
        /* the relay's sender says this after the last chunk */
        struct strbuf sb = {0};
        kv_add(&sb, "chunks", "0");
        kv_add(&sb, "bytes", "%llu", (unsigned long long)atomic_load(&j.sent));
        pthread_mutex_lock(&j.send_lock);
        int erc = proto_send(&j.conn, MSG_STREAM_END, sb.s, (uint32_t)sb.len);
        pthread_mutex_unlock(&j.send_lock);
        sb_free(&sb);
        if (erc) {
            j.pump_rc = erc;
            snprintf(j.pump_err, sizeof j.pump_err,
                     "the connection to %s's agent broke before the end of the stream was sent "
                     "(STREAM_END: %s)", j.host, strerror(-erc));
        }
    }
    if (save_rc && j.sock && j.pipe_r >= 0)
        shutdown(j.pipe_r, SHUT_RDWR); /* QEMU may keep its end: the pump must see an end */
    /* A recovery that gave up has joined the relay already. */
    if (!j.direct && (!j.sock || j.relay_up))
        pthread_join(j.pump_t, NULL);
    if (!monitor_joined) {
        atomic_store(&monitor_stop, true);
        pthread_join(monitor, NULL);
    }
    if (!j.final_seen)
        clock_gettime(CLOCK_MONOTONIC, &j.t_suspend);
    /* The hypervisor's own stop time where it keeps one (QEMU's STOP
     * event): polling may have seen the stop late, or not at all. */
    long long hyp_stop = !save_rc && j.eng->stop_time_ms ? j.eng->stop_time_ms(j.e) : 0;
    if (hyp_stop > 0 && (!j.stop_ms || hyp_stop < j.stop_ms)) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long ago = epoch_ms() - hyp_stop;
        long long mono = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000 - (ago > 0 ? ago : 0);
        j.t_suspend.tv_sec = (time_t)(mono / 1000);
        j.t_suspend.tv_nsec = (long)(mono % 1000) * 1000000;
        j.stop_ms = hyp_stop;
    }
    if (j.switched && (save_rc || j.pump_rc))
        switched_failed(&j, save_rc ? e2 : j.pump_err, psk, psklen, port, via);
    if (save_rc || j.pump_rc || cancelled) {
        /* Nothing is committed: the domain stays (or runs again) here.
         * Post-copy's commit without a switch left the destination unable
         * to run it (no device state), so that holds too. */
        if (j.commit_err[0])
            snprintf(err, sizeof err, "%s", j.commit_err);
        else if (cancelled)
            snprintf(err, sizeof err, "cancelled");
        else if (j.pump_rc)
            snprintf(err, sizeof err, "%s", j.pump_err);
        else if (j.back_rc)
            snprintf(err, sizeof err, "%s", j.back_err);
        else
            snprintf(err, sizeof err, "%s", e2);
        fail_here(&j, err, sizeof err, j.renamed ? j.away : NULL, true);
    }
    if (j.sock) {
        /* the destination ends the return path before it answers */
        pthread_join(j.back_t, NULL);
        j.relay_up = false;
        close(j.pipe_r);
        j.pipe_r = -1;
    }

    /* ---- stage 4: commitment (post-copy: done before the switch) ---- */
    char away[128];
    sigset_t block;
    snprintf(away, sizeof away, "%s" MIG_AWAY_SUFFIX, j.dom.name);
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    if (!atomic_load(&j.committed)) {
        set_stage(&j, STAGE_COMMIT);
        if (expect(&j, MSG_RECEIVED, MSG_RECEIVED, &type, &pl, &len, err, sizeof err) || cancelled) {
            if (cancelled)
                snprintf(err, sizeof err, "cancelled");
            fail_here(&j, err, sizeof err, NULL, true);
        }
        free(pl);
        test_delay("received");
        /* A hold that arrived while the memory was copied still wins. */
        if (check_holds(&j, &vm, &pol, state_dir, force, &st, guest_raw, sizeof guest_raw, err,
                        sizeof err)) {
            fail_here(&j, err, sizeof err, NULL, true);
        }
        /* Co-migration: nobody commits until every member's destination holds
         * its copy; a member that failed before this point takes them all back. */
        keepalive_stage = STAGE_COMMIT;
        if (sync_point("received", err, sizeof err) || cancelled) {
            keepalive_job = NULL;
            if (cancelled)
                snprintf(err, sizeof err, "cancelled");
            fail_here(&j, err, sizeof err, NULL, true);
        }
        keepalive_job = NULL;
        /* From here on the job is not cancellable: exactly one side must run it. */
        sigprocmask(SIG_BLOCK, &block, NULL);
        if (j.eng->rename(j.e, j.dom.domid, j.dom.name, away, e2, sizeof e2)) {
            fail_here(&j, e2, sizeof e2, NULL, true);
        }
        /* The disks at the commit point: after this the destination holds
         * every write, and only COMMIT lets the domain run there. */
        if (disks_switch(&j, err, sizeof err))
            fail_here(&j, err, sizeof err, away, true);
        peer.stream_started = false; /* from here on query_destination() decides */
        struct strbuf commit = {0};
        if (sync_fd >= 0)
            kv_add(&commit, "activate", "later"); /* a group resumes together */
        int crc = proto_send(&j.conn, MSG_COMMIT, commit.s, (uint32_t)commit.len);
        sb_free(&commit);
        if (crc) {
            /* COMMIT may not have left: the destination will not run it. */
            snprintf(err, sizeof err, "%s: the link failed before COMMIT was sent", j.host);
            fail_here(&j, err, sizeof err, away, false);
        }
    }
    peer.stream_started = false; /* from here on query_destination() decides */

    /* ---- stage 5: activation ---- */
    set_stage(&j, STAGE_ACTIVATE);
    test_delay("committed");
    char result[16] = "", reason[300] = "", newdomid[16] = "?", resumed[24] = "";
    int rc = 0;
    if (sync_fd >= 0) {
        /* Committed and paused there; all members resume together.  Past
         * the commit point an abort changes nothing: resume anyway. */
        rc = expect(&j, MSG_PAUSED, MSG_ACTIVATED, &type, &pl, &len, err, sizeof err);
        if (!rc && type == MSG_PAUSED) {
            free(pl);
            pl = NULL;
            char why[300];
            if (sync_point("committed", why, sizeof why))
                error_msg("%s; resuming it all the same", why);
            if (proto_send(&j.conn, MSG_RESUME, NULL, 0))
                error_msg("%s: RESUME could not be sent; it resumes by itself", j.host);
            rc = expect(&j, MSG_ACTIVATED, MSG_ACTIVATED, &type, &pl, &len, err, sizeof err);
        }
    } else {
        rc = expect(&j, MSG_ACTIVATED, MSG_ACTIVATED, &type, &pl, &len, err, sizeof err);
    }
    if (!rc) {
        kv_get(pl, len, "result", result, sizeof result);
        kv_get(pl, len, "reason", reason, sizeof reason);
        kv_get(pl, len, "domid", newdomid, sizeof newdomid);
        kv_get(pl, len, "resumed_ms", resumed, sizeof resumed);
        free(pl);
    } else {
        /* The destination went quiet after COMMIT: ask it what it did. */
        int q = query_destination(&j, psk, psklen, port, via);
        if (q == 1) {
            strlcpy0(result, "ok", sizeof result);
        } else if (q == 0) {
            strlcpy0(result, "failed", sizeof result);
            snprintf(reason, sizeof reason, "%s (it does not run the domain)", err);
        } else if (j.switched) {
            switched_failed(&j, err, psk, psklen, port, via);
        } else {
            char why[600];
            snprintf(why, sizeof why,
                     "%s after COMMIT and cannot be asked whether it runs the domain; "
                     "left suspended here as %s",
                     err, away);
            finish_failed(&j, why, true);
        }
    }
    if (strcmp(result, "ok")) {
        snprintf(err, sizeof err, "%s could not activate the domain: %s", j.host,
                 reason[0] ? reason : "no reason given");
        if (j.switched)
            switched_failed(&j, err, psk, psklen, port, via);
        fail_here(&j, err, sizeof err, away, false);
    }
    if (j.eng->destroy(j.e, j.dom.domid, e2, sizeof e2))
        error_msg("the old copy %s: %s", away, e2);
    if (j.switched)
        pcrec_source_remove(state_dir, j.dom.uuid);
    proto_send(&j.conn, MSG_DONE, NULL, 0);
    long long downtime = ms_since(&j.t_suspend);
    /* Post-copy: stopped here until it ran there, not the whole copy. */
    if (j.switched && j.stop_ms > 0 && atoll(resumed) > 0)
        downtime = atoll(resumed) > j.stop_ms ? atoll(resumed) - j.stop_ms : 0;
    long long total = ms_since(&j.t0);
    proto_wipe(&j.conn);
    close(j.fd);
    if (j.transport > 0)
        waitpid(j.transport, NULL, 0);
    j.eng->close(j.e);
    sigprocmask(SIG_UNBLOCK, &block, NULL);
    mig_run_hooks("source", j.dom.name, j.dom.uuid, j.myhost, j.host);
    char diskbytes[128] = "";
    if (disks.sent >= 0)
        snprintf(diskbytes, sizeof diskbytes, " disk_size=%lld disk_sent=%lld disk_compared=%lld",
                 disks.size, disks.sent, disks.compared);
    char recov[32] = "";
    if (j.recovered)
        snprintf(recov, sizeof recov, " postcopy_recovered=%u", j.recovered);
    printf("result ok host=%s domid=%s total_ms=%lld downtime_ms=%lld sent=%llu rounds=%u "
           "stop_ms=%lld resume_ms=%s stop_request_ms=%lld console_drain_ms=%lld algorithm=%s%s%s%s%s\n",
           j.host, newdomid, total, downtime, (unsigned long long)atomic_load(&j.sent),
           j.round ? j.round : 1, j.stop_ms, resumed[0] ? resumed : "0", j.stop_req_ms,
           j.console_drain_ms, j.algo, j.direct ? " stream=direct" : "",
           j.switched ? " postcopy=switched" : "", recov, diskbytes);
    return 0;
}

const struct applet applet_send = {
    .name = "send",
    .main = send_main,
    .summary = "source agent: live-migrate a domain to HOST's agent",
    .help = send_help,
};
