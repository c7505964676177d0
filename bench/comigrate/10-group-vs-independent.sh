# bench/comigrate: a group of two domains moved with `vmmig comigrate`
# against the same two domains moved by two independent `vmmig send`s run in
# parallel, between the same two emulated Xen hosts, in the same run.
# Rounds alternate the two ways and the directions.  Prints BENCH lines
# (total time, stop skew, resume skew); bench/comigrate/run.sh tabulates.
M=/run/vmmig
KEY='bench-shared-key-0123456789abcdef'
ROUNDS=${BENCH_ROUNDS:-2}
setup='mkdir -p /etc/vmmig && (umask 077; printf "%s\n" '"$KEY"' > /etc/vmmig/key) && mkdir -p '$M' && vmmigfs --listen 8123 '$M
for g in grpa grpb; do
    sed -e "s/^name = .*/name = \"$g\"/" /etc/xen/tiny.cfg > /etc/xen/$g.cfg
    host_run B "sed -e 's/^name = .*/name = \"$g\"/' /etc/xen/tiny.cfg > /etc/xen/$g.cfg" >/dev/null
done
guest_create grpa && guest_create grpb || { tap_not_ok "guest_create grpa grpb"; exit 0; }
sh -c "$setup" && host_run B "$setup" >/dev/null || { tap_not_ok "vmmigfs on both hosts"; exit 0; }
memcheck_start grpa 16 1000 >/dev/null && memcheck_start grpb 16 1000 >/dev/null ||
    { tap_not_ok "memcheck in grpa and grpb"; exit 0; }
tap_ok "set up: grpa and grpb with memcheck, vmmigfs --listen on both hosts"

ms_now() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
val() { printf ' %s\n' "$2" | tr '\n' ' ' | sed -n "s/.*[ ]$1=\([0-9-]*\).*/\1/p"; }
spread() { # two numbers -> |a-b|
    [ -n "$1" ] && [ -n "$2" ] && echo $(( $1 > $2 ? $1 - $2 : $2 - $1 ))
}
# the commands, run on host $1 towards host $2
group_cmd() { echo "vmmig comigrate host$2 grpa grpb"; }
indep_cmd() {
    echo "vmmig send grpa host$2 > /tmp/sa.out 2>&1 & vmmig send grpb host$2 > /tmp/sb.out 2>&1; wait; cat /tmp/sa.out /tmp/sb.out"
}
one() { # WAY FROM TO
    local way=$1 from=$2 to=$3 cmd out t0 t1 ms stop resume
    if [ "$way" = group ]; then cmd=$(group_cmd "$from" "$to"); else cmd=$(indep_cmd "$from" "$to"); fi
    if [ "$from" = A ]; then
        t0=$(ms_now); out=$(sh -c "$cmd" 2>&1); t1=$(ms_now); ms=$((t1 - t0))
    else
        out=$(host_run B "t0=\$(awk '{printf \"%d\", \$1*1000}' /proc/uptime); $cmd; t1=\$(awk '{printf \"%d\", \$1*1000}' /proc/uptime); echo ELAPSED=\$((t1 - t0))")
        ms=$(val ELAPSED " $out")
    fi
    local a b
    if [ "$way" = group ]; then
        a=$(printf '%s\n' "$out" | grep '^result member=grpa ok'); b=$(printf '%s\n' "$out" | grep '^result member=grpb ok')
    else
        a=$(printf '%s\n' "$out" | grep '^result ok' | sed -n 1p); b=$(printf '%s\n' "$out" | grep '^result ok' | sed -n 2p)
    fi
    stop=$(spread "$(val stop_ms " $a")" "$(val stop_ms " $b")")
    # when the stop barrier let each member's libxl ask its guest (0: not asked through it)
    local req
    req=$(spread "$(val stop_request_ms " $a")" "$(val stop_request_ms " $b")")
    [ "$(val stop_request_ms " $a")" = 0 ] || [ "$(val stop_request_ms " $b")" = 0 ] && req=-
    resume=$(spread "$(val resume_ms " $a")" "$(val resume_ms " $b")")
    if [ -n "$a" ] && [ -n "$b" ] && [ -n "$stop" ] && [ -n "$resume" ]; then
        tap_ok "$way $from->$to: $ms ms, stop skew $stop ms (requests $req ms apart), resume skew $resume ms"
        diag "BENCH way=$way dir=$from$to ms=$ms stop_skew_ms=$stop stop_request_skew_ms=$req resume_skew_ms=$resume"
    else
        tap_not_ok "$way $from->$to"
        diag "$out"
    fi
}
r=0
while [ "$r" -lt "$ROUNDS" ]; do
    one group A B; one group B A; one independent A B; one independent B A
    r=$((r + 1))
done
# ---- the console pause a user sees while the group moves through vmmigfs ----
# grpa echoes each console line "k N" back as "echo N" and prints "tick N"
# every 50 ms.  `vmmig console grpa`, on hostA, types "k N" every 50 ms
# and follows grpa while the group (peers) moves A->B and back through
# vmmigfs.  Each key sent and each line shown is stamped with dom0's
# /proc/uptime (10 ms steps; dom0 has no bash).  Input pause: the longest a key waited for its echo;
# output pause: the longest gap between two ticks the client showed.
# each line stamped with dom0's uptime (s)
stamp() { awk '{ getline t < "/proc/uptime"; close("/proc/uptime"); split(t, u, " "); print u[1], $0; fflush() }'; }
# the console hold of one move, from `vmmig console -v`'s lines: from the
# agent saying "paused (stopping)" (send holds the input before the stop)
# to the next "running", in ms; and the guest's own downtime then, from
# the migration's status on the source (STATUS-FILE-TEXT)
# and from the hold to the guest seen suspended (stop_ms, the source's
# clock, against the client's stamp: the same clock for the move A->B)
hold_of_move() { # N (1st, 2nd move) STATUS
    local n=$1 status=$2 hold down stop held_at
    hold=$(awk -v n="$n" '/paused \(stopping\)/ && !open { k++; if (k == n) { t0 = $1; open = 1 } }
        open && / running, / { printf "%d\n", ($1 - t0) * 1000; exit }' /tmp/cp.err)
    held_at=$(awk -v n="$n" '/paused \(stopping\)/ { k++; if (k == n) { printf "%.0f\n", $4 * 1000; exit } }' /tmp/cp.err)
    down=$(printf '%s\n' "$status" | sed -n 's/^downtime_ms: *\([0-9]*\).*/\1/p' | head -n1)
    stop=$(printf '%s\n' "$status" | sed -n 's/^stop_ms: *\([0-9]*\).*/\1/p' | head -n1)
    [ -n "$stop" ] && [ -n "$held_at" ] && stop=$((stop - held_at)) || stop=-
    echo "hold_ms=${hold:--} downtime_ms=${down:--} held_to_stop_ms=$stop"
}
console_pause() {
    guest_run grpa 'stty -F /dev/hvc0 raw -echo &&
(while read -r k n; do [ "$k" = k ] && echo "echo $n"; done < /dev/hvc0 > /dev/hvc0) </dev/null >/dev/null 2>&1 &
(i=0; while :; do echo "tick $i"; i=$((i+1)); usleep 50000; done > /dev/hvc0) </dev/null >/dev/null 2>&1 &
echo started' >/dev/null
    rm -f /tmp/cp.stop /tmp/cp.sent /tmp/cp.seen /tmp/cp.err
    ( i=0; while [ ! -e /tmp/cp.stop ]; do echo "k $i"; echo "$(cut -d' ' -f1 /proc/uptime) $i" >> /tmp/cp.sent; i=$((i+1)); usleep 50000; done ) |
        { vmmig console -v grpa 2>&1 1>&3 | stamp > /tmp/cp.err; } 3>&1 | stamp > /tmp/cp.seen &
    wait_for "grep -q ' echo ' /tmp/cp.seen" 30 || { tap_not_ok "console: no echo from grpa"; return; }
    echo grpb > $M/grpa/peer
    echo hostB > $M/grpa/migrate
    wait_for "grep -q '^done\\|^failed\\|^migrated' $M/grpa/migrate" 400
    wait_for "grep -q 'following grpa to hostB' /tmp/cp.err" 60
    local st1 st2
    st1=$(cat $M/grpa/status 2>/dev/null)
    sleep 3
    host_run B "echo hostA > $M/grpa/migrate" >/dev/null
    wait_for "host_run B 'cat $M/grpa/migrate' | grep -q '^done\\|^failed\\|^migrated'" 400
    wait_for "[ \$(grep -c following /tmp/cp.err) -ge 2 ]" 60
    st2=$(host_run B "cat $M/grpa/status" 2>/dev/null)
    sleep 3
    touch /tmp/cp.stop
    sleep 2
    for p in /proc/[0-9]*; do case "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" in *"vmmig console"*) kill ${p#/proc/} ;; esac; done
    local res
    res=$(awk 'FNR == NR { sent[$2] = $1; n++; next }
        $2 == "echo" && ($3 in sent) { d = ($1 - sent[$3]) * 1000; if (d > inmax) inmax = d; got[$3] = 1 }
        $2 == "tick" { if (last) { g = ($1 - last) * 1000; if (g > outmax) outmax = g }; last = $1 }
        END { lost = 0; for (k in sent) if (!(k in got)) lost++
              printf "input_pause_ms=%d output_pause_ms=%d keys=%d lost=%d\n", inmax, outmax, n, lost }' \
        /tmp/cp.sent /tmp/cp.seen)
    local h1 h2
    h1=$(hold_of_move 1 "$st1"); h2=$(hold_of_move 2 "$st2")
    diag "console hold, move A->B: $h1; move B->A: $h2"
    head -n 60 /tmp/cp.err | while read -r l; do diag "  $l"; done
    res="$res hold1_ms=$(val hold_ms " $h1") down1_ms=$(val downtime_ms " $h1") hold2_ms=$(val hold_ms " $h2") down2_ms=$(val downtime_ms " $h2") held_to_stop1_ms=$(val held_to_stop_ms " $h1")"
    # keys typed in the last moments may still be on their way: at most 2
    if [ "$(grep -c following /tmp/cp.err)" -ge 2 ] && [ "$(val lost " $res")" -le 2 ]; then
        tap_ok "console through two group moves: $res"
        diag "BENCH way=console dir=ABA $res"
    else
        tap_not_ok "console through two group moves: $res; $(tail -3 /tmp/cp.err)"
    fi
}
console_pause

for g in grpa grpb; do
    out=$(guest_run $g 'memcheck verify')
    like "$out" " bad=0( |$)" "$g's memory intact after all the moves ($out)"
done
host_run B "fusermount3 -u $M" >/dev/null
fusermount3 -u $M
