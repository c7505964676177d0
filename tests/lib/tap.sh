# tap.sh - tiny TAP producer for vmmig's shell tests (bash).
#
#   . tests/lib/tap.sh
#   plan 3                      # or nothing, and done_testing at the end
#   ok "$?" "DESC"              # passes when the first argument is 0
#   run_ok "DESC" CMD ARGS...   # passes when CMD exits 0
#   run_fails "DESC" CMD ...    # passes when CMD exits non-zero
#   is GOT EXPECTED "DESC"      # string equality
#   isnt GOT UNEXPECTED "DESC"
#   like GOT REGEX "DESC"       # grep -E on GOT (any line matching passes)
#   unlike GOT REGEX "DESC"
#   pass "DESC" / fail "DESC"
#   skip "REASON" [COUNT]       # COUNT skipped test points
#   diag "MSG..." / note "MSG..."  (to stderr / stdout, prefixed "# ")
#   skip_all "REASON"           # before any test: "1..0 # SKIP REASON", exit 0
#   bail_out "REASON"           # "Bail out! REASON", exit 255
#   done_testing                # prints the plan if none given; exit status
#
# Test points must run in the main shell (not in a subshell or pipeline),
# otherwise the counter is lost.

TAP_N=0
TAP_FAILED=0
TAP_PLANNED=

plan() {
    TAP_PLANNED=$1
    printf '1..%s\n' "$1"
}

_tap_result() { # STATUS DESC
    TAP_N=$((TAP_N + 1))
    local desc=${2:-}
    desc=${desc//#/\\#}
    if [ "$1" -eq 0 ]; then
        printf 'ok %d - %s\n' "$TAP_N" "$desc"
    else
        TAP_FAILED=$((TAP_FAILED + 1))
        printf 'not ok %d - %s\n' "$TAP_N" "$desc"
        local line func file
        read -r line func file < <(caller 1)
        diag "  Failed test '$2'" "  at ${file:-?} line ${line:-?}"
    fi
    return "$1"
}

pass() { _tap_result 0 "$1"; }
fail() { _tap_result 1 "$1"; }

ok() { # STATUS DESC
    local st=$1
    shift
    [ "$st" -eq 0 ] 2>/dev/null || st=1
    _tap_result "$st" "$*"
}

run_ok() { # DESC CMD...
    local desc=$1 out st
    shift
    out=$("$@" 2>&1)
    st=$?
    _tap_result $((st != 0)) "$desc" || {
        diag "  command: $*" "  exit status: $st"
        [ -n "$out" ] && diag "  output: $out"
    }
    return "$st"
}

run_fails() { # DESC CMD...
    local desc=$1 out st
    shift
    out=$("$@" 2>&1)
    st=$?
    _tap_result $((st == 0)) "$desc" || {
        diag "  command: $*" "  unexpectedly succeeded"
        [ -n "$out" ] && diag "  output: $out"
    }
    [ "$st" -ne 0 ]
}

is() { # GOT EXPECTED DESC
    if [ "$1" = "$2" ]; then
        _tap_result 0 "$3"
    else
        _tap_result 1 "$3"
        diag "       got: '$1'" "  expected: '$2'"
        return 1
    fi
}

isnt() { # GOT UNEXPECTED DESC
    if [ "$1" != "$2" ]; then
        _tap_result 0 "$3"
    else
        _tap_result 1 "$3"
        diag "       got: '$1'" "  expected anything else"
        return 1
    fi
}

like() { # GOT REGEX DESC
    if printf '%s\n' "$1" | grep -Eq -- "$2"; then
        _tap_result 0 "$3"
    else
        _tap_result 1 "$3"
        diag "  '$1'" "  doesn't match /$2/"
        return 1
    fi
}

unlike() { # GOT REGEX DESC
    if ! printf '%s\n' "$1" | grep -Eq -- "$2"; then
        _tap_result 0 "$3"
    else
        _tap_result 1 "$3"
        diag "  '$1'" "  matches /$2/"
        return 1
    fi
}

# In CI (CI=true) nothing may be skipped: CI installs everything the tests
# need, so a skip there would hide a missing install step as a pass.
skip() { # REASON [COUNT]
    local i n=${2:-1}
    if [ "${CI:-}" = true ]; then
        for ((i = 0; i < n; i++)); do fail "not skipped in CI: $1"; done
        return
    fi
    for ((i = 0; i < n; i++)); do
        TAP_N=$((TAP_N + 1))
        printf 'ok %d # skip %s\n' "$TAP_N" "$1"
    done
}

diag() {
    local l
    for l in "$@"; do
        printf '%s\n' "$l" | sed 's/^/# /' >&2
    done
}

note() {
    local l
    for l in "$@"; do
        printf '%s\n' "$l" | sed 's/^/# /'
    done
}

skip_all() {
    [ "${CI:-}" = true ] && bail_out "would skip in CI: $*"
    printf '1..0 # SKIP %s\n' "$*"
    TAP_PLANNED=0
    exit 0
}

bail_out() {
    printf 'Bail out! %s\n' "$*"
    exit 255
}

done_testing() {
    [ -z "$TAP_PLANNED" ] && printf '1..%d\n' "$TAP_N"
    if [ -n "$TAP_PLANNED" ] && [ "$TAP_PLANNED" -ne "$TAP_N" ]; then
        diag "planned $TAP_PLANNED tests but ran $TAP_N"
        exit 255
    fi
    [ "$TAP_FAILED" -eq 0 ] || diag "failed $TAP_FAILED of $TAP_N tests"
    [ "$TAP_FAILED" -eq 0 ] && exit 0
    exit $((TAP_FAILED > 254 ? 254 : TAP_FAILED))
}
