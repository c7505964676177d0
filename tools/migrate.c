/* vmmig migrate: ask vmmigfs to migrate a domain and follow it to the end. */
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
    "usage: vmmig migrate [-n] [-m DIR] DOMAIN HOST [wait[=SECONDS]|force]\n"
    "       vmmig migrate [-m DIR] DOMAIN cancel\n"
    "\n"
    "Live-migrate DOMAIN to HOST through vmmigfs (as 'echo HOST > DOMAIN/migrate'),\n"
    "then wait for the end, showing the stage, round, data sent and dirty rate.\n"
    "A locked domain is refused.  With wait, the migration starts once every hold\n"
    "is released or has expired (giving up after SECONDS); with force, a guest\n"
    "hold past the policy's guest_max_hold is overridden.  cancel stops a running\n"
    "or waiting migration.  HOST 'localhost' migrates within this host.\n"
    "\n"
    "  -n, --no-wait         return once the migration has started (or is waiting)\n"
    "  -m, --mount DIR       vmmigfs mount (default $VMMIG_MOUNT or " DEFAULT_MOUNT ")\n"
    "  -h, --help            show this help\n"
    "\n"
    "Exit status: 0 migrated (or started/cancelled), 1 refused or failed, 2 usage.\n";

/* What the migrate file says: "running HOST stage=N NAME round=R sent=B dirty_rate=P". */
struct job_view {
    int stage;
    char stage_name[32];
    long long round, sent, rate;
};

static void parse_running(const char *line, struct job_view *v)
{
    char copy[512], *tok, *save = NULL;
    bool after_stage = false;

    memset(v, 0, sizeof *v);
    v->stage = -1;
    v->round = v->sent = v->rate = -1;
    strlcpy0(copy, line, sizeof copy);
    for (tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        if (!strncmp(tok, "stage=", 6)) {
            v->stage = atoi(tok + 6);
            after_stage = true;
            continue;
        }
        if (after_stage && !strchr(tok, '='))
            strlcpy0(v->stage_name, tok, sizeof v->stage_name);
        after_stage = false;
        if (!strncmp(tok, "round=", 6))
            v->round = atoll(tok + 6);
        else if (!strncmp(tok, "sent=", 5))
            v->sent = atoll(tok + 5);
        else if (!strncmp(tok, "dirty_rate=", 11))
            v->rate = atoll(tok + 11);
    }
}

/* The newest migrate-done or migrate-failed event of dom after mark (malloc'd line), or NULL. */
static char *job_end_event(const char *mnt, const char *dom, const char *mark)
{
    char *text, *found = NULL, done[128], failed[128];
    bool after = mark == NULL;

    if (mount_read(mnt, NULL, "events", &text))
        return NULL;
    snprintf(done, sizeof done, " %s migrate-done ", dom);
    snprintf(failed, sizeof failed, " %s migrate-failed ", dom);
    for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n")) {
        if (!after) {
            after = !strcmp(l, mark);
            continue;
        }
        if (strstr(l, done) || strstr(l, failed))
            found = l;
    }
    char *res = found ? strdup(found) : NULL;
    free(text);
    return res;
}

/* Read the migrate file through fd (from offset 0); NULL with errno set on error. */
static char *read_state(int fd)
{
    char buf[1024];
    ssize_t r = pread(fd, buf, sizeof buf - 1, 0);

    if (r < 0)
        return NULL;
    buf[r] = 0;
    buf[strcspn(buf, "\n")] = 0;
    return strdup(buf);
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static int report_done(const char *dom, const char *host, double el, const char *mnt,
                       const char *mark, bool tty)
{
    char *ev = job_end_event(mnt, dom, mark), *dt = ev ? strstr(ev, " downtime_ms=") : NULL;

    if (tty)
        printf("\r\033[K");
    if (dt)
        printf("%s: migrated to %s in %.1f s (downtime %lld ms)\n", dom, host, el,
               atoll(dt + 13));
    else
        printf("%s: migrated to %s in %.1f s\n", dom, host, el);
    free(ev);
    return 0;
}

/* Follow the job until it ends: 0 done, 1 failed. */
static int follow(const char *mnt, const char *dom, const char *host, const char *mark)
{
    char path[4200], last_shown[600] = "";
    struct timespec t0;
    bool tty = isatty(1);
    int fd, last_stage = -2;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    snprintf(path, sizeof path, "%s/%s/migrate", mnt, dom);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    for (;;) {
        char *st = fd >= 0 ? read_state(fd) : NULL;
        double el = seconds_since(&t0);
        if (!st) {
            /* The domain went away (its open file says ENODEV), or was
             * renamed: look again by name, then at the events. */
            if (fd >= 0)
                close(fd);
            fd = open(path, O_RDONLY | O_CLOEXEC);
            st = fd >= 0 ? read_state(fd) : NULL;
        }
        if (!st) {
            char *ev = job_end_event(mnt, dom, mark), *why = ev ? strstr(ev, " why=\"") : NULL;
            if (fd >= 0)
                close(fd);
            if (ev && strstr(ev, " migrate-failed ")) {
                if (tty)
                    printf("\r\033[K");
                fflush(stdout);
                if (why)
                    why[strlen(why) - 1] = 0;
                error_msg("%s: failed %s: %s", dom, host, why ? why + 6 : "(no reason)");
                free(ev);
                return 1;
            }
            free(ev);
            /* Gone after a done (or with no record at all): it has left this host. */
            return report_done(dom, host, el, mnt, mark, tty);
        }
        if (!strncmp(st, "running ", 8) || !strncmp(st, "waiting ", 8)) {
            char line[600];
            if (st[0] == 'w') {
                snprintf(line, sizeof line, "%s: %s", dom, st);
                if (!tty && strcmp(line, last_shown))
                    printf("%s\n", line);
            } else {
                struct job_view v;
                parse_running(st, &v);
                int n = snprintf(line, sizeof line, "%s: ", dom);
                if (v.stage < 0)
                    n += snprintf(line + n, sizeof line - n, "running %s", host);
                else
                    n += snprintf(line + n, sizeof line - n, "stage %d %s", v.stage, v.stage_name);
                if (!tty && v.stage != last_stage && v.stage >= 0)
                    printf("%s\n", line);
                last_stage = v.stage;
                if (v.round >= 0)
                    n += snprintf(line + n, sizeof line - n, "  round %lld", v.round);
                if (v.sent >= 0)
                    n += snprintf(line + n, sizeof line - n, "  %.1f MiB sent",
                                  (double)v.sent / 1048576.0);
                if (v.rate >= 0)
                    snprintf(line + n, sizeof line - n, "  %lld pages/s", v.rate);
            }
            strlcpy0(last_shown, line, sizeof last_shown);
            if (tty)
                printf("\r\033[K%s  %.1f s", line, el);
            fflush(stdout);
            free(st);
            struct pollfd p = {.fd = fd, .events = POLLIN | POLLPRI};
            poll(&p, 1, tty ? 500 : 1000);
            continue;
        }
        if (!strncmp(st, "done ", 5) || !strncmp(st, "migrated ", 9)) {
            free(st);
            close(fd);
            return report_done(dom, host, el, mnt, mark, tty);
        }
        if (tty)
            printf("\r\033[K");
        fflush(stdout);
        error_msg("%s: %s", dom, st);
        free(st);
        close(fd);
        return 1;
    }
}

static bool mode_word_ok(const char *w)
{
    long s;
    if (!strcmp(w, "wait") || !strcmp(w, "force"))
        return true;
    return !strncmp(w, "wait=", 5) && !parse_long(w + 5, 1, 31536000L, &s);
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
    int nargs = argc - optind;
    if (nargs != 2 && nargs != 3)
        usage_exit(&applet_migrate, nargs < 2 ? "expected DOMAIN and HOST" : "too many arguments");
    const char *dom = argv[optind], *host = argv[optind + 1];
    const char *mode = nargs == 3 ? argv[optind + 2] : NULL;
    bool cancel = !strcmp(host, "cancel");
    if (cancel && mode)
        usage_exit(&applet_migrate, "cancel takes no other word");
    if (mode && !mode_word_ok(mode))
        usage_exit(&applet_migrate, "'%s': expected wait, wait=SECONDS (1 to 31536000) or force",
                   mode);
    if (!mount_present(mnt))
        error_exit("no vmmigfs mounted at %s (start it with: vmmigfs %s)", mnt, mnt);

    char req[400];
    snprintf(req, sizeof req, "%s%s%s\n", host, mode ? " " : "", mode ? mode : "");
    char *mark = mount_events_mark(mnt);
    rc = mount_write(mnt, dom, "migrate", req);
    if (rc == -ENOENT)
        error_exit("%s: no such domain", dom);
    if (rc) {
        char *why = NULL;
        if (rc == -EBUSY || rc == -EPERM) {
            char *st = NULL;
            /* "refused HOST: locked: ..." says which hold refused it. */
            if (!mount_read(mnt, dom, "migrate", &st) && !strncmp(st, "refused ", 8) &&
                strchr(st, ':')) {
                st[strcspn(st, "\n")] = 0;
                why = strdup(strchr(st, ':') + 2);
            }
            free(st);
        }
        if (!why)
            why = mount_last_reason(mnt, dom, mark);
        error_msg("%s: %s%s%s", dom, strerror(-rc), why ? ": " : "", why ? why : "");
        free(why);
        free(mark);
        return 1;
    }
    if (!wait || cancel) {
        free(mark);
        return 0;
    }
    rc = follow(mnt, dom, host, mark);
    free(mark);
    return rc;
}

const struct applet applet_migrate = {
    .name = "migrate",
    .main = migrate_main,
    .summary = "live-migrate a domain through vmmigfs and follow it",
    .help = migrate_help,
};
