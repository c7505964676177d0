/* The agent's half of `vmmig console` (see consolerelay.h).  A console is
 * a pty (xenconsoled's) or a unix socket NAME.sock whose output is also
 * recorded in NAME.log beside it (QEMU's chardev logfile=): output is read
 * from the log, which has every byte the guest wrote, also while nobody
 * was connected; the socket takes input, and what QEMU writes to it is read
 * and dropped (it would otherwise fill and make QEMU drop output). */
#define _GNU_SOURCE
#include "consolerelay.h"
#include "consolehold.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

struct console_io {
    int in;   /* input to the guest: the pty, or the socket */
    int out;  /* output from the guest: the pty, or the log */
    bool log; /* out is the log */
};

static void console_close(struct console_io *io)
{
    if (io->out >= 0 && io->out != io->in)
        close(io->out);
    if (io->in >= 0)
        close(io->in);
    io->in = io->out = -1;
}

/* A pty, or a socket NAME.sock with NAME.log.  The log is read from its
 * start when the client follows the domain here (this host's log holds
 * exactly what the guest wrote since it arrived), else from its end. */
static int console_open(const char *path, bool from_start, struct console_io *io)
{
    struct stat st;
    int rc;

    io->in = io->out = -1;
    io->log = false;
    if (stat(path, &st))
        return -errno;
    if (!S_ISSOCK(st.st_mode)) {
        int pty = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
        if (pty < 0)
            return -errno;
        struct termios tio;
        if (!tcgetattr(pty, &tio)) {
            cfmakeraw(&tio);
            tcsetattr(pty, TCSANOW, &tio);
        }
        io->in = io->out = pty;
        return 0;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char logpath[sizeof sa.sun_path + 8];
    size_t n = strlen(path);
    if (n >= sizeof sa.sun_path || n < 5 || strcmp(path + n - 5, ".sock"))
        return -EINVAL;
    memcpy(sa.sun_path, path, n);
    snprintf(logpath, sizeof logpath, "%.*s.log", (int)(n - 5), path);
    /* The log first: output written before the socket is connected is in it. */
    io->out = open(logpath, O_RDONLY | O_CLOEXEC);
    if (io->out < 0)
        return -errno;
    if (!from_start && lseek(io->out, 0, SEEK_END) < 0)
        goto fail;
    io->in = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (io->in < 0 || connect(io->in, (struct sockaddr *)&sa, sizeof sa))
        goto fail;
    io->log = true;
    return 0;
fail:
    rc = -errno;
    console_close(io);
    return rc;
}

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

bool console_moved_to(const char *line, char *host, size_t size)
{
    const char *p;
    if (!strncmp(line, "done ", 5))
        p = line + 5;
    else if (!strncmp(line, "migrated ", 9))
        p = line + 9;
    else
        return false;
    size_t n = strcspn(p, " \n");
    if (!n || n >= size)
        return false;
    memcpy(host, p, n);
    host[n] = 0;
    return true;
}

/* Where vmmigfs says the domain went, if it says so. */
static bool moved_host(const char *mount, const char *name, char *host, size_t size)
{
    char path[512], *text = NULL;
    bool moved = false;
    snprintf(path, sizeof path, "%s/%s/migrate", mount, name);
    if (!read_file(path, &text, NULL))
        moved = console_moved_to(text, host, size);
    free(text);
    return moved;
}

enum client_event { CLIENT_IDLE, CLIENT_GONE, CLIENT_FAILED, CLIENT_RETURNED };

/* Input on one client connection.  The client numbers its input bytes from
 * 0 on each connection and sends each message with the number of its first
 * byte; next is the number of the next byte to write.  A message starting
 * beyond next follows input that was not written and is dropped silently:
 * the client sends it again after the RETURN that told it where to start.
 * So a RETURN is never answered by more RETURNs for input already on its
 * way (with a round trip longer than the time between two keys that would
 * never end), and input is written once each and in order. */
struct console_input {
    uint64_t next;       /* input bytes written to the console so far */
    uint64_t told;       /* the last count the client was told (acknowledged) */
    long long told_at;   /* when */
    long long retry_at;  /* the console was full: "running" again no sooner */
    /* A socket console (QEMU): the last write, until QEMU has read all of
     * it.  QEMU reads nothing while the guest is stopped, and what it has
     * not read when it exits is lost: so it does not count as written
     * (acknowledged) before, one write at a time, and a move takes it back
     * (the client sends it again, to the destination). */
    bool pending;
    uint32_t pending_len;
    /* The hold's shared lock is kept while it is pending, on this fd: a
     * send taking the hold waits until QEMU has read the last write, so
     * that it is in the guest's memory before the device state goes
     * (QEMU reads the socket in its main loop, which may run only after
     * the migration's last pass).  Not longer than HOLD_KEEP_MS after the
     * write: QEMU reads only into buffers the guest posted, which a stopped
     * guest does not (the write stays pending and goes back to the client
     * if QEMU exits unread). */
    bool hold_kept;
    int hold_kept_fd;
    long long pending_at; /* when the pending write was made */
};

/* QEMU's main loop reads a socket it can read within milliseconds (under
 * TCG well under this); what it has not read by then waits for the guest,
 * which a stop for a move would make the send wait for in vain. */
#define HOLD_KEEP_MS 300

static void hold_release(struct console_input *in)
{
    if (in->hold_kept)
        console_hold_write_end(in->hold_kept_fd);
    in->hold_kept = false;
}

/* Input the console has taken: what the client may forget. */
static uint64_t input_taken(const struct console_input *in)
{
    return in->next - (in->pending ? in->pending_len : 0);
}

static int send_state(struct proto_conn *c, const char *state, const char *why,
                      const char *host, struct console_input *in)
{
    struct strbuf sb = {0};
    kv_add(&sb, "state", "%s", state);
    if (why)
        kv_add(&sb, "why", "%s", why);
    if (host)
        kv_add(&sb, "host", "%s", host);
    kv_add(&sb, "input", "%llu", (unsigned long long)input_taken(in));
    int rc = proto_send(c, MSG_CONSOLE_STATE, sb.s, (uint32_t)sb.len);
    sb_free(&sb);
    in->told = input_taken(in);
    in->told_at = now_ms();
    return rc;
}

/* Input not written from byte in->next on: the client sends it again from
 * there once told "running". */
static int send_return(struct proto_conn *c, struct console_input *in)
{
    struct strbuf sb = {0};
    kv_add(&sb, "input", "%llu", (unsigned long long)in->next);
    int rc = proto_send(c, MSG_CONSOLE_RETURN, sb.s, (uint32_t)sb.len);
    sb_free(&sb);
    in->told = input_taken(in);
    in->told_at = now_ms();
    return rc;
}

/* Write what the console takes now of data (never waiting: output keeps
 * flowing while the guest does not read its input).  Bytes written. */
static size_t console_write(int fd, const uint8_t *data, size_t n, bool *full)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, data + off, n - off);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        *full = w < 0 && errno == EAGAIN;
        break;
    }
    return off;
}

/* Has a socket console (QEMU) read everything written to it?  A unix
 * socket's SIOCOUTQ (TIOCOUTQ's number) counts what its reader has not
 * read yet. */
static bool console_taken(int fd)
{
    int n = 0;
    return ioctl(fd, TIOCOUTQ, &n) || n == 0;
}

/* The last write is taken once QEMU has read it all, not when QEMU has
 * gone (its unread bytes are freed with it). */
static void pending_check(struct console_input *in, int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (!in->pending || (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR))))
        return;
    if (console_taken(fd)) {
        in->pending = false;
        hold_release(in);
    }
}

/* One message from the client, if one is waiting (within wait_ms).  Input
 * goes to the console (pty >= 0) when the domain runs and the console hold
 * is free, else the client is told to send it again (RETURN).  settle: a
 * socket console, written once QEMU has read the last write. */
static enum client_event client_turn(struct proto_conn *c, struct console_input *in, int pty,
                                     int hold_fd, bool settle, int wait_ms)
{
    struct pollfd p = {.fd = c->rfd, .events = POLLIN};
    char err[200];
    uint8_t *pl = NULL;
    uint32_t len;
    int type, r = poll(&p, 1, wait_ms);

    if (r <= 0)
        return CLIENT_IDLE;
    if (proto_recv(c, &type, &pl, &len, err, sizeof err))
        return CLIENT_GONE;
    enum client_event ev = CLIENT_IDLE;
    if (type == MSG_CONSOLE_DATA && len >= 8) {
        uint64_t first = 0;
        for (int i = 0; i < 8; i++)
            first = first << 8 | pl[i];
        uint64_t end = first + (len - 8);
        /* Beyond next: after input not written, sent before the client
         * heard so.  Before it: sent again, already written. */
        if (first > in->next || end <= in->next)
            goto out;
        const uint8_t *data = pl + 8 + (in->next - first);
        size_t n = (size_t)(end - in->next), written = 0;
        bool full = false;
        /* Not while a send holds the input (it is stopping the domain). */
        if (pty >= 0 && settle)
            pending_check(in, pty);
        if (pty >= 0 && in->pending) {
            full = true; /* QEMU has not read the last write yet */
        } else if (pty >= 0 && (hold_fd < 0 || console_hold_write_begin(hold_fd))) {
            written = console_write(pty, data, n, &full);
            if (settle && written) {
                in->pending = true;
                in->pending_len = (uint32_t)written;
                in->pending_at = now_ms();
            }
            if (hold_fd >= 0 && in->pending) {
                in->hold_kept = true;
                in->hold_kept_fd = hold_fd;
            } else if (hold_fd >= 0) {
                console_hold_write_end(hold_fd);
            }
        }
        in->next += written;
        if (written < n) {
            if (full)
                in->retry_at = now_ms() + 50;
            ev = send_return(c, in) ? CLIENT_FAILED : CLIENT_RETURNED;
        }
    } else if (type == MSG_ABORT || type == MSG_DONE) {
        ev = CLIENT_GONE;
    } else {
        ev = CLIENT_FAILED;
    }
out:
    free(pl);
    return ev;
}

/* Must input wait, by vmmigfs's NAME/migrate line?  "recovering ..."
 * always; "running ..." (a job) only when the engine cannot hold the
 * console at the stop: with console_hold_at_stop (Xen, QEMU) `vmmig send`
 * holds input itself from the stop on (consolehold.h), and input flows
 * during pre-copy. */
bool console_migrate_holds_input(const char *migrate_line, bool hold_at_stop)
{
    if (!strncmp(migrate_line, "recovering ", 11))
        return true;
    if (strncmp(migrate_line, "running ", 8))
        return false;
    return !hold_at_stop;
}

/* Read the domain's vmmigfs migrate file once: does it hold input, and
 * where is the domain being migrated to ("running HOST ...", else ""). */
static bool moving(const char *mount, const char *name, bool hold_at_stop, char *host,
                   size_t size)
{
    char path[512], *text = NULL;
    bool busy = false;
    snprintf(path, sizeof path, "%s/%s/migrate", mount, name);
    host[0] = 0;
    if (!read_file(path, &text, NULL)) {
        busy = console_migrate_holds_input(text, hold_at_stop);
        size_t n = strncmp(text, "running ", 8) ? 0 : strcspn(text + 8, " \n");
        if (n && n < size) {
            memcpy(host, text + 8, n);
            host[n] = 0;
        }
    }
    free(text);
    return busy;
}

/* Why input is not written to the console now, or NULL when the domain
 * runs here under its own name (not arriving, not leaving, not suspended or
 * paused, its input not held): input is only written to its console then.
 * When it is moving ("migrating"), to says where; else to is "". */
static const char *not_running(const struct mig_engine_ops *eng, struct mig_engine *e,
                               uint32_t domid, const char *name, const char *mount, int hold_fd,
                               bool hold_kept, char *to, size_t tolen)
{
    char id[16];
    struct mig_dom d;
    bool hold_at_stop = eng->console_hold_at_stop && hold_fd >= 0;
    to[0] = 0;
    snprintf(id, sizeof id, "%u", domid);
    if (eng->lookup(e, id, &d))
        return "gone";
    if (d.dying)
        return "dying";
    /* Before paused: QEMU stops the guest (pre-switchover) before the hold,
     * and the client is told where it goes once it is held.  Not while the
     * relay keeps the shared lock itself: a send waits for it, and testing
     * it on the same fd would let it go. */
    if (hold_at_stop && !hold_kept && console_hold_held(hold_fd))
        return "stopping";
    if (d.paused)
        return "paused";
    if (d.suspended || eng->is_suspended(e, domid) == 1)
        return "suspended";
    if (strcmp(d.name, name))
        return "arriving";
    if (moving(mount, name, hold_at_stop, to, tolen))
        return "migrating";
    return NULL;
}

/* Everything the log has now, to the client.  -1 when the client is gone. */
static int log_drain(struct proto_conn *c, int fd)
{
    uint8_t buf[4096];
    ssize_t r;

    while ((r = read(fd, buf, sizeof buf)) > 0)
        if (proto_send(c, MSG_CONSOLE_DATA, buf, (uint32_t)r))
            return -1;
    return 0;
}

/* Relay between the console and the client until the console closes (the
 * domain is gone) or the client leaves.  true when the client is still there. */
static bool relay(struct proto_conn *c, struct console_input *in, const struct mig_engine_ops *eng,
                  struct mig_engine *e, struct console_io *io, uint32_t domid, const char *name,
                  const char *mount, int hold_fd)
{
    int known = -1; /* the state the client was last told: 1 running, 0 paused */
    char told_to[256] = ""; /* and where the domain goes, if it was told */
    long long next_check = 0;
    uint8_t buf[4096];
    bool settle = io->log;

    for (;;) {
        if (settle)
            pending_check(in, io->in);
        long long t = now_ms();
        if (in->hold_kept && t - in->pending_at >= HOLD_KEEP_MS)
            hold_release(in); /* still pending: written no more, not acknowledged */
        if (t >= next_check && !(known == -1 && t < in->retry_at)) {
            char to[256];
            const char *why =
                not_running(eng, e, domid, name, mount, hold_fd, in->hold_kept, to, sizeof to);
            int running = !why;
            /* Also, now and then, how much input was written: the client
             * keeps input until it knows. */
            bool ack = input_taken(in) != in->told && t - in->told_at >= 200;
            /* Moving: where to, so that the client attaches there now
             * (a stop for a move holds input before the file is read). */
            if (why && !strcmp(why, "stopping"))
                moving(mount, name, false, to, sizeof to);
            /* Paused first and held after (a domain paused when a move
             * begins): the client learns where it goes once it is held. */
            bool newhost = to[0] && strcmp(to, told_to);
            if (running != known || ack || newhost) {
                if (send_state(c, running ? "running" : "paused", why, to[0] ? to : NULL, in))
                    return false;
                strlcpy0(told_to, to, sizeof told_to);
            }
            known = running;
            /* From the check's end: a slow check (libxl and vmmigfs under
             * load) must leave time for the console and the client. */
            next_check = now_ms() + 20;
        }
        /* A file is always readable: the log is read every turn instead. */
        if (io->log && log_drain(c, io->out))
            return false;
        int src = io->log ? io->in : io->out;
        struct pollfd p[2] = {{.fd = src, .events = POLLIN}, {.fd = c->rfd, .events = POLLIN}};
        if (poll(p, 2, 20) < 0 && errno != EINTR)
            return false;
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = read(src, buf, sizeof buf);
            if (r > 0 && !io->log) {
                if (proto_send(c, MSG_CONSOLE_DATA, buf, (uint32_t)r))
                    return false;
            } else if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                /* The console closed: the domain is gone from here.  QEMU
                 * has exited, so its log is complete: the rest of it. */
                return !(io->log && log_drain(c, io->out));
            }
        }
        /* Every message waiting (a key is a message): one per turn, after
         * a check that takes longer than the time between two keys, would
         * let input fall behind for as long as the user types. */
        for (int n = 0; n < 256 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)); n++) {
            enum client_event ev =
                client_turn(c, in, known == 1 ? io->in : -1, hold_fd, settle, 0);
            if (ev == CLIENT_RETURNED) {
                known = -1; /* told again whether it runs: "running" makes the client resend */
                break;
            }
            if (ev != CLIENT_IDLE)
                return false;
            p[1].revents = poll(&p[1], 1, 0) == 1 ? p[1].revents : 0;
        }
    }
}

int console_serve(struct proto_conn *c, const struct mig_engine_ops *eng, struct mig_engine *e,
                  const uint8_t *payload, uint32_t len, const char *mount, const char *state_dir,
                  int wait_ms)
{
    char name[64], incoming[96], host[256], path[600];
    long long deadline = now_ms() + wait_ms;
    struct console_input in = {0};

    if (kv_get(payload, len, "name", name, sizeof name) || !name[0] || strchr(name, '/') ||
        !printable(name, strlen(name))) {
        send_state(c, "gone", NULL, NULL, &in);
        return -EINVAL;
    }
    /* from=start: the client follows the domain here; what it wrote since
     * it arrived has not been shown yet. */
    char from[16] = "";
    bool from_start = !kv_get(payload, len, "from", from, sizeof from) && !strcmp(from, "start");
    snprintf(incoming, sizeof incoming, "%s" MIG_INCOMING_SUFFIX, name);
    for (;;) {
        struct mig_dom d;
        bool found = !eng->lookup(e, name, &d) || !eng->lookup(e, incoming, &d);
        struct console_io io;
        if (found && !eng->console_path(e, d.domid, path, sizeof path) &&
            !console_open(path, from_start, &io)) {
            /* Without the lock file input waits for the whole migration. */
            int hold_fd = eng->console_hold_at_stop ? console_hold_open(state_dir, d.uuid) : -1;
            bool client_there = relay(c, &in, eng, e, &io, d.domid, name, mount, hold_fd);
            hold_release(&in);
            if (hold_fd >= 0)
                close(hold_fd);
            if (in.pending) {
                /* QEMU went without reading it: it goes to the next console
                 * (the client sends it again from here). */
                in.next -= in.pending_len;
                in.pending = false;
                if (send_return(c, &in))
                    return 0;
            }
            console_close(&io);
            if (!client_there)
                return 0;
            /* Another instance found here later (a move within this
             * host) is all new to the client. */
            from_start = true;
            deadline = now_ms() + wait_ms; /* it left: find out where */
            continue;
        }
        if (!found && moved_host(mount, name, host, sizeof host))
            return send_state(c, "moved", NULL, host, &in) ? -EPIPE : 0;
        if (now_ms() >= deadline) {
            send_state(c, "gone", NULL, NULL, &in);
            return -ENOENT;
        }
        /* Not (yet) here: input waits with the client. */
        enum client_event ev = client_turn(c, &in, -1, -1, false, 100);
        if (ev != CLIENT_IDLE && ev != CLIENT_RETURNED)
            return ev == CLIENT_GONE ? 0 : -EPROTO;
    }
}
