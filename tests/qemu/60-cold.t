#!/bin/bash
# vmmig migrate --cold between two QEMU hosts (issue 6; Xen <-> QEMU is
# tests/xen2/scenarios/70-cold.sh): a stopped domain's kernel, ramdisk and
# raw disk are copied to hostB's agent, verified there, and it boots there
# afresh.  The refusals and faults first, each leaving web1 as it was on
# hostA and nothing on hostB: web1 running; an admin hold; hostB refusing
# incoming domains; the link cut in the middle of the copy.  Then the move:
# the guest reads its disk on hostB and finds it byte-identical.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/lib.sh"
export VMMIG_TEST_TIMEOUT=${VMMIG_TEST_TIMEOUT:-300}
qenv_init "$@"
qenv_start
IMG=$QDIR/A/web1.img
dd if=/dev/zero of="$IMG" bs=1M count=1 status=none
dd if=/dev/urandom bs=1M count=7 status=none >> "$IMG"
SUM=$(sha256sum < "$IMG" | cut -d' ' -f1)
TAILSUM=$(tail -c +1048577 "$IMG" | sha256sum | cut -d' ' -f1)
qenv_boot A web1 "disk = [ 'format=raw, vdev=xvda, access=rw, target=$IMG' ]" ||
    bail_out "web1 did not boot on hostA: $(tail -5 "$QDIR/A/run/web1/serial.log" 2>/dev/null)"
intact() { # web1 stopped on hostA as it was, nothing of it on hostB
    [ -f "$QDIR/A/run/web1/domain.cfg" ] && [ "$(sha256sum < "$IMG" | cut -d' ' -f1)" = "$SUM" ] &&
        [ -z "$(ls -A "$QDIR/B/state/disks" 2>/dev/null)" ] && [ ! -e "$QDIR/B/run/web1" ]
}

out=$(on A "$VMMIG" migrate --cold web1 hostB 2>&1); rc=$?
is "$rc" 1 "running: vmmig migrate --cold web1 hostB is refused"
like "$out" "web1 is running: shut it down or migrate it live" "  with the reason" || diag "$out"

run_ok "an admin hold on web1" on A "$VMMIG" lock web1 --reason cold-test
pid=$(cat "$QDIR/A/run/web1/qemu.pid")
kill "$pid"
qwait 10 "! kill -0 $pid 2>/dev/null" || bail_out "web1's QEMU did not end"
pass "web1 stopped (its QEMU ended, its instance is left)"
out=$(on A "$VMMIG" migrate --cold web1 hostB 2>&1); rc=$?
is "$rc" 1 "held: refused"
like "$out" "locked: an admin hold by .*cold-test" "  as locked, naming the hold" || diag "$out"
ok "$(intact; echo $?)" "  web1 intact on hostA, nothing on hostB"
run_ok "the hold released" on A "$VMMIG" unlock web1

printf 'admin_group =\naccept_incoming = no\n' > "$QDIR/B/policy"
out=$(on A "$VMMIG" migrate --cold web1 hostB 2>&1); rc=$?
is "$rc" 1 "hostB accepts no migrations: refused there"
like "$out" "refused by hostB: this host does not accept migrations" "  with hostB's reason" || diag "$out"
ok "$(intact; echo $?)" "  web1 intact on hostA, nothing on hostB"
printf 'admin_group =\nmigrate_timeout = 30\n' > "$QDIR/B/policy"

# the link cut while the files are copied: the source is held 4 s after
# the first chunk (VMMIG_TEST_DELAY), the veth goes down meanwhile
t0=$(date +%s)
VMMIG_TEST_DELAY=cold-stream:4 on_exec A "$VMMIG" migrate --cold -t 5 web1 hostB > "$QDIR/cut.out" 2>&1 &
mig=$!
qwait 20 "grep -q 'test delay at cold-stream' '$QDIR/cut.out'" || diag "$(cat "$QDIR/cut.out")"
ip -n "$NS_A" link set "vqa$$" down
wait "$mig"; rc=$?
ip -n "$NS_A" link set "vqa$$" up
out=$(cat "$QDIR/cut.out")
is "$rc" 1 "link cut mid-copy: the cold migration fails ($(( $(date +%s) - t0 )) s)"
like "$out" "web1: sending to hostB|web1: hostB" "  saying the link broke" || diag "$out"
ok "$([ -f "$QDIR/A/run/web1/domain.cfg" ] && [ "$(sha256sum < "$IMG" | cut -d' ' -f1)" = "$SUM" ]; echo $?)" \
    "  web1 intact on hostA"
qwait 60 "[ -z \"\$(ls -A '$QDIR/B/state/disks' 2>/dev/null)\" ]"
ok "$(intact; echo $?)" "  hostB removed what had arrived (its agent timed out)" ||
    diag "$(ls -la "$QDIR/B/state/disks")"

# hostB cannot start it (its QEMU fails there): nothing is left there,
# web1 stays on hostA
restart_b() { # [VAR=VALUE]: hostB's vmmigfs again, with VAR in its environment
    local p
    p=$(cat "$QDIR/B/vmmigfs.pid")
    kill "$p"
    qwait 5 "! kill -0 $p 2>/dev/null" || umount -l "$QDIR/B/mnt"
    qwait 5 "! grep -q ' $QDIR/B/mnt ' /proc/self/mountinfo" || umount -l "$QDIR/B/mnt"
    if [ $# -gt 0 ]; then
        export "$@"
    fi
    on_exec B "$VMMIG" fs -f --backend qemu --listen 8123 "$QDIR/B/mnt" \
        </dev/null >>"$QDIR/B/vmmigfs.log" 2>&1 &
    echo $! > "$QDIR/B/vmmigfs.pid"
    [ $# -gt 0 ] && unset "${1%%=*}"
    qwait 5 "grep -q ' $QDIR/B/mnt ' /proc/self/mountinfo"
    # mounted is not yet listening (CI once got "Connection refused")
    qwait 5 "on B ss -Hltn 2>/dev/null | grep -q ':8123 '"
}
restart_b VMMIG_QEMU=/bin/false
out=$(on A "$VMMIG" migrate --cold web1 hostB 2>&1); rc=$?
is "$rc" 1 "hostB cannot start it (its QEMU fails): the cold migration fails"
like "$out" "hostB could not start it: QEMU did not start.*its copy here is intact" "  saying so" ||
    diag "$out"
ok "$(intact; echo $?)" "  web1 intact on hostA, nothing on hostB"
restart_b

# the move
out=$(on A "$VMMIG" migrate --cold web1 hostB 2>&1); rc=$?
is "$rc" 0 "vmmig migrate --cold web1 hostB"
like "$out" "moved cold to hostB .*verified.*booted afresh" "  copied, verified, booted" || diag "$out"
like "$out" "no longer used by it: $IMG" "  says hostA's image is no longer used"
ok "$([ ! -e "$QDIR/A/run/web1" ]; echo $?)" "  web1's stopped instance on hostA is removed"
qwait 30 "grep -q 'VMMIG-GUEST: ready' '$QDIR/B/run/web1/serial.log' 2>/dev/null"
# (the serial console may echo the command line: the last digest printed)
is "$(guest B web1 'dd if=/dev/vda bs=1M skip=1 2>/dev/null | sha256sum' | grep -o '[0-9a-f]\{64\}' | tail -n 1)" "$TAILSUM" \
    "web1 runs on hostB and reads its disk there, byte-identical"
is "$(sha256sum < "$QDIR/B/state/disks/web1.vda.img" | cut -d' ' -f1)" "$SUM" \
    "hostB's image is hostA's, byte for byte"
out=$(on A "$VMMIG" migrate --cold web1 hostB 2>&1); rc=$?
like "$out" "web1: no such QEMU domain" "web1 is not on hostA any more (status $rc)"
done_testing
