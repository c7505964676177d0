#!/bin/bash
# prove entry for the two-host emulated-Xen system test: two QEMU machines,
# each Xen 4.17 + a Debian dom0, joined by a QEMU socket network on
# loopback; tests/xen2/scenarios/*.sh run in hostA's dom0 and drive hostB
# through host_run. Everything happens in tests/xen2/run.sh; this only picks
# the defaults. About 2-3 minutes per run; the first run also downloads
# ~100 MB of Debian packages into .cache/xen/ (shared with tests/xen).
set -eu
export VMMIG_BIN=${VMMIG_BIN:-build/bin/vmmig}
export KMOD=${KMOD:-guestctl/kmod/migration_lock.ko}
export SCENARIOS=tests/xen2/scenarios
exec "$(dirname "$0")/run.sh"
