# The private network between the two emulated machines and the harness'
# cross-host plumbing: addresses, names, ping both ways, host_run (output and
# exit status), the stream service, and throughput (busybox nc, and xen2-tcp,
# the transport the migrations use). NC_MB (default 10) MB through busybox nc,
# NET_MB (default 50) through xen2-tcp: run.sh passes XEN2_NC_MB and
# XEN2_NET_MB on the dom0 command line.

is "$(hostname)" hostA "this is hostA"
like "$(ip -4 addr show dev eth0)" "inet 10\.99\.0\.1/24" "hostA has 10.99.0.1/24 on eth0"

out=$(ping -c 5 -i 0.2 -W 2 10.99.0.2 2>&1); rc=$?
is "$rc" 0 "hostA pings hostB (10.99.0.2)"
diag "ping A->B: $(echo "$out" | tail -n 1)"
out=$(host_run B 'ping -c 3 -i 0.2 -W 2 hostA 2>&1 || ping -c 3 -i 0.2 -W 2 10.99.0.1'); rc=$?
is "$rc" 0 "hostB pings hostA"
diag "ping B->A: $(echo "$out" | tail -n 1)"

out=$(host_run B 'hostname; ip -4 addr show dev eth0'); rc=$?
is "$rc" 0 "host_run B succeeds"
like "$out" "^hostB$" "host_run B runs on hostB"
like "$out" "inet 10\.99\.0\.2/24" "hostB has 10.99.0.2/24"
out=$(host_run B 'echo out; echo err >&2; exit 7'); rc=$?
is "$rc" 7 "host_run returns the exit status"
is "$(echo "$out" | tr '\n' ' ')" "out err " "host_run returns stdout and stderr"
is "$(host_run B "printf '%s\n' $(shq "it's \"quoted\" \$HOME")")" "it's \"quoted\" \$HOME" "shq quotes for host_run"
like "$(host_run B 'xl info | sed -n "s/^xen_version *: //p"')" "^4\.17\." "hostB runs Xen 4.17 (xl info over host_run)"
like "$(host_run B 'netstat -ltn')" "10\.99\.0\.2:7001 .*LISTEN" "hostB's command service binds 10.99.0.2 only"
out=$(host_run A hostname); rc=$?
is "$out" hostA "host_run A works too (services on both hosts)"

# The ssh stand-in: a binary-clean stream both ways.
sum_local=$(dd if=/dev/urandom bs=1k count=512 2>/dev/null | tee /tmp/rnd | md5sum | cut -d' ' -f1)
is "$(xen2-ssh hostB md5sum < /tmp/rnd | cut -d' ' -f1)" "$sum_local" "xen2-ssh hostB md5sum: 512 KiB through the stream service"
is "$(ssh 10.99.0.2 'cat /etc/hostname 2>/dev/null || hostname')" hostB "ssh (the stand-in) runs a command on hostB"
rm -f /tmp/rnd

# Throughput, busybox nc (1 KiB copies; the listener binds all of hostB's
# addresses, which exist only inside the emulated machine). The listener's
# stdin is a FIFO opened read-write, which never ends: busybox nc half-closes
# the connection at EOF on its stdin, and the client quits when it sees that.
MB=${NC_MB:-10}
out=$(host_run B 'rm -f /tmp/nc.fifo; mkfifo /tmp/nc.fifo
    (nc -l -p 7005 <> /tmp/nc.fifo | wc -c > /tmp/nc.bytes; rm -f /tmp/nc.fifo) </dev/null >/dev/null 2>&1 &
    wait_for "netstat -ltn | grep -q \":7005 \"" 10'); rc=$?
is "$rc" 0 "busybox nc listens on hostB:7005"
t=$(now)
dd if=/dev/zero bs=1M count="$MB" 2>/dev/null | nc 10.99.0.2 7005
secs=$(elapsed_since "$t")
got=$(host_run B 'wait_for "[ -s /tmp/nc.bytes ]" 30; cat /tmp/nc.bytes; rm -f /tmp/nc.bytes')
is "$got" "$((MB * 1048576))" "$MB MB through busybox nc A->B arrived"
diag "throughput busybox nc A->B: $MB MB in $secs s = $(awk -v s="$secs" -v m="$MB" 'BEGIN { printf "%.1f", m / s }') MB/s"

# Throughput, xen2-tcp (128 KiB copies; what xen2-ssh and so xl migrate use).
MB=${NET_MB:-50}
t=$(now)
got=$(dd if=/dev/zero bs=1M count="$MB" 2>/dev/null | xen2-ssh hostB 'wc -c')
secs=$(elapsed_since "$t")
is "$got" "$((MB * 1048576))" "$MB MB through xen2-ssh A->B arrived"
diag "throughput xen2-tcp A->B: $MB MB in $secs s = $(awk -v s="$secs" -v m="$MB" 'BEGIN { printf "%.1f", m / s }') MB/s"
