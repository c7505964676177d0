/* QEMU domains' vifs (lib/qemunet.c): the vif spec, the MACs made from
 * the uuid, and the vif key in a domain's configuration (lib/qemudom.c).
 * The taps themselves need a bridge: tests/qemu/70-net.t. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemudom.h"
#include "qemunet.h"
#include "sha256.h"
#include "tap.h"

static void refused(const char *spec, const char *want)
{
    struct qemu_vif v;
    char err[300] = "";
    int rc = qemu_vif_parse(spec, &v, err, sizeof err);

    ok(rc == -EINVAL && strstr(err, want), "refused: %s", spec);
    if (rc != -EINVAL || !strstr(err, want))
        printf("#   rc %d, err '%s', want '%s'\n", rc, err, want);
}

int main(void)
{
    struct qemu_vif v;
    struct qemu_cfg *c = malloc(sizeof *c);
    char err[300], mac[18], mac2[18];

    /* ---- the spec ---- */
    is_int(qemu_vif_parse("bridge=br0", &v, err, sizeof err), 0, "bridge=br0");
    is_str(v.bridge, "br0", "  bridge");
    is_str(v.model, "virtio-net-pci", "  virtio-net-pci by default");
    ok(!v.mac_given && !v.mac[0], "  no MAC yet");
    is_int(qemu_vif_parse(" mac = 00:16:3E:0a:Bc:01 , bridge=xenbr0,model=e1000 ", &v, err,
                          sizeof err),
           0, "keys in any order, blanks around them");
    is_str(v.mac, "00:16:3e:0a:bc:01", "  the MAC, lowercased");
    ok(v.mac_given, "  given");
    is_str(v.bridge, "xenbr0", "  bridge");
    is_str(v.model, "e1000", "  model=e1000");
    is_int(qemu_vif_parse("bridge=br-lan.10,model=virtio-net-pci,", &v, err, sizeof err), 0,
           "a trailing comma, '-' and '.' in the bridge");
    refused("bridge=br0,ip=10.0.0.1", "unknown key 'ip'");
    refused("bridge=br0,script=vif-bridge", "unknown key 'script'");
    refused("bridge=br0,mac=00:16:3e:zz:00:01", "mac=00:16:3e:zz:00:01 is not a MAC address");
    refused("bridge=br0,mac=00:16:3e:00:01", "is not a MAC address");
    refused("bridge=br0,mac=00:16:3e:00:01:023", "is not a MAC address");
    refused("bridge=br0,mac=00-16-3e-00-01-02", "is not a MAC address");
    refused("bridge=br0,mac=00:16:3e:0:1:2", "is not a MAC address");
    refused("bridge=br0,mac=", "is not a MAC address");
    refused("bridge=br0,mac=03:16:3e:00:00:01", "multicast");
    refused("mac=00:16:3e:00:00:01", "no bridge=");
    refused("", "no bridge=");
    refused("bridge=br0,model=rtl8139", "model=rtl8139 is not one");
    refused("bridge=br0,mac", "'mac' is not KEY=VALUE");
    refused("bridge=", "not an interface name");
    refused("bridge=br0/x", "not an interface name");
    refused("bridge=a234567890123456", "not an interface name");
    refused("bridge=..", "not an interface name");
    char longspec[600];
    memset(longspec, 'x', sizeof longspec - 1);
    longspec[sizeof longspec - 1] = 0;
    refused(longspec, "is too long");
    ok(qemu_ifname_ok("a23456789012345"), "15 characters make an interface name");

    /* ---- the MAC made from the uuid ---- */
    const char *uuid = "6036f9f2-7f4d-4c2c-95f9-f4b1455516f4";
    uint8_t h[SHA256_LEN];
    char want[18];
    sha256("6036f9f2-7f4d-4c2c-95f9-f4b1455516f4/0", 38, h);
    snprintf(want, sizeof want, "00:16:3e:%02x:%02x:%02x", h[0], h[1], h[2]);
    qemu_vif_default_mac(uuid, 0, mac);
    is_str(mac, want, "vif 0's MAC: 00:16:3e and SHA-256(uuid/0)");
    qemu_vif_default_mac("6036F9F2-7F4D-4C2C-95F9-F4B1455516F4", 0, mac2);
    is_str(mac2, mac, "  the same from the uuid in capitals");
    qemu_vif_default_mac(uuid, 1, mac2);
    ok(strcmp(mac, mac2) && !strncmp(mac2, "00:16:3e:", 9), "  vif 1 gets another (%s)", mac2);

    /* ---- the vif key in a configuration ---- */
    const char *text = "name = 'n1'\nkernel = '/k'\n"
                       "vif = [ 'bridge=br0', 'bridge=br1,mac=00:16:3e:00:00:07,model=e1000' ]\n";
    is_int(qemu_cfg_parse(text, c, err, sizeof err), 0, "a configuration with two vifs");
    is_int(c->nvifs, 2, "  two");
    ok(!c->vifs[0].mac[0], "  without a uuid, vif 0 has no MAC yet");
    strcpy(c->uuid, uuid);
    qemu_cfg_vif_macs(c);
    is_str(c->vifs[0].mac, mac, "  made once the uuid is known");
    is_str(c->vifs[1].mac, "00:16:3e:00:00:07", "  a given MAC stays");
    char text2[400];
    snprintf(text2, sizeof text2, "uuid = '%s'\n%s", uuid, text);
    is_int(qemu_cfg_parse(text2, c, err, sizeof err), 0, "with its uuid");
    is_str(c->vifs[0].mac, mac, "  vif 0's MAC made at once");
    is_int(qemu_cfg_parse("name='n'\nkernel='/k'\nvif = [ 'bridge=br0,mac=1' ]\n", c, err,
                          sizeof err),
           -EINVAL, "a bad vif fails the configuration");
    ok(strstr(err, "line 3: vif 'bridge=br0,mac=1': mac=1 is not a MAC address") != NULL,
       "  with its line: %s", err);
    struct strbuf sb = {0};
    sb_printf(&sb, "name='n'\nkernel='/k'\nvif = [");
    for (int i = 0; i <= QEMU_MAX_VIFS; i++)
        sb_printf(&sb, "%s'bridge=br%d'", i ? ", " : "", i);
    sb_printf(&sb, "]\n");
    is_int(qemu_cfg_parse(sb.s, c, err, sizeof err), -E2BIG, "more than %d vifs", QEMU_MAX_VIFS);
    sb_free(&sb);

    /* ---- the bridge check, without a bridge ---- */
    struct qemu_vif nob = {.bridge = "vmmig-nobr0"};
    is_int(qemu_net_check(&nob, 1, err, sizeof err), -ENODEV, "a bridge that does not exist");
    is_str(err, "vif 0: no bridge vmmig-nobr0 on this host", "  named");
    struct qemu_vif lo = {.bridge = "lo"};
    is_int(qemu_net_check(&lo, 1, err, sizeof err), -ENODEV, "lo is no bridge");
    is_str(err, "vif 0: lo on this host is not a bridge", "  said so");
    is_int(qemu_net_check(NULL, 0, err, sizeof err), 0, "no vifs: nothing to check");
    free(c);
    return done_testing();
}
