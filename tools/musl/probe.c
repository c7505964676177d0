/* probe: exercises the static musl libraries the way vmmig uses them, for
 * tests/static.t (vmmigfs itself needs a hypervisor for xc_interface_open, so
 * these two paths cannot be reached through vmmig in a test without Xen).
 *
 *   probe xs          libxenstore.a against the xenstored at XENSTORED_PATH:
 *                     write, read, set/get permissions, watch + poll(xs_fileno)
 *                     + xs_check_watch, unwatch, rm.  Prints one line per step.
 *   probe xs-read PATH / probe xs-write PATH VALUE
 *                     one read (value on stdout) or write, to show from outside
 *                     which xenstored the probe reaches.
 *   probe fuse MNT    libfuse3.a: mounts a one-file filesystem on MNT in the
 *                     foreground (file "hello"), returns 0 when unmounted.
 *
 * Built by `make static-probe` (tools/musl/static.mk) as build/static/probe. */
#define _GNU_SOURCE
#define FUSE_USE_VERSION 35
#include <errno.h>
#include <fuse.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xenstore.h>

static int fails;

static void check(bool ok, const char *what)
{
    printf("%s %s\n", ok ? "ok" : "FAIL", what);
    if (!ok) {
        fails++;
        if (errno)
            printf("  (errno %d: %s)\n", errno, strerror(errno));
    }
    fflush(stdout);
    errno = 0;
}

/* next_event: waits up to MS for a watch event; returns its path or NULL. */
static char *next_event(struct xs_handle *h, int ms, char *token, size_t toklen)
{
    struct pollfd p = {.fd = xs_fileno(h), .events = POLLIN};
    if (p.fd < 0 || poll(&p, 1, ms) <= 0)
        return NULL;
    char **vec = xs_check_watch(h);
    if (!vec)
        return NULL;
    char *path = strdup(vec[XS_WATCH_PATH]);
    snprintf(token, toklen, "%s", vec[XS_WATCH_TOKEN]);
    free(vec);
    return path;
}

static int probe_xs(void)
{
    static const char node[] = "/vmmig-static-probe";
    char token[64] = "";
    unsigned len = 0, n = 0;

    struct xs_handle *h = xs_open(XS_UNWATCH_FILTER);
    check(h != NULL, "xs_open (XENSTORED_PATH)");
    if (!h)
        return 1;
    check(xs_write(h, XBT_NULL, node, "v1", 2), "xs_write");
    char *v = xs_read(h, XBT_NULL, node, &len);
    check(v && len == 2 && !memcmp(v, "v1", 2), "xs_read returns what was written");
    free(v);

    struct xs_permissions set[2] = {{.id = 0, .perms = XS_PERM_NONE},
                                    {.id = 7, .perms = XS_PERM_READ}};
    check(xs_set_permissions(h, XBT_NULL, node, set, 2), "xs_set_permissions");
    struct xs_permissions *got = xs_get_permissions(h, XBT_NULL, node, &n);
    check(got && n == 2 && got[1].id == 7 && got[1].perms == XS_PERM_READ,
          "xs_get_permissions returns them");
    free(got);

    check(xs_watch(h, node, "probe-token"), "xs_watch");
    char *p = next_event(h, 3000, token, sizeof token);
    check(p && !strcmp(p, node) && !strcmp(token, "probe-token"),
          "initial watch event through poll(xs_fileno) + xs_check_watch");
    free(p);
    check(xs_write(h, XBT_NULL, node, "v2", 2), "xs_write again");
    p = next_event(h, 3000, token, sizeof token);
    check(p && !strcmp(p, node), "watch event for the change");
    free(p);
    check(xs_unwatch(h, node, "probe-token"), "xs_unwatch");
    check(xs_write(h, XBT_NULL, node, "v3", 2), "xs_write after unwatch");
    p = next_event(h, 300, token, sizeof token);
    check(p == NULL, "no event after xs_unwatch");
    free(p);
    check(xs_rm(h, XBT_NULL, node), "xs_rm");
    v = xs_read(h, XBT_NULL, node, &len);
    check(v == NULL && errno == ENOENT, "node gone after xs_rm");
    free(v);
    xs_close(h);
    printf("%s\n", fails ? "xs probe FAILED" : "xs probe passed");
    return fails ? 1 : 0;
}

static const char hello[] = "hello from a static musl libfuse3\n";

static int f_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    (void)fi;
    memset(st, 0, sizeof *st);
    if (!strcmp(path, "/")) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
    } else if (!strcmp(path, "/hello")) {
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_size = sizeof hello - 1;
    } else {
        return -ENOENT;
    }
    return 0;
}

static int f_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                     struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    (void)off, (void)fi, (void)flags;
    if (strcmp(path, "/"))
        return -ENOENT;
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    fill(buf, "hello", NULL, 0, 0);
    return 0;
}

static int f_read(const char *path, char *buf, size_t size, off_t off,
                  struct fuse_file_info *fi)
{
    (void)fi;
    if (strcmp(path, "/hello"))
        return -ENOENT;
    if (off >= (off_t)(sizeof hello - 1))
        return 0;
    if (size > sizeof hello - 1 - (size_t)off)
        size = sizeof hello - 1 - (size_t)off;
    memcpy(buf, hello + off, size);
    return (int)size;
}

static const struct fuse_operations ops = {
    .getattr = f_getattr,
    .readdir = f_readdir,
    .read = f_read,
};

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "xs"))
        return probe_xs();
    if (argc == 3 && !strcmp(argv[1], "xs-read")) {
        struct xs_handle *h = xs_open(0);
        unsigned len;
        char *v = h ? xs_read(h, XBT_NULL, argv[2], &len) : NULL;
        if (!v) {
            perror("probe xs-read");
            return 1;
        }
        printf("%.*s\n", (int)len, v);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "xs-write")) {
        struct xs_handle *h = xs_open(0);
        if (!h || !xs_write(h, XBT_NULL, argv[2], argv[3], (unsigned)strlen(argv[3]))) {
            perror("probe xs-write");
            return 1;
        }
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "fuse")) {
        char *fargv[] = {argv[0], "-f", "-s", "-o", "fsname=static-probe", argv[2], NULL};
        return fuse_main(6, fargv, &ops, NULL);
    }
    fprintf(stderr, "usage: probe xs | xs-read PATH | xs-write PATH VALUE | fuse MOUNTPOINT\n");
    return 2;
}
