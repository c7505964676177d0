#!/bin/bash
# Mirror while writing: the guest (qemu-io, and nbdcopy over 4 connections)
# writes through the primary while the initial sync runs; at the end both
# images are byte-identical, verify agrees, and status tells the story.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/blockmirror.sh"
bm_init qemu-io nbdcopy

bm_random "$T/pri.img" 96
truncate -s 96M "$T/sec.img"
bm_random "$T/part.img" 8
bm_receive sec "$T/sec.img"
ok $? "receive starts"
bm_serve pri "$T/pri.img" --peer "$(bm_url sec)"
ok $? "serve starts with the peer"
U=$(bm_url pri)

# 300 writes at random places while the copy runs.
cmds=()
for ((i = 0; i < 300; i++)); do
    cmds+=(-c "write -P $((i % 250 + 1)) $(((RANDOM * 32768 + RANDOM) % (96 * 1048576 - 70000))) $((RANDOM % 65536 + 1))")
done
state_during=$(bm_status pri state)
out=$(qemu-io -f raw "${cmds[@]}" "$U" 2>&1)
ok $? "300 guest writes during the sync" || diag "$(printf '%s\n' "$out" | grep -v '^wrote\|ops;' | head)"
like "$state_during" '^(syncing|synced)$' "state while copying: $state_during"
# nbdcopy writes an 8 MiB file over the start of the disk through 4 connections
# (its size is not the export's: it writes what it has).
run_ok "nbdcopy writes through the primary" nbdcopy --target-is-zero "$T/part.img" "$U"
bm_wait_state pri synced 30
ok $? "synced"
is "$(bm_status pri dirty_bytes)" 0 "dirty_bytes: 0"
is "$(bm_status pri synced_bytes)" $((96 * 1048576)) "synced_bytes: the whole image"
like "$(bm_status pri peer)" "socket=$T/sec.sock" "peer: the secondary"
cmp "$T/pri.img" "$T/sec.img"
ok $? "the images are byte-identical"
cmp -s <(head -c 8M "$T/pri.img") "$T/part.img"
ok $? "nbdcopy's data is in the primary's image"
out=$("$VMMIG" blockmirror verify --control "$T/pri.ctl" 2>&1)
ok $? "verify: identical"
like "$out" '^differing_bytes: 0$' "verify reports 0 differing bytes"
done_testing
