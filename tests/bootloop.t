#!/bin/bash
# tests/lib/bootloop.sh, the emulated hosts' TAP reporting: every TAP line
# goes to stdout and to the run's tap.log, and a failed run repeats each
# failed result with its diagnostics, then the serial log's end, on stderr
# (what CI keeps of a prove run that is not verbose).
. "$(dirname "$0")/lib/tap.sh"
top=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

printf 'serial line %s\n' $(seq 1 50) > "$dir/serial.log"
run() {
    RUNDIR=$dir LOG=$dir/serial.log NFAIL=$1 bash -c '
        . "$0/tests/lib/bootloop.sh"
        tap_line "ok 1 - first"
        tap_line "# about the first"
        tap_line "not ok 2 - second"
        tap_line "# why the second failed"
        tap_line "# and more"
        tap_line "ok 3 - third"
        tap_line "# about the third"
        failure_report' "$top" > "$dir/out" 2> "$dir/err"
}

run 1
is "$(cat "$dir/out")" "$(printf '%s\n' 'ok 1 - first' '# about the first' 'not ok 2 - second' \
    '# why the second failed' '# and more' 'ok 3 - third' '# about the third')" \
    "every TAP line on stdout, unchanged"
is "$(cat "$dir/tap.log")" "$(cat "$dir/out")" "and in RUNDIR/tap.log"
is "$(sed -n 2,4p "$dir/err")" "$(printf '%s\n' 'not ok 2 - second' '# why the second failed' '# and more')" \
    "stderr: the failed result with the diagnostics after it"
like "$(cat "$dir/err")" "last lines of $dir/serial.log" "then the serial log's end"
like "$(tail -n 1 "$dir/err")" "^#   serial line 50\$" "up to its last line"
unlike "$(cat "$dir/err")" "about the (first|third)|ok 1 |ok 3 " "nothing of the results that passed"

run 0
is "$(cat "$dir/err")" "" "a run without failures: nothing on stderr"
is "$(wc -l < "$dir/tap.log")" 7 "tap.log begins empty each run"

# What a dom0 printed after "TAP: ": results renumbered with the host's
# count and counted, its plan kept aside, anything else a comment; then a
# dom0 plan the console did not carry in full is a failed result of its own,
# in the report too.
RUNDIR=$dir LOG=$dir/serial.log bash -c '
    . "$0/tests/lib/bootloop.sh"
    NTESTS=0 NFAIL=0 DOM0_PLAN=
    tap_console_line "ok 1 - first"
    tap_console_line "# about it"
    tap_console_line "not ok 7 - second, numbered 7 by the dom0"
    tap_console_line "ok  - third, its number mangled"
    tap_console_line "garbled"
    tap_console_line "1..4"
    echo "NTESTS=$NTESTS NFAIL=$NFAIL DOM0_PLAN=$DOM0_PLAN" >&2
    tap_summary dom0
    failure_report' "$top" > "$dir/out" 2> "$dir/err"
is "$(cat "$dir/out")" "$(printf '%s\n' 'ok 1 - first' '# about it' 'not ok 2 - second, numbered 7 by the dom0' \
    'ok 3 - third, its number mangled' '# (unparsed console line) garbled' \
    'not ok 4 - dom0 reported 4 results, the console carried 3')" \
    "console lines: renumbered, comments kept, the unparsed one marked, the missing result failed"
like "$(head -n 1 "$dir/err")" "^NTESTS=3 NFAIL=1 DOM0_PLAN=4\$" "  counted: 3 results, 1 failed, the dom0's plan 4"
like "$(cat "$dir/err")" "^not ok 4 - dom0 reported 4 results" "  the missing result is in the report"
done_testing
