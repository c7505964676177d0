/* POLYVAL (lib/polyval.c) against published values and against itself:
 * RFC 8452's Appendix A vector and the POLYVAL inputs and results of its
 * Appendix C (AES-GCM-SIV worked examples), values of an independent
 * bit-at-a-time reference for runs of 8 blocks and more and for
 * polyval_msg(), then the fast paths against the portable C on random keys
 * and data (every nblocks 0..40, lengths 0..300, 1 MiB, unaligned), calls
 * in pieces, polyval_msg()'s padding and length block, the key as plain
 * data and polyval_wipe().  Each check runs on every path the CPU has: the
 * portable C (forced); PCLMULQDQ, in calls of at most 15 blocks, which the
 * VPCLMULQDQ code never takes; and whole calls with the default choice
 * (VPCLMULQDQ for runs of 16 blocks where the CPU and the OS have
 * AVX-512).
 *
 * The reference values ("ref" below) come from this Python, RFC 8452
 * section 3 read literally (dot(a, b) = a * b * x^-128, bit i of byte j the
 * coefficient of x^(8j+i)); it reproduces every RFC vector used here:
 *
 *   P = 1 << 128 | 1 << 127 | 1 << 126 | 1 << 121 | 1
 *   def mul(a, b):
 *       r = 0
 *       while b:
 *           r ^= a if b & 1 else 0; b >>= 1; a <<= 1
 *           a ^= P if a >> 128 else 0
 *       return r
 *   XI = 1 << 127 | 1 << 126 | 1 << 125 | 1 << 120       # x^-1
 *   XI128 = 1
 *   for _ in range(128): XI128 = mul(XI128, XI)
 *   def polyval(h, data):                                  # whole blocks
 *       H, S = int.from_bytes(h, 'little'), 0
 *       for i in range(0, len(data), 16):
 *           S = mul(mul(S ^ int.from_bytes(data[i:i+16], 'little'), H), XI128)
 *       return S.to_bytes(16, 'little')
 *   def msg(h, d):
 *       return polyval(h, d + bytes(-len(d) % 16) + (8 * len(d)).to_bytes(16, 'little'))
 *   def pat(n): return bytes((i * 29 + i // 16 * 3 + 5) & 0xff for i in range(n))
 */
#include <stdlib.h>

#include "polyval.h"
#include "tap.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#define MIB (1u << 20)

enum { PORTABLE, CLMUL, FAST };
static const char *const mode_name[] = {"portable", "PCLMULQDQ", "fastest"};
static int mode;

static void use(int m)
{
    mode = m;
    polyval_use_clmul(m != PORTABLE);
}

static const char *hex(const uint8_t d[POLYVAL_LEN])
{
    static char s[2][2 * POLYVAL_LEN + 1];
    static int which;
    which ^= 1;
    for (size_t i = 0; i < POLYVAL_LEN; i++)
        snprintf(s[which] + 2 * i, 3, "%02x", d[i]);
    return s[which];
}

static void unhex(const char *h, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)strtoul((char[3]){h[2 * i], h[2 * i + 1], 0}, NULL, 16);
}

static void key_hex(struct polyval_key *k, const char *h)
{
    uint8_t b[POLYVAL_LEN];
    unhex(h, b, sizeof b);
    polyval_key_init(k, b);
}

/* polyval_blocks() the way the mode calls it: pieces of at most 15 blocks
 * for PCLMULQDQ alone, else one call. */
static void blocks(const struct polyval_key *k, uint8_t acc[POLYVAL_LEN], const uint8_t *p,
                   size_t n)
{
    size_t piece = mode == CLMUL ? 15 : n;
    do {
        size_t m = n < piece ? n : piece;
        polyval_blocks(k, acc, p, m);
        p += 16 * m;
        n -= m;
    } while (n);
}

/* polyval_msg() as documented in polyval.h, from blocks(): the data
 * zero-padded, then LE64(bits) || 8 zero bytes. */
static void msg_by_blocks(const struct polyval_key *k, const uint8_t *d, size_t len,
                          uint8_t out[POLYVAL_LEN])
{
    uint8_t last[POLYVAL_LEN] = {0};
    uint64_t bits = (uint64_t)len * 8;

    memset(out, 0, POLYVAL_LEN);
    if (len >= 16)
        blocks(k, out, d, len / 16);
    if (len % 16) {
        memcpy(last, d + len / 16 * 16, len % 16);
        blocks(k, out, last, 1);
    }
    memset(last, 0, sizeof last);
    for (int i = 0; i < 8; i++)
        last[i] = (uint8_t)(bits >> 8 * i);
    blocks(k, out, last, 1);
}

/* A message's hash in this mode: polyval_msg() itself, except for
 * PCLMULQDQ alone (polyval_msg() makes one call of all the whole blocks). */
static void msg(const struct polyval_key *k, const uint8_t *d, size_t len,
                uint8_t out[POLYVAL_LEN])
{
    if (mode == CLMUL)
        msg_by_blocks(k, d, len, out);
    else
        polyval_msg(k, d, len, out);
}

static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint64_t next(void) /* xorshift64* */
{
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1du;
}

static void fill(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(next() >> 56);
}

static uint8_t *pat, *rnd, *buf; /* pat(n) above; random; scratch */
#define BUF_LEN (MIB + 64)

/* The RFC's vectors: H, the POLYVAL input, the POLYVAL result. */
static const struct {
    const char *where, *h, *in, *out;
} rfc[] = {
    {"Appendix A", "25629347589242761d31f826ba4b757b",
     "4f4f95668c83dfb6401762bb2d01a262d1a24ddd2721d006bbe45f20d3c9f362",
     "f7a3b47b846119fae5b7866cf5e5b77e"},
    {"C.1, 8-byte plaintext", "d9b360279694941ac5dbc6987ada7377",
     "0100000000000000000000000000000000000000000000004000000000000000",
     "eb93b7740962c5e49d2a90a7dc5cec74"},
    {"C.1, 48-byte plaintext", "d9b360279694941ac5dbc6987ada7377",
     "01000000000000000000000000000000020000000000000000000000000000000300000000000000"
     "000000000000000000000000000000008001000000000000",
     "81388746bc22d26b2abc3dcb15754222"},
    {"C.1, 64-byte plaintext", "d9b360279694941ac5dbc6987ada7377",
     "01000000000000000000000000000000020000000000000000000000000000000300000000000000"
     "0000000000000000040000000000000000000000000000000000000000000000000200000000"
     "0000",
     "1e39b6d3344d348f6044f89935d1cf78"},
    {"C.1, 64-byte plaintext, 1-byte AAD", "d9b360279694941ac5dbc6987ada7377",
     "01000000000000000000000000000000020000000000000000000000000000000300000000000000"
     "0000000000000000040000000000000000000000000000000500000000000000000000000000"
     "000008000000000000000002000000000000",
     "ffcd05d5770f34ad9267f0a59994b15a"},
    {"C.1, 3-byte plaintext, 5-byte AAD", "3e28de1120b2981a0155795ca2812af6",
     "46bb91c3c500000000000000000000007a806c0000000000000000000000000028000000000000"
     "001800000000000000",
     "43d9a745511dcfa21b96dd606f1d5720"},
    {"C.1, 12-byte plaintext, 20-byte AAD", "22f50707a95dd416df069d670cb775e8",
     "c9882e5386fd9f92ec489c8fde2be2cf97e74e930000000000000000000000009f572c614b474591"
     "4474e7c700000000a0000000000000006000000000000000",
     "0cca0423fba9d77fe7e2e6963b08cdd0"},
    {"C.1, 18-byte plaintext, 30-byte AAD", "21c874a8bad3603d1c3e8784df5b3f9f",
     "1860f762ebfbd08284e421702de0de18baa9c9596291b08466f37de21c7f00006b3db4da3d57aa94"
     "842b9803a96e07fb6de70000000000000000000000000000f0000000000000009000000000000000",
     "55462a5afa0da8d646481e049ef9c764"},
    {"C.1, 21-byte plaintext, 35-byte AAD", "3724f55f1d22ac0ab830da0b6a995d74",
     "7576f7028ec6eb5ea7e298342a94d4b202b370ef9768ec6561c4fe6b7e7296fa859c210000000000"
     "0000000000000000e42a3c02c25b64869e146d7b233987bddfc240871d0000000000000000000000"
     "1801000000000000a800000000000000",
     "4cbba090f03f7d1188ea55749fa6c7bd"},
    {"C.2, 8-byte plaintext", "b5d3c529dfafac43136d2d11be284d7f",
     "0100000000000000000000000000000000000000000000004000000000000000",
     "05230f62f0eac8aa14fe4d646b59cd41"},
};

/* The reference's POLYVAL of pat(16 n) under Appendix A's H, and its
 * msg() of pat(len) under C.1's H. */
static const struct {
    size_t n;
    const char *out;
} ref_blocks[] = {
    {8, "4a5f9254800c8f7f0b6268a56d3e43dc"},  {9, "1f6ce2018e8978ad6160a6bd8f20f599"},
    {15, "fcf21a7175aa5e111ae70e31165975bc"}, {16, "113056de377a655a5159c1368f6f72ee"},
    {17, "e294e73b8050a5d3bff1c3b10836d6c9"}, {32, "cfffa56851c1e44940c842f122cbc96a"},
    {33, "1daf86846d7fc8272a94a8afb60b1ea8"}, {40, "7cbd93fb3ae86ddcb33bb569c99fc098"},
    {100, "a18ca5ee404832a9a59f1fa3ab3c509c"},
};
static const struct {
    size_t len;
    const char *out;
} ref_msg[] = {
    {0, "00000000000000000000000000000000"},
    {1, "3ad534db9e988a82e4a67a133779da74"},
    {15, "820f9ad99527d2381a364a606c429819"},
    {16, "c892a5293da13a6c39d32560cbf5a456"},
    {17, "ca8939b2962c59b778b73bd1c9b19b5b"},
    {100, "f0ed29d280d289ea5a85d14766130c8f"},
    {256, "1a5d80f5fe58f2e1d37b8fb6218e2f3f"},
    {1000, "f8eaa099f49682d759dd9cd5fee4f19a"},
    {MIB + 7, "7195d22b8b418b12f2875d474ade4c22"},
};

static void check_known(void)
{
    const char *how = mode_name[mode];
    struct polyval_key k;
    uint8_t acc[POLYVAL_LEN];

    for (size_t v = 0; v < sizeof rfc / sizeof *rfc; v++) {
        size_t n = strlen(rfc[v].in) / 32;
        key_hex(&k, rfc[v].h);
        unhex(rfc[v].in, buf, 16 * n);
        memset(acc, 0, sizeof acc);
        blocks(&k, acc, buf, n);
        is_str(hex(acc), rfc[v].out, "%s: RFC 8452 %s (%zu blocks)", how, rfc[v].where, n);
    }
    /* one block a call: acc carries the state */
    {
        int bad = 0;
        for (size_t v = 0; v < sizeof rfc / sizeof *rfc; v++) {
            size_t n = strlen(rfc[v].in) / 32;
            key_hex(&k, rfc[v].h);
            unhex(rfc[v].in, buf, 16 * n);
            memset(acc, 0, sizeof acc);
            for (size_t i = 0; i < n; i++)
                polyval_blocks(&k, acc, buf + 16 * i, 1);
            bad += strcmp(hex(acc), rfc[v].out) != 0;
        }
        ok(!bad, "%s: the RFC 8452 vectors one block per call", how);
    }

    key_hex(&k, rfc[0].h);
    for (size_t v = 0; v < sizeof ref_blocks / sizeof *ref_blocks; v++) {
        memset(acc, 0, sizeof acc);
        blocks(&k, acc, pat, ref_blocks[v].n);
        is_str(hex(acc), ref_blocks[v].out, "%s: %zu blocks under Appendix A's H (reference)",
               how, ref_blocks[v].n);
    }
    key_hex(&k, rfc[1].h);
    for (size_t v = 0; v < sizeof ref_msg / sizeof *ref_msg; v++) {
        msg(&k, pat, ref_msg[v].len, acc);
        is_str(hex(acc), ref_msg[v].out, "%s: message of %zu bytes (reference)", how,
               ref_msg[v].len);
    }
    if (mode != CLMUL) {
        polyval_msg(&k, NULL, 0, acc);
        is_str(hex(acc), ref_msg[0].out, "%s: polyval_msg(NULL, 0)", how);
    }
}

/* The portable C's POLYVAL, whatever the mode. */
static void portable_blocks(const struct polyval_key *k, uint8_t acc[POLYVAL_LEN],
                            const uint8_t *p, size_t n)
{
    polyval_use_clmul(false);
    polyval_blocks(k, acc, p, n);
    use(mode);
}

static void portable_msg(const struct polyval_key *k, const uint8_t *d, size_t len,
                         uint8_t out[POLYVAL_LEN])
{
    polyval_use_clmul(false);
    polyval_msg(k, d, len, out);
    use(mode);
}

static void check_against_portable(void)
{
    const char *how = mode_name[mode];
    struct polyval_key k;
    uint8_t h[POLYVAL_LEN], a[POLYVAL_LEN], b[POLYVAL_LEN];

    /* every nblocks 0..40: a random key, a random start, offsets 1..15 */
    {
        int bad = 0;
        for (size_t n = 0; n <= 40; n++) {
            const uint8_t *p = rnd + 1 + n % 15 + 1000 * n;
            fill(h, sizeof h);
            polyval_key_init(&k, h);
            fill(a, sizeof a);
            memcpy(b, a, sizeof b);
            blocks(&k, a, p, n);
            portable_blocks(&k, b, p, n);
            if (memcmp(a, b, sizeof a)) {
                printf("# %zu blocks: %s, portable %s\n", n, hex(a), hex(b));
                bad++;
            }
        }
        ok(!bad, "%s: equals the portable C for 0..40 blocks (random keys, unaligned)", how);
    }
    /* lengths 0..300 through msg() */
    {
        int bad = 0;
        for (size_t len = 0; len <= 300; len++) {
            const uint8_t *p = rnd + 3 * len + len % 16;
            fill(h, sizeof h);
            polyval_key_init(&k, h);
            msg(&k, p, len, a);
            portable_msg(&k, p, len, b);
            if (memcmp(a, b, sizeof a)) {
                printf("# %zu bytes: %s, portable %s\n", len, hex(a), hex(b));
                bad++;
            }
        }
        ok(!bad, "%s: equals the portable C for messages of 0..300 bytes", how);
    }
    /* 1 MiB, 1 MiB + 7, unaligned */
    for (size_t len = MIB; len <= MIB + 7; len += 7) {
        fill(h, sizeof h);
        polyval_key_init(&k, h);
        msg(&k, rnd + 5, len, a);
        portable_msg(&k, rnd + 5, len, b);
        is_str(hex(a), hex(b), "%s: equals the portable C for a %zu-byte message", how, len);
    }
}

static void check_calls(void)
{
    const char *how = mode_name[mode];
    struct polyval_key k;
    uint8_t h[POLYVAL_LEN], a[POLYVAL_LEN] = {0}, b[POLYVAL_LEN] = {0};

    fill(h, sizeof h);
    polyval_key_init(&k, h);

    /* 1 MiB in pieces of 0..40 blocks equals one call */
    blocks(&k, a, rnd, MIB / 16);
    for (size_t done = 0, n; done < MIB / 16; done += n) {
        n = (size_t)(next() % 41);
        if (n > MIB / 16 - done)
            n = MIB / 16 - done;
        polyval_blocks(&k, b, rnd + 16 * done, n);
    }
    is_str(hex(b), hex(a), "%s: 1 MiB in calls of 0..40 blocks equals one call", how);

    /* the same 40 blocks at each offset 0..15 */
    {
        int bad = 0;
        memset(a, 0, sizeof a);
        memcpy(buf, rnd, 640);
        blocks(&k, a, buf, 40);
        for (size_t off = 1; off < 16; off++) {
            memset(b, 0, sizeof b);
            memmove(buf + off, rnd, 640);
            blocks(&k, b, buf + off, 40);
            bad += memcmp(a, b, sizeof a) != 0;
        }
        ok(!bad, "%s: 40 blocks at offsets 0..15 agree", how);
    }

    /* polyval_msg() is what polyval.h says: the data zero-padded, then
     * LE64(8 len) || 8 zero bytes */
    {
        int bad = 0;
        for (size_t len = 0; len <= 300; len++) {
            fill(h, sizeof h);
            polyval_key_init(&k, h);
            polyval_msg(&k, rnd + 7 + len, len, a);
            msg_by_blocks(&k, rnd + 7 + len, len, b);
            bad += memcmp(a, b, sizeof a) != 0;
        }
        ok(!bad, "%s: polyval_msg() is POLYVAL(pad(data) || LE64(bits) || 0^64), 0..300 bytes",
           how);
    }

    /* messages differing only in trailing zero bytes differ: the length
     * block, not the padding, tells them apart */
    {
        static uint8_t res[65][POLYVAL_LEN];
        uint8_t m[80] = "vmmig";
        int same = 0;
        for (size_t len = 5; len <= 64; len++)
            msg(&k, m, len, res[len]);
        for (size_t i = 5; i <= 64; i++)
            for (size_t j = i + 1; j <= 64; j++)
                same += !memcmp(res[i], res[j], POLYVAL_LEN);
        ok(!same, "%s: \"vmmig\" + 0..59 zero bytes: 60 different values", how);
        memset(m, 0, sizeof m);
        for (size_t len = 0; len <= 64; len++)
            msg(&k, m, len, res[len]);
        same = 0;
        for (size_t i = 0; i <= 64; i++)
            for (size_t j = i + 1; j <= 64; j++)
                same += !memcmp(res[i], res[j], POLYVAL_LEN);
        ok(!same, "%s: 0..64 zero bytes: 65 different values", how);
    }
}

static void run(int m)
{
    use(m);
    check_known();
    if (m != PORTABLE)
        check_against_portable();
    check_calls();
}

int main(void)
{
    pat = malloc(MIB + 64);
    rnd = malloc(BUF_LEN);
    buf = malloc(BUF_LEN);
    if (!pat || !rnd || !buf)
        return 1;
    for (size_t i = 0; i < MIB + 64; i++)
        pat[i] = (uint8_t)(i * 29 + i / 16 * 3 + 5);
    fill(rnd, BUF_LEN);

    run(PORTABLE);
    if (polyval_clmul_available()) {
        run(CLMUL);
        run(FAST);
#if defined(__x86_64__) || defined(__i386__)
        unsigned a, b, c, d;
        int zmm = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_AVX512F) &&
                  (c & bit_VPCLMULQDQ);
        printf("# this CPU %s AVX-512 VPCLMULQDQ: \"fastest\" %s it for 16 blocks and more\n",
               zmm ? "has" : "lacks", zmm ? "used" : "did not use");
#endif
    } else {
        ok(1, "# SKIP this CPU has no PCLMULQDQ");
    }

    /* the key is plain data: a copy hashes the same; wiped, it is zeros */
    {
        struct polyval_key k, copy;
        uint8_t a[POLYVAL_LEN], b[POLYVAL_LEN], zero[sizeof k];
        key_hex(&k, rfc[0].h);
        memcpy(&copy, &k, sizeof k);
        polyval_wipe(&k);
        memset(zero, 0, sizeof zero);
        ok(!memcmp(&k, zero, sizeof k), "polyval_wipe() zeroes the key");
        polyval_msg(&copy, rnd, 1000, a);
        key_hex(&k, rfc[0].h);
        polyval_msg(&k, rnd, 1000, b);
        is_str(hex(a), hex(b), "a copied key hashes as the original");
    }
    free(pat);
    free(rnd);
    free(buf);
    return done_testing();
}
