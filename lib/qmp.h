/* A QMP client written for vmmig: one connection to a QEMU monitor socket,
 * the greeting and qmp_capabilities, commands with ids, asynchronous events
 * queued while waiting for a reply, error replies turned into messages that
 * name the command, and file descriptors passed with SCM_RIGHTS (getfd). */
#ifndef VMMIG_QMP_H
#define VMMIG_QMP_H

#include "json.h"

struct qmp;

/* Connect to a monitor socket, read the greeting and leave negotiation mode.
 * Returns 0 or -errno (-ENOENT / -ECONNREFUSED: no QEMU there). */
int qmp_connect(struct qmp **out, const char *path, int timeout_ms, char *err, size_t errlen);
/* The same over a connected descriptor (which the client then owns). */
int qmp_open_fd(struct qmp **out, int fd, int timeout_ms, char *err, size_t errlen);
void qmp_close(struct qmp *q);

/* Run cmd with arguments (a JSON object's text, or NULL).  On success *ret
 * (if not NULL) is the "return" value, owned by the caller.  An error reply
 * gives -EREMOTEIO (-ENOSYS for CommandNotFound, -ENODEV for
 * DeviceNotFound) and "CMD: DESC" in err; a broken or silent monitor gives
 * -EPIPE, -EPROTO or -ETIMEDOUT.  pass_fd >= 0 travels with the command. */
int qmp_execute(struct qmp *q, const char *cmd, const char *args, int pass_fd, struct json **ret,
                int timeout_ms, char *err, size_t errlen);

/* The next event (in order of arrival), waiting up to timeout_ms (0: only
 * what has arrived).  -ETIMEDOUT when none. */
int qmp_next_event(struct qmp *q, struct json **ev, int timeout_ms, char *err, size_t errlen);

/* getfd: hand fd to QEMU under name (for "fd:NAME" URIs). */
int qmp_getfd(struct qmp *q, int fd, const char *name, char *err, size_t errlen);

/* QEMU's version from the greeting ("7.2.22"). */
const char *qmp_version(const struct qmp *q);

#define QMP_TIMEOUT_MS 10000

#endif
