/* What vmmig remembers about a domain, kept by UUID in the state directory
 * (STATE_DIR/domains/UUID), written atomically.  Keyed by UUID rather than
 * domid or name because both change when a domain migrates. */
#ifndef VMMIG_STATE_H
#define VMMIG_STATE_H

#include <stdbool.h>
#include <time.h>
#include "lock.h"

#define PEERS_MAX 8

struct domstate {
    struct hold admin;
    time_t guest_since; /* when dom0 first saw the current guest hold; 0 if none */
    time_t guest_expires; /* when that hold's ttl runs out; 0 if it has none */
    char peers[PEERS_MAX][37]; /* UUIDs of the domains that must migrate with this one */
    int npeers;
};

bool uuid_valid(const char *uuid);
int state_load(const char *dir, const char *uuid, struct domstate *st, char *err, size_t errlen);
int state_save(const char *dir, const char *uuid, const struct domstate *st);
int state_parse(const char *text, size_t len, struct domstate *st, char *err, size_t errlen);
void state_format(const struct domstate *st, struct strbuf *sb);

#endif
