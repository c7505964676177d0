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
    resume=$(spread "$(val resume_ms " $a")" "$(val resume_ms " $b")")
    if [ -n "$a" ] && [ -n "$b" ] && [ -n "$stop" ] && [ -n "$resume" ]; then
        tap_ok "$way $from->$to: $ms ms, stop skew $stop ms, resume skew $resume ms"
        diag "BENCH way=$way dir=$from$to ms=$ms stop_skew_ms=$stop resume_skew_ms=$resume"
    else
        tap_not_ok "$way $from->$to"
        diag "$out"
    fi
}
r=0
while [ $r -lt "$ROUNDS" ]; do
    one group A B; one group B A; one independent A B; one independent B A
    r=$((r + 1))
done
for g in grpa grpb; do
    out=$(guest_run $g 'memcheck verify')
    like "$out" " bad=0( |$)" "$g's memory intact after all the moves ($out)"
done
host_run B "fusermount3 -u $M" >/dev/null
fusermount3 -u $M
