/* blockmirror: a local disk image served to a domain and mirrored to a peer
 * (DRBD protocol C semantics).
 *
 * The primary (struct bm) owns the image.  Guest I/O comes through
 * bm_nbd_ops (the backend of an NBD export): reads are local; a write is
 * applied locally, then on the peer, and only then acknowledged.  When the
 * peer is gone the write is applied locally, its blocks are marked dirty and
 * it is acknowledged: the primary keeps serving.  Copier threads send every
 * dirty block to the peer in the background; a reconnect resends only the
 * dirty blocks.  A peer that is not the one the bitmap is relative to (a
 * stale replica) is compared block by block with SHA-256 hashes (the vmmig
 * NBD extension, nbd.h) and only differing blocks are sent; a plain NBD peer
 * gets everything.
 *
 * Crash safety: the dirty bitmap lives in a state file.  Before the first
 * write into an extent of BM_AL_BLOCKS blocks the extent is marked in the
 * file's activity log and synced (DRBD's activity log); a flusher writes the
 * precise bitmap every second or so, and forgets idle extents once more than
 * BM_AL_MAX are logged (a clean stop forgets them all).  After a crash every
 * block of a logged extent counts as dirty.
 */
#ifndef VMMIG_BLOCKMIRROR_H
#define VMMIG_BLOCKMIRROR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nbd.h"

#define BM_DEFAULT_BLOCK (64U << 10)
#define BM_AL_BLOCKS 64 /* blocks per activity-log extent (4 MiB at 64 KiB) */
#define BM_AL_MAX 1024  /* extents the log keeps while idle (4 GiB at 64 KiB) */
#define BM_STATE_SUFFIX ".bmstate"

/* ---- bitmaps (one bit per block), exposed for the unit tests ---- */

struct bm_bitmap {
    uint64_t nbits;
    uint64_t *w;
};

int bm_bitmap_init(struct bm_bitmap *b, uint64_t nbits);
void bm_bitmap_free(struct bm_bitmap *b);
bool bm_bitmap_test(const struct bm_bitmap *b, uint64_t i);
void bm_bitmap_set_range(struct bm_bitmap *b, uint64_t first, uint64_t count);
void bm_bitmap_clear_range(struct bm_bitmap *b, uint64_t first, uint64_t count);
bool bm_bitmap_any(const struct bm_bitmap *b, uint64_t first, uint64_t count);
uint64_t bm_bitmap_count(const struct bm_bitmap *b);
/* The first set bit at or after from, or nbits. */
uint64_t bm_bitmap_next_set(const struct bm_bitmap *b, uint64_t from);
/* Bytes on disk: bit i is bit i%8 of byte i/8. */
void bm_bitmap_to_bytes(const struct bm_bitmap *b, uint8_t *out);
void bm_bitmap_or_bytes(struct bm_bitmap *b, const uint8_t *in);

/* Calls fn for each maximal run of bytes where a and b differ, with offsets
 * counted from base; returns the number of differing bytes. */
uint64_t bm_diff_ranges(const uint8_t *a, const uint8_t *b, size_t len, uint64_t base,
                        void (*fn)(void *arg, uint64_t off, uint64_t len), void *arg);

/* ---- the plain image backend (the secondary, and tests) ---- */

struct bm_file {
    int fd;
    uint64_t size;
    bool promoted; /* a COMMIT came: the primary handed over, refuse its writes */
    bool read_only;
};

/* Open a raw image or block device; -errno.  bm_file_ops' h is a struct bm_file. */
int bm_file_open(struct bm_file *f, const char *path, bool read_only);
void bm_file_close(struct bm_file *f);
extern const struct nbd_ops bm_file_ops;
/* One SHA-256 per block of [off, off+len) of fd. */
int bm_hash_fd(int fd, uint8_t *out, uint32_t len, uint64_t off, uint32_t block);

/* ---- the primary ---- */

struct bm;

struct bm_opts {
    const char *image;
    const char *state_path; /* NULL: IMAGE.bmstate, or $STATE_DIR/blockmirror/NAME.bmstate
                               for a block device (state_dir) */
    const char *state_dir;
    uint32_t block_size; /* 0: BM_DEFAULT_BLOCK; a power of two from 4 KiB */
    int timeout_ms;      /* a peer request unanswered this long: disconnected */
    int retry_ms;        /* reconnect interval */
    int copiers;         /* background copy threads */
};

enum bm_state { BM_STANDALONE, BM_DISCONNECTED, BM_SYNCING, BM_SYNCED, BM_SWITCHED };

struct bm_status {
    enum bm_state state;
    uint64_t size, dirty_bytes, synced_bytes, bytes_sent, hash_bytes, rate, writes_mirrored;
    uint64_t resyncs, compared_bytes;
    uint32_t block_size;
    char peer[512], last_error[256], state_path[4096];
};

int bm_open(const struct bm_opts *o, struct bm **out, char *err, size_t errlen);
/* Stop the threads, persist the bitmap, close.  NULL is fine. */
void bm_close(struct bm *m);
uint64_t bm_size(const struct bm *m);
extern const struct nbd_ops bm_nbd_ops; /* h is the struct bm */

/* Mirror to url from now on (reconnecting after failures until detach).
 * Connects once before returning: -errno and err when that fails (the peer
 * is then not kept).  wait_sync: also wait for the first full sync. */
int bm_attach(struct bm *m, const char *url, bool wait_sync, char *err, size_t errlen);
/* Keep retrying url in the background even when it is not there yet. */
void bm_set_peer(struct bm *m, const char *url);
void bm_detach(struct bm *m);
void bm_get_status(struct bm *m, struct bm_status *st);
const char *bm_state_name(enum bm_state s);

/* Compare the image with the peer: fn gets each differing byte range.
 * Returns 0 identical, 1 differing, -errno (err says why).  resync: mark
 * the differing blocks dirty so they are sent again. */
int bm_verify(struct bm *m, bool resync, void (*fn)(void *arg, uint64_t off, uint64_t len),
              void *arg, uint64_t *differing, char *err, size_t errlen);

/* The role switch: wait (up to timeout_ms) until the peer has every block
 * and every write, flush both, tell a vmmig peer to become the standalone
 * primary, and stop serving writes here (they fail with ESHUTDOWN).
 * Nothing changes when it fails. */
int bm_switch(struct bm *m, int timeout_ms, char *err, size_t errlen);

#endif
