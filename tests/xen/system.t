#!/bin/bash
# prove entry for the emulated-Xen system test: Xen 4.17 + a Debian dom0 + a
# PVH guest under QEMU TCG, running tests/xen/scenarios/*.sh inside dom0.
# Everything happens in tests/xen/run.sh; this only picks the defaults.
# Relative paths: resolved from the current directory if they exist there,
# else from the top of the tree. About 1-2 minutes per run; the first run
# also downloads ~100 MB of Debian packages into .cache/xen/.
set -eu
export VMMIG_BIN=${VMMIG_BIN:-build/bin/vmmig}
export KMOD=${KMOD:-guestctl/kmod/migration_lock.ko}
export SCENARIOS=tests/xen/scenarios
exec "$(dirname "$0")/run.sh"
