/* Cold migration's configuration translation (lib/coldcfg.c): xl.cfg to the
 * neutral form and back, the kernel command line's device names, and every
 * refusal with its reason. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "coldcfg.h"
#include "tap.h"

static struct cold_cfg c;
static char err[600];

static int xl(const char *text)
{
    err[0] = 0;
    return cold_from_xl(text, &c, err, sizeof err);
}

static bool noted(const char *part)
{
    for (int i = 0; i < c.nnotes; i++)
        if (strstr(c.notes[i], part))
            return true;
    return false;
}

/* The config must be refused with a reason containing why. */
static void refused(const char *extra, const char *why, const char *what)
{
    char text[2000];
    snprintf(text, sizeof text,
             "name = \"web1\"\ntype = \"pvh\"\nkernel = \"/k\"\nmemory = 256\n%s\n", extra);
    int rc = xl(text);
    ok(rc == -EINVAL && strstr(err, why), "refused: %s (%s)", what, err);
}

int main(void)
{
    static const char web1[] =
        "# a PVH guest\n"
        "name = \"web1\"\n"
        "uuid = \"6a1c0f4e-7d2b-4c11-9e0a-c01d00000001\"\n"
        "type = \"pvh\"\n"
        "tsc_mode = \"native\"\n"
        "kernel = \"/guest/vmlinuz\"\n"
        "ramdisk = '/guest/initrd.gz'\n"
        "extra = \"console=hvc0 loglevel=4\"\n"
        "root = \"/dev/xvda1 ro\"\n"
        "memory = 512\n"
        "maxmem = 1024\n"
        "vcpus = 2\n"
        "cpus = \"0-1\"\n"
        "vif = [ ]\n"
        "on_crash = \"destroy\"\n"
        "disk = [ 'format=raw, vdev=xvda, access=rw, target=/srv/web1.img',\n"
        "         'phy:/dev/vg0/web1-data,xvdb,w' ]\n";
    is_int(xl(web1), 0, "a PVH xl.cfg translates (%s)", err);
    is_str(c.name, "web1", "name");
    is_str(c.uuid, "6a1c0f4e-7d2b-4c11-9e0a-c01d00000001", "uuid");
    is_int(c.memory_mib, 512, "memory");
    is_int(c.vcpus, 2, "vcpus");
    is_str(c.kernel, "/guest/vmlinuz", "kernel");
    is_str(c.ramdisk, "/guest/initrd.gz", "ramdisk (single quotes)");
    is_str(c.cmdline, "root=/dev/vda1 ro console=hvc0 loglevel=4",
           "root= and extra= joined as xl does, /dev/xvda1 mapped to /dev/vda1, hvc0 kept");
    is_int(c.ndisks, 2, "two disks");
    is_str(c.disks[0].path, "/srv/web1.img", "disk 1: target= form");
    ok(!c.disks[0].phy, "  a file");
    is_str(c.disks[1].path, "/dev/vg0/web1-data", "disk 2: legacy phy: form");
    ok(c.disks[1].phy, "  a block device");
    ok(noted("maxmem = 1024 stays behind"), "maxmem is left behind, said in a note");
    ok(noted("cpus stays behind"), "CPU pinning is left behind, said in a note");
    ok(noted("on_crash stays behind"), "on_crash is left behind, said in a note");
    ok(noted("tsc_mode stays behind"), "tsc_mode is left behind, said in a note");
    ok(noted("/dev/xvda1 became /dev/vda1") || noted("root=/dev/xvda1 became root=/dev/vda1"),
       "the root device's new name is said in a note");
    ok(!c.nomigrate, "migratable");

    struct strbuf sb = {0};
    char *disks[] = {"/var/lib/vmmig/disks/web1.vda.img", "/var/lib/vmmig/disks/web1.vdb.img"};
    cold_to_neutral(&c, "/d/web1.kernel", "/d/web1.ramdisk", disks, &sb);
    ok(strstr(sb.s, "kernel = \"/d/web1.kernel\"\n") && strstr(sb.s, "ramdisk = \"/d/web1.ramdisk\"\n") &&
           strstr(sb.s, "memory = 512\nvcpus = 2\n") &&
           strstr(sb.s, "disk = [ 'vdev=vda, target=/var/lib/vmmig/disks/web1.vda.img', "
                        "'vdev=vdb, target=/var/lib/vmmig/disks/web1.vdb.img' ]") &&
           strstr(sb.s, "cmdline = \"root=/dev/vda1 ro console=hvc0 loglevel=4\""),
       "the neutral form has the destination's paths and vda, vdb");
    struct cold_cfg back;
    is_int(cold_from_neutral(sb.s, &back, err, sizeof err), 0, "the neutral form reads back (%s)",
           err);
    is_str(back.cmdline, c.cmdline, "  same command line");
    is_int(back.ndisks, 2, "  same disks");
    is_str(back.disks[1].path, disks[1], "  at the new paths");
    is_str(back.uuid, c.uuid, "  same uuid");
    sb_reset(&sb);
    is_int(cold_to_xl(&back, "/k", NULL, disks, &sb, err, sizeof err), 0, "to xl.cfg (%s)", err);
    ok(strstr(sb.s, "type = \"pvh\"\n") && strstr(sb.s, "cmdline = \"root=/dev/xvda1 ro console=hvc0 loglevel=4\"") &&
           strstr(sb.s, "'format=raw, vdev=xvda, access=rw, target=/var/lib/vmmig/disks/web1.vda.img'") &&
           strstr(sb.s, "'format=raw, vdev=xvdb, access=rw, target=/var/lib/vmmig/disks/web1.vdb.img'") &&
           !strstr(sb.s, "ramdisk"),
       "the xl.cfg is PVH, with xvda/xvdb and Xen's names on the command line");
    struct cold_cfg again;
    is_int(cold_from_xl(sb.s, &again, err, sizeof err), 0, "and xl.cfg reads it back (%s)", err);
    is_str(again.cmdline, c.cmdline, "  the same neutral command line");
    sb_free(&sb);

    /* the kernel command line, both ways */
    char out[512];
    is_int(cold_cmdline_map("console=ttyS0 earlyprintk=ttyS0 root=/dev/vda2 quiet", true, 1, out,
                            sizeof out, NULL, err, sizeof err),
           0, "QEMU -> Xen command line");
    is_str(out, "console=hvc0 earlyprintk=xen root=/dev/xvda2 quiet",
           "  ttyS0 becomes hvc0 (PVH has no serial port), vda2 becomes xvda2");
    is_int(cold_cmdline_map("console=xvc0 earlyprintk=xen resume=/dev/xvdb", false, 2, out,
                            sizeof out, NULL, err, sizeof err),
           0, "Xen -> QEMU command line");
    is_str(out, "console=hvc0 resume=/dev/vdb", "  xvc0 becomes hvc0, earlyprintk=xen dropped, xvdb vdb");
    ok(cold_cmdline_map("root=/dev/sda1", false, 1, out, sizeof out, NULL, err, sizeof err) ==
           -EINVAL && strstr(err, "emulated disk names"),
       "root=/dev/sda1 refused (%s)", err);
    ok(cold_cmdline_map("root=/dev/xvdc1", false, 2, out, sizeof out, NULL, err, sizeof err) ==
           -EINVAL && strstr(err, "the domain has 2 disks"),
       "a disk name beyond the domain's disks refused (%s)", err);
    ok(cold_cmdline_map("root=/dev/xvdaa", false, 2, out, sizeof out, NULL, err, sizeof err) ==
           -EINVAL && strstr(err, "cannot map"),
       "a two-letter disk name refused (%s)", err);
    ok(cold_cmdline_map("root=/dev/vdb", true, 1, out, sizeof out, NULL, err, sizeof err) ==
           -EINVAL, "the same towards Xen (%s)", err);

    /* migration = "no" is carried and makes the source refuse */
    is_int(xl("name = \"a\"\nkernel = \"/k\"\ntype = \"pvh\"\nmigration = \"no\"\n"), 0,
           "migration = \"no\" parses");
    ok(c.nomigrate && !strcmp(c.nomigrate_what, "migration = \"no\""), "  and holds the domain (%s)",
       c.nomigrate_what);
    is_int(xl("name = \"a\"\nkernel = \"/k\"\nnomigrate = 1\n"), 0, "nomigrate = 1 parses");
    ok(c.nomigrate, "  and holds the domain");
    ok(noted("a PV domain boots as a plain kernel"), "  a domain without type= (PV) gets a note");

    /* every refusal */
    refused("bootloader = \"pygrub\"", "bootloader runs in dom0", "bootloader");
    refused("pci = [ '01:00.0' ]", "PCI passthrough", "pci");
    refused("vif = [ 'bridge=xenbr0,backend=netdom' ]", "served by the driver domain netdom",
            "a vif behind a driver domain");
    refused("vif = [ 'bridge=xenbr0,mac=00:16:3e:00:00:0g' ]", "mac=00:16:3e:00:00:0g is not a MAC",
            "a vif with a malformed MAC");
    refused("vif = [ 'bridge=br0/1' ]", "not an interface name", "a vif on a bad bridge name");
    refused("vif = [ 'bridge' ]", "'bridge' is not KEY=VALUE", "a vif key without a value");
    refused("vif = 'bridge=br0'", "vif is not a list", "a vif that is not a list");
    refused("vfb = [ 'vnc=1' ]", "framebuffer", "vfb");
    refused("vkb = [ 'backend-type=qemu' ]", "virtual keyboard", "vkb");
    refused("channel = [ 'name=org.qemu.guest_agent.0' ]", "PV channels", "channel");
    refused("usbdev = [ 'hostbus=1' ]", "USB", "usbdev");
    refused("iomem = [ '1000,1' ]", "I/O memory", "iomem");
    refused("device_model_args = [ '-s' ]", "device model", "device_model_args");
    refused("vtpm = [ 'backend=vtpm' ]", "vTPM", "vtpm");
    refused("p9 = [ 'tag=x' ]", "9pfs", "p9");
    refused("frobnicate = 1", "frobnicate: vmmig does not know how to carry it", "an unknown key");
    refused("disk = [ 'format=qcow2, vdev=xvda, target=/x.qcow2' ]", "format qcow2: only raw",
            "a qcow2 disk");
    refused("disk = [ 'tap:qcow2:/x.qcow2,xvda,w' ]", "format qcow2", "a tap:qcow2: disk");
    refused("disk = [ 'vhd:/x.vhd,xvda,w' ]", "format vhd", "a vhd: disk");
    refused("disk = [ 'format=raw, vdev=xvda, access=ro, target=/x.img' ]",
            "only read-write disks", "a read-only disk");
    refused("disk = [ 'format=raw, vdev=xvda, devtype=cdrom, target=/x.iso' ]", "CD-ROM",
            "a CD-ROM");
    refused("disk = [ '/x.iso,raw,xvdc:cdrom,r' ]", "CD-ROM", "a positional CD-ROM");
    refused("disk = [ 'vdev=xvda, script=block-iscsi, target=iqn.x' ]", "hotplug script",
            "a disk behind a script");
    refused("disk = [ 'vdev=xvda, backend=stor1, target=/x.img' ]", "driver domain stor1",
            "a disk from a driver domain");
    refused("disk = [ 'phy:/dev/nbd0,xvda,w' ]", "blockmirror", "a blockmirror /dev/nbdN disk");
    refused("disk = [ '/x.img,raw,xvdb,rw' ]", "they must be xvda, xvdb", "a first disk not xvda");
    refused("disk = [ '/a.img,raw,xvda,rw', '/b.img,raw,xvdc,rw' ]", "disk 2 is xvdc",
            "disks out of order");
    refused("disk = [ 'format=raw, access=rw, target=/x.img' ]", "no vdev", "a disk without vdev");
    refused("disk = [ 'format=raw, vdev=xvda, target=relative.img' ]", "no absolute target",
            "a relative disk path");
    refused("disk = [ 'format=raw, vdev=xvda, colo-host=x, target=/x.img' ]",
            "colo-host= is not understood", "an unknown disk key");
    refused("extra = \"root=/dev/sda1\"", "emulated disk names", "root=/dev/sda1");
    refused("extra = \"root=/dev/xvda1\"", "the domain has 0 disks", "root on a disk it lacks");
    refused("memory = 0", "bad memory", "memory = 0");
    refused("vcpus = 999", "bad vcpus", "vcpus = 999");
    refused("name = [ 'x' ]", "is a list", "a list where a value goes");

    ok(xl("name = \"h\"\ntype = \"hvm\"\nkernel = \"/k\"\n") == -EINVAL &&
           strstr(err, "HVM domain boots firmware"),
       "type = \"hvm\" refused (%s)", err);
    ok(xl("name = \"h\"\ntype = \"pvh\"\n") == -EINVAL && strstr(err, "no kernel"),
       "no kernel refused (%s)", err);
    ok(xl("type = \"pvh\"\nkernel = \"/k\"\n") == -EINVAL && strstr(err, "no name"),
       "no name refused (%s)", err);
    ok(xl("name = \"h\"\ntype = \"arm\"\nkernel = \"/k\"\n") == -EINVAL && strstr(err, "not one vmmig knows"),
       "an unknown type refused (%s)", err);
    ok(xl("name = \"h\"\nkernel = \"/k\n") == -EINVAL && strstr(err, "line 2"),
       "an unterminated string refused with its line (%s)", err);

    /* vifs: bridge and MAC cross */
    is_int(xl("name = \"v\"\nuuid = \"6a1c0f4e-7d2b-4c11-9e0a-c01d00000001\"\ntype = \"pvh\"\n"
              "kernel = \"/k\"\nvif = [ 'mac=00:16:3E:00:00:01, bridge=br0, type=vif, "
              "script=vif-bridge', 'vifname=v1' ]\n"),
           0, "an xl.cfg with two vifs (%s)", err);
    is_int(c.nvifs, 2, "  two");
    ok(!strcmp(c.vifs[0].bridge, "br0") && !strcmp(c.vifs[0].mac, "00:16:3e:00:00:01"),
       "  vif 0: its bridge and MAC");
    ok(!strcmp(c.vifs[1].bridge, "xenbr0") && noted("vif 1 joins xenbr0"),
       "  vif 1: xl's default bridge, said");
    ok(noted("vif 0: script=vif-bridge stays behind") && noted("vif 1: vifname=v1 stays behind"),
       "  what stays behind is said");
    ok(noted("vif 1 has no mac= here"), "  and that vif 1 gets a MAC made from the uuid");
    {
        struct strbuf sb = {0};
        char *dd[1] = {NULL};
        cold_to_neutral(&c, "/k", NULL, dd, &sb);
        ok(strstr(sb.s, "vif = [ 'bridge=br0,mac=00:16:3e:00:00:01', 'bridge=xenbr0' ]\n") != NULL,
           "  to the neutral form");
        struct cold_cfg n;
        is_int(cold_from_neutral(sb.s, &n, err, sizeof err), 0, "  which reads back (%s)", err);
        char want[18];
        qemu_vif_default_mac("6a1c0f4e-7d2b-4c11-9e0a-c01d00000001", 1, want);
        ok(n.nvifs == 2 && !strcmp(n.vifs[1].mac, want),
           "  vif 1 with the MAC QEMU gives it (%s), for Xen too", n.vifs[1].mac);
        sb_reset(&sb);
        is_int(cold_to_xl(&n, "/k", NULL, dd, &sb, err, sizeof err), 0, "  to xl.cfg");
        char line[200];
        snprintf(line, sizeof line, "vif = [ 'bridge=br0,mac=00:16:3e:00:00:01', "
                 "'bridge=xenbr0,mac=%s' ]\n", want);
        ok(strstr(sb.s, line) != NULL, "  with both MACs: %s", line);
        sb_free(&sb);
    }
    {
        struct cold_cfg n;
        is_int(cold_from_neutral("name = \"q\"\nkernel = \"/k\"\n"
                                 "vif = [ 'bridge=br0,model=e1000' ]\n", &n, err, sizeof err),
               0, "a QEMU domain's e1000 vif");
        ok(n.nnotes && strstr(n.notes[0], "vif 0: model=e1000 stays behind"), "  its model stays behind");
        ok(cold_from_neutral("name = \"q\"\nkernel = \"/k\"\nvif = [ 'bridge=br0,rate=1Mb/s' ]\n",
                             &n, err, sizeof err) == -EINVAL && strstr(err, "unknown key 'rate'"),
           "  a vif QEMU domains cannot have refused (%s)", err);
        struct strbuf sb = {0};
        sb_printf(&sb, "name = \"q\"\nkernel = \"/k\"\nvif = [");
        for (int i = 0; i <= QEMU_MAX_VIFS; i++)
            sb_printf(&sb, "%s'bridge=br%d'", i ? ", " : "", i);
        sb_printf(&sb, "]\n");
        ok(cold_from_neutral(sb.s, &n, err, sizeof err) == -EINVAL && strstr(err, "more than"),
           "  more than %d vifs refused (%s)", QEMU_MAX_VIFS, err);
        sb_reset(&sb);
        sb_printf(&sb, "name = \"q\"\ntype = \"pvh\"\nkernel = \"/k\"\nvif = [");
        for (int i = 0; i <= QEMU_MAX_VIFS; i++)
            sb_printf(&sb, "%s'bridge=br%d'", i ? ", " : "", i);
        sb_printf(&sb, "]\n");
        ok(xl(sb.s) == -EINVAL && strstr(err, "more than"), "  from xl.cfg too (%s)", err);
        sb_free(&sb);
    }

    /* the neutral form (a QEMU domain going to Xen) */
    struct cold_cfg n;
    ok(cold_from_neutral("name = \"q\"\nkernel = \"/k\"\ndisk = [ 'target=blockmirror:q.xvda' ]\n",
                         &n, err, sizeof err) == -EINVAL && strstr(err, "blockmirror disk"),
       "a QEMU domain's blockmirror:NAME disk refused (%s)", err);
    ok(cold_from_neutral("name = \"q\"\ndisk = [ 'target=/q.img' ]\n", &n, err, sizeof err) ==
           -EINVAL && strstr(err, "no kernel"),
       "a QEMU domain without a kernel refused for PVH (%s)", err);
    ok(cold_from_neutral("name = \"q\"\nkernel = \"/k\"\nvga = \"std\"\n", &n, err, sizeof err) ==
           -EINVAL && strstr(err, "vga: vmmig does not know how to carry it to Xen"),
       "an unknown key of a QEMU domain refused (%s)", err);
    is_int(cold_from_neutral("name = \"q\"\nkernel = \"/k\"\ninitrd = \"/i\"\nextra = \"root=/dev/vda\"\n"
                             "disk = [ 'target=/q.img' ]\nmigration = \"no\"\n",
                             &n, err, sizeof err),
           0, "a neutral config with initrd=, extra= and a disk without vdev (%s)", err);
    ok(!strcmp(n.ramdisk, "/i") && !strcmp(n.cmdline, "root=/dev/vda") && n.ndisks == 1 &&
           n.nomigrate,
       "  read as ramdisk, cmdline, one disk, held");
    return done_testing();
}
