#!/bin/bash
# The algorithm pool on QEMU domains (issue 6): pre-copy, stop-and-copy and
# post-copy each move web1 from hostA to hostB and back, through vmmig send,
# vmmigfs's migrate file (algo=) and vmmig migrate --algorithm; memcheck
# finds no bad page afterwards and the guest runs in exactly one QEMU.
# Refusals: an unknown algorithm (EINVAL, in events), one the destination
# does not accept (its agent run with VMMIG_ALGORITHMS=precopy,stopcopy, the
# way a host without post-copy answers), post-copy in a co-migration.
# Before the post-copy switch a killed destination agent and a hold that
# arrives both leave the guest running on hostA (there the switch comes
# after the first pass, the default).  After it, a stream cut by a killed
# destination agent is recovered (RECOVER: vmmig send and vmmigfs), so is
# one cut by a killed source agent (vmmigfs's send --recover takes it on),
# and so is one over TCP whose link goes silent for a while; the
# destination refuses bad RECOVERs with reason codes and changes nothing
# (tests/qemu/recover-req.py), and the guest is reported lost, with the
# reason, when the destination's QEMU is gone or the retries are spent
# (also by send --recover, after the source's agent died).
# One boot of web1, and web2 and web3 for the last cases.
#
# The post-copies that must keep every write switch at once
# (VMMIG_QEMU_POSTCOPY_AFTER_MS=0, lib.sh): after a pass, a switch that
# comes late finds QEMU 7.2 in its second running RAM sync, where TCG loses
# writes (../shared/notes/qemu-tcg.md), and memcheck reported bad pages.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/lib.sh"
qenv_init "$@"
qenv_start
MA=$QDIR/A/mnt MB=$QDIR/B/mnt

# hostB's agent reached through an exec transport, so that the test sets
# its environment: as a host without post-copy answers (VMMIG_ALGORITHMS),
# or with a test delay ($DELAY).
cat > "$QDIR/nopostcopy" <<EOF
#!/bin/sh
echo \$\$ > "$QDIR/via.pid"
exec env VMMIG_ALGORITHMS=\${ALGS:-precopy,stopcopy} VMMIG_TEST_DELAY=\${DELAY:-} \
    VMMIG_QEMU_DIR=$QDIR/B/run \
    VMMIG_STATE_DIR=$QDIR/B/state VMMIG_POLICY=$QDIR/B/policy VMMIG_KEY_FILE=$QDIR/key \
    "$VMMIG" receive
EOF
chmod 755 "$QDIR/nopostcopy"

qenv_boot A web1
ok $? "web1 boots on hostA" || done_testing
like "$(guest A web1 'memcheck start 48 20000')" 'started' "memcheck writes 48 MiB in the guest"
qwait 5 "[ -d '$MA/web1' ]"
ok $? "vmmigfs on hostA lists web1"

# --- refusals: nothing starts --------------------------------------------
err=$(echo "hostB algo=warp" 2>&1 > "$MA/web1/migrate")
like "$err" 'Invalid argument' "algo=warp: EINVAL"
like "$(cat "$MA/events")" "unknown algorithm 'warp'" "  events says why"
unlike "$(cat "$MA/web1/migrate")" '^running' "  nothing started"
out=$(on A "$VMMIG" send --algorithm warp web1 hostB 2>&1); st=$?
is "$st" 2 "vmmig send --algorithm warp: usage error (2)"
like "$out" "unknown algorithm 'warp'" "  says why"
on A "$VMMIG" migrate --algorithm warp web1 hostB >/dev/null 2>&1
is "$?" 2 "vmmig migrate --algorithm warp: usage error (2)"
on B "$VMMIG" receive --algorithms precopy,warp </dev/null >/dev/null 2>&1
is "$?" 2 "vmmig receive --algorithms precopy,warp: usage error (2)"
out=$(on A "$VMMIG" send --algorithm postcopy --sync-fd 3 web1 hostB 2>&1 3</dev/null)
like "$out" 'result failed stage=0 domain=running-here .*not available in a co-migration' \
    "post-copy as a co-migration member: refused"
out=$(on A "$VMMIG" send --algorithm postcopy --via "$QDIR/nopostcopy %h" web1 hostB 2>&1)
like "$out" 'result failed stage=1 domain=running-here why=.*refused \(algorithm\): postcopy is not supported here \(this host does precopy,stopcopy\)' \
    "post-copy to a host without it: refused with the reason" || diag "$out"
out=$(ALGS=precopy,warp on A "$VMMIG" send --via "$QDIR/nopostcopy %h" web1 hostB 2>&1)
like "$out" "result failed .*unknown algorithm 'warp'" \
    "a destination with a bad VMMIG_ALGORITHMS says so" || diag "$out"
# through vmmigfs: the policy's transport reaches that agent
printf 'admin_group =\nmigrate_timeout = 30\ntransport = %s %%h\n' "$QDIR/nopostcopy" \
    > "$MA/policy"
ok $? "hostA's policy: the transport to the agent without post-copy"
echo "hostB algo=postcopy" > "$MA/web1/migrate"
ok $? "echo 'hostB algo=postcopy' > migrate: accepted"
qwait 30 "grep -q '^failed' '$MA/web1/migrate'"
like "$(cat "$MA/web1/migrate")" 'failed hostB: stage 1: .*postcopy is not supported here' \
    "  it fails at the reservation, with the reason" || diag "$(cat "$MA/web1/migrate")"
like "$(cat "$MA/web1/status")" 'algorithm: postcopy \(asked for\)' "  status names the algorithm"
printf 'admin_group =\nmigrate_timeout = 30\n' > "$MA/policy"
is "$(instances)" 1 "after the refusals the guest runs once"
like "$(cat "$MA/web1/status")" 'state: running' "  on hostA"

# --- pre-copy: vmmigfs there, vmmig send back ----------------------------
echo "hostB algo=precopy" > "$MA/web1/migrate"
ok $? "echo 'hostB algo=precopy' > migrate"
qwait 60 "grep -Eq '^(done|migrated)' '$MA/web1/migrate' 2>/dev/null"
ok $? "  done" || diag "$(cat "$MA/web1/migrate" 2>&1; tail -5 "$QDIR/A/vmmigfs.log")"
like "$(cat "$MA/web1/status")" 'algorithm: precopy' "  hostA's status: algorithm: precopy"
moved B "pre-copy A to B"
out=$(on B "$VMMIG" send --algorithm precopy web1 hostA 2>&1)
like "$out" 'result ok host=hostA .*algorithm=precopy' "vmmig send --algorithm precopy: back" ||
    diag "$out"
moved A "pre-copy B to A"

# --- stop-and-copy: vmmig send there, vmmig migrate back ------------------
VMMIG_TEST_DELAY=stopped:3 on A "$VMMIG" send --algorithm stopcopy web1 hostB \
    > "$QDIR/sc.out" 2>&1 &
pid=$!
qwait 30 "grep -q 'test delay at stopped' '$QDIR/sc.out'"
ok $? "stop-and-copy: the source holds its stream once it has started"
qwait 2 "grep -q 'state: paused' '$MA/web1/status'"
ok $? "  QEMU says the guest is paused meanwhile" || diag "$(cat "$MA/web1/status")"
wait "$pid"
out=$(cat "$QDIR/sc.out")
like "$out" 'result ok host=hostB .*algorithm=stopcopy' "vmmig send --algorithm stopcopy" ||
    diag "$out"
unlike "$out" 'stage=2' "  no pre-copy round"
total=$(sed -n 's/.*total_ms=\([0-9]*\).*/\1/p' <<<"$out")
down=$(sed -n 's/.*downtime_ms=\([0-9]*\).*/\1/p' <<<"$out")
ok "$( [ -n "$down" ] && [ $((down * 2)) -gt "$total" ]; echo $? )" \
    "  downtime is the whole copy: $down of $total ms"
moved B "stop-and-copy A to B"
out=$(on B "$VMMIG" migrate --algorithm stopcopy web1 hostA 2>&1)
ok $? "vmmig migrate --algorithm stopcopy: back" || diag "$out"
like "$(cat "$MB/web1/status")" 'algorithm: stopcopy' "  hostB's status: algorithm: stopcopy"
moved A "stop-and-copy B to A"

# --- post-copy: faults before the switch leave it on hostA ---------------
VMMIG_QEMU_POSTCOPY_AFTER_MS= VMMIG_TEST_DELAY=switch:2 on A "$VMMIG" send --algorithm postcopy web1 hostB \
    > "$QDIR/pc-hold.out" 2>&1 &
pid=$!
qwait 40 "grep -q 'test delay at switch' '$QDIR/pc-hold.out'"
ok $? "post-copy: the source waits at the switch (first pass over)"
echo "1 reason=late-hold" > "$MA/web1/lock"
wait "$pid"
# (a pre-copy that converged meanwhile stopped the guest: stage 3, and it
# is resumed all the same)
like "$(cat "$QDIR/pc-hold.out")" 'result failed stage=[34] domain=running-here why="locked: admin hold' \
    "  a hold that arrived before the switch wins" || diag "$(cat "$QDIR/pc-hold.out")"
echo 0 > "$MA/web1/lock"
qwait 10 "[ ! -e '$MB/web1' ] && [ ! -e '$MB/web1--incoming' ]"
ok $? "  no copy left on hostB"
moved A "hold before the switch"

VMMIG_QEMU_POSTCOPY_AFTER_MS= VMMIG_TEST_DELAY=switch:6 on A "$VMMIG" send --algorithm postcopy web1 hostB \
    > "$QDIR/pc-kill.out" 2>&1 &
pid=$!
qwait 40 "grep -q 'test delay at switch' '$QDIR/pc-kill.out'"
ok $? "post-copy: the source waits at the switch again"
recv=$(recv_pid)
ok "$( [ -n "$recv" ]; echo $? )" "  found hostB's receiving agent ($(echo $recv))"
[ -n "$recv" ] && kill -9 $recv
wait "$pid"
like "$(cat "$QDIR/pc-kill.out")" 'result failed stage=[34] domain=running-here' \
    "  the destination agent killed before the switch: failed, running here" ||
    diag "$(cat "$QDIR/pc-kill.out")"
unlike "$(cat "$QDIR/pc-kill.out")" 'COMMIT|postcopy=active' "  never committed, never switched"
qwait 10 "[ ! -e '$MB/web1' ] && [ ! -e '$QDIR/B/run/web1--incoming' ]"
ok $? "  no copy left on hostB"
moved A "destination killed before the switch"

# No record of the migration for a recovery (STATE/outgoing not a
# directory): the commit point refuses, the guest runs on at hostA.
mv "$QDIR/A/state/outgoing" "$QDIR/outgoing.saved" 2>/dev/null
echo not-a-directory > "$QDIR/A/state/outgoing"
out=$(on A "$VMMIG" send --algorithm postcopy web1 hostB 2>&1)
rm -f "$QDIR/A/state/outgoing"
[ -d "$QDIR/outgoing.saved" ] && mv "$QDIR/outgoing.saved" "$QDIR/A/state/outgoing"
like "$out" 'result failed stage=[34] domain=running-here why="cannot record the post-copy for a recovery in .*/outgoing: ' \
    "post-copy without a record for its recovery: refused at the commit point" || diag "$out"
unlike "$out" 'postcopy=active' "  never switched"
qwait 10 "[ ! -e '$MB/web1' ] && [ ! -e '$QDIR/B/run/web1--incoming' ]"
ok $? "  no copy left on hostB"
moved A "no record for a recovery"

out=$(VMMIG_QEMU_POSTCOPY_AFTER_MS=soon on A "$VMMIG" send --algorithm postcopy web1 hostB 2>&1)
like "$out" "result failed .*domain=running-here why=\"bad VMMIG_QEMU_POSTCOPY_AFTER_MS 'soon'" \
    "a bad VMMIG_QEMU_POSTCOPY_AFTER_MS fails the move" || diag "$out"
moved A "bad VMMIG_QEMU_POSTCOPY_AFTER_MS"

# --- post-copy: vmmig send there, vmmigfs back ----------------------------
out=$(on A "$VMMIG" send --algorithm postcopy web1 hostB 2>&1)
like "$out" 'result ok host=hostB .*algorithm=postcopy postcopy=switched' \
    "vmmig send --algorithm postcopy: switched and done" || diag "$out"
like "$out" 'stage=4 name=commitment' "  committed (stage 4) ..."
like "$out" 'stage=5 name=activation .*postcopy=active' "  ... before it ran on hostB"
note "post-copy A to B: $(grep '^result' <<<"$out")"
moved B "post-copy A to B"
echo "hostA algo=postcopy" > "$MB/web1/migrate"
ok $? "echo 'hostA algo=postcopy' > migrate (on hostB)"
qwait 60 "grep -Eq '^(done|migrated|failed)' '$MB/web1/migrate' 2>/dev/null"
like "$(cat "$MB/web1/migrate")" '^(done|migrated)' "  done" ||
    diag "$(cat "$MB/web1/migrate" 2>&1; tail -5 "$QDIR/B/vmmigfs.log")"
like "$(cat "$MB/web1/status")" 'algorithm: postcopy' "  hostB's status: algorithm: postcopy"
moved A "post-copy B to A"

# --- post-copy: a stream lost after the switch is recovered ----------------
# The exec transport is hostB's agent itself: killing it while web1 runs on
# hostB and its memory still arrives cuts the stream after the switch.  Both
# QEMUs wait (postcopy-paused); the source reconnects through the same
# transport, a fresh agent on hostB takes the rest of the stream (RECOVER)
# and the migration completes.  $QDIR/delay holds the test delay for the
# next agent only, so that the fresh one does not wait; with $QDIR/via.refuse
# the transport fails (a host that stays unreachable).
cat > "$QDIR/viab" <<EOF
#!/bin/sh
echo \$\$ > "$QDIR/via.pid"
[ -e "$QDIR/via.refuse" ] && exit 1
d=\$(cat "$QDIR/delay" 2>/dev/null); rm -f "$QDIR/delay"
exec env VMMIG_TEST_DELAY=\$d VMMIG_QEMU_DIR=$QDIR/B/run \
    VMMIG_STATE_DIR=$QDIR/B/state VMMIG_POLICY=$QDIR/B/policy VMMIG_KEY_FILE=$QDIR/key \
    "$VMMIG" receive --timeout=\${VIA_TIMEOUT:-30}
EOF
chmod 755 "$QDIR/viab"
uuid=$(sed -n 's/^uuid: //p' "$MA/web1/status")
marker=$QDIR/B/state/incoming/$uuid.postcopy

echo running:6 > "$QDIR/delay"
on A "$VMMIG" send --algorithm postcopy --via "$QDIR/viab %h" web1 hostB \
    > "$QDIR/pc-rec.out" 2>&1 &
pid=$!
qwait 40 "grep -q 'test delay at running' '$QDIR/pc-rec.out'"
ok $? "post-copy: switched, web1 runs on hostB, its agent holds the stream" ||
    diag "$(cat "$QDIR/pc-rec.out")"
like "$(cat "$marker" 2>&1)" '^migration=[0-9a-f]{32}' "  hostB records the migration's id"
kill -9 "$(cat "$QDIR/via.pid")"
wait "$pid"
st=$?
out=$(cat "$QDIR/pc-rec.out")
is "$st" 0 "  the stream cut after the switch: vmmig send succeeds all the same" || diag "$out"
like "$out" 'progress stage=5 .*postcopy=paused' "  it saw the stream break"
like "$out" 'postcopy=recovering postcopy_recovered=1' "  and resumed it through a fresh agent"
like "$out" 'result ok host=hostB .*algorithm=postcopy postcopy=switched postcopy_recovered=1' \
    "  the result says it recovered"
moved B "post-copy recovered (vmmig send)"
ok "$( [ ! -e "$QDIR/A/run/web1--migratedaway" ] && [ ! -e "$QDIR/A/run/web1" ]; echo $? )" \
    "  hostA's half is gone"
ok "$( [ ! -e "$marker" ]; echo $? )" "  hostB's record of it is gone"

out=$(on B "$VMMIG" send web1 hostA 2>&1)
like "$out" 'result ok host=hostA' "back to hostA (pre-copy)" || diag "$out"
moved A "back after the recovery"

# the same through vmmigfs: migrate and status name the recovery
printf 'admin_group =\nmigrate_timeout = 30\ntransport = %s %%h\n' "$QDIR/viab" > "$MA/policy"
echo running:6 > "$QDIR/delay"
echo "hostB algo=postcopy" > "$MA/web1/migrate"
ok $? "echo 'hostB algo=postcopy' > migrate"
qwait 40 "[ -s '$marker' ]"
ok $? "  switched: web1 runs on hostB"
sleep 1
kill -9 "$(cat "$QDIR/via.pid")"
qwait 60 "grep -Eq '^(done|migrated|failed)' '$MA/web1/migrate' 2>/dev/null"
like "$(cat "$MA/web1/migrate")" '^(done|migrated) hostB postcopy_recovered=1' \
    "  the stream cut after the switch: migrate says done, recovered" ||
    diag "$(cat "$MA/web1/migrate" 2>&1; tail -5 "$QDIR/A/vmmigfs.log")"
like "$(cat "$MA/web1/status" 2>&1)" 'postcopy_recovered: 1' "  status says so too" ||
    diag "$(cat "$MA/web1/status" 2>&1)"
like "$(cat "$MA/events")" 'migrate-done .*postcopy_recovered=1' "  and the migrate-done event"
printf 'admin_group =\nmigrate_timeout = 30\n' > "$MA/policy"
moved B "post-copy recovered (vmmigfs)"

# --- post-copy: the source's agent killed after the switch -----------------
# vmmigfs on hostA sees its agent die and runs send --recover, which finds
# QEMU's post-copy waiting for its stream (hostA's record names the
# migration) and takes it on: RECOVER to a fresh agent on hostB, the rest
# of the memory, the old half removed.  Before, --recover asked hostB,
# heard that web1 runs there, and removed hostA's half: the guest's pages
# still there were lost with it.
out=$(on B "$VMMIG" send web1 hostA 2>&1)
like "$out" 'result ok host=hostA' "back to hostA (pre-copy)" || diag "$out"
moved A "back after the vmmigfs recovery"
srcrec=$QDIR/A/state/outgoing/$uuid.postcopy
printf 'admin_group =\nmigrate_timeout = 30\ntransport = %s %%h\n' "$QDIR/viab" > "$MA/policy"
echo running:6 > "$QDIR/delay"
echo "hostB algo=postcopy" > "$MA/web1/migrate"
ok $? "echo 'hostB algo=postcopy' > migrate"
qwait 40 "[ -s '$marker' ]"
ok $? "  switched: web1 runs on hostB (hostB's agent holds the stream for 6 s)"
like "$(cat "$srcrec" 2>&1)" "^migration=[0-9a-f]{32}"$'\n'"host=hostB" \
    "  hostA records the migration's id and destination"
agent=
for p in $(descendants "$(cat "$QDIR/A/vmmigfs.pid")"); do
    tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null | grep -q ' send .*hostB' && agent=$p && break
done
ok "$([ -n "$agent" ]; echo $?)" "  the source's agent found (pid $agent)"
[ -n "$agent" ] && kill -9 "$agent"
qwait 90 "grep -Eq '^(done|migrated|failed)' '$MA/web1/migrate' 2>/dev/null"
like "$(cat "$MA/web1/migrate" 2>&1)" '^(done|migrated) hostB postcopy_recovered=1' \
    "  the source's agent killed after the switch: the recovery finished the job" ||
    diag "$(cat "$MA/web1/migrate" 2>&1; tail -8 "$QDIR/A/vmmigfs.log")"
like "$(cat "$MA/events")" 'migrate-done .*postcopy_recovered=1 recovered=yes' \
    "  migrate-done says it was recovered"
like "$(cat "$MA/events")" 'web1 migrate-recover to=hostB why="stage [0-9]: the agent was killed by signal 9' \
    "  vmmigfs ran the recovery once its agent died (migrate-recover)"
printf 'admin_group =\nmigrate_timeout = 30\n' > "$MA/policy"
moved B "post-copy recovered after its source agent died"
ok "$( [ ! -e "$QDIR/A/run/web1--migratedaway" ] && [ ! -e "$QDIR/A/run/web1" ]; echo $? )" \
    "  hostA's half is gone, after the last page"
ok "$( [ ! -e "$srcrec" ] && [ ! -e "$marker" ]; echo $? )" "  both records are gone"

# --- RECOVER refused: nothing changes on hostB -----------------------------
domid=$(sed -n 's/^domid: //p' "$MB/web1/status")
id=0123456789abcdef0123456789abcdef
rreq() { on A "$QTOP/tests/qemu/recover-req.py" hostB 8123 "$QDIR/key" "$@" 2>&1; }
like "$(rreq "uuid=$uuid" name=web1)" \
    '^RECOVER_FAIL code=bad-request reason=RECOVER without a valid migration id' \
    "RECOVER without a migration id: bad-request"
like "$(rreq uuid=11111111-2222-3333-4444-555555555555 name=web9 migration=$id)" \
    '^RECOVER_FAIL code=unknown reason=no domain with UUID 11111111-2222-3333-4444-555555555555 here' \
    "RECOVER for an unknown domain: unknown"
like "$(rreq "uuid=$uuid" name=web1 migration=$id)" \
    '^RECOVER_FAIL code=unknown reason=web1 \(domid [0-9]+\) is not a post-copy that switched to this host' \
    "RECOVER for a domain that did not come in a post-copy: unknown"
printf 'migration=%s\ndomid=%s\nresumed_ms=1\n' fedcba9876543210fedcba9876543210 "$domid" > "$marker"
like "$(rreq "uuid=$uuid" name=web1 migration=$id)" \
    '^RECOVER_FAIL code=mismatch reason=web1 \(domid [0-9]+\) came here in another migration' \
    "RECOVER naming another migration: mismatch"
printf 'migration=%s\ndomid=%s\nresumed_ms=1\n' "$id" "$domid" > "$marker"
like "$(rreq "uuid=$uuid" name=web1 migration=$id)" \
    '^RECOVER_FAIL code=not-paused reason=web1 is not waiting for a post-copy recovery' \
    "RECOVER for a domain not in postcopy-paused: not-paused"
like "$(cat "$marker")" "^migration=$id" "  the record is left as it was"
rm -f "$marker"
moved B "after the refused RECOVERs"
is "$(sed -n 's/^domid: //p' "$MB/web1/status")" "$domid" "  the same QEMU as before"

out=$(on B "$VMMIG" send web1 hostA 2>&1)
like "$out" 'result ok host=hostA' "back to hostA (pre-copy)" || diag "$out"
moved A "back after the refusals"

# --- post-copy: a silent break after the switch is recovered ---------------
# hostB's link goes down (no RST, no FIN: the connections just go quiet)
# for 10 s while web1 runs there and its memory still arrives over TCP
# (throttled to 8 MiB/s so that it is still arriving).  The source notices
# the silence after its timeout (8 s), redials until the link is back, and
# the fresh agent on hostB takes the rest once the old one (timeout 4 s)
# has let go of it, kept paused: never removed.
printf 'admin_group =\nmigrate_timeout = 4\n' > "$QDIR/B/policy"
VMMIG_QEMU_MAX_BANDWIDTH=8388608 on_exec A "$VMMIG" send --timeout 8 --algorithm postcopy \
    web1 hostB > "$QDIR/pc-silent.out" 2>&1 &
pid=$!
qwait 40 "[ -s '$marker' ]"
ok $? "post-copy over TCP: switched, web1 runs on hostB" || diag "$(cat "$QDIR/pc-silent.out")"
ip -n "$NS_B" link set "vqb$$" down
sleep 10
ip -n "$NS_B" link set "vqb$$" up
wait "$pid"
st=$?
out=$(cat "$QDIR/pc-silent.out")
is "$st" 0 "  hostB's link silent for 10 s after the switch: vmmig send succeeds" || diag "$out"
like "$out" 'broke after the switch.*recovering' "  it saw the stream break"
like "$out" 'result ok host=hostB .*postcopy=switched postcopy_recovered=1' \
    "  and recovered it through a fresh agent"
like "$(cat "$MB/events")" 'recovering the post-copy of web1' "  hostB's fresh agent took the rest"
moved B "post-copy recovered after a silent break"
printf 'admin_group =\nmigrate_timeout = 30\n' > "$QDIR/B/policy"
out=$(on B "$VMMIG" send web1 hostA 2>&1)
like "$out" 'result ok host=hostA' "back to hostA (pre-copy)" || diag "$out"
moved A "back after the silent break"

# --- post-copy: recovery impossible, the guest is lost (last) --------------
# hostB's QEMU is killed too: the fresh agent refuses (gone).
echo running:6 > "$QDIR/delay"
on A "$VMMIG" send --algorithm postcopy --via "$QDIR/viab %h" web1 hostB \
    > "$QDIR/pc-lost.out" 2>&1 &
pid=$!
qwait 40 "grep -q 'test delay at running' '$QDIR/pc-lost.out'"
ok $? "post-copy: switched, web1 runs on hostB, its agent holds the stream" ||
    diag "$(cat "$QDIR/pc-lost.out")"
ok "$( [ -L "$QDIR/B/run/web1" ]; echo $? )" "  renamed there"
kill -9 "$(cat "$QDIR/B/run/web1/qemu.pid")"
kill -9 "$(cat "$QDIR/via.pid")"
wait "$pid"
like "$(cat "$QDIR/pc-lost.out")" 'result failed stage=5 domain=lost algorithm=postcopy' \
    "  the destination agent and QEMU killed after the switch: the guest is reported lost" ||
    diag "$(cat "$QDIR/pc-lost.out")"
like "$(cat "$QDIR/pc-lost.out")" 'refused the recovery \((gone|unknown)\): .*(is gone|no domain with UUID)' \
    "  with the reason: hostB's half is gone"
like "$(cat "$QDIR/pc-lost.out")" 'cannot run on .* again' "  and why it cannot run on hostA"
ok "$( [ -L "$QDIR/A/run/web1--migratedaway" ]; echo $? )" \
    "  hostA keeps its half as web1--migratedaway, not resumed"
out=$(guest A web1--migratedaway 'echo $((40+2))' 3 2>&1)
unlike "$out" '^42' "  (its guest does not answer there)"

# Retries exhausted: the transport fails from the cut on; the source gives
# up after twice its timeout (3 s here).
qenv_boot A web2
ok $? "web2 boots on hostA"
echo running:4 > "$QDIR/delay"
VIA_TIMEOUT=3 on A "$VMMIG" send --timeout 3 --algorithm postcopy --via "$QDIR/viab %h" \
    web2 hostB > "$QDIR/pc-gone.out" 2>&1 &
pid=$!
qwait 40 "grep -q 'test delay at running' '$QDIR/pc-gone.out'"
ok $? "post-copy of web2: switched, runs on hostB" || diag "$(cat "$QDIR/pc-gone.out")"
touch "$QDIR/via.refuse"
kill -9 "$(cat "$QDIR/via.pid")"
wait "$pid"
out=$(cat "$QDIR/pc-gone.out")
like "$out" 'result failed stage=5 domain=lost algorithm=postcopy why=".*recovery gave up after [0-9]+ attempts in 6 s' \
    "  hostB unreachable after the cut: lost once the retries are spent" || diag "$out"
ok "$( [ -L "$QDIR/B/run/web2" ]; echo $? )" "  hostB keeps the half that ran there"
rm -f "$QDIR/via.refuse"

# The source's agent dies after the switch and hostB stays unreachable:
# send --recover tries for twice its timeout, then reports the guest lost
# and keeps hostA's half and its record (before, it could not ask hostB
# and left it as it was; had hostB answered, it removed it).
qenv_boot A web3
ok $? "web3 boots on hostA"
echo running:4 > "$QDIR/delay"
VIA_TIMEOUT=3 on_exec A "$VMMIG" send --timeout 3 --algorithm postcopy --via "$QDIR/viab %h" \
    web3 hostB > "$QDIR/pc-srcgone.out" 2>&1 &
pid=$!
qwait 40 "grep -q 'test delay at running' '$QDIR/pc-srcgone.out'"
ok $? "post-copy of web3: switched, runs on hostB" || diag "$(cat "$QDIR/pc-srcgone.out")"
touch "$QDIR/via.refuse"
kill -9 "$pid" "$(cat "$QDIR/via.pid")"
wait "$pid" 2>/dev/null
out=$(on A "$VMMIG" send --recover --timeout 3 --via "$QDIR/viab %h" web3--migratedaway hostB 2>&1)
rc=$?
is "$rc" 1 "send --recover after the source's agent died, hostB unreachable: exit 1" || diag "$out"
like "$out" 'result failed stage=5 domain=lost algorithm=postcopy why="the migration agent died after the post-copy switch; recovering it: .*recovery gave up after [0-9]+ attempts in 6 s' \
    "  the guest reported lost once the retries are spent" || diag "$out"
ok "$( [ -L "$QDIR/A/run/web3--migratedaway" ]; echo $? )" "  hostA keeps its half (not removed)"
u3=$(sed -n 's/^uuid = "\(.*\)"/\1/p' "$QDIR/A/run/web3--migratedaway/domain.cfg")
like "$(cat "$QDIR/A/state/outgoing/$u3.postcopy" 2>&1)" '^migration=[0-9a-f]{32}' \
    "  and its record, for a later try"
rm -f "$QDIR/via.refuse"
done_testing
