/* The hypervisor's own migration lock (hyp-patches/xen): a per-domain flag
 * that Xen enforces itself, read and set with XEN_DOMCTL_migration_lock
 * through libxenctrl's xc_domctl().  On a hypervisor without the patches
 * every call answers -ENOSYS and vmmig keeps to its own holds. */
#ifndef VMMIG_HYPFLAG_H
#define VMMIG_HYPFLAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct xc_interface_core; /* xc_interface, from <xenctrl.h> */

/* Holders, as in Xen's public/sched.h XEN_MIGLOCK_HOLDER_*. */
#define HYPFLAG_GUEST  (1u << 0)
#define HYPFLAG_ADMIN  (1u << 1)
#define HYPFLAG_CONFIG (1u << 2)

struct hypflag {
    unsigned holders;       /* HYPFLAG_*; 0: not locked */
    uint64_t held_ms;       /* since the oldest hold was taken */
    uint64_t guest_held_ms; /* since the guest took its hold */
    uint64_t slot_ms;       /* the guest's time slot; 0: none */
};

/* 0, -ENOSYS (no migration lock in this hypervisor) or -errno. */
int hypflag_get(struct xc_interface_core *xch, uint32_t domid, struct hypflag *out);
/* Take (on) or release (!on) the holders in mask.  Releasing HYPFLAG_GUEST
 * answers -EBUSY while the guest's hold is within its time slot. */
int hypflag_set(struct xc_interface_core *xch, uint32_t domid, unsigned mask, bool on);
/* "guest,config" etc. into buf. */
const char *hypflag_holders(unsigned holders, char *buf, size_t size);

#endif
