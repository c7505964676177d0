/* NBD (Network Block Device) protocol: the fixed newstyle handshake and the
 * transmission phase with simple replies, as qemu, nbdkit, libnbd and the
 * Linux client speak it (NetworkBlockDevice/nbd doc/proto.md).
 *
 * Server: nbd_serve() runs one connection against a small backend vtable
 * (struct nbd_ops, like nbdcopy's rw_ops).  Client: struct nbd_client, safe
 * to use from several threads at once; requests are pipelined on the one
 * connection, and one waiting thread at a time reads the replies and hands
 * each to its waiter (no reader thread: at queue depth 1 the sender reads
 * its own reply).  An idle connection's end is found by nbd_client_alive.
 *
 * vmmig extension (both sides, negotiated, so plain NBD peers never see it):
 *   option NBD_OPT_VMMIG, data: 32-bit hash block size B (a power of two,
 *     4 KiB..32 MiB).  The server answers NBD_REP_ACK, NBD_REP_ERR_INVALID
 *     (bad B) or, like any NBD server that lacks it, NBD_REP_ERR_UNSUP.
 *   command NBD_CMD_VMMIG_HASH, offset B-aligned, length a multiple of B
 *     (or reaching the end of the export), at most NBD_HASH_MAX_LEN: the
 *     simple reply carries one SHA-256 of each block's content, in order.
 *   command NBD_CMD_VMMIG_COMMIT: the role switch; the server makes the
 *     image durable and becomes the standalone primary (see blockmirror.h).
 */
#ifndef VMMIG_NBD_H
#define VMMIG_NBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NBD_MAGIC 0x4e42444d41474943ULL   /* "NBDMAGIC" */
#define NBD_IHAVEOPT 0x49484156454f5054ULL /* "IHAVEOPT" */
#define NBD_REP_MAGIC 0x0003e889045565a9ULL
#define NBD_REQUEST_MAGIC 0x25609513U
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698U

/* Handshake and client flags. */
#define NBD_FLAG_FIXED_NEWSTYLE (1U << 0)
#define NBD_FLAG_NO_ZEROES (1U << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1U << 0)
#define NBD_FLAG_C_NO_ZEROES (1U << 1)

/* Transmission flags. */
#define NBD_FLAG_HAS_FLAGS (1U << 0)
#define NBD_FLAG_READ_ONLY (1U << 1)
#define NBD_FLAG_SEND_FLUSH (1U << 2)
#define NBD_FLAG_SEND_FUA (1U << 3)
#define NBD_FLAG_SEND_TRIM (1U << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1U << 6)
#define NBD_FLAG_CAN_MULTI_CONN (1U << 8)

/* Options. */
#define NBD_OPT_EXPORT_NAME 1
#define NBD_OPT_ABORT 2
#define NBD_OPT_LIST 3
#define NBD_OPT_STARTTLS 5
#define NBD_OPT_INFO 6
#define NBD_OPT_GO 7
#define NBD_OPT_STRUCTURED_REPLY 8
#define NBD_OPT_VMMIG 0x766d6d67U /* "vmmg": the vmmig extension above */

/* Option replies. */
#define NBD_REP_ACK 1
#define NBD_REP_SERVER 2
#define NBD_REP_INFO 3
#define NBD_REP_ERR_UNSUP (0x80000000U + 1)
#define NBD_REP_ERR_POLICY (0x80000000U + 2)
#define NBD_REP_ERR_INVALID (0x80000000U + 3)
#define NBD_REP_ERR_UNKNOWN (0x80000000U + 6)
#define NBD_REP_ERR_SHUTDOWN (0x80000000U + 7)

#define NBD_INFO_EXPORT 0
#define NBD_INFO_BLOCK_SIZE 3

/* Commands and command flags. */
#define NBD_CMD_READ 0
#define NBD_CMD_WRITE 1
#define NBD_CMD_DISC 2
#define NBD_CMD_FLUSH 3
#define NBD_CMD_TRIM 4
#define NBD_CMD_WRITE_ZEROES 6
#define NBD_CMD_VMMIG_HASH 0x7601
#define NBD_CMD_VMMIG_COMMIT 0x7602

#define NBD_CMD_FLAG_FUA (1U << 0)
#define NBD_CMD_FLAG_NO_HOLE (1U << 1)

/* Error values on the wire (the spec's list, not the host's errno). */
#define NBD_EPERM 1
#define NBD_EIO 5
#define NBD_ENOMEM 12
#define NBD_EINVAL 22
#define NBD_ENOSPC 28
#define NBD_EOVERFLOW 75
#define NBD_ENOTSUP 95
#define NBD_ESHUTDOWN 108

#define NBD_REQUEST_SIZE 28
#define NBD_MAX_PAYLOAD (32U << 20) /* the spec's default maximum block size */
#define NBD_HASH_MAX_LEN (256U << 20)
#define NBD_HASH_MIN_BLOCK 4096U
#define NBD_OPTION_MAX 4096U /* longest option data we accept */

struct nbd_request {
    uint16_t flags, type;
    uint64_t cookie, offset;
    uint32_t length;
};

/* What a request is checked against: the export and what was negotiated. */
struct nbd_limits {
    uint64_t size;
    bool read_only;
    uint32_t hash_block; /* 0: the vmmig extension was not negotiated */
};

/* Decode a request header; -EPROTO on a bad magic (the stream is then lost). */
int nbd_request_decode(const uint8_t hdr[NBD_REQUEST_SIZE], struct nbd_request *req);
void nbd_request_encode(const struct nbd_request *req, uint8_t hdr[NBD_REQUEST_SIZE]);
/* The NBD error to answer a decoded request with, or 0 when it may run. */
uint32_t nbd_request_check(const struct nbd_request *req, const struct nbd_limits *lim);
/* Bytes of payload that follow the header on the wire (writes only). */
uint32_t nbd_request_payload(const struct nbd_request *req);
/* -errno from a backend or the host -> the NBD error on the wire, and back. */
uint32_t nbd_errno_to_wire(int err);
int nbd_wire_to_errno(uint32_t err);
const char *nbd_cmd_name(uint16_t type);

/* ---- server ---- */

/* The backend.  Each returns 0 or -errno; flags are the request's command
 * flags (NBD_CMD_FLAG_FUA).  hash and commit may be NULL: the vmmig
 * extension is then not offered. */
struct nbd_ops {
    int (*pread)(void *h, void *buf, uint32_t len, uint64_t off);
    int (*pwrite)(void *h, const void *buf, uint32_t len, uint64_t off, uint32_t flags);
    int (*flush)(void *h);
    int (*trim)(void *h, uint32_t len, uint64_t off, uint32_t flags);
    int (*zero)(void *h, uint32_t len, uint64_t off, uint32_t flags);
    /* One SHA-256 per block of size block in [off, off+len). */
    int (*hash)(void *h, uint8_t *out, uint32_t len, uint64_t off, uint32_t block);
    int (*commit)(void *h);
};

struct nbd_export {
    const char *name; /* the one export; NULL: any name is this export */
    const char *description;
    uint64_t size;
    bool read_only;
    const struct nbd_ops *ops;
    void *h;
};

/* Serve one connection: handshake, then requests until NBD_CMD_DISC or the
 * end of the stream.  rfd and wfd are usually the same socket.  workers > 1
 * runs requests on that many threads (replies may then come out of order,
 * as the protocol allows); 1 runs them in order on the calling thread.
 * Returns 0 after a clean end (DISC, NBD_OPT_ABORT, EOF between requests),
 * -EPROTO for a malformed stream, or -errno. */
int nbd_serve(int rfd, int wfd, const struct nbd_export *exp, int workers);
/* The same without the handshake: the stream starts in the transmission
 * phase, as the Linux kernel's client speaks it once a userspace tool has
 * handed it the socket (NBD_SET_SOCK); nbd_export_flags() are the flags to
 * give the kernel (NBD_SET_FLAGS). */
int nbd_serve_transmission(int rfd, int wfd, const struct nbd_export *exp, int workers);
uint16_t nbd_export_flags(const struct nbd_export *exp);

/* ---- client ---- */

struct nbd_client;

struct nbd_client_opts {
    uint32_t hash_block; /* ask for the vmmig extension with this block size; 0: no */
    int timeout_ms;      /* a request unanswered this long kills the connection; 0: never */
};

/* Connect to URL (nbd+unix:///[NAME]?socket=PATH, nbd://HOST[:PORT][/NAME],
 * or a socket PATH starting with '/') and do the handshake (NBD_OPT_GO,
 * falling back to NBD_OPT_EXPORT_NAME).  Returns 0 or -errno, with a
 * sentence in err. */
int nbd_client_connect(const char *url, const struct nbd_client_opts *o, struct nbd_client **out,
                       char *err, size_t errlen);
/* Split a URL as nbd_client_connect does: a unix socket path or host and port. */
int nbd_url_parse(const char *url, char *path, size_t pathlen, char *host, size_t hostlen,
                  char *port, size_t portlen, char *name, size_t namelen);
uint64_t nbd_client_size(const struct nbd_client *c);
uint16_t nbd_client_flags(const struct nbd_client *c);
bool nbd_client_has_vmmig(const struct nbd_client *c);
/* Largest payload the server takes (its NBD_INFO_BLOCK_SIZE maximum, or 32 MiB). */
uint32_t nbd_client_max_payload(const struct nbd_client *c);

/* Each blocks until its reply; -errno (the server's error, or ECONNRESET,
 * ETIMEDOUT... once the connection is gone: then every request fails). */
/* A request on its way (nbd_client_pwrite_start .. nbd_client_wait): the
 * caller keeps it, and the buffer, until the wait returns. */
struct nbd_pending {
    uint64_t cookie;
    void *rbuf; /* read data or hashes go here */
    uint32_t rlen;
    bool done;
    int err;
    struct nbd_pending *next;
};

/* Send a write and return; nbd_client_wait then waits for its reply (so
 * that the caller can do something else meanwhile). */
void nbd_client_pwrite_start(struct nbd_client *c, struct nbd_pending *p, const void *buf,
                             uint32_t len, uint64_t off, uint32_t flags);
int nbd_client_wait(struct nbd_client *c, struct nbd_pending *p);

int nbd_client_pread(struct nbd_client *c, void *buf, uint32_t len, uint64_t off);
int nbd_client_pwrite(struct nbd_client *c, const void *buf, uint32_t len, uint64_t off,
                      uint32_t flags);
int nbd_client_flush(struct nbd_client *c);
int nbd_client_trim(struct nbd_client *c, uint32_t len, uint64_t off, uint32_t flags);
/* WRITE_ZEROES, or zero-filled writes when the server lacks it. */
int nbd_client_zero(struct nbd_client *c, uint32_t len, uint64_t off, uint32_t flags);
int nbd_client_hash(struct nbd_client *c, uint8_t *out, uint32_t len, uint64_t off);
int nbd_client_commit(struct nbd_client *c);
/* Is the connection still up?  (When nothing is in flight, this also looks
 * at the socket: a closed or misbehaving idle server is found here.) */
bool nbd_client_alive(struct nbd_client *c);
/* Make every pending and later request fail at once (the connection is cut). */
void nbd_client_kill(struct nbd_client *c);
/* NBD_CMD_DISC when still up, then free.  NULL is fine. */
void nbd_client_close(struct nbd_client *c);

/* Full reads and writes on a file descriptor: 0, -EPIPE at end of stream
 * (read), or -errno. */
int nbd_read_full(int fd, void *buf, size_t len);
int nbd_write_full(int fd, const void *buf, size_t len);

#endif
