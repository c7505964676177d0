/* The dom0 kernel's NBD client (drivers/block/nbd.c), connected to a
 * socket this process serves: what nbd-client does through the ioctl
 * interface, so that a phy:/dev/nbdN disk needs nothing but vmmig.
 *
 * nbd_dev_connect() makes a socket pair, gives one end to the kernel
 * (NBD_SET_SOCK; the kernel speaks the transmission phase at once, no
 * handshake) and runs NBD_DO_IT on a thread of its own; the caller serves
 * the other end (nbd_dev_sock) with nbd_serve_transmission().  The device
 * works until nbd_dev_disconnect() or until this process dies: then the
 * kernel fails its I/O. */
#ifndef VMMIG_NBDDEV_H
#define VMMIG_NBDDEV_H

#include <stddef.h>
#include <stdint.h>

#define NBD_DEV_MAJOR 43 /* Linux's NBD_MAJOR */

struct nbd_dev;

/* Check that path is an NBD block device (major 43): 0, or -errno with a
 * sentence in err (ENOENT, ENOTBLK, ENODEV for another kind of device). */
int nbd_dev_check(const char *path, char *err, size_t errlen);
/* size: bytes, a multiple of 512; flags: nbd_export_flags().  EBUSY when
 * something else has the device connected. */
int nbd_dev_connect(const char *path, uint64_t size, uint16_t flags, struct nbd_dev **out,
                    char *err, size_t errlen);
/* The end of the socket pair this process serves. */
int nbd_dev_sock(const struct nbd_dev *d);
/* Disconnect the kernel (it sends NBD_CMD_DISC first), wait for NBD_DO_IT
 * to return, free.  NULL is fine. */
void nbd_dev_disconnect(struct nbd_dev *d);

#endif
