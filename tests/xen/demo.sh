#!/bin/bash
# make demo: boot the emulated Xen host once and run the narrated demo
# scenario (tests/xen/demo/), printing the session rather than TAP.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
export VMMIG_BIN=${VMMIG_BIN:-build/bin/vmmig}
export KMOD=${KMOD:-guestctl/kmod/migration_lock.ko}
export SCENARIOS=tests/xen/demo
echo "Booting Xen 4.17 + a Debian dom0 under QEMU (software emulation: about a minute)..." >&2
set +e
"$here/run.sh" | sed -u -e 's/^# \{0,1\}//' -e '/^1\.\./d' -e 's/^ok [0-9]* - /  [checked] /' \
    -e 's/^not ok [0-9]* - /  [FAILED] /'
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] && echo "Demo finished: every step checked." ||
    echo "Demo FAILED (exit $rc); serial log: .cache/xen/logs/latest.log"
exit "$rc"
