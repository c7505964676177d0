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

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Words are separated by blanks.  Only the reason may contain blanks: either
 * quoted (reason="two words", read verbatim up to the closing quote) or bare,
 * in which case it runs until a word that starts another field (ttl=...,
 * reason=..., force).  A reason never contains a double quote. */
int lock_request_parse(const char *buf, size_t len, long max_ttl, unsigned flags,
                       struct lock_request *req, char *err, size_t errlen)
{
    struct lock_request r = {0};
    char text[LOCK_REQUEST_MAX + 1];
    bool have_reason = false, have_ttl = false;
    char *p, *w;

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

    p = text;
    while (blank(*p))
        p++;
    if (!*p) {
        snprintf(err, errlen, "empty request (expected 0 or 1)");
        return -EINVAL;
    }
    w = p;
    while (*p && !blank(*p))
        p++;
    if (*p)
        *p++ = 0;
    if (!strcmp(w, "0"))
        r.value = 0;
    else if (!strcmp(w, "1"))
        r.value = 1;
    else {
        snprintf(err, errlen, "'%.40s': expected 0 or 1 first", w);
        return -EINVAL;
    }

    for (;;) {
        while (blank(*p))
            p++;
        if (!*p)
            break;
        if (!strncmp(p, "reason=", 7)) {
            size_t rlen;
            if (have_reason) {
                snprintf(err, errlen, "reason given twice");
                return -EINVAL;
            }
            have_reason = true;
            p += 7;
            if (*p == '"') {
                char *q = strchr(++p, '"');
                if (!q) {
                    snprintf(err, errlen, "unbalanced quote in reason");
                    return -EINVAL;
                }
                rlen = (size_t)(q - p);
                if (q[1] && !blank(q[1])) {
                    snprintf(err, errlen, "text right after the closing quote of reason");
                    return -EINVAL;
                }
                if (rlen > REASON_MAX) {
                    snprintf(err, errlen, "reason longer than %d characters", REASON_MAX);
                    return -EINVAL;
                }
                memcpy(r.reason, p, rlen);
                r.reason[rlen] = 0;
                p = q + 1;
            } else {
                /* Bare: words up to the next field. */
                rlen = 0;
                for (;;) {
                    char *end = p;
                    while (*end && !blank(*end))
                        end++;
                    size_t wl = (size_t)(end - p);
                    if (!wl)
                        break;
                    if (rlen && (!strncmp(p, "ttl=", 4) || !strncmp(p, "reason=", 7) ||
                                 (wl == 5 && !strncmp(p, "force", 5))))
                        break;
                    if (memchr(p, '"', wl)) {
                        snprintf(err, errlen, "a reason may not contain '\"' except as quotes");
                        return -EINVAL;
                    }
                    if (rlen + (rlen ? 1 : 0) + wl > REASON_MAX) {
                        snprintf(err, errlen, "reason longer than %d characters", REASON_MAX);
                        return -EINVAL;
                    }
                    if (rlen)
                        r.reason[rlen++] = ' ';
                    memcpy(r.reason + rlen, p, wl);
                    rlen += wl;
                    r.reason[rlen] = 0;
                    p = end;
                    while (blank(*p))
                        p++;
                }
            }
            if (!r.reason[0]) {
                snprintf(err, errlen, "reason= is empty");
                return -EINVAL;
            }
            continue;
        }
        w = p;
        while (*p && !blank(*p))
            p++;
        if (*p)
            *p++ = 0;
        if (!strncmp(w, "ttl=", 4)) {
            long v;
            if (have_ttl) {
                snprintf(err, errlen, "ttl given twice");
                return -EINVAL;
            }
            have_ttl = true;
            if (parse_long(w + 4, 1, max_ttl, &v)) {
                snprintf(err, errlen, "ttl '%.40s' is not a number of seconds from 1 to %ld",
                         w + 4, max_ttl);
                return -EINVAL;
            }
            r.ttl = v;
        } else if (!strcmp(w, "force")) {
            if (!(flags & LOCKREQ_ALLOW_FORCE)) {
                snprintf(err, errlen, "force is not allowed here");
                return -EINVAL;
            }
            r.force = true;
        } else {
            snprintf(err, errlen, "unknown word '%.40s' (known: reason=, ttl=, force)", w);
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
    /* Quoted, so that words in the reason can never read as other fields. */
    if (req->reason[0])
        sb_printf(sb, strpbrk(req->reason, " \t=") ? " reason=\"%s\"" : " reason=%s",
                  req->reason);
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
