#!/bin/bash
# tools/musl/build-deps.sh - the C libraries vmmig links, built as static
# musl archives from Debian's own source packages.
#
# Debian's libfuse3.a, libxen*.a and libcap.a are glibc objects (they call
# __*_chk, fcntl64, ...) and do not link under musl-gcc, so this script:
#   1. installs its own build tools with apt-get when missing (prints them);
#   2. fetches the source packages fuse3, libcap2, xen, yajl, util-linux
#      (for libuuid) and zlib with
#      `apt-get source --download-only` through a PRIVATE APT configuration
#      under .cache/musl/apt (deb-src lines; /etc/apt is never touched);
#   3. unpacks them with dpkg-source (Debian's patches applied);
#   4. builds with musl-gcc -Os -ffunction-sections -fdata-sections, static
#      only:
#        libfuse3.a                           (meson + ninja)
#        libxenstore.a libxenctrl.a and what libxenctrl needs: libxentoolcore,
#        libxentoollog, libxencall, libxenforeignmemory, libxengnttab,
#        libxendevicemodel, libxenevtchn      (compiled directly: Xen's own
#                                              build needs ./configure)
#        libcap.a libpsx.a                    (libcap's Makefile)
#        libxenlight.a (libxl), libxenguest.a, libxenhypfs.a
#                                             (compiled directly, with libxl's
#                                              generated sources: gentypes.py,
#                                              libxl_save_msgs_gen.pl, ACPI
#                                              tables by iasl; helper paths as
#                                              Debian's xen-utils-4.17)
#        libyajl.a, libuuid.a (util-linux), libz.a
#                                             (direct / zlib's configure)
#      libxenguest without the optional bzip2, lzma, lzo and zstd kernel
#      decompressors (only for booting PV kernels from such images); zlib it
#      always needs, as does libxenhypfs.
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
#   MUSL_YAJL_VERSION=... MUSL_UTIL_LINUX_VERSION=... MUSL_ZLIB_VERSION=...
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
# Sections per function and object: `make static` links with --gc-sections,
# which then drops what vmmig does not call from inside the objects it needs
# (libxl's big files most of all).
MUSL_CFLAGS=${MUSL_CFLAGS:--Os -ffunction-sections -fdata-sections}
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
    lib/libxenlight.a lib/libxenguest.a lib/libxenhypfs.a lib/libyajl.a lib/libuuid.a lib/libz.a
    include/fuse3/fuse.h include/xenctrl.h include/xen/xen.h include/sys/capability.h
    include/libxl.h include/_libxl_types.h include/xenguest.h include/yajl/yajl_gen.h
    include/uuid/uuid.h include/zlib.h"
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
        util-linux:flock acpica-tools:iasl perl:perl"
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
# 4d. zlib, yajl, libuuid: what libxenlight needs besides Xen's own libraries
# (libxenhypfs and libxenguest inflate with zlib; libxl's JSON is yajl; its
# libxl_uuid.h wraps libuuid on Linux).

build_zlib() {
    built zlib && [ -f "$PREFIX/lib/libz.a" ] && return 0
    step "building libz.a (zlib's configure --static, musl-gcc)"
    local b=$BLD/zlib
    # zlib configures in its source tree: work on a copy.
    rm -rf "$b"
    cp -a "$SRC/zlib" "$b"
    (cd "$b" && CC=$MUSL_CC CFLAGS="$MUSL_CFLAGS" ./configure --static --prefix=/usr &&
        make -j "$JOBS" libz.a) >"$BLD/zlib.log" 2>&1 ||
        { tail -40 "$BLD/zlib.log" >&2; die "building zlib failed"; }
    install -m 644 "$b/libz.a" "$PREFIX/lib/"
    install -m 644 "$b/zlib.h" "$b/zconf.h" "$PREFIX/include/"
    mark_built zlib
    step_done
}

# cc_all OUTDIR LOG CC-ARGS... -- SOURCES...: compiles each source into
# OUTDIR/NAME.o, JOBS at a time; dies naming the first that failed.
cc_all() {
    local odir=$1 logf=$2 args=() s o built_objs=()
    shift 2
    while [ "$1" != -- ]; do args+=("$1"); shift; done
    shift
    mkdir -p "$odir"
    for s in "$@"; do
        o=$odir/$(basename "${s%.c}").o
        rm -f "$o"
        "$MUSL_CC" "${args[@]}" -c -o "$o" "$s" >>"$logf" 2>&1 &
        built_objs+=("$o")
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    done
    wait
    for o in "${built_objs[@]}"; do
        [ -f "$o" ] || { tail -40 "$logf" >&2; die "compiling ${o#"$BLD"/} failed"; }
    done
}

build_yajl() {
    built yajl && [ -f "$PREFIX/lib/libyajl.a" ] && return 0
    step "building libyajl.a (musl-gcc)"
    local s=$SRC/yajl b=$BLD/yajl maj min mic
    rm -rf "$b"
    mkdir -p "$b/include/yajl"
    # the version from CMakeLists.txt, as debian/rules reads it
    maj=$(sed -n 's/^SET (YAJL_MAJOR \([0-9]*\))/\1/p' "$s/CMakeLists.txt")
    min=$(sed -n 's/^SET (YAJL_MINOR \([0-9]*\))/\1/p' "$s/CMakeLists.txt")
    mic=$(sed -n 's/^SET (YAJL_MICRO \([0-9]*\))/\1/p' "$s/CMakeLists.txt")
    if [ -z "$maj" ] || [ -z "$min" ] || [ -z "$mic" ]; then die "no YAJL version in $s/CMakeLists.txt"; fi
    cp "$s"/src/api/*.h "$b/include/yajl/"
    sed -e "s/\${YAJL_MAJOR}/$maj/" -e "s/\${YAJL_MINOR}/$min/" -e "s/\${YAJL_MICRO}/$mic/" \
        "$s/src/api/yajl_version.h.cmake" >"$b/include/yajl/yajl_version.h"
    : >"$BLD/yajl.log"
    # shellcheck disable=SC2086 # MUSL_CFLAGS: words
    cc_all "$b/obj" "$BLD/yajl.log" -std=c99 $MUSL_CFLAGS -Wall -I"$b/include" -- "$s"/src/*.c
    rm -f "$b/libyajl.a"
    ar rcs "$b/libyajl.a" "$b"/obj/*.o
    install -m 644 "$b/libyajl.a" "$PREFIX/lib/"
    rm -rf "$PREFIX/include/yajl"
    cp -a "$b/include/yajl" "$PREFIX/include/"
    log "  yajl $maj.$min.$mic"
    mark_built yajl
    step_done
}

build_uuid() {
    built util-linux && [ -f "$PREFIX/lib/libuuid.a" ] && return 0
    step "building libuuid.a from util-linux (musl-gcc)"
    local s=$SRC/util-linux b=$BLD/uuid
    rm -rf "$b"
    mkdir -p "$b"
    # What util-linux's configure finds on Linux for libuuid's sources;
    # uuidd's socket under /run as Debian's libuuid1 (it falls back to
    # generating locally when no uuidd runs).
    cat >"$b/config.h" <<'EOF'
#define HAVE_UNISTD_H 1
#define HAVE_STDLIB_H 1
#define HAVE_SYS_TIME_H 1
#define HAVE_SYS_FILE_H 1
#define HAVE_SYS_IOCTL_H 1
#define HAVE_SYS_SOCKET_H 1
#define HAVE_SYS_UN_H 1
#define HAVE_NET_IF_H 1
#define HAVE_NETINET_IN_H 1
#define HAVE_SYS_SYSCALL_H 1
#define HAVE_SYS_RANDOM_H 1
#define HAVE_GETRANDOM 1
#define HAVE_JRAND48 1
#define HAVE_NANOSLEEP 1
#define HAVE_USLEEP 1
#define HAVE_ERR_H 1
#define HAVE_FSYNC 1
#define HAVE_TLS 1
#define HAVE_UUIDD 1
#define _PATH_RUNSTATEDIR "/run"
#define PACKAGE "util-linux"
#define PACKAGE_STRING "util-linux"
EOF
    : >"$BLD/uuid.log"
    # shellcheck disable=SC2086 # MUSL_CFLAGS: words
    cc_all "$b/obj" "$BLD/uuid.log" -std=gnu99 $MUSL_CFLAGS -include "$b/config.h" \
        -I"$s/include" -I"$s/libuuid/src" -- \
        "$s"/libuuid/src/{clear,compare,copy,gen_uuid,isnull,pack,parse,unpack,unparse,uuid_time,predefined}.c \
        "$s"/lib/{randutils,md5,sha1}.c
    rm -f "$b/libuuid.a"
    ar rcs "$b/libuuid.a" "$b"/obj/*.o
    install -m 644 "$b/libuuid.a" "$PREFIX/lib/"
    mkdir -p "$PREFIX/include/uuid"
    install -m 644 "$s/libuuid/src/uuid.h" "$PREFIX/include/uuid/"
    mark_built util-linux
    step_done
}

# ---------------------------------------------------------------------------
# 4e. libxenlight (libxl) with libxenguest and libxenhypfs, compiled file by
# file like 4b.  libxl finds its helpers by compiled-in paths (tools/config.h,
# written by Xen's ./configure): they are Debian's, from the configure line in
# the xen source package's debian/rules (--prefix=/usr --sysconfdir=/etc
# --localstatedir=/var --with-libexec-leaf-dir=xen-X.Y, system qemu, seabios
# and ovmf), so the static binary runs Debian's libxl-save-helper from
# /usr/lib/xen-X.Y/bin and the hotplug scripts from /etc/xen/scripts, as the
# xen-utils-X.Y package installs them (the same strings are in Debian's
# libxenlight.so).

XENLIGHT_LIBS="hypfs guest light"
XENLIGHT_HEADERS="libxl.h libxl_event.h libxl_json.h libxl_utils.h libxl_uuid.h xenguest.h xenhypfs.h"

# xen_objs_mk LIB: as xen_objs, for any tools/libs/LIB (light and hypfs have
# their object lists in Makefile, which includes Xen's Rules.mk: empty
# stand-ins for it under DIR are given through XEN_ROOT).
xen_objs_mk() {
    local mk=Makefile.common stub=$BLD/xenlight/stub
    [ -f "$SRC/xen/tools/libs/$1/$mk" ] || mk=Makefile
    mkdir -p "$stub/tools/libs"
    : >"$stub/tools/Rules.mk"
    : >"$stub/tools/libs/libs.mk"
    make -s --no-print-directory -C "$SRC/xen/tools/libs/$1" -f - print XEN_ROOT="$stub" MK=$mk <<'EOF'
CONFIG_Linux := y
CONFIG_X86 := y
CONFIG_MIGRATE := y
include $(MK)
print: ; @echo $(OBJS-y)
EOF
}

# iasl_c NAME ASL OUT: compiles an ACPI table to C as tools/libacpi/Makefile.
iasl_c() {
    local name=$1 asl=$2 dst=$3 d
    d=$(dirname "$dst")
    (cd "$d" && iasl -vs -p "$d/$name.tmp" -tc "$asl") >>"$BLD/xenlight.log" 2>&1 ||
        { tail -20 "$BLD/xenlight.log" >&2; die "iasl $asl failed"; }
    sed -e "s/AmlCode/$name/g" -e 's/_aml_code//g' "$d/$name.hex" >"$dst"
    rm -f "$d/$name.hex" "$d/$name.aml"
}

build_xenlight() {
    local l ok=1 stamp
    # rebuilt with any of the sources it compiles against
    stamp="$RECIPE $(cat "$STAMPS"/unpack-{xen,yajl,util-linux,zlib})"
    for l in $XENLIGHT_LIBS; do [ -f "$PREFIX/lib/libxen$l.a" ] || ok=; done
    [ "$(cat "$STAMPS/build-xenlight" 2>/dev/null)" = "$stamp" ] && [ -n "$ok" ] && return 0
    step "building Xen's libxenlight.a, libxenguest.a, libxenhypfs.a (musl-gcc)"
    local x=$SRC/xen b=$BLD/xenlight L=$SRC/xen/tools/libs/light lib objs o n src srcs cflags
    local xv nfiles=0
    rm -rf "$b"
    mkdir -p "$b/inc/xen/lib/x86" "$b/inc/xen/libelf" "$b/inc/acpi" "$b/inc/xen-xsm/flask" "$b/gen"
    : >"$BLD/xenlight.log"
    xv=$("$x/version.sh" "$x/xen/Makefile")
    [[ $xv =~ ^[0-9]+\.[0-9]+$ ]] || die "Xen version from $x/version.sh: '$xv'"

    # The internal headers tools/include/Makefile links or generates.
    ln -s "$x/xen/arch/x86/include/asm" "$b/inc/xen/asm"
    cp "$x/xen/include/xen/lib/x86/cpu-policy.h" "$b/inc/xen/lib/x86/"
    /usr/bin/python3 "$x/xen/tools/gen-cpuid.py" -i "$x/xen/include/public/arch-x86/cpufeatureset.h" \
        -o "$b/inc/xen/lib/x86/cpuid-autogen.h" >>"$BLD/xenlight.log" 2>&1 ||
        die "gen-cpuid.py failed"
    cp "$x/xen/include/xen/libelf.h" "$x/xen/include/xen/elfstructs.h" "$b/inc/xen/libelf/"
    ln -s "$x/xen/include/acpi/platform" "$b/inc/acpi/"
    cp "$x"/xen/include/acpi/ac*.h "$b/inc/acpi/"
    (cd "$b/inc" && sh "$x/xen/xsm/flask/policy/mkflask.sh" awk xen-xsm/flask \
        "$x/xen/xsm/flask/policy/initial_sids") >>"$BLD/xenlight.log" 2>&1 || die "mkflask.sh failed"

    # libxl's generated sources (tools/libs/light/Makefile's rules).
    (cd "$b/gen" &&
        /usr/bin/python3 "$L/gentypes.py" "$L/libxl_types.idl" _libxl_types.h \
            _libxl_types_private.h _libxl_types_json.h _libxl_types.c &&
        /usr/bin/python3 "$L/gentypes.py" "$L/libxl_types_internal.idl" _libxl_types_internal.h \
            _libxl_types_internal_private.h _libxl_types_internal_json.h _libxl_types_internal.c &&
        for f in _libxl_save_msgs_callout.c _libxl_save_msgs_callout.h _libxl_save_msgs_helper.h; do
            perl -w "$L/libxl_save_msgs_gen.pl" "$f" >"$f.new" && mv "$f.new" "$f" || exit 1
        done) >>"$BLD/xenlight.log" 2>&1 ||
        { tail -20 "$BLD/xenlight.log" >&2; die "generating libxl's sources failed"; }
    # The PVH DSDT and the SSDTs libacpi's build.c includes (iasl).
    "$HOST_CC" -DCONFIG_X86 -D__XEN_TOOLS__ -I"$x/tools/include" -I"$PREFIX/include" \
        -o "$b/mk_dsdt" "$x/tools/libacpi/mk_dsdt.c" >>"$BLD/xenlight.log" 2>&1 ||
        { tail -20 "$BLD/xenlight.log" >&2; die "compiling mk_dsdt failed"; }
    {
        printf 'DefinitionBlock ("DSDT.aml", "DSDT", 5, "Xen", "HVM", 0)\n{'
        cat "$x/tools/libacpi/dsdt_acpi_info.asl"
        "$b/mk_dsdt" --debug=n --maxcpu any --dm-version none
    } >"$b/gen/dsdt_pvh.asl" || die "mk_dsdt failed"
    iasl_c dsdt_pvh "$b/gen/dsdt_pvh.asl" "$b/gen/dsdt_pvh.c"
    echo "int dsdt_pvh_len=sizeof(dsdt_pvh);" >>"$b/gen/dsdt_pvh.c"
    for n in ssdt_s3 ssdt_s4 ssdt_pm ssdt_tpm ssdt_laptop_slate; do
        iasl_c "$n" "$x/tools/libacpi/$n.asl" "$b/gen/$n.h"
    done

    # tools/config.h as Debian's configure line writes it (see above).
    cat >"$b/config.h" <<EOF
#define HAVE_PIPE2 1
#define HAVE_LIBYAJL 1
#define HAVE_LIBZ 1
#define HAVE_YAJL_YAJL_VERSION_H 1
#define HAVE_SYS_EVENTFD_H 1
#define HAVE_UTMP_H 1
#define HAVE_INTTYPES_H 1
#define HAVE_STDINT_H 1
#define HAVE_STDLIB_H 1
#define HAVE_STRINGS_H 1
#define HAVE_STRING_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_UNISTD_H 1
#define STDC_HEADERS 1
#define INCLUDE_ENDIAN_H <endian.h>
#define LIBEXEC_BIN "/usr/lib/xen-$xv/bin"
#define XENFIRMWAREDIR "/usr/lib/xen-$xv/boot"
#define XEN_CONFIG_DIR "/etc/xen"
#define XEN_SCRIPT_DIR "/etc/xen/scripts"
#define XEN_RUN_DIR "/var/run/xen"
#define XEN_LOG_DIR "/var/log/xen"
#define XEN_LIB_DIR "/var/lib/xen"
#define XEN_LOCK_DIR "/var/lock"
#define XEN_DUMP_DIR "/var/lib/xen/dump"
#define QEMU_XEN_PATH "/usr/libexec/xen-qemu-system-i386"
#define SEABIOS_PATH "/usr/share/seabios/bios-256k.bin"
#define OVMF_PATH "/usr/share/ovmf/OVMF.fd"
#define STUBDOM_QMP_PROXY_PATH "/usr/bin/vchan-socket-proxy"
EOF

    # shellcheck disable=SC2206 # MUSL_CFLAGS: words
    # -ffile-prefix-map: libxl logs __FILE__, as tools/libs/light/libxl.c.
    local common=(-std=gnu99 $MUSL_CFLAGS -fno-strict-aliasing -Wall -Wstrict-prototypes
        -Wno-unused-but-set-variable -Wno-unused-local-typedefs -Wmissing-prototypes
        -DBUILD_ID -D_LARGEFILE_SOURCE -D_LARGEFILE64_SOURCE
        -D__XEN_INTERFACE_VERSION__=__XEN_LATEST_INTERFACE_VERSION__
        "-ffile-prefix-map=$x/=" "-ffile-prefix-map=$b/="
        -include "$b/config.h" -I"$b/inc" -I"$x/tools/include" -I"$PREFIX/include")
    for lib in $XENLIGHT_LIBS; do
        objs=$(xen_objs_mk "$lib")
        [ -n "$objs" ] || die "no object list for tools/libs/$lib"
        case $lib in
        hypfs) cflags=() ;;
        guest) cflags=(-D__XEN_TOOLS__ -D_GNU_SOURCE -iquote "$x/xen/common/libelf"
            -iquote "$x/tools/libs/ctrl" -Wno-pointer-sign) ;;
        light) cflags=(-D__XEN_TOOLS__ -iquote "$L" -I"$b/gen" -I"$x/tools"
            -Wno-format-zero-length -Wmissing-declarations -Wformat-nonliteral -Wshadow
            -DCONFIG_PCI_SUPP_LEGACY_IRQ -DLIBACPI_STDUTILS=\""$L/libxl_x86_acpi.h"\") ;;
        esac
        srcs=()
        for o in $objs; do
            # where the Makefiles' vpath finds each source
            src=
            for n in "$x/tools/libs/$lib" "$x/xen/common/libelf" "$x/xen/lib/x86" \
                "$x/tools/libacpi" "$b/gen"; do
                [ -f "$n/${o%.o}.c" ] && { src=$n/${o%.o}.c; break; }
            done
            [ -n "$src" ] || die "tools/libs/$lib: no source for $o"
            srcs+=("$src")
        done
        cc_all "$b/$lib" "$BLD/xenlight.log" "${common[@]}" "${cflags[@]}" -- "${srcs[@]}"
        nfiles=$((nfiles + ${#srcs[@]}))
        rm -f "$b/libxen$lib.a"
        ar rcs "$b/libxen$lib.a" "$b/$lib"/*.o
        install -m 644 "$b/libxen$lib.a" "$PREFIX/lib/"
    done
    for h in $XENLIGHT_HEADERS; do install -m 644 "$x/tools/include/$h" "$PREFIX/include/$h"; done
    install -m 644 "$b/gen/_libxl_types.h" "$b/gen/_libxl_types_json.h" "$PREFIX/include/"
    log "  $nfiles files; paths: LIBEXEC_BIN /usr/lib/xen-$xv/bin, XEN_SCRIPT_DIR /etc/xen/scripts, XEN_RUN_DIR /var/run/xen"
    echo "$stamp" >"$STAMPS/build-xenlight"
    step_done
}

# ---------------------------------------------------------------------------

host_deps
command -v "$MUSL_CC" >/dev/null || die "$MUSL_CC not found (package musl-tools)"
mkdir -p "$BLD" "$PREFIX/lib" "$PREFIX/include"

fetch fuse3 "${MUSL_FUSE3_VERSION:-}"
fetch libcap2 "${MUSL_LIBCAP2_VERSION:-}"
fetch xen "${MUSL_XEN_VERSION:-}"
fetch yajl "${MUSL_YAJL_VERSION:-}"
fetch util-linux "${MUSL_UTIL_LINUX_VERSION:-}"
fetch zlib "${MUSL_ZLIB_VERSION:-}"
PKGS="fuse3 libcap2 xen yajl util-linux zlib"
for p in $PKGS; do unpack "$p"; done

kernel_headers
build_fuse3
build_xen
build_libcap2
build_zlib
build_yajl
build_uuid
build_xenlight

# What was built from what, for the record.
{
    for p in $PKGS; do echo "$p $(basename "$(cat "$STAMPS/fetch-$p")" .dsc)"; done
} >"$PREFIX/VERSIONS"
echo "$RECIPE" >"$STAMPS/all"
log "total $(elapsed "$T0") s; versions: $(cut -d' ' -f2 "$PREFIX/VERSIONS" | tr '\n' ' ')"
log "ready in $PREFIX"
