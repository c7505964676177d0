#!/bin/bash
# Fetch and build what the QEMU tests need, into .cache/qemu/ (git-ignored):
#   root/        Debian's current 6.1 kernel package, unpacked (apt-get
#                download + dpkg -x: no dpkg lock, safe beside other apt users)
#   bzImage      that kernel
#   initrd.gz    busybox-static + the virtio modules + memcheck and diskcheck
#                (tests/xen/image/memcheck.c, diskcheck.c: the self-checking
#                memory and O_DIRECT disk writers) + tests/qemu/guest-init as /init
#                + the static vmmig (make static) as /bin/vmmig and
#                /bin/guestctl: the real guestctl runs in the guest
# Idempotent: reruns reuse the download and rebuild the initrd only when its
# inputs changed.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
CACHE=${QEMU_CACHE:-$TOP/.cache/qemu}
say() { echo "fetch: $*"; }
die() { echo "fetch: error: $*" >&2; exit 1; }
mkdir -p "$CACHE/debs" "$CACHE/root"

for c in qemu-system-x86_64 cpio gzip; do
    command -v $c >/dev/null || die "$c missing (make deps)"
done
[ -x /bin/busybox ] || die "/bin/busybox missing (busybox-static)"
# The guest has no libc of its own: the static musl build.
GUESTBIN=${VMMIG_GUEST_BIN:-$TOP/build/static/vmmig.stripped}
[ -x "$GUESTBIN" ] || die "$GUESTBIN missing (make static)"

if [ ! -s "$CACHE/kernel-version" ]; then
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
           sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -n1)
    if [ -z "$kpkg" ]; then
        apt-get update -qq || die "apt-get update failed"
        kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
               sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -n1)
    fi
    [ -n "$kpkg" ] || die "cannot find linux-image-6.1.0-NN-amd64"
    kver=${kpkg#linux-image-}
    # shellcheck disable=SC2012
    deb=$(ls "$CACHE/debs/${kpkg}_"*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
        say "downloading $kpkg"
        (cd "$CACHE/debs" && apt-get download -qq -o APT::Sandbox::User=root "$kpkg") ||
            die "apt-get download $kpkg failed"
        # shellcheck disable=SC2012
        deb=$(ls "$CACHE/debs/${kpkg}_"*.deb | head -n1)
    fi
    say "unpacking $(basename "$deb")"
    dpkg -x "$deb" "$CACHE/root"
    cp "$CACHE/root/boot/vmlinuz-$kver" "$CACHE/bzImage"
    echo "$kver" > "$CACHE/kernel-version"
fi
kver=$(cat "$CACHE/kernel-version")
MODDIR=$CACHE/root/lib/modules/$kver/kernel/drivers

# The initrd, rebuilt when one of its inputs changes.
sum=$( { cat "$HERE/guest-init" "$TOP/tests/xen/image/memcheck.c" "$TOP/tests/xen/image/diskcheck.c"
         echo "$kver";
         md5sum /bin/busybox; md5sum < "$GUESTBIN"; } | sha256sum | cut -c1-16)
if [ -s "$CACHE/initrd.gz" ] && [ "$(cat "$CACHE/initrd.sum" 2>/dev/null)" = "$sum" ]; then
    say "ok: kernel $kver, initrd up to date"
    exit 0
fi
G=$(mktemp -d)
trap 'rm -rf "$G"' EXIT
mkdir -p "$G"/bin "$G"/lib/modules "$G"/proc "$G"/sys "$G"/dev "$G"/run "$G"/tmp
cp /bin/busybox "$G/bin/busybox"
ln -s busybox "$G/bin/sh"
# virtio_net needs net_failover and failover (net/core, outside drivers/)
for m in virtio/virtio_ring virtio/virtio virtio/virtio_pci_legacy_dev \
         virtio/virtio_pci_modern_dev virtio/virtio_pci char/virtio_console block/virtio_blk \
         ../net/core/failover net/net_failover net/virtio_net; do
    f=$MODDIR/$m.ko
    [ -f "$f" ] || f=$f.xz
    [ -f "$f" ] || die "module $m missing in $MODDIR"
    case "$f" in
    *.xz) xz -dc "$f" > "$G/lib/modules/$(basename "$m").ko" ;;
    *) cp "$f" "$G/lib/modules/" ;;
    esac
done
${CC:-cc} -O2 -Wall -Wextra -static -o "$G/bin/memcheck" "$TOP/tests/xen/image/memcheck.c" ||
    die "cannot build memcheck (static glibc: libc6-dev)"
${CC:-cc} -O2 -Wall -Wextra -static -o "$G/bin/diskcheck" "$TOP/tests/xen/image/diskcheck.c" ||
    die "cannot build diskcheck (static glibc: libc6-dev)"
install -m 755 "$HERE/guest-init" "$G/init"
install -m 755 "$GUESTBIN" "$G/bin/vmmig"
ln -s vmmig "$G/bin/guestctl"
(cd "$G" && find . | cpio -o -H newc --quiet | gzip -1) > "$CACHE/initrd.gz.tmp"
mv "$CACHE/initrd.gz.tmp" "$CACHE/initrd.gz"
echo "$sum" > "$CACHE/initrd.sum"
say "ok: kernel $kver, initrd built"
