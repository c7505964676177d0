/* Network interfaces of QEMU domains: see qemunet.h. */
#define _GNU_SOURCE
#include "qemunet.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sha256.h"
#include "util.h"

bool qemu_ifname_ok(const char *name)
{
    size_t n = strlen(name);

    if (!n || n >= QEMU_IFNAME_MAX || !strcmp(name, ".") || !strcmp(name, ".."))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("_.-", name[i]))
            return false;
    return true;
}

/* "xx:xx:xx:xx:xx:xx", hex digits either case, not a multicast address
 * (a NIC cannot have one): lowercased into out. */
static int mac_parse(const char *s, char out[18], char *err, size_t errlen)
{
    unsigned b[6];
    int n = -1;

    if (strlen(s) != 17)
        goto bad;
    for (int i = 0; i < 17; i++)
        if (i % 3 == 2 ? s[i] != ':' : !isxdigit((unsigned char)s[i]))
            goto bad;
    if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%n", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &n) != 6 ||
        n != 17)
        goto bad;
    if (b[0] & 1) {
        snprintf(err, errlen, "mac=%s is a multicast address (its first byte is odd)", s);
        return -EINVAL;
    }
    snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5]);
    return 0;
bad:
    snprintf(err, errlen, "mac=%s is not a MAC address (six hex bytes joined by ':', "
             "00:16:3e:xx:xx:xx)", s);
    return -EINVAL;
}

int qemu_vif_parse(const char *spec, struct qemu_vif *out, char *err, size_t errlen)
{
    char copy[512], *save = NULL;
    int rc = -EINVAL;

    memset(out, 0, sizeof *out);
    strlcpy0(out->model, "virtio-net-pci", sizeof out->model);
    if (strlen(spec) >= sizeof copy) {
        snprintf(err, errlen, "vif '%.40s...' is too long", spec);
        return -EINVAL;
    }
    strlcpy0(copy, spec, sizeof copy);
    /* xl splits at ',' and takes key=value, blanks around each ignored */
    for (char *kv = strtok_r(copy, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *k = kv, *v, *eq = strchr(kv, '=');
        size_t n;
        while (isspace((unsigned char)*k))
            k++;
        if (!*k)
            continue;
        if (!eq) {
            snprintf(err, errlen, "vif '%s': '%s' is not KEY=VALUE", spec, k);
            return rc;
        }
        *eq = 0;
        v = eq + 1;
        for (n = strlen(k); n && isspace((unsigned char)k[n - 1]);)
            k[--n] = 0;
        while (isspace((unsigned char)*v))
            v++;
        for (n = strlen(v); n && isspace((unsigned char)v[n - 1]);)
            v[--n] = 0;
        if (!strcmp(k, "bridge")) {
            if (!qemu_ifname_ok(v)) {
                snprintf(err, errlen, "vif '%s': bridge=%s is not an interface name (1-15 "
                         "letters, digits, '.', '-', '_')", spec, v);
                return rc;
            }
            strlcpy0(out->bridge, v, sizeof out->bridge);
        } else if (!strcmp(k, "mac")) {
            char why[160];
            if (mac_parse(v, out->mac, why, sizeof why)) {
                snprintf(err, errlen, "vif '%s': %s", spec, why);
                return rc;
            }
            out->mac_given = true;
        } else if (!strcmp(k, "model")) {
            if (strcmp(v, "virtio-net-pci") && strcmp(v, "e1000")) {
                snprintf(err, errlen, "vif '%s': model=%s is not one vmmig's QEMU domains have "
                         "(virtio-net-pci or e1000)", spec, v);
                return rc;
            }
            strlcpy0(out->model, v, sizeof out->model);
        } else {
            snprintf(err, errlen, "vif '%s': unknown key '%s' (vmmig's QEMU domains take "
                     "bridge, mac and model)", spec, k);
            return rc;
        }
    }
    /* xl's default bridge (xenbr0) would be a guess on a QEMU host */
    if (!out->bridge[0]) {
        snprintf(err, errlen, "vif '%s': no bridge= (the host bridge the interface joins)", spec);
        return rc;
    }
    return 0;
}

void qemu_vif_default_mac(const char *uuid, int index, char out[18])
{
    char text[64];
    uint8_t h[SHA256_LEN];
    size_t n;

    n = (size_t)snprintf(text, sizeof text, "%s/%d", uuid, index);
    if (n >= sizeof text)
        n = sizeof text - 1;
    for (size_t i = 0; i < n; i++)
        text[i] = (char)tolower((unsigned char)text[i]); /* a UUID in either case */
    sha256(text, n, h);
    snprintf(out, 18, "00:16:3e:%02x:%02x:%02x", h[0], h[1], h[2]);
}

/* Is name a bridge here?  ethtool's driver name says so, in this process's
 * network namespace (sysfs would show the one it was mounted in). */
static int bridge_check(int sock, const char *name, char *err, size_t errlen)
{
    struct ethtool_drvinfo info = {.cmd = ETHTOOL_GDRVINFO};
    struct ifreq ifr = {0};

    strlcpy0(ifr.ifr_name, name, sizeof ifr.ifr_name);
    ifr.ifr_data = (void *)&info;
    if (ioctl(sock, SIOCETHTOOL, &ifr) < 0) {
        int e = errno;
        if (e == ENODEV)
            snprintf(err, errlen, "no bridge %s on this host", name);
        else if (e == EOPNOTSUPP)
            snprintf(err, errlen, "%s on this host is not a bridge", name); /* lo, say */
        else
            snprintf(err, errlen, "bridge %s: %s", name, strerror(e));
        return e == EOPNOTSUPP ? -ENODEV : -e;
    }
    if (strcmp(info.driver, "bridge")) {
        snprintf(err, errlen, "%s on this host is not a bridge (a %s device)", name, info.driver);
        return -ENODEV;
    }
    return 0;
}

/* A socket for the interface ioctls: its descriptor, or -errno with err. */
static int ioctl_socket(char *err, size_t errlen)
{
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        int rc = -errno;
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return rc;
    }
    return sock;
}

int qemu_net_check(const struct qemu_vif *vifs, int n, char *err, size_t errlen)
{
    char why[160];
    int sock, rc = 0;

    if (!n)
        return 0;
    if ((sock = ioctl_socket(err, errlen)) < 0)
        return sock;
    for (int i = 0; i < n && !rc; i++)
        if ((rc = bridge_check(sock, vifs[i].bridge, why, sizeof why)))
            snprintf(err, errlen, "vif %d: %s", i, why);
    close(sock);
    return rc;
}

void qemu_net_close(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
}

/* One tap, up, on its bridge: its descriptor, or -errno with err. */
static int tap_create(int sock, const struct qemu_vif *vif, int index, char *name, char *err,
                      size_t errlen)
{
    struct ifreq ifr = {0};
    int fd, r, rc;

    /* The kernel picks a free name: vmmig's run directories may share a
     * network namespace (and their domids). */
    strlcpy0(name, "vmq%d", QEMU_IFNAME_MAX);
    fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "vif %d: /dev/net/tun: %s", index, strerror(errno));
        return rc;
    }
    /* IFF_VNET_HDR: QEMU finds it (TUNGETIFF) and passes offloads through */
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    strlcpy0(ifr.ifr_name, name, sizeof ifr.ifr_name);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        rc = -errno;
        snprintf(err, errlen, "vif %d: creating a tap: %s", index, strerror(errno));
        goto out;
    }
    strlcpy0(name, ifr.ifr_name, QEMU_IFNAME_MAX);
    memset(&ifr, 0, sizeof ifr);
    strlcpy0(ifr.ifr_name, name, sizeof ifr.ifr_name);
    r = ioctl(sock, SIOCGIFINDEX, &ifr);
    int tapidx = ifr.ifr_ifindex;
    /* The tap takes the bridge's MTU before it joins: with a smaller one
     * the kernel would lower a bridge's MTU to it (one not set by hand
     * follows its smallest port: a jumbo-frame bridge drops to 1500), or
     * the tap would drop the bridge's larger frames. */
    if (r >= 0) {
        memset(&ifr, 0, sizeof ifr);
        strlcpy0(ifr.ifr_name, vif->bridge, sizeof ifr.ifr_name);
        r = ioctl(sock, SIOCGIFMTU, &ifr);
    }
    if (r >= 0) {
        int mtu = ifr.ifr_mtu;
        memset(&ifr, 0, sizeof ifr);
        strlcpy0(ifr.ifr_name, name, sizeof ifr.ifr_name);
        ifr.ifr_mtu = mtu;
        if (ioctl(sock, SIOCSIFMTU, &ifr) < 0) {
            rc = -errno;
            snprintf(err, errlen, "vif %d: giving the tap %s the MTU of %s (%d): %s", index, name,
                     vif->bridge, mtu, strerror(errno));
            goto out;
        }
        memset(&ifr, 0, sizeof ifr);
        strlcpy0(ifr.ifr_name, vif->bridge, sizeof ifr.ifr_name);
        ifr.ifr_ifindex = tapidx;
        r = ioctl(sock, SIOCBRADDIF, &ifr);
    }
    if (r < 0) {
        rc = -errno;
        if (rc == -ENODEV)
            snprintf(err, errlen, "vif %d: no bridge %s on this host", index, vif->bridge);
        else if (rc == -EOPNOTSUPP)
            snprintf(err, errlen, "vif %d: %s on this host is not a bridge", index, vif->bridge);
        else
            snprintf(err, errlen, "vif %d: attaching the tap %s to bridge %s: %s", index, name,
                     vif->bridge, strerror(errno));
        goto out;
    }
    memset(&ifr, 0, sizeof ifr);
    strlcpy0(ifr.ifr_name, name, sizeof ifr.ifr_name);
    r = ioctl(sock, SIOCGIFFLAGS, &ifr);
    if (r >= 0) {
        ifr.ifr_flags |= IFF_UP;
        r = ioctl(sock, SIOCSIFFLAGS, &ifr);
    }
    if (r < 0) {
        rc = -errno;
        snprintf(err, errlen, "vif %d: bringing the tap %s up: %s", index, name, strerror(errno));
        goto out;
    }
    rc = fd;
    fd = -1;
out:
    if (fd >= 0)
        close(fd); /* not persistent: this removes it, off the bridge too */
    return rc;
}

int qemu_net_taps(const struct qemu_vif *vifs, int n, int *fds, char (*names)[QEMU_IFNAME_MAX],
                  char *err, size_t errlen)
{
    char name[QEMU_IFNAME_MAX];
    int sock, rc = 0, i;

    for (i = 0; i < n; i++)
        fds[i] = -1;
    if (!n)
        return 0;
    if ((sock = ioctl_socket(err, errlen)) < 0)
        return sock;
    for (i = 0; i < n; i++) {
        int fd = tap_create(sock, &vifs[i], i, name, err, errlen);
        if (fd < 0) {
            rc = fd;
            goto out;
        }
        fds[i] = fd;
        if (names)
            strlcpy0(names[i], name, QEMU_IFNAME_MAX);
    }
out:
    if (rc)
        qemu_net_close(fds, n);
    close(sock);
    return rc;
}
