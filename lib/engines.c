/* Which migration engine the agents use: $VMMIG_BACKEND ("xen", "qemu"),
 * else the hypervisor that is present (see migengine.h). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migengine.h"

static const struct mig_engine_ops *const engines[] = {
    &xen_mig_engine,
    &qemu_mig_engine,
};

const struct mig_engine_ops *mig_engine_select(void)
{
    const char *want = getenv("VMMIG_BACKEND");

    if (want && *want && strcmp(want, "auto")) {
        for (size_t i = 0; i < sizeof engines / sizeof *engines; i++)
            if (!strcmp(engines[i]->name, want))
                return engines[i];
        return NULL;
    }
    /* A Xen dom0 has xenfs or privcmd (or a test's xenstored); anything
     * else runs QEMU domains. */
    if (!access("/proc/xen/capabilities", F_OK) || !access("/dev/xen/privcmd", F_OK) ||
        getenv("XENSTORED_PATH"))
        return &xen_mig_engine;
    return &qemu_mig_engine;
}
