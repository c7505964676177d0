# tests/lib/bootloop.sh - what tests/xen/run.sh and tests/xen2/run.sh share
# around their own boot function: the console's TAP lines as this run's TAP
# stream, booting again while the dom0(s) never came up, then checking that
# the scenarios finished, and the report of a failed run.
# Expects: RUNDIR, LOG, TRIES, and bail (prints and exits); the boot
# function sets REACHED, WHY and DONE, resets NTESTS, NFAIL and DOM0_PLAN
# and passes each console line after "TAP: " to tap_console_line.

# Every TAP line also goes to TAPLOG (in the caller's RUNDIR), for
# failure_report.
TAPLOG=$RUNDIR/tap.log
: > "$TAPLOG"
tap_line() {
    printf '%s\n' "$1"
    printf '%s\n' "$1" >> "$TAPLOG"
}

# tap_console_line REST: what a dom0 printed after "TAP: " on its console,
# as a line of this run's TAP stream.  Results are renumbered with the
# host's count (TAP wants no gaps even if the console mangled a line) and
# counted in NTESTS and NFAIL; the dom0's own plan goes to DOM0_PLAN.
tap_console_line() {
    local rest=$1 status=ok body
    case "$rest" in
        "ok "*|"not ok "*)
            case "$rest" in "not ok "*) status="not ok"; NFAIL=$((NFAIL + 1)) ;; esac
            NTESTS=$((NTESTS + 1))
            body=${rest#"$status" }
            body=${body#"${body%%[!0-9]*}"}
            tap_line "$status $NTESTS$body" ;;
        "1.."*) DOM0_PLAN=${rest#1..} ;;
        "#"*) tap_line "$rest" ;;
        *) tap_line "# (unparsed console line) $rest" ;;
    esac
}

# failure_report: on stderr, which prove shows even when not verbose (CI
# keeps only that), each failed result with the diagnostics after it, then
# the end of the serial log.
failure_report() {
    [ "$NFAIL" -gt 0 ] || return 0
    {
        echo "# --- failed results, with the diagnostics that followed them ---"
        awk '/^not ok / { n = 12; print; next }
             /^ok / { n = 0; next }
             n > 0 && /^#/ { print; n-- }' "$TAPLOG" | head -n 150
        log_tail 40
    } >&2
}

log_tail() {
    echo "# --- last lines of $LOG ---"
    tail -n "${1:-40}" "$LOG" | sed 's/^/#   /'
}

# boot_until_up BOOT_FN WHAT: BOOT_FN TRY, up to TRIES times, until it set
# REACHED=1; WHAT names what must come up ("dom0", "both dom0s").
boot_until_up() {
    local fn=$1 what=$2 try=1
    while :; do
        "$fn" "$try"
        [ "$REACHED" = 1 ] && break
        if [ "$try" -ge "$TRIES" ]; then
            log_tail 60
            bail "$what never came up in $try boot(s) ($WHY); see $LOG"
        fi
        echo "# boot $try never reached $what ($WHY), retrying; log: $LOG"
        try=$((try + 1))
    done
    if [ "$DONE" != 1 ]; then
        log_tail 60
        bail "the scenarios did not finish: $WHY; see $LOG"
    fi
}

# tap_summary REPORTER: a failed result more when the console carried
# fewer results than REPORTER (the dom0 that ran the scenarios) counted
# last, or when there was none at all; the caller prints the plan.
tap_summary() {
    DOM0_PLAN=${DOM0_PLAN//[!0-9]/}
    if [ -n "$DOM0_PLAN" ] && [ "$DOM0_PLAN" -ne "$NTESTS" ]; then
        NTESTS=$((NTESTS + 1)); NFAIL=$((NFAIL + 1))
        tap_line "not ok $NTESTS - $1 reported $DOM0_PLAN results, the console carried $((NTESTS - 1))"
    fi
    [ "$NTESTS" -gt 0 ] || { NTESTS=1; NFAIL=1; tap_line "not ok 1 - no scenario printed any result"; }
}
