/* The console relay (lib/consolerelay.c) on a QEMU-style console: a fake
 * engine whose console is a unix socket NAME.sock with NAME.log beside it,
 * a fake QEMU listening there.  Output comes from the log (from its end, or
 * from its start with from=start), never from the socket; input goes to
 * the socket; when QEMU goes away the rest of the log is sent, then where
 * the domain went; a console without its log, or a socket not named
 * .sock, is never served. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "consolehold.h"
#include "consolerelay.h"
#include "tap.h"

#define UUID "6f1c2a34-9b7e-4d21-8c55-0a1b2c3d4e5f"
static char dir[128], sockpath[200], logpath[200], mount[200], state_dir[200];
static bool dom_here = true;
static const char *console_file = "con.sock";

static int fake_lookup(struct mig_engine *e, const char *what, struct mig_dom *out)
{
    (void)e;
    if (!dom_here || (strcmp(what, "web1") && strcmp(what, "7")))
        return -ENOENT;
    memset(out, 0, sizeof *out);
    out->domid = 7;
    strcpy(out->name, "web1");
    strcpy(out->uuid, UUID);
    return 0;
}

static int fake_is_suspended(struct mig_engine *e, uint32_t domid)
{
    (void)e, (void)domid;
    return 0;
}

static int fake_console_path(struct mig_engine *e, uint32_t domid, char *buf, size_t size)
{
    (void)e, (void)domid;
    snprintf(buf, size, "%s/%s", dir, console_file);
    return 0;
}

static const struct mig_engine_ops fake = {
    .name = "fake",
    .lookup = fake_lookup,
    .is_suspended = fake_is_suspended,
    .console_path = fake_console_path,
};

static int fake_drain(struct mig_engine *e, uint32_t domid, int timeout_ms)
{
    (void)e, (void)domid, (void)timeout_ms;
    return 0;
}

/* An engine that drains the console before the stop (as Xen's). */
static const struct mig_engine_ops fake_draining = {
    .name = "fake-draining",
    .lookup = fake_lookup,
    .is_suspended = fake_is_suspended,
    .console_path = fake_console_path,
    .console_hold_at_stop = true,
    .console_drain = fake_drain,
};

/* A draining engine whose every lookup takes 60 ms (libxl on a loaded
 * emulated host takes that long, and more). */
static int slow_lookup(struct mig_engine *e, const char *what, struct mig_dom *out)
{
    usleep(60 * 1000);
    return fake_lookup(e, what, out);
}

static const struct mig_engine_ops fake_slow = {
    .name = "fake-slow",
    .lookup = slow_lookup,
    .is_suspended = fake_is_suspended,
    .console_path = fake_console_path,
    .console_hold_at_stop = true,
    .console_drain = fake_drain,
};

struct serve {
    const struct mig_engine_ops *eng; /* NULL: fake */
    struct proto_conn c;
    const char *req;
    int wait_ms;
    int rc;
};

static void *serve_main(void *arg)
{
    struct serve *s = arg;
    s->rc = console_serve(&s->c, s->eng ? s->eng : &fake, NULL, (const uint8_t *)s->req,
                          (uint32_t)strlen(s->req), mount, state_dir, s->wait_ms);
    return NULL;
}

static void authed(struct proto_conn *c, int fd)
{
    static const uint8_t zero_key[SHA256_LEN];
    proto_init(c, fd, fd, 5000);
    proto_set_session_key(c, zero_key); /* the same on both ends: no handshake here */
}

/* Messages from the relay for up to ms: data appended to out, the last
 * state in state ("" if none). */
static void collect(struct proto_conn *c, int ms, struct strbuf *out, char *state, size_t ssize)
{
    char err[200];
    state[0] = 0;
    for (;;) {
        struct pollfd p = {.fd = c->rfd, .events = POLLIN};
        if (poll(&p, 1, ms) <= 0)
            return;
        int type;
        uint8_t *pl;
        uint32_t len;
        if (proto_recv(c, &type, &pl, &len, err, sizeof err))
            return;
        if (type == MSG_CONSOLE_DATA)
            sb_add(out, (const char *)pl, len);
        else if (type == MSG_CONSOLE_STATE) {
            char st[16] = "", host[64] = "";
            kv_get(pl, len, "state", st, sizeof st);
            kv_get(pl, len, "host", host, sizeof host);
            snprintf(state, ssize, "%s%s%s", st, host[0] ? " " : "", host);
        }
        free(pl);
        if (!strncmp(state, "moved", 5) || !strcmp(state, "gone"))
            return;
    }
}

static void log_add(const char *s)
{
    int fd = open(logpath, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0 || write(fd, s, strlen(s)) != (ssize_t)strlen(s))
        perror("log");
    close(fd);
}

static int listen_at(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 4))
        return -1;
    return fd;
}

static int accept_wait(int lfd)
{
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    return poll(&p, 1, 2000) == 1 ? accept(lfd, NULL, NULL) : -1;
}

/* The first message of type want within ms: its payload in got (NUL-ended). */
static bool await_msg(struct proto_conn *c, int want, int ms, char *got, size_t size)
{
    char err[200];
    for (;;) {
        struct pollfd p = {.fd = c->rfd, .events = POLLIN};
        if (poll(&p, 1, ms) <= 0)
            return false;
        int type;
        uint8_t *pl;
        uint32_t len;
        if (proto_recv(c, &type, &pl, &len, err, sizeof err))
            return false;
        bool match = type == want;
        if (match)
            snprintf(got, size, "%.*s", (int)len, (const char *)pl);
        free(pl);
        if (match)
            return true;
    }
}

/* A state message saying state=want within ms (others skipped). */
static bool await_state(struct proto_conn *c, const char *want, int ms)
{
    char got[200], key[40];
    snprintf(key, sizeof key, "state=%s", want);
    for (int i = 0; i < 20; i++)
        if (!await_msg(c, MSG_CONSOLE_STATE, ms, got, sizeof got) || strstr(got, key))
            return strstr(got, key) != NULL;
    return false;
}

/* A message of this type containing text within ms (others skipped); the
 * last one read stays in last_msg. */
static char last_msg[200];
static bool await_msg_with(struct proto_conn *c, int type, const char *text, int ms)
{
    for (int i = 0; i < 50; i++) {
        if (!await_msg(c, type, ms, last_msg, sizeof last_msg))
            return false;
        if (strstr(last_msg, text))
            return true;
    }
    return false;
}

static void set_line(const char *path, const char *line)
{
    atomic_write(path, line, strlen(line), 0644);
}

/* Input bytes data[0..n) numbered from first (CONSOLE_DATA's 8-byte prefix). */
static void send_bytes(struct proto_conn *c, uint64_t first, const void *data, size_t n)
{
    uint8_t msg[8 + 256];
    for (int i = 0; i < 8; i++)
        msg[i] = (uint8_t)(first >> (56 - 8 * i));
    memcpy(msg + 8, data, n);
    proto_send(c, MSG_CONSOLE_DATA, msg, (uint32_t)(8 + n));
}

static void send_input(struct proto_conn *c, uint64_t first, char key)
{
    send_bytes(c, first, &key, 1);
}

/* A slow link: what one end sends reaches the other LINK_DELAY_MS later
 * (each chunk as it was read, in order).  With the first design of the
 * input protocol (an epoch, bytes handed back), a round trip of 600 ms
 * while keys are typed every 15 ms returned input forever: 320 RETURNs and
 * no key written in 10 s (measured when it was replaced). */
#define LINK_DELAY_MS 300

struct slow_pipe {
    int from, to;
    struct link_chunk {
        long long due;
        size_t n;
        char data[512];
    } q[256];
};

static long long ms_now(void);

static void *slow_pipe_main(void *arg)
{
    struct slow_pipe *sp = arg;
    size_t head = 0, tail = 0;
    bool eof = false;
    for (;;) {
        while (head != tail && sp->q[head % 256].due <= ms_now()) {
            struct link_chunk *ch = &sp->q[head % 256];
            if (write(sp->to, ch->data, ch->n) != (ssize_t)ch->n)
                goto out;
            head++;
        }
        if (eof && head == tail)
            break;
        struct pollfd p = {.fd = sp->from, .events = POLLIN};
        if (eof || tail - head == 256 || poll(&p, 1, 1) != 1) {
            if (eof || tail - head == 256)
                usleep(1000);
            continue;
        }
        struct link_chunk *ch = &sp->q[tail % 256];
        ssize_t n = read(sp->from, ch->data, sizeof ch->data);
        if (n <= 0) {
            eof = true;
            continue;
        }
        ch->n = (size_t)n;
        ch->due = ms_now() + LINK_DELAY_MS;
        tail++;
    }
out:
    shutdown(sp->to, SHUT_WR);
    return NULL;
}

static long long ms_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* A client as vmmig console's: input numbered from 0, sent while told
 * "running", from the byte a RETURN names again once told "running";
 * forgets what the agent says it wrote.  Types key i (byte i) every 15 ms;
 * the console hold is taken from key 30 to key 50.  What reaches the
 * console socket q goes to got; *typed_when[i]: keys typed when byte i
 * arrived.  Returns the number of RETURNs seen. */
static int typing_client(struct proto_conn *c, int q, int keys, uint8_t *got, int *ngot,
                         int *typed_when)
{
    uint8_t pending[256];
    uint64_t base = 0, sent = 0;
    int typed = 0, returns = 0, hold = -1;
    bool running = false;
    long long next_key = ms_now(), give_up = ms_now() + 10000;
    char err[200];

    *ngot = 0;
    while (ms_now() < give_up && *ngot < keys) {
        if (typed < keys && ms_now() >= next_key) {
            pending[typed - base] = (uint8_t)typed;
            typed++;
            next_key += 15;
            if (typed == 30)
                hold = console_hold_open(state_dir, UUID), console_hold_take(hold, 5000);
            if (typed == 50)
                close(hold);
        }
        if (running && sent < (uint64_t)typed) {
            send_bytes(c, sent, pending + (sent - base), (size_t)((uint64_t)typed - sent));
            sent = (uint64_t)typed;
        }
        struct pollfd p[2] = {{.fd = c->rfd, .events = POLLIN}, {.fd = q, .events = POLLIN}};
        if (poll(p, 2, 5) <= 0)
            continue;
        if (p[1].revents & POLLIN) {
            uint8_t in[256];
            ssize_t n = read(q, in, sizeof in);
            for (ssize_t i = 0; i < n && *ngot < keys; i++) {
                typed_when[*ngot] = typed;
                got[(*ngot)++] = in[i];
            }
        }
        if (!(p[0].revents & POLLIN))
            continue;
        int type;
        uint8_t *pl;
        uint32_t len;
        char v[24] = "", st[16] = "";
        if (proto_recv(c, &type, &pl, &len, err, sizeof err))
            break;
        if (!kv_get(pl, len, "input", v, sizeof v) && (uint64_t)atoll(v) > base) {
            uint64_t w = (uint64_t)atoll(v);
            memmove(pending, pending + (w - base), (size_t)((uint64_t)typed - w));
            base = w;
        }
        if (type == MSG_CONSOLE_RETURN) {
            returns++;
            sent = base;
            running = false;
        } else if (type == MSG_CONSOLE_STATE) {
            kv_get(pl, len, "state", st, sizeof st);
            running = !strcmp(st, "running");
        }
        free(pl);
    }
    return returns;
}

static bool socket_gets(int q, char want, int ms)
{
    char in[8] = "";
    struct pollfd p = {.fd = q, .events = POLLIN};
    return poll(&p, 1, ms) == 1 && read(q, in, sizeof in) == 1 && in[0] == want;
}

/* Exactly want arrives at the console socket within ms. */
static bool socket_gets_str(int q, const char *want, int ms)
{
    char in[64];
    size_t n = 0, len = strlen(want);
    while (n < len) {
        struct pollfd p = {.fd = q, .events = POLLIN};
        if (poll(&p, 1, ms) != 1)
            return false;
        ssize_t r = read(q, in + n, sizeof in - n);
        if (r <= 0)
            return false;
        n += (size_t)r;
    }
    return n == len && !memcmp(in, want, len);
}

static void start(struct serve *s, int *client, pthread_t *t, const char *req, int wait_ms)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        exit(1);
    authed(&s->c, sv[0]);
    s->req = req;
    s->wait_ms = wait_ms;
    *client = sv[1];
    pthread_create(t, NULL, serve_main, s);
}

int main(void)
{
    struct serve s = {0};
    struct proto_conn cl;
    struct strbuf out = {0};
    char state[80], path[300];
    pthread_t t;
    int cfd;

    setvbuf(stdout, NULL, _IONBF, 0);
    signal(SIGPIPE, SIG_IGN); /* the slow link's ends close while it writes */
    /* Both real engines hold input from the stop only; Xen then waits for
     * the guest to read its ring, QEMU has nothing to wait for. */
    ok(xen_mig_engine.console_hold_at_stop && xen_mig_engine.console_drain,
       "xen engine: console held at the stop, the ring drained");
    ok(qemu_mig_engine.console_hold_at_stop && !qemu_mig_engine.console_drain,
       "qemu engine: console held at the stop, nothing to drain");
    snprintf(dir, sizeof dir, "/tmp/vmmig-cr.XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    snprintf(sockpath, sizeof sockpath, "%s/con.sock", dir);
    snprintf(logpath, sizeof logpath, "%s/con.log", dir);
    snprintf(mount, sizeof mount, "%s/mnt", dir);
    snprintf(state_dir, sizeof state_dir, "%s/state", dir);
    snprintf(path, sizeof path, "%s/web1", mount);
    mkdir_p(path, 0755);
    snprintf(path, sizeof path, "%s/web1/migrate", mount);
    atomic_write(path, "idle\n", 5, 0644);
    log_add("before the client\n");
    int lfd = listen_at(sockpath);

    /* Attached: output from now on, from the log only. */
    start(&s, &cfd, &t, "name=web1\n", 2000);
    authed(&cl, cfd);
    int q = accept_wait(lfd);
    ok(q >= 0, "the relay connects to the console socket");
    collect(&cl, 300, &out, state, sizeof state);
    is_str(state, "running", "the client is told: running");
    log_add("tick 1\n");
    if (write(q, "SOCKET COPY\n", 12) != 12) /* what QEMU also writes to the socket */
        perror("write");
    collect(&cl, 300, &out, state, sizeof state);
    is_str(out.s ? out.s : "", "tick 1\n", "output from the log's end, none from the socket");

    /* Input to the socket. */
    send_input(&cl, 0, 'k');
    char in[8] = "";
    struct pollfd qp = {.fd = q, .events = POLLIN};
    ok(poll(&qp, 1, 2000) == 1 && read(q, in, sizeof in) == 1 && in[0] == 'k',
       "input reaches the console socket");

    /* QEMU exits after its last words; vmmigfs says where the domain went. */
    log_add("tick 2\n");
    sb_reset(&out);
    atomic_write(path, "done hostB\n", 11, 0644);
    dom_here = false;
    close(q);
    collect(&cl, 3000, &out, state, sizeof state);
    is_str(out.s ? out.s : "", "tick 2\n", "the rest of the log when QEMU has gone");
    is_str(state, "moved hostB", "then: moved to hostB");
    pthread_join(t, NULL);
    is_int(s.rc, 0, "console_serve returns 0");
    close(cfd);

    /* A client that follows the domain here gets the log from its start. */
    dom_here = true;
    atomic_write(path, "idle\n", 5, 0644);
    start(&s, &cfd, &t, "name=web1\nfrom=start\n", 2000);
    authed(&cl, cfd);
    q = accept_wait(lfd);
    sb_reset(&out);
    collect(&cl, 300, &out, state, sizeof state);
    is_str(out.s ? out.s : "", "before the client\ntick 1\ntick 2\n", "from=start: the whole log");
    dom_here = false;
    atomic_write(path, "done hostB\n", 11, 0644);
    close(q);
    collect(&cl, 3000, &out, state, sizeof state);
    pthread_join(t, NULL);
    close(cfd);

    /* During a migration: an engine without console_hold_at_stop holds
     * input for the whole job; one with it (Xen, QEMU) lets it flow until
     * `vmmig send` takes the console hold, before the stop. */
    dom_here = true;
    char got[200];
    set_line(path, "running hostB stage=2 iterative-pre-copy round=2\n");
    start(&s, &cfd, &t, "name=web1\n", 2000);
    authed(&cl, cfd);
    q = accept_wait(lfd);
    ok(await_msg(&cl, MSG_CONSOLE_STATE, 1000, got, sizeof got) && strstr(got, "state=paused") &&
           strstr(got, "why=migrating") && strstr(got, "host=hostB"),
       "no drain, a job running: the client is told paused (why=migrating, host=hostB)");
    send_input(&cl, 0, 'x');
    ok(await_msg(&cl, MSG_CONSOLE_RETURN, 1000, got, sizeof got) && !strcmp(got, "input=0\n"),
       "  the client is told to send it again from byte 0 (RETURN input=0)");
    ok(!socket_gets(q, 'x', 200), "  and never reaches the console");
    close(cfd);
    dom_here = false;
    close(q);
    pthread_join(t, NULL);

    dom_here = true;
    s.eng = &fake_draining;
    start(&s, &cfd, &t, "name=web1\n", 2000);
    authed(&cl, cfd);
    q = accept_wait(lfd);
    ok(await_msg(&cl, MSG_CONSOLE_STATE, 1000, got, sizeof got) && strstr(got, "state=running"),
       "drain, pre-copy: the client is told running");
    send_input(&cl, 0, 'a');
    ok(socket_gets(q, 'a', 1000), "  input reaches the console during pre-copy");
    int hold = console_hold_open(state_dir, UUID);
    ok(hold >= 0 && !console_hold_take(hold, 5000), "send takes the console hold (before the stop)");
    ok(await_msg(&cl, MSG_CONSOLE_STATE, 1000, got, sizeof got) && strstr(got, "state=paused") &&
           strstr(got, "why=stopping") && strstr(got, "input=1") && strstr(got, "host=hostB"),
       "  the client is told paused (why=stopping), where the domain goes (host=hostB, from "
       "the migrate file), and the input written (input=1)");
    send_input(&cl, 1, 'b');
    ok(await_msg(&cl, MSG_CONSOLE_RETURN, 1000, got, sizeof got) && !strcmp(got, "input=1\n"),
       "  input sent meanwhile: send again from byte 1");
    send_input(&cl, 2, 'c');
    ok(!await_msg(&cl, MSG_CONSOLE_RETURN, 300, got, sizeof got),
       "  input after it, already on its way, is dropped without another RETURN");
    ok(!socket_gets(q, 'b', 200), "  and never reaches the console");
    close(hold); /* send ended (failed: the domain runs here again) */
    ok(await_state(&cl, "running", 1000), "the hold released: running again");
    send_bytes(&cl, 1, "bc", 2);
    ok(socket_gets_str(q, "bc", 1000),
       "  the client's input from byte 1 is delivered, in order");
    send_bytes(&cl, 2, "cd", 2);
    ok(socket_gets(q, 'd', 1000), "  input sent again that overlaps what was written: only the new byte");
    send_input(&cl, 9, 'z');
    ok(!socket_gets(q, 'z', 300) && !await_msg(&cl, MSG_CONSOLE_RETURN, 10, got, sizeof got),
       "  input that does not follow what was written is dropped");
    /* A socket console: a write is acknowledged only once the console has
     * read it, nothing more is written until then, and a send's hold
     * waits for it (QEMU reads its socket in its main loop, which may
     * first run after the migration's last pass: a write it had not read
     * when the hold was taken would miss the guest's memory). */
    send_input(&cl, 4, 'p');
    struct pollfd waiting = {.fd = q, .events = POLLIN};
    ok(poll(&waiting, 1, 1000) == 1, "written to the console");
    hold = console_hold_open(state_dir, UUID);
    is_int(console_hold_take(hold, 50), -ETIMEDOUT,
           "  a send's hold waits while the console has not read it");
    ok(socket_gets(q, 'p', 1000), "  the console reads it");
    is_int(console_hold_take(hold, 1000), 0, "  then the hold is taken");
    ok(await_msg_with(&cl, MSG_CONSOLE_STATE, "input=5", 1000), "  and the write acknowledged (input=5)");
    /* (in the same message or a later one) */
    ok(strstr(last_msg, "why=stopping") || await_msg_with(&cl, MSG_CONSOLE_STATE, "why=stopping", 1000),
       "  the client is told paused (why=stopping)");
    close(hold);
    ok(await_state(&cl, "running", 1000), "  the hold released: running again");
    /* A console that does not read (QEMU with a stopped guest that posted
     * no virtio buffers): the hold is not kept waiting for it, and the
     * write stays unacknowledged. */
    send_input(&cl, 5, 'r');
    ok(poll(&waiting, 1, 1000) == 1, "written, and the console does not read it");
    hold = console_hold_open(state_dir, UUID);
    is_int(console_hold_take(hold, 1000), 0, "  a send's hold is taken all the same, within 1 s");
    ok(await_msg_with(&cl, MSG_CONSOLE_STATE, "why=stopping", 1000),
       "  the client is told paused (why=stopping)");
    ok(!strstr(last_msg, "input=6"), "  and the write is not acknowledged (%s)", last_msg);
    ok(socket_gets(q, 'r', 1000), "  the console reads it later (the guest resumed)");
    close(hold);
    ok(await_msg_with(&cl, MSG_CONSOLE_STATE, "input=6", 1000), "  then it is acknowledged (input=6)");
    set_line(path, "recovering hostB: stage 3: the agent was killed\n");
    ok(await_state(&cl, "paused", 1000), "drain, recovering: paused");
    /* QEMU exits (the domain moved) without having read the last write:
     * it is handed back, and the client sends it to the destination. */
    set_line(path, "idle\n");
    ok(await_state(&cl, "running", 1000), "running again");
    send_input(&cl, 6, 'q');
    usleep(100 * 1000);
    dom_here = false;
    set_line(path, "done hostB\n");
    close(q);
    ok(await_msg_with(&cl, MSG_CONSOLE_RETURN, "input=6", 2000),
       "QEMU gone without reading the last write: handed back (RETURN input=6)");
    ok(await_msg_with(&cl, MSG_CONSOLE_STATE, "state=moved", 2000) && strstr(last_msg, "input=6") &&
           strstr(last_msg, "host=hostB"),
       "  and the move says input=6: the client sends it on to hostB");
    close(cfd);
    pthread_join(t, NULL);
    s.eng = NULL;
    atomic_write(path, "idle\n", 5, 0644);

    /* A slow link (a round trip of 600 ms, much longer than the 15 ms
     * between two keys) and a hold while the client types: the client is
     * told once to send again, input already on its way is dropped, and
     * typing goes on reaching the console (with the first design, each
     * key returned made the agent return the next one too, for as long as
     * the client kept typing). */
    {
        int a[2], b[2];
        socketpair(AF_UNIX, SOCK_STREAM, 0, a); /* client end, link end */
        socketpair(AF_UNIX, SOCK_STREAM, 0, b); /* link end, relay end */
        static struct slow_pipe up, down;
        up.from = a[1], up.to = b[0], down.from = b[0], down.to = a[1];
        pthread_t tu, td;
        pthread_create(&tu, NULL, slow_pipe_main, &up);
        pthread_create(&td, NULL, slow_pipe_main, &down);
        dom_here = true;
        set_line(path, "running hostB stage=2 iterative-pre-copy round=2\n");
        s.eng = &fake_draining;
        authed(&s.c, b[1]);
        s.req = "name=web1\n";
        s.wait_ms = 2000;
        pthread_create(&t, NULL, serve_main, &s);
        authed(&cl, a[0]);
        q = accept_wait(lfd);
        int keys = 200, ngot = 0, when[200];
        uint8_t keyseen[200];
        int returns = typing_client(&cl, q, keys, keyseen, &ngot, when);
        bool in_order = ngot == keys;
        for (int i = 0; i < ngot; i++)
            in_order = in_order && keyseen[i] == (uint8_t)i;
        ok(returns >= 1, "slow link, hold while typing: input was handed back (%d RETURNs)", returns);
        ok(in_order, "  every key reached the console once, in order (%d of %d)", ngot, keys);
        ok(ngot >= 100 && when[99] < keys,
           "  and typing went on reaching it: key 99 arrived when %d of %d keys were typed",
           ngot >= 100 ? when[99] : -1, keys);
        close(a[0]);
        dom_here = false;
        close(q);
        pthread_join(t, NULL);
        close(b[1]);
        pthread_join(tu, NULL);
        pthread_join(td, NULL);
        close(a[1]);
        close(b[0]);
        s.eng = NULL;
        atomic_write(path, "idle\n", 5, 0644);
    }

    /* A slow engine (each check of the domain takes 60 ms, four keys'
     * time): input keeps up all the same (in the first design the relay
     * took one message per check: 2 of 3 keys fell behind, for as long as
     * the user typed). */
    {
        dom_here = true;
        set_line(path, "running hostB stage=2 iterative-pre-copy round=2\n");
        s.eng = &fake_slow;
        start(&s, &cfd, &t, "name=web1\n", 2000);
        authed(&cl, cfd);
        q = accept_wait(lfd);
        int keys = 200, ngot = 0, when[200];
        uint8_t keyseen[200];
        typing_client(&cl, q, keys, keyseen, &ngot, when);
        bool in_order = ngot == keys;
        for (int i = 0; i < ngot; i++)
            in_order = in_order && keyseen[i] == (uint8_t)i;
        ok(in_order, "slow engine: every key reached the console once, in order (%d of %d)", ngot,
           keys);
        ok(ngot >= 150 && when[149] < keys,
           "  input keeps up: key 149 arrived when %d of %d keys were typed",
           ngot >= 150 ? when[149] : -1, keys);
        close(cfd);
        dom_here = false;
        close(q);
        pthread_join(t, NULL);
        s.eng = NULL;
        atomic_write(path, "idle\n", 5, 0644);
    }

    /* Failure paths: no log; a socket not named .sock. */
    dom_here = true;
    atomic_write(path, "idle\n", 5, 0644);
    unlink(logpath);
    start(&s, &cfd, &t, "name=web1\n", 400);
    authed(&cl, cfd);
    collect(&cl, 2000, &out, state, sizeof state);
    is_str(state, "gone", "a console without its log: gone after the wait");
    pthread_join(t, NULL);
    is_int(s.rc, -ENOENT, "  console_serve: -ENOENT");
    close(cfd);
    struct pollfd lp = {.fd = lfd, .events = POLLIN};
    ok(poll(&lp, 1, 0) == 0, "  and it never connected to the socket");

    log_add("x\n");
    char odd[300];
    snprintf(odd, sizeof odd, "%s/con.sk", dir);
    int lfd2 = listen_at(odd);
    console_file = "con.sk";
    start(&s, &cfd, &t, "name=web1\n", 400);
    authed(&cl, cfd);
    collect(&cl, 2000, &out, state, sizeof state);
    is_str(state, "gone", "a socket not named NAME.sock: not served");
    pthread_join(t, NULL);
    close(cfd);

    close(lfd);
    close(lfd2);
    sb_free(&out);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd))
        return 1;
    return done_testing();
}
