# Helpers for two-host scenarios. Installed in both dom0s as /xen2/lib.sh;
# sources the one-host helpers (/scenarios/lib.sh = tests/xen/lib.sh: tap_ok,
# is, like, check, wait_for, guest_create, guest_run, ...) and adds:
#
#   host_addr HOST                 10.99.0.1 for A/hostA, 10.99.0.2 for B/hostB
#                                  (names from /etc/hosts; an IPv4 passes through)
#   host_run HOST 'command'        run command with sh on HOST (this lib loaded
#                                  there too); prints its stdout+stderr, returns
#                                  its exit status; 124 when HOST_RUN_TIMEOUT
#                                  (120 s) passes, 125 when HOST cannot be
#                                  reached or the connection broke
#   guest_run_on HOST NAME 'cmd'   guest_run NAME 'cmd' in HOST's dom0
#   guest_domid_on HOST NAME       domid of NAME on HOST (status 1: not there)
#   shq STRING                     STRING quoted for sh (to build host_run commands)
#   xen2_cleanup                   destroy this host's guests, copy their
#                                  consoles into this host's serial log
#   xen2_migrate NAME HOST         xl migrate -s xen2-ssh NAME HOST (prints xl's
#                                  output, returns its status)
#   vmmig_setup KEY [POLICY]       a command (for sh -c or host_run) that puts
#                                  KEY in /etc/vmmig/key, POLICY lines in
#                                  /etc/vmmig/policy and mounts vmmigfs
#                                  --listen 8123 on /run/vmmig (if not yet)
#   kvm_run 'bash script'          run it on the QEMU/KVM host of the cold
#                                  scenario (tests/xen2/kvmhost/, this machine,
#                                  reached through hostA's second NIC; hostA
#                                  only): output, then its exit status (125
#                                  when the host cannot be reached)
#   kvm_net_up                     bring that NIC up as 10.0.2.15/24 (hostA)
#   now                            seconds since boot, 2 decimals (for timings)
#   elapsed_since T                seconds since T (a `now` value), 2 decimals
#
# The TAP counter lives on host A only: call the TAP helpers in scenarios
# (which run on A), never inside host_run commands.
#
# Services (started by /init on both hosts, bound to the host's own address):
#   port 7001  command service (host_run): the client sends a script and shuts
#              down its sending half; the server runs it and answers with the
#              output, then a last line "XEN2-RC <status>"
#   port 7002  stream service (xen2-ssh, also installed as `ssh`): the first
#              line is a command, run with sh; the rest of the connection is
#              its stdin and stdout; its stderr goes to that host's serial log
#              (lines "XEN2-SSH[n] ..."), as there is no channel back for it

[ -f /scenarios/lib.sh ] && . /scenarios/lib.sh

XEN2_CMD_PORT=7001
XEN2_SSH_PORT=7002

# guest_run's command numbers must only grow for a guest, whichever host
# sends them: the agent ignores a number not above the last one it ran, and
# remembers that across migrations. tests/xen/lib.sh keeps one counter per
# dom0, so after A -> B, B's small numbers would be ignored (guest_run times
# out). Here hostA's counter serves both hosts (hostB asks A for a number).
_xen2_seq_local() {
    local n
    n=$(cat "$TAP_DIR/guest-seq" 2>/dev/null || echo 0)
    n=$((n + 1))
    echo "$n" > "$TAP_DIR/guest-seq"
    echo "$n"
}
_guest_seq() {
    if [ "${XEN2_HOST:-A}" = A ]; then
        _xen2_seq_local
    else
        host_run A _xen2_seq_local
    fi
}

shq() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

host_addr() {
    case "$1" in
        *[!0-9.]*) ;;
        *.*.*.*) echo "$1"; return 0 ;;
    esac
    awk -v h="$1" '!/^[[:space:]]*#/ { for (i = 2; i <= NF; i++) if ($i == h) { print $1; exit 0 } }' \
        /etc/hosts | grep . || { echo "host_addr: unknown host '$1'" >&2; return 1; }
}

# cmd_answer FILE: a command service's answer (the output, then a last line
# "XEN2-RC N"): the output to stdout and N in CMD_RC; CMD_RC empty when that
# line is missing (the output so far to stdout).  FILE is removed.
cmd_answer() {
    local last
    last=$(tail -n 1 "$1")
    CMD_RC=
    case "$last" in
        "XEN2-RC "*) sed '$d' "$1"; CMD_RC=${last#XEN2-RC } ;;
        *) cat "$1" ;;
    esac
    rm -f "$1"
}

host_run() {
    local host=$1 cmd=$2 ip f rc
    ip=$(host_addr "$host") || return 125
    f=$(mktemp /tmp/host-run.XXXXXX)
    printf '%s' "$cmd" | timeout "${HOST_RUN_TIMEOUT:-120}" xen2-tcp connect -w 10 "$ip" "$XEN2_CMD_PORT" > "$f"
    rc=$?
    cmd_answer "$f"
    [ -n "$CMD_RC" ] && return "$CMD_RC"
    case "$rc" in
        124|143) echo "host_run: no answer from $host ($ip) within ${HOST_RUN_TIMEOUT:-120} s" >&2; return 124 ;;
        *) echo "host_run: connection to $host ($ip) failed or broke (status $rc)" >&2; return 125 ;;
    esac
}

guest_run_on() {
    host_run "$1" "guest_run $(shq "$2") $(shq "$3")"
}

guest_domid_on() {
    host_run "$1" "xl domid $(shq "$2")"
}

now() {
    cut -d' ' -f1 /proc/uptime
}

elapsed_since() {
    awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f\n", b - a }'
}

xen2_migrate() {
    xl migrate -s xen2-ssh "$1" "$2" 2>&1
}

xen2_cleanup() {
    local c d
    for c in /var/log/xen/console/guest-*.log; do
        [ -s "$c" ] || continue
        sed "s|^|GUEST-CONSOLE host$XEN2_HOST $(basename "$c" .log): |" "$c" > /dev/console
        rm -f "$c"
    done
    for d in $(xl list 2>/dev/null | awk 'NR > 2 { print $1 }'); do
        xl destroy "$d" >/dev/null 2>&1
    done
    return 0
}

vmmig_setup() {
    printf '%s' "mkdir -p /etc/vmmig /run/vmmig && (umask 077; printf '%s\\n' '$1' > /etc/vmmig/key) &&
printf '${2:-}' > /etc/vmmig/policy &&
{ mountpoint -q /run/vmmig || vmmigfs --listen 8123 /run/vmmig; }"
}

# The QEMU/KVM host of the cold scenario (run.sh: XEN2_KVMHOST): its
# command service behind QEMU's guestfwd, the token from the command line.
KVM_ADDR=10.0.2.100
kvm_net_up() {
    local i
    for i in /sys/class/net/*; do
        [ "$(cat "$i/address" 2>/dev/null)" = 52:54:00:99:01:01 ] || continue
        ip link set "${i##*/}" up &&
            { ip addr show dev "${i##*/}" | grep -q 10.0.2.15/ || ip addr add 10.0.2.15/24 dev "${i##*/}"; }
        return
    done
    echo "kvm_net_up: no NIC 52:54:00:99:01:01 (run.sh without XEN2_KVMHOST?)" >&2
    return 1
}
kvm_run() {
    local tok f rc
    tok=$(sed -n 's/.*XEN2_KVM_TOKEN=\([0-9a-f]*\).*/\1/p' /proc/cmdline)
    f=$(mktemp /tmp/kvm-run.XXXXXX)
    { printf '%s\n' "$tok"; printf '%s' "$1"; } |
        timeout "${HOST_RUN_TIMEOUT:-120}" xen2-tcp connect -w 10 "$KVM_ADDR" 7001 > "$f"
    rc=$?
    cmd_answer "$f"
    [ -n "$CMD_RC" ] && return "$CMD_RC"
    echo "kvm_run: no answer from the QEMU/KVM host (status $rc)" >&2
    return 125
}
