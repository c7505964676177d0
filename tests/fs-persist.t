#!/bin/bash
# Admin holds survive a restart of vmmigfs (kept in VMMIG_STATE_DIR); a
# released hold stays released.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/xenenv.sh"
xenenv_init "$@"
xenenv_require_vmmig
xenenv_start

M=$XENENV_MNT
D=$M/vm-alpha
xs_add 5 vm-alpha "$(uuid_for 5)" 262144 2 || bail_out "xsfake add failed"
xs_add 6 vm-beta "$(uuid_for 6)" 262144 1 || bail_out "xsfake add failed"

restart() {
    vmmigfs_stop
    is "$VMMIGFS_STATUS" 0 "vmmigfs exits 0 on unmount"
    vmmigfs_start "$M"
    ok $? "vmmigfs mounts again" || done_testing
    wait_domain vm-alpha && wait_domain vm-beta
    ok $? "domains back"
}

vmmigfs_start "$M"
ok $? "vmmigfs mounts" || done_testing
wait_domain vm-alpha && wait_domain vm-beta || bail_out "domains never appeared"

fs_write "$D/lock" "1 reason=backup ttl=600"
ok $? "admin hold with reason and ttl on vm-alpha" || diag "$FS_ERR"
fs_write "$M/vm-beta/lock" "1"
ok $? "admin hold without ttl on vm-beta" || diag "$FS_ERR"
before_a=$(fs_cat "$D/status" | grep '^hold: admin')
before_b=$(fs_cat "$M/vm-beta/status" | grep '^hold: admin')
like "$before_a" 'reason=backup' "status shows the hold"

restart
is "$(fs_cat "$D/lock")" 1 "vm-alpha still locked after the restart"
is "$(fs_cat "$D/status" | grep '^hold: admin')" "$before_a" \
    "same admin hold (by, since, expires, reason)"
is "$(fs_cat "$M/vm-beta/lock")" 1 "vm-beta still locked"
is "$(fs_cat "$M/vm-beta/status" | grep '^hold: admin')" "$before_b" "same hold on vm-beta"

fs_write "$D/migrate" localhost
like "$FS_ERR" 'Device or resource busy' "the restored hold still refuses a migration"
run_fails "no migration was started (vmmig send not run)" test -e "$XENENV_SEND_CALLS"

fs_write "$D/lock" 0
ok $? "release vm-alpha"
restart
is "$(fs_cat "$D/lock")" 0 "vm-alpha stays released after another restart"
is "$(fs_cat "$D/status" | grep -c '^hold:')" 0 "no hold in its status"
is "$(fs_cat "$M/vm-beta/lock")" 1 "vm-beta still locked"

done_testing
