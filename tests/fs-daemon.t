#!/bin/bash
# vmmigfs as a daemon (no -f): `$(vmmigfs DIR)` returns once it has detached,
# relative --state-dir/--policy still work after it changes to /, the daemon
# runs with no capabilities while its helper keeps them, and an unmount ends
# both processes.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/xenenv.sh"
xenenv_init "$@"
xenenv_require_vmmig
xenenv_start

M=$XENENV_MNT
VMMIGFS_MNT=$M   # for wait_domain and the cleanup trap
xs_add 5 vm-alpha "$(uuid_for 5)" || bail_out "xsfake add failed"
mkdir -p "$XENENV_DIR/rel"
cd "$XENENV_DIR/rel" || bail_out "cd"
echo "guest_max_hold = 77" > policy.rel

# Processes of other vmmigfs instances on this machine are not ours.
before=" $(pgrep -d ' ' -x 'vmmigfs|vmmigfs-helper|vmmig') "
start=$EPOCHREALTIME
out=$(LD_PRELOAD=$XENSHIM_SO ASAN_OPTIONS=verify_asan_link_order=0 \
      timeout 10 "$VMMIG" fs --state-dir state.rel --policy policy.rel "$M" 2>&1)
rc=$?
is "$rc" 0 "\$(vmmig fs DIR) returns 0 (not a timeout): $out"
elapsed=$(awk "BEGIN{print ($EPOCHREALTIME - $start) < 5}")
is "$elapsed" 1 "and returns promptly"
wait_for 5 is_mounted "$M"
ok $? "mounted"
cd / || bail_out "cd /"
wait_domain vm-alpha
ok $? "domain listed"
like "$(fs_cat "$M/policy")" "guest_max_hold = 77" "a relative --policy was resolved before detaching"
fs_write "$M/vm-alpha/lock" "1 reason=rel"
ok $? "lock write" || diag "$FS_ERR"
ls "$XENENV_DIR/rel/state.rel/domains/" >/dev/null 2>&1
ok $? "a relative --state-dir was resolved before detaching"

daemon= helper=
for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    case $before in *" $pid "*) continue ;; esac
    c=$(cat "$p/comm" 2>/dev/null)
    [ "$c" = vmmigfs ] && daemon=$pid
    [ "$c" = vmmigfs-helper ] && helper=$pid
done
isnt "$daemon" "" "daemon found"
isnt "$helper" "" "helper found"
like "$(grep -E '^CapEff' /proc/$daemon/status)" 'CapEff:[[:space:]]+0+$' "daemon: no effective capabilities"
like "$(grep -E '^CapBnd' /proc/$daemon/status)" 'CapBnd:[[:space:]]+0+$' "daemon: empty bounding set"
like "$(grep -E '^NoNewPrivs' /proc/$daemon/status)" 'NoNewPrivs:[[:space:]]+1' "daemon: no_new_privs"
unlike "$(grep -E '^CapEff' /proc/$helper/status)" 'CapEff:[[:space:]]+0+$' "helper keeps its capabilities"

fusermount3 -u "$M"
ok $? "unmount"
wait_for 5 _xenenv_dead "$daemon"
ok $? "daemon exits after the unmount"
wait_for 5 _xenenv_dead "$helper"
ok $? "helper exits with it"
done_testing
