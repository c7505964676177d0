/* vmmig migrate: ask vmmigfs to migrate a domain and wait for the end. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "applet.h"
#include "mountclient.h"
#include "util.h"

static const char migrate_help[] =
    "usage: vmmig migrate DOMAIN HOST [--no-wait]\n"
    "       vmmig migrate DOMAIN cancel\n"
    "\n"
    "Live-migrate DOMAIN to HOST through vmmigfs (as 'echo HOST > DOMAIN/migrate'),\n"
    "then wait for the end, showing progress.  A locked domain is refused.\n"
    "HOST 'localhost' migrates within this host.\n"
    "\n"
    "  -n, --no-wait         return once the migration has started\n"
    "  -m, --mount DIR       vmmigfs mount (default $VMMIG_MOUNT or " DEFAULT_MOUNT ")\n"
    "  -h, --help            show this help\n"
    "\n"
    "Exit status: 0 migrated (or started/cancelled), 1 refused or failed, 2 usage.\n";

static char *read_state(const char *mnt, const char *dom)
{
    char *s = NULL;
    if (mount_read(mnt, dom, "migrate", &s))
        return NULL;
    s[strcspn(s, "\n")] = 0;
    return s;
}

static int migrate_main(int argc, char **argv)
{
    static const struct option longopts[] = {{"no-wait", no_argument, 0, 'n'},
                                             {"mount", required_argument, 0, 'm'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    const char *mnt = env_default("VMMIG_MOUNT", DEFAULT_MOUNT);
    bool wait = true;
    int opt, rc;

    while ((opt = getopt_long(argc, argv, "nm:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'n': wait = false; break;
        case 'm': mnt = optarg; break;
        case 'h': help_exit_ok(&applet_migrate);
        default: usage_exit(&applet_migrate, "unknown option");
        }
    }
    if (argc - optind != 2)
        usage_exit(&applet_migrate, "expected DOMAIN and HOST");
    const char *dom = argv[optind], *host = argv[optind + 1];
    if (!mount_present(mnt))
        error_exit("no vmmigfs mounted at %s (start it with: vmmigfs %s)", mnt, mnt);

    char req[300];
    snprintf(req, sizeof req, "%s\n", host);
    char *mark = mount_events_mark(mnt);
    rc = mount_write(mnt, dom, "migrate", req);
    if (rc == -ENOENT)
        error_exit("%s: no such domain", dom);
    if (rc) {
        char *why = NULL;
        if (rc == -EBUSY) {
            char *st = read_state(mnt, dom);
            /* "refused HOST: locked: ..." says which hold refused it. */
            if (st && !strncmp(st, "refused ", 8) && strchr(st, ':'))
                why = strdup(strchr(st, ':') + 2);
            free(st);
        }
        if (!why)
            why = mount_last_reason(mnt, dom, mark);
        error_msg("%s: %s%s%s", dom, strerror(-rc), why ? ": " : "", why ? why : "");
        free(why);
        free(mark);
        return 1;
    }
    free(mark);
    if (!wait || !strcmp(host, "cancel"))
        return 0;

    /* Wait for the end; poll() on the file wakes on every change. */
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char path[4200];
    snprintf(path, sizeof path, "%s/%s/migrate", mnt, dom);
    bool tty = isatty(1);
    for (;;) {
        char *st = read_state(mnt, dom);
        clock_gettime(CLOCK_MONOTONIC, &t);
        double el = (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
        if (!st) {
            /* The domain's entry can vanish when it leaves this host: done. */
            printf("%s: migrated to %s in %.1f s\n", dom, host, el);
            return 0;
        }
        if (!strncmp(st, "running ", 8)) {
            if (tty) {
                printf("\r%s: %s  %.1f s", dom, st, el);
                fflush(stdout);
            }
            free(st);
            int fd = open(path, O_RDONLY);
            if (fd >= 0) {
                char b[512];
                (void)!read(fd, b, sizeof b);
                struct pollfd p = {.fd = fd, .events = POLLIN | POLLPRI};
                poll(&p, 1, 1000);
                close(fd);
            }
            continue;
        }
        if (tty)
            printf("\n");
        if (!strncmp(st, "done ", 5)) {
            printf("%s: migrated to %s in %.1f s\n", dom, host, el);
            free(st);
            return 0;
        }
        error_msg("%s: %s", dom, st);
        free(st);
        return 1;
    }
}

const struct applet applet_migrate = {
    .name = "migrate",
    .main = migrate_main,
    .summary = "live-migrate a domain through vmmigfs and wait",
    .help = migrate_help,
};
