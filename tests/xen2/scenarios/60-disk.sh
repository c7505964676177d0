# A local disk migrates with its domain (issue 5, integration): guest dsk's
# xvda is phy:/dev/nbd0 on hostA, the kernel's NBD device connected by
# `vmmig blockmirror serve IMAGE --nbd-device /dev/nbd0`.  The guest writes
# all the time with O_DIRECT (diskcheck, self-checking).  First a fault:
# hostB's agent is killed while the disk is mirrored: the source keeps
# serving, the guest keeps writing, hostB drops the device.  Then
# `echo hostB > dsk/migrate` (vmmig migrate): the disk is mirrored, switched
# at the commit point, and the domain runs on hostB from hostB's own copy,
# byte-identical with the source's image at the switch; nothing on hostB
# refers to hostA afterwards, and the guest's own check finds every write.
# Last, dsk and a diskless peer co-migrate back through vmmigfs, the disk
# mirrored and switched inside the group move.
M=/run/vmmig
KEY='xen2-shared-test-key-0123456789'
SETUP=$(vmmig_setup "$KEY" 'migrate_timeout = 60\n')
IMG=/tmp/dsk.img
MIB=32
CTL=/var/lib/vmmig/blockmirror/nbd0.bmctl
KILLFN='killmatch() { for p in /proc/[0-9]*; do c=$(tr "\\0" " " < $p/cmdline 2>/dev/null); case "$c" in *killmatch*) ;; *"$1"*) kill -${2:-9} ${p#/proc/} 2>/dev/null ;; esac; done; }'
eval "$KILLFN"
unlike() {
    if printf '%s\n' "$1" | grep -Eq -- "$2"; then
        tap_not_ok "$3"
        diag "got:  '$1'" "want no match: /$2/"
        return 1
    fi
    tap_ok "$3"
}
field() { printf ' %s\n' "$2" | sed -n "s/.*[ ]$1=\([0-9]*\).*/\1/p" | tail -n 1; }
bmstate() { vmmig blockmirror status /dev/nbd0 2>&1 | sed -n "s/^${1:-state}: //p"; }
writes_on() { # HOST: the guest writer's count
    if [ "$1" = A ]; then guest_run dsk 'diskcheck status'; else guest_run_on B dsk 'diskcheck status'; fi
}

xl destroy tiny >/dev/null 2>&1; host_run B 'xl destroy tiny' >/dev/null 2>&1
mountpoint -q $M && fusermount3 -u $M
host_run B "mountpoint -q $M && fusermount3 -u $M" >/dev/null
check "hostA: key, policy, vmmigfs --listen 8123" sh -c "$SETUP"
check "hostB: key, policy, vmmigfs --listen 8123 (disk snapshots at the commit point)" \
    host_run B "mkdir -p /tmp/snap && export VMMIG_TEST_DISK_SNAPSHOT=/tmp/snap && $SETUP"
check "hostA has /dev/nbd0 and xen-blkback" sh -c '[ -b /dev/nbd0 ] && [ -d /sys/module/xen_blkback ]'
check "hostB has /dev/nbd0 and xen-blkback" host_run B '[ -b /dev/nbd0 ] && [ -d /sys/module/xen_blkback ]'

# ---- the primary, serving the kernel's /dev/nbd0 ----
dd if=/dev/urandom of=$IMG bs=1M count=$MIB 2>/dev/null
(vmmig blockmirror serve $IMG --nbd-device /dev/nbd0 </dev/null >/tmp/bm-dsk.log 2>&1 &)
wait_for "[ -S $CTL ]" 20
is "$(bmstate)" standalone "blockmirror serve $IMG --nbd-device /dev/nbd0: standalone, control $CTL"
is "$(blockdev --getsize64 /dev/nbd0 2>&1)" $((MIB * 1048576)) "the kernel's /dev/nbd0 is the image's size"
is "$(dd if=/dev/nbd0 bs=1M count=2 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)" \
    "$(dd if=$IMG bs=1M count=2 2>/dev/null | md5sum | cut -d' ' -f1)" "reads through /dev/nbd0 are the image's"
out=$(vmmig blockmirror serve $IMG --nbd-device /dev/nbd1 2>&1); rc=$?
is "$rc" 1 "a second serve of the image is refused" || diag "$out"

sed -e 's/^name = .*/name = "dsk"/' /etc/xen/tiny.cfg > /etc/xen/dsk.cfg
echo "disk = [ 'phy:/dev/nbd0,xvda,w' ]" >> /etc/xen/dsk.cfg
guest_create dsk || { tap_not_ok "guest dsk up with phy:/dev/nbd0"; cat /tmp/bm-dsk.log >&2; exit 0; }
tap_ok "guest dsk runs with xvda = phy:/dev/nbd0"
is "$(guest_run dsk 'cat /sys/block/xvda/size')" $((MIB * 2048)) "the guest sees a $MIB MiB xvda"
like "$(guest_run dsk "diskcheck start /dev/xvda $MIB 40")" "^started " "diskcheck writes 40 blocks/s with O_DIRECT in dsk"
sleep 3
like "$(writes_on A)" "writes=[1-9][0-9]* errors=0" "the guest's writes go through ($(writes_on A))"

# ---- fault: hostB's agent killed while the disk is mirrored ----
rm -f /tmp/send.out
(VMMIG_TEST_DELAY=disksynced:25 vmmig send dsk hostB > /tmp/send.out 2>&1 &) </dev/null
wait_for "grep -q 'test delay at disksynced' /tmp/send.out" 180
like "$(cat /tmp/send.out)" "disk=xvda device=/dev/nbd0 mirror=nbd://hostB:[0-9]+" "send mirrors xvda to hostB's secondary"
is "$(bmstate)" synced "the primary is in sync with hostB before the memory moves"
diag "$(grep 'disk_synced=' /tmp/send.out | tail -n 1)"
is "$(host_run B 'blockdev --getsize64 /dev/nbd0')" $((MIB * 1048576)) "hostB's /dev/nbd0 is connected to its copy"
w1=$(field writes "$(writes_on A)")
sleep 2
w2=$(field writes "$(writes_on A)")
ok_if() { if [ "$1" -gt "$2" ] 2>/dev/null; then tap_ok "$3"; else tap_not_ok "$3 ($1 <= $2)"; fi; }
ok_if "$w2" "$w1" "the guest keeps writing while every write is mirrored ($w1 -> $w2)"
host_run B "$KILLFN; killmatch 'vmmig receive'" >/dev/null
wait_for "grep -q '^result' /tmp/send.out" 180
like "$(grep '^result' /tmp/send.out)" "^result failed .*domain=running-here" "hostB's agent killed: the migration fails, dsk runs on hostA"
wait_for '[ "$(bmstate)" = standalone ]' 20
is "$(bmstate)" standalone "the primary detached from hostB and serves alone"
w1=$(field writes "$(writes_on A)")
sleep 3
st=$(writes_on A)
ok_if "$(field writes "$st")" "$w1" "the guest keeps writing on hostA after the fault"
like "$st" "errors=0" "  ...without a single failed write"
wait_for "! host_run B 'ps' | grep -q 'blockmirror receive'" 20
unlike "$(host_run B 'ps')" "blockmirror receive" "hostB's secondary stopped with its agent"
unlike "$(host_run B 'xl list')" "dsk" "hostB holds no copy of dsk"
diag "hostB's nbd0 after the fault: $(host_run B 'blockdev --getsize64 /dev/nbd0 2>&1')"

# ---- the migration through the migrate file ----
out=$(vmmig migrate dsk hostB 2>&1); rc=$?
is "$rc" 0 "echo hostB > dsk/migrate (vmmig migrate dsk hostB)" || diag "$out"
diag "$(printf '%s\n' "$out" | tail -n 3)"
wait_for "! xl list | grep -q '^dsk'" 30
unlike "$(xl list)" "dsk" "dsk left hostA"
like "$(host_run B 'xl list')" "^dsk " "dsk runs on hostB"
like "$(cat /tmp/bm-dsk.log)" "switched; the peer is the primary now" "hostA's primary switched and stopped"
src=$(md5sum $IMG | cut -d' ' -f1)
dst=$(host_run B 'md5sum /tmp/snap/dsk.xvda.img' | cut -d' ' -f1)
is "$dst" "$src" "hostB's image at the commit point is byte-identical to hostA's at the switch"
bst=$(host_run B 'vmmig blockmirror status /dev/nbd0')
like "$bst" "state: standalone" "hostB's /dev/nbd0 is served by hostB's own primary (standalone)"
unlike "$bst" "hostA|10\.99\.0\.1" "  ...with no peer on hostA"
unlike "$(host_run B 'ps; netstat -tn')" "10\.99\.0\.1:[0-9]+ .*ESTABLISHED.*|blockmirror.*hostA" \
    "nothing on hostB is connected to hostA"
w1=$(field writes "$(writes_on B)")
sleep 3
st=$(writes_on B)
ok_if "$(field writes "$st")" "$w1" "the guest keeps writing on hostB"
like "$st" "errors=0" "  ...and no write ever failed ($st)"
like "$(guest_run_on B dsk 'diskcheck stop')" "errors=0" "diskcheck stopped on hostB"
out=$(guest_run_on B dsk 'diskcheck verify /dev/xvda')
like "$out" "bad=0$" "the guest finds every acknowledged write on hostB's disk ($out)"
is "$(guest_run_on B dsk 'md5sum /dev/xvda' | cut -d' ' -f1)" \
    "$(host_run B 'md5sum /var/lib/vmmig/disks/dsk.xvda.img' | cut -d' ' -f1)" \
    "the guest's xvda is hostB's local image"

# ---- co-migration with the disk: dsk and a diskless peer move back ----
check "hostB: a diskless guest mate, dsk's peer" \
    host_run B "sed -e 's/^name = .*/name = \"mate\"/' /etc/xen/tiny.cfg > /etc/xen/mate.cfg && guest_create mate && echo mate > $M/dsk/peer"
is "$(host_run B "cat $M/mate/peer")" dsk "the group is symmetric (mate/peer shows dsk)"
like "$(guest_run_on B dsk "diskcheck start /dev/xvda $MIB 40")" "^started " "diskcheck writes again in dsk on hostB"
out=$(host_run B "echo hostA > $M/dsk/migrate; i=0; while [ \$i -lt 300 ]; do s=\$(cat $M/dsk/migrate 2>/dev/null); case \"\$s\" in done*|failed*|migrated*) break;; esac; sleep 1; i=\$((i+1)); done; echo \"\$s\"")
like "$out" "done hostA|migrated hostA" "echo hostA > dsk/migrate on hostB: the group (dsk with its disk, mate) moves" ||
    diag "$(host_run B "cat $M/dsk/status; tail -n 20 $M/events")"
like "$(host_run B "cat $M/mate/migrate")" "done hostA|migrated hostA" "  ...mate with it"
like "$(xl list)" "dsk " "dsk runs on hostA"
like "$(xl list)" "mate " "mate runs on hostA"
is "$(bmstate)" standalone "hostA's /dev/nbd0 is served by hostA's own copy now (standalone)"
w1=$(field writes "$(writes_on A)")
sleep 3
st=$(writes_on A)
ok_if "$(field writes "$st")" "$w1" "the guest keeps writing on hostA after the group move"
like "$st" "errors=0" "  ...and no write ever failed ($st)"
like "$(guest_run dsk 'diskcheck stop')" "errors=0" "diskcheck stopped on hostA"
out=$(guest_run dsk 'diskcheck verify /dev/xvda')
like "$out" "bad=0$" "after the co-migration the guest finds every acknowledged write ($out)"
is "$(guest_run dsk 'md5sum /dev/xvda' | cut -d' ' -f1)" \
    "$(md5sum /var/lib/vmmig/disks/dsk.xvda.img | cut -d' ' -f1)" \
    "the guest's xvda is hostA's local image"
unlike "$(ps; netstat -tn)" "10\.99\.0\.2:[0-9]+ .*ESTABLISHED.*|blockmirror.*hostB" \
    "nothing on hostA is connected to hostB"

# ---- cleanup: the domains, then the primaries (they let go of /dev/nbd0) ----
xl destroy dsk; xl destroy mate
killmatch 'blockmirror receive' TERM
host_run B "$KILLFN; killmatch 'blockmirror receive' TERM; fusermount3 -u $M" >/dev/null
killmatch 'blockmirror serve' TERM
fusermount3 -u $M
