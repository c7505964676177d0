/* The migration lock model.  A domain is locked while it has any hold that
 * has not expired.  There is at most one hold of each kind:
 *   static - from the domain's configuration (nomigrate=1, migration="no")
 *   guest  - set by the guest itself through its xenstore node
 *   admin  - set at run time by an administrator
 */
#ifndef VMMIG_LOCK_H
#define VMMIG_LOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "policy.h"
#include "util.h"

enum hold_kind { HOLD_STATIC, HOLD_GUEST, HOLD_ADMIN, HOLD_KINDS };

#define REASON_MAX 200
#define LOCK_REQUEST_MAX 1024 /* longest write accepted on a lock file or guest node */

struct hold {
    bool active;
    char reason[REASON_MAX + 1];
    time_t since;
    time_t expires;  /* 0: until released */
    uid_t uid;       /* admin: who set it */
    char by[128];    /* admin: user name; static: where it comes from */
};

struct lockset {
    struct hold h[HOLD_KINDS];
};

/* A parsed write: "0" | "0 force" | "1 [reason=TEXT] [ttl=SECONDS]". */
struct lock_request {
    int value;
    bool force;
    char reason[REASON_MAX + 1];
    long ttl; /* 0: none given */
};

#define LOCKREQ_ALLOW_FORCE 1u

int lock_request_parse(const char *buf, size_t len, long max_ttl, unsigned flags,
                       struct lock_request *req, char *err, size_t errlen);
void lock_request_format(const struct lock_request *req, struct strbuf *sb);

const char *hold_kind_name(enum hold_kind k);
int hold_kind_parse(const char *name, enum hold_kind *out);

bool hold_in_force(const struct hold *h, time_t now);
bool lockset_locked(const struct lockset *ls, time_t now);
/* When an admin may override a guest hold: 0 when never. */
time_t guest_hold_overridable_at(const struct hold *h, const struct policy *p);
/* "guest hold (db checkpoint); admin hold by root (backup)" */
void lockset_describe(const struct lockset *ls, time_t now, struct strbuf *sb);
/* One status line per hold in force: "hold: guest since=... reason=..." */
void lockset_format(const struct lockset *ls, const struct policy *p, time_t now, struct strbuf *sb);

#endif
