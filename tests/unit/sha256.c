/* SHA-256 and HMAC-SHA256 against the published vectors: FIPS 180-4's
 * examples (NIST "Cryptographic Algorithm Validation" example values), the
 * one-million-'a' message, RFC 4231's HMAC test cases, padding-boundary
 * lengths, split updates, and the constant-time compare. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"
#include "tap.h"

static void hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static const char *digest_hex(const void *data, size_t len)
{
    static char buf[2 * SHA256_LEN + 1];
    uint8_t d[SHA256_LEN];
    sha256(data, len, d);
    hex(d, sizeof d, buf);
    return buf;
}

static const char *hmac_hex(const void *key, size_t klen, const void *data, size_t dlen,
                            size_t outlen)
{
    static char buf[2 * SHA256_LEN + 1];
    uint8_t d[SHA256_LEN];
    hmac_sha256(key, klen, data, dlen, d);
    hex(d, outlen, buf);
    return buf;
}

static void fill(uint8_t *p, int c, size_t n)
{
    memset(p, c, n);
}

/* Every vector, with the implementation chosen by the caller. */
static void check_all(void)
{
    /* ---- FIPS 180-4 (examples in NIST's SHA256.pdf) ---- */
    is_str(digest_hex("abc", 3),
           "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
           "FIPS 180-4: \"abc\" (one block)");
    {
        const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        is_str(digest_hex(m, strlen(m)),
               "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
               "FIPS 180-4: 448-bit message (two blocks)");
    }
    {
        const char *m = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                        "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
        is_str(digest_hex(m, strlen(m)),
               "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
               "896-bit message");
    }
    is_str(digest_hex("", 0),
           "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "empty message");

    /* ---- long message: one million 'a', in one go and in odd pieces ---- */
    {
        size_t n = 1000000;
        uint8_t *a = malloc(n);
        fill(a, 'a', n);
        is_str(digest_hex(a, n),
               "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
               "one million 'a' (FIPS 180 long message)");
        struct sha256_ctx ctx;
        uint8_t d[SHA256_LEN];
        char h[2 * SHA256_LEN + 1];
        sha256_init(&ctx);
        for (size_t off = 0, step = 1; off < n; off += step, step = step * 3 % 997 + 1)
            sha256_update(&ctx, a + off, off + step > n ? n - off : step);
        sha256_final(&ctx, d);
        hex(d, sizeof d, h);
        is_str(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
               "one million 'a' fed in pieces of 1..997 bytes");
        free(a);
    }
    /* 3 MiB + 5 of a pattern: more than a memory chunk, value from an
     * independent implementation (Python hashlib). */
    {
        size_t n = 3 * 1024 * 1024 + 5;
        uint8_t *p = malloc(n);
        for (size_t i = 0; i < n; i++)
            p[i] = (uint8_t)(i * 7 + 3);
        is_str(digest_hex(p, n),
               "8e412f5c2133ab91c007c92ac99185bd7aeb01a1b4fc67f38cb9d9052f614a3f",
               "3 MiB + 5 bytes");
        free(p);
    }

    /* ---- padding boundaries: the length field fits, just fits, spills ---- */
    {
        static const struct {
            size_t n;
            const char *want;
        } v[] = {
            {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
            {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
            {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
            {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
            {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
            {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
            {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
            {128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e"},
        };
        uint8_t a[128];
        fill(a, 'a', sizeof a);
        for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
            is_str(digest_hex(a, v[i].n), v[i].want, "%zu x 'a' (padding boundary)", v[i].n);
    }

    /* ---- every split of messages up to 130 bytes equals the one-shot ---- */
    {
        uint8_t m[130], one[SHA256_LEN], two[SHA256_LEN];
        int bad = 0;
        for (size_t i = 0; i < sizeof m; i++)
            m[i] = (uint8_t)(i * 31 + 1);
        for (size_t n = 0; n <= sizeof m; n++) {
            sha256(m, n, one);
            for (size_t s = 0; s <= n; s++) {
                struct sha256_ctx ctx;
                sha256_init(&ctx);
                sha256_update(&ctx, m, s);
                sha256_update(&ctx, m + s, n - s);
                sha256_final(&ctx, two);
                bad += memcmp(one, two, sizeof one) != 0;
            }
        }
        is_int(bad, 0, "two-part updates at every split point agree with one-shot");
    }

    /* ---- RFC 4231 HMAC-SHA256 test cases 1-7 ---- */
    {
        uint8_t k[131], d[50];

        fill(k, 0x0b, 20);
        is_str(hmac_hex(k, 20, "Hi There", 8, 32),
               "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
               "RFC 4231 test case 1");
        is_str(hmac_hex("Jefe", 4, "what do ya want for nothing?", 28, 32),
               "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
               "RFC 4231 test case 2 (key shorter than the output)");
        fill(k, 0xaa, 20);
        fill(d, 0xdd, 50);
        is_str(hmac_hex(k, 20, d, 50, 32),
               "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
               "RFC 4231 test case 3");
        for (int i = 0; i < 25; i++)
            k[i] = (uint8_t)(i + 1);
        fill(d, 0xcd, 50);
        is_str(hmac_hex(k, 25, d, 50, 32),
               "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
               "RFC 4231 test case 4");
        fill(k, 0x0c, 20);
        is_str(hmac_hex(k, 20, "Test With Truncation", 20, 16), "a3b6167473100ee06e0c796c2955552b",
               "RFC 4231 test case 5 (truncated to 128 bits, as the protocol's MAC)");
        fill(k, 0xaa, 131);
        const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
        is_str(hmac_hex(k, 131, m6, strlen(m6), 32),
               "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
               "RFC 4231 test case 6 (key longer than a block)");
        const char *m7 = "This is a test using a larger than block-size key and a larger "
                         "than block-size data. The key needs to be hashed before being "
                         "used by the HMAC algorithm.";
        is_str(hmac_hex(k, 131, m7, strlen(m7), 32),
               "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
               "RFC 4231 test case 7 (key and data longer than a block)");

        /* Incremental HMAC: test case 7's data in three pieces. */
        struct hmac_sha256_ctx h;
        uint8_t out[SHA256_LEN];
        char hx[2 * SHA256_LEN + 1];
        hmac_sha256_init(&h, k, 131);
        hmac_sha256_update(&h, m7, 10);
        hmac_sha256_update(&h, m7 + 10, 100);
        hmac_sha256_update(&h, m7 + 110, strlen(m7) - 110);
        hmac_sha256_final(&h, out);
        hex(out, sizeof out, hx);
        is_str(hx, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
               "RFC 4231 test case 7 through init/update/final in pieces");
    }

    /* ---- ct_memeq, secure_zero ---- */
    {
        uint8_t a[32], b[32];
        memset(a, 7, sizeof a);
        memcpy(b, a, sizeof b);
        ok(ct_memeq(a, b, sizeof a), "ct_memeq: equal buffers");
        ok(ct_memeq(a, b, 0), "ct_memeq: empty buffers are equal");
        int all = 1;
        for (size_t i = 0; i < sizeof a; i++)
            for (int bit = 0; bit < 8; bit++) {
                b[i] ^= (uint8_t)(1 << bit);
                all &= !ct_memeq(a, b, sizeof a);
                b[i] ^= (uint8_t)(1 << bit);
            }
        ok(all, "ct_memeq: every single-bit difference is seen");
        secure_zero(a, sizeof a);
        memset(b, 0, sizeof b);
        ok(!memcmp(a, b, sizeof a), "secure_zero clears");
    }
}

/* The SHA-NI code and the portable code agree on messages of every length
 * up to a few blocks, and on a chunk-sized one, at every alignment. */
static void compare_impls(void)
{
    size_t n = (1 << 20) + 3;
    uint8_t *m = malloc(n), d1[SHA256_LEN], d2[SHA256_LEN];
    unsigned x = 12345;
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        m[i] = (uint8_t)((x = x * 1103515245 + 12345) >> 16);
    for (size_t len = 0; len <= 300; len++)
        for (size_t off = 0; off < 4; off += 3) {
            sha256_use_hw(false);
            sha256(m + off, len, d1);
            sha256_use_hw(true);
            sha256(m + off, len, d2);
            bad += memcmp(d1, d2, SHA256_LEN) != 0;
        }
    ok(!bad, "SHA-NI and portable agree on 0..300-byte messages, aligned and not (%d differ)",
       bad);
    sha256_use_hw(false);
    sha256(m + 3, n - 3, d1);
    sha256_use_hw(true);
    sha256(m + 3, n - 3, d2);
    ok(!memcmp(d1, d2, SHA256_LEN), "SHA-NI and portable agree on 1 MiB of random data");
    free(m);
}

int main(void)
{
    printf("# the portable code\n");
    sha256_use_hw(false);
    check_all();
    if (sha256_hw_available()) {
        printf("# SHA-NI\n");
        sha256_use_hw(true);
        check_all();
        compare_impls();
    } else {
        printf("# this CPU has no SHA extensions: their code is not run here\n");
    }
    return done_testing();
}
