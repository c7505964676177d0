#!/bin/bash
# bench/comigrate/run.sh - a group of two domains moved together (`vmmig
# comigrate`) against the same two moved by two independent parallel
# `vmmig send`s, on the two emulated Xen hosts of tests/xen2, same run
# (issue 4's benchmark).  Prints the medians: total-time overhead of the
# group (target <= +100 ms), stop and resume skew (target <= 20 ms), and
# the console pause a `vmmig console` user sees (target <= 300 ms).
# BENCH_ROUNDS (default 2) rounds of four moves.  Reports, never gates.
set -u
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
SCENARIOS=$TOP/bench/comigrate XEN2_CACHE=${XEN2_CACHE:-$TOP/.cache/xen2-bench} \
    BENCH_ROUNDS=${BENCH_ROUNDS:-2} "$TOP/tests/xen2/run.sh" | tee "$OUT" | grep -v '^# progress'
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print "" }'; }
field() { sed -n "s/.*BENCH way=$1 .* $2=\([0-9][0-9]*\).*/\1/p" "$OUT"; }
g_ms=$(field group ms | median); i_ms=$(field independent ms | median)
g_ss=$(field group stop_skew_ms | median); i_ss=$(field independent stop_skew_ms | median)
g_rs=$(field group resume_skew_ms | median); i_rs=$(field independent resume_skew_ms | median)
if [ -z "$g_ms" ] || [ -z "$i_ms" ]; then
    echo "bench comigrate: no complete measurements (see above)" >&2
    exit 1
fi
awk -v gm="$g_ms" -v im="$i_ms" -v gs="$g_ss" -v is="$i_ss" -v gr="$g_rs" -v ir="$i_rs" 'BEGIN {
    printf "%-30s %12s %12s %10s  %s\n", "bench comigrate (medians)", "independent", "group", "", "target"
    printf "%-30s %12d %12d %+9d   <= +100 ms %s\n", "total time, ms", im, gm, gm - im, gm - im <= 100 ? "met" : "MISSED"
    printf "%-30s %12d %12d %10s  <= 20 ms %s\n", "stop skew, ms", is, gs, "", gs <= 20 ? "met" : "MISSED"
    printf "%-30s %12d %12d %10s  <= 20 ms %s\n", "resume skew, ms", ir, gr, "", gr <= 20 ? "met" : "MISSED"
}'
c_in=$(field console input_pause_ms | median); c_out=$(field console output_pause_ms | median)
if [ -n "$c_in" ] && [ -n "$c_out" ]; then
    awk -v ci="$c_in" -v co="$c_out" 'BEGIN {
        printf "%-30s %12s %12d %10s  <= 300 ms %s\n", "console pause, input, ms", "-", ci, "", ci <= 300 ? "met" : "MISSED"
        printf "%-30s %12s %12d %10s  <= 300 ms %s\n", "console pause, output, ms", "-", co, "", co <= 300 ? "met" : "MISSED"
    }'
else
    echo "console pause: not measured in this run (see above)"
fi
