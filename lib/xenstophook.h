/* Holding libxl's suspend request at the co-migration stop barrier
 * (lib/xenstophook.c). */
#ifndef VMMIG_XENSTOPHOOK_H
#define VMMIG_XENSTOPHOOK_H

#include <stddef.h>
#include <stdint.h>

#include "migengine.h"

/* From now on, libxl's request that domid suspend waits for fn (once);
 * fn NULL disarms.  One domain per process, as vmmig send saves one. */
void xen_stop_hook_arm(uint32_t domid, mig_stop_hook_fn *fn, void *arg);

/* Did the last armed hook run, and what did it answer?  -1 it did not run
 * (the guest was stopped some other way: an event channel, or no PV
 * drivers), else fn's answer, with its why when nonzero. */
int xen_stop_hook_result(char *why, size_t whylen);

/* The decision, apart from libxenstore (unit-tested): is this write
 * libxl's "suspend" request to domid's control/shutdown node? */
int xen_stop_hook_matches(uint32_t domid, const char *path, const void *data, unsigned len);

#endif
