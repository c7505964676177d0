/* Local disks that move with a domain; see diskmig.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "diskmig.h"
#include "nbd.h"
#include "proto.h"

const char *diskmig_nbd_name(const char *device)
{
    const char *p;

    if (strncmp(device, "/dev/nbd", 8) || !device[8] || strlen(device) > 12)
        return NULL;
    for (p = device + 8; *p; p++)
        if (*p < '0' || *p > '9')
            return NULL;
    return device + 5;
}

bool diskmig_disk_name_valid(const char *name)
{
    size_t n = strlen(name);

    if (!n || n > DISKMIG_NAME_MAX || name[0] == '.')
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-' || *p == '_'))
            return false;
    /* nbdN.bmctl is /dev/nbdN's control socket */
    if (!strncmp(name, "nbd", 3) && name[3] && strspn(name + 3, "0123456789") == n - 3)
        return false;
    return true;
}

const char *diskmig_disk_name(const char *device)
{
    size_t plen = strlen(DISKMIG_TARGET_PREFIX);

    if (strncmp(device, DISKMIG_TARGET_PREFIX, plen) || !diskmig_disk_name_valid(device + plen))
        return NULL;
    return device + plen;
}

const char *diskmig_device_name(const char *device)
{
    const char *name = diskmig_nbd_name(device);
    return name ? name : diskmig_disk_name(device);
}

void diskmig_socket_path(const char *state_dir, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/blockmirror/%s.nbd", state_dir, name);
}

bool diskmig_vdev_valid(const char *vdev)
{
    size_t n = strlen(vdev);

    if (!n || n > 15)
        return false;
    for (; *vdev; vdev++)
        if (!((*vdev >= 'a' && *vdev <= 'z') || (*vdev >= '0' && *vdev <= '9')))
            return false;
    return true;
}

void diskmig_control_path(const char *state_dir, const char *device, char *out, size_t size)
{
    const char *name = diskmig_device_name(device);
    snprintf(out, size, "%s/blockmirror/%s.bmctl", state_dir, name ? name : "?");
}

int diskmig_find(const char *config, const char *state_dir, struct diskmig *out, int max,
                 struct strbuf *skipped, char *err, size_t errlen)
{
    const char *line = config;
    int n = 0;

    while (line && *line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[512];
        if (len < sizeof buf && !strncmp(line, "disk = ", 7)) {
            memcpy(buf, line + 7, len - 7);
            buf[len - 7] = 0;
            char *target = strchr(buf, ':');
            struct stat st;
            struct diskmig d = {0};
            if (target)
                *target++ = 0;
            if (target && diskmig_device_name(target) && strlen(target) < sizeof d.device &&
                diskmig_vdev_valid(buf)) {
                diskmig_control_path(state_dir, target, d.control, sizeof d.control);
                if (!stat(d.control, &st) && S_ISSOCK(st.st_mode)) {
                    if (n == max) {
                        snprintf(err, errlen, "more than %d local disks", max);
                        return -E2BIG;
                    }
                    strlcpy0(d.vdev, buf, sizeof d.vdev);
                    strlcpy0(d.device, target, sizeof d.device);
                    out[n++] = d;
                    goto next;
                }
            }
            if (skipped)
                sb_printf(skipped, "%s%s", skipped->len ? " " : "", buf);
        }
    next:
        line = end ? end + 1 : NULL;
    }
    return n;
}

int diskmig_prep_parse(const uint8_t *pl, uint32_t len, struct diskmig *d, char *err,
                       size_t errlen)
{
    char size[32], *end;

    memset(d, 0, sizeof *d);
    if (kv_get(pl, len, "vdev", d->vdev, sizeof d->vdev) || !diskmig_vdev_valid(d->vdev)) {
        snprintf(err, errlen, "DISK_PREP without a valid vdev= (letters and digits)");
        return -EBADMSG;
    }
    if (kv_get(pl, len, "device", d->device, sizeof d->device) ||
        !diskmig_device_name(d->device)) {
        snprintf(err, errlen, "DISK_PREP for %s without a valid device= (/dev/nbdN or "
                 "blockmirror:NAME)", d->vdev);
        return -EBADMSG;
    }
    errno = 0;
    if (kv_get(pl, len, "size", size, sizeof size) || size[0] < '1' || size[0] > '9' ||
        ((d->size = strtoull(size, &end, 10)), errno || *end) || d->size % 512 ||
        d->size > DISKMIG_SIZE_MAX) {
        snprintf(err, errlen, "DISK_PREP for %s without a valid size= (a multiple of 512 up to "
                 "1 PiB)", d->vdev);
        return -EBADMSG;
    }
    /* optional: the source's control socket (the same primary on one kernel?) */
    if (kv_get(pl, len, "control", d->control, sizeof d->control))
        d->control[0] = 0;
    return 0;
}

/* The request goes out as one line in one send(): a server that answers
 * after its first read and closes must not leave half a request behind,
 * and a server gone early is EPIPE here, never SIGPIPE for the caller
 * (vmmigfs, whose other threads must go on). */
int bmctl_send_line(int fd, const char *req)
{
    struct strbuf line = {0};
    size_t done = 0;
    int rc = 0;

    sb_add(&line, req, strlen(req));
    sb_add(&line, "\n", 1);
    while (done < line.len) {
        ssize_t r = send(fd, line.s + done, line.len - done, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            break;
        }
        done += (size_t)r;
    }
    sb_free(&line);
    return rc;
}

int bmctl_call(const char *path, const char *req, struct strbuf *out, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct strbuf ans = {0};
    char buf[4096];
    int fd, rc = 0;

    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "%s: name too long", path);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || (rc = bmctl_send_line(fd, req))) {
        rc = fd >= 0 && rc ? rc : -errno;
        snprintf(err, errlen, "blockmirror control %s: %s", path, strerror(-rc));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        sb_add(&ans, buf, (size_t)r);
    }
    close(fd);
    while (ans.len && ans.s[ans.len - 1] == '\n')
        ans.s[--ans.len] = 0;
    if (!ans.len) {
        snprintf(err, errlen, "blockmirror control %s: no answer to %s", path, req);
        sb_free(&ans);
        return -EPROTO;
    }
    char *last = strrchr(ans.s, '\n');
    char *verdict = last ? last + 1 : ans.s;
    if (!strcmp(verdict, "ok")) {
        rc = 0;
    } else if (!strncmp(verdict, "error: ", 7) || !strncmp(verdict, "fail: ", 6)) {
        snprintf(err, errlen, "%s", strchr(verdict, ' ') + 1);
        rc = 1;
    } else {
        snprintf(err, errlen, "blockmirror control %s: unexpected answer '%s'", path, verdict);
        rc = -EPROTO;
    }
    if (out) {
        if (last)
            sb_add(out, ans.s, (size_t)(last - ans.s) + 1);
    }
    sb_free(&ans);
    return rc;
}

int bmctl_field(const struct strbuf *answer, const char *key, char *out, size_t size)
{
    size_t klen = strlen(key);
    const char *p = answer->s;

    while (p && *p) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > klen + 1 && !strncmp(p, key, klen) && p[klen] == ':' && p[klen + 1] == ' ') {
            size_t n = len - klen - 2;
            if (n >= size)
                n = size - 1;
            memcpy(out, p + klen + 2, n);
            out[n] = 0;
            return 0;
        }
        p = end ? end + 1 : NULL;
    }
    return -ENOENT;
}
