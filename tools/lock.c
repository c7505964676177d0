/* vmmig lock / unlock: the same hold model as the lock file, with or without
 * the mount.  With vmmigfs running they write its files; without it they
 * change the state directory and xenstore directly (under the same flock). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "applet.h"
#include "control.h"
#include "mountclient.h"

static const char lock_help[] =
    "usage: vmmig lock DOMAIN [--reason TEXT] [--ttl SECONDS]\n"
    "       vmmig lock --list\n"
    "\n"
    "Set an administrator's hold on DOMAIN: while any hold is in force, no vmmig\n"
    "path migrates it.  --list shows every domain's holds.\n"
    "\n"
    "  -r, --reason TEXT     why (shown in status and events)\n"
    "  -t, --ttl SECONDS     the hold expires after this long\n"
    "  -l, --list            list domains and their holds\n"
    "  -m, --mount DIR       vmmigfs mount (default $VMMIG_MOUNT or " DEFAULT_MOUNT ")\n"
    "      --state-dir DIR   without a mount: the state directory\n"
    "      --policy FILE     without a mount: the policy file\n"
    "  -h, --help            show this help\n"
    "\n"
    "Exit status: 0 done, 1 refused or failed, 2 usage.\n";

static const char unlock_help[] =
    "usage: vmmig unlock DOMAIN [--force]\n"
    "\n"
    "Release the administrator's hold on DOMAIN.  With --force, also override\n"
    "guest holds older than the policy's guest_max_hold (audited in events).\n"
    "Static holds from the domain's configuration are not affected.\n"
    "\n"
    "  -f, --force           override expired guest holds\n"
    "  -m, --mount DIR       vmmigfs mount (default $VMMIG_MOUNT or " DEFAULT_MOUNT ")\n"
    "      --state-dir DIR   without a mount: the state directory\n"
    "      --policy FILE     without a mount: the policy file\n"
    "  -h, --help            show this help\n";

struct lock_opts {
    const char *mount, *state_dir, *policy, *reason;
    long ttl;
    bool list, force;
};

static void list_from_ctl(struct ctl *c)
{
    struct strbuf sb = {0};
    time_t now = time(NULL);

    for (size_t i = 0; i < c->ndoms; i++) {
        struct domain *d = c->doms[i];
        sb_reset(&sb);
        lockset_format(&d->locks, &c->pol, now, &sb);
        printf("%s %s\n", d->vm.name, lockset_locked(&d->locks, now) ? "locked" : "unlocked");
        for (char *l = sb.s ? strtok(sb.s, "\n") : NULL; l; l = strtok(NULL, "\n"))
            printf("  %s\n", l);
    }
    sb_free(&sb);
}

static int list_from_mount(const char *mnt)
{
    struct dirent **ents;
    /* The directory listing is the domain list. */
    int n = scandir(mnt, &ents, NULL, alphasort);

    if (n < 0)
        return -errno;
    for (int i = 0; i < n; i++) {
        const char *name = ents[i]->d_name;
        char *status = NULL;
        if (name[0] != '.' && !mount_read(mnt, name, "status", &status)) {
            bool locked = strstr(status, "\nlocked: 1\n") != NULL;
            printf("%s %s\n", name, locked ? "locked" : "unlocked");
            for (char *l = strtok(status, "\n"); l; l = strtok(NULL, "\n"))
                if (!strncmp(l, "hold: ", 6))
                    printf("  %s\n", l);
        }
        free(status);
        free(ents[i]);
    }
    free(ents);
    return 0;
}

static int apply(struct lock_opts *o, const char *dom, const char *req)
{
    char err[512];
    int rc;

    if (mount_present(o->mount)) {
        char *mark = mount_events_mark(o->mount);
        rc = mount_write(o->mount, dom, "lock", req);
        if (rc == -ENOENT)
            error_exit("%s: no such domain", dom);
        if (rc) {
            char *why = mount_last_reason(o->mount, dom, mark);
            free(mark);
            error_msg("%s: %s%s%s", dom, strerror(-rc), why ? ": " : "", why ? why : "");
            free(why);
            return 1;
        }
        free(mark);
        return 0;
    }
    struct ctl c;
    if (ctl_open(&c, "auto", o->state_dir, o->policy, err, sizeof err))
        error_exit("no vmmigfs at %s, and direct access failed: %s", o->mount, err);
    /* Without vmmigfs, the audit trail is syslog alone. */
    openlog("vmmig", LOG_PID, LOG_AUTH);
    c.ev.use_syslog = 1;
    struct domain *d = ctl_find(&c, dom);
    if (!d) {
        ctl_close(&c);
        error_exit("%s: no such domain", dom);
    }
    struct caller me = {.uid = getuid(), .gid = getgid(), .pid = getpid()};
    if (!ctl_may_write(&c, &me)) {
        ctl_close(&c);
        error_exit("%s: %s (needs CAP_SYS_ADMIN or the policy's admin_group)", dom,
                   strerror(EACCES));
    }
    rc = ctl_lock_write(&c, d, req, strlen(req), &me, err, sizeof err);
    if (rc)
        error_msg("%s: %s: %s", dom, strerror(-rc), err);
    ctl_close(&c);
    return rc ? 1 : 0;
}

static int lock_common(const struct applet *a, int argc, char **argv, bool unlock)
{
    static const struct option lock_opts[] = {
        {"reason", required_argument, 0, 'r'}, {"ttl", required_argument, 0, 't'},
        {"list", no_argument, 0, 'l'},         {"mount", required_argument, 0, 'm'},
        {"state-dir", required_argument, 0, 'S'}, {"policy", required_argument, 0, 'P'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    static const struct option unlock_opts[] = {
        {"force", no_argument, 0, 'f'},        {"mount", required_argument, 0, 'm'},
        {"state-dir", required_argument, 0, 'S'}, {"policy", required_argument, 0, 'P'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    struct lock_opts o = {
        .mount = env_default("VMMIG_MOUNT", DEFAULT_MOUNT),
        .state_dir = env_default("VMMIG_STATE_DIR", DEFAULT_STATE_DIR),
        .policy = env_default("VMMIG_POLICY", DEFAULT_POLICY),
    };
    int opt;

    /* Options may come before or after DOMAIN. */
    while ((opt = getopt_long(argc, argv, unlock ? "fm:h" : "r:t:lm:h",
                              unlock ? unlock_opts : lock_opts, NULL)) != -1) {
        switch (opt) {
        case 'r':
            o.reason = optarg;
            break;
        case 't':
            if (parse_long(optarg, 1, POLICY_MAX_SECONDS, &o.ttl))
                usage_exit(a, "--ttl: '%s' is not a number of seconds from 1 to %ld", optarg,
                           POLICY_MAX_SECONDS);
            break;
        case 'l':
            o.list = true;
            break;
        case 'f':
            o.force = true;
            break;
        case 'm': o.mount = optarg; break;
        case 'S': o.state_dir = optarg; break;
        case 'P': o.policy = optarg; break;
        case 'h': help_exit_ok(a);
        default: usage_exit(a, "unknown option");
        }
    }
    if (o.list) {
        if (optind != argc)
            usage_exit(a, "--list takes no domain");
        if (mount_present(o.mount)) {
            int rc = list_from_mount(o.mount);
            if (rc) {
                errno = -rc;
                perror_exit("%s", o.mount);
            }
            return 0;
        }
        char err[512];
        struct ctl c;
        if (ctl_open(&c, "auto", o.state_dir, o.policy, err, sizeof err))
            error_exit("no vmmigfs at %s, and direct access failed: %s", o.mount, err);
        list_from_ctl(&c);
        ctl_close(&c);
        return 0;
    }
    if (optind == argc)
        usage_exit(a, "missing DOMAIN");
    if (optind + 1 != argc)
        usage_exit(a, "too many arguments");

    struct strbuf req = {0};
    if (unlock) {
        sb_printf(&req, o.force ? "0 force\n" : "0\n");
    } else {
        struct lock_request lr = {.value = 1, .ttl = o.ttl};
        char err[300];
        if (o.reason) {
            if (strlen(o.reason) > REASON_MAX)
                usage_exit(a, "--reason: longer than %d characters", REASON_MAX);
            strlcpy0(lr.reason, o.reason, sizeof lr.reason);
        }
        lock_request_format(&lr, &req);
        sb_add(&req, "\n", 1);
        /* Catch what the daemon would refuse before sending it. */
        struct lock_request check;
        if (lock_request_parse(req.s, req.len, POLICY_MAX_SECONDS, 0, &check, err, sizeof err))
            usage_exit(a, "%s", err);
    }
    int rc = apply(&o, argv[optind], req.s);
    sb_free(&req);
    return rc;
}

static int lock_main(int argc, char **argv)
{
    return lock_common(&applet_lock, argc, argv, false);
}

static int unlock_main(int argc, char **argv)
{
    return lock_common(&applet_unlock, argc, argv, true);
}

const struct applet applet_lock = {
    .name = "lock",
    .main = lock_main,
    .summary = "hold a domain against migration; --list shows holds",
    .help = lock_help,
};

const struct applet applet_unlock = {
    .name = "unlock",
    .main = unlock_main,
    .summary = "release an administrator's hold (--force: expired guest holds too)",
    .help = unlock_help,
};
