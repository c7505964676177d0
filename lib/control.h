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

struct domain {
    struct vm_info vm;
    struct lockset locks;
    bool prepared;                       /* guest hold node created and watched */
    char guest_raw[LOCK_REQUEST_MAX + 1];/* last value read from the guest */
    char migration[512];                 /* idle | running H | done H | failed H: why */
    char last_refusal[512];
    char mig_host[256];
    char mig_name[64];                   /* the name the job started with (xl renames) */
    pid_t mig_pid;
    int mig_fd;                          /* the migration command's output */
    struct strbuf mig_out;
    int mig_exit;                        /* wait status, or -1 while unknown */
    char peers[PEERS_MAX][37];           /* UUIDs of the peer group's other members */
    int npeers;
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
/* Once a second: expire holds. */
void ctl_tick(struct ctl *c, time_t now);
/* Migration output readable (or closed) for d. */
void ctl_migration_io(struct ctl *c, struct domain *d);
/* The runner reports the exit status of a migration command. */
void ctl_migration_exited(struct ctl *c, pid_t pid, int status);

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
