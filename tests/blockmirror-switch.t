#!/bin/bash
# The role switch at the migration's commit point.  Refused (nothing
# changes) while the peer is away; once in sync: both flushed, the secondary
# told it is the primary (it exits, its image standalone), the primary
# exits too and will not serve the image again.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/blockmirror.sh"
bm_init qemu-io nbdinfo

bm_random "$T/pri.img" 32
truncate -s 32M "$T/sec.img"
bm_serve pri "$T/pri.img"
out=$("$VMMIG" blockmirror switch --timeout 2 --control "$T/pri.ctl" 2>&1)
is "$?" 1 "switch without a peer fails"
like "$out" '^vmmig blockmirror: switch: the peer is not connected' "and says why"
qemu-io -f raw -c 'write -P 3 0 64K' "$(bm_url pri)" >/dev/null 2>&1
ok $? "the primary still takes writes"

bm_receive sec "$T/sec.img"
"$VMMIG" blockmirror attach "$(bm_url sec)" --control "$T/pri.ctl"
ok $? "attach (not waiting for the sync)"
qemu-io -f raw -c 'write -P 4 1M 64K' "$(bm_url pri)" >/dev/null 2>&1
out=$("$VMMIG" blockmirror switch --timeout 20 --control "$T/pri.ctl" 2>&1)
ok $? "switch: waits for the sync, then hands over" || diag "$out"
is "$(printf '%s\n' "$out" | sed -n 's/^peer: //p')" "$(bm_url sec)" "switch names the new primary"
for ((i = 0; i < 50; i++)); do
    kill -0 "${BM_PID[pri]}" 2>/dev/null || kill -0 "${BM_PID[sec]}" 2>/dev/null || break
    sleep 0.1
done
bm_kill pri
is "$BM_EXIT" 0 "the primary exits 0 after the switch"
like "$(cat "$T/pri.log")" 'switched; the peer is the primary now' "and says so"
bm_kill sec
is "$BM_EXIT" 0 "the secondary exits 0"
like "$(cat "$T/sec.log")" 'standalone primary now' "and says it is the primary"
cmp -s "$T/pri.img" "$T/sec.img"
ok $? "the images are identical at the handover"

out=$("$VMMIG" blockmirror serve "$T/pri.img" --socket "$T/again.sock" --control "$T/again.ctl" 2>&1)
is "$?" 1 "the old primary's image is not served again"
like "$out" 'handed over .* by a switch; remove .*pri.img.bmstate' "the error says what to do"

# The new primary: the destination serves its own copy, nothing of the source.
bm_serve dst "$T/sec.img"
ok $? "the destination serves its image on its own"
like "$(nbdinfo "$(bm_url dst)" 2>&1)" 'export-size: 33554432' "readable through NBD"
is "$(bm_status dst state)" standalone "standalone"
done_testing
