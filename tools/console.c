/* vmmig console: attach to a domain's console through the vmmig agent of
 * the host it runs on, and stay attached when it migrates: the agent says
 * where it went, input typed meanwhile waits here and is delivered once the
 * domain runs again.  While the domain is being stopped for a move, the
 * client already attaches to the destination's agent (standby), so that
 * input flows there as soon as the domain runs there, and the destination's
 * output is shown once the source's has all been. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
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
    "host (the client attaches there as the domain stops, not after it left).\n"
    "On Xen the console is xenconsoled's pty, on QEMU the virtio console\n"
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

/* How much of a standby's output is held, at most, while the source's
 * agent still sends its own (VMMIG_TEST_STANDBY_HELD_MAX sets it for
 * tests).  Past it, a standby the domain runs at becomes the session: the
 * source's agent is taken as hung, and what it did not send yet is not
 * shown.  A standby the domain does not run at yet is dropped: the client
 * attaches there after the move, from the domain's arrival (from=start). */
#define STANDBY_HELD_MAX (4u << 20)

/* Input typed and not yet known to be written to the console, in order. */
static struct strbuf pending;

static bool verbose;

/* -v: what happened, stamped with the wall clock (s.ms). */
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

/* One connection to one host's agent.  Input goes to one at a time (the
 * target): pending.s[0] is input byte number base of that connection (the
 * agent numbers them from 0 on each), and bytes before sent were sent. */
struct session {
    bool open;
    char host[256];
    struct proto_conn c;
    int fd;
    pid_t pid;
    bool served;         /* the agent answered */
    bool running;        /* it said the domain runs there: it takes input */
    bool numbered;       /* input went to it: base counts its own bytes */
    uint64_t base, sent;
    struct strbuf held;  /* a standby's output, shown once the current one ends */
};

/* The settings every connection needs. */
struct client {
    const char *domain, *via;
    unsigned port;
    const uint8_t *psk;
    size_t psklen;
    char err[300];
};

static void session_close(struct session *s)
{
    if (!s->open)
        return;
    proto_wipe(&s->c);
    close(s->fd);
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
    }
    sb_free(&s->held);
    memset(s, 0, sizeof *s);
}

/* Connect to host's agent and ask for the domain's console; follow: it
 * moves (moved) there, so ask for its console from its arrival
 * (from=start).  0, or -1 with cl->err. */
static int session_open(struct client *cl, struct session *s, const char *host, bool follow)
{
    struct strbuf req = {0};
    int fd;
    pid_t pid = 0;

    memset(s, 0, sizeof *s);
    cl->err[0] = 0;
    if (mig_connect(host, cl->port, cl->via, 10000, &fd, &pid, cl->err, sizeof cl->err))
        return -1;
    s->open = true;
    s->fd = fd;
    s->pid = pid;
    strlcpy0(s->host, host, sizeof s->host);
    proto_init(&s->c, fd, fd, 30000);
    kv_add(&req, "name", "%s", cl->domain);
    if (follow)
        kv_add(&req, "from", "start");
    if (proto_handshake_client(&s->c, cl->psk, cl->psklen, NULL, cl->err, sizeof cl->err) ||
        proto_send(&s->c, MSG_CONSOLE, req.s, (uint32_t)req.len)) {
        if (!cl->err[0])
            snprintf(cl->err, sizeof cl->err, "cannot ask for the console");
        sb_free(&req);
        session_close(s);
        return -1;
    }
    sb_free(&req);
    return 0;
}

/* The target's agent wrote its input up to byte n: forget it. */
static void pending_written(struct session *t, uint64_t n)
{
    if (n <= t->base)
        return;
    size_t drop = n - t->base > pending.len ? pending.len : (size_t)(n - t->base);
    memmove(pending.s, pending.s + drop, pending.len - drop);
    pending.len -= drop;
    t->base += drop;
    if (t->sent < t->base)
        t->sent = t->base;
}

/* Send what waits to the target, while the domain runs there.  -1: lost. */
static int deliver(struct session *t)
{
    while (t->running && t->sent < t->base + pending.len) {
        uint8_t msg[8 + 4096];
        size_t off = (size_t)(t->sent - t->base), n = pending.len - off;
        if (n > 4096)
            n = 4096;
        for (int i = 0; i < 8; i++)
            msg[i] = (uint8_t)(t->sent >> (56 - 8 * i));
        memcpy(msg + 8, pending.s + off, n);
        if (proto_send(&t->c, MSG_CONSOLE_DATA, msg, (uint32_t)(8 + n)))
            return -1;
        t->sent += n;
    }
    return 0;
}

/* A standby that input went to is gone, and input goes to the current
 * host again: from the byte that host last said it wrote (its own
 * count, kept while it was not the target).  What the standby took and
 * said so is no longer pending; what it did not say it wrote is sent
 * again. */
static void standby_took_input_back(struct session *cur)
{
    cur->sent = cur->base;
}

enum msg_event { EV_NONE, EV_RUNNING, EV_PAUSED, EV_MOVED, EV_GONE, EV_LOST, EV_DETACH };

/* One message from s's agent.  is_target: its input counts are ours;
 * shown: its output goes to standard output (else it is held).  On
 * EV_MOVED the host is in where; on EV_PAUSED where says where the domain
 * is going, if the agent said ("" if not). */
static enum msg_event session_recv(struct session *s, bool is_target, bool shown, char *where,
                                   size_t wsize)
{
    int type;
    uint8_t *pl = NULL;
    uint32_t len;
    char err[200], state[16] = "", why[32] = "", written[24] = "";
    enum msg_event ev = EV_NONE;

    where[0] = 0;
    if (proto_recv(&s->c, &type, &pl, &len, err, sizeof err))
        return EV_LOST;
    s->served = true;
    if ((type == MSG_CONSOLE_STATE || type == MSG_CONSOLE_RETURN) &&
        !kv_get(pl, len, "input", written, sizeof written) && is_target)
        pending_written(s, (uint64_t)strtoull(written, NULL, 10));
    switch (type) {
    case MSG_CONSOLE_DATA:
        if (!shown)
            sb_add(&s->held, (const char *)pl, len);
        else if (write_all(1, pl, len))
            ev = EV_DETACH;
        break;
    case MSG_CONSOLE_RETURN:
        if (kv_get(pl, len, "input", written, sizeof written)) {
            ev = EV_LOST; /* a return that does not say from where */
            break;
        }
        if (is_target) {
            say(s->host, "input from byte %llu not written, %zu bytes held",
                (unsigned long long)s->base, pending.len);
            s->sent = s->base; /* from there again, once running */
        }
        s->running = false;
        break;
    case MSG_CONSOLE_STATE:
        kv_get(pl, len, "state", state, sizeof state);
        kv_get(pl, len, "why", why, sizeof why);
        if (!strcmp(state, "running")) {
            if (!s->running)
                say(s->host, "running, input written %s", written[0] ? written : "?");
            s->running = true;
            ev = EV_RUNNING;
        } else if (!strcmp(state, "paused")) {
            kv_get(pl, len, "host", where, wsize);
            say(s->host, "paused (%s)%s%s, %zu input bytes held", why[0] ? why : "?",
                where[0] ? ", going to " : "", where, pending.len);
            s->running = false;
            ev = EV_PAUSED;
        } else if (!strcmp(state, "moved") && !kv_get(pl, len, "host", where, wsize) &&
                   where[0]) {
            ev = EV_MOVED;
        } else {
            ev = EV_GONE;
        }
        break;
    default:
        ev = EV_LOST;
    }
    free(pl);
    return ev;
}

/* A standby being opened in a thread of its own: connecting and the
 * handshake may take seconds (or hang, until their timeouts), and the
 * source's output and input must not wait for them. */
struct standby_open {
    bool busy;       /* the thread runs (or is done and not yet joined) */
    bool unwanted;   /* the move ended meanwhile: close it when done */
    int done[2];     /* the thread writes a byte when done */
    pthread_t thread;
    struct client cl; /* a copy: its err is the thread's own */
    struct session s;
    char host[256];
    int rc;
};

static void *standby_open_main(void *arg)
{
    struct standby_open *o = arg;
    o->rc = session_open(&o->cl, &o->s, o->host, true);
    while (write(o->done[1], "", 1) < 0 && errno == EINTR)
        ;
    return NULL;
}

static void standby_open_start(struct standby_open *o, const struct client *cl, const char *host)
{
    o->cl = *cl;
    o->unwanted = false;
    strlcpy0(o->host, host, sizeof o->host);
    if (o->done[0] <= 0 && pipe(o->done)) {
        o->done[0] = o->done[1] = -1;
        say(host, "no standby: %s", strerror(errno));
        return;
    }
    if (pthread_create(&o->thread, NULL, standby_open_main, o)) {
        say(host, "no standby: cannot start a thread");
        return;
    }
    o->busy = true;
}

/* Wait for the opening thread; install the standby if it opened and is
 * still wanted. */
static void standby_open_finish(struct standby_open *o, struct session *standby)
{
    char c;
    if (!o->busy)
        return;
    pthread_join(o->thread, NULL);
    while (read(o->done[0], &c, 1) < 0 && errno == EINTR)
        ;
    o->busy = false;
    if (o->rc) {
        say(o->host, "no standby: %s", o->cl.err);
    } else if (o->unwanted || standby->open) {
        say(o->host, "standby not needed any more: closed");
        session_close(&o->s);
    } else {
        *standby = o->s;
        memset(&o->s, 0, sizeof o->s);
        say(o->host, "standby attached");
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
    const char *key_file = proto_key_file();
    int timeout_s = 60, opt, rc = 1;
    bool quiet = false;
    long v;
    static uint8_t psk[PROTO_KEY_MAX];
    struct client cl = {.port = PROTO_DEFAULT_PORT, .psk = psk};
    char host[256];

    toolname = "vmmig console";
    while ((opt = getopt_long(argc, argv, "p:s:t:k:qvh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'p':
            if (parse_long(optarg, 1, 65535, &v))
                usage_exit(&applet_console, "bad port '%s' (1-65535)", optarg);
            cl.port = (unsigned)v;
            break;
        case 's': cl.via = optarg; break;
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
    cl.domain = argv[optind];
    strlcpy0(host, argc - optind == 2 ? argv[optind + 1] : "localhost", sizeof host);
    if (!cl.domain[0] || !host[0] || host[0] == '-')
        usage_exit(&applet_console, "bad domain or host");
    if (proto_load_key(key_file, psk, &cl.psklen, cl.err, sizeof cl.err)) {
        error_msg("%s", cl.err);
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

    /* cur: the host the domain runs on (its output is shown); standby: the
     * host it is moving to, attached while it stops there. */
    struct session cur = {0}, standby = {0};
    struct standby_open opening = {.done = {-1, -1}};
    bool standby_too_big = false; /* this move's standby held too much: no other */
    size_t held_max = STANDBY_HELD_MAX;
    const char *test_max = getenv("VMMIG_TEST_STANDBY_HELD_MAX");
    if (test_max && !parse_long(test_max, 1, STANDBY_HELD_MAX, &v))
        held_max = (size_t)v;
    time_t give_up = time(NULL) + timeout_s;
    bool follow = false;
    for (;;) {
        if (!cur.open && session_open(&cl, &cur, host, follow)) {
            if (time(NULL) >= give_up) {
                error_msg("%s: lost the console of %s: %s", host, cl.domain,
                          cl.err[0] ? cl.err : "connection closed");
                break;
            }
            sleep(1); /* the agent may be restarting, or the link coming back */
            continue;
        }
        /* Input goes to the standby once the domain runs there. */
        struct session *target = standby.open && standby.running ? &standby : &cur;
        if (deliver(target)) {
            if (target == &standby) {
                session_close(&standby);
                continue;
            }
            goto lost;
        }
        struct pollfd p[4] = {{.fd = cur.fd, .events = POLLIN},
                              {.fd = standby.open ? standby.fd : -1, .events = POLLIN},
                              {.fd = stdin_open ? 0 : -1, .events = POLLIN},
                              {.fd = opening.busy ? opening.done[0] : -1, .events = POLLIN}};
        if (poll(p, 4, -1) < 0) {
            if (errno == EINTR)
                continue;
            goto lost;
        }
        if (p[3].revents & POLLIN)
            standby_open_finish(&opening, &standby);
        if (p[2].revents & (POLLIN | POLLHUP)) {
            uint8_t buf[4096];
            ssize_t r = read(0, buf, sizeof buf);
            if (r <= 0) {
                stdin_open = false;
            } else {
                if (interactive && memchr(buf, ESCAPE_CHAR, (size_t)r)) {
                    rc = 0;
                    break;
                }
                sb_add(&pending, (const char *)buf, (size_t)r);
            }
        }
        char where[256];
        if (standby.open && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            bool was_target = target == &standby;
            enum msg_event ev = session_recv(&standby, was_target, false, where, sizeof where);
            if (standby.held.len > held_max && was_target) {
                error_msg("%s: %s runs on %s and %s's agent has not finished sending its "
                          "output (%zu bytes from %s held): leaving %s", cur.host, cl.domain,
                          standby.host, cur.host, standby.held.len, standby.host, cur.host);
                goto lost;
            } else if (standby.held.len > held_max) {
                say(standby.host, "standby dropped: more than %zu bytes of its output held",
                    held_max);
                session_close(&standby);
                standby_too_big = true;
            } else if (ev == EV_RUNNING && !was_target && !standby.numbered) {
                /* Input typed since the source held it goes here now,
                 * numbered from 0 on this connection. */
                standby.base = standby.sent = 0;
                standby.numbered = true;
                say(standby.host, "the domain runs here: input goes here");
            } else if (ev == EV_RUNNING && !was_target) {
                /* Running again after it returned input: its numbering
                 * goes on from what it wrote (pending.s[0] is its byte
                 * base; from 0 again, it would skip as written as many
                 * bytes as it had written before). */
                standby.sent = standby.base;
            } else if (ev == EV_LOST || ev == EV_GONE || ev == EV_MOVED) {
                say(standby.host, "standby ended");
                if (standby.numbered)
                    standby_took_input_back(&cur);
                session_close(&standby);
            }
        }
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        enum msg_event ev = session_recv(&cur, target == &cur, true, where, sizeof where);
        if (ev == EV_DETACH) {
            rc = 0;
            break;
        }
        if (ev == EV_RUNNING && (standby.open || opening.busy)) {
            /* It runs here again (the move failed): no standby. */
            say(standby.open ? standby.host : opening.host, "standby dropped: %s runs on %s",
                cl.domain, cur.host);
            if (standby.open && standby.numbered)
                standby_took_input_back(&cur);
            session_close(&standby);
            opening.unwanted = true;
        } else if (ev == EV_RUNNING) {
            standby_too_big = false;
        } else if (ev == EV_PAUSED && where[0] && !standby.open && !opening.busy &&
                   !standby_too_big &&
                   strcmp(where, cur.host) && strcmp(where, "localhost")) {
            standby_open_start(&opening, &cl, where);
        } else if (ev == EV_GONE) {
            error_msg("%s: no domain '%s' there, and it did not say where it went", cur.host,
                      cl.domain);
            break;
        } else if (ev == EV_MOVED) {
            if (!quiet)
                fprintf(stderr, "%s: following %s to %s\n", toolname, cl.domain, where);
            session_close(&cur);
            /* A standby still opening: it is the way there, wait for it. */
            standby_open_finish(&opening, &standby);
            if (standby.open && !strcmp(standby.host, where)) {
                /* The source's output is all shown: then the standby's. */
                if (standby.held.len && write_all(1, standby.held.s, standby.held.len)) {
                    rc = 0;
                    break;
                }
                sb_free(&standby.held);
                cur = standby;
                memset(&standby, 0, sizeof standby);
            } else {
                session_close(&standby);
            }
            strlcpy0(host, where, sizeof host);
            give_up = time(NULL) + timeout_s;
            follow = true;
            standby_too_big = false;
        } else if (ev == EV_LOST) {
            goto lost;
        }
        continue;
    lost:
        if (cur.served) {
            follow = false; /* what that agent sent was shown */
            give_up = time(NULL) + timeout_s; /* the timeout counts from here */
        }
        session_close(&cur);
        standby_open_finish(&opening, &standby);
        if (standby.open && standby.running) {
            /* The source's agent went away, the domain runs at the standby. */
            say(standby.host, "the source's agent is gone: staying here");
            if (standby.held.len && write_all(1, standby.held.s, standby.held.len)) {
                rc = 0;
                break;
            }
            sb_free(&standby.held);
            strlcpy0(host, standby.host, sizeof host);
            cur = standby;
            memset(&standby, 0, sizeof standby);
            continue;
        }
        /* The agent may be restarting, or the link coming back: what it
         * was sent and did not say it wrote is sent again. */
        session_close(&standby);
        if (time(NULL) >= give_up) {
            error_msg("%s: lost the console of %s: connection closed", host, cl.domain);
            break;
        }
        sleep(1);
    }
    opening.unwanted = true;
    standby_open_finish(&opening, &standby);
    session_close(&cur);
    session_close(&standby);
    if (opening.done[0] >= 0) {
        close(opening.done[0]);
        close(opening.done[1]);
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
