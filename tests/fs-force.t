#!/bin/bash
# "0 force" overrides a guest hold only once it is older than the policy's
# guest_max_hold: before, EPERM and nothing changed; after, the hold is gone,
# the guest's node reads 0 and a hold-overridden event is logged.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/xenenv.sh"
xenenv_init "$@"
xenenv_require_vmmig
xenenv_start

M=$XENENV_MNT
D=$M/vm-alpha
NODE=/local/domain/5/control/migration-lock
xs_add 5 vm-alpha "$(uuid_for 5)" 262144 2 || bail_out "xsfake add failed"
policy_write "guest_max_hold = 1" "max_ttl = 86400" "admin_group ="
vmmigfs_start "$M"
ok $? "vmmigfs mounts with guest_max_hold = 1" || done_testing
wait_domain vm-alpha || bail_out "vm-alpha never appeared"
like "$(fs_cat "$M/policy")" '^guest_max_hold *= *1$' "policy file read: guest_max_hold = 1"

# Start right after a second boundary: the quota is counted in whole seconds.
at_second_start
t0=$(_now_us)
xenstore-write "$NODE" "1 reason=stuck"
wait_file_is 3 "$D/lock" 1
ok $? "guest hold set through the xenstore node"
like "$(fs_cat "$D/status")" '^hold: guest .*overridable=[0-9]' "status: the guest hold says when it becomes overridable"

n=$(events_lines)
fs_write "$D/lock" "0 force"
st=$?
elapsed_ms=$(( ($(_now_us) - t0) / 1000 ))
if [ "$st" -ne 0 ] && [[ $FS_ERR == *"Operation not permitted"* ]]; then
    pass "0 force before the quota passed: Operation not permitted"
else
    fail "0 force before the quota passed: Operation not permitted"
    diag "  exit status $st, stderr: '$FS_ERR' (${elapsed_ms} ms after the guest's write)"
fi
is "$(fs_cat "$D/lock")" 1 "  ...still locked"
is "$(xenstore-read "$NODE")" "1 reason=stuck" "  ...the guest node is untouched"
like "$(fs_cat "$D/status")" '^hold: guest .*reason=stuck$' "  ...the guest hold is in status"
events_new_like "$n" ' vm-alpha '
ok $? "  ...an event explains the refusal" || diag "  new events: $(events_since "$n")"

fs_write "$D/lock" 0
ok $? "plain 0 (no admin hold) succeeds" || diag "$FS_ERR"
is "$(fs_cat "$D/lock")" 1 "  ...but does not release the guest hold"

sleep 2
n=$(events_lines)
fs_write "$D/lock" "0 force"
ok $? "0 force after 2s succeeds" || diag "$FS_ERR"
is "$(fs_cat "$D/lock")" 0 "lock reads 0"
unlike "$(fs_cat "$D/status")" '^hold:' "no hold left in status"
is "$(xenstore-read "$NODE")" 0 "the guest node reads 0"
events_new_like "$n" ' vm-alpha hold-overridden( |$)'
ok $? "event hold-overridden logged" || diag "  new events: $(events_since "$n")"
events_new_like "$n" ' vm-alpha hold-overridden .*stuck'
ok $? "  ...naming the guest's reason"

# the guest may take a new hold afterwards
xenstore-write "$NODE" "1 reason=again"
wait_file_is 3 "$D/lock" 1
ok $? "a new guest hold after the override is honoured"

done_testing
