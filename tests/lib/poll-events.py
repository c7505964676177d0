#!/usr/bin/env python3
"""poll-events.py EVENTS_FILE QUIET_MS TIMEOUT_MS -- CMD1... [-- CMD2...]...

Opens EVENTS_FILE once and reads it to EOF.  Then for each trigger command
K (1, 2, ...):
  1. poll()s for QUIET_MS while nothing happens and prints
     "K quiet: timeout" (good) or "K quiet: woke revents=0x..";
  2. runs CMD K 200 ms into a second poll() of at most TIMEOUT_MS and prints
     "K wake: yes MS revents=0x.." (MS after the command started) or
     "K wake: timeout";
  3. prints each event line new since the previous read as "K new: LINE"
     (read on from the offset, or re-read from the start after a seek, as
     sysfs-style files want).
Exit status: 0 when every second poll woke, 1 otherwise, 2 on usage errors.
"""
import os
import select
import subprocess
import sys
import threading
import time


def read_all(fd):
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def main():
    args = sys.argv[1:]
    if len(args) < 5 or args[3] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    path, quiet_ms, timeout_ms = args[0], int(args[1]), int(args[2])
    triggers, cur = [], None
    for a in args[3:]:
        if a == "--":
            cur = []
            triggers.append(cur)
        else:
            cur.append(a)
    if not all(triggers):
        print(__doc__, file=sys.stderr)
        return 2

    fd = os.open(path, os.O_RDONLY)
    seen = read_all(fd).decode(errors="replace").splitlines()
    mask = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP
    p = select.poll()
    p.register(fd, mask)
    all_woke = True

    for k, trigger in enumerate(triggers, 1):
        ev = p.poll(quiet_ms)
        if ev:
            print("%d quiet: woke revents=0x%x" % (k, ev[0][1]), flush=True)
            read_all(fd)  # drain, so the next poll() starts clean
        else:
            print("%d quiet: timeout" % k, flush=True)

        started = {}

        def fire(cmd=trigger):
            started["t"] = time.monotonic()
            subprocess.run(cmd, check=False)

        t = threading.Timer(0.2, fire)
        t.start()
        ev = p.poll(timeout_ms)
        now = time.monotonic()
        t.join()
        if ev:
            ms = int((now - started.get("t", now)) * 1000)
            print("%d wake: yes %d revents=0x%x" % (k, ms, ev[0][1]), flush=True)
        else:
            all_woke = False
            print("%d wake: timeout" % k, flush=True)

        more = read_all(fd).decode(errors="replace").splitlines()
        if more:
            new = more
            seen += more
        else:
            os.lseek(fd, 0, os.SEEK_SET)
            whole = read_all(fd).decode(errors="replace").splitlines()
            old = set(seen)
            new = [l for l in whole if l not in old]
            seen = whole
        for line in new:
            print("%d new: %s" % (k, line), flush=True)
    os.close(fd)
    return 0 if all_woke else 1


if __name__ == "__main__":
    sys.exit(main())
