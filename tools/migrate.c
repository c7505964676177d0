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
#include "coldmig.h"
#include "migjob.h"
#include "mountclient.h"
#include "state.h"
#include "util.h"

/* A domain and its peers: the most that move together. */
#define GROUP_MAX (PEERS_MAX + 1)

static const char migrate_help[] =
    "usage: vmmig migrate [-n] [-a ALG] [-m DIR] DOMAIN HOST [wait[=SECONDS]|force]\n"
    "       vmmig migrate [-m DIR] DOMAIN cancel\n"
    "       vmmig migrate --cold [-c FILE] [-p PORT] [-k KEY] [-t S] DOMAIN HOST\n"
    "\n"
    "Live-migrate DOMAIN to HOST through vmmigfs (as 'echo HOST > DOMAIN/migrate'),\n"
    "then wait for the end, showing the stage, round, data sent and dirty rate.\n"
    "A domain in a peer group moves with its whole group, each member shown.\n"
    "A locked domain is refused.  With wait, the migration starts once every hold\n"
    "is released or has expired (giving up after SECONDS); with force, a guest\n"
    "hold past the policy's guest_max_hold is overridden.  cancel stops a running\n"
    "or waiting migration.  HOST 'localhost' migrates within this host.\n"
    "\n"
    "  -n, --no-wait         return once the migration has started (or is waiting)\n"
    "  -a, --algorithm ALG   precopy, postcopy or stopcopy (algo=ALG; default: the\n"
    "                        agents' choice, precopy); HOST must support it\n"
    "      --stream MODE     relay (default) or direct: QEMU's stream on its own\n"
    "                        TCP connection, not authenticated byte by byte\n"
    "                        (stream=MODE; vmmig-send(8) --stream)\n"
    "  -m, --mount DIR       vmmigfs mount (default $VMMIG_MOUNT or " DEFAULT_MOUNT ")\n"
    "  -h, --help            show this help\n"
    "\n"
    "With --cold, DOMAIN is a stopped domain: its configuration, kernel, ramdisk\n"
    "and raw disks are copied to the agent on HOST (a listening vmmigfs or vmmig\n"
    "receive), verified (SHA-256, read back there), and it boots afresh there,\n"
    "also across hypervisors (Xen PVH <-> QEMU/KVM); no memory state crosses.\n"
    "A running or paused domain, a held one (migration = \"no\", an admin hold)\n"
    "and what cannot be carried (pci, vif, bootloader, non-raw disks...) are\n"
    "refused with the reason.  Once it runs there, this host's configuration is\n"
    "renamed NAME.cfg.moved-to-HOST (Xen) or its stopped instance removed (QEMU).\n"
    "\n"
    "  -C, --cold            move a stopped domain cold (see above; no vmmigfs needed)\n"
    "  -c, --config FILE     its configuration (default $VMMIG_XEN_CONFIG_DIR/DOMAIN.cfg\n"
    "                        or /etc/xen/DOMAIN.cfg on Xen; the stopped QEMU domain's)\n"
    "  -p, --port N          HOST's agent port (default 8123)\n"
    "  -k, --key FILE        pre-shared key (default $VMMIG_KEY_FILE or /etc/vmmig/key)\n"
    "  -t, --timeout S       longest silence from HOST (default 30)\n"
    "\n"
    "Exit status: 0 migrated (or started/cancelled), 1 refused or failed, 2 usage;\n"
    "with --cold, 3 unknown (the link broke after the commit point).\n";

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

/* The newest "DOM KIND ..." event after mark for any of kinds (malloc'd line), or NULL. */
static char *newest_event(const char *mnt, const char *dom, const char *mark,
                          const char *const *kinds, size_t nkinds)
{
    char *text, *found = NULL, want[4][128];
    bool after = mark == NULL;

    if (nkinds > 4 || mount_read(mnt, NULL, "events", &text))
        return NULL;
    for (size_t k = 0; k < nkinds; k++)
        snprintf(want[k], sizeof want[k], " %s %s ", dom, kinds[k]);
    for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n")) {
        if (!after) {
            after = !strcmp(l, mark);
            continue;
        }
        for (size_t k = 0; k < nkinds; k++)
            if (strstr(l, want[k]))
                found = l;
    }
    char *res = found ? strdup(found) : NULL;
    free(text);
    return res;
}

/* The newest migrate-done or migrate-failed event of dom after mark (malloc'd line), or NULL. */
static char *job_end_event(const char *mnt, const char *dom, const char *mark)
{
    static const char *const kinds[] = {"migrate-done", "migrate-failed"};
    return newest_event(mnt, dom, mark, kinds, 2);
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

/* The number after " KEY=" in an event line, or -1. */
static long long event_num(const char *ev, const char *key)
{
    char want[64];
    const char *p;

    snprintf(want, sizeof want, " %s=", key);
    p = ev ? strstr(ev, want) : NULL;
    return p ? atoll(p + strlen(want)) : -1;
}

/* One domain being followed: its migrate file and what was shown of it. */
struct member {
    const char *name;
    char path[4200];
    int fd;
    int last_stage;
    char shown[600]; /* the line for people, as last printed */
    char line[600];  /* the line now */
    int end;         /* 0 not yet, 1 moved, -1 failed */
    char why[700];   /* after "NAME: " when failed */
};

/* Look at m's migrate file once: progress (printed when not on a terminal
 * at each new stage or wait reason), or its end. */
static void member_step(const char *mnt, struct member *m, const char *host, const char *mark,
                        bool tty)
{
    char *st = m->fd >= 0 ? read_state(m->fd) : NULL;

    if (!st) {
        /* The domain went away (its open file says ENODEV), or was
         * renamed: look again by name, then at the events. */
        if (m->fd >= 0)
            close(m->fd);
        m->fd = open(m->path, O_RDONLY | O_CLOEXEC);
        st = m->fd >= 0 ? read_state(m->fd) : NULL;
    }
    if (!st) {
        char *ev = job_end_event(mnt, m->name, mark), *why = ev ? strstr(ev, " why=\"") : NULL;
        if (ev && strstr(ev, " migrate-failed ")) {
            if (why)
                why[strlen(why) - 1] = 0;
            snprintf(m->why, sizeof m->why, "failed %s: %s", host, why ? why + 6 : "(no reason)");
            m->end = -1;
        } else {
            /* Gone after a done (or with no record at all): it has left this host. */
            m->end = 1;
        }
        free(ev);
        return;
    }
    if (!strncmp(st, "running ", 8) || !strncmp(st, "waiting ", 8)) {
        if (st[0] == 'w') {
            snprintf(m->line, sizeof m->line, "%s: %s", m->name, st);
            if (!tty && strcmp(m->line, m->shown))
                printf("%s\n", m->line);
        } else {
            struct job_view v;
            parse_running(st, &v);
            int n = snprintf(m->line, sizeof m->line, "%s: ", m->name);
            if (v.stage < 0)
                n += snprintf(m->line + n, sizeof m->line - n, "running %s", host);
            else
                n += snprintf(m->line + n, sizeof m->line - n, "stage %d %s", v.stage,
                              v.stage_name);
            if (!tty && v.stage != m->last_stage && v.stage >= 0)
                printf("%s\n", m->line);
            m->last_stage = v.stage;
            if (v.round >= 0)
                n += snprintf(m->line + n, sizeof m->line - n, "  round %lld", v.round);
            if (v.sent >= 0)
                n += snprintf(m->line + n, sizeof m->line - n, "  %.1f MiB sent",
                              (double)v.sent / 1048576.0);
            if (v.rate >= 0)
                snprintf(m->line + n, sizeof m->line - n, "  %lld pages/s", v.rate);
        }
        strlcpy0(m->shown, m->line, sizeof m->shown);
    } else if (!strncmp(st, "done ", 5) || !strncmp(st, "migrated ", 9)) {
        m->end = 1;
    } else {
        strlcpy0(m->why, st, sizeof m->why);
        m->end = -1;
    }
    free(st);
}

/* The end line: one domain's downtime, or every member's and the group's skews. */
static void report_done(const char *mnt, struct member *ms, int n, const char *host, double el,
                        const char *mark)
{
    long long dt[GROUP_MAX];

    for (int i = 0; i < n; i++) {
        char *ev = job_end_event(mnt, ms[i].name, mark);
        dt[i] = event_num(ev, "downtime_ms");
        free(ev);
    }
    if (n == 1) {
        if (dt[0] >= 0)
            printf("%s: migrated to %s in %.1f s (downtime %lld ms)\n", ms[0].name, host, el,
                   dt[0]);
        else
            printf("%s: migrated to %s in %.1f s\n", ms[0].name, host, el);
        return;
    }
    static const char *const kinds[] = {"comigrate-done"};
    char *gev = newest_event(mnt, ms[0].name, mark, kinds, 1);
    long long stop_skew = event_num(gev, "stop_skew_ms"), resume_skew = event_num(gev, "resume_skew_ms");
    free(gev);
    for (int i = 0; i < n; i++)
        printf("%s%s", i ? ", " : "", ms[i].name);
    printf(": migrated to %s in %.1f s (downtime", host, el);
    for (int i = 0; i < n; i++) {
        if (dt[i] >= 0)
            printf("%s %s %lld ms", i ? "," : "", ms[i].name, dt[i]);
        else
            printf("%s %s unknown", i ? "," : "", ms[i].name);
    }
    if (stop_skew >= 0 && resume_skew >= 0)
        printf("; stop skew %lld ms, resume skew %lld ms", stop_skew, resume_skew);
    printf(")\n");
}

/* Follow the job of doms (a domain, or a peer group moving together) until
 * every member's has ended: 0 all moved, 1 any failed. */
static int follow(const char *mnt, const char *const *doms, int n, const char *host,
                  const char *mark)
{
    struct member ms[GROUP_MAX];
    struct timespec t0;
    bool tty = isatty(1);
    int rc = 0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(ms, 0, sizeof ms);
    for (int i = 0; i < n; i++) {
        ms[i].name = doms[i];
        ms[i].last_stage = -2;
        snprintf(ms[i].path, sizeof ms[i].path, "%s/%s/migrate", mnt, doms[i]);
        ms[i].fd = open(ms[i].path, O_RDONLY | O_CLOEXEC);
    }
    for (;;) {
        struct pollfd p[GROUP_MAX];
        int left = 0, np = 0;

        for (int i = 0; i < n; i++)
            if (!ms[i].end)
                member_step(mnt, &ms[i], host, mark, tty);
        for (int i = 0; i < n; i++)
            if (!ms[i].end) {
                left++;
                p[np++] = (struct pollfd){.fd = ms[i].fd, .events = POLLIN | POLLPRI};
            }
        if (!left)
            break;
        if (tty) {
            printf("\r\033[K");
            for (int i = 0, k = 0; i < n; i++)
                if (!ms[i].end && ms[i].line[0])
                    printf("%s%s", k++ ? "  |  " : "", ms[i].line);
            printf("  %.1f s", seconds_since(&t0));
        }
        fflush(stdout);
        poll(p, (nfds_t)np, tty ? 500 : 1000);
    }
    if (tty)
        printf("\r\033[K");
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        if (ms[i].fd >= 0)
            close(ms[i].fd);
        if (ms[i].end < 0) {
            error_msg("%s: %s", ms[i].name, ms[i].why);
            rc = 1;
        }
    }
    if (!rc)
        report_done(mnt, ms, n, host, seconds_since(&t0), mark);
    return rc;
}

/* DOMAIN and its peers (the domains that migrate with it), DOMAIN first;
 * the names point into *text (malloc'd, for the caller to free). */
static int group_of(const char *mnt, const char *dom, const char *doms[GROUP_MAX], char **text)
{
    int n = 0;

    doms[n++] = dom;
    *text = NULL;
    if (mount_read(mnt, dom, "peer", text))
        return n;
    for (char *save = NULL, *tok = strtok_r(*text, " \n", &save); tok && n < GROUP_MAX;
         tok = strtok_r(NULL, " \n", &save))
        doms[n++] = tok;
    return n;
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
                                             {"algorithm", required_argument, 0, 'a'},
                                             {"mount", required_argument, 0, 'm'},
                                             {"help", no_argument, 0, 'h'},
                                             {"cold", no_argument, 0, 'C'},
                                             {"config", required_argument, 0, 'c'},
                                             {"port", required_argument, 0, 'p'},
                                             {"key", required_argument, 0, 'k'},
                                             {"timeout", required_argument, 0, 't'},
                                             {"stream", required_argument, 0, 'M'},
                                             {0, 0, 0, 0}};
    struct cold_send_opts co = {.port = PROTO_DEFAULT_PORT, .timeout_ms = PROTO_DEFAULT_TIMEOUT_MS};
    bool cold = false, cold_opt = false;
    long lv;
    const char *mnt = env_default("VMMIG_MOUNT", DEFAULT_MOUNT);
    const char *algo = NULL, *stream = NULL;
    bool wait = true;
    int opt, rc;

    while ((opt = getopt_long(argc, argv, "na:m:hCc:p:k:t:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'C': cold = true; break;
        case 'c': co.config = optarg; cold_opt = true; break;
        case 'k': co.key_file = optarg; cold_opt = true; break;
        case 'p':
            if (parse_long(optarg, 1, 65535, &lv))
                usage_exit(&applet_migrate, "bad port '%s' (1-65535)", optarg);
            co.port = (unsigned)lv;
            cold_opt = true;
            break;
        case 't':
            if (parse_long(optarg, 1, 3600, &lv))
                usage_exit(&applet_migrate, "bad timeout '%s' (1-3600 seconds)", optarg);
            co.timeout_ms = (int)lv * 1000;
            cold_opt = true;
            break;
        case 'n': wait = false; break;
        case 'a':
            if (!mig_algo_known(optarg))
                usage_exit(&applet_migrate, "unknown algorithm '%s' (precopy, postcopy or stopcopy)",
                           optarg);
            algo = optarg;
            break;
        case 'M':
            if (!mig_stream_known(optarg))
                usage_exit(&applet_migrate, "unknown stream '%s' (relay or direct)", optarg);
            stream = optarg;
            break;
        case 'm': mnt = optarg; break;
        case 'h': help_exit_ok(&applet_migrate);
        default: usage_exit(&applet_migrate, "unknown option");
        }
    }
    int nargs = argc - optind;
    if (cold_opt && !cold)
        usage_exit(&applet_migrate, "--config, --port, --key and --timeout go with --cold");
    if (cold) {
        if (nargs != 2)
            usage_exit(&applet_migrate, "--cold takes DOMAIN and HOST");
        if (algo || stream || !wait)
            usage_exit(&applet_migrate, "--cold takes no --algorithm, --stream or --no-wait");
        co.name = argv[optind];
        co.host = argv[optind + 1];
        if (!co.key_file)
            co.key_file = proto_key_file();
        co.state_dir = env_default("VMMIG_STATE_DIR", DEFAULT_STATE_DIR);
        return cold_send(&co);
    }
    if (nargs != 2 && nargs != 3)
        usage_exit(&applet_migrate, nargs < 2 ? "expected DOMAIN and HOST" : "too many arguments");
    const char *dom = argv[optind], *host = argv[optind + 1];
    const char *mode = nargs == 3 ? argv[optind + 2] : NULL;
    bool cancel = !strcmp(host, "cancel");
    if (cancel && (mode || algo || stream))
        usage_exit(&applet_migrate, "cancel takes no other word, --algorithm or --stream");
    if (mode && !mode_word_ok(mode))
        usage_exit(&applet_migrate, "'%s': expected wait, wait=SECONDS (1 to 31536000) or force",
                   mode);
    if (!mount_present(mnt))
        error_exit("no vmmigfs mounted at %s (start it with: vmmigfs %s)", mnt, mnt);

    char req[400];
    snprintf(req, sizeof req, "%s%s%s%s%s%s%s\n", host, mode ? " " : "", mode ? mode : "",
             algo ? " algo=" : "", algo ? algo : "", stream ? " stream=" : "",
             stream ? stream : "");
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
    const char *doms[GROUP_MAX];
    char *peers;
    int n = group_of(mnt, dom, doms, &peers);
    rc = follow(mnt, doms, n, host, mark);
    free(peers);
    free(mark);
    return rc;
}

const struct applet applet_migrate = {
    .name = "migrate",
    .main = migrate_main,
    .summary = "live-migrate a domain through vmmigfs and follow it",
    .help = migrate_help,
};
