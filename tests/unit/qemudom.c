/* The QEMU domain configuration reader (lib/qemudom.c): xl.cfg's syntax. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemudom.h"
#include "tap.h"

int main(void)
{
    struct qemu_cfg c;
    char err[200];
    const char *text =
        "# a comment\n"
        "name = \"web1\"\n"
        "uuid = '6036f9f2-7f4d-4c2c-95f9-f4b1455516f4'\n"
        "memory = 256   # MiB\n"
        "vcpus = 2\n"
        "kernel = \"/boot/vmlinuz\"\n"
        "ramdisk = \"/boot/initrd.gz\"\n"
        "extra = \"console=ttyS0 quiet\"\n"
        "disk = [ 'format=raw, vdev=xvda, access=rw, target=/var/lib/web1.img',\n"
        "         '/var/lib/web1-data.img,raw,xvdb,rw' ]\n"
        "migration = \"no\"\n"
        "on_crash = 'destroy'\n";

    is_int(qemu_cfg_parse(text, &c, err, sizeof err), 0, "parses an xl.cfg");
    is_str(c.name, "web1", "name");
    is_str(c.uuid, "6036f9f2-7f4d-4c2c-95f9-f4b1455516f4", "uuid in single quotes");
    is_int(c.memory_mib, 256, "memory (with a trailing comment)");
    is_int(c.vcpus, 2, "vcpus");
    is_str(c.initrd, "/boot/initrd.gz", "ramdisk");
    is_str(c.cmdline, "console=ttyS0 quiet", "extra is the command line");
    is_int(c.ndisks, 2, "two disks over two lines");
    is_str(c.disks[0], "/var/lib/web1.img", "disk by target=");
    is_str(c.disks[1], "/var/lib/web1-data.img", "disk by position");
    ok(c.nomigrate, "migration = \"no\" is a static hold");
    is_str(c.nomigrate_what, "migration=\"no\"", "  named as in the file");

    is_int(qemu_cfg_parse("name = \"x\"\nkernel = \"/k\"\nnomigrate = 1\n", &c, err, sizeof err), 0,
           "nomigrate = 1");
    ok(c.nomigrate && c.memory_mib == 128 && c.vcpus == 1, "  a hold; defaults 128 MiB, 1 vCPU");
    qemu_cfg_parse("name = \"x\"\nkernel = \"/k\"\nmigration = \"yes\"\n", &c, err, sizeof err);
    ok(!c.nomigrate, "migration = \"yes\" is no hold");

    /* a disk served by vmmig blockmirror serve --disk NAME */
    is_int(qemu_cfg_parse("kernel = \"/k\"\n"
                          "disk = [ 'format=raw, vdev=xvda, access=rw, target=blockmirror:web1.xvda' ]\n",
                          &c, err, sizeof err), 0, "target=blockmirror:NAME");
    is_str(c.disks[0], "blockmirror:web1.xvda", "  ...is the disk's target");
    is_int(qemu_cfg_parse("kernel = \"/k\"\ndisk = [ 'blockmirror:d-1_x,raw,xvda,rw' ]\n", &c, err,
                          sizeof err), 0, "blockmirror:NAME by position");
    is_str(c.disks[0], "blockmirror:d-1_x", "  ...is the disk's target");
    const char *badbm[] = {"blockmirror:", "blockmirror:../x", "blockmirror:.hidden",
                           "blockmirror:nbd0", "blockmirror:a/b", "blockmirror:a b",
                           "blockmirror:0123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < ARRAY_SIZE(badbm); i++) {
        char text[300];
        snprintf(text, sizeof text, "kernel = \"/k\"\ndisk = [ 'vdev=xvda, target=%s' ]\n", badbm[i]);
        err[0] = 0;
        int rc = qemu_cfg_parse(text, &c, err, sizeof err);
        ok(rc == -EINVAL && strstr(err, "bad disk target"), "%s refused (%s)", badbm[i], err);
    }
    char sock[300];
    setenv("VMMIG_STATE_DIR", "/srv/vmmig", 1);
    qemu_disk_socket("web1.xvda", sock, sizeof sock);
    is_str(sock, "/srv/vmmig/blockmirror/web1.xvda.nbd", "blockmirror:NAME's socket in the state dir");

    const char *bad[] = {"name \"x\"\n", "name = \"x\nkernel = \"/k\"\n", "memory = lots\nkernel = \"/k\"\n",
                         "name = \"x\"\n", "disk = [ 'a', \nkernel = \"/k\"\n"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        int rc = qemu_cfg_parse(bad[i], &c, err, sizeof err);
        ok(rc < 0 && err[0], "refused (%s)", err);
    }
    return done_testing();
}
