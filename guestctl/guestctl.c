/* guestctl: a guest holds itself against migration.  Inside a Xen guest it
 * writes its own xenstore node control/migration-lock (through
 * /dev/xen/xenbus), which dom0's vmmigfs created writable for this guest only. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xenstore.h>

#include "applet.h"
#include "lock.h"

static const char guestctl_help[] =
    "usage: guestctl lock [--reason TEXT] [--ttl SECONDS]\n"
    "       guestctl unlock\n"
    "       guestctl status\n"
    "\n"
    "Run inside a guest: hold this domain against live migration, release the\n"
    "hold, or show it.  dom0's vmmigfs honours the hold; after the host policy's\n"
    "guest_max_hold an administrator may override it.\n"
    "\n"
    "  -r, --reason TEXT     why (shown to the host administrator)\n"
    "  -t, --ttl SECONDS     the hold expires after this long\n"
    "  -h, --help            show this help\n"
    "\n"
    "Exit status: 0 done, 1 failed (e.g. no vmmigfs in dom0), 2 usage.\n";

#define NODE "control/migration-lock"

/* The guest's channel to the host, one per hypervisor. */
struct guest_channel_ops {
    const char *name;
    void *(*open)(void);
    int (*get)(void *h, char *buf, size_t size);
    int (*set)(void *h, const char *value);
    void (*close)(void *h);
};

static void *xs_chan_open(void)
{
    /* Falls back from the dom0 socket to /dev/xen/xenbus, which is what a guest has. */
    return xs_open(0);
}

static int xs_chan_get(void *h, char *buf, size_t size)
{
    unsigned len;
    char *v = xs_read(h, XBT_NULL, NODE, &len);
    if (!v)
        return -errno;
    snprintf(buf, size, "%.*s", (int)len, v);
    free(v);
    return 0;
}

static int xs_chan_set(void *h, const char *value)
{
    return xs_write(h, XBT_NULL, NODE, value, (unsigned)strlen(value)) ? 0 : -errno;
}

static void xs_chan_close(void *h)
{
    xs_close(h);
}

static const struct guest_channel_ops xen_channel = {
    .name = "xenstore",
    .open = xs_chan_open,
    .get = xs_chan_get,
    .set = xs_chan_set,
    .close = xs_chan_close,
};

static _Noreturn void channel_error(int rc, const char *what)
{
    errno = -rc;
    if (rc == -ENOENT || rc == -EACCES)
        error_exit("cannot %s %s: %s (is vmmigfs running in dom0?)", what, NODE, strerror(-rc));
    perror_exit("cannot %s %s", what, NODE);
}

static int guestctl_main(int argc, char **argv)
{
    static const struct option longopts[] = {{"reason", required_argument, 0, 'r'},
                                             {"ttl", required_argument, 0, 't'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    const struct guest_channel_ops *ch = &xen_channel;
    struct lock_request req = {0};
    const char *reason = NULL;
    long ttl = 0;
    int opt, rc;

    while ((opt = getopt_long(argc, argv, "r:t:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'r': reason = optarg; break;
        case 't':
            if (parse_long(optarg, 1, POLICY_MAX_SECONDS, &ttl))
                usage_exit(&applet_guestctl, "--ttl: '%s' is not a number of seconds from 1 to %ld",
                           optarg, POLICY_MAX_SECONDS);
            break;
        case 'h': help_exit_ok(&applet_guestctl);
        default: usage_exit(&applet_guestctl, "unknown option");
        }
    }
    if (optind + 1 != argc)
        usage_exit(&applet_guestctl, optind == argc ? "missing command (lock, unlock, status)"
                                                    : "too many arguments");
    const char *cmd = argv[optind];
    if (strcmp(cmd, "lock") && (reason || ttl))
        usage_exit(&applet_guestctl, "--reason and --ttl go with lock");

    void *h = ch->open();
    if (!h)
        perror_exit("cannot reach the host through %s", ch->name);

    if (!strcmp(cmd, "lock") || !strcmp(cmd, "unlock")) {
        struct strbuf sb = {0};
        char err[300];
        req.value = !strcmp(cmd, "lock");
        req.ttl = ttl;
        if (reason) {
            if (strlen(reason) > REASON_MAX)
                usage_exit(&applet_guestctl, "--reason: longer than %d characters", REASON_MAX);
            strlcpy0(req.reason, reason, sizeof req.reason);
        }
        lock_request_format(&req, &sb);
        struct lock_request check;
        if (lock_request_parse(sb.s, sb.len, POLICY_MAX_SECONDS, 0, &check, err, sizeof err))
            usage_exit(&applet_guestctl, "%s", err);
        rc = ch->set(h, sb.s);
        sb_free(&sb);
        if (rc)
            channel_error(rc, "write");
    } else if (!strcmp(cmd, "status")) {
        char val[LOCK_REQUEST_MAX + 1];
        rc = ch->get(h, val, sizeof val);
        if (rc)
            channel_error(rc, "read");
        printf("locked: %d\n", val[0] == '1' ? 1 : 0);
        printf("request: %s\n", val[0] ? val : "0");
    } else {
        usage_exit(&applet_guestctl, "unknown command '%s' (lock, unlock, status)", cmd);
    }
    ch->close(h);
    return 0;
}

const struct applet applet_guestctl = {
    .name = "guestctl",
    .main = guestctl_main,
    .summary = "inside a guest: hold this domain against migration",
    .help = guestctl_help,
};
