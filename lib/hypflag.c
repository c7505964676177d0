/* XEN_DOMCTL_migration_lock from hyp-patches/xen, spelled out here so that
 * vmmig builds against Debian's unpatched Xen headers. */
#include "hypflag.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <xenctrl.h>

#define DOMCTL_migration_lock 87
enum { MIGLOCK_get, MIGLOCK_set, MIGLOCK_clear, MIGLOCK_set_slot };

struct domctl_migration_lock {
    uint32_t op;
    uint32_t holders;
    uint64_t since __attribute__((aligned(8)));
    uint64_t guest_since __attribute__((aligned(8)));
    uint64_t slot __attribute__((aligned(8)));
    uint64_t now __attribute__((aligned(8)));
};
_Static_assert(sizeof(struct domctl_migration_lock) <= sizeof(((struct xen_domctl *)0)->u),
               "fits the domctl union");

static int miglock_op(xc_interface *xch, uint32_t domid, uint32_t op, uint32_t holders,
                      struct domctl_migration_lock *res)
{
    struct xen_domctl d;
    struct domctl_migration_lock ml = {.op = op, .holders = holders};

    memset(&d, 0, sizeof d);
    d.cmd = DOMCTL_migration_lock;
    d.interface_version = XEN_DOMCTL_INTERFACE_VERSION;
    d.domain = (domid_t)domid;
    memcpy(&d.u, &ml, sizeof ml);
    int rc = xc_domctl(xch, &d) < 0 ? (errno ? -errno : -EIO) : 0;
    if (res)
        memcpy(res, &d.u, sizeof *res);
    return rc;
}

int hypflag_get(struct xc_interface_core *xch, uint32_t domid, struct hypflag *out)
{
    struct domctl_migration_lock r;
    int rc = miglock_op(xch, domid, MIGLOCK_get, 0, &r);

    if (rc)
        return rc == -EOPNOTSUPP ? -ENOSYS : rc;
    out->holders = r.holders & (HYPFLAG_GUEST | HYPFLAG_ADMIN | HYPFLAG_CONFIG);
    out->held_ms = r.since && r.now > r.since ? (r.now - r.since) / 1000000 : 0;
    out->guest_held_ms = r.guest_since && r.now > r.guest_since ? (r.now - r.guest_since) / 1000000 : 0;
    out->slot_ms = r.slot / 1000000;
    return 0;
}

int hypflag_set(struct xc_interface_core *xch, uint32_t domid, unsigned mask, bool on)
{
    int rc = miglock_op(xch, domid, on ? MIGLOCK_set : MIGLOCK_clear, mask, NULL);
    return rc == -EOPNOTSUPP ? -ENOSYS : rc;
}

const char *hypflag_holders(unsigned holders, char *buf, size_t size)
{
    snprintf(buf, size, "%s%s%s%s%s",
             holders & HYPFLAG_GUEST ? "guest" : "",
             (holders & HYPFLAG_GUEST) && (holders & ~HYPFLAG_GUEST) ? "," : "",
             holders & HYPFLAG_ADMIN ? "admin" : "",
             (holders & HYPFLAG_ADMIN) && (holders & HYPFLAG_CONFIG) ? "," : "",
             holders & HYPFLAG_CONFIG ? "config" : "");
    return buf;
}
