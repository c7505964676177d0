# Issue 2 on a real Xen 4.17: vmmigfs in dom0; the guest locks itself through
# /sys/hypervisor/migration_lock and guestctl; a locked domain is refused; an
# expired guest hold is overridden with force; after unlock the domain
# migrates and its hold channel comes back on the new domid.
M=/run/vmmig
mkdir -p $M
xl domid tiny >/dev/null 2>&1 || guest_create tiny

check "vmmigfs mounts in dom0" vmmigfs $M
wait_for "[ -f $M/backend ]" 10
is "$(cat $M/backend)" xen "backend autodetected as xen"
daemon=
for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = vmmigfs ] && daemon=${p#/proc/}; done
like "$(grep -E '^Cap(Eff|Bnd)' /proc/$daemon/status | tr '\n' ' ')" "CapEff:[[:space:]]+0+ CapBnd:[[:space:]]+0+ " \
    "vmmigfs dropped every capability after mounting (pid $daemon)"
wait_for "[ -d $M/tiny ]" 10
check "the guest has a directory" test -d $M/tiny
is "$(cat $M/tiny/lock)" 0 "tiny starts unlocked"
id=$(guest_domid tiny)
like "$(xenstore-ls -p /local/domain/$id/control 2>&1)" "migration-lock = \"0\".*\(n$id\)" \
    "hold node created, owned by the guest alone"

# A guest may not touch another domain's hold node.
xenstore-write /local/domain/999/control/migration-lock 0
xenstore-chmod /local/domain/999/control/migration-lock n999
out=$(guest_run tiny 'xenstore-write /local/domain/999/control/migration-lock 1 2>&1; echo rc=$?')
like "$out" "rc=[1-9]" "a guest cannot write another domain's hold node"
xenstore-rm /local/domain/999

# Through the kernel module.
out=$(guest_run tiny 'echo 1 > /sys/hypervisor/migration_lock && cat /sys/hypervisor/migration_lock')
is "$out" 1 "guest: echo 1 > /sys/hypervisor/migration_lock"
wait_for "[ \"\$(cat $M/tiny/lock)\" = 1 ]" 5
is "$(cat $M/tiny/lock)" 1 "dom0 sees the guest's hold"
like "$(cat $M/tiny/status)" "^hold: guest since=" "status lists the guest hold"
out=$(sh -c "echo localhost > $M/tiny/migrate" 2>&1)
like "$out" "Device or resource busy" "echo localhost > migrate refused with EBUSY"
like "$(cat $M/tiny/status)" "last_refusal: .*guest hold" "status says which hold refused it"
like "$(cat $M/events)" "tiny migrate-refused to=localhost .*guest hold" "events record the refusal"
out=$(vmmig migrate tiny localhost 2>&1); rc=$?
is "$rc" 1 "vmmig migrate exits 1 on a locked domain"
like "$out" "guest hold" "vmmig migrate names the hold"
is "$(guest_domid tiny)" "$id" "the domain did not move"
out=$(guest_run tiny 'echo 0 > /sys/hypervisor/migration_lock && cat /sys/hypervisor/migration_lock')
is "$out" 0 "guest: echo 0 > /sys/hypervisor/migration_lock"
wait_for "[ \"\$(cat $M/tiny/lock)\" = 0 ]" 5
is "$(cat $M/tiny/lock)" 0 "dom0 sees the release"

# Through guestctl.
check "guest: guestctl lock --reason --ttl" guest_run tiny 'guestctl lock --reason "db checkpoint" --ttl 300'
wait_for "grep -q 'reason=db checkpoint' $M/tiny/status" 5
like "$(cat $M/tiny/status)" "^hold: guest since=.* expires=20.* reason=db checkpoint" \
    "dom0 status shows the guest's reason and expiry"
like "$(guest_run tiny 'guestctl status')" "locked: 1" "guestctl status inside the guest"
like "$(guest_run tiny 'cat /sys/hypervisor/migration_lock')" "^1$" "the module reads guestctl's hold"
check "guest: guestctl unlock" guest_run tiny 'guestctl unlock'
wait_for "[ \"\$(cat $M/tiny/lock)\" = 0 ]" 5
is "$(cat $M/tiny/lock)" 0 "released through guestctl"

# Administrator holds.
check "vmmig lock --reason --ttl" vmmig lock tiny --reason backup --ttl 600
like "$(cat $M/tiny/status)" "^hold: admin by=root\(uid 0\) .*reason=backup" "status shows the admin hold"
like "$(vmmig lock --list)" "tiny locked" "vmmig lock --list"
check "vmmig unlock" vmmig unlock tiny
is "$(cat $M/tiny/lock)" 0 "admin hold released"

# Policy quota and force.
check "policy write: guest_max_hold=3" sh -c "echo guest_max_hold=3 > $M/policy"
check "guest holds again" guest_run tiny 'guestctl lock --reason "long job"'
wait_for "[ \"\$(cat $M/tiny/lock)\" = 1 ]" 5
out=$(vmmig unlock tiny --force 2>&1); rc=$?
is "$rc" 1 "force within the quota is refused"
like "$out" "Operation not permitted.*quota" "and says why"
sleep 4
check "force after the quota overrides the guest hold" vmmig unlock tiny --force
is "$(cat $M/tiny/lock)" 0 "unlocked after force"
like "$(cat $M/events)" "tiny hold-overridden holder=guest by=root" "the override is audited in events"
wait_for "[ \"\$(guest_run tiny 'cat /sys/hypervisor/migration_lock')\" = 0 ]" 10
is "$(guest_run tiny 'cat /sys/hypervisor/migration_lock')" 0 "the guest sees its hold was taken back"
check "policy restored" sh -c "echo guest_max_hold=3600 > $M/policy"

# Static hold from the domain's configuration.
cp /etc/xen/tiny.cfg /tmp/tiny.cfg.orig
echo 'migration = "no"' >> /etc/xen/tiny.cfg
wait_for "[ \"\$(cat $M/tiny/lock)\" = 1 ]" 6
like "$(cat $M/tiny/status)" "^hold: static source=/etc/xen/tiny.cfg" "migration=\"no\" in xl.cfg is a static hold"
out=$(sh -c "echo localhost > $M/tiny/migrate" 2>&1)
like "$out" "Device or resource busy" "a statically locked domain is refused"
cp /tmp/tiny.cfg.orig /etc/xen/tiny.cfg
wait_for "[ \"\$(cat $M/tiny/lock)\" = 0 ]" 6
is "$(cat $M/tiny/lock)" 0 "static hold gone with the config line"

# Unlocked: it migrates, and its hold channel is back for the new domid.
out=$(vmmig migrate tiny localhost 2>&1); rc=$?
is "$rc" 0 "vmmig migrate tiny localhost succeeds when unlocked"
diag "$out"
new=$(guest_domid tiny)
if [ -n "$new" ] && [ "$new" != "$id" ]; then tap_ok "tiny runs with a new domid ($id -> $new)"; else tap_not_ok "tiny has a new domid (got '$new', was $id)"; fi
like "$(guest_run tiny 'echo alive')" "alive" "the guest answers after migration"
wait_for "[ -d $M/tiny ] && grep -q 'domid: $new' $M/tiny/status" 10
like "$(xenstore-ls -p /local/domain/$new/control 2>&1)" "migration-lock = \"0\".*\(n$new\)" \
    "the hold node exists for the new domid, owned by the guest"
out=$(guest_run tiny 'echo 1 > /sys/hypervisor/migration_lock && cat /sys/hypervisor/migration_lock')
is "$out" 1 "the guest can lock again after migration"
wait_for "[ \"\$(cat $M/tiny/lock)\" = 1 ]" 5
is "$(cat $M/tiny/lock)" 1 "dom0 sees the hold after migration"
like "$(cat $M/events)" "tiny migrate-done to=localhost" "events record the migration"

# Holds survive a restart of vmmigfs.
check "admin hold before restart" vmmig lock tiny --reason persist
check "unmount" fusermount3 -u $M
wait_for "! grep -q ' $M ' /proc/mounts" 5
check "vmmigfs mounts again" vmmigfs $M
wait_for "[ -f $M/tiny/status ]" 10
like "$(cat $M/tiny/status)" "hold: admin .*reason=persist" "admin hold survived the restart"
like "$(cat $M/tiny/status)" "hold: guest since=" "guest hold survived the restart"
guest_run tiny 'echo 0 > /sys/hypervisor/migration_lock' >/dev/null
vmmig unlock tiny >/dev/null
fusermount3 -u $M
