#!/bin/bash
# poll() on the events file sleeps while nothing happens and wakes when a
# hold changes (admin or guest), with the new event readable afterwards.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/xenenv.sh"
xenenv_init "$@"
xenenv_require_vmmig
xenenv_start

M=$XENENV_MNT
D=$M/vm-alpha
NODE=/local/domain/5/control/migration-lock
POLLER=$(dirname "$0")/lib/poll-events.py
xs_add 5 vm-alpha "$(uuid_for 5)" 262144 2 || bail_out "xsfake add failed"
vmmigfs_start "$M"
ok $? "vmmigfs mounts" || done_testing
wait_domain vm-alpha || bail_out "vm-alpha never appeared"
sleep 0.2   # let the start-up events settle

# One poller process for all the triggers; each changes a hold.
out=$(timeout -k 1 30 "$PYTHON" "$POLLER" "$M/events" 300 3000 \
    -- bash -c 'echo "1 reason=poll" > "$1"' _ "$D/lock" \
    -- bash -c 'echo 0 > "$1"' _ "$D/lock" \
    -- xenstore-write "$NODE" "1 reason=guest poll" \
    -- xenstore-write "$NODE" 0 2>&1)
note "$out"

k=0
for desc in "admin hold set" "admin hold released" "guest hold set" "guest hold released"; do
    k=$((k + 1))
    is "$(printf '%s\n' "$out" | grep "^$k quiet:")" "$k quiet: timeout" \
        "$desc: poll() sleeps while nothing happens"
    like "$(printf '%s\n' "$out" | grep "^$k wake:")" "^$k wake: yes " \
        "$desc: poll() wakes within 3s"
    like "$(printf '%s\n' "$out" | grep "^$k new:")" "^$k new: [^ ]+ vm-alpha " \
        "$desc: the new event is readable after the wake-up"
done

done_testing
