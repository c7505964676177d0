# Co-migration between two real Xen hosts (issue 4): two domains, grpa and
# grpb (128 MiB each, as tiny), move together with `vmmig comigrate`.  A hold on
# either refuses both; a failure injected in one member before the commit
# point (its agent killed while its memory is copied) leaves both running on
# the source; after each move both guests' memory checks out.  The group
# then becomes a vmmigfs peer group and moves through the migrate file
# while `vmmig console` follows grpa (console continuity).
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
like "$out" '^result ok group=grpa,grpb stop_skew_ms=[0-9]+ stop_request_skew_ms=[0-9]+ resume_skew_ms=[0-9]+ total_ms=[0-9]+' \
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


# ---- console continuity: vmmig console follows grpa while the group moves ----
# `vmmig console grpa hostB`, run on hostA, stays attached while the group
# moves from hostB to hostA through hostB's vmmigfs (echo hostA >
# grpa/migrate).  A key goes in every 50 ms and the guest records what
# arrives; the guest prints a numbered tick every 50 ms and the client
# records what it sees.  Every key must arrive exactly once and in order,
# and the ticks the client saw must follow each other without a gap or a
# repeat.
# "first=N last=N count=N bad=N" of the "PREFIX N" lines of a file
sequence() {
    awk -v p="$1" '$1 == p && $2 ~ /^[0-9]+$/ && NF == 2 {
        if (n && $2 != last + 1) bad++
        if (!n) first = $2
        last = $2; n++
    } END { printf "first=%d last=%d count=%d bad=%d\n", first, last, n, bad }' "$2"
}

check "grpa prints 'tick N' every 50 ms on its console and records its console input" \
    guest_run_on B grpa 'stty -F /dev/hvc0 raw -echo &&
(cat /dev/hvc0 > /tmp/keys) </dev/null >/dev/null 2>&1 &
(i=0; while :; do echo "tick $i"; i=$((i+1)); usleep 50000; done > /dev/hvc0) </dev/null >/dev/null 2>&1 &
echo started'

rm -f /tmp/keys.stop /tmp/keys.sent /tmp/console.out /tmp/console.err
( i=0; while [ ! -e /tmp/keys.stop ]; do echo "k $i"; echo $i > /tmp/keys.sent; i=$((i+1)); usleep 50000; done ) |
    vmmig console grpa hostB > /tmp/console.out 2> /tmp/console.err &
wait_for "grep -q '^tick ' /tmp/console.out" 30
like "$(grep -c '^tick ' /tmp/console.out)" '^[1-9]' "vmmig console grpa hostB shows grpa's console output"

check "echo hostA > grpa/migrate on hostB (the group moves)" host_run B "echo hostA > $M/grpa/migrate"
wait_for "host_run B 'cat $M/grpa/migrate' | grep -q '^done\\|^failed\\|^migrated'" 400
like "$(host_run B "cat $M/grpa/migrate")" "^(done|migrated) hostA" "grpa and grpb moved to hostA"
like "$(host_run B "cat $M/grpb/migrate")" "^(done|migrated) hostA" "  ...grpb with it"
wait_for "grep -q 'following grpa to hostA' /tmp/console.err" 60
like "$(cat /tmp/console.err)" "following grpa to hostA" "the console client followed grpa to hostA"
sleep 3
touch /tmp/keys.stop
sleep 4
sent=$(( $(cat /tmp/keys.sent) + 1 ))
got=$(guest_run grpa 'awk '\''$1 == "k" { if ($2 != n) bad++; n = $2 + 1; c++ } END { printf "keys=%d count=%d bad=%d\n", n, c, bad }'\'' /tmp/keys')
is "$got" "keys=$sent count=$sent bad=0" \
    "all $sent keys typed during the co-migration arrived once each, in order"
ticks=$(sequence tick /tmp/console.out)
diag "ticks seen by the client: $ticks"
like "$ticks" "bad=0$" "the ticks around the switchover reached the client: none lost, none repeated"
like "$(tail -c 200 /tmp/console.out)" "tick" "the client still shows output, now from hostA"
for g in grpa grpb; do
    out=$(memcheck_verify $g)
    like "$out" " bad=0( |\$)" "$g's memory is intact after the group moved through vmmigfs ($out)"
done
wait_for "[ \"\$(cat $M/grpa/peer 2>/dev/null)\" = grpb ]" 15
is "$(cat $M/grpa/peer 2>/dev/null)" grpb "the peer group arrived with its members on hostA"
for p in /proc/[0-9]*; do case "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" in *"vmmig console"*) kill ${p#/proc/} ;; esac; done

host_run B "fusermount3 -u $M" >/dev/null
fusermount3 -u $M
