/* One small interface per hypervisor (xen now, qemu next), in the style of
 * nbdcopy's struct rw_ops: the control core only talks to this vtable. */
#ifndef VMMIG_BACKEND_H
#define VMMIG_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lock.h"

enum vm_state { VM_RUNNING, VM_BLOCKED, VM_PAUSED, VM_SHUTDOWN, VM_DYING, VM_RUNNABLE, VM_UNKNOWN };

struct vm_info {
    uint32_t domid;
    char name[64];
    char uuid[37];
    enum vm_state state;
    uint64_t mem_kib;
    unsigned vcpus;
};

const char *vm_state_name(enum vm_state s);

/* What read_events() reports. */
#define BE_EV_DOMAINS 1u /* domains appeared or disappeared */
#define BE_EV_HOLDS   2u /* some guest's hold node changed */

struct backend;

/* What a migration job asks for; the backend turns it into a command. */
struct mig_request {
    const char *host;      /* destination host name */
    bool force;            /* proceed over guest holds past their quota (already checked) */
    const char *transport; /* "tcp", or an exec command template ("ssh %h vmmig receive") */
    unsigned port;         /* tcp port of the destination agent */
    unsigned timeout_s;    /* longest silence from the peer */
    bool recover;          /* settle the domain after an agent that died (send --recover) */
    const char *algorithm; /* precopy, postcopy, stopcopy; NULL or "": the agent's default */
    const char *stream;    /* "direct": send --stream=direct; NULL or "": the relay */
    /* A peer group moved by one command (vmmig comigrate): the domids, the
     * domain asked for first; nmembers 0 or 1 moves vm alone (vmmig send). */
    const uint32_t *members;
    size_t nmembers;
};

struct backend_ops {
    const char *name;
    int (*open)(struct backend **out, char *err, size_t errlen);
    void (*close)(struct backend *b);
    /* Every domain but the control domain; *out is malloc'd. */
    int (*list)(struct backend *b, struct vm_info **out, size_t *n);
    /* Readable when read_events() has something to report; -1 if none. */
    int (*event_fd)(struct backend *b);
    int (*read_events)(struct backend *b, unsigned *what);
    /* Create the guest's hold channel (writable by that guest only) and watch it. */
    int (*guest_hold_prepare)(struct backend *b, const struct vm_info *vm);
    void (*guest_hold_forget)(struct backend *b, uint32_t domid);
    /* The guest's raw request ("0", "1 reason=..."); -ENOENT when absent. */
    int (*guest_hold_get)(struct backend *b, const struct vm_info *vm, char *buf, size_t size);
    int (*guest_hold_set)(struct backend *b, const struct vm_info *vm, const char *value);
    /* Optional: the next thing the backend has to report about a guest's
     * channel (a refused request, a flood, a reconnect), for events: the
     * event's name and its key=value detail; -EAGAIN when there is none. */
    int (*guest_channel_note)(struct backend *b, uint32_t *domid, char *event, size_t esize,
                              char *detail, size_t dsize);
    /* A hold from the domain's configuration; out->active false when none. */
    int (*static_hold)(struct backend *b, const struct vm_info *vm, struct hold *out);
    /* The command that live-migrates vm, or req->members together
     * (NULL-terminated, malloc'd strings). */
    int (*migrate_argv)(struct backend *b, const struct vm_info *vm, const struct mig_request *req,
                        char ***argv);
    /* Optional: mirror the admin hold into the hypervisor's own lock where
     * it has one (hyp-patches' XEN_DOMCTL_migration_lock), so that even a
     * plain `xl migrate` refuses the domain.  0 also when it has none. */
    int (*admin_hold_sync)(struct backend *b, const struct vm_info *vm, bool on);
};

extern const struct backend_ops xen_backend_ops;
/* QEMU domains in $VMMIG_QEMU_DIR (lib/backend_qemu.c). */
extern const struct backend_ops qemu_backend_ops;

/* "xen", "qemu", or "auto": Xen when this is a Xen dom0, else QEMU. */
const struct backend_ops *backend_find(const char *name);

void argv_free(char **argv);

#endif
