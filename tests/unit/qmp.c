/* The JSON reader (lib/json.c) and the QMP client (lib/qmp.c) against a
 * fake monitor: the test writes QEMU's side of a socketpair ahead of time
 * and reads back what the client sent. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "qmp.h"
#include "tap.h"

#define GREETING "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, " \
                 "\"package\": \"Debian\"}, \"capabilities\": [\"oob\"]}}\r\n"

static void put(int fd, const char *s)
{
    if (write(fd, s, strlen(s)) != (ssize_t)strlen(s))
        abort();
}

/* What the client sent so far (non-blocking drain). */
static char *drain(int fd)
{
    static char buf[8192];
    ssize_t r = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
    buf[r > 0 ? r : 0] = 0;
    return buf;
}

static struct qmp *open_pair(int *srv)
{
    int sv[2];
    char err[200];
    struct qmp *q = NULL;

    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    put(sv[1], GREETING "{\"return\": {}, \"id\": \"vmmig-1\"}\r\n");
    int rc = qmp_open_fd(&q, sv[0], 1000, err, sizeof err);
    is_int(rc, 0, "handshake: greeting and qmp_capabilities (%s)", rc ? err : "ok");
    ok(strstr(drain(sv[1]), "\"execute\": \"qmp_capabilities\""), "qmp_capabilities sent");
    *srv = sv[1];
    return q;
}

static void test_json(void)
{
    struct json *v;
    char err[120];

    const char *text = "{\"a\": {\"b\": [1, -2, 3.5e1, true, false, null]}, \"s\": \"x\\\"\\u00e9\\n\"}";
    is_int(json_parse(text, strlen(text), &v, err, sizeof err), 0, "parse nested value");
    const struct json *arr = json_get(v, "a.b");
    ok(arr && arr->type == JSON_ARRAY && arr->n == 6, "array of 6");
    if (!arr)
        return;
    is_int(arr->items[1]->integer, -2, "negative integer");
    ok(arr->items[2]->number == 35.0, "exponent");
    ok(arr->items[3]->boolean && !arr->items[4]->boolean && arr->items[5]->type == JSON_NULL,
       "literals");
    is_str(json_str(v, "s", NULL), "x\"\xc3\xa9\n", "escapes and \\u to UTF-8");
    is_int(json_int(v, "a.missing", 7), 7, "absent member gives the default");
    json_free(v);

    const char *bad[] = {"{\"a\": 1", "{\"a\" 1}", "[1, 2", "\"abc", "{\"a\": tru}", "{} x",
                         "", "{\"a\": \"\\q\"}", "-", "\"\\u12\""};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        int rc = json_parse(bad[i], strlen(bad[i]), &v, err, sizeof err);
        ok(rc == -EINVAL && v == NULL && strstr(err, "bad JSON at offset"), "refused: '%s' (%s)",
           bad[i], err);
    }
    char deep[200];
    memset(deep, '[', sizeof deep);
    is_int(json_parse(deep, sizeof deep, &v, err, sizeof err), -EINVAL, "deep nesting refused");
    ok(strstr(err, "nested too deeply"), "  says so: %s", err);

    struct strbuf sb = {0};
    json_quote(&sb, "a\"b\\c\n");
    is_str(sb.s, "\"a\\\"b\\\\c\\u000a\"", "json_quote escapes");
    sb_free(&sb);
}

static void test_execute(void)
{
    int srv;
    struct qmp *q = open_pair(&srv);
    struct json *ret, *ev;
    char err[200];

    is_str(qmp_version(q), "7.2.22", "version from the greeting");
    /* An event before the reply, and a stray reply to an older id. */
    put(srv, "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\r\n"
             "{\"return\": {}, \"id\": \"old-1\"}\r\n"
             "{\"return\": {\"status\": \"running\", \"running\": true}, \"id\": \"vmmig-2\"}\r\n");
    int rc = qmp_execute(q, "query-status", NULL, -1, &ret, 1000, err, sizeof err);
    is_int(rc, 0, "query-status answered");
    is_str(json_str(ret, "status", NULL), "running", "  its return value");
    json_free(ret);
    rc = qmp_next_event(q, &ev, 0, err, sizeof err);
    is_int(rc, 0, "the event that came first is queued");
    is_str(json_str(ev, "event", NULL), "STOP", "  STOP");
    json_free(ev);
    is_int(qmp_next_event(q, &ev, 30, err, sizeof err), -ETIMEDOUT, "no more events: timeout");

    put(srv, "{\"id\": \"vmmig-3\", \"error\": {\"class\": \"GenericError\", \"desc\": "
             "\"Migration is disabled when VirtFS export path '/' is mounted\"}}\r\n");
    rc = qmp_execute(q, "migrate", "{\"uri\": \"fd:x\"}", -1, NULL, 1000, err, sizeof err);
    is_int(rc, -EREMOTEIO, "error reply");
    is_str(err, "migrate: Migration is disabled when VirtFS export path '/' is mounted",
           "  named with the command");
    ok(strstr(drain(srv), "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"fd:x\"}, "
                          "\"id\": \"vmmig-3\"}"),
       "  the command as sent");
    put(srv, "{\"id\": \"vmmig-4\", \"error\": {\"class\": \"CommandNotFound\", \"desc\": "
             "\"The command frob has not been found\"}}\r\n");
    is_int(qmp_execute(q, "frob", NULL, -1, NULL, 1000, err, sizeof err), -ENOSYS,
           "CommandNotFound is -ENOSYS");
    put(srv, "{\"id\": \"vmmig-5\"}\r\n");
    is_int(qmp_execute(q, "cont", NULL, -1, NULL, 1000, err, sizeof err), -EPROTO,
           "reply without return or error");
    is_int(qmp_execute(q, "cont", NULL, -1, NULL, 50, err, sizeof err), -ETIMEDOUT,
           "silent monitor: timeout");
    is_str(err, "QEMU's monitor did not answer in time", "  says so");
    drain(srv);

    /* getfd: the descriptor arrives with the command. */
    int pfd[2];
    pipe(pfd);
    put(srv, "{\"return\": {}, \"id\": \"vmmig-7\"}\r\n");
    rc = qmp_getfd(q, pfd[1], "mig", err, sizeof err);
    is_int(rc, 0, "getfd answered (%s)", rc ? err : "ok");
    char buf[512];
    union {
        char b[CMSG_SPACE(sizeof(int))];
        struct cmsghdr a;
    } ctl;
    struct iovec iov = {buf, sizeof buf - 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                        .msg_controllen = sizeof ctl.b};
    ssize_t got = recvmsg(srv, &mh, MSG_DONTWAIT);
    buf[got > 0 ? got : 0] = 0;
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    int passed = -1;
    if (c && c->cmsg_type == SCM_RIGHTS)
        memcpy(&passed, CMSG_DATA(c), sizeof passed);
    struct stat a, b;
    ok(passed >= 0 && !fstat(passed, &a) && !fstat(pfd[1], &b) && a.st_ino == b.st_ino,
       "  the same pipe arrived with SCM_RIGHTS");
    ok(strstr(buf, "\"execute\": \"getfd\", \"arguments\": {\"fdname\": \"mig\"}"),
       "  with the getfd command");
    if (passed >= 0)
        close(passed);
    close(pfd[0]), close(pfd[1]);

    /* Not JSON, then a message cut off by the monitor going away. */
    put(srv, "{\"return\": {]}, \"id\": \"vmmig-8\"}\r\n");
    rc = qmp_execute(q, "cont", NULL, -1, NULL, 1000, err, sizeof err);
    is_int(rc, -EPROTO, "bad JSON from the monitor");
    ok(strstr(err, "not JSON"), "  says so: %s", err);
    put(srv, "{\"event\": \"RESUME\", \"timest");
    close(srv);
    struct json *cut;
    rc = qmp_next_event(q, &cut, 1000, err, sizeof err);
    is_int(rc, -EPIPE, "truncated message");
    ok(strstr(err, "in the middle of a message"), "  says so: %s", err);
    qmp_close(q);
}

static void test_greeting(void)
{
    int sv[2];
    char err[200];
    struct qmp *q;

    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    put(sv[1], "{\"hello\": 1}\r\n");
    is_int(qmp_open_fd(&q, sv[0], 1000, err, sizeof err), -EPROTO, "no greeting: not QMP");
    close(sv[1]);
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    put(sv[1], "[1, 2]\r\n");
    is_int(qmp_open_fd(&q, sv[0], 1000, err, sizeof err), -EPROTO, "a non-object message");
    close(sv[1]);
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    close(sv[1]);
    is_int(qmp_open_fd(&q, sv[0], 1000, err, sizeof err), -EPIPE, "closed at once");
    ok(strstr(err, "did QEMU exit?"), "  says so: %s", err);
    is_int(qmp_connect(&q, "/nonexistent/qmp.sock", 100, err, sizeof err), -ENOENT,
           "no socket: -ENOENT");
}

int main(void)
{
    test_json();
    test_execute();
    test_greeting();
    return done_testing();
}
