# Issue 3, with stock tools: the PVH guest `tiny` created on hostA moves to
# hostB with `xl migrate -s xen2-ssh tiny 10.99.0.2` (xl runs
# `exec xen2-ssh 10.99.0.2 xl migrate-receive` through sh: the receiver runs
# in hostB's dom0 through its stream service), runs and answers there through
# the guest command channel with its state intact, is gone from hostA; then
# it comes back with plain `xl migrate tiny hostA` run on hostB (xl's default
# `ssh`, here the stand-in).

if guest_create tiny; then
    tap_ok "guest_create tiny on hostA"
else
    tap_not_ok "guest_create tiny on hostA"
    exit 0
fi
ida=$(guest_domid tiny)
out=$(guest_run tiny 'echo "state from hostA" > /tmp/marker; cat /tmp/marker'); rc=$?
is "$out" "state from hostA" "the guest keeps a marker in its memory (tmpfs)"
boot_id=$(guest_run tiny 'cat /proc/sys/kernel/random/boot_id')

t=$(now)
out=$(xl migrate -s xen2-ssh tiny 10.99.0.2 2>&1); rc=$?
secs=$(elapsed_since "$t")
is "$rc" 0 "xl migrate -s xen2-ssh tiny 10.99.0.2 succeeds"
[ "$rc" = 0 ] || diag "$out"
diag "xl migrate hostA -> hostB: $secs s"
diag "xl (sender) said: $(echo "$out" | grep -v '^ *$' | tail -n 3 | tr '\n' '|')"

out=$(host_run B 'xl list'); rc=$?
like "$out" "^tiny +[0-9]+ +128 " "tiny runs on hostB (xl list on hostB)"
idb=$(guest_domid_on B tiny)
diag "tiny: domid $ida on hostA -> $idb on hostB"
out=$(guest_run_on B tiny 'cat /tmp/marker'); rc=$?
is "$rc" 0 "the guest answers on hostB through the command channel"
is "$out" "state from hostA" "the guest kept its memory across hosts"
is "$(guest_run_on B tiny 'cat /proc/sys/kernel/random/boot_id')" "$boot_id" "same boot of the guest (no reboot)"
if xl domid tiny >/dev/null 2>&1; then
    tap_not_ok "tiny is gone from hostA"
    diag "$(xl list)"
else
    tap_ok "tiny is gone from hostA"
fi
is "$(xl list | awk 'NR > 1' | wc -l)" 1 "hostA runs only Domain-0"

# Back with xl's defaults: `ssh hostA xl migrate-receive` (the stand-in).
t=$(now)
out=$(host_run B 'xl migrate tiny hostA 2>&1'); rc=$?
secs=$(elapsed_since "$t")
is "$rc" 0 "hostB: xl migrate tiny hostA (default ssh transport) succeeds"
[ "$rc" = 0 ] || diag "$out"
diag "xl migrate hostB -> hostA: $secs s (timed on hostA, includes host_run)"
like "$(guest_domid tiny)" "^[0-9]+$" "tiny is back on hostA"
is "$(guest_run tiny 'cat /tmp/marker')" "state from hostA" "and answers with its state"
like "$(host_run B 'xl list')" "^Domain-0" "hostB still answers"
if host_run B 'xl domid tiny' >/dev/null 2>&1; then
    tap_not_ok "tiny is gone from hostB"
else
    tap_ok "tiny is gone from hostB"
fi
