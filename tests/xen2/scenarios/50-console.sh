# Console continuity across co-migration (issue 4): `vmmig console grpa
# hostB`, run on hostA, stays attached while the group grpa+grpb moves from
# hostB to hostA through hostB's vmmigfs (echo hostA > grpa/migrate).  A key
# goes in every 50 ms and the guest records what arrives; the guest prints a
# numbered tick every 50 ms and the client records what it sees.  Every key
# must arrive exactly once and in order, and the ticks the client saw must
# follow each other without a gap or a repeat.  (Runs after 40-comigrate:
# grpa and grpb are peers on hostB.)
M=/run/vmmig
KEY='xen2-shared-test-key-0123456789'
SETUP=$(vmmig_setup "$KEY" 'migrate_timeout = 10\n')
# "first=N last=N count=N bad=N" of the "PREFIX N" lines of a file
sequence() {
    awk -v p="$1" '$1 == p && $2 ~ /^[0-9]+$/ && NF == 2 {
        if (n && $2 != last + 1) bad++
        if (!n) first = $2
        last = $2; n++
    } END { printf "first=%d last=%d count=%d bad=%d\n", first, last, n, bad }' "$2"
}

host_run B 'xl list grpa' >/dev/null 2>&1 || { tap_not_ok "grpa runs on hostB (40-comigrate ran)"; exit 0; }
check "hostA: vmmigfs --listen 8123" sh -c "$SETUP"
check "hostB: vmmigfs --listen 8123" host_run B "$SETUP"
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
