# Issue 3's guest workload, on one host: memcheck (image/memcheck.c) fills
# 32 MiB of tiny with patterned pages, keeps rewriting 2000 pages/s (so the
# guest dirties memory during pre-copy) and beats every 10 ms. A local live
# migration with stock xl must leave every page intact; the largest
# heartbeat gap is the guest's view of the downtime. Last, a flipped byte
# must make verify fail: the check is real.
# Why 32 MiB: of tiny's 128 MiB, Debian's kernel keeps ~46 MiB (code + bss)
# and the unpacked initramfs ~9 MiB; about 50 MiB are available to user
# space (MemAvailable right after boot), and 48 MiB mlocked got memcheck
# OOM-killed (memcheck now refuses MIB + 8 > MemAvailable instead).
MIB=32
PAGES=$((MIB * 256))

if guest_create tiny; then
    tap_ok "guest_create tiny"
else
    tap_not_ok "guest_create tiny"
    exit 0
fi

diag "tiny: $(guest_run tiny 'grep -E "^Mem(Total|Available)" /proc/meminfo' | tr -s ' \n' ' ')"
out=$(memcheck_start tiny $MIB); rc=$?
is "$rc" 0 "memcheck start $MIB in tiny"
diag "$out"
[ "$rc" = 0 ] || { diag "$(guest_console tiny | tail -n 20)"; exit 0; }
sleep 2

out=$(memcheck_verify tiny); rc=$?
is "$rc" 0 "memcheck verify before the migration: exit 0"
like "$out" "^pages=$PAGES bad=0 " "all $PAGES pages as written"
diag "before: $out"
rw0=$(memcheck_field rewrites "$out")
guest_run tiny 'memcheck gap-reset' >/dev/null
domid=$(guest_domid tiny)

t0=$(date +%s)
out=$(xl migrate -s '' tiny 'xl migrate-receive' 2>&1); rc=$?
is "$rc" 0 "xl migrate -s '' tiny 'xl migrate-receive' while memcheck runs"
[ "$rc" = 0 ] || diag "$out"
diag "xl migrate took $(( $(date +%s) - t0 )) s; domid $domid -> $(guest_domid tiny)"

out=$(memcheck_verify tiny 2>&1); rc=$?
is "$rc" 0 "memcheck verify after the migration: exit 0"
if [ "$rc" != 0 ]; then
    diag "verify said: $out"
    diag "xl list: $(xl list 2>&1 | tr -s ' \n' ' ')"
    diag "tiny's console, last lines:"
    diag "$(guest_console tiny 2>&1 | tail -n 15 | sed 's/^/  /')"
    diag "xl dmesg, last lines:"
    diag "$(xl dmesg 2>&1 | tail -n 10 | sed 's/^/  /')"
fi
like "$out" "^pages=$PAGES bad=0 " "all $PAGES pages intact after the migration"
diag "after: $out"
gap=$(memcheck_field max_gap_ms "$out")
like "$gap" '^[0-9]+\.[0-9]$' "the daemon kept beating across the migration"
rw1=$(memcheck_field rewrites "$out")
diag "heartbeat: largest gap across the migration ${gap:-?} ms (CLOCK_MONOTONIC), $(memcheck_field max_gap_real_ms "$out") ms (CLOCK_REALTIME); $(memcheck_field beats "$out") beats"
if [ -n "$rw0" ] && [ -n "$rw1" ] && [ "$rw1" -gt "$rw0" ]; then
    tap_ok "memcheck rewrote pages meanwhile ($((rw1 - rw0)) since the first verify)"
else
    tap_not_ok "memcheck rewrote pages meanwhile (rewrites $rw0 -> $rw1)"
fi

# The check is real: one flipped byte in page 777 (never rewritten after).
out=$(guest_run tiny 'memcheck corrupt 777'); rc=$?
is "$rc" 0 "memcheck corrupt 777"
out=$(memcheck_verify tiny); rc=$?
is "$rc" 1 "memcheck verify fails (exit 1) after one flipped byte"
like "$out" "^pages=$PAGES bad=1 " "exactly one bad page"
like "$out" "^bad page 777 " "the bad page is 777"
diag "corrupted: $out"

out=$(guest_run tiny 'memcheck stop'); rc=$?
is "$rc" 0 "memcheck stop"
out=$(guest_run tiny 'memcheck verify'); rc=$?
is "$rc" 2 "no daemon after stop (verify exits 2)"
