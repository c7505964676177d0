#!/bin/bash
# A locked domain refuses to migrate: EBUSY, nothing started, and events,
# status and migrate say which hold refused it.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/xenenv.sh"
xenenv_init "$@"
xenenv_require_vmmig
xenenv_start

M=$XENENV_MNT
D=$M/vm-alpha
NODE=/local/domain/5/control/migration-lock
xs_add 5 vm-alpha "$(uuid_for 5)" 262144 2 || bail_out "xsfake add failed"
vmmigfs_start "$M"
ok $? "vmmigfs mounts" || done_testing
wait_domain vm-alpha || bail_out "vm-alpha never appeared"

# refused HOLDER REASON: echo localhost > migrate must be refused because of it.
refused() {
    local holder=$1 reason=$2 n st
    n=$(events_lines)
    fs_write "$D/migrate" localhost
    st=$?
    if [ "$st" -ne 0 ] && [[ $FS_ERR == *"Device or resource busy"* ]]; then
        pass "$holder hold: echo localhost > migrate fails with Device or resource busy"
    else
        fail "$holder hold: echo localhost > migrate fails with Device or resource busy"
        diag "  exit status $st, stderr: '$FS_ERR'"
    fi
    events_new_like "$n" " vm-alpha .*refus.*$holder"
    ok $? "$holder hold: an event says the $holder hold refused it" ||
        diag "  new events: $(events_since "$n")"
    events_new_like "$n" " vm-alpha .*$reason"
    ok $? "$holder hold: the event gives the reason '$reason'"
    local lr
    lr=$(status_field "$(fs_cat "$D/status")" last_refusal)
    like "$lr" "$holder" "$holder hold: status last_refusal names the $holder hold"
    like "$lr" "localhost" "$holder hold: status last_refusal names the target"
    like "$(fs_cat "$D/migrate")" "^refused localhost: .*$holder" \
        "$holder hold: cat migrate: refused localhost: ..."
    is "$(fs_cat "$D/lock")" 1 "$holder hold: still locked"
    run_fails "$holder hold: no migration was started (vmmig send not run)" test -e "$XENENV_SEND_CALLS"
}

fs_write "$D/lock" "1 reason=backup"
is "$(fs_cat "$D/lock")" 1 "admin hold set"
refused admin backup
fs_write "$D/lock" 0
is "$(fs_cat "$D/lock")" 0 "admin hold released"

xenstore-write "$NODE" "1 reason=db checkpoint"
wait_file_is 3 "$D/lock" 1
ok $? "guest hold set through the xenstore node"
refused guest "db checkpoint"
like "$(fs_cat "$D/status")" '^hold: guest .*reason=db checkpoint' "the guest hold is untouched"
is "$(xenstore-read "$NODE")" "1 reason=db checkpoint" "the guest node is untouched"

done_testing
