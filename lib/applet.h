/* The multi-call binary's applets: one source file per applet, each with its
 * help text next to its code (toybox style). */
#ifndef VMMIG_APPLET_H
#define VMMIG_APPLET_H

struct applet {
    const char *name;
    int (*main)(int argc, char **argv);
    const char *summary;
    const char *help;
};

extern const struct applet applet_vmmigfs, applet_lock, applet_unlock, applet_migrate,
    applet_guestctl, applet_send, applet_receive, applet_comigrate, applet_console,
    applet_blockmirror, applet_create;

/* Prints the applet's help to stdout and exits 0 (for --help). */
_Noreturn void help_exit_ok(const struct applet *a);
/* Prints "NAME: message" and a usage hint to stderr, exits 2. */
_Noreturn void usage_exit(const struct applet *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define DEFAULT_MOUNT "/run/vmmig"
#define DEFAULT_STATE_DIR "/var/lib/vmmig"
#define DEFAULT_POLICY "/etc/vmmig/policy"

const char *env_default(const char *var, const char *def);

#endif
