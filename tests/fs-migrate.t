#!/bin/bash
# A migration through the migrate file, with a fake `vmmig send` that prints
# the engine's progress and result lines: the request it gets from the
# policy, progress in migrate and status (poll() wakes on each change), the
# end (done, or failed with the engine's reason), cancel, and the forwarding
# entry a moved domain leaves behind (until forward_ttl, or a new domain).
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/xenenv.sh"
xenenv_init "$@"
xenenv_require_vmmig
xenenv_start

M=$XENENV_MNT
D=$M/vm-alpha
POLLER=$(cd "$(dirname "$0")" && pwd)/lib/poll-events.py
xs_add 5 vm-alpha "$(uuid_for 5)" 262144 2 || bail_out "xsfake add failed"
xs_add 6 vm-beta "$(uuid_for 6)" 262144 1 || bail_out "xsfake add failed"
policy_write "guest_max_hold = 3600" "max_ttl = 86400" "admin_group =" "forward_ttl = 3"
vmmigfs_start "$M"
ok $? "vmmigfs mounts" || done_testing
wait_domain vm-alpha && wait_domain vm-beta || bail_out "domains never appeared"

pol=$(fs_cat "$M/policy")
like "$pol" '^transport = tcp$' "policy: transport = tcp by default"
like "$pol" '^port = 8123$' "policy: port = 8123 by default"
like "$pol" '^migrate_timeout = 30$' "policy: migrate_timeout = 30 by default"
like "$pol" '^forward_ttl = 3$' "policy: forward_ttl from the file"
like "$pol" '^accept_incoming = yes$' "policy: accept_incoming = yes by default"

# The fake engine moves the domain in steps, each released by a go.N file.
fake_send "
echo 'progress stage=0 name=pre-migration'
echo 'progress stage=1 name=reservation'
step 1
echo 'progress stage=2 name=iterative-pre-copy round=1 sent=1048576 dirty_pages=900 dirty_rate=4500'
step 2
echo 'progress stage=2 name=iterative-pre-copy round=3 sent=123456789 dirty_pages=40 dirty_rate=310'
echo 'vmmig send: some text for people'
step 3
echo 'progress stage=3 name=stop-and-copy sent=130000000 dirty_pages=40'
echo 'progress stage=4 name=commitment sent=130000000'
\"\$XSFAKE\" del \"\$DOMID\"
echo 'progress stage=5 name=activation sent=130000000'
echo \"result ok host=\$HOST domid=9 total_ms=2345 downtime_ms=67 sent=130000000 rounds=3\"
"

n=$(events_lines)
fs_write "$D/migrate" hostB
ok $? "echo hostB > migrate: accepted" || diag "$FS_ERR"
wait_file_is 3 "$D/migrate" "running hostB stage=1 reservation"
ok $? "migrate: running hostB stage=1 reservation" || diag "migrate: $(fs_cat "$D/migrate")"
is "$(cat "$XENENV_SEND_CALLS")" "send --port=8123 --timeout=30 5 hostB" \
    "vmmig send gets the policy's port and timeout, the domid and the host"
st=$(fs_cat "$D/status")
is "$(status_field "$st" migration)" "running hostB" "status: migration: running hostB"
is "$(status_field "$st" stage)" "1 reservation" "status: stage: 1 reservation"

out=$(cd "$XENENV_DIR" && timeout -k 1 30 "$PYTHON" "$POLLER" "$D/migrate" 300 3000 \
    -- touch go.1 -- touch go.2 2>&1)
note "$out"
like "$(printf '%s\n' "$out" | grep '^1 wake:')" '^1 wake: yes ' "poll() on migrate wakes on a new round"
is "$(printf '%s\n' "$out" | grep '^1 new:' | tail -n 1)" \
    "1 new: running hostB stage=2 iterative-pre-copy round=1 sent=1048576 dirty_rate=4500" \
    "  ...and migrate reads the new progress"
like "$(printf '%s\n' "$out" | grep '^2 wake:')" '^2 wake: yes ' "poll() wakes again on the next one"
is "$(printf '%s\n' "$out" | grep '^2 new:' | tail -n 1)" \
    "2 new: running hostB stage=2 iterative-pre-copy round=3 sent=123456789 dirty_rate=310" \
    "  ...migrate: running HOST stage=N NAME round=R sent=BYTES dirty_rate=PPS"
st=$(fs_cat "$D/status")
is "$(status_field "$st" stage)" "2 iterative-pre-copy" "status: stage: 2 iterative-pre-copy"
is "$(status_field "$st" round)" "3" "status: round: 3"
is "$(status_field "$st" bytes_sent)" "123456789" "status: bytes_sent: 123456789"
is "$(status_field "$st" dirty_rate)" "310 pages/s" "status: dirty_rate: 310 pages/s"
ev=$(events_since "$n")
like "$ev" ' vm-alpha migrate-started to=hostB by=root uid=0 domid=5$' "event migrate-started"
for s in "0 name=pre-migration" "1 name=reservation" "2 name=iterative-pre-copy"; do
    like "$ev" " vm-alpha migrate-stage to=hostB stage=$s\$" "event migrate-stage stage=$s"
done
is "$(printf '%s\n' "$ev" | grep -c 'migrate-stage to=hostB stage=2 ')" 1 \
    "one event per stage, not per progress line"

touch "$XENENV_DIR/go.3"
wait_file_is 5 "$D/migrate" "migrated hostB"
ok $? "after the move, migrate reads: migrated hostB" || diag "migrate: $(fs_cat "$D/migrate")"
ev=$(events_since "$n")
like "$ev" ' vm-alpha migrate-done to=hostB uuid=[-0-9a-f]+ domid=5 new_domid=9 total_ms=2345 downtime_ms=67$' \
    "event migrate-done with the new domid, total and downtime"
like "$ev" ' vm-alpha domain-removed domid=5 ' "event domain-removed"
like "$ev" ' vm-alpha forward-added to=hostB uuid=[-0-9a-f]+ expires=' "event forward-added"
like "$(fs_ls "$M")" '^vm-alpha$' "the domain's directory stays as a forwarding entry"
st=$(fs_cat "$D/status")
like "$st" '^migration: migrated to hostB at 20[0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9:]+Z$' \
    "status: migration: migrated to hostB at TIME"
is "$(printf '%s\n' "$st" | sed 's/ at .*//')" "name: vm-alpha
uuid: $(uuid_for 5)
state: migrated
migration: migrated to hostB
bytes_sent: 130000000
downtime_ms: 67
total_ms: 2345" "status of a forwarding entry: name, uuid, state, migration, what the move took"
is "$(fs_cat "$D/lock")" 0 "lock reads 0"
is "$(fs_cat "$D/peer")" "" "peer reads nothing"
n2=$(events_lines)
for f in "lock:1 reason=x" "migrate:hostC" "migrate:cancel" "peer:vm-beta"; do
    fs_write "$D/${f%%:*}" "${f#*:}"
    st=$?
    [ "$st" -ne 0 ] && [[ $FS_ERR == *"Object is remote"* ]]
    ok $? "echo '${f#*:}' > ${f%%:*}: Object is remote (EREMOTE)" || diag "status $st: $FS_ERR"
done
events_new_like "$n2" ' vm-alpha write-rejected file=lock .*why="vm-alpha has migrated to hostB"'
ok $? "  ...explained in events: vm-alpha has migrated to hostB"
fs_write "$M/vm-beta/peer" vm-alpha
like "$FS_ERR" 'Invalid argument' "naming the forwarding entry as a peer: EINVAL"

wait_no_domain vm-alpha 6
ok $? "the forwarding entry goes after forward_ttl (3 s)"
events_new_like "$n" ' vm-alpha forward-removed to=hostB why=expired$'
ok $? "event forward-removed why=expired"

# A new domain with the name replaces the forwarding entry.
rm -f "$XENENV_DIR"/go.*
touch "$XENENV_DIR"/go.1 "$XENENV_DIR"/go.2 "$XENENV_DIR"/go.3
policy_line() { fs_write "$M/policy" "$1" || diag "policy $1: $FS_ERR"; }
policy_line "forward_ttl = 3600"
fs_write "$M/vm-beta/migrate" hostB
wait_file_is 5 "$M/vm-beta/migrate" "migrated hostB"
ok $? "vm-beta moves and leaves a forwarding entry"
n=$(events_lines)
xs_add 7 vm-beta "$(uuid_for 7)" 262144 1 || bail_out "xsfake add failed"
wait_file_is 5 "$M/vm-beta/migrate" "idle"
ok $? "a new domain named vm-beta replaces the forwarding entry"
st=$(fs_cat "$M/vm-beta/status")
is "$(status_field "$st" domid)" 7 "  ...status is the new domain's"
events_new_like "$n" ' vm-beta forward-removed to=hostB why=replaced domid=7$'
ok $? "  ...event forward-removed why=replaced"

# The engine's reason for a failure; the policy's transport and timeout.
policy_line "transport = ssh %h vmmig receive"
policy_line "migrate_timeout = 7"
fake_send "
echo 'progress stage=0 name=pre-migration'
echo 'progress stage=1 name=reservation'
echo 'vmmig send: hostB refused the request'
echo 'result failed stage=1 why=\"not enough memory on hostB (need 256 MiB)\" domain=running-here'
exit 1
"
n=$(events_lines)
fs_write "$M/vm-beta/migrate" hostB
ok $? "a migration that will fail is accepted" || diag "$FS_ERR"
wait_file_like 5 "$M/vm-beta/migrate" '^failed '
is "$(fs_cat "$M/vm-beta/migrate")" "failed hostB: stage 1: not enough memory on hostB (need 256 MiB)" \
    "migrate: failed HOST: stage N: the engine's why"
is "$(tail -n 1 "$XENENV_SEND_CALLS")" "send --via ssh %h vmmig receive --timeout=7 7 hostB" \
    "vmmig send gets the policy's transport template and timeout"
events_new_like "$n" ' vm-beta migrate-failed to=hostB why="stage 1: not enough memory on hostB \(need 256 MiB\)"$'
ok $? "event migrate-failed with the why" || diag "$(events_since "$n")"
is "$(status_field "$(fs_cat "$M/vm-beta/status")" state)" running "the domain is still here"

# Cancel: like the real agent, the fake one stops on SIGTERM with a result.
fake_send "
trap 'kill \$! 2>/dev/null; echo \"result failed stage=2 domain=running-here why=\\\"cancelled\\\"\"; exit 1' TERM
echo 'progress stage=2 name=iterative-pre-copy round=1 sent=4096 dirty_rate=10'
echo 'vmmig send: copying memory'
sleep 30 & wait
"
fs_write "$M/vm-beta/migrate" hostB
wait_file_like 3 "$M/vm-beta/migrate" '^running hostB stage=2 '
ok $? "a slow migration runs"
fs_write "$M/vm-beta/migrate" hostC
like "$FS_ERR" 'Device or resource busy' "a second request while it runs: EBUSY"
n=$(events_lines)
fs_write "$M/vm-beta/migrate" cancel
ok $? "echo cancel > migrate" || diag "$FS_ERR"
wait_file_is 5 "$M/vm-beta/migrate" "failed hostB: stage 2: cancelled by root"
ok $? "migrate: failed hostB: stage 2: cancelled by root" || diag "$(fs_cat "$M/vm-beta/migrate")"
events_new_like "$n" ' vm-beta migrate-cancel by=root uid=0 to=hostB$'
ok $? "event migrate-cancel"
fs_write "$M/vm-beta/migrate" cancel
like "$FS_ERR" 'No such process' "cancel with nothing running: ESRCH"

# A killed agent: vmmigfs runs `send --recover` on the same domain, and the
# recovery's result says where the domain runs.
fake_send "
case \" \$* \" in
*' --recover '*)
    echo \"recover \$*\" >>'$XENENV_DIR/recover.calls'
    echo 'result failed stage=0 domain=running-here why=\"the migration agent died; the domain kept running here\"'
    exit 1 ;;
esac
echo 'progress stage=2 name=iterative-pre-copy round=1'
echo 'vmmig send: lost hostB'
kill -9 \$\$
"
n=$(events_lines)
fs_write "$M/vm-beta/migrate" hostB
wait_file_like 5 "$M/vm-beta/migrate" '^failed '
is "$(fs_cat "$M/vm-beta/migrate")" \
    "failed hostB: stage 2: the agent was killed by signal 9: vmmig send: lost hostB; the migration agent died; the domain kept running here" \
    "killed: the stage, the signal, and what the recovery found"
like "$(cat "$XENENV_DIR/recover.calls" 2>/dev/null)" '^recover send --recover .* 7 hostB$' \
    "the recovery ran as send --recover DOMID HOST"
events_new_like "$n" ' vm-beta migrate-recover to=hostB why="stage 2: the agent was killed by signal 9: vmmig send: lost hostB" domid=[0-9]*$'
ok $? "event migrate-recover"

# Killed after the commit point, and the destination runs the domain: done.
xs_add 9 vm-delta "$(uuid_for 9)" 262144 1 || bail_out "xsfake add failed"
wait_domain vm-delta || bail_out "vm-delta never appeared"
fake_send "
case \" \$* \" in
*' --recover '*)
    echo 'result ok host=hostB recovered=destination-runs-it'
    \"\$XSFAKE\" del \"\$DOMID\"
    exit 0 ;;
esac
echo 'progress stage=4 name=commitment'
kill -9 \$\$
"
n=$(events_lines)
fs_write "$M/vm-delta/migrate" hostB
wait_file_like 5 "$M/vm-delta/migrate" '^(done|migrated) '
like "$(fs_cat "$M/vm-delta/migrate")" "^(done|migrated) hostB" "killed after commit, recovery finds hostB runs it: done"
events_new_like "$n" ' vm-delta migrate-done to=hostB .* recovered=yes$'
ok $? "event migrate-done says recovered=yes"

# vmmig migrate follows the job: a line per stage when not on a terminal.
# The fake engine goes on to stage N once the tool has shown stage N-1.
policy_line "transport = tcp"
rm -f "$XENENV_DIR"/go.*
fake_send "
echo 'progress stage=0 name=pre-migration'
step 1; echo 'progress stage=1 name=reservation'
step 2; echo 'progress stage=2 name=iterative-pre-copy round=1 sent=2097152 dirty_rate=5'
step 3; echo 'progress stage=3 name=stop-and-copy'
step 4; echo 'progress stage=4 name=commitment'
\"\$XSFAKE\" del \"\$DOMID\"
step 5; echo 'progress stage=5 name=activation'
step 6; echo \"result ok host=\$HOST domid=11 total_ms=900 downtime_ms=21\"
"
TOOL_OUT=$XENENV_DIR/tool.out
(VMMIG_MOUNT=$M "$VMMIG" migrate vm-beta hostB >"$TOOL_OUT" 2>&1; echo $? >"$XENENV_DIR/tool.rc") &
TOOL_PID=$!
xenenv_defer 'kill $TOOL_PID 2>/dev/null; wait $TOOL_PID 2>/dev/null'
for s in 1 2 3 4 5 6; do
    # (generous: once, under a loaded machine, stage 0 took longer than 5 s)
    wait_for 20 grep -q "stage $((s - 1)) " "$TOOL_OUT" || break
    touch "$XENENV_DIR/go.$s"
done
wait_for 10 test -s "$XENENV_DIR/tool.rc"
out=$(cat "$TOOL_OUT")
is "$(cat "$XENENV_DIR/tool.rc" 2>/dev/null)" 0 "vmmig migrate vm-beta hostB: exit 0" || diag "$out"
is "$(printf '%s\n' "$out" | grep -v 'migrated to')" "vm-beta: stage 0 pre-migration
vm-beta: stage 1 reservation
vm-beta: stage 2 iterative-pre-copy
vm-beta: stage 3 stop-and-copy
vm-beta: stage 4 commitment
vm-beta: stage 5 activation" "  ...one line per stage" || diag "$out"
like "$out" '^vm-beta: migrated to hostB in [0-9.]+ s \(downtime 21 ms\)$' "  ...and the end, with the downtime"
is "$(fs_cat "$M/vm-beta/migrate")" "migrated hostB" "vm-beta has a forwarding entry"

xs_add 8 vm-gamma "$(uuid_for 8)" 262144 1 || bail_out "xsfake add failed"
wait_domain vm-gamma || bail_out "vm-gamma never appeared"
fake_send "
echo 'progress stage=0 name=pre-migration'
echo 'result failed stage=0 why=\"cannot connect to hostB:8123\" domain=running-here'
exit 1
"
out=$(VMMIG_MOUNT=$M "$VMMIG" migrate vm-gamma hostB 2>&1)
is "$?" 1 "vmmig migrate of a failing migration: exit 1"
like "$out" '^vmmig migrate: vm-gamma: failed hostB: stage 0: cannot connect to hostB:8123$' \
    "  ...with the reason" || diag "$out"
out=$(VMMIG_MOUNT=$M "$VMMIG" migrate vm-beta hostC 2>&1)
is "$?" 1 "vmmig migrate of a forwarding entry: exit 1"
like "$out" 'Object is remote: vm-beta has migrated to hostB' "  ...saying where it went" || diag "$out"

done_testing
