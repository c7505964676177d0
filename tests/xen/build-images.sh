#!/bin/bash
# Build the two initramfs images of the emulated-Xen system test from what
# tests/xen/fetch.sh unpacked into .cache/xen/root:
#
#   OUT/domu-initrd.gz  the guest: busybox, vmmig (+ guestctl link), xenstore
#                       tools, migration_lock.ko, xen-blkfront.ko, /init + the
#                       guest command agent, /bin/memcheck and /bin/diskcheck
#                       (image/memcheck.c, image/diskcheck.c, static; kept as
#                       CACHE/build/NAME-HASH)
#   OUT/dom0-initrd     dom0: busybox, Xen modules + fuse + nbd + xen-blkback, the
#                       block hotplug script (image/block), the Xen toolstack,
#                       vmmig (+ vmmigfs/guestctl links), the guest kernel and
#                       image under /guest/, /etc/xen/tiny.cfg, the scenarios
#   OUT/xen.elf, OUT/vmlinuz   hypervisor and the (dom0 and guest) kernel
#
# Settings (environment, or NAME=VALUE arguments):
#   VMMIG_BIN  dynamically linked vmmig multi-call binary (required)
#   KMOD       migration_lock.ko built for the guest kernel (optional: if the
#              file is absent the guest image is built without it)
#   SCENARIOS  directory of dom0 scenario scripts NN-name.sh (required)
#   OUT        output directory (default .cache/xen/images)
#   XEN_ELF    hypervisor ELF to boot (default: Debian's, .cache/xen/xen.elf)
#   XEN_TOOLS  a tree holding a rebuilt toolstack (usr/lib/xen-4.17/bin/xl
#              etc., usr/lib/x86_64-linux-gnu/libxen*.so*): its binaries and
#              libraries replace Debian's in dom0 (hyp-patches/)
#   EXTRA_BINS more dom0 executables for /usr/bin (space-separated paths;
#              their libraries are looked up in XEN_TOOLS first)
set -eu

for arg in "$@"; do
    case "$arg" in
        VMMIG_BIN=*|KMOD=*|SCENARIOS=*|OUT=*) export "${arg?}" ;;
        *) echo "usage: $0 [VMMIG_BIN=PATH] [KMOD=PATH] [SCENARIOS=DIR] [OUT=DIR]" >&2; exit 2 ;;
    esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
CACHE=${XEN_CACHE:-$TOP/.cache/xen}
ROOT=$CACHE/root
OUT=${OUT:-$CACHE/images}
KMOD=${KMOD:-}

say() { echo "build-images: $*"; }
die() { echo "build-images: error: $*" >&2; exit 1; }

[ -n "${VMMIG_BIN:-}" ] || die "VMMIG_BIN is not set"
{ [ -f "$VMMIG_BIN" ] && [ -x "$VMMIG_BIN" ]; } || die "VMMIG_BIN=$VMMIG_BIN is not an executable file"
{ [ -n "${SCENARIOS:-}" ] && [ -d "$SCENARIOS" ]; } || die "SCENARIOS=${SCENARIOS:-} is not a directory"
[ -s "$CACHE/kernel-version" ] || die "nothing fetched yet: run tests/xen/fetch.sh"
KVER=$(cat "$CACHE/kernel-version")
MODDIR=$ROOT/lib/modules/$KVER
BB=$ROOT/bin/busybox
XENBIN=/usr/lib/xen-4.17/bin
# Libraries unpacked by fetch.sh are found there first; the rest (glibc,
# libgcc_s, vmmig's own libraries) come from the host, same Debian release.
ROOT_LIBS=$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/lib/x86_64-linux-gnu
XEN_ELF=${XEN_ELF:-$CACHE/xen.elf}
XEN_TOOLS=${XEN_TOOLS:-}
EXTRA_BINS=${EXTRA_BINS:-}
[ -f "$XEN_ELF" ] || die "XEN_ELF=$XEN_ELF does not exist"
if [ -n "$XEN_TOOLS" ]; then
    [ -d "$XEN_TOOLS" ] || die "XEN_TOOLS=$XEN_TOOLS is not a directory"
    ROOT_LIBS=$XEN_TOOLS/usr/lib/x86_64-linux-gnu:$ROOT_LIBS
fi

mkdir -p "$OUT"
WORK=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# An empty merged-/usr tree with busybox.
new_tree() {
    local t=$1
    mkdir -p "$t"/{bin,sbin,usr/bin,usr/sbin,usr/lib,usr/lib64,etc,proc,sys,dev,run,tmp,root,var/log}
    ln -s usr/lib "$t/lib"
    ln -s usr/lib64 "$t/lib64"
    ln -s ../run "$t/var/run"
    chmod 1777 "$t/tmp"
    # The kernel opens /dev/console for init before devtmpfs is mounted.
    mknod -m 600 "$t/dev/console" c 5 1
    cp "$BB" "$t/bin/busybox"
    # Only /bin/sh here: /init runs `busybox --install -s` for the other
    # applets (hundreds of `ln` runs would cost seconds per image).
    ln -s busybox "$t/bin/sh"
    printf 'root:x:0:0:root:/root:/bin/sh\n' > "$t/etc/passwd"
    printf 'root:x:0:\n' > "$t/etc/group"
}

# copy_bin TREE SRC DEST [LIBPATH]: copy an executable and every shared
# library `ldd` resolves for it (followed through symlinks, placed at the
# path ldd printed, so the image's loader finds them at the same place).
copy_bin() {
    local t=$1 src=$2 dest=$3 libpath=${4:-} out lib
    mkdir -p "$t/$(dirname "$dest")"
    cp -L "$src" "$t/$dest"
    # A static binary (make static) needs nothing else.
    local ph
    if ph=$(LC_ALL=C readelf -l "$src" 2>/dev/null) && ! grep -q INTERP <<<"$ph"; then
        return 0
    fi
    out=$(LD_LIBRARY_PATH=$libpath ldd "$src" 2>&1) || die "ldd $src failed: $out"
    if echo "$out" | grep -q 'not found'; then
        die "$src: missing shared libraries:
$(echo "$out" | grep 'not found')"
    fi
    for lib in $(echo "$out" | sed -n 's/.*=> \(\/[^ ]*\) (0x.*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p'); do
        copy_lib "$t" "$lib"
    done
}

# copy_lib TREE PATH: libraries unpacked under $ROOT keep their path inside it.
copy_lib() {
    local t=$1 lib=$2 dest
    dest=${2#"$ROOT"}
    [ -n "$XEN_TOOLS" ] && dest=${dest#"$XEN_TOOLS"}
    [ -e "$t/$dest" ] && return 0
    mkdir -p "$t/$(dirname "$dest")"
    cp -L "$lib" "$t/$dest"
}

# modinfo_field KO FIELD: read a field of a module's .modinfo (no kmod here).
modinfo_field() {
    tr '\0' '\n' < "$1" | sed -n "s/^$2=//p" | head -n1
}

# add_modules TREE NAME...: copy the modules (and what they depend on) that are
# not built into the kernel; their load order (dependencies first) is appended
# to TREE/etc/vmmig-test/modules as paths relative to /lib/modules/KVER.
add_modules() {
    local t=$1 name rel deps d re
    shift
    mkdir -p "$t/etc/vmmig-test" "$t/lib/modules/$KVER"
    touch "$t/etc/vmmig-test/modules"
    for name in "$@"; do
        # modules.builtin lists built-in ones as kernel/.../NAME.ko ('-' or '_').
        re="/${name//[-_]/[-_]}\.ko\$"
        if grep -Eq "$re" "$MODDIR/modules.builtin"; then
            say "  module $name is built into $KVER"
            continue
        fi
        rel=$(grep -E "$re" "$MODDIR/modules.order" | head -n1 || true)
        [ -n "$rel" ] || die "module $name not found in $MODDIR/modules.order"
        grep -qx "$rel" "$t/etc/vmmig-test/modules" && continue
        deps=$(modinfo_field "$MODDIR/$rel" depends | tr ',' ' ')
        for d in $deps; do add_modules "$t" "$d"; done
        mkdir -p "$t/lib/modules/$KVER/$(dirname "$rel")"
        cp "$MODDIR/$rel" "$t/lib/modules/$KVER/$rel"
        echo "$rel" >> "$t/etc/vmmig-test/modules"
    done
}

# pack TREE FILE [gzip]: a newc cpio archive, owned by root.
pack() {
    local t=$1 f=$2
    if [ "${3:-}" = gzip ]; then
        (cd "$t" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -6) > "$f.tmp"
    else
        (cd "$t" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$f.tmp"
    fi
    mv "$f.tmp" "$f"
}

add_vmmig() {
    local t=$1 link
    shift
    copy_bin "$t" "$VMMIG_BIN" /usr/bin/vmmig
    for link in "$@"; do ln -sf vmmig "$t/usr/bin/$link"; done
}

add_xenstore_tools() {
    local t=$1 tool
    copy_bin "$t" "$ROOT/usr/bin/xenstore" /usr/bin/xenstore "$ROOT_LIBS"
    # One multi-call binary; it looks at argv[0].
    for tool in read write ls rm watch list exists chmod; do
        ln -sf xenstore "$t/usr/bin/xenstore-$tool"
    done
}

# --- the guest (domU) image --------------------------------------------------
say "guest image (kernel $KVER)"
G=$WORK/domu
new_tree "$G"
add_vmmig "$G" guestctl
add_xenstore_tools "$G"
# xenfs only as a fallback for a kernel without /dev/xen/xenbus (see its /init).
mkdir -p "$G/lib/modules"
cp "$MODDIR/kernel/drivers/xen/xenfs/xenfs.ko" "$G/lib/modules/xenfs.ko"
# The PV disk frontend (a module in Debian's kernel), for the disk scenarios.
blkfront=$(grep -E '/xen-blkfront\.ko$' "$MODDIR/modules.order" | head -n1 || true)
[ -n "$blkfront" ] && cp "$MODDIR/$blkfront" "$G/lib/modules/xen-blkfront.ko"
if [ -n "$KMOD" ] && [ -f "$KMOD" ]; then
    vm=$(modinfo_field "$KMOD" vermagic)
    case "$vm" in
        "$KVER "*) ;;
        *) say "  WARNING: $KMOD has vermagic '$vm', the guest kernel is $KVER: insmod will likely fail" ;;
    esac
    cp "$KMOD" "$G/lib/migration_lock.ko"
    say "  with $KMOD"
else
    say "  WITHOUT migration_lock.ko (KMOD='$KMOD' does not exist): the guest will say so"
fi
install -m 755 "$HERE/image/domu-init" "$G/init"
install -m 755 "$HERE/image/vmmig-agent" "$G/bin/vmmig-agent"
# memcheck (the guest's memory + heartbeat checker), static: it needs nothing
# from the image. Built once per content of the source and the compile line
# (the hash is in the file name), so a changed memcheck.c is always rebuilt.
mc_cc="${CC:-cc} -O2 -Wall -Wextra -static"
for tool in memcheck diskcheck; do
    mc_sum=$( { cat "$HERE/image/$tool.c"; echo "$mc_cc"; } | sha256sum | cut -c1-16)
    MC=$CACHE/build/$tool-$mc_sum
    if [ ! -x "$MC" ]; then
        mkdir -p "$CACHE/build"
        # shellcheck disable=SC2086 # mc_cc is a command line
        $mc_cc -o "$MC.tmp.$$" "$HERE/image/$tool.c" ||
            die "cannot build $tool (static glibc: libc6-dev)"
        mv "$MC.tmp.$$" "$MC"
        say "  built $(basename "$MC")"
    fi
    install -m 755 "$MC" "$G/bin/$tool"
done
pack "$G" "$OUT/domu-initrd.gz" gzip

# --- dom0 image --------------------------------------------------------------
say "dom0 image"
D=$WORK/dom0
new_tree "$D"
mkdir -p "$D/var/lib/xen" "$D/var/lib/xenstored" "$D/var/log/xen" "$D/etc/xen" "$D/guest" "$D/scenarios"
add_modules "$D" xen-evtchn xen-privcmd xen-gntdev xen-gntalloc xenfs fuse nbd xen-blkback
for b in xl xenstored xenconsoled libxl-save-helper xen-init-dom0; do
    if [ -n "$XEN_TOOLS" ] && [ -x "$XEN_TOOLS$XENBIN/$b" ]; then
        copy_bin "$D" "$XEN_TOOLS$XENBIN/$b" "$XENBIN/$b" "$ROOT_LIBS"
        say "  $b from $XEN_TOOLS"
    else
        copy_bin "$D" "$ROOT$XENBIN/$b" "$XENBIN/$b" "$ROOT_LIBS"
    fi
done
for b in $EXTRA_BINS; do
    copy_bin "$D" "$b" "/usr/bin/$(basename "$b")" "$ROOT_LIBS"
done
add_xenstore_tools "$D"
# glibc dlopens libgcc_s for pthread_cancel; xl aborts without it.
gcc_s=$(ldconfig -p | sed -n 's/^[[:space:]]*libgcc_s\.so\.1 (libc6,x86-64) => //p' | head -n1)
[ -n "$gcc_s" ] || gcc_s=/lib/x86_64-linux-gnu/libgcc_s.so.1
[ -f "$gcc_s" ] || die "libgcc_s.so.1 not found on the host"
copy_lib "$D" "$gcc_s"
if [ -x /usr/bin/fusermount3 ]; then
    copy_bin "$D" /usr/bin/fusermount3 /usr/bin/fusermount3
else
    say "  no /usr/bin/fusermount3 on the host: dom0 image without it"
fi
add_vmmig "$D" vmmigfs guestctl
cp "$HERE/image/xl.conf" "$D/etc/xen/xl.conf"
mkdir -p "$D/etc/xen/scripts"
install -m 755 "$HERE/image/block" "$D/etc/xen/scripts/block"
cp "$HERE/image/tiny.cfg" "$D/etc/xen/tiny.cfg"
cp "$ROOT/boot/vmlinuz-$KVER" "$D/guest/vmlinuz"
cp "$OUT/domu-initrd.gz" "$D/guest/domu-initrd.gz"
cp "$HERE/lib.sh" "$D/scenarios/lib.sh"
n=0
for s in "$SCENARIOS"/*.sh; do
    [ -e "$s" ] || continue
    case $(basename "$s") in [0-9][0-9]-*.sh) ;; *) continue ;; esac # not lib.sh, run.sh
    install -m 755 "$s" "$D/scenarios/"
    n=$((n + 1))
done
[ $n -gt 0 ] || die "no scenarios (*.sh) in $SCENARIOS"
install -m 755 "$HERE/image/dom0-init" "$D/init"
# Uncompressed: the emulated CPU would spend seconds inflating it at boot.
pack "$D" "$OUT/dom0-initrd"

cp "$XEN_ELF" "$OUT/xen.elf"
cp "$ROOT/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
echo "$KVER" > "$OUT/kernel-version"
say "ok: $OUT ($n scenarios; dom0-initrd $(du -h "$OUT/dom0-initrd" | cut -f1), domu-initrd.gz $(du -h "$OUT/domu-initrd.gz" | cut -f1))"
