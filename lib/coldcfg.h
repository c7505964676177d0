/* Cold migration between hypervisors: what a stopped domain is made of
 * (its configuration, boot files and disks) in a form both Xen and QEMU
 * understand, and the translations from and to each hypervisor's own
 * configuration (vmmig-migrate(1), COLD MIGRATION).
 *
 * The hypervisor-neutral form is what `vmmig create` reads (lib/qemudom.h):
 * name, uuid, memory, vcpus, kernel, ramdisk, cmdline, disk = [ 'vdev=vdX,
 * target=PATH' ], vif = [ 'bridge=BR,mac=MAC' ].  Disk names in it are QEMU's (vda, vdb, ... in the order
 * of the disk list): Xen's xvda is the neutral vda, and /dev/xvdX in the
 * kernel command line is /dev/vdX there.  The console is hvc0 on both
 * (Xen's PV console, QEMU's virtio console). */
#ifndef VMMIG_COLDCFG_H
#define VMMIG_COLDCFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qemunet.h"
#include "util.h"

#define COLD_MAX_DISKS 8
#define COLD_MAX_NOTES 8

struct cold_disk {
    char path[256]; /* the image or block device on the source */
    bool phy;       /* a block device (phy:) */
};

struct cold_cfg {
    char name[64];
    char uuid[37];
    unsigned memory_mib;
    unsigned vcpus;
    char kernel[256], ramdisk[256];
    char cmdline[512];              /* neutral: /dev/vdX, console=hvc0 */
    struct cold_disk disks[COLD_MAX_DISKS];
    int ndisks;                     /* disk i is vd('a'+i) / xvd('a'+i) */
    /* network interfaces: bridge and MAC cross (QEMU's model does not) */
    struct qemu_vif vifs[QEMU_MAX_VIFS];
    int nvifs;
    bool nomigrate;
    char nomigrate_what[64];
    /* what is left behind or changed, one line each, for the admin */
    char notes[COLD_MAX_NOTES][160];
    int nnotes;
};

/* A Xen domain's xl.cfg text: 0, or -EINVAL with the reason in err for
 * anything that cannot be carried to QEMU (non-PVH types but PV with a
 * kernel, a bootloader, PCI, vifs behind a driver domain, framebuffers, non-raw or
 * read-only disks, disk names out of order, keys vmmig does not know). */
int cold_from_xl(const char *text, struct cold_cfg *out, char *err, size_t errlen);

/* A QEMU domain's configuration (the neutral form): 0 or -EINVAL. */
int cold_from_neutral(const char *text, struct cold_cfg *out, char *err, size_t errlen);

/* Map a kernel command line: Xen's to the neutral form (to_xen false:
 * /dev/xvdX -> /dev/vdX, console=xvc0 -> hvc0) or the neutral form to
 * Xen's (/dev/vdX -> /dev/xvdX, console=ttyS0 -> hvc0, earlyprintk=ttyS0 ->
 * xen: a PVH domain has no serial port).  Refuses (-EINVAL) a root or
 * resume device named /dev/sdX or /dev/hdX (emulated disks neither side
 * has under these names) and /dev/[x]vdX beyond the domain's ndisks.  Each
 * change made is added to cfg's notes when cfg is not NULL. */
int cold_cmdline_map(const char *in, bool to_xen, int ndisks, char *out, size_t size,
                     struct cold_cfg *cfg, char *err, size_t errlen);

/* The neutral configuration with the boot files and disks at the given
 * paths on the destination (kernel/ramdisk may be NULL when absent;
 * disk[i] for each disk). */
void cold_to_neutral(const struct cold_cfg *c, const char *kernel, const char *ramdisk,
                     char *const *disks, struct strbuf *sb);

/* An xl.cfg for a PVH domain, from the neutral form (the command line
 * mapped to Xen's): 0 or -EINVAL. */
int cold_to_xl(const struct cold_cfg *c, const char *kernel, const char *ramdisk,
               char *const *disks, struct strbuf *sb, char *err, size_t errlen);

void cold_note(struct cold_cfg *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
