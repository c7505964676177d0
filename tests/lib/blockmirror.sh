# blockmirror.sh - shared by tests/blockmirror-*.t and bench/blockmirror (bash).
#
#   . tests/lib/tap.sh; . tests/lib/blockmirror.sh
#   bm_init [TOOL...]          temp dir $T, cleanup trap; skip_all (a failure
#                              in CI) when root, unshare or a TOOL is missing
#   bm_bg NAME CMD...          start CMD in the background, log in $T/NAME.log;
#                              its pid in BM_PID[NAME], killed at exit
#   bm_kill NAME [SIG]         kill it (default TERM) and wait for it
#   bm_serve NAME IMAGE ARGS   vmmig blockmirror serve on $T/NAME.sock, control
#                              $T/NAME.ctl; waits for both sockets
#   bm_receive NAME IMAGE ARGS vmmig blockmirror receive on $T/NAME.sock
#   bm_url NAME                nbd+unix:///?socket=$T/NAME.sock
#   bm_status NAME [FIELD]     the status (or one field) of serve NAME
#   bm_wait_state NAME STATE [SECONDS]   until status says STATE
#   bm_wait_sock PATH [SECONDS]
#   bm_random FILE MIB         a file of MIB MiB of random data
#
# Environment: VMMIG (the binary, default build/bin/vmmig),
# VMMIG_TEST_KEEP=1 keeps $T.

BM_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
: "${VMMIG:=$BM_TOP/build/bin/vmmig}"
declare -A BM_PID=()

bm_cleanup() {
    local n
    local pids=("${BM_PID[@]}") i
    # Disowned first: no "Killed" notices from bash; then wait for them to go.
    disown -a 2>/dev/null
    for n in "${pids[@]}"; do
        kill -9 "$n" 2>/dev/null
    done
    for ((i = 0; i < 40; i++)); do
        kill -0 "${pids[@]}" 2>/dev/null || break
        sleep 0.05
    done
    if [ -n "${T:-}" ] && [ -d "$T" ]; then
        if [ -n "${VMMIG_TEST_KEEP:-}" ]; then
            echo "# kept $T" >&2
        else
            rm -rf "$T"
        fi
    fi
}

bm_init() {
    local t
    [ -x "$VMMIG" ] || skip_all "vmmig not built ($VMMIG; run make)"
    for t in "$@"; do
        command -v "$t" >/dev/null ||
            skip_all "$t not installed (Debian packages qemu-utils nbdkit libnbd-bin)"
    done
    T=$(mktemp -d /tmp/vmmig-bm.XXXXXX) || bail_out "mktemp failed"
    trap bm_cleanup EXIT
    trap 'exit 1' INT TERM
}

bm_bg() {
    local name=$1
    shift
    "$@" >"$T/$name.log" 2>&1 &
    BM_PID[$name]=$!
}

bm_kill() {
    local pid=${BM_PID[$1]:-}
    [ -n "$pid" ] || return 0
    # (the block's stderr also takes bash's "Killed" notice)
    {
        kill "-${2:-TERM}" "$pid"
        wait "$pid"
        BM_EXIT=$?
    } 2>/dev/null
    unset "BM_PID[$1]"
    return 0
}

bm_wait_sock() {
    local i
    for ((i = 0; i < ${2:-10} * 20; i++)); do
        [ -S "$1" ] && return 0
        sleep 0.05
    done
    return 1
}

bm_url() {
    printf 'nbd+unix:///?socket=%s/%s.sock' "$T" "$1"
}

bm_serve() {
    local name=$1 image=$2
    shift 2
    rm -f "$T/$name.sock" "$T/$name.ctl"
    bm_bg "$name" "$VMMIG" blockmirror serve "$image" --socket "$T/$name.sock" \
        --control "$T/$name.ctl" "$@"
    bm_wait_sock "$T/$name.sock" && bm_wait_sock "$T/$name.ctl"
}

bm_receive() {
    local name=$1 image=$2
    shift 2
    rm -f "$T/$name.sock"
    bm_bg "$name" "$VMMIG" blockmirror receive "$image" --socket "$T/$name.sock" "$@"
    bm_wait_sock "$T/$name.sock"
}

bm_status() {
    if [ -n "${2:-}" ]; then
        "$VMMIG" blockmirror status --control "$T/$1.ctl" 2>/dev/null | sed -n "s/^$2: //p"
    else
        "$VMMIG" blockmirror status --control "$T/$1.ctl"
    fi
}

bm_wait_state() {
    local i s
    for ((i = 0; i < ${3:-20} * 10; i++)); do
        s=$(bm_status "$1" state)
        [ "$s" = "$2" ] && return 0
        sleep 0.1
    done
    diag "  state is '$s', not '$2'"
    return 1
}

bm_random() {
    head -c "$(($2 * 1048576))" /dev/urandom >"$1"
}
