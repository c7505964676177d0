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
done_testing
