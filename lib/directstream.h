/* The direct stream (vmmig-protocol(7), DIRECT STREAM): the hypervisor's
 * migration stream on its own TCP connection between the two hosts, not
 * relayed in chunks over the control connection.
 *
 * The destination's agent listens on an ephemeral port at the address its
 * control connection arrived on and sends the port and a one-time token in
 * REQ_OK (under the session's HMAC).  The source connects to the same
 * address as its control connection, writes the token, and hands the
 * socket to its hypervisor; the destination hands the one connection that
 * presented the token to its own.  What is written to that socket is not
 * authenticated chunk by chunk (that is the relay's job): the token only
 * keeps anybody else from being the stream.  Needs a TCP control
 * connection (not a --via transport). */
#ifndef VMMIG_DIRECTSTREAM_H
#define VMMIG_DIRECTSTREAM_H

#include <stddef.h>
#include <stdint.h>

#define DSTREAM_TOKEN_LEN 32
#define DSTREAM_TOKEN_HEX (2 * DSTREAM_TOKEN_LEN + 1)

/* Destination: listen beside control socket ctlfd.  *lfd, *port and a
 * fresh token (binary and hex) on success; -EPROTONOSUPPORT when ctlfd is
 * not a TCP socket, else -errno; err says why. */
int dstream_listen(int ctlfd, int *lfd, unsigned *port, uint8_t token[DSTREAM_TOKEN_LEN],
                   char hex[DSTREAM_TOKEN_HEX], char *err, size_t errlen);

/* Destination: wait up to timeout_ms for the connection that presents the
 * token (others are closed and counted in *rejected).  0 with the socket in
 * *fd; 1 when ctlfd became readable first (a control message: read it,
 * then call again with the time that is left); -ETIMEDOUT, -errno. */
int dstream_accept(int lfd, int ctlfd, const uint8_t token[DSTREAM_TOKEN_LEN], int timeout_ms,
                   int *fd, unsigned *rejected, char *err, size_t errlen);

/* Source: connect to port at the peer address of control socket ctlfd and
 * present the token (hex, as REQ_OK carried it).  0 with the socket in *fd. */
int dstream_connect(int ctlfd, unsigned port, const char *hex, int timeout_ms, int *fd, char *err,
                    size_t errlen);

/* Destination, once its hypervisor reads the stream from fd: one byte
 * back on it, so that the source starts the stream only now (as a plain
 * QEMU migration does; a stream started early spends its first pass
 * filling socket buffers while the guest runs on).  A no-op (0) on a
 * descriptor that is not a TCP socket (the relay's pipe or socketpair). */
int dstream_signal_ready(int fd);
/* Source: wait up to timeout_ms for that byte.  0, or -errno with err. */
int dstream_wait_ready(int fd, int timeout_ms, char *err, size_t errlen);

/* Bytes the peer has acknowledged on socket fd, the token included (the
 * stream's progress, which the relay counted itself); 0 when the kernel
 * does not say. */
unsigned long long dstream_bytes_acked(int fd);

#endif
