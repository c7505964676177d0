#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# kheaders.sh ABI CACHE_DIR
#
# Make Debian 12's kernel headers for ABI (e.g. 6.1.0-56-amd64) usable from
# CACHE_DIR/ABI without installing them system-wide, and print the kernel
# build directory to stdout.  Used by the Makefile next to this script.
#
#  - `apt-get download` + `dpkg-deb -x` linux-headers-ABI and its -common
#    package (no dpkg lock, nothing registered with dpkg).
#  - linux-kbuild-6.1 (the prebuilt fixdep, modpost, objtool...) must be the
#    version the headers were built with: the installed one is used when its
#    version is exactly that, otherwise the matching one is fetched too.
#  - The packages refer to each other by absolute paths (/usr/src/...,
#    /lib/modules/ABI/build); those are rewritten to resolve inside CACHE_DIR.
#  - Missing build tools (the gcc the headers name, libelf1 and libssl3 for
#    the kbuild binaries, perl for W=1's kernel-doc, kmod for modinfo) are
#    installed with apt-get when running as root.
#
# A finished tree is marked with CACHE_DIR/ABI/.kheaders-ok; later runs only
# re-check that the installed kbuild it relies on (if any) has not changed.

set -eu

die() {
	echo "kheaders: $*" >&2
	exit 1
}

say() {
	echo "kheaders: $*" >&2
}

[ $# -eq 2 ] || die "usage: $0 ABI CACHE_DIR"
abi=$1
cache=$2

case $abi in
*-amd64) ;;
*) die "unsupported ABI '$abi' (expected 6.1.0-NN-amd64)" ;;
esac

root=$cache/$abi
kdir=$root/usr/src/linux-headers-$abi
stamp=$root/.kheaders-ok
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

is_root() {
	[ "$(id -u)" = 0 ]
}

# "ii" packages only; prints the version or nothing.
installed_version() {
	dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null |
		sed -n 's/^ii *//p'
}

# apt-get download PKG[=VERSION] into the current directory; on failure
# (stale or missing package lists) update the lists once and retry.
apt_download() {
	pkg=$1
	set -- -q
	if is_root; then
		# The _apt sandbox user could not write our directory.
		set -- "$@" -o APT::Sandbox::User=root
	fi
	if apt-get download "$@" "$pkg" >&2; then
		return 0
	fi
	is_root || die "apt-get download $pkg failed (as root it would run apt-get update and retry)"
	say "apt-get download $pkg failed; running apt-get update and retrying"
	apt-get update -qq >&2 || true
	apt-get download "$@" "$pkg" >&2
}

install_missing() {
	missing=
	command -v "gcc-$gcc_ver" >/dev/null 2>&1 || missing="$missing gcc-$gcc_ver"
	# objtool and modpost from linux-kbuild link against these.
	[ -n "$(installed_version libelf1)" ] || missing="$missing libelf1"
	[ -n "$(installed_version libssl3)" ] || missing="$missing libssl3"
	# W=1 runs scripts/kernel-doc, which needs more than perl-base.
	perl -MPod::Usage -e 1 >/dev/null 2>&1 || missing="$missing perl"
	# modinfo, to check what was built.
	command -v modinfo >/dev/null 2>&1 || [ -x /sbin/modinfo ] ||
		missing="$missing kmod"
	[ -n "$missing" ] || return 0

	is_root || die "missing build dependencies; run as root: apt-get install$missing"
	say "installing build dependencies:$missing"
	# shellcheck disable=SC2086
	if ! apt-get install -y -q --no-install-recommends $missing >&2; then
		apt-get update -qq >&2 || true
		# shellcheck disable=SC2086
		apt-get install -y -q --no-install-recommends $missing >&2 ||
			die "apt-get install$missing failed"
	fi
}

# Turn every absolute symlink under $1 whose target exists inside $1 into a
# relative one, so the tree works wherever the checkout lives.
relink_absolute() {
	find "$1" -type l -lname '/*' | while IFS= read -r link; do
		target=$(readlink "$link")
		[ -e "$1$target" ] || continue
		rel=$(realpath -m --relative-to="$(dirname "$link")" "$1$target")
		ln -sfn "$rel" "$link"
	done
}

# Cheap re-check of a finished tree.
tree_ok() {
	[ -f "$stamp" ] && [ -f "$kdir/Makefile" ] || return 1
	# shellcheck disable=SC1090
	. "$stamp"
	case $kbuild_from in
	system)
		[ "$(installed_version "$kbuild_pkg")" = "$hdr_version" ] || {
			say "installed $kbuild_pkg changed; refetching"
			return 1
		}
		;;
	esac
	return 0
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
# Serialise concurrent builds sharing the cache.
flock -w 900 9 || die "timed out waiting for $cache/.lock"

if tree_ok; then
	install_missing
	echo "$kdir"
	exit 0
fi

for tool in apt-get dpkg-deb dpkg-query realpath; do
	command -v $tool >/dev/null 2>&1 || die "$tool not found (is this Debian 12?)"
done

say "fetching Debian kernel headers for $abi into $root"
tmp=$(mktemp -d "$cache/.tmp.$abi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/debs" "$tmp/root"
cd "$tmp/debs"

apt_download "linux-headers-$abi"
hdr_deb=$(ls linux-headers-"$abi"_*.deb)
hdr_version=$(dpkg-deb -f "$hdr_deb" Version)
deps=$(dpkg-deb -f "$hdr_deb" Depends | tr ',' '\n')

# e.g. "linux-headers-6.1.0-56-common (= 6.1.192-2)"
common=$(echo "$deps" |
	 sed -n 's/^ *\(linux-headers-[^ ]*-common\) (= \([^)]*\)).*/\1=\2/p')
# e.g. "linux-kbuild-6.1 (>= 6.1.192-2)"
kbuild_pkg=$(echo "$deps" | sed -n 's/^ *\(linux-kbuild-[^ ]*\) .*/\1/p')
kbuild_min=$(echo "$deps" |
	     sed -n 's/^ *linux-kbuild-[^ ]* (>= \([^)]*\)).*/\1/p')
# e.g. "linux-compiler-gcc-12-x86": the compiler the headers were built with.
gcc_ver=$(echo "$deps" | sed -n 's/^ *linux-compiler-gcc-\([0-9]*\)-.*/\1/p')
if [ -z "$common" ] || [ -z "$kbuild_pkg" ] || [ -z "$gcc_ver" ]; then
	die "unexpected Depends in $hdr_deb: $(echo "$deps" | tr '\n' ',')"
fi

apt_download "$common"

kbuild_inst=$(installed_version "$kbuild_pkg")
if [ "$kbuild_inst" = "$hdr_version" ]; then
	kbuild_from=system
	kbuild_version=$kbuild_inst
	say "using installed $kbuild_pkg $kbuild_inst"
else
	say "installed $kbuild_pkg is '${kbuild_inst:-none}', headers need $hdr_version: fetching it"
	if ! apt_download "$kbuild_pkg=$hdr_version"; then
		# The archive may only carry a newer one; Depends allows that.
		apt_download "$kbuild_pkg"
	fi
	kbuild_version=$(dpkg-deb -f "$kbuild_pkg"_*.deb Version)
	dpkg --compare-versions "$kbuild_version" ge "${kbuild_min:-0}" ||
		die "$kbuild_pkg $kbuild_version is older than the required $kbuild_min"
	kbuild_from=cache
fi

for deb in *.deb; do
	dpkg-deb -x "$deb" "$tmp/root"
done

troot=$tmp/root
tkdir=$troot/usr/src/linux-headers-$abi

# The -amd64 Makefile includes the -common one by absolute path; make it
# relative to the -amd64 Makefile itself (a make expression, not shell).
# shellcheck disable=SC2016
sed -i 's|^include /usr/src/\(linux-headers-[^/]*-common\)/Makefile$|include $(dir $(realpath $(lastword $(MAKEFILE_LIST))))../\1/Makefile|' \
	"$tkdir/Makefile"
! grep -q '/usr/src/' "$tkdir/Makefile" ||
	die "could not rewrite the include in $tkdir/Makefile"

# lib/modules/ABI/{build,source} -> /usr/src/...: make them relative.
relink_absolute "$troot"

# scripts/ and tools/ point at ../../lib/linux-kbuild-6.1, now inside the
# tree; with the installed kbuild, make that a link to the real one.
if [ $kbuild_from = system ]; then
	mkdir -p "$troot/usr/lib"
	ln -sfn "/usr/lib/$kbuild_pkg" "$troot/usr/lib/$kbuild_pkg"
fi

broken=$(find "$troot" -xtype l | head -n 5)
[ -z "$broken" ] || die "dangling symlinks after fix-up: $broken"
[ -x "$tkdir/scripts/basic/fixdep" ] || die "no fixdep in $tkdir/scripts"

cat >"$troot/.kheaders-ok" <<EOF
abi=$abi
hdr_version=$hdr_version
kbuild_pkg=$kbuild_pkg
kbuild_from=$kbuild_from
kbuild_version=$kbuild_version
gcc_ver=$gcc_ver
EOF

cd /
rm -rf "$root"
mv "$troot" "$root"
say "ready: headers $hdr_version, $kbuild_pkg $kbuild_version ($kbuild_from), gcc-$gcc_ver"

install_missing
echo "$kdir"
