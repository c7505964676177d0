/* The direct stream's connection: see directstream.h. */
#define _GNU_SOURCE
#include "directstream.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_acked, which glibc's lacks */
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sha256.h" /* ct_memeq */

/* A connection that has not sent its token within this is dropped: the
 * real one sends it at once. */
#define DSTREAM_TOKEN_WAIT_MS 2000

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int tcp_family(int fd, struct sockaddr_storage *sa, bool peer)
{
    socklen_t sl = sizeof *sa;
    int type = 0;
    socklen_t tl = sizeof type;
    if ((peer ? getpeername(fd, (struct sockaddr *)sa, &sl) : getsockname(fd, (struct sockaddr *)sa, &sl)) ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl))
        return errno == ENOTSOCK ? -EPROTONOSUPPORT : -errno;
    if ((sa->ss_family != AF_INET && sa->ss_family != AF_INET6) || type != SOCK_STREAM)
        return -EPROTONOSUPPORT;
    return 0;
}

/* The control connection's own (peer: its peer's) TCP address; else
 * -EPROTONOSUPPORT or -errno, with err. */
static int control_addr(int ctlfd, struct sockaddr_storage *sa, bool peer, char *err, size_t errlen)
{
    int rc = tcp_family(ctlfd, sa, peer);
    if (rc)
        snprintf(err, errlen, "%s", rc == -EPROTONOSUPPORT
                 ? "the control connection is not TCP (a --via transport): no direct stream"
                 : strerror(-rc));
    return rc;
}

static socklen_t sa_len(const struct sockaddr_storage *sa)
{
    return sa->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
}

static void set_port(struct sockaddr_storage *sa, unsigned port)
{
    if (sa->ss_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
}

static unsigned get_port(const struct sockaddr_storage *sa)
{
    return sa->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)sa)->sin_port)
                                    : ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
}

int dstream_listen(int ctlfd, int *lfd, unsigned *port, uint8_t token[DSTREAM_TOKEN_LEN],
                   char hex[DSTREAM_TOKEN_HEX], char *err, size_t errlen)
{
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    int rc, fd = -1;

    if ((rc = control_addr(ctlfd, &sa, false, err, errlen)))
        return rc;
    set_port(&sa, 0);
    fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sa_len(&sa)) ||
        listen(fd, 4) || getsockname(fd, (struct sockaddr *)&sa, &sl)) {
        rc = -errno;
        snprintf(err, errlen, "cannot listen for the direct stream: %s", strerror(errno));
        goto out;
    }
    if (getrandom(token, DSTREAM_TOKEN_LEN, 0) != DSTREAM_TOKEN_LEN) {
        rc = -EIO;
        snprintf(err, errlen, "no random bytes for the stream token");
        goto out;
    }
    for (int i = 0; i < DSTREAM_TOKEN_LEN; i++)
        snprintf(hex + 2 * i, 3, "%02x", token[i]);
    *port = get_port(&sa);
    *lfd = fd;
    fd = -1;
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Read the token from a fresh connection: 0 it matches, -1 not. */
static int check_token(int fd, const uint8_t token[DSTREAM_TOKEN_LEN])
{
    uint8_t got[DSTREAM_TOKEN_LEN];
    size_t n = 0;
    long long end = now_ms() + DSTREAM_TOKEN_WAIT_MS;

    while (n < sizeof got) {
        long long left = end - now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return -1;
        ssize_t r = recv(fd, got + n, sizeof got - n, MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0)
            return -1;
        n += (size_t)r;
    }
    return ct_memeq(got, token, sizeof got) ? 0 : -1;
}

int dstream_accept(int lfd, int ctlfd, const uint8_t token[DSTREAM_TOKEN_LEN], int timeout_ms,
                   int *fd, unsigned *rejected, char *err, size_t errlen)
{
    long long end = now_ms() + timeout_ms;

    for (;;) {
        long long left = end - now_ms();
        if (left <= 0) {
            snprintf(err, errlen, "no direct stream connection within %d ms", timeout_ms);
            return -ETIMEDOUT;
        }
        struct pollfd p[2] = {{.fd = lfd, .events = POLLIN}, {.fd = ctlfd, .events = POLLIN}};
        int r = poll(p, 2, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return -errno;
        }
        if (p[0].revents & POLLIN) {
            int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            if (c < 0)
                continue;
            if (check_token(c, token)) {
                close(c);
                (*rejected)++;
                continue;
            }
            int one = 1;
            setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            *fd = c;
            return 0;
        }
        if (p[1].revents)
            return 1;
    }
}

int dstream_connect(int ctlfd, unsigned port, const char *hex, int timeout_ms, int *fd, char *err,
                    size_t errlen)
{
    struct sockaddr_storage sa;
    uint8_t token[DSTREAM_TOKEN_LEN];
    int rc, s = -1;

    if (strlen(hex) != 2 * DSTREAM_TOKEN_LEN || port < 1 || port > 65535) {
        snprintf(err, errlen, "bad direct stream port or token from the destination");
        return -EPROTO;
    }
    /* lower-case hex, as dstream_listen() writes it */
    if (strspn(hex, "0123456789abcdef") != 2 * DSTREAM_TOKEN_LEN) {
        snprintf(err, errlen, "bad direct stream token from the destination");
        return -EPROTO;
    }
    for (int i = 0; i < DSTREAM_TOKEN_LEN; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        token[i] = (uint8_t)v;
    }
    if ((rc = control_addr(ctlfd, &sa, true, err, errlen)))
        return rc;
    set_port(&sa, port);
    s = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0) {
        rc = -errno;
        snprintf(err, errlen, "socket: %s", strerror(errno));
        goto out;
    }
    if (connect(s, (struct sockaddr *)&sa, sa_len(&sa)) && errno != EINPROGRESS) {
        rc = -errno;
        snprintf(err, errlen, "connecting the direct stream (port %u): %s", port, strerror(errno));
        goto out;
    }
    struct pollfd p = {.fd = s, .events = POLLOUT};
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    int pr;
    while ((pr = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
        ;
    if (pr == 0) {
        rc = -ETIMEDOUT;
        snprintf(err, errlen, "connecting the direct stream (port %u): no answer in %d ms", port,
                 timeout_ms);
        goto out;
    }
    if (pr < 0 || getsockopt(s, SOL_SOCKET, SO_ERROR, &soerr, &sl) || soerr) {
        rc = soerr ? -soerr : -errno;
        snprintf(err, errlen, "connecting the direct stream (port %u): %s", port, strerror(-rc));
        goto out;
    }
    /* Blocking again: the hypervisor writes to it as to any socket. */
    fcntl(s, F_SETFL, fcntl(s, F_GETFL) & ~O_NONBLOCK);
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (send(s, token, sizeof token, MSG_NOSIGNAL) != (ssize_t)sizeof token) {
        rc = -EIO;
        snprintf(err, errlen, "sending the direct stream token: %s", strerror(errno));
        goto out;
    }
    *fd = s;
    s = -1;
    rc = 0;
out:
    if (s >= 0)
        close(s);
    return rc;
}

unsigned long long dstream_bytes_acked(int fd)
{
    struct tcp_info ti;
    socklen_t sl = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &sl) ||
        sl < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof ti.tcpi_bytes_acked)
        return 0;
    /* the SYN counts as one */
    return ti.tcpi_bytes_acked ? ti.tcpi_bytes_acked - 1 : 0;
}

#define DSTREAM_READY 'R'

int dstream_signal_ready(int fd)
{
    struct sockaddr_storage sa;
    char c = DSTREAM_READY;
    if (tcp_family(fd, &sa, false))
        return 0;
    return send(fd, &c, 1, MSG_NOSIGNAL) == 1 ? 0 : -errno;
}

int dstream_wait_ready(int fd, int timeout_ms, char *err, size_t errlen)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char c = 0;
    int r;

    while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
        ;
    if (r == 0) {
        snprintf(err, errlen, "the destination's QEMU did not take the direct stream within %d ms",
                 timeout_ms);
        return -ETIMEDOUT;
    }
    ssize_t n = r > 0 ? recv(fd, &c, 1, MSG_DONTWAIT) : -1;
    if (n == 1 && c == DSTREAM_READY)
        return 0;
    snprintf(err, errlen, "the destination closed the direct stream before its QEMU took it%s%s",
             n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
    return n == 1 ? -EPROTO : -ECONNRESET;
}
