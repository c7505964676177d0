/* vmmig: one binary, many applets, chosen by argv[0] or the first argument. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "applet.h"
#include "util.h"

static const struct applet *const applets[] = {
    &applet_vmmigfs, &applet_lock, &applet_unlock, &applet_migrate, &applet_guestctl,
    &applet_send, &applet_receive, &applet_comigrate, &applet_console, &applet_blockmirror,
    &applet_create,
};

static const char vmmig_help[] =
    "usage: vmmig APPLET [ARGS...]    or    APPLET [ARGS...] through a link named APPLET\n"
    "\n"
    "       vmmig --list | --help\n"
    "\n"
    "Control live migration of Xen domains.  --list prints the applet names.\n"
    "Applets:\n";

const char *env_default(const char *var, const char *def)
{
    const char *v = getenv(var);
    return v && *v ? v : def;
}

void help_exit_ok(const struct applet *a)
{
    fputs(a->help, stdout);
    exit(0);
}

void usage_exit(const struct applet *a, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", toolname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help' for more information.\n", toolname);
    (void)a;
    exit(EXIT_USAGE);
}

static void list_applets(FILE *f)
{
    for (size_t i = 0; i < ARRAY_SIZE(applets); i++)
        fprintf(f, "  %-10s %s\n", applets[i]->name, applets[i]->summary);
}

static const struct applet *find(const char *name)
{
    if (!strcmp(name, "fs"))
        name = "vmmigfs";
    for (size_t i = 0; i < ARRAY_SIZE(applets); i++)
        if (!strcmp(applets[i]->name, name))
            return applets[i];
    return NULL;
}

static int run(const struct applet *a, int argc, char **argv, const char *prefix)
{
    static char name[64];
    if (prefix)
        snprintf(name, sizeof name, "%s %s", prefix, a->name);
    else
        snprintf(name, sizeof name, "%s", a->name);
    toolname = name;
    return a->main(argc, argv);
}

int main(int argc, char **argv)
{
    const char *base = strrchr(argv[0], '/');
    const struct applet *a;

    base = base ? base + 1 : argv[0];
    if ((a = find(base)) && strcmp(base, "fs"))
        return run(a, argc, argv, NULL);
    toolname = "vmmig";
    if (argc < 2) {
        fputs(vmmig_help, stderr);
        list_applets(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--list")) {
        for (size_t i = 0; i < ARRAY_SIZE(applets); i++)
            printf("%s\n", applets[i]->name);
        return 0;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(vmmig_help, stdout);
        list_applets(stdout);
        printf("\nRun 'vmmig APPLET --help' for an applet's options.  See vmmig(1).\n");
        return 0;
    }
    a = find(argv[1]);
    if (!a) {
        fprintf(stderr, "vmmig: unknown applet '%s'\n", argv[1]);
        fputs("Applets:\n", stderr);
        list_applets(stderr);
        return EXIT_USAGE;
    }
    return run(a, argc - 1, argv + 1, "vmmig");
}
