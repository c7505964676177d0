# Issue 7 on the patched Xen 4.17 (hyp-patches/): the migration lock is a
# flag in the hypervisor.  The guest takes it by hypercall (migration_lock.ko
# -> SCHEDOP_migration_lock); Xen itself refuses log-dirty mode and suspend
# with ENOLCK; plain `xl migrate` and `xl save` refuse with a message; after
# the unlock the guest migrates; past its time slot the toolstack takes the
# guest's hold back; `xl migration-lock` and migration="no" for admins.
xl domid tiny >/dev/null 2>&1 || guest_create tiny

like "$(xl dmesg 2>&1 | grep -m1 'Xen version')" "Xen version 4\.17" "the patched Xen 4.17 runs"
out=$(xl migration-lock tiny 2>&1); rc=$?
is "$rc" 0 "xl migration-lock tiny (query) works"
like "$out" "locked: +no" "tiny starts unlocked"
is "$(guest_run tiny 'cat /sys/module/migration_lock/parameters/backend')" hypervisor \
    "the guest module found the hypervisor's lock (no xenstore fallback)"
id=$(guest_domid tiny)

# --- the guest locks itself by hypercall ---------------------------------------
is "$(guest_run tiny 'echo 1 > /sys/hypervisor/migration_lock && cat /sys/hypervisor/migration_lock')" 1 \
    "guest: echo 1 > /sys/hypervisor/migration_lock"
out=$(xl migration-lock tiny 2>&1)
like "$out" "locked: +yes" "dom0 reads the flag: locked"
like "$out" "holders: guest" "dom0 reads the holder: guest"
like "$out" "guest: +[0-9]+\.[0-9]+ s" "dom0 reads since when"
diag "$(echo "$out" | tr '\n' ' ')"

# Xen itself, asked directly (no xl/libxl check in between).
out=$(miglock-probe logdirty "$id" 2>&1); rc=$?
like "$out" "refused errno=37" "Xen refuses log-dirty mode for the locked domain with ENOLCK (37)"
is "$rc" 0 "  (that is XEN_EMIGRATION_LOCKED)"
out=$(miglock-probe suspend "$id" 2>&1); rc=$?
like "$out" "refused errno=37" "Xen refuses to suspend the locked domain with ENOLCK"
like "$(xl list tiny 2>&1 | tail -n 1)" "tiny +$id .* (r|-b)" "the domain runs on"

# Plain xl migrate, as tests/xen/scenarios do it.
out=$(xl migrate -s '' tiny 'xl migrate-receive' 2>&1); rc=$?
isnt() { if [ "$1" != "$2" ]; then tap_ok "$3"; else tap_not_ok "$3"; diag "got '$1'"; fi; }
isnt "$rc" 0 "plain xl migrate of the locked domain fails"
like "$out" "locked against migration \(held by guest" "xl migrate says why: locked, held by the guest"
like "$out" "ERROR_MIGRATION_LOCKED" "xl migrate names the distinct error"
diag "$(echo "$out" | head -n 3 | tr '\n' ' ')"
is "$(guest_domid tiny)" "$id" "the domain did not move"
check "no incoming copy was left behind" sh -c '! xl domid tiny--incoming >/dev/null 2>&1'
out=$(xl save tiny /tmp/tiny.save 2>&1); rc=$?
isnt "$rc" 0 "xl save of the locked domain fails"
like "$out" "locked against migration" "xl save says why"
check "no save file" test ! -s /tmp/tiny.save

# vmmig reads the hypervisor flag too (a static hold).
M=/run/vmmig
mkdir -p $M
if vmmigfs $M; then
    wait_for "[ -d $M/tiny ]" 10
    is "$(cat $M/tiny/lock 2>&1)" 1 "vmmigfs: tiny is locked"
    like "$(cat $M/tiny/status 2>&1)" "hypervisor migration lock held by guest" \
        "vmmigfs status: the hypervisor's flag, held by the guest"
    fusermount3 -u $M 2>/dev/null || umount $M
else
    tap_not_ok "vmmigfs mounts"
fi

# --- unlock, then migration succeeds -------------------------------------------
is "$(guest_run tiny 'echo 0 > /sys/hypervisor/migration_lock && cat /sys/hypervisor/migration_lock')" 0 \
    "guest: echo 0 > /sys/hypervisor/migration_lock"
like "$(xl migration-lock tiny 2>&1)" "locked: +no" "dom0: unlocked"
out=$(xl migrate -s '' tiny 'xl migrate-receive' 2>&1); rc=$?
is "$rc" 0 "xl migrate succeeds after the unlock"
[ "$rc" = 0 ] || diag "$(echo "$out" | tail -n 5 | tr '\n' ' ')"
newid=$(guest_domid tiny)
isnt "$newid" "$id" "tiny has a new domid ($id -> $newid)"
is "$(guest_run tiny 'echo pong')" pong "the guest answers after the migration"
is "$(guest_run tiny 'cat /sys/hypervisor/migration_lock')" 0 "and its module works on the new domain"

# --- the time slot ----------------------------------------------------------------
check "xl migration-lock -t 4 tiny (a 4 s slot)" xl migration-lock -t 4 tiny
like "$(xl migration-lock tiny)" "slot: +4 s" "the slot is 4 s"
is "$(guest_run tiny 'echo 1 > /sys/hypervisor/migration_lock && cat /sys/hypervisor/migration_lock')" 1 \
    "guest locks itself again"
out=$(xl migration-lock tiny off 2>&1); rc=$?
isnt "$rc" 0 "within the slot, the toolstack cannot take the guest's hold back"
like "$out" "within its time slot" "and says why"
like "$(xl migration-lock tiny)" "holders: guest" "still held by the guest"
sleep 5
out=$(xl migration-lock tiny off 2>&1); rc=$?
is "$rc" 0 "after the slot, xl migration-lock tiny off clears the guest's hold"
like "$(xl migration-lock tiny)" "locked: +no" "unlocked"
is "$(guest_run tiny 'cat /sys/hypervisor/migration_lock')" 0 "the guest sees its hold was taken back"
out=$(miglock-probe logdirty "$(guest_domid tiny)" 2>&1)
is "$out" accepted "Xen accepts log-dirty mode again"

# --- the administrator's hold -----------------------------------------------------
check "xl migration-lock tiny on" xl migration-lock tiny on
like "$(xl migration-lock tiny)" "holders: admin" "held by admin"
out=$(xl migrate -s '' tiny 'xl migrate-receive' 2>&1); rc=$?
isnt "$rc" 0 "xl migrate refuses the admin-locked domain"
like "$out" "held by admin" "and names the holder"
check "xl migration-lock tiny off" xl migration-lock tiny off
like "$(xl migration-lock tiny)" "locked: +no" "admin hold released"

# --- vmmig's admin hold is the hypervisor's too ------------------------------------
if vmmigfs $M; then
    wait_for "[ -d $M/tiny ]" 10
    check "vmmigfs: echo 1 > tiny/lock (admin hold)" sh -c "echo '1 reason=maintenance' > $M/tiny/lock"
    like "$(xl migration-lock tiny)" "holders: admin" "the hypervisor holds tiny for the admin"
    out=$(xl migrate -s '' tiny 'xl migrate-receive' 2>&1); rc=$?
    isnt "$rc" 0 "plain xl migrate refuses it (vmmig's hold, enforced by Xen)"
    if grep -q "hypervisor migration lock" $M/tiny/status; then
        tap_not_ok "vmmigfs does not count its own mirrored hold twice"
    else
        tap_ok "vmmigfs does not count its own mirrored hold twice"
    fi
    check "vmmigfs: echo 0 > tiny/lock" sh -c "echo 0 > $M/tiny/lock"
    like "$(xl migration-lock tiny)" "locked: +no" "released in the hypervisor too"
    fusermount3 -u $M 2>/dev/null || umount $M
else
    tap_not_ok "vmmigfs mounts (admin hold)"
fi

# --- static: migration = "no" in xl.cfg -------------------------------------------
sed -e 's/^name = .*/name = "tinynm"/' /etc/xen/tiny.cfg > /etc/xen/tinynm.cfg
echo 'migration = "no"' >> /etc/xen/tinynm.cfg
if guest_create tinynm; then
    like "$(xl migration-lock tinynm)" "holders: config" 'migration="no": locked at creation (config hold)'
    out=$(xl migrate -s '' tinynm 'xl migrate-receive' 2>&1); rc=$?
    isnt "$rc" 0 'xl migrate refuses a migration="no" domain'
    like "$out" "held by config" "and says it is the configuration"
    xl destroy tinynm
else
    tap_not_ok "tinynm (migration=\"no\") boots"
fi
