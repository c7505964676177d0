/* The agent's half of `vmmig console`: relay one domain's console (its
 * xenconsoled pty) over an authenticated control-protocol connection, and
 * tell the client where the domain went when it migrates away. */
#ifndef VMMIG_CONSOLERELAY_H
#define VMMIG_CONSOLERELAY_H

#include "migengine.h"
#include "proto.h"

/* Serve the console of the domain named name (CONSOLE's payload) until it
 * is gone from this host or the client leaves.  mount is vmmigfs's mount
 * point, where NAME/migrate says where a domain went; wait_ms how long to
 * wait for the domain to appear (it may still be arriving) or for its move
 * to be known; state_dir where the console hold's lock files are (the
 * agents' $VMMIG_STATE_DIR).  0 when the client was served, -errno
 * otherwise. */
int console_serve(struct proto_conn *c, const struct mig_engine_ops *eng, struct mig_engine *e,
                  const uint8_t *payload, uint32_t len, const char *mount, const char *state_dir,
                  int wait_ms);

/* Does a migrate file's line say input must wait (the domain is being
 * recovered; or migrated, unless hold_at_stop: the engine's
 * console_hold_at_stop, `vmmig send` holding input from the stop on; see
 * consolehold.h)? */
bool console_migrate_holds_input(const char *migrate_line, bool hold_at_stop);

/* "done hostB" / "migrated hostB at ..." / "running hostB ..." -> hostB in
 * host when the line says the domain left (done/migrated); else false. */
bool console_moved_to(const char *migrate_line, char *host, size_t size);

#endif
