/* The co-migration stop barrier's hold on libxl's suspend request: which
 * xenstore write it recognises, that the barrier's "no" refuses the write
 * before it reaches xenstore, and that it holds only once per arming. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <xenstore.h>

#include "tap.h"
#include "xenstophook.h"

static int calls;
static int answer;
static int barrier(void *arg, char *why, size_t whylen)
{
    calls++;
    snprintf(why, whylen, "%s", (const char *)arg);
    return answer;
}

int main(void)
{
    char why[300];

    ok(xen_stop_hook_matches(7, "/local/domain/7/control/shutdown", "suspend", 7),
       "libxl's suspend request to domain 7");
    ok(!xen_stop_hook_matches(7, "/local/domain/17/control/shutdown", "suspend", 7),
       "another domain's (17) is not");
    ok(!xen_stop_hook_matches(7, "/local/domain/7/control/shutdown", "poweroff", 8),
       "a poweroff request is not");
    ok(!xen_stop_hook_matches(7, "/local/domain/7/control/shutdown", "", 0),
       "the guest's acknowledgement (empty) is not");
    ok(!xen_stop_hook_matches(7, "/local/domain/7/control/shutdownx", "suspend", 7),
       "a longer path is not");
    ok(!xen_stop_hook_matches(7, "/local/domain/7/control/shutdown", "suspendx", 8),
       "a longer value is not");
    ok(!xen_stop_hook_matches(7, NULL, "suspend", 7) &&
           !xen_stop_hook_matches(7, "/local/domain/7/control/shutdown", NULL, 7),
       "no path or no data is not");

    is_int(xen_stop_hook_result(why, sizeof why), -1, "nothing armed: the hook did not run");

    /* The barrier says no: the write fails with ECANCELED and never reaches
     * xenstore (the handle is NULL: reaching libxenstore would crash). */
    answer = 1;
    xen_stop_hook_arm(7, barrier, "the group was aborted");
    errno = 0;
    bool w = xs_write(NULL, XBT_NULL, "/local/domain/7/control/shutdown", "suspend", 7);
    ok(!w && errno == ECANCELED, "a refused stop: xs_write fails with ECANCELED");
    is_int(calls, 1, "  ...after asking the barrier once");
    is_int(xen_stop_hook_result(why, sizeof why), 1, "  ...which answered no");
    is_str(why, "the group was aborted", "  ...with its reason");

    /* Disarming, and arming for another domain. */
    xen_stop_hook_arm(9, barrier, "unused");
    xen_stop_hook_arm(9, NULL, NULL);
    is_int(xen_stop_hook_result(why, sizeof why), -1, "disarmed: the hook did not run");
    answer = 1;
    xen_stop_hook_arm(9, barrier, "first");
    xs_write(NULL, XBT_NULL, "/local/domain/9/control/shutdown", "suspend", 7);
    is_int(calls, 2, "armed for domain 9: its request asks the barrier");
    is_int(xen_stop_hook_result(why, sizeof why), 1, "  ...answer recorded");
    return done_testing();
}
