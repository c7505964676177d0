#!/bin/bash
# Host side of the two-host emulated-Xen test: fetch the Debian pieces
# (tests/xen/fetch.sh), build the images (tests/xen2/build-images.sh, which
# calls tests/xen/build-images.sh), boot two Xen 4.17 + Debian dom0 machines
# under QEMU (TCG), hostA and hostB, joined by a QEMU socket network on
# loopback, and turn the TAP lines hostA's scenarios print on its serial
# console into the TAP stream on stdout. Progress of fetch/build: stderr.
#
# Settings (environment):
#   VMMIG_BIN         vmmig binary to test, put into both dom0s (default build/bin/vmmig)
#   KMOD              guest migration_lock.ko (default guestctl/kmod/migration_lock.ko; optional)
#   SCENARIOS         scenario directory, run on hostA (default tests/xen2/scenarios)
#   XEN_BOOT_TIMEOUT  seconds from QEMU start to BOTH dom0 markers (default 180)
#   XEN_TIMEOUT       seconds for one whole boot of the pair (default 3600)
#   XEN_BOOT_TRIES    boots of the pair tried when a dom0 never came up (default 2);
#                     a pair whose dom0s both came up is never retried
#   SCENARIO_TIMEOUT  seconds per scenario inside hostA's dom0 (default 1800)
#   BENCH_ROUNDS      rounds the bench/ scenarios run (default 2), passed into
#                     both dom0s like SCENARIO_TIMEOUT
#   XEN2_MEM          QEMU memory per machine in MiB (default 2048)
#   XEN2_NIC          e1000 (default) or virtio
#   XEN2_PORT         loopback TCP port of the socket network (default: a free
#                     one in 20000-32000, picked per boot)
#   XEN_QEMU_CPU      QEMU -cpu (default as tests/xen/run.sh)
#   XEN2_XEN_ARGS     added to Xen's command line (default none; see below)
#   XEN2_NET_MB, XEN2_NC_MB  MB sent A->B by 00-net.sh's throughput checks
#                     through xen2-tcp (default 50) and busybox nc (default 10)
#   XEN2_KVMHOST      1: a QEMU/KVM host on this machine for the cold scenario
#                     (tests/xen2/kvmhost/), 0: none; default: 1 when a
#                     scenario uses kvm_run.  hostA then has a second NIC on
#                     QEMU's user network (restrict=on): 10.0.2.100:8123 is
#                     that host's agent and 10.0.2.100:7001 its command
#                     service (guestfwd to 127.0.0.1), and 127.0.0.1:PORT on
#                     this machine is hostA's 10.0.2.15:8123 (hostfwd)
# Serial consoles of both machines, timestamped and prefixed with "A|" or
# "B|", go to .cache/xen2/logs/boot-*.log (latest.log points to the last).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
export XEN_CACHE=${XEN_CACHE:-$TOP/.cache/xen}
CACHE2=${XEN2_CACHE:-$TOP/.cache/xen2}
export XEN2_CACHE=$CACHE2

abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
[ -n "${VMMIG_BIN:-}" ] && [ -e "$VMMIG_BIN" ] && VMMIG_BIN=$(abs "$VMMIG_BIN")
[ -n "${KMOD:-}" ] && [ -e "$KMOD" ] && KMOD=$(abs "$KMOD")
[ -n "${SCENARIOS:-}" ] && [ -e "$SCENARIOS" ] && SCENARIOS=$(abs "$SCENARIOS")
cd "$TOP"
VMMIG_BIN=${VMMIG_BIN:-build/bin/vmmig}
KMOD=${KMOD:-guestctl/kmod/migration_lock.ko}
SCENARIOS=${SCENARIOS:-tests/xen2/scenarios}
BOOT_TIMEOUT=${XEN_BOOT_TIMEOUT:-180}
TOTAL_TIMEOUT=${XEN_TIMEOUT:-3600}
TRIES=${XEN_BOOT_TRIES:-2}
SCENARIO_TIMEOUT=${SCENARIO_TIMEOUT:-1800}
BENCH_ROUNDS=${BENCH_ROUNDS:-2}
case $BENCH_ROUNDS in ''|*[!0-9]*|0) echo "run.sh: bad BENCH_ROUNDS '$BENCH_ROUNDS' (a positive number)" >&2; exit 2 ;; esac
MEM=${XEN2_MEM:-2048}
NIC=${XEN2_NIC:-e1000}
# The emulated CPU: the one tests/xen/run.sh uses (read from it, so both
# harnesses stay the same; the fallback is its value when this was written).
# shellcheck disable=SC2016 # a sed pattern
CPU_ONEHOST=$(sed -n 's/^ *CPU=\${XEN_QEMU_CPU:-\([^}]*\)}$/\1/p' "$TOP/tests/xen/run.sh" | head -n1)
CPU=${XEN_QEMU_CPU:-${CPU_ONEHOST:-max,family=23,model=1,-monitor,-avx,-avx2,-xsave,-xsaveopt,-xsavec,-xsaves}}
# Extra Xen options (none by default: the same line as tests/xen/run.sh).
# Measured here: with XSAVE in the emulated CPU, userspace in dom0 and in the
# guest crashed or misbehaved now and then right after a domain was restored
# or migrated in (segfaults, busybox getopt errors, xl computing a wrong pfn:
# "Mapping of pfn 0x3b000 failed -22"; 3 of 6 migrations). Either fix
# works: no XSAVE in the CPU (tests/xen/run.sh's choice, 0 of 8 here) or
# XEN2_XEN_ARGS=spec-ctrl=eager-fpu with XSAVE kept (0 of 14), which points
# at Xen's lazy FPU switching (CR0.TS, #NM) with XSAVE under QEMU 7.2's TCG.
XEN_ARGS=${XEN2_XEN_ARGS-}
NET_MB=${XEN2_NET_MB:-50}
NC_MB=${XEN2_NC_MB:-10}
IMAGES=$CACHE2/images
LOGDIR=$CACHE2/logs

T0=$EPOCHREALTIME
# elapsed [SINCE]: seconds since SINCE (an $EPOCHREALTIME value), 1 decimal.
elapsed() {
    local a=${1:-$T0} b=$EPOCHREALTIME
    a=${a/./}; b=${b/./}
    local d=$(( (10#$b - 10#$a) / 100000 ))
    echo "$((d / 10)).$((d % 10))"
}

bail() {
    echo "Bail out! $*"
    exit 1
}

# --- prepare -----------------------------------------------------------------
[ -x "$VMMIG_BIN" ] || bail "no vmmig binary at $VMMIG_BIN (run make first)"
case "$NIC" in
    e1000) NICDEV=e1000 ;;
    virtio) NICDEV=virtio-net-pci ;;
    *) bail "XEN2_NIC must be e1000 or virtio" ;;
esac
"$TOP/tests/xen/fetch.sh" >&2 || bail "tests/xen/fetch.sh failed"
VMMIG_BIN=$VMMIG_BIN KMOD=$KMOD SCENARIOS=$SCENARIOS OUT=$IMAGES XEN2_NIC=$NIC \
    "$HERE/build-images.sh" >&2 || bail "tests/xen2/build-images.sh failed"
T_PREP=$(elapsed)
echo "# fetch + image build: $T_PREP s"

case "$IMAGES" in
    *,*|*=*|*" "*) bail "QEMU cannot take paths with ',', '=' or spaces: $IMAGES" ;;
esac
mkdir -p "$LOGDIR"
# Keep the 20 newest logs.
# shellcheck disable=SC2012 # our own file names
ls -1t "$LOGDIR"/boot-*.log 2>/dev/null | tail -n +21 | xargs -r rm -f
# One run directory per run (pid files, markers): runs may overlap.
RUNDIR=$(mktemp -d "$CACHE2/run.XXXXXX")

KVM_PID=""
# Background helpers of the current boot (watchdog, hostB's pipeline, the
# resource sampler); killed by pid.
HELPERS=""
# kill_qemu H: stop the QEMU of host H of this run, if it still runs. Only a
# process whose command line names our own pid file is touched.
kill_qemu() {
    local f=$RUNDIR/qemu-$1.pid pid
    [ -s "$f" ] || return 0
    pid=$(cat "$f" 2>/dev/null) || return 0
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$f"; then
        kill "$pid" 2>/dev/null || true
    fi
    return 0
}
stop_helpers() {
    # A trap may run while `IFS= read` is active: split with the default IFS.
    local p IFS=$' \t\n'
    for p in $HELPERS; do kill "$p" 2>/dev/null || true; done
    HELPERS=""
    return 0
}
cleanup() {
    stop_helpers
    kill_qemu A
    kill_qemu B
    if [ -n "$KVM_PID" ]; then
        kill "$KVM_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$KVM_PID" 2>/dev/null || break; sleep 0.1; done
        KVM_PID=""
    fi
    rm -rf "$RUNDIR"
    return 0
}
trap cleanup EXIT
trap 'cleanup; trap - EXIT; bail "interrupted"' INT TERM HUP

# The QEMU/KVM host (XEN2_KVMHOST): its services on loopback, for all boots.
KVMHOST=${XEN2_KVMHOST:-auto}
if [ "$KVMHOST" = auto ]; then
    KVMHOST=0
    grep -qs 'kvm_run' "$SCENARIOS"/*.sh && KVMHOST=1
fi
KVM_DIR="" KVM_DOM0="" A_EXTRA=()
free_port() { # a free loopback port not in "$*"
    local p i
    for i in $(seq 100); do
        p=$((20000 + RANDOM % 12000))
        case " $* " in *" $p "*) continue ;; esac
        [ -z "$(ss -Htan "sport = :$p" 2>/dev/null)" ] && { echo "$p"; return; }
    done
    echo 0
}
if [ "$KVMHOST" = 1 ]; then
    TCP=$CACHE2/build/xen2-tcp
    KVM_DIR=$(abs "$(mktemp -d "$CACHE2/kvmhost.XXXXXX")")
    case "$TCP$KVM_DIR" in
        *,*|*=*|*" "*) bail "QEMU cannot take paths with ',', '=' or spaces: $TCP" ;;
    esac
    KP1=$(free_port); KP2=$(free_port "$KP1"); KP3=$(free_port "$KP1" "$KP2")
    # not our child: boot_pair's wait waits for every child
    KVM_PID=$("$HERE/kvmhost/run.sh" "$KVM_DIR" "$KP1" "$KP2" "$KP3" "$(abs "$VMMIG_BIN")" "$TCP" \
        </dev/null >"$LOGDIR/kvmhost.log" 2>&1 & echo $!)
    for i in $(seq 50); do [ -s "$KVM_DIR/token" ] && break; sleep 0.1; done
    [ -s "$KVM_DIR/token" ] || bail "tests/xen2/kvmhost/run.sh did not start (see $LOGDIR/kvmhost.log)"
    A_EXTRA=(-netdev "user,id=n1,restrict=on,net=10.0.2.0/24,guestfwd=tcp:10.0.2.100:8123-cmd:$TCP connect 127.0.0.1 $KP1,guestfwd=tcp:10.0.2.100:7001-cmd:$TCP connect 127.0.0.1 $KP2,hostfwd=tcp:127.0.0.1:$KP3-10.0.2.15:8123"
             -device "$NICDEV,netdev=n1,mac=52:54:00:99:01:01")
    KVM_DOM0="XEN2_KVM_TOKEN=$(cat "$KVM_DIR/token")"
    echo "# QEMU/KVM host on this machine: agent 127.0.0.1:$KP1, commands :$KP2, hostA's agent at :$KP3"
fi


# logline WHO TS TEXT: one line of the combined log.
logline() { printf '[%7s] %s| %s\n' "$2" "$1" "$3" >> "$LOG"; }

# A port nobody listens on (below the ephemeral range, so no outgoing
# connection takes it meanwhile); QEMU A binds it, B connects to it.
pick_port() {
    local p i
    if [ -n "${XEN2_PORT:-}" ]; then echo "$XEN2_PORT"; return; fi
    for i in $(seq 50); do
        p=$((20000 + RANDOM % 12000))
        [ -z "$(ss -Htan "sport = :$p" 2>/dev/null)" ] && { echo "$p"; return; }
    done
    echo 24571
}

# qemu_host H NETDEV-OPTION MAC: one emulated machine, same command line as
# tests/xen/run.sh (see the notes there and in shared/notes/xen-under-qemu.md)
# plus the NIC; XEN2_HOST=H on the dom0 command line picks the role. Its
# serial console on stdout, then a VMMIG-HOST-QEMU-EXIT line.
qemu_host() {
    local h=$1 net=$2 mac=$3 qrc=0 extra=()
    [ "$h" = A ] && extra=("${A_EXTRA[@]}")
    timeout -k 10 "$TOTAL_TIMEOUT" qemu-system-x86_64 \
        -machine pc -accel tcg -cpu "$CPU" -smp 1 -m "$MEM" \
        -display none -vga none -nodefaults -no-reboot -serial stdio -monitor none \
        -pidfile "$RUNDIR/qemu-$h.pid" \
        -netdev "socket,id=n0,$net" -device "$NICDEV,netdev=n0,mac=$mac" "${extra[@]}" \
        -kernel "$IMAGES/xen.elf" \
        -append "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all dom0_mem=768M,max:768M dom0_max_vcpus=1 smap=0 bootscrub=0 $XEN_ARGS" \
        -initrd "$IMAGES/vmlinuz console=hvc0 earlyprintk=xen loglevel=6 rdinit=/init SCENARIO_TIMEOUT=$SCENARIO_TIMEOUT BENCH_ROUNDS=$BENCH_ROUNDS XEN2_HOST=$h NET_MB=$NET_MB NC_MB=$NC_MB${KVM_DOM0:+ $KVM_DOM0},$IMAGES/dom0-initrd-xen2" \
        </dev/null 2>&1 || qrc=$?
    echo "VMMIG-HOST-QEMU-EXIT $qrc"
}

# hostB's side, in the background: wait until QEMU A listens on the port
# (the listener must be A's own QEMU), boot B connected to it, log its
# console. Markers become files in RUNDIR. A B that dies before its dom0
# marker stops A at once (the pair is retried).
host_b() {
    local port=$1 t_start=$2 i=0 line ts pid l
    trap 'exit 0' TERM
    while :; do
        pid=$(cat "$RUNDIR/qemu-A.pid" 2>/dev/null || true)
        if [ -n "$pid" ]; then
            l=$(ss -Htlnp "sport = :$port" 2>/dev/null || true)
            case "$l" in
                *"pid=$pid,"*) break ;;
                *pid=*) ;;               # someone else's listener
                ?*) break ;;             # no process info (not root): trust it
            esac
        fi
        i=$((i + 1))
        if [ $i -ge 300 ]; then
            logline HOST "$(elapsed "$t_start")" "QEMU A does not listen on 127.0.0.1:$port after 30 s; hostB not started"
            : > "$RUNDIR/b-dead"
            kill_qemu A
            return 0
        fi
        sleep 0.1
    done
    logline HOST "$(elapsed "$t_start")" "QEMU A listens on 127.0.0.1:$port, starting hostB"
    while IFS= read -r line; do
        line=${line//$'\r'/}
        ts=$(elapsed "$t_start")
        logline B "$ts" "$line"
        case "$line" in
            *"VMMIG-DOM0-READY"*) echo "$ts" > "$RUNDIR/ready-B" ;;
            *"VMMIG-DOM0-DONE"*) : > "$RUNDIR/done-B" ;;
            *"VMMIG-HOST-QEMU-EXIT "*) echo "${line##* }" > "$RUNDIR/exit-B" ;;
        esac
    done < <(qemu_host B "connect=127.0.0.1:$port" 52:54:00:99:00:02)
    if [ ! -e "$RUNDIR/ready-B" ] && [ ! -e "$RUNDIR/watchdog-fired" ]; then
        logline HOST "$(elapsed "$t_start")" "hostB ended before its dom0 marker: stopping hostA"
        : > "$RUNDIR/b-dead"
        kill_qemu A
    fi
}

# Peak RSS (VmHWM) and CPU seconds of both QEMUs, sampled every 2 s.
sampler() {
    local h pid st
    trap 'exit 0' TERM
    while :; do
        for h in A B; do
            pid=$(cat "$RUNDIR/qemu-$h.pid" 2>/dev/null) || continue
            st=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
            st=${st##*) }
            # fields 14, 15 of stat (utime, stime) are 12, 13 after "pid (comm) "
            # shellcheck disable=SC2086 # split into fields on purpose
            set -- $st
            echo "$(awk '/^VmHWM/ { print int($2 / 1024) }' "/proc/$pid/status" 2>/dev/null) $(( (${12} + ${13}) / $(getconf CLK_TCK) ))" \
                > "$RUNDIR/usage-$h"
        done
        sleep 2
    done
}

# --- one boot of the pair ----------------------------------------------------
# Sets: REACHED (both dom0 markers seen), DONE, NTESTS, NFAIL, DOM0_PLAN,
# T_READY_A, T_READY_B, T_PEER, FAILMSG, LOG, T_BOOT, WHY.
boot_pair() {
    local try=$1 line ts t_start qrc="" port p
    LOG=$LOGDIR/boot-$(date +%Y%m%d-%H%M%S)-try$try.log
    : > "$LOG"
    ln -sfn "$(basename "$LOG")" "$LOGDIR/latest.log"
    REACHED=0 DONE=0 NTESTS=0 NFAIL=0 DOM0_PLAN='' T_READY_A='' T_READY_B='' T_PEER='' FAILMSG=''
    rm -f "$RUNDIR"/*
    t_start=$EPOCHREALTIME
    port=$(pick_port)
    logline HOST 0.0 "boot try $try: hostA listens on 127.0.0.1:$port, NIC $NIC, $MEM MiB each, -cpu $CPU"

    # If a dom0 is not up after BOOT_TIMEOUT, stop both QEMUs (the pair may
    # be retried).
    (
        trap 'kill $sp 2>/dev/null; exit 0' TERM
        sleep "$BOOT_TIMEOUT" & sp=$!
        wait $sp
        if [ ! -e "$RUNDIR/ready-A" ] || [ ! -e "$RUNDIR/ready-B" ]; then
            logline HOST "$BOOT_TIMEOUT" "a dom0 is not up after $BOOT_TIMEOUT s (A: $(cat "$RUNDIR/ready-A" 2>/dev/null || echo no), B: $(cat "$RUNDIR/ready-B" 2>/dev/null || echo no)), stopping both QEMUs"
            : > "$RUNDIR/watchdog-fired"
            kill_qemu A
            kill_qemu B
        fi
    ) </dev/null >/dev/null 2>&1 &
    HELPERS="$HELPERS $!"
    host_b "$port" "$t_start" </dev/null >/dev/null 2>&1 &
    p=$!
    HELPERS="$HELPERS $p"
    sampler </dev/null >/dev/null 2>&1 &
    HELPERS="$HELPERS $!"

    while IFS= read -r line; do
        # hvc and Xen's serial driver each add a CR: drop them all.
        line=${line//$'\r'/}
        ts=$(elapsed "$t_start")
        logline A "$ts" "$line"
        case "$line" in
            *"VMMIG-DOM0-READY"*)
                T_READY_A=$ts; echo "$ts" > "$RUNDIR/ready-A"
                echo "# hostA dom0 up after $ts s (log: $LOG)" ;;
            *"VMMIG-XEN2-PEER-UP"*)
                T_PEER=$ts
                echo "# hostB answers hostA after $ts s (hostB dom0 up after $(cat "$RUNDIR/ready-B" 2>/dev/null || echo '?') s)" ;;
            *"VMMIG-DOM0-FAILED"*)
                FAILMSG=${line#*VMMIG-DOM0-FAILED} ;;
            *"VMMIG-DOM0-DONE"*)
                DONE=1 ;;
            *"VMMIG-HOST-QEMU-EXIT "*)
                qrc=${line##* } ;;
            *"TAP: "*)
                tap_console_line "${line#*TAP: }" ;;
        esac
    done < <(qemu_host A "listen=127.0.0.1:$port" 52:54:00:99:00:01)

    # hostB powers itself off when hostA is done; give it a moment, then stop it.
    local i=0
    while kill -0 "$p" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$p" 2>/dev/null; then
        [ "$DONE" = 1 ] && logline HOST "$(elapsed "$t_start")" "hostB still running 15 s after hostA ended: stopping it"
        kill_qemu B
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    fi
    USAGE_A=$(cat "$RUNDIR/usage-A" 2>/dev/null || echo "? ?")
    USAGE_B=$(cat "$RUNDIR/usage-B" 2>/dev/null || echo "? ?")
    stop_helpers
    wait 2>/dev/null || true
    T_READY_B=$(cat "$RUNDIR/ready-B" 2>/dev/null || true)
    [ -n "$T_READY_A" ] && [ -n "$T_READY_B" ] && REACHED=1
    T_BOOT=$(elapsed "$t_start")
    case "${qrc:-?}" in
        124|137) WHY="timed out after $TOTAL_TIMEOUT s" ;;
        *) WHY="QEMU A exited with status ${qrc:-?}, QEMU B with $(cat "$RUNDIR/exit-B" 2>/dev/null || echo '?')" ;;
    esac
    [ -e "$RUNDIR/watchdog-fired" ] && WHY="a dom0 was not up within $BOOT_TIMEOUT s"
    [ -e "$RUNDIR/b-dead" ] && WHY="hostB ended before its dom0 marker ($WHY)"
    [ -n "$FAILMSG" ] && WHY="$WHY; hostA said:$FAILMSG"
    logline HOST "$T_BOOT" "$WHY"
}

. "$TOP/tests/lib/bootloop.sh"
boot_until_up boot_pair "both dom0s"
tap_summary hostA
echo "# timing: prepare $T_PREP s, dom0 up A $T_READY_A s B $T_READY_B s, A reaches B $T_PEER s, whole boot $T_BOOT s, total $(elapsed) s"
echo "# QEMU peak RSS / CPU: hostA ${USAGE_A% *} MiB / ${USAGE_A#* } s, hostB ${USAGE_B% *} MiB / ${USAGE_B#* } s"
echo "1..$NTESTS"
failure_report
[ "$NFAIL" -eq 0 ]
