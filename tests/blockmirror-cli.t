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
done_testing
