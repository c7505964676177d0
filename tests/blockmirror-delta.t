#!/bin/bash
# Stale replica: the destination holds an older copy.  Attaching compares
# SHA-256 block hashes (the vmmig NBD extension) and sends only the blocks
# whose content differs; bytes_sent says how much, hash_bytes the hashes.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/blockmirror.sh"
bm_init qemu-io

bm_random "$T/pri.img" 64
cp "$T/pri.img" "$T/sec.img"
# The primary moved on: 40 blocks of 64 KiB rewritten, plus 10 bytes in one
# more block, and the old copy has one block of its own garbage.
for ((i = 0; i < 40; i++)); do
    head -c 65536 /dev/urandom |
        dd of="$T/pri.img" bs=65536 seek=$((i * 23 + 1)) conv=notrunc status=none
done
printf '0123456789' | dd of="$T/pri.img" bs=1 seek=$((1000 * 65536 + 5)) conv=notrunc status=none
head -c 65536 /dev/urandom | dd of="$T/sec.img" bs=65536 seek=1010 conv=notrunc status=none
changed=$((42 * 65536))

bm_receive sec "$T/sec.img"
bm_serve pri "$T/pri.img"
out=$("$VMMIG" blockmirror attach "$(bm_url sec)" --wait --control "$T/pri.ctl" 2>&1)
ok $? "attach --wait to the stale replica" || diag "$out"
is "$(bm_status pri state)" synced "synced"
sent=$(bm_status pri bytes_sent)
hashes=$(bm_status pri hash_bytes)
note "changed $changed bytes in 42 blocks; sent $sent bytes and $hashes bytes of hashes"
is "$sent" "$changed" "bytes_sent is the 42 differing blocks exactly"
[ "$sent" -le $((changed * 105 / 100)) ]
ok $? "at most 1.05x the changed blocks"
is "$hashes" $((1024 * 32)) "hash_bytes: one SHA-256 per block"
cmp -s "$T/pri.img" "$T/sec.img"
ok $? "byte-identical"

# Detach, change 3 blocks, attach again: the same peer, only the dirty ones.
"$VMMIG" blockmirror detach --control "$T/pri.ctl"
ok $? "detach"
is "$(bm_status pri state)" standalone "standalone after detach"
qemu-io -f raw -c 'write -P 7 0 192K' "$(bm_url pri)" >/dev/null 2>&1
"$VMMIG" blockmirror attach "$(bm_url sec)" --wait --control "$T/pri.ctl"
ok $? "attach again"
is $(($(bm_status pri bytes_sent) - sent)) $((3 * 65536)) "3 blocks sent"
is "$(bm_status pri hash_bytes)" "$hashes" "no new hashing for the known peer"
cmp -s "$T/pri.img" "$T/sec.img"
ok $? "byte-identical"
done_testing
