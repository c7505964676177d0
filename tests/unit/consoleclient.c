/* The console client (tools/console.c) against two scripted agents on
 * 127.0.0.1 and 127.0.0.2: how it numbers its input on each connection
 * when the standby (the agent of the host the domain moves to) takes
 * input, hands some of it back (RETURN: its console was full) and runs
 * again, and when a standby that took input goes away and the source
 * takes input again.  Each agent counts input bytes from 0 on its own
 * connection and skips bytes it already wrote, so a wrong first byte
 * number loses (or repeats) keys: once in CI, 13 keys in a row. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../tools/console.c"
#include "tap.h"

/* tools/vmmig.c's, which this test does not link. */
void help_exit_ok(const struct applet *a)
{
    (void)a;
    exit(0);
}

void usage_exit(const struct applet *a, const char *fmt, ...)
{
    (void)a, (void)fmt;
    exit(2);
}

static char dir[128], keypath[200], errpath[200];
static uint8_t key[32];
static unsigned port;

/* An agent: its listening socket on one address, the connection it
 * accepted, and the input it was sent (numbered as the client did). */
struct agent {
    const char *addr;
    int lfd, fd;
    struct proto_conn c;
    char req[200];
};

static int listen_on(const char *addr, unsigned p)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    inet_pton(AF_INET, addr, &sa.sin_addr);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 4)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* The same free port on both addresses. */
static bool agents_listen(struct agent *a, struct agent *b)
{
    for (int i = 0; i < 50; i++) {
        a->lfd = listen_on(a->addr, 0);
        struct sockaddr_in sa;
        socklen_t sl = sizeof sa;
        if (a->lfd < 0 || getsockname(a->lfd, (struct sockaddr *)&sa, &sl))
            return false;
        port = ntohs(sa.sin_port);
        b->lfd = listen_on(b->addr, port);
        if (b->lfd >= 0)
            return true;
        close(a->lfd);
    }
    return false;
}

/* Take the client's connection: handshake, its CONSOLE request. */
static bool agent_accept(struct agent *a)
{
    char err[200];
    int type;
    uint8_t *pl;
    uint32_t len;
    struct pollfd p = {.fd = a->lfd, .events = POLLIN};

    a->fd = -1;
    if (poll(&p, 1, 5000) != 1 || (a->fd = accept(a->lfd, NULL, NULL)) < 0)
        return false;
    proto_init(&a->c, a->fd, a->fd, 5000);
    if (proto_handshake_server(&a->c, key, sizeof key, err, sizeof err) ||
        proto_recv(&a->c, &type, &pl, &len, err, sizeof err))
        return false;
    snprintf(a->req, sizeof a->req, "%.*s", (int)len, (const char *)pl);
    free(pl);
    return type == MSG_CONSOLE;
}

static void agent_close(struct agent *a)
{
    if (a->fd >= 0) {
        proto_wipe(&a->c);
        close(a->fd);
    }
    a->fd = -1;
}

static void agent_state(struct agent *a, const char *state, const char *host, unsigned input)
{
    struct strbuf sb = {0};
    kv_add(&sb, "state", "%s", state);
    if (host)
        kv_add(&sb, "host", "%s", host);
    kv_add(&sb, "input", "%u", input);
    proto_send(&a->c, MSG_CONSOLE_STATE, sb.s, (uint32_t)sb.len);
    sb_free(&sb);
}

static void agent_return(struct agent *a, unsigned input)
{
    struct strbuf sb = {0};
    kv_add(&sb, "input", "%u", input);
    proto_send(&a->c, MSG_CONSOLE_RETURN, sb.s, (uint32_t)sb.len);
    sb_free(&sb);
}

/* Input messages until want bytes came (within 3 s): the first message's
 * byte number in *first, the bytes (each message appended at its own
 * number, as an agent would place it) in got.  -1: none came. */
static int agent_input(struct agent *a, size_t want, uint64_t *first, char *got, size_t size)
{
    char err[200];
    size_t n = 0;
    bool any = false;
    while (n < want) {
        struct pollfd p = {.fd = a->fd, .events = POLLIN};
        int type;
        uint8_t *pl;
        uint32_t len;
        if (poll(&p, 1, 3000) != 1 || proto_recv(&a->c, &type, &pl, &len, err, sizeof err))
            break;
        if (type == MSG_CONSOLE_DATA && len >= 8) {
            uint64_t f = 0;
            for (int i = 0; i < 8; i++)
                f = f << 8 | pl[i];
            if (!any)
                *first = f;
            any = true;
            size_t off = (size_t)(f - *first);
            if (f >= *first && off + (len - 8) < size) {
                memcpy(got + off, pl + 8, len - 8);
                if (off + (len - 8) > n)
                    n = off + (len - 8);
            }
        }
        free(pl);
    }
    got[n] = 0;
    return any ? 0 : -1;
}

/* The client, on 127.0.0.1 (typed input on *keys, output and messages
 * in errpath). */
static pid_t client_start(int *keys)
{
    int in[2];
    if (pipe(in))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        char portarg[16];
        snprintf(portarg, sizeof portarg, "%u", port);
        int devnull = open("/dev/null", O_WRONLY);
        int errfd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(in[0], 0);
        dup2(devnull, 1);
        dup2(errfd, 2);
        close(in[1]);
        char *argv[] = {"console", "-v", "-k", keypath, "-p", portarg, "-t", "5",
                        "web1", "127.0.0.1", NULL};
        optind = 1;
        _exit(console_main(10, argv));
    }
    close(in[0]);
    *keys = in[1];
    return pid;
}

static void type_keys(int fd, const char *s)
{
    if (write(fd, s, strlen(s)) != (ssize_t)strlen(s))
        perror("type");
    usleep(100000); /* read by the client before what an agent says next */
}

static void client_stop(pid_t pid, int keys)
{
    close(keys);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

/* Both scenarios start the same way: the client attached to A, "abc"
 * written there (A says so), the domain stops for a move to B, the
 * client attaches to B as a standby, "defgh" is typed, B runs the domain
 * and is sent all of it from its byte 0. */
static bool begin(struct agent *a, struct agent *b, pid_t *pid, int *keys)
{
    uint64_t first = 99;
    char got[64];

    *pid = client_start(keys);
    if (!agent_accept(a))
        return false;
    agent_state(a, "running", NULL, 0);
    type_keys(*keys, "abc");
    if (agent_input(a, 3, &first, got, sizeof got) || first != 0 || strcmp(got, "abc"))
        return false;
    agent_state(a, "running", NULL, 3); /* written */
    agent_state(a, "paused", "127.0.0.2", 3);
    if (!agent_accept(b))
        return false;
    ok(strstr(b->req, "from=start") != NULL, "  the standby asks for the console from the arrival");
    type_keys(*keys, "defgh");
    agent_state(b, "running", NULL, 0);
    first = 99;
    if (agent_input(b, 5, &first, got, sizeof got))
        return false;
    is_int(first, 0, "  the standby is sent the held input from its own byte 0");
    is_str(got, "defgh", "  all of it");
    return true;
}

static bool log_has(const char *text)
{
    char *s = NULL;
    bool yes = !read_file(errpath, &s, NULL) && strstr(s, text);
    free(s);
    return yes;
}

int main(void)
{
    struct agent a = {.addr = "127.0.0.1", .fd = -1}, b = {.addr = "127.0.0.2", .fd = -1};
    uint64_t first;
    char got[64];
    pid_t pid;
    int keys;

    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof dir, "/tmp/vmmig-conclient.XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    snprintf(keypath, sizeof keypath, "%s/key", dir);
    snprintf(errpath, sizeof errpath, "%s/err", dir);
    for (size_t i = 0; i < sizeof key; i++)
        key[i] = (uint8_t)(i * 7 + 1);
    atomic_write(keypath, key, sizeof key, 0600);
    if (!agents_listen(&a, &b)) {
        ok(0, "listen on 127.0.0.1 and 127.0.0.2 (one port)");
        return done_testing();
    }

    /* 1: the standby writes "de", returns the rest (its console is
     * full), then runs again: "fgh" goes to it as its bytes 2..4. */
    ok(begin(&a, &b, &pid, &keys), "standby returns input: the client moves to B's agent");
    agent_return(&b, 2);
    agent_state(&b, "running", NULL, 2);
    first = 99;
    ok(!agent_input(&b, 3, &first, got, sizeof got), "running again after a RETURN: input comes");
    is_int(first, 2, "  from the byte the standby returned (not 0: it would skip 2 as written)");
    is_str(got, "fgh", "  the bytes it did not write, once");
    agent_state(&b, "running", NULL, 5);
    agent_state(&a, "moved", "127.0.0.2", 3);
    usleep(200000);
    type_keys(keys, "ij");
    first = 99;
    ok(!agent_input(&b, 2, &first, got, sizeof got), "moved: B's agent is the session");
    is_int(first, 5, "  later input numbered on from B's 5");
    is_str(got, "ij", "  the new keys");
    ok(log_has("following web1 to 127.0.0.2"), "the client says it followed web1");
    client_stop(pid, keys);
    agent_close(&a);
    agent_close(&b);

    /* 2: the standby writes "de" and says so, then its agent goes away;
     * the domain runs on A again (the move failed): "fgh" goes to A as
     * its bytes 3..5. */
    ok(begin(&a, &b, &pid, &keys), "standby lost after taking input: set up");
    agent_state(&b, "running", NULL, 2);
    usleep(100000);
    agent_close(&b);
    usleep(100000);
    agent_state(&a, "running", NULL, 3);
    first = 99;
    ok(!agent_input(&a, 3, &first, got, sizeof got), "the source runs again: input comes back to it");
    is_int(first, 3, "  from A's own count (3; from 0 it would skip 3 bytes as written)");
    is_str(got, "fgh", "  what the standby did not write");
    ok(log_has("127.0.0.2: standby ended"), "the client says the standby ended");
    client_stop(pid, keys);
    agent_close(&a);

    /* 3: the source says it runs again while the standby still takes
     * input (it runs on A again): the standby is dropped, and what it
     * did not say it wrote goes to A, numbered by A. */
    ok(begin(&a, &b, &pid, &keys), "standby dropped after taking input: set up");
    agent_state(&b, "running", NULL, 4);
    usleep(100000);
    agent_state(&a, "running", NULL, 3);
    first = 99;
    ok(!agent_input(&a, 1, &first, got, sizeof got), "the source runs again: input comes back to it");
    is_int(first, 3, "  from A's own count");
    is_str(got, "h", "  what the standby did not write");
    ok(log_has("standby dropped: web1 runs on 127.0.0.1"), "the client says it dropped the standby");
    client_stop(pid, keys);
    agent_close(&a);
    agent_close(&b);

    unlink(keypath);
    unlink(errpath);
    rmdir(dir);
    return done_testing();
}
