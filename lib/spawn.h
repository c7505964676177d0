/* vmmigfs drops every capability after mounting, but a migration command (xl)
 * and the final unmount need them.  So before mounting it forks this small
 * helper, which keeps them and does only three things on request: run a
 * command (handing back its output pipe), stop one, and unmount. */
#ifndef VMMIG_SPAWN_H
#define VMMIG_SPAWN_H

#include <sys/types.h>

struct spawner {
    pid_t pid;
    int sock;        /* SOCK_SEQPACKET to the helper */
    struct {         /* exits reported while we waited for a reply */
        pid_t pid;
        int status;
    } pending[16];
    int npending;
};

int spawner_start(struct spawner *s, const char *mountpoint);
/* struct runner callbacks (see control.h); arg is the struct spawner. */
int spawner_run(void *arg, char *const argv[], pid_t *pid, int *out_fd);
int spawner_stop(void *arg, pid_t pid);
/* The same with io_fd as the command's stdin and stdout (a connection). */
int spawner_run_io(void *arg, char *const argv[], int io_fd, pid_t *pid, int *out_fd);
/* The helper's socket is readable: collect one exit report (1), or 0 if none. */
int spawner_next_exit(struct spawner *s, pid_t *pid, int *status);
/* Unmount the filesystem and end the helper. */
int spawner_unmount_and_quit(struct spawner *s);

#endif
