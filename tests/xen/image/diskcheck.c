/* diskcheck: a self-checking O_DIRECT disk writer for the test guest.
 *
 *   diskcheck start DEV MIB RATE   a daemon writes RATE 4 KiB blocks a second
 *                                  into the first MIB MiB of DEV (O_DIRECT:
 *                                  each write is done when the disk said so)
 *   diskcheck status               writes=N errors=E (updated every second)
 *   diskcheck stop                 stop the writer; prints writes= errors=
 *   diskcheck verify DEV           after stop: read every block written and
 *                                  check it holds the last write the disk
 *                                  acknowledged; "blocks=N checked=C bad=B"
 *
 * Block b's generation g content: "DSKC", b, g, then bytes of a generator
 * seeded with (b, g).  The daemon keeps the last acknowledged g per block
 * and writes the map to /run/diskcheck.map when stopped. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLK 4096
#define PIDF "/run/diskcheck.pid"
#define STATF "/run/diskcheck.stat"
#define MAPF "/run/diskcheck.map"

static volatile sig_atomic_t stop;
static void on_stop(int s) { (void)s; stop = 1; }

static void fill(uint8_t *p, uint32_t b, uint32_t g)
{
    uint64_t x = ((uint64_t)b << 32 | g) * 0x9e3779b97f4a7c15ULL + 1;
    memcpy(p, "DSKC", 4);
    memcpy(p + 4, &b, 4);
    memcpy(p + 8, &g, 4);
    for (int i = 12; i < BLK; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

static void put_stat(unsigned long long w, unsigned long long e)
{
    FILE *f = fopen(STATF ".tmp", "w");
    if (!f)
        return;
    fprintf(f, "writes=%llu errors=%llu\n", w, e);
    fclose(f);
    rename(STATF ".tmp", STATF);
}

static int run(const char *dev, uint32_t nblocks, int rate)
{
    uint32_t *last = calloc(nblocks, sizeof *last);
    uint8_t *buf;
    unsigned long long writes = 0, errors = 0;
    struct timespec t0, now;
    int fd = open(dev, O_RDWR | O_DIRECT);

    if (fd < 0 || !last || posix_memalign((void **)&buf, BLK, BLK))
        return 1;
    signal(SIGTERM, on_stop);
    signal(SIGUSR1, on_stop);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    time_t lastput = 0;
    for (uint32_t g = 1; !stop; g++) {
        uint32_t b = (uint32_t)(((uint64_t)g * 2654435761U) % nblocks);
        fill(buf, b, g);
        if (pwrite(fd, buf, BLK, (off_t)b * BLK) == BLK) {
            last[b] = g;
            writes++;
        } else {
            errors++;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec != lastput) {
            put_stat(writes, errors);
            lastput = now.tv_sec;
        }
        /* RATE a second on average */
        double due = (double)g / rate, el = (double)(now.tv_sec - t0.tv_sec) +
                                            (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
        if (due > el)
            usleep((useconds_t)((due - el) * 1e6));
    }
    put_stat(writes, errors);
    FILE *m = fopen(MAPF, "w");
    if (m) {
        fwrite(&nblocks, sizeof nblocks, 1, m);
        fwrite(last, sizeof *last, nblocks, m);
        fclose(m);
    }
    unlink(PIDF);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "start")) {
        uint32_t nblocks = (uint32_t)(atoi(argv[3]) * (1048576 / BLK));
        int rate = atoi(argv[4]);
        if (!nblocks || rate <= 0) {
            fprintf(stderr, "diskcheck: bad MIB or RATE\n");
            return 2;
        }
        unlink(MAPF);
        put_stat(0, 0);
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid > 0) {
            FILE *f = fopen(PIDF, "w");
            if (f) {
                fprintf(f, "%d\n", (int)pid);
                fclose(f);
            }
            printf("started pid=%d blocks=%u\n", (int)pid, nblocks);
            return 0;
        }
        setsid();
        freopen("/dev/null", "r", stdin);
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        return run(argv[2], nblocks, rate);
    }
    if (argc == 2 && !strcmp(argv[1], "status")) {
        char line[200] = "";
        FILE *f = fopen(STATF, "r");
        if (!f || !fgets(line, sizeof line, f))
            return 2;
        fputs(line, stdout);
        fclose(f);
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "stop")) {
        FILE *f = fopen(PIDF, "r");
        int pid = 0;
        if (!f || fscanf(f, "%d", &pid) != 1)
            return 2;
        fclose(f);
        kill(pid, SIGUSR1);
        for (int i = 0; i < 100 && !access(PIDF, F_OK); i++)
            usleep(100000);
        execl("/bin/cat", "cat", STATF, (char *)NULL);
        return 1;
    }
    if (argc == 3 && !strcmp(argv[1], "verify")) {
        FILE *m = fopen(MAPF, "r");
        uint32_t nblocks = 0;
        uint8_t *buf, *want;
        if (!m || fread(&nblocks, sizeof nblocks, 1, m) != 1 || !nblocks)
            return 2;
        uint32_t *last = calloc(nblocks, sizeof *last);
        if (!last || fread(last, sizeof *last, nblocks, m) != nblocks)
            return 2;
        fclose(m);
        int fd = open(argv[2], O_RDONLY | O_DIRECT);
        if (fd < 0 || posix_memalign((void **)&buf, BLK, BLK) || !(want = malloc(BLK)))
            return 2;
        unsigned long checked = 0, bad = 0;
        for (uint32_t b = 0; b < nblocks; b++) {
            if (!last[b])
                continue;
            checked++;
            fill(want, b, last[b]);
            if (pread(fd, buf, BLK, (off_t)b * BLK) != BLK || memcmp(buf, want, BLK)) {
                if (bad < 5) {
                    uint32_t gb, gg;
                    memcpy(&gb, buf + 4, 4), memcpy(&gg, buf + 8, 4);
                    printf("bad block %u: want gen %u, found block %u gen %u\n", b, last[b], gb, gg);
                }
                bad++;
            }
        }
        printf("blocks=%u checked=%lu bad=%lu\n", nblocks, checked, bad);
        return bad ? 1 : 0;
    }
    fprintf(stderr, "usage: diskcheck start DEV MIB RATE | status | stop | verify DEV\n");
    return 2;
}
