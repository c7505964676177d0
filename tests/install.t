#!/bin/bash
# make install / uninstall into a DESTDIR: every file lands, links resolve,
# the installed binary runs, and uninstall removes all but the policy.
. "$(dirname "$0")/lib/tap.sh"
top=$(cd "$(dirname "$0")/.." && pwd)
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT

run_ok "make install" make -C "$top" -s install DESTDIR="$dest" PREFIX=/usr
for f in usr/bin/vmmig usr/bin/vmmigfs usr/bin/guestctl usr/share/man/man8/vmmigfs.8 \
         usr/share/man/man1/vmmig-lock.1 usr/share/man/man1/vmmig-unlock.1 \
         usr/share/man/man5/vmmig.policy.5 usr/share/man/man4/vmmig-migration-lock.4 \
         lib/systemd/system/vmmigfs.service etc/vmmig/policy; do
    [ -e "$dest/$f" ] && pass "installed $f" || fail "installed $f"
done
is "$(readlink "$dest/usr/bin/vmmigfs")" vmmig "vmmigfs is a link to vmmig"
like "$("$dest/usr/bin/guestctl" --help)" "usage: guestctl" "the guestctl link runs the applet"
like "$(cat "$dest/lib/systemd/system/vmmigfs.service")" "ExecStart=/usr/bin/vmmigfs -f /run/vmmig" \
    "unit points at the installed binary"
echo "guest_max_hold = 5" > "$dest/etc/vmmig/policy"
run_ok "install again" make -C "$top" -s install DESTDIR="$dest" PREFIX=/usr
like "$(cat "$dest/etc/vmmig/policy")" "guest_max_hold = 5" "a second install keeps the local policy"
run_ok "make uninstall" make -C "$top" -s uninstall DESTDIR="$dest" PREFIX=/usr
left=$(cd "$dest" && find . -type f -o -type l | sort | tr '\n' ' ')
is "$left" "./etc/vmmig/policy " "uninstall leaves only the policy"
done_testing
