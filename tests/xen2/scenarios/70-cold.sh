# Cold migration between hypervisors (issue 6): web1, a Xen PVH domain on
# hostA with a raw disk, is moved stopped to the QEMU/KVM host on this
# machine (tests/xen2/kvmhost/, reached through hostA's second NIC) with
# `vmmig migrate --cold`, boots there, and comes back the same way.  The
# guest (image/cold-init) finds its disk by the name on its command line
# (cold_disk=/dev/xvda, /dev/vda under QEMU: the mapping), keeps a boot log
# in the disk's first block and ticks on hvc0.  Refused first: web1
# running, paused, held (migration = "no"), things QEMU cannot take (pci,
# vif), and a destination where the name is taken; each leaves the source
# as it was.
M=/run/vmmig
K=$KVM_ADDR
check "hostA's NIC on QEMU's user network is up" kvm_net_up
check "the QEMU/KVM host answers (guestfwd to this machine's loopback)" kvm_run true
[ -s /etc/vmmig/key ] || { mkdir -p /etc/vmmig && (umask 077; echo xen2-cold-key-0123456789abcdef > /etc/vmmig/key); }
check "the QEMU/KVM host has hostA's key" kvm_run "printf '%s\n' $(shq "$(cat /etc/vmmig/key)") > key"
# what hostA adds to the xl.cfg of a domain arriving cold (TCG's SVM:
# Xen cannot emulate RDTSCP, as tests/xen/image/tiny.cfg says)
echo 'tsc_mode = "native"' > /etc/vmmig/cold-xl.cfg
mkdir -p $M
mountpoint -q $M || check "vmmigfs --listen on hostA (the way back)" vmmigfs --listen 8123 $M

# web1: a PVH guest with an 8 MiB disk (block 0 its boot log, the rest random)
mkdir -p /var/lib/cold
dd if=/dev/zero of=/var/lib/cold/web1.img bs=1M count=1 2>/dev/null
dd if=/dev/urandom bs=1M count=7 2>/dev/null >> /var/lib/cold/web1.img
tailsum() { tail -c +1048577 "$1" | sha256sum | cut -d' ' -f1; }
SUM=$(tailsum /var/lib/cold/web1.img)
cat > /etc/xen/web1.cfg <<'EOF'
name = "web1"
uuid = "6a1c0f4e-7d2b-4c11-9e0a-c01d00000001"
type = "pvh"
tsc_mode = "native"
kernel = "/guest/vmlinuz"
ramdisk = "/xen2/cold-initrd.gz"
extra = "console=hvc0 loglevel=4 rdinit=/init cold_disk=/dev/xvda"
memory = 128
vcpus = 1
disk = [ 'format=raw, vdev=xvda, access=rw, target=/var/lib/cold/web1.img' ]
on_crash = "destroy"
EOF
check "xl create web1 (PVH, raw disk)" xl create /etc/xen/web1.cfg
if wait_for "guest_console web1 | grep -q 'COLD-GUEST: up on xen disk=/dev/xvda boots=1'" 90; then
    tap_ok "web1 boots on Xen and finds its disk as /dev/xvda"
else
    tap_not_ok "web1 boots on Xen and finds its disk as /dev/xvda"
    diag "$(guest_console web1 | tail -n 20)"
fi

out=$(vmmig migrate --cold web1 $K 2>&1); rc=$?
is "$rc" 1 "running: vmmig migrate --cold web1 is refused"
like "$out" "web1 is running: shut it down or migrate it live" "  with the reason"
xl pause web1
out=$(vmmig migrate --cold web1 $K 2>&1); rc=$?
is "$rc" 1 "paused: refused"
like "$out" "web1 is paused .*its memory cannot cross hypervisors" "  memory state cannot cross: said so"
xl destroy web1
wait_for "! xl domid web1 >/dev/null 2>&1" 20

sed -e 's/^name = .*/name = "web2"/' -e '/^uuid/d' /etc/xen/web1.cfg > /etc/xen/web2.cfg
echo 'migration = "no"' >> /etc/xen/web2.cfg
out=$(vmmig migrate --cold web2 $K 2>&1); rc=$?
is "$rc" 1 "migration = \"no\": refused"
like "$out" 'locked: migration = "no"' "  as locked, naming the setting"
sed -e 's/^name = .*/name = "web3"/' -e '/^uuid/d' /etc/xen/web1.cfg > /etc/xen/web3.cfg
echo "pci = [ '01:00.0' ]" >> /etc/xen/web3.cfg
out=$(vmmig migrate --cold web3 $K 2>&1); rc=$?
is "$rc" 1 "pci = [...]: refused"
like "$out" "pci: PCI passthrough devices are this host's hardware" "  with the reason"
{ grep -v '^pci' /etc/xen/web3.cfg; echo 'vif = [ "bridge=xenbr0" ]'; } > /tmp/web3.cfg
mv /tmp/web3.cfg /etc/xen/web3.cfg
out=$(vmmig migrate --cold web3 $K 2>&1); rc=$?
# a vif crosses with its bridge, which the QEMU/KVM host lacks: refused there
like "$out" "refused its configuration: vif 0: no bridge xenbr0 on this host" \
    "vif on a bridge the QEMU/KVM host lacks: refused there, naming it (status $rc)"
rm -f /etc/xen/web2.cfg /etc/xen/web3.cfg

# the destination refuses: a domain named web1 is there already
kvm_run 'printf "name = \"web1\"\nkernel = \"/nonexistent\"\n" > taken.cfg && mkdir -p run/.dom/99 && cp taken.cfg run/.dom/99/domain.cfg && echo 99 > run/.dom/99/domid && ln -s .dom/99 run/web1'
out=$(vmmig migrate --cold web1 $K 2>&1); rc=$?
is "$rc" 1 "the QEMU/KVM host has a web1: refused there"
like "$out" "refused by $K: a domain named web1 is here already" "  with its reason"
ok_src() { [ -f /etc/xen/web1.cfg ] && [ "$(tailsum /var/lib/cold/web1.img)" = "$SUM" ]; }
check "  web1's configuration and disk on hostA are untouched" ok_src
is "$(kvm_run 'ls -A disks')" "" "  nothing of it was left on the QEMU/KVM host"
kvm_run 'rm -rf run/web1 run/.dom/99 taken.cfg'

# Xen -> QEMU
t0=$(now)
out=$(vmmig migrate --cold web1 $K 2>&1); rc=$?
is "$rc" 0 "vmmig migrate --cold web1 (Xen PVH -> QEMU) in $(elapsed_since "$t0") s"
diag "$out"
like "$out" "cold_disk=/dev/xvda became cold_disk=/dev/vda" "  the disk's name on the command line is mapped (xvda -> vda)"
like "$out" "moved cold to $K .*verified" "  copied and verified"
check "  hostA keeps web1's configuration as web1.cfg.moved-to-$K" test -f "/etc/xen/web1.cfg.moved-to-$K" -a ! -e /etc/xen/web1.cfg
if kvm_run 'for i in $(seq 120); do grep -q "COLD-GUEST: up on qemu disk=/dev/vda boots=2" run/web1/console.log 2>/dev/null && exit 0; sleep 1; done; exit 1'; then
    tap_ok "web1 boots under QEMU and finds its disk as /dev/vda (its second boot)"
else
    tap_not_ok "web1 boots under QEMU and finds its disk as /dev/vda (its second boot)"
    diag "$(kvm_run 'tail -n 20 run/web1/console.log; tail -n 5 agent.log')"
fi
like "$(kvm_run 'cat run/web1/console.log')" "disk log: boot 1 on xen;" "  its disk holds what it wrote on Xen"
is "$(kvm_run 'tail -c +1048577 disks/web1.vda.img | sha256sum | cut -d" " -f1')" "$SUM" "  the rest of its disk is byte-identical to hostA's"
t1=$(kvm_run 'grep -c "COLD-GUEST: tick" run/web1/console.log')
sleep 3
t2=$(kvm_run 'grep -c "COLD-GUEST: tick" run/web1/console.log')
check "  it runs there (ticks $t1 -> $t2)" test "${t2:-0}" -gt "${t1:-0}"
check "  not on hostA" sh -c '! xl domid web1 >/dev/null 2>&1'

# QEMU -> Xen: stopped there (its QEMU ended), then moved back
kvm_run 'kill $(cat run/web1/qemu.pid); for i in $(seq 50); do kill -0 $(cat run/web1/qemu.pid) 2>/dev/null || exit 0; sleep 0.2; done; exit 1'
t0=$(now)
out=$(kvm_run '$KVM_VMMIG migrate --cold -p $KVM_BACK_PORT web1 127.0.0.1 2>&1'); rc=$?
is "$rc" 0 "vmmig migrate --cold web1 (QEMU -> Xen PVH, from the QEMU/KVM host) in $(elapsed_since "$t0") s"
diag "$out"
check "  hostA runs web1" xl domid web1
like "$(cat /etc/xen/web1.cfg 2>/dev/null)" "type = \"pvh\"" "  from an xl.cfg for a PVH domain"
like "$(cat /etc/xen/web1.cfg 2>/dev/null)" "tsc_mode = \"native\"" "  with hostA's additions (/etc/vmmig/cold-xl.cfg)"
like "$(cat /etc/xen/web1.cfg 2>/dev/null)" "cold_disk=/dev/xvda" "  its command line back in Xen's names"
if wait_for "guest_console web1 | grep -q 'COLD-GUEST: up on xen disk=/dev/xvda boots=3'" 90; then
    tap_ok "web1 boots on Xen again, its disk /dev/xvda (its third boot)"
else
    tap_not_ok "web1 boots on Xen again, its disk /dev/xvda (its third boot)"
    diag "$(guest_console web1 | tail -n 20)"
fi
like "$(guest_console web1)" "disk log: boot 1 on xen;boot 2 on qemu;" "  its disk holds what it wrote on Xen and under QEMU"
is "$(tailsum /var/lib/vmmig/disks/web1.xvda.img)" "$SUM" "  the rest of its disk is still byte-identical"
is "$(kvm_run 'ls run')" "" "  web1's stopped instance on the QEMU/KVM host is removed"
like "$out" "its disks here are no longer used by it: .*/web1.vda.img" "  and its disks there are said to be unused"
xl destroy web1 2>/dev/null
rm -f /etc/xen/web1.cfg* /var/lib/vmmig/disks/web1.* /var/lib/cold/web1.img /etc/vmmig/cold-xl.cfg
