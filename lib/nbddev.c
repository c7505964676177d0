/* The kernel's NBD client through the ioctl interface; see nbddev.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "nbddev.h"

/* <linux/nbd.h>, which a libc-only build does not have */
#define NBD_SET_SOCK _IO(0xab, 0)
#define NBD_SET_BLKSIZE _IO(0xab, 1)
#define NBD_DO_IT _IO(0xab, 3)
#define NBD_CLEAR_SOCK _IO(0xab, 4)
#define NBD_SET_SIZE_BLOCKS _IO(0xab, 7)
#define NBD_DISCONNECT _IO(0xab, 8)
#define NBD_SET_FLAGS _IO(0xab, 10)

struct nbd_dev {
    int fd;        /* the device */
    int sock[2];   /* [0] ours, [1] the kernel's */
    pthread_t doit;
    bool running;
    int doit_rc;
};

int nbd_dev_check(const char *path, char *err, size_t errlen)
{
    struct stat st;

    if (stat(path, &st) < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    if (!S_ISBLK(st.st_mode)) {
        snprintf(err, errlen, "%s: not a block device", path);
        return -ENOTBLK;
    }
    if (major(st.st_rdev) != NBD_DEV_MAJOR) {
        snprintf(err, errlen, "%s: not an NBD device (major %u, NBD is %u)", path,
                 major(st.st_rdev), NBD_DEV_MAJOR);
        return -ENODEV;
    }
    return 0;
}

static void *doit_main(void *arg)
{
    struct nbd_dev *d = arg;
    /* Blocks until the device is disconnected or the socket dies. */
    d->doit_rc = ioctl(d->fd, NBD_DO_IT) < 0 ? -errno : 0;
    return NULL;
}

int nbd_dev_connect(const char *path, uint64_t size, uint16_t flags, struct nbd_dev **out,
                    char *err, size_t errlen)
{
    struct nbd_dev *d = calloc(1, sizeof *d);
    unsigned long blksize = size % 4096 ? 512 : 4096;
    int rc;

    *out = NULL;
    if (!d)
        return -ENOMEM;
    d->fd = d->sock[0] = d->sock[1] = -1;
    if ((rc = nbd_dev_check(path, err, errlen)))
        goto fail;
    if (!size || size % 512) {
        snprintf(err, errlen, "%s: export size %llu is not a positive multiple of 512", path,
                 (unsigned long long)size);
        rc = -EINVAL;
        goto fail;
    }
    if ((d->fd = open(path, O_RDWR | O_CLOEXEC)) < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, d->sock) < 0) {
        rc = -errno;
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        goto fail;
    }
    /* The order nbd-client uses; SET_SOCK fails with EBUSY on a device
     * another client has connected, before anything of it is changed. */
    if (ioctl(d->fd, NBD_SET_SOCK, d->sock[1]) < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s", path,
                 errno == EBUSY ? "the device is in use (connected by another client)"
                 : errno == ENOTTY || errno == EINVAL ? "the NBD ioctls are refused"
                                                      : strerror(errno));
        goto fail;
    }
    if (ioctl(d->fd, NBD_SET_BLKSIZE, blksize) < 0 ||
        ioctl(d->fd, NBD_SET_SIZE_BLOCKS, (unsigned long)(size / blksize)) < 0 ||
        ioctl(d->fd, NBD_SET_FLAGS, (unsigned long)flags) < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: setting size and flags: %s", path, strerror(errno));
        ioctl(d->fd, NBD_CLEAR_SOCK);
        goto fail;
    }
    if ((rc = -pthread_create(&d->doit, NULL, doit_main, d))) {
        snprintf(err, errlen, "%s: thread: %s", path, strerror(-rc));
        ioctl(d->fd, NBD_CLEAR_SOCK);
        goto fail;
    }
    d->running = true;
    *out = d;
    return 0;
fail:
    if (d->fd >= 0)
        close(d->fd);
    if (d->sock[0] >= 0)
        close(d->sock[0]), close(d->sock[1]);
    free(d);
    return rc;
}

int nbd_dev_sock(const struct nbd_dev *d)
{
    return d->sock[0];
}

void nbd_dev_disconnect(struct nbd_dev *d)
{
    if (!d)
        return;
    if (d->running) {
        /* The kernel sends NBD_CMD_DISC on the socket and NBD_DO_IT
         * returns; a server that is gone already makes it return too. */
        if (ioctl(d->fd, NBD_DISCONNECT) < 0)
            shutdown(d->sock[0], SHUT_RDWR);
        pthread_join(d->doit, NULL);
        ioctl(d->fd, NBD_CLEAR_SOCK);
    }
    close(d->fd);
    close(d->sock[0]);
    close(d->sock[1]);
    free(d);
}
