#!/bin/bash
# --disk NAME, a QEMU domain's disk (target=blockmirror:NAME): the primary
# serves IMAGE on STATE_DIR/blockmirror/NAME.nbd with its control socket
# NAME.bmctl beside it; the secondary (receive --disk NAME) serves its copy
# on its own host's NAME.nbd for the incoming QEMU, reads at once and
# writes only after the switch, and stays as the primary of NAME with the
# same connections.  Two "hosts" here are two state directories; qemu-io
# plays QEMU.  Bad names and a name served twice are refused.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/blockmirror.sh"
bm_init qemu-io

V=$VMMIG
A=$T/stA B=$T/stB
url() { printf 'nbd+unix:///?socket=%s/blockmirror/%s.nbd' "$1" "$2"; }
qio() { # STATE_DIR NAME COMMAND: qemu-io on that disk socket
    qemu-io -f raw -c "$3" "$(url "$1" "$2")" >/dev/null 2>&1
}
on() { local dir=$1; shift; VMMIG_STATE_DIR=$dir "$@"; }

for n in nbd0 ../x .x 'a b' "$(printf 'x%.0s' {1..64})"; do
    out=$(on "$A" "$V" blockmirror serve "$T/a.img" --disk "$n" 2>&1)
    is "$?" 2 "--disk '$n': usage"
done
like "$out" "is not a disk name" "  ...says why"
out=$(on "$A" "$V" blockmirror serve "$T/a.img" --disk d1 --nbd-device /dev/nbd0 2>&1)
is "$?" 2 "--disk with --nbd-device: usage"
like "$out" 'exclude each other' "  ...says so"
out=$(on "$A" "$V" blockmirror status --disk d1 -c "$T/x.ctl" 2>&1)
is "$?" 2 "status --disk with --control: usage"
out=$(on "$A" "$V" blockmirror status --disk d1 "$T/a.img" 2>&1)
is "$?" 2 "status --disk with an IMAGE: usage"
out=$(on "$A" "$V" blockmirror receive "$T/r.img" --disk d1 2>&1)
is "$?" 2 "receive --disk without --socket or --listen: usage"
out=$(VMMIG_STATE_DIR=$T/$(printf 'd%.0s' {1..80}) "$V" blockmirror serve "$T/a.img" --disk d1 2>&1)
is "$?" 2 "a disk socket too long for a unix socket: usage"
like "$out" 'too long' "  ...says so"

# ---- the primary ----
bm_random "$T/a.img" 4
bm_bg pa env VMMIG_STATE_DIR="$A" "$V" blockmirror serve "$T/a.img" --disk d1
bm_wait_sock "$A/blockmirror/d1.nbd" && bm_wait_sock "$A/blockmirror/d1.bmctl"
ok $? "serve --disk d1: STATE_DIR/blockmirror/d1.nbd and d1.bmctl"
is "$(on "$A" "$V" blockmirror status --disk d1 | sed -n 's/^state: //p')" standalone \
    "status --disk d1: standalone"
qio "$A" d1 'write -P 0xab 0 64k'
ok $? "a write through the disk socket"
qio "$A" d1 'read -P 0xab 0 64k'
ok $? "  ...reads back"
truncate -s 1M "$T/other.img"
out=$(on "$A" "$V" blockmirror serve "$T/other.img" --disk d1 2>&1)
is "$?" 1 "a second serve of the name d1 is refused"
like "$out" 'another blockmirror' "  ...says why"
ok "$( [ -S "$A/blockmirror/d1.nbd" ]; echo $? )" "  ...and the first keeps its socket"
qio "$A" d1 'read -P 0xab 0 64k'
ok $? "  ...and serves on"

# ---- the secondary, the domain's socket on its own host ----
bm_bg sb env VMMIG_STATE_DIR="$B" "$V" blockmirror receive "$T/b.img" --size 4M \
    --socket "$T/sb.sock" --disk d1
bm_wait_sock "$T/sb.sock" && bm_wait_sock "$B/blockmirror/d1.nbd"
ok $? "receive --disk d1: the peer's socket and the domain's"
on "$A" "$V" blockmirror attach "$(bm_url sb)" --wait --disk d1
ok $? "attach --wait --disk d1: in sync"
qio "$B" d1 'read -P 0xab 0 64k'
ok $? "the secondary's disk socket reads the mirrored data"
qio "$A" d1 'write -P 0xef 64k 64k'
qio "$B" d1 'read -P 0xef 64k 64k'
ok $? "  ...and every write mirrored since"
timeout 3 qemu-io -f raw -c 'write -P 0x55 3M 4k' "$(url "$B" d1)" >/dev/null 2>&1
is "$?" 124 "a write on the secondary's disk socket waits for the switch"
ok "$( [ ! -e "$B/blockmirror/d1.bmctl" ]; echo $? )" "the secondary has no control socket yet"

# ---- the switch ----
out=$(on "$A" "$V" blockmirror switch --disk d1 2>&1)
ok $? "switch --disk d1" || diag "$out"
for ((i = 0; i < 50; i++)); do
    kill -0 "${BM_PID[pa]}" 2>/dev/null || break
    sleep 0.1
done
bm_kill pa
is "$BM_EXIT" 0 "the primary exits 0"
ok "$( [ ! -e "$A/blockmirror/d1.nbd" ] && [ ! -e "$A/blockmirror/d1.bmctl" ]; echo $? )" \
    "  ...its sockets are gone"
bm_wait_sock "$B/blockmirror/d1.bmctl"
ok $? "the secondary is the primary of d1 now: $B/blockmirror/d1.bmctl"
is "$(on "$B" "$V" blockmirror status --disk d1 | sed -n 's/^state: //p')" standalone "  ...standalone"
like "$(cat "$T/sb.log")" "switched; the primary of $B/blockmirror/d1.nbd now" "  ...and says so"
qio "$B" d1 'write -P 0x12 128k 4k' && qio "$B" d1 'read -P 0x12 128k 4k'
ok $? "  ...writes through its disk socket go through"
cmp -s -n 131072 "$T/a.img" "$T/b.img"
ok $? "the copy was identical at the switch"
kill -0 "${BM_PID[sb]}"
ok $? "the new primary serves on"
bm_kill sb
is "$BM_EXIT" 0 "  ...until SIGTERM, exit 0"
ok "$( [ ! -e "$B/blockmirror/d1.nbd" ] && [ ! -e "$B/blockmirror/d1.bmctl" ]; echo $? )" \
    "  ...which removes its sockets"
done_testing
