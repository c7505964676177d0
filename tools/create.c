/* vmmig create: start a QEMU domain from an xl.cfg-style file, with the
 * sockets vmmig needs (lib/qemudom.h), so that vmmigfs and the agents find
 * it in the run directory. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "applet.h"
#include "qemudom.h"

static const char create_help[] =
    "usage: vmmig create [-n NAME] FILE\n"
    "\n"
    "Start a QEMU domain from FILE, a configuration in xl.cfg's key = value\n"
    "syntax: name, uuid, memory (MiB), vcpus, kernel, ramdisk (or initrd),\n"
    "cmdline (or extra), disk = [ 'target=PATH', ... ], migration = \"no\".\n"
    "A disk target=blockmirror:NAME is a local disk that vmmig blockmirror\n"
    "serves on this host (vmmig-blockmirror(8)): QEMU attaches it over NBD,\n"
    "and it migrates with the domain.\n"
    "QEMU runs daemonized with KVM when /dev/kvm is usable, else TCG, and\n"
    "its monitor, serial console and guest hold channel are sockets in\n"
    "$VMMIG_QEMU_DIR/NAME (default " QEMU_DEFAULT_RUN_DIR "/NAME).\n"
    "Prints \"created NAME domid=N pid=P\".\n"
    "\n"
    "  -n, --name NAME       the domain's name (default: name in FILE)\n"
    "  -h, --help            show this help\n"
    "\n"
    "Environment: VMMIG_QEMU (the emulator, default qemu-system-x86_64),\n"
    "VMMIG_QEMU_ACCEL (kvm or tcg).  Exit status: 0 started, 1 failed, 2 usage.\n";

static int create_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"name", required_argument, 0, 'n'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *name = NULL;
    struct qemu_cfg cfg;
    struct qemu_dom d;
    char *text = NULL, err[400];
    int opt, rc = 1;

    while ((opt = getopt_long(argc, argv, "n:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'n': name = optarg; break;
        case 'h': help_exit_ok(&applet_create);
        default: usage_exit(&applet_create, "unknown option");
        }
    }
    if (argc - optind != 1)
        usage_exit(&applet_create, "expected one configuration FILE");
    int r = read_file(argv[optind], &text, NULL);
    if (r) {
        error_msg("%s: %s", argv[optind], strerror(-r));
        goto out;
    }
    if (qemu_cfg_parse(text, &cfg, err, sizeof err)) {
        error_msg("%s: %s", argv[optind], err);
        goto out;
    }
    if (!name)
        name = cfg.name;
    if (!*name) {
        error_msg("%s: no name (name = \"...\" or --name)", argv[optind]);
        goto out;
    }
    if (qemu_dom_start(text, name, false, NULL, &d, err, sizeof err)) {
        error_msg("%s", err);
        if (d.domid)
            qemu_dom_remove(&d, err, sizeof err);
        goto out;
    }
    printf("created %s domid=%u pid=%d\n", d.name, d.domid, d.pid);
    rc = 0;
out:
    free(text);
    return rc;
}

const struct applet applet_create = {
    .name = "create",
    .main = create_main,
    .summary = "start a QEMU domain from an xl.cfg-style file",
    .help = create_help,
};
