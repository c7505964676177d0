/* Post-copy recovery: migration ids, RECOVER's payload and the marker a
 * destination keeps while a switched post-copy is unfinished (pcrecover.h). */
#define _GNU_SOURCE
#include "pcrecover.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "proto.h"
#include "state.h"
#include "util.h"

int pcrec_id_new(char *buf)
{
    uint8_t raw[PCREC_ID_LEN / 2];
    size_t got = 0;

    while (got < sizeof raw) {
        ssize_t r = getrandom(raw + got, sizeof raw - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        got += (size_t)r;
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(buf + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

int pcrec_id_valid(const char *s)
{
    size_t n = strspn(s, "0123456789abcdef");
    return n == PCREC_ID_LEN && !s[n];
}

int pcrec_req_parse(const uint8_t *pl, uint32_t len, struct pcrec_req *req, char *err,
                    size_t errlen)
{
    memset(req, 0, sizeof *req);
    if (kv_get(pl, len, "uuid", req->uuid, sizeof req->uuid) || !uuid_valid(req->uuid)) {
        snprintf(err, errlen, "RECOVER without a valid uuid");
        return -EBADMSG;
    }
    if (kv_get(pl, len, "name", req->name, sizeof req->name) || !req->name[0]) {
        snprintf(err, errlen, "RECOVER without a valid name");
        return -EBADMSG;
    }
    if (kv_get(pl, len, "migration", req->id, sizeof req->id) || !pcrec_id_valid(req->id)) {
        snprintf(err, errlen, "RECOVER without a valid migration id (%d hex digits)",
                 PCREC_ID_LEN);
        return -EBADMSG;
    }
    return 0;
}

void pcrec_marker_path(const char *state_dir, const char *uuid, char *buf, size_t size)
{
    snprintf(buf, size, "%s/incoming/%s.postcopy", state_dir, uuid);
}

int pcrec_marker_write(const char *state_dir, const char *uuid, const struct pcrec_marker *m)
{
    char path[600], text[160];

    pcrec_marker_path(state_dir, uuid, path, sizeof path);
    int n = snprintf(text, sizeof text, "migration=%s\ndomid=%u\nresumed_ms=%lld\n", m->id,
                     m->domid, m->resumed_ms);
    return atomic_write_mkdir(path, text, (size_t)n, 0600);
}

int pcrec_marker_parse(const char *text, size_t len, struct pcrec_marker *m)
{
    char v[64];
    long dom;

    memset(m, 0, sizeof *m);
    if (kv_get((const uint8_t *)text, (uint32_t)len, "migration", m->id, sizeof m->id) ||
        !pcrec_id_valid(m->id))
        return -EBADMSG;
    if (kv_get((const uint8_t *)text, (uint32_t)len, "domid", v, sizeof v) ||
        parse_long(v, 0, (long)UINT32_MAX - 1, &dom))
        return -EBADMSG;
    m->domid = (uint32_t)dom;
    if (!kv_get((const uint8_t *)text, (uint32_t)len, "resumed_ms", v, sizeof v))
        m->resumed_ms = atoll(v);
    return 0;
}

int pcrec_marker_read(const char *state_dir, const char *uuid, struct pcrec_marker *m)
{
    char path[600], *text = NULL;
    size_t len;
    int rc;

    pcrec_marker_path(state_dir, uuid, path, sizeof path);
    if ((rc = read_file(path, &text, &len)))
        return rc;
    rc = pcrec_marker_parse(text, len, m);
    free(text);
    return rc;
}

void pcrec_source_path(const char *state_dir, const char *uuid, char *buf, size_t size)
{
    snprintf(buf, size, "%s/outgoing/%s.postcopy", state_dir, uuid);
}

int pcrec_source_write(const char *state_dir, const char *uuid, const struct pcrec_source *s)
{
    char path[600], text[400];

    if (!pcrec_id_valid(s->id) || !s->host[0] || strpbrk(s->host, " \n"))
        return -EINVAL;
    pcrec_source_path(state_dir, uuid, path, sizeof path);
    int n = snprintf(text, sizeof text, "migration=%s\nhost=%s\n", s->id, s->host);
    return atomic_write_mkdir(path, text, (size_t)n, 0600);
}

int pcrec_source_parse(const char *text, size_t len, struct pcrec_source *s)
{
    memset(s, 0, sizeof *s);
    if (kv_get((const uint8_t *)text, (uint32_t)len, "migration", s->id, sizeof s->id) ||
        !pcrec_id_valid(s->id))
        return -EBADMSG;
    if (kv_get((const uint8_t *)text, (uint32_t)len, "host", s->host, sizeof s->host) ||
        !s->host[0])
        return -EBADMSG;
    return 0;
}

int pcrec_source_read(const char *state_dir, const char *uuid, struct pcrec_source *s)
{
    char path[600], *text = NULL;
    size_t len;
    int rc;

    memset(s, 0, sizeof *s);
    pcrec_source_path(state_dir, uuid, path, sizeof path);
    if ((rc = read_file(path, &text, &len)))
        return rc;
    rc = pcrec_source_parse(text, len, s);
    free(text);
    return rc;
}

int pcrec_source_remove(const char *state_dir, const char *uuid)
{
    char path[600];

    pcrec_source_path(state_dir, uuid, path, sizeof path);
    return unlink(path) ? -errno : 0;
}
