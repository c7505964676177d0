/* The guest's hold channel on QEMU (see holdchan.h). */
#define _GNU_SOURCE
#include "holdchan.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void holdchan_init(struct holdchan *h, long long now_ms)
{
    memset(h, 0, sizeof *h);
    h->tokens = HOLDCHAN_BURST;
    h->refill_ms = now_ms;
}

/* A token bucket: the host writes the guest-hold file (and answers) for
 * each request, so a guest cannot make it do that faster than this. */
static bool take_token(struct holdchan *h, long long now_ms)
{
    if (now_ms > h->refill_ms) {
        h->tokens += (double)(now_ms - h->refill_ms) * HOLDCHAN_RATE / 1000.0;
        if (h->tokens > HOLDCHAN_BURST)
            h->tokens = HOLDCHAN_BURST;
        h->refill_ms = now_ms;
    }
    if (h->tokens < 1)
        return false;
    h->tokens -= 1;
    return true;
}

static void line_done(struct holdchan *h, long long now_ms, holdchan_fn *fn, void *arg)
{
    char why[200];
    struct lock_request req;
    bool overlong = h->overlong;
    size_t len = h->len;

    h->len = 0;
    h->overlong = false;
    while (len && h->line[len - 1] == '\r')
        len--;
    if (!len && !overlong)
        return; /* an empty line asks nothing */
    h->line[len] = 0;
    if (!take_token(h, now_ms)) {
        fn(arg, HC_FLOODED, overlong ? "" : h->line, "too many requests");
        return;
    }
    if (overlong) {
        snprintf(why, sizeof why, "request longer than %d bytes", LOCK_REQUEST_MAX);
        fn(arg, HC_INVALID, "", why);
    } else if (!strcmp(h->line, "?")) {
        fn(arg, HC_QUERY, h->line, NULL);
    } else if (h->line[0] == '#') {
        bool good = len <= HOLDCHAN_TOKEN_MAX + 1 && printable(h->line, len);
        fn(arg, good ? HC_SYNC : HC_INVALID, h->line, good ? NULL : "bad #token");
    } else if (lock_request_parse(h->line, len, POLICY_MAX_SECONDS, 0, &req, why, sizeof why)) {
        fn(arg, HC_INVALID, h->line, why);
    } else {
        fn(arg, HC_REQUEST, h->line, NULL);
    }
}

void holdchan_feed(struct holdchan *h, const char *buf, size_t n, long long now_ms,
                   holdchan_fn *fn, void *arg)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            line_done(h, now_ms, fn, arg);
        } else if (h->overlong) {
            continue;
        } else if (h->len >= LOCK_REQUEST_MAX) {
            h->overlong = true; /* nothing of it counts, not even a prefix */
        } else {
            h->line[h->len++] = buf[i];
        }
    }
}

int holdchan_answer_parse(const char *line, char *value, size_t size)
{
    size_t n = strcspn(line, "\r\n");
    const char *v;
    int rc;

    if (!strncmp(line, "ok ", 3)) {
        v = line + 3, rc = 0;
    } else if (!strncmp(line, "error ", 6)) {
        v = line + 6, rc = -EREMOTEIO;
    } else {
        return -EINVAL;
    }
    n -= (size_t)(v - line);
    if (n >= size)
        n = size - 1;
    memcpy(value, v, n);
    value[n] = 0;
    return rc;
}
