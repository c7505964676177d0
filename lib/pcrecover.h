/* Post-copy recovery (vmmig-protocol(7), POST-COPY RECOVERY): what the two
 * agents share.  The source names each migration with a random id in its
 * MIG_REQ (migration=); the destination records it, at the switch, in a
 * marker beside the incoming lock (STATE/incoming/UUID.postcopy), so that a
 * fresh agent can tell, when a RECOVER comes, that the paused domain here
 * is that migration's. */
#ifndef VMMIG_PCRECOVER_H
#define VMMIG_PCRECOVER_H

#include <stddef.h>
#include <stdint.h>

#define PCREC_ID_LEN 32 /* hex digits of a migration id */

/* RECOVER's fields. */
struct pcrec_req {
    char uuid[37];
    char name[64];
    char id[PCREC_ID_LEN + 1];
};

/* The marker's fields. */
struct pcrec_marker {
    char id[PCREC_ID_LEN + 1];
    uint32_t domid;
    long long resumed_ms; /* when the domain first ran here (epoch ms) */
};

/* A fresh random id (PCREC_ID_LEN lowercase hex digits) into buf[PCREC_ID_LEN + 1]. */
int pcrec_id_new(char *buf);
/* Is s a migration id (PCREC_ID_LEN lowercase hex digits)? */
int pcrec_id_valid(const char *s);

/* Parse a RECOVER payload: 0, or -EBADMSG with err (a missing or invalid
 * uuid=, name= or migration=). */
int pcrec_req_parse(const uint8_t *pl, uint32_t len, struct pcrec_req *req, char *err,
                    size_t errlen);

/* The marker's path for a UUID. */
void pcrec_marker_path(const char *state_dir, const char *uuid, char *buf, size_t size);
/* Write (atomically) / read it.  Read: 0, -ENOENT none, -EBADMSG malformed. */
int pcrec_marker_write(const char *state_dir, const char *uuid, const struct pcrec_marker *m);
int pcrec_marker_read(const char *state_dir, const char *uuid, struct pcrec_marker *m);
/* The text form both use (key=value lines), for the tests too. */
int pcrec_marker_parse(const char *text, size_t len, struct pcrec_marker *m);

/* The source's record while a switched post-copy is unfinished
 * (STATE/outgoing/UUID.postcopy, written at the commit point): the
 * migration's id and its destination, for an agent that takes over after
 * the one that ran it died (send --recover). */
struct pcrec_source {
    char id[PCREC_ID_LEN + 1];
    char host[256];
};

void pcrec_source_path(const char *state_dir, const char *uuid, char *buf, size_t size);
int pcrec_source_write(const char *state_dir, const char *uuid, const struct pcrec_source *s);
/* 0, -ENOENT none, -EBADMSG malformed. */
int pcrec_source_read(const char *state_dir, const char *uuid, struct pcrec_source *s);
int pcrec_source_parse(const char *text, size_t len, struct pcrec_source *s);
/* Gone once the post-copy ended (either way): 0 or -errno (-ENOENT: none). */
int pcrec_source_remove(const char *state_dir, const char *uuid);

#endif
