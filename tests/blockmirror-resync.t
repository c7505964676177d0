#!/bin/bash
# Disconnect and resync.  The secondary killed: writes go on, are
# acknowledged and counted dirty; when it is back only those blocks are
# sent (bytes_sent).  The link cut without a close (the secondary stopped):
# a write waits at most --timeout, then goes on locally.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/blockmirror.sh"
bm_init qemu-io

bm_random "$T/pri.img" 32
truncate -s 32M "$T/sec.img"
bm_receive sec "$T/sec.img"
bm_serve pri "$T/pri.img" --peer "$(bm_url sec)" --timeout 1
bm_wait_state pri synced 20
ok $? "initial sync"
s0=$(bm_status pri bytes_sent)
h0=$(bm_status pri hash_bytes)

bm_kill sec KILL
out=$(qemu-io -f raw -c 'write -P 0x31 1M 64K' -c 'write -P 0x32 5M 100' \
    -c 'write -P 0x33 9M 128K' "$(bm_url pri)" 2>&1)
ok $? "writes with the secondary dead are acknowledged" || diag "$out"
bm_wait_state pri disconnected 5
ok $? "state: disconnected"
is "$(bm_status pri dirty_bytes)" $((4 * 65536)) "dirty_bytes: the 4 blocks written"
like "$(bm_status pri last_error)" "sec.sock|onnection|Broken pipe" "last_error says why"
out=$(qemu-io -f raw -c 'read -P 0x31 1M 64K' -c 'read -P 0x33 9M 128K' "$(bm_url pri)" 2>&1)
unlike "$out" 'failed' "the primary serves what it acknowledged"

bm_receive sec "$T/sec.img"
bm_wait_state pri synced 20
ok $? "reconnected by itself, synced"
is $(($(bm_status pri bytes_sent) - s0)) $((4 * 65536)) "only the 4 dirty blocks were sent again"
is "$(bm_status pri hash_bytes)" "$h0" "no hash comparison for the same peer"
cmp -s "$T/pri.img" "$T/sec.img"
ok $? "byte-identical after the resync"

# The link cut: the secondary stops answering without closing.
s0=$(bm_status pri bytes_sent)
kill -STOP "${BM_PID[sec]}"
t0=$(date +%s%N)
out=$(qemu-io -f raw -c 'write -P 0x34 2M 64K' "$(bm_url pri)" 2>&1)
st=$?
ms=$((($(date +%s%N) - t0) / 1000000))
ok $st "a write while the peer hangs is acknowledged" || diag "$out"
[ "$ms" -ge 800 ] && [ "$ms" -lt 6000 ]
ok $? "after about the timeout (${ms} ms)"
like "$(bm_status pri last_error)" 'timed out' "last_error: timed out"
kill -CONT "${BM_PID[sec]}"
bm_wait_state pri synced 20
ok $? "back in sync after the link returns"
is $(($(bm_status pri bytes_sent) - s0)) 65536 "one block resent"
cmp -s "$T/pri.img" "$T/sec.img"
ok $? "byte-identical"
done_testing
