#!/usr/bin/python3
"""Run one shell command in a test guest through its serial console socket.

usage: guest.py SOCKET 'COMMAND' [TIMEOUT]
Prints the command's output and exits with its status (255 on no answer).
The command runs in the guest's root shell; a unique marker closes it."""
import os, socket, sys, time

path, cmd = sys.argv[1], sys.argv[2]
timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 20
tag = "M%d%d" % (os.getpid(), int(time.time() * 1000) % 100000)
deadline = time.time() + timeout
s = None
while s is None:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
    except OSError:
        s = None
        if time.time() > deadline:
            sys.exit(255)
        time.sleep(0.1)
s.settimeout(0.2)
# The echo splits the marker so that the echoed command line never matches it.
s.sendall(("\n%s; echo \"%s\"\"-END $?\"\n" % (cmd, tag)).encode())
buf = b""
while time.time() < deadline:
    try:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    except socket.timeout:
        pass
    text = buf.decode(errors="replace")
    i = text.find(tag + "-END ")
    if i >= 0 and "\n" in text[i:]:
        line = text[i:].split("\n")[0]
        status = int(line.split()[1].strip())
        body = text[:i]
        # drop everything up to the echoed command line
        j = body.rfind(tag + "\"\"-END")
        if j >= 0:
            body = body[body.find("\n", j) + 1:]
        sys.stdout.write(body.replace("\r", ""))
        sys.exit(status)
sys.exit(255)
