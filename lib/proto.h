/* The vmmig migration control protocol, version 1 (issue 3; the full
 * description is vmmig-protocol(7)).
 *
 * Two agents talk over one byte stream: a TCP connection (one fd for both
 * directions) or a pipe pair (the exec transport, `ssh host vmmig receive`).
 * Every message is a 20-byte header, the payload, and after authentication a
 * 16-byte MAC:
 *
 *     "VMMG" | version 1 | type 1 | flags 2 (0) | seq 4 | len 4 | reserved 4 (0)
 *     payload (len bytes) | HMAC-SHA256(session_key, header || payload)[0..16)
 *
 * (for CHUNK the MAC covers header || index || content id, and proto_recv
 * checks the content id against the data; the content id is keyed too:
 * HMAC-SHA256 of POLYVAL(data) under keys derived from the session key)
 *
 * Integers are big-endian.  seq counts the messages in each direction from
 * 0, the handshake included.  The client is always the migration source and
 * the server the destination; the handshake records which side this is and
 * every message is then checked against the direction the table allows.
 *
 * Errors are negative errno values; the functions that take err/errlen also
 * leave a one-line explanation there (no trailing newline, no tool name):
 *   -EPROTO      not a vmmig v1 peer, a message not allowed now (unknown type,
 *                wrong direction, data before authentication, handshake message
 *                after it), or a sequence number other than the next one
 *                ("replayed or out-of-order message (seq X, expected Y)")
 *   -EMSGSIZE    a length above the bound (refused before anything is read or
 *                allocated for it)
 *   -EBADMSG     MAC mismatch, bad chunk (too short, content id wrong), a
 *                malformed handshake payload or key=value text
 *   -EACCES      authentication failed (either side, any reason)
 *   -ETIMEDOUT   the peer was silent for timeout_ms in one read or write
 *   -ECONNRESET  the peer closed the stream, at a message boundary or inside
 *                a message (the message says which)
 *   -EPIPE etc.  what the system call said
 * After proto_recv fails, the receive direction is out of step with the
 * stream and every later proto_recv fails with the same error; sending
 * (typically an ABORT) still works.  A failed handshake leaves the connection
 * unusable: close it.
 *
 * Threads: one thread may send while another receives on the same
 * connection after the handshake; two concurrent senders (or receivers)
 * need a lock.  Writes to a closed pipe return -EPIPE; the library keeps
 * SIGPIPE from killing the process without touching its disposition.
 */
#ifndef VMMIG_PROTO_H
#define VMMIG_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "polyval.h"
#include "sha256.h"
#include "util.h"

#define PROTO_VERSION 3 /* 3: keyed chunk content ids (POLYVAL, then HMAC-SHA256) */
#define PROTO_DEFAULT_PORT 8123
#define PROTO_HEADER_LEN 20
#define PROTO_MAC_LEN 16
#define PROTO_MAX_PAYLOAD ((1u << 20) + 64)
/* Before authentication a peer is anyone: it gets no more than this. */
#define PROTO_MAX_HANDSHAKE_PAYLOAD 1024u
#define PROTO_CHUNK_MAX (1u << 20)              /* data bytes in one CHUNK */
#define PROTO_CID_LEN 32                        /* HMAC-SHA256 of POLYVAL(data) */
#define PROTO_CHUNK_HDR (8 + PROTO_CID_LEN)     /* index || content id */
#define PROTO_NONCE_LEN 32
#define PROTO_KEY_MIN 16
#define PROTO_KEY_MAX 4096                      /* the psk buffer proto_load_key fills */
#define PROTO_DEFAULT_KEY_FILE "/etc/vmmig/key"  /* overridden by $VMMIG_KEY_FILE */
#define PROTO_DEFAULT_TIMEOUT_MS 30000

enum msg_type {
    /* the handshake: the only types accepted before authentication */
    MSG_HELLO = 1,
    MSG_CHALLENGE = 2,
    MSG_AUTH = 3,
    MSG_AUTH_OK = 4,
    MSG_AUTH_FAIL = 5,
    /* the request */
    MSG_MIG_REQ = 16,
    MSG_REQ_OK = 17,
    MSG_REQ_FAIL = 18,
    MSG_MIG_CFG = 19,
    MSG_CFG_OK = 20,
    MSG_CFG_FAIL = 21,
    /* the memory stream */
    MSG_CHUNK = 32,
    MSG_STREAM_END = 33,
    MSG_PROGRESS = 34,
    /* post-copy's return path: what the destination's hypervisor writes
     * back on its stream descriptor (page requests), raw; empty: it ended */
    MSG_RETURN = 35,
    /* the hand-over */
    MSG_RECEIVED = 48,
    MSG_COMMIT = 49,
    MSG_ACTIVATED = 50,
    MSG_DONE = 51,
    MSG_ABORT = 52,
    /* co-migration's two-phase activation: COMMIT with activate=later is
     * answered PAUSED (renamed, not yet running); RESUME then unpauses */
    MSG_PAUSED = 53,
    MSG_RESUME = 54,
    /* recovery: does the destination run this domain? */
    MSG_QUERY = 64,
    MSG_STATE = 65,
    /* vmmig console: a client follows a domain's console (vmmig-console(1)) */
    MSG_CONSOLE = 66,        /* client: name=NAME */
    MSG_CONSOLE_DATA = 67,   /* either way: raw bytes */
    MSG_CONSOLE_STATE = 68,  /* agent: state=running|paused|moved|gone [host=H] */
    MSG_CONSOLE_RETURN = 69, /* agent: input it could not deliver, to send again */
    /* local disks that move with the domain (blockmirror), between CFG_OK
     * and the memory stream */
    MSG_DISK_PREP = 80,    /* source: vdev=, device=/dev/nbdN, size= */
    MSG_DISK_READY = 81,   /* destination: vdev=, port= (its secondary's NBD port) */
    MSG_DISK_FAIL = 82,    /* destination: vdev=, reason= */
    MSG_DISKS_SYNCED = 83, /* source: disks=N, every one in sync; the memory follows */
    /* post-copy recovery, on a new connection after the stream broke past
     * the switch (lib/pcrecover.h): the rest of the stream follows OK */
    MSG_RECOVER = 96,      /* source: uuid=, name=, migration= */
    MSG_RECOVER_OK = 97,   /* destination: domid= */
    MSG_RECOVER_FAIL = 98, /* destination: code=, reason= */
};

/* RETURN's first byte says what it is: bytes of the return path follow,
 * the return path ended, or nothing (a keep-alive while it is quiet). */
enum { RETURN_DATA = 'D', RETURN_END = 'E', RETURN_KEEPALIVE = 'K' };

/* "HELLO", ...; "unknown" for a type not in the table. */
const char *msg_type_name(int type);

enum proto_role {
    PROTO_ROLE_ANY = 0, /* direction unchecked (proto_init; tests) */
    PROTO_ROLE_SOURCE,  /* the client: sends HELLO, MIG_REQ, CHUNK, ... */
    PROTO_ROLE_DEST,    /* the server: sends CHALLENGE, REQ_OK, ... */
};

/* The keys of the chunks' content ids, derived from the session key. */
struct proto_chunk_key {
    struct polyval_key hash; /* H of POLYVAL over the data */
    struct hmac_sha256_ctx id; /* HMAC under the id key, nothing hashed yet */
};

struct proto_conn {
    int rfd, wfd;         /* the same fd for a socket */
    int timeout_ms;       /* per poll() wait; <= 0 waits forever */
    enum proto_role role; /* set by the handshake */
    bool authed;          /* handshake done: MACs on, data types allowed */
    uint8_t key[SHA256_LEN]; /* session key, valid when authed */
    struct proto_chunk_key chunk; /* from the key (proto_set_session_key) */
    uint32_t send_seq, recv_seq; /* next seq to send / to accept */
    char peer_host[64];   /* server: the name the client gave in HELLO */
    int rx_err;           /* first proto_recv failure; 0 while healthy */
    char rx_errmsg[160];
    bool wfd_not_socket;  /* learnt on the first write: send() said ENOTSOCK */
    int64_t deadline_ms;  /* during the handshake: when it must be done */
};

/* Zero the connection and set its fds and timeout (PROTO_DEFAULT_TIMEOUT_MS
 * is a sensible one).  The fds stay the caller's to close. */
void proto_init(struct proto_conn *c, int rfd, int wfd, int timeout_ms);
/* Wipe the session key (the fds are not touched). */
void proto_wipe(struct proto_conn *c);
/* Set the session key and the keys derived from it, and turn MACs on: what
 * a successful handshake does (unit tests and fuzzers call it instead). */
void proto_set_session_key(struct proto_conn *c, const uint8_t key[SHA256_LEN]);

/* Read a pre-shared key file into psk[PROTO_KEY_MAX].  Any bytes, at least
 * PROTO_KEY_MIN after one trailing newline is stripped.  Refuses (-EACCES) a
 * file other users may read or write (mode & 077) or that is owned by
 * someone other than root or the caller; -EINVAL for a key too short or not
 * a regular file, -EFBIG for one too long, -errno when it cannot be read. */
int proto_load_key(const char *path, uint8_t *psk, size_t *len, char *err, size_t errlen);
/* The key file to use: $VMMIG_KEY_FILE when set and non-empty, else
 * PROTO_DEFAULT_KEY_FILE. */
const char *proto_key_file(void);

/* The handshake over a fresh connection (vmmig-protocol(7), AUTHENTICATION).
 * The client proves knowledge of the key only after the server has proved
 * its own; myhost is what the server sees as peer_host (NULL: gethostname;
 * at most 63 printable characters; NOT authenticated, a label only).  The
 * whole handshake must finish within timeout_ms.  On success the connection
 * is authed; on failure (-EACCES for a wrong key on either side, -EPROTO or
 * -EBADMSG for a peer not following the protocol, or an I/O error) close it:
 * the server has already sent AUTH_FAIL where that made sense. */
int proto_handshake_client(struct proto_conn *c, const uint8_t *psk, size_t psklen,
                           const char *myhost, char *err, size_t errlen);
int proto_handshake_server(struct proto_conn *c, const uint8_t *psk, size_t psklen,
                           char *err, size_t errlen);

/* Send one message.  -EMSGSIZE above PROTO_MAX_PAYLOAD (or the handshake
 * bound before authentication), -EPROTO for a type this side may not send
 * now (nothing is written then), -EOVERFLOW when the sequence numbers are
 * exhausted (2^32 messages), or the I/O error. */
int proto_send(struct proto_conn *c, int type, const void *payload, uint32_t len);

/* Receive one whole message: *payload is malloc'd (free it), with a NUL
 * after the len bytes for convenience (the payload itself may contain
 * NULs).  Validates, in this order: magic, version, flags and reserved; the
 * length bound (before reading or allocating); before authentication the
 * type is a handshake type; then after reading: the MAC, the sequence
 * number, and that the type exists and may come from the peer now.  On
 * failure *payload is NULL and *type and *len are 0. */
int proto_recv(struct proto_conn *c, int *type, uint8_t **payload, uint32_t *len, char *err,
               size_t errlen);

/* The same into buf (room for PROTO_MAX_PAYLOAD + 1 bytes, reused from
 * message to message: no allocation), and a CHUNK's content id NOT checked
 * against its data: the MAC and the chunk's shape are, and the caller must
 * proto_chunks_verify() it before the data goes anywhere. */
int proto_recv_buf(struct proto_conn *c, int *type, uint8_t *buf, uint32_t *len, char *err,
                   size_t errlen);
/* Verify up to PROTO_VERIFY_MAX CHUNK payloads from proto_recv_buf on c.
 * 0 when all match; else -EBADMSG (proto_chunk_parse's message) for the
 * first that does not, its position in *bad: the ones before it are good.
 * Only reads c's keys: a writer thread may call it while another receives. */
#define PROTO_VERIFY_MAX 4
int proto_chunks_verify(const struct proto_conn *c, const uint8_t *const payload[],
                        const uint32_t len[], size_t n, size_t *bad, char *err, size_t errlen);

/* A chunk's content id on c: HMAC-SHA256(id key, POLYVAL(H, data)), both
 * keys derived from the session key (vmmig-protocol(7), CHUNKS).  Only
 * reads c's keys: a pipeline computes ids while another thread sends. */
void proto_chunk_id(const struct proto_conn *c, const void *data, uint32_t len,
                    uint8_t id[PROTO_CID_LEN]);
/* CHUNK: index (8, BE) || content id || data; len <= PROTO_CHUNK_MAX. */
int proto_send_chunk(struct proto_conn *c, uint64_t index, const void *data, uint32_t len);
/* The same with the content id computed already (proto_chunk_id). */
int proto_send_chunk_id(struct proto_conn *c, uint64_t index, const uint8_t *id, const void *data,
                        uint32_t len);
/* Split a received CHUNK payload and verify its content id on c: -EBADMSG
 * when it is too short, too long or the id does not match.  *data points
 * into payload.  Order and gaps are the caller's to check (indexes count up
 * from 0 without gaps; STREAM_END says how many there were). */
int proto_chunk_parse(const struct proto_conn *c, const uint8_t *payload, uint32_t len,
                      uint64_t *index, const uint8_t **data, uint32_t *dlen, char *err,
                      size_t errlen);

/* The same without hashing, for a payload proto_recv returned: it has
 * already checked the content id of every CHUNK (the MAC covers only the
 * index and the content id, so that each data byte is hashed once). */
int proto_chunk_split(const uint8_t *payload, uint32_t len, uint64_t *index,
                      const uint8_t **data, uint32_t *dlen, char *err, size_t errlen);

/* key=value text payloads: one "key=value\n" per line (the last newline may
 * be missing), UTF-8, no NUL.  A key may repeat (peer=, hold.*).  In values
 * kv_add escapes a backslash as \\ and a newline as \n (also CR as \r) so a
 * multi-line value (config=) stays on one line; kv_get/kv_next undo it.
 *
 * kv_get: the value of the first line whose key is exactly key, unescaped,
 * into out.  0; -ENOENT no such line; -E2BIG the value needs more than
 * outlen - 1 bytes; -EBADMSG the payload has a NUL byte or a line without
 * '=' (or with an empty key), or the value has a bad escape; -EINVAL key is
 * empty or has '=' or a newline.  out is "" on failure. */
int kv_get(const uint8_t *payload, uint32_t len, const char *key, char *out, size_t outlen);
/* Walk every line: start with *pos = 0; returns 1 and fills key/val for
 * each line (empty lines skipped), 0 at the end, or -EBADMSG / -E2BIG (a
 * key or value does not fit).  Each line is checked as in kv_get. */
int kv_next(const uint8_t *payload, uint32_t len, size_t *pos, char *key, size_t keylen,
            char *val, size_t vallen);
/* Append "key=value\n" with the value formatted and escaped. */
void kv_add(struct strbuf *sb, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
