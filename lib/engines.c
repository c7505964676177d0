/* Which migration engine the agents use: $VMMIG_BACKEND ("xen", "qemu"),
 * else the hypervisor that is present (see migengine.h). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migengine.h"

static const struct mig_engine_ops *const engines[] = {
    &xen_mig_engine,
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
    return &xen_mig_engine;
}
