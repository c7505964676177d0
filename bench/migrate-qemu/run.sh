#!/bin/bash
# bench/migrate-qemu/run.sh - vmmig's QEMU engine against a plain QMP
# migration of the same QEMU guest between the same two hosts, in the same
# run (issue 6's benchmark).  The hosts are the network namespaces of
# tests/qemu/lib.sh (vmmigfs --listen on both); the guest is the tests'
# (Debian kernel + busybox under TCG, 128 MiB, memcheck rewriting 48 MiB at
# 20000 pages/s) plus a heartbeat on its serial console.
#
#   vmmig: `vmmig send web1 hostB` (BENCH_QEMU_VIA=migrate: `vmmig migrate`,
#          through the source's vmmigfs), vmmig's control protocol, the
#          stream relayed in authenticated chunks (the default);
#   direct: the same with --stream=direct: QEMU's stream on its own TCP
#          connection between the QEMUs (vmmig-protocol(7), DIRECT STREAM);
#   raw:   bench/migrate-qemu/qmpbench.py raw: the destination QEMU started
#          with the source's command line and -incoming defer -S,
#          migrate-incoming / migrate tcp:, the capabilities and parameters
#          vmmig's engine sets, cont once both sides are completed.
#
#   rawtls: the same as raw with QEMU's own TLS on the stream
#          (tls-creds-psk objects on both QEMUs, a pre-shared key made for
#          the move): a reference for an authenticated stream, as vmmig's
#          is; no target.
#
# Rounds alternate tools and directions: vmmig A->B, raw B->A, direct
# A->B, rawtls B->A, raw A->B, vmmig B->A, rawtls A->B, direct B->A;
# BENCH_QEMU_SAMPLES (default 3) rounds, so that many samples per tool and
# direction.  BENCH_ONLY_VMMIG=1: only vmmig's and direct's moves (for
# profiling).  Every QEMU runs through qemu-wrap.sh, which adds
# a monitor (bench.sock) for qmpbench.py observe: QEMU's own events and
# query-migrate of the source, whichever tool moves the guest.  Measured:
#   total time  the command's start -> the destination's RESUME event
#   downtime    "downtime" of the source's query-migrate once completed
#   pause       the source's STOP event -> the destination's RESUME event
#   gap         the guest's serial heartbeat (a line every 10 ms), as seen
#               on the host: the last line from the source's QEMU -> the
#               first from the destination's
# memcheck verifies every page after each move; bad pages end the run
# (exit 1).  Prints one BENCH line per move, then the medians: total time
# vmmig/raw (target <= 1.05x) and downtime vmmig-raw (target <= +5 ms),
# the same for direct, and where the time goes.  Reports, never gates: exit 0 when targets are
# missed, non-zero only when the run itself breaks.
# Environment: BENCH_QEMU_SAMPLES, BENCH_QEMU_VIA, VMMIG_QEMU_DOWNTIME_MS
# (5000, for both tools), and tests/qemu/lib.sh's (VMMIG, VMMIG_TEST_KEEP,
# VMMIG_TEST_TIMEOUT: 2400 s here).
BENCH_NAME=migrate-qemu
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/../qemu.sh"
: "${BENCH_QEMU_SAMPLES:=3}" "${BENCH_QEMU_VIA:=send}"
export VMMIG_TEST_TIMEOUT=${VMMIG_TEST_TIMEOUT:-2400}
export VMMIG_QEMU_DOWNTIME_MS=${VMMIG_QEMU_DOWNTIME_MS:-5000}
case "$BENCH_QEMU_VIA" in send | migrate) ;; *) bail_out "BENCH_QEMU_VIA is send or migrate" ;; esac
command -v python3 >/dev/null || skip_all "python3 not installed"
qenv_init "$@"

trap bench_cleanup EXIT
# vmmig create, the agents vmmigfs starts and the raw path all start QEMU
# through the wrapper.
export VMMIG_QEMU=$HERE/qemu-wrap.sh
QB=$HERE/qmpbench.py
OUT=$QDIR/bench.lines
echo "# load before: $(uptime)" >&2
qenv_start
qenv_boot A web1 || bail_out "web1 did not boot: $(tail -5 "$QDIR/A/run/web1/serial.log" 2>/dev/null)"
out=$(guest A web1 'memcheck start 48 20000' 60)
case "$out" in *started*) ;; *) bail_out "memcheck did not start: $out" ;; esac
guest A web1 '(i=0; while :; do i=$((i+1)); echo "vmmig-hb $i"; usleep 10000; done) </dev/null >/dev/ttyS0 2>&1 & true' >/dev/null ||
    bail_out "no heartbeat in the guest"
qwait 5 "grep -q 'vmmig-hb 20' '$QDIR/A/run/web1/serial.log'" || bail_out "the guest's heartbeat does not show"
note "web1 runs on hostA: memcheck on 48 MiB at 20000 pages/s, heartbeat every 10 ms"

ip_of() { [ "$1" = A ] && echo "$SUBNET.1" || echo "$SUBNET.2"; }
ns_of() { [ "$1" = A ] && echo "/run/netns/$NS_A" || echo "/run/netns/$NS_B"; }
kv() { sed -n "s/.*\(^\| \)$1=\([^ ]*\).*/\2/p" <<<"$2"; }
ms() { # FROM TO: milliseconds between two times in seconds, "-" if one is missing
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-") print "-"; else printf "%.0f\n", (b - a) * 1000 }'
}

# one move: TOOL FROM TO K -> a BENCH line in $OUT (and on stdout)
MOVES=0
move() {
    local tool=$1 from=$2 to=$3 k=$4 src obs opid t0 t1 rc res ores v
    MOVES=$((MOVES + 1))
    src=$(readlink -f "$QDIR/$from/run/web1")
    guest "$from" web1 'memcheck gap-reset' >/dev/null
    obs=$QDIR/obs.$MOVES
    python3 "$QB" observe "$src" "$QDIR/$to/run" >"$obs.out" 2>"$obs.err" &
    opid=$!
    BG=$opid
    qwait 15 "grep -qs ready '$obs.out'" || bail_out "the observer did not start: $(cat "$obs.err")"
    if [ "$tool" = vmmig ] || [ "$tool" = direct ]; then
        local stream=relay
        [ "$tool" = direct ] && stream=direct
        t0=$EPOCHREALTIME
        if [ "$BENCH_QEMU_VIA" = send ]; then
            on "$from" "$VMMIG" send --stream=$stream web1 "host$to" >"$QDIR/cmd.$MOVES" 2>&1
        else
            on "$from" "$VMMIG" migrate --stream $stream web1 "host$to" >"$QDIR/cmd.$MOVES" 2>&1
        fi
        rc=$?
        t1=$EPOCHREALTIME
        # send: "result ok ... total_ms=N downtime_ms=N ..."; migrate: "web1: migrated to ..."
        res=$(grep -E '^result|migrated to' "$QDIR/cmd.$MOVES" | tail -n1)
        case "$res" in "result ok"* | *"migrated to"*) ;; *) rc=1 ;; esac
    else
        nice -n 10 python3 "$QB" "$tool" "$QDIR/$from/run" "$QDIR/$to/run" web1 "$(ns_of "$to")" \
            "$(ip_of "$to")" $((49200 + MOVES)) "$VMMIG_QEMU" >"$QDIR/cmd.$MOVES" 2>&1
        rc=$?
        res=$(tail -n1 "$QDIR/cmd.$MOVES")
        t0=$(kv t0 "$res")
        t1=$(kv end "$res")
    fi
    [ "$rc" = 0 ] || bail_out "$tool $from->$to failed (status $rc): $(tail -5 "$QDIR/cmd.$MOVES")"
    # the observer ends once it saw the guest run on the destination
    qwait 20 "! kill -0 $opid 2>/dev/null" || kill "$opid" 2>/dev/null
    wait "$opid" 2>/dev/null
    BG=
    ores=$(tail -n1 "$obs.out")
    v=$(guest "$to" web1 'memcheck verify' 60 | grep -o 'pages=[0-9]* bad=[0-9]* max_gap_ms=[0-9.]*')
    case "$v" in
    *" bad=0 "*) ;;
    *) bail_out "$tool $from->$to: memcheck on host$to says '${v:-nothing}': the guest is broken, the numbers are worthless" ;;
    esac
    local line
    line="BENCH tool=$tool dir=$from$to k=$k"
    line+=" total_ms=$(ms "$t0" "$(kv dst_resume "$ores")")"
    line+=" downtime_ms=$(kv qm_downtime_ms "$ores")"
    line+=" pause_ms=$(ms "$(kv src_stop "$ores")" "$(kv dst_resume "$ores")")"
    line+=" gap_ms=$(ms "$(kv hb_src_last "$ores")" "$(kv hb_dst_first "$ores")")"
    line+=" cmd_ms=$(ms "$t0" "$t1")"
    line+=" dst_up_ms=$(ms "$t0" "$(kv dst_greeting "$ores")")"
    line+=" start_ms=$(ms "$t0" "$(kv src_setup "$ores")")"
    line+=" copy_ms=$(ms "$(kv src_setup "$ores")" "$(kv src_stop "$ores")")"
    line+=" stopcopy_ms=$(ms "$(kv src_stop "$ores")" "$(kv src_completed "$ores")")"
    line+=" dst_done_ms=$(ms "$(kv src_completed "$ores")" "$(kv dst_completed "$ores")")"
    line+=" resume_ms=$(ms "$(kv dst_completed "$ores")" "$(kv dst_resume "$ores")")"
    line+=" tail_ms=$(ms "$(kv dst_resume "$ores")" "$t1")"
    line+=" qemu_total_ms=$(kv qm_total_ms "$ores") qemu_setup_ms=$(kv qm_setup_ms "$ores")"
    line+=" mbps=$(kv qm_mbps "$ores" | awk '{ printf "%.0f", $1 }')"
    line+=" sent_mib=$(kv qm_transferred "$ores" | awk '{ printf "%.0f", $1 / 1048576 }')"
    line+=" syncs=$(kv qm_syncs "$ores") hb=$(kv hb_src_last_n "$ores")/$(kv hb_dst_first_n "$ores")"
    [ "$tool" = vmmig ] || [ "$tool" = direct ] && line+=" vmmig_says=$(sed -n 's/.*total_ms=\([0-9]*\) downtime_ms=\([0-9]*\).*/\1\/\2/p' <<<"$res")"
    line+=" memcheck_gap_ms=$(sed -n 's/.*max_gap_ms=\([0-9.]*\).*/\1/p' <<<"$v")"
    line+=" pages=$(sed -n 's/.*pages=\([0-9]*\).*/\1/p' <<<"$v") bad=0"
    echo "$line" | tee -a "$OUT"
}

if [ -n "${BENCH_ONLY_VMMIG:-}" ]; then
    ROUND="vmmig:A:B direct:B:A direct:A:B vmmig:B:A"
else
    ROUND="vmmig:A:B raw:B:A direct:A:B rawtls:B:A raw:A:B vmmig:B:A rawtls:A:B direct:B:A"
fi
r=1
while [ $r -le "$BENCH_QEMU_SAMPLES" ]; do
    for step in $ROUND; do
        IFS=: read -r tool from to <<<"$step"
        move "$tool" "$from" "$to" $r
    done
    r=$((r + 1))
done
echo "# load after: $(uptime)" >&2

field() { sed -n "s/^BENCH tool=$1 .* $2=\(-\{0,1\}[0-9][0-9]*\).*/\1/p" "$OUT"; }
med() { field "$1" "$2" | median; }
bench_table 50 8 "bench migrate-qemu (medians, $BENCH_QEMU_SAMPLES x 2 directions)" raw vmmig "" <<ROWS
ratio|total time: start -> running on the destination, ms|$(med raw total_ms)|$(med vmmig total_ms)|<= 1.05x|1.05
diff|downtime (QEMU query-migrate, source), ms|$(med raw downtime_ms)|$(med vmmig downtime_ms)|<= +5 ms|5
info|guest paused: source STOP -> destination RESUME, ms|$(med raw pause_ms)|$(med vmmig pause_ms)|(QEMU events)
info|gap in the guest's serial heartbeat, ms|$(med raw gap_ms)|$(med vmmig gap_ms)|(host-side, +up to 10 ms)
info|command wall time, ms|$(med raw cmd_ms)|$(med vmmig cmd_ms)|(includes the source's removal)
ROWS
echo
# The direct stream (--stream=direct) against the same raw moves, with the
# same targets: what vmmig's control adds when it does not carry the stream.
bench_table 50 8 "vmmig --stream=direct against raw QMP (medians)" raw direct "" <<ROWS
ratio|total time: start -> running on the destination, ms|$(med raw total_ms)|$(med direct total_ms)|<= 1.05x|1.05
diff|downtime (QEMU query-migrate, source), ms|$(med raw downtime_ms)|$(med direct downtime_ms)|<= +5 ms|5
info|guest paused: source STOP -> destination RESUME, ms|$(med raw pause_ms)|$(med direct pause_ms)|(QEMU events)
info|command wall time, ms|$(med raw cmd_ms)|$(med direct cmd_ms)|(includes the source's removal)
info|QEMU's throughput, Mbit/s|$(med raw mbps)|$(med direct mbps)|
ROWS
echo
# The same QEMU move with its stream authenticated (and encrypted) by
# QEMU's own TLS: what an admin gets from QEMU when the stream must not be
# alterable on the way, as vmmig's chunks are not (no target: a reference).
bench_table 50 8 "against raw QMP with QEMU's TLS (tls-creds-psk)" rawtls vmmig "" <<ROWS
info|total time: start -> running on the destination, ms|$(med rawtls total_ms)|$(med vmmig total_ms)|
info|downtime (QEMU query-migrate, source), ms|$(med rawtls downtime_ms)|$(med vmmig downtime_ms)|
info|QEMU's throughput, Mbit/s|$(med rawtls mbps)|$(med vmmig mbps)|
ROWS
echo
bench_table 50 8 "where the time goes (medians, ms)" raw vmmig "vmmig-raw" <<ROWS
info|start -> destination QEMU answers QMP|$(med raw dst_up_ms)|$(med vmmig dst_up_ms)|
info|start -> source migration starts (setup event)|$(med raw start_ms)|$(med vmmig start_ms)|
info|pre-copy: setup -> source STOP|$(med raw copy_ms)|$(med vmmig copy_ms)|
info|stop-and-copy: STOP -> source completed|$(med raw stopcopy_ms)|$(med vmmig stopcopy_ms)|
info|source completed -> destination completed|$(med raw dst_done_ms)|$(med vmmig dst_done_ms)|
info|destination completed -> RESUME|$(med raw resume_ms)|$(med vmmig resume_ms)|
info|RESUME -> command returns|$(med raw tail_ms)|$(med vmmig tail_ms)|
info|QEMU's total-time (query-migrate)|$(med raw qemu_total_ms)|$(med vmmig qemu_total_ms)|
info|QEMU's throughput, Mbit/s|$(med raw mbps)|$(med vmmig mbps)|
info|sent by QEMU, MiB|$(med raw sent_mib)|$(med vmmig sent_mib)|
ROWS
