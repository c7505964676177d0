/* Local disks that move with a domain: finding them in the neutral
 * configuration, DISK_PREP's checks, the blockmirror control client. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "diskmig.h"
#include "proto.h"
#include "tap.h"

static int prep(const char *text, struct diskmig *d, char *err, size_t errlen)
{
    return diskmig_prep_parse((const uint8_t *)text, (uint32_t)strlen(text), d, err, errlen);
}

/* A control socket answering one connection with a canned answer. */
static const char *canned;
static int canned_early;
static char *request_seen;
static void *ctl_server(void *arg)
{
    int lfd = *(int *)arg, fd = accept(lfd, NULL, NULL);
    char buf[256];
    if (fd >= 0) {
        /* Read the whole request line unless the answer is to come
         * before it (canned_early: a server that hangs up at once). */
        size_t got = 0;
        while (!canned_early && got < sizeof buf) {
            ssize_t r = read(fd, buf + got, sizeof buf - got);
            if (r <= 0)
                break;
            got += (size_t)r;
            if (memchr(buf, '\n', got)) {
                free(request_seen);
                request_seen = strndup(buf, got);
                break;
            }
        }
        if (write(fd, canned, strlen(canned)) < 0) {
        }
        close(fd);
    }
    return NULL;
}

static int call_canned(const char *dir, const char *answer, struct strbuf *out, char *err,
                       size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    pthread_t t;
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0), rc;

    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/c.ctl", dir);
    unlink(sa.sun_path);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 1))
        return -999;
    canned = answer;
    pthread_create(&t, NULL, ctl_server, &lfd);
    rc = bmctl_call(sa.sun_path, "status", out, err, errlen);
    pthread_join(t, NULL);
    close(lfd);
    return rc;
}

int main(void)
{
    struct diskmig d, found[4];
    struct strbuf skipped = {0}, ans = {0};
    char err[300], dir[] = "/tmp/vmmig-diskmig-XXXXXX", path[600], v[64];

    is_str(diskmig_nbd_name("/dev/nbd0"), "nbd0", "/dev/nbd0 is nbd0");
    is_str(diskmig_nbd_name("/dev/nbd15"), "nbd15", "/dev/nbd15 is nbd15");
    ok(!diskmig_nbd_name("/dev/nbd"), "/dev/nbd without a number refused");
    ok(!diskmig_nbd_name("/dev/nbd0p1"), "a partition refused");
    ok(!diskmig_nbd_name("/dev/nbd/../sda"), "a path refused");
    ok(!diskmig_nbd_name("/dev/sda"), "another device refused");
    ok(!diskmig_nbd_name("/dev/nbd12345"), "an absurd number refused");
    ok(diskmig_vdev_valid("xvda") && diskmig_vdev_valid("hda1"), "xvda, hda1 are vdevs");
    ok(!diskmig_vdev_valid("") && !diskmig_vdev_valid("../x") && !diskmig_vdev_valid("XVDA") &&
           !diskmig_vdev_valid("xvdaaaaaaaaaaaaaaaa"),
       "empty, path, upper case, too long vdevs refused");

    /* QEMU's disks: blockmirror:NAME */
    ok(diskmig_disk_name_valid("web1.xvda") && diskmig_disk_name_valid("A-b_9") &&
           diskmig_disk_name_valid("nbd") && diskmig_disk_name_valid("nbd0x"),
       "web1.xvda, A-b_9, nbd, nbd0x are disk names");
    ok(!diskmig_disk_name_valid("") && !diskmig_disk_name_valid(".x") &&
           !diskmig_disk_name_valid("a/b") && !diskmig_disk_name_valid("a b") &&
           !diskmig_disk_name_valid("a:b") && !diskmig_disk_name_valid("nbd0") &&
           !diskmig_disk_name_valid("nbd15") &&
           !diskmig_disk_name_valid("0123456789012345678901234567890123456789012345678901234567890123"),
       "empty, hidden, path, space, colon, nbdN and 64-character names refused");
    is_str(diskmig_disk_name("blockmirror:web1.xvda"), "web1.xvda", "blockmirror:web1.xvda is web1.xvda");
    ok(!diskmig_disk_name("blockmirror:") && !diskmig_disk_name("blockmirror:../x") &&
           !diskmig_disk_name("web1.xvda") && !diskmig_disk_name("/dev/nbd0"),
       "blockmirror: without a good name, a bare name, a device: no disk name");
    is_str(diskmig_device_name("/dev/nbd2"), "nbd2", "device name of /dev/nbd2");
    is_str(diskmig_device_name("blockmirror:w.x"), "w.x", "device name of blockmirror:w.x");
    ok(!diskmig_device_name("/srv/x.img"), "an image is no device");
    diskmig_socket_path("/st", "w.x", path, sizeof path);
    is_str(path, "/st/blockmirror/w.x.nbd", "blockmirror:w.x's NBD socket");
    diskmig_control_path("/st", "blockmirror:w.x", path, sizeof path);
    is_str(path, "/st/blockmirror/w.x.bmctl", "  ...and its control socket");

    is_int(prep("vdev=xvda\ndevice=/dev/nbd0\nsize=33554432\n", &d, err, sizeof err), 0,
           "a good DISK_PREP");
    ok(!strcmp(d.vdev, "xvda") && !strcmp(d.device, "/dev/nbd0") && d.size == 33554432,
       "  ...with its fields");
    static const char *const bad[] = {
        "device=/dev/nbd0\nsize=512\n",              /* no vdev */
        "vdev=../x\ndevice=/dev/nbd0\nsize=512\n",   /* bad vdev */
        "vdev=xvda\nsize=512\n",                     /* no device */
        "vdev=xvda\ndevice=/dev/sda\nsize=512\n",    /* not nbd */
        "vdev=xvda\ndevice=/dev/nbd0\n",             /* no size */
        "vdev=xvda\ndevice=/dev/nbd0\nsize=0\n",     /* zero */
        "vdev=xvda\ndevice=/dev/nbd0\nsize=1000\n",  /* not a multiple of 512 */
        "vdev=xvda\ndevice=/dev/nbd0\nsize=-512\n",  /* negative */
        "vdev=xvda\ndevice=/dev/nbd0\nsize=512x\n",  /* junk */
        "vdev=xvda\ndevice=/dev/nbd0\nsize=99999999999999999999999\n", /* overflow */
        "vdev=xvda\ndevice=/dev/nbd0\nsize=2251799813685248\n",        /* 2 PiB */
        "not key value\n",
    };
    is_int(prep("vdev=xvda\ndevice=blockmirror:web1.xvda\nsize=16777216\n", &d, err, sizeof err), 0,
           "a good DISK_PREP for a QEMU disk");
    is_str(d.device, "blockmirror:web1.xvda", "  ...device=blockmirror:NAME");
    is_str(d.control, "", "  ...no control= (optional)");
    is_int(prep("vdev=xvda\ndevice=blockmirror:w\nsize=512\ncontrol=/st/blockmirror/w.bmctl\n", &d,
                err, sizeof err), 0, "DISK_PREP with control=");
    is_str(d.control, "/st/blockmirror/w.bmctl", "  ...the source's control socket");
    static const char *const badq[] = {
        "vdev=xvda\ndevice=blockmirror:\nsize=512\n",
        "vdev=xvda\ndevice=blockmirror:../../x\nsize=512\n",
        "vdev=xvda\ndevice=blockmirror:nbd0\nsize=512\n",
        "vdev=xvda\ndevice=blockmirror:0123456789012345678901234567890123456789012345678901234567890123456789\nsize=512\n",
    };
    for (size_t i = 0; i < sizeof badq / sizeof badq[0]; i++) {
        err[0] = 0;
        int rc = prep(badq[i], &d, err, sizeof err);
        ok(rc == -EBADMSG && strstr(err, "blockmirror:NAME"), "bad QEMU DISK_PREP %zu refused: %s",
           i, err);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        int rc = prep(bad[i], &d, err, sizeof err);
        ok(rc == -EBADMSG && strstr(err, "DISK_PREP"), "bad DISK_PREP %zu refused: %s", i, err);
    }

    ok(mkdtemp(dir) != NULL, "temp dir");
    snprintf(path, sizeof path, "%s/blockmirror", dir);
    mkdir(path, 0700);
    diskmig_control_path(dir, "/dev/nbd3", path, sizeof path);
    ok(strstr(path, "/blockmirror/nbd3.bmctl") != NULL, "control path of /dev/nbd3: %s", path);
    const char *cfg = "name = x\ndisk = xvda:/dev/nbd3\ndisk = xvdb:/dev/nbd4\n"
                      "disk = xvdc:/srv/x.img\ndisk = xvdd:/dev/nbd5x\n";
    is_int(diskmig_find(cfg, dir, found, 4, &skipped, err, sizeof err), 0,
           "no control sockets: no disk moves");
    is_str(skipped.s, "xvda xvdb xvdc xvdd", "  ...each is named as staying");
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    ok(!bind(s, (struct sockaddr *)&sa, sizeof sa), "a control socket for nbd3");
    sb_reset(&skipped);
    is_int(diskmig_find(cfg, dir, found, 4, &skipped, err, sizeof err), 1, "xvda moves");
    ok(!strcmp(found[0].vdev, "xvda") && !strcmp(found[0].device, "/dev/nbd3"), "  ...as /dev/nbd3");
    is_str(skipped.s, "xvdb xvdc xvdd", "  ...the others stay");
    is_int(diskmig_find(cfg, dir, found, 0, NULL, err, sizeof err), -E2BIG, "too many disks refused");
    /* a QEMU domain's neutral configuration */
    const char *qcfg = "name = q\ndisk = xvda:blockmirror:q.xvda\ndisk = xvdb:blockmirror:q.xvdb\n"
                       "disk = xvdc:blockmirror:../x\n";
    diskmig_control_path(dir, "blockmirror:q.xvda", path, sizeof path);
    int s2 = socket(AF_UNIX, SOCK_STREAM, 0);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    ok(!bind(s2, (struct sockaddr *)&sa, sizeof sa), "a control socket for blockmirror:q.xvda");
    sb_reset(&skipped);
    is_int(diskmig_find(qcfg, dir, found, 4, &skipped, err, sizeof err), 1, "QEMU's xvda moves");
    ok(!strcmp(found[0].vdev, "xvda") && !strcmp(found[0].device, "blockmirror:q.xvda") &&
           !strcmp(found[0].control, path),
       "  ...as blockmirror:q.xvda, by %s", found[0].control);
    is_str(skipped.s, "xvdb xvdc", "  ...the unserved and the bad one stay");
    close(s2);
    unlink(path);

    sb_reset(&ans);
    is_int(call_canned(dir, "state: synced\nsize: 4096\nok\n", &ans, err, sizeof err), 0,
           "control: ok");
    ok(!bmctl_field(&ans, "state", v, sizeof v) && !strcmp(v, "synced"), "  ...state: synced");
    ok(!bmctl_field(&ans, "size", v, sizeof v) && !strcmp(v, "4096"), "  ...size: 4096");
    is_int(bmctl_field(&ans, "peer", v, sizeof v), -ENOENT, "  ...no peer field");
    is_int(call_canned(dir, "error: switch: the peer is away\n", NULL, err, sizeof err), 1,
           "control: error");
    is_str(err, "switch: the peer is away", "  ...with the reason");
    is_str(request_seen, "status\n", "  ...the request was one line");
    free(request_seen);
    request_seen = NULL;
    is_int(call_canned(dir, "", NULL, err, sizeof err), -EPROTO, "control: no answer");
    /* A server that hangs up before reading: an error, and no SIGPIPE
     * (the process would die of it before the next line). */
    canned_early = 1;
    for (int i = 0; i < 20; i++) {
        int rc = call_canned(dir, "", NULL, err, sizeof err);
        if (rc != -EPROTO && rc != -EPIPE && rc != -ECONNRESET) {
            ok(0, "a server hanging up at once: %d %s", rc, err);
            break;
        }
        if (i == 19)
            ok(1, "a server hanging up at once, 20 times: an error each time, no SIGPIPE");
    }
    canned_early = 0;
    is_int(call_canned(dir, "bogus\n", NULL, err, sizeof err), -EPROTO, "control: a bad verdict");
    ok(bmctl_call("/nonexistent/x.ctl", "status", NULL, err, sizeof err) < 0 &&
           strstr(err, "/nonexistent/x.ctl"),
       "control: a missing socket: %s", err);

    close(s);
    unlink(path);
    snprintf(path, sizeof path, "%s/c.ctl", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/blockmirror", dir);
    rmdir(path);
    rmdir(dir);
    sb_free(&skipped);
    sb_free(&ans);
    free(request_seen);
    return done_testing();
}
