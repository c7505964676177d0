/* Command-line applets drive a running vmmigfs through its files, exactly as
 * a shell script would with echo and cat. */
#ifndef VMMIG_MOUNTCLIENT_H
#define VMMIG_MOUNTCLIENT_H

#include <stdbool.h>

bool mount_present(const char *mnt);
/* Write text to MNT/DOM/FILE (DOM may be NULL for top-level files).  0 or -errno. */
int mount_write(const char *mnt, const char *dom, const char *file, const char *text);
/* Read MNT/DOM/FILE into a malloc'd string.  0 or -errno. */
int mount_read(const char *mnt, const char *dom, const char *file, char **out);
/* The newest event line now, to tell later events from earlier ones (malloc'd; may be NULL). */
char *mount_events_mark(const char *mnt);
/* The newest event about dom after mark that explains a refused write (why="..."), or NULL. */
char *mount_last_reason(const char *mnt, const char *dom, const char *mark);

#endif
