/* The hypervisor half of a migration, behind one small vtable (like
 * nbdcopy's struct rw_ops): `vmmig send` and `vmmig receive` drive the
 * control protocol and call these for everything that touches domains.
 * Xen's implementation (libxl) is lib/xenmig.c. */
#ifndef VMMIG_MIGENGINE_H
#define VMMIG_MIGENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct mig_dom {
    uint32_t domid;
    char name[64];
    char uuid[37];
    uint64_t mem_kib;
    unsigned vcpus;
    bool paused, suspended, dying;
};

/* Called from inside save() as the hypervisor's stream advances: round 1..n
 * of the live phase (final = false), then the stop-and-copy round (final =
 * true, the domain is suspended); done/total count pages of that round. */
typedef void mig_progress_fn(void *arg, unsigned round, bool final, unsigned long done,
                             unsigned long total);

/* Runs in save() right before the hypervisor asks the domain to stop (the
 * co-migration stop barrier): 0 stop now; nonzero keep the domain running,
 * and save() fails with why. */
typedef int mig_stop_hook_fn(void *arg, char *why, size_t whylen);

struct mig_engine;

struct mig_engine_ops {
    const char *name;       /* "xen" */
    const char *algorithms; /* what save() can do, best first: "precopy,stopcopy" */
    int (*open)(struct mig_engine **e, mig_progress_fn *progress, void *arg, char *err,
                size_t errlen);
    void (*close)(struct mig_engine *e);

    /* A domain by name or domid (source) or by UUID; -ENOENT when absent. */
    int (*lookup)(struct mig_engine *e, const char *name_or_domid, struct mig_dom *out);
    int (*lookup_uuid)(struct mig_engine *e, const char *uuid, struct mig_dom *out);
    int (*free_kib)(struct mig_engine *e, uint64_t *kib);

    /* Source: the configuration as neutral key=value text and in the
     * hypervisor's own form (both malloc'd). */
    int (*get_config)(struct mig_engine *e, uint32_t domid, struct strbuf *neutral,
                      char **native, char *err, size_t errlen);
    /* Optional, destination, before the stream: make what the domain of
     * native config needs on this host (QEMU: its vifs' taps on their
     * bridges).  0, or nonzero with the reason in err: the configuration is
     * refused.  restore() uses what was made; close() undoes what it did
     * not use. */
    int (*prepare)(struct mig_engine *e, const char *native, char *err, size_t errlen);
    /* Write the migration stream to fd (blocking); live = pre-copy, else
     * stop-and-copy.  On success the domain is left suspended. */
    int (*save)(struct mig_engine *e, uint32_t domid, int fd, bool live, char *err, size_t errlen);
    /* Is the domain suspended right now?  1 yes, 0 no, -errno.  Safe to call
     * from another thread while save() runs. */
    int (*is_suspended)(struct mig_engine *e, uint32_t domid);
    /* Optional: when the domain the last save() stopped stopped, by the
     * hypervisor's own account (epoch ms), or 0 when it does not say.
     * QEMU stamps its STOP event, which reaches vmmig late when QEMU
     * stopped the guest by itself; is_suspended() polling sees it late
     * too, so the stop time and the downtime come from here when set. */
    long long (*stop_time_ms)(struct mig_engine *e);
    /* Undo a suspend: the domain runs again where it was. */
    int (*resume)(struct mig_engine *e, uint32_t domid, char *err, size_t errlen);

    /* Post-copy (only engines whose algorithms list "postcopy"; NULL
     * otherwise).  fd is a socket: the destination's requests for pages come
     * back on it.  Source: pre-copy until the first pass is over, then
     * commit(arg), the caller's commit point (non-zero: the migration is
     * cancelled and the domain runs on here), then the switch; *switched
     * says whether the switch was made: from then on the domain's memory is
     * split and it cannot run here again, whatever fails.  Returns 0 once
     * the destination has every page (or, when the stream converged before
     * commit() was called, as save() does). */
    int (*save_postcopy)(struct mig_engine *e, uint32_t domid, int fd, int (*commit)(void *arg),
                         void *arg, bool *switched, char *err, size_t errlen);
    /* Destination: restore() ready for post-copy.  When the source switches,
     * run(arg) says whether the domain may run (non-zero: no) and it runs
     * here while its memory arrives; *running tells whether it was started
     * (its memory is then here and on the source: never destroy it). */
    int (*restore_postcopy)(struct mig_engine *e, const char *native, const char *name, int fd,
                            int (*run)(void *arg), void *arg, uint32_t *domid, bool *running,
                            char *err, size_t errlen);

    /* Post-copy recovery (optional: QEMU's; NULL where the hypervisor
     * cannot).  Source: when the stream breaks after the switch,
     * save_postcopy() calls fn(arg, &fd, why, whylen) instead of failing;
     * fn returns 0 with a fresh socket for the rest of the stream (the
     * caller's to close once save_postcopy() returns), non-zero to give
     * up (why says why; save_postcopy() then fails).  fn may be called
     * again when the resumed stream breaks too. */
    void (*set_postcopy_recover)(struct mig_engine *e,
                                 int (*fn)(void *arg, int *fd, char *why, size_t whylen),
                                 void *arg);
    /* Source, in an agent other than the one that ran the migration (it
     * died after the switch): the domain's post-copy waits for its stream
     * (QEMU: postcopy-paused; one that is still postcopy-active is given
     * wait_ms to notice that its stream is gone).  Resume it through the
     * recovery hook (set_postcopy_recover) and follow it to the end: 0
     * once the destination has every page.  Before anything changes:
     * -EINVAL when no post-copy of the domain is unfinished here (status
     * says QEMU's state, "" if unknown). */
    int (*resume_postcopy)(struct mig_engine *e, uint32_t domid, int wait_ms, char *status,
                           size_t statuslen, char *err, size_t errlen);
    /* Destination: the domain's post-copy broke off and waits (QEMU:
     * postcopy-paused); take the rest of its stream.  ready(arg, fd) runs
     * once the hypervisor listens: fd is the caller's (a socket to relay
     * the stream on; non-zero: give up); then it returns 0 when every page
     * is here.  Before anything changes: -EINVAL when the domain is not
     * waiting for a recovery, -ESRCH when its hypervisor is gone. */
    int (*recover_postcopy)(struct mig_engine *e, uint32_t domid,
                            int (*ready)(void *arg, int fd), void *arg, char *err, size_t errlen);

    /* Destination: create a paused domain from native config and the stream on fd. */
    int (*restore)(struct mig_engine *e, const char *native, const char *name, int fd,
                   uint32_t *domid, char *err, size_t errlen);
    int (*unpause)(struct mig_engine *e, uint32_t domid, char *err, size_t errlen);

    int (*rename)(struct mig_engine *e, uint32_t domid, const char *from, const char *to,
                  char *err, size_t errlen);
    int (*destroy)(struct mig_engine *e, uint32_t domid, char *err, size_t errlen);
    /* The guest's own hold request channel (raw "1 reason=..." text). */
    int (*guest_hold_get)(struct mig_engine *e, uint32_t domid, char *buf, size_t size);
    int (*guest_hold_put)(struct mig_engine *e, uint32_t domid, const char *value);
    /* The path of the domain's console, for vmmig console: a pty, or a unix
     * socket NAME.sock for input whose output is recorded in NAME.log. */
    int (*console_path)(struct mig_engine *e, uint32_t domid, char *buf, size_t size);
    /* Console input is held from the stop only (consolehold.h): `vmmig
     * send` takes the console hold before the domain stops and input flows
     * until then.  Without it (an engine that cannot say when its domain
     * stops), input waits for the whole migration. */
    bool console_hold_at_stop;
    /* Optional, with console_hold_at_stop: once the hold is taken, wait up
     * to timeout_ms until the guest has read all console input already
     * given to it (0), else the bytes still unread (> 0) or -errno (Xen's
     * restore clears the console ring, so unread input would be lost). */
    int (*console_drain)(struct mig_engine *e, uint32_t domid, int timeout_ms);
    /* Optional: fn runs before save() stops the domain (NULL clears it);
     * an engine without it stops when its hypervisor decides. */
    void (*set_stop_hook)(struct mig_engine *e, mig_stop_hook_fn *fn, void *arg);
    /* Optional: fn runs where console input must stop in a migration the
     * engine switches over by itself (QEMU: at pre-switchover, the guest
     * stopped; before stop-and-copy's stop; before the post-copy switch).
     * In a co-migration the stop hook runs there instead (or as well). */
    void (*set_console_hook)(struct mig_engine *e, void (*fn)(void *arg), void *arg);
    /* The hook changes how save() switches over (QEMU's: the engine stops
     * the domain itself after one pass): set it in a co-migration only. */
    bool stop_hook_group_only;
    /* Every stop save() makes goes through the hook, also one made before
     * it (QEMU's): the group waits for this member at its stop barrier
     * even once it is seen stopped. */
    bool stop_hook_always;
    /* Optional: save() calls fn once its hypervisor is set up for the
     * stream, before the domain stops or the stream starts (NULL clears
     * it); nonzero fails the save with the reason in why, the domain still
     * running.  A direct stream's source waits there for the destination's
     * QEMU (dstream_wait_ready()), so that the setup on both hosts overlaps. */
    void (*set_stream_gate)(struct mig_engine *e, mig_stop_hook_fn *fn, void *arg);
    /* save() and restore() may be given the TCP socket of a direct stream
     * (directstream.h) instead of the relay's pipe (QEMU's: it reports its
     * own progress; Xen's rounds are read off the relayed stream); restore()
     * then says dstream_signal_ready() once its hypervisor reads it. */
    bool direct_stream;
};

extern const struct mig_engine_ops xen_mig_engine;
/* QEMU domains in $VMMIG_QEMU_DIR (lib/qemumig.c). */
extern const struct mig_engine_ops qemu_mig_engine;

/* The engine the agents use: $VMMIG_BACKEND ("xen", "qemu"; unset or
 * "auto": the hypervisor present on this host).  NULL for an unknown name. */
const struct mig_engine_ops *mig_engine_select(void);

/* Name suffixes that mark the two copies during a migration (as xl's). */
#define MIG_INCOMING_SUFFIX "--incoming"
#define MIG_AWAY_SUFFIX "--migratedaway"
#define MIG_NO_DOMID 0xffffffffu

#endif
