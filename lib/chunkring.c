/* CHUNK data into an fd, verified in batches by a writer thread (see
 * chunkring.h). */
#include "chunkring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto.h"
#include "util.h"

static void *writer_main(void *arg)
{
    struct chunkring *q = arg;
    const uint8_t *pl[PROTO_VERIFY_MAX];
    uint32_t len[PROTO_VERIFY_MAX];
    char perr[200];
    size_t k, bad;
    int rc = 0;

    for (;;) {
        pthread_mutex_lock(&q->m);
        while (!q->count && !q->end)
            pthread_cond_wait(&q->cv, &q->m);
        if (!q->count || q->drop) {
            pthread_mutex_unlock(&q->m);
            break;
        }
        k = q->count < PROTO_VERIFY_MAX ? q->count : PROTO_VERIFY_MAX;
        for (size_t i = 0; i < k; i++) {
            pl[i] = q->buf[(q->head + i) % CHUNKRING_SLOTS];
            len[i] = q->len[(q->head + i) % CHUNKRING_SLOTS];
        }
        pthread_mutex_unlock(&q->m);

        q->batches++;
        if (k > q->max_batch)
            q->max_batch = (unsigned)k;
        /* Nothing of a bad chunk or after it reaches the fd. */
        rc = proto_chunks_verify(q->conn, pl, len, k, &bad, perr, sizeof perr);
        if (rc)
            snprintf(q->err, sizeof q->err, "%s: %s", q->peer, perr);
        size_t good = rc ? bad : k;
        for (size_t i = 0; i < good; i++) {
            const uint8_t *data = pl[i] + PROTO_CHUNK_HDR;
            uint32_t dlen = len[i] - PROTO_CHUNK_HDR;
            for (uint32_t off = 0; off < dlen;) {
                ssize_t r = write(q->fd, data + off, dlen - off);
                if (r < 0 && errno == EINTR)
                    continue;
                if (r < 0) {
                    rc = -errno;
                    snprintf(q->err, sizeof q->err, "libxl stopped reading the stream: %s",
                             strerror(errno));
                    good = 0; /* this error came first in the stream */
                    break;
                }
                off += (uint32_t)r;
            }
            if (!good)
                break;
            if (q->written)
                q->written(q->arg);
        }
        pthread_mutex_lock(&q->m);
        if (rc) {
            q->rc = rc;
            q->failed = true;
        } else {
            q->head = (q->head + (unsigned)k) % CHUNKRING_SLOTS;
            q->count -= (unsigned)k;
        }
        pthread_cond_broadcast(&q->cv);
        pthread_mutex_unlock(&q->m);
        if (rc)
            break;
    }
    /* EOF for the reader: at the end record it has stopped reading anyway.
     * A socket's other direction is post-copy's return path: only this
     * one ends. */
    if (q->sock)
        shutdown(q->fd, SHUT_WR);
    else
        close(q->fd);
    return NULL;
}

void chunkring_start(struct chunkring *q)
{
    pthread_mutex_init(&q->m, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->head = q->count = q->tail = 0;
    q->end = q->drop = q->failed = false;
    q->rc = 0;
    q->err[0] = 0;
    q->batches = q->max_batch = 0;
    for (int i = 0; i < CHUNKRING_SLOTS; i++)
        q->buf[i] = xmalloc(PROTO_MAX_PAYLOAD + 1);
    pthread_create(&q->t, NULL, writer_main, q);
}

uint8_t *chunkring_slot(struct chunkring *q)
{
    pthread_mutex_lock(&q->m);
    while (q->count == CHUNKRING_SLOTS && !q->failed)
        pthread_cond_wait(&q->cv, &q->m);
    bool failed = q->failed;
    pthread_mutex_unlock(&q->m);
    return failed ? NULL : q->buf[q->tail];
}

void chunkring_put(struct chunkring *q, uint32_t len)
{
    pthread_mutex_lock(&q->m);
    q->len[q->tail] = len;
    q->tail = (q->tail + 1) % CHUNKRING_SLOTS;
    q->count++;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->m);
}

int chunkring_finish(struct chunkring *q, bool drop, char *err, size_t errlen)
{
    pthread_mutex_lock(&q->m);
    q->end = true;
    q->drop = drop;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->m);
    pthread_join(q->t, NULL);
    for (int i = 0; i < CHUNKRING_SLOTS; i++) {
        free(q->buf[i]);
        q->buf[i] = NULL;
    }
    pthread_mutex_destroy(&q->m);
    pthread_cond_destroy(&q->cv);
    if (q->rc && err && errlen)
        snprintf(err, errlen, "%s", q->err);
    return q->rc;
}
