#!/bin/bash
# The direct stream on QEMU domains (vmmig-protocol(7), DIRECT STREAM):
# `vmmig send --stream=direct`, vmmigfs's `stream=direct` and `vmmig
# migrate --stream direct` move web1 with QEMU's stream on its own TCP
# connection between the hosts, not relayed through the agents; memcheck
# finds no bad page afterwards and the guest runs in exactly one QEMU.
# Refusals: an unknown mode (usage error, EINVAL), post-copy, an exec
# transport, a bad VMMIG_QEMU_MAX_BANDWIDTH.  A connection to the
# destination's stream port without the token is closed and the move goes
# on.  Faults in the middle of a stream (stop-and-copy throttled with
# VMMIG_QEMU_MAX_BANDWIDTH so that it lasts seconds): the source
# cancelled, the destination's agent killed; each leaves the guest running
# at the source and no copy at the destination.  The policy's stream =
# direct makes a plain `vmmig migrate` direct; --stream relay overrides it.
# One boot of web1.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/lib.sh"
qenv_init "$@"
qenv_start
MA=$QDIR/A/mnt MB=$QDIR/B/mnt

# (its mount may show web1 as a forwarding entry after a move through it)
no_copy() { # HOST WHAT: no incoming copy is left there
    qwait 15 "[ ! -e '$QDIR/$1/run/web1' ] && [ ! -e '$QDIR/$1/run/web1--incoming' ] &&
              [ ! -e '$QDIR/$1/mnt/web1--incoming' ]"
    ok $? "$2: no copy left on host$1" || diag "$(ls "$QDIR/$1/run" "$QDIR/$1/mnt" 2>&1)"
}

cat > "$QDIR/viaB" <<EOF
#!/bin/sh
exec env VMMIG_QEMU_DIR=$QDIR/B/run VMMIG_STATE_DIR=$QDIR/B/state VMMIG_POLICY=$QDIR/B/policy \
    VMMIG_KEY_FILE=$QDIR/key "$VMMIG" receive
EOF
chmod 755 "$QDIR/viaB"

qenv_boot A web1
ok $? "web1 boots on hostA" || done_testing
like "$(guest A web1 'memcheck start 48 20000')" 'started' "memcheck writes 48 MiB in the guest"
qwait 5 "[ -d '$MA/web1' ]"
ok $? "vmmigfs on hostA lists web1"

# --- refusals: nothing starts --------------------------------------------
out=$(on A "$VMMIG" send --stream fast web1 hostB 2>&1)
is "$?" 2 "vmmig send --stream fast: usage error (2)"
like "$out" "unknown stream 'fast' \(relay or direct\)" "  says why"
out=$(on A "$VMMIG" send --stream direct --algorithm postcopy web1 hostB 2>&1)
like "$out" 'result failed stage=0 domain=running-here why="post-copy takes its stream through the relay' \
    "--stream direct with post-copy: refused" || diag "$out"
out=$(on A "$VMMIG" send --stream direct --via "$QDIR/viaB %h" web1 hostB 2>&1)
like "$out" "result failed stage=0 domain=running-here why=\"a direct stream needs a TCP connection to hostB's agent, not --via\"" \
    "--stream direct over an exec transport: refused" || diag "$out"
err=$(echo "hostB stream=fast" 2>&1 > "$MA/web1/migrate")
like "$err" 'Invalid argument' "echo 'hostB stream=fast' > migrate: EINVAL"
like "$(cat "$MA/events")" "unknown stream 'fast'" "  events says why"
unlike "$(cat "$MA/web1/migrate")" '^running' "  nothing started"
out=$(VMMIG_QEMU_MAX_BANDWIDTH=slow on A "$VMMIG" send --stream direct web1 hostB 2>&1)
like "$out" "result failed .*domain=running-here why=\"bad VMMIG_QEMU_MAX_BANDWIDTH 'slow'" \
    "a bad VMMIG_QEMU_MAX_BANDWIDTH fails the move" || diag "$out"
no_copy B "bad VMMIG_QEMU_MAX_BANDWIDTH"
moved A "after the refusals"

# --- vmmig send --stream direct: A to B ----------------------------------
out=$(on A "$VMMIG" send --stream direct web1 hostB 2>&1)
like "$out" 'result ok host=hostB .*algorithm=precopy stream=direct' \
    "vmmig send --stream direct: done" || diag "$out"
sent=$(sed -n 's/^result ok.* sent=\([0-9]*\).*/\1/p' <<<"$out")
ok "$( [ "${sent:-0}" -gt $((100 * 1024 * 1024)) ]; echo $? )" \
    "  sent counts the stream's bytes (acknowledged by hostB): $sent"
note "direct A to B: $(grep '^result' <<<"$out")"
stop=$(sed -n 's/^result ok.* stop_ms=\([0-9]*\).*/\1/p' <<<"$out")
resume=$(sed -n 's/^result ok.* resume_ms=\([0-9]*\).*/\1/p' <<<"$out")
ok "$( [ "${stop:-0}" -gt 0 ] && [ "$stop" -lt "${resume:-0}" ]; echo $? )" \
    "  the stop time (QEMU's STOP event) comes before the resume there: $stop < $resume"
qwait 5 "grep -q 'accepted web1 .*direct stream' '$MB/events'"
ok $? "  hostB's agent took it as a direct stream" || diag "$(tail -5 "$MB/events")"
moved B "direct A to B"

# --- a connection without the token is closed; the move goes on ----------
VMMIG_TEST_DELAY=reserved:4 on_exec B "$VMMIG" send --stream direct web1 hostA > "$QDIR/intr.out" 2>&1 &
pid=$!
qwait 30 "grep -q 'test delay at reserved' '$QDIR/intr.out'"
ok $? "B to A: the source waits after the reservation"
port=$(on A ss -Hltn 2>/dev/null | awk -v a="$SUBNET.1" '{n = split($4, p, ":"); if (p[1] == a && p[n] != 8123) print p[n]}' | head -1)
ok "$( [ -n "$port" ]; echo $? )" "  hostA's agent listens for the stream (port ${port:-none})"
on A python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"x" * 32)
s.settimeout(5)
print("closed" if s.recv(1) == b"" else "open")' "$SUBNET.1" "${port:-1}" > "$QDIR/intr.res" 2>&1
is "$(cat "$QDIR/intr.res")" closed "  a connection with a wrong token is closed by the agent"
wait "$pid"
out=$(cat "$QDIR/intr.out")
like "$out" 'result ok host=hostA .*stream=direct' "  the move goes on and is done" || diag "$out"
like "$(cat "$MA/events")" 'closed 1 direct stream connection without the token' \
    "  hostA's agent says it closed one"
moved A "direct B to A past an intruder"

# --- vmmigfs: stream=direct with algo=stopcopy ---------------------------
echo "hostB stream=direct algo=stopcopy" > "$MA/web1/migrate"
ok $? "echo 'hostB stream=direct algo=stopcopy' > migrate"
qwait 60 "grep -Eq '^(done|migrated|failed)' '$MA/web1/migrate' 2>/dev/null"
like "$(cat "$MA/web1/migrate")" '^(done|migrated)' "  done" ||
    diag "$(cat "$MA/web1/migrate" 2>&1; tail -5 "$QDIR/A/vmmigfs.log")"
like "$(cat "$MA/events")" 'migrate-started to=hostB .*algorithm=stopcopy stream=direct' \
    "  the migrate-started event names the stream"
moved B "vmmigfs stream=direct A to B"

# --- faults in the middle of a stream -------------------------------------
# Stop-and-copy at 16 MiB/s: the guest's ~136 MiB take seconds.
BW=16777216
VMMIG_QEMU_MAX_BANDWIDTH=$BW on B "$VMMIG" send --stream direct --algorithm stopcopy web1 hostA \
    > "$QDIR/cancel.out" 2>&1 &
pid=$!
qwait 30 "grep -q 'stage=3 .*sent=[1-9]' '$QDIR/cancel.out'"
ok $? "throttled stop-and-copy B to A: the stream has begun" || diag "$(cat "$QDIR/cancel.out")"
spid=$(pgrep -f "^$VMMIG send --stream direct --algorithm stopcopy web1 hostA")
ok "$( [ -n "$spid" ]; echo $? )" "  found vmmig send ($spid)"
[ -n "$spid" ] && kill -TERM $spid
wait "$pid"
out=$(cat "$QDIR/cancel.out")
like "$out" 'result failed stage=3 domain=running-here why="cancelled' \
    "  cancelled in the middle of the stream: failed, running here" || diag "$out"
no_copy A "cancelled mid-stream"
moved B "cancelled mid-stream"

VMMIG_QEMU_MAX_BANDWIDTH=$BW on B "$VMMIG" send --stream direct --algorithm stopcopy web1 hostA \
    > "$QDIR/kill.out" 2>&1 &
pid=$!
qwait 30 "grep -q 'stage=3 .*sent=[1-9]' '$QDIR/kill.out'"
ok $? "throttled stop-and-copy B to A again: the stream has begun"
recv=$(recv_pid A)
ok "$( [ -n "$recv" ]; echo $? )" "  found hostA's receiving agent ($(echo $recv))"
[ -n "$recv" ] && kill -9 $recv
wait "$pid"
out=$(cat "$QDIR/kill.out")
like "$out" 'result failed stage=[34] domain=running-here' \
    "  the destination's agent killed mid-stream: failed, running here" || diag "$out"
like "$out" "why=\"(the connection to hostA's agent broke|hostA: )" "  says the link to hostA's agent broke"
unlike "$out" 'name=activation' "  never activated"
no_copy A "destination agent killed mid-stream"
moved B "destination agent killed mid-stream"

# --- vmmig migrate, and the policy's stream = direct -----------------------
on B "$VMMIG" migrate --stream warp web1 hostA >/dev/null 2>&1
is "$?" 2 "vmmig migrate --stream warp: usage error (2)"
echo "stream = direct" > "$MB/policy"
ok $? "hostB's policy: stream = direct"
out=$(on B "$VMMIG" migrate web1 hostA 2>&1)
ok $? "vmmig migrate (no --stream): B to A" || diag "$out"
like "$(cat "$MB/events")" 'migrate-started to=hostA .*stream=direct' \
    "  the policy made it a direct stream"
moved A "policy's direct B to A"
out=$(on A "$VMMIG" migrate --stream direct web1 hostB 2>&1)
ok $? "vmmig migrate --stream direct: A to B" || diag "$out"
like "$(cat "$MA/events")" 'migrate-started to=hostB .*stream=direct' \
    "  through vmmigfs's stream=direct"
moved B "direct A to B"
out=$(on B "$VMMIG" migrate --stream relay web1 hostA 2>&1)
ok $? "vmmig migrate --stream relay over the policy: B to A" || diag "$out"
unlike "$(grep 'migrate-started to=hostA' "$MB/events" | tail -1)" 'stream=direct' \
    "  relayed: stream=relay wins over the policy"
moved A "relayed B to A"

done_testing
