/* The QEMU backend's guest hold channel against a fake QEMU (a unix socket
 * server at the domain's hold.sock): requests and answers, a query, the
 * host's own word (guest_hold_set), a hold written by `vmmig receive` seen
 * through inotify, garbage, an overlong line and a flood refused and noted
 * with the connection kept, QEMU closing the channel and the reconnect,
 * and a domain whose QEMU does not listen yet. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "qemudom.h"
#include "tap.h"

static char dir[256], inst[300], sockpath[400], holdfile[400];
static struct backend *be;
static const struct backend_ops *ops = &qemu_backend_ops;

static int listen_at(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    unlink(path);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 4))
        return -1;
    return fd;
}

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* A connection from the backend, or -1 (never blocks the test for good). */
static int accept_wait(int lfd)
{
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    return poll(&p, 1, 2000) == 1 ? accept(lfd, NULL, NULL) : -1;
}

/* Run the backend's events for ms, as vmmigfs's loop does; what it reported. */
static unsigned pump(int ms)
{
    unsigned all = 0, what;
    long long end = now_ms() + ms;
    struct pollfd p = {.fd = ops->event_fd(be), .events = POLLIN};
    for (long long left; (left = end - now_ms()) > 0;)
        if (poll(&p, 1, (int)left) > 0) {
            ops->read_events(be, &what);
            all |= what;
        }
    return all;
}

/* The next note, "EVENT DETAIL", or "" */
static const char *note(void)
{
    static char buf[400];
    char ev[40], detail[300];
    uint32_t domid;
    if (ops->guest_channel_note(be, &domid, ev, sizeof ev, detail, sizeof detail))
        return "";
    snprintf(buf, sizeof buf, "%u %s %s", domid, ev, detail);
    return buf;
}

static void drop_notes(void)
{
    while (*note())
        ;
}

/* One line from the host's answers (the fake QEMU's side). */
static const char *answer(int fd)
{
    static char buf[2048];
    size_t n = 0;
    while (n < sizeof buf - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 2000) <= 0 || read(fd, buf + n, 1) != 1)
            break;
        if (buf[n] == '\n')
            break;
        n++;
    }
    buf[n] = 0;
    return buf;
}

static void say(int fd, const char *s)
{
    if (write(fd, s, strlen(s)) != (ssize_t)strlen(s))
        perror("write");
}

static const char *held(const struct vm_info *vm)
{
    static char buf[LOCK_REQUEST_MAX + 1];
    if (ops->guest_hold_get(be, vm, buf, sizeof buf))
        return "(error)";
    return buf;
}

int main(void)
{
    char err[200], path[600];
    struct vm_info vm = {.domid = 1, .name = "web1"};

    setvbuf(stdout, NULL, _IONBF, 0);

    snprintf(dir, sizeof dir, "/tmp/vmmig-bq.XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    setenv("VMMIG_QEMU_DIR", dir, 1);
    snprintf(inst, sizeof inst, "%s/.dom/1", dir);
    mkdir_p(inst, 0755);
    snprintf(path, sizeof path, "%s/domain.cfg", inst);
    atomic_write(path, "name = \"web1\"\nkernel = \"/k\"\n", 27, 0644);
    snprintf(path, sizeof path, "%s/web1", dir);
    if (symlink(".dom/1", path))
        return 1;
    snprintf(sockpath, sizeof sockpath, "%s/hold.sock", inst);
    snprintf(holdfile, sizeof holdfile, "%s/guest-hold", inst);

    is_int(ops->open(&be, err, sizeof err), 0, "backend opens");

    /* No QEMU listening yet: prepared all the same, retried. */
    is_int(ops->guest_hold_prepare(be, &vm), 0, "prepare without a listener");
    ok(strstr(note(), "guest-channel-waiting") != NULL, "  noted as waiting");
    is_str(held(&vm), "0", "  guest-hold starts at 0");
    int lfd = listen_at(sockpath);
    ok(lfd >= 0, "fake QEMU listens");
    pump(1500);
    struct pollfd lp = {.fd = lfd, .events = POLLIN};
    ok(poll(&lp, 1, 0) == 1, "the backend connected within the retry time");
    int q = accept_wait(lfd);
    ok(strstr(note(), "guest-channel-connected") != NULL, "  and noted it");

    /* A request and its answer. */
    say(q, "1 reason=db checkpoint ttl=300\n");
    ok(pump(1000) & BE_EV_HOLDS, "a request reports a hold change");
    is_str(answer(q), "ok 1 reason=db checkpoint ttl=300", "the guest gets ok with its request");
    is_str(held(&vm), "1 reason=db checkpoint ttl=300", "guest_hold_get has it");
    say(q, "#tok-1\n?\n");
    pump(300);
    is_str(answer(q), "#tok-1", "a #token comes back");
    is_str(answer(q), "ok 1 reason=db checkpoint ttl=300", "a query answers the hold");

    /* Garbage: refused, noted, nothing changes, the connection lives. */
    say(q, "lock me please \"now\"\n");
    ok(!(pump(300) & BE_EV_HOLDS), "garbage changes no hold");
    ok(!strncmp(answer(q), "error ", 6), "garbage answered with error");
    const char *n = note();
    ok(strstr(n, "guest-request-invalid") && strstr(n, "counted=refused") &&
           strstr(n, "request=\"lock me please ?now?\""),
       "garbage noted, quotes defused: %s", n);
    is_str(held(&vm), "1 reason=db checkpoint ttl=300", "  the hold is unchanged");

    /* Overlong: one refusal at its newline; the next line is read. */
    char *big = malloc(5000);
    memset(big, 'x', 5000);
    memcpy(big, "1 reason=", 9);
    if (write(q, big, 5000) != 5000)
        perror("write");
    free(big);
    say(q, "\n0\n");
    ok(pump(500) & BE_EV_HOLDS, "after an overlong line a good one counts");
    ok(strstr(answer(q), "longer than 1024") != NULL, "overlong answered with error");
    is_str(answer(q), "ok 0", "then the unlock is answered");
    ok(strstr(note(), "request longer than 1024 bytes") != NULL, "overlong noted");
    is_str(held(&vm), "0", "  released");

    /* A flood: a burst served, the rest refused, one note, the host not stuck. */
    sleep(2); /* a full bucket */
    char flood[4 * 200];
    for (int i = 0; i < 200; i++)
        memcpy(flood + 2 * i, "?\n", 2);
    if (write(q, flood, 400) != 400)
        perror("write");
    pump(500);
    int oks = 0, errs = 0;
    for (int i = 0; i < 200; i++) {
        const char *a = answer(q);
        oks += !strncmp(a, "ok ", 3);
        errs += !strcmp(a, "error too many requests");
    }
    ok(oks >= 20 && oks <= 25 && oks + errs == 200, "flood: %d served, %d refused", oks, errs);
    n = note();
    ok(strstr(n, "guest-channel-flood") != NULL, "flood noted: %s", n);
    ok(!*note(), "  once (not per line)");

    /* The host's own word, as after an expiry. */
    is_int(ops->guest_hold_set(be, &vm, "0"), 0, "guest_hold_set");
    sleep(2); /* the flood's bucket refills */
    pump(100);
    say(q, "?\n");
    pump(300);
    is_str(answer(q), "ok 0", "the guest reads the host's word");

    /* A hold carried over by vmmig receive (it writes guest-hold itself). */
    atomic_write(holdfile, "1 reason=carried", 16, 0644);
    ok(pump(500) & BE_EV_HOLDS, "a carried hold written to guest-hold is seen (inotify)");
    say(q, "?\n");
    pump(300);
    is_str(answer(q), "ok 1 reason=carried", "  and the guest sees it through the channel");

    /* QEMU drops the channel and still listens: reconnected, quietly. */
    close(q);
    pump(1500);
    ok(poll(&lp, 1, 0) == 1, "QEMU dropped the channel: the backend connects again");
    q = accept_wait(lfd);
    pump(100);
    ok(!*note(), "  without an event");
    say(q, "1 reason=after reconnect\n");
    pump(500);
    is_str(answer(q), "ok 1 reason=after reconnect", "requests work after the reconnect");

    /* QEMU gone from the socket, the domain still there: noted, retried. */
    close(q);
    close(lfd);
    unlink(sockpath);
    pump(1500);
    n = note();
    ok(strstr(n, "guest-channel-closed") && strstr(n, "closed by QEMU"), "a lost channel is noted: %s", n);
    lfd = listen_at(sockpath);
    lp.fd = lfd;
    pump(1500);
    ok(poll(&lp, 1, 0) == 1, "and connected again once QEMU listens");
    q = accept_wait(lfd);
    pump(100);
    ok(strstr(note(), "guest-channel-connected") != NULL, "  noted");
    say(q, "?\n");
    pump(500);
    is_str(answer(q), "ok 1 reason=after reconnect", "  the hold was kept meanwhile");

    /* A domain gone from the run directory is not retried. */
    close(q);
    snprintf(path, sizeof path, "%s/web1", dir);
    unlink(path);
    rename(inst, path); /* not .dom/1 any more */
    pump(2500);
    ok(!*note(), "a domain gone from the run directory: no events");
    ok(poll(&lp, 1, 0) == 0, "  and no more connections");
    drop_notes();

    ops->guest_hold_forget(be, vm.domid);
    close(lfd);
    pump(1500);
    ok(!*note(), "forgotten: nothing more");
    ops->close(be);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd))
        return 1;
    return done_testing();
}
