/* The console input hold (see consolehold.h). */
#define _GNU_SOURCE
#include "consolehold.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "state.h"
#include "util.h"

int console_hold_open(const char *state_dir, const char *uuid)
{
    char path[600];

    if (!uuid_valid(uuid))
        return -EINVAL;
    snprintf(path, sizeof path, "%s/console", state_dir);
    int r = mkdir_p(path, 0700);
    if (r)
        return r;
    snprintf(path, sizeof path, "%s/console/%s.lock", state_dir, uuid);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    return fd < 0 ? -errno : fd;
}

int console_hold_take(int fd, int timeout_ms)
{
    /* Polled, not a blocking flock: a timeout without a signal. */
    for (int waited = 0;; waited += 2) {
        if (!flock(fd, LOCK_EX | LOCK_NB))
            return 0;
        if (errno != EWOULDBLOCK && errno != EINTR)
            return -errno;
        if (waited >= timeout_ms)
            return -ETIMEDOUT;
        nanosleep(&(struct timespec){0, 2 * 1000 * 1000}, NULL);
    }
}

bool console_hold_write_begin(int fd)
{
    return !flock(fd, LOCK_SH | LOCK_NB);
}

void console_hold_write_end(int fd)
{
    flock(fd, LOCK_UN);
}

bool console_hold_held(int fd)
{
    if (!console_hold_write_begin(fd))
        return true;
    console_hold_write_end(fd);
    return false;
}
