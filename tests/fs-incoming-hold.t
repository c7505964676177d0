#!/bin/bash
# A guest hold that arrives with a migration keeps its start time: `vmmig
# receive` writes the state record (guest.since) before the domain exists,
# and the hold value into the guest's node only after vmmigfs has seen the
# domain.  The quota (guest_max_hold) still runs from the original start.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/xenenv.sh"
xenenv_init "$@"
xenenv_require_vmmig
xenenv_start

M=$XENENV_MNT
U=$(uuid_for 9)
NODE=/local/domain/9/control/migration-lock
vmmigfs_start "$M"
ok $? "vmmigfs mounts" || done_testing

since=$(( $(date +%s) - 7200 ))
mkdir -p "$XENENV_STATE/domains"
printf 'version=1\nguest.since=%s\n' "$since" >"$XENENV_STATE/domains/$U"
xs_add 9 vm-moved "$U" 262144 1 || bail_out "xsfake add failed"
wait_domain vm-moved || bail_out "vm-moved never appeared"
is "$(fs_cat "$M/vm-moved/lock")" 0 "the domain arrives without a hold (its node reads 0)"
xenstore-write "$NODE" "1 reason=carried over"
wait_file_is 3 "$M/vm-moved/lock" 1
ok $? "the guest's hold is written into the node afterwards"
want=$(date -u -d "@$since" +%Y-%m-%dT%H:%M:%SZ)
hold=$(fs_cat "$M/vm-moved/status" | grep '^hold: guest')
like "$hold" "since=$want " "the hold keeps the record's start ($want)" || diag "$hold"
fs_write "$M/vm-moved/lock" "0 force"
ok $? "so its quota (guest_max_hold = 3600) has already run out: 0 force succeeds" || diag "$FS_ERR"

# Only that first hold: a later one starts when it is seen.
xenstore-write "$NODE" "1 reason=new"
wait_file_is 3 "$M/vm-moved/lock" 1
hold=$(fs_cat "$M/vm-moved/status" | grep '^hold: guest')
unlike "$hold" "since=$want " "a later hold starts now" || diag "$hold"
fs_write "$M/vm-moved/lock" "0 force"
like "$FS_ERR" 'Operation not permitted' "  ...and is within its quota"

done_testing
