#!/bin/bash
# The command line: usage errors exit 2 with a hint, failures exit 1 with
# "vmmig blockmirror: message: strerror", status prints one key: value per
# line with the documented keys.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/blockmirror.sh"
bm_init

V=$VMMIG
usage() { # DESC ARGS...: exits 2 and prints the hint
    local desc=$1 out st
    shift
    out=$("$V" blockmirror "$@" 2>&1)
    st=$?
    [ "$st" = 2 ] && [[ "$out" == *"Try 'vmmig blockmirror --help'"* ]]
    ok $? "$desc: exit 2 with usage" || diag "  exit $st: $out"
}
usage "no subcommand"
usage "unknown subcommand" frobnicate
usage "unknown option" status --bogus
usage "serve without a socket" serve "$T/x.img"
usage "serve with both --socket and --listen" serve "$T/x.img" -s "$T/s" -l 10999
usage "serve without an image" serve -s "$T/s"
usage "bad block size" serve "$T/x.img" -s "$T/s" --block-size 1000
usage "bad timeout" serve "$T/x.img" -s "$T/s" --timeout 0
usage "bad --size" receive "$T/x.img" -s "$T/s" --size 12Q
usage "--peer on receive" receive "$T/x.img" -s "$T/s" --peer nbd://x
usage "status without --control or IMAGE" status
usage "attach without URL" attach -c "$T/c"
usage "--wait on status" status --wait -c "$T/c"
usage "--resync on switch" switch --resync -c "$T/c"
run_ok "--help exits 0" "$V" blockmirror --help
like "$("$V" blockmirror --help)" '^usage: vmmig blockmirror serve' "--help starts with usage"

out=$("$V" blockmirror serve "$T/missing.img" -s "$T/s" 2>&1)
is "$?" 1 "a missing image: exit 1"
is "$out" "vmmig blockmirror: $T/missing.img: No such file or directory" "message: path: strerror"
out=$("$V" blockmirror status -c "$T/nothing.ctl" 2>&1)
is "$?" 1 "no server at the control socket: exit 1"
like "$out" "^vmmig blockmirror: $T/nothing.ctl \\(is .* running\\?\\): (No such file|Connection refused)" \
    "message names the socket"

truncate -s 4M "$T/a.img"
bm_serve a "$T/a.img"
ok $? "serve"
out=$("$V" blockmirror status "$T/a.img" -c "$T/a.ctl")
ok $? "status"
for k in state size dirty_bytes synced_bytes bytes_sent rate peer last_error; do
    like "$out" "^$k: " "status has $k"
done
is "$(printf '%s\n' "$out" | grep -cv '^[a-z_]*: ')" 0 "every line is key: value"
is "$(bm_status a size)" 4194304 "size"
is "$(bm_status a peer)" none "peer: none"
out=$("$V" blockmirror attach nbd+unix:///?socket=/nonexistent.sock -c "$T/a.ctl" 2>&1)
is "$?" 1 "attach to nobody: exit 1"
like "$out" '/nonexistent.sock: No such file or directory' "attach says why"
is "$(bm_status a peer)" none "a failed attach keeps no peer"
out=$("$V" blockmirror verify -c "$T/a.ctl" 2>&1)
is "$?" 1 "verify without a peer: exit 1"
like "$out" 'no peer connected' "verify says why"
out=$("$V" blockmirror serve "$T/a.img" -s "$T/b.sock" -c "$T/b.ctl" 2>&1)
is "$?" 1 "a second primary on the same image is refused"
like "$out" 'another blockmirror serving' "and says why"
"$V" blockmirror serve "$T/a.img" -l 127.0.0.1:notaport -c "$T/c.ctl" 2>/dev/null
isnt "$?" 0 "a bad TCP port fails"

# --nbd-device and --agent-fd (the migration integration): bad input.
out=$("$V" blockmirror serve "$T/a.img" 2>&1)
is "$?" 2 "serve without -s, -l or -d: usage"
like "$out" 'needs one of --socket or --listen or --nbd-device' "  ...says what is missing"
out=$("$V" blockmirror receive "$T/r.img" --nbd-device /dev/null 2>&1)
is "$?" 2 "receive without -s or -l: usage, also with --nbd-device"
out=$("$V" blockmirror serve "$T/a.img" --nbd-device "$T/missing-dev" 2>&1)
is "$?" 2 "--nbd-device that does not exist: usage"
like "$out" "--nbd-device: $T/missing-dev: No such file or directory" "  ...says so"
out=$("$V" blockmirror serve "$T/a.img" --nbd-device /dev/null 2>&1)
is "$?" 2 "--nbd-device /dev/null: usage"
like "$out" '/dev/null: not a block device' "  ...not a block device"
if mknod "$T/blk7" b 7 200 2>/dev/null && mknod "$T/nbd250" b 43 250 2>/dev/null; then
    out=$("$V" blockmirror serve "$T/a.img" --nbd-device "$T/blk7" 2>&1)
    is "$?" 2 "--nbd-device on another kind of block device: usage"
    like "$out" 'not an NBD device \(major 7, NBD is 43\)' "  ...says which major"
    truncate -s 1M "$T/n.img"
    out=$(timeout 20 "$V" blockmirror serve "$T/n.img" --nbd-device "$T/nbd250" -c "$T/n.ctl" 2>&1)
    is "$?" 1 "an NBD device node without a working device: exit 1"
    like "$out" "$T/nbd250: " "  ...naming the device: $(printf '%s' "$out" | head -n1)"
    [ -e "$T/n.ctl" ]
    isnt "$?" 0 "  ...and its control socket is gone"
else
    skip "mknod not allowed here" 5
fi
out=$("$V" blockmirror serve "$T/a.img" -s "$T/x.sock" --agent-fd 3 3>/dev/null 2>&1)
is "$?" 2 "serve --agent-fd: usage"
like "$out" 'agent-fd is for receive' "  ...says so"
out=$("$V" blockmirror receive "$T/r.img" -s "$T/x.sock" --agent-fd 99 2>&1)
is "$?" 2 "--agent-fd not open: usage"
like "$out" "--agent-fd: '99' is not an open descriptor" "  ...says so"
out=$("$V" blockmirror receive "$T/r.img" -s "$T/x.sock" -c "$T/x.ctl" 2>&1)
is "$?" 2 "receive --control without --nbd-device: usage"
out=$("$V" blockmirror status --nbd-device /dev/null -c "$T/a.ctl" 2>&1)
is "$?" 2 "status --nbd-device: usage"
# The agent's end: "ready port=N" once listening; end of file before the
# switch stops the secondary (exit 1), the image stays.
out=$(V="$V" T="$T" timeout 60 python3 - <<'PY' 2>&1
import os, socket, subprocess
V, T = os.environ["V"], os.environ["T"]
a, b = socket.socketpair()
err = open(T + "/agent.err", "w")
p = subprocess.Popen([V, "blockmirror", "receive", T + "/r.img", "--size", "1M", "-l",
                      "127.0.0.1:0", "--agent-fd", str(b.fileno())], pass_fds=[b.fileno()],
                     stderr=err)
b.close()
f = a.makefile("r")
print(f.readline().strip())
a.shutdown(socket.SHUT_RDWR)
a.close()
print("exit", p.wait())
PY
)
like "$(printf '%s\n' "$out" | head -n1)" '^ready port=[1-9][0-9]*$' \
    "receive --agent-fd says 'ready port=N' ($(printf '%s\n' "$out" | head -n1))"
is "$(printf '%s\n' "$out" | tail -n1)" "exit 1" \
    "end of file on the agent fd before the switch: the secondary stops, exit 1"
like "$(cat "$T/agent.err")" 'the migration agent went away before the switch' "  ...and says why"
[ -f "$T/r.img" ]
ok $? "  ...the image stays (a stale replica for the next attempt)"
done_testing
