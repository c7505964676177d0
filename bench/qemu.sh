# bench/qemu.sh - the prelude of the QEMU benches (bench/migrate-qemu,
# bench/comigrate-qemu), sourced with BENCH_NAME set: their messages,
# bench/lib.sh and tests/qemu/lib.sh, and bench_cleanup (trap it on EXIT
# after qenv_init), which ends the processes in BG and the hosts.
set -u
export LC_ALL=C
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
skip_all() { echo "bench $BENCH_NAME: cannot run: $*" >&2; exit 1; }
bail_out() { echo "bench $BENCH_NAME: broken: $*" >&2; exit 1; }
note() { echo "# $*" >&2; }
. "$TOP/bench/lib.sh"
. "$TOP/tests/qemu/lib.sh"
BG=
bench_cleanup() {
    local p
    for p in $BG; do kill "$p" 2>/dev/null; done
    qenv_cleanup
}
