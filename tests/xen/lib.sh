# Helpers for the scenario scripts that run IN the emulated dom0.
# Installed as /scenarios/lib.sh; dom0's /init sources it before each
# /scenarios/NN-*.sh (busybox sh, so POSIX sh plus `local`).
#
# TAP: every result line is printed as "TAP: ok N - desc" / "TAP: not ok N -
# desc", diagnostics as "TAP: # text". The host (tests/xen/run.sh) keeps only
# the lines with that prefix and turns them into the TAP stream prove reads.
# N runs across all scenarios: the counter lives in a file because each
# scenario is a separate shell.
#
#   tap_ok DESC / tap_not_ok DESC     record a result
#   check DESC CMD [ARGS...]          ok if CMD exits 0 (its output becomes diag
#                                     lines when it fails)
#   is GOT WANT DESC                  ok if the strings are equal
#   like GOT PATTERN DESC             ok if GOT matches the grep -E PATTERN
#   skip DESC REASON                  "ok N - DESC # SKIP REASON"
#   diag TEXT...                      a comment line
#   wait_for 'shell condition' [TIMEOUT]
#                                     poll until the condition holds (0) or
#                                     TIMEOUT seconds (default 30) pass (1)
#   guest_create NAME                 xl create /etc/xen/NAME.cfg, wait for the
#                                     guest agent to answer
#   guest_run NAME 'command'          run command in guest NAME via xenstore;
#                                     prints its output, returns its exit status
#                                     (124 on timeout: GUEST_RUN_TIMEOUT, 60 s;
#                                     125 no such guest; 126 corrupted result)
#   guest_console NAME                print the guest's console log
#   guest_domid NAME                  print the domid of NAME
#   memcheck_start NAME MIB [PAGES_PER_S]
#                                     start the memory + heartbeat checker in
#                                     guest NAME (image/memcheck.c): MIB MiB of
#                                     patterned pages, PAGES_PER_S (2000) of them
#                                     rewritten each second, a 10 ms heartbeat
#   memcheck_verify NAME              verify every page now; prints "pages=N
#                                     bad=B max_gap_ms=X beats=Y
#                                     max_gap_real_ms=Z rewrites=R" (+ the first
#                                     bad pages); 0 if B=0, 1 if not, 2 no daemon
#   memcheck_field KEY TEXT           print the value of KEY=VALUE in TEXT

TAP_DIR=/run/vmmig-test
mkdir -p "$TAP_DIR" 2>/dev/null

_tap_next() {
    local n
    n=$(cat "$TAP_DIR/count" 2>/dev/null || echo 0)
    n=$((n + 1))
    echo "$n" > "$TAP_DIR/count"
    echo "$n"
}

diag() {
    # One TAP comment per line of the message.
    printf '%s\n' "$*" | while IFS= read -r _l; do echo "TAP: # $_l"; done
}

tap_ok() {
    echo "TAP: ok $(_tap_next) - $*"
}

tap_not_ok() {
    echo "TAP: not ok $(_tap_next) - $*"
    return 1
}

skip() {
    echo "TAP: ok $(_tap_next) - $1 # SKIP ${2:-}"
}

# The plan comes last: the host compares it with the lines it received.
tap_plan() {
    echo "TAP: 1..$(cat "$TAP_DIR/count" 2>/dev/null || echo 0)"
}

check() {
    local desc=$1 out rc
    shift
    out=$("$@" 2>&1)
    rc=$?
    if [ $rc -eq 0 ]; then
        tap_ok "$desc"
    else
        tap_not_ok "$desc"
        diag "command: $*" "exit status: $rc" "$out"
        return 1
    fi
}

is() {
    if [ "$1" = "$2" ]; then
        tap_ok "$3"
    else
        tap_not_ok "$3"
        diag "got:  '$1'" "want: '$2'"
        return 1
    fi
}

like() {
    if printf '%s\n' "$1" | grep -Eq -- "$2"; then
        tap_ok "$3"
    else
        tap_not_ok "$3"
        diag "got:  '$1'" "want match: /$2/"
        return 1
    fi
}

wait_for() {
    local cond=$1 timeout=${2:-30} start now
    start=$(date +%s)
    while true; do
        eval "$cond" && return 0
        now=$(date +%s)
        [ $((now - start)) -lt "$timeout" ] || return 1
        sleep 0.3
    done
}

guest_domid() {
    xl domid "$1" 2>/dev/null
}

guest_console() {
    cat "/var/log/xen/console/guest-$1.log" 2>/dev/null
}

# Command sequence numbers: dom0-wide and only growing, so the agent (which
# remembers the last one it ran, across migrations too) never runs one twice.
_guest_seq() {
    local n
    n=$(cat "$TAP_DIR/guest-seq" 2>/dev/null || echo 0)
    n=$((n + 1))
    echo "$n" > "$TAP_DIR/guest-seq"
    echo "$n"
}

guest_run() {
    local name=$1 cmd=$2 domid seq node f start now hdr rc sum body got reads=0
    local timeout=${GUEST_RUN_TIMEOUT:-60}
    domid=$(guest_domid "$name") || { echo "guest_run: no domain '$name'" >&2; return 125; }
    seq=$(_guest_seq)
    node=/local/domain/$domid/data/vmmig-result-$seq
    f=$TAP_DIR/result.$seq
    xenstore-write -R "/local/domain/$domid/data/vmmig-cmd" "$seq $cmd" ||
        { echo "guest_run: cannot write /local/domain/$domid/data/vmmig-cmd" >&2; return 125; }
    start=$(date +%s)
    while :; do
        if ! xenstore-read -R "$node" > "$f" 2>/dev/null; then
            now=$(date +%s)
            if [ $((now - start)) -ge "$timeout" ]; then
                echo "guest_run: no answer from $name (domid $domid) to command $seq within $timeout s" >&2
                rm -f "$f"
                return 124
            fi
            sleep 0.2
            continue
        fi
        # "RC MD5" then the output (see the agent's protocol comment).
        hdr=$(head -n 1 "$f")
        rc=${hdr%% *}
        sum=${hdr#* }
        body=$(tail -n +2 "$f")
        got=$(printf '%s' "$body" | md5sum)
        case "$rc" in ''|*[!0-9]*) rc=x ;; esac
        [ "$rc" != x ] && [ "${got%% *}" = "$sum" ] && break
        reads=$((reads + 1))
        echo "guest_run: result $seq from $name failed its checksum (read $reads):" >&2
        od -c "$f" | head -n 4 >&2
        if [ $reads -ge 3 ]; then
            echo "guest_run: giving up on the corrupted result of command $seq" >&2
            rm -f "$f"
            return 126
        fi
        sleep 0.2
    done
    xenstore-rm "$node" 2>/dev/null
    rm -f "$f"
    [ -n "$body" ] && printf '%s\n' "$body"
    return "$rc"
}

guest_create() {
    local name=$1 domid out
    if ! out=$(xl create "/etc/xen/$name.cfg" 2>&1); then
        echo "$out" >&2
        echo "guest_create: xl create /etc/xen/$name.cfg failed" >&2
        return 1
    fi
    domid=$(guest_domid "$name") || return 1
    # The agent announces itself, then must answer a real command.
    if ! wait_for "xenstore-read /local/domain/$domid/data/vmmig-agent >/dev/null 2>&1" \
            "${GUEST_BOOT_TIMEOUT:-90}" ||
       [ "$(GUEST_RUN_TIMEOUT=30 guest_run "$name" 'echo pong')" != pong ]; then
        echo "guest_create: the agent of $name (domid $domid) does not answer; its console:" >&2
        guest_console "$name" | tail -n 40 >&2
        return 1
    fi
}

memcheck_start() {
    guest_run "$1" "memcheck start $2 ${3:-2000}"
}

memcheck_verify() {
    guest_run "$1" 'memcheck verify'
}

memcheck_field() {
    local w
    for w in $2; do
        case "$w" in "$1="*) echo "${w#*=}"; return 0 ;; esac
    done
    return 1
}
