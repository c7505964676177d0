/* The guest's hold channel on QEMU: lines over the virtio-serial port
 * org.vmmig.hold.  lib/backend_qemu.c is the host's end (vmmigfs),
 * guestctl the guest's.
 *
 * Guest -> host, one request a line: "0" or "1 [reason=TEXT] [ttl=S]", the
 * same text as Xen's xenstore node, or "?" (what the host holds for me).
 * Host -> guest, one answer a request: "ok VALUE" (the request the host now
 * holds for the guest) or "error WHY" (refused; the hold is unchanged).
 * A guest that is not reading loses answers, never the host its time.
 * Answers nobody read wait in QEMU until the port is opened again, so a
 * client first sends "#TOKEN" (up to HOLDCHAN_TOKEN_MAX characters), which
 * comes back as it is: the answer after it is the one to its request. */
#ifndef VMMIG_HOLDCHAN_H
#define VMMIG_HOLDCHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lock.h"

#define HOLDCHAN_RATE  10 /* requests a second a guest may make on average */
#define HOLDCHAN_BURST 20 /* and in a burst */
#define HOLDCHAN_TOKEN_MAX 64

enum holdchan_msg {
    HC_REQUEST, /* a valid lock request (line) */
    HC_QUERY,   /* "?" */
    HC_SYNC,    /* "#TOKEN": answered with itself */
    HC_INVALID, /* refused: why says what is wrong */
    HC_FLOODED, /* refused: over the rate */
};

struct holdchan {
    char line[LOCK_REQUEST_MAX + 1];
    size_t len;
    bool overlong; /* the line in progress is dropped at its newline */
    double tokens;
    long long refill_ms;
};

void holdchan_init(struct holdchan *h, long long now_ms);

/* Bytes from the guest: fn runs once for every complete, non-empty line. */
typedef void holdchan_fn(void *arg, enum holdchan_msg m, const char *line, const char *why);
void holdchan_feed(struct holdchan *h, const char *buf, size_t n, long long now_ms,
                   holdchan_fn *fn, void *arg);

/* One answer line from the host (without its newline): 0 with VALUE in
 * value ("ok VALUE"), -EREMOTEIO with WHY in value ("error WHY"), -EINVAL
 * for anything else. */
int holdchan_answer_parse(const char *line, char *value, size_t size);

#endif
