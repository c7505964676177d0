#define _GNU_SOURCE
#include "state.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool uuid_valid(const char *u)
{
    if (strlen(u) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (u[i] != '-')
                return false;
        } else if (!((u[i] >= '0' && u[i] <= '9') || (u[i] >= 'a' && u[i] <= 'f'))) {
            return false;
        }
    }
    return true;
}

void state_format(const struct domstate *st, struct strbuf *sb)
{
    const struct hold *a = &st->admin;

    sb_printf(sb, "version=1\n");
    if (a->active) {
        sb_printf(sb, "admin=1\nadmin.since=%lld\nadmin.expires=%lld\nadmin.uid=%u\n",
                  (long long)a->since, (long long)a->expires, (unsigned)a->uid);
        sb_printf(sb, "admin.by=%s\nadmin.reason=%s\n", a->by, a->reason);
    }
    if (st->guest_since)
        sb_printf(sb, "guest.since=%lld\n", (long long)st->guest_since);
    if (st->guest_expires)
        sb_printf(sb, "guest.expires=%lld\n", (long long)st->guest_expires);
    for (int i = 0; i < st->npeers; i++)
        sb_printf(sb, "peer=%s\n", st->peers[i]);
}

static int parse_time(const char *v, time_t *out)
{
    long t;
    if (parse_long(v, 0, LONG_MAX, &t))
        return -EINVAL;
    *out = (time_t)t;
    return 0;
}

int state_parse(const char *text, size_t len, struct domstate *out, char *err, size_t errlen)
{
    struct domstate st = {0};
    size_t i = 0;
    int lineno = 0;

    if (memchr(text, 0, len)) {
        snprintf(err, errlen, "state contains a NUL byte");
        return -EINVAL;
    }
    while (i < len) {
        const char *l = text + i, *nl = memchr(l, '\n', len - i);
        size_t ll = nl ? (size_t)(nl - l) : len - i;
        char line[512], *eq, *v;
        long n;

        i += ll + (nl ? 1 : 0);
        lineno++;
        if (!ll)
            continue;
        if (ll >= sizeof line) {
            snprintf(err, errlen, "line %d too long", lineno);
            return -EINVAL;
        }
        memcpy(line, l, ll);
        line[ll] = 0;
        eq = strchr(line, '=');
        if (!eq) {
            snprintf(err, errlen, "line %d: expected key=value", lineno);
            return -EINVAL;
        }
        *eq = 0;
        v = eq + 1;
        int bad = 0;
        if (!strcmp(line, "version"))
            bad = parse_long(v, 1, 1, &n);
        else if (!strcmp(line, "admin"))
            bad = parse_long(v, 0, 1, &n) || !(st.admin.active = n);
        else if (!strcmp(line, "admin.since"))
            bad = parse_time(v, &st.admin.since);
        else if (!strcmp(line, "admin.expires"))
            bad = parse_time(v, &st.admin.expires);
        else if (!strcmp(line, "admin.uid"))
            bad = parse_long(v, 0, UINT_MAX, &n) || ((st.admin.uid = (uid_t)n), 0);
        else if (!strcmp(line, "admin.by"))
            strlcpy0(st.admin.by, v, sizeof st.admin.by);
        else if (!strcmp(line, "admin.reason"))
            bad = strlen(v) > REASON_MAX || (strlcpy0(st.admin.reason, v, sizeof st.admin.reason), 0);
        else if (!strcmp(line, "guest.since"))
            bad = parse_time(v, &st.guest_since);
        else if (!strcmp(line, "guest.expires"))
            bad = parse_time(v, &st.guest_expires);
        else if (!strcmp(line, "peer"))
            bad = !uuid_valid(v) || st.npeers >= PEERS_MAX ||
                  (strlcpy0(st.peers[st.npeers++], v, 37), 0);
        else {
            snprintf(err, errlen, "line %d: unknown key '%.40s'", lineno, line);
            return -EINVAL;
        }
        if (bad) {
            snprintf(err, errlen, "line %d: bad value for %s", lineno, line);
            return -EINVAL;
        }
    }
    *out = st;
    return 0;
}

static int state_path(const char *dir, const char *uuid, char *buf, size_t size)
{
    if (!uuid_valid(uuid))
        return -EINVAL;
    if ((size_t)snprintf(buf, size, "%s/domains/%s", dir, uuid) >= size)
        return -ENAMETOOLONG;
    return 0;
}

int state_load(const char *dir, const char *uuid, struct domstate *st, char *err, size_t errlen)
{
    char path[PATH_MAX], *text;
    size_t len;
    int rc;

    memset(st, 0, sizeof *st);
    rc = state_path(dir, uuid, path, sizeof path);
    if (rc) {
        snprintf(err, errlen, "bad uuid '%s'", uuid);
        return rc;
    }
    rc = read_file(path, &text, &len);
    if (rc == -ENOENT)
        return 0;
    if (rc) {
        snprintf(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    char e[200];
    rc = state_parse(text, len, st, e, sizeof e);
    if (rc)
        snprintf(err, errlen, "%s: %s", path, e);
    free(text);
    return rc;
}

int state_save(const char *dir, const char *uuid, const struct domstate *st)
{
    char path[PATH_MAX];
    struct strbuf sb = {0};
    int rc;

    rc = state_path(dir, uuid, path, sizeof path);
    if (rc)
        return rc;
    state_format(st, &sb);
    rc = atomic_write_mkdir(path, sb.s, sb.len, 0644);
    sb_free(&sb);
    return rc;
}
