# make demo: vmmig on a real Xen 4.17 host (emulated by QEMU), narrated.
# Every step is also checked, so the demo cannot quietly show a failure.
M=/run/vmmig
say()  { diag ""; diag "== $*"; }
show() { # run a dom0 command and print it with its output
    diag "dom0# $*"
    out=$(sh -c "$*" 2>&1); rc=$?
    [ -n "$out" ] && diag "$out"
    [ $rc -eq 0 ] || diag "(exit status $rc)"
    return $rc
}
gshow() { # run a guest command and print it with its output
    diag "tiny# $*"
    out=$(guest_run tiny "$*" 2>&1); rc=$?
    [ -n "$out" ] && diag "$out"
    [ $rc -eq 0 ] || diag "(exit status $rc)"
    return $rc
}

say "A Xen 4.17 host with a Debian dom0 and one PVH guest, tiny"
guest_create tiny
show "xl list"

say "Mount the control filesystem: a directory per domain"
show "mkdir -p $M && vmmigfs $M"
wait_for "[ -d $M/tiny ]" 10
show "ls $M $M/tiny"
show "cat $M/tiny/status"

say "The guest locks itself through its kernel module"
gshow "echo 1 > /sys/hypervisor/migration_lock; cat /sys/hypervisor/migration_lock"
wait_for "[ \"\$(cat $M/tiny/lock)\" = 1 ]" 5
show "cat $M/tiny/lock"
show "grep hold: $M/tiny/status"

say "A migration of a locked domain is refused, and says why"
show "echo localhost > $M/tiny/migrate"
like "$out" "Device or resource busy" "refused with EBUSY"
show "vmmig migrate tiny localhost"
show "grep last_refusal $M/tiny/status"
show "tail -n 2 $M/events"
gshow "echo 0 > /sys/hypervisor/migration_lock"
wait_for "[ \"\$(cat $M/tiny/lock)\" = 0 ]" 5

say "The guest holds itself with guestctl, with a reason and a ttl"
gshow "guestctl lock --reason 'db checkpoint' --ttl 300"
wait_for "grep -q 'db checkpoint' $M/tiny/status" 5
show "grep hold: $M/tiny/status"
gshow "guestctl status"
gshow "guestctl unlock"
wait_for "[ \"\$(cat $M/tiny/lock)\" = 0 ]" 5

say "An administrator's hold"
show "vmmig lock tiny --reason 'backup window' --ttl 600"
show "vmmig lock --list"
show "echo localhost > $M/tiny/migrate"
like "$out" "Device or resource busy" "admin hold refuses the migration"
show "vmmig unlock tiny"

say "A guest hold past the policy's quota is overridden with force (audited)"
show "echo guest_max_hold=5 > $M/policy; cat $M/policy"
gshow "guestctl lock --reason 'stuck job'"
wait_for "[ \"\$(cat $M/tiny/lock)\" = 1 ]" 5
show "vmmig unlock tiny --force"
diag "(within the quota: refused; waiting 6 s for the quota to pass)"
sleep 6
show "vmmig unlock tiny --force"
check "force after the quota" test "$(cat $M/tiny/lock)" = 0
show "grep -E 'force-refused|hold-overridden' $M/events"
wait_for "[ \"\$(guest_run tiny 'cat /sys/hypervisor/migration_lock')\" = 0 ]" 10
gshow "cat /sys/hypervisor/migration_lock; guestctl status"
show "echo guest_max_hold=3600 > $M/policy"

say "Unlocked, the domain migrates (here within the host: new domid, same UUID)"
show "vmmig migrate tiny localhost"
check "migration succeeded" test $rc -eq 0
show "xl list"
wait_for "grep -q \"domid: \$(xl domid tiny)\" $M/tiny/status" 10
show "cat $M/tiny/status"
gshow "echo still here: \$(cat /sys/hypervisor/migration_lock)"
fusermount3 -u $M
