/* Follows a libxl migration stream to count pre-copy rounds (see xcstream.h). */
#define _POSIX_C_SOURCE 200809L
#include "xcstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define LIBXL_IDENT 0x4c6962786c466d74ULL /* "LibxlFmt" */
#define LIBXL_REC_END 0
#define LIBXL_REC_LIBXC_CONTEXT 1
#define XC_IMAGE_ID 0x58454e46U /* "XENF" */
#define XC_REC_END 0
#define XC_REC_PAGE_DATA 1
#define PFN_MASK 0x000fffffffffffffULL /* the top 4 bits carry the page type */
/* A PAGE_DATA record holds at most 1024 pages in libxc; allow slack. */
#define MAX_PAGE_COUNT (1U << 16)

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t padded(uint64_t n) { return (n + 7) & ~7ULL; }

static int64_t ms_between(const struct timespec *a, const struct timespec *b)
{
    return (int64_t)(b->tv_sec - a->tv_sec) * 1000 + (b->tv_nsec - a->tv_nsec) / 1000000;
}

void xcs_init(struct xcstream *s)
{
    memset(s, 0, sizeof *s);
    s->state = XCS_LIBXL_HDR;
    s->need = 16;
}


bool xcs_rounds_page(struct xcs_rounds *r, uint64_t pfn)
{
    bool new_round = false;
    struct timespec now;

    r->total_pages++;
    if (!r->round) {
        r->round = 1;
        clock_gettime(CLOCK_MONOTONIC, &r->round_start);
    } else if (pfn <= r->last_pfn) {
        /* The pages of round k were dirtied while round k-1 was sent. */
        int64_t before_ms = r->last_round_ms;
        clock_gettime(CLOCK_MONOTONIC, &now);
        r->last_round_ms = ms_between(&r->round_start, &now);
        r->last_round_pages = r->round_pages;
        if (r->round >= 2)
            r->dirty_rate = r->last_round_pages * 1000 / (uint64_t)(before_ms > 0 ? before_ms : 1);
        r->round++;
        r->round_pages = 0;
        r->round_start = now;
        new_round = true;
    }
    r->last_pfn = pfn;
    r->round_pages++;
    return new_round;
}

static void bad(struct xcstream *s, const char *why)
{
    s->state = XCS_BAD;
    snprintf(s->why, sizeof s->why, "%s", why);
}

static void skip_then(struct xcstream *s, uint64_t n, enum xcs_state next, size_t need)
{
    s->have = 0;
    s->need = need;
    if (!n) {
        s->state = next;
        return;
    }
    s->skip = n;
    s->after_skip = next;
    s->state = XCS_SKIP;
}

static uint64_t xc_field(const struct xcstream *s, const uint8_t *p, int n)
{
    return s->big_endian ? be(p, n) : le(p, n);
}

/* A complete header (or pfn) is in s->hdr: act on it. */
static bool on_header(struct xcstream *s)
{
    const uint8_t *h = s->hdr;
    uint64_t type, len;

    switch (s->state) {
    case XCS_LIBXL_HDR:
        if (be(h, 8) != LIBXL_IDENT || be(h + 8, 4) < 2)
            bad(s, "not a libxl v2 stream");
        else
            skip_then(s, 0, XCS_LIBXL_REC, 8);
        return false;
    case XCS_LIBXL_REC:
        type = le(h, 4);
        len = le(h + 4, 4);
        if (type == LIBXL_REC_END)
            s->state = XCS_DONE;
        else if (type == LIBXL_REC_LIBXC_CONTEXT)
            skip_then(s, padded(len), XCS_XC_IMAGE_HDR, 24);
        else
            skip_then(s, padded(len), XCS_LIBXL_REC, 8);
        return false;
    case XCS_XC_IMAGE_HDR:
        if (be(h, 8) != ~0ULL || be(h + 8, 4) != XC_IMAGE_ID) {
            bad(s, "no libxc image header");
            return false;
        }
        s->big_endian = be(h + 16, 2) & 1;
        skip_then(s, 0, XCS_XC_DOMAIN_HDR, 16);
        return false;
    case XCS_XC_DOMAIN_HDR:
        skip_then(s, 0, XCS_XC_REC, 8);
        return false;
    case XCS_XC_REC:
        type = xc_field(s, h, 4) & 0x7fffffffU; /* the top bit marks optional records */
        len = xc_field(s, h + 4, 4);
        s->rec_len = (uint32_t)len;
        if (type == XC_REC_END)
            skip_then(s, padded(len), XCS_LIBXL_REC, 8);
        else if (type == XC_REC_PAGE_DATA && len >= 8)
            skip_then(s, 0, XCS_XC_PAGE_HDR, 8);
        else if (type == XC_REC_PAGE_DATA)
            bad(s, "PAGE_DATA record too short");
        else
            skip_then(s, padded(len), XCS_XC_REC, 8);
        return false;
    case XCS_XC_PAGE_HDR:
        s->count = (uint32_t)xc_field(s, h, 4);
        s->pfns_done = 0;
        if (s->count > MAX_PAGE_COUNT || 8 + (uint64_t)s->count * 8 > s->rec_len)
            bad(s, "PAGE_DATA count does not fit its record");
        else if (!s->count)
            skip_then(s, padded(s->rec_len) - 8, XCS_XC_REC, 8);
        else
            skip_then(s, 0, XCS_XC_PFNS, 8);
        return false;
    case XCS_XC_PFNS: {
        bool nr = xcs_rounds_page(&s->r, xc_field(s, h, 8) & PFN_MASK);
        s->have = 0;
        if (++s->pfns_done == s->count)
            skip_then(s, padded(s->rec_len) - 8 - (uint64_t)s->count * 8, XCS_XC_REC, 8);
        return nr;
    }
    default:
        return false;
    }
}

unsigned xcs_feed(struct xcstream *s, const uint8_t *buf, size_t len)
{
    unsigned new_rounds = 0;

    while (len && s->state != XCS_DONE && s->state != XCS_BAD) {
        if (s->state == XCS_SKIP) {
            size_t n = s->skip < len ? (size_t)s->skip : len;
            buf += n;
            len -= n;
            s->skip -= n;
            if (!s->skip)
                s->state = s->after_skip;
            continue;
        }
        size_t n = s->need - s->have;
        if (n > len)
            n = len;
        memcpy(s->hdr + s->have, buf, n);
        s->have += n;
        buf += n;
        len -= n;
        if (s->have == s->need && on_header(s))
            new_rounds++;
    }
    return new_rounds;
}
