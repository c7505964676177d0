#!/bin/bash
# The lock file: admin holds (with reason and ttl), guest holds from the
# xenstore node, and malformed writes (EINVAL, nothing changed, explained in
# events).
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/xenenv.sh"
xenenv_init "$@"
xenenv_require_vmmig
xenenv_start

M=$XENENV_MNT
D=$M/vm-alpha
NODE=/local/domain/5/control/migration-lock
xs_add 5 vm-alpha "$(uuid_for 5)" 262144 2 || bail_out "xsfake add failed"
vmmigfs_start "$M"
ok $? "vmmigfs mounts" || done_testing
wait_domain vm-alpha || bail_out "vm-alpha never appeared"

hold_line() { fs_cat "$D/status" | grep "^hold: $1"; }

# --- admin hold: plain 1 / 0 ---
fs_write "$D/lock" 1
ok $? "echo 1 > lock" || diag "$FS_ERR"
is "$(fs_cat "$D/lock")" 1 "lock reads 1"
like "$(status_field "$(fs_cat "$D/status")" locked)" '^(1|yes|true)$' "status: locked"
h=$(hold_line admin)
like "$h" '^hold: admin by=root\(uid 0\) ' "status: admin hold by root(uid 0)"
like "$h" ' expires=never( |$)' "no ttl: expires=never"
fs_write "$D/lock" 0
ok $? "echo 0 > lock" || diag "$FS_ERR"
is "$(fs_cat "$D/lock")" 0 "lock reads 0"
is "$(hold_line admin)" "" "admin hold gone from status"

# --- admin hold with reason and ttl ---
t0=$(date +%s)
fs_write "$D/lock" "1 reason=backup ttl=600"
ok $? 'echo "1 reason=backup ttl=600" > lock' || diag "$FS_ERR"
is "$(fs_cat "$D/lock")" 1 "lock reads 1"
h=$(hold_line admin)
like "$h" ' reason=backup$' "status: admin hold with reason=backup"
exp=$(printf '%s\n' "$h" | sed -n 's/.* expires=\([^ ]*\).*/\1/p')
exp_s=$(date -d "$exp" +%s 2>/dev/null)
if [ -n "$exp_s" ] && [ "$exp_s" -ge $((t0 + 600 - 5)) ] && [ "$exp_s" -le $((t0 + 600 + 5)) ]; then
    pass "status: expires=$exp is now+600s"
else
    fail "status: expiry is now+600s"
    diag "  hold line: $h" "  expected about $(date -u -d @$((t0 + 600)) +%FT%TZ)"
fi
fs_write "$D/lock" 0
is "$(fs_cat "$D/lock")" 0 "released again"

# --- guest hold, written by the guest into its xenstore node ---
xenstore-write "$NODE" "1 reason=db checkpoint"
wait_file_is 3 "$D/lock" 1
ok $? "guest writes '1 reason=db checkpoint': lock reads 1 within 3s"
h=$(hold_line guest)
like "$h" '^hold: guest since=[0-9TZ:-]+ ' "status: guest hold with since="
like "$h" ' reason=db checkpoint$' "status: guest hold reason=db checkpoint"
unlike "$(fs_cat "$D/status")" '^hold: admin' "no admin hold"
xenstore-write "$NODE" 0
wait_file_is 3 "$D/lock" 0
ok $? "guest writes 0: lock reads 0 within 3s"
is "$(hold_line guest)" "" "guest hold gone from status"

# --- malformed writes: EINVAL, nothing changed, an event explains ---
# check_bad DESC TEXT [raw]: echo TEXT > lock; raw: TEXT as is, in one write(2).
check_bad() {
    local desc=$1 text=$2 raw=${3:-} before_lock before_status n
    before_lock=$(fs_cat "$D/lock")
    before_status=$(fs_cat "$D/status")
    n=$(events_lines)
    if [ -n "$raw" ]; then
        printf '%s' "$text" >"$XENENV_DIR/raw"
        fs_write_raw "$D/lock" <"$XENENV_DIR/raw"
    else
        fs_write "$D/lock" "$text"
    fi
    local st=$?
    if [ "$st" -ne 0 ] && [[ $FS_ERR == *"Invalid argument"* ]]; then
        pass "$desc: fails with Invalid argument"
    else
        fail "$desc: fails with Invalid argument"
        diag "  exit status $st, stderr: '$FS_ERR'"
    fi
    is "$(fs_cat "$D/lock")" "$before_lock" "$desc: lock unchanged"
    is "$(fs_cat "$D/status")" "$before_status" "$desc: status unchanged"
    events_new_like "$n" ' vm-alpha .*(reject|invalid|malformed)'
    ok $? "$desc: an event explains" || diag "  new events: $(events_since "$n")"
}

fs_write "$D/lock" "1 reason=keep"
is "$(fs_cat "$D/lock")" 1 "admin hold reason=keep set before the malformed writes"
check_bad "empty line" ""
check_bad "garbage" "garbage"
check_bad "1 ttl=-5" "1 ttl=-5"
check_bad "1 ttl=99999999999" "1 ttl=99999999999"
check_bad "2" "2"
check_bad "overlong (5000 bytes in one write)" "1 reason=$(printf '%4991s' '' | tr ' ' x)" raw
check_bad "unknown key" "1 colour=red"
like "$(hold_line admin)" ' reason=keep$' "the admin hold is still the one set before"

fs_write "$D/lock" 0
is "$(fs_cat "$D/lock")" 0 "released"
check_bad "2 (unlocked)" "2"
check_bad "1 ttl=abc (unlocked)" "1 ttl=abc"

done_testing
