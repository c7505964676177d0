#!/bin/bash
# vmmigfs basics: the top level, one directory per domain that follows
# domains as they come and go (no restart), real file sizes, the guest hold
# node, and a clean exit on unmount.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/xenenv.sh"
xenenv_init "$@"
xenenv_require_vmmig
xenenv_start

M=$XENENV_MNT
UA=$(uuid_for 5)
xs_add 5 vm-alpha "$UA" 262144 2 || bail_out "xsfake add failed"

vmmigfs_start "$M"
ok $? "vmmigfs mounts $M" || done_testing
wait_domain vm-alpha
ok $? "a domain that existed before the start gets a directory"

is "$(fs_ls "$M" | tr '\n' ' ')" "backend events host policy vm-alpha " \
    "top level: host backend policy events, one dir per domain, no dom0"
is "$(fs_ls "$M/vm-alpha" | tr '\n' ' ')" "lock migrate peer status " \
    "domain dir: lock migrate peer status"

host=$(fs_cat "$M/host")
if [ "$host" = "$(uname -n)" ] || [ "$host" = "$(hostname -f 2>/dev/null)" ]; then
    pass "host is this host's name ($host)"
else
    is "$host" "$(uname -n)" "host is this host's name"
fi
is "$(fs_cat "$M/backend")" "xen" "backend is xen"
like "$(fs_cat "$M/policy")" '^guest_max_hold *= *3600$' "policy shows guest_max_hold"

# Real sizes: what stat says is what cat gives.
for f in host backend policy events vm-alpha/lock vm-alpha/migrate vm-alpha/status; do
    size=$(timeout 5 stat -c %s "$M/$f")
    len=$(fs_cat "$M/$f" | wc -c)
    if [ -n "$size" ] && [ "$size" -gt 0 ] && [ "$size" -eq "$len" ]; then
        pass "st_size of $f is its length ($size)"
    else
        fail "st_size of $f is its length"
        diag "  stat: '$size' bytes, cat: $len bytes"
    fi
done

is "$(fs_cat "$M/vm-alpha/lock")" "0" "cat lock: 0"
is "$(fs_cat "$M/vm-alpha/migrate")" "idle" "cat migrate: idle"
st=$(fs_cat "$M/vm-alpha/status")
is "$(status_field "$st" name)" "vm-alpha" "status name"
is "$(status_field "$st" domid)" "5" "status domid"
is "$(status_field "$st" uuid)" "$UA" "status uuid"
is "$(status_field "$st" memory_kib)" "262144" "status memory_kib"
is "$(status_field "$st" vcpus)" "2" "status vcpus"
like "$(status_field "$st" locked)" '^(0|no|false)$' "status locked: no"
like "$(status_field "$st" state)" 'running' "status state: running"
unlike "$st" '^hold:' "status: no hold lines"

# The guest hold node vmmigfs creates: value 0, owned by the domain itself.
is "$(xenstore-read /local/domain/5/control/migration-lock 2>&1)" "0" \
    "guest node /local/domain/5/control/migration-lock created with 0"
like "$(xenstore-ls -p /local/domain/5/control)" '^migration-lock = "0"[ .]*\(n5\)$' \
    "guest node owned by domain 5 (perms n5)"

# Domains come and go without a restart.
UB=$(uuid_for 6)
n=$(events_lines)
run_ok "xsfake add 6 vm-beta" xs_add 6 vm-beta "$UB" 131072 1
wait_domain vm-beta
ok $? "a new domain appears" 
is "$(status_field "$(fs_cat "$M/vm-beta/status")" domid)" "6" "its status has domid 6"
wait_xs_is 3 /local/domain/6/control/migration-lock 0
ok $? "its guest node is created"
events_new_like "$n" ' vm-beta '
ok $? "events mention the new domain"

n=$(events_lines)
run_ok "xsfake del 6" xs_del 6
wait_no_domain vm-beta
ok $? "a deleted domain disappears"
run_fails "its directory is gone" test -e "$M/vm-beta"
events_new_like "$n" ' vm-beta '
ok $? "events mention the removal"
is "$(fs_ls "$M" | tr '\n' ' ')" "backend events host policy vm-alpha " "the other domain stays"

vmmigfs_stop
is "$VMMIGFS_STATUS" 0 "vmmigfs exits 0 after fusermount3 -u"
run_fails "unmounted" is_mounted "$M"

done_testing
