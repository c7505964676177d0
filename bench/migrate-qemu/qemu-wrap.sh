#!/bin/bash
# bench/migrate-qemu/qemu-wrap.sh - VMMIG_QEMU for the benchmark: QEMU with
# vmmig's command line plus one more QMP monitor, INSTANCE/bench.sock (the
# instance directory is the one of -pidfile), on which the benchmark's
# observer takes the migration events and query-migrate without taking
# vmmig's own monitors (qmp.sock, status.sock).  Every QEMU of the run, on
# both paths, is started through this script.
dir=
prev=
for a in "$@"; do
    [ "$prev" = -pidfile ] && dir=${a%/*}
    prev=$a
done
exec "${BENCH_QEMU_BIN:-qemu-system-x86_64}" "$@" \
    ${dir:+-qmp "unix:$dir/bench.sock,server=on,wait=off"}
