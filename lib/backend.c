#define _GNU_SOURCE
#include "backend.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct backend_ops *const backends[] = {&xen_backend_ops, &qemu_backend_ops};

const char *vm_state_name(enum vm_state s)
{
    static const char *const names[] = {"running", "blocked", "paused", "shutdown", "dying",
                                        "runnable", "unknown"};
    return (unsigned)s <= VM_UNKNOWN ? names[s] : "unknown";
}

const struct backend_ops *backend_find(const char *name)
{
    if (!name || !strcmp(name, "auto")) {
        /* A Xen dom0 has /proc/xen (xenfs) or a xenstored socket to talk to. */
        if (!access("/proc/xen/capabilities", F_OK) || !access("/dev/xen/privcmd", F_OK) ||
            getenv("XENSTORED_PATH"))
            return &xen_backend_ops;
        /* A QEMU host has the run directory vmmig create makes. */
        const char *qdir = getenv("VMMIG_QEMU_DIR");
        if (!access(qdir && *qdir ? qdir : "/run/vmmig/qemu", F_OK))
            return &qemu_backend_ops;
        return NULL;
    }
    for (size_t i = 0; i < ARRAY_SIZE(backends); i++)
        if (!strcmp(backends[i]->name, name))
            return backends[i];
    return NULL;
}

void argv_free(char **argv)
{
    if (!argv)
        return;
    for (char **a = argv; *a; a++)
        free(*a);
    free(argv);
}
