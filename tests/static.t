#!/bin/bash
# tests/static.t - the static musl build (tools/musl/static.mk).
#
# Builds `make static static-probe` (a no-op when up to date; the first run
# builds the libraries from Debian's source packages, ~40 s), then checks
# that build/static/vmmig.stripped is a static executable within its size
# budget, and runs it in a minimal root: a directory holding only the binary,
# plus /dev (bind mount), /proc (a fresh one for a new pid namespace) and an
# empty /tmp, entered with `unshare -m -p -f --mount-proc` + chroot.  There:
#   vmmig --list, vmmig lock --help, vmmig guestctl --help, guestctl --help
#   (applet chosen by argv[0]), and without a hypervisor: `vmmig fs` and
#   `vmmig lock --list` (direct mode) fail with their clear messages, not a
#   crash.
# vmmigfs itself cannot be mounted here: it needs xc_interface_open, i.e. a
# real hypervisor (the LD_PRELOAD shim of the dynamic tests cannot reach into
# a static binary).  So build/static/probe (tools/musl/probe.c), linked with
# the same static libraries, checks in the same kind of root that
#   - libxenstore.a talks to the userspace xenstored of tests/lib/xenenv.sh
#     (its socket dir bind-mounted into the root, XENSTORED_PATH set):
#     write/read/permissions/watch via poll(xs_fileno)/unwatch/rm;
#   - libfuse3.a mounts a filesystem (no fusermount3 in the root) and serves it.
#
# Environment: VMMIG_STATIC_NO_BUILD=1 only uses what is built (bails out if
# missing); VMMIG_TEST_KEEP=1 keeps the temporary directories.

. "$(dirname "$0")/lib/tap.sh"
TOP=$(cd "$(dirname "$0")/.." && pwd)
SB=$TOP/build/static
BIN=$SB/vmmig.stripped
FULL=$SB/vmmig
PROBE=$SB/probe
MAX_BYTES=${STATIC_MAX_BYTES:-1500000}

[ "$(id -u)" = 0 ] || skip_all "needs root (unshare -m -p, chroot, mounts)"
for t in unshare chroot timeout file ldd readelf nm perl make; do
    command -v "$t" >/dev/null || skip_all "$t not installed"
done

# Our mounts (and xenenv's over /etc/xen) stay in a private mount namespace.
if [ -z "${VMMIG_STATIC_NS:-}" ]; then
    unshare -m --propagation private true 2>/dev/null ||
        skip_all "cannot create a mount namespace (unshare -m)"
    export VMMIG_STATIC_NS=1
    exec unshare -m --propagation private -- "${BASH:-bash}" "$0" "$@"
    bail_out "exec unshare failed"
fi
unset LD_PRELOAD

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vmmig-static.XXXXXX") || bail_out "mktemp failed"
chmod 755 "$WORK"
ROOT=$WORK/root
XSDIR=
cleanup() {
    local st=$?
    [ "$(type -t xenenv_cleanup)" = function ] && xenenv_cleanup
    if [ -n "${VMMIG_TEST_KEEP:-}" ]; then
        diag "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    return $st
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# build

if [ -n "${VMMIG_STATIC_NO_BUILD:-}" ]; then
    [ -x "$BIN" ] && [ -x "$FULL" ] && [ -x "$PROBE" ] ||
        bail_out "static build missing ($BIN, $PROBE): run 'make static static-probe'"
    pass "static build present (VMMIG_STATIC_NO_BUILD)"
else
    # Until the top Makefile includes the fragment, name it on the command line.
    if grep -Eq '^[[:space:]]*-?include[[:space:]]+tools/musl/static\.mk' "$TOP/Makefile"; then
        MK=(make -C "$TOP")
    else
        MK=(make -C "$TOP" -f Makefile -f tools/musl/static.mk)
    fi
    if "${MK[@]}" static static-probe >"$WORK/build.log" 2>&1; then
        pass "make static static-probe"
        note "$(grep '^static: ' "$WORK/build.log")"
    else
        fail "make static static-probe"
        diag "$(tail -n 30 "$WORK/build.log")"
        bail_out "static build failed (log above)"
    fi
fi

# ---------------------------------------------------------------------------
# a static executable

like "$(file -b "$BIN")" 'statically linked' "file: vmmig.stripped is statically linked"
like "$(file -b "$FULL")" 'statically linked.*not stripped' \
    "file: build/static/vmmig is statically linked and keeps its symbols"
out=$(LC_ALL=C ldd "$BIN" 2>&1)
like "$out" 'not a dynamic executable' "ldd: not a dynamic executable"
hdrs=$(LC_ALL=C readelf -lW "$BIN" 2>&1)
unlike "$hdrs" '^ *(INTERP|DYNAMIC) ' "no program interpreter, no dynamic section"
size=$(stat -c %s "$BIN")
ok $((size >= MAX_BYTES)) "stripped size $size bytes < $MAX_BYTES (1.5 MB budget)"
note "sizes: $(stat -c %s "$FULL") bytes with symbols, $size stripped"

# ---------------------------------------------------------------------------
# the minimal root

mkdir -p "$ROOT"/{dev,proc,tmp}
cp "$BIN" "$ROOT/vmmig"
is "$(cd "$ROOT" && find . | LC_ALL=C sort | tr '\n' ' ')" ". ./dev ./proc ./tmp ./vmmig " \
    "the root holds only the binary (and empty dev, proc, tmp)"

CHROOT=$(command -v chroot)
PERL=$(command -v perl)
OUT=$WORK/out
ERR=$WORK/err

# inroot_exec CMD...: CMD (a host command) in new mount + pid namespaces
# with /proc for them at ROOT/proc, the host's /dev bind-mounted at
# ROOT/dev and, when XSDIR is set, the xenstored directory at ROOT/xs.
# stdout in $OUT, stderr in $ERR; returns CMD's status.
inroot_exec() {
    timeout -k 2 "${INROOT_TIMEOUT:-20}" \
        unshare -m -p -f --mount-proc="$ROOT/proc" -- "${BASH:-bash}" -c '
            r=$1 xs=$2
            shift 2
            mount --bind /dev "$r/dev" || exit 125
            if [ -n "$xs" ]; then
                mkdir -p "$r/xs" && mount --bind "$xs" "$r/xs" || exit 125
            fi
            exec "$@"' _ "$ROOT" "$XSDIR" "$@" >"$OUT" 2>"$ERR"
}

# inroot [VAR=VALUE...] -- PATH ARGS: PATH inside the root, chrooted, with
# only the given environment.
inroot() {
    local env=(PATH=/)
    while [ "$1" != -- ]; do
        env+=("$1")
        shift
    done
    shift
    inroot_exec env -i "${env[@]}" "$CHROOT" "$ROOT" "$@"
}

# inroot_argv0 NAME ARGS: /vmmig run with argv[0] = NAME (no link needed).
inroot_argv0() {
    inroot_exec env -i PATH=/ "$PERL" -e '
        my $r = shift; my $n = shift;
        chroot($r) or die "chroot: $!\n"; chdir("/") or die "chdir: $!\n";
        exec { "/vmmig" } $n, @ARGV; die "exec: $!\n"' "$ROOT" "$@"
}

show_failure() { diag "  exit status: $1" "  stdout: $(cat "$OUT")" "  stderr: $(cat "$ERR")"; }

# vmmig --list
inroot -- /vmmig --list
st=$?
ok "$st" "vmmig --list exits 0 in the minimal root" || show_failure "$st"
list=$(tr '\n' ' ' <"$OUT")
like "$list" '^vmmigfs lock unlock migrate guestctl send receive comigrate console blockmirror create $' \
    "vmmig --list names every applet"
if [ -x "$TOP/build/bin/vmmig" ]; then
    is "$(cat "$OUT")" "$("$TOP/build/bin/vmmig" --list)" "same applet list as the dynamic build"
else
    skip "no dynamic build (build/bin/vmmig) to compare with"
fi

# vmmig lock --help
inroot -- /vmmig lock --help
st=$?
ok "$st" "vmmig lock --help exits 0" || show_failure "$st"
like "$(head -n 1 "$OUT")" '^usage: .*lock' "vmmig lock --help prints its usage"
like "$(cat "$OUT")" '--list' "vmmig lock --help documents --list"

# guestctl --help, through vmmig and through argv[0]
inroot -- /vmmig guestctl --help
st=$?
ok "$st" "vmmig guestctl --help exits 0" || show_failure "$st"
like "$(head -n 1 "$OUT")" '^usage: guestctl ' "vmmig guestctl --help prints its usage"
help1=$(cat "$OUT")
inroot_argv0 guestctl --help
st=$?
ok "$st" "guestctl --help (applet from argv[0]) exits 0" || show_failure "$st"
if [ -n "$help1" ]; then
    is "$(cat "$OUT")" "$help1" "argv[0] guestctl gives the same help as 'vmmig guestctl'"
else
    fail "argv[0] guestctl gives the same help as 'vmmig guestctl' (which printed nothing)"
fi

# ---------------------------------------------------------------------------
# no hypervisor: clear errors, no crash

# A live xenstored (userspace, tests/lib/xenenv.sh) when the test helpers are
# built: XENSTORED_PATH then points at a real socket inside the root.
XS_REASON=
XENSHIM_SO=${XENSHIM_SO:-$TOP/build/test/xenshim.so}
XENSTORED=${XENSTORED:-/usr/lib/xen-4.17/bin/xenstored}
if [ ! -f "$XENSHIM_SO" ]; then
    XS_REASON="xenshim not built (make -C tests/xenshim)"
elif [ ! -x "$XENSTORED" ]; then
    XS_REASON="no xenstored at $XENSTORED (xen-utils-4.17)"
elif ! command -v xenstore-read >/dev/null; then
    XS_REASON="xenstore-read not installed (xenstore-utils)"
fi
if [ -z "$XS_REASON" ]; then
    . "$TOP/tests/lib/xenenv.sh"
    xenenv_start # bails out when xenstored does not come up
    XSDIR=$XENENV_DIR/xs
    [ -S "$XSDIR/socket" ] || bail_out "no xenstored socket at $XSDIR/socket"
    note "userspace xenstored at $XSDIR/socket, bind-mounted at /xs in the root"
else
    mkdir -p "$WORK/xs-none"
    XSDIR=$WORK/xs-none # an empty directory: XENSTORED_PATH leads nowhere
    note "no userspace xenstored: $XS_REASON"
fi

inroot -- /vmmig fs /tmp
st=$?
is "$st" 1 "vmmig fs without any hypervisor: exit status 1 (no crash)"
like "$(cat "$ERR")" '^vmmig vmmigfs: no supported hypervisor found' \
    "vmmig fs without any hypervisor: says no supported hypervisor found"

mkdir -p "$ROOT/tmp/mnt"
inroot XENSTORED_PATH=/xs/socket VMMIG_STATE_DIR=/tmp/state VMMIG_POLICY=/tmp/policy -- \
    /vmmig fs -f /tmp/mnt
st=$?
is "$st" 1 "vmmig fs with XENSTORED_PATH but no hypervisor: exit status 1 (no crash)"
like "$(cat "$ERR")" 'vmmig vmmigfs: cannot open the Xen control interface \(is this a Xen dom0\?\)' \
    "vmmig fs: clear message about the Xen control interface"
is "$(awk -v d="$ROOT/tmp/mnt" '$5 == d' /proc/self/mountinfo)" "" "nothing left mounted"

# libfuse3's iconv module is left out of the static link
# (tools/musl/fuse-noiconv.c): asking for it fails with a clear message
# before anything is mounted; the subdir module, still in, mounts.
mkdir -p "$ROOT/tmp/qemu"
inroot VMMIG_QEMU_DIR=/tmp/qemu VMMIG_STATE_DIR=/tmp/state VMMIG_POLICY=/tmp/policy -- \
    /vmmig fs --backend qemu -f -o modules=iconv /tmp/mnt
st=$?
is "$st" 1 "vmmig fs -o modules=iconv: exit status 1"
like "$(cat "$ERR")" 'fuse: the iconv module is not in this static build of vmmig' \
    "vmmig fs -o modules=iconv: says the module is not in this build"
is "$(awk -v d="$ROOT/tmp/mnt" '$5 == d' /proc/self/mountinfo)" "" "modules=iconv: nothing left mounted"
is "$(nm "$FULL" | awk '$3 == "iconv" || $3 == "iconv_open"' | wc -l)" 0 \
    "musl's iconv is not linked in (saves ~145 KB)"

inroot VMMIG_STATE_DIR=/tmp/state -- /vmmig lock --list
st=$?
is "$st" 1 "vmmig lock --list (direct mode, no hypervisor): exit status 1"
like "$(cat "$ERR")" '^vmmig lock: no vmmigfs at /run/vmmig, and direct access failed: no supported hypervisor found' \
    "vmmig lock --list: says there is no vmmigfs and no hypervisor"

inroot XENSTORED_PATH=/xs/socket VMMIG_STATE_DIR=/tmp/state -- /vmmig lock --list
st=$?
is "$st" 1 "vmmig lock --list with XENSTORED_PATH, no hypervisor: exit status 1"
like "$(cat "$ERR")" 'direct access failed: cannot open the Xen control interface' \
    "vmmig lock --list: clear message about the Xen control interface"

# ---------------------------------------------------------------------------
# the static libraries at work: libxenstore.a and libfuse3.a (probe)

cp "$PROBE" "$ROOT/probe"
if [ -z "$XS_REASON" ]; then
    inroot XENSTORED_PATH=/xs/socket -- /probe xs
    st=$?
    ok "$st" "libxenstore.a: probe xs against the userspace xenstored" || show_failure "$st"
    is "$(grep -c '^ok ' "$OUT")" 14 "libxenstore.a: all 14 steps passed (write, read, perms, watch, unwatch, rm)"
    # Both ways with the host's xenstore tools: the same store.
    xenstore-write /vmmig-static-marker "from-host-$$"
    inroot XENSTORED_PATH=/xs/socket -- /probe xs-read /vmmig-static-marker
    is "$(cat "$OUT")" "from-host-$$" "probe in the root reads what the host wrote"
    inroot XENSTORED_PATH=/xs/socket -- /probe xs-write /vmmig-static-marker "from-root-$$"
    is "$(xenstore-read /vmmig-static-marker 2>&1)" "from-root-$$" "the host reads what the probe wrote"
else
    skip "$XS_REASON" 4
fi

if [ -c /dev/fuse ]; then
    # Mount from inside the root, read from the namespace, unmount, collect.
    inroot_exec "${BASH:-bash}" -c '
        root=$1 chroot=$2 mnt=$1/tmp/mnt
        env -i PATH=/ "$chroot" "$root" /probe fuse /tmp/mnt 2>&1 &
        pid=$!
        for _ in $(seq 100); do
            awk -v d="$mnt" "\$5 == d { f = 1 } END { exit !f }" /proc/self/mountinfo && break
            kill -0 $pid 2>/dev/null || break
            sleep 0.05
        done
        echo "fstype: $(awk -v d="$mnt" "\$5 == d { print \$(NF-2) }" /proc/self/mountinfo)"
        echo "ls: $(ls "$mnt" 2>&1)"
        echo "cat: $(cat "$mnt/hello" 2>&1)"
        umount "$mnt" 2>&1
        st=
        for _ in $(seq 60); do
            kill -0 $pid 2>/dev/null || { wait $pid; st=$?; break; }
            sleep 0.05
        done
        [ -n "$st" ] || { kill -9 $pid; wait $pid; st=killed; }
        echo "probe exit: $st"' _ "$ROOT" "$CHROOT"
    res=$(cat "$OUT" "$ERR")
    like "$res" '^fstype: fuse(\.[a-z-]+)?$' "libfuse3.a: mounts in the minimal root (no fusermount3 there)"
    like "$res" '^ls: hello$' "libfuse3.a: readdir served"
    like "$res" '^cat: hello from a static musl libfuse3$' "libfuse3.a: read served"
    like "$res" '^probe exit: 0$' "libfuse3.a: the daemon exits 0 after umount" || diag "$res"
else
    skip "no /dev/fuse" 4
fi

done_testing
