#!/bin/bash
# The guest's side on QEMU hosts: the real guestctl (the static build, in
# the initramfs) holds the domain over the virtio-serial port
# org.vmmig.hold; vmmigfs shows and enforces the hold, refuses garbage, an
# overlong line and a flood (events), survives its own restart; then
# `vmmig console` through a live migration: keys typed every 50 ms all
# arrive once and in order, and a guest ticker's output is neither lost
# nor duplicated; finally a hold forced over (past guest_max_hold) travels
# to the other host, where the guest still sees it.  One boot.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/lib.sh"
qenv_init "$@"
qenv_start
MA=$QDIR/A/mnt MB=$QDIR/B/mnt
PORT=/dev/virtio-ports/org.vmmig.hold

qenv_boot A web1
ok $? "web1 boots on hostA" || done_testing
qwait 5 "[ -d '$MA/web1' ]"
ok $? "vmmigfs on hostA lists web1"

# --- guestctl in the guest ----------------------------------------------
out=$(guest A web1 'guestctl status')
like "$out" '^locked: 0' "guestctl status (the static vmmig in the guest): not held" || diag "$out"
out=$(guest A web1 'guestctl lock --reason db-checkpoint --ttl 600; echo rc=$?')
like "$out" 'rc=0' "guestctl lock --reason db-checkpoint --ttl 600" || diag "$out"
qwait 5 "[ \"\$(cat '$MA/web1/lock')\" = 1 ]"
ok $? "cat web1/lock: 1"
like "$(cat "$MA/web1/status")" '^hold: guest .*reason=db-checkpoint' "status: the guest's hold"
err=$(echo hostB 2>&1 > "$MA/web1/migrate")
like "$err" 'busy' "echo hostB > migrate: EBUSY" || diag "$err"
like "$(cat "$MA/web1/status")" 'last_refusal: .*guest hold.*db-checkpoint' "status says why"
out=$(guest A web1 'guestctl status')
like "$out" '^request: 1 reason=db-checkpoint ttl=600$' "guestctl status: what the host holds" ||
    diag "$out"

# --- garbage, an overlong line, a flood ---------------------------------
guest A web1 "echo 'lock me \"now\"' > $PORT" >/dev/null
qwait 5 "grep -q 'guest-request-invalid .*request=\"lock me ?now?\" counted=refused' '$MA/events'"
ok $? "garbage refused and logged in events" || diag "$(tail -5 "$MA/events")"
guest A web1 "{ head -c 3000 /dev/zero; echo; } > $PORT" >/dev/null
qwait 5 "grep -q 'guest-request-invalid .*longer than 1024 bytes' '$MA/events'"
ok $? "an overlong line refused and logged" || diag "$(tail -5 "$MA/events")"
out=$(guest A web1 "i=0; while [ \$i -lt 400 ]; do echo '?'; i=\$((i+1)); done > $PORT; echo sent")
like "$out" 'sent' "the guest floods the channel with 400 requests"
qwait 5 "grep -q 'guest-channel-flood' '$MA/events'"
ok $? "the flood is refused and logged once a second" || diag "$(tail -5 "$MA/events")"
nflood=$(grep -c "guest-channel-flood" "$MA/events")
ok "$([ "$nflood" -le 6 ]; echo $?)" "  not once a line ($nflood events for 400 lines)"
like "$(cat "$MA/web1/status")" '^hold: guest .*reason=db-checkpoint' "the hold is unchanged"
sleep 2 # the rate limit's bucket refills
out=$(guest A web1 'guestctl status; echo rc=$?')
like "$out" '^request: 1 reason=db-checkpoint' "the channel survives; guestctl skips the flood's stale answers" ||
    diag "$out"

# --- vmmigfs restarts -----------------------------------------------------
kill "$(cat "$QDIR/A/vmmigfs.pid")"
qwait 5 "! grep -q ' $MA ' /proc/self/mountinfo" || umount -l "$MA"
ok "$(grep -q " $MA " /proc/self/mountinfo; [ $? = 1 ]; echo $?)" "vmmigfs on hostA stopped"
t0=$(date +%s)
out=$(guest A web1 'guestctl unlock; echo rc=$?' 30)
like "$out" 'is vmmigfs running on the host' "without vmmigfs: guestctl says so" || diag "$out"
like "$out" 'rc=1' "  and exits 1 (after $(( $(date +%s) - t0 )) s)"
# Its migrations wait 2 s between RECEIVED and the commit, the guest
# stopped on both hosts: the console below must hold the keys typed then.
VMMIG_TEST_DELAY=received:2 \
    on_exec A "$VMMIG" fs -f --backend qemu --listen 8123 "$MA" </dev/null >>"$QDIR/A/vmmigfs.log" 2>&1 &
echo $! > "$QDIR/A/vmmigfs.pid"
qwait 5 "[ -d '$MA/web1' ]"
ok $? "vmmigfs restarted"
like "$(cat "$MA/web1/status")" '^hold: guest .*reason=db-checkpoint' "  the hold is still there"
out=$(guest A web1 'guestctl unlock; echo rc=$?')
like "$out" 'rc=0' "guestctl unlock, through the new vmmigfs" || diag "$out"
qwait 5 "[ \"\$(cat '$MA/web1/lock')\" = 0 ]"
ok $? "cat web1/lock: 0"

# --- vmmig console across a live migration -------------------------------
# The client reaches the agents through convia (TCP to port 8123), which
# makes a connection to another host wait 10 s while $QDIR/slow-standby
# exists (an agent slow to answer), and, while $QDIR/stall-source exists,
# stops passing on what the local agent sends once another host's agent
# was reached (a source agent that hangs after the standby attached).
cat > "$QDIR/convia" <<EOF
#!/usr/bin/python3
import os, select, socket, sys, time
local = sys.argv[1] == "localhost"
if not local and os.path.exists("$QDIR/slow-standby"):
    time.sleep(10)
s = socket.create_connection((sys.argv[1], 8123))
if not local and os.path.exists("$QDIR/stall-source"):
    open("$QDIR/standby-reached", "w").close()
def stalled():
    return local and os.path.exists("$QDIR/stall-source") and \\
        os.path.exists("$QDIR/standby-reached")
while True:
    r = select.select([0] + ([] if stalled() else [s]), [], [], 0.05)[0]
    if 0 in r:
        d = os.read(0, 65536)
        if not d:
            break
        s.sendall(d)
    if s in r:
        d = s.recv(65536)
        if not d:
            break
        os.write(1, d)
EOF
chmod 755 "$QDIR/convia"
touch "$QDIR/slow-standby"
CONSOLE_VIA="$QDIR/convia %h" console_start A web1
sleep 2
# A move cancelled before its commit point (during its 2 s test delay): the
# client starts attaching to hostB's agent as a standby (10 s away), drops
# it when web1 runs on hostA again, and the keys typed meanwhile reach web1
# there (checked with all the others after the move below).  Output goes
# on while the standby is still being attached.
echo hostB > "$MA/web1/migrate"
qwait 60 "grep -q 'stage=4' '$MA/web1/migrate'"
ok $? "a move with the console attached reaches stage 4 (the guest stopped)" ||
    diag "$(cat "$MA/web1/migrate")"
echo cancel > "$MA/web1/migrate"
qwait 30 "grep -q '^failed hostB: .*cancelled' '$MA/web1/migrate'"
ok $? "  cancelled: $(cat "$MA/web1/migrate")"
ticks0=$(grep -c '^tick' "$QDIR/con.out")
qwait 4 "[ \$(grep -c '^tick' '$QDIR/con.out') -ge $((ticks0 + 10)) ]"
ok $? "  output goes on while hostB's agent is still being reached (from $ticks0 ticks to $(grep -c '^tick' "$QDIR/con.out"))"
qwait 10 "grep -q 'standby dropped: web1 runs on localhost' '$QDIR/con.err'"
ok $? "  the console client dropped its standby on hostB: web1 runs on hostA again" ||
    diag "$(cat "$QDIR/con.err")"
unlike "$(cat "$QDIR/con.err")" 'hostB: (standby attached|no standby|standby not needed)' \
    "  (hostB's agent not reached yet)"
qwait 15 "grep -q 'hostB: standby not needed any more: closed' '$QDIR/con.err'"
ok $? "  once reached, the standby no longer wanted is closed" || diag "$(cat "$QDIR/con.err")"
rm -f "$QDIR/slow-standby"
sleep 1
t0=$(date +%s%N)
echo hostB > "$MA/web1/migrate"
ok $? "echo hostB > migrate (unlocked): accepted, with a console attached"
qwait 60 "grep -Eq '^(done|migrated)' '$MA/web1/migrate' 2>/dev/null || [ ! -e '$MA/web1' ]"
ok $? "migration done" || diag "$(tail -20 "$QDIR/A/vmmigfs.log")"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
ok "$([ "$ms" -ge 2000 ]; echo $?)" "  in $ms ms, 2 s of them with the guest stopped (test delay)"
qwait 10 "grep -q 'state: running' '$MB/web1/status' 2>/dev/null"
ok $? "web1 runs on hostB"
# Input flows through pre-copy and is held only once QEMU has stopped the
# guest (pre-switchover, `vmmig send`'s console hold), not for the job.
cerr=$(sed -n '/standby not needed any more/,$p' "$QDIR/con.err")
unlike "$cerr" '[0-9.]+ localhost: paused \(migrating\)' "input was not held for the whole job" ||
    diag "$cerr"
like "$cerr" '[0-9.]+ localhost: paused \(stopping\), going to hostB' \
    "  but from the stop, the client told where web1 goes" || diag "$cerr"
t_held=$(sed -n 's/.* \([0-9.]*\) localhost: paused (stopping).*/\1/p' <<<"$cerr" | head -n1)
t_run=$(sed -n 's/.* \([0-9.]*\) hostB: running, input written.*/\1/p' <<<"$cerr" | head -n1)
held=$(awk -v a="$t_held" -v b="$t_run" 'BEGIN { if (a == "" || b == "") print -1; else printf "%d", (b - a) * 1000 }')
ok "$([ "$held" -ge 2000 ] && [ "$held" -lt 8000 ]; echo $?)" \
    "  held $held ms: the guest's downtime (2 s of test delay in it) and the client following"
console_verify B web1 migration

# --- a hold forced over travels with the domain ---------------------------
printf 'admin_group =\nmigrate_timeout = 30\nguest_max_hold = 2\n' > "$MB/policy"
out=$(guest B web1 'guestctl lock --reason carried; echo rc=$?')
like "$out" 'rc=0' "guestctl lock on hostB" || diag "$out"
qwait 5 "[ \"\$(cat '$MB/web1/lock')\" = 1 ]"
ok $? "hostB's lock file shows it"
sleep 3
# With a console attached whose source agent (hostB's) stops sending once
# the client reached hostA's as a standby: when the standby holds more of
# hostA's output than the client keeps (1 byte here), the client leaves
# hostB's agent as hung and stays on hostA; no key is lost.
rm -f "$QDIR/standby-reached"
touch "$QDIR/stall-source"
CONSOLE_VIA="$QDIR/convia %h" CONSOLE_ENV=VMMIG_TEST_STANDBY_HELD_MAX=1 console_start B web1
sleep 2
err=$(echo "hostA force" 2>&1 > "$MB/web1/migrate")
ok $? "echo 'hostA force' > migrate: over the hold past guest_max_hold" || diag "$err"
qwait 60 "grep -Eq '^(done|migrated)' '$MB/web1/migrate' 2>/dev/null || [ ! -e '$MB/web1' ]"
ok $? "back on hostA" || diag "$(tail -20 "$QDIR/B/vmmigfs.log")"
qwait 20 "grep -q 'has not finished sending its output' '$QDIR/con.err'"
ok $? "  the console client: web1 runs on hostA, hostB's agent still has not finished" ||
    diag "$(cat "$QDIR/con.err")"
like "$(cat "$QDIR/con.err")" "hostA: the source's agent is gone: staying here" \
    "  it stays with hostA's agent"
console_verify A web1 "move with a hung source agent" keys-only
rm -f "$QDIR/stall-source"
qwait 10 "grep -q '^hold: guest .*reason=carried' '$MA/web1/status' 2>/dev/null"
ok $? "the guest's hold arrived with the domain" || diag "$(cat "$MA/web1/status")"
is "$(cat "$MA/web1/lock")" 1 "hostA's lock file: 1"
out=$(guest A web1 'guestctl status')
like "$out" '^request: 1 reason=carried$' "the guest still holds it, through hostA's port" ||
    diag "$out"
err=$(echo hostB 2>&1 > "$MA/web1/migrate")
like "$err" 'busy' "and hostA refuses to move it (EBUSY)"
done_testing
