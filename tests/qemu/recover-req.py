#!/usr/bin/env python3
"""recover-req.py HOST PORT KEYFILE KEY=VALUE...: send one RECOVER
(vmmig-protocol(7), POST-COPY RECOVERY) to the agent on HOST:PORT after the
handshake, and print the answer as "TYPE key=value ...".  A test client for
the refusals: it never relays a stream (an accepted RECOVER prints
RECOVER_OK and the connection is closed)."""
import hashlib, hmac, os, socket, struct, sys

NAMES = {4: "AUTH_OK", 5: "AUTH_FAIL", 52: "ABORT", 97: "RECOVER_OK", 98: "RECOVER_FAIL"}

def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise SystemExit("the agent closed the connection")
        b += c
    return b

def main():
    host, port, keyfile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    payload = "".join(kv + "\n" for kv in sys.argv[4:]).encode()
    psk = open(keyfile, "rb").read()
    if psk.endswith(b"\n"):
        psk = psk[:-1]
    s = socket.create_connection((host, port), timeout=20)
    seq = {"out": 0}
    key = {"k": None}

    def send(t, p):
        h = b"VMMG" + struct.pack(">BBHIII", 3, t, 0, seq["out"], len(p), 0)
        seq["out"] += 1
        mac = hmac.new(key["k"], h + p, hashlib.sha256).digest()[:16] if key["k"] else b""
        s.sendall(h + p + mac)

    def recv():
        h = recv_exact(s, 20)
        if h[:4] != b"VMMG":
            raise SystemExit("not a vmmig agent")
        t, n = h[5], struct.unpack(">I", h[12:16])[0]
        p = recv_exact(s, n)
        if key["k"]:
            recv_exact(s, 16)
        return t, p

    def derive(label, a, b):
        return hmac.new(psk, label + a + b, hashlib.sha256).digest()

    nc = os.urandom(32)
    send(1, nc + b"host=recover-req\n")
    t, p = recv()
    ns, proof = p[:32], p[32:64]
    if t != 2 or not hmac.compare_digest(proof, derive(b"vmmig-server", nc, ns)):
        raise SystemExit("bad CHALLENGE")
    send(3, derive(b"vmmig-client", ns, nc))
    t, p = recv()
    if t != 4:
        raise SystemExit("authentication failed: %r" % p)
    key["k"] = derive(b"vmmig-session", nc, ns)
    send(96, payload)
    t, p = recv()
    print(NAMES.get(t, str(t)), " ".join(p.decode(errors="replace").splitlines()))

main()
