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
/* The same, with out-of-band execution enabled (QEMU's "oob" capability):
 * qmp_execute_oob() then runs commands that allow it in the monitor's own
 * thread, also while QEMU's main thread is blocked (a post-copy destination
 * waiting for a page).  The negotiation itself needs the main thread. */
int qmp_connect_oob(struct qmp **out, const char *path, int timeout_ms, char *err,
                    size_t errlen);
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

/* qmp_execute() as "exec-oob" (a connection from qmp_connect_oob). */
int qmp_execute_oob(struct qmp *q, const char *cmd, const char *args, struct json **ret,
                    int timeout_ms, char *err, size_t errlen);
/* The monitor connection's descriptor, to poll it with others. */
int qmp_fd(const struct qmp *q);

/* The next event (in order of arrival), waiting up to timeout_ms (0: only
 * what has arrived).  -ETIMEDOUT when none. */
int qmp_next_event(struct qmp *q, struct json **ev, int timeout_ms, char *err, size_t errlen);

/* getfd: hand fd to QEMU under name (for "fd:NAME" URIs). */
int qmp_getfd(struct qmp *q, int fd, const char *name, char *err, size_t errlen);

/* QEMU's version from the greeting ("7.2.22"). */
const char *qmp_version(const struct qmp *q);

#define QMP_TIMEOUT_MS 10000

#endif
