#define _GNU_SOURCE
#include "policy.h"
#include "migjob.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void policy_defaults(struct policy *p)
{
    memset(p, 0, sizeof *p);
    p->guest_max_hold = 3600;
    p->max_ttl = 86400;
    strlcpy0(p->transport, "tcp", sizeof p->transport);
    p->port = POLICY_DEFAULT_PORT;
    p->migrate_timeout = 30;
    p->forward_ttl = 3600;
    p->accept_incoming = true;
}

static const char *trim(char *s)
{
    char *e;
    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        *--e = 0;
    return s;
}

static bool valid_group_name(const char *s)
{
    if (strlen(s) >= 64)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-' || *s == '.'))
            return false;
    return true;
}

/* "tcp", or a command template.  The value must survive a round trip through
 * the file (no '#', no quotes) and name the host: %h, the only % sequence. */
static int check_transport(const char *v, char *err, size_t errlen)
{
    bool host = false;

    if (!strcmp(v, "tcp"))
        return 0;
    if (!*v) {
        snprintf(err, errlen, "transport: empty (expected tcp, or a command with %%h for the host, "
                              "e.g. ssh %%h vmmig receive)");
        return -EINVAL;
    }
    if (strlen(v) >= sizeof ((struct policy *)0)->transport) {
        snprintf(err, errlen, "transport: longer than %zu characters",
                 sizeof ((struct policy *)0)->transport - 1);
        return -EINVAL;
    }
    if (strpbrk(v, "\"#")) {
        snprintf(err, errlen, "transport: '%s' contains a quote or '#'", v);
        return -EINVAL;
    }
    for (const char *p = v; (p = strchr(p, '%')); p += 2) {
        if (p[1] != 'h') {
            snprintf(err, errlen, "transport: '%%%.1s' in '%s' is not allowed (only %%h, the host)",
                     p + 1, v);
            return -EINVAL;
        }
        host = true;
    }
    if (!host) {
        snprintf(err, errlen, "transport: '%s' is neither tcp nor a command with %%h for the host", v);
        return -EINVAL;
    }
    return 0;
}

/* A whole number of seconds (or a port) within [min, max]. */
static int set_number(const char *key, const char *val, long min, long max, const char *what,
                      long *out, char *err, size_t errlen)
{
    long v;

    if (parse_long(val, min, max, &v)) {
        snprintf(err, errlen, "%s: '%s' is not %s from %ld to %ld", key, val, what, min, max);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

int policy_set(struct policy *p, const char *line, size_t len, char *err, size_t errlen)
{
    char buf[256], *eq;
    const char *key, *val;
    struct policy np = *p;
    long v;
    int r;

    len = chomp(line, len);
    if (len == 0) {
        snprintf(err, errlen, "empty policy line (expected key=value)");
        return -EINVAL;
    }
    if (len >= sizeof buf) {
        snprintf(err, errlen, "policy line too long (%zu bytes, at most %zu)", len, sizeof buf - 1);
        return -EINVAL;
    }
    if (memchr(line, 0, len) || !printable(line, len)) {
        snprintf(err, errlen, "policy line contains control characters");
        return -EINVAL;
    }
    memcpy(buf, line, len);
    buf[len] = 0;
    eq = strchr(buf, '=');
    if (!eq) {
        snprintf(err, errlen, "'%s': expected key=value", buf);
        return -EINVAL;
    }
    *eq = 0;
    key = trim(buf);
    val = trim(eq + 1);
    /* Values may be quoted, as in xl.cfg. */
    char unq[256];
    size_t vl = strlen(val);
    if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
        memcpy(unq, val + 1, vl - 2);
        unq[vl - 2] = 0;
        val = unq;
    }

    if (!strcmp(key, "guest_max_hold") || !strcmp(key, "max_ttl")) {
        r = parse_long(val, 0, POLICY_MAX_SECONDS, &v);
        if (r) {
            snprintf(err, errlen, "%s: '%s' is not a number of seconds from 0 to %ld", key, val,
                     POLICY_MAX_SECONDS);
            return -EINVAL;
        }
        if (!strcmp(key, "guest_max_hold")) {
            np.guest_max_hold = v;
        } else {
            if (v == 0) {
                snprintf(err, errlen, "max_ttl: must be at least 1 second");
                return -EINVAL;
            }
            np.max_ttl = v;
        }
    } else if (!strcmp(key, "admin_group")) {
        if (!valid_group_name(val)) {
            snprintf(err, errlen, "admin_group: '%s' is not a valid group name", val);
            return -EINVAL;
        }
        strlcpy0(np.admin_group, val, sizeof np.admin_group);
    } else if (!strcmp(key, "transport")) {
        r = check_transport(val, err, errlen);
        if (r)
            return r;
        strlcpy0(np.transport, val, sizeof np.transport);
    } else if (!strcmp(key, "port")) {
        r = set_number(key, val, 1, 65535, "a port number", &np.port, err, errlen);
        if (r)
            return r;
    } else if (!strcmp(key, "migrate_timeout")) {
        r = set_number(key, val, 1, POLICY_MAX_TIMEOUT, "a number of seconds", &np.migrate_timeout,
                       err, errlen);
        if (r)
            return r;
    } else if (!strcmp(key, "forward_ttl")) {
        r = set_number(key, val, 0, POLICY_MAX_SECONDS, "a number of seconds", &np.forward_ttl,
                       err, errlen);
        if (r)
            return r;
    } else if (!strcmp(key, "accept_incoming")) {
        if (strcmp(val, "yes") && strcmp(val, "no")) {
            snprintf(err, errlen, "accept_incoming: '%s' is neither yes nor no", val);
            return -EINVAL;
        }
        np.accept_incoming = !strcmp(val, "yes");
    } else if (!strcmp(key, "stream")) {
        if (!mig_stream_known(val)) {
            snprintf(err, errlen, "stream: '%s' is neither relay nor direct", val);
            return -EINVAL;
        }
        np.stream_direct = !strcmp(val, "direct");
    } else {
        snprintf(err, errlen,
                 "unknown policy key '%s' (known: guest_max_hold, max_ttl, admin_group, transport, "
                 "port, migrate_timeout, forward_ttl, accept_incoming, stream)",
                 key);
        return -EINVAL;
    }
    *p = np;
    return 0;
}

int policy_parse(struct policy *p, const char *text, size_t len, char *err, size_t errlen)
{
    struct policy np;
    size_t i = 0;
    int lineno = 0;

    policy_defaults(&np);
    while (i < len) {
        const char *l = text + i, *nl = memchr(l, '\n', len - i);
        size_t ll = nl ? (size_t)(nl - l) : len - i;
        char line[256];
        size_t j = 0;

        i += ll + (nl ? 1 : 0);
        lineno++;
        /* Strip comments and surrounding blanks. */
        const char *hash = memchr(l, '#', ll);
        if (hash)
            ll = (size_t)(hash - l);
        while (ll && (l[ll - 1] == ' ' || l[ll - 1] == '\t' || l[ll - 1] == '\r'))
            ll--;
        while (j < ll && (l[j] == ' ' || l[j] == '\t'))
            j++;
        if (j == ll)
            continue;
        if (ll - j >= sizeof line) {
            snprintf(err, errlen, "line %d: too long", lineno);
            return -EINVAL;
        }
        memcpy(line, l + j, ll - j);
        line[ll - j] = 0;
        char e[300];
        if (policy_set(&np, line, ll - j, e, sizeof e)) {
            snprintf(err, errlen, "line %d: %s", lineno, e);
            return -EINVAL;
        }
    }
    *p = np;
    return 0;
}

void policy_format(const struct policy *p, struct strbuf *sb)
{
    sb_printf(sb, "guest_max_hold = %ld\n", p->guest_max_hold);
    sb_printf(sb, "max_ttl = %ld\n", p->max_ttl);
    sb_printf(sb, "admin_group = %s\n", p->admin_group);
    sb_printf(sb, "transport = %s\n", p->transport);
    sb_printf(sb, "port = %ld\n", p->port);
    sb_printf(sb, "migrate_timeout = %ld\n", p->migrate_timeout);
    sb_printf(sb, "forward_ttl = %ld\n", p->forward_ttl);
    sb_printf(sb, "accept_incoming = %s\n", p->accept_incoming ? "yes" : "no");
    sb_printf(sb, "stream = %s\n", p->stream_direct ? "direct" : "relay");
}

int policy_load(const char *path, struct policy *p, char *err, size_t errlen)
{
    char *text;
    size_t len;
    int rc = read_file(path, &text, &len);

    if (rc == -ENOENT) {
        policy_defaults(p);
        return 0;
    }
    if (rc) {
        snprintf(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    char e[320];
    rc = policy_parse(p, text, len, e, sizeof e);
    if (rc)
        snprintf(err, errlen, "%s: %s", path, e);
    free(text);
    return rc;
}

int policy_save(const char *path, const struct policy *p)
{
    struct strbuf sb = {0};
    int rc;

    sb_printf(&sb, "# vmmig policy: see vmmig.policy(5). Written by vmmigfs.\n");
    policy_format(p, &sb);
    /* A host that never had a policy file may have no /etc/vmmig yet. */
    rc = atomic_write_mkdir(path, sb.s, sb.len, 0644);
    sb_free(&sb);
    return rc;
}
