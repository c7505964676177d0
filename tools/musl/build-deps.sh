#!/bin/bash
# tools/musl/build-deps.sh - the C libraries vmmig links, built as static
# musl archives from Debian's own source packages.
#
# Debian's libfuse3.a, libxen*.a and libcap.a are glibc objects (they call
# __*_chk, fcntl64, ...) and do not link under musl-gcc, so this script:
#   1. installs its own build tools with apt-get when missing (prints them);
#   2. fetches the source packages fuse3, libcap2 and xen with
#      `apt-get source --download-only` through a PRIVATE APT configuration
#      under .cache/musl/apt (deb-src lines; /etc/apt is never touched);
#   3. unpacks them with dpkg-source (Debian's patches applied);
#   4. builds with musl-gcc -Os, static only:
#        libfuse3.a                           (meson + ninja)
#        libxenstore.a libxenctrl.a and what libxenctrl needs: libxentoolcore,
#        libxentoollog, libxencall, libxenforeignmemory, libxengnttab,
#        libxendevicemodel, libxenevtchn      (compiled directly: Xen's own
#                                              build needs ./configure)
#        libcap.a libpsx.a                    (libcap's Makefile)
#   5. installs libraries and headers into .cache/musl/prefix/{lib,include}.
#      prefix/include also holds links to the kernel's uapi headers (linux/,
#      asm/, asm-generic/): musl-gcc does not search /usr/include.
#
# Every step leaves a stamp in .cache/musl/stamps; a run with everything in
# place only compares one stamp and exits.  Build stamps carry a hash of
# this script, so editing it rebuilds the libraries (downloads are kept).
#
# Versions: for each source package the newest version the mirror lists is
# tried first, falling back to older ones when the mirror does not serve it
# (bookworm-security's xen gives 404 here).  Pin one with
#   MUSL_FUSE3_VERSION=3.14.0-4 MUSL_LIBCAP2_VERSION=... MUSL_XEN_VERSION=...
#
# Usage: tools/musl/build-deps.sh [--force]     (--force: rebuild libraries)
# Environment: MUSL_CACHE (default: <repo>/.cache/musl), JOBS (default nproc).
# Prints, as its last line, the prefix: "musl deps: ready in DIR".

set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
TOP=$(cd "$(dirname "$SELF")/../.." && pwd)
C=${MUSL_CACHE:-$TOP/.cache/musl}
APTDIR=$C/apt
DL=$C/downloads
SRC=$C/src
BLD=$C/build
PREFIX=$C/prefix
STAMPS=$C/stamps
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
MUSL_CC=${MUSL_CC:-musl-gcc}
# libcap and libfuse compile a few helpers that run on the build machine.
HOST_CC=${HOST_CC:-gcc}
MUSL_CFLAGS=${MUSL_CFLAGS:--Os}
# bookworm's deb-src suites, newest versions win.
MIRROR=${MUSL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${MUSL_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=${MUSL_DEBIAN_SUITE:-bookworm}

RECIPE=$(sha256sum "$SELF" | cut -c1-16)
FORCE=
case ${1:-} in
--force) FORCE=1 ;;
"") ;;
-h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$SELF"; exit 0 ;;
*) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

log() { printf 'musl deps: %s\n' "$*"; }
die() { printf 'musl deps: error: %s\n' "$*" >&2; exit 1; }

# Fast path: everything built by this very recipe, and still there.
KEY_FILES="lib/libfuse3.a lib/libxenstore.a lib/libxenctrl.a lib/libxentoolcore.a lib/libcap.a
    include/fuse3/fuse.h include/xenctrl.h include/xen/xen.h include/sys/capability.h"
up_to_date() {
    local f
    [ -z "$FORCE" ] && [ "$(cat "$STAMPS/all" 2>/dev/null)" = "$RECIPE" ] || return 1
    for f in $KEY_FILES; do [ -e "$PREFIX/$f" ] || return 1; done
}
if up_to_date; then
    log "ready in $PREFIX"
    exit 0
fi

mkdir -p "$C" "$STAMPS"
# One build at a time (parallel makes, two engineers in one tree).
exec 9>"$C/.lock"
if ! flock -n 9; then
    log "another build-deps.sh is running; waiting for it"
    flock 9
fi
if up_to_date; then
    log "ready in $PREFIX"
    exit 0
fi
rm -f "$STAMPS/all"
if [ -n "$FORCE" ]; then rm -f "$STAMPS"/build-*; fi

# elapsed START: seconds since START (an $EPOCHREALTIME), one decimal.
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((10#$t / 1000)); }
elapsed() { local d=$(($(now_ms) - $1)); printf '%d.%d' $((d / 1000)) $((d % 1000 / 100)); }
T0=$(now_ms)
step_t=$T0
step() { step_t=$(now_ms); log "$*"; }
step_done() { log "  done in $(elapsed "$step_t") s"; }

# ---------------------------------------------------------------------------
# 1. build tools

host_deps() {
    # package:command pairs; a package counts as present when its command is.
    local want="musl-tools:musl-gcc meson:meson ninja-build:ninja pkg-config:pkg-config
        gcc:gcc make:make binutils:ar dpkg-dev:dpkg-source xz-utils:xz
        python3:/usr/bin/python3 linux-libc-dev:/usr/include/linux/capability.h
        util-linux:flock"
    local missing="" pc p c
    for pc in $want; do
        p=${pc%%:*} c=${pc#*:}
        case $c in
        /*) [ -e "$c" ] || missing+=" $p" ;;
        *) command -v "$c" >/dev/null 2>&1 || missing+=" $p" ;;
        esac
    done
    [ -z "$missing" ] && return 0
    [ "$(id -u)" = 0 ] || die "missing build tools:$missing (run as root or install them)"
    log "installing build tools:$missing"
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
}

# ---------------------------------------------------------------------------
# 2. sources through a private APT configuration

APTCONF=$APTDIR/apt.conf
apt_setup() {
    [ -f "$STAMPS/apt-update" ] && [ -f "$APTCONF" ] && return 0
    step "private APT configuration in $APTDIR (deb-src for $SUITE)"
    mkdir -p "$APTDIR"/{etc/sources.list.d,etc/preferences.d,lists/partial,cache/archives/partial,state}
    cat >"$APTDIR/etc/sources.list" <<EOF
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $SUITE main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $SUITE-updates main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $SECURITY_MIRROR $SUITE-security main
EOF
    cat >"$APTCONF" <<EOF
// Private APT configuration of tools/musl/build-deps.sh: source packages only.
Dir::Etc::SourceList "$APTDIR/etc/sources.list";
Dir::Etc::SourceParts "$APTDIR/etc/sources.list.d";
Dir::Etc::Preferences "$APTDIR/etc/preferences";
Dir::Etc::PreferencesParts "$APTDIR/etc/preferences.d";
Dir::State "$APTDIR/state";
Dir::State::Lists "$APTDIR/lists";
Dir::State::status "/var/lib/dpkg/status";
Dir::Cache "$APTDIR/cache";
APT::Sandbox::User "root";
EOF
    apt-get -c "$APTCONF" -q update >"$APTDIR/update.log" 2>&1 ||
        { cat "$APTDIR/update.log" >&2; die "apt-get update (private configuration) failed"; }
    touch "$STAMPS/apt-update"
    step_done
}

# versions PKG: the versions the private lists know, newest first.
versions() {
    local v out=() i j t
    mapfile -t out < <(apt-cache -c "$APTCONF" showsrc "$1" 2>/dev/null | sed -n 's/^Version: //p' | sort -u)
    # insertion sort with dpkg's ordering (epochs, ~, +debNuM)
    for ((i = 1; i < ${#out[@]}; i++)); do
        for ((j = i; j > 0; j--)); do
            if dpkg --compare-versions "${out[j]}" gt "${out[j - 1]}"; then
                t=${out[j]} out[j]=${out[j - 1]} out[j - 1]=$t
            else
                break
            fi
        done
    done
    for v in "${out[@]}"; do echo "$v"; done
}

# fetch PKG PIN: download the source package; writes the .dsc path to the
# stamp fetch-PKG.
fetch() {
    local pkg=$1 pin=$2 v dsc cand
    if [ -f "$STAMPS/fetch-$pkg" ]; then
        dsc=$(cat "$STAMPS/fetch-$pkg")
        if [ -f "$dsc" ] && { [ -z "$pin" ] || [[ $dsc == *"_${pin#*:}.dsc" ]]; }; then
            return 0
        fi
    fi
    apt_setup
    step "fetching source package $pkg${pin:+ (pinned $pin)}"
    mkdir -p "$DL"
    if [ -n "$pin" ]; then
        cand=$pin
    else
        cand=$(versions "$pkg")
        [ -n "$cand" ] || die "no source package $pkg in the private lists ($APTDIR/etc/sources.list)"
    fi
    for v in $cand; do
        dsc=$DL/${pkg}_${v#*:}.dsc
        if (cd "$DL" && apt-get -c "$APTCONF" -q source --download-only "$pkg=$v") \
            >"$DL/$pkg.log" 2>&1; then
            [ -f "$dsc" ] || die "apt-get source $pkg=$v: no $dsc"
            log "  $pkg $v"
            echo "$dsc" >"$STAMPS/fetch-$pkg"
            rm -f "$STAMPS/unpack-$pkg"
            step_done
            return 0
        fi
        log "  $pkg $v: not served by the mirror ($(grep -m1 -oE '[45][0-9]{2} +[A-Z][A-Za-z ]*[a-z]' "$DL/$pkg.log" || echo failed)), trying older"
    done
    cat "$DL/$pkg.log" >&2
    die "could not download any version of $pkg ($(tr '\n' ' ' <<<"$cand"))"
}

# unpack PKG: dpkg-source -x into src/PKG.
unpack() {
    local pkg=$1 dsc
    dsc=$(cat "$STAMPS/fetch-$pkg")
    if [ "$(cat "$STAMPS/unpack-$pkg" 2>/dev/null)" = "$dsc" ] && [ -d "$SRC/$pkg" ]; then
        return 0
    fi
    step "unpacking $(basename "$dsc")"
    rm -rf "${SRC:?}/$pkg"
    mkdir -p "$SRC"
    dpkg-source --no-check -x "$dsc" "$SRC/$pkg" >"$SRC/$pkg.log" 2>&1 ||
        { cat "$SRC/$pkg.log" >&2; die "dpkg-source -x $dsc failed"; }
    echo "$dsc" >"$STAMPS/unpack-$pkg"
    rm -f "$STAMPS/build-$pkg"
    step_done
}

# built PKG: true when build-PKG matches this recipe and the unpacked source.
built() { [ "$(cat "$STAMPS/build-$1" 2>/dev/null)" = "$RECIPE $(cat "$STAMPS/unpack-$1")" ]; }
mark_built() { echo "$RECIPE $(cat "$STAMPS/unpack-$1")" >"$STAMPS/build-$1"; }

# ---------------------------------------------------------------------------
# 3. kernel uapi headers: musl-gcc searches only musl's include dir

kernel_headers() {
    local d multi
    multi=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
    mkdir -p "$PREFIX/include" "$PREFIX/lib"
    for d in linux asm-generic mtd; do
        [ -d "/usr/include/$d" ] && ln -sfn "/usr/include/$d" "$PREFIX/include/$d"
    done
    if [ -d "/usr/include/$multi/asm" ]; then
        ln -sfn "/usr/include/$multi/asm" "$PREFIX/include/asm"
    else
        ln -sfn /usr/include/asm "$PREFIX/include/asm"
    fi
    [ -e "$PREFIX/include/linux/capability.h" ] || die "no kernel headers (linux-libc-dev)"
}

# ---------------------------------------------------------------------------
# 4a. libfuse3

build_fuse3() {
    built fuse3 && [ -f "$PREFIX/lib/libfuse3.a" ] && return 0
    step "building libfuse3.a (meson, musl-gcc)"
    local b=$BLD/fuse3 stage=$BLD/fuse3-stage
    rm -rf "$b" "$stage"
    # --prefix=/usr: libfuse compiles in the fusermount3 path.
    CC=$MUSL_CC CFLAGS="$MUSL_CFLAGS -I$PREFIX/include" \
        meson setup "$b" "$SRC/fuse3" --prefix=/usr --libdir=lib \
        --default-library=static --buildtype=plain \
        -Dutils=false -Dexamples=false -Dtests=false -Duseroot=false \
        -Ddisable-mtab=true \
        >"$BLD/fuse3.log" 2>&1 || { tail -40 "$BLD/fuse3.log" >&2; die "meson setup (fuse3) failed"; }
    ninja -C "$b" -j "$JOBS" >>"$BLD/fuse3.log" 2>&1 ||
        { tail -40 "$BLD/fuse3.log" >&2; die "ninja (fuse3) failed"; }
    DESTDIR=$stage meson install -C "$b" --no-rebuild >>"$BLD/fuse3.log" 2>&1 ||
        { tail -40 "$BLD/fuse3.log" >&2; die "meson install (fuse3) failed"; }
    rm -rf "$PREFIX/include/fuse3"
    cp -a "$stage/usr/include/fuse3" "$PREFIX/include/"
    install -m 644 "$stage/usr/lib/libfuse3.a" "$PREFIX/lib/"
    mkdir -p "$PREFIX/lib/pkgconfig"
    sed -e "s|^prefix=.*|prefix=$PREFIX|" -e "s|^libdir=.*|libdir=$PREFIX/lib|" \
        "$stage/usr/lib/pkgconfig/fuse3.pc" >"$PREFIX/lib/pkgconfig/fuse3.pc"
    mark_built fuse3
    step_done
}

# ---------------------------------------------------------------------------
# 4b. Xen's tools/libs, compiled file by file (Xen's Makefiles refuse to run
# without ./configure, which wants far more than these libraries need).

XEN_LIBS="toolcore toollog evtchn gnttab call foreignmemory devicemodel ctrl store"

# xen_objs LIB: the object list of tools/libs/LIB for Linux/x86, read from
# the library's own Makefile.common.
xen_objs() {
    make -s --no-print-directory -C "$SRC/xen/tools/libs/$1" -f - print <<'EOF'
CONFIG_Linux := y
CONFIG_X86 := y
include Makefile.common
print: ; @echo $(OBJS-y)
EOF
}

xen_headers() {
    local x=$SRC/xen inc=$PREFIX/include h f
    # public hypervisor interface -> include/xen
    rm -rf "$inc/xen"
    mkdir -p "$inc/xen/sys" "$inc/xen/foreign"
    cp -a "$x/xen/include/public/." "$inc/xen/"
    cp -a "$x/tools/include/xen-sys/Linux/." "$inc/xen/sys/"
    # xen/foreign/*.h are generated (tools/include/xen-foreign/Makefile)
    for f in x86_32 x86_64; do
        case $f in
        x86_32) h="$x/xen/include/public/arch-x86/xen-x86_32.h $x/xen/include/public/arch-x86/xen.h $x/xen/include/public/xen.h" ;;
        x86_64) h="$x/xen/include/public/arch-x86/xen-x86_64.h $x/xen/include/public/arch-x86/xen.h $x/xen/include/public/xen.h" ;;
        esac
        # (run where the output lands: its name makes the include guard)
        mkdir -p "$BLD/xen-foreign"
        # shellcheck disable=SC2086
        (cd "$BLD/xen-foreign" &&
            /usr/bin/python3 "$x/tools/include/xen-foreign/mkheader.py" "$f" "$f.h.tmp" $h) ||
            die "generating xen/foreign/$f.h failed"
        sed 's/(__align8__ \(uint64_t\))/(\1)/g' "$BLD/xen-foreign/$f.h.tmp" >"$inc/xen/foreign/$f.h"
        rm -f "$BLD/xen-foreign/$f.h.tmp"
    done
    # the tools libraries' public headers
    for h in xentoolcore.h xentoollog.h xenevtchn.h xengnttab.h xencall.h \
        xenforeignmemory.h xendevicemodel.h xenctrl.h xenctrl_compat.h \
        xenstore.h xenstore_lib.h xen_list.h; do
        install -m 644 "$x/tools/include/$h" "$inc/$h"
    done
    mkdir -p "$inc/xenstore-compat"
    cp -a "$x/tools/include/xenstore-compat/." "$inc/xenstore-compat/"
}

build_xen() {
    local l ok=1
    for l in $XEN_LIBS; do [ -f "$PREFIX/lib/libxen$l.a" ] || ok=; done
    [ -f "$PREFIX/lib/libxenctrl.a" ] || ok=
    built xen && [ -n "$ok" ] && return 0
    step "building Xen's libxenstore.a, libxenctrl.a and its dependencies (musl-gcc)"
    local x=$SRC/xen b=$BLD/xen lib name objs o src cflags n=0
    rm -rf "$b"
    mkdir -p "$b"
    xen_headers
    # tools/config.h is written by ./configure; these libraries use only this.
    printf '#define HAVE_PIPE2 1\n' >"$b/config.h"
    # shellcheck disable=SC2206 # MUSL_CFLAGS: words
    local common=(-std=gnu99 $MUSL_CFLAGS -fno-strict-aliasing -Wall -Wstrict-prototypes
        -Wno-unused-but-set-variable -Wno-unused-local-typedefs -Wmissing-prototypes
        -DBUILD_ID -D_LARGEFILE_SOURCE -D_LARGEFILE64_SOURCE
        -D__XEN_INTERFACE_VERSION__=__XEN_LATEST_INTERFACE_VERSION__
        -include "$b/config.h" -I"$x/tools/include" -I"$PREFIX/include")
    for lib in $XEN_LIBS; do
        name=libxen$lib
        [ "$lib" = ctrl ] && name=libxenctrl
        mkdir -p "$b/$lib"
        cflags=()
        case $lib in
        ctrl) objs=$(xen_objs ctrl); cflags=(-D__XEN_TOOLS__ -D_GNU_SOURCE) ;;
        store)
            # As Debian's libxenstore.so (which the dynamic vmmig uses):
            # thread-safe (USE_PTHREAD); no dlsym in a static binary.
            objs="xs.o ../../xenstore/xs_lib.o"
            cflags=(-DUSE_PTHREAD -DXEN_RUN_STORED=\"/var/run/xenstored\"
                -iquote "$x/tools/xenstore") ;;
        *) objs=$(xen_objs "$lib") ;;
        esac
        local built_objs=()
        for o in $objs; do
            src=$x/tools/libs/$lib/${o%.o}.c
            o=$b/$lib/$(basename "${o%.o}").o
            "$MUSL_CC" "${common[@]}" "${cflags[@]}" -c -o "$o" "$src" >>"$BLD/xen.log" 2>&1 &
            built_objs+=("$o")
            n=$((n + 1))
            # keep JOBS compiles running
            while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
        done
        wait
        for o in "${built_objs[@]}"; do
            [ -f "$o" ] || { tail -40 "$BLD/xen.log" >&2; die "compiling ${o#"$b"/} failed"; }
        done
        rm -f "$b/$name.a"
        ar rcs "$b/$name.a" "${built_objs[@]}"
        install -m 644 "$b/$name.a" "$PREFIX/lib/$name.a"
    done
    log "  $n files"
    mark_built xen
    step_done
}

# ---------------------------------------------------------------------------
# 4c. libcap (+ libpsx)

build_libcap2() {
    built libcap2 && [ -f "$PREFIX/lib/libcap.a" ] && [ -f "$PREFIX/lib/libpsx.a" ] && return 0
    step "building libcap.a and libpsx.a (musl-gcc)"
    local s=$SRC/libcap2
    make -s -C "$s/libcap" clean >/dev/null 2>&1 || true
    make -C "$s/libcap" -j "$JOBS" CC="$MUSL_CC" BUILD_CC="$HOST_CC" \
        COPTS="$MUSL_CFLAGS" SHARED=no GOLANG=no PAM_CAP=no \
        libcap.a libpsx.a >"$BLD/libcap.log" 2>&1 ||
        { tail -40 "$BLD/libcap.log" >&2; die "make -C libcap failed"; }
    install -m 644 "$s/libcap/libcap.a" "$s/libcap/libpsx.a" "$PREFIX/lib/"
    mkdir -p "$PREFIX/include/sys"
    install -m 644 "$s/libcap/include/sys/capability.h" "$s/libcap/include/sys/psx_syscall.h" \
        "$PREFIX/include/sys/"
    mark_built libcap2
    step_done
}

# ---------------------------------------------------------------------------

host_deps
command -v "$MUSL_CC" >/dev/null || die "$MUSL_CC not found (package musl-tools)"
mkdir -p "$BLD" "$PREFIX/lib" "$PREFIX/include"

fetch fuse3 "${MUSL_FUSE3_VERSION:-}"
fetch libcap2 "${MUSL_LIBCAP2_VERSION:-}"
fetch xen "${MUSL_XEN_VERSION:-}"
for p in fuse3 libcap2 xen; do unpack "$p"; done

kernel_headers
build_fuse3
build_xen
build_libcap2

# What was built from what, for the record.
{
    for p in fuse3 libcap2 xen; do echo "$p $(basename "$(cat "$STAMPS/fetch-$p")" .dsc)"; done
} >"$PREFIX/VERSIONS"
echo "$RECIPE" >"$STAMPS/all"
log "total $(elapsed "$T0") s; versions: $(cut -d' ' -f2 "$PREFIX/VERSIONS" | tr '\n' ' ')"
log "ready in $PREFIX"
