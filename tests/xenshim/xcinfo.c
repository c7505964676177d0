/*
 * xcinfo - print what xc_domain_getinfolist() reports, one line per domain:
 *   DOMID UUID MEM_KIB VCPUS FLAGS
 * Run it with LD_PRELOAD=xenshim.so to see the fake domains exactly as
 * vmmig's xen backend sees them (it calls the same three functions).
 * Exit codes: 0 ok, 1 failure.
 */
#include <stdio.h>
#include <string.h>
#include <errno.h>

#include <xenctrl.h>

int main(void)
{
    static xc_domaininfo_t info[1024];
    xc_interface *xch = xc_interface_open(NULL, NULL, 0);
    int n, i;

    if (!xch) {
        fprintf(stderr, "xcinfo: xc_interface_open: %s\n", strerror(errno));
        return 1;
    }
    n = xc_domain_getinfolist(xch, 0, 1024, info);
    if (n < 0) {
        fprintf(stderr, "xcinfo: xc_domain_getinfolist: %s\n", strerror(errno));
        xc_interface_close(xch);
        return 1;
    }
    for (i = 0; i < n; i++) {
        const unsigned char *u = info[i].handle;

        printf("%u %02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
               "%02x%02x%02x%02x%02x%02x %llu %u %s%s%s%s%s\n",
               info[i].domain, u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7],
               u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15],
               (unsigned long long)info[i].tot_pages * 4,
               info[i].nr_online_vcpus,
               info[i].flags & XEN_DOMINF_running ? "r" : "-",
               info[i].flags & XEN_DOMINF_blocked ? "b" : "-",
               info[i].flags & XEN_DOMINF_paused ? "p" : "-",
               info[i].flags & XEN_DOMINF_shutdown ? "s" : "-",
               info[i].flags & XEN_DOMINF_dying ? "d" : "-");
    }
    xc_interface_close(xch);
    return 0;
}
