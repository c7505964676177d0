/* Cold migration's configuration translation (coldcfg.h): xl.cfg and the
 * neutral form to struct cold_cfg and back, refusing what cannot cross. */
#define _GNU_SOURCE
#include "coldcfg.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ITEMS_MAX 16

/* One "key = value" or "key = [ 'a', 'b' ]" of xl.cfg's syntax. */
struct cfg_entry {
    char key[64];
    bool list;
    char items[ITEMS_MAX][512];
    int nitems;
};

void cold_note(struct cold_cfg *c, const char *fmt, ...)
{
    va_list ap;
    if (!c || c->nnotes == COLD_MAX_NOTES)
        return;
    va_start(ap, fmt);
    vsnprintf(c->notes[c->nnotes++], sizeof c->notes[0], fmt, ap);
    va_end(ap);
}

static void skip(const char **p, int *line, bool newlines)
{
    for (;;) {
        if (**p == '#') {
            while (**p && **p != '\n')
                (*p)++;
        } else if (**p == ' ' || **p == '\t' || **p == '\r' || **p == ';' ||
                   (newlines && **p == '\n')) {
            if (**p == '\n')
                (*line)++;
            (*p)++;
        } else {
            return;
        }
    }
}

static int scalar(const char **p, char *buf, size_t size)
{
    size_t n = 0;
    if (**p == '"' || **p == '\'') {
        char q = *(*p)++;
        while (**p && **p != q && **p != '\n') {
            if (n + 1 < size)
                buf[n++] = **p;
            (*p)++;
        }
        if (**p != q)
            return -EINVAL;
        (*p)++;
    } else {
        while (**p && (isalnum((unsigned char)**p) || strchr("._-:/+", **p))) {
            if (n + 1 < size)
                buf[n++] = **p;
            (*p)++;
        }
        if (!n)
            return -EINVAL;
    }
    buf[n] = 0;
    return 0;
}

/* The next entry: 1, 0 at the end, -EINVAL (err says where). */
static int next_entry(const char **p, int *line, struct cfg_entry *e, char *err, size_t errlen)
{
    size_t n = 0;

    memset(e, 0, sizeof *e);
    skip(p, line, true);
    if (!**p)
        return 0;
    while (isalnum((unsigned char)**p) || **p == '_') {
        if (n + 1 < sizeof e->key)
            e->key[n++] = **p;
        (*p)++;
    }
    skip(p, line, false);
    if (!n || **p != '=') {
        snprintf(err, errlen, "line %d: expected KEY = VALUE", *line);
        return -EINVAL;
    }
    (*p)++;
    skip(p, line, false);
    if (**p != '[') {
        e->nitems = 1;
        if (scalar(p, e->items[0], sizeof e->items[0])) {
            snprintf(err, errlen, "line %d: bad value for %s", *line, e->key);
            return -EINVAL;
        }
        return 1;
    }
    e->list = true;
    (*p)++;
    for (;;) {
        skip(p, line, true);
        if (**p == ']') {
            (*p)++;
            return 1;
        }
        if (e->nitems == ITEMS_MAX) {
            snprintf(err, errlen, "line %d: more than %d items in %s", *line, ITEMS_MAX, e->key);
            return -EINVAL;
        }
        if (scalar(p, e->items[e->nitems++], sizeof e->items[0])) {
            snprintf(err, errlen, "line %d: bad list item in %s", *line, e->key);
            return -EINVAL;
        }
        skip(p, line, true);
        if (**p == ',')
            (*p)++;
    }
}

static bool is_off(const char *v)
{
    return !strcmp(v, "no") || !strcmp(v, "0") || !strcmp(v, "false");
}

static void trim(char *s)
{
    size_t n = strlen(s), i = 0;
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = 0;
    while (isspace((unsigned char)s[i]))
        i++;
    memmove(s, s + i, strlen(s + i) + 1);
}

/* Keys whose meaning stays behind on purpose: said in a note. */
static const char *const ignored_keys[][2] = {
    {"on_poweroff", "what the domain does on power-off, reboot or crash"},
    {"on_reboot", "what the domain does on power-off, reboot or crash"},
    {"on_crash", "what the domain does on power-off, reboot or crash"},
    {"on_watchdog", "what the domain does on power-off, reboot or crash"},
    {"on_soft_reset", "what the domain does on power-off, reboot or crash"},
    {"cpus", "CPU pinning and scheduling (this host's CPUs)"},
    {"cpus_soft", "CPU pinning and scheduling (this host's CPUs)"},
    {"cpu_weight", "CPU pinning and scheduling (this host's CPUs)"},
    {"cap", "CPU pinning and scheduling (this host's CPUs)"},
    {"pool", "the CPU pool (this host's)"},
    {"maxvcpus", "vCPU hotplug (maxvcpus): the domain gets vcpus"},
    {"maxmem", "ballooning (maxmem): the domain gets memory"},
    {"seclabel", "the XSM label"},
    {"tsc_mode", "Xen's TSC mode (QEMU/KVM keeps its own)"},
    {"localtime", "the clock's time zone setting"},
    {"max_grant_frames", "grant table sizes"},
    {"max_maptrack_frames", "grant table sizes"},
};

/* Keys that cannot be carried, with the reason. */
static const char *const refused_keys[][2] = {
    {"bootloader", "a bootloader runs in dom0 against the disk; QEMU boots a kernel given "
                   "directly: set kernel= and ramdisk= instead"},
    {"bootloader_args", "a bootloader runs in dom0; set kernel= and ramdisk= instead"},
    {"pci", "PCI passthrough devices are this host's hardware"},
    {"vfb", "a virtual framebuffer: vmmig's QEMU domains have no display"},
    {"vkb", "a virtual keyboard: vmmig's QEMU domains have no display"},
    {"channel", "PV channels have no counterpart in vmmig's QEMU domains"},
    {"vtpm", "a vTPM lives in a Xen stub domain"},
    {"p9", "9pfs shares are this host's directories"},
    {"usbctrl", "USB devices are this host's hardware"},
    {"usbdev", "USB devices are this host's hardware"},
    {"dtdev", "device-tree passthrough is this host's hardware"},
    {"iomem", "I/O memory passthrough is this host's hardware"},
    {"ioports", "I/O port passthrough is this host's hardware"},
    {"irqs", "IRQ passthrough is this host's hardware"},
    {"vdispl", "a PV display has no counterpart in vmmig's QEMU domains"},
    {"vsnd", "a PV sound card has no counterpart in vmmig's QEMU domains"},
    {"vdisk", "PV devices other than disks are not carried"},
    {"device_model_version", "a device model is HVM's"},
    {"device_model_override", "a device model is HVM's"},
    {"device_model_args", "a device model is HVM's"},
    {"driver_domain", "a driver domain serves this host's devices"},
    {"nestedhvm", "nested virtualisation settings are Xen's"},
    {"altp2m", "altp2m is Xen's"},
    {"cpuid", "a CPUID policy is Xen's"},
};

static int ndisks_in_cmdline_ok(const char *dev, int ndisks, bool xen, char *err, size_t errlen,
                                const char *word)
{
    /* dev points after "/dev/": "xvda1", "vdb" ... */
    const char *p = dev + (xen ? 3 : 2);
    if (!islower((unsigned char)*p) || (p[1] && !isdigit((unsigned char)p[1]))) {
        snprintf(err, errlen, "%s: cannot map the device (only the whole name %sX[N] with one "
                 "letter)", word, xen ? "/dev/xvd" : "/dev/vd");
        return -EINVAL;
    }
    if (*p - 'a' >= ndisks) {
        snprintf(err, errlen, "%s: the domain has %d disk%s", word, ndisks, ndisks == 1 ? "" : "s");
        return -EINVAL;
    }
    return 0;
}

int cold_cmdline_map(const char *in, bool to_xen, int ndisks, char *out, size_t size,
                     struct cold_cfg *cfg, char *err, size_t errlen)
{
    struct strbuf sb = {0};
    char *copy = xstrdup(in), *save = NULL;
    int rc = 0;

    for (char *w = strtok_r(copy, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
        char *dev = strstr(w, "/dev/");
        char word[300];
        strlcpy0(word, w, sizeof word);
        if (dev && (!strncmp(dev + 5, "sd", 2) || !strncmp(dev + 5, "hd", 2))) {
            snprintf(err, errlen, "%s: emulated disk names (sdX, hdX) cannot be mapped: use "
                     "%s or root=UUID=", w, to_xen ? "/dev/vdX" : "/dev/xvdX");
            rc = -EINVAL;
            goto out;
        }
        if (!to_xen && dev && !strncmp(dev + 5, "xvd", 3)) {
            if ((rc = ndisks_in_cmdline_ok(dev + 5, ndisks, true, err, errlen, word)))
                goto out;
            memmove(dev + 5, dev + 6, strlen(dev + 6) + 1); /* xvdX -> vdX */
            cold_note(cfg, "%s became %s (QEMU's virtio disk names)", word, w);
        } else if (to_xen && dev && !strncmp(dev + 5, "vd", 2)) {
            if ((rc = ndisks_in_cmdline_ok(dev + 5, ndisks, false, err, errlen, word)))
                goto out;
            sb_printf(&sb, "%s%.*sxvd%s", sb.len ? " " : "", (int)(dev + 5 - w), w, dev + 7);
            cold_note(cfg, "%s became %.*sxvd%s (Xen's disk names)", word, (int)(dev + 5 - w), w,
                      dev + 7);
            continue;
        } else if (!to_xen && !strcmp(w, "console=xvc0")) {
            strcpy(w, "console=hvc0");
            cold_note(cfg, "console=xvc0 became console=hvc0");
        } else if (to_xen && !strncmp(w, "console=ttyS", 12)) {
            cold_note(cfg, "%s became console=hvc0 (a PVH domain has no serial port)", word);
            strcpy(w, "console=hvc0");
        } else if (to_xen && !strncmp(w, "earlyprintk=ttyS", 16)) {
            cold_note(cfg, "%s became earlyprintk=xen (a PVH domain has no serial port)", word);
            strcpy(w, "earlyprintk=xen");
        } else if (!to_xen && !strcmp(w, "earlyprintk=xen")) {
            cold_note(cfg, "earlyprintk=xen dropped (Xen's console)");
            continue;
        }
        sb_printf(&sb, "%s%s", sb.len ? " " : "", w);
    }
    if (sb.len >= size) {
        snprintf(err, errlen, "the kernel command line is too long (%zu bytes)", sb.len);
        rc = -E2BIG;
        goto out;
    }
    strlcpy0(out, sb.s ? sb.s : "", size);
out:
    free(copy);
    sb_free(&sb);
    return rc;
}

/* One xl disk spec (xl-disk-configuration(5)) into d; vdev into vdev. */
static int xl_disk(const char *spec, struct cold_disk *d, char *vdev, size_t vdevlen, char *err,
                   size_t errlen)
{
    char copy[512], *pos[4], format[32] = "raw", access[16] = "rw", target[256] = "";
    int npos = 0;
    char *s = copy;

    strlcpy0(copy, spec, sizeof copy);
    vdev[0] = 0;
    memset(d, 0, sizeof *d);
    while (s && *s) {
        char *comma, *eq;
        while (isspace((unsigned char)*s))
            s++;
        comma = strchr(s, ',');
        /* target= takes the rest, commas included */
        if (!strncmp(s, "target=", 7)) {
            strlcpy0(target, s + 7, sizeof target);
            trim(target);
            break;
        }
        if (comma)
            *comma = 0;
        trim(s);
        eq = strchr(s, '=');
        if (!eq) {
            if (npos == 4) {
                snprintf(err, errlen, "disk '%s': too many positional parameters", spec);
                return -EINVAL;
            }
            pos[npos++] = s;
        } else {
            *eq = 0;
            const char *k = s, *v = eq + 1;
            if (!strcmp(k, "format"))
                strlcpy0(format, v, sizeof format);
            else if (!strcmp(k, "vdev"))
                strlcpy0(vdev, v, vdevlen);
            else if (!strcmp(k, "access"))
                strlcpy0(access, v, sizeof access);
            else if (!strcmp(k, "devtype") && !strcmp(v, "cdrom")) {
                snprintf(err, errlen, "disk '%s': a CD-ROM is not carried (remove it)", spec);
                return -EINVAL;
            } else if (!strcmp(k, "script")) {
                snprintf(err, errlen, "disk '%s': a disk behind a hotplug script (%s) cannot be "
                         "read from dom0 by vmmig", spec, v);
                return -EINVAL;
            } else if (!strcmp(k, "backend") && strcmp(v, "0") && strcmp(v, "Domain-0")) {
                snprintf(err, errlen, "disk '%s': served by the driver domain %s, not dom0", spec,
                         v);
                return -EINVAL;
            } else if (strcmp(k, "backendtype") && strcmp(k, "discard") &&
                       strcmp(k, "direct-io-safe") && strcmp(k, "devtype") &&
                       strcmp(k, "specification")) {
                snprintf(err, errlen, "disk '%s': %s= is not understood by vmmig", spec, k);
                return -EINVAL;
            }
        }
        s = comma ? comma + 1 : NULL;
    }
    /* positional: target,format,vdev,access or target,vdev,access */
    if (npos == 4) {
        strlcpy0(target, pos[0], sizeof target);
        strlcpy0(format, pos[1], sizeof format);
        strlcpy0(vdev, pos[2], vdevlen);
        strlcpy0(access, pos[3], sizeof access);
    } else if (npos == 3) {
        strlcpy0(target, pos[0], sizeof target);
        strlcpy0(vdev, pos[1], vdevlen);
        strlcpy0(access, pos[2], sizeof access);
    } else if (npos == 2) {
        strlcpy0(target, pos[0], sizeof target);
        strlcpy0(vdev, pos[1], vdevlen);
    } else if (npos == 1 && !target[0]) {
        strlcpy0(target, pos[0], sizeof target);
    }
    if (strchr(vdev, ':')) {
        if (strstr(vdev, ":cdrom")) {
            snprintf(err, errlen, "disk '%s': a CD-ROM is not carried (remove it)", spec);
            return -EINVAL;
        }
        *strchr(vdev, ':') = 0;
    }
    /* legacy prefixes: phy:/dev/x, file:/img, tap:aio:/img, qcow2:/img ... */
    static const char *const prefixes[][2] = {
        {"phy:", "phy"},     {"file:", "raw"},      {"tap:aio:", "raw"}, {"aio:", "raw"},
        {"raw:", "raw"},     {"tap:qcow2:", "qcow2"}, {"tap:qcow:", "qcow"}, {"tap:vhd:", "vhd"},
        {"qcow2:", "qcow2"}, {"qcow:", "qcow"},     {"vhd:", "vhd"},     {"qed:", "qed"},
    };
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++) {
        size_t n = strlen(prefixes[i][0]);
        if (!strncmp(target, prefixes[i][0], n)) {
            memmove(target, target + n, strlen(target + n) + 1);
            if (!strcmp(prefixes[i][1], "phy"))
                d->phy = true;
            else
                strlcpy0(format, prefixes[i][1], sizeof format);
            break;
        }
    }
    if (strcmp(format, "raw")) {
        snprintf(err, errlen, "disk '%s': format %s: only raw images and block devices are "
                 "carried (convert it with qemu-img convert -O raw)", spec, format);
        return -EINVAL;
    }
    if (strcmp(access, "rw") && strcmp(access, "w")) {
        snprintf(err, errlen, "disk '%s': access %s: only read-write disks are carried", spec,
                 access);
        return -EINVAL;
    }
    if (target[0] != '/') {
        snprintf(err, errlen, "disk '%s': no absolute target path", spec);
        return -EINVAL;
    }
    if (!strncmp(target, "/dev/nbd", 8)) {
        snprintf(err, errlen, "disk '%s': a blockmirror (NBD) disk: migrate the domain live "
                 "with it, or serve the image without blockmirror", spec);
        return -EINVAL;
    }
    strlcpy0(d->path, target, sizeof d->path);
    return 0;
}

/* vdev i must be xvd('a'+i) (or the same letter as hd, sd or vd), so that
 * the order QEMU names virtio disks in (vda, vdb, ...) keeps each one's
 * name. */
static int vdev_check(const char *vdev, int i, char *err, size_t errlen)
{
    const char *p = !strncmp(vdev, "xvd", 3) ? vdev + 3
                    : (!strncmp(vdev, "sd", 2) || !strncmp(vdev, "hd", 2) || !strncmp(vdev, "vd", 2))
                        ? vdev + 2
                        : NULL;
    if (!p || p[0] != 'a' + i || p[1]) {
        snprintf(err, errlen, "disk %d is %s: QEMU names disks in order (vda, vdb, ...), so "
                 "they must be xvda, xvdb, ... in that order", i + 1, vdev);
        return -EINVAL;
    }
    return 0;
}

/* One xl vif spec (xl-network-configuration(5)): its bridge (xl's default
 * xenbr0) and MAC cross; where the backend runs and how it is plugged
 * stay behind, said in a note. */
static int xl_vif(struct cold_cfg *c, const char *spec, char *err, size_t errlen)
{
    char copy[512], *save = NULL, bridge[64] = "xenbr0", mac[64] = "", why[300];
    int i = c->nvifs;

    if (c->nvifs == QEMU_MAX_VIFS) {
        snprintf(err, errlen, "more than %d vifs", QEMU_MAX_VIFS);
        return -EINVAL;
    }
    strlcpy0(copy, spec, sizeof copy);
    bool have_bridge = false;
    for (char *kv = strtok_r(copy, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) {
            snprintf(err, errlen, "vif '%s': '%s' is not KEY=VALUE", spec, kv);
            return -EINVAL;
        }
        *eq = 0;
        trim(kv);
        char *v = eq + 1;
        trim(v);
        if (!strcmp(kv, "bridge")) {
            strlcpy0(bridge, v, sizeof bridge);
            have_bridge = true;
        } else if (!strcmp(kv, "mac")) {
            strlcpy0(mac, v, sizeof mac);
        } else if (!strcmp(kv, "backend") && strcmp(v, "0") && strcmp(v, "Domain-0")) {
            snprintf(err, errlen, "vif '%s': served by the driver domain %s, not dom0", spec, v);
            return -EINVAL;
        } else if (strcmp(kv, "backend") && strcmp(kv, "type")) {
            cold_note(c, "vif %d: %s=%s stays behind", i, kv, v);
        }
    }
    if (!have_bridge)
        cold_note(c, "vif %d joins xenbr0 (xl's default bridge)", i);
    char qspec[160];
    snprintf(qspec, sizeof qspec, "bridge=%s%s%s", bridge, mac[0] ? ",mac=" : "", mac);
    if (qemu_vif_parse(qspec, &c->vifs[i], why, sizeof why)) {
        snprintf(err, errlen, "vif '%s': %s", spec, strstr(why, "': ") ? strstr(why, "': ") + 3 : why);
        return -EINVAL;
    }
    if (!mac[0])
        cold_note(c, "vif %d has no mac= here: QEMU makes one from the uuid (Xen's was random)",
                  i);
    c->nvifs++;
    return 0;
}

/* The keys both forms carry alike.  1 taken, 0 not one of them, or
 * -EINVAL with err. */
static int common_key(struct cold_cfg *c, const char *k, const char *v, char *err, size_t errlen)
{
    if (!strcmp(k, "name")) {
        strlcpy0(c->name, v, sizeof c->name);
    } else if (!strcmp(k, "uuid")) {
        strlcpy0(c->uuid, v, sizeof c->uuid);
    } else if (!strcmp(k, "memory") || !strcmp(k, "vcpus")) {
        long n;
        if (parse_long(v, 1, !strcmp(k, "memory") ? 1 << 22 : 256, &n)) {
            snprintf(err, errlen, "bad %s '%s'", k, v);
            return -EINVAL;
        }
        *(!strcmp(k, "memory") ? &c->memory_mib : &c->vcpus) = (unsigned)n;
    } else if (!strcmp(k, "kernel")) {
        strlcpy0(c->kernel, v, sizeof c->kernel);
    } else if (!strcmp(k, "ramdisk")) {
        strlcpy0(c->ramdisk, v, sizeof c->ramdisk);
    } else if (!strcmp(k, "migration") || !strcmp(k, "nomigrate")) {
        if (is_off(v) == !strcmp(k, "migration")) {
            c->nomigrate = true;
            snprintf(c->nomigrate_what, sizeof c->nomigrate_what,
                     !strcmp(k, "migration") ? "%s = \"%s\"" : "%s = %s", k, v);
        }
    } else {
        return 0;
    }
    return 1;
}

/* Append a disk (xl's disk spec); need_vdev: it must name its vdev. */
static int add_disk(struct cold_cfg *c, const char *spec, bool need_vdev, char *err,
                    size_t errlen)
{
    char vdev[32];

    if (c->ndisks == COLD_MAX_DISKS) {
        snprintf(err, errlen, "more than %d disks", COLD_MAX_DISKS);
        return -EINVAL;
    }
    if (xl_disk(spec, &c->disks[c->ndisks], vdev, sizeof vdev, err, errlen))
        return -EINVAL;
    if (!vdev[0] && need_vdev) {
        snprintf(err, errlen, "disk '%s': no vdev", spec);
        return -EINVAL;
    }
    if (vdev[0] && vdev_check(vdev, c->ndisks, err, errlen))
        return -EINVAL;
    c->ndisks++;
    return 0;
}

static void cfg_defaults(struct cold_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->memory_mib = 128;
    c->vcpus = 1;
}

int cold_from_xl(const char *text, struct cold_cfg *c, char *err, size_t errlen)
{
    struct cfg_entry *e = xmalloc(sizeof *e);
    const char *p = text;
    char type[16] = "", root[128] = "", extra[512] = "", cmdline[512] = "";
    bool have_cmdline = false;
    int line = 1, r, rc = -EINVAL;

    cfg_defaults(c);
    while ((r = next_entry(&p, &line, e, err, errlen)) > 0) {
        const char *k = e->key, *v = e->items[0];
        bool done = false;
        if (e->list && strcmp(k, "disk") && e->nitems == 0)
            continue; /* vif = [] and the like: nothing to carry */
        for (size_t i = 0; i < sizeof refused_keys / sizeof *refused_keys && !done; i++)
            if (!strcmp(k, refused_keys[i][0])) {
                snprintf(err, errlen, "%s: %s", k, refused_keys[i][1]);
                goto out;
            }
        for (size_t i = 0; i < sizeof ignored_keys / sizeof *ignored_keys && !done; i++)
            if (!strcmp(k, ignored_keys[i][0])) {
                if (strcmp(k, "maxmem") && strcmp(k, "maxvcpus"))
                    cold_note(c, "%s stays behind: %s", k, ignored_keys[i][1]);
                else
                    cold_note(c, "%s = %s stays behind: %s", k, v, ignored_keys[i][1]);
                done = true;
            }
        if (done)
            continue;
        if (e->list != (!strcmp(k, "disk") || !strcmp(k, "vif"))) {
            snprintf(err, errlen, "line %d: %s %s a list", line, k, e->list ? "is" : "is not");
            goto out;
        }
        int taken = common_key(c, k, v, err, errlen);
        if (taken < 0)
            goto out;
        if (taken) {
            continue;
        } else if (!strcmp(k, "type") || !strcmp(k, "builder")) {
            strlcpy0(type, !strcmp(v, "generic") ? "pv" : v, sizeof type);
        } else if (!strcmp(k, "cmdline")) {
            strlcpy0(cmdline, v, sizeof cmdline);
            have_cmdline = true;
        } else if (!strcmp(k, "extra")) {
            strlcpy0(extra, v, sizeof extra);
        } else if (!strcmp(k, "root")) {
            strlcpy0(root, v, sizeof root);
        } else if (!strcmp(k, "disk")) {
            for (int i = 0; i < e->nitems; i++)
                if (add_disk(c, e->items[i], true, err, errlen))
                    goto out;
        } else if (!strcmp(k, "vif")) {
            for (int i = 0; i < e->nitems; i++)
                if (xl_vif(c, e->items[i], err, errlen))
                    goto out;
        } else {
            snprintf(err, errlen, "%s: vmmig does not know how to carry it to QEMU (remove it "
                     "to migrate cold)", k);
            goto out;
        }
    }
    if (r < 0)
        goto out;
    if (!c->name[0]) {
        snprintf(err, errlen, "no name");
        goto out;
    }
    if (!strcmp(type, "hvm")) {
        snprintf(err, errlen, "type = \"hvm\": an HVM domain boots firmware and emulated "
                 "devices; vmmig carries PVH domains (and PV ones with a kernel)");
        goto out;
    }
    if (type[0] && strcmp(type, "pvh") && strcmp(type, "pv")) {
        snprintf(err, errlen, "type = \"%s\" is not one vmmig knows", type);
        goto out;
    }
    if (!strcmp(type, "pv") || !type[0])
        cold_note(c, "a PV domain boots as a plain kernel under QEMU (its kernel must support "
                  "that, as Debian's does)");
    if (!c->kernel[0]) {
        snprintf(err, errlen, "no kernel: QEMU boots a kernel given directly (kernel=)");
        goto out;
    }
    /* xl's command line: cmdline, or root= and extra= joined */
    if (!have_cmdline) {
        snprintf(cmdline, sizeof cmdline, "%s%s%s%s", root[0] ? "root=" : "", root,
                 root[0] && extra[0] ? " " : "", extra);
    }
    if (cold_cmdline_map(cmdline, false, c->ndisks, c->cmdline, sizeof c->cmdline, c, err,
                         errlen))
        goto out;
    rc = 0;
out:
    free(e);
    return rc;
}

int cold_from_neutral(const char *text, struct cold_cfg *c, char *err, size_t errlen)
{
    struct cfg_entry *e = xmalloc(sizeof *e);
    const char *p = text;
    int line = 1, r, rc = -EINVAL;

    cfg_defaults(c);
    while ((r = next_entry(&p, &line, e, err, errlen)) > 0) {
        const char *k = e->key, *v = e->items[0];
        int taken = common_key(c, k, v, err, errlen);
        if (taken < 0)
            goto out;
        if (taken) {
            continue;
        } else if (!strcmp(k, "initrd")) {
            strlcpy0(c->ramdisk, v, sizeof c->ramdisk);
        } else if (!strcmp(k, "cmdline") || !strcmp(k, "extra")) {
            strlcpy0(c->cmdline, v, sizeof c->cmdline);
        } else if (!strcmp(k, "disk")) {
            for (int i = 0; i < e->nitems; i++) {
                const char *t = strstr(e->items[i], "target=");
                if (t && !strncmp(t + 7, "blockmirror:", 12)) {
                    snprintf(err, errlen, "disk '%s': a blockmirror disk: migrate the domain "
                             "live with it, or stop its blockmirror and name the image", e->items[i]);
                    goto out;
                }
                if (add_disk(c, e->items[i], false, err, errlen))
                    goto out;
            }
        } else if (!strcmp(k, "vif")) {
            for (int i = 0; i < e->nitems; i++) {
                struct qemu_vif *vif = &c->vifs[c->nvifs];
                if (c->nvifs == QEMU_MAX_VIFS) {
                    snprintf(err, errlen, "more than %d vifs", QEMU_MAX_VIFS);
                    goto out;
                }
                if (qemu_vif_parse(e->items[i], vif, err, errlen))
                    goto out;
                if (strcmp(vif->model, "virtio-net-pci"))
                    cold_note(c, "vif %d: model=%s stays behind (Xen's PV network interface)",
                              c->nvifs, vif->model);
                c->nvifs++;
            }
        } else if (!e->list || e->nitems) {
            snprintf(err, errlen, "%s: vmmig does not know how to carry it to Xen (remove it "
                     "to migrate cold)", k);
            goto out;
        }
    }
    if (r < 0)
        goto out;
    if (!c->name[0]) {
        snprintf(err, errlen, "no name");
        goto out;
    }
    if (!c->kernel[0]) {
        snprintf(err, errlen, "no kernel: a PVH domain boots a kernel given directly (kernel=)");
        goto out;
    }
    /* the MACs QEMU gave the guest go with it (Xen would pick random ones) */
    for (int i = 0; i < c->nvifs && c->uuid[0]; i++)
        if (!c->vifs[i].mac[0])
            qemu_vif_default_mac(c->uuid, i, c->vifs[i].mac);
    /* check the names it uses (vdX) against its disks */
    char tmp[512];
    if (cold_cmdline_map(c->cmdline, true, c->ndisks, tmp, sizeof tmp, NULL, err, errlen))
        goto out;
    rc = 0;
out:
    free(e);
    return rc;
}

static void cfg_quote(struct strbuf *sb, const char *key, const char *v)
{
    sb_printf(sb, "%s = \"%s\"\n", key, v);
}

/* vif = [ ... ] in the syntax both xl and vmmig create read. */
static void cold_vifs(const struct cold_cfg *c, struct strbuf *sb)
{
    if (!c->nvifs)
        return;
    sb_printf(sb, "vif = [");
    for (int i = 0; i < c->nvifs; i++)
        sb_printf(sb, "%s 'bridge=%s%s%s'", i ? "," : "", c->vifs[i].bridge,
                  c->vifs[i].mac[0] ? ",mac=" : "", c->vifs[i].mac);
    sb_printf(sb, " ]\n");
}

void cold_to_neutral(const struct cold_cfg *c, const char *kernel, const char *ramdisk,
                     char *const *disks, struct strbuf *sb)
{
    cfg_quote(sb, "name", c->name);
    if (c->uuid[0])
        cfg_quote(sb, "uuid", c->uuid);
    sb_printf(sb, "memory = %u\nvcpus = %u\n", c->memory_mib, c->vcpus);
    if (kernel)
        cfg_quote(sb, "kernel", kernel);
    if (ramdisk)
        cfg_quote(sb, "ramdisk", ramdisk);
    if (c->cmdline[0])
        cfg_quote(sb, "cmdline", c->cmdline);
    if (c->ndisks) {
        sb_printf(sb, "disk = [");
        for (int i = 0; i < c->ndisks; i++)
            sb_printf(sb, "%s 'vdev=vd%c, target=%s'", i ? "," : "", 'a' + i, disks[i]);
        sb_printf(sb, " ]\n");
    }
    cold_vifs(c, sb);
    if (c->nomigrate)
        sb_printf(sb, "migration = \"no\"\n");
}

int cold_to_xl(const struct cold_cfg *c, const char *kernel, const char *ramdisk,
               char *const *disks, struct strbuf *sb, char *err, size_t errlen)
{
    char cmdline[512];

    if (cold_cmdline_map(c->cmdline, true, c->ndisks, cmdline, sizeof cmdline, NULL, err, errlen))
        return -EINVAL;
    cfg_quote(sb, "name", c->name);
    if (c->uuid[0])
        cfg_quote(sb, "uuid", c->uuid);
    sb_printf(sb, "type = \"pvh\"\nmemory = %u\nvcpus = %u\n", c->memory_mib, c->vcpus);
    if (kernel)
        cfg_quote(sb, "kernel", kernel);
    if (ramdisk)
        cfg_quote(sb, "ramdisk", ramdisk);
    if (cmdline[0])
        cfg_quote(sb, "cmdline", cmdline);
    if (c->ndisks) {
        sb_printf(sb, "disk = [");
        for (int i = 0; i < c->ndisks; i++)
            sb_printf(sb, "%s 'format=raw, vdev=xvd%c, access=rw, target=%s'", i ? "," : "",
                      'a' + i, disks[i]);
        sb_printf(sb, " ]\n");
    }
    cold_vifs(c, sb);
    if (c->nomigrate)
        sb_printf(sb, "migration = \"no\"\n");
    return 0;
}
