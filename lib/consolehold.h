/* The console input hold between `vmmig send` and the console relay on the
 * same host.
 *
 * Xen's restore clears the guest's console ring page (libxc, as it does the
 * xenstore page), so a key that reached the ring and that the guest had not
 * read when it suspended is lost.  Input must therefore stop before the
 * guest is asked to suspend, and what is in the ring must be read first.
 * QEMU reads its console socket into the guest's memory in its main loop,
 * which may first run after the migration's last pass, and what it has not
 * read is lost with the source's QEMU: the same hold, and the relay counts
 * a write as done only once QEMU has read it (until then it writes nothing
 * more and keeps its shared lock, for at most 300 ms, so the hold waits for
 * that read unless the guest has no buffers posted; a move hands an unread
 * write back to the client).
 * Both agents open STATE_DIR/console/UUID.lock: the relay writes to the
 * console only under a shared flock taken without waiting; send takes the
 * exclusive flock (waiting out a write in progress) before the domain is
 * asked to stop, and keeps it until it exits, so a killed or failed send
 * lets input flow again by itself. */
#ifndef VMMIG_CONSOLEHOLD_H
#define VMMIG_CONSOLEHOLD_H

#include <stdbool.h>
#include <stddef.h>

/* The lock file of the domain with this UUID (its directory created).
 * An open fd, or -errno. */
int console_hold_open(const char *state_dir, const char *uuid);

/* send: hold the domain's console input from now until fd is closed (or
 * the process ends).  Waits up to timeout_ms for a write in progress.
 * 0, -ETIMEDOUT or -errno. */
int console_hold_take(int fd, int timeout_ms);

/* relay: may input be written now?  true with the shared lock taken (end
 * with console_hold_write_end); false while a send holds it. */
bool console_hold_write_begin(int fd);
void console_hold_write_end(int fd);

/* Is input held now (a send has the lock)?  Takes nothing. */
bool console_hold_held(int fd);

#endif
