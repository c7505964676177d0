/* xen2-tcp: the TCP plumbing of the two-host emulated-Xen test, built
 * statically on the host and run in both dom0s (busybox's nc cannot bind to
 * one address and copies in ~1 KiB pieces, which costs a lot under TCG).
 *
 *   xen2-tcp listen ADDR PORT PROG [ARG...]
 *       Bind to ADDR:PORT only (numeric IPv4), accept forever; for each
 *       connection fork and exec PROG with the socket as stdin and stdout
 *       (stderr is inherited: the dom0 console / a log) and XEN2_PEER set to
 *       the client's address. Children are reaped automatically.
 *
 *   xen2-tcp connect [-w SECS] ADDR PORT [FIRSTLINE]
 *       Connect (retrying for SECS seconds, default 10, while refused), send
 *       FIRSTLINE plus a newline if given, then copy stdin to the socket and
 *       the socket to stdout. At EOF on stdin the sending half is shut down
 *       (the server sees EOF) and the copy goes on until the server closes.
 *       Exit status 0 when the server closed the connection, 1 on errors.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUFSZ (128 * 1024)

static _Noreturn void die(const char *what)
{
    fprintf(stderr, "xen2-tcp: %s: %s\n", what, strerror(errno));
    exit(1);
}

static _Noreturn void usage(void)
{
    fprintf(stderr, "usage: xen2-tcp listen ADDR PORT PROG [ARG...]\n"
                    "       xen2-tcp connect [-w SECS] ADDR PORT [FIRSTLINE]\n");
    exit(2);
}

static struct sockaddr_in addr_of(const char *ip, const char *port)
{
    struct sockaddr_in sa;
    char *end;
    long p = strtol(port, &end, 10);

    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    if (*end || p <= 0 || p > 65535 || inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
        fprintf(stderr, "xen2-tcp: bad address %s:%s (numeric IPv4 only)\n", ip, port);
        exit(2);
    }
    sa.sin_port = htons((unsigned short)p);
    return sa;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static _Noreturn void do_listen(int argc, char **argv)
{
    if (argc < 4)
        usage();
    struct sockaddr_in sa = addr_of(argv[1], argv[2]);
    int one = 1, s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (s < 0)
        die("socket");
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("bind");
    if (listen(s, 16) < 0)
        die("listen");
    signal(SIGCHLD, SIG_IGN); /* no zombies */
    for (;;) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        int c = accept(s, (struct sockaddr *)&peer, &len);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            die("accept");
        }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pid_t pid = fork();
        if (pid == 0) {
            char ip[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
            setenv("XEN2_PEER", ip, 1);
            signal(SIGCHLD, SIG_DFL);
            if (dup2(c, 0) < 0 || dup2(c, 1) < 0)
                die("dup2");
            close(c);
            execvp(argv[3], argv + 3);
            die(argv[3]);
        }
        if (pid < 0)
            fprintf(stderr, "xen2-tcp: fork: %s\n", strerror(errno));
        close(c);
    }
}

static int do_connect(int argc, char **argv)
{
    int wait_s = 10, i = 1;
    if (argc > 2 && !strcmp(argv[1], "-w")) {
        wait_s = atoi(argv[2]);
        i = 3;
    }
    if (argc - i < 2 || argc - i > 3)
        usage();
    struct sockaddr_in sa = addr_of(argv[i], argv[i + 1]);
    const char *first = argc - i == 3 ? argv[i + 2] : NULL;
    time_t deadline = time(NULL) + wait_s;
    int one = 1, s;

    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
            die("socket");
        if (connect(s, (struct sockaddr *)&sa, sizeof sa) == 0)
            break;
        if ((errno != ECONNREFUSED && errno != ENETUNREACH && errno != EHOSTUNREACH &&
             errno != ETIMEDOUT) || time(NULL) >= deadline)
            die("connect");
        close(s);
        usleep(200000);
    }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (first) {
        if (write_all(s, first, strlen(first)) < 0 || write_all(s, "\n", 1) < 0)
            die("send");
    }

    static char buf[BUFSZ];
    struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = s, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (p[1].revents) {
            ssize_t n = read(s, buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                die("read from the network");
            if (n == 0)
                return 0; /* the server closed: done */
            if (write_all(1, buf, (size_t)n) < 0)
                die("write to stdout");
        }
        if (p[0].fd >= 0 && p[0].revents) {
            ssize_t n = read(0, buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                shutdown(s, SHUT_WR); /* the server sees EOF */
                p[0].fd = -1;
            } else if (write_all(s, buf, (size_t)n) < 0) {
                die("write to the network");
            }
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    if (!strcmp(argv[1], "listen"))
        do_listen(argc - 1, argv + 1);
    if (!strcmp(argv[1], "connect"))
        return do_connect(argc - 1, argv + 1);
    usage();
}
