/* Cold migration between hypervisors (vmmig migrate --cold): a stopped
 * domain's configuration, boot files and disks are copied to another host
 * through the control protocol and the domain is started there, booting
 * afresh; nothing of its memory crosses.  vmmig-protocol(7), COLD. */
#ifndef VMMIG_COLDMIG_H
#define VMMIG_COLDMIG_H

#include <stddef.h>
#include <stdint.h>

#include "migengine.h"
#include "policy.h"
#include "proto.h"

struct cold_send_opts {
    const char *name;      /* the domain */
    const char *host;      /* the destination agent */
    unsigned port;
    const char *config;    /* its configuration file, or NULL: the default place */
    const char *key_file;
    const char *state_dir;
    int timeout_ms;
};

/* The source: 0 the domain runs on the destination (and this host's copy
 * is marked moved), 1 refused or failed (this host's copy untouched, said
 * on stderr), 3 unknown (the link broke after the commit and the
 * destination could not be asked). */
int cold_send(const struct cold_send_opts *o);

/* The destination, after a MIG_REQ with cold=1 (tools/receive.c): answers
 * it and carries the migration through.  0 the domain runs here, 1 not. */
int cold_receive(struct proto_conn *c, const struct mig_engine_ops *eng, struct mig_engine *e,
                 const struct policy *pol, const uint8_t *req, uint32_t reqlen,
                 const char *state_dir, const char *disk_dir, const char *peer);

#endif
