# xenenv.sh - a hypervisor-less Xen environment for vmmig's fast shell tests.
#
# Debian's unmodified xenstored runs in userspace with tests/xenshim's
# LD_PRELOAD library; fake domains come and go with xsfake; vmmigfs runs
# against them with the same library.  Everything lives in a temporary
# directory and runs inside a private mount namespace; a trap cleans up on
# every exit path.
#
# Usage in a .t file (bash):
#
#   #!/bin/bash
#   . "$(dirname "$0")/lib/tap.sh"
#   . "$(dirname "$0")/lib/xenenv.sh"
#   xenenv_init "$@"            # re-execs under unshare, checks prerequisites
#   xenenv_start                # xenstored; exports XENSTORED_PATH, XENSHIM_DOMAINS
#   xs_add 5 vm-a "$(uuid_for 5)"
#   vmmigfs_start "$XENENV_DIR/mnt"
#   ...
#   done_testing                # the trap stops vmmigfs and xenstored
#
# Environment (all optional):
#   VMMIG               the binary under test (default: build/bin/vmmig)
#   XENSHIM_SO, XSFAKE  default: build/test/xenshim.so, build/test/xsfake
#   XENSTORED           default: /usr/lib/xen-4.17/bin/xenstored
#   PYTHON              default: /usr/bin/python3 (else python3 from PATH)
#   VMMIG_TEST_KEEP=1   keep the temporary directory (its path is printed)
#   VMMIG_TEST_TIMEOUT  watchdog for a whole .t file, seconds (default 60)
#   VMMIG_TEST_VERBOSE=1  show vmmigfs/xenstored logs even when all passed
#
# Variables for tests: XENENV_DIR (temp dir, mode 0755), XENENV_MNT (default
# mount point), XENENV_POLICY (VMMIG_POLICY, defaults written at start),
# XENENV_STATE (VMMIG_STATE_DIR), XENENV_SEND_CALLS (file the fake
# `vmmig send` appends its arguments to; vmmigfs gets it as VMMIG_SEND),
# XENENV_ETC_XEN / XENENV_LIB_XEN (empty dirs bind-mounted over /etc/xen and
# /var/lib/xen), XENSHIM_DOMAINS (= XENENV_DIR/hv/domains), VMMIGFS_PID,
# VMMIGFS_STATUS (exit status after vmmigfs_stop).
#
# Helpers: xs_add/xs_del (xsfake), uuid_for N, policy_write LINE..., fs_cat,
# fs_ls, fs_write FILE TEXT (stderr in FS_ERR), fs_write_raw FILE <DATA,
# as_nobody/as_user, status_field, events_lines/events_since/events_new_like,
# wait_for SECONDS CMD..., wait_domain/wait_no_domain NAME, wait_file_is,
# wait_file_like, wait_xs_is, at_second_start, is_mounted, xenenv_defer,
# fake_send BODY (what the fake `vmmig send` does).

XENENV_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
: "${VMMIG:=$XENENV_TOP/build/bin/vmmig}"
: "${XENSHIM_SO:=$XENENV_TOP/build/test/xenshim.so}"
: "${XSFAKE:=$XENENV_TOP/build/test/xsfake}"
: "${XENSTORED:=/usr/lib/xen-4.17/bin/xenstored}"
# The system python: a version-manager shim in PATH can cost a second a call.
if [ -z "${PYTHON:-}" ]; then
    if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
case $VMMIG in /*) ;; *) VMMIG=$PWD/$VMMIG ;; esac
case $XENSHIM_SO in /*) ;; *) XENSHIM_SO=$PWD/$XENSHIM_SO ;; esac
case $XSFAKE in /*) ;; *) XSFAKE=$PWD/$XSFAKE ;; esac

XENENV_DIR=
XENENV_XSD_PID=
XENENV_WATCHDOG_PID=
VMMIGFS_PID=
VMMIGFS_MNT=
VMMIGFS_STATUS=

# ---------------------------------------------------------------------------
# setup

# xenenv_init "$@": call first.  Re-executes the test in a private mount
# namespace, checks what is needed (skip_all when the machine lacks it,
# bail_out when the test helpers are not built) and installs the cleanup trap.
xenenv_init() {
    if [ -z "${VMMIG_TEST_NS:-}" ]; then
        [ "$(id -u)" = 0 ] || skip_all "needs root (FUSE mounts, setpriv, unshare)"
        command -v unshare >/dev/null || skip_all "unshare not installed"
        unshare -m --propagation private true 2>/dev/null ||
            skip_all "cannot create a mount namespace (unshare -m)"
        export VMMIG_TEST_NS=1
        exec unshare -m --propagation private -- "${BASH:-bash}" "$0" "$@"
        bail_out "exec unshare failed"
    fi
    unset LD_PRELOAD
    local t
    for t in xenstore-read xenstore-write xenstore-ls fusermount3 setpriv "$PYTHON" timeout; do
        command -v "$t" >/dev/null || skip_all "$t not installed"
    done
    [ -x "$XENSTORED" ] || skip_all "no xenstored at $XENSTORED (package xen-utils-4.17)"
    [ -c /dev/fuse ] || skip_all "no /dev/fuse"
    [ -f "$XENSHIM_SO" ] && [ -x "$XSFAKE" ] ||
        bail_out "test helpers not built: make -C tests/xenshim ($XENSHIM_SO, $XSFAKE)"
    trap xenenv_cleanup EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Skip the whole file when the binary under test is missing.
xenenv_require_vmmig() {
    [ -x "$VMMIG" ] || skip_all "vmmig not built ($VMMIG)"
}

# xenenv_start: temp dir, hermetic /etc/xen and /var/lib/xen, a fake
# `vmmig send`, and the shimmed xenstored.  Exports XENSTORED_PATH and
# XENSHIM_DOMAINS.
xenenv_start() {
    XENENV_DIR=$(mktemp -d "${TMPDIR:-/tmp}/vmmig-test.XXXXXX") || bail_out "mktemp failed"
    chmod 755 "$XENENV_DIR"
    mkdir -p "$XENENV_DIR"/{xs,hv,state,bin,mnt,etc-xen,lib-xen}
    XENENV_MNT=$XENENV_DIR/mnt
    XENENV_STATE=$XENENV_DIR/state
    XENENV_POLICY=$XENENV_DIR/policy
    XENENV_ETC_XEN=$XENENV_DIR/etc-xen
    XENENV_LIB_XEN=$XENENV_DIR/lib-xen
    XENENV_SEND_CALLS=$XENENV_DIR/send.calls
    # The fake hypervisor's domain list, alone in its directory: xenstored
    # (through the shim) re-checks its domains on any change there.
    : >"$XENENV_DIR/hv/domains"
    export XENSHIM_DOMAINS=$XENENV_DIR/hv/domains
    export XENSTORED_PATH=$XENENV_DIR/xs/socket
    policy_write "guest_max_hold = 3600" "max_ttl = 86400" "admin_group ="

    # Static-hold sources must not come from the host: private empty dirs.
    [ -d /etc/xen ] && mount --bind "$XENENV_ETC_XEN" /etc/xen
    [ -d /var/lib/xen ] && mount --bind "$XENENV_LIB_XEN" /var/lib/xen

    # A fake `vmmig send` (the migration engine vmmigfs runs): records its
    # arguments ("send [--force] [--via CMD|--port=N] [--timeout=S] DOMID
    # HOST"), then does what the test put in send.sh (see fake_send), or
    # fails at stage 0 like an engine that cannot reach the destination.
    cat >"$XENENV_DIR/bin/vmmig-send" <<EOF
#!/bin/bash
echo "\$*" >>"$XENENV_SEND_CALLS"
# vmmigfs's helper ignores SIGTERM, SIGINT and SIGHUP, and its children
# inherit that; the real vmmig send installs its own handlers (cancel sends
# SIGTERM), and a shell script cannot: give it the default back.
[ -x "$XENENV_DIR/send.sh" ] &&
    exec env --default-signal=TERM,INT,HUP "$XENENV_DIR/send.sh" "\$@"
echo 'progress stage=0 name=pre-migration'
echo 'vmmig send: fake (test): no destination'
echo 'result failed stage=0 why="fake vmmig send: the test gave it nothing to do" domain=running-here'
exit 1
EOF
    chmod 755 "$XENENV_DIR/bin/vmmig-send"

    # Watchdog: a hung FUSE call must not hang the test run.
    (
        trap 'kill "$s" 2>/dev/null; wait "$s" 2>/dev/null; exit 0' TERM
        sleep "${VMMIG_TEST_TIMEOUT:-60}" &
        s=$!
        wait "$s"
        echo "# watchdog: test exceeded ${VMMIG_TEST_TIMEOUT:-60}s, aborting" >&2
        [ -s "$XENENV_DIR/vmmigfs.pid" ] && kill -KILL "$(cat "$XENENV_DIR/vmmigfs.pid")" 2>/dev/null
        kill -TERM $$ 2>/dev/null
    ) </dev/null >/dev/null 2>&1 &
    XENENV_WATCHDOG_PID=$!

    XENSTORED_RUNDIR=$XENENV_DIR/xs XENSTORED_ROOTDIR=$XENENV_DIR/xs XENSHIM_DIR=$XENENV_DIR/xs \
        LD_PRELOAD=$XENSHIM_SO "$XENSTORED" -N </dev/null >"$XENENV_DIR/xenstored.log" 2>&1 &
    XENENV_XSD_PID=$!
    if ! wait_for 5 xenstore-read /tool/xenstored >/dev/null 2>&1 &&
        ! wait_for 1 xenstore-ls / >/dev/null 2>&1; then
        diag "xenstored did not come up; log:" "$(cat "$XENENV_DIR/xenstored.log")"
        bail_out "cannot start the userspace xenstored"
    fi
}

xenenv_stop() {
    vmmigfs_stop
    if [ -n "$XENENV_XSD_PID" ]; then
        kill -TERM "$XENENV_XSD_PID" 2>/dev/null
        wait_for 2 _xenenv_dead "$XENENV_XSD_PID" || kill -KILL "$XENENV_XSD_PID" 2>/dev/null
        wait "$XENENV_XSD_PID" 2>/dev/null
        XENENV_XSD_PID=
    fi
}

xenenv_cleanup() {
    local st=$? i
    for ((i = ${#XENENV_DEFER[@]} - 1; i >= 0; i--)); do
        eval "${XENENV_DEFER[i]}"
    done
    XENENV_DEFER=()
    xenenv_stop
    if [ -n "$XENENV_WATCHDOG_PID" ]; then
        kill "$XENENV_WATCHDOG_PID" 2>/dev/null
        wait "$XENENV_WATCHDOG_PID" 2>/dev/null
        XENENV_WATCHDOG_PID=
    fi
    if [ -n "$XENENV_DIR" ] && [ -d "$XENENV_DIR" ]; then
        if [ "${TAP_FAILED:-0}" -gt 0 ] || [ "$st" -ne 0 ] || [ -n "${VMMIG_TEST_VERBOSE:-}" ]; then
            local f
            for f in vmmigfs.log xenstored.log send.calls; do
                [ -s "$XENENV_DIR/$f" ] && diag "---- $f (last 40 lines) ----" "$(tail -n 40 "$XENENV_DIR/$f")"
            done
        fi
        umount /etc/xen /var/lib/xen 2>/dev/null
        if [ -n "${VMMIG_TEST_KEEP:-}" ]; then
            diag "kept $XENENV_DIR"
        else
            rm -rf "$XENENV_DIR"
        fi
    fi
}

# xenenv_defer 'SHELL CODE': run at cleanup (before vmmigfs and xenstored
# stop), last registered first.  For the test's own background processes.
XENENV_DEFER=()
xenenv_defer() { XENENV_DEFER+=("$1"); }

_xenenv_dead() { ! kill -0 "$1" 2>/dev/null; }

# ---------------------------------------------------------------------------
# vmmigfs

# vmmigfs_start MOUNTPOINT [ARGS...]: `vmmig fs -f ARGS MOUNTPOINT` in the
# background with the shim, the test's state dir and policy; waits for the
# mount.  Returns 1 (log shown) when it does not appear in time.
vmmigfs_start() {
    local mp=$1
    shift
    mkdir -p "$mp"
    VMMIGFS_MNT=$mp
    VMMIGFS_STATUS=
    echo "=== vmmigfs start: $VMMIG fs -f $* $mp" >>"$XENENV_DIR/vmmigfs.log"
    # verify_asan_link_order=0: an ASan build accepts the preloaded shim.
    LD_PRELOAD=$XENSHIM_SO VMMIG_STATE_DIR=$XENENV_STATE VMMIG_POLICY=$XENENV_POLICY \
        VMMIG_SEND=$XENENV_DIR/bin/vmmig-send PATH=$XENENV_DIR/bin:$PATH \
        ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0 \
        "$VMMIG" fs -f "$@" "$mp" </dev/null >>"$XENENV_DIR/vmmigfs.log" 2>&1 &
    VMMIGFS_PID=$!
    echo "$VMMIGFS_PID" >"$XENENV_DIR/vmmigfs.pid"
    if ! wait_for "${VMMIGFS_START_TIMEOUT:-5}" _vmmigfs_up; then
        diag "vmmigfs did not mount $mp; log:" "$(tail -n 30 "$XENENV_DIR/vmmigfs.log")"
        vmmigfs_stop
        return 1
    fi
    return 0
}

_vmmigfs_up() {
    _xenenv_dead "$VMMIGFS_PID" && return 2
    is_mounted "$VMMIGFS_MNT"
}

# is_mounted DIR: from /proc/self/mountinfo, so a hung daemon cannot block it
# (what `mountpoint -q` tells, without touching the file system).
is_mounted() {
    local d
    d=$(readlink -f "$1") || return 1
    awk -v d="$d" '$5 == d { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# vmmigfs_stop: fusermount3 -u, wait for the daemon to exit, SIGTERM (then
# SIGKILL) after a timeout.  Sets VMMIGFS_STATUS to the daemon's exit status.
vmmigfs_stop() {
    [ -n "$VMMIGFS_PID" ] || return 0
    if is_mounted "$VMMIGFS_MNT"; then
        fusermount3 -u "$VMMIGFS_MNT" >>"$XENENV_DIR/vmmigfs.log" 2>&1 ||
            echo "=== fusermount3 -u failed" >>"$XENENV_DIR/vmmigfs.log"
    fi
    if ! wait_for "${VMMIGFS_STOP_TIMEOUT:-5}" _xenenv_dead "$VMMIGFS_PID"; then
        echo "=== vmmigfs still running after unmount: SIGTERM" >>"$XENENV_DIR/vmmigfs.log"
        kill -TERM "$VMMIGFS_PID" 2>/dev/null
        if ! wait_for 3 _xenenv_dead "$VMMIGFS_PID"; then
            echo "=== vmmigfs ignores SIGTERM: SIGKILL" >>"$XENENV_DIR/vmmigfs.log"
            kill -KILL "$VMMIGFS_PID" 2>/dev/null
        fi
    fi
    wait "$VMMIGFS_PID" 2>/dev/null
    VMMIGFS_STATUS=$?
    echo "=== vmmigfs exited with status $VMMIGFS_STATUS" >>"$XENENV_DIR/vmmigfs.log"
    is_mounted "$VMMIGFS_MNT" && fusermount3 -u -z "$VMMIGFS_MNT" 2>/dev/null
    VMMIGFS_PID=
    : >"$XENENV_DIR/vmmigfs.pid"
    return 0
}

# ---------------------------------------------------------------------------
# helpers

# wait_for SECONDS CMD...: run CMD every 50 ms until it succeeds; 1 on
# timeout.  CMD returning 2 aborts the wait (returns 2).
wait_for() {
    local limit=$1 st int frac=0
    shift
    int=${limit%.*}
    if [[ $limit == *.* ]]; then
        frac=${limit#*.}000000
        frac=$((10#${frac:0:6}))
    fi
    local end=$(( $(_now_us) + 10#$int * 1000000 + frac ))
    while :; do
        "$@"
        st=$?
        [ "$st" -eq 0 ] && return 0
        [ "$st" -eq 2 ] && return 2
        [ "$(_now_us)" -ge "$end" ] && return 1
        sleep 0.05
    done
}

# Microseconds since the epoch, without a fork.
_now_us() { local t=${EPOCHREALTIME//[!0-9]/}; echo "$((10#$t))"; }

# fake_send 'BODY': what the fake `vmmig send` does from now on (bash; it
# runs in vmmigfs's helper).  BODY sees its arguments, DOMID and HOST (the
# last two), XSFAKE (to make the domain go away, as a real move does),
# `step N` (waits until the test creates $XENENV_DIR/go.N) and the usual
# environment; it prints progress/result lines as vmmig send does (see
# vmmigfs(8)) and sets the exit status.
fake_send() {
    {
        echo '#!/bin/bash'
        echo 'DOMID=${@: -2:1} HOST=${@: -1}'
        echo "XSFAKE='$XSFAKE'"
        # step N: wait until the test releases stage N (go.N); a test that
        # failed and left has no directory any more: end, do not spin.
        printf "step() { while [ ! -e '%s'/go.\$1 ]; do [ -d '%s' ] || exit 1; sleep 0.02; done; }\n" \
            "$XENENV_DIR" "$XENENV_DIR"
        printf '%s\n' "$1"
    } >"$XENENV_DIR/send.sh.new"
    chmod 755 "$XENENV_DIR/send.sh.new"
    mv "$XENENV_DIR/send.sh.new" "$XENENV_DIR/send.sh"
}

# A deterministic UUID for a test domain id.
uuid_for() { printf '00000000-0000-4000-8000-%012d' "$1"; }

xs_add() { "$XSFAKE" add "$@"; }
xs_del() { "$XSFAKE" del "$@"; }

# policy_write LINE...: replace the test's policy file.
policy_write() { printf '%s\n' "$@" >"$XENENV_POLICY"; }

# fs_cat FILE: the file's text, with one trailing newline (read by bash
# itself: no fork+exec, so checks stay fast).  A hung daemon is caught by the
# watchdog, which kills it so that the read fails.
fs_cat() {
    local c
    c=$(<"$1") || return 1
    printf '%s\n' "$c"
}

# fs_ls DIR: names, one per line, sorted.
fs_ls() { ls -1 "$@"; }

# fs_write FILE TEXT: `echo TEXT > FILE` in a subshell; the shell's stderr
# (e.g. "...: write error: Invalid argument") in FS_ERR; returns its status.
FS_ERR=
fs_write() {
    FS_ERR=$( { echo "$2" >"$1"; } 2>&1 )
}

# fs_write_raw FILE < DATA: all of stdin (up to 64 KiB) in ONE write(2).
fs_write_raw() {
    FS_ERR=$(dd of="$1" bs=65536 count=1 iflag=fullblock status=none 2>&1)
}

# as_nobody CMD...: run as uid/gid 65534, no supplementary groups, no caps.
as_nobody() {
    setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all -- "$@"
}

# as_user UID GID GROUPS CMD...: GROUPS comma-separated gids or "" for none.
as_user() {
    local uid=$1 gid=$2 groups=$3
    shift 3
    if [ -n "$groups" ]; then
        setpriv --reuid="$uid" --regid="$gid" --groups="$groups" --inh-caps=-all -- "$@"
    else
        setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all -- "$@"
    fi
}

# status_field STATUS_TEXT KEY: the value of the first "KEY: value" line.
status_field() {
    printf '%s\n' "$1" | sed -n "s/^$2: //p" | head -n 1
}

# events_lines: number of lines in the events file now.
events_lines() { fs_cat "$VMMIGFS_MNT/events" | wc -l; }

# events_since N: the events after the first N lines.
events_since() { fs_cat "$VMMIGFS_MNT/events" | tail -n "+$(( $1 + 1 ))"; }

# wait_file_is SECONDS FILE TEXT: wait until the file reads TEXT.
wait_file_is() {
    local limit=$1
    shift
    wait_for "$limit" _file_is "$@"
}
_file_is() { [ "$(fs_cat "$1" 2>/dev/null)" = "$2" ]; }

# wait_file_like SECONDS FILE REGEX
wait_file_like() {
    local limit=$1
    shift
    wait_for "$limit" _file_like "$@"
}
_file_like() { fs_cat "$1" 2>/dev/null | grep -Eq -- "$2"; }

# at_second_start: sleep until just after a wall-clock second boundary, so
# that what follows has most of a second before time(2) changes.
at_second_start() {
    local us=${EPOCHREALTIME: -6}
    us=$((10#$us))
    [ "$us" -lt 100000 ] && return 0
    sleep "0.$(printf '%06d' $((1000000 - us + 20000)))" 2>/dev/null || sleep 0.1
}

# wait_domain NAME [SECONDS]: until vmmigfs shows the domain's directory.
wait_domain() { wait_for "${2:-5}" _has_entry "$VMMIGFS_MNT" "$1"; }
# wait_no_domain NAME [SECONDS]: until it is gone from the listing.
wait_no_domain() { wait_for "${2:-5}" _no_entry "$VMMIGFS_MNT" "$1"; }
_has_entry() { fs_ls "$1" 2>/dev/null | grep -qxF -- "$2"; }
_no_entry() { ! _has_entry "$@"; }

# events_new_like N REGEX: some event after the first N lines matches REGEX.
events_new_like() { events_since "$1" | grep -Eq -- "$2"; }

# wait_xs_is SECONDS PATH VALUE: until the xenstore node reads VALUE.
wait_xs_is() {
    local limit=$1
    shift
    wait_for "$limit" _xs_is "$@"
}
_xs_is() { [ "$(xenstore-read "$1" 2>/dev/null)" = "$2" ]; }
