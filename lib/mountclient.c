#define _GNU_SOURCE
#include "mountclient.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "util.h"

#define FUSE_SUPER_MAGIC 0x65735546

bool mount_present(const char *mnt)
{
    struct statfs sf;
    char path[PATH_MAX];

    if (statfs(mnt, &sf) < 0 || sf.f_type != FUSE_SUPER_MAGIC)
        return false;
    snprintf(path, sizeof path, "%s/backend", mnt);
    return access(path, R_OK) == 0;
}

static void file_path(char *buf, size_t size, const char *mnt, const char *dom, const char *file)
{
    if (dom)
        snprintf(buf, size, "%s/%s/%s", mnt, dom, file);
    else
        snprintf(buf, size, "%s/%s", mnt, file);
}

int mount_write(const char *mnt, const char *dom, const char *file, const char *text)
{
    char path[PATH_MAX];
    int fd, rc = 0;
    size_t len = strlen(text);

    file_path(path, sizeof path, mnt, dom, file);
    fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    /* One write per request, as echo does. */
    ssize_t r = write(fd, text, len);
    if (r < 0)
        rc = -errno;
    else if ((size_t)r != len)
        rc = -EIO;
    close(fd);
    return rc;
}

int mount_read(const char *mnt, const char *dom, const char *file, char **out)
{
    char path[PATH_MAX];

    file_path(path, sizeof path, mnt, dom, file);
    return read_file(path, out, NULL);
}

char *mount_events_mark(const char *mnt)
{
    char *text, *last = NULL;

    if (mount_read(mnt, NULL, "events", &text))
        return NULL;
    for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n"))
        last = l;
    char *res = last ? strdup(last) : NULL;
    free(text);
    return res;
}

char *mount_last_reason(const char *mnt, const char *dom, const char *mark)
{
    char *text, *found = NULL;
    char needle[128];
    bool after = mark == NULL;

    if (mount_read(mnt, NULL, "events", &text))
        return NULL;
    snprintf(needle, sizeof needle, " %s ", dom ? dom : "-");
    for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n")) {
        if (!after) {
            after = !strcmp(l, mark);
            continue;
        }
        char *w = strstr(l, " why=\"");
        if (w && strstr(l, needle) == strchr(l, ' '))
            found = w + 6;
    }
    char *res = NULL;
    if (found)
        res = strndup(found, strcspn(found, "\""));
    free(text);
    return res;
}
