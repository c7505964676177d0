#!/bin/bash
# The destination's disk fills up: the secondary's image lives on an 8 MiB
# tmpfs (a private mount namespace, no loop device) but says it is 32 MiB.
# The primary gets ENOSPC from the peer, says so in status, keeps serving,
# and loses no write it acknowledged.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/blockmirror.sh"
[ "$(id -u)" = 0 ] || skip_all "needs root (a tmpfs in a private mount namespace)"
bm_init qemu-io unshare
unshare -m --propagation private true 2>/dev/null || skip_all "cannot unshare a mount namespace"

mkdir "$T/small"
bm_bg sec unshare -m --propagation private sh -c \
    "mount -t tmpfs -o size=8M tmpfs '$T/small' && exec '$VMMIG' blockmirror receive \
     '$T/small/sec.img' --size 32M --socket '$T/sec.sock'"
bm_wait_sock "$T/sec.sock"
ok $? "receive on an 8 MiB tmpfs, image of 32 MiB"
[ ! -e "$T/small/sec.img" ]
ok $? "the tmpfs is private to the receiver"

bm_random "$T/pri.img" 32
bm_serve pri "$T/pri.img" --peer "$(bm_url sec)"
ok $? "serve with the peer"
for ((i = 0; i < 100; i++)); do
    [[ "$(bm_status pri last_error)" == *"No space left"* ]] && break
    sleep 0.1
done
like "$(bm_status pri last_error)" 'No space left on device' \
    "status: the peer's ENOSPC, in clear words"
like "$(bm_status pri state)" '^(disconnected|syncing)$' "state: not synced"
[ "$(bm_status pri dirty_bytes)" -gt 0 ]
ok $? "dirty_bytes: what the peer could not take"

out=$(qemu-io -f raw -c 'write -P 0x41 0 4M' -c 'write -P 0x42 20M 4M' -c 'write -P 0x43 28M 1M' \
    -c flush "$(bm_url pri)" 2>&1)
ok $? "guest writes are acknowledged while the peer is full" || diag "$out"
out=$(qemu-io -f raw -c 'read -P 0x41 0 4M' -c 'read -P 0x42 20M 4M' -c 'read -P 0x43 28M 1M' \
    "$(bm_url pri)" 2>&1)
unlike "$out" 'failed|error' "every acknowledged write reads back from the primary"
cmp -s <(head -c 4M "$T/pri.img") <(head -c 4M /dev/zero | tr '\0' 'A')
ok $? "and is in the primary's image file"
kill -0 "${BM_PID[pri]}" 2>/dev/null && kill -0 "${BM_PID[sec]}" 2>/dev/null
ok $? "neither side crashed"
done_testing
