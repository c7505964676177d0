/* The stream follower that counts pre-copy rounds (lib/xcstream.c), fed
 * with hand-built libxl v2 streams wrapping a libxc stream. */
#include "tap.h"
#include "util.h"
#include "xcstream.h"

static struct strbuf st;
static bool big; /* the libxc part's byte order */

static void put(uint64_t v, int n, bool bigendian)
{
    uint8_t b[8];
    for (int i = 0; i < n; i++)
        b[bigendian ? n - 1 - i : i] = (uint8_t)(v >> (8 * i));
    sb_add(&st, (const char *)b, (size_t)n);
}

static void pad8(void)
{
    while (st.len % 8)
        sb_add(&st, "", 1);
}

static void libxl_rec(uint32_t type, const char *body, uint32_t len)
{
    put(type, 4, false);
    put(len, 4, false);
    if (len)
        sb_add(&st, body, len);
    pad8();
}

static void xc_rec(uint32_t type, uint32_t len, char fill)
{
    put(type, 4, big);
    put(len, 4, big);
    for (uint32_t i = 0; i < len; i++)
        sb_add(&st, &fill, 1);
    pad8();
}

/* PAGE_DATA for pfns [from, to), each with 16 bytes of "page" data and the
 * page type 0x1 in the top bits (which must not count as part of the pfn). */
static void pages(uint64_t from, uint64_t to)
{
    uint32_t count = (uint32_t)(to - from);
    put(1, 4, big);
    put(8 + count * 8 + count * 16, 4, big);
    put(count, 4, big);
    put(0, 4, big);
    for (uint64_t p = from; p < to; p++)
        put(p | (1ULL << 60), 8, big);
    for (uint32_t i = 0; i < count * 16; i++)
        sb_add(&st, "x", 1);
    pad8();
}

static void build(bool bigendian_xc)
{
    sb_reset(&st);
    big = bigendian_xc;
    put(0x4c6962786c466d74ULL, 8, true); /* "LibxlFmt", version 2, options */
    put(2, 4, true);
    put(0, 4, true);
    libxl_rec(5, "abc", 3); /* some record before the libxc part */
    libxl_rec(1, NULL, 0);  /* LIBXC_CONTEXT */
    put(~0ULL, 8, true);    /* image header: marker, "XENF", version 3, options */
    put(0x58454e46, 4, true);
    put(3, 4, true);
    put(bigendian_xc ? 1 : 0, 2, true);
    put(0, 2, true);
    put(0, 4, true);
    put(3, 4, big); /* domain header: x86 HVM, page shift 12, Xen 4.17 */
    put(12, 2, big);
    put(0, 2, big);
    put(4, 4, big);
    put(17, 4, big);
    xc_rec(0x10, 12, 'i'); /* e.g. TSC_INFO: skipped */
    for (uint64_t p = 0; p < 100; p += 25)
        pages(p, p + 25); /* round 1: every page */
    pages(5, 15);         /* round 2: 10 pages dirtied meanwhile */
    xc_rec(0x80000020, 5, 'o'); /* an optional record between batches */
    pages(2, 5);          /* round 3: 3 pages */
    xc_rec(0, 0, 0);      /* libxc END */
    libxl_rec(3, "emulator", 8);
    libxl_rec(0, NULL, 0); /* libxl END */
}

static unsigned feed_in(size_t piece, struct xcstream *s)
{
    unsigned new_rounds = 0;
    xcs_init(s);
    for (size_t off = 0; off < st.len; off += piece) {
        size_t n = st.len - off < piece ? st.len - off : piece;
        new_rounds += xcs_feed(s, (const uint8_t *)st.s + off, n);
    }
    return new_rounds;
}

int main(void)
{
    static const size_t pieces[] = {1, 3, 8, 7, 4096, 1 << 20};
    struct xcstream s;

    for (int endian = 0; endian < 2; endian++) {
        build(endian);
        for (size_t i = 0; i < sizeof pieces / sizeof *pieces; i++) {
            unsigned nr = feed_in(pieces[i], &s);
            const char *e = endian ? "big-endian libxc" : "little-endian libxc";
            ok(s.state == XCS_DONE, "%s, fed %zu bytes at a time: reaches the libxl END (%s)", e,
               pieces[i], s.why);
            is_int(s.r.round, 3, "  three rounds");
            is_int(nr, 2, "  two round changes reported");
            is_int(s.r.total_pages, 113, "  113 pages in all");
            is_int(s.r.last_round_pages, 10, "  round 2 sent the 10 pages dirtied in round 1");
            is_int(s.r.round_pages, 3, "  round 3 sent 3");
        }
    }

    /* Not a libxl stream: it stops following, and says why. */
    build(false);
    st.s[0] = 'X';
    feed_in(4096, &s);
    ok(s.state == XCS_BAD, "a wrong ident stops it");
    is_str(s.why, "not a libxl v2 stream", "  with the reason");

    /* A PAGE_DATA count larger than its record. */
    sb_reset(&st);
    big = false;
    put(0x4c6962786c466d74ULL, 8, true);
    put(2, 4, true);
    put(0, 4, true);
    libxl_rec(1, NULL, 0);
    put(~0ULL, 8, true);
    put(0x58454e46, 4, true);
    put(3, 4, true);
    put(0, 8, true);
    put(0, 8, false); /* domain header */
    put(0, 8, false);
    put(1, 4, false);
    put(16, 4, false); /* a 16-byte record claiming 1000 pfns */
    put(1000, 4, false);
    put(0, 4, false);
    put(7, 8, false);
    feed_in(5, &s);
    ok(s.state == XCS_BAD, "a PAGE_DATA count beyond its record stops it");
    is_str(s.why, "PAGE_DATA count does not fit its record", "  with the reason");
    is_int(s.r.total_pages, 0, "  and counts nothing");

    /* A truncated stream simply stays unfinished. */
    build(false);
    xcs_init(&s);
    xcs_feed(&s, (const uint8_t *)st.s, st.len / 2);
    ok(s.state != XCS_DONE && s.state != XCS_BAD, "half a stream: still following, no verdict");

    /* The round detector on its own. */
    struct xcs_rounds r = {0};
    ok(!xcs_rounds_page(&r, 3), "pfn 3 starts round 1");
    ok(!xcs_rounds_page(&r, 1ULL << 40), "a huge pfn above it: same round");
    ok(xcs_rounds_page(&r, 3), "pfn 3 again: a new round");
    is_int(r.round, 2, "  round 2");
    is_int(r.last_round_pages, 2, "  round 1 had 2 pages");
    ok(!xcs_rounds_page(&r, 4), "pfn 4 after 3: same round");
    ok(xcs_rounds_page(&r, 1), "pfn 1 after 4: round 3");
    is_int(r.dirty_rate, 2000, "  its dirty rate: 2 pages over a round of under 1 ms, as 1 ms");
    sb_free(&st);
    return done_testing();
}
