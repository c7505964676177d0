/* Network interfaces of QEMU domains (vmmig-create(1), vif): xl.cfg's vif
 * spec, the MAC a vif gets without one, and the host's half of each vif, a
 * tap device on a bridge.
 *
 * vmmig creates the taps itself (TUNSETIFF, SIOCBRADDIF) and hands QEMU
 * their descriptors (-netdev tap,fd=N): nothing depends on QEMU's bridge
 * helper and its /etc/qemu/bridge.conf, a missing bridge is said before
 * QEMU starts, and since no tap is persistent the kernel removes each one
 * when its last descriptor closes, i.e. when QEMU ends, however it ends. */
#ifndef VMMIG_QEMUNET_H
#define VMMIG_QEMUNET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QEMU_MAX_VIFS 8
#define QEMU_IFNAME_MAX 16 /* IFNAMSIZ, with its NUL */

struct qemu_vif {
    char bridge[QEMU_IFNAME_MAX];
    char mac[18];   /* "00:16:3e:12:34:56"; "" until given or generated */
    bool mac_given; /* mac= in the spec (else made from the uuid) */
    char model[16]; /* QEMU's device: virtio-net-pci (default) or e1000 */
};

/* One vif spec, "bridge=BR[,mac=MAC][,model=virtio-net-pci|e1000]": 0, or
 * -EINVAL with the reason in err (unknown key, malformed MAC, no bridge). */
int qemu_vif_parse(const char *spec, struct qemu_vif *out, char *err, size_t errlen);

/* The MAC of vif index of the domain uuid when its spec names none: Xen's
 * 00:16:3e prefix and three bytes of SHA-256(uuid/index), so that every
 * copy of the domain, on any host, gives the guest the same one. */
void qemu_vif_default_mac(const char *uuid, int index, char out[18]);

/* A bridge name that may name an interface (1-15 of [A-Za-z0-9_.-]). */
bool qemu_ifname_ok(const char *name);

/* 0 when every vif's bridge is a bridge on this host (in this network
 * namespace); else -ENODEV with "vif N: no bridge BR on this host". */
int qemu_net_check(const struct qemu_vif *vifs, int n, char *err, size_t errlen);

/* A tap for each vif, up, on its bridge, named by the kernel (vmqN):
 * fds[i] holds it (closing it removes it), names[i] (when names is not
 * NULL) its name.  On failure none is left; a missing bridge is said as
 * qemu_net_check() says it. */
int qemu_net_taps(const struct qemu_vif *vifs, int n, int *fds, char (*names)[QEMU_IFNAME_MAX],
                  char *err, size_t errlen);
void qemu_net_close(int *fds, int n);

#endif
