/* What `vmmig send` and `vmmig receive` share besides the protocol:
 * reaching the peer agent, the stage names, and location-notification hooks. */
#ifndef VMMIG_MIGJOB_H
#define VMMIG_MIGJOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum mig_stage {
    STAGE_PRE = 0,      /* pre-migration: checks, connection, authentication */
    STAGE_RESERVE = 1,  /* reservation: request, configuration */
    STAGE_PRECOPY = 2,  /* iterative pre-copy */
    STAGE_STOPCOPY = 3, /* stop-and-copy */
    STAGE_COMMIT = 4,   /* commitment */
    STAGE_ACTIVATE = 5, /* activation */
};
const char *mig_stage_name(enum mig_stage s);

/* Migration algorithms (vmmig-protocol(7), ALGORITHMS), as comma-separated
 * lists of names: every name vmmig knows, best first.  An engine lists the
 * ones it can do (mig_engine_ops.algorithms). */
#define MIG_ALGORITHMS "precopy,postcopy,stopcopy"
#define MIG_ALGO_MAX 16 /* a name's buffer */
/* Is name one of MIG_ALGORITHMS? */
bool mig_algo_known(const char *name);
/* Is name an element of list? */
bool mig_algo_listed(const char *list, const char *name);
/* A list to use: non-empty, every element known and listed in allowed (if
 * not NULL), none twice.  0, or -EINVAL with err. */
int mig_algo_list_check(const char *list, const char *allowed, char *err, size_t errlen);
/* The destination's choice for a request: the source can do theirs and asks
 * for want ("" for no preference); mine is what this side can do.  want
 * must be in both; without it, the first of mine that theirs lists.  0 with
 * the name in out, or -ENOTSUP with the reason in err. */
int mig_algo_choose(const char *theirs, const char *want, const char *mine, char *out,
                    size_t outlen, char *err, size_t errlen);

/* How the hypervisor's stream goes (vmmig-protocol(7), DIRECT STREAM):
 * "relay" (the default) or "direct".  Is name one of them? */
bool mig_stream_known(const char *name);

/* The agents' test seam VMMIG_TEST_DELAY: spec is POINT:SECONDS, or
 * POINT@DOMAIN:SECONDS for that domain only (one member of a group).  The
 * seconds (0-3600) when spec names point (and domain), else -1; a spec
 * that does not parse names nothing. */
long mig_test_delay(const char *spec, const char *point, const char *domain);

/* Connect to the destination agent: TCP to host:port when via is NULL or
 * "tcp", else run via (an exec transport: %h is replaced by host, %% by %)
 * through /bin/sh with a socket as its stdin and stdout.  *pid is the
 * transport's process (or 0).  timeout_ms bounds the TCP connect. */
int mig_connect(const char *host, unsigned port, const char *via, int timeout_ms, int *fd,
                pid_t *pid, char *err, size_t errlen);

/* A new authenticated connection to host's agent: mig_connect, then the
 * handshake (vmmig-protocol(7)); myhost may be NULL.  0 with c, *fd and
 * *pid set; else non-zero with err ("HOST: why" for a failed handshake)
 * and nothing left open (*fd -1). */
struct proto_conn;
int mig_dial(const char *host, unsigned port, const char *via, int timeout_ms,
             const uint8_t *psk, size_t psklen, const char *myhost, struct proto_conn *c,
             int *fd, pid_t *pid, char *err, size_t errlen);
/* Close what mig_dial opened (nothing when *fd is -1): wipe, close, reap
 * the transport's process. */
void mig_hangup(struct proto_conn *c, int *fd, pid_t *pid);

/* Ask host's agent on a new connection what it holds of a domain (QUERY,
 * vmmig-protocol(7)): its STATE's state ("active", "paused", "absent", ...)
 * into state.  myhost may be NULL.  A transport's process is reaped.  0, or
 * non-zero with err. */
int mig_query(const char *host, unsigned port, const char *via, int timeout_ms,
              const uint8_t *psk, size_t psklen, const char *myhost, const char *uuid,
              const char *name, char *state, size_t statelen, char *err, size_t errlen);

/* If name ends in suffix (and has something before it), the length of
 * the part before it; else 0.  For the NAME--incoming / NAME--migratedaway
 * copies of a migration. */
size_t mig_strip_suffix(const char *name, const char *suffix);

/* This host's boot id: two agents with the same one are on the same host.
 * $VMMIG_BOOT_ID replaces it (tests: hosts that share one kernel). */
void mig_boot_id(char *buf, size_t size);

/* Run every executable in the hooks directory ($VMMIG_HOOKS_DIR, else
 * /etc/vmmig/hooks.d) in name order as `HOOK migrated DOMAIN FROM TO`, with
 * VMMIG_ROLE, VMMIG_DOMAIN, VMMIG_UUID, VMMIG_FROM, VMMIG_TO set, each for
 * at most 30 s.  Names with characters other than [A-Za-z0-9_-] are skipped
 * (run-parts' rule, so editor backups do not run).  Reports each hook that
 * fails on stderr; returns how many failed. */
int mig_run_hooks(const char *role, const char *domain, const char *uuid, const char *from,
                  const char *to);

#endif
