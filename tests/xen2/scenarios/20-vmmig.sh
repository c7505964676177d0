# vmmig across two real Xen hosts: vmmigfs --listen on both (one shared
# key); a guest-held domain is
# refused; unlocked, `vmmig migrate tiny hostB` moves it; hostB's vmmigfs
# lists it with a hold node owned by the guest, sees the guest lock itself
# there, and refuses to send it back while it is held.
M=/run/vmmig
if guest_create tiny; then tap_ok "guest_create tiny on hostA"; else tap_not_ok "guest_create tiny on hostA"; exit 0; fi
mkdir -p $M
KEYSETUP="mkdir -p /etc/vmmig && (umask 077; echo xen2-vmmig-shared-key-0123456789 > /etc/vmmig/key)"
check "vmmigfs --listen on hostA" sh -c "$KEYSETUP && vmmigfs --listen 8123 $M"
check "vmmigfs --listen on hostB" host_run B "$KEYSETUP && mkdir -p $M && vmmigfs --listen 8123 $M"
wait_for "[ -d $M/tiny ]" 10

check "guest holds itself on hostA" guest_run tiny 'guestctl lock --reason "cross-host test"'
wait_for "[ \"\$(cat $M/tiny/lock)\" = 1 ]" 5
out=$(vmmig migrate tiny hostB 2>&1); rc=$?
is "$rc" 1 "held: vmmig migrate tiny hostB is refused"
like "$out" "guest hold \(cross-host test\)" "naming the guest's hold"
check "guest releases its hold" guest_run tiny 'guestctl unlock'
wait_for "[ \"\$(cat $M/tiny/lock)\" = 0 ]" 5

out=$(vmmig migrate tiny hostB 2>&1); rc=$?
is "$rc" 0 "vmmig migrate tiny hostB"
diag "$out"
like "$(host_run B 'xl list')" "tiny " "tiny runs on hostB"
if xl domid tiny >/dev/null 2>&1; then tap_not_ok "tiny is gone from hostA"; else tap_ok "tiny is gone from hostA"; fi
like "$(cat $M/events)" "tiny migrate-done to=hostB" "hostA's events record the migration"
wait_for "host_run B 'cat $M/tiny/status' 2>/dev/null | grep -q '^locked: 0'" 15
like "$(host_run B "cat $M/tiny/status")" "^locked: 0" "hostB's vmmigfs lists tiny, unlocked"
idb=$(guest_domid_on B tiny)
like "$(host_run B "xenstore-ls -p /local/domain/$idb/control")" "migration-lock = \"0\".*\(n$idb\)" \
    "hostB created the hold node, owned by the guest"
out=$(guest_run_on B tiny 'echo 1 > /sys/hypervisor/migration_lock; cat /sys/hypervisor/migration_lock')
is "$out" 1 "the guest locks itself on hostB"
wait_for "[ \"\$(host_run B 'cat $M/tiny/lock')\" = 1 ]" 5
is "$(host_run B "cat $M/tiny/lock")" 1 "hostB's vmmigfs sees the hold"
out=$(host_run B "echo hostA > $M/tiny/migrate" 2>&1)
like "$out" "Device or resource busy" "hostB refuses to send it back while held"

guest_run_on B tiny 'echo 0 > /sys/hypervisor/migration_lock' >/dev/null
host_run B "fusermount3 -u $M" >/dev/null
fusermount3 -u $M
