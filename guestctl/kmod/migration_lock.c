// SPDX-License-Identifier: GPL-2.0
/*
 * migration_lock - let a Xen guest hold off its own live migration
 *
 * /sys/hypervisor/migration_lock mirrors the xenstore node
 * control/migration-lock in this domain's home directory
 * (/local/domain/<domid>/control/migration-lock).  vmmigfs in dom0 creates
 * that node, owned by this domain, and refuses to migrate the domain while
 * its value starts with "1".  Reading the file reports the guest hold as
 * "0" or "1"; root writing "1" or "0" takes or releases it.
 *
 * On a hypervisor with vmmig's migration-lock patches (hyp-patches/xen),
 * the hold is the hypervisor's own per-domain flag instead, taken and
 * released with the SCHEDOP_migration_lock hypercall: Xen itself then
 * refuses log-dirty mode and suspend for this domain, whatever toolstack
 * asks.  The module probes for it at load time and falls back to xenstore
 * when the hypervisor answers -ENOSYS.  The "backend" module parameter
 * (/sys/module/migration_lock/parameters/backend) says which is in use.
 *
 * guestctl(1) is the userspace equivalent; this module is for guests that
 * do not ship it, or that want a plain file (e.g. for systemd units).
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/ctype.h>
#include <linux/err.h>
#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/kobject.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/sysfs.h>

#include <xen/xen.h>
#include <xen/xenbus.h>
#include <xen/interface/sched.h>
#include <asm/xen/hypercall.h>

/*
 * The hypervisor interface added by hyp-patches/xen (public/sched.h there);
 * Linux's headers do not know it, so it is spelled out here.
 */
#ifndef SCHEDOP_migration_lock
#define SCHEDOP_migration_lock	8
#define SCHED_MIGLOCK_query	0
#define SCHED_MIGLOCK_lock	1
#define SCHED_MIGLOCK_unlock	2
#define XEN_MIGLOCK_HOLDER_GUEST	(1U << 0)
struct sched_migration_lock {
	uint32_t cmd;
	uint32_t holders;
	uint64_t guest_since;
	uint64_t slot;
	uint64_t now;
};
#endif

/* true: the hypervisor keeps the hold (SCHEDOP_migration_lock). */
static bool ml_hyp;
static char *backend = "xenstore";
module_param(backend, charp, 0444);
MODULE_PARM_DESC(backend, "where the hold lives: hypervisor or xenstore (read-only, probed at load)");

static int ml_hyp_op(uint32_t cmd, struct sched_migration_lock *op)
{
	memset(op, 0, sizeof(*op));
	op->cmd = cmd;
	return HYPERVISOR_sched_op(SCHEDOP_migration_lock, op);
}

/* Relative to the domain's home, as the guest is allowed to address it. */
#define ML_DIR	"control"
#define ML_NODE	"migration-lock"

/*
 * Node value grammar (shared with vmmigfs and guestctl):
 *	"0" | "1[ reason=TEXT][ ttl=SECONDS]"
 * Only the first token says whether the hold is taken; anything that does
 * not start with the token "1" (garbage included) is reported as unlocked.
 */
static bool ml_value_locked(const char *val)
{
	val = skip_spaces(val);
	return val[0] == '1' && (val[1] == '\0' || isspace(val[1]));
}

static ssize_t ml_show(char *buf)
{
	struct sched_migration_lock op;
	bool locked;
	char *val;
	int err;

	if (ml_hyp) {
		err = ml_hyp_op(SCHED_MIGLOCK_query, &op);
		if (err)
			return err;
		return sysfs_emit(buf, "%d\n",
				  !!(op.holders & XEN_MIGLOCK_HOLDER_GUEST));
	}

	val = xenbus_read(XBT_NIL, ML_DIR, ML_NODE, NULL);
	if (IS_ERR(val)) {
		/* No node yet (vmmigfs has not seen us): nothing holds us. */
		if (PTR_ERR(val) == -ENOENT)
			return sysfs_emit(buf, "0\n");
		return PTR_ERR(val);
	}
	locked = ml_value_locked(val);
	kfree(val);

	return sysfs_emit(buf, "%d\n", locked);
}

static ssize_t ml_store(const char *buf, size_t count)
{
	const char *val;
	int err;

	/*
	 * Exactly "0" or "1", optionally newline-terminated as echo(1)
	 * writes it.  Stricter than kstrtobool() on purpose: "y", "on" or
	 * "10" are typos here, not requests.
	 */
	if (count < 1 || count > 2 || (count == 2 && buf[1] != '\n'))
		return -EINVAL;
	switch (buf[0]) {
	case '0':
		val = "0";
		break;
	case '1':
		val = "1";
		break;
	default:
		return -EINVAL;
	}

	if (ml_hyp) {
		struct sched_migration_lock op;

		err = ml_hyp_op(val[0] == '1' ? SCHED_MIGLOCK_lock
					      : SCHED_MIGLOCK_unlock, &op);
		if (err) {
			pr_warn_ratelimited("SCHEDOP_migration_lock: error %d\n",
					    err);
			return err;
		}
		return count;
	}

	/*
	 * The guest may not create nodes under control/ itself, so this
	 * only works once vmmigfs has created the node with this domain as
	 * owner; until then xenstored answers EACCES.  Pass the error up
	 * so the writer sees it, and say why in the log.
	 */
	err = xenbus_write(XBT_NIL, ML_DIR, ML_NODE, val);
	if (err == -EACCES || err == -ENOENT)
		pr_warn_ratelimited("cannot write xenstore %s/%s (%d): node missing or not writable by this domain; is vmmigfs running in dom0?\n",
				    ML_DIR, ML_NODE, err);
	else if (err)
		pr_warn_ratelimited("cannot write xenstore %s/%s: error %d\n",
				    ML_DIR, ML_NODE, err);
	if (err)
		return err;

	return count;
}

/*
 * Two ways the attribute can be dispatched, depending on hypervisor_kobj's
 * ktype.  Xen's sys-hypervisor.c (built in when CONFIG_XEN_SYS_HYPERVISOR=y,
 * as in Debian) replaces it in every Xen domain with sysfs_ops that cast
 * each attribute to its private struct hyp_sysfs_attr, whose show/store
 * take different arguments than struct kobj_attribute's.  struct
 * ml_hyp_attr mirrors that layout (unchanged since 2.6.x).  Without it,
 * the kobject keeps the generic kobj_sysfs_ops and kobj_attribute is right.
 */
struct ml_hyp_attr {
	struct attribute attr;
	ssize_t (*show)(struct ml_hyp_attr *attr, char *buf);
	ssize_t (*store)(struct ml_hyp_attr *attr, const char *buf,
			 size_t count);
	void *hyp_attr_data;
};

static ssize_t ml_hyp_show(struct ml_hyp_attr *attr, char *buf)
{
	return ml_show(buf);
}

static ssize_t ml_hyp_store(struct ml_hyp_attr *attr, const char *buf,
			    size_t count)
{
	return ml_store(buf, count);
}

static ssize_t ml_kobj_show(struct kobject *kobj, struct kobj_attribute *attr,
			    char *buf)
{
	return ml_show(buf);
}

static ssize_t ml_kobj_store(struct kobject *kobj, struct kobj_attribute *attr,
			     const char *buf, size_t count)
{
	return ml_store(buf, count);
}

/* 0644: anyone may look, only root may take or drop the hold. */
static struct ml_hyp_attr ml_hyp_attr =
	__ATTR(migration_lock, 0644, ml_hyp_show, ml_hyp_store);
static struct kobj_attribute ml_kobj_attr =
	__ATTR(migration_lock, 0644, ml_kobj_show, ml_kobj_store);

/* Whichever of the two above matches hypervisor_kobj's sysfs_ops. */
static struct attribute *ml_attr;

static int __init migration_lock_init(void)
{
	const struct kobj_type *ktype;

	if (!xen_domain())
		return -ENODEV;
	/* dom0 runs vmmigfs and owns the hold nodes; it is not a guest. */
	if (xen_initial_domain()) {
		pr_info("not loading in dom0: this is a guest module\n");
		return -ENODEV;
	}
	if (!hypervisor_kobj)
		return -ENODEV;

	{
		struct sched_migration_lock op;
		int err = ml_hyp_op(SCHED_MIGLOCK_query, &op);

		ml_hyp = err == 0;
		if (ml_hyp) {
			backend = "hypervisor";
			pr_info("hold kept by the hypervisor (SCHEDOP_migration_lock; guest time slot %llu s)\n",
				(unsigned long long)(op.slot / 1000000000ULL));
		} else {
			pr_info("hypervisor has no migration lock (%d): hold kept in xenstore\n",
				err);
		}
	}

	ktype = hypervisor_kobj->ktype;
	if (ktype && ktype->sysfs_ops == &kobj_sysfs_ops) {
		ml_attr = &ml_kobj_attr.attr;
	} else if (IS_ENABLED(CONFIG_XEN_SYS_HYPERVISOR)) {
		ml_attr = &ml_hyp_attr.attr;
	} else {
		pr_err("unknown sysfs_ops on /sys/hypervisor\n");
		return -ENODEV;
	}

	return sysfs_create_file(hypervisor_kobj, ml_attr);
}

static void __exit migration_lock_exit(void)
{
	/* Waits for running show/store calls, so unloading is safe. */
	sysfs_remove_file(hypervisor_kobj, ml_attr);
}

module_init(migration_lock_init);
module_exit(migration_lock_exit);

MODULE_DESCRIPTION("Xen guest migration hold: /sys/hypervisor/migration_lock");
MODULE_AUTHOR("vmmig developers");
MODULE_LICENSE("GPL");
