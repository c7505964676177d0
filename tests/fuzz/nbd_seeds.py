#!/usr/bin/env python3
"""Write the seed corpus of nbd_fuzz (tests/fuzz/corpus/nbd/): one file per
situation, the first byte choosing it (see nbd_fuzz.c)."""
import os, struct, sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "nbd")
os.makedirs(out, exist_ok=True)

def opt(o, data=b""):
    return b"IHAVEOPT" + struct.pack(">II", o, len(data)) + data

def req(t, off, ln, flags=0, cookie=1, payload=b""):
    return struct.pack(">IHHQQI", 0x25609513, flags, t, cookie, off, ln) + payload

go = opt(7, struct.pack(">I", 0) + struct.pack(">HH", 1, 3))
seeds = {
    "stream-go-rw": b"\0" + struct.pack(">I", 3) + opt(3) + go
        + req(1, 0, 16, payload=b"A" * 16) + req(0, 0, 16, cookie=2) + req(3, 0, 0) + req(2, 0, 0),
    "stream-export-name": b"\0" + struct.pack(">I", 1) + opt(1, b"x") + req(0, 512, 512),
    "stream-options": b"\0" + struct.pack(">I", 1) + opt(8) + opt(5) + opt(6, b"\0\0\0\0\0\0")
        + opt(0x766d6d67, b"\0\1\0\0") + opt(99, b"zz") + opt(2),
    "go-requests": b"\1" + req(1, 4096, 8, 1, payload=b"B" * 8) + req(6, 0, 65536, 3)
        + req(4, 8192, 4096) + req(0x7601, 0, 8192) + req(0x7602, 0, 0) + req(0, 1 << 20, 1)
        + req(0, 0, (32 << 20) + 1) + req(1, (1 << 20) - 4, 8, payload=b"C" * 8) + req(99, 0, 1),
    "go-bad-magic": b"\1" + req(0, 0, 512) + b"\xee" * 28,
    "headers": b"\2\x10\x10\x03" + req(0, 0, 4096) + req(1, 2 ** 64 - 1, 2) + req(0x7601, 4096, 4096)
        + req(6, 0, 0xffffffff, 2) + req(3, 5, 5, 1),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
