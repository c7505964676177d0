/* The QEMU migration engine: QEMU writes and reads its own migration stream
 * on a descriptor vmmig hands it over QMP (getfd + migrate "fd:NAME" /
 * migrate-incoming "fd:NAME"); vmmig carries the stream and decides the
 * commit point, exactly as with libxl.  Domains live in the run directory
 * (lib/qemudom.h). */
#define _GNU_SOURCE
#include "migengine.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "qemudom.h"
#include "directstream.h"
#include "qmp.h"

/* 7.2 caps migration at 128 MiB/s by default: lift it, vmmig's link is the limit. */
#define QEMU_MAX_BANDWIDTH "107374182400"
/* A co-migration member waiting at the stop barrier: a trickle, not 0
 * (which QEMU takes as "no limit"), so that its second pass stays open
 * and no further RAM sync runs while the guest still writes. */
#define QEMU_BARRIER_BANDWIDTH "65536"
/* Once the guest is stopped nothing is dirtied any more: whatever is left
 * goes in one go, with no further pass. */
#define QEMU_STOPPED_DOWNTIME_MS "60000"

struct mig_engine {
    mig_progress_fn *progress;
    void *progress_arg;
    /* The domain save() is migrating, and whether QEMU has stopped it:
     * is_suspended() runs in another thread and QMP serves one client. */
    atomic_uint saving_domid;
    atomic_bool saving_stopped;
    /* When QEMU stopped it, by the STOP event's own timestamp (epoch ms;
     * 0: not yet).  The event itself arrives only once stop-and-copy is
     * over when QEMU stopped the guest by itself: its migration thread
     * holds the big lock the monitor needs meanwhile. */
    atomic_llong stop_event_ms;
    /* Passed before the stream starts (set_stream_gate) */
    mig_stop_hook_fn *stream_gate;
    void *stream_gate_arg;
    /* The co-migration stop barrier (set_stop_hook): see group_stop(). */
    mig_stop_hook_fn *stop_hook;
    void *stop_hook_arg;
    /* Console input stops (set_console_hook): send's console hold. */
    void (*console_hook)(void *arg);
    void *console_hook_arg;
    enum { WAY_AUTO, WAY_BARRIER, WAY_FIRST_PASS } group_stop_way; /* VMMIG_QEMU_GROUP_STOP */
    /* The incoming domain's taps, made by prepare() (QEMU takes copies) */
    bool prepared;
    int tapfds[QEMU_MAX_VIFS];
    int ntaps;
    /* Post-copy recovery on the source (set_postcopy_recover). */
    int (*recover)(void *arg, int *fd, char *why, size_t whylen);
    void *recover_arg;
    unsigned resumes; /* fds handed over for a resume: each needs its own name */
};

static int qm_open(struct mig_engine **out, mig_progress_fn *progress, void *arg, char *err,
                   size_t errlen)
{
    struct mig_engine *e = xzalloc(sizeof *e);

    /* A bad value fails here, before anything is reserved. */
    const char *way = getenv("VMMIG_QEMU_GROUP_STOP");
    if (way && *way && strcmp(way, "auto") && strcmp(way, "barrier") &&
        strcmp(way, "first-pass")) {
        snprintf(err, errlen, "bad VMMIG_QEMU_GROUP_STOP '%s' (auto, barrier or first-pass)",
                 way);
        return -EINVAL;
    }
    e->progress = progress;
    e->progress_arg = arg;
    e->group_stop_way = !way || !*way || !strcmp(way, "auto") ? WAY_AUTO
                        : !strcmp(way, "barrier")             ? WAY_BARRIER
                                                              : WAY_FIRST_PASS;
    atomic_store(&e->saving_domid, MIG_NO_DOMID);
    *out = e;
    return 0;
}

static void qm_close(struct mig_engine *e)
{
    qemu_net_close(e->tapfds, e->ntaps);
    free(e);
}

static void fill(const struct qemu_dom *d, struct mig_dom *out)
{
    char status[32];

    memset(out, 0, sizeof *out);
    out->domid = d->domid;
    strlcpy0(out->name, d->name, sizeof out->name);
    strlcpy0(out->uuid, d->cfg.uuid, sizeof out->uuid);
    out->mem_kib = (uint64_t)d->cfg.memory_mib * 1024;
    out->vcpus = d->cfg.vcpus;
    if (qemu_dom_status(d, status, sizeof status)) {
        out->dying = true; /* no monitor: QEMU is gone or going */
        return;
    }
    out->paused = strcmp(status, "running") != 0;
    /* What libxl calls suspended: stopped for (or after) a migration. */
    out->suspended = !strcmp(status, "postmigrate") || !strcmp(status, "finish-migrate");
    out->dying = !strcmp(status, "shutdown") || !strcmp(status, "internal-error") ||
                 !strcmp(status, "guest-panicked");
}

static int qm_lookup(struct mig_engine *e, const char *what, struct mig_dom *out)
{
    struct qemu_dom d;

    (void)e;
    if (qemu_dom_find(what, &d))
        return -ENOENT;
    fill(&d, out);
    return 0;
}

static int qm_lookup_uuid(struct mig_engine *e, const char *uuid, struct mig_dom *out)
{
    struct qemu_dom d;

    (void)e;
    if (qemu_dom_find_uuid(uuid, &d))
        return -ENOENT;
    fill(&d, out);
    return 0;
}

static int qm_free_kib(struct mig_engine *e, uint64_t *kib)
{
    char *text;
    int rc;

    (void)e;
    if ((rc = read_file("/proc/meminfo", &text, NULL)))
        return rc;
    const char *p = strstr(text, "MemAvailable:");
    unsigned long long v = 0;
    rc = p && sscanf(p, "MemAvailable: %llu", &v) == 1 ? 0 : -EIO;
    *kib = v;
    free(text);
    return rc;
}

static int find(uint32_t domid, struct qemu_dom *d, char *err, size_t errlen)
{
    int rc = qemu_dom_find_domid(domid, d);
    if (rc)
        snprintf(err, errlen, "no QEMU domain with domid %u in %s", domid, qemu_run_dir());
    return rc;
}

static int connect_dom(const struct qemu_dom *d, struct qmp **q, char *err, size_t errlen)
{
    char path[600], why[300];
    int rc;

    qemu_dom_path(d, "qmp.sock", path, sizeof path);
    rc = qmp_connect(q, path, QMP_TIMEOUT_MS, why, sizeof why);
    if (rc)
        snprintf(err, errlen, "domain %s: %s", d->name, why);
    return rc;
}

static int qm_get_config(struct mig_engine *e, uint32_t domid, struct strbuf *neutral,
                         char **native, char *err, size_t errlen)
{
    struct qemu_dom d;
    char path[600];
    int rc;

    (void)e;
    if ((rc = find(domid, &d, err, errlen)))
        return rc;
    qemu_dom_path(&d, "domain.cfg", path, sizeof path);
    if ((rc = read_file(path, native, NULL))) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(-rc));
        return rc;
    }
    /* The same neutral keys as the Xen engine's. */
    sb_printf(neutral, "name = %s\n", d.name);
    sb_printf(neutral, "uuid = %s\n", d.cfg.uuid);
    sb_printf(neutral, "type = qemu\n");
    sb_printf(neutral, "memory_kib = %llu\n", (unsigned long long)d.cfg.memory_mib * 1024);
    sb_printf(neutral, "maxmem_kib = %llu\n", (unsigned long long)d.cfg.memory_mib * 1024);
    sb_printf(neutral, "vcpus = %u\n", d.cfg.vcpus);
    if (d.cfg.kernel[0])
        sb_printf(neutral, "kernel = %s\n", d.cfg.kernel);
    if (d.cfg.initrd[0])
        sb_printf(neutral, "ramdisk = %s\n", d.cfg.initrd);
    if (d.cfg.cmdline[0])
        sb_printf(neutral, "cmdline = %s\n", d.cfg.cmdline);
    for (int i = 0; i < d.cfg.ndisks; i++)
        sb_printf(neutral, "disk = xvd%c:%s\n", 'a' + i, d.cfg.disks[i]);
    return 0;
}

/* The vifs' taps, before the stream: a bridge missing here refuses the
 * configuration, rather than breaking the stream once QEMU starts. */
static int qm_prepare(struct mig_engine *e, const char *native, char *err, size_t errlen)
{
    struct qemu_cfg *cfg = xmalloc(sizeof *cfg);
    char why[300];
    int rc;

    qemu_net_close(e->tapfds, e->ntaps);
    e->ntaps = 0;
    if ((rc = qemu_cfg_parse(native, cfg, why, sizeof why))) {
        snprintf(err, errlen, "the configuration: %s", why);
    } else if (!(rc = qemu_net_taps(cfg->vifs, cfg->nvifs, e->tapfds, NULL, err, errlen))) {
        e->ntaps = cfg->nvifs;
        e->prepared = true;
    }
    free(cfg);
    return rc;
}

/* Post-copy's two decisions, taken by the agent from inside the follow
 * loop: the source's commit point, before the switch, and the
 * destination's "may it run here". */
struct postcopy {
    int (*commit)(void *arg); /* source */
    long after_ms;            /* switch after this much pre-copy; -1: after the first pass */
    int (*run)(void *arg);    /* destination */
    void *arg;
    bool switched, running;
};

static const char postcopy_cap[] =
    "{\"capabilities\": [{\"capability\": \"events\", \"state\": true},"
    " {\"capability\": \"postcopy-ram\", \"state\": true},"
    " {\"capability\": \"pause-before-switchover\", \"state\": false}]}";
/* Capabilities outlive a migration: a domain that arrived in post-copy
 * keeps postcopy-ram, which in a pre-copy out of it would want a return
 * path on a pipe (QEMU: "Unable to write to file: Bad file descriptor"). */
static const char events_cap[] =
    "{\"capabilities\": [{\"capability\": \"events\", \"state\": true},"
    " {\"capability\": \"postcopy-ram\", \"state\": false},"
    " {\"capability\": \"pause-before-switchover\", \"state\": false}]}";
/* A co-migration, or a pre-copy with a console hook: QEMU never switches
 * over before migrate-continue. */
static const char pause_cap[] =
    "{\"capabilities\": [{\"capability\": \"events\", \"state\": true},"
    " {\"capability\": \"postcopy-ram\", \"state\": false},"
    " {\"capability\": \"pause-before-switchover\", \"state\": true}]}";

/* A co-migration member's stop (vmmig-comigrate(1), QEMU).  The members
 * run with pause-before-switchover: none switches over before the group's
 * stop barrier lets it.  When a member's first pass is over (QEMU's
 * second RAM sync), it stops in one of two ways:
 *   barrier     its stream is cut to a trickle (no further pass, no
 *               further RAM sync), it waits at the barrier with its guest
 *               running, and on the barrier's go the engine stops the
 *               guest (QMP stop) and lifts the limit: the members stop
 *               within a QMP round trip of each other.  The migration runs
 *               with a 1 ms downtime limit so that QEMU does not stop the
 *               guest by itself first.  KVM's choice.
 *   first-pass  the engine (or QEMU, converging) stops the guest at once
 *               and it waits at the barrier stopped: QEMU 7.2 under TCG
 *               loses guest writes made while the guest runs on from a
 *               RAM sync after the first (vmmig-create(1)), so a TCG guest
 *               must not wait running; the members stop as far apart as
 *               their first passes end.
 * VMMIG_QEMU_GROUP_STOP picks one; unset or "auto": barrier on KVM,
 * first-pass on TCG. */
struct group_stop {
    bool at_barrier;    /* the barrier way */
    bool hook_done;     /* the barrier was passed */
    bool stopped_by_us; /* QMP stop: QEMU will not restart it on a failure */
    bool continued;     /* migrate-continue sent */
};

static int exec_simple(struct qmp *q, const char *cmd, const char *args, char *err, size_t errlen)
{
    return qmp_execute(q, cmd, args, -1, NULL, QMP_TIMEOUT_MS, err, errlen);
}

/* Console input stops here (set_console_hook); send's hold is taken once. */
static void console_stop(struct mig_engine *e)
{
    if (e->console_hook)
        e->console_hook(e->console_hook_arg);
}

/* Cancel and wait until QEMU has let go of the guest: it runs again unless
 * we stopped it (the caller's cont). */
static void cancel_and_settle(struct qmp *q)
{
    char e2[300];

    exec_simple(q, "migrate_cancel", NULL, e2, sizeof e2);
    for (int i = 0; i < 100; i++) {
        struct json *info = NULL;
        if (qmp_execute(q, "query-migrate", NULL, -1, &info, QMP_TIMEOUT_MS, e2, sizeof e2))
            return;
        const char *st = json_str(info, "status", "none");
        bool over = !strcmp(st, "cancelled") || !strcmp(st, "failed") ||
                    !strcmp(st, "completed") || !strcmp(st, "none");
        json_free(info);
        if (over)
            return;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
}

static int stop_guest(struct mig_engine *e, struct qmp *q, struct group_stop *gs, char *err,
                      size_t errlen)
{
    int rc = exec_simple(q, "stop", NULL, err, errlen);
    if (!rc) {
        gs->stopped_by_us = true;
        atomic_store(&e->saving_stopped, true);
    }
    return rc;
}

/* The first pass is over (or, at_preswitchover, QEMU stopped the guest
 * and waits): wait at the group's stop barrier and stop (see struct
 * group_stop).  Non-zero: the group goes back; the migration is cancelled
 * (the caller lets a guest we stopped run again). */
static int group_stop(struct mig_engine *e, struct qmp *q, struct group_stop *gs,
                      bool at_preswitchover, char *err, size_t errlen)
{
    char why[300] = "";
    int rc = 0;

    gs->hook_done = true;
    if (!at_preswitchover)
        rc = gs->at_barrier ? exec_simple(q, "migrate-set-parameters",
                                          "{\"max-bandwidth\": " QEMU_BARRIER_BANDWIDTH "}", err,
                                          errlen)
                            : stop_guest(e, q, gs, err, errlen);
    if (rc)
        goto fail;
    if (e->stop_hook(e->stop_hook_arg, why, sizeof why)) {
        snprintf(err, errlen, "%s", why[0] ? why : "the group did not let it stop");
        rc = -ECANCELED;
        goto fail;
    }
    if (at_preswitchover)
        return 0;
    /* Stop first: the group's stop skew is made here. */
    if (gs->at_barrier && (rc = stop_guest(e, q, gs, err, errlen)))
        goto fail;
    if ((rc = exec_simple(q, "migrate-set-parameters",
                          "{\"max-bandwidth\": " QEMU_MAX_BANDWIDTH
                          ", \"downtime-limit\": " QEMU_STOPPED_DOWNTIME_MS "}",
                          err, errlen)))
        goto fail;
    return 0;
fail:
    cancel_and_settle(q);
    return rc;
}

/* How a member stops (struct group_stop); auto: as its accelerator needs. */
static int group_stop_way(struct mig_engine *e, struct qmp *q, struct group_stop *gs, char *err,
                          size_t errlen)
{
    struct json *kvm = NULL;
    int rc;

    if (e->group_stop_way != WAY_AUTO) {
        gs->at_barrier = e->group_stop_way == WAY_BARRIER;
        return 0;
    }
    if ((rc = qmp_execute(q, "query-kvm", NULL, -1, &kvm, QMP_TIMEOUT_MS, err, errlen)))
        return rc;
    gs->at_barrier = json_bool(kvm, "enabled", false);
    json_free(kvm);
    return 0;
}

/* The source's switch: the agent commits, then migrate-start-postcopy.  A
 * refused commit or a failed switch cancels the migration: pre-copy never
 * stopped the guest, so it runs on here. */
static int postcopy_switch(struct mig_engine *e, struct qmp *q, struct postcopy *pc, char *err,
                           size_t errlen)
{
    char e2[300];
    struct json *info = NULL;
    int rc;

    if (pc->commit(pc->arg)) {
        exec_simple(q, "migrate_cancel", NULL, e2, sizeof e2);
        snprintf(err, errlen, "cancelled before the post-copy switch");
        return -ECANCELED;
    }
    console_stop(e); /* the device state goes with the switch */
    rc = exec_simple(q, "migrate-start-postcopy", NULL, err, errlen);
    if (!rc) {
        pc->switched = true;
        return 0;
    }
    /* A lost reply must not hide a switch that happened; a pre-copy that
     * completed meanwhile has handed everything over, committed: the same. */
    if (!qmp_execute(q, "query-migrate", NULL, -1, &info, QMP_TIMEOUT_MS, e2, sizeof e2)) {
        const char *st = json_str(info, "status", "");
        if (!strncmp(st, "postcopy", 8) || !strcmp(st, "completed"))
            pc->switched = true;
        if (!strcmp(st, "completed"))
            rc = 0;
    }
    json_free(info);
    if (!pc->switched)
        exec_simple(q, "migrate_cancel", NULL, e2, sizeof e2);
    return rc;
}

/* The first STOP event of a save: when QEMU stopped the guest, by the
 * event's own timestamp (stop_event_ms). */
static void note_stop_event(struct mig_engine *e, const struct json *ev)
{
    long long sec = json_int(ev, "timestamp.seconds", 0);
    if (sec > 0 && !atomic_load(&e->stop_event_ms))
        atomic_store(&e->stop_event_ms,
                     sec * 1000 + json_int(ev, "timestamp.microseconds", 0) / 1000);
}

/* The stop time of a completed migration whose STOP event was not read
 * yet: from the event if it is queued, else from QEMU's own downtime. */
static void note_stop_late(struct mig_engine *e, struct qmp *q, const struct json *info)
{
    struct json *ev = NULL;
    char err[200];

    while (!atomic_load(&e->stop_event_ms) && !qmp_next_event(q, &ev, 0, err, sizeof err) && ev) {
        if (!strcmp(json_str(ev, "event", ""), "STOP"))
            note_stop_event(e, ev);
        json_free(ev);
        ev = NULL;
    }
    long long downtime = json_int(info, "downtime", -1);
    if (!atomic_load(&e->stop_event_ms) && downtime >= 0)
        atomic_store(&e->stop_event_ms, epoch_ms() - downtime);
}

/* Follow a migration until QEMU says completed or failed: from MIGRATION
 * events, with query-migrate every 100 ms for progress (and in case an
 * event was missed).  Source side: STOP marks the switchover, and the RAM
 * sync count is the pre-copy round.  With pc, post-copy: the source
 * switches once the first pass is over (the second RAM sync), the
 * destination runs the domain once QEMU is in postcopy-active. */
static int follow_migration(struct mig_engine *e, struct qmp *q, bool source,
                            struct postcopy *pc, struct group_stop *gs, char *err, size_t errlen)
{
    unsigned last_round = 0;
    bool commit_asked = false, continued = false;
    struct timespec t0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* After an event, only what is queued already is drained (0 ms) before
     * query-migrate: waiting 100 ms for a next one made every completion
     * 100 ms late (bench/migrate-qemu). */
    int wait_ms = 100;
    for (;;) {
        struct json *ev = NULL, *info = NULL;
        int rc = qmp_next_event(q, &ev, wait_ms, err, errlen);
        if (rc && rc != -ETIMEDOUT)
            return rc;
        if (ev) {
            const char *name = json_str(ev, "event", "");
            if (source && !strcmp(name, "STOP")) {
                atomic_store(&e->saving_stopped, true);
                note_stop_event(e, ev);
            }
            /* The second RAM sync ends the first pass: switch at once.
             * Every further pass is one more chance for QEMU 7.2's TCG
             * dirty-tracking defect (vmmig-create(1)) to lose a write. */
            bool pass_over = !strcmp(name, "MIGRATION_PASS") && json_int(ev, "data.pass", 0) >= 2;
            json_free(ev);
            if (source && gs && !gs->hook_done && pass_over &&
                (rc = group_stop(e, q, gs, false, err, errlen)))
                return rc;
            if (source && pc && !commit_asked && pass_over && pc->after_ms < 0) {
                commit_asked = true;
                if ((rc = postcopy_switch(e, q, pc, err, errlen)))
                    return rc;
            }
            wait_ms = 0;
            continue; /* drain the queue before asking */
        }
        wait_ms = 100;
        rc = qmp_execute(q, "query-migrate", NULL, -1, &info, QMP_TIMEOUT_MS, err, errlen);
        if (rc)
            return rc;
        const char *status = json_str(info, "status", "none");
        if (!strcmp(status, "completed")) {
            if (source && !atomic_load(&e->stop_event_ms))
                note_stop_late(e, q, info);
            json_free(info);
            return 0;
        }
        if (gs && !strcmp(status, "pre-switchover")) {
            json_free(info);
            /* QEMU stopped it first: the barrier still holds the switch. */
            if (!gs->hook_done && (rc = group_stop(e, q, gs, true, err, errlen)))
                return rc;
            if (!gs->continued) {
                if ((rc = exec_simple(q, "migrate-continue", "{\"state\": \"pre-switchover\"}",
                                      err, errlen)))
                    return rc;
                gs->continued = true;
            }
            continue;
        }
        if (!strcmp(status, "pre-switchover")) {
            /* A pre-copy paused for its console hook: the guest is stopped,
             * QEMU still takes console input (into the guest's buffers,
             * which go with its memory), the device state not sent yet. */
            json_free(info);
            if (!continued) {
                console_stop(e);
                if ((rc = exec_simple(q, "migrate-continue", "{\"state\": \"pre-switchover\"}",
                                      err, errlen)))
                    return rc;
                continued = true;
            }
            continue;
        }
        if (!strcmp(status, "failed") || !strcmp(status, "cancelled")) {
            snprintf(err, errlen, "QEMU's migration %s: %s", status,
                     json_str(info, "error-desc", "no reason given"));
            json_free(info);
            return -EIO;
        }
        if (!strcmp(status, "postcopy-paused")) {
            /* QEMU keeps both halves: the source resumes into a fresh
             * stream once the agent has one whose far end is listening
             * (migrate-recover there). */
            json_free(info);
            char why[300] = "no recovery on this side";
            int fd = -1;
            if (source && pc && e->recover && !e->recover(e->recover_arg, &fd, why, sizeof why)) {
                char name[32], args[96];
                snprintf(name, sizeof name, "vmmig-resume%u", ++e->resumes);
                snprintf(args, sizeof args, "{\"uri\": \"fd:%s\", \"resume\": true}", name);
                if ((rc = qmp_getfd(q, fd, name, err, errlen)) ||
                    (rc = exec_simple(q, "migrate", args, err, errlen)))
                    return rc;
                continue;
            }
            snprintf(err, errlen, "post-copy broke off (QEMU: postcopy-paused): the stream "
                     "between the hosts ended after the switch; %s", why);
            return -EIO;
        }
        unsigned round = (unsigned)json_int(info, "ram.dirty-sync-count", 0);
        if (gs && !gs->hook_done && round >= 2 && !strcmp(status, "active")) {
            json_free(info); /* the pass event was missed */
            if ((rc = group_stop(e, q, gs, false, err, errlen)))
                return rc;
            continue;
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (long)(now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
        bool due = pc && (pc->after_ms >= 0 ? ms >= pc->after_ms : round >= 2);
        if (source && pc && !commit_asked && due &&
            (!strcmp(status, "active") || !strcmp(status, "setup"))) {
            commit_asked = true;
            json_free(info);
            if ((rc = postcopy_switch(e, q, pc, err, errlen)))
                return rc;
            continue;
        }
        if (!source && pc && !pc->running && !strcmp(status, "postcopy-active")) {
            json_free(info);
            if (pc->run(pc->arg)) {
                snprintf(err, errlen, "the source switched to post-copy without a commit");
                return -EPROTO;
            }
            /* It is this host's now: whatever fails from here (a cont
             * that times out while the link is silent and QEMU waits for
             * pages) leaves it kept, paused, for a recovery, never
             * removed.  Still loading the device state, cont only sets
             * autostart: either way it runs as soon as QEMU can. */
            pc->running = true;
            if ((rc = exec_simple(q, "cont", NULL, err, errlen)))
                return rc;
            continue;
        }
        if (source && e->progress && round && round != last_round &&
            !atomic_load(&e->saving_stopped)) {
            last_round = round;
            e->progress(e->progress_arg, round, false,
                        (unsigned long)json_int(info, "ram.transferred", 0) / 4096,
                        (unsigned long)json_int(info, "ram.total", 0) / 4096);
        }
        json_free(info);
    }
}

static int save_common(struct mig_engine *e, uint32_t domid, int fd, bool live,
                       struct postcopy *pc, char *err, size_t errlen)
{
    struct qemu_dom d;
    struct qmp *q = NULL;
    struct strbuf params = {0};
    bool stopped_by_us = false;
    const char *downtime = getenv("VMMIG_QEMU_DOWNTIME_MS");
    /* In a co-migration (never post-copy: send refuses it) */
    struct group_stop group = {0}, *gs = e->stop_hook && !pc ? &group : NULL;
    int rc;

    if ((rc = find(domid, &d, err, errlen)))
        return rc;
    if ((rc = connect_dom(&d, &q, err, errlen)))
        return rc;
    atomic_store(&e->saving_stopped, false);
    atomic_store(&e->stop_event_ms, 0);
    atomic_store(&e->saving_domid, domid);
    if ((rc = exec_simple(q, "migrate-set-capabilities",
                          pc                           ? postcopy_cap
                          : gs || (live && e->console_hook) ? pause_cap
                                                            : events_cap,
                          err, errlen)))
        goto out;
    /* $VMMIG_QEMU_MAX_BANDWIDTH (bytes/s) throttles the stream: on a
     * shared link, and for the tests that must act in the middle of one. */
    const char *bw = getenv("VMMIG_QEMU_MAX_BANDWIDTH");
    char *bwend = NULL;
    long long bwv = bw && *bw ? strtoll(bw, &bwend, 10) : 0;
    if (bw && *bw && (*bwend || bwv < 1024 * 1024)) {
        snprintf(err, errlen, "bad VMMIG_QEMU_MAX_BANDWIDTH '%.32s' (bytes per second, at least "
                              "1048576)", bw);
        rc = -EINVAL;
        goto out;
    }
    /* both phases; parameters outlive a migration, so each is set every
     * time (max-postcopy-bandwidth 0: no limit) */
    if (bwv)
        sb_printf(&params, "{\"max-bandwidth\": %lld, \"max-postcopy-bandwidth\": %lld", bwv,
                  bwv);
    else
        sb_printf(&params, "{\"max-bandwidth\": " QEMU_MAX_BANDWIDTH
                           ", \"max-postcopy-bandwidth\": 0");
    if (gs && live && (rc = group_stop_way(e, q, gs, err, errlen)))
        goto out;
    if (gs && gs->at_barrier && live) {
        /* QEMU must not stop it before the barrier (struct group_stop) */
        sb_printf(&params, ", \"downtime-limit\": 1");
    } else if (pc) {
        /* Post-copy switches after the first pass; a pre-copy that
         * converged before that would make it a plain pre-copy. */
        sb_printf(&params, ", \"downtime-limit\": 1");
    } else if (downtime && *downtime) {
        /* A downtime limit the guest's dirty rate fits in converges after
         * one pass: see vmmig-create(1) on QEMU 7.2's multi-pass TCG defect. */
        sb_printf(&params, ", \"downtime-limit\": %ld", strtol(downtime, NULL, 10));
    }
    sb_printf(&params, "}");
    if ((rc = exec_simple(q, "migrate-set-parameters", params.s, err, errlen)))
        goto out;
    if (e->stream_gate) {
        char why[300] = "";
        if ((rc = e->stream_gate(e->stream_gate_arg, why, sizeof why))) {
            snprintf(err, errlen, "%s", why[0] ? why : "the stream could not start");
            rc = rc < 0 ? rc : -EIO;
            goto out;
        }
    }
    if (!live) {
        /* Stop-and-copy: the guest stops first, then one pass; in a
         * group, once every member is ready to. */
        char why[300] = "";
        if (gs) {
            gs->hook_done = true; /* before the migration: nothing to cancel */
            if (e->stop_hook(e->stop_hook_arg, why, sizeof why)) {
                snprintf(err, errlen, "%s", why[0] ? why : "the group did not let it stop");
                rc = -ECANCELED;
                goto out;
            }
        }
        if ((rc = exec_simple(q, "stop", NULL, err, errlen)))
            goto out;
        stopped_by_us = true;
        atomic_store(&e->saving_stopped, true);
        console_stop(e);
    }
    if ((rc = qmp_getfd(q, fd, "vmmig-out", err, errlen)))
        goto out;
    if ((rc = exec_simple(q, "migrate", "{\"uri\": \"fd:vmmig-out\"}", err, errlen)))
        goto out;
    rc = follow_migration(e, q, true, pc, gs, err, errlen);
    if (!rc && e->progress)
        e->progress(e->progress_arg, 0, true, 0, 0);
out:
    if (gs && gs->stopped_by_us)
        stopped_by_us = true;
    if (rc && stopped_by_us) {
        char e2[200];
        exec_simple(q, "cont", NULL, e2, sizeof e2);
    }
    /* After a switch the guest is stopped here for good. */
    if (rc && !(pc && pc->switched))
        atomic_store(&e->saving_stopped, false);
    atomic_store(&e->saving_domid, MIG_NO_DOMID);
    sb_free(&params);
    qmp_close(q);
    return rc;
}

static int qm_save(struct mig_engine *e, uint32_t domid, int fd, bool live, char *err,
                   size_t errlen)
{
    return save_common(e, domid, fd, live, NULL, err, errlen);
}

static int qm_save_postcopy(struct mig_engine *e, uint32_t domid, int fd,
                            int (*commit)(void *arg), void *arg, bool *switched, char *err,
                            size_t errlen)
{
    /* When to switch: after the first pass, or VMMIG_QEMU_POSTCOPY_AFTER_MS
     * of pre-copy (0: at once, what the tests use on TCG, see vmmig-send(8)). */
    const char *after = getenv("VMMIG_QEMU_POSTCOPY_AFTER_MS");
    long after_ms = -1;
    if (after && *after && parse_long(after, 0, 86400000L, &after_ms)) {
        snprintf(err, errlen, "bad VMMIG_QEMU_POSTCOPY_AFTER_MS '%s' (milliseconds, 0-86400000)",
                 after);
        return -EINVAL;
    }
    struct postcopy pc = {.commit = commit, .arg = arg, .after_ms = after_ms};
    int rc = save_common(e, domid, fd, true, &pc, err, errlen);
    *switched = pc.switched;
    return rc;
}

static void qm_set_postcopy_recover(struct mig_engine *e,
                                    int (*fn)(void *arg, int *fd, char *why, size_t whylen),
                                    void *arg)
{
    e->recover = fn;
    e->recover_arg = arg;
}

/* A post-copy whose agent died after the switch: its QEMU sees the
 * stream gone (postcopy-paused) when it next writes or reads it.  From
 * here the follow loop asks the hook for a new stream, as in the agent
 * that died. */
static int qm_resume_postcopy(struct mig_engine *e, uint32_t domid, int wait_ms, char *status,
                              size_t statuslen, char *err, size_t errlen)
{
    struct qemu_dom d;
    struct qmp *q = NULL;
    struct json *info = NULL;
    long long until = epoch_ms() + wait_ms;
    int rc;

    status[0] = 0;
    if ((rc = find(domid, &d, err, errlen)))
        return rc;
    if ((rc = connect_dom(&d, &q, err, errlen)))
        return rc;
    for (;;) {
        if ((rc = qmp_execute(q, "query-migrate", NULL, -1, &info, QMP_TIMEOUT_MS, err, errlen)))
            goto out;
        snprintf(status, statuslen, "%s", json_str(info, "status", "none"));
        json_free(info);
        info = NULL;
        if (strcmp(status, "postcopy-active") || epoch_ms() >= until)
            break;
        nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
    }
    if (strcmp(status, "postcopy-paused")) {
        snprintf(err, errlen, "%s: no post-copy waits for its stream here (QEMU's migration: %s)",
                 d.name, status);
        rc = -EINVAL;
        goto out;
    }
    if (!e->recover) {
        snprintf(err, errlen, "%s: no recovery hook", d.name);
        rc = -EINVAL;
        goto out;
    }
    atomic_store(&e->saving_domid, domid);
    atomic_store(&e->saving_stopped, true); /* switched: stopped here for good */
    /* switched already: the loop neither asks for a commit nor switches */
    struct postcopy pc = {.after_ms = LONG_MAX, .switched = true};
    rc = follow_migration(e, q, true, &pc, NULL, err, errlen);
    atomic_store(&e->saving_domid, MIG_NO_DOMID);
out:
    qmp_close(q);
    return rc;
}

/* ---- post-copy recovery on the destination ----
 * Once a destination's stream breaks, a vCPU or a device waiting for a
 * missing page can block QEMU's main thread, and with it every monitor
 * command but the out-of-band ones, and a monitor's negotiation too (QEMU's
 * docs/devel/migration/postcopy.rst, "Postcopy recovery").  So before the
 * stream starts a keeper process negotiates out-of-band mode on rqmp.sock
 * and waits on rctl.sock: "recover URI\n" there runs migrate-recover with
 * exec-oob and answers "ok" or "error WHY".  It outlives the agent (a
 * fresh agent takes the RECOVER) and ends with the migration or QEMU.
 * migrate-recover listens on a unix socket (rin.sock): its accept runs in
 * the monitor's thread, where an fd: URI's getfd would need the main one. */

static void keeper_answer(int c, struct qmp *q)
{
    char line[700], err[400], reply[480];
    size_t n = 0;

    /* one short line, within a few seconds */
    while (n < sizeof line - 1) {
        struct pollfd p = {.fd = c, .events = POLLIN};
        if (poll(&p, 1, 5000) <= 0)
            return;
        ssize_t r = read(c, line + n, 1);
        if (r <= 0)
            return;
        if (line[n] == '\n')
            break;
        n++;
    }
    line[n] = 0;
    if (strncmp(line, "recover unix:", 13) || strpbrk(line + 8, "\"\\")) {
        snprintf(reply, sizeof reply, "error bad request\n");
    } else {
        char args[700];
        snprintf(args, sizeof args, "{\"uri\": \"%s\"}", line + 8);
        if (qmp_execute_oob(q, "migrate-recover", args, NULL, QMP_TIMEOUT_MS, err, sizeof err))
            snprintf(reply, sizeof reply, "error %s\n", err);
        else
            snprintf(reply, sizeof reply, "ok\n");
    }
    if (write(c, reply, strlen(reply)) < 0) {
        /* the agent went away: it learns nothing more */
    }
}

static _Noreturn void keeper_main(const char *dir)
{
    char qpath[600], cpath[600], err[300];
    struct qmp *q = NULL;
    int ls = -1;

    snprintf(qpath, sizeof qpath, "%s/rqmp.sock", dir);
    snprintf(cpath, sizeof cpath, "%s/rctl.sock", dir);
    if (qmp_connect_oob(&q, qpath, QMP_TIMEOUT_MS, err, sizeof err))
        _exit(1);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(cpath) >= sizeof sa.sun_path)
        _exit(1);
    strcpy(sa.sun_path, cpath);
    ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    unlink(cpath);
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 4))
        _exit(1);
    chmod(cpath, 0600);
    for (;;) {
        struct pollfd p[2] = {{.fd = ls, .events = POLLIN}, {.fd = qmp_fd(q), .events = POLLIN}};
        if (poll(p, 2, -1) < 0)
            continue;
        if (p[1].revents) {
            /* events: the migration's end ends the keeper; so does QEMU's */
            struct json *ev = NULL;
            int rc;
            while (!(rc = qmp_next_event(q, &ev, 0, err, sizeof err))) {
                bool over = !strcmp(json_str(ev, "event", ""), "MIGRATION") &&
                            (!strcmp(json_str(ev, "data.status", ""), "completed") ||
                             !strcmp(json_str(ev, "data.status", ""), "failed"));
                json_free(ev);
                if (over)
                    goto out;
            }
            if (rc != -ETIMEDOUT)
                goto out;
        }
        if (p[0].revents & POLLIN) {
            int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0) {
                keeper_answer(c, q);
                close(c);
            }
        }
    }
out:
    unlink(cpath);
    _exit(0);
}

/* Start the keeper of d (a double fork: it is nobody's child to wait for)
 * and wait until it listens. */
static int keeper_start(const struct qemu_dom *d, char *err, size_t errlen)
{
    char cpath[600];
    int st;

    qemu_dom_path(d, "rctl.sock", cpath, sizeof cpath);
    unlink(cpath);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        return -errno;
    }
    if (!pid) {
        /* Nothing of the agent's: its connection must end when it does. */
        setsid();
        int nul = open("/dev/null", O_RDWR);
        for (int fd = 0; fd < 3; fd++)
            dup2(nul, fd);
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        signal(SIGTERM, SIG_DFL);
        signal(SIGPIPE, SIG_IGN);
        if (fork() == 0)
            keeper_main(d->dir);
        _exit(0);
    }
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    for (int i = 0; i < 100; i++) {
        struct stat sb;
        if (!stat(cpath, &sb))
            return 0;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    snprintf(err, errlen, "the post-copy recovery keeper of %s did not start", d->name);
    return -EIO;
}

/* A line-based request to the keeper: 0 and its answer, or -errno. */
static int keeper_ask(const struct qemu_dom *d, const char *req, char *ans, size_t anslen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char path[600];
    size_t n = 0;
    int c, rc = 0;

    qemu_dom_path(d, "rctl.sock", path, sizeof path);
    if (strlen(path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0)
        return -errno;
    if (connect(c, (struct sockaddr *)&sa, sizeof sa) ||
        write(c, req, strlen(req)) != (ssize_t)strlen(req)) {
        rc = -errno;
        goto out;
    }
    while (n < anslen - 1) {
        struct pollfd p = {.fd = c, .events = POLLIN};
        if (poll(&p, 1, QMP_TIMEOUT_MS + 2000) <= 0) {
            rc = -ETIMEDOUT;
            goto out;
        }
        ssize_t r = read(c, ans + n, 1);
        if (r <= 0 || ans[n] == '\n')
            break;
        n++;
    }
    ans[n] = 0;
out:
    close(c);
    return rc;
}

/* Does QEMU still listen on d's monitor?  (A killed QEMU may linger as a
 * zombie its parent has not reaped: its pid answers, its sockets do not.) */
static bool monitor_listens(const struct qemu_dom *d)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char path[600];

    qemu_dom_path(d, "status.sock", path, sizeof path);
    if (strlen(path) >= sizeof sa.sun_path)
        return true; /* cannot tell: let the keeper say */
    strcpy(sa.sun_path, path);
    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0)
        return true;
    bool ok = !connect(c, (struct sockaddr *)&sa, sizeof sa);
    close(c);
    return ok;
}

static int qm_recover_postcopy(struct mig_engine *e, uint32_t domid,
                               int (*ready)(void *arg, int fd), void *arg, char *err,
                               size_t errlen)
{
    struct qemu_dom d;
    struct qmp *q = NULL;
    char in[600], req[700], ans[500];
    int rc, fd = -1;

    if ((rc = find(domid, &d, err, errlen)))
        return rc;
    if ((d.pid > 0 && kill(d.pid, 0)) || !monitor_listens(&d)) {
        snprintf(err, errlen, "%s (domid %u) is gone: its QEMU does not run", d.name, domid);
        return -ESRCH;
    }
    qemu_dom_path(&d, "rin.sock", in, sizeof in);
    unlink(in);
    snprintf(req, sizeof req, "recover unix:%s\n", in);
    rc = keeper_ask(&d, req, ans, sizeof ans);
    if (rc == -ENOENT || rc == -ECONNREFUSED) {
        /* the keeper ends with the migration */
        snprintf(err, errlen, "%s is not waiting for a post-copy recovery (no post-copy of it is "
                 "unfinished here)", d.name);
        return -EINVAL;
    }
    if (rc) {
        snprintf(err, errlen, "%s's post-copy recovery keeper: %s", d.name, strerror(-rc));
        return rc;
    }
    if (strcmp(ans, "ok")) {
        bool unpaused = strstr(ans, "paused") != NULL;
        snprintf(err, errlen, "%s%s", unpaused ? "" : "migrate-recover: ",
                 !strncmp(ans, "error ", 6) ? ans + 6 : ans);
        if (unpaused)
            snprintf(err, errlen, "%s is not waiting for a post-copy recovery (QEMU: %s)", d.name,
                     !strncmp(ans, "error ", 6) ? ans + 6 : ans);
        return unpaused ? -EINVAL : -EIO;
    }
    /* QEMU listens: our end of its new channel */
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, in);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        rc = -errno;
        snprintf(err, errlen, "connecting to %s: %s", in, strerror(errno));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    unlink(in);
    if (ready(arg, fd)) {
        snprintf(err, errlen, "the recovery of %s was given up", d.name);
        return -ECANCELED;
    }
    /* The main thread answers again once the pages flow. */
    qemu_dom_path(&d, "qmp.sock", in, sizeof in);
    if ((rc = qmp_connect(&q, in, 60000, err, errlen)))
        return rc;
    struct postcopy pc = {.after_ms = -1, .running = true};
    rc = follow_migration(e, q, false, &pc, NULL, err, errlen);
    /* The first agent's cont may not have reached QEMU (it broke off
     * before QEMU answered): it runs once every page is here. */
    struct json *st = NULL;
    if (!rc && !qmp_execute(q, "query-status", NULL, -1, &st, QMP_TIMEOUT_MS, err, errlen) &&
        !json_bool(st, "running", true))
        rc = exec_simple(q, "cont", NULL, err, errlen);
    json_free(st);
    qmp_close(q);
    return rc;
}

static void qm_set_stop_hook(struct mig_engine *e, mig_stop_hook_fn *fn, void *arg)
{
    e->stop_hook = fn;
    e->stop_hook_arg = arg;
}

static void qm_set_stream_gate(struct mig_engine *e, mig_stop_hook_fn *fn, void *arg)
{
    e->stream_gate = fn;
    e->stream_gate_arg = arg;
}

static long long qm_stop_time_ms(struct mig_engine *e)
{
    return atomic_load(&e->stop_event_ms);
}

static void qm_set_console_hook(struct mig_engine *e, void (*fn)(void *arg), void *arg)
{
    e->console_hook = fn;
    e->console_hook_arg = arg;
}

static int qm_is_suspended(struct mig_engine *e, uint32_t domid)
{
    struct qemu_dom d;
    char status[32];
    int rc;

    if (atomic_load(&e->saving_domid) == domid)
        return atomic_load(&e->saving_stopped) ? 1 : 0;
    if ((rc = qemu_dom_find_domid(domid, &d)))
        return rc;
    if ((rc = qemu_dom_status(&d, status, sizeof status)))
        return rc;
    return !strcmp(status, "postmigrate") || !strcmp(status, "finish-migrate");
}

static int run_cont(uint32_t domid, const char *what, char *err, size_t errlen)
{
    struct qemu_dom d;
    struct qmp *q;
    char why[300];
    int rc;

    if ((rc = find(domid, &d, err, errlen)))
        return rc;
    if ((rc = connect_dom(&d, &q, err, errlen)))
        return rc;
    rc = exec_simple(q, "cont", NULL, why, sizeof why);
    if (rc)
        snprintf(err, errlen, "%s %s: %s", what, d.name, why);
    qmp_close(q);
    return rc;
}

static int qm_resume(struct mig_engine *e, uint32_t domid, char *err, size_t errlen)
{
    struct qemu_dom d;
    struct qmp *q;
    struct json *info = NULL;
    char why[300];
    int rc;

    (void)e;
    if ((rc = find(domid, &d, err, errlen)))
        return rc;
    /* An agent killed mid-migration leaves QEMU's migration behind (at
     * pre-switchover it never ends, and cont is refused): cancel it. */
    if ((rc = connect_dom(&d, &q, err, errlen)))
        return rc;
    if (!qmp_execute(q, "query-migrate", NULL, -1, &info, QMP_TIMEOUT_MS, why, sizeof why)) {
        const char *st = json_str(info, "status", "none");
        if (!strcmp(st, "setup") || !strcmp(st, "active") || !strcmp(st, "pre-switchover") ||
            !strcmp(st, "device") || !strcmp(st, "cancelling"))
            cancel_and_settle(q);
    }
    json_free(info);
    qmp_close(q);
    return run_cont(domid, "resuming", err, errlen);
}

static int restore_common(struct mig_engine *e, const char *native, const char *name, int fd,
                          struct postcopy *pc, uint32_t *domid, char *err, size_t errlen)
{
    struct qemu_dom d;
    struct qmp *q = NULL;
    int rc;

    *domid = MIG_NO_DOMID;
    rc = qemu_dom_start(native, name, true, e->prepared ? e->tapfds : NULL, &d, err, errlen);
    /* QEMU has its own copies now, or failed: either way ours go */
    qemu_net_close(e->tapfds, e->ntaps);
    e->ntaps = 0;
    e->prepared = false;
    if (d.domid)
        *domid = d.domid; /* the caller removes what exists */
    if (rc)
        return rc;
    if ((rc = connect_dom(&d, &q, err, errlen)))
        goto out;
    /* post-copy-ram before migrate-incoming, as QEMU wants it */
    if ((rc = exec_simple(q, "migrate-set-capabilities", pc ? postcopy_cap : events_cap, err,
                          errlen)))
        goto out;
    if (pc && (rc = keeper_start(&d, err, errlen)))
        goto out;
    if ((rc = qmp_getfd(q, fd, "vmmig-in", err, errlen)))
        goto out;
    if ((rc = exec_simple(q, "migrate-incoming", "{\"uri\": \"fd:vmmig-in\"}", err, errlen)))
        goto out;
    /* A direct stream's source waits for this (directstream.h) */
    if ((rc = dstream_signal_ready(fd))) {
        snprintf(err, errlen, "telling the source the direct stream is ready: %s", strerror(-rc));
        goto out;
    }
    /* QEMU exits when an incoming stream breaks (before a post-copy
     * switch): that is an EOF here. */
    rc = follow_migration(e, q, false, pc, NULL, err, errlen);
out:
    qmp_close(q);
    return rc;
}

static int qm_restore(struct mig_engine *e, const char *native, const char *name, int fd,
                      uint32_t *domid, char *err, size_t errlen)
{
    return restore_common(e, native, name, fd, NULL, domid, err, errlen);
}

static int qm_restore_postcopy(struct mig_engine *e, const char *native, const char *name,
                               int fd, int (*run)(void *arg), void *arg, uint32_t *domid,
                               bool *running, char *err, size_t errlen)
{
    struct postcopy pc = {.run = run, .arg = arg, .after_ms = -1};
    int rc = restore_common(e, native, name, fd, &pc, domid, err, errlen);
    *running = pc.running;
    return rc;
}

static int qm_unpause(struct mig_engine *e, uint32_t domid, char *err, size_t errlen)
{
    (void)e;
    return run_cont(domid, "unpausing", err, errlen);
}

static int qm_rename(struct mig_engine *e, uint32_t domid, const char *from, const char *to,
                     char *err, size_t errlen)
{
    struct qemu_dom d;
    char path[600];
    int rc;

    (void)e;
    if ((rc = find(domid, &d, err, errlen)))
        return rc;
    if (strcmp(d.name, from)) {
        snprintf(err, errlen, "domain %u is %s, not %s", domid, d.name, from);
        return -ESTALE;
    }
    char from_path[600];
    snprintf(from_path, sizeof from_path, "%s/%s", qemu_run_dir(), d.name);
    snprintf(path, sizeof path, "%s/%s", qemu_run_dir(), to);
    /* Never take over another domain's name (rename(2) would replace it). */
    struct stat st;
    if (!lstat(path, &st) || errno != ENOENT) {
        snprintf(err, errlen, "renaming %s: %s exists already", d.name, path);
        return -EEXIST;
    }
    if (rename(from_path, path)) {
        rc = -errno;
        snprintf(err, errlen, "renaming %s to %s: %s", from_path, path, strerror(errno));
        return rc;
    }
    return 0;
}

static int qm_destroy(struct mig_engine *e, uint32_t domid, char *err, size_t errlen)
{
    struct qemu_dom d;
    int rc;

    (void)e;
    if ((rc = find(domid, &d, err, errlen)))
        return rc;
    return qemu_dom_remove(&d, err, errlen);
}

static int qm_guest_hold_get(struct mig_engine *e, uint32_t domid, char *buf, size_t size)
{
    struct qemu_dom d;
    char path[600], *text;
    size_t len;
    int rc;

    (void)e;
    if ((rc = qemu_dom_find_domid(domid, &d)))
        return rc;
    qemu_dom_path(&d, "guest-hold", path, sizeof path);
    if ((rc = read_file(path, &text, &len)))
        return rc;
    len = chomp(text, len);
    rc = len < size ? 0 : -E2BIG;
    if (!rc) {
        memcpy(buf, text, len);
        buf[len] = 0;
    }
    free(text);
    return rc;
}

static int qm_guest_hold_put(struct mig_engine *e, uint32_t domid, const char *value)
{
    struct qemu_dom d;
    char path[600];
    int rc;

    (void)e;
    if ((rc = qemu_dom_find_domid(domid, &d)))
        return rc;
    qemu_dom_path(&d, "guest-hold", path, sizeof path);
    return atomic_write(path, value, strlen(value), 0644);
}

/* hvc0's socket; the relay reads the output from console.log beside it
 * (serial.sock stays free for others). */
static int qm_console_path(struct mig_engine *e, uint32_t domid, char *buf, size_t size)
{
    struct qemu_dom d;
    int rc;

    (void)e;
    if ((rc = qemu_dom_find_domid(domid, &d)))
        return rc;
    qemu_dom_path(&d, "console.sock", buf, size);
    return 0;
}

const struct mig_engine_ops qemu_mig_engine = {
    .name = "qemu",
    .algorithms = "precopy,postcopy,stopcopy",
    .open = qm_open,
    .close = qm_close,
    .lookup = qm_lookup,
    .lookup_uuid = qm_lookup_uuid,
    .free_kib = qm_free_kib,
    .get_config = qm_get_config,
    .prepare = qm_prepare,
    .save = qm_save,
    .save_postcopy = qm_save_postcopy,
    .restore_postcopy = qm_restore_postcopy,
    .is_suspended = qm_is_suspended,
    .stop_time_ms = qm_stop_time_ms,
    .set_stream_gate = qm_set_stream_gate,
    .resume = qm_resume,
    .restore = qm_restore,
    .unpause = qm_unpause,
    .rename = qm_rename,
    .destroy = qm_destroy,
    .guest_hold_get = qm_guest_hold_get,
    .guest_hold_put = qm_guest_hold_put,
    .console_path = qm_console_path,
    /* no console_drain: QEMU's virtio console has put what it read from
     * its socket into the guest's own buffers, which move with its memory,
     * and the hold waits for QEMU to read it all (consolehold.h) */
    .console_hold_at_stop = true,
    .set_stop_hook = qm_set_stop_hook,
    .set_console_hook = qm_set_console_hook,
    .set_postcopy_recover = qm_set_postcopy_recover,
    .recover_postcopy = qm_recover_postcopy,
    .resume_postcopy = qm_resume_postcopy,
    .stop_hook_group_only = true,
    .stop_hook_always = true,
    .direct_stream = true,
};
