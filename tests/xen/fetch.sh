#!/bin/bash
# Fetch everything the emulated-Xen system test needs, without installing it:
# Debian's Xen 4.17 hypervisor + toolstack (+ the shared libraries it needs),
# xenstore-utils, the current Debian 12 kernel image and busybox-static.
#
# Packages are fetched with `apt-get download` and unpacked with `dpkg -x`
# (neither takes the dpkg lock, so this is safe while other apt users run).
# Everything lands under .cache/xen/ (git-ignored):
#   debs/            the .deb files
#   root/            all packages unpacked into one tree
#   kernel-version   e.g. "6.1.0-56-amd64" (discovered, never hard-coded)
#   stamps/          one stamp per unpacked .deb, so reruns skip finished work
#
# Usage: tests/xen/fetch.sh          (idempotent; prints what it did)
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
CACHE=${XEN_CACHE:-$TOP/.cache/xen}
DEBS=$CACHE/debs
ROOT=$CACHE/root
STAMPS=$CACHE/stamps

say() { echo "fetch: $*"; }
die() { echo "fetch: error: $*" >&2; exit 1; }

mkdir -p "$DEBS" "$ROOT" "$STAMPS"

# --- host tools the harness runs on the host -------------------------------
need_pkgs=""
command -v qemu-system-x86_64 >/dev/null || need_pkgs="$need_pkgs qemu-system-x86"
command -v cpio >/dev/null || need_pkgs="$need_pkgs cpio"
command -v gzip >/dev/null || need_pkgs="$need_pkgs gzip"
command -v timeout >/dev/null || need_pkgs="$need_pkgs coreutils"
command -v prove >/dev/null || need_pkgs="$need_pkgs perl"
apt_updated=0
apt_update() {
    [ "$apt_updated" = 1 ] && return 0
    say "running apt-get update"
    apt-get update -qq || die "apt-get update failed"
    apt_updated=1
}
if [ -n "$need_pkgs" ]; then
    say "installing host packages:$need_pkgs"
    apt_update
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_pkgs >/dev/null \
        || die "apt-get install$need_pkgs failed"
fi

# --- resolve the package set (cached) ---------------------------------------
# Resolving takes a dozen apt-cache runs; remember the answer in plan.txt and
# reuse it while apt's package lists are unchanged, so a rerun is instant.
lists_id=$( (ls -l --time-style=+%s /var/lib/apt/lists/ 2>/dev/null; echo v1) | md5sum | cut -d' ' -f1)
PLAN=$CACHE/plan.txt
if [ -s "$PLAN" ] && [ "$(sed -n 's/^lists //p' "$PLAN")" = "$lists_id" ]; then
    kver=$(sed -n 's/^kernel //p' "$PLAN")
else
    # Package lists may be missing on a fresh machine: apt-cache finds nothing then.
    if ! apt-cache show xen-hypervisor-4.17-amd64 >/dev/null 2>&1 ||
       ! apt-cache depends linux-image-amd64 2>/dev/null | grep -q 'Depends: linux-image-'; then
        apt_update
        lists_id=$( (ls -l --time-style=+%s /var/lib/apt/lists/ 2>/dev/null; echo v1) | md5sum | cut -d' ' -f1)
    fi
    # The kernel: the one Debian's linux-image-amd64 meta package points to.
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
           sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -n1)
    [ -n "$kpkg" ] || die "cannot find linux-image-6.1.0-NN-amd64 in 'apt-cache depends linux-image-amd64'"
    kver=${kpkg#linux-image-}

    # The toolstack's shared libraries: walk the Depends of xen-utils-4.17 and
    # xenstore-utils breadth-first (one apt-cache run per level), following
    # only library packages. libc6 and libgcc-s1 come from the host (same
    # Debian release), as does the vmmig binary's own closure.
    seen=" xen-utils-4.17 xenstore-utils "
    level="xen-utils-4.17 xenstore-utils"
    while [ -n "$level" ]; do
        next=""
        # shellcheck disable=SC2086
        for d in $(apt-cache depends --no-recommends --no-suggests --no-conflicts \
                     --no-breaks --no-replaces --no-enhances $level 2>/dev/null |
                   sed -n 's/^ *Depends: \([^<][^ ]*\)$/\1/p' | sort -u); do
            case "$d" in libc6|libgcc-s1) continue ;; lib*|zlib1g) ;; *) continue ;; esac
            case "$seen" in *" $d "*) continue ;; esac
            seen="$seen$d "; next="$next $d"
        done
        level=$next
    done

    pkgs="xen-hypervisor-4.17-amd64 busybox-static $kpkg $seen"
    # One apt-cache policy run for all candidate versions.
    # shellcheck disable=SC2086
    apt-cache policy $pkgs | awk -v lists="$lists_id" -v kver="$kver" '
        BEGIN { print "lists " lists; print "kernel " kver }
        /^[^ ].*:$/ { name = substr($0, 1, length($0) - 1) }
        /^ *Candidate:/ { print "pkg " name " " $2 }' > "$PLAN.tmp"
    mv "$PLAN.tmp" "$PLAN"
fi
say "kernel package: linux-image-$kver (ABI $kver)"

# --- download + unpack, one stamp per package version ----------------------
while read -r tag p ver; do
    [ "$tag" = pkg ] || continue
    [ "$ver" != "(none)" ] || die "no candidate version for $p (apt-get update?)"
    stamp="$STAMPS/$p=${ver//:/%}"
    [ -e "$stamp" ] && continue
    # apt-get download names files NAME_VERSION_ARCH.deb with ':' encoded as %3a
    pattern="$DEBS/${p}_${ver//:/%3a}_*.deb"
    # shellcheck disable=SC2086,SC2012 # the pattern is meant to glob
    deb=$(ls $pattern 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
        say "downloading $p=$ver"
        (cd "$DEBS" && apt-get download -qq -o APT::Sandbox::User=root "$p=$ver") \
            || die "apt-get download $p=$ver failed"
        # shellcheck disable=SC2086,SC2012
        deb=$(ls $pattern | head -n1)
    fi
    say "unpacking $(basename "$deb")"
    dpkg -x "$deb" "$ROOT" || die "dpkg -x $deb failed"
    touch "$stamp"
done < "$PLAN"

# --- sanity checks on what the image builder relies on ---------------------
[ -f "$ROOT/boot/xen-4.17-amd64.gz" ] || die "hypervisor missing: $ROOT/boot/xen-4.17-amd64.gz"
[ -f "$ROOT/boot/vmlinuz-$kver" ] || die "kernel missing: $ROOT/boot/vmlinuz-$kver"
[ -d "$ROOT/lib/modules/$kver" ] || die "modules missing: $ROOT/lib/modules/$kver"
[ -x "$ROOT/usr/lib/xen-4.17/bin/xl" ] || die "xl missing"
[ -x "$ROOT/bin/busybox" ] || die "busybox missing"

# QEMU's multiboot loader wants a plain ELF, not the gzip Debian ships.
if [ ! -s "$CACHE/xen.elf" ] || [ "$ROOT/boot/xen-4.17-amd64.gz" -nt "$CACHE/xen.elf" ]; then
    zcat "$ROOT/boot/xen-4.17-amd64.gz" > "$CACHE/xen.elf.tmp"
    mv "$CACHE/xen.elf.tmp" "$CACHE/xen.elf"
fi
echo "$kver" > "$CACHE/kernel-version"
say "ok: kernel $kver, cache $CACHE"
