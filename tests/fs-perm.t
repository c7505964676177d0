#!/bin/bash
# Who may write: anyone may read; writes need CAP_SYS_ADMIN or membership in
# the policy's admin_group, else EACCES ("Permission denied").
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/xenenv.sh"
xenenv_init "$@"
xenenv_require_vmmig
xenenv_start

M=$XENENV_MNT
D=$M/vm-alpha
GROUP=users
GID=$(getent group "$GROUP" | cut -d: -f3)
[ -n "$GID" ] || skip_all "no group '$GROUP' on this host"

xs_add 5 vm-alpha "$(uuid_for 5)" 262144 2 || bail_out "xsfake add failed"

# as UID GID GROUPS CMD: sets OUT and ERR, returns the status.
as() {
    local uid=$1 gid=$2 groups=$3
    shift 3
    local f=$XENENV_DIR/as.err st
    OUT=$(as_user "$uid" "$gid" "$groups" "$@" 2>"$f")
    st=$?
    ERR=$(<"$f")
    return "$st"
}
# denied DESC UID GID GROUPS TEXT FILE
denied() {
    local desc=$1 before
    before=$(fs_cat "$6")
    as "$2" "$3" "$4" bash -c 'echo "$1" > "$2"' _ "$5" "$6"
    local st=$?
    if [ "$st" -ne 0 ] && [[ $ERR == *"Permission denied"* ]]; then
        pass "$desc: Permission denied"
    else
        fail "$desc: Permission denied"
        diag "  exit status $st, stderr: '$ERR'"
    fi
    is "$(fs_cat "$6")" "$before" "$desc: nothing changed"
}
allowed() {
    local desc=$1
    as "$2" "$3" "$4" bash -c 'echo "$1" > "$2"' _ "$5" "$6"
    ok $? "$desc: allowed" || diag "  stderr: '$ERR'"
}

# --- no admin_group: only CAP_SYS_ADMIN may write ---
policy_write "guest_max_hold = 3600" "max_ttl = 86400" "admin_group ="
vmmigfs_start "$M"
ok $? "vmmigfs mounts (admin_group empty)" || done_testing
wait_domain vm-alpha || bail_out "vm-alpha never appeared"

as 65534 65534 "" cat "$D/lock"
is "$?:$OUT" "0:0" "nobody can cat lock"
as 65534 65534 "" cat "$D/status"
like "$OUT" '^name: vm-alpha$' "nobody can cat status"
as 65534 65534 "" cat "$M/events"
ok $? "nobody can cat events"
as 65534 65534 "" ls "$M"
like "$OUT" '^vm-alpha$' "nobody can list the top level"

denied "nobody: echo 1 > lock" 65534 65534 "" 1 "$D/lock"
denied "nobody: echo 1 reason=x > lock" 65534 65534 "" "1 reason=x" "$D/lock"
denied "nobody: echo localhost > migrate" 65534 65534 "" localhost "$D/migrate"
run_fails "  ...and no migration was started" test -e "$XENENV_SEND_CALLS"
denied "nobody: echo max_ttl=60 > policy" 65534 65534 "" "max_ttl=60" "$M/policy"
denied "nobody in group $GROUP, but admin_group is empty" 65534 65534 "$GID" 1 "$D/lock"

# root without CAP_SYS_ADMIN is not enough
out=$(setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin -- \
    bash -c 'echo 1 > "$1"' _ "$D/lock" 2>&1)
st=$?
if [ "$st" -ne 0 ] && [[ $out == *"Permission denied"* ]]; then
    pass "uid 0 without CAP_SYS_ADMIN: Permission denied"
else
    fail "uid 0 without CAP_SYS_ADMIN: Permission denied"
    diag "  exit status $st, output: '$out'"
fi
is "$(fs_cat "$D/lock")" 0 "  ...lock unchanged"

fs_write "$D/lock" "1 reason=root"
ok $? "root with CAP_SYS_ADMIN may write" || diag "$FS_ERR"
denied "nobody: echo 0 > lock (release)" 65534 65534 "" 0 "$D/lock"
fs_write "$D/lock" 0

# --- admin_group set: its members may write ---
vmmigfs_stop
policy_write "guest_max_hold = 3600" "max_ttl = 86400" "admin_group = $GROUP"
vmmigfs_start "$M"
ok $? "vmmigfs mounts (admin_group = $GROUP)" || done_testing
wait_domain vm-alpha || bail_out "vm-alpha never appeared"

allowed "nobody with supplementary group $GROUP: echo '1 reason=ops' > lock" \
    65534 65534 "$GID" "1 reason=ops" "$D/lock"
is "$(fs_cat "$D/lock")" 1 "lock reads 1"
like "$(fs_cat "$D/status")" '^hold: admin by=.*\(uid 65534\) .*reason=ops$' \
    "status: the admin hold names uid 65534"
denied "nobody without the group: echo 0 > lock" 65534 65534 "" 0 "$D/lock"
allowed "uid 65534 with primary group $GROUP: echo 0 > lock" 65534 "$GID" "" 0 "$D/lock"
is "$(fs_cat "$D/lock")" 0 "lock reads 0"

done_testing
