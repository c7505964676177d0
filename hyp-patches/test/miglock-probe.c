/* miglock-probe: ask the hypervisor directly for the two steps every
 * toolstack's save and live migration goes through, bypassing xl/libxl's
 * own checks, and print what Xen answered.
 *
 *   miglock-probe logdirty DOMID   XEN_DOMCTL_shadow_op ENABLE_LOGDIRTY
 *                                  (turned off again if Xen accepted it)
 *   miglock-probe suspend DOMID    SCHEDOP_remote_shutdown(SHUTDOWN_suspend)
 *                                  (only sensible on a locked domain)
 *
 * Prints "accepted" or "refused errno=N (TEXT)"; exits 0 if refused with
 * XEN_EMIGRATION_LOCKED (ENOLCK), 1 if accepted, 2 on another error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xenctrl.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s logdirty|suspend DOMID\n", argv[0]);
        return 2;
    }
    uint32_t domid = (uint32_t)strtoul(argv[2], NULL, 10);
    xc_interface *xch = xc_interface_open(NULL, NULL, 0);
    if (!xch) {
        perror("xc_interface_open");
        return 2;
    }
    long long r;
    if (!strcmp(argv[1], "logdirty"))
        r = xc_logdirty_control(xch, domid, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, NULL, 0, 0, NULL);
    else if (!strcmp(argv[1], "suspend"))
        r = xc_domain_shutdown(xch, domid, SHUTDOWN_suspend);
    else {
        fprintf(stderr, "%s: unknown operation %s\n", argv[0], argv[1]);
        return 2;
    }
    int e = errno;
    if (r >= 0) {
        printf("accepted\n");
        if (!strcmp(argv[1], "logdirty"))
            xc_logdirty_control(xch, domid, XEN_DOMCTL_SHADOW_OP_OFF, NULL, 0, 0, NULL);
        xc_interface_close(xch);
        return 1;
    }
    printf("refused errno=%d (%s)\n", e, strerror(e));
    xc_interface_close(xch);
    return e == ENOLCK ? 0 : 2;
}
