#!/bin/bash
# Our NBD client as the mirror into real servers: qemu-nbd and nbdkit's file
# plugin as the peer.  The initial sync fills the peer; writes through our
# server (qemu-io) reach the peer before they are acknowledged; the images
# are byte-identical; verify works without our hash extension (by reading)
# and names a range corrupted on the peer.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/blockmirror.sh"
bm_init qemu-nbd nbdkit qemu-io

for peer in qemu-nbd nbdkit; do
    bm_random "$T/pri.img" 32
    rm -f "$T/pri.img.bmstate"
    truncate -s 32M "$T/peer.img"
    if [ $peer = qemu-nbd ]; then
        bm_bg peer qemu-nbd -f raw -t -k "$T/peer.sock" "$T/peer.img"
    else
        bm_bg peer nbdkit -f -U "$T/peer.sock" file "$T/peer.img"
    fi
    bm_wait_sock "$T/peer.sock"
    ok $? "$peer: started" || continue
    bm_serve pri "$T/pri.img" --peer "$(bm_url peer)"
    ok $? "$peer: serve with --peer" || continue
    bm_wait_state pri synced 20
    ok $? "$peer: initial sync done"
    cmp -s "$T/pri.img" "$T/peer.img"
    ok $? "$peer: the peer's image is the primary's"
    is "$(bm_status pri hash_bytes)" 0 "$peer: no hash extension used (a plain NBD server)"

    out=$(qemu-io -f raw -c 'write -P 0x61 3M 200K' -c 'write -z 8M 1M' -c 'discard 12M 64K' \
        -c 'write -f -P 0x62 20M 4K' -c flush "$(bm_url pri)" 2>&1)
    ok $? "$peer: qemu-io writes through the primary" || diag "$out"
    cmp -s "$T/pri.img" "$T/peer.img"
    ok $? "$peer: acknowledged writes are on the peer (byte-identical)"
    is "$(bm_status pri dirty_bytes)" 0 "$peer: nothing dirty"
    like "$(bm_status pri writes_mirrored)" '^[1-9]' "$peer: writes were mirrored synchronously"

    out=$("$VMMIG" blockmirror verify --control "$T/pri.ctl" 2>&1)
    ok $? "$peer: verify: identical" || diag "$out"
    # inside the 0x61 write above, so that every byte differs
    printf 'XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX' |
        dd of="$T/peer.img" bs=1 seek=3200000 conv=notrunc status=none
    [ $peer = qemu-nbd ] && sync
    out=$("$VMMIG" blockmirror verify --control "$T/pri.ctl" 2>&1)
    st=$?
    is "$st" 1 "$peer: verify exits 1 on a difference"
    like "$out" '^differs: 3200000\+100$' "$peer: verify names the corrupted range" || diag "$out"
    bm_kill pri
    bm_kill peer
done
done_testing
