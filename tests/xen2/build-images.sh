#!/bin/bash
# Build the images of the two-host emulated-Xen test:
#
#   1. tests/xen/build-images.sh (called, unchanged) builds the one-host
#      images into OUT: xen.elf, vmlinuz, domu-initrd.gz and dom0-initrd with
#      vmmig, the toolstack, the guest and the two-host scenarios (SCENARIOS)
#      under /scenarios/ (with tests/xen/lib.sh as /scenarios/lib.sh).
#   2. A small cpio overlay, appended to that dom0-initrd: the kernel unpacks
#      concatenated newc archives in order, later files replacing earlier
#      ones. It adds:
#        /init                 tests/xen2/image/dom0-init (replaces the one-host /init)
#        /xen2/dom0-bringup.sh the one-host /init up to its VMMIG-DOM0-READY
#                              line (cut out here, so both harnesses share it)
#        /xen2/lib.sh          tests/xen2/lib.sh
#        /xen2/bin/            xen2-tcp (static, built here), the command and
#                              stream services, xen2-ssh (+ `ssh` link)
#        /xen2/modules/, /xen2/modules.list   the NIC driver and its deps
#        /etc/hosts            hostA/A 10.99.0.1, hostB/B 10.99.0.2
#      The overlay never names /lib, /bin or other symlinks of the base
#      image (an entry of another type would replace them).
#   Result: OUT/dom0-initrd-xen2, booted by both machines (the role comes
#   from the dom0 command line, XEN2_HOST=A|B).
#
# Settings (environment): VMMIG_BIN, KMOD, SCENARIOS (as for
# tests/xen/build-images.sh), OUT (default .cache/xen2/images),
# XEN2_NIC (e1000, the default, or virtio), XEN_CACHE (the fetch cache,
# default .cache/xen, filled by tests/xen/fetch.sh).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
XEN_CACHE=${XEN_CACHE:-$TOP/.cache/xen}
CACHE2=${XEN2_CACHE:-$TOP/.cache/xen2}
OUT=${OUT:-$CACHE2/images}
NIC=${XEN2_NIC:-e1000}
export XEN_CACHE

say() { echo "xen2-build: $*"; }
die() { echo "xen2-build: error: $*" >&2; exit 1; }

case "$NIC" in
    e1000) nic_modules="e1000" ;;
    virtio) nic_modules="virtio_pci virtio_net" ;;
    *) die "XEN2_NIC must be e1000 or virtio, not '$NIC'" ;;
esac

# 1. The one-host images.
OUT=$OUT "$HERE/../xen/build-images.sh" || die "tests/xen/build-images.sh failed"
KVER=$(cat "$OUT/kernel-version")
MODDIR=$XEN_CACHE/root/lib/modules/$KVER

mkdir -p "$CACHE2/build"
WORK=$(mktemp -d "$CACHE2/build/overlay.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
O=$WORK/tree
mkdir -p "$O/xen2/bin" "$O/xen2/modules" "$O/etc"
chmod 755 "$O" "$O/xen2" "$O/xen2/bin" "$O/xen2/modules" "$O/etc"

# 2a. The TCP helper, static (no dependence on the image's libraries).
TCP=$CACHE2/build/xen2-tcp
if [ ! -x "$TCP" ] || [ "$HERE/image/xen2-tcp.c" -nt "$TCP" ]; then
    ${CC:-cc} -O2 -Wall -Wextra -static -o "$TCP.tmp" "$HERE/image/xen2-tcp.c" ||
        die "cannot build xen2-tcp (static glibc: libc6-dev)"
    mv "$TCP.tmp" "$TCP"
fi
install -m 755 "$TCP" "$O/xen2/bin/xen2-tcp"

# 2b. The shared dom0 bring-up, cut out of the one-host /init.
awk '/^echo "VMMIG-DOM0-READY"$/ { found = 1; exit } { print } END { exit !found }' \
    "$HERE/../xen/image/dom0-init" > "$O/xen2/dom0-bringup.sh" ||
    die "no 'echo \"VMMIG-DOM0-READY\"' line in tests/xen/image/dom0-init"
grep -q xenconsoled "$O/xen2/dom0-bringup.sh" || die "the bring-up cut from tests/xen/image/dom0-init does not start xenconsoled"
chmod 644 "$O/xen2/dom0-bringup.sh"

# tests/xen2/lib.sh replaces tests/xen/lib.sh's _guest_seq (guest_run's
# command numbers must grow across hosts): make sure it still exists there.
# shellcheck disable=SC2016 # a literal $(...)
if ! grep -q '^_guest_seq()' "$HERE/../xen/lib.sh" || ! grep -q '$(_guest_seq)' "$HERE/../xen/lib.sh"; then
    die "tests/xen/lib.sh no longer numbers guest_run commands with _guest_seq: update tests/xen2/lib.sh"
fi

install -m 755 "$HERE/image/dom0-init" "$O/init"
install -m 644 "$HERE/lib.sh" "$O/xen2/lib.sh"
for f in xen2-cmd-service xen2-ssh-service xen2-ssh; do
    install -m 755 "$HERE/image/$f" "$O/xen2/bin/$f"
done
ln -s xen2-ssh "$O/xen2/bin/ssh"
cat > "$O/etc/hosts" <<'EOF'
127.0.0.1	localhost
10.99.0.1	hostA A
10.99.0.2	hostB B
EOF
chmod 644 "$O/etc/hosts"

# 2c. NIC modules, dependencies first (from each module's .modinfo).
modinfo_field() { tr '\0' '\n' < "$1" | sed -n "s/^$2=//p" | head -n1; }
add_module() {
    local name=$1 re rel d
    grep -qx "$name" "$O/xen2/modules.list" 2>/dev/null && return 0
    re="/${name//[-_]/[-_]}\.ko\$"
    if grep -Eq "$re" "$MODDIR/modules.builtin"; then
        return 0
    fi
    rel=$(grep -E "$re" "$MODDIR/modules.order" | head -n1 || true)
    [ -n "$rel" ] || die "module $name not found in $MODDIR/modules.order"
    for d in $(modinfo_field "$MODDIR/$rel" depends | tr ',' ' '); do
        add_module "$d"
    done
    install -m 644 "$MODDIR/$rel" "$O/xen2/modules/$name.ko"
    echo "$name" >> "$O/xen2/modules.list"
}
: > "$O/xen2/modules.list"
for m in $nic_modules loop; do add_module "$m"; done
chmod 644 "$O/xen2/modules.list"
say "NIC $NIC: modules $(tr '\n' ' ' < "$O/xen2/modules.list")"

# 2d. Overlay archive, appended to the one-host dom0 image.
# The cold-migration guest (scenarios/70-cold.sh) boots on Xen and on QEMU:
# the domU initramfs (xen-blkfront), tests/qemu's (the virtio modules) and
# image/cold-init as /init, concatenated (later files win).
QINITRD=$TOP/.cache/qemu/initrd.gz
if [ ! -s "$QINITRD" ] && [ -x "$TOP/build/static/vmmig" ]; then
    "$TOP/tests/qemu/fetch.sh" >&2 || die "tests/qemu/fetch.sh failed"
fi
if [ -s "$QINITRD" ]; then
    C=$WORK/cold
    mkdir -p "$C"
    install -m 755 "$HERE/image/cold-init" "$C/init"
    # one gzip stream of the three archives: Xen's domain builder reads
    # the size of a gzip'd ramdisk from its end, the last member's only
    { gzip -dc "$OUT/domu-initrd.gz" "$QINITRD"
      (cd "$C" && echo init | cpio -o -H newc -R 0:0 --quiet); } | gzip -1 > "$O/xen2/cold-initrd.gz"
    chmod 644 "$O/xen2/cold-initrd.gz"
    say "cold guest: /xen2/cold-initrd.gz ($(du -h "$O/xen2/cold-initrd.gz" | cut -f1))"
else
    say "no $QINITRD (tests/qemu/fetch.sh needs make static first): no cold guest"
fi

(cd "$O" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$WORK/overlay.cpio"
cat "$OUT/dom0-initrd" "$WORK/overlay.cpio" > "$OUT/dom0-initrd-xen2.tmp"
mv "$OUT/dom0-initrd-xen2.tmp" "$OUT/dom0-initrd-xen2"
echo "$NIC" > "$OUT/nic"
say "ok: $OUT/dom0-initrd-xen2 ($(du -h "$OUT/dom0-initrd-xen2" | cut -f1), overlay $(du -h "$WORK/overlay.cpio" | cut -f1))"
