/* fusefloor - the cheapest possible FUSE file system shaped like vmmigfs, to
 * show what part of vmmigfs's latency is FUSE itself (built and mounted by
 * bench/run.sh; not part of vmmig).
 *
 *   fusefloor [--entry-cache|--cached] STATUS_TEXT_FILE MOUNTPOINT
 *
 * Serves MOUNTPOINT/d/status (the text of STATUS_TEXT_FILE, fixed) and
 * MOUNTPOINT/d/lock (keeps the last write), single-threaded, in the
 * foreground, with libfuse3's high-level API as vmmigfs uses it.  Default:
 * vmmigfs's own settings (direct_io, entry/attr/negative timeouts 0).
 * --entry-cache: the same, but names are cached (entry_timeout 60 s): what
 * vmmigfs would get if it invalidated names itself when domains come and go.
 * --cached: entry and attribute timeouts of 60 s and no direct_io, i.e.
 * all the kernel can save when it may cache names, attributes and data.
 * Nothing is computed per request.  Unmount with fusermount3 -u.
 */
#define _GNU_SOURCE
#define FUSE_USE_VERSION 35
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static char status_text[8192];
static size_t status_len;
static char lock_text[64] = "0\n";
static size_t lock_len = 2;
static bool cached, entry_cache;
static time_t started;

static void *ff_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)conn;
    cfg->direct_io = !cached;
    cfg->kernel_cache = 0;
    cfg->entry_timeout = cached || entry_cache ? 60 : 0;
    cfg->attr_timeout = cached ? 60 : 0;
    cfg->negative_timeout = 0;
    return NULL;
}

static int ff_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    (void)fi;
    memset(st, 0, sizeof *st);
    st->st_mtime = st->st_ctime = st->st_atime = started;
    if (!strcmp(path, "/") || !strcmp(path, "/d")) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
    } else if (!strcmp(path, "/d/status")) {
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_size = (off_t)status_len;
    } else if (!strcmp(path, "/d/lock")) {
        st->st_mode = S_IFREG | 0644;
        st->st_nlink = 1;
        st->st_size = (off_t)lock_len;
    } else {
        return -ENOENT;
    }
    return 0;
}

static int ff_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    (void)off;
    (void)fi;
    (void)flags;
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    if (!strcmp(path, "/")) {
        fill(buf, "d", NULL, 0, 0);
    } else if (!strcmp(path, "/d")) {
        fill(buf, "status", NULL, 0, 0);
        fill(buf, "lock", NULL, 0, 0);
    } else {
        return -ENOTDIR;
    }
    return 0;
}

static int ff_open(const char *path, struct fuse_file_info *fi)
{
    if (!strcmp(path, "/d/status"))
        return (fi->flags & O_ACCMODE) == O_RDONLY ? 0 : -EACCES;
    if (!strcmp(path, "/d/lock"))
        return 0;
    return -ENOENT;
}

static int ff_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    const char *s = status_text;
    size_t len = status_len;

    (void)fi;
    if (!strcmp(path, "/d/lock")) {
        s = lock_text;
        len = lock_len;
    }
    if ((size_t)off >= len)
        return 0;
    if (size > len - (size_t)off)
        size = len - (size_t)off;
    memcpy(buf, s + off, size);
    return (int)size;
}

static int ff_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)fi;
    (void)off;
    if (strcmp(path, "/d/lock"))
        return -EACCES;
    lock_len = size < sizeof lock_text ? size : sizeof lock_text;
    memcpy(lock_text, buf, lock_len);
    return (int)size;
}

static int ff_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    (void)size;
    (void)fi;
    return strcmp(path, "/d/lock") ? -EACCES : 0;
}

static const struct fuse_operations ff_ops = {
    .init = ff_init,
    .getattr = ff_getattr,
    .readdir = ff_readdir,
    .open = ff_open,
    .read = ff_read,
    .write = ff_write,
    .truncate = ff_truncate,
};

int main(int argc, char **argv)
{
    int i = 1;

    if (argc > 1 && !strcmp(argv[1], "--cached")) {
        cached = true;
        i++;
    } else if (argc > 1 && !strcmp(argv[1], "--entry-cache")) {
        entry_cache = true;
        i++;
    }
    if (argc - i != 2) {
        fprintf(stderr, "usage: fusefloor [--entry-cache|--cached] STATUS_TEXT_FILE MOUNTPOINT\n");
        return 2;
    }
    FILE *f = fopen(argv[i], "r");
    if (!f) {
        perror(argv[i]);
        return 1;
    }
    status_len = fread(status_text, 1, sizeof status_text, f);
    fclose(f);
    started = time(NULL);

    char *fargv[] = {argv[0], "-f", "-s", "-o", "fsname=fusefloor,subtype=fusefloor",
                     argv[i + 1], NULL};
    return fuse_main(6, fargv, &ff_ops, NULL);
}
