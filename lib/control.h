/* The control core shared by vmmigfs and the command-line applets: the set of
 * domains with their holds, and the operations behind the control files.
 * Every operation validates first and changes nothing on error. */
#ifndef VMMIG_CONTROL_H
#define VMMIG_CONTROL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "backend.h"
#include "events.h"
#include "lock.h"
#include "policy.h"
#include "state.h"

struct caller {
    uid_t uid;
    gid_t gid;
    pid_t pid;
};

/* What the migration engine (vmmig send, or vmmig comigrate per member) said
 * about a job in its "progress" and "result" lines; -1 where it has not said. */
struct mig_progress {
    int stage;                /* 0..5, -1 before the first progress line */
    char stage_name[32];
    char algorithm[16];       /* algorithm=: the one the destination chose */
    long long round, sent, dirty_pages, dirty_rate;
    bool result;              /* a result line came */
    bool ok;                  /* result ok */
    int fail_stage;           /* result failed stage=N */
    char why[300];            /* result failed why="..." */
    char where[32];           /* result failed domain=running-here|left-suspended-here|lost */
    long long new_domid, total_ms, downtime_ms, rounds;
    long long stop_ms, resume_ms;            /* epoch ms: paused here, resumed there */
    long long stop_skew_ms, resume_skew_ms;  /* the group's ("result ok group=...") */
    long long stop_request_skew_ms;          /* the group's, when every stop was asked for */
    long long disk_size, disk_sent, disk_compared; /* mirrored disks, once synced */
    long long postcopy_recovered; /* post-copy streams resumed after a break (result ok) */
};

/* At most this many domains move in one co-migration. */
#define GROUP_MAX (PEERS_MAX + 1)

struct domain {
    struct vm_info vm;
    struct lockset locks;
    bool prepared;                       /* guest hold node created and watched */
    char guest_raw[LOCK_REQUEST_MAX + 1];/* last value read from the guest */
    /* idle | waiting H: locked: why | running H | done H | failed H: why | refused H: why */
    char migration[512];
    char last_refusal[512];
    char mig_host[256];
    char mig_name[64];                   /* the name the job started with (xl renames) */
    char mig_algo[16];                   /* algo= asked for ("": the agent's default) */
    char mig_stream[8];                  /* stream= asked for ("": the relay) */
    pid_t mig_pid;
    int mig_fd;                          /* the migration command's output */
    struct strbuf mig_out;               /* its last output, raw (explains a failure) */
    char mig_line[1024];                 /* the output line being read */
    size_t mig_line_len;
    int mig_exit;                        /* wait status, or -1 while unknown */
    struct mig_progress prog;
    bool mig_done;                       /* the last job ended "done mig_host" */
    time_t mig_end;                      /* when the last job ended */
    char mig_cancel_by[64];              /* who cancelled the running job */
    char mig_died[160];                  /* set while recovering: how the agent died */
    bool hyp_admin;                      /* the admin hold is set in the hypervisor too */
    /* A deferred job (HOST wait), started once no hold is in force. */
    bool waiting;
    time_t wait_since, wait_until;       /* wait_until 0: no limit */
    uid_t wait_uid;
    char wait_by[64];
    /* A forwarding entry: the domain has migrated away (see ctl_refresh). */
    bool ghost;
    time_t ghost_until;
    /* The state record's guest hold start, for a hold that shows up only
     * after the domain (an incoming migration writes the node late). */
    time_t saved_guest_since, saved_guest_expires;
    time_t added;                        /* when seen; 0 if already there at start */
    char peers[PEERS_MAX][37];           /* UUIDs of the peer group's other members */
    int npeers;
    /* A co-migration: one command moves the group.  Every member points at
     * the domain that runs it (the lead: mig_pid, mig_fd, waiting), while
     * the job runs or waits; the lead lists the members, itself first. */
    struct domain *mig_lead;
    struct domain *grp[GROUP_MAX];
    uint32_t grp_domid[GROUP_MAX];       /* as given to the command (its member= values) */
    int ngrp;                            /* 0: a job for this domain alone */
    struct mig_progress grp_prog;        /* the group's own result line */
    char mig_group[GROUP_MAX * 65];      /* the last job's members by name, "" if alone */
    bool dirty;                          /* state record to be saved by ctl_flush() */
    bool seen;
    uint64_t gen;                        /* bumped on every change, for poll() */
};

/* How a migration command gets run: directly, or by vmmigfs's privileged helper. */
struct runner {
    /* Start argv; on success *pid and *out_fd (its stdout+stderr) are set. */
    int (*start)(void *arg, char *const argv[], pid_t *pid, int *out_fd);
    int (*stop)(void *arg, pid_t pid);
    void *arg;
};

struct ctl {
    const struct backend_ops *ops;
    struct backend *be;
    struct policy pol;
    char policy_path[512];
    char state_dir[512];
    struct domain **doms;
    size_t ndoms;
    struct events ev;
    uint64_t gen;        /* any change at all */
    int lock_fd;         /* flock on the state directory: one controller at a time */
    struct runner run;
    /* Called when a domain name stops existing (removed or renamed). */
    void (*name_gone)(void *arg, const char *name);
    void *name_gone_arg;
    bool started;        /* the first listing is done */
};

int ctl_open(struct ctl *c, const char *backend, const char *state_dir, const char *policy_path,
             char *err, size_t errlen);
/* The same with a given backend (tests use an in-memory one). */
int ctl_open_ops(struct ctl *c, const struct backend_ops *ops, const char *state_dir,
                 const char *policy_path, char *err, size_t errlen);
void ctl_close(struct ctl *c);

int ctl_refresh(struct ctl *c);
/* Backend fd readable: pick up domain and guest-hold changes. */
int ctl_backend_event(struct ctl *c);
/* Save records marked dirty (after pollers were woken). */
void ctl_flush(struct ctl *c);
/* Once a second: expire holds and forwarding entries, start or time out
 * waiting migrations. */
void ctl_tick(struct ctl *c, time_t now);
/* Migration output readable (or closed) for d. */
void ctl_migration_io(struct ctl *c, struct domain *d);
/* The runner reports the exit status of a migration command. */
void ctl_migration_exited(struct ctl *c, pid_t pid, int status);

/* A domain by name; a forwarding entry (d->ghost) only when no live domain has the name. */
struct domain *ctl_find(struct ctl *c, const char *name);

/* Permission to change anything: CAP_SYS_ADMIN or the policy's admin_group. */
bool ctl_may_write(struct ctl *c, const struct caller *who);

int ctl_lock_write(struct ctl *c, struct domain *d, const char *buf, size_t len,
                   const struct caller *who, char *err, size_t errlen);
int ctl_migrate_write(struct ctl *c, struct domain *d, const char *buf, size_t len,
                      const struct caller *who, char *err, size_t errlen);
int ctl_peer_write(struct ctl *c, struct domain *d, const char *buf, size_t len,
                   const struct caller *who, char *err, size_t errlen);
int ctl_policy_write(struct ctl *c, const char *buf, size_t len, const struct caller *who,
                     char *err, size_t errlen);
/* A write that failed validation: explain it in events (callers use this for every EINVAL). */
void ctl_reject(struct ctl *c, const char *domain, const char *file, const struct caller *who,
                const char *why);

void ctl_format_status(struct ctl *c, struct domain *d, struct strbuf *sb);
void ctl_format_lock(struct ctl *c, struct domain *d, struct strbuf *sb);
void ctl_format_migration(struct ctl *c, struct domain *d, struct strbuf *sb);
void ctl_format_peers(struct ctl *c, struct domain *d, struct strbuf *sb);

/* "root", or "uid1234" for a uid without a name. */
void caller_name(uid_t uid, char *buf, size_t size);

#endif
