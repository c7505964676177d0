# bench/migrate: vmmig's protocol against plain `xl migrate` of the same
# domain between the same two emulated Xen hosts, in the same run.  Rounds
# alternate the two tools and the directions (xl A->B, xl B->A, vmmig A->B,
# vmmig B->A); a guest heartbeat (memcheck, every 10 ms) gives the downtime
# each tool causes as the largest gap the guest saw.  Prints BENCH lines;
# the host side (bench/migrate/run.sh) turns them into a table.
M=/run/vmmig
KEY='bench-shared-key-0123456789abcdef'
ROUNDS=${BENCH_ROUNDS:-2}
setup='mkdir -p /etc/vmmig && (umask 077; printf "%s\n" '"$KEY"' > /etc/vmmig/key) && mkdir -p '$M' && vmmigfs --listen 8123 '$M
guest_create tiny || { tap_not_ok "guest_create tiny"; exit 0; }
sh -c "$setup" && host_run B "$setup" >/dev/null || { tap_not_ok "vmmigfs on both hosts"; exit 0; }
memcheck_start tiny 32 >/dev/null || { tap_not_ok "memcheck in tiny"; exit 0; }
tap_ok "set up: tiny with memcheck, vmmigfs --listen on both hosts"

ms_now() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
# one migration: TOOL FROM TO -> "BENCH tool=... ms=... gap_ms=..."
one() {
    local tool=$1 from=$2 to=$3 t0 t1 rc out gap
    if [ "$from" = A ]; then guest_run tiny 'memcheck gap-reset' >/dev/null
    else guest_run_on B tiny 'memcheck gap-reset' >/dev/null; fi
    case "$tool:$from" in
    xl:A) t0=$(ms_now); xl migrate tiny hostB >/dev/null 2>&1; rc=$?; t1=$(ms_now) ;;
    xl:B) out=$(host_run B 't0=$(awk "{printf \"%d\", \$1*1000}" /proc/uptime); xl migrate tiny hostA >/dev/null 2>&1; rc=$?; t1=$(awk "{printf \"%d\", \$1*1000}" /proc/uptime); echo $rc $((t1 - t0))')
          rc=${out%% *}; t0=0; t1=${out##* } ;;
    vmmig:A) t0=$(ms_now); vmmig send tiny hostB >/tmp/bench.out 2>&1; rc=$?; t1=$(ms_now) ;;
    vmmig:B) out=$(host_run B 't0=$(awk "{printf \"%d\", \$1*1000}" /proc/uptime); vmmig send tiny hostA >/dev/null 2>&1; rc=$?; t1=$(awk "{printf \"%d\", \$1*1000}" /proc/uptime); echo $rc $((t1 - t0))')
          rc=${out%% *}; t0=0; t1=${out##* } ;;
    esac
    if [ "$to" = A ]; then out=$(guest_run tiny 'memcheck verify'); else out=$(guest_run_on B tiny 'memcheck verify'); fi
    gap=$(memcheck_field max_gap_ms "$out")
    if [ "$rc" = 0 ] && memcheck_field bad "$out" | grep -qx 0; then
        tap_ok "$tool $from->$to: $((t1 - t0)) ms, guest saw a ${gap} ms gap"
        diag "BENCH tool=$tool dir=$from$to ms=$((t1 - t0)) gap_ms=$gap"
    else
        tap_not_ok "$tool $from->$to (rc $rc, memcheck: $out)"
    fi
}
r=0
while [ $r -lt "$ROUNDS" ]; do
    one xl A B; one xl B A; one vmmig A B; one vmmig B A
    r=$((r + 1))
done
host_run B "fusermount3 -u $M" >/dev/null
fusermount3 -u $M
