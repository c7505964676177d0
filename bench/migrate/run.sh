#!/bin/bash
# bench/migrate/run.sh - vmmig migrate against plain xl migrate on the same
# two emulated Xen hosts in the same run (issue 3's benchmark).  Boots the
# pair of tests/xen2 with this directory's scenario, then prints the medians
# and the ratios: total time vmmig/xl (target <= 1.05) and the difference in
# the downtime the guest saw (target <= +5 ms).  BENCH_ROUNDS (default 2)
# rounds of four migrations each.  Reports, never gates: exit 0 unless the
# run itself broke.
set -u
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$TOP/bench/lib.sh"
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
SCENARIOS=$TOP/bench/migrate XEN2_CACHE=${XEN2_CACHE:-$TOP/.cache/xen2-bench} \
    BENCH_ROUNDS=${BENCH_ROUNDS:-2} "$TOP/tests/xen2/run.sh" | tee "$OUT" | grep -v '^# progress'
field() { sed -n "s/.*BENCH tool=$1 .* $2=\([0-9]*\).*/\1/p" "$OUT"; }
xl_ms=$(field xl ms | median); vm_ms=$(field vmmig ms | median)
xl_gap=$(field xl gap_ms | median); vm_gap=$(field vmmig gap_ms | median)
if [ -z "$xl_ms" ] || [ -z "$vm_ms" ]; then
    echo "bench migrate: no complete measurements (see above)" >&2
    exit 1
fi
bench_table 34 10 "bench migrate (median of runs)" xl vmmig ratio <<ROWS
ratio|total time, ms|$xl_ms|$vm_ms|<= 1.05x|1.05
diff|downtime (guest heartbeat gap), ms|$xl_gap|$vm_gap|<= +5 ms|5
ROWS
