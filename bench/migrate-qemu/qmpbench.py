#!/usr/bin/python3
"""QMP helpers of bench/migrate-qemu/run.sh.

qmpbench.py observe SRC_INSTANCE DST_RUNDIR
    Watches one move from the outside, on the extra monitor bench.sock that
    qemu-wrap.sh gives every QEMU: the source's MIGRATION and STOP events,
    then (as soon as the source says completed) its query-migrate; the
    destination instance that appears in DST_RUNDIR/.dom/, its events
    (MIGRATION, RESUME); and the guest's serial heartbeat ("vmmig-hb N"
    lines) in both instances' serial.log, each line stamped with the time
    it was seen here (polled every 2 ms).  Prints "ready" once connected to
    the source, then on its end (everything seen, SIGTERM, or 180 s) one
    line of key=value: times are CLOCK_REALTIME seconds (QEMU stamps its
    events with the host's real time too), "-" when not seen.

qmpbench.py raw SRC_RUNDIR DST_RUNDIR NAME DST_NETNS DST_IP PORT WRAPPER
    The reference: a plain QMP migration of domain NAME from the host of
    SRC_RUNDIR to the host of DST_RUNDIR.  The destination QEMU gets the
    source's own command line (read from /proc; instance paths rewritten,
    -incoming defer -S, started in DST_NETNS through WRAPPER, as vmmig
    starts it); then migrate-incoming tcp:DST_IP:PORT there and migrate
    tcp:DST_IP:PORT on the source, with the capabilities and parameters
    vmmig's engine sets (events on; max-bandwidth 100 GiB/s; downtime-limit
    $VMMIG_QEMU_DOWNTIME_MS, default 5000); once both sides say completed
    (MIGRATION events), cont on the destination.  Then the bookkeeping vmmig
    does too, so that vmmig finds the domain on its next move: the name
    linked to the new instance, the source QEMU quit and its instance
    removed.  The clock starts after the interpreter's start-up, just before
    the destination's instance is made: the reference is a QMP client that
    is already running.  Prints one key=value line of times (as above).

qmpbench.py rawtls ...
    The same, with QEMU's own TLS on the stream: a tls-creds-psk object on
    both QEMUs over a key file with a random 256-bit key made for the move,
    tls-creds (and a tls-hostname, which QEMU wants for a client) set on
    both, reset on the destination after cont (it is the next source).
"""
import ctypes
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

HB = re.compile(rb"vmmig-hb (\d+)\r?\n")
MAX_BANDWIDTH = 107374182400  # lib/qemumig.c: QEMU_MAX_BANDWIDTH


def ev_time(m):
    t = m.get("timestamp", {})
    return t.get("seconds", 0) + t.get("microseconds", 0) / 1e6


class Qmp:
    """One QMP connection; non-blocking reads, messages split by lines."""

    def __init__(self, path, deadline):
        while True:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                break
            except OSError:
                s.close()
                if time.time() > deadline:
                    raise
                time.sleep(0.002)
        s.setblocking(False)
        self.s, self.buf, self.state, self.closed = s, b"", "greeting", False
        self.pending = []  # parsed messages not yet handled

    def fileno(self):
        return self.s.fileno()

    def send(self, cmd, args=None, ident=None):
        m = {"execute": cmd}
        if args is not None:
            m["arguments"] = args
        if ident is not None:
            m["id"] = ident
        data = (json.dumps(m) + "\n").encode()
        self.s.setblocking(True)
        self.s.sendall(data)
        self.s.setblocking(False)

    def poll(self):
        """Read what is there; returns the complete messages."""
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    self.closed = True
                    break
                self.buf += d
        except BlockingIOError:
            pass
        except OSError:
            self.closed = True
        out = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if line.strip():
                out.append(json.loads(line))
        # the handshake: greeting -> qmp_capabilities -> ready
        for m in out:
            if self.state == "greeting" and "QMP" in m:
                self.send("qmp_capabilities", ident="cap")
                self.state = "negotiating"
            elif self.state == "negotiating" and m.get("id") == "cap":
                self.state = "ready"
        return [m for m in out if "QMP" not in m and m.get("id") != "cap"]

    def ready(self, deadline):
        """Wait for the end of the handshake; messages go to pending."""
        while self.state != "ready":
            if time.time() > deadline:
                raise TimeoutError("no QMP greeting")
            self.pending += self.poll()
            if self.closed:
                raise EOFError("QMP connection closed")
            if self.state != "ready":
                select.select([self.s], [], [], 0.05)

    def wait(self, deadline, until):
        """Poll until until(msg) is true for a message; others go to pending."""
        while time.time() < deadline:
            for m in self.poll():
                if until(m):
                    return m
                self.pending.append(m)
            if self.closed:
                raise EOFError("QMP connection closed")
            select.select([self.s], [], [], 0.05)
        raise TimeoutError("no answer on QMP")

    def execute(self, cmd, args=None, timeout=30):
        deadline = time.time() + timeout
        self.ready(deadline)
        ident = "c%d" % time.monotonic_ns()
        self.send(cmd, args, ident)
        m = self.wait(deadline, lambda m: m.get("id") == ident)
        if "error" in m:
            raise RuntimeError("%s: %s" % (cmd, m["error"].get("desc")))
        return m.get("return")


class Tail:
    """New heartbeat lines of a growing serial.log, stamped when seen."""

    def __init__(self, path, from_end):
        self.f = open(path, "rb")
        if from_end:
            self.f.seek(0, os.SEEK_END)
        self.buf = b""

    def beats(self):
        d = self.f.read()
        if not d:
            return []
        now = time.time()
        self.buf += d
        out = [(now, int(m.group(1))) for m in HB.finditer(self.buf)]
        i = self.buf.rfind(b"\n")
        if i >= 0:
            self.buf = self.buf[i + 1:]
        return out


def observe(src_dir, dst_run):
    res = {}
    dom = os.path.join(dst_run, ".dom")
    before = set(os.listdir(dom)) if os.path.isdir(dom) else set()
    src = Qmp(os.path.join(src_dir, "bench.sock"), time.time() + 10)
    src.ready(time.time() + 10)
    src_tail = Tail(os.path.join(src_dir, "serial.log"), True)
    dst = dst_tail = None
    dst_dir = None
    asked = 0.0  # when query-migrate is due (0: not yet)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    print("ready", flush=True)
    deadline = time.time() + 180
    while not stop and time.time() < deadline:
        socks = [q for q in (src, dst) if q and not q.closed]
        select.select(socks, [], [], 0.002)
        for m in src.poll() if not src.closed else []:
            ev = m.get("event")
            if ev == "STOP":
                res["src_stop"] = ev_time(m)
            elif ev == "MIGRATION":
                st = m["data"]["status"]
                res.setdefault("src_" + st.replace("-", "_"), ev_time(m))
                if st == "completed" and not asked:
                    asked = time.time()
            elif m.get("id") == "qm" and "return" in m:
                r = m["return"]
                # QEMU sends the event before it computes the totals:
                # until then they read 0; ask again 10 ms later
                if not r.get("total-time") and time.time() - res.get("src_completed", 0) < 5:
                    asked = time.time() + 0.01
                    continue
                ram = r.get("ram", {})
                res.update(qm_status=r.get("status"), qm_downtime_ms=r.get("downtime"),
                           qm_total_ms=r.get("total-time"), qm_setup_ms=r.get("setup-time"),
                           qm_mbps=ram.get("mbps"), qm_transferred=ram.get("transferred"),
                           qm_syncs=ram.get("dirty-sync-count"))
        if asked and time.time() >= asked and not src.closed:
            try:
                src.send("query-migrate", ident="qm")
            except OSError:
                src.closed = True
            asked = float("inf")
        if dst_dir is None and os.path.isdir(dom):
            new = sorted(set(os.listdir(dom)) - before)
            if new:
                dst_dir = os.path.join(dom, new[0])
                res["dst_dir_seen"] = time.time()
        if dst_dir and dst is None and os.path.exists(os.path.join(dst_dir, "bench.sock")):
            try:
                dst = Qmp(os.path.join(dst_dir, "bench.sock"), time.time())
                res["dst_connected"] = time.time()
            except OSError:
                dst = None
        if dst and not dst.closed:
            was = dst.state
            for m in dst.poll():
                ev = m.get("event")
                if ev == "RESUME":
                    res.setdefault("dst_resume", ev_time(m))
                elif ev == "MIGRATION":
                    res.setdefault("dst_" + m["data"]["status"].replace("-", "_"), ev_time(m))
            if was == "greeting" and dst.state != "greeting":
                res["dst_greeting"] = time.time()
        if dst_dir and dst_tail is None and os.path.exists(os.path.join(dst_dir, "serial.log")):
            dst_tail = Tail(os.path.join(dst_dir, "serial.log"), False)
        for t, n in src_tail.beats():
            res["hb_src_last"], res["hb_src_last_n"] = t, n
        if dst_tail:
            for t, n in dst_tail.beats():
                if "hb_dst_first" not in res:
                    res["hb_dst_first"], res["hb_dst_first_n"] = t, n
        if "dst_resume" in res and "hb_dst_first" in res and ("qm_status" in res or src.closed):
            break
    keys = ("src_setup src_active src_stop src_completed qm_status qm_downtime_ms qm_total_ms "
            "qm_setup_ms qm_mbps qm_transferred qm_syncs dst_dir_seen dst_connected dst_greeting "
            "dst_completed dst_resume hb_src_last hb_src_last_n hb_dst_first hb_dst_first_n").split()
    print(" ".join("%s=%s" % (k, fmt(res.get(k))) for k in keys), flush=True)


def fmt(v):
    if v is None:
        return "-"
    return "%.6f" % v if isinstance(v, float) else str(v)


def raw(src_run, dst_run, name, netns, ip, port, wrapper, tls=False):
    res = {}
    downtime = int(os.environ.get("VMMIG_QEMU_DOWNTIME_MS") or 5000)
    src_dir = os.path.realpath(os.path.join(src_run, name))
    with open(os.path.join(src_dir, "qemu.pid")) as f:
        src_pid = int(f.read().strip())
    with open("/proc/%d/cmdline" % src_pid, "rb") as f:
        argv = [a.decode() for a in f.read().split(b"\0")[:-1]]
    # the source's own line, less what marks it as (once) incoming and the
    # monitor the wrapper adds (it adds it again)
    args, i = [], 1
    while i < len(argv):
        a = argv[i]
        if a == "-incoming":
            i += 2
            continue
        if a == "-S" or (a == "-qmp" and "/bench.sock," in argv[i + 1]):
            i += 1 if a == "-S" else 2
            continue
        args.append(a)
        i += 1
    libc = ctypes.CDLL(None, use_errno=True)
    nsfd = os.open(netns, os.O_RDONLY)

    def enter_ns():
        if libc.setns(nsfd, 0x40000000) != 0:  # CLONE_NEWNET
            os._exit(126)

    t0 = time.time()
    res["t0"] = t0
    dom = os.path.join(dst_run, ".dom")
    os.makedirs(dom, exist_ok=True)
    n = 1
    while True:
        try:
            os.mkdir(os.path.join(dom, str(n)), 0o750)
            break
        except FileExistsError:
            n += 1
    dst_dir = os.path.join(dom, str(n))
    shutil.copyfile(os.path.join(src_dir, "domain.cfg"), os.path.join(dst_dir, "domain.cfg"))
    with open(os.path.join(dst_dir, "domid"), "w") as f:
        f.write("%d\n" % n)
    cmd = [wrapper] + [a.replace(src_dir, dst_dir) for a in args] + ["-incoming", "defer", "-S"]
    with open(os.path.join(dst_dir, "qemu.log"), "ab") as log:
        rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            preexec_fn=enter_ns, start_new_session=True).returncode
    if rc:
        sys.exit("raw: the destination QEMU did not start (status %d), see %s/qemu.log"
                 % (rc, dst_dir))
    res["dst_started"] = time.time()
    deadline = time.time() + 300
    dst = Qmp(os.path.join(dst_dir, "qmp.sock"), deadline)
    events = {"capabilities": [{"capability": "events", "state": True}]}
    dst.execute("migrate-set-capabilities", events)
    uri = "tcp:%s:%s" % (ip, port)
    src = Qmp(os.path.join(src_dir, "qmp.sock"), deadline)
    if tls:
        # QEMU's own TLS with a pre-shared key, one made for this move
        pskdir = os.path.join(dst_dir, "psk")
        os.makedirs(pskdir, exist_ok=True)
        with open(os.path.join(pskdir, "keys.psk"), "w") as f:
            f.write("vmmig:%s\n" % os.urandom(32).hex())
        for q, ep in ((dst, "server"), (src, "client")):
            args_ = {"qom-type": "tls-creds-psk", "id": "benchpsk", "dir": pskdir,
                     "endpoint": ep}
            if ep == "client":
                args_["username"] = "vmmig"
            try:
                q.execute("object-del", {"id": "benchpsk"})
            except RuntimeError:
                pass
            q.execute("object-add", args_)
            q.execute("migrate-set-parameters", {"tls-creds": "benchpsk",
                                                 "tls-hostname": "vmmig"})
    dst.execute("migrate-incoming", {"uri": uri})
    src.execute("migrate-set-capabilities", events)
    src.execute("migrate-set-parameters", {"max-bandwidth": MAX_BANDWIDTH,
                                           "downtime-limit": downtime})
    src.execute("migrate", {"uri": uri})
    res["migrate_sent"] = time.time()
    done = {}
    last_query = time.time()
    while len(done) < 2:
        if time.time() > deadline:
            sys.exit("raw: no completion in 300 s")
        for side, q in (("src", src), ("dst", dst)):
            msgs, q.pending = q.pending + q.poll(), []
            for m in msgs:
                if m.get("event") == "MIGRATION":
                    st = m["data"]["status"]
                    if st == "completed":
                        done[side] = time.time()
                    elif st in ("failed", "cancelled"):
                        sys.exit("raw: the %s says %s" % (side, st))
            if q.closed and side not in done:
                sys.exit("raw: the %s QEMU went away" % side)
        # in case an event is missed: ask every 250 ms
        if len(done) < 2 and time.time() - last_query > 0.25:
            for side, q in (("src", src), ("dst", dst)):
                if side not in done:
                    st = q.execute("query-migrate").get("status")
                    if st == "completed":
                        done[side] = time.time()
                    elif st in ("failed", "cancelled"):
                        sys.exit("raw: the %s says %s" % (side, st))
            last_query = time.time()
        if len(done) < 2:
            select.select([src, dst], [], [], 0.05)
    res["src_done"], res["dst_done"] = done["src"], done["dst"]
    dst.execute("cont")
    res["cont_done"] = time.time()
    if tls:
        # this QEMU is the next move's source: no TLS left set for vmmig
        dst.execute("migrate-set-parameters", {"tls-creds": "", "tls-hostname": ""})
    # bookkeeping: the name follows, the source goes
    link = os.path.join(dst_run, name)
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(os.path.join(".dom", str(n)), link)
    try:
        src.execute("quit", timeout=5)
    except (EOFError, OSError, TimeoutError, RuntimeError):
        pass
    for _ in range(500):
        try:
            os.kill(src_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    else:
        os.kill(src_pid, signal.SIGKILL)
    src_link = os.path.join(src_run, name)
    if os.path.realpath(src_link) == src_dir:
        os.unlink(src_link)
    shutil.rmtree(src_dir, ignore_errors=True)
    res["end"] = time.time()
    print(" ".join("%s=%s" % (k, fmt(v)) for k, v in res.items()), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "observe":
        observe(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 9 and sys.argv[1] in ("raw", "rawtls"):
        raw(*sys.argv[2:], tls=sys.argv[1] == "rawtls")
    else:
        sys.exit(__doc__)
