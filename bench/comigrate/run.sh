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
. "$TOP/bench/lib.sh"
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
SCENARIOS=$TOP/bench/comigrate XEN2_CACHE=${XEN2_CACHE:-$TOP/.cache/xen2-bench} \
    BENCH_ROUNDS=${BENCH_ROUNDS:-2} "$TOP/tests/xen2/run.sh" | tee "$OUT" | grep -v '^# progress'
field() { sed -n "s/.*BENCH way=$1 .* $2=\([0-9][0-9]*\).*/\1/p" "$OUT"; }
g_ms=$(field group ms | median); i_ms=$(field independent ms | median)
g_ss=$(field group stop_skew_ms | median); i_ss=$(field independent stop_skew_ms | median)
g_rs=$(field group resume_skew_ms | median); i_rs=$(field independent resume_skew_ms | median)
g_qs=$(field group stop_request_skew_ms | median); i_qs=$(field independent stop_request_skew_ms | median)
if [ -z "$g_ms" ] || [ -z "$i_ms" ]; then
    echo "bench comigrate: no complete measurements (see above)" >&2
    exit 1
fi
c_in=$(field console input_pause_ms | median); c_out=$(field console output_pause_ms | median)
if [ -n "$c_in" ] && [ -n "$c_out" ]; then
    console_rows="abs|console pause, input, ms||$c_in|<= 300 ms|300
abs|console pause, output, ms||$c_out|<= 300 ms|300"
else
    console_rows="none|console pause|||<= 300 ms: not measured in this run (see above)"
fi
bench_table 30 12 "bench comigrate (medians)" independent group "" <<ROWS
diff|total time, ms|$i_ms|$g_ms|<= +100 ms|100
abs|stop skew, ms|$i_ss|$g_ss|<= 20 ms|20
abs|  of which the stop requests, ms|$i_qs|$g_qs|<= 20 ms|20
abs|resume skew, ms|$i_rs|$g_rs|<= 20 ms|20
$console_rows
ROWS
