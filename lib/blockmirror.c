/* blockmirror: the mirror engine (see blockmirror.h). */
#define _GNU_SOURCE
#include "blockmirror.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sha256.h"
#include "util.h"

#ifndef FALLOC_FL_KEEP_SIZE
#define FALLOC_FL_KEEP_SIZE 0x01
#endif
#ifndef FALLOC_FL_PUNCH_HOLE
#define FALLOC_FL_PUNCH_HOLE 0x02
#endif
#ifndef FALLOC_FL_ZERO_RANGE
#define FALLOC_FL_ZERO_RANGE 0x10
#endif

#define COPY_BATCH (1U << 20) /* bytes per background write */
#define SCAN_CHUNK 64         /* blocks per hash comparison */

/* ---- bitmaps ---- */

int bm_bitmap_init(struct bm_bitmap *b, uint64_t nbits)
{
    b->nbits = nbits;
    b->w = calloc((size_t)((nbits + 63) / 64) + 1, sizeof *b->w);
    return b->w ? 0 : -ENOMEM;
}

void bm_bitmap_free(struct bm_bitmap *b)
{
    free(b->w);
    b->w = NULL;
    b->nbits = 0;
}

bool bm_bitmap_test(const struct bm_bitmap *b, uint64_t i)
{
    return i < b->nbits && (b->w[i >> 6] >> (i & 63) & 1);
}

static void clamp(const struct bm_bitmap *b, uint64_t *first, uint64_t *count)
{
    if (*first >= b->nbits)
        *count = 0;
    else if (*count > b->nbits - *first)
        *count = b->nbits - *first;
}

void bm_bitmap_set_range(struct bm_bitmap *b, uint64_t first, uint64_t count)
{
    clamp(b, &first, &count);
    for (uint64_t i = first, end = first + count; i < end;) {
        if (!(i & 63) && end - i >= 64) {
            b->w[i >> 6] = ~0ULL;
            i += 64;
        } else {
            b->w[i >> 6] |= 1ULL << (i & 63);
            i++;
        }
    }
}

void bm_bitmap_clear_range(struct bm_bitmap *b, uint64_t first, uint64_t count)
{
    clamp(b, &first, &count);
    for (uint64_t i = first, end = first + count; i < end;) {
        if (!(i & 63) && end - i >= 64) {
            b->w[i >> 6] = 0;
            i += 64;
        } else {
            b->w[i >> 6] &= ~(1ULL << (i & 63));
            i++;
        }
    }
}

bool bm_bitmap_any(const struct bm_bitmap *b, uint64_t first, uint64_t count)
{
    clamp(b, &first, &count);
    for (uint64_t i = first, end = first + count; i < end;) {
        if (!(i & 63) && end - i >= 64) {
            if (b->w[i >> 6])
                return true;
            i += 64;
        } else {
            if (b->w[i >> 6] >> (i & 63) & 1)
                return true;
            i++;
        }
    }
    return false;
}

uint64_t bm_bitmap_count(const struct bm_bitmap *b)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < (b->nbits + 63) / 64; i++)
        n += (uint64_t)__builtin_popcountll(b->w[i]);
    return n;
}

uint64_t bm_bitmap_next_set(const struct bm_bitmap *b, uint64_t from)
{
    if (from >= b->nbits)
        return b->nbits;
    uint64_t wi = from >> 6, w = b->w[wi] & (~0ULL << (from & 63)), nw = (b->nbits + 63) / 64;
    while (!w) {
        if (++wi >= nw)
            return b->nbits;
        w = b->w[wi];
    }
    uint64_t i = wi * 64 + (uint64_t)__builtin_ctzll(w);
    return i < b->nbits ? i : b->nbits;
}

void bm_bitmap_to_bytes(const struct bm_bitmap *b, uint8_t *out)
{
    for (uint64_t k = 0; k < (b->nbits + 7) / 8; k++)
        out[k] = (uint8_t)(b->w[k / 8] >> (8 * (k % 8)));
}

void bm_bitmap_or_bytes(struct bm_bitmap *b, const uint8_t *in)
{
    uint64_t nbytes = (b->nbits + 7) / 8;
    for (uint64_t k = 0; k < nbytes; k++)
        b->w[k / 8] |= (uint64_t)in[k] << (8 * (k % 8));
    if (b->nbits & 63) /* bits past the end in the last byte */
        b->w[b->nbits / 64] &= (1ULL << (b->nbits & 63)) - 1;
}

uint64_t bm_diff_ranges(const uint8_t *a, const uint8_t *b, size_t len, uint64_t base,
                        void (*fn)(void *arg, uint64_t off, uint64_t len), void *arg)
{
    uint64_t total = 0;
    size_t i = 0;

    while (i < len) {
        if (a[i] == b[i]) {
            i++;
            continue;
        }
        size_t start = i;
        while (i < len && a[i] != b[i])
            i++;
        total += i - start;
        if (fn)
            fn(arg, base + start, i - start);
    }
    return total;
}

/* ---- plain image I/O ---- */

static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0) { /* past the end of a shrunk file: zeroes */
            memset((char *)buf + done, 0, len - done);
            break;
        }
        done += (size_t)r;
    }
    return 0;
}

static int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        done += (size_t)r;
    }
    return 0;
}

static int sync_fd(int fd)
{
    return fdatasync(fd) < 0 ? -errno : 0;
}

static int zero_fd(int fd, uint32_t len, uint64_t off, bool may_punch)
{
    if (may_punch && !fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, len))
        return 0;
    if (!fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off, len))
        return 0;
    /* Neither (an old kernel, some block devices): write the zeroes. */
    size_t chunk = len < (1U << 20) ? len : (1U << 20);
    void *z = calloc(1, chunk);
    int rc = 0;
    if (!z)
        return -ENOMEM;
    while (len && !rc) {
        uint32_t n = len < chunk ? len : (uint32_t)chunk;
        rc = pwrite_full(fd, z, n, off);
        off += n;
        len -= n;
    }
    free(z);
    return rc;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        if (*p++)
            return false;
        n--;
    }
    const uint64_t *w = (const uint64_t *)(const void *)p;
    for (; n >= 8; n -= 8)
        if (*w++)
            return false;
    p = (const uint8_t *)w;
    while (n--)
        if (*p++)
            return false;
    return true;
}

int bm_hash_fd(int fd, uint8_t *out, uint32_t len, uint64_t off, uint32_t block)
{
    uint8_t zero_hash[SHA256_LEN];
    uint32_t chunk = len < block ? len : block;
    uint8_t *buf = malloc(chunk);
    bool have_zero = false;
    int rc = 0;

    if (!buf)
        return -ENOMEM;
    for (uint32_t done = 0; done < len; done += chunk, out += SHA256_LEN) {
        uint32_t n = len - done < chunk ? len - done : chunk;
        if ((rc = pread_full(fd, buf, n, off + done)))
            break;
        /* Unwritten space is common in images: hash a zero block once. */
        if (n == chunk && all_zero(buf, n)) {
            if (!have_zero) {
                sha256(buf, n, zero_hash);
                have_zero = true;
            }
            memcpy(out, zero_hash, SHA256_LEN);
        } else {
            sha256(buf, n, out);
        }
    }
    free(buf);
    return rc;
}

int bm_file_open(struct bm_file *f, const char *path, bool read_only)
{
    memset(f, 0, sizeof *f);
    f->fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (f->fd < 0)
        return -errno;
    off_t end = lseek(f->fd, 0, SEEK_END);
    if (end < 0) {
        int e = errno;
        close(f->fd);
        f->fd = -1;
        return -e;
    }
    f->size = (uint64_t)end;
    f->read_only = read_only;
    return 0;
}

void bm_file_close(struct bm_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
}

static int file_pread(void *h, void *buf, uint32_t len, uint64_t off)
{
    struct bm_file *f = h;
    return pread_full(f->fd, buf, len, off);
}

static int file_pwrite(void *h, const void *buf, uint32_t len, uint64_t off, uint32_t flags)
{
    struct bm_file *f = h;
    if (f->promoted)
        return -ESHUTDOWN; /* the old primary after the switch: fenced */
    int rc = pwrite_full(f->fd, buf, len, off);
    if (!rc && (flags & NBD_CMD_FLAG_FUA))
        rc = sync_fd(f->fd);
    return rc;
}

static int file_flush(void *h)
{
    struct bm_file *f = h;
    return sync_fd(f->fd);
}

static int file_trim(void *h, uint32_t len, uint64_t off, uint32_t flags)
{
    struct bm_file *f = h;
    if (f->promoted)
        return -ESHUTDOWN;
    /* Advisory: where holes cannot be punched the data simply stays. */
    if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, len) < 0)
        return 0;
    return flags & NBD_CMD_FLAG_FUA ? sync_fd(f->fd) : 0;
}

static int file_zero(void *h, uint32_t len, uint64_t off, uint32_t flags)
{
    struct bm_file *f = h;
    if (f->promoted)
        return -ESHUTDOWN;
    int rc = zero_fd(f->fd, len, off, !(flags & NBD_CMD_FLAG_NO_HOLE));
    if (!rc && (flags & NBD_CMD_FLAG_FUA))
        rc = sync_fd(f->fd);
    return rc;
}

static int file_hash(void *h, uint8_t *out, uint32_t len, uint64_t off, uint32_t block)
{
    struct bm_file *f = h;
    return bm_hash_fd(f->fd, out, len, off, block);
}

static int file_commit(void *h)
{
    struct bm_file *f = h;
    int rc = sync_fd(f->fd);
    if (!rc)
        f->promoted = true;
    return rc;
}

const struct nbd_ops bm_file_ops = {
    .pread = file_pread,
    .pwrite = file_pwrite,
    .flush = file_flush,
    .trim = file_trim,
    .zero = file_zero,
    .hash = file_hash,
    .commit = file_commit,
};

/* ---- the primary ---- */

/* State file: a 512-byte header, the activity log, then the dirty bitmap.
 * Little-endian numbers. */
#define STATE_MAGIC "VMMIGBM1"
#define STATE_HDR 512
#define STATE_BASELINE 1U /* the bitmap is relative to the peer named in it */
#define STATE_SWITCHED 2U /* handed over to the peer: not to be served again */

struct bm {
    struct bm_file img;
    uint32_t bs;
    uint64_t nblocks, nextents;
    char state_path[4096];
    int state_fd;
    uint64_t al_off, dirty_off;
    int timeout_ms, retry_ms, ncopiers;

    pthread_mutex_t io_lock; /* writes to the state file, in order; taken before lock */
    pthread_mutex_t lock;    /* everything below */
    pthread_cond_t cond;  /* any change: busy, dirty, peer, state */
    struct bm_bitmap dirty, busy, al_disk, al_touched;
    uint32_t *al_inflight;
    bool baseline;
    char baseline_url[512];
    char peer_url[512]; /* wanted; "" none */
    char conn_url[512]; /* what peer is connected to */
    struct nbd_client *peer;
    bool conn_failed; /* its first failure is in last_error */
    int peer_users;
    int busy_waiters; /* threads waiting for busy blocks to be released */
    bool scanning;
    uint64_t scan_cursor;
    int scan_active, copying;
    bool switching, switched, stopping, state_dirty;
    uint64_t cursor;
    uint64_t attempts; /* connection attempts, done */
    uint64_t bytes_sent, hash_bytes, writes_mirrored, resyncs, compared_bytes, rate;
    char last_error[256];

    pthread_t manager, *copiers;
    int ncopiers_started;
    bool manager_started;
};

static void le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

static void le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
    return rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static uint64_t block_len(const struct bm *m, uint64_t b)
{
    uint64_t off = b * m->bs;
    return m->img.size - off < m->bs ? m->img.size - off : m->bs;
}

static void set_error(struct bm *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct bm *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->last_error, sizeof m->last_error, fmt, ap);
    va_end(ap);
}

/* Neither lock held (baseline_url is only changed by the manager, which
 * also calls this). */
static int write_header(struct bm *m, uint32_t flags)
{
    uint8_t h[STATE_HDR] = {0};
    memcpy(h, STATE_MAGIC, 8);
    le32(h + 8, m->bs);
    le32(h + 12, flags);
    le64(h + 16, m->img.size);
    le32(h + 24, BM_AL_BLOCKS);
    strlcpy0((char *)h + 32, m->baseline_url, STATE_HDR - 32);
    pthread_mutex_lock(&m->io_lock);
    int rc = pwrite_full(m->state_fd, h, sizeof h, 0);
    if (!rc)
        rc = sync_fd(m->state_fd);
    pthread_mutex_unlock(&m->io_lock);
    return rc;
}

/* Write the activity log as it is in memory now.  io_lock held, lock not:
 * whoever writes last writes the newest log. */
static int al_write(struct bm *m)
{
    size_t n = (size_t)((m->nextents + 7) / 8);
    uint8_t *bytes = malloc(n ? n : 1);
    int rc;

    if (!bytes)
        return -ENOMEM;
    pthread_mutex_lock(&m->lock);
    bm_bitmap_to_bytes(&m->al_disk, bytes);
    pthread_mutex_unlock(&m->lock);
    rc = pwrite_full(m->state_fd, bytes, n, m->al_off);
    free(bytes);
    return rc ? rc : sync_fd(m->state_fd);
}

/* Mark extents [e1, e2] in the on-disk activity log before a write goes
 * into them (their al_inflight already counts it, so no flush clears them).
 * Lock held; dropped while writing. */
static int al_mark(struct bm *m, uint64_t e1, uint64_t e2)
{
    bool need = false;
    int rc;

    if (!m->baseline)
        return 0; /* no peer copy yet: everything is dirty anyway */
    for (uint64_t e = e1; e <= e2; e++)
        if (!bm_bitmap_test(&m->al_disk, e)) {
            bm_bitmap_set_range(&m->al_disk, e, 1);
            need = true;
        }
    if (!need)
        return 0;
    pthread_mutex_unlock(&m->lock);
    pthread_mutex_lock(&m->io_lock);
    rc = al_write(m);
    pthread_mutex_unlock(&m->io_lock);
    pthread_mutex_lock(&m->lock);
    return rc;
}

/* Persist the precise bitmap, then let the activity log forget extents
 * that saw no write since the last time, when it holds more than
 * BM_AL_MAX of them (or all of them: a clean stop).  Neither lock held:
 * guest writes go on meanwhile (any write after the snapshot keeps its
 * extent in the log). */
static int state_flush(struct bm *m, bool forget_all_idle)
{
    size_t n = (size_t)((m->nblocks + 7) / 8);
    uint8_t *bytes = malloc(n ? n : 1);
    int rc;

    if (!bytes)
        return -ENOMEM;
    pthread_mutex_lock(&m->io_lock);
    pthread_mutex_lock(&m->lock);
    if (!m->baseline) {
        pthread_mutex_unlock(&m->lock);
        rc = 0;
        goto out;
    }
    bm_bitmap_to_bytes(&m->dirty, bytes);
    m->state_dirty = false;
    /* Extents written from here on are kept: touched starts afresh. */
    struct bm_bitmap touched = m->al_touched;
    if ((rc = bm_bitmap_init(&m->al_touched, m->nextents))) {
        m->al_touched = touched;
        pthread_mutex_unlock(&m->lock);
        goto out;
    }
    pthread_mutex_unlock(&m->lock);
    if ((rc = pwrite_full(m->state_fd, bytes, n, m->dirty_off)) || (rc = sync_fd(m->state_fd))) {
        pthread_mutex_lock(&m->lock);
        m->state_dirty = true;
        bm_bitmap_free(&m->al_touched);
        m->al_touched = touched; /* nothing forgotten */
        pthread_mutex_unlock(&m->lock);
        goto out;
    }
    pthread_mutex_lock(&m->lock);
    /* Hot extents stay (re-marking one costs a sync per write), as long as
     * a crash would not make too much dirty. */
    bool forget = forget_all_idle || bm_bitmap_count(&m->al_disk) > BM_AL_MAX;
    for (uint64_t e = 0; e < m->nextents; e++) {
        bool busy = bm_bitmap_test(&touched, e) || bm_bitmap_test(&m->al_touched, e) ||
                    m->al_inflight[e];
        if (busy)
            bm_bitmap_set_range(&m->al_disk, e, 1);
        else if (forget)
            bm_bitmap_clear_range(&m->al_disk, e, 1);
    }
    pthread_mutex_unlock(&m->lock);
    bm_bitmap_free(&touched);
    rc = al_write(m);
out:
    pthread_mutex_unlock(&m->io_lock);
    free(bytes);
    return rc;
}

/* A request to the peer failed: the first failure of a connection is the
 * one worth reporting (the others are its consequence), and the connection
 * is cut so that the manager reconnects.  Lock held. */
static void peer_failed(struct bm *m, struct nbd_client *c, const char *what, uint64_t off, int rc)
{
    if (m->peer != c || m->conn_failed)
        return;
    m->conn_failed = true;
    if (off == UINT64_MAX)
        set_error(m, "peer: %s: %s", what, strerror(-rc));
    else
        set_error(m, "peer: %s at %llu: %s", what, (unsigned long long)off, strerror(-rc));
    nbd_client_kill(c);
}

static struct nbd_client *peer_get(struct bm *m)
{
    if (!m->peer || m->switched)
        return NULL;
    m->peer_users++;
    return m->peer;
}

static void peer_put(struct bm *m, struct nbd_client *c)
{
    /* Only drop_peer waits for the users, and it has unset m->peer first:
     * no broadcast (waking every copier) for each guest write. */
    if (c && --m->peer_users == 0 && m->peer != c)
        pthread_cond_broadcast(&m->cond);
}

/* Let go of the connection: requests in flight fail, new ones see no peer.
 * Lock held; dropped while waiting for the users. */
static void drop_peer(struct bm *m)
{
    struct nbd_client *c = m->peer;
    if (!c)
        return;
    m->peer = NULL;
    m->scanning = false;
    m->conn_url[0] = 0;
    nbd_client_kill(c);
    while (m->peer_users)
        pthread_cond_wait(&m->cond, &m->lock);
    pthread_mutex_unlock(&m->lock);
    nbd_client_close(c);
    pthread_mutex_lock(&m->lock);
    m->state_dirty = true;
    pthread_cond_broadcast(&m->cond);
}

/* Take the blocks [first, first+count) for ourselves (no other writer or
 * copier in them).  Lock held. */
static void busy_wait(struct bm *m)
{
    m->busy_waiters++;
    pthread_cond_wait(&m->cond, &m->lock);
    m->busy_waiters--;
}

static void busy_take(struct bm *m, uint64_t first, uint64_t count)
{
    while (bm_bitmap_any(&m->busy, first, count))
        busy_wait(m);
    bm_bitmap_set_range(&m->busy, first, count);
}

static void busy_release(struct bm *m, uint64_t first, uint64_t count)
{
    bm_bitmap_clear_range(&m->busy, first, count);
    pthread_cond_broadcast(&m->cond);
}

/* Connect to url and decide what to send.  No lock held. */
static int connect_peer(struct bm *m, const char *url)
{
    struct nbd_client_opts o = {.hash_block = m->bs, .timeout_ms = m->timeout_ms};
    struct nbd_client *c;
    char err[300];
    int rc = nbd_client_connect(url, &o, &c, err, sizeof err);

    pthread_mutex_lock(&m->lock);
    if (rc) {
        set_error(m, "%s: %s", url, err);
        goto out;
    }
    if (nbd_client_size(c) < m->img.size) {
        set_error(m, "%s: the peer's image is smaller (%llu < %llu bytes)", url,
                  (unsigned long long)nbd_client_size(c), (unsigned long long)m->img.size);
        rc = -ENOSPC;
    } else if (nbd_client_flags(c) & NBD_FLAG_READ_ONLY) {
        set_error(m, "%s: the peer's export is read-only", url);
        rc = -EROFS;
    } else if (strcmp(m->peer_url, url) || m->stopping || m->switched) {
        rc = -ECANCELED; /* detached meanwhile */
    }
    if (rc) {
        pthread_mutex_unlock(&m->lock);
        nbd_client_close(c);
        pthread_mutex_lock(&m->lock);
        goto out;
    }
    if (!m->baseline || strcmp(m->baseline_url, url)) {
        /* Not the replica the bitmap knows: everything is suspect until
         * compared (vmmig peer) or sent (any other). */
        bm_bitmap_set_range(&m->dirty, 0, m->nblocks);
        m->baseline = true;
        strlcpy0(m->baseline_url, url, sizeof m->baseline_url);
        pthread_mutex_unlock(&m->lock);
        if ((rc = state_flush(m, false)) || (rc = write_header(m, STATE_BASELINE))) {
            nbd_client_close(c);
            pthread_mutex_lock(&m->lock);
            set_error(m, "%s: %s", m->state_path, strerror(-rc));
            goto out;
        }
        pthread_mutex_lock(&m->lock);
        m->scanning = nbd_client_has_vmmig(c);
        m->scan_cursor = 0;
    }
    m->peer = c;
    m->conn_failed = false;
    strlcpy0(m->conn_url, url, sizeof m->conn_url);
    m->resyncs++;
    m->cursor = 0;
out:
    m->attempts++;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static enum bm_state state_of(struct bm *m);

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Connects and reconnects, drops dead connections, persists the bitmap,
 * measures the rate. */
static void *manager_main(void *arg)
{
    struct bm *m = arg;
    double last_flush = now_s(), rate_t = last_flush;
    uint64_t rate_bytes = 0;
    char url[512];

    pthread_mutex_lock(&m->lock);
    while (!m->stopping) {
        if (m->peer && (!nbd_client_alive(m->peer) || strcmp(m->peer_url, m->conn_url)))
            drop_peer(m);
        if (m->peer_url[0] && !m->peer && !m->switched) {
            strlcpy0(url, m->peer_url, sizeof url);
            pthread_mutex_unlock(&m->lock);
            int rc = connect_peer(m, url);
            pthread_mutex_lock(&m->lock);
            if (rc) {
                struct timespec ts;
                deadline_in(&ts, m->retry_ms);
                while (!m->stopping && !strcmp(m->peer_url, url) &&
                       pthread_cond_timedwait(&m->cond, &m->lock, &ts) != ETIMEDOUT)
                    ;
            }
            continue;
        }
        /* An error stays visible until the peer has everything again. */
        if (m->last_error[0] && m->peer && state_of(m) == BM_SYNCED)
            m->last_error[0] = 0;
        double t = now_s();
        if (t - rate_t >= 1.0) {
            m->rate = (uint64_t)((double)(m->bytes_sent - rate_bytes) / (t - rate_t));
            rate_bytes = m->bytes_sent;
            rate_t = t;
        }
        if (t - last_flush >= 1.0 && m->baseline && m->state_dirty) {
            pthread_mutex_unlock(&m->lock);
            int rc = state_flush(m, false);
            pthread_mutex_lock(&m->lock);
            if (rc)
                set_error(m, "%s: %s", m->state_path, strerror(-rc));
            last_flush = t;
        }
        struct timespec ts;
        deadline_in(&ts, 200);
        pthread_cond_timedwait(&m->cond, &m->lock, &ts);
    }
    drop_peer(m);
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

struct diff_sink {
    void (*fn)(void *arg, uint64_t off, uint64_t len);
    void *arg;
    uint64_t off, len; /* the range being grown */
};

static void sink_add(void *arg, uint64_t off, uint64_t len)
{
    struct diff_sink *s = arg;
    if (s->len && s->off + s->len == off) {
        s->len += len;
        return;
    }
    if (s->len && s->fn)
        s->fn(s->arg, s->off, s->len);
    s->off = off;
    s->len = len;
}

static void sink_end(struct diff_sink *s)
{
    if (s->len && s->fn)
        s->fn(s->arg, s->off, s->len);
    s->len = 0;
}

/* Compare blocks [first, first+n) by hash with the peer; clear the dirty
 * bit of every equal block.  The blocks are ours (busy). */
static int scan_chunk(struct bm *m, struct nbd_client *c, uint64_t first, uint64_t n)
{
    uint64_t off = first * m->bs;
    uint32_t len = (uint32_t)((first + n - 1) * m->bs + block_len(m, first + n - 1) - off);
    uint8_t *ph = malloc(n * SHA256_LEN), *lh = malloc(n * SHA256_LEN);
    int rc = -ENOMEM;

    if (!ph || !lh)
        goto out;
    if ((rc = nbd_client_hash(c, ph, len, off)))
        goto out;
    if ((rc = bm_hash_fd(m->img.fd, lh, len, off, m->bs)))
        goto out;
    pthread_mutex_lock(&m->lock);
    for (uint64_t i = 0; i < n; i++)
        if (!memcmp(ph + i * SHA256_LEN, lh + i * SHA256_LEN, SHA256_LEN))
            bm_bitmap_clear_range(&m->dirty, first + i, 1);
    m->hash_bytes += n * SHA256_LEN;
    m->compared_bytes += len;
    pthread_mutex_unlock(&m->lock);
out:
    free(ph);
    free(lh);
    return rc;
}

/* Send blocks [first, first+n) to the peer.  The blocks are ours (busy). */
static int copy_run(struct bm *m, struct nbd_client *c, uint8_t *buf, uint64_t first, uint64_t n,
                    uint64_t *sent)
{
    uint64_t off = first * m->bs;
    uint32_t len = (uint32_t)((first + n - 1) * m->bs + block_len(m, first + n - 1) - off);
    int rc = pread_full(m->img.fd, buf, len, off);

    *sent = 0;
    if (rc)
        return rc;
    if (all_zero(buf, len)) {
        rc = nbd_client_zero(c, len, off, 0);
    } else {
        rc = nbd_client_pwrite(c, buf, len, off, 0);
        *sent = len;
    }
    return rc;
}

/* A copier: takes the next job (a hash comparison while scanning, else the
 * next dirty run) and runs it without the lock. */
static void *copier_main(void *arg)
{
    struct bm *m = arg;
    uint8_t *buf = malloc(COPY_BATCH > m->bs ? COPY_BATCH : m->bs);

    if (!buf)
        return NULL;
    pthread_mutex_lock(&m->lock);
    while (!m->stopping) {
        /* A dead connection waits for the manager to replace it. */
        struct nbd_client *c = m->switched || (m->peer && !nbd_client_alive(m->peer)) ? NULL
                                                                                     : m->peer;
        uint64_t first = 0, n = 0;
        bool scan = false;

        if (c && m->scanning && m->scan_cursor < m->nblocks) {
            first = m->scan_cursor;
            n = m->nblocks - first < SCAN_CHUNK ? m->nblocks - first : SCAN_CHUNK;
            m->scan_cursor += n;
            scan = true;
        } else if (c && !m->scanning) {
            uint32_t maxb = nbd_client_max_payload(c) < COPY_BATCH ? nbd_client_max_payload(c)
                                                                   : COPY_BATCH;
            uint64_t batch = maxb / m->bs ? maxb / m->bs : 1;
            /* The next dirty block nobody holds, from the cursor, wrapping once. */
            uint64_t b = bm_bitmap_next_set(&m->dirty, m->cursor);
            bool wrapped = false;
            for (;;) {
                if (b >= m->nblocks) {
                    if (wrapped || !m->cursor)
                        break;
                    wrapped = true;
                    b = bm_bitmap_next_set(&m->dirty, 0);
                    continue;
                }
                if (wrapped && b >= m->cursor) {
                    b = m->nblocks;
                    break;
                }
                if (!bm_bitmap_test(&m->busy, b))
                    break;
                b = bm_bitmap_next_set(&m->dirty, b + 1);
            }
            if (b < m->nblocks) {
                first = b;
                n = 1;
                while (n < batch && first + n < m->nblocks &&
                       bm_bitmap_test(&m->dirty, first + n) && !bm_bitmap_test(&m->busy, first + n))
                    n++;
                m->cursor = first + n;
            }
        }
        if (!n) {
            pthread_cond_wait(&m->cond, &m->lock);
            continue;
        }
        busy_take(m, first, n);
        c = peer_get(m);
        if (!c) { /* gone while we waited */
            if (scan)
                m->scan_cursor = first;
            busy_release(m, first, n);
            continue;
        }
        if (scan) {
            m->scan_active++;
        } else {
            bm_bitmap_clear_range(&m->dirty, first, n);
            m->copying++;
        }
        pthread_mutex_unlock(&m->lock);

        uint64_t sent = 0;
        int rc = scan ? scan_chunk(m, c, first, n) : copy_run(m, c, buf, first, n, &sent);

        pthread_mutex_lock(&m->lock);
        if (scan) {
            m->scan_active--;
            if (rc)
                m->scan_cursor = first < m->scan_cursor ? first : m->scan_cursor;
            else if (m->scan_cursor >= m->nblocks && !m->scan_active && m->peer == c) {
                m->scanning = false;
                m->state_dirty = true;
            }
        } else {
            m->copying--;
            if (rc)
                bm_bitmap_set_range(&m->dirty, first, n);
            else
                m->bytes_sent += sent;
            m->state_dirty = true;
        }
        if (rc)
            peer_failed(m, c, scan ? "hash" : "write", first * m->bs, rc);
        peer_put(m, c);
        busy_release(m, first, n);
    }
    pthread_mutex_unlock(&m->lock);
    free(buf);
    return NULL;
}

/* ---- guest I/O ---- */

enum op { OP_WRITE, OP_ZERO, OP_TRIM };

static int guest_change(struct bm *m, enum op op, const void *buf, uint32_t len, uint64_t off,
                        uint32_t flags)
{
    uint64_t first = off / m->bs, last = (off + len - 1) / m->bs, n = last - first + 1;
    uint64_t e1 = first / BM_AL_BLOCKS, e2 = last / BM_AL_BLOCKS;
    struct nbd_client *c;
    int rc = 0, prc = 0;

    pthread_mutex_lock(&m->lock);
    for (;;) {
        if (m->switched) {
            pthread_mutex_unlock(&m->lock);
            return -ESHUTDOWN;
        }
        if (!m->switching && !bm_bitmap_any(&m->busy, first, n))
            break;
        busy_wait(m);
    }
    bm_bitmap_set_range(&m->busy, first, n);
    for (uint64_t e = e1; e <= e2; e++)
        m->al_inflight[e]++;
    bm_bitmap_set_range(&m->al_touched, e1, e2 - e1 + 1);
    if ((rc = al_mark(m, e1, e2))) {
        set_error(m, "%s: %s", m->state_path, strerror(-rc));
        for (uint64_t e = e1; e <= e2; e++)
            m->al_inflight[e]--;
        busy_release(m, first, n);
        pthread_mutex_unlock(&m->lock);
        return -EIO; /* we could not record it: do not write it */
    }
    c = peer_get(m);
    pthread_mutex_unlock(&m->lock);

    bool mirror = true;
    switch (op) {
    case OP_WRITE: {
        /* The peer's round trip and the local write (and its sync, FUA)
         * overlap: the guest is answered once both are done. */
        struct nbd_pending pw;
        if (c)
            nbd_client_pwrite_start(c, &pw, buf, len, off, flags);
        rc = pwrite_full(m->img.fd, buf, len, off);
        if (!rc && (flags & NBD_CMD_FLAG_FUA))
            rc = sync_fd(m->img.fd);
        if (c)
            prc = nbd_client_wait(c, &pw);
        flags &= ~(uint32_t)NBD_CMD_FLAG_FUA; /* synced above */
        break;
    }
    case OP_ZERO:
        rc = zero_fd(m->img.fd, len, off, !(flags & NBD_CMD_FLAG_NO_HOLE));
        if (!rc && c)
            prc = nbd_client_zero(c, len, off, flags);
        break;
    case OP_TRIM:
        /* Mirrored as zeroes: a peer's trim need not read back as zero. */
        if (fallocate(m->img.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, len) <
            0) {
            mirror = false; /* advisory; nothing changed here */
            break;
        }
        if (c)
            prc = nbd_client_zero(c, len, off, flags);
        break;
    }
    if (!rc && (flags & NBD_CMD_FLAG_FUA))
        rc = sync_fd(m->img.fd);

    pthread_mutex_lock(&m->lock);
    /* Wake the others only when they may care: someone waits for these
     * blocks, dirty blocks change (copiers' work, the synced state), or a
     * copier passed them over while busy.  A mirrored write into clean
     * blocks wakes nobody (it used to wake every copier and the manager). */
    bool wake = m->busy_waiters || prc || bm_bitmap_any(&m->dirty, first, n);
    if (mirror) {
        if (rc || !c || prc) {
            bm_bitmap_set_range(&m->dirty, first, n);
            wake = true;
        } else {
            /* Whole blocks the peer now has are in sync, whatever they were. */
            uint64_t f = (off + m->bs - 1) / m->bs, end = off + len;
            for (uint64_t b = f; b <= last && b * m->bs + block_len(m, b) <= end; b++)
                bm_bitmap_clear_range(&m->dirty, b, 1);
            m->writes_mirrored++;
        }
        m->state_dirty = true;
    }
    if (prc)
        peer_failed(m, c, op == OP_WRITE ? "write" : "zero", off, prc);
    peer_put(m, c);
    for (uint64_t e = e1; e <= e2; e++)
        m->al_inflight[e]--;
    bm_bitmap_clear_range(&m->busy, first, n);
    if (wake)
        pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int bm_pread(void *h, void *buf, uint32_t len, uint64_t off)
{
    struct bm *m = h;
    return pread_full(m->img.fd, buf, len, off);
}

static int bm_pwrite(void *h, const void *buf, uint32_t len, uint64_t off, uint32_t flags)
{
    return guest_change(h, OP_WRITE, buf, len, off, flags);
}

static int bm_zero(void *h, uint32_t len, uint64_t off, uint32_t flags)
{
    return guest_change(h, OP_ZERO, NULL, len, off, flags);
}

static int bm_trim(void *h, uint32_t len, uint64_t off, uint32_t flags)
{
    return guest_change(h, OP_TRIM, NULL, len, off, flags);
}

static int bm_flush(void *h)
{
    struct bm *m = h;
    int rc = sync_fd(m->img.fd);

    if (rc)
        return rc;
    pthread_mutex_lock(&m->lock);
    struct nbd_client *c = peer_get(m);
    pthread_mutex_unlock(&m->lock);
    if (!c)
        return 0;
    int prc = nbd_client_flush(c);
    pthread_mutex_lock(&m->lock);
    if (prc)
        peer_failed(m, c, "flush", UINT64_MAX, prc);
    peer_put(m, c);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

const struct nbd_ops bm_nbd_ops = {
    .pread = bm_pread,
    .pwrite = bm_pwrite,
    .flush = bm_flush,
    .trim = bm_trim,
    .zero = bm_zero,
};

/* ---- open, close ---- */

static int load_state(struct bm *m, char *err, size_t errlen)
{
    uint8_t h[STATE_HDR];
    struct stat st;
    int rc;

    if (fstat(m->state_fd, &st) < 0)
        return -errno;
    if (st.st_size == 0)
        return 0; /* new */
    if ((rc = pread_full(m->state_fd, h, sizeof h, 0)))
        return rc;
    if (memcmp(h, STATE_MAGIC, 8)) {
        snprintf(err, errlen, "%s: not a blockmirror state file", m->state_path);
        return -EINVAL;
    }
    uint32_t bs = rd32(h + 8), flags = rd32(h + 12), al_blocks = rd32(h + 24);
    uint64_t size = rd64(h + 16);
    if (size != m->img.size || al_blocks != BM_AL_BLOCKS || bs < NBD_HASH_MIN_BLOCK ||
        bs > NBD_MAX_PAYLOAD || (bs & (bs - 1))) {
        snprintf(err, errlen,
                 "%s: made for an image of %llu bytes (this one has %llu); remove it to start "
                 "over",
                 m->state_path, (unsigned long long)size, (unsigned long long)m->img.size);
        return -EINVAL;
    }
    if (flags & STATE_SWITCHED) {
        h[STATE_HDR - 1] = 0;
        snprintf(err, errlen,
                 "this image was handed over to %s by a switch; remove %s to serve it again",
                 (char *)h + 32, m->state_path);
        return -EBUSY;
    }
    m->bs = bs;
    m->baseline = flags & STATE_BASELINE;
    h[STATE_HDR - 1] = 0;
    strlcpy0(m->baseline_url, (char *)h + 32, sizeof m->baseline_url);
    return 1;
}

static int setup_bitmaps(struct bm *m, bool load, char *err, size_t errlen)
{
    int rc;

    m->nblocks = (m->img.size + m->bs - 1) / m->bs;
    m->nextents = (m->nblocks + BM_AL_BLOCKS - 1) / BM_AL_BLOCKS;
    m->al_off = STATE_HDR;
    m->dirty_off = STATE_HDR + ((m->nextents + 7) / 8 + 511) / 512 * 512;
    if ((rc = bm_bitmap_init(&m->dirty, m->nblocks)) || (rc = bm_bitmap_init(&m->busy, m->nblocks)) ||
        (rc = bm_bitmap_init(&m->al_disk, m->nextents)) ||
        (rc = bm_bitmap_init(&m->al_touched, m->nextents)))
        return rc;
    if (!(m->al_inflight = calloc(m->nextents + 1, sizeof *m->al_inflight)))
        return -ENOMEM;
    if (!load) {
        bm_bitmap_set_range(&m->dirty, 0, m->nblocks); /* no peer has anything yet */
        return write_header(m, 0);
    }
    size_t albytes = (size_t)((m->nextents + 7) / 8), dbytes = (size_t)((m->nblocks + 7) / 8);
    uint8_t *buf = calloc(albytes + dbytes + 1, 1);
    if (!buf)
        return -ENOMEM;
    if ((rc = pread_full(m->state_fd, buf, albytes, m->al_off)) ||
        (rc = pread_full(m->state_fd, buf + albytes, dbytes, m->dirty_off))) {
        free(buf);
        return rc;
    }
    bm_bitmap_or_bytes(&m->dirty, buf + albytes);
    /* Extents the activity log names were being written when we stopped:
     * whatever happened to them, they are dirty. */
    struct bm_bitmap al;
    if (!(rc = bm_bitmap_init(&al, m->nextents))) {
        bm_bitmap_or_bytes(&al, buf);
        for (uint64_t e = bm_bitmap_next_set(&al, 0); e < m->nextents;
             e = bm_bitmap_next_set(&al, e + 1))
            bm_bitmap_set_range(&m->dirty, e * BM_AL_BLOCKS, BM_AL_BLOCKS);
        bm_bitmap_free(&al);
    }
    free(buf);
    if (!m->baseline)
        bm_bitmap_set_range(&m->dirty, 0, m->nblocks);
    if (!rc)
        rc = state_flush(m, true);
    (void)err, (void)errlen;
    return rc;
}

static int default_state_path(const struct bm_opts *o, bool blockdev, char *out, size_t size)
{
    if (o->state_path) {
        snprintf(out, size, "%s", o->state_path);
        return 0;
    }
    if (!blockdev) {
        snprintf(out, size, "%s" BM_STATE_SUFFIX, o->image);
        return 0;
    }
    /* Not next to a device node: in the state directory. */
    const char *base = strrchr(o->image, '/');
    base = base ? base + 1 : o->image;
    snprintf(out, size, "%s/blockmirror", o->state_dir ? o->state_dir : "/var/lib/vmmig");
    int rc = mkdir_p(out, 0700);
    if (rc)
        return rc;
    size_t n = strlen(out);
    snprintf(out + n, size - n, "/%s" BM_STATE_SUFFIX, base);
    return 0;
}

int bm_open(const struct bm_opts *o, struct bm **out, char *err, size_t errlen)
{
    struct bm *m = calloc(1, sizeof *m);
    struct stat st;
    int rc;

    *out = NULL;
    if (!m)
        return -ENOMEM;
    m->state_fd = -1;
    m->img.fd = -1;
    m->bs = o->block_size ? o->block_size : BM_DEFAULT_BLOCK;
    m->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 10000;
    m->retry_ms = o->retry_ms > 0 ? o->retry_ms : 1000;
    m->ncopiers = o->copiers > 0 ? o->copiers : 4;
    pthread_mutex_init(&m->io_lock, NULL);
    pthread_mutex_init(&m->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cond, &ca);
    pthread_condattr_destroy(&ca);

    if (m->bs < NBD_HASH_MIN_BLOCK || m->bs > NBD_MAX_PAYLOAD || (m->bs & (m->bs - 1))) {
        snprintf(err, errlen, "block size %u: not a power of two from 4096 to %u", m->bs,
                 NBD_MAX_PAYLOAD);
        rc = -EINVAL;
        goto fail;
    }
    if ((rc = bm_file_open(&m->img, o->image, false))) {
        snprintf(err, errlen, "%s: %s", o->image, strerror(-rc));
        goto fail;
    }
    if (!m->img.size) {
        snprintf(err, errlen, "%s: empty image", o->image);
        rc = -EINVAL;
        goto fail;
    }
    if (fstat(m->img.fd, &st) < 0 ||
        (rc = default_state_path(o, S_ISBLK(st.st_mode), m->state_path, sizeof m->state_path))) {
        rc = rc ? rc : -errno;
        snprintf(err, errlen, "state directory: %s", strerror(-rc));
        goto fail;
    }
    m->state_fd = open(m->state_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (m->state_fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s", m->state_path, strerror(-rc));
        goto fail;
    }
    /* One primary per image. */
    if (flock(m->state_fd, LOCK_EX | LOCK_NB) < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s (is another blockmirror serving %s?)", m->state_path,
                 strerror(-rc), o->image);
        goto fail;
    }
    err[0] = 0;
    if ((rc = load_state(m, err, errlen)) < 0) {
        if (!err[0])
            snprintf(err, errlen, "%s: %s", m->state_path, strerror(-rc));
        goto fail;
    }
    if ((rc = setup_bitmaps(m, rc == 1, err, errlen))) {
        snprintf(err, errlen, "%s: %s", m->state_path, strerror(-rc));
        goto fail;
    }
    if (pthread_create(&m->manager, NULL, manager_main, m)) {
        rc = -EAGAIN;
        snprintf(err, errlen, "cannot start a thread");
        goto fail;
    }
    m->manager_started = true;
    m->copiers = calloc((size_t)m->ncopiers, sizeof *m->copiers);
    for (; m->copiers && m->ncopiers_started < m->ncopiers; m->ncopiers_started++)
        if (pthread_create(&m->copiers[m->ncopiers_started], NULL, copier_main, m))
            break;
    if (!m->ncopiers_started) {
        rc = -EAGAIN;
        snprintf(err, errlen, "cannot start a thread");
        goto fail;
    }
    *out = m;
    return 0;
fail:
    bm_close(m);
    return rc;
}

void bm_close(struct bm *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->stopping = true;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    if (m->manager_started)
        pthread_join(m->manager, NULL);
    for (int i = 0; i < m->ncopiers_started; i++)
        pthread_join(m->copiers[i], NULL);
    free(m->copiers);
    pthread_mutex_lock(&m->lock);
    drop_peer(m);
    bool flush = m->state_fd >= 0 && m->dirty.w && m->al_inflight && !m->switched;
    if (flush) {
        /* A clean stop: the precise bitmap, an empty activity log. */
        for (uint64_t e = 0; e < m->nextents; e++)
            m->al_inflight[e] = 0;
        bm_bitmap_clear_range(&m->al_touched, 0, m->nextents);
    }
    pthread_mutex_unlock(&m->lock);
    if (flush)
        state_flush(m, true);
    if (m->img.fd >= 0)
        fdatasync(m->img.fd);
    bm_file_close(&m->img);
    if (m->state_fd >= 0)
        close(m->state_fd);
    bm_bitmap_free(&m->dirty);
    bm_bitmap_free(&m->busy);
    bm_bitmap_free(&m->al_disk);
    bm_bitmap_free(&m->al_touched);
    free(m->al_inflight);
    pthread_cond_destroy(&m->cond);
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->io_lock);
    free(m);
}

uint64_t bm_size(const struct bm *m)
{
    return m->img.size;
}

/* ---- control ---- */

const char *bm_state_name(enum bm_state s)
{
    switch (s) {
    case BM_STANDALONE: return "standalone";
    case BM_DISCONNECTED: return "disconnected";
    case BM_SYNCING: return "syncing";
    case BM_SYNCED: return "synced";
    case BM_SWITCHED: return "switched";
    }
    return "?";
}

/* Lock held. */
static uint64_t dirty_bytes(struct bm *m)
{
    uint64_t n = bm_bitmap_count(&m->dirty) * m->bs;
    /* The last block may be short. */
    if (bm_bitmap_test(&m->dirty, m->nblocks - 1))
        n -= m->bs - block_len(m, m->nblocks - 1);
    return n;
}

static enum bm_state state_of(struct bm *m)
{
    if (m->switched)
        return BM_SWITCHED;
    if (!m->peer_url[0])
        return BM_STANDALONE;
    if (!m->peer)
        return BM_DISCONNECTED;
    if (m->scanning || m->copying || bm_bitmap_next_set(&m->dirty, 0) < m->nblocks)
        return BM_SYNCING;
    return BM_SYNCED;
}

void bm_get_status(struct bm *m, struct bm_status *st)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&m->lock);
    st->state = state_of(m);
    st->size = m->img.size;
    st->block_size = m->bs;
    st->dirty_bytes = dirty_bytes(m);
    st->synced_bytes = m->baseline ? m->img.size - st->dirty_bytes : 0;
    st->bytes_sent = m->bytes_sent;
    st->hash_bytes = m->hash_bytes;
    st->rate = m->rate;
    st->writes_mirrored = m->writes_mirrored;
    st->resyncs = m->resyncs;
    st->compared_bytes = m->compared_bytes;
    strlcpy0(st->peer, m->peer_url[0] ? m->peer_url : "none", sizeof st->peer);
    strlcpy0(st->last_error, m->last_error, sizeof st->last_error);
    strlcpy0(st->state_path, m->state_path, sizeof st->state_path);
    pthread_mutex_unlock(&m->lock);
}

void bm_set_peer(struct bm *m, const char *url)
{
    pthread_mutex_lock(&m->lock);
    strlcpy0(m->peer_url, url, sizeof m->peer_url);
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
}

int bm_attach(struct bm *m, const char *url, bool wait_sync, char *err, size_t errlen)
{
    int rc = 0;

    pthread_mutex_lock(&m->lock);
    if (m->switched) {
        snprintf(err, errlen, "switched: this side no longer owns the image");
        rc = -ESHUTDOWN;
        goto out;
    }
    if (m->peer_url[0] && strcmp(m->peer_url, url)) {
        snprintf(err, errlen, "already attached to %s (detach first)", m->peer_url);
        rc = -EBUSY;
        goto out;
    }
    if (!m->peer_url[0] || !m->peer) {
        uint64_t before = m->attempts;
        strlcpy0(m->peer_url, url, sizeof m->peer_url);
        pthread_cond_broadcast(&m->cond);
        while (!m->peer && m->attempts == before && !m->stopping)
            pthread_cond_wait(&m->cond, &m->lock);
        if (!m->peer) {
            snprintf(err, errlen, "%s", m->last_error[0] ? m->last_error : "cannot connect");
            m->peer_url[0] = 0;
            pthread_cond_broadcast(&m->cond);
            rc = -ECONNREFUSED;
            goto out;
        }
    }
    while (wait_sync && m->peer && !m->stopping && state_of(m) != BM_SYNCED)
        pthread_cond_wait(&m->cond, &m->lock);
    if (wait_sync && state_of(m) != BM_SYNCED) {
        snprintf(err, errlen, "lost the peer before the sync ended: %s", m->last_error);
        rc = -ECONNRESET;
    }
out:
    pthread_mutex_unlock(&m->lock);
    return rc;
}

void bm_detach(struct bm *m)
{
    pthread_mutex_lock(&m->lock);
    m->peer_url[0] = 0;
    pthread_cond_broadcast(&m->cond);
    while (m->peer && !m->stopping)
        pthread_cond_wait(&m->cond, &m->lock);
    pthread_mutex_unlock(&m->lock);
}

/* Compare blocks [first, first+n) with the peer; the blocks are ours. */
static int verify_chunk(struct bm *m, struct nbd_client *c, uint64_t first, uint64_t n,
                        struct diff_sink *sink, bool resync, uint64_t *differing)
{
    uint64_t off = first * m->bs;
    uint32_t len = (uint32_t)((first + n - 1) * m->bs + block_len(m, first + n - 1) - off);
    uint8_t *lb = malloc(m->bs), *pb = malloc(m->bs), *ph = NULL, *lh = NULL;
    int rc = -ENOMEM;

    if (!lb || !pb)
        goto out;
    bool by_hash = nbd_client_has_vmmig(c);
    if (by_hash) {
        if (!(ph = malloc(n * SHA256_LEN)) || !(lh = malloc(n * SHA256_LEN)))
            goto out;
        if ((rc = nbd_client_hash(c, ph, len, off)) ||
            (rc = bm_hash_fd(m->img.fd, lh, len, off, m->bs)))
            goto out;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t b = first + i, boff = b * m->bs;
        uint32_t blen = (uint32_t)block_len(m, b);
        if (by_hash && !memcmp(ph + i * SHA256_LEN, lh + i * SHA256_LEN, SHA256_LEN))
            continue;
        /* Differs (or no hashes): the bytes say exactly where. */
        if ((rc = nbd_client_pread(c, pb, blen, boff)) ||
            (rc = pread_full(m->img.fd, lb, blen, boff)))
            goto out;
        uint64_t d = bm_diff_ranges(lb, pb, blen, boff, sink_add, sink);
        *differing += d;
        if (d && resync) {
            pthread_mutex_lock(&m->lock);
            bm_bitmap_set_range(&m->dirty, b, 1);
            m->state_dirty = true;
            pthread_cond_broadcast(&m->cond);
            pthread_mutex_unlock(&m->lock);
        }
    }
    pthread_mutex_lock(&m->lock);
    m->compared_bytes += len;
    if (by_hash)
        m->hash_bytes += n * SHA256_LEN;
    pthread_mutex_unlock(&m->lock);
    rc = 0;
out:
    free(lb);
    free(pb);
    free(ph);
    free(lh);
    return rc;
}

int bm_verify(struct bm *m, bool resync, void (*fn)(void *arg, uint64_t off, uint64_t len),
              void *arg, uint64_t *differing, char *err, size_t errlen)
{
    struct diff_sink sink = {.fn = fn, .arg = arg};
    int rc = 0;

    *differing = 0;
    for (uint64_t first = 0; first < m->nblocks; first += SCAN_CHUNK) {
        uint64_t n = m->nblocks - first < SCAN_CHUNK ? m->nblocks - first : SCAN_CHUNK;
        pthread_mutex_lock(&m->lock);
        struct nbd_client *c = peer_get(m);
        if (!c) {
            pthread_mutex_unlock(&m->lock);
            snprintf(err, errlen, "no peer connected%s%s", m->last_error[0] ? ": " : "",
                     m->last_error);
            rc = -ENOTCONN;
            break;
        }
        busy_take(m, first, n);
        pthread_mutex_unlock(&m->lock);
        rc = verify_chunk(m, c, first, n, &sink, resync, differing);
        pthread_mutex_lock(&m->lock);
        busy_release(m, first, n);
        peer_put(m, c);
        pthread_mutex_unlock(&m->lock);
        if (rc) {
            snprintf(err, errlen, "at %llu: %s", (unsigned long long)(first * m->bs),
                     strerror(-rc));
            break;
        }
    }
    sink_end(&sink);
    if (rc)
        return rc;
    return *differing ? 1 : 0;
}

int bm_switch(struct bm *m, int timeout_ms, char *err, size_t errlen)
{
    struct timespec ts;
    struct nbd_client *c = NULL;
    int rc = 0;

    deadline_in(&ts, timeout_ms);
    pthread_mutex_lock(&m->lock);
    if (m->switched) {
        pthread_mutex_unlock(&m->lock);
        return 0;
    }
    if (m->switching) {
        snprintf(err, errlen, "a switch is already under way");
        pthread_mutex_unlock(&m->lock);
        return -EBUSY;
    }
    /* New writes wait from here on; the ones in flight finish. */
    m->switching = true;
    for (;;) {
        if (!m->peer) {
            snprintf(err, errlen, "the peer is not connected%s%s", m->last_error[0] ? ": " : "",
                     m->last_error);
            rc = -ENOTCONN;
            goto fail;
        }
        if (state_of(m) == BM_SYNCED && !bm_bitmap_any(&m->busy, 0, m->nblocks))
            break;
        m->busy_waiters++; /* for the writes in flight, too */
        int w = pthread_cond_timedwait(&m->cond, &m->lock, &ts);
        m->busy_waiters--;
        if (w == ETIMEDOUT) {
            snprintf(err, errlen, "the peer is not in sync after %d ms (%llu bytes dirty)",
                     timeout_ms, (unsigned long long)dirty_bytes(m));
            rc = -ETIMEDOUT;
            goto fail;
        }
    }
    c = peer_get(m);
    pthread_mutex_unlock(&m->lock);
    if ((rc = sync_fd(m->img.fd)))
        snprintf(err, errlen, "flush: %s", strerror(-rc));
    else if ((rc = nbd_client_flush(c)))
        snprintf(err, errlen, "peer flush: %s", strerror(-rc));
    else if (nbd_client_has_vmmig(c) && (rc = nbd_client_commit(c)))
        snprintf(err, errlen, "peer commit: %s", strerror(-rc));
    pthread_mutex_lock(&m->lock);
    peer_put(m, c);
    if (rc)
        goto fail;
    m->switched = true;
    m->switching = false;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    rc = write_header(m, STATE_BASELINE | STATE_SWITCHED);
    if (rc) { /* the peer is primary now all the same */
        pthread_mutex_lock(&m->lock);
        set_error(m, "%s: %s", m->state_path, strerror(-rc));
        pthread_mutex_unlock(&m->lock);
    }
    return 0;
fail:
    m->switching = false;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    return rc;
}
