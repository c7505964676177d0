/* lib/directstream.c over loopback: the listener beside a control
 * connection, the token check, a connection without the token, the control
 * connection waking the wait, the timeout, a control connection that is not
 * TCP, a port nobody listens on, a malformed token. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "directstream.h"
#include "tap.h"

/* A connected TCP pair on 127.0.0.1: *a the client's end, *b the server's. */
static void tcp_pair(int *a, int *b)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    bind(l, (struct sockaddr *)&sa, sizeof sa);
    listen(l, 1);
    getsockname(l, (struct sockaddr *)&sa, &sl);
    *a = socket(AF_INET, SOCK_STREAM, 0);
    connect(*a, (struct sockaddr *)&sa, sizeof sa);
    *b = accept(l, NULL, NULL);
    close(l);
}

struct client {
    int ctl;
    unsigned port;
    char hex[DSTREAM_TOKEN_HEX];
    int rc, fd;
    char err[200];
};

static void *client_main(void *arg)
{
    struct client *c = arg;
    c->rc = dstream_connect(c->ctl, c->port, c->hex, 2000, &c->fd, c->err, sizeof c->err);
    if (!c->rc)
        (void)!write(c->fd, "stream", 6);
    return NULL;
}

/* A raw connection to port that sends bytes (n of them), then stays. */
static int raw_connect(unsigned port, const void *bytes, size_t n)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&sa, sizeof sa))
        return -1;
    if (n)
        (void)!write(s, bytes, n);
    return s;
}

int main(void)
{
    int src_ctl, dst_ctl, lfd = -1, fd = -1;
    unsigned port = 0, rejected = 0;
    uint8_t token[DSTREAM_TOKEN_LEN];
    char hex[DSTREAM_TOKEN_HEX], err[300];

    tcp_pair(&src_ctl, &dst_ctl);

    /* the listener */
    is_int(dstream_listen(dst_ctl, &lfd, &port, token, hex, err, sizeof err), 0, "listen: %s", err);
    ok(port > 0 && port < 65536, "an ephemeral port (%u)", port);
    is_int((int)strlen(hex), 2 * DSTREAM_TOKEN_LEN, "the token in hex");
    struct sockaddr_in la;
    socklen_t sl = sizeof la;
    getsockname(lfd, (struct sockaddr *)&la, &sl);
    is_int(la.sin_addr.s_addr, htonl(INADDR_LOOPBACK), "bound to the control connection's address");
    uint8_t token2[DSTREAM_TOKEN_LEN];
    char hex2[DSTREAM_TOKEN_HEX];
    int lfd2;
    unsigned port2;
    dstream_listen(dst_ctl, &lfd2, &port2, token2, hex2, err, sizeof err);
    ok(strcmp(hex, hex2) && port != port2, "each listener: its own port and token");
    close(lfd2);

    /* a wrong token first, a short one, then the right one: only that one is taken */
    uint8_t wrong[DSTREAM_TOKEN_LEN];
    memcpy(wrong, token, sizeof wrong);
    wrong[DSTREAM_TOKEN_LEN - 1] ^= 1;
    int bad1 = raw_connect(port, wrong, sizeof wrong);
    int bad2 = raw_connect(port, "short", 5);
    shutdown(bad2, SHUT_WR);
    struct client c = {.ctl = src_ctl, .port = port, .fd = -1};
    memcpy(c.hex, hex, sizeof hex);
    pthread_t t;
    pthread_create(&t, NULL, client_main, &c);
    int rc = dstream_accept(lfd, dst_ctl, token, 5000, &fd, &rejected, err, sizeof err);
    pthread_join(t, NULL);
    is_int(rc, 0, "accept: the connection with the token (%s)", rc ? err : "ok");
    is_int(c.rc, 0, "connect: %s", c.rc ? c.err : "ok");
    is_int((int)rejected, 2, "the two connections without the token were closed");
    char buf[16] = "";
    ssize_t n = read(fd, buf, sizeof buf - 1);
    is_str(n == 6 ? buf : "", "stream", "what follows the token is the stream");
    char probe;
    struct pollfd pb = {.fd = bad1, .events = POLLIN};
    ok(poll(&pb, 1, 1000) == 1 && read(bad1, &probe, 1) == 0, "a wrong token: its connection closed");
    close(bad1), close(bad2), close(fd), close(c.fd);

    /* a control message first: the wait says so, then goes on */
    (void)!write(src_ctl, "x", 1);
    rejected = 0;
    rc = dstream_accept(lfd, dst_ctl, token, 2000, &fd, &rejected, err, sizeof err);
    is_int(rc, 1, "a control message before the stream: 1");
    (void)!read(dst_ctl, buf, 1);

    /* nobody comes */
    rc = dstream_accept(lfd, dst_ctl, token, 200, &fd, &rejected, err, sizeof err);
    is_int(rc, -ETIMEDOUT, "nobody connects: -ETIMEDOUT");
    ok(strstr(err, "no direct stream connection within 200 ms") != NULL, "message: %s", err);

    /* a client that connects and sends nothing is dropped after its wait */
    int mute = raw_connect(port, NULL, 0);
    rejected = 0;
    rc = dstream_accept(lfd, dst_ctl, token, 2600, &fd, &rejected, err, sizeof err);
    ok(rc == -ETIMEDOUT && rejected == 1, "a silent connection is closed, not taken (rc %d, %u)", rc,
       rejected);
    close(mute);
    close(lfd);

    /* not TCP */
    int sp[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
    rc = dstream_listen(sp[0], &lfd, &port, token, hex, err, sizeof err);
    is_int(rc, -EPROTONOSUPPORT, "listen beside a unix socket: -EPROTONOSUPPORT");
    ok(strstr(err, "not TCP") != NULL, "message: %s", err);
    rc = dstream_connect(sp[0], 1234, hex, 1000, &fd, err, sizeof err);
    is_int(rc, -EPROTONOSUPPORT, "connect beside a unix socket: -EPROTONOSUPPORT");
    int pfd[2];
    (void)!pipe(pfd);
    rc = dstream_listen(pfd[0], &lfd, &port, token, hex, err, sizeof err);
    is_int(rc, -EPROTONOSUPPORT, "listen beside a pipe (an exec transport): -EPROTONOSUPPORT");
    close(sp[0]), close(sp[1]), close(pfd[0]), close(pfd[1]);

    /* a port nobody listens on */
    dstream_listen(dst_ctl, &lfd, &port, token, hex, err, sizeof err);
    close(lfd);
    rc = dstream_connect(src_ctl, port, hex, 1000, &fd, err, sizeof err);
    is_int(rc, -ECONNREFUSED, "nobody listens: -ECONNREFUSED");
    ok(strstr(err, "connecting the direct stream") != NULL, "message: %s", err);

    /* malformed port and token from the destination */
    is_int(dstream_connect(src_ctl, 0, hex, 1000, &fd, err, sizeof err), -EPROTO, "port 0: -EPROTO");
    is_int(dstream_connect(src_ctl, 1234, "abc", 1000, &fd, err, sizeof err), -EPROTO,
           "a short token: -EPROTO");
    char badhex[DSTREAM_TOKEN_HEX];
    memcpy(badhex, hex, sizeof badhex);
    badhex[10] = 'g';
    is_int(dstream_connect(src_ctl, 1234, badhex, 1000, &fd, err, sizeof err), -EPROTO,
           "a token that is not hex: -EPROTO");
    ok(strstr(err, "bad direct stream token") != NULL, "message: %s", err);

    /* the destination's "ready" byte */
    int ra, rb;
    tcp_pair(&ra, &rb);
    is_int(dstream_wait_ready(ra, 100, err, sizeof err), -ETIMEDOUT, "no ready byte yet: -ETIMEDOUT");
    ok(strstr(err, "did not take the direct stream within 100 ms") != NULL, "message: %s", err);
    is_int(dstream_signal_ready(rb), 0, "ready said on a TCP socket");
    is_int(dstream_wait_ready(ra, 1000, err, sizeof err), 0, "the source sees it");
    close(rb);
    is_int(dstream_wait_ready(ra, 1000, err, sizeof err), -ECONNRESET,
           "the destination closed it first: -ECONNRESET");
    ok(strstr(err, "closed the direct stream before its QEMU took it") != NULL, "message: %s", err);
    close(ra);
    tcp_pair(&ra, &rb);
    (void)!write(rb, "x", 1);
    is_int(dstream_wait_ready(ra, 1000, err, sizeof err), -EPROTO, "a wrong byte: -EPROTO");
    close(ra), close(rb);
    int up[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, up);
    is_int(dstream_signal_ready(up[0]), 0, "ready on the relay's socketpair: a no-op");
    struct pollfd pu = {.fd = up[1], .events = POLLIN};
    is_int(poll(&pu, 1, 50), 0, "  nothing written there");
    close(up[0]), close(up[1]);

    /* the acknowledged byte count */
    int a, b;
    tcp_pair(&a, &b);
    char big[65536];
    memset(big, 7, sizeof big);
    (void)!write(a, big, sizeof big);
    size_t got = 0;
    while (got < sizeof big) {
        ssize_t r = read(b, big, sizeof big);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    usleep(100 * 1000);
    unsigned long long acked = dstream_bytes_acked(a);
    ok(acked == sizeof big, "bytes acknowledged: %llu of %zu", acked, sizeof big);
    is_int((int)dstream_bytes_acked(sp[0]), 0, "a closed descriptor: 0");
    close(a), close(b);

    close(src_ctl), close(dst_ctl);
    return done_testing();
}
