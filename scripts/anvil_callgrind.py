#!/usr/bin/env python3
"""Instructions per pipelined CONNECT+DISCONNECT pair of `foreman anvil` under callgrind.

Usage: scripts/anvil_callgrind.py [N] [BINARY]
Runs the anvil twice under callgrind (0 pairs, then N pairs), prints the difference / N
and leaves the N-pair profile in $TMPDIR/anvil-cg-N.out for callgrind_annotate.
"""
import os, re, signal, socket, subprocess, sys, tempfile, time

def run(n, binary, tmp):
    sock = os.path.join(tmp, f"anvil{n}")
    out = os.path.join(tmp, f"anvil-cg-{n}.out")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                          binary, "anvil", "--socket", sock],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not os.path.exists(sock):
        if time.time() > deadline or p.poll() is not None:
            raise SystemExit("anvil did not start")
        time.sleep(0.05)
    c = socket.socket(socket.AF_UNIX)
    c.connect(sock)
    c.sendall(b"VERSION\tanvil\t1\t0\n")
    batch = 2000
    for start in range(0, n, batch):
        lines = []
        for i in range(start, min(n, start + batch)):
            ident = f"imap/10.0.0.1/user{i}"
            pid = 1000 + (i % 50000)
            lines.append(f"CONNECT\t{pid}\t{ident}\nDISCONNECT\t{pid}\t{ident}\n")
        c.sendall("".join(lines).encode())
    c.sendall(b"LOOKUP\tx\n")
    buf = b""
    while not buf.endswith(b"\n"):
        d = c.recv(100)
        if not d:
            raise SystemExit("anvil closed")
        buf += d
    assert buf == b"0\n", buf
    c.close()
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)
    total = 0
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
    return total, out

n = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/foreman"
tmp = os.environ.get("TMPDIR") or tempfile.mkdtemp()
t0, _ = run(0, binary, tmp)
t1, out = run(n, binary, tmp)
print(f"base {t0} with {n} pairs {t1}: {(t1 - t0) / n:.1f} instructions per pair ({out})")
