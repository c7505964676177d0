/* vmmig comigrate: live-migrate a group of domains together.  One `vmmig
 * send --sync-fd` per member does the work; this coordinator holds them at
 * the group's synchronization points (vmmig-comigrate(1)):
 *   reserved   every destination accepted its member, before any memory moves
 *   round      pre-copy rounds in step, so that the members stop together
 *   stop       every member is ready to stop; then all are asked to at once
 *   received   every destination holds its copy, before anyone commits
 *   committed  every member is committed and paused there; then all resume
 * A member that fails before the commit point takes the whole group back. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "applet.h"
#include "migjob.h"
#include "util.h"

static const char comigrate_help[] =
    "usage: vmmig comigrate [OPTIONS] HOST DOMAIN DOMAIN...\n"
    "\n"
    "Live-migrate a group of domains to HOST together: all of them or none.\n"
    "Each DOMAIN (a name or domid) moves through the vmmig control protocol as\n"
    "with 'vmmig send'; their destinations are reserved before any memory\n"
    "moves, their pre-copy rounds are kept in step, none is stopped before all\n"
    "are ready to stop and then all are stopped at once (on QEMU under TCG each\n"
    "stops after its first pass and waits stopped: vmmig-comigrate(1)), nobody\n"
    "commits before every destination holds its copy, and the destinations\n"
    "resume together.\n"
    "vmmigfs runs this for a domain with peers.\n"
    "\n"
    "  -p, --port N          destination agent's TCP port (default 8123)\n"
    "  -s, --via CMD         exec transport instead of TCP (see vmmig send)\n"
    "  -a, --algorithm A     precopy (default) or stopcopy (post-copy is refused:\n"
    "                        each destination would run before the others commit)\n"
    "  -M, --stream MODE     relay (default) or direct: each member's QEMU stream on\n"
    "                        a TCP connection of its own (see vmmig send)\n"
    "  -f, --force           go ahead over guest holds past their quota\n"
    "  -t, --timeout S       longest silence from a peer (default 30)\n"
    "  -R, --recover         settle every member after a coordinator that died\n"
    "  -k, --key FILE        pre-shared key (see vmmig send)\n"
    "  -d, --state-dir DIR   see vmmig send\n"
    "  -P, --policy FILE     see vmmig send\n"
    "  -h, --help            show this help\n"
    "\n"
    "Output: each member's 'progress' and 'result' lines with member=DOMAIN\n"
    "added, then 'result ok group=... stop_skew_ms=N [stop_request_skew_ms=N]\n"
    "resume_skew_ms=N total_ms=N' or 'result failed group=... why=\"...\"'.\n"
    "Exit status: 0 the group moved, 1 it did not (see each member's result),\n"
    "2 usage.\n";

#define MAX_MEMBERS 16

struct member {
    const char *arg; /* DOMAIN as given */
    pid_t pid;
    int out_fd, sync_fd;
    char out[2048], sync[256];
    size_t outlen, synclen;
    char waiting[16]; /* the point it waits at, "" when not waiting */
    bool stopped;     /* suspended for its last copy (or past the stream) */
    bool stop_hook;   /* its engine stops it only through the stop barrier */
    int result;       /* 1 ok, -1 failed, 0 none yet */
    bool exited;
    int status;
    int stage;
    long long stop_ms, resume_ms, stop_req_ms;
    char why[300];
};

static struct member members[MAX_MEMBERS];
static int nmembers;
static bool committing;  /* the received barrier was passed: no going back */
static char abort_why[400];
static volatile sig_atomic_t cancel_requested;

static void on_signal(int sig)
{
    (void)sig;
    cancel_requested = 1;
}

static void say_to(struct member *m, const char *line)
{
    char buf[450];
    snprintf(buf, sizeof buf, "%s\n", line);
    if (m->sync_fd >= 0 && write(m->sync_fd, buf, strlen(buf)) < 0) {
        /* the member is gone; its exit is handled by the loop */
    }
    m->waiting[0] = 0;
}

static bool alive(const struct member *m) { return !m->exited && m->result == 0; }

/* A member failed before the commit point: everyone goes back. */
static void group_abort(struct member *failed, const char *why)
{
    char line[450];

    if (committing || abort_why[0])
        return;
    snprintf(abort_why, sizeof abort_why, "%s failed: %s", failed ? failed->arg : "the group",
             why);
    snprintf(line, sizeof line, "abort %s", abort_why);
    for (int i = 0; i < nmembers; i++) {
        struct member *m = &members[i];
        if (m == failed || !alive(m))
            continue;
        if (m->waiting[0])
            say_to(m, line);
        else
            kill(m->pid, SIGTERM); /* mid-copy: it cancels and resumes here */
    }
}

/* Release whoever may go on. */
static void barriers(void)
{
    static const char *const full[] = {"reserved", "received", "committed"};

    for (size_t p = 0; p < ARRAY_SIZE(full); p++) {
        int waiting = 0, others = 0;
        for (int i = 0; i < nmembers; i++) {
            if (!alive(&members[i]))
                continue;
            if (!strcmp(members[i].waiting, full[p]))
                waiting++;
            else
                others++;
        }
        if (!waiting || others)
            continue;
        if (abort_why[0] && strcmp(full[p], "committed")) {
            char line[450];
            snprintf(line, sizeof line, "abort %s", abort_why);
            for (int i = 0; i < nmembers; i++)
                if (!strcmp(members[i].waiting, full[p]))
                    say_to(&members[i], line);
            continue;
        }
        if (!strcmp(full[p], "received"))
            committing = true;
        for (int i = 0; i < nmembers; i++)
            if (!strcmp(members[i].waiting, full[p]))
                say_to(&members[i], "go");
    }
    /* Rounds: wait for members still copying, not for those already stopped. */
    int in_round = 0, copying = 0;
    for (int i = 0; i < nmembers; i++) {
        const struct member *m = &members[i];
        if (!alive(m))
            continue;
        if (!strcmp(m->waiting, "round"))
            in_round++;
        else if (!m->stopped && !m->waiting[0])
            copying++;
    }
    if (in_round && !copying)
        for (int i = 0; i < nmembers; i++)
            if (!strcmp(members[i].waiting, "round"))
                say_to(&members[i], abort_why[0] ? "abort group aborted" : "go");
    /* Stop: everyone still running waits here (or stopped already, where
     * the engine offers no hook; one whose engine stops only through the
     * barrier, QEMU's, comes here also when stopped first); then all are
     * asked to stop at once. */
    int at_stop = 0, not_ready = 0;
    for (int i = 0; i < nmembers; i++) {
        const struct member *m = &members[i];
        if (!alive(m))
            continue;
        if (!strcmp(m->waiting, "stop"))
            at_stop++;
        else if (!m->stopped || m->stop_hook)
            not_ready++;
    }
    if (at_stop && (!not_ready || abort_why[0])) {
        char line[450];
        snprintf(line, sizeof line, "abort %s", abort_why);
        for (int i = 0; i < nmembers; i++)
            if (!strcmp(members[i].waiting, "stop"))
                say_to(&members[i], abort_why[0] ? line : "go");
    }
}

static long long field_ll(const char *line, const char *key)
{
    const char *p = strstr(line, key);
    return p ? atoll(p + strlen(key)) : 0;
}

static void member_line(struct member *m, char *line)
{
    if (!strncmp(line, "progress ", 9)) {
        m->stage = (int)field_ll(line, " stage=");
        printf("progress member=%s %s\n", m->arg, line + 9);
    } else if (!strncmp(line, "result ", 7)) {
        bool ok = !strncmp(line + 7, "ok", 2) && (!line[9] || line[9] == ' ');
        printf("result member=%s %s\n", m->arg, line + 7);
        m->result = ok ? 1 : -1;
        m->stopped = true;
        if (strstr(line, " stage="))
            m->stage = (int)field_ll(line, " stage=");
        if (ok) {
            m->stop_ms = field_ll(line, " stop_ms=");
            m->stop_req_ms = field_ll(line, " stop_request_ms=");
            m->resume_ms = field_ll(line, " resume_ms=");
        } else {
            const char *w = strstr(line, "why=\"");
            snprintf(m->why, sizeof m->why, "%s", w ? w + 5 : "no reason given");
            char *q = strrchr(m->why, '"');
            if (q)
                *q = 0;
            group_abort(m, m->why);
        }
    } else {
        printf("%s: %s\n", m->arg, line);
    }
}

static void member_sync(struct member *m, const char *line)
{
    if (!strncmp(line, "sync ", 5)) {
        static const char *const known[] = {"reserved", "round", "stop", "received", "committed"};
        size_t k = 0;
        while (k < ARRAY_SIZE(known) && strcmp(line + 5, known[k]))
            k++;
        if (k == ARRAY_SIZE(known)) {
            /* A member from another version: it must not wait forever. */
            char why[300];
            snprintf(why, sizeof why, "abort unknown synchronization point '%.100s'", line + 5);
            say_to(m, why);
            return;
        }
        strlcpy0(m->waiting, line + 5, sizeof m->waiting);
        if (strcmp(m->waiting, "round") && strcmp(m->waiting, "stop"))
            m->stopped = strcmp(m->waiting, "reserved") != 0; /* past its stream */
    } else if (!strcmp(line, "event stop-hook")) {
        m->stop_hook = true;
    } else if (!strncmp(line, "event stopped ", 14)) {
        m->stopped = true;
        m->stop_ms = atoll(line + 14);
    }
}

/* Split what arrived into lines and hand each to fn. */
static int drain(int *fd, char *buf, size_t size, size_t *len, struct member *m,
                 void (*fn)(struct member *, char *))
{
    ssize_t r = read(*fd, buf + *len, size - 1 - *len);
    if (r < 0 && (errno == EINTR || errno == EAGAIN))
        return 0;
    if (r <= 0) {
        if (*len) {
            buf[*len] = 0;
            fn(m, buf);
            *len = 0;
        }
        close(*fd);
        *fd = -1;
        return -1;
    }
    *len += (size_t)r;
    char *start = buf, *nl;
    while ((nl = memchr(start, '\n', *len - (size_t)(start - buf)))) {
        *nl = 0;
        fn(m, start);
        start = nl + 1;
    }
    *len -= (size_t)(start - buf);
    memmove(buf, start, *len);
    if (*len == size - 1) { /* an overlong line: take it as it is */
        buf[*len] = 0;
        fn(m, buf);
        *len = 0;
    }
    return 0;
}

static void sync_line(struct member *m, char *line) { member_sync(m, line); }

static int spawn_member(struct member *m, char **send_argv, int argc_fixed);

/* `send --recover` for a member whose agent died without a result: its
 * result line becomes the member's. */
static void recover_member(struct member *m, char **send_argv, int fixed, const char *died)
{
    char *argv[40];
    int n = 0;

    printf("%s: %s; settling it with send --recover\n", m->arg, died);
    for (int i = 0; i < fixed; i++)
        if (strcmp(send_argv[i], "--sync-fd=3"))
            argv[n++] = send_argv[i];
    argv[n++] = "--recover";
    int at = n;
    argv[n + 1] = send_argv[fixed + 1];
    argv[n + 2] = NULL;
    m->result = 0;
    m->exited = false;
    if (spawn_member(m, argv, at)) {
        m->result = -1;
    } else {
        close(m->sync_fd);
        m->sync_fd = -1;
        while (m->out_fd >= 0)
            drain(&m->out_fd, m->out, sizeof m->out, &m->outlen, m, member_line);
        waitpid(m->pid, &m->status, 0);
    }
    m->exited = true;
    if (m->result == 0)
        m->result = -1;
    if (m->result < 0)
        snprintf(m->why, sizeof m->why, "%s", died);
}

static int spawn_member(struct member *m, char **send_argv, int argc_fixed)
{
    int out[2], sv[2];
    if (pipe2(out, O_CLOEXEC))
        return -errno;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
        int e = errno;
        close(out[0]);
        close(out[1]);
        return -e;
    }
    m->pid = fork();
    if (m->pid < 0) {
        int e = errno;
        close(out[0]), close(out[1]), close(sv[0]), close(sv[1]);
        return -e;
    }
    if (!m->pid) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        dup2(out[1], 1);
        dup2(out[1], 2);
        dup2(sv[1], 3); /* without CLOEXEC: send reads --sync-fd=3 */
        send_argv[argc_fixed] = (char *)m->arg;
        execv(send_argv[0], send_argv);
        fprintf(stderr, "cannot run %s: %s\n", send_argv[0], strerror(errno));
        _exit(127);
    }
    close(out[1]);
    close(sv[1]);
    m->out_fd = out[0];
    m->sync_fd = sv[0];
    return 0;
}

static int comigrate_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", required_argument, 0, 'p'},      {"via", required_argument, 0, 's'},
        {"algorithm", required_argument, 0, 'a'}, {"force", no_argument, 0, 'f'},
        {"timeout", required_argument, 0, 't'},   {"key", required_argument, 0, 'k'},
        {"state-dir", required_argument, 0, 'd'}, {"policy", required_argument, 0, 'P'},
        {"recover", no_argument, 0, 'R'},         {"stream", required_argument, 0, 'M'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    /* the options passed on to each member's send (at most one of each) */
    static char opt_store[9][PATH_MAX];
    int nstored = 0;
    char *send_argv[32], self[PATH_MAX];
    int n = 0, opt;
    bool recovering = false;
    struct timespec t0;

    toolname = "vmmig comigrate";
    /* $VMMIG_SEND replaces this binary's own send (the tests' fake members). */
    const char *send = getenv("VMMIG_SEND");
    if (send && *send) {
        strlcpy0(self, send, sizeof self);
    } else {
        ssize_t r = readlink("/proc/self/exe", self, sizeof self - 1);
        if (r <= 0) {
            perror_msg("/proc/self/exe");
            return 1;
        }
        self[r] = 0;
    }
    send_argv[n++] = self;
    send_argv[n++] = "send";
    while ((opt = getopt_long(argc, argv, "p:s:a:ft:k:d:P:RM:h", longopts, NULL)) != -1) {
        char *o;
        switch (opt) {
        case 'a':
            /* Post-copy runs each destination as soon as it switches, before
             * the other members have committed: no all-or-nothing, no
             * resuming together. */
            if (!strcmp(optarg, "postcopy"))
                usage_exit(&applet_comigrate, "post-copy cannot move a group together (each "
                           "destination runs as soon as it switches, before the others have "
                           "committed): use precopy or stopcopy");
            /* fall through */
        case 'p': case 's': case 't': case 'k': case 'd': case 'P': case 'M': {
            /* `send` checks the values, as it would for one domain (a
             * stream mode here too: its error would come once per member) */
            if (opt == 'M' && !mig_stream_known(optarg))
                usage_exit(&applet_comigrate, "unknown stream '%s' (relay or direct)", optarg);
            const char *name = "";
            for (const struct option *lo = longopts; lo->name; lo++)
                if (lo->val == opt)
                    name = lo->name;
            o = opt_store[nstored++];
            snprintf(o, sizeof opt_store[0], "--%s=%s", name, optarg);
            send_argv[n++] = o;
            break;
        }
        case 'f': send_argv[n++] = "--force"; break;
        case 'R': recovering = true; break;
        case 'h': help_exit_ok(&applet_comigrate);
        default: usage_exit(&applet_comigrate, "unknown option");
        }
        if (n > 20 || nstored >= 9)
            usage_exit(&applet_comigrate, "too many options");
    }
    if (argc - optind < 2)
        usage_exit(&applet_comigrate, "expected HOST and at least one DOMAIN");
    const char *host = argv[optind];
    if (!*host || host[0] == '-')
        usage_exit(&applet_comigrate, "bad host '%s'", host);
    if (argc - optind - 1 > MAX_MEMBERS)
        usage_exit(&applet_comigrate, "at most %d domains in a group", MAX_MEMBERS);
    for (int i = optind + 1; i < argc; i++)
        for (int k = optind + 1; k < i; k++)
            if (!strcmp(argv[i], argv[k]))
                usage_exit(&applet_comigrate, "domain '%s' named twice", argv[i]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (recovering)
        send_argv[n++] = "--recover";
    else
        send_argv[n++] = "--sync-fd=3";
    int fixed = n;             /* DOMAIN goes here */
    send_argv[n + 1] = (char *)host;
    send_argv[n + 2] = NULL;

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    nmembers = argc - optind - 1;
    for (int i = 0; i < nmembers; i++) {
        struct member *m = &members[i];
        m->arg = argv[optind + 1 + i];
        m->out_fd = m->sync_fd = -1;
        m->stage = -1;
    }
    /* Recovery needs no coordination: settle the members one by one. */
    for (int i = 0; i < nmembers; i++) {
        int rc = spawn_member(&members[i], send_argv, fixed);
        if (rc) {
            error_msg("cannot start the agent for %s: %s", members[i].arg, strerror(-rc));
            members[i].exited = true;
            members[i].result = -1;
            snprintf(members[i].why, sizeof members[i].why, "its agent could not start");
            group_abort(&members[i], members[i].why);
            continue;
        }
        if (!recovering)
            continue;
        while (members[i].out_fd >= 0)
            drain(&members[i].out_fd, members[i].out, sizeof members[i].out,
                  &members[i].outlen, &members[i], member_line);
        waitpid(members[i].pid, &members[i].status, 0);
        members[i].exited = true;
    }

    for (;;) {
        struct pollfd pfd[2 * MAX_MEMBERS];
        struct member *who[2 * MAX_MEMBERS];
        int np = 0, running = 0;

        if (cancel_requested == 1) {
            cancel_requested = 2;
            group_abort(NULL, "cancelled");
            for (int i = 0; i < nmembers; i++)
                if (alive(&members[i]))
                    kill(members[i].pid, SIGTERM);
        }
        for (int i = 0; i < nmembers; i++) {
            struct member *m = &members[i];
            if (m->out_fd >= 0)
                pfd[np] = (struct pollfd){.fd = m->out_fd, .events = POLLIN}, who[np++] = m;
            if (m->sync_fd >= 0)
                pfd[np] = (struct pollfd){.fd = m->sync_fd, .events = POLLIN}, who[np++] = m;
            if (!m->exited)
                running++;
        }
        if (!running)
            break;
        if (!np) {
            /* outputs closed: reap */
            for (int i = 0; i < nmembers; i++) {
                struct member *m = &members[i];
                if (!m->exited && waitpid(m->pid, &m->status, 0) == m->pid)
                    m->exited = true;
            }
            continue;
        }
        if (poll(pfd, (nfds_t)np, 1000) < 0 && errno != EINTR)
            break;
        for (int k = 0; k < np; k++) {
            struct member *m = who[k];
            if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (pfd[k].fd == m->out_fd)
                drain(&m->out_fd, m->out, sizeof m->out, &m->outlen, m, member_line);
            else
                drain(&m->sync_fd, m->sync, sizeof m->sync, &m->synclen, m, sync_line);
        }
        for (int i = 0; i < nmembers; i++) {
            struct member *m = &members[i];
            if (m->exited || m->out_fd >= 0)
                continue;
            if (waitpid(m->pid, &m->status, WNOHANG) != m->pid)
                continue;
            m->exited = true;
            if (m->sync_fd >= 0)
                close(m->sync_fd), m->sync_fd = -1;
            if (!m->result) {
                char died[200];
                if (WIFSIGNALED(m->status))
                    snprintf(died, sizeof died, "its agent was killed by signal %d",
                             WTERMSIG(m->status));
                else
                    snprintf(died, sizeof died, "its agent exited %d without a result",
                             WEXITSTATUS(m->status));
                /* Others go back now; then settle this one (it may be left
                 * suspended or renamed), as vmmigfs does for one domain. */
                group_abort(m, died);
                recover_member(m, send_argv, fixed, died);
            }
        }
        barriers();
    }

    /* The group's verdict. */
    struct strbuf names = {0};
    bool all_ok = true;
    long long smin = 0, smax = 0, rmin = 0, rmax = 0, qmin = 0, qmax = 0;
    bool all_requested = true; /* every member's stop went through the barrier's hook */
    for (int i = 0; i < nmembers; i++) {
        struct member *m = &members[i];
        sb_printf(&names, "%s%s", i ? "," : "", m->arg);
        if (m->result != 1) {
            all_ok = false;
            continue;
        }
        if (m->stop_ms && (!smin || m->stop_ms < smin))
            smin = m->stop_ms;
        if (m->stop_ms > smax)
            smax = m->stop_ms;
        if (!m->stop_req_ms)
            all_requested = false;
        if (m->stop_req_ms && (!qmin || m->stop_req_ms < qmin))
            qmin = m->stop_req_ms;
        if (m->stop_req_ms > qmax)
            qmax = m->stop_req_ms;
        if (m->resume_ms && (!rmin || m->resume_ms < rmin))
            rmin = m->resume_ms;
        if (m->resume_ms > rmax)
            rmax = m->resume_ms;
    }
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long total = (t1.tv_sec - t0.tv_sec) * 1000LL + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    if (all_ok && recovering) {
        printf("result ok group=%s recovered=yes total_ms=%lld\n", names.s, total);
    } else if (all_ok) {
        char req[48] = "";
        if (all_requested)
            snprintf(req, sizeof req, " stop_request_skew_ms=%lld", qmax - qmin);
        printf("result ok group=%s stop_skew_ms=%lld%s resume_skew_ms=%lld total_ms=%lld\n",
               names.s, smax - smin, req, rmax - rmin, total);
    } else {
        int stage = -1;
        const char *why = abort_why[0] ? abort_why : "";
        for (int i = 0; i < nmembers; i++)
            if (members[i].result != 1) {
                if (stage < 0)
                    stage = members[i].stage;
                if (!why[0])
                    why = members[i].why;
            }
        if (committing && !recovering)
            printf("result failed group=%s stage=%d why=\"after the commit point: %s\"\n",
                   names.s, stage, why);
        else
            printf("result failed group=%s stage=%d why=\"%s\"\n", names.s, stage, why);
    }
    sb_free(&names);
    return all_ok ? 0 : 1;
}

const struct applet applet_comigrate = {
    .name = "comigrate",
    .main = comigrate_main,
    .summary = "live-migrate a group of domains together",
    .help = comigrate_help,
};
