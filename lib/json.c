/* A recursive-descent JSON reader (RFC 8259), enough for QMP's replies and
 * events; see json.h.  Depth is bounded so hostile input cannot exhaust the
 * stack. */
#define _GNU_SOURCE
#include "json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64

struct reader {
    const char *p, *start, *end;
    char *err;
    size_t errlen;
    int depth;
};

static int fail(struct reader *r, const char *what)
{
    if (r->err && !r->err[0])
        snprintf(r->err, r->errlen, "bad JSON at offset %zu: %s", (size_t)(r->p - r->start),
                 what);
    return -EINVAL;
}

static void skip_ws(struct reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static void put_utf8(struct strbuf *sb, unsigned cp)
{
    char b[4];
    size_t n;

    if (cp < 0x80) {
        b[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xc0 | cp >> 6), b[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xe0 | cp >> 12), b[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        b[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
    } else {
        b[0] = (char)(0xf0 | cp >> 18), b[1] = (char)(0x80 | (cp >> 12 & 0x3f));
        b[2] = (char)(0x80 | (cp >> 6 & 0x3f)), b[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
    }
    sb_add(sb, b, n);
}

static int hex4(struct reader *r, unsigned *out)
{
    unsigned v = 0;

    if (r->end - r->p < 4)
        return fail(r, "short \\u escape");
    for (int i = 0; i < 4; i++) {
        char c = *r->p++;
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return fail(r, "bad \\u escape");
    }
    *out = v;
    return 0;
}

/* At the opening quote; *out is malloc'd. */
static int parse_string(struct reader *r, char **out)
{
    struct strbuf sb = {0};
    int rc;

    r->p++;
    for (;;) {
        if (r->p >= r->end) {
            rc = fail(r, "unterminated string");
            goto out;
        }
        char c = *r->p++;
        if (c == '"')
            break;
        if ((unsigned char)c < 0x20) {
            rc = fail(r, "control character in string");
            goto out;
        }
        if (c != '\\') {
            sb_add(&sb, &c, 1);
            continue;
        }
        if (r->p >= r->end) {
            rc = fail(r, "unterminated escape");
            goto out;
        }
        c = *r->p++;
        unsigned cp, lo;
        switch (c) {
        case '"': case '\\': case '/': sb_add(&sb, &c, 1); break;
        case 'b': sb_add(&sb, "\b", 1); break;
        case 'f': sb_add(&sb, "\f", 1); break;
        case 'n': sb_add(&sb, "\n", 1); break;
        case 'r': sb_add(&sb, "\r", 1); break;
        case 't': sb_add(&sb, "\t", 1); break;
        case 'u':
            if ((rc = hex4(r, &cp)))
                goto out;
            if (cp >= 0xd800 && cp < 0xdc00 && r->end - r->p >= 6 && r->p[0] == '\\' &&
                r->p[1] == 'u') {
                r->p += 2;
                if ((rc = hex4(r, &lo)))
                    goto out;
                if (lo >= 0xdc00 && lo < 0xe000)
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                else
                    cp = 0xfffd;
            } else if (cp >= 0xd800 && cp < 0xe000) {
                cp = 0xfffd; /* a lone surrogate */
            }
            if (!cp) {
                rc = fail(r, "NUL in string");
                goto out;
            }
            put_utf8(&sb, cp);
            break;
        default:
            rc = fail(r, "unknown escape");
            goto out;
        }
    }
    sb_add(&sb, "", 0);
    if (!sb.s)
        sb.s = xstrdup("");
    *out = sb.s;
    return 0;
out:
    sb_free(&sb);
    return rc;
}

static int parse_value(struct reader *r, struct json **out);

static void add_item(struct json *v, char *key, struct json *item)
{
    if ((v->n & (v->n - 1)) == 0) { /* grow at powers of two */
        size_t cap = v->n ? v->n * 2 : 1;
        v->items = xrealloc(v->items, cap * sizeof *v->items);
        if (v->type == JSON_OBJECT)
            v->keys = xrealloc(v->keys, cap * sizeof *v->keys);
    }
    if (v->type == JSON_OBJECT)
        v->keys[v->n] = key;
    v->items[v->n++] = item;
}

static int parse_container(struct reader *r, struct json *v)
{
    bool object = v->type == JSON_OBJECT;
    char close = object ? '}' : ']';
    int rc;

    if (++r->depth > JSON_MAX_DEPTH)
        return fail(r, "nested too deeply");
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == close) {
        r->p++;
        r->depth--;
        return 0;
    }
    for (;;) {
        char *key = NULL;
        struct json *item = NULL;

        skip_ws(r);
        if (object) {
            if (r->p >= r->end || *r->p != '"')
                return fail(r, "expected a member name");
            if ((rc = parse_string(r, &key)))
                return rc;
            skip_ws(r);
            if (r->p >= r->end || *r->p != ':') {
                free(key);
                return fail(r, "expected ':'");
            }
            r->p++;
        }
        if ((rc = parse_value(r, &item))) {
            free(key);
            json_free(item);
            return rc;
        }
        add_item(v, key, item);
        skip_ws(r);
        if (r->p >= r->end)
            return fail(r, object ? "unterminated object" : "unterminated array");
        if (*r->p == ',') {
            r->p++;
            continue;
        }
        if (*r->p != close)
            return fail(r, "expected ',' or the end of the container");
        r->p++;
        r->depth--;
        return 0;
    }
}

static int parse_number(struct reader *r, struct json *v)
{
    const char *s = r->p;
    char buf[64], *end;

    if (r->p < r->end && *r->p == '-')
        r->p++;
    if (r->p >= r->end || *r->p < '0' || *r->p > '9')
        return fail(r, "bad number");
    while (r->p < r->end && strchr("0123456789+-.eE", *r->p))
        r->p++;
    if ((size_t)(r->p - s) >= sizeof buf)
        return fail(r, "number too long");
    memcpy(buf, s, (size_t)(r->p - s));
    buf[r->p - s] = 0;
    v->number = strtod(buf, &end);
    if (*end)
        return fail(r, "bad number");
    v->integer = strtoll(buf, NULL, 10);
    return 0;
}

static bool literal(struct reader *r, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n))
        return false;
    r->p += n;
    return true;
}

static int parse_value(struct reader *r, struct json **out)
{
    struct json *v = xzalloc(sizeof *v);
    int rc = 0;

    *out = v;
    skip_ws(r);
    if (r->p >= r->end)
        return fail(r, "unexpected end of input");
    switch (*r->p) {
    case '{': v->type = JSON_OBJECT; rc = parse_container(r, v); break;
    case '[': v->type = JSON_ARRAY; rc = parse_container(r, v); break;
    case '"': v->type = JSON_STRING; rc = parse_string(r, &v->string); break;
    case 't':
    case 'f':
        v->type = JSON_BOOL;
        v->boolean = *r->p == 't';
        if (!literal(r, v->boolean ? "true" : "false"))
            rc = fail(r, "bad literal");
        break;
    case 'n':
        v->type = JSON_NULL;
        if (!literal(r, "null"))
            rc = fail(r, "bad literal");
        break;
    default: v->type = JSON_NUMBER; rc = parse_number(r, v); break;
    }
    return rc;
}

int json_parse(const char *text, size_t len, struct json **out, char *err, size_t errlen)
{
    struct reader r = {.p = text, .start = text, .end = text + len, .err = err, .errlen = errlen};
    struct json *v = NULL;
    int rc;

    if (err && errlen)
        err[0] = 0;
    *out = NULL;
    rc = parse_value(&r, &v);
    if (!rc) {
        skip_ws(&r);
        if (r.p != r.end)
            rc = fail(&r, "trailing data after the value");
    }
    if (rc) {
        json_free(v);
        return rc;
    }
    *out = v;
    return 0;
}

void json_free(struct json *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++) {
        if (v->keys)
            free(v->keys[i]);
        json_free(v->items[i]);
    }
    free(v->keys);
    free(v->items);
    free(v->string);
    free(v);
}

const struct json *json_get(const struct json *v, const char *path)
{
    while (v && path && *path) {
        size_t n = strcspn(path, ".");
        const struct json *next = NULL;

        if (v->type != JSON_OBJECT)
            return NULL;
        for (size_t i = 0; i < v->n; i++)
            if (strlen(v->keys[i]) == n && !memcmp(v->keys[i], path, n)) {
                next = v->items[i];
                break;
            }
        v = next;
        path += n;
        if (*path == '.')
            path++;
    }
    return v;
}

const char *json_str(const struct json *v, const char *path, const char *def)
{
    v = json_get(v, path);
    return v && v->type == JSON_STRING ? v->string : def;
}

long long json_int(const struct json *v, const char *path, long long def)
{
    v = json_get(v, path);
    return v && v->type == JSON_NUMBER ? v->integer : def;
}

bool json_bool(const struct json *v, const char *path, bool def)
{
    v = json_get(v, path);
    return v && v->type == JSON_BOOL ? v->boolean : def;
}

void json_quote(struct strbuf *sb, const char *s)
{
    sb_add(sb, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            sb_printf(sb, "\\%c", c);
        else if (c < 0x20)
            sb_printf(sb, "\\u%04x", c);
        else
            sb_add(sb, s, 1);
    }
    sb_add(sb, "\"", 1);
}
