# bench/lib.sh - what the benchmark scripts share (sourced, bash).
#
#   median              numbers on stdin, one a line -> their median (the
#                       lower middle one of an even count); empty when none
#   bench_table W1 W2 TITLE REF OURS COL4 < ROWS
#                       the table of a benchmark: TITLE in a W1-wide first
#                       column, the reference's and our medians in W2-wide
#                       columns, then the comparison and the verdict.  One
#                       row a line, fields separated by '|':
#     ratio|LABEL|REF|OURS|TARGET TEXT|LIMIT   OURS/REF <= LIMIT
#     diff|LABEL|REF|OURS|TARGET TEXT|LIMIT    OURS-REF <= LIMIT
#     abs|LABEL|REF|OURS|TARGET TEXT|LIMIT     OURS <= LIMIT
#     info|LABEL|REF|OURS|TEXT                 OURS-REF, no target
#     value|LABEL|REF|OURS|TEXT                the numbers only, no target
#     none|LABEL|||TEXT                        not measured: "-" and TEXT
#   The verdict is "met" or "MISSED".  An empty number counts as 0 (awk).

median() { sort -n | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print "" }'; }

bench_table() { # W1 W2 TITLE REF OURS COL4
    awk -F'|' -v w1="$1" -v w2="$2" -v title="$3" -v ref="$4" -v ours="$5" -v c4="$6" '
    function v(ok) { return ok ? "met" : "MISSED" }
    BEGIN {
        f = "%-" w1 "s %" w2 "s %" w2 "s %10s  %s\n"
        printf f, title, ref, ours, c4, "target"
        fd = "%-" w1 "s %" w2 "d %" w2 "d "
    }
    $1 == "ratio" { r = $4 / $3; printf fd "%9.2fx  %s %s\n", $2, $3, $4, r, $5, v(r <= $6 + 0) }
    $1 == "diff" { d = $4 - $3; printf fd "%+9d   %s %s\n", $2, $3, $4, d, $5, v(d <= $6 + 0) }
    $1 == "abs" { printf fd "%10s  %s %s\n", $2, $3, $4, "", $5, v($4 <= $6 + 0) }
    $1 == "info" { printf fd "%+9d   %s\n", $2, $3, $4, $4 - $3, $5 }
    $1 == "value" { printf fd "%10s  %s\n", $2, $3, $4, "", $5 }
    $1 == "none" { printf "%-" w1 "s %" w2 "s %" w2 "s %10s  %s\n", $2, "-", "-", "", $5 }
    '
}
