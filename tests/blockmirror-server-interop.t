#!/bin/bash
# Our NBD server as the real clients see it: nbdinfo (handshake, flags, the
# export list), qemu-io (QEMU's NBD client: write, read, write-zeroes,
# discard, flush, FUA), nbdcopy in and out (libnbd, several connections),
# qemu-img compare; every change lands in the image file.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/blockmirror.sh"
bm_init nbdinfo nbdcopy qemu-io qemu-img

bm_random "$T/src.img" 16
truncate -s 16M "$T/pri.img"
bm_serve pri "$T/pri.img"
ok $? "serve starts on a unix socket" || done_testing
U=$(bm_url pri)

info=$(nbdinfo "$U" 2>&1)
like "$info" 'export-size: 16777216' "nbdinfo: the size"
like "$info" 'newstyle-fixed' "nbdinfo: fixed newstyle handshake"
for f in can_flush can_fua can_trim can_zero can_multi_conn; do
    like "$info" "$f: true" "nbdinfo: $f"
done
like "$info" 'is_read_only: false' "nbdinfo: writable"
like "$(nbdinfo --list "$U" 2>&1)" 'export=""' "nbdinfo --list: NBD_OPT_LIST answered"

run_ok "nbdcopy into our server (4 connections)" nbdcopy "$T/src.img" "$U"
cmp -s "$T/src.img" "$T/pri.img"
ok $? "the image is the source, byte for byte"
run_ok "nbdcopy out of our server" nbdcopy "$U" "$T/out.img"
cmp -s "$T/src.img" "$T/out.img"
ok $? "what nbdcopy read is the source"
run_ok "qemu-img compare through NBD" qemu-img compare -f raw -F raw "$U" "$T/src.img"

out=$(qemu-io -f raw -c 'write -P 0x5a 1M 1M' -c 'write -z 3M 512K' -c 'discard 5M 1M' \
    -c 'write -f -P 0x77 7M 4K' -c 'flush' -c 'read -P 0x5a 1M 1M' -c 'read -P 0 3M 512K' \
    -c 'read -P 0x77 7M 4K' "$U" 2>&1)
ok $? "qemu-io: write, write-zeroes, discard, FUA write, flush, read back"
unlike "$out" 'Pattern verification failed|error|failed' "qemu-io: no failure reported" ||
    diag "$out"
cmp -s <(head -c 1M "$T/src.img") <(head -c 1M "$T/pri.img")
ok $? "bytes before the writes are untouched"
cmp -s <(head -c 2M "$T/pri.img" | tail -c 1M) <(head -c 1M /dev/zero | tr '\0' 'Z')
ok $? "the 0x5a write is in the file"
cmp -s <(head -c 3670016 "$T/pri.img" | tail -c 524288) <(head -c 524288 /dev/zero)
ok $? "the write-zeroes range reads as zeroes in the file"
cmp -s <(head -c 6M "$T/pri.img" | tail -c 1M) <(head -c 1M /dev/zero)
ok $? "the discarded range reads as zeroes in the file"

# Past the end: a bigger source cannot fit (the request-level answers,
# EINVAL/ENOSPC, are checked in tests/unit/nbd.c and fuzzed).
head -c 17M /dev/zero >"$T/big.img"
run_fails "nbdcopy of a bigger source into the export fails" nbdcopy "$T/big.img" "$U"
kill -0 "${BM_PID[pri]}" 2>/dev/null
ok $? "the server is still running"
is "$(bm_status pri state)" standalone "status: standalone (no peer)"
bm_kill pri TERM
is "$BM_EXIT" 0 "SIGTERM: a clean exit"
[ ! -S "$T/pri.sock" ] && [ ! -S "$T/pri.ctl" ]
ok $? "its sockets are removed"
done_testing
