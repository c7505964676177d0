/* vmmig console's input hold: when the migrate file's line makes input
 * wait (lib/consolerelay.c), where the domain went, and the lock between
 * `vmmig send` and the relay (lib/consolehold.c), taken by another process
 * as send takes it and released when that process dies. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <unistd.h>

#include "consolehold.h"
#include "consolerelay.h"
#include "tap.h"

#define UUID "0b5e5b8e-4a1f-4c2e-9f3a-2d7c1e6b8a90"

static void bail_out(const char *what)
{
    printf("Bail out! %s: %s\n", what, strerror(errno));
    exit(1);
}

int main(void)
{
    char host[64], dir[] = "/tmp/consolehold.XXXXXX";

    /* An engine that drains the console (Xen): send holds input from the
     * stop on, so a job's line holds nothing by itself. */
    ok(!console_migrate_holds_input("none", true), "no migration: input flows");
    ok(!console_migrate_holds_input("running hostB stage=2 iterative-pre-copy round=3 sent=9", true),
       "draining engine, pre-copy: input flows");
    ok(!console_migrate_holds_input("running hostB stage=3 stop-and-copy sent=9", true),
       "draining engine, stop-and-copy: the line holds nothing (send's lock does)");
    ok(console_migrate_holds_input("recovering hostB: stage 3: the agent was killed", true),
       "recovering: input waits");
    ok(!console_migrate_holds_input("failed hostB: stage=3 x", true), "failed: input flows");
    ok(!console_migrate_holds_input("", true), "empty: input flows");
    /* An engine that cannot drain it (QEMU): input waits for the whole job. */
    ok(console_migrate_holds_input("running hostB stage=2 iterative-pre-copy round=3 sent=9", false),
       "no drain: input waits during pre-copy too");
    ok(console_migrate_holds_input("running hostB", false), "no drain: running holds");
    ok(console_migrate_holds_input("recovering hostB: x", false), "no drain: recovering holds");
    ok(!console_migrate_holds_input("done hostB", false), "no drain: done flows");
    ok(!console_migrate_holds_input("none", false), "no drain: no migration flows");

    ok(console_moved_to("done hostB", host, sizeof host) && !strcmp(host, "hostB"),
       "done hostB: moved to hostB");
    ok(console_moved_to("migrated hostC at 2026-11-22 10:00:00", host, sizeof host) &&
           !strcmp(host, "hostC"),
       "migrated hostC at ...: moved to hostC");
    ok(!console_moved_to("running hostB stage=3", host, sizeof host), "running: not moved");

    /* The lock. */
    if (!mkdtemp(dir))
        bail_out("mkdtemp");
    is_int(console_hold_open(dir, "not-a-uuid"), -EINVAL, "open: a bad uuid is refused");
    int relay_fd = console_hold_open(dir, UUID);
    ok(relay_fd >= 0, "open: the relay's fd (the directory made)");
    char path[300];
    struct stat st;
    snprintf(path, sizeof path, "%s/console/%s.lock", dir, UUID);
    ok(!stat(path, &st) && (st.st_mode & 0777) == 0600, "the lock file is %s, mode 0600", path);
    ok(!console_hold_held(relay_fd), "nobody holds it: input flows");
    ok(console_hold_write_begin(relay_fd), "the relay may write");
    console_hold_write_end(relay_fd);

    /* send, in another process: it takes the lock and keeps it. */
    int ready[2], go[2];
    if (pipe(ready) || pipe(go))
        bail_out("pipe");
    pid_t pid = fork();
    if (pid == 0) {
        close(go[1]);
        int fd = console_hold_open(dir, UUID);
        char b = fd >= 0 && !console_hold_take(fd, 5000) ? 'y' : 'n';
        if (write(ready[1], &b, 1) != 1)
            _exit(2);
        if (read(go[0], &b, 1) < 0)
            _exit(2);
        _exit(0); /* the lock goes with the process */
    }
    char b = 0;
    ok(read(ready[0], &b, 1) == 1 && b == 'y', "send takes the lock");
    ok(console_hold_held(relay_fd), "held: the relay sees it");
    ok(!console_hold_write_begin(relay_fd), "held: the relay may not write");

    /* send waits for a write in progress. */
    close(go[1]);
    waitpid(pid, NULL, 0);
    ok(!console_hold_held(relay_fd), "the holder exited: input flows again by itself");
    ok(console_hold_write_begin(relay_fd), "the relay writes (shared lock taken)");
    if (pipe(ready))
        bail_out("pipe");
    pid = fork();
    if (pid == 0) {
        int fd = console_hold_open(dir, UUID);
        char c = fd >= 0 && !console_hold_take(fd, 5000) ? 'y' : 'n';
        _exit(write(ready[1], &c, 1) == 1 ? 0 : 2);
    }
    close(ready[1]);
    usleep(100 * 1000);
    struct timeval tv = {0, 0};
    fd_set rs;
    FD_ZERO(&rs);
    FD_SET(ready[0], &rs);
    is_int(select(ready[0] + 1, &rs, NULL, NULL, &tv), 0, "a send waits while the relay writes");
    console_hold_write_end(relay_fd);
    ok(read(ready[0], &b, 1) == 1 && b == 'y', "and takes the lock once the write is done");
    waitpid(pid, NULL, 0);

    /* A write that does not end (QEMU never reads it): send gives up. */
    ok(console_hold_write_begin(relay_fd), "the relay writes again");
    pid = fork();
    if (pid == 0) {
        int fd = console_hold_open(dir, UUID);
        _exit(fd >= 0 && console_hold_take(fd, 100) == -ETIMEDOUT ? 0 : 1);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
       "a send that waits longer than its timeout gets -ETIMEDOUT");
    int other = console_hold_open(dir, UUID);
    is_int(console_hold_take(other, 0), -ETIMEDOUT, "  its write still holds the lock: timeout 0 too");
    console_hold_write_end(relay_fd);
    is_int(console_hold_take(other, 0), 0, "  the write over: taken at once");
    close(other);
    close(relay_fd);
    unlink(path);
    snprintf(path, sizeof path, "%s/console", dir);
    rmdir(path);
    rmdir(dir);
    return done_testing();
}
