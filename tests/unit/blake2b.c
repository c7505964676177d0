/* BLAKE2b (lib/blake2b.c) against digests from Python's hashlib.blake2b. */
#include "blake2b.h"
#include "tap.h"

static const char *hex(const uint8_t *d, size_t n)
{
    static char s[2 * BLAKE2B_MAX_OUT + 1];
    for (size_t i = 0; i < n; i++)
        snprintf(s + 2 * i, 3, "%02x", d[i]);
    return s;
}

static const char *digest(const void *m, size_t len, size_t outlen)
{
    uint8_t d[BLAKE2B_MAX_OUT];
    blake2b(m, len, d, outlen);
    return hex(d, outlen);
}

int main(void)
{
    static uint8_t big[100000], pat[768], xs[128], ys[129];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i % 251);
    for (size_t i = 0; i < sizeof pat; i++)
        pat[i] = (uint8_t)i;
    memset(xs, 'x', sizeof xs);
    memset(ys, 'y', sizeof ys);

    is_str(digest("", 0, 32), "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8",
           "BLAKE2b-256 of the empty message");
    is_str(digest("abc", 3, 32), "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319",
           "BLAKE2b-256 of abc");
    is_str(digest("abc", 3, 64),
           "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
           "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923",
           "BLAKE2b-512 of abc (RFC 7693 appendix A)");
    is_str(digest(xs, sizeof xs, 32), "164ffb7089bae6f5a62fb0795e751dc9e88eac92e1a5b2fafe93a25abf2d9c3b",
           "exactly one block (the last block is compressed as last)");
    is_str(digest(ys, sizeof ys, 32), "1fae0060de404a27c2a5cb5668c24b7277cc51ddd2c3dae88b8a824a81193a49",
           "one block and one byte");
    is_str(digest(pat, sizeof pat, 32), "b8007121274217790e2923e0ad7027986e5a99d5531ef6ae7d294140fc81615d",
           "six blocks");
    is_str(digest(big, sizeof big, 32), "916cfaa800ee55811e82095babeb88ea29c9ef8a36e8d7e20c7b772c344c9e1c",
           "100000 bytes");

    /* Fed in odd pieces, the same digest as in one go. */
    static const size_t pieces[] = {1, 7, 127, 128, 129, 4096};
    char whole[2 * BLAKE2B_MAX_OUT + 1];
    snprintf(whole, sizeof whole, "%s", digest(big, sizeof big, 32));
    for (size_t p = 0; p < sizeof pieces / sizeof *pieces; p++) {
        struct blake2b_ctx ctx;
        uint8_t d[32];
        blake2b_init(&ctx, 32);
        for (size_t off = 0; off < sizeof big; off += pieces[p])
            blake2b_update(&ctx, big + off, sizeof big - off < pieces[p] ? sizeof big - off : pieces[p]);
        blake2b_final(&ctx, d);
        is_str(hex(d, 32), whole, "100000 bytes in pieces of %zu: the one-shot digest", pieces[p]);
    }
    return done_testing();
}
