# Co-migration between two real Xen hosts (issue 4): two domains, grpa and
# grpb (128 MiB each, as tiny), move together with `vmmig comigrate`.  A hold on
# either refuses both; a failure injected in one member before the commit
# point (its agent killed while its memory is copied) leaves both running on
# the source; after each move both guests' memory checks out.  The group
# then becomes a vmmigfs peer group; 50-console moves it through the
# migrate file.
M=/run/vmmig
KEY='xen2-shared-test-key-0123456789'
SETUP=$(vmmig_setup "$KEY" 'migrate_timeout = 10\n')
# "NAME:state" for grpa/grpb on a host (state letters without dashes)
copies_on() {
    if [ "$1" = A ]; then xl list; else host_run B 'xl list'; fi |
        awk '$1 ~ /^grp/ { s = $5; gsub("-", "", s); print $1 ":" s }' | sort | tr '\n' ' '
}
# both members run exactly once, on host $1, neither paused nor renamed
both_on() {
    local a b here there names
    a=$(copies_on A); b=$(copies_on B)
    if [ "$1" = A ]; then here=$a there=$b; else here=$b there=$a; fi
    names=$(printf '%s\n' $here | cut -d: -f1 | tr '\n' ' ')
    if [ "$names" = "grpa grpb " ] && [ -z "$there" ] &&
       ! printf '%s\n' $here | grep -q ':.*[pscd]'; then
        return 0
    fi
    diag "copies: hostA [$a] hostB [$b]"
    return 1
}
settle_both_on() {
    wait_for "both_on $1 >/dev/null 2>&1" "${2:-30}"
    if both_on "$1"; then tap_ok "$3: grpa and grpb run once each, on host$1"
    else tap_not_ok "$3: grpa and grpb run once each, on host$1"; fi
}
verify_both_on() {
    local g out
    for g in grpa grpb; do
        if [ "$1" = A ]; then out=$(memcheck_verify $g); else out=$(guest_run_on B $g 'memcheck verify'); fi
        like "$out" " bad=0( |$)" "$2: $g's memory is intact ($out)"
    done
}
field() { printf '%s\n' "$2" | sed -n "s/.*[ ]$1=\([0-9]*\).*/\1/p" | tail -n 1; }

for g in grpa grpb; do
    sed -e "s/^name = .*/name = \"$g\"/" /etc/xen/tiny.cfg > /etc/xen/$g.cfg
    host_run B "sed -e 's/^name = .*/name = \"$g\"/' /etc/xen/tiny.cfg > /etc/xen/$g.cfg" >/dev/null
done
xl destroy tiny >/dev/null 2>&1; host_run B 'xl destroy tiny' >/dev/null 2>&1
guest_create grpa && guest_create grpb || { tap_not_ok "guest_create grpa grpb on hostA"; exit 0; }
tap_ok "grpa and grpb run on hostA"
check "hostA: key, policy, vmmigfs --listen 8123" sh -c "$SETUP"
check "hostB: key, policy, vmmigfs --listen 8123" host_run B "$SETUP"
check "memcheck in grpa (16 MiB, 500 pages/s rewritten)" memcheck_start grpa 16 500
check "memcheck in grpb (16 MiB, 500 pages/s rewritten)" memcheck_start grpb 16 500

# ---- a hold on one member refuses both ----
check "grpb holds itself" guest_run grpb 'guestctl lock --reason "checkpoint"'
out=$(vmmig comigrate hostB grpa grpb 2>&1); rc=$?
is "$rc" 1 "grpb held: vmmig comigrate hostB grpa grpb fails"
like "$out" 'result failed group=grpa,grpb .*why="grpb failed: .*(hold|locked)' \
    "  ...naming grpb and its hold"
settle_both_on A 20 "grpb held"
check "grpb releases its hold" guest_run grpb 'guestctl unlock'

# ---- the group moves ----
out=$(vmmig comigrate hostB grpa grpb 2>&1); rc=$?
is "$rc" 0 "vmmig comigrate hostB grpa grpb" || diag "$out"
like "$out" '^result member=grpa ok ' "grpa's result" || diag "$out"
like "$out" '^result member=grpb ok ' "grpb's result"
like "$out" '^result ok group=grpa,grpb stop_skew_ms=[0-9]+ resume_skew_ms=[0-9]+ total_ms=[0-9]+' \
    "the group's result with the stop and resume skews"
diag "co-migration: $(printf '%s\n' "$out" | grep '^result')"
like "$out" 'progress member=grpa stage=2 name=iterative-pre-copy .*round=2' \
    "grpa went through several pre-copy rounds (kept in step with grpb)"
settle_both_on B 30 "co-migrated"
verify_both_on B "after co-migration"

# ---- a member fails before the commit point: both stay ----
KILLFN='killmatch() { for p in /proc/[0-9]*; do c=$(tr "\\0" " " < $p/cmdline 2>/dev/null); case "$c" in *killmatch*) ;; *"$1"*) kill -9 ${p#/proc/} 2>/dev/null ;; esac; done; }'
host_run B "rm -f /tmp/co.out; (vmmig comigrate hostA grpa grpb > /tmp/co.out 2>&1; echo \$? >> /tmp/co.out) </dev/null >/dev/null 2>&1 &" >/dev/null
wait_for "host_run B 'grep -q \"member=grpb stage=2 .*sent=[1-9][0-9]\{6\}\" /tmp/co.out'" 120
host_run B "$KILLFN; killmatch 'send --sync-fd=3 grpb'" >/dev/null
wait_for "host_run B 'grep -q \"^result failed group\" /tmp/co.out'" 120
out=$(host_run B 'cat /tmp/co.out')
like "$out" 'grpb: its agent was killed by signal 9; settling it with send --recover' \
    "grpb's agent killed in pre-copy: the coordinator settles grpb (send --recover)"
like "$out" 'result member=grpb failed .*domain=running-here' "grpb fails and runs on hostB"
like "$out" 'result member=grpa failed .*domain=running-here' "grpa is taken back too and runs on hostB"
like "$out" 'result failed group=grpa,grpb .*why="grpb failed: its agent was killed by signal 9' \
    "the group names grpb and why"
settle_both_on B 40 "failure injected in grpb before the commit"
verify_both_on B "after the failed co-migration"

check "echo grpb > grpa/peer (on hostB)" host_run B "echo grpb > $M/grpa/peer"
is "$(host_run B "cat $M/grpb/peer")" grpa "the group is symmetric: grpb/peer shows grpa"

host_run B "fusermount3 -u $M" >/dev/null
fusermount3 -u $M
