#define _GNU_SOURCE
#include "lock.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const kind_names[HOLD_KINDS] = {"static", "guest", "admin"};

const char *hold_kind_name(enum hold_kind k)
{
    return (unsigned)k < HOLD_KINDS ? kind_names[k] : "unknown";
}

int hold_kind_parse(const char *name, enum hold_kind *out)
{
    for (int k = 0; k < HOLD_KINDS; k++)
        if (!strcmp(name, kind_names[k])) {
            *out = (enum hold_kind)k;
            return 0;
        }
    return -EINVAL;
}

/* Tokens are separated by blanks.  Only the reason may contain blanks: a token
 * that does not start a known key continues the reason when one is open.  A
 * reason may also be given in double quotes. */
int lock_request_parse(const char *buf, size_t len, long max_ttl, unsigned flags,
                       struct lock_request *req, char *err, size_t errlen)
{
    struct lock_request r = {0};
    char text[LOCK_REQUEST_MAX + 1];
    char *tok, *save = NULL;
    bool in_reason = false, have_reason = false, have_ttl = false;
    size_t rlen = 0;

    if (len > LOCK_REQUEST_MAX) {
        snprintf(err, errlen, "request too long (%zu bytes, at most %d)", len, LOCK_REQUEST_MAX);
        return -EINVAL;
    }
    if (memchr(buf, 0, len)) {
        snprintf(err, errlen, "request contains a NUL byte");
        return -EINVAL;
    }
    len = chomp(buf, len);
    if (!printable(buf, len)) {
        snprintf(err, errlen, "request contains control characters");
        return -EINVAL;
    }
    memcpy(text, buf, len);
    text[len] = 0;

    tok = strtok_r(text, " \t", &save);
    if (!tok) {
        snprintf(err, errlen, "empty request (expected 0 or 1)");
        return -EINVAL;
    }
    if (!strcmp(tok, "0"))
        r.value = 0;
    else if (!strcmp(tok, "1"))
        r.value = 1;
    else {
        snprintf(err, errlen, "'%.40s': expected 0 or 1 first", tok);
        return -EINVAL;
    }

    while ((tok = strtok_r(NULL, " \t", &save))) {
        if (!strncmp(tok, "reason=", 7)) {
            if (have_reason) {
                snprintf(err, errlen, "reason given twice");
                return -EINVAL;
            }
            have_reason = in_reason = true;
            tok += 7;
            rlen = 0;
            if (!*tok)
                continue;
        } else if (!strncmp(tok, "ttl=", 4)) {
            long v;
            in_reason = false;
            if (have_ttl) {
                snprintf(err, errlen, "ttl given twice");
                return -EINVAL;
            }
            have_ttl = true;
            int rc = parse_long(tok + 4, 1, max_ttl, &v);
            if (rc) {
                snprintf(err, errlen, "ttl '%.40s' is not a number of seconds from 1 to %ld",
                         tok + 4, max_ttl);
                return -EINVAL;
            }
            r.ttl = v;
            continue;
        } else if (!strcmp(tok, "force") && !in_reason) {
            if (!(flags & LOCKREQ_ALLOW_FORCE)) {
                snprintf(err, errlen, "force is not allowed here");
                return -EINVAL;
            }
            r.force = true;
            continue;
        } else if (!in_reason) {
            snprintf(err, errlen, "unknown word '%.40s' (known: reason=, ttl=, force)", tok);
            return -EINVAL;
        }
        /* (Continuation of) the reason. */
        size_t tl = strlen(tok);
        if (rlen + (rlen ? 1 : 0) + tl > REASON_MAX) {
            snprintf(err, errlen, "reason longer than %d characters", REASON_MAX);
            return -EINVAL;
        }
        if (rlen)
            r.reason[rlen++] = ' ';
        memcpy(r.reason + rlen, tok, tl);
        rlen += tl;
        r.reason[rlen] = 0;
    }

    if (have_reason) {
        /* reason="two words" */
        if (rlen >= 2 && r.reason[0] == '"' && r.reason[rlen - 1] == '"') {
            memmove(r.reason, r.reason + 1, rlen - 2);
            rlen -= 2;
            r.reason[rlen] = 0;
        } else if (memchr(r.reason, '"', rlen)) {
            snprintf(err, errlen, "unbalanced quote in reason");
            return -EINVAL;
        }
        if (!rlen) {
            snprintf(err, errlen, "reason= is empty");
            return -EINVAL;
        }
    }
    if (r.value == 0 && (have_reason || have_ttl)) {
        snprintf(err, errlen, "reason= and ttl= go with 1, not 0");
        return -EINVAL;
    }
    if (r.value == 1 && r.force) {
        snprintf(err, errlen, "force goes with 0, not 1");
        return -EINVAL;
    }
    *req = r;
    return 0;
}

void lock_request_format(const struct lock_request *req, struct strbuf *sb)
{
    sb_printf(sb, "%d", req->value);
    if (req->force)
        sb_printf(sb, " force");
    if (req->reason[0])
        sb_printf(sb, " reason=%s", req->reason);
    if (req->ttl)
        sb_printf(sb, " ttl=%ld", req->ttl);
}

bool hold_in_force(const struct hold *h, time_t now)
{
    return h->active && (!h->expires || now < h->expires);
}

bool lockset_locked(const struct lockset *ls, time_t now)
{
    for (int k = 0; k < HOLD_KINDS; k++)
        if (hold_in_force(&ls->h[k], now))
            return true;
    return false;
}

time_t guest_hold_overridable_at(const struct hold *h, const struct policy *p)
{
    if (!h->active || p->guest_max_hold == 0)
        return 0;
    return h->since + p->guest_max_hold;
}

void lockset_describe(const struct lockset *ls, time_t now, struct strbuf *sb)
{
    bool first = true;

    for (int k = 0; k < HOLD_KINDS; k++) {
        const struct hold *h = &ls->h[k];
        if (!hold_in_force(h, now))
            continue;
        sb_printf(sb, "%s%s hold", first ? "" : "; ", hold_kind_name((enum hold_kind)k));
        if (k == HOLD_ADMIN && h->by[0])
            sb_printf(sb, " by %s", h->by);
        if (k == HOLD_STATIC && h->by[0])
            sb_printf(sb, " from %s", h->by);
        if (h->reason[0])
            sb_printf(sb, " (%s)", h->reason);
        first = false;
    }
    if (first)
        sb_printf(sb, "no hold");
}

void lockset_format(const struct lockset *ls, const struct policy *p, time_t now, struct strbuf *sb)
{
    char since[32], expires[32], over[32];

    for (int k = 0; k < HOLD_KINDS; k++) {
        const struct hold *h = &ls->h[k];
        if (!hold_in_force(h, now))
            continue;
        fmt_time(h->since, since, sizeof since);
        fmt_time(h->expires, expires, sizeof expires);
        sb_printf(sb, "hold: %s", hold_kind_name((enum hold_kind)k));
        switch (k) {
        case HOLD_STATIC:
            sb_printf(sb, " source=%s", h->by);
            break;
        case HOLD_ADMIN:
            sb_printf(sb, " by=%s(uid %u) since=%s expires=%s", h->by, (unsigned)h->uid, since,
                      expires);
            break;
        case HOLD_GUEST:
            fmt_time(guest_hold_overridable_at(h, p), over, sizeof over);
            sb_printf(sb, " since=%s expires=%s overridable=%s", since, expires, over);
            break;
        }
        sb_printf(sb, " reason=%s\n", h->reason[0] ? h->reason : "-");
    }
}
