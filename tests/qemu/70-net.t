#!/bin/bash
# Network interfaces of QEMU domains (vif): a bridge br0 in each host's
# namespace, with an address from a private range that exists only there;
# a guest with a vif on br0 answers pings from hostA, then from hostB after
# a live migration, with the same MAC (made from its uuid).  A destination
# without the bridge refuses the configuration (the guest runs on at hostA,
# no tap is left on hostB), and so does one where no tap can be made; `vmmig create` refuses malformed vif specs, missing
# bridges and interfaces that are not bridges, leaving no domain and no
# tap; each tap takes its bridge's MTU (a jumbo-frame bridge on hostB keeps
# 9000; a bridge whose MTU no tap can take is refused); a co-migration with a second guest (two vifs) is refused while the
# destination lacks one of its bridges, then moves both; a tap goes when
# its domain ends, also when QEMU is killed.  Two boots (and an e1000
# domain that is killed as it starts).
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/lib.sh"
qenv_init "$@"
qenv_start
MA=$QDIR/A/mnt MB=$QDIR/B/mnt
BNET=10.232.${SUBNET##*.}
# hostA's bridge; hostB's comes later (the refusal first)
ip -n "$NS_A" link add br0 type bridge && ip -n "$NS_A" addr add "$BNET.1/24" dev br0 &&
    ip -n "$NS_A" link set br0 up || bail_out "cannot make hostA's bridge"

taps() { # HOST: the vmmig taps there, one a line ("vmq0 br0", "-": on no bridge)
    local ns
    [ "$1" = A ] && ns=$NS_A || ns=$NS_B
    ip -n "$ns" -o link show 2>/dev/null | awk -F': ' '$2 ~ /^vmq/ {
        m = "-"; if (match($0, / master [^ ]+/)) m = substr($0, RSTART + 8, RLENGTH - 8)
        print $2, m }'
}
mtu() { # HOST IFNAME: its MTU
    local ns
    [ "$1" = A ] && ns=$NS_A || ns=$NS_B
    ip -n "$ns" -o link show "$2" 2>/dev/null | sed -n 's/.* mtu \([0-9]*\) .*/\1/p'
}
hping() { # HOST: the guest answers a ping from there
    on "$1" busybox ping -c 1 -W 2 "$BNET.10" >/dev/null 2>&1 ||
        on "$1" busybox ping -c 2 -W 3 "$BNET.10" >/dev/null 2>&1
}
mkcfg() { # NAME 'VIF LINE': a config for vmmig create
    cat > "$QDIR/$1.cfg" <<CFG
name = "$1"
memory = 136
kernel = "$QCACHE/bzImage"
ramdisk = "$QCACHE/initrd.gz"
cmdline = "console=ttyS0 quiet panic=-1"
$2
CFG
}

# --- vmmig create refuses what it cannot do --------------------------------
refused() { # NAME 'VIF LINE' 'EXPECTED MESSAGE' WHAT
    mkcfg "$1" "$2"
    out=$(on A "$VMMIG" create "$QDIR/$1.cfg" 2>&1)
    rc=$?
    ok "$([ $rc -ne 0 ]; echo $?)" "vmmig create refuses $4 (exit $rc)"
    like "$out" "$3" "  saying: $3" || diag "$out"
}
refused bad1 "vif = [ 'bridge=br0,ip=10.0.0.1' ]" "unknown key 'ip'" "an unknown key"
refused bad2 "vif = [ 'bridge=br0,mac=00:16:3e:zz:00:01' ]" \
    "mac=00:16:3e:zz:00:01 is not a MAC address" "a malformed MAC"
refused bad3 "vif = [ 'bridge=br0,mac=00:16:3e:00:01' ]" "is not a MAC address" "a short MAC"
refused bad4 "vif = [ 'bridge=br0,mac=01:16:3e:00:00:01' ]" "multicast" "a multicast MAC"
refused bad5 "vif = [ 'mac=00:16:3e:00:00:01' ]" "no bridge=" "a vif without bridge"
refused bad6 "vif = [ 'bridge=br0,model=rtl8139' ]" "model=rtl8139 is not one" "an unknown model"
refused bad7 "vif = [ 'bridge=br0,mac' ]" "'mac' is not KEY=VALUE" "a key without a value"
refused bad8 "vif = [ 'bridge=br0/x' ]" "not an interface name" "a bad bridge name"
refused bad9 "vif = [ 'bridge=br0', 'bridge=br9' ]" "vif 1: no bridge br9 on this host" \
    "a missing bridge (after a first vif that was made)"
refused bad10 "vif = [ 'bridge=vqa$$' ]" "vqa$$ on this host is not a bridge" \
    "an interface that is not a bridge"
# a tap cannot take an MTU above 65521: a bridge set to 65535 by hand
ip -n "$NS_A" link add brbig type bridge && ip -n "$NS_A" link set brbig mtu 65535 ||
    bail_out "cannot make hostA's brbig"
refused bad12 "vif = [ 'bridge=brbig' ]" \
    "vif 0: giving the tap vmq[0-9]+ the MTU of brbig \\(65535\\): Invalid argument" \
    "a bridge whose MTU no tap can take"
ip -n "$NS_A" link del brbig
mount -t tmpfs none /dev/net || bail_out "cannot hide /dev/net/tun"
refused bad11 "vif = [ 'bridge=br0' ]" "vif 0: /dev/net/tun: No such file" "a host without /dev/net/tun"
umount /dev/net
ok "$([ -z "$(ls "$QDIR/A/run")" ] && [ -z "$(ls "$QDIR/A/run/.dom" 2>/dev/null)" ]; echo $?)" \
    "  no domain is left behind" || diag "$(ls -la "$QDIR/A/run" "$QDIR/A/run/.dom")"
is "$(taps A)" "" "  and no tap"

# --- a guest on br0 ----------------------------------------------------------
qenv_boot A net1 "vif = [ 'bridge=br0' ]"
ok $? "net1 boots on hostA with a vif on br0" || done_testing
uuid=$(sed -n 's/^uuid = "\(.*\)"/\1/p' "$QDIR/A/run/net1/domain.cfg")
want=00:16:3e:$(printf '%s/0' "$uuid" | sha256sum | sed 's/^\(..\)\(..\)\(..\).*/\1:\2:\3/')
mac=$(guest A net1 'cat /sys/class/net/eth0/address' | tr -d '\r')
is "$mac" "$want" "the guest's eth0 has the MAC made from its uuid ($want)"
like "$(taps A)" '^vmq[0-9]+ br0$' "hostA: a tap on br0"
is "$(taps A)" "$(cut -d' ' -f1,2 "$QDIR/A/run/net1/taps")" "  the one its taps file names"
is "$(mtu A "$(taps A | cut -d' ' -f1)")" 1500 "  with br0's MTU (1500)"
is "$(cut -d' ' -f3 "$QDIR/A/run/net1/taps")" "$want" "  with the guest's MAC"
guest A net1 "ip addr add $BNET.10/24 dev eth0 && ip link set eth0 up && echo up" >/dev/null
qwait 10 "hping A"
ok $? "hostA pings the guest over br0"

# --- hostB has no br0: refused, nothing moves ------------------------------
out=$(on A "$VMMIG" send net1 hostB 2>&1)
like "$out" 'result failed' "vmmig send to a host without br0 fails" || diag "$out"
like "$out" 'hostB refused the configuration: vif 0: no bridge br0 on this host' \
    "  refused by hostB's agent, naming the bridge"
like "$(cat "$MA/net1/status")" 'state: running' "  net1 runs on at hostA"
ok "$([ ! -e "$QDIR/B/run/net1" ] && [ -z "$(ls "$QDIR/B/run/.dom" 2>/dev/null)" ]; echo $?)" \
    "  no net1 on hostB"
is "$(taps B)" "" "  no tap on hostB"
hping A
ok $? "  the guest still answers on hostA"

# --- hostB's bridge, but no tap can be made there ---------------------------
ip -n "$NS_B" link add br0 type bridge && ip -n "$NS_B" addr add "$BNET.2/24" dev br0 &&
    ip -n "$NS_B" link set br0 up || bail_out "cannot make hostB's bridge"
# hostB's br0 carries jumbo frames: an uplink (a veth here) with MTU 9000,
# which the bridge follows (its MTU not set by hand)
ip -n "$NS_B" link add vup0 type veth peer name vup1 && ip -n "$NS_B" link set vup0 mtu 9000 &&
    ip -n "$NS_B" link set vup0 master br0 && ip -n "$NS_B" link set vup0 up ||
    bail_out "cannot give hostB's bridge an uplink"
is "$(mtu B br0)" 9000 "hostB's br0 follows its uplink's MTU (9000)"
# hostB's agent runs in this mount namespace (hostA's QEMU has its tap open)
mount -t tmpfs none /dev/net || bail_out "cannot hide /dev/net/tun"
out=$(on A "$VMMIG" send net1 hostB 2>&1)
umount /dev/net
like "$out" 'result failed' "hostB cannot create its tap: the migration fails" || diag "$out"
like "$out" 'hostB refused the configuration: vif 0: /dev/net/tun: No such file' \
    "  refused before the stream, saying why" || diag "$out"
like "$(cat "$MA/net1/status")" 'state: running' "  net1 runs on at hostA"
ok "$([ ! -e "$QDIR/B/run/net1--incoming" ] && [ -z "$(ls "$QDIR/B/run/.dom" 2>/dev/null)" ]; echo $?)" \
    "  no copy on hostB" || diag "$(ls -la "$QDIR/B/run" "$QDIR/B/run/.dom")"
is "$(taps B)" "" "  and no tap"

# --- live migration ----------------------------------------------------------
echo hostB > "$MA/net1/migrate"
ok $? "echo hostB > migrate: accepted"
qwait 60 "grep -Eq '^(done|migrated)' '$MA/net1/migrate' 2>/dev/null || [ ! -e '$MA/net1' ]"
ok $? "migration done" || diag "$(tail -20 "$QDIR/A/vmmigfs.log")"
qwait 10 "grep -q 'state: running' '$MB/net1/status' 2>/dev/null"
ok $? "net1 runs on hostB"
like "$(taps B)" '^vmq[0-9]+ br0$' "hostB: its tap on br0"
is "$(taps B)" "$(cut -d' ' -f1,2 "$QDIR/B/run/net1/taps")" "  the one its taps file names"
is "$(mtu B "$(taps B | cut -d' ' -f1)")" 9000 "  with br0's MTU (9000)"
is "$(mtu B br0)" 9000 "  and br0 kept it (a tap at 1500 would have lowered it)"
qwait 5 "[ -z \"\$(taps A)\" ]"
ok $? "hostA: the tap went with the source's QEMU" || diag "$(taps A)"
qwait 10 "hping B"
ok $? "hostB pings the guest over its br0"
ok "$(hping A; [ $? -ne 0 ]; echo $?)" "  hostA's bridge has it no more"
is "$(guest B net1 'cat /sys/class/net/eth0/address' | tr -d '\r')" "$want" \
    "  the guest kept its MAC"
like "$(ip -n "$NS_B" neigh show "$BNET.10")" "$want" "  hostB sees that MAC answer"

# --- co-migration: a second guest with two vifs, br0 and br1 -------------------
ip -n "$NS_B" link add br1 type bridge && ip -n "$NS_B" link set br1 up ||
    bail_out "cannot make hostB's br1"
qenv_boot B net3 "vif = [ 'bridge=br0', 'bridge=br1' ]"
ok $? "net3 boots on hostB with vifs on br0 and br1" || done_testing
like "$(guest B net3 'ls /sys/class/net | tr "\n" " "')" 'eth0 eth1' "  the guest has eth0 and eth1"
guest B net3 "ip addr add $BNET.11/24 dev eth0 && ip link set eth0 up && echo up" >/dev/null
out=$(on B "$VMMIG" comigrate hostA net1 net3 2>&1); rc=$?
is "$rc" 1 "vmmig comigrate hostA net1 net3: hostA has no br1, the group fails" || diag "$out"
like "$out" 'vif 1: no bridge br1 on this host' "  naming the bridge" || diag "$out"
qwait 10 "grep -q 'state: running' '$MB/net1/status' && grep -q 'state: running' '$MB/net3/status'"
ok $? "  both run on at hostB"
qwait 5 "[ -z \"\$(taps A)\" ] && [ -z \"\$(ls '$QDIR/A/run/.dom' 2>/dev/null)\" ]"
ok $? "  nothing of either on hostA" || diag "$(taps A)" "$(ls -la "$QDIR/A/run/.dom")"
ip -n "$NS_A" link add br1 type bridge && ip -n "$NS_A" link set br1 up ||
    bail_out "cannot make hostA's br1"
out=$(on B "$VMMIG" comigrate hostA net1 net3 2>&1); rc=$?
is "$rc" 0 "with br1 on hostA: the group moves" || diag "$out"
qwait 10 "grep -q 'state: running' '$MA/net1/status' && grep -q 'state: running' '$MA/net3/status'"
ok $? "  both run on hostA"
is "$(taps A | awk '{print $2}' | sort | tr '\n' ' ')" "br0 br0 br1 " "  three taps there: br0, br0, br1"
qwait 5 "[ -z \"\$(taps B)\" ]"
ok $? "  none left on hostB" || diag "$(taps B)"
qwait 10 "hping A"
ok $? "hostA pings net1 again"
on A busybox ping -c 2 -W 3 "$BNET.11" >/dev/null 2>&1
ok $? "  and net3"

# --- the tap goes with the domain ---------------------------------------------
pid=$(cat "$QDIR/A/run/net1/qemu.pid")
tap=$(cut -d' ' -f1 "$QDIR/A/run/net1/taps")
guest A net1 'poweroff -f' 2 >/dev/null
qwait 20 "! kill -0 $pid 2>/dev/null"
ok $? "net1 powers off: its QEMU ends"
qwait 5 "! taps A | grep -q '^$tap '"
ok $? "  and its tap $tap is gone" || diag "$(taps A)"
is "$(taps A | wc -l)" 2 "  net3's two stay"

# --- model=e1000, and a QEMU that is killed -------------------------------------
mkcfg net2 "vif = [ 'bridge=br0,mac=00:16:3E:5a:01:02,model=e1000' ]"
out=$(on A "$VMMIG" create "$QDIR/net2.cfg" 2>&1)
ok $? "vmmig create: net2 with an e1000 vif" || diag "$out"
pid=$(cat "$QDIR/A/run/net2/qemu.pid")
like "$(tr '\0' ' ' < "/proc/$pid/cmdline")" 'e1000,netdev=net0,id=nic0,mac=00:16:3e:5a:01:02 ' \
    "  QEMU has an e1000 with the given MAC"
is "$(taps A | wc -l)" 3 "  its tap, beside net3's"
kill -9 "$pid"
qwait 5 "[ \"\$(taps A | wc -l)\" = 2 ]"
ok $? "QEMU killed: the tap is gone with it" || diag "$(taps A)"
done_testing
