#define _GNU_SOURCE
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

#define MSG_MAX 8192

struct spawn_msg {
    char type;      /* R run, K kill, U unmount; r ran, x exited, u unmounted */
    int32_t a, b;   /* R: argv length; r: error, pid; K: pid; x: pid, status; u: error */
};

static ssize_t send_msg(int sock, const struct spawn_msg *m, const void *extra, size_t elen,
                        int fd)
{
    char buf[MSG_MAX];
    struct iovec iov;
    struct msghdr mh = {0};
    union {
        char b[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctrl;

    if (sizeof *m + elen > sizeof buf)
        return -E2BIG;
    memcpy(buf, m, sizeof *m);
    if (elen)
        memcpy(buf + sizeof *m, extra, elen);
    iov.iov_base = buf;
    iov.iov_len = sizeof *m + elen;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (fd >= 0) {
        memset(&ctrl, 0, sizeof ctrl);
        mh.msg_control = ctrl.b;
        mh.msg_controllen = sizeof ctrl.b;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    }
    ssize_t r;
    do
        r = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

/* Returns the payload length, 0 on EOF, or -errno.  *fd gets a passed fd or -1. */
static ssize_t recv_msg(int sock, struct spawn_msg *m, char *extra, size_t elen, int *fd)
{
    char buf[MSG_MAX];
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr mh = {0};
    union {
        char b[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctrl;
    ssize_t r;

    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctrl.b;
    mh.msg_controllen = sizeof ctrl.b;
    if (fd)
        *fd = -1;
    do
        r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    if (r <= 0)
        return r < 0 ? -errno : 0;
    if ((size_t)r < sizeof *m)
        return -EPROTO;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            int got;
            memcpy(&got, CMSG_DATA(cm), sizeof got);
            if (fd)
                *fd = got;
            else
                close(got);
        }
    memcpy(m, buf, sizeof *m);
    size_t n = (size_t)r - sizeof *m;
    if (n > elen)
        n = elen;
    if (extra)
        memcpy(extra, buf + sizeof *m, n);
    return (ssize_t)n + 1; /* +1: so an empty payload is not EOF */
}

static void close_from(int lowfd)
{
#ifdef SYS_close_range
    if (!syscall(SYS_close_range, (unsigned)lowfd, ~0U, 0))
        return;
#endif
    for (int fd = lowfd; fd < 1024; fd++)
        close(fd);
}

/* io_fd >= 0 (a connection passed along): it becomes the command's stdin
 * and stdout, as for a command run by sshd; stderr still goes to the pipe. */
static void helper_run(int sock, const char *blob, size_t len, int io_fd)
{
    char *argv[64];
    int argc = 0, pfd[2];
    struct spawn_msg rep = {.type = 'r'};
    pid_t pid;

    for (size_t i = 0; i < len && argc < 63; i += strlen(blob + i) + 1)
        argv[argc++] = (char *)blob + i;
    argv[argc] = NULL;
    if (!argc || blob[len - 1] != 0) {
        rep.a = -EINVAL;
        send_msg(sock, &rep, NULL, 0, -1);
        return;
    }
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        rep.a = -errno;
        send_msg(sock, &rep, NULL, 0, -1);
        return;
    }
    pid = fork();
    if (pid < 0) {
        rep.a = -errno;
        close(pfd[0]);
        close(pfd[1]);
        send_msg(sock, &rep, NULL, 0, -1);
        return;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* The helper ignores these; an ignored signal would survive exec. */
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        setsid();
        int devnull = open("/dev/null", O_RDONLY);
        dup2(io_fd >= 0 ? io_fd : devnull, 0);
        dup2(io_fd >= 0 ? io_fd : pfd[1], 1);
        dup2(pfd[1], 2);
        close_from(3);
        execvp(argv[0], argv);
        fprintf(stderr, "vmmig: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    rep.a = 0;
    rep.b = pid;
    send_msg(sock, &rep, NULL, 0, pfd[0]);
    close(pfd[0]);
}

static _Noreturn void helper_main(int sock, const char *mountpoint)
{
    sigset_t set;
    int sfd;

    /* Ctrl-C on a foreground vmmigfs must not take the helper down before it
     * has unmounted; it ends when the daemon says so or goes away. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    prctl(PR_SET_NAME, "vmmigfs-helper");
    /* Let go of the caller's terminal or pipe: `x=$(vmmigfs DIR)` must return
     * once the daemon has detached, and the helper outlives that. */
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) {
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        if (devnull > 2)
            close(devnull);
    }
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    sfd = signalfd(-1, &set, SFD_CLOEXEC);

    for (;;) {
        struct pollfd p[2] = {{.fd = sock, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents) {
            struct signalfd_siginfo si;
            (void)!read(sfd, &si, sizeof si);
            int status;
            pid_t pid;
            while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                struct spawn_msg x = {.type = 'x', .a = pid, .b = status};
                send_msg(sock, &x, NULL, 0, -1);
            }
        }
        if (p[0].revents) {
            struct spawn_msg m;
            char extra[MSG_MAX];
            int io_fd = -1;
            ssize_t n = recv_msg(sock, &m, extra, sizeof extra, &io_fd);
            if (n <= 0)
                break;
            if (m.type == 'R')
                helper_run(sock, extra, (size_t)n - 1, io_fd);
            else if (m.type == 'K' && m.a > 0)
                kill(-(pid_t)m.a, SIGTERM), kill((pid_t)m.a, SIGTERM);
            if (io_fd >= 0)
                close(io_fd);
            if (m.type == 'U')
                break;
        }
    }
    /* The daemon is done (or dead): take the mount away so nobody hangs on it. */
    struct spawn_msg u = {.type = 'u', .a = 0};
    if (mountpoint && umount2(mountpoint, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
        u.a = -errno;
    send_msg(sock, &u, NULL, 0, -1);
    _exit(0);
}

int spawner_start(struct spawner *s, const char *mountpoint)
{
    int sv[2];

    memset(s, 0, sizeof *s);
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    s->pid = fork();
    if (s->pid < 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        return -e;
    }
    if (s->pid == 0) {
        close(sv[0]);
        helper_main(sv[1], mountpoint);
    }
    close(sv[1]);
    s->sock = sv[0];
    return 0;
}

static int wait_reply(struct spawner *s, char type, struct spawn_msg *m, int *fd)
{
    for (;;) {
        ssize_t n = recv_msg(s->sock, m, NULL, 0, fd);
        if (n == 0)
            return -EPIPE;
        if (n < 0)
            return (int)n;
        if (m->type == type)
            return 0;
        if (m->type == 'x' && s->npending < (int)ARRAY_SIZE(s->pending)) {
            s->pending[s->npending].pid = m->a;
            s->pending[s->npending].status = m->b;
            s->npending++;
        }
        if (fd && *fd >= 0) {
            close(*fd);
            *fd = -1;
        }
    }
}

int spawner_run(void *arg, char *const argv[], pid_t *pid, int *out_fd)
{
    return spawner_run_io(arg, argv, -1, pid, out_fd);
}

int spawner_run_io(void *arg, char *const argv[], int io_fd, pid_t *pid, int *out_fd)
{
    struct spawner *s = arg;
    struct strbuf blob = {0};
    struct spawn_msg m = {.type = 'R'};
    int fd = -1, rc;

    for (int i = 0; argv[i]; i++)
        sb_add(&blob, argv[i], strlen(argv[i]) + 1);
    m.a = (int32_t)blob.len;
    rc = (int)send_msg(s->sock, &m, blob.s, blob.len, io_fd);
    sb_free(&blob);
    if (rc < 0)
        return rc;
    rc = wait_reply(s, 'r', &m, &fd);
    if (rc)
        return rc;
    if (m.a) {
        if (fd >= 0)
            close(fd);
        return m.a;
    }
    if (fd < 0)
        return -EPROTO;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    *pid = m.b;
    *out_fd = fd;
    return 0;
}

int spawner_stop(void *arg, pid_t pid)
{
    struct spawner *s = arg;
    struct spawn_msg m = {.type = 'K', .a = pid};
    ssize_t r = send_msg(s->sock, &m, NULL, 0, -1);
    return r < 0 ? (int)r : 0;
}

int spawner_next_exit(struct spawner *s, pid_t *pid, int *status)
{
    struct spawn_msg m;

    if (s->npending) {
        *pid = s->pending[0].pid;
        *status = s->pending[0].status;
        memmove(s->pending, s->pending + 1, sizeof s->pending[0] * (size_t)--s->npending);
        return 1;
    }
    struct pollfd p = {.fd = s->sock, .events = POLLIN};
    if (poll(&p, 1, 0) <= 0)
        return 0;
    ssize_t n = recv_msg(s->sock, &m, NULL, 0, NULL);
    if (n <= 0)
        return n == 0 ? -EPIPE : (int)n;
    if (m.type != 'x')
        return 0;
    *pid = m.a;
    *status = m.b;
    return 1;
}

int spawner_unmount_and_quit(struct spawner *s)
{
    struct spawn_msg m = {.type = 'U'};
    int rc;

    if (s->sock < 0)
        return 0;
    rc = (int)send_msg(s->sock, &m, NULL, 0, -1);
    if (rc >= 0)
        rc = wait_reply(s, 'u', &m, NULL);
    if (rc >= 0)
        rc = m.a;
    close(s->sock);
    s->sock = -1;
    waitpid(s->pid, NULL, 0);
    return rc;
}
