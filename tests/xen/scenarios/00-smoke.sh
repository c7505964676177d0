# Smoke test of the harness itself: a guest boots, answers commands through
# the xenstore command channel, live-migrates inside this dom0 and still
# answers; vmmig runs in dom0; FUSE is usable in dom0. Also records facts the
# vmmig implementation relies on (libxl's userdata files).

if guest_create tiny; then
    tap_ok "guest_create tiny (agent answers)"
else
    tap_not_ok "guest_create tiny (agent answers)"
    exit 0   # nothing below can work; the failure is already counted
fi
domid=$(guest_domid tiny)
diag "tiny is domid $domid"

out=$(guest_run tiny 'cat /proc/version'); rc=$?
is "$rc" 0 "guest_run: cat /proc/version succeeds in the guest"
like "$out" '^Linux version 6\.' "guest_run returns the command's output"
out=$(guest_run tiny 'exit 3'); rc=$?
is "$rc" 3 "guest_run returns the command's exit status"

out=$(guest_run tiny 'ls /sys/hypervisor; cat /sys/hypervisor/type'); rc=$?
is "$rc" 0 "ls /sys/hypervisor in the guest"
like "$out" '^xen$' "the guest sees a Xen hypervisor"
diag "guest /sys/hypervisor: $(echo "$out" | tr '\n' ' ')"

kmod=$(xenstore-read "/local/domain/$domid/data/vmmig-kmod" 2>/dev/null)
diag "migration_lock.ko in the guest: ${kmod:-unknown}"
out=$(guest_run tiny 'guestctl --help; echo rc=$?')
diag "guest: guestctl --help ->" "$out"

# Facts for vmmig's static holds: which userdata files libxl keeps per domain
# and whether its stored config names disable_migrate.
files=$(ls /var/lib/xen/ 2>/dev/null | grep '^userdata-d\.' | tr '\n' ' ')
diag "after xl create, /var/lib/xen/userdata-d.*: ${files:-none}"
json=$(ls /var/lib/xen/userdata-d.$domid.*.libxl-json 2>/dev/null | head -n1)
if [ -n "$json" ]; then
    if grep -q disable_migrate "$json"; then
        diag "$(basename "$json") contains disable_migrate: $(grep -o '"disable_migrate"[^,}]*' "$json" | head -n1)"
    else
        diag "$(basename "$json") does NOT contain disable_migrate (tiny.cfg has no nomigrate)"
    fi
fi
like "$files" "userdata-d\.$domid\.[0-9a-f-]+\.libxl-json" "libxl keeps userdata-d.<domid>.<uuid>.libxl-json"

# Live migration inside this dom0; the agent must survive it.
start=$(date +%s)
out=$(xl migrate -s '' tiny 'xl migrate-receive' 2>&1); rc=$?
is "$rc" 0 "xl migrate -s '' tiny 'xl migrate-receive' succeeds"
[ "$rc" = 0 ] || diag "$out"
diag "xl migrate took $(( $(date +%s) - start )) s"
newid=$(guest_domid tiny)
like "$newid" '^[0-9]+$' "tiny exists after the migration"
if [ "$newid" != "$domid" ]; then
    tap_ok "tiny has a new domid after migration ($domid -> $newid)"
else
    tap_not_ok "tiny has a new domid after migration ($domid -> $newid)"
fi
out=$(guest_run tiny 'cat /proc/uptime'); rc=$?
is "$rc" 0 "the guest agent answers after migration"
files=$(ls /var/lib/xen/ 2>/dev/null | grep '^userdata-d\.' | tr '\n' ' ')
diag "after migration, /var/lib/xen/userdata-d.*: ${files:-none}"

# vmmig in dom0.
check "vmmig --list runs in dom0" vmmig --list
check "vmmigfs link runs in dom0" vmmigfs --help

# FUSE in dom0 (vmmigfs needs it): module loaded at boot, /dev/fuse present.
if grep -qw fuse /proc/filesystems; then
    tap_ok "fuse filesystem registered in dom0"
else
    tap_not_ok "fuse filesystem registered in dom0"
    diag "$(lsmod 2>&1)"
fi
check "/dev/fuse exists in dom0" test -c /dev/fuse
diag "dom0: $(ls -l /dev/fuse 2>&1); fusermount3: $(command -v fusermount3 || echo absent)"

check "xl destroy tiny" xl destroy tiny

# Fact for vmmig's static holds: what libxl stores for a guest created with
# xl's nomigrate=1, and whether xl migrate itself refuses such a guest (only
# recorded as diag lines: this is Xen's behaviour, not the harness').
sed -e 's/^name = .*/name = "tinynm"/' /etc/xen/tiny.cfg > /etc/xen/tinynm.cfg
echo 'nomigrate = 1' >> /etc/xen/tinynm.cfg
if guest_create tinynm; then
    nmid=$(guest_domid tinynm)
    json=$(ls /var/lib/xen/userdata-d.$nmid.*.libxl-json 2>/dev/null | head -n1)
    diag "nomigrate=1: $(basename "$json") has: $(grep -o '"disable_migrate"[^,}]*' "$json" 2>/dev/null || echo 'no disable_migrate')"
    out=$(xl migrate -s '' tinynm 'xl migrate-receive' 2>&1); rc=$?
    diag "nomigrate=1: xl migrate exit status $rc; last output: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
    xl destroy tinynm >/dev/null 2>&1
    tap_ok "a nomigrate=1 guest can be created (facts above)"
else
    tap_not_ok "a nomigrate=1 guest can be created"
fi
