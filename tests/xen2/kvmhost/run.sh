#!/bin/bash
# The QEMU/KVM host of the cold-migration scenario (tests/xen2/run.sh starts
# it when a scenario uses kvm_run): vmmig's QEMU backend on this machine,
# with its own run, state and disk directories under DIR, reached from
# hostA's dom0 through QEMU's user network (guestfwd, see run.sh).
#   kvmhost/run.sh DIR AGENT_PORT CMD_PORT BACK_PORT VMMIG XEN2_TCP
# Listens on 127.0.0.1 only:
#   AGENT_PORT  vmmig receive per connection (VMMIG_BACKEND=qemu)
#   CMD_PORT    the command service (kvmhost/cmd-service): a first line with
#               the token in DIR/token, then a bash script up to EOF
# BACK_PORT is hostA's agent (QEMU's hostfwd), for `vmmig migrate --cold`
# from here; scripts find it as $KVM_BACK_PORT.  On TERM or EXIT: the QEMUs
# started under DIR (by pid file, checked against their command line), the
# listeners, then DIR are removed.
set -u
K=$1 AGENT_PORT=$2 CMD_PORT=$3 BACK_PORT=$4 VMMIG=$5 TCP=$6
HERE=$(cd "$(dirname "$0")" && pwd)
PIDS=""
cleanup() {
    local p f
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    for f in "$K"/run/.dom/*/qemu.pid; do
        [ -f "$f" ] || continue
        p=$(cat "$f" 2>/dev/null) || continue
        if tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -q -- "$K/run/"; then
            kill "$p" 2>/dev/null
        fi
    done
    rm -rf "$K"
}
trap 'cleanup; exit 0' TERM INT
trap cleanup EXIT
mkdir -p "$K/run" "$K/state" "$K/disks" || exit 1
K=$(cd "$K" && pwd) # QEMU daemonizes into /: every path absolute
printf 'admin_group =\nmigrate_timeout = 60\n' > "$K/policy"
# the scenario puts hostA's key here (kvm_run); a random one until then
(umask 077; head -c 32 /dev/urandom > "$K/key")
export VMMIG_BACKEND=qemu VMMIG_QEMU_DIR=$K/run VMMIG_STATE_DIR=$K/state VMMIG_KEY_FILE=$K/key \
    VMMIG_POLICY=$K/policy VMMIG_DISK_DIR=$K/disks VMMIG_QEMU_ACCEL=tcg \
    KVM_DIR=$K KVM_BACK_PORT=$BACK_PORT KVM_VMMIG=$VMMIG
nice -n 10 "$TCP" listen 127.0.0.1 "$AGENT_PORT" "$VMMIG" receive -t 60 >> "$K/agent.log" 2>&1 &
PIDS="$PIDS $!"
nice -n 10 "$TCP" listen 127.0.0.1 "$CMD_PORT" "$HERE/cmd-service" >> "$K/cmd.log" 2>&1 &
PIDS="$PIDS $!"
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$K/token.tmp" && mv "$K/token.tmp" "$K/token"
wait
