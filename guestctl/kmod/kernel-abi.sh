#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Print the Debian 12 kernel ABI name (e.g. 6.1.0-56-amd64) that
# migration_lock.ko is built for, so a test harness boots the same kernel
# (package linux-image-<ABI>).
#
#   kernel-abi.sh           ABI of the kernel linux-image-amd64 pulls in now,
#                           i.e. the one `make -C guestctl/kmod` builds for
#   kernel-abi.sh --built   ABI recorded in the vermagic of the built
#                           migration_lock.ko (fails if there is none)
#
# KERNEL_ABI in the environment overrides the apt lookup (both here and in
# the Makefile), to pin a build to a given ABI.
#
# The ABI is the metapackage's dependency, read with apt-cache; it is not
# hard-coded because Debian bumps it with kernel security updates.  On a
# fresh machine with no apt lists yet, root runs `apt-get update` once.

set -eu

here=$(cd "$(dirname "$0")" && pwd)

usage() {
	echo "usage: $0 [--built]" >&2
	exit 2
}

if [ $# -gt 1 ]; then
	usage
fi

if [ $# -eq 1 ]; then
	[ "$1" = --built ] || usage
	ko=$here/migration_lock.ko
	if [ ! -f "$ko" ]; then
		echo "kernel-abi.sh: $ko not built (make -C $here)" >&2
		exit 1
	fi
	# The .modinfo section holds "vermagic=<release> SMP preempt ...".
	abi=$(tr '\0' '\n' <"$ko" | sed -n 's/^vermagic=\([^ ]*\) .*/\1/p' |
	      head -n 1)
	if [ -z "$abi" ]; then
		echo "kernel-abi.sh: no vermagic in $ko" >&2
		exit 1
	fi
	echo "$abi"
	exit 0
fi

if [ -n "${KERNEL_ABI:-}" ]; then
	echo "$KERNEL_ABI"
	exit 0
fi

lookup() {
	LC_ALL=C apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: linux-image-\([0-9][0-9.]*-[0-9][0-9]*-amd64\)$/\1/p' |
		head -n 1
}

abi=$(lookup)
if [ -z "$abi" ] && [ "$(id -u)" = 0 ]; then
	# No (usable) package lists yet: fetch them once and retry.
	echo "kernel-abi.sh: no apt data for linux-image-amd64; running apt-get update" >&2
	apt-get update -qq >&2 || true
	abi=$(lookup)
fi
if [ -z "$abi" ]; then
	echo "kernel-abi.sh: cannot find the ABI of linux-image-amd64 (run 'apt-get update' as root, or set KERNEL_ABI)" >&2
	exit 1
fi
echo "$abi"
