/* QEMU domains as vmmig sees them: under the run directory
 * ($VMMIG_QEMU_DIR, default /run/vmmig/qemu) each domain NAME is a symlink
 * to its instance directory .dom/DOMID (DOMID: vmmig's number for it, unique
 * on the host), so NAME/qmp.sock reaches its monitor.  The instance holds
 *   domain.cfg   the domain's configuration (xl.cfg key = value syntax)
 *   domid        vmmig's number for it (QEMU has none), unique on the host
 *   qmp.sock     QMP for the agents (migration, cont, quit)
 *   status.sock  a second QMP monitor for short queries (query-status)
 *   serial.sock  the serial console (serial.log keeps what it printed)
 *   console.sock vmmig console's input (virtio console hvc0, port org.vmmig.console)
 *   console.log  everything the guest wrote to hvc0 (vmmig console's output)
 *   hold.sock    the guest's hold channel (virtio-serial port org.vmmig.hold)
 *   guest-hold   the guest's last accepted hold request (lib/holdchan.h), or
 *                what the host holds for it (carried over, expired)
 *   taps         the vifs' taps on this host: "TAP BRIDGE MAC" a line
 *   qemu.pid, qemu.log
 * Renaming a domain renames its symlink: QEMU removes its sockets by the
 * paths it was given when it exits, so those never contain a name. */
#ifndef VMMIG_QEMUDOM_H
#define VMMIG_QEMUDOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qemunet.h"
#include "util.h"

#define QEMU_DEFAULT_RUN_DIR "/run/vmmig/qemu"
#define QEMU_INSTANCE_DIR ".dom"
#define QEMU_HOLD_PORT "org.vmmig.hold"
#define QEMU_CONSOLE_PORT "org.vmmig.console"
#define QEMU_MAX_DISKS 8

struct qemu_cfg {
    char name[64];
    char uuid[37];
    unsigned memory_mib;
    unsigned vcpus;
    char kernel[256], initrd[256], cmdline[512];
    char disks[QEMU_MAX_DISKS][256];
    int ndisks;
    /* vif = [ 'bridge=BR,mac=MAC,model=M' ]: macs made from the uuid when
     * not given (qemu_vif_default_mac), once the uuid is known */
    struct qemu_vif vifs[QEMU_MAX_VIFS];
    int nvifs;
    bool nomigrate;   /* migration = "no" (or nomigrate = 1) */
    char nomigrate_what[64];
};

/* The unix socket of the disk blockmirror:NAME on this host, where `vmmig
 * blockmirror serve IMAGE --disk NAME` serves it ($VMMIG_STATE_DIR/
 * blockmirror/NAME.nbd): QEMU attaches it over NBD. */
void qemu_disk_socket(const char *name, char *out, size_t size);

/* One domain found in the run directory. */
struct qemu_dom {
    uint32_t domid;
    char name[64];
    char dir[512];
    struct qemu_cfg cfg;
    int pid;          /* 0 when unknown */
};

const char *qemu_run_dir(void);

/* Parse xl.cfg-style text: key = value, values quoted or bare, lists in
 * [ ... ], # comments.  Unknown keys are ignored (as xl warns and goes on);
 * a vif spec vmmig cannot honour is refused. */
int qemu_cfg_parse(const char *text, struct qemu_cfg *cfg, char *err, size_t errlen);
/* The MACs of the vifs that name none, from cfg->uuid (nothing without one). */
void qemu_cfg_vif_macs(struct qemu_cfg *cfg);

/* Every domain in the run directory (*out malloc'd). */
int qemu_dom_list(struct qemu_dom **out, size_t *n);
/* By name, by domid ("12") or by UUID; -ENOENT when absent. */
int qemu_dom_find(const char *name_or_domid, struct qemu_dom *out);
int qemu_dom_find_domid(uint32_t domid, struct qemu_dom *out);
int qemu_dom_find_uuid(const char *uuid, struct qemu_dom *out);

/* A path inside the domain's directory. */
void qemu_dom_path(const struct qemu_dom *d, const char *file, char *buf, size_t size);

/* Create the domain's directory (named name) with cfg_text as domain.cfg
 * and a fresh domid, then start QEMU for it, daemonized: running (or, with
 * incoming, waiting for a migration stream with -incoming defer -S).  Each
 * vif's tap (qemunet.h) is made on its bridge first, or is tapfds[i] (made
 * by the caller, who keeps its descriptors), and lives as long as QEMU;
 * the instance's file taps says which is which ("NAME BRIDGE MAC" lines).
 * On failure after the directory exists, *out->domid is set so that the
 * caller can clean up with qemu_dom_remove(). */
int qemu_dom_start(const char *cfg_text, const char *name, bool incoming, const int *tapfds,
                   struct qemu_dom *out, char *err, size_t errlen);

/* End QEMU (quit over QMP, then SIGKILL) and remove the directory. */
int qemu_dom_remove(const struct qemu_dom *d, char *err, size_t errlen);

/* query-status over status.sock: "running", "paused", "postmigrate"... */
int qemu_dom_status(const struct qemu_dom *d, char *status, size_t size);

#endif
