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
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
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
    proto_init(c, fd, fd, 5000);
    c->authed = true; /* a zero key on both ends: no handshake in a unit test */
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

static void set_line(const char *path, const char *line)
{
    atomic_write(path, line, strlen(line), 0644);
}

static void send_input(struct proto_conn *c, uint32_t epoch, char key)
{
    uint8_t msg[5] = {(uint8_t)(epoch >> 24), (uint8_t)(epoch >> 16), (uint8_t)(epoch >> 8),
                      (uint8_t)epoch, (uint8_t)key};
    proto_send(c, MSG_CONSOLE_DATA, msg, 5);
}

static bool socket_gets(int q, char want, int ms)
{
    char in[8] = "";
    struct pollfd p = {.fd = q, .events = POLLIN};
    return poll(&p, 1, ms) == 1 && read(q, in, sizeof in) == 1 && in[0] == want;
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
    uint8_t msg[5] = {0, 0, 0, 1, 'k'};
    proto_send(&cl, MSG_CONSOLE_DATA, msg, 5);
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

    /* During a migration: an engine without console_drain holds input for
     * the whole job; one with it (Xen) lets it flow until `vmmig send`
     * takes the console hold, before the stop. */
    dom_here = true;
    char got[200];
    set_line(path, "running hostB stage=2 iterative-pre-copy round=2\n");
    start(&s, &cfd, &t, "name=web1\n", 2000);
    authed(&cl, cfd);
    q = accept_wait(lfd);
    ok(await_msg(&cl, MSG_CONSOLE_STATE, 1000, got, sizeof got) && strstr(got, "state=paused"),
       "no drain, a job running: the client is told paused");
    send_input(&cl, 0, 'x');
    ok(await_msg(&cl, MSG_CONSOLE_RETURN, 1000, got, sizeof got) && !strcmp(got, "x"),
       "  input is handed back");
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
    send_input(&cl, 1, 'a');
    ok(socket_gets(q, 'a', 1000), "  input reaches the console during pre-copy");
    int hold = console_hold_open(state_dir, UUID);
    ok(hold >= 0 && !console_hold_take(hold), "send takes the console hold (before the stop)");
    ok(await_msg(&cl, MSG_CONSOLE_STATE, 1000, got, sizeof got) && strstr(got, "state=paused"),
       "  the client is told paused");
    send_input(&cl, 1, 'b');
    ok(await_msg(&cl, MSG_CONSOLE_RETURN, 1000, got, sizeof got) && !strcmp(got, "b"),
       "  input sent meanwhile is handed back");
    ok(!socket_gets(q, 'b', 200), "  and never reaches the console");
    close(hold); /* send ended (failed: the domain runs here again) */
    ok(await_state(&cl, "running", 1000), "the hold released: running again");
    send_input(&cl, 2, 'b');
    ok(socket_gets(q, 'b', 1000), "  the handed-back input is delivered");
    set_line(path, "recovering hostB: stage 3: the agent was killed\n");
    ok(await_state(&cl, "paused", 1000), "drain, recovering: paused");
    close(cfd);
    dom_here = false;
    close(q);
    pthread_join(t, NULL);
    s.eng = NULL;
    atomic_write(path, "idle\n", 5, 0644);

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
