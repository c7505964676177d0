/* The QEMU guest hold channel's line reader (lib/holdchan.c): requests,
 * queries, lines split across reads, garbage and overlong lines refused
 * without taking the next line with them, the flood limit and its refill,
 * and the answer parser guestctl uses. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "holdchan.h"
#include "tap.h"

struct seen {
    int n;
    enum holdchan_msg m[64];
    char line[64][80];
    char why[64][200];
};

static void rec(void *arg, enum holdchan_msg m, const char *line, const char *why)
{
    struct seen *s = arg;
    if (s->n == 64)
        return;
    s->m[s->n] = m;
    snprintf(s->line[s->n], sizeof s->line[0], "%s", line);
    snprintf(s->why[s->n], sizeof s->why[0], "%s", why ? why : "");
    s->n++;
}

static void feed(struct holdchan *h, struct seen *s, const char *text, long long now)
{
    holdchan_feed(h, text, strlen(text), now, rec, s);
}

int main(void)
{
    struct holdchan h;
    struct seen s = {0};

    holdchan_init(&h, 0);
    feed(&h, &s, "1 reason=db checkpoint ttl=300\n0\n?\n", 0);
    is_int(s.n, 3, "three lines, three messages");
    is_int(s.m[0], HC_REQUEST, "lock request");
    is_str(s.line[0], "1 reason=db checkpoint ttl=300", "  as the guest wrote it");
    is_int(s.m[1], HC_REQUEST, "unlock request");
    is_str(s.line[1], "0", "  0");
    is_int(s.m[2], HC_QUERY, "query");

    /* A sync token comes back as it is; a long one is garbage. */
    s.n = 0;
    feed(&h, &s, "#guestctl-12-345\n", 0);
    ok(s.n == 1 && s.m[0] == HC_SYNC && !strcmp(s.line[0], "#guestctl-12-345"), "#token: sync");
    char longtok[HOLDCHAN_TOKEN_MAX + 4];
    memset(longtok, 't', sizeof longtok);
    longtok[0] = '#';
    longtok[sizeof longtok - 2] = '\n';
    longtok[sizeof longtok - 1] = 0;
    s.n = 0;
    feed(&h, &s, longtok, 0);
    ok(s.n == 1 && s.m[0] == HC_INVALID, "a token over %d characters refused", HOLDCHAN_TOKEN_MAX);

    /* Split across reads, CRLF, empty lines. */
    s.n = 0;
    feed(&h, &s, "1 rea", 0);
    is_int(s.n, 0, "no message before the newline");
    feed(&h, &s, "son=x\r\n\n\r\n", 0);
    is_int(s.n, 1, "one message for a split line; empty lines ask nothing");
    is_str(s.line[0], "1 reason=x", "  carriage return dropped");

    /* Garbage: refused with a reason, and the next line is read as usual. */
    static const char *const bad[] = {"yes\n", "2\n", "1 ttl=abc\n", "0 force\n",
                                      "1 reason=a\001b\n", "\377\376\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s.n = 0;
        holdchan_init(&h, 0);
        feed(&h, &s, bad[i], 0);
        feed(&h, &s, "0\n", 0);
        ok(s.n == 2 && s.m[0] == HC_INVALID && s.why[0][0] && s.m[1] == HC_REQUEST,
           "garbage %zu refused (%s), the next line still read", i, s.why[0]);
    }
    s.n = 0;
    holdchan_init(&h, 0);
    holdchan_feed(&h, "1 a\0b\n", 6, 0, rec, &s);
    ok(s.n == 1 && s.m[0] == HC_INVALID, "a NUL byte refused: %s", s.why[0]);

    /* Overlong: refused once at its newline, no prefix of it counts. */
    char *big = malloc(3 * LOCK_REQUEST_MAX);
    memset(big, 'x', 3 * LOCK_REQUEST_MAX);
    memcpy(big, "1 reason=", 9);
    s.n = 0;
    holdchan_init(&h, 0);
    holdchan_feed(&h, big, 3 * LOCK_REQUEST_MAX, 0, rec, &s);
    is_int(s.n, 0, "overlong line: nothing before its newline");
    feed(&h, &s, "xx\n0\n", 0);
    is_int(s.n, 2, "overlong line then a good one");
    is_int(s.m[0], HC_INVALID, "overlong refused");
    ok(strstr(s.why[0], "longer than 1024") != NULL, "  why: %s", s.why[0]);
    is_int(s.m[1], HC_REQUEST, "the next line is a request");
    /* Exactly LOCK_REQUEST_MAX bytes is still a line. */
    memcpy(big, "1 reason=", 9);
    memset(big + 9, 'r', LOCK_REQUEST_MAX - 9);
    big[LOCK_REQUEST_MAX] = '\n';
    s.n = 0;
    holdchan_feed(&h, big, LOCK_REQUEST_MAX + 1, 0, rec, &s);
    ok(s.n == 1 && s.m[0] == HC_INVALID && !strstr(s.why[0], "longer than 1024"),
       "a line of exactly %d bytes is parsed (its reason is too long: %s)", LOCK_REQUEST_MAX,
       s.why[0]);
    free(big);

    /* Flood: a burst, then the rate. */
    s.n = 0;
    holdchan_init(&h, 1000);
    for (int i = 0; i < HOLDCHAN_BURST + 5; i++)
        feed(&h, &s, "?\n", 1000);
    int queries = 0, flooded = 0;
    for (int i = 0; i < s.n; i++)
        queries += s.m[i] == HC_QUERY, flooded += s.m[i] == HC_FLOODED;
    is_int(queries, HOLDCHAN_BURST, "a burst of %d is served", HOLDCHAN_BURST);
    is_int(flooded, 5, "the rest refused as a flood");
    s.n = 0;
    feed(&h, &s, "?\n", 1000 + 1000 / HOLDCHAN_RATE);
    is_int(s.m[0], HC_QUERY, "one more after 1/rate seconds");
    s.n = 0;
    feed(&h, &s, "?\n", 1000 + 1000 / HOLDCHAN_RATE);
    is_int(s.m[0], HC_FLOODED, "but not two");
    s.n = 0;
    for (int i = 0; i < HOLDCHAN_BURST + 1; i++)
        feed(&h, &s, "0\n", 100000);
    is_int(s.m[HOLDCHAN_BURST - 1], HC_REQUEST, "after a long pause the whole burst again");
    is_int(s.m[HOLDCHAN_BURST], HC_FLOODED, "  and no more");

    /* Answers, as guestctl reads them. */
    char v[64];
    is_int(holdchan_answer_parse("ok 1 reason=x", v, sizeof v), 0, "ok answer");
    is_str(v, "1 reason=x", "  its value");
    is_int(holdchan_answer_parse("ok 0\r", v, sizeof v), 0, "ok 0 with a CR");
    is_str(v, "0", "  value 0");
    is_int(holdchan_answer_parse("error too many requests", v, sizeof v), -EREMOTEIO,
           "error answer");
    is_str(v, "too many requests", "  its reason");
    is_int(holdchan_answer_parse("hello", v, sizeof v), -EINVAL, "not an answer");
    is_int(holdchan_answer_parse("ok", v, sizeof v), -EINVAL, "ok without a value");
    is_int(holdchan_answer_parse("ok 1 reason=a long one", v, 8), 0, "long value, small buffer");
    is_str(v, "1 reaso", "  cut to the buffer");
    return done_testing();
}
