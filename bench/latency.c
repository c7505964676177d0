/* latency - micro-benchmarks for vmmigfs (built and driven by bench/run.sh).
 *
 *   latency [-n N] [-w WARMUP] [-b BLOCK] [-o PREFIX] read PATH...
 *       N x open(O_RDONLY) + read until EOF + close          (`cat PATH`)
 *   latency [-n N] [-w WARMUP] [-b BLOCK] [-o PREFIX] write PATH...
 *       N x open(O_WRONLY|O_TRUNC) + write "1\n"/"0\n" alternating + close
 *                                                             (`echo 1 > PATH`)
 *       and a final "0\n", so that no admin hold is left behind.
 *       With several PATHs (a file and its reference), each gets its warm-up,
 *       then the timed iterations take turns in blocks of BLOCK (default
 *       100), so that both see the same load on a shared machine.
 *   latency [-n N] [-w WARMUP] [-o PREFIX] [-t TIMEOUT_MS] hold XSNODE STATUS
 *       N x: xs_write(XSNODE, "1 reason=x" / "0" alternating), then poll()
 *       (POLLPRI|POLLIN) on STATUS, opened and read beforehand, re-reading it
 *       from offset 0 until it shows "locked: 1" / "locked: 0".  The time is
 *       from just before xs_write to the read that shows the new value.
 *   latency [-n N] [-w WARMUP] [-o PREFIX] watch XSNODE
 *       The xenstore part of that alone: N x xs_write(XSNODE) on one
 *       connection until a watch on XSNODE fires on a second one (the floor
 *       for "hold": xenstored's write + watch round trip, no vmmigfs).
 *
 * Every iteration is timed with clock_gettime(CLOCK_MONOTONIC); WARMUP
 * untimed iterations (default 200) come first.  Prints one line per PATH, in
 * the order given:
 *
 *   n=N median=US p90=US p99=US min=US max=US mean=US [polls=P timeouts=T]
 *
 * (microseconds, nearest-rank percentiles; polls/timeouts for hold: poll()
 * calls that returned ready / that timed out after -t ms, default 1000 - a
 * timeout means a lost wake-up).  -o PREFIX writes every sample of the K-th
 * PATH (from 0), one per line in microseconds, to PREFIX.K.
 * Exit status: 0 ok, 1 failure, 2 usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <xenstore.h>

static const char *prog = "latency";

static void die(const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(errno));
    exit(1);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: %s [-n N] [-w WARMUP] [-b BLOCK] [-o PREFIX] read PATH...\n"
            "       %s [-n N] [-w WARMUP] [-b BLOCK] [-o PREFIX] write PATH...\n"
            "       %s [-n N] [-w WARMUP] [-o PREFIX] [-t TIMEOUT_MS] hold XSNODE STATUS_PATH\n"
            "       %s [-n N] [-w WARMUP] [-o PREFIX] watch XSNODE\n",
            prog, prog, prog, prog);
    exit(2);
}

static inline double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static char iobuf[128 * 1024]; /* what coreutils cat uses */

/* ---- cat ------------------------------------------------------------------ */

static void cat_once(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t r;

    if (fd < 0)
        die(path);
    while ((r = read(fd, iobuf, sizeof iobuf)) > 0)
        ;
    if (r < 0)
        die(path);
    close(fd);
}

/* ---- echo V > file -------------------------------------------------------- */

static void echo_once(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    size_t len = strlen(text);

    if (fd < 0)
        die(path);
    if (write(fd, text, len) != (ssize_t)len)
        die(path);
    if (close(fd) < 0)
        die(path);
}

/* ---- guest hold -> visible in dom0 ---------------------------------------- */

struct holdbench {
    struct xs_handle *xs;
    const char *node;
    const char *status;
    int fd;
    int timeout_ms;
    long polls;    /* poll() calls that returned ready */
    long timeouts; /* poll() calls that timed out (a lost wake-up, if the value was there) */
};

/* Re-read STATUS from the start; 1 when it shows "locked: WANT". */
static int status_shows(struct holdbench *hb, int want)
{
    char needle[16];
    ssize_t r = pread(hb->fd, iobuf, sizeof iobuf - 1, 0);

    if (r < 0)
        die(hb->status);
    iobuf[r] = 0;
    snprintf(needle, sizeof needle, "\nlocked: %d\n", want);
    return strstr(iobuf, needle) != NULL;
}

static void hold_once(struct holdbench *hb, int want)
{
    const char *val = want ? "1 reason=x" : "0";
    struct pollfd p = {.fd = hb->fd, .events = POLLPRI | POLLIN};
    double start = now_us();

    if (!xs_write(hb->xs, XBT_NULL, hb->node, val, (unsigned)strlen(val)))
        die("xs_write");
    for (;;) {
        int r = poll(&p, 1, hb->timeout_ms);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (r == 0)
            hb->timeouts++;
        else
            hb->polls++;
        if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) {
            fprintf(stderr, "%s: poll on %s: revents 0x%x\n", prog, hb->status, p.revents);
            exit(1);
        }
        if (status_shows(hb, want))
            return;
        if (now_us() - start > 10e6) {
            fprintf(stderr, "%s: %s does not show 'locked: %d' 10 s after writing '%s' to %s\n",
                    prog, hb->status, want, val, hb->node);
            exit(1);
        }
    }
}

/* ---- xenstore write -> watch fires (the floor for hold) -------------------- */

struct watchbench {
    struct xs_handle *w, *xs; /* watcher, writer */
    const char *node;
};

static void watch_once(struct watchbench *wb, int want)
{
    const char *val = want ? "1 reason=x" : "0";
    unsigned n;

    if (!xs_write(wb->xs, XBT_NULL, wb->node, val, (unsigned)strlen(val)))
        die("xs_write");
    for (;;) {
        char **v = xs_read_watch(wb->w, &n); /* blocks */
        if (!v)
            die("xs_read_watch");
        int ours = !strcmp(v[XS_WATCH_PATH], wb->node) && !strcmp(v[XS_WATCH_TOKEN], "bench");
        free(v);
        if (ours)
            return;
    }
}

/* ---- statistics ----------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest sample with at least P of them at or below it. */
static double pct(const double *s, size_t n, double p)
{
    size_t k = (size_t)ceil(p * (double)n);
    return s[k ? k - 1 : 0];
}

static void report(double *s, long n, const char *out, int k, const struct holdbench *hb)
{
    if (out) {
        char name[4096];
        snprintf(name, sizeof name, "%s.%d", out, k);
        FILE *f = fopen(name, "w");
        if (!f)
            die(name);
        for (long i = 0; i < n; i++)
            fprintf(f, "%.3f\n", s[i]);
        if (fclose(f))
            die(name);
    }
    double sum = 0;
    for (long i = 0; i < n; i++)
        sum += s[i];
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    printf("n=%ld median=%.1f p90=%.1f p99=%.1f min=%.1f max=%.1f mean=%.1f", n,
           pct(s, (size_t)n, 0.50), pct(s, (size_t)n, 0.90), pct(s, (size_t)n, 0.99), s[0],
           s[n - 1], sum / (double)n);
    if (hb)
        printf(" polls=%ld timeouts=%ld", hb->polls, hb->timeouts);
    printf("\n");
}

int main(int argc, char **argv)
{
    long n = 2000, warm = 200, block = 100;
    const char *out = NULL;
    int timeout_ms = 1000, opt;
    struct holdbench hb = {.fd = -1};
    struct watchbench wb = {0};

    while ((opt = getopt(argc, argv, "+n:w:b:o:t:h")) != -1) {
        switch (opt) {
        case 'n': n = strtol(optarg, NULL, 10); break;
        case 'w': warm = strtol(optarg, NULL, 10); break;
        case 'b': block = strtol(optarg, NULL, 10); break;
        case 'o': out = optarg; break;
        case 't': timeout_ms = atoi(optarg); break;
        default: usage();
        }
    }
    if (n < 1 || warm < 0 || block < 1 || timeout_ms < 1 || optind >= argc)
        usage();
    const char *mode = argv[optind++];
    int m, ntargets = 1;
    if (!strcmp(mode, "read") && argc - optind >= 1)
        m = 0;
    else if (!strcmp(mode, "write") && argc - optind >= 1)
        m = 1;
    else if (!strcmp(mode, "hold") && argc - optind == 2)
        m = 2;
    else if (!strcmp(mode, "watch") && argc - optind == 1)
        m = 3;
    else
        usage();
    if (m <= 1)
        ntargets = argc - optind;
    char **paths = argv + optind;

    if (m == 2) {
        hb.node = paths[0];
        hb.status = paths[1];
        hb.timeout_ms = timeout_ms;
        hb.xs = xs_open(0);
        if (!hb.xs)
            die("xs_open");
        /* Start from a released guest hold, and let the status catch up. */
        if (!xs_write(hb.xs, XBT_NULL, hb.node, "0", 1))
            die("xs_write");
        hb.fd = open(hb.status, O_RDONLY | O_CLOEXEC);
        if (hb.fd < 0)
            die(hb.status);
        double t0 = now_us();
        while (!status_shows(&hb, 0)) {
            if (now_us() - t0 > 5e6) {
                fprintf(stderr, "%s: %s never shows 'locked: 0' (an admin hold left?)\n", prog,
                        hb.status);
                return 1;
            }
            usleep(10000);
        }
    }
    if (m == 3) {
        unsigned len;
        wb.node = paths[0];
        wb.xs = xs_open(0);
        wb.w = xs_open(0);
        if (!wb.xs || !wb.w)
            die("xs_open");
        if (!xs_write(wb.xs, XBT_NULL, wb.node, "0", 1))
            die("xs_write");
        if (!xs_watch(wb.w, wb.node, "bench"))
            die("xs_watch");
        char **v = xs_read_watch(wb.w, &len); /* the initial firing */
        free(v);
    }

    double *s = malloc(sizeof *s * (size_t)n * (size_t)ntargets);
    long *done = calloc((size_t)ntargets, sizeof *done);
    long *count = calloc((size_t)ntargets, sizeof *count); /* including warm-up */
    if (!s || !done || !count)
        die("malloc");

    /* Warm-up for each target, then the timed iterations in blocks that take
     * turns between the targets, so that a pair sees the same machine load. */
    for (long left = warm + n; left > 0;) {
        for (int k = 0; k < ntargets; k++) {
            long todo = count[k] < warm ? warm - count[k] : block;
            if (todo > warm + n - count[k])
                todo = warm + n - count[k];
            for (long j = 0; j < todo; j++) {
                int want = (count[k] & 1) == 0; /* set, release, set, ... */
                double t0 = now_us();
                switch (m) {
                case 0: cat_once(paths[k]); break;
                case 1: echo_once(paths[k], want ? "1\n" : "0\n"); break;
                case 2: hold_once(&hb, want); break;
                case 3: watch_once(&wb, want); break;
                }
                double dt = now_us() - t0;
                if (count[k]++ >= warm)
                    s[(size_t)k * (size_t)n + (size_t)done[k]++] = dt;
            }
        }
        left = warm + n - count[0];
    }

    if (m == 1)
        for (int k = 0; k < ntargets; k++)
            echo_once(paths[k], "0\n");
    if (m == 2) {
        if (!xs_write(hb.xs, XBT_NULL, hb.node, "0", 1))
            die("xs_write");
        close(hb.fd);
        xs_close(hb.xs);
    }
    if (m == 3) {
        if (!xs_write(wb.xs, XBT_NULL, wb.node, "0", 1))
            die("xs_write");
        xs_unwatch(wb.w, wb.node, "bench");
        xs_close(wb.w);
        xs_close(wb.xs);
    }

    for (int k = 0; k < ntargets; k++)
        report(s + (size_t)k * (size_t)n, n, out, k, m == 2 ? &hb : NULL);
    free(s);
    free(done);
    free(count);
    return 0;
}
