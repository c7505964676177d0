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
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
SCENARIOS=$TOP/bench/migrate XEN2_CACHE=${XEN2_CACHE:-$TOP/.cache/xen2-bench} \
    BENCH_ROUNDS=${BENCH_ROUNDS:-2} "$TOP/tests/xen2/run.sh" | tee "$OUT" | grep -v '^# progress'
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print "" }'; }
field() { sed -n "s/.*BENCH tool=$1 .* $2=\([0-9]*\).*/\1/p" "$OUT"; }
xl_ms=$(field xl ms | median); vm_ms=$(field vmmig ms | median)
xl_gap=$(field xl gap_ms | median); vm_gap=$(field vmmig gap_ms | median)
if [ -z "$xl_ms" ] || [ -z "$vm_ms" ]; then
    echo "bench migrate: no complete measurements (see above)" >&2
    exit 1
fi
awk -v xm="$xl_ms" -v vm="$vm_ms" -v xg="$xl_gap" -v vg="$vm_gap" 'BEGIN {
    r = vm / xm; d = vg - xg
    printf "%-34s %10s %10s %10s  %s\n", "bench migrate (median of runs)", "xl", "vmmig", "ratio", "target"
    printf "%-34s %10d %10d %9.2fx  <= 1.05x %s\n", "total time, ms", xm, vm, r, r <= 1.05 ? "met" : "MISSED"
    printf "%-34s %10d %10d %+9d   <= +5 ms %s\n", "downtime (guest heartbeat gap), ms", xg, vg, d, d <= 5 ? "met" : "MISSED"
}'
