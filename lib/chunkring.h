/* The receiving end of a migration stream's CHUNKs: a writer thread puts
 * their data into an fd (the hypervisor's pipe or socket), each chunk's
 * content id verified first (proto_chunks_verify, up to four per batch).
 * The caller receives into the ring's buffers, reused from chunk to chunk
 * (no malloc of a megabyte each, with musl an mmap and munmap), while the
 * writer hashes and writes the ones before; a chunk alone (post-copy's
 * answer to a page request) goes on at once. */
#ifndef VMMIG_CHUNKRING_H
#define VMMIG_CHUNKRING_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "proto.h"

#define CHUNKRING_SLOTS 8

struct chunkring {
    /* set by the caller before chunkring_start */
    int fd;            /* the data goes here; at the writer's end it is shut */
    bool sock;         /* fd is a socket: shutdown(SHUT_WR) then, else close */
    const char *peer;  /* names the sender in a bad chunk's message */
    const struct proto_conn *conn; /* the chunks' keys (only read) */
    void (*written)(void *arg); /* after each chunk's data went out, or NULL */
    void *arg;
    /* the writer's counts (read after chunkring_finish) */
    uint64_t batches;
    unsigned max_batch; /* the most chunks verified in one call */
    /* private */
    pthread_mutex_t m;
    pthread_cond_t cv;
    pthread_t t;
    uint8_t *buf[CHUNKRING_SLOTS];
    uint32_t len[CHUNKRING_SLOTS];
    unsigned head, count, tail;
    bool end, drop, failed;
    int rc;
    char err[300];
};

/* Allocate the buffers and start the writer. */
void chunkring_start(struct chunkring *q);
/* The next free buffer (PROTO_MAX_PAYLOAD + 1 bytes) to receive a message
 * into (proto_recv_buf), waiting while the ring is full; NULL once the
 * writer failed (stop receiving: chunkring_finish says why).  Until
 * chunkring_put the buffer is the caller's, for any message. */
uint8_t *chunkring_slot(struct chunkring *q);
/* Queue the CHUNK payload of len bytes in that buffer (its shape checked,
 * proto_chunk_split; its content id not yet). */
void chunkring_put(struct chunkring *q, uint32_t len);
/* No more chunks: the writer writes what is queued (nothing when drop),
 * shuts the fd and ends; the buffers are freed.  0, or the writer's error
 * (-EBADMSG "PEER: chunk N: content id does not match its M data bytes",
 * with nothing of that chunk or after it written; -errno from the fd) and
 * its message in err. */
int chunkring_finish(struct chunkring *q, bool drop, char *err, size_t errlen);

#endif
