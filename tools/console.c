/* vmmig console: attach to a domain's console through the vmmig agent of
 * the host it runs on, and stay attached when it migrates: the agent says
 * where it went, input typed meanwhile waits here and is delivered once the
 * domain runs again. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "applet.h"
#include "migjob.h"
#include "proto.h"
#include "util.h"

static const char console_help[] =
    "usage: vmmig console [OPTIONS] DOMAIN [HOST]\n"
    "\n"
    "Attach to DOMAIN's console through the vmmig agent on HOST (default\n"
    "localhost; the agent a listening vmmigfs runs) and follow it when it migrates:\n"
    "input typed while it moves is held and delivered once it runs on its new\n"
    "host.  On Xen the console is xenconsoled's pty, on QEMU the virtio console\n"
    "hvc0 (console.sock, output from console.log).  On a terminal, Ctrl-] detaches.\n"
    "\n"
    "  -p, --port N          the agents' TCP port (default 8123)\n"
    "  -s, --via CMD         exec transport instead of TCP (see vmmig send)\n"
    "  -t, --timeout S       give up after S seconds without reaching an agent\n"
    "                        that has the domain (default 60)\n"
    "  -k, --key FILE        pre-shared key (default $VMMIG_KEY_FILE or /etc/vmmig/key)\n"
    "  -q, --quiet           no 'following DOMAIN to HOST' lines on standard error\n"
    "  -v, --verbose         also say on standard error, stamped with the time, when\n"
    "                        the agent takes input and when it holds it (and why)\n"
    "  -h, --help            show this help\n"
    "\n"
    "Exit status: 0 detached, 1 the domain is gone or no agent could be reached,\n"
    "2 usage.\n";

#define ESCAPE_CHAR 0x1d /* Ctrl-] as xl console */

/* Input not yet known to be written to the console, in order: on this
 * connection, pending.s[0] is input byte number base (the agent numbers
 * them from 0 on each connection) and bytes before sent have been sent. */
static struct strbuf pending;
static uint64_t base, sent;

/* The agent wrote input up to byte n: forget it. */
static void pending_written(uint64_t n)
{
    if (n <= base)
        return;
    size_t drop = n - base > pending.len ? pending.len : (size_t)(n - base);
    memmove(pending.s, pending.s + drop, pending.len - drop);
    pending.len -= drop;
    base += drop;
    if (sent < base)
        sent = base;
}

static bool verbose;

/* -v: what the agent said, stamped with the wall clock (ms). */
static void say(const char *host, const char *fmt, ...)
{
    if (!verbose)
        return;
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    char what[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %lld.%03ld %s: %s\n", toolname, (long long)t.tv_sec, t.tv_nsec / 1000000,
            host, what);
}

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

enum session_end { END_DETACHED, END_MOVED, END_GONE, END_LOST };

/* One connection to one host's agent.  follow: the domain just moved
 * there, so its console from the moment it arrived is asked for
 * (from=start); *served once the agent answered. */
static enum session_end session(struct proto_conn *c, const char *host, const char *domain,
                                bool follow, bool *served, bool *stdin_open, bool interactive,
                                char *moved_to, size_t movedsize)
{
    struct strbuf req = {0};
    bool running = false;
    char err[200];

    /* A new connection numbers input from 0: what is pending is sent first. */
    base = sent = 0;
    kv_add(&req, "name", "%s", domain);
    if (follow)
        kv_add(&req, "from", "start");
    int rc = proto_send(c, MSG_CONSOLE, req.s, (uint32_t)req.len);
    sb_free(&req);
    if (rc)
        return END_LOST;
    for (;;) {
        /* Deliver what waits, while the domain runs. */
        if (running && sent < base + pending.len) {
            uint8_t msg[8 + 4096];
            size_t off = (size_t)(sent - base), n = pending.len - off;
            if (n > 4096)
                n = 4096;
            for (int i = 0; i < 8; i++)
                msg[i] = (uint8_t)(sent >> (56 - 8 * i));
            memcpy(msg + 8, pending.s + off, n);
            if (proto_send(c, MSG_CONSOLE_DATA, msg, (uint32_t)(8 + n)))
                return END_LOST;
            sent += n;
            continue;
        }
        struct pollfd p[2] = {{.fd = c->rfd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
        int np = *stdin_open ? 2 : 1;
        if (poll(p, (nfds_t)np, -1) < 0) {
            if (errno == EINTR)
                continue;
            return END_LOST;
        }
        if (np == 2 && (p[1].revents & (POLLIN | POLLHUP))) {
            uint8_t buf[4096];
            ssize_t r = read(0, buf, sizeof buf);
            if (r <= 0) {
                *stdin_open = false;
            } else {
                if (interactive && memchr(buf, ESCAPE_CHAR, (size_t)r))
                    return END_DETACHED;
                sb_add(&pending, (const char *)buf, (size_t)r);
            }
        }
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        int type;
        uint8_t *pl = NULL;
        uint32_t len;
        if (proto_recv(c, &type, &pl, &len, err, sizeof err))
            return END_LOST;
        *served = true;
        enum session_end end = END_LOST;
        bool done = false;
        char state[16] = "", why[32] = "", written[24] = "";
        if (type == MSG_CONSOLE_STATE || type == MSG_CONSOLE_RETURN) {
            /* How much input the agent has written (not there: none new). */
            long long n = -1;
            if (!kv_get(pl, len, "input", written, sizeof written))
                n = atoll(written);
            if (n >= 0)
                pending_written((uint64_t)n);
        }
        switch (type) {
        case MSG_CONSOLE_DATA:
            if (write_all(1, pl, len))
                end = END_DETACHED, done = true;
            break;
        case MSG_CONSOLE_RETURN:
            if (!written[0]) {
                done = true; /* a return that does not say from where: protocol error */
                break;
            }
            /* It stopped taking input at byte base: from there again, once running. */
            say(host, "input from byte %llu not written, %zu bytes held", (unsigned long long)base,
                pending.len);
            sent = base;
            running = false;
            break;
        case MSG_CONSOLE_STATE:
            kv_get(pl, len, "state", state, sizeof state);
            kv_get(pl, len, "why", why, sizeof why);
            if (!strcmp(state, "running")) {
                if (!running)
                    say(host, "running, input written %s", written[0] ? written : "?");
                running = true;
            } else if (!strcmp(state, "paused")) {
                say(host, "paused (%s), %zu input bytes held", why[0] ? why : "?", pending.len);
                running = false;
            } else if (!strcmp(state, "moved") &&
                       !kv_get(pl, len, "host", moved_to, movedsize) && moved_to[0]) {
                end = END_MOVED, done = true;
            } else {
                end = END_GONE, done = true;
            }
            break;
        default:
            done = true;
        }
        free(pl);
        if (done)
            return end;
    }
}

static int console_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", required_argument, 0, 'p'}, {"via", required_argument, 0, 's'},
        {"timeout", required_argument, 0, 't'}, {"key", required_argument, 0, 'k'},
        {"quiet", no_argument, 0, 'q'},         {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *key_file = proto_key_file(), *via = NULL;
    unsigned port = PROTO_DEFAULT_PORT;
    int timeout_s = 60, opt, rc = 1;
    bool quiet = false;
    long v;
    static uint8_t psk[PROTO_KEY_MAX];
    size_t psklen;
    char err[300], host[256];

    toolname = "vmmig console";
    while ((opt = getopt_long(argc, argv, "p:s:t:k:qvh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'p':
            if (parse_long(optarg, 1, 65535, &v))
                usage_exit(&applet_console, "bad port '%s' (1-65535)", optarg);
            port = (unsigned)v;
            break;
        case 's': via = optarg; break;
        case 't':
            if (parse_long(optarg, 1, 3600, &v))
                usage_exit(&applet_console, "bad timeout '%s' (1-3600 seconds)", optarg);
            timeout_s = (int)v;
            break;
        case 'k': key_file = optarg; break;
        case 'q': quiet = true; break;
        case 'v': verbose = true; break;
        case 'h': help_exit_ok(&applet_console);
        default: usage_exit(&applet_console, "unknown option");
        }
    }
    if (argc - optind < 1 || argc - optind > 2)
        usage_exit(&applet_console, "expected DOMAIN [HOST]");
    const char *domain = argv[optind];
    strlcpy0(host, argc - optind == 2 ? argv[optind + 1] : "localhost", sizeof host);
    if (!domain[0] || !host[0] || host[0] == '-')
        usage_exit(&applet_console, "bad domain or host");
    if (proto_load_key(key_file, psk, &psklen, err, sizeof err)) {
        error_msg("%s", err);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    bool interactive = isatty(0), stdin_open = true;
    struct termios saved;
    if (interactive && !tcgetattr(0, &saved)) {
        struct termios raw = saved;
        cfmakeraw(&raw);
        tcsetattr(0, TCSANOW, &raw);
    } else {
        interactive = false;
    }

    time_t give_up = time(NULL) + timeout_s;
    bool follow = false;
    for (;;) {
        bool served = false;
        struct proto_conn c;
        int fd;
        pid_t pid = 0;
        enum session_end end = END_LOST;
        char moved[256] = "";

        if (!mig_connect(host, port, via, 10000, &fd, &pid, err, sizeof err)) {
            proto_init(&c, fd, fd, 30000);
            if (!proto_handshake_client(&c, psk, psklen, NULL, err, sizeof err))
                end = session(&c, host, domain, follow, &served, &stdin_open, interactive,
                              moved, sizeof moved);
            proto_wipe(&c);
            close(fd);
            if (pid > 0) {
                kill(pid, SIGTERM);
                waitpid(pid, NULL, 0);
            }
        }
        if (end == END_DETACHED) {
            rc = 0;
            break;
        }
        if (end == END_GONE) {
            error_msg("%s: no domain '%s' there, and it did not say where it went", host, domain);
            break;
        }
        if (end == END_MOVED) {
            if (!quiet)
                fprintf(stderr, "%s: following %s to %s\n", toolname, domain, moved);
            strlcpy0(host, moved, sizeof host);
            give_up = time(NULL) + timeout_s;
            follow = true;
            continue;
        }
        if (served)
            follow = false; /* what that agent sent was shown */
        if (time(NULL) >= give_up) {
            error_msg("%s: lost the console of %s: %s", host, domain, err[0] ? err : "connection closed");
            break;
        }
        sleep(1); /* the agent may be restarting, or the link coming back */
    }
    if (interactive)
        tcsetattr(0, TCSANOW, &saved);
    sb_free(&pending);
    return rc;
}

const struct applet applet_console = {
    .name = "console",
    .main = console_main,
    .summary = "attach to a domain's console, and follow it when it migrates",
    .help = console_help,
};
