/* Local disks that move with a domain (vmmig-protocol(7), DISKS): a Xen
 * disk whose target is an NBD device in dom0 (phy:/dev/nbdN) served by
 * `vmmig blockmirror serve IMAGE --nbd-device /dev/nbdN`, or a QEMU disk
 * whose target is blockmirror:NAME served by `vmmig blockmirror serve
 * IMAGE --disk NAME` (QEMU's NBD client on the unix socket
 * $VMMIG_STATE_DIR/blockmirror/NAME.nbd), is mirrored to the destination
 * before the memory moves and switched at the commit point.  The agents
 * find the primary by its control socket,
 * $VMMIG_STATE_DIR/blockmirror/nbdN.bmctl or NAME.bmctl
 * (vmmig-blockmirror(8)).  Either form is the disk's "device", the same
 * on both hosts.
 *
 * This is what both agents share: finding the disks, checking DISK_PREP,
 * and talking to a blockmirror control socket. */
#ifndef VMMIG_DISKMIG_H
#define VMMIG_DISKMIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define DISKMIG_MAX 16
#define DISKMIG_SIZE_MAX (1ULL << 50) /* 1 PiB: any bigger size is a bad message */

struct diskmig {
    char vdev[16];    /* xvda */
    char device[80];  /* /dev/nbd0 or blockmirror:NAME */
    char control[4200];
    uint64_t size;
};

#define DISKMIG_TARGET_PREFIX "blockmirror:"
#define DISKMIG_NAME_MAX 63

/* "nbd0" for "/dev/nbd0" (the only form accepted: /dev/nbd and digits), or NULL. */
const char *diskmig_nbd_name(const char *device);
/* Is this a good NAME for blockmirror:NAME (1-63 of letters, digits, '.',
 * '-', '_', not starting with '.', and not nbdN, the devices' names)? */
bool diskmig_disk_name_valid(const char *name);
/* "NAME" for "blockmirror:NAME" with a valid NAME, or NULL. */
const char *diskmig_disk_name(const char *device);
/* The name of a device of either form (nbd0, NAME), or NULL: its control
 * socket and log are named after it. */
const char *diskmig_device_name(const char *device);
/* The unix socket QEMU reaches blockmirror:NAME's NBD export on:
 * STATE_DIR/blockmirror/NAME.nbd. */
void diskmig_socket_path(const char *state_dir, const char *name, char *out, size_t size);
/* Is this a sane virtual device name (letters and digits, 1-15)? */
bool diskmig_vdev_valid(const char *vdev);
/* The control socket of a device's primary: STATE_DIR/blockmirror/nbdN.bmctl
 * or NAME.bmctl. */
void diskmig_control_path(const char *state_dir, const char *device, char *out, size_t size);

/* The disks of a domain from the engine's neutral configuration ("disk =
 * VDEV:TARGET" lines): each target that is an NBD device or blockmirror:NAME
 * with a primary's control socket goes into out[]; other disks (shared storage, files) stay
 * where they are and are only named in skipped (space-separated).
 * Returns how many, or -errno (err says why: too many disks). */
int diskmig_find(const char *config, const char *state_dir, struct diskmig *out, int max,
                 struct strbuf *skipped, char *err, size_t errlen);

/* DISK_PREP's payload: vdev=, device=, size= and optionally control= (the
 * source's control socket, into d->control; empty without).  0, or
 * -EBADMSG with a sentence in err. */
int diskmig_prep_parse(const uint8_t *pl, uint32_t len, struct diskmig *d, char *err,
                       size_t errlen);

/* One request on a blockmirror control socket: the answer's lines before
 * the verdict go to out (may be NULL).  0 "ok", 1 "fail:"/"error:" (the
 * reason in err), -errno when the socket cannot be used. */
/* REQ and its newline in one send(MSG_NOSIGNAL): 0 or -errno (EPIPE when
 * the control socket's server hung up, never SIGPIPE). */
int bmctl_send_line(int fd, const char *req);
int bmctl_call(const char *path, const char *req, struct strbuf *out, char *err, size_t errlen);
/* The value of "key: value" in an answer, or -ENOENT. */
int bmctl_field(const struct strbuf *answer, const char *key, char *out, size_t size);

#endif
