# tests/qemu/lib.sh - two QEMU "hosts" on this machine for the .t files here.
#
# Each host is a network namespace of our own (veth pair, 10.231.N.0/24
# addresses that exist only inside them) with its own vmmigfs --listen 8123,
# run directory ($VMMIG_QEMU_DIR), state directory and policy.  The whole
# test runs in a private mount namespace (unshare -m): /etc/hosts is
# bind-mounted there with hostA and hostB, and the FUSE mounts stay inside.
# With QENV_BOOT_IDS=1 each host has its own VMMIG_BOOT_ID (they share one
# kernel's boot id, and the agents take them for one host: no state record
# is written on arrival, so peers and admin holds do not travel).
# Commands enter a host with `nsenter --net=/run/netns/NS` rather than
# `ip netns exec`, which would also give each command its own mount
# namespace, where the other commands' FUSE mounts are not seen.
# Guests boot Debian's kernel and a busybox initramfs (tests/qemu/fetch.sh)
# under TCG, 136 MiB (the initramfs with the static vmmig takes 2 MiB of
# it; memcheck wants 48 + 8 free) and 1 vCPU, niced.  A trap ends every
# process, mount and namespace the test made, also when it fails.
#
#   . tests/lib/tap.sh; . tests/qemu/lib.sh
#   qenv_init "$@"      # re-exec under unshare, prerequisites, fetch
#   qenv_start          # namespaces, hosts, vmmigfs on both
#   qenv_boot A web1    # create and wait for the guest's shell
#   on A vmmig ...      # a command on host A (its environment)
#   guest A web1 'CMD'  # a command in the guest, through its serial console
set -u
QTOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VMMIG=${VMMIG:-$QTOP/build/bin/vmmig}
QCACHE=$QTOP/.cache/qemu
SUBNET=${VMMIG_QEMU_SUBNET:-10.231.$(( $$ % 200 + 20 ))}

qenv_init() {
    if [ -z "${QENV_INNER:-}" ]; then
        [ "$(id -u)" = 0 ] || skip_all "needs root (namespaces, FUSE)"
        command -v qemu-system-x86_64 >/dev/null || skip_all "qemu-system-x86_64 not installed"
        command -v nsenter >/dev/null && command -v ip >/dev/null || skip_all "needs nsenter and ip"
        [ -e /dev/fuse ] || skip_all "no /dev/fuse"
        "$QTOP/tests/qemu/fetch.sh" >&2 || bail_out "tests/qemu/fetch.sh failed"
        export QENV_INNER=1
        # the whole file under a watchdog
        exec timeout -k 5 "${VMMIG_TEST_TIMEOUT:-300}" \
            unshare -m --propagation private -- "${BASH:-bash}" "$0" "$@"
        bail_out "exec unshare failed"
    fi
    [ -x "$VMMIG" ] || bail_out "no $VMMIG (make)"
    QDIR=$(mktemp -d /tmp/vmq.XXXXXX)
    chmod 755 "$QDIR"
    # Our own copy: a rebuild in the tree during the test must not pull the
    # binary from under vmmigfs (it runs /proc/self/exe for the agents).
    cp "$VMMIG" "$QDIR/vmmig" || bail_out "cannot copy $VMMIG"
    VMMIG=$QDIR/vmmig
    NS_A=vmq-a-$$ NS_B=vmq-b-$$
    trap qenv_cleanup EXIT
    trap 'echo "# interrupted (watchdog?)" >&2; exit 1' INT TERM
}

qenv_cleanup() {
    local h pidf p
    for h in A B; do
        p=$(cat "$QDIR/$h/vmmigfs.pid" 2>/dev/null) && kill "$p" 2>/dev/null
    done
    for pidf in "$QDIR"/*/run/.dom/*/qemu.pid; do
        [ -f "$pidf" ] && kill -9 "$(cat "$pidf")" 2>/dev/null
    done
    for h in A B; do
        umount -l "$QDIR/$h/mnt" 2>/dev/null
    done
    sleep 0.2
    for h in A B; do
        p=$(cat "$QDIR/$h/vmmigfs.pid" 2>/dev/null) && kill -9 "$p" 2>/dev/null
    done
    ip netns del "$NS_A" 2>/dev/null
    ip netns del "$NS_B" 2>/dev/null
    if [ -n "${VMMIG_TEST_KEEP:-}" ]; then
        echo "# kept $QDIR" >&2
    else
        rm -rf "$QDIR"
    fi
}

# on HOST CMD...: run CMD on host A or B (its namespace and environment).
on() {
    (on_exec "$@")
}
# on_exec HOST CMD...: the same in place of this shell.  For `on_exec
# HOST CMD &`, whose $! is then CMD's own pid: a function run in the
# background is a bash subshell, and killing that left CMD running
# (60-cold.t's restart_b: the old vmmigfs kept hostB's port).
on_exec() {
    local h=$1 ns
    shift
    [ "$h" = A ] && ns=$NS_A || ns=$NS_B
    exec env VMMIG_QEMU_DIR=$QDIR/$h/run VMMIG_STATE_DIR=$QDIR/$h/state VMMIG_POLICY=$QDIR/$h/policy \
        VMMIG_KEY_FILE=$QDIR/key VMMIG_MOUNT=$QDIR/$h/mnt VMMIG_HOOKS_DIR=$QDIR/$h/hooks \
        VMMIG_BOOT_ID=${QENV_BOOT_IDS:+vmq-$$-$h} \
        VMMIG_QEMU_DOWNTIME_MS=${VMMIG_QEMU_DOWNTIME_MS:-5000} \
        VMMIG_QEMU_POSTCOPY_AFTER_MS=${VMMIG_QEMU_POSTCOPY_AFTER_MS-0} \
        nice -n 10 nsenter --net=/run/netns/$ns "$@"
}

qenv_start() {
    local h
    ip netns add "$NS_A" && ip netns add "$NS_B" || bail_out "ip netns add failed"
    ip link add "vqa$$" type veth peer name "vqb$$" || bail_out "veth failed"
    ip link set "vqa$$" netns "$NS_A" && ip link set "vqb$$" netns "$NS_B"
    ip -n "$NS_A" addr add "$SUBNET.1/24" dev "vqa$$"
    ip -n "$NS_B" addr add "$SUBNET.2/24" dev "vqb$$"
    for h in "$NS_A" "$NS_B"; do
        ip -n "$h" link set lo up
    done
    ip -n "$NS_A" link set "vqa$$" up && ip -n "$NS_B" link set "vqb$$" up ||
        bail_out "cannot bring the veth pair up"
    { cat /etc/hosts; echo "$SUBNET.1 hostA"; echo "$SUBNET.2 hostB"; } > "$QDIR/hosts"
    mount --bind "$QDIR/hosts" /etc/hosts || bail_out "cannot bind-mount /etc/hosts"
    head -c 32 /dev/urandom > "$QDIR/key" && chmod 600 "$QDIR/key"
    for h in A B; do
        mkdir -p "$QDIR/$h/run" "$QDIR/$h/state" "$QDIR/$h/mnt" "$QDIR/$h/hooks"
        printf 'admin_group =\nmigrate_timeout = 30\n' > "$QDIR/$h/policy"
        on_exec $h "$VMMIG" fs -f --backend qemu --listen 8123 "$QDIR/$h/mnt" \
            </dev/null >>"$QDIR/$h/vmmigfs.log" 2>&1 &
        echo $! > "$QDIR/$h/vmmigfs.pid"
    done
    for h in A B; do
        qwait 5 "grep -q ' $QDIR/$h/mnt ' /proc/self/mountinfo" ||
            bail_out "vmmigfs on host $h did not mount: $(tail -5 "$QDIR/$h/vmmigfs.log")"
    done
}

# qwait SECONDS 'SHELL TEST'
qwait() {
    local end=$(( $(date +%s%N) / 1000000 + $1 * 1000 ))
    while [ $(( $(date +%s%N) / 1000000 )) -lt $end ]; do
        eval "$2" && return 0
        sleep 0.1
    done
    return 1
}

qenv_boot() { # HOST NAME [EXTRA CONFIG LINE]
    local h=$1 name=$2
    cat > "$QDIR/$name.cfg" <<CFG
name = "$name"
memory = 136
vcpus = 1
kernel = "$QCACHE/bzImage"
ramdisk = "$QCACHE/initrd.gz"
cmdline = "console=ttyS0 quiet panic=-1"
${3:-}
CFG
    on $h "$VMMIG" create "$QDIR/$name.cfg" >/dev/null || return 1
    qwait 30 "grep -q 'VMMIG-GUEST: ready' '$QDIR/$h/run/$name/serial.log' 2>/dev/null"
}

guest() { # HOST NAME 'COMMAND'
    "$QTOP/tests/qemu/guest.py" "$QDIR/$1/run/$2/serial.sock" "$3" "${4:-20}"
}

# The processes started below PID (children, grandchildren...).
descendants() {
    local p
    for p in $(ps -o pid= --ppid "$1"); do
        echo "$p"
        descendants "$p"
    done
}

# Live QEMU processes on both hosts: 1 means the one guest runs exactly once.
instances() {
    local n=0 f
    for f in "$QDIR"/*/run/.dom/*/qemu.pid; do
        [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && n=$((n + 1))
    done
    echo "$n"
}

# moved HOST WHAT: web1 runs on HOST and nowhere else, its memory intact
# (memcheck started in it).
moved() {
    local h=$1 m=$QDIR/$1/mnt what=$2 v
    qwait 10 "grep -q 'state: running' '$m/web1/status' 2>/dev/null"
    ok $? "$what: web1 runs on host$h" || diag "$(cat "$m/web1/status" 2>&1)"
    is "$(instances)" 1 "$what: the guest runs exactly once"
    v=$(guest "$h" web1 'memcheck verify')
    like "$v" 'bad=0' "$what: memory verified: $v"
}

# recv_pid [HOST]: the receiving agent HOST's vmmigfs started (default B).
recv_pid() {
    local p
    for p in $(descendants "$(cat "$QDIR/${1:-B}/vmmigfs.pid")"); do
        tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null | grep -q ' receive' && echo "$p"
    done
}

# After `vmmig console` (pid $con, output $QDIR/con.out and con.err) typed
# one key per 50 ms ($QDIR/typed) into NAME's /tmp/keys while NAME moved to
# HOST and printed "tick N" lines: every key arrived exactly once, in order,
# no tick was lost or repeated, the client followed NAME to HOST, and ticks
# came from HOST after a marker line.  WHAT names the move in the test names.
# console_start HOST NAME: NAME's hvc0 gets a key recorder (raw, no echo,
# into /tmp/keys) and a ticker (10 lines a second); `vmmig console -v NAME`
# runs on HOST (pid in con, output in $QDIR/con.out, messages in con.err)
# while typer types a key every 50 ms (also into $QDIR/typed) until
# $QDIR/stop exists.  CONSOLE_VIA: the client's transport (-s); CONSOLE_ENV:
# VAR=VALUE words for its environment.
KEYS=0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ
typer() {
    local i=0 k
    while [ ! -e "$QDIR/stop" ]; do
        k=${KEYS:i%62:1}
        printf '%s' "$k"
        printf '%s' "$k" >> "$QDIR/typed"
        i=$((i + 1))
        sleep 0.05
    done
}
console_start() { # HOST NAME
    # (an earlier session's recorder and ticker stop first)
    guest "$1" "$2" 'kill $(cat /tmp/con.pids 2>/dev/null) 2>/dev/null
(stty raw -echo; exec cat > /tmp/keys) < /dev/hvc0 > /dev/null 2>&1 &
echo $! > /tmp/con.pids
(i=0; while :; do i=$((i+1)); echo "tick $i"; usleep 100000; done) > /dev/hvc0 2>&1 &
echo $! >> /tmp/con.pids
echo started' >/dev/null
    rm -f "$QDIR/stop"
    : > "$QDIR/typed"
    # shellcheck disable=SC2086  # CONSOLE_ENV is words
    typer | on "$1" env ${CONSOLE_ENV:-} "$VMMIG" console -v ${CONSOLE_VIA:+-s "$CONSOLE_VIA"} \
        "$2" > "$QDIR/con.out" 2> "$QDIR/con.err" &
    con=$!
}

console_verify() { # HOST NAME WHAT [keys-only]
    local h=$1 name=$2 what=$3 typed got ticks n gaps after
    VERIFIED=$((${VERIFIED:-0} + 1))
    guest "$h" "$name" "echo MARK-ON-$h > /dev/hvc0" >/dev/null
    sleep 3
    touch "$QDIR/stop"
    sleep 0.2
    typed=$(cat "$QDIR/typed")
    qwait 20 "[ \"\$(guest $h $name 'wc -c < /tmp/keys' | tr -d ' \r')\" -ge ${#typed} ]"
    got=$(guest "$h" "$name" 'cat /tmp/keys; echo')
    got=${got%$'\n'}
    is "$got" "$typed" "every key (${#typed}, one per 50 ms) arrived exactly once, in order" ||
        diag "typed ${#typed}: $typed" "got ${#got}: $got"
    sleep 1
    kill $(descendants "$con") "$con" 2>/dev/null
    wait "$con" 2>/dev/null
    cp "$QDIR/con.err" "$QDIR/con.err.$VERIFIED" # for VMMIG_TEST_KEEP
    [ "${4:-}" = keys-only ] && return
    ticks=$(tr -d '\r' < "$QDIR/con.out" | awk '/^tick [0-9]+$/ {print $2}')
    # a last line without its newline may be cut
    [ -n "$(tail -c 1 "$QDIR/con.out")" ] && ticks=$(echo "$ticks" | sed '$d')
    n=$(echo "$ticks" | grep -c .)
    gaps=$(echo "$ticks" | awk 'NR > 1 && $1 != prev + 1 {print prev " -> " $1} {prev = $1}')
    ok "$([ "$n" -ge 40 ] && [ -z "$gaps" ]; echo $?)" \
        "console output across the $what: $n ticks, none lost or duplicated" ||
        diag "gaps: $gaps" "$(head -c 2000 "$QDIR/con.out")" "$(cat "$QDIR/con.err")"
    like "$(cat "$QDIR/con.err")" "following $name to host$h" "the console client followed $name to host$h" ||
        diag "$(cat "$QDIR/con.err")"
    # the client attached to the destination's agent while the domain was
    # moving (from the stop, as on Xen), and input went there as
    # soon as the domain ran there
    like "$(cat "$QDIR/con.err")" "host$h: standby attached" \
        "  it attached to host$h's agent while $name was moving (standby)" || diag "$(cat "$QDIR/con.err")"
    like "$(cat "$QDIR/con.err")" "host$h: the domain runs here: input goes here" \
        "  and typed there once $name ran there"
    after=$(tr -d '\r' < "$QDIR/con.out" | sed -n "/^MARK-ON-$h\$/,\$p" | grep -c '^tick ')
    ok "$([ "$after" -ge 10 ]; echo $?)" "  $after of the ticks were written on host$h (after its marker line)"
}
