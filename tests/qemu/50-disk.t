#!/bin/bash
# A QEMU domain's local disk migrates with it (issues 5 and 6): web1's vda is
# target=blockmirror:web1.xvda, served on hostA by `vmmig blockmirror serve
# IMAGE --disk web1.xvda`; QEMU attaches it over NBD from the unix socket
# STATE_DIR/blockmirror/web1.xvda.nbd.  The guest writes all the time with
# O_DIRECT (diskcheck, self-checking) and rewrites memory (memcheck).
# Bad input first, then faults before the commit point (hostB's secondary
# killed while the disk is mirrored: hostB ends its incoming copy at once;
# hostB's agent killed after RECEIVED: the switch fails; the disk name
# taken on hostB): each leaves web1 running on hostA with every write.  Then the retry through the migrate file and the way back:
# each destination's copy at the commit point is byte-identical to the
# source's image at the switch, the source's primary exits, and the guest
# goes on from the destination's own copy with nothing left on the source.
# Last, web1 and a diskless peer move together (a peer group, through
# vmmigfs), web1's disk with it.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/lib.sh"
export VMMIG_TEST_TIMEOUT=${VMMIG_TEST_TIMEOUT:-600} # three faults, two migrations
qenv_init "$@"
# each destination copies its images here at the commit point
export VMMIG_TEST_DISK_SNAPSHOT=$QDIR/snap
mkdir -p "$QDIR/snap"
qenv_start
MA=$QDIR/A/mnt MB=$QDIR/B/mnt
MIB=16
IMG=$QDIR/A/web1.img
DISK="disk = [ 'format=raw, vdev=xvda, access=rw, target=blockmirror:web1.xvda' ]"
bmstatus() { # HOST [KEY]: a field of the disk's primary's status there
    on "$1" "$VMMIG" blockmirror status --disk web1.xvda 2>&1 | sed -n "s/^${2:-state}: //p"
}
field() { printf ' %s\n' "$2" | sed -n "s/.*[ ]$1=\([0-9]*\).*/\1/p" | tail -n 1; }
writes_on() { guest "$1" web1 'diskcheck status'; }
grows() { # HOST DESC: the guest's writes go on there, none failing
    local w1 st
    w1=$(field writes "$(writes_on "$1")")
    sleep 2
    st=$(writes_on "$1")
    if [ "$(field writes "$st")" -gt "${w1:-0}" ] 2>/dev/null && [[ "$st" == *"errors=0"* ]]; then
        ok 0 "$2 ($w1 -> $st)"
    else
        ok 1 "$2 ($w1 -> $st)"
    fi
}
# The pids of HOST's processes (their command line names its directory)
# whose command line has WORDS.
procs_on() {
    local p
    for p in $(pgrep -f -- "$2"); do
        tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$QDIR/$1/" && echo "$p"
    done
}
gone() { [ ! -e "/proc/$1" ] || grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }
# After a failed attempt: until hostB's agent has cleaned up and gone.
settled() {
    qwait 30 "[ -z \"\$(procs_on B 'vmmig receive ')\" ]"
    ok $? "  ...hostB's agent has finished"
}
# The blockmirrors this test started (some outlive their agents): at exit.
bm_cleanup() {
    local p
    for p in $(procs_on A 'vmmig blockmirror') $(procs_on B 'vmmig blockmirror'); do
        kill "$p" 2>/dev/null
    done
    sleep 0.3
    qenv_cleanup
}
trap bm_cleanup EXIT

# --- bad input -------------------------------------------------------------
dd if=/dev/urandom of="$IMG" bs=1M count=$MIB 2>/dev/null
printf 'name = "bad1"\nmemory = 64\nkernel = "%s"\n%s\n' "$QCACHE/bzImage" \
    "disk = [ 'vdev=xvda, target=blockmirror:../x' ]" > "$QDIR/bad1.cfg"
out=$(on A "$VMMIG" create "$QDIR/bad1.cfg" 2>&1)
like "$out" "bad disk target 'blockmirror:../x'" "create: a bad blockmirror:NAME is refused" ||
    diag "$out"
printf 'name = "bad2"\nmemory = 64\nkernel = "%s"\n%s\n' "$QCACHE/bzImage" "$DISK" > "$QDIR/bad2.cfg"
out=$(on A "$VMMIG" create "$QDIR/bad2.cfg" 2>&1)
like "$out" "blockmirror:web1.xvda is not served here .*blockmirror serve IMAGE --disk web1.xvda" \
    "create: a disk nobody serves is refused, saying how to serve it" || diag "$out"
ok "$( [ ! -e "$QDIR/A/run/bad2" ]; echo $? )" "  ...and leaves no domain behind"

# --- the primary on hostA, the guest --------------------------------------
on_exec A "$VMMIG" blockmirror serve "$IMG" --disk web1.xvda </dev/null >"$QDIR/A/bm.log" 2>&1 &
bm_a=$!
qwait 10 "[ -S '$QDIR/A/state/blockmirror/web1.xvda.nbd' ] && [ -S '$QDIR/A/state/blockmirror/web1.xvda.bmctl' ]"
ok $? "blockmirror serve --disk web1.xvda: NBD and control sockets in hostA's state dir" ||
    diag "$(cat "$QDIR/A/bm.log")"
is "$(bmstatus A)" standalone "  ...standalone"
truncate -s 1M "$QDIR/A/other.img"
out=$(on A "$VMMIG" blockmirror serve "$QDIR/A/other.img" --disk web1.xvda 2>&1 </dev/null)
like "$out" "another blockmirror" "a second serve of the same disk name is refused" || diag "$out"
is "$(bmstatus A)" standalone "  ...and the first one still answers"

qenv_boot A web1 "$DISK"
ok $? "web1 boots on hostA with vda = blockmirror:web1.xvda" ||
    { diag "$(tail -5 "$QDIR/A/run/web1/qemu.log" 2>&1)"; done_testing; }
is "$(guest A web1 'cat /sys/block/vda/size')" $((MIB * 2048)) "the guest sees a $MIB MiB vda"
is "$(guest A web1 'dd if=/dev/vda bs=1M count=2 iflag=direct 2>/dev/null|md5sum' | tail -n 1 | cut -d' ' -f1)" \
    "$(dd if="$IMG" bs=1M count=2 2>/dev/null | md5sum | cut -d' ' -f1)" "  ...with the image's content"
like "$(guest A web1 "diskcheck start /dev/vda $MIB 40")" '^started' "diskcheck writes with O_DIRECT"
like "$(guest A web1 'memcheck start 32 5000')" 'started' "memcheck rewrites 32 MiB"
grows A "the guest's disk writes go through"

# --- fault: hostB's secondary killed while every write is mirrored ---------
# (the delay is long: the guest answers slowly under TCG on a busy machine)
VMMIG_TEST_DELAY=disksynced:30 on_exec A "$VMMIG" send web1 hostB > "$QDIR/f1.out" 2>&1 &
send_pid=$!
qwait 60 "grep -qs 'test delay at disksynced' '$QDIR/f1.out'"
ok $? "send: the disk is in sync before the memory moves" || diag "$(cat "$QDIR/f1.out")"
like "$(cat "$QDIR/f1.out")" "disk=xvda device=blockmirror:web1.xvda mirror=nbd://hostB:[0-9]+" \
    "  ...mirrored to hostB's secondary"
is "$(bmstatus A)" synced "  ...hostA's primary is synced"
ok "$( [ -S "$QDIR/B/state/blockmirror/web1.xvda.nbd" ]; echo $? )" \
    "  ...hostB's secondary serves blockmirror:web1.xvda there"
grows A "the guest writes while the disk is mirrored"
sec=$(procs_on B 'blockmirror receive')
ok "$( [ -n "$sec" ]; echo $? )" "found hostB's secondary ($sec)"
unlike "$(cat "$QDIR/f1.out")" 'stage=2' "  ...still before the memory moves"
[ -n "$sec" ] && kill -9 $sec
qwait 5 "gone $sec"
ok $? "  ...killed"
wait "$send_pid"
like "$(grep '^result' "$QDIR/f1.out")" 'result failed .*domain=running-here' \
    "secondary killed: the migration fails, web1 runs on hostA" || diag "$(cat "$QDIR/f1.out")"
qwait 10 "[ \"\$(bmstatus A)\" = standalone ]"
is "$(bmstatus A)" standalone "  ...hostA's primary detached and serves alone"
grows A "  ...the guest keeps writing on hostA"
settled
like "$(cat "$MB/events")" 'a disk secondary of web1 went away while its memory arrived' \
    "  ...hostB's agent ended the incoming copy at once"
ok "$( [ ! -e "$MB/web1" ] && [ ! -e "$QDIR/B/run/web1" ]; echo $? )" "  ...no web1 on hostB"
ok "$( [ -e "$QDIR/B/state/disks/web1.xvda.img" ] && [ ! -e "$QDIR/B/state/disks/web1.xvda.img.bmstate" ]; echo $? )" \
    "  ...hostB kept its copy (a stale replica for a later attempt), without its state file"
like "$(cat "$MB/events")" 'kept the copy of web1.s disk xvda for a later attempt' "  ...and says so"

# --- fault: hostB's agent killed after RECEIVED, before the commit ---------
VMMIG_TEST_DELAY=received:10 on_exec A "$VMMIG" send web1 hostB > "$QDIR/f2.out" 2>&1 &
send_pid=$!
qwait 90 "grep -qs 'test delay at received' '$QDIR/f2.out'"
ok $? "send: memory and disk on hostB, before the commit" || diag "$(cat "$QDIR/f2.out")"
recv=$(procs_on B 'vmmig receive ')
ok "$( [ -n "$recv" ]; echo $? )" "found hostB's agent ($recv)"
unlike "$(cat "$QDIR/f2.out")" 'disk=xvda switched' "  ...before the switch"
[ -n "$recv" ] && kill -9 $recv
wait "$send_pid"
like "$(grep '^result' "$QDIR/f2.out")" 'result failed .*domain=running-here' \
    "agent killed: the migration fails, web1 runs on hostA" || diag "$(cat "$QDIR/f2.out")"
like "$(cat "$QDIR/f2.out")" 'disk xvda: switch' "  ...at the disk's switch, before anything was handed over"
qwait 10 "grep -q 'state: running' '$MA/web1/status'"
ok $? "  ...web1 running on hostA" || diag "$(cat "$MA/web1/status")"
qwait 10 "[ \"\$(bmstatus A)\" = standalone ]"
is "$(bmstatus A)" standalone "  ...hostA's primary serves alone"
grows A "  ...the guest keeps writing on hostA"
qwait 20 "[ -z \"\$(procs_on B 'blockmirror receive')\" ]"
ok $? "  ...hostB's secondary stopped with its agent"

# --- fault: the disk's name is served on hostB already ---------------------
truncate -s 1M "$QDIR/B/other.img"
on B "$VMMIG" blockmirror serve "$QDIR/B/other.img" --disk web1.xvda </dev/null \
    >"$QDIR/B/other.log" 2>&1 &
other=$!
qwait 10 "[ -S '$QDIR/B/state/blockmirror/web1.xvda.nbd' ]"
out=$(on A "$VMMIG" send web1 hostB 2>&1)
like "$out" 'result failed .*hostB cannot take disk xvda: .*another blockmirror serves it.*' \
    "hostB serves blockmirror:web1.xvda already: refused with the reason" || diag "$out"
like "$out" 'domain=running-here' "  ...web1 runs on hostA"
settled
is "$(on B "$VMMIG" blockmirror status --disk web1.xvda 2>&1 | sed -n 's/^size: //p')" 1048576 \
    "  ...hostB's own disk is untouched"
kill $(procs_on B "blockmirror serve $QDIR/B/other.img")
wait "$other"
grows A "  ...the guest keeps writing on hostA"

# --- the retry: echo hostB > migrate ---------------------------------------
cp "$QDIR/B/state/disks/web1.xvda.img" "$QDIR/stale.img" # what hostB kept
echo hostB > "$MA/web1/migrate"
ok $? "echo hostB > web1/migrate: accepted"
qwait 120 "[ ! -e '$MA/web1' ]"
ok $? "web1 left hostA" || diag "$(tail -20 "$MA/events")"
qwait 10 "grep -q 'state: running' '$MB/web1/status' 2>/dev/null"
ok $? "web1 runs on hostB" || diag "$(tail -20 "$MB/events")"
qwait 10 "! kill -0 $bm_a 2>/dev/null"
wait "$bm_a"
is "$?" 0 "hostA's primary exited after the switch"
like "$(cat "$QDIR/A/bm.log")" 'switched; the peer is the primary now' "  ...handing over to hostB"
is "$(sha256sum < "$QDIR/snap/web1.xvda.img")" "$(sha256sum < "$IMG")" \
    "hostB's copy at the commit point is byte-identical to hostA's image at the switch"
is "$(bmstatus B)" standalone "hostB's own primary serves blockmirror:web1.xvda, standalone"
is "$(bmstatus B peer)" none "  ...with no peer"
like "$(bmstatus B state_file)" "$QDIR/B/state/disks/web1.xvda.img.bmstate" "  ...from hostB's disk dir"
rm -f "$IMG" "$IMG.bmstate"
grows B "hostA's image removed: the guest keeps writing on hostB"
est=$(on B ss -tn state established 2>/dev/null | grep -c "$SUBNET.1:")
is "$est" 0 "nothing on hostB is connected to hostA"
# hostB kept its copy from the failed attempts (a stale replica): compared
# by hash, only what the guest wrote since was copied, and the job says so
ev=$(grep ' migrate-done ' "$MA/events" | tail -n 1)
dsize=$(field disk_size "$ev") dsent=$(field disk_sent "$ev") dcmp=$(field disk_compared "$ev")
is "$dsize" $((MIB << 20)) "the retry's migrate-done event reports the disk's size ($ev)"
is "$dcmp" "$dsize" "  ...the whole disk compared by hash with hostB's stale replica"
# A block is copied only if it differed when compared; a block the guest
# wrote after that is mirrored, not copied, and differs at the end too.
bs=$(bmstatus B block_size)
differ=$(python3 -c '
import sys
bs = int(sys.argv[3]); n = 0
with open(sys.argv[1], "rb") as a, open(sys.argv[2], "rb") as b:
    while True:
        x, y = a.read(bs), b.read(bs)
        if not x and not y: break
        n += x != y
print(n * bs)' "$QDIR/stale.img" "$QDIR/snap/web1.xvda.img" "${bs:-65536}")
ok "$( [ -n "$dsent" ] && [ "$dsent" -le "$differ" ]; echo $? )" \
    "  ...and only blocks that differed copied: $dsent bytes, $differ in blocks that differ from the stale copy at the end, of $dsize"
v=$(guest B web1 'memcheck verify')
like "$v" 'bad=0' "memory verified on hostB: $v"

# --- and back: vmmig migrate --------------------------------------------
out=$(on B "$VMMIG" migrate web1 hostA 2>&1)
ok $? "vmmig migrate web1 hostA (through hostB's migrate file)" || diag "$out"
qwait 10 "grep -q 'state: running' '$MA/web1/status' 2>/dev/null"
ok $? "web1 runs on hostA again" || diag "$(tail -20 "$MA/events")"
ok "$( [ ! -e "$QDIR/B/run/web1" ]; echo $? )" "  ...and not on hostB"
qwait 10 "[ -z \"\$(procs_on B 'blockmirror receive')\" ]"
ok $? "hostB's primary exited after the switch"
like "$(cat "$QDIR/B/state/blockmirror/web1.xvda.log")" 'switched; the peer is the primary now' \
    "  ...handing over to hostA"
is "$(sha256sum < "$QDIR/snap/web1.xvda.img")" "$(sha256sum < "$QDIR/B/state/disks/web1.xvda.img")" \
    "hostA's copy at the commit point is byte-identical to hostB's image at the switch"
is "$(bmstatus A)" standalone "hostA's primary of blockmirror:web1.xvda is its own copy"
ev=$(grep ' migrate-done ' "$MB/events" | tail -n 1)
dsent=$(field disk_sent "$ev") dcmp=$(field disk_compared "$ev")
dsize=$(field disk_size "$ev")
is "$dcmp" $((MIB << 20)) "the way back: the whole disk compared by hash with hostA's (new, empty) copy ($ev)"
ok "$( [ -n "$dsent" ] && [ "$dsent" -gt 0 ] && [ "$dsent" -le $((MIB << 21)) ]; echo $? )" \
    "  ...and what differed copied: $dsent bytes"
rm -f "$QDIR/B/state/disks/web1.xvda.img"*
grows A "hostB's image removed: the guest keeps writing on hostA"

# --- co-migration: web1 and its diskless peer move together ----------------
qenv_boot A peer1
ok $? "peer1 (no disk) boots on hostA"
echo peer1 > "$MA/web1/peer"
ok $? "echo peer1 > web1/peer"
echo hostB > "$MA/web1/migrate"
ok $? "echo hostB > web1/migrate: the group moves, web1 with its disk"
qwait 120 "grep -Eq 'comigrate-(done|failed)' '$MA/events'"
ev=$(grep -E 'comigrate-(done|failed)' "$MA/events" | tail -n 1)
like "$ev" 'comigrate-done to=hostB group=web1,peer1' "the group moved: $ev" ||
    diag "$(tail -n 12 "$MA/events")"
qwait 10 "grep -q 'state: running' '$MB/web1/status' 2>/dev/null && grep -q 'state: running' '$MB/peer1/status' 2>/dev/null"
ok $? "web1 and peer1 run on hostB"
is "$(sha256sum < "$QDIR/snap/web1.xvda.img")" "$(sha256sum < "$QDIR/A/state/disks/web1.xvda.img")" \
    "hostB's copy at the commit point is byte-identical to hostA's image at the switch"
is "$(bmstatus B)" standalone "hostB's own primary serves web1's disk, standalone"
rm -f "$QDIR/A/state/disks/web1.xvda.img"*
grows B "hostA's image removed: the guest keeps writing on hostB"
est=$(on B ss -tn state established 2>/dev/null | grep -c "$SUBNET.1:")
is "$est" 0 "nothing on hostB is connected to hostA"
v=$(guest B peer1 'echo alive')
like "$v" 'alive' "peer1 answers on hostB"

# --- the guest's verdict -----------------------------------------------------
like "$(guest B web1 'diskcheck stop')" 'errors=0' "diskcheck stopped: no write ever failed"
v=$(guest B web1 'diskcheck verify /dev/vda' 60)
like "$v" 'bad=0$' "the guest finds every acknowledged write on its disk: $v"
is "$(guest B web1 'md5sum /dev/vda' 60 | tail -n 1 | cut -d' ' -f1)" \
    "$(md5sum < "$QDIR/B/state/disks/web1.xvda.img" | cut -d' ' -f1)" \
    "the guest's vda is byte-identical to hostB's local image"
v=$(guest B web1 'memcheck verify')
like "$v" 'bad=0' "memory verified on hostB: $v"
on B "$VMMIG" blockmirror status --disk web1.xvda >/dev/null 2>&1
ok $? "hostB's primary still answers (the cleanup stops it)"
done_testing
