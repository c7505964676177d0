/* The host's migration policy: /etc/vmmig/policy, "key = value" lines. */
#ifndef VMMIG_POLICY_H
#define VMMIG_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include "util.h"

#define POLICY_MAX_SECONDS 31536000L /* one year: beyond that a number is a typo */

struct policy {
    long guest_max_hold; /* seconds a guest hold counts before an admin may force; 0 = never */
    long max_ttl;        /* largest ttl= accepted for any hold */
    char admin_group[64];/* members may write control files; "" = only CAP_SYS_ADMIN */
    char transport[200]; /* "tcp", or an exec command template with %h ("ssh %h vmmig receive") */
    long port;           /* tcp port of the destination's vmmigfs (1..65535) */
    long migrate_timeout;/* seconds of silence from the peer before a migration fails */
    long forward_ttl;    /* seconds a migrated domain's forwarding entry stays; 0 = none */
    bool accept_incoming;/* this host's vmmigfs accepts incoming migrations */
    bool stream_direct;  /* stream = direct: a QEMU domain's stream on its own connection by default */
};

#define POLICY_DEFAULT_PORT 8123
#define POLICY_MAX_TIMEOUT 86400L

void policy_defaults(struct policy *p);
/* Apply one "key=value" (spaces around '=' allowed).  On error p is unchanged. */
int policy_set(struct policy *p, const char *line, size_t len, char *err, size_t errlen);
/* Parse a whole file's text; comments (#) and blank lines allowed.  On error p is unchanged. */
int policy_parse(struct policy *p, const char *text, size_t len, char *err, size_t errlen);
void policy_format(const struct policy *p, struct strbuf *sb);
/* A missing file means the defaults. */
int policy_load(const char *path, struct policy *p, char *err, size_t errlen);
int policy_save(const char *path, const struct policy *p);

#endif
