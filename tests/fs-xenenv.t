#!/bin/bash
# The test infrastructure itself (no vmmig needed): Debian's xenstored under
# xenshim.so, fake domains with xsfake, xc_domain_getinfolist through the
# shim, @introduceDomain/@releaseDomain, and the liveness check.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/xenenv.sh"
xenenv_init "$@"
xenenv_start

XCINFO=$(dirname "$XSFAKE")/xcinfo
xcinfo() { LD_PRELOAD=$XENSHIM_SO "$XCINFO"; }

# Watch counters: one background xenstore-watch per special path.
xenstore-watch @introduceDomain >"$XENENV_DIR/w-intro" 2>&1 &
W1=$!
xenstore-watch @releaseDomain >"$XENENV_DIR/w-rel" 2>&1 &
W2=$!
xenenv_defer 'kill $W1 $W2 2>/dev/null; wait $W1 $W2 2>/dev/null' 
count() { grep -c "$2" "$XENENV_DIR/$1" 2>/dev/null; }
count_ge() { [ "$(count "$1" "$2")" -ge "$3" ]; }
wait_for 3 count_ge w-intro @introduceDomain 1
wait_for 3 count_ge w-rel @releaseDomain 1
intro0=$(count w-intro @introduceDomain)
rel0=$(count w-rel @releaseDomain)

run_ok "xenstored answers on $XENSTORED_PATH" xenstore-ls /
is "$(xcinfo)" "0 00000000-0000-0000-0000-000000000000 1048576 1 r----" \
    "xc_domain_getinfolist through the shim: only dom0"

U5=$(uuid_for 5)
run_ok "xsfake add 5 vm-five" xs_add 5 vm-five "$U5" 262144 2
is "$(xcinfo | sed -n 2p)" "5 $U5 262144 2 r----" "the new domain is reported with uuid, memory, vcpus"
is "$(xenstore-read /local/domain/5/name)" "vm-five" "/local/domain/5/name"
is "$(xenstore-read /local/domain/5/domid)" "5" "/local/domain/5/domid"
is "$(xenstore-read /local/domain/5/vm)" "/vm/$U5" "/local/domain/5/vm"
is "$(xenstore-read "/vm/$U5/uuid")" "$U5" "/vm/UUID/uuid"
is "$(xenstore-read "/vm/$U5/name")" "vm-five" "/vm/UUID/name"
perms=$(xenstore-ls -p /local/domain | sed -n 's/^5 = .*(\(.*\))$/\1/p')
is "$perms" "n0,r5" "/local/domain/5 owned by dom0, readable by the domain"
like "$(xenstore-ls -p /local/domain/5)" '^control = .*\(n0,r5\)' "control: dom0's, domain may read"
like "$(xenstore-ls -p /local/domain/5)" '^data = .*\(n5\)' "data: owned by the domain"
wait_for 3 count_ge w-intro @introduceDomain $((intro0 + 1))
ok $? "@introduceDomain fired"

run_fails "adding domid 5 again fails" xs_add 5 other "$(uuid_for 55)"
"$XSFAKE" add 6 bad-uuid not-a-uuid >/dev/null 2>&1
is "$?" 2 "bad UUID is a usage error (exit 2)"
"$XSFAKE" >/dev/null 2>&1
is "$?" 2 "no command is a usage error (exit 2)"

run_ok "xsfake state 5 paused" "$XSFAKE" state 5 paused
is "$(xcinfo | sed -n 2p | awk '{print $5}')" "--p--" "paused shows in the flags"
"$XSFAKE" state 5 running

run_ok "xsfake del 5" xs_del 5
is "$(xcinfo)" "0 00000000-0000-0000-0000-000000000000 1048576 1 r----" "domain 5 gone from getinfolist"
run_fails "/local/domain/5 removed" xenstore-read /local/domain/5/name
run_fails "/vm/UUID removed" xenstore-read "/vm/$U5/uuid"
wait_for 3 count_ge w-rel @releaseDomain $((rel0 + 1))
ok $? "@releaseDomain fired"
"$XSFAKE" del 5 >/dev/null 2>&1
is "$?" 1 "deleting an unknown domain fails (exit 1)"

# Liveness: a domain that vanishes from the hypervisor (the file) without
# any toolstack call is noticed by xenstored, which releases it.
run_ok "xsfake add 7 vm-seven" xs_add 7 vm-seven "$(uuid_for 7)"
xenstore-write /local/domain/7/data/x 1
rel1=$(count w-rel @releaseDomain)
sed -i '/^7 /d' "$XENSHIM_DOMAINS"
wait_for 3 count_ge w-rel @releaseDomain $((rel1 + 1))
ok $? "@releaseDomain fires when the domain disappears from \$XENSHIM_DOMAINS"
run_fails "nodes owned by the dead domain are removed by xenstored" \
    xenstore-read /local/domain/7/data/x
run_ok "xsfake del cleans up the rest" xs_del 7

kill -0 "$XENENV_XSD_PID" 2>/dev/null
ok $? "xenstored still running"

done_testing
