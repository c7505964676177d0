/* A small JSON reader and quoting helper for QMP (lib/qmp.c): no external
 * library, since the static musl build links libc alone.  Values are a tree
 * of malloc'd nodes; objects keep their members in order. */
#ifndef VMMIG_JSON_H
#define VMMIG_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
    enum json_type type;
    bool boolean;
    long long integer; /* a number's integral part (QMP's numbers are integers) */
    double number;
    char *string;      /* JSON_STRING */
    size_t n;          /* members of an array or object */
    char **keys;       /* JSON_OBJECT */
    struct json **items;
};

/* Parse exactly one value (surrounding white space allowed).  Returns 0, or
 * -EINVAL with a message naming the offset of the problem. */
int json_parse(const char *text, size_t len, struct json **out, char *err, size_t errlen);
void json_free(struct json *v);

/* A member by dotted path ("data.status"); NULL when absent or not an object. */
const struct json *json_get(const struct json *v, const char *path);
/* The string at path, or def. */
const char *json_str(const struct json *v, const char *path, const char *def);
/* The integer at path, or def. */
long long json_int(const struct json *v, const char *path, long long def);
bool json_bool(const struct json *v, const char *path, bool def);

/* Append s as a JSON string literal (quoted and escaped). */
void json_quote(struct strbuf *sb, const char *s);

#endif
