/* Follows a libxl migration stream as it passes through, to see the
 * pre-copy rounds that libxl does not report: the pages of each PAGE_DATA
 * record of the embedded libxc stream (docs/specs/libxl-migration-stream
 * and libxc-migration-stream in Xen's tree).  Reporting only: a stream it
 * does not understand turns it off, never the migration. */
#ifndef VMMIG_XCSTREAM_H
#define VMMIG_XCSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Stream positions (libxl header, libxl record, libxc headers, ...). */
enum xcs_state {
    XCS_LIBXL_HDR,
    XCS_LIBXL_REC,
    XCS_XC_IMAGE_HDR,
    XCS_XC_DOMAIN_HDR,
    XCS_XC_REC,
    XCS_XC_PAGE_HDR,
    XCS_XC_PFNS,
    XCS_SKIP,
    XCS_DONE,
    XCS_BAD,
};

/* Rounds, found from the pages themselves: libxc sends a round's pages in
 * increasing pfn order (send_dirty_pages() walks the dirty bitmap), so a
 * pfn not above the last one starts the next round.  A round whose pages
 * all lie above the previous round's last page goes unseen. */
struct xcs_rounds {
    unsigned round;            /* 1 while the first (full) round is sent; 0 before */
    uint64_t round_pages;      /* pages sent in the current round so far */
    uint64_t last_round_pages; /* pages the previous round sent */
    uint64_t total_pages;
    int64_t last_round_ms;     /* how long the previous round took */
    uint64_t dirty_rate;       /* pages/s dirtied: last_round_pages over the round before it */
    struct timespec round_start;
    uint64_t last_pfn;
};

struct xcstream {
    enum xcs_state state;
    uint8_t hdr[24];     /* the header being read */
    size_t have, need;
    uint64_t skip;       /* bytes left to skip in XCS_SKIP */
    enum xcs_state after_skip;
    uint32_t rec_len;    /* body length of the libxc record being read */
    uint32_t count;      /* pfns in the PAGE_DATA record being read */
    uint32_t pfns_done;
    bool big_endian;     /* the libxc stream's own byte order (options bit 0) */
    char why[80];        /* why it stopped (XCS_BAD) */
    struct xcs_rounds r;
};

void xcs_init(struct xcstream *s);
/* Feed the next bytes of the stream.  Returns how many rounds began in
 * these bytes (s->r tells the current one, and what the previous one did). */
unsigned xcs_feed(struct xcstream *s, const uint8_t *buf, size_t len);

/* The round detector alone (also used by xcs_feed): one page sent. */
bool xcs_rounds_page(struct xcs_rounds *r, uint64_t pfn);

#endif
