#!/bin/bash
# The modes written to migrate: bad requests change nothing; HOST wait[=S]
# is accepted at once and starts when the last hold goes (or ends failed when
# S runs out); HOST force overrides only a guest hold past guest_max_hold,
# audited; cancel stops a waiting job; and vmmig migrate with wait and force.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/xenenv.sh"
xenenv_init "$@"
xenenv_require_vmmig
xenenv_start

M=$XENENV_MNT
D=$M/vm-alpha
NODE=/local/domain/5/control/migration-lock
xs_add 5 vm-alpha "$(uuid_for 5)" 262144 2 || bail_out "xsfake add failed"
policy_write "guest_max_hold = 2" "max_ttl = 86400" "admin_group ="
vmmigfs_start "$M"
ok $? "vmmigfs mounts with guest_max_hold = 2" || done_testing
wait_domain vm-alpha || bail_out "vm-alpha never appeared"

# The fake engine "moves" the domain without removing it: the domain stays,
# so every case can migrate it again.
fake_send "
echo 'progress stage=0 name=pre-migration'
echo 'progress stage=5 name=activation'
echo \"result ok host=\$HOST domid=9 total_ms=10 downtime_ms=1\"
"
calls() { [ -e "$XENENV_SEND_CALLS" ] && wc -l <"$XENENV_SEND_CALLS" || echo 0; }

# Bad requests: EINVAL, explained, nothing started, migrate unchanged.
for req in "hostB wait force" "hostB force wait" "hostB wait=abc" "hostB wait=0" "hostB wait=-3" \
           "hostB wait wait" "hostB now" "hostB wait 5" "hostB force extra" "wait" "force" \
           "cancel now" "-x"; do
    n=$(events_lines)
    fs_write "$D/migrate" "$req"
    st=$?
    [ "$st" -ne 0 ] && [[ $FS_ERR == *"Invalid argument"* ]]
    ok $? "echo '$req' > migrate: Invalid argument" || diag "status $st: $FS_ERR"
    events_new_like "$n" " vm-alpha write-rejected file=migrate .*why=\""
    ok $? "  ...explained in events"
done
is "$(fs_cat "$D/migrate")" idle "migrate still reads idle"
is "$(calls)" 0 "no migration was started"
n=$(events_lines)
fs_write "$D/migrate" "hostB wait force"
like "$(events_since "$n")" 'why="wait and force cannot be combined' "the event says why"

# wait: deferred until the last hold goes.
fs_write "$D/lock" "1 reason=backup"
n=$(events_lines)
fs_write "$D/migrate" "hostB wait=30"
ok $? "echo 'hostB wait=30' > migrate on a locked domain: accepted at once" || diag "$FS_ERR"
is "$(fs_cat "$D/migrate")" "waiting hostB: locked: admin hold by root (backup)" \
    "migrate: waiting HOST: locked: WHY"
st=$(fs_cat "$D/status")
is "$(status_field "$st" migration)" "waiting hostB: locked: admin hold by root (backup)" \
    "status: the same"
like "$(status_field "$st" wait_until)" '^20[0-9-]+T[0-9:]+Z$' "status: wait_until: TIME"
events_new_like "$n" ' vm-alpha migrate-waiting to=hostB by=root uid=0 timeout=30 why="admin hold by root \(backup\)"$'
ok $? "event migrate-waiting" || diag "$(events_since "$n")"
is "$(calls)" 0 "nothing started yet"
fs_write "$D/migrate" hostC
like "$FS_ERR" 'Device or resource busy' "another request while waiting: EBUSY"
xenstore-write "$NODE" "1 reason=db job"
wait_file_is 3 "$D/migrate" "waiting hostB: locked: guest hold (db job); admin hold by root (backup)"
ok $? "migrate follows the holds: the guest's too"
fs_write "$D/lock" 0
wait_file_is 3 "$D/migrate" "waiting hostB: locked: guest hold (db job)"
ok $? "the admin hold released: still waiting for the guest"
is "$(calls)" 0 "nothing started yet"
xenstore-write "$NODE" 0
wait_file_is 5 "$D/migrate" "done hostB"
ok $? "the guest's release starts it, and it completes" || diag "$(fs_cat "$D/migrate")"
is "$(cat "$XENENV_SEND_CALLS")" "send --port=8123 --timeout=30 5 hostB" "  ...one vmmig send, without --force"
events_new_like "$n" ' vm-alpha migrate-started to=hostB by=root uid=0 domid=5$'
ok $? "  ...in the name of who asked"

# wait=S runs out.
fs_write "$D/lock" "1 reason=long job"
n=$(events_lines)
fs_write "$D/migrate" "hostB wait=1"
ok $? "echo 'hostB wait=1' > migrate" || diag "$FS_ERR"
wait_file_like 4 "$D/migrate" '^failed '
is "$(fs_cat "$D/migrate")" "failed hostB: still locked after 1 s: admin hold by root (long job)" \
    "timeout: failed HOST: still locked after S s: WHY"
events_new_like "$n" ' vm-alpha migrate-failed to=hostB why="still locked after 1 s: admin hold by root \(long job\)"$'
ok $? "event migrate-failed"
is "$(calls)" 1 "nothing started"

# cancel a waiting job.
fs_write "$D/migrate" "hostB wait"
is "$(fs_cat "$D/migrate")" "waiting hostB: locked: admin hold by root (long job)" "waiting without a limit"
is "$(status_field "$(fs_cat "$D/status")" wait_until)" never "status: wait_until: never"
n=$(events_lines)
fs_write "$D/migrate" cancel
ok $? "echo cancel > migrate" || diag "$FS_ERR"
is "$(fs_cat "$D/migrate")" "failed hostB: cancelled by root while waiting" "cancelled while waiting"
events_new_like "$n" ' vm-alpha migrate-cancel by=root uid=0 to=hostB waiting=yes$'
ok $? "event migrate-cancel"
fs_write "$D/migrate" cancel
like "$FS_ERR" 'No such process' "nothing left to cancel: ESRCH"
fs_write "$D/lock" 0

# force: a guest hold within its quota is not overridden; an admin hold never.
at_second_start
xenstore-write "$NODE" "1 reason=stuck"
wait_file_is 3 "$D/lock" 1
n=$(events_lines)
fs_write "$D/migrate" "hostB force"
st=$?
[ "$st" -ne 0 ] && [[ $FS_ERR == *"Operation not permitted"* ]]
ok $? "force within the guest quota: Operation not permitted" || diag "status $st: $FS_ERR"
like "$(fs_cat "$D/migrate")" '^refused hostB: guest hold \(stuck\) is within its quota: it may be overridden after .* \(policy guest_max_hold=2\)$' \
    "migrate says until when"
events_new_like "$n" ' vm-alpha migrate-refused to=hostB by=root uid=0 why="guest hold \(stuck\) is within its quota'
ok $? "event migrate-refused"
fs_write "$D/migrate" hostB
like "$FS_ERR" 'Device or resource busy' "without force: EBUSY"
sleep 2.2
fs_write "$D/lock" "1 reason=admin"
fs_write "$D/migrate" "hostB force"
like "$FS_ERR" 'Device or resource busy' "force past the quota but with an admin hold: EBUSY"
like "$(fs_cat "$D/migrate")" 'force overrides only a guest hold past its quota' "  ...and says why"
fs_write "$D/lock" 0
is "$(calls)" 1 "nothing started"
n=$(events_lines)
fs_write "$D/migrate" "hostB force"
ok $? "force past the guest quota: accepted" || diag "$FS_ERR"
wait_file_is 5 "$D/migrate" "done hostB"
ok $? "  ...and done"
is "$(tail -n 1 "$XENENV_SEND_CALLS")" "send --force --port=8123 --timeout=30 5 hostB" \
    "  ...vmmig send gets --force"
events_new_like "$n" ' vm-alpha migrate-forced to=hostB by=root uid=0 holder=guest held_since=[0-9T:Z-]+ reason="stuck"$'
ok $? "  ...audited: migrate-forced with the overridden hold" || diag "$(events_since "$n")"
events_new_like "$n" ' vm-alpha migrate-started to=hostB by=root uid=0 domid=5 force=yes$'
ok $? "  ...migrate-started says force=yes"
is "$(xenstore-read "$NODE")" "1 reason=stuck" "the guest's hold itself is left as it was"

# vmmig migrate with the modes.
VM() { VMMIG_MOUNT=$M "$VMMIG" migrate "$@"; }
out=$(VM vm-alpha hostB 2>&1)
is "$?" 1 "vmmig migrate on a guest-held domain: exit 1"
like "$out" '^vmmig migrate: vm-alpha: Device or resource busy: locked: guest hold \(stuck\)$' \
    "  ...naming the hold" || diag "$out"
out=$(VM vm-alpha hostB force 2>&1)
is "$?" 0 "vmmig migrate vm-alpha hostB force: exit 0" || diag "$out"
like "$out" '^vm-alpha: migrated to hostB in [0-9.]+ s \(downtime 1 ms\)$' "  ...migrated" || diag "$out"
xenstore-write "$NODE" 0
wait_file_is 3 "$D/lock" 0
fs_write "$D/lock" "1 reason=short"
(sleep 1; echo 0 >"$D/lock") &
REL=$!
out=$(VM vm-alpha hostB wait=20 2>&1)
st=$?
wait "$REL"
is "$st" 0 "vmmig migrate vm-alpha hostB wait=20, the hold released a second later: exit 0" || diag "$out"
like "$out" '^vm-alpha: waiting hostB: locked: admin hold by root \(short\)$' "  ...shows that it waits"
like "$out" '^vm-alpha: migrated to hostB in ' "  ...then the end"
fs_write "$D/lock" "1 reason=stays"
out=$(VM vm-alpha hostB wait=1 2>&1)
is "$?" 1 "vmmig migrate ... wait=1 on a domain that stays locked: exit 1"
like "$out" '^vmmig migrate: vm-alpha: failed hostB: still locked after 1 s: admin hold by root \(stays\)$' \
    "  ...with the reason" || diag "$out"
out=$(VM --no-wait vm-alpha hostB wait 2>&1)
is "$?" 0 "vmmig migrate --no-wait ... wait: exit 0 at once"
is "$(fs_cat "$D/migrate")" "waiting hostB: locked: admin hold by root (stays)" "  ...the job waits"
out=$(VM vm-alpha cancel 2>&1)
is "$?" 0 "vmmig migrate vm-alpha cancel: exit 0"
is "$(fs_cat "$D/migrate")" "failed hostB: cancelled by root while waiting" "  ...cancelled"
out=$(VM vm-alpha cancel 2>&1)
is "$?" 1 "cancel with nothing to cancel: exit 1"
like "$out" 'No such process: no migration is running or waiting' "  ...says so" || diag "$out"
for bad in "vm-alpha hostB bogus" "vm-alpha hostB wait=0" "vm-alpha cancel now" "vm-alpha" \
           "vm-alpha hostB wait force"; do
    # shellcheck disable=SC2086
    out=$(VM $bad 2>&1)
    is "$?" 2 "vmmig migrate $bad: usage error (exit 2)"
done

done_testing
