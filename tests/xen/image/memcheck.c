/* memcheck: the test guest's memory and heartbeat checker (issue 3), built
 * statically by tests/xen/build-images.sh as the domU's /bin/memcheck.
 *
 *   memcheck start MIB [PAGES_PER_S]  start the daemon; returns once all is
 *       written (refused unless MIB + 8 MiB are available). MIB MiB, mlocked
 *       (else just touched); each 4 KiB page holds a pattern of (page index,
 *       a seed chosen now, the page's generation). Every 10 ms it writes a
 *       heartbeat (count, CLOCK_MONOTONIC and CLOCK_REALTIME ns) to
 *       /run/memcheck.beat and rewrites PAGES_PER_S/100 (default 2000/100)
 *       random pages, generation bumped: the guest dirties memory during
 *       pre-copy. It keeps the largest gap between two beats on both clocks
 *       (time spent serving a command does not count).
 *   memcheck verify   check every page now (the writer waits); prints
 *       "pages=N bad=B max_gap_ms=X beats=Y max_gap_real_ms=Z rewrites=R",
 *       then the first bad pages; exit 0 if B=0, else 1
 *   memcheck gap-reset | stop   reset the largest gaps | end the daemon
 *   memcheck corrupt [PAGE]   flip one byte of PAGE (default: the middle
 *       one), never rewritten again: the next verify must fail
 * Commands go to the daemon over the unix socket /run/memcheck.sock; exit
 * status 2 when there is no daemon or it does not answer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SOCK "/run/memcheck.sock"
#define BEAT "/run/memcheck.beat"
#define PAGE 4096
#define WORDS (PAGE / 8)
#define TICK_NS 10000000LL

static uint64_t *mem, seed, rng;
static unsigned long long beats, rewrites;
static uint32_t *gen;
static size_t npages, corrupt_page = (size_t)-1;
static long long max_gap_mono, max_gap_real, last_mono, last_real;
static const struct sockaddr_un a = { .sun_family = AF_UNIX, .sun_path = SOCK };

static long long now_ns(clockid_t c)
{
    struct timespec ts;
    return clock_gettime(c, &ts), ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t mix(uint64_t x) /* splitmix64's finalizer */
{
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Write page p's pattern (set), or return the index of its first word that
 * differs from it (-1: none). */
static long page_op(size_t p, int set)
{
    uint64_t b = mix(seed ^ mix(((uint64_t)gen[p] << 32 | p) + 0x9e3779b97f4a7c15ULL)), *w = mem + p * WORDS;
    for (size_t i = 0; i < WORDS; i++) {
        uint64_t v = b ^ (i * 0xd6e8feb86659fd93ULL);
        if (set) w[i] = v;
        else if (w[i] != v) return (long)i;
    }
    return -1;
}

/* One command from a client; the reply's first line is the client's exit
 * status. Returns 1 for stop. */
static int serve(int c)
{
    char cmd[64] = "";
    ssize_t n = 0, r;
    struct timeval tv = { 5, 0 };
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (n < (ssize_t)sizeof cmd - 1 && (r = read(c, cmd + n, sizeof cmd - 1 - n)) > 0)
        n += r; /* the client half-closes after its line */
    cmd[strcspn(cmd, "\n")] = 0;
    if (!strcmp(cmd, "verify")) {
        size_t bad = 0;
        char list[600] = "";
        for (size_t p = 0; p < npages; p++) {
            long w = page_op(p, 0), l = strlen(list);
            if (w >= 0 && ++bad <= 8)
                snprintf(list + l, sizeof list - l, "bad page %zu (gen %u): word %ld is %016llx\n",
                         p, gen[p], w, (unsigned long long)mem[p * WORDS + w]);
        }
        dprintf(c, "%d\npages=%zu bad=%zu max_gap_ms=%.1f beats=%llu max_gap_real_ms=%.1f rewrites=%llu\n%s",
                bad != 0, npages, bad, max_gap_mono / 1e6, beats, max_gap_real / 1e6, rewrites, list);
    } else if (!strcmp(cmd, "gap-reset")) {
        max_gap_mono = max_gap_real = 0;
        dprintf(c, "0\ngaps reset after %llu beats\n", beats);
    } else if (!strncmp(cmd, "corrupt", 7)) {
        size_t p = cmd[7] ? strtoul(cmd + 8, NULL, 10) : npages / 2;
        if (p >= npages)
            return dprintf(c, "1\nno page %zu (%zu pages)\n", p, npages), 0;
        corrupt_page = p;
        ((volatile unsigned char *)mem)[p * PAGE + 1234] ^= 0xff;
        dprintf(c, "0\nflipped byte 1234 of page %zu (never rewritten again)\n", p);
    } else if (!strcmp(cmd, "stop")) {
        return dprintf(c, "0\nstopped after %llu beats\n", beats), 1;
    } else {
        dprintf(c, "2\nunknown command '%s'\n", cmd);
    }
    return 0;
}

static void heartbeat(int fd)
{
    long long m = now_ns(CLOCK_MONOTONIC), r = now_ns(CLOCK_REALTIME);
    char line[80];
    if (m - last_mono > max_gap_mono) max_gap_mono = m - last_mono;
    if (r - last_real > max_gap_real) max_gap_real = r - last_real;
    last_mono = m, last_real = r;
    int n = snprintf(line, sizeof line, "%20llu %20lld %20lld\n", ++beats, m, r);
    if (pwrite(fd, line, n, 0) < 0) { /* tmpfs: cannot really fail */ }
}

static _Noreturn void daemon_main(int ready, size_t mib, long rate)
{
    int s, fd, locked;
    npages = mib * 256;
    mem = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    gen = calloc(npages, sizeof *gen);
    if (mem == MAP_FAILED || !gen) {
        dprintf(ready, "memcheck: cannot allocate %zu MiB: %s\n", mib, strerror(errno));
        _exit(1);
    }
    locked = mlock(mem, npages * PAGE) == 0;
    seed = mix(now_ns(CLOCK_REALTIME) ^ ((uint64_t)getpid() << 40));
    rng = seed | 1;
    for (size_t p = 0; p < npages; p++)
        gen[p] = 1, page_op(p, 1);
    unlink(SOCK);
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    fd = open(BEAT, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 8) < 0 || fd < 0) {
        dprintf(ready, "memcheck: %s or %s: %s\n", SOCK, BEAT, strerror(errno));
        _exit(1);
    }
    dprintf(ready, "memcheck: started pid %d, pages=%zu (%zu MiB) mlock=%s seed=%016llx rate=%ld pages/s\n",
            getpid(), npages, mib, locked ? "yes" : "no", (unsigned long long)seed, rate);
    close(ready);
    int dn = open("/dev/null", O_RDWR);
    dup2(dn, 0), dup2(dn, 1), dup2(dn, 2);
    last_mono = now_ns(CLOCK_MONOTONIC), last_real = now_ns(CLOCK_REALTIME);
    heartbeat(fd);
    long long next = last_mono + TICK_NS;
    for (;;) {
        long long wait = next - now_ns(CLOCK_MONOTONIC);
        struct timespec to = { 0, wait > 0 ? wait : 0 };
        struct pollfd pf = { .fd = s, .events = POLLIN };
        int c = ppoll(&pf, 1, &to, NULL) > 0 ? accept4(s, NULL, NULL, SOCK_CLOEXEC) : -1;
        if (c >= 0) {
            if (serve(c)) { unlink(SOCK); unlink(BEAT); _exit(0); }
            close(c);
            /* Time spent serving is not a gap of the guest. */
            last_mono = now_ns(CLOCK_MONOTONIC), last_real = now_ns(CLOCK_REALTIME);
        }
        if (now_ns(CLOCK_MONOTONIC) < next) continue;
        heartbeat(fd);
        for (long i = 0; i < rate / 100 && npages > 1; i++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17; /* xorshift64 */
            size_t p = rng % npages;
            if (p == corrupt_page) continue;
            gen[p]++, rewrites++;
            page_op(p, 1);
        }
        next = last_mono + TICK_NS;
    }
}

/* MemAvailable in MiB, -1 if unknown. */
static long avail_mib(void)
{
    char l[128];
    long kb = -1;
    FILE *f = fopen("/proc/meminfo", "r");
    while (f && fgets(l, sizeof l, f) && sscanf(l, "MemAvailable: %ld", &kb) != 1) {}
    if (f) fclose(f);
    return kb < 0 ? -1 : kb / 1024;
}

static int start(size_t mib, long rate)
{
    int pfd[2];
    char buf[256];
    ssize_t n, total = 0;
    if (pipe(pfd) < 0) { perror("memcheck: pipe"); return 1; }
    pid_t pid = fork();
    if (pid < 0) { perror("memcheck: fork"); return 1; }
    if (pid == 0) {
        close(pfd[0]), setsid();
        signal(SIGPIPE, SIG_IGN), signal(SIGHUP, SIG_IGN);
        daemon_main(pfd[1], mib, rate);
    }
    close(pfd[1]);
    while ((n = read(pfd[0], buf + total, sizeof buf - 1 - total)) > 0) total += n;
    buf[total] = 0;
    fputs(total ? buf : "memcheck: the daemon died while starting\n", stdout);
    return !total || strncmp(buf, "memcheck: started", 17) != 0;
}

int main(int argc, char **argv)
{
    char buf[1200];
    ssize_t n, total = 0;
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    int up = s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    if (argc >= 3 && argc <= 4 && !strcmp(argv[1], "start")) {
        long mib = atol(argv[2]), rate = argc == 4 ? atol(argv[3]) : 2000;
        if (up) { fprintf(stderr, "memcheck: a daemon already runs (%s)\n", SOCK); return 1; }
        if (mib <= 0 || rate < 0) { fprintf(stderr, "memcheck: bad MIB or PAGES_PER_S\n"); return 2; }
        long av = avail_mib(); /* refuse rather than wake the OOM killer */
        if (av >= 0 && mib + 8 > av) {
            fprintf(stderr, "memcheck: %ld MiB asked, %ld MiB available (8 MiB must stay free)\n", mib, av);
            return 1;
        }
        close(s);
        return start((size_t)mib, rate);
    }
    if (argc < 2 || argc > 3 || !strcmp(argv[1], "start")) {
        fprintf(stderr, "usage: memcheck start MIB [PAGES_PER_S] | verify | gap-reset | corrupt [PAGE] | stop\n");
        return 2;
    }
    if (!up) { fprintf(stderr, "memcheck: no daemon at %s: %s\n", SOCK, strerror(errno)); return 2; }
    n = snprintf(buf, sizeof buf, "%s%s%s\n", argv[1], argc == 3 ? " " : "", argc == 3 ? argv[2] : "");
    alarm(120);
    if (write(s, buf, n) != n) { perror("memcheck: write"); return 2; }
    shutdown(s, SHUT_WR);
    while (total < (ssize_t)sizeof buf - 1 && (n = read(s, buf + total, sizeof buf - 1 - total)) > 0)
        total += n;
    buf[total] = 0;
    char *nl = strchr(buf, '\n');
    if (!nl) { fprintf(stderr, "memcheck: no answer from the daemon\n"); return 2; }
    fputs(nl + 1, stdout);
    return atoi(buf);
}
