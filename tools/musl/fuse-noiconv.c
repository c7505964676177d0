/* Static build only: libfuse3's "iconv" module left out.
 *
 * libfuse3's high-level library registers its built-in modules by name, so
 * linking it pulls modules/iconv.c and with it musl's iconv and its CJK
 * tables: about 145 KB of the 1.5 MB binary for a module (-o modules=iconv,
 * file name charset conversion) that vmmigfs has no use for.  Defining the
 * module's factory here, before libfuse3.a is searched, keeps that member
 * out of the link; asking for the module fails with a clear message.  The
 * dynamic build uses the system's libfuse3 with its module. */
#define FUSE_USE_VERSION 35
#include <fuse.h>
#include <stdio.h>

static struct fuse_fs *iconv_unavailable(struct fuse_args *args, struct fuse_fs *fs[])
{
    (void)args;
    (void)fs;
    fprintf(stderr, "fuse: the iconv module is not in this static build of vmmig\n");
    return NULL;
}

FUSE_REGISTER_MODULE(iconv, iconv_unavailable);
