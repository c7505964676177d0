/* libFuzzer target for the NBD server (lib/nbd.c): arbitrary bytes as what
 * a client sent.  The first byte picks the situation:
 *
 *   0 STREAM     nbd_serve reads the whole stream: handshake, options, then
 *                requests and payloads
 *   1 AFTER_GO   the harness puts a valid handshake first (fixed newstyle,
 *                the vmmig option, NBD_OPT_GO), so the input is all requests
 *   2 HEADERS    the input as request headers for nbd_request_decode and
 *                nbd_request_check against limits taken from its first bytes
 *
 * The backend is 1 MiB of memory that aborts on any access outside it: the
 * checks must keep every request in range.  The stream comes from a memfd,
 * replies go to /dev/null.  Seeds: tests/fuzz/nbd_seeds.py. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nbd.h"
#include "sha256.h"

#define SIZE (1U << 20)
static uint8_t mem[SIZE];
static int memfd = -1, nullfd = -1;

static void in_range(uint64_t off, uint32_t len)
{
    if (!len || off > SIZE || len > SIZE - off)
        abort();
}

static int f_pread(void *h, void *buf, uint32_t len, uint64_t off)
{
    (void)h;
    in_range(off, len);
    memcpy(buf, mem + off, len);
    return 0;
}
static int f_pwrite(void *h, const void *buf, uint32_t len, uint64_t off, uint32_t flags)
{
    (void)h;
    in_range(off, len);
    if (flags & ~NBD_CMD_FLAG_FUA)
        abort();
    memcpy(mem + off, buf, len);
    return off == 4096 ? -28 /* ENOSPC: the error path */ : 0;
}
static int f_flush(void *h)
{
    (void)h;
    return 0;
}
static int f_zero(void *h, uint32_t len, uint64_t off, uint32_t flags)
{
    (void)h, (void)flags;
    in_range(off, len);
    memset(mem + off, 0, len);
    return 0;
}
static int f_hash(void *h, uint8_t *out, uint32_t len, uint64_t off, uint32_t block)
{
    (void)h;
    in_range(off, len);
    if (off % block)
        abort();
    for (uint32_t d = 0; d < len; d += block, out += SHA256_LEN)
        sha256(mem + off + d, len - d < block ? len - d : block, out);
    return 0;
}
static int f_commit(void *h)
{
    (void)h;
    return 0;
}

static const struct nbd_ops ops = {f_pread, f_pwrite, f_flush, f_zero, f_zero, f_hash, f_commit};

static void feed(const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
    if (ftruncate(memfd, 0) < 0 || (na && pwrite(memfd, a, na, 0) != (ssize_t)na) ||
        (nb && pwrite(memfd, b, nb, (off_t)na) != (ssize_t)nb) || lseek(memfd, 0, SEEK_SET) < 0)
        abort();
}

/* Client flags, NBD_OPT_VMMIG with 4096, NBD_OPT_GO "" with no info requests. */
static const uint8_t prelude[] = {
    0, 0, 0, 3,                                                   /* FIXED_NEWSTYLE|NO_ZEROES */
    'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T', 0x76, 0x6d, 0x6d, 0x67, 0, 0, 0, 4, 0, 0, 0x10, 0,
    'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T', 0, 0, 0, 7, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (memfd < 0) {
        memfd = memfd_create("nbd_fuzz", MFD_CLOEXEC);
        nullfd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (memfd < 0 || nullfd < 0)
            abort();
    }
    if (size < 1)
        return 0;
    int mode = data[0] % 3;
    data++, size--;

    struct nbd_export exp = {.size = SIZE, .ops = &ops, .read_only = false};
    switch (mode) {
    case 0:
        feed(data, size, NULL, 0);
        nbd_serve(memfd, nullfd, &exp, 1);
        break;
    case 1:
        feed(prelude, sizeof prelude, data, size);
        nbd_serve(memfd, nullfd, &exp, 1);
        break;
    case 2: {
        if (size < 3)
            return 0;
        struct nbd_limits lim = {.size = (uint64_t)data[0] << (data[1] % 40),
                                 .read_only = data[2] & 1,
                                 .hash_block = data[2] & 2 ? 4096U << (data[2] >> 4) : 0};
        data += 3, size -= 3;
        for (; size >= NBD_REQUEST_SIZE; data += NBD_REQUEST_SIZE, size -= NBD_REQUEST_SIZE) {
            struct nbd_request r;
            if (nbd_request_decode(data, &r))
                continue;
            uint32_t e = nbd_request_check(&r, &lim);
            if (e)
                continue;
            /* Whatever passes is in range and within the payload limit. */
            if ((r.type == NBD_CMD_READ || r.type == NBD_CMD_WRITE) &&
                (r.length > NBD_MAX_PAYLOAD || !r.length))
                abort();
            bool ranged = r.type != NBD_CMD_FLUSH && r.type != NBD_CMD_VMMIG_COMMIT &&
                          r.type != NBD_CMD_DISC; /* DISC: the server stops before the check */
            if (ranged && (r.offset > lim.size || r.length > lim.size - r.offset))
                abort();
            if (lim.read_only && (r.type == NBD_CMD_WRITE || r.type == NBD_CMD_TRIM ||
                                  r.type == NBD_CMD_WRITE_ZEROES))
                abort();
            uint8_t back[NBD_REQUEST_SIZE];
            nbd_request_encode(&r, back);
            if (memcmp(back, data, NBD_REQUEST_SIZE))
                abort();
        }
        break;
    }
    }
    return 0;
}
