/* The co-migration stop barrier on an unpatched libxl.
 *
 * libxl has no hook between libxc deciding that pre-copy is over and the
 * guest being asked to suspend.  For a PV or PVH guest with PV control
 * that request is one xenstore write of "suspend" to the guest's
 * control/shutdown node (libxl__domain_pvcontrol), made through
 * libxenstore's xs_write.  We interpose xs_write and hold exactly that one
 * write until the group's stop barrier lets it through, so that members
 * are asked to stop at the same moment; every other write passes through
 * untouched.  A guest that suspends through an event channel, or an HVM
 * guest without PV drivers, never makes this write: there the stop is
 * approximated by the pre-copy round barriers (vmmig-comigrate(1)).
 *
 * The dynamic build defines xs_write itself (the executable's definition
 * comes first in symbol lookup, also for libxenlight's calls) and finds
 * libxenstore's with dlsym(RTLD_NEXT); the static build links with
 * -Wl,--wrap=xs_write (tools/musl/static.mk). */
#define _GNU_SOURCE
#include "xenstophook.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <xenstore.h>

static pthread_mutex_t hook_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t hook_domid;
static mig_stop_hook_fn *hook_fn;
static void *hook_arg;
static int hook_result = -1;
static char hook_why[300];

void xen_stop_hook_arm(uint32_t domid, mig_stop_hook_fn *fn, void *arg)
{
    pthread_mutex_lock(&hook_lock);
    hook_domid = domid;
    hook_fn = fn;
    hook_arg = arg;
    hook_result = -1;
    pthread_mutex_unlock(&hook_lock);
}

int xen_stop_hook_result(char *why, size_t whylen)
{
    pthread_mutex_lock(&hook_lock);
    int r = hook_result;
    if (r > 0 && why)
        snprintf(why, whylen, "%s", hook_why);
    pthread_mutex_unlock(&hook_lock);
    return r;
}

int xen_stop_hook_matches(uint32_t domid, const char *path, const void *data, unsigned len)
{
    char want[64];

    if (!path || !data || len != 7 || memcmp(data, "suspend", 7))
        return 0;
    snprintf(want, sizeof want, "/local/domain/%u/control/shutdown", domid);
    return !strcmp(path, want);
}

/* 1 go on with the write, 0 refuse it (errno set). */
static int hold_if_suspend(const char *path, const void *data, unsigned len)
{
    mig_stop_hook_fn *fn = NULL;
    void *arg = NULL;
    uint32_t domid;

    pthread_mutex_lock(&hook_lock);
    if (hook_fn && xen_stop_hook_matches(hook_domid, path, data, len)) {
        fn = hook_fn;
        arg = hook_arg;
        hook_fn = NULL; /* once: libxl does not ask twice in one save */
    }
    domid = hook_domid;
    pthread_mutex_unlock(&hook_lock);
    if (!fn)
        return 1;
    /* Outside the lock: the barrier can take seconds. */
    int r = fn(arg, hook_why, sizeof hook_why);
    pthread_mutex_lock(&hook_lock);
    hook_result = r;
    pthread_mutex_unlock(&hook_lock);
    if (!r)
        return 1;
    fprintf(stderr, "%s: not asking domain %u to suspend: %s\n", toolname, domid, hook_why);
    errno = ECANCELED;
    return 0;
}

#ifdef VMMIG_WRAP_XS_WRITE
bool __real_xs_write(struct xs_handle *h, xs_transaction_t t, const char *path, const void *data,
                     unsigned int len);
bool __wrap_xs_write(struct xs_handle *h, xs_transaction_t t, const char *path, const void *data,
                     unsigned int len);

bool __wrap_xs_write(struct xs_handle *h, xs_transaction_t t, const char *path, const void *data,
                     unsigned int len)
{
    if (!hold_if_suspend(path, data, len))
        return false;
    return __real_xs_write(h, t, path, data, len);
}
#else
bool xs_write(struct xs_handle *h, xs_transaction_t t, const char *path, const void *data,
              unsigned int len)
{
    static bool (*real)(struct xs_handle *, xs_transaction_t, const char *, const void *,
                        unsigned int);

    if (!real) {
        *(void **)&real = dlsym(RTLD_NEXT, "xs_write");
        if (!real) {
            errno = ENOSYS;
            return false;
        }
    }
    if (!hold_if_suspend(path, data, len))
        return false;
    return real(h, t, path, data, len);
}
#endif
