#!/bin/bash
# Kill either side.  The primary killed (-9) while a guest writes: restarted
# on the same image, its activity log marks what may have been in flight,
# the resync makes both images identical, and every write the guest saw
# acknowledged is there.  The secondary killed during the initial sync: the
# primary keeps serving and finishes the sync when it is back.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/blockmirror.sh"
bm_init qemu-io

bm_random "$T/pri.img" 64
truncate -s 64M "$T/sec.img"
bm_receive sec "$T/sec.img"
bm_serve pri "$T/pri.img" --peer "$(bm_url sec)"
bm_wait_state pri synced 20
ok $? "synced"

# A guest writing 1 MiB records with a sequence number, one after another.
writer() {
    local i
    for ((i = 1; i <= 400; i++)); do
        qemu-io -f raw -c "write -P $((i % 255 + 1)) $(((i % 60) * 1048576)) 1M" "$(bm_url pri)" \
            >/dev/null 2>&1 || break
        echo "$i" >"$T/acked"
    done
}
writer &
wpid=$!
sleep 1
bm_kill pri KILL
wait $wpid
acked=$(cat "$T/acked" 2>/dev/null || echo 0)
note "the guest saw $acked writes acknowledged before the kill"
[ "$acked" -gt 0 ]
ok $? "writes were acknowledged before the kill"

bm_serve pri "$T/pri.img" --peer "$(bm_url sec)"
ok $? "the primary restarts on the same image"
bm_wait_state pri synced 20
ok $? "resynced"
cmp -s "$T/pri.img" "$T/sec.img"
ok $? "byte-identical after the crash and resync"
# The last acknowledged record of each slot is on both sides.
bad=0
for ((i = acked > 60 ? acked - 59 : 1; i <= acked; i++)); do
    out=$(qemu-io -f raw -r -c "read -P $((i % 255 + 1)) $(((i % 60) * 1048576)) 1M" "$T/sec.img" 2>&1)
    [[ "$out" == *failed* ]] && bad=$((bad + 1))
done
is "$bad" 0 "every acknowledged write is on the secondary"

# The secondary killed during a sync.
bm_kill pri
rm -f "$T/pri.img.bmstate"
truncate -s 0 "$T/sec.img"
truncate -s 64M "$T/sec.img"
bm_serve pri "$T/pri.img" --peer "$(bm_url sec)" --block-size 4K
sleep 0.2
bm_kill sec KILL
is "$(qemu-io -f raw -c 'write -P 9 0 64K' "$(bm_url pri)" >/dev/null 2>&1; echo $?)" 0 \
    "a write with the secondary dead mid-sync"
bm_wait_state pri disconnected 5
ok $? "disconnected"
bm_receive sec "$T/sec.img"
bm_wait_state pri synced 30
ok $? "the sync finishes once the secondary is back"
cmp -s "$T/pri.img" "$T/sec.img"
ok $? "byte-identical"
done_testing
