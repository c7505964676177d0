#!/bin/bash
# vmmig comigrate's coordination, with fake members ($VMMIG_SEND: a script
# that speaks `send --sync-fd`'s line protocol on fd 3): the barriers hold
# every member until all arrive, a member that fails before the commit point
# takes the whole group back (waiting members get "abort", copying ones
# SIGTERM), cancel, a failure after the commit point, bad usage.  The real
# agents do this between two emulated Xen hosts in tests/xen2 (40-comigrate).
. "$(dirname "$0")/lib/tap.sh"
top=$(cd "$(dirname "$0")/.." && pwd)
VMMIG=${VMMIG:-$top/build/bin/vmmig}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# The fake member: what it does comes from $dir/plan.DOMAIN (default "ok").
cat >"$dir/send" <<EOF
#!/bin/bash
D='$dir'
EOF
cat >>"$dir/send" <<'EOF'
dom=${@: -2:1} host=${@: -1}
plan=$(cat "$D/plan.$dom" 2>/dev/null || echo ok)
log() { echo "$dom $*" >>"$D/log"; }
log "args $*"
case " $* " in *" --recover "*)
    echo "result failed stage=0 domain=running-here why=\"recovered: the domain kept running here\""
    exit 1 ;;
esac
fail() { echo "result failed stage=$1 domain=running-here why=\"$2\""; exit 1; }
barrier() { # POINT: wait for the coordinator's word
    echo "sync $1" >&3
    read -r reply <&3 || reply="(closed)"
    log "$1 -> $reply"
    [ "$reply" = go ]
}
trap 'kill $! 2>/dev/null; log "got SIGTERM"; fail 2 cancelled' TERM
[ "$plan" = stopfirst ] && echo "event stop-hook" >&3
echo "progress stage=0 name=pre-migration sent=0"
echo "progress stage=1 name=reservation sent=0"
case $plan in refused) sleep 0.3; fail 1 "$host refused (locked): the domain is held there" ;; esac
barrier reserved || fail 1 "$reply"
echo "progress stage=2 name=iterative-pre-copy sent=0 round=1"
case $plan in
slowcopy) sleep 20 & wait ;;
die) sleep 0.5; kill -9 $$ ;;
esac
echo "progress stage=2 name=iterative-pre-copy sent=100 round=2"
barrier round || fail 2 "$reply"
case $plan in
nohook) ;; # an engine without a stop hook: stops on its own
badpoint) barrier bogus || fail 2 "$reply" ;;
slowstop) sleep 1; touch "$D/slow-at-stop"; barrier stop || fail 2 "$reply" ;;
stopfirst) # QEMU's first-pass way: stopped, then at the barrier
    echo "event stopped $(date +%s%3N)" >&3; sleep 1; touch "$D/slow-at-stop"
    barrier stop || fail 2 "$reply" ;;
diebeforestop) sleep 0.5; kill -9 $$ ;;
*) barrier stop || fail 2 "$reply"
   [ -e "$D/slow-at-stop" ] && log "saw the slow member reach stop first" ;;
esac
echo "event stopped $(date +%s%3N)" >&3
echo "progress stage=3 name=stop-and-copy sent=200"
[ "$plan" = late ] && { sleep 1; touch "$D/late-arrived"; }
barrier received || fail 4 "$reply"
[ -e "$D/late-arrived" ] && log "saw the late member arrive first"
[ "$plan" = failcommit ] && fail 4 "the link failed before COMMIT was sent"
echo "progress stage=4 name=commitment sent=200"
barrier committed
echo "progress stage=5 name=activation sent=200"
req=$(cat "$D/req.$dom" 2>/dev/null || date +%s%3N) # when its stop was requested
echo "result ok host=$host domid=9 total_ms=100 downtime_ms=20 sent=200 rounds=2 stop_ms=$(date +%s%3N) resume_ms=$(date +%s%3N) stop_request_ms=$req"
EOF
chmod +x "$dir/send"
comigrate() { VMMIG_SEND=$dir/send "$VMMIG" comigrate "$@"; }
reset() { rm -f "$dir"/log "$dir"/plan.* "$dir/late-arrived" "$dir/slow-at-stop"; }

# ---- a group that moves ----
reset
echo late >"$dir/plan.b"
out=$(comigrate -p 9000 hostB a b); rc=$?
is "$rc" 0 "two members: exit 0"
like "$out" '^result ok group=a,b stop_skew_ms=[0-9]+ stop_request_skew_ms=[0-9]+ resume_skew_ms=[0-9]+ total_ms=[0-9]+$' \
    "the group's result, with the skews"
like "$out" '^progress member=a stage=5 name=activation' "member a's progress carries member=a"
like "$out" '^result member=b ok host=hostB domid=9 ' "member b's result carries member=b"
like "$(cat "$dir/log")" '^a args send --port=9000 --sync-fd=3 a hostB$' \
    "each member runs as send --sync-fd=3 with the options passed on"
for p in reserved round stop received committed; do
    is "$(grep -c " $p -> go" "$dir/log")" 2 "both members pass $p"
done
like "$(cat "$dir/log")" '^a saw the late member arrive first$' \
    "nobody passes 'received' before the late member got there"

# ---- the stop barrier: nobody is stopped before every member is ready ----
reset
echo slowstop >"$dir/plan.b"
out=$(comigrate hostB a b); rc=$?
is "$rc" 0 "a member slow to reach stop: the group moves"
like "$(cat "$dir/log")" '^a saw the slow member reach stop first$' \
    "the other member waited at stop until the slow one got there"

# ---- a member stopped before the barrier, by an engine that stops only
# through it (event stop-hook, QEMU's first-pass way), still holds the others ----
reset
echo stopfirst >"$dir/plan.b"
out=$(comigrate hostB a b); rc=$?
is "$rc" 0 "a member that says event stop-hook and is stopped first: the group moves"
like "$(cat "$dir/log")" '^a saw the slow member reach stop first$' \
    "  ...the other member waited at stop until it got there"
is "$(grep -c " stop -> go" "$dir/log")" 2 "  ...both passed stop"

# ---- a member whose engine has no stop hook does not hold the others ----
reset
echo nohook >"$dir/plan.b"
out=$(comigrate hostB a b); rc=$?
is "$rc" 0 "a member without the stop hook: the group moves"
is "$(grep -c " stop -> go" "$dir/log")" 1 "  ...the member with the hook passed stop once"
echo 0 >"$dir/req.b"
out=$(comigrate hostB a b)
like "$out" '^result ok group=a,b stop_skew_ms=[0-9]+ resume_skew_ms=' \
    "  ...and the group's result has no stop_request_skew_ms when a member's stop was not requested by the hook"
rm -f "$dir/req.b"
echo 1000 >"$dir/req.a"; echo 1007 >"$dir/req.b"
out=$(comigrate hostB a b)
like "$out" ' stop_request_skew_ms=7 ' "stop requests at 1000 and 1007 ms: stop_request_skew_ms=7"
rm -f "$dir"/req.*

# ---- a member asking for a point the coordinator does not know is told to abort ----
reset
echo badpoint >"$dir/plan.b"
out=$(timeout 60 env VMMIG_SEND=$dir/send "$VMMIG" comigrate hostB a b); rc=$?
is "$rc" 1 "a member at an unknown point: the group fails, nothing hangs"
like "$(cat "$dir/log")" "^b bogus -> abort unknown synchronization point 'bogus'$" \
    "  ...the member is told why"

# ---- a member dies while the other waits at stop: the waiting one is not stopped ----
reset
echo diebeforestop >"$dir/plan.b"
out=$(comigrate hostB a b); rc=$?
is "$rc" 1 "a member killed before stop: the group fails"
like "$(cat "$dir/log")" '^a stop -> abort ' "  ...the member waiting at stop is told to abort"
like "$out" 'result member=a failed stage=2 ' "  ...and fails before its stop, still running here"

# ---- a member refused before any memory moves: nothing moves ----
reset
echo refused >"$dir/plan.b"
out=$(comigrate hostB a b); rc=$?
is "$rc" 1 "a member refused: exit 1"
like "$(cat "$dir/log")" '^a reserved -> abort b failed: hostB refused \(locked\)' \
    "the waiting member is told why and goes back"
like "$out" '^result member=a failed stage=1 domain=running-here' "  ...and says it runs here"
like "$out" '^result failed group=a,b stage=[0-9]+ why="b failed: hostB refused \(locked\): the domain is held there"$' \
    "the group fails, naming the member and its reason"
unlike "$(cat "$dir/log")" ' round -> ' "no member copied any memory"

# ---- a member killed during its copy: the other, waiting, goes back ----
reset
echo die >"$dir/plan.b"
out=$(comigrate hostB a b); rc=$?
is "$rc" 1 "a member killed mid-copy: exit 1"
like "$(cat "$dir/log")" '^a round -> abort b failed: its agent was killed by signal 9$' \
    "the member waiting at its round is aborted"
like "$out" '^b: its agent was killed by signal 9; settling it with send --recover$' \
    "the coordinator says the member's agent died"
like "$(cat "$dir/log")" '^b args send --recover b hostB$' "  ...and settles it with send --recover"
like "$out" '^result member=b failed stage=0 domain=running-here why="recovered: the domain kept running here"$' \
    "  ...whose result is the member's"

# ---- a member fails while the other is still copying: SIGTERM cancels it ----
reset
echo slowcopy >"$dir/plan.a"
echo die >"$dir/plan.b"
out=$(comigrate hostB a b); rc=$?
is "$rc" 1 "failure while the other copies: exit 1"
like "$(cat "$dir/log")" '^a got SIGTERM$' "the copying member is cancelled"
like "$out" '^result member=a failed stage=2 domain=running-here why="cancelled"$' \
    "  ...and resumes here"

# ---- cancel: SIGTERM to the coordinator ----
reset
echo slowcopy >"$dir/plan.a"
echo slowcopy >"$dir/plan.b"
VMMIG_SEND=$dir/send "$VMMIG" comigrate hostB a b >"$dir/out" 2>&1 &
pid=$!
for _ in $(seq 50); do [ "$(grep -c 'iterative-pre-copy' "$dir/out")" -ge 2 ] && break; sleep 0.1; done
kill -TERM $pid
wait $pid; rc=$?
is "$rc" 1 "cancelled: exit 1"
is "$(grep -c 'got SIGTERM' "$dir/log")" 2 "both members were cancelled"
like "$(cat "$dir/out")" '^result failed group=a,b stage=2 why="the group failed: cancelled"$' \
    "the group says it was cancelled"

# ---- after the commit point there is no going back ----
reset
echo failcommit >"$dir/plan.b"
out=$(comigrate hostB a b); rc=$?
is "$rc" 1 "a member failing after the commit point: exit 1"
like "$out" '^result member=a ok ' "the other member still completes (it committed)"
like "$out" '^result failed group=a,b stage=4 why="after the commit point: the link failed before COMMIT was sent"$' \
    "the group result says it failed after the commit point"

# ---- recovery: members settled one by one, without coordination ----
reset
out=$(printf '#!/bin/sh\necho "$*" >>%s/log\necho "result ok host=hostB recovered=absent-here"\n' "$dir" >"$dir/rsend"; chmod +x "$dir/rsend"; VMMIG_SEND=$dir/rsend "$VMMIG" comigrate --recover hostB a b); rc=$?
is "$rc" 0 "--recover: exit 0 when every member is settled"
is "$(cat "$dir/log")" "send --recover a hostB
send --recover b hostB" "each member gets send --recover, in turn"
like "$out" '^result ok group=a,b recovered=yes' "the group's result"

# ---- bad usage ----
"$VMMIG" comigrate hostB >/dev/null 2>"$dir/err"; rc=$?
is "$rc" 2 "no domain: usage error"
like "$(cat "$dir/err")" "expected HOST and at least one DOMAIN" "  ...saying what is missing"
"$VMMIG" comigrate hostB a a >/dev/null 2>"$dir/err"; rc=$?
is "$rc" 2 "a domain named twice: usage error"
"$VMMIG" comigrate --bogus hostB a >/dev/null 2>&1; rc=$?
is "$rc" 2 "an unknown option: usage error"
reset
comigrate -a postcopy hostB a b >/dev/null 2>"$dir/err"; rc=$?
is "$rc" 2 "-a postcopy: refused"
like "$(cat "$dir/err")" "post-copy cannot move a group together" "  ...saying why"
ok "$([ ! -s "$dir/log" ]; echo $?)" "  ...and no member was started"
reset
comigrate --stream warp hostB a b >/dev/null 2>"$dir/err"; rc=$?
is "$rc" 2 "--stream warp: usage error"
like "$(cat "$dir/err")" "unknown stream 'warp' \\(relay or direct\\)" "  ...saying which ones there are"
ok "$([ ! -s "$dir/log" ]; echo $?)" "  ...and no member was started"
reset
out=$(comigrate -a stopcopy --stream direct hostB a b); rc=$?
is "$rc" 0 "-a stopcopy --stream direct: the group moves"
like "$(cat "$dir/log")" '^a args send --algorithm=stopcopy --stream=direct --sync-fd=3 a hostB$' \
    "  ...each member's send gets --algorithm=stopcopy --stream=direct"
done_testing
