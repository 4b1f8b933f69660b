#!/usr/bin/python3
"""Start-up time of casboxd on a large store (issue 20: "start-up finishes in
bounded time; say so in docs with the figure for a 1-million-blob store").

Writes N real blobs (small distinct contents, named by their SHA-256) in the
store's layout, STATE/cas/blobs/XX/HASH, once (kept for the next run unless
--fresh), then starts casboxd on that state dir ROUNDS times and reports, per
run: the wall time from exec to "casboxd: listening on", the store's own
"cas: indexed N blobs ... in T ms" line (with the scan in the background it
comes after "listening"), casboxd's CPU seconds once the scan is done and its
resident memory. The page cache is warm after the first run (the
generator has just written everything): the first run after --drop-caches is
the cold figure. Prints the load average with each figure.

    bench/store_startup_bench.py [--blobs 1000000] [--dir /var/tmp/casbox-startup]
                                 [--rounds 3] [--fresh] [--drop-caches]
"""

import argparse
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CASBOXD = os.environ.get("CASBOXD", os.path.join(HERE, "..", "build", "bin", "casboxd"))


def generate(state, n):
    blobs = os.path.join(state, "cas", "blobs")
    marker = os.path.join(state, "generated-blobs")
    if os.path.exists(marker):
        with open(marker) as f:
            if int(f.read()) == n:
                print("reusing %d blobs in %s" % (n, blobs), flush=True)
                return
    shutil.rmtree(state, ignore_errors=True)
    for i in range(256):
        os.makedirs(os.path.join(blobs, "%02x" % i))
    t0 = time.time()
    for i in range(n):
        data = b"casbox start-up bench blob %d\n" % i
        h = hashlib.sha256(data).hexdigest()
        fd = os.open(os.path.join(blobs, h[:2], h), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        os.write(fd, data)
        os.close(fd)
        if i % 100000 == 99999:
            print("  %d blobs written (%.0f s)" % (i + 1, time.time() - t0), flush=True)
    with open(marker, "w") as f:
        f.write(str(n))
    print("generated %d blobs in %.1f s" % (n, time.time() - t0), flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_rss(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def one_run(state, log):
    port = free_port()
    args = [CASBOXD, "--listen", "127.0.0.1:%d" % port, "--state-dir", state,
            "--set", "http.listen=", "--set", "execution.staging=hardlink"]
    with open(log, "wb") as out:
        t0 = time.monotonic()
        p = subprocess.Popen(args, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    try:
        want = "casboxd: listening on 127.0.0.1:%d" % port
        while True:
            with open(log, errors="replace") as f:
                text = f.read()
            if want in text:
                wall = time.monotonic() - t0
                break
            if p.poll() is not None:
                raise SystemExit("casboxd exited %s:\n%s" % (p.returncode, text[-2000:]))
            time.sleep(0.01)
        # With the scan in the background, casboxd listens first: wait for
        # the scan's line too, and take CPU and memory once it is done.
        deadline = time.monotonic() + 600
        while True:
            m = re.search(r"cas: indexed (\d+) blobs \((\d+) bytes\) in (\d+) ms.*", text)
            if m or time.monotonic() > deadline or p.poll() is not None:
                break
            time.sleep(0.05)
            with open(log, errors="replace") as f:
                text = f.read()
        cpu, rss = cpu_rss(p.pid)
        return wall, cpu, rss, m.group(0) if m else "(no indexed line)"
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blobs", type=int, default=1000000)
    ap.add_argument("--dir", default="/var/tmp/casbox-startup")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fresh", action="store_true", help="generate the store again")
    ap.add_argument("--drop-caches", action="store_true",
                    help="drop the page cache before the first run (root)")
    a = ap.parse_args()
    state = os.path.join(a.dir, "state")
    if a.fresh:
        shutil.rmtree(state, ignore_errors=True)
    generate(state, a.blobs)
    for r in range(a.rounds):
        if r == 0 and a.drop_caches:
            subprocess.run(["sync"], check=True)
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        load = os.getloadavg()[0]
        wall, cpu, rss, line = one_run(state, os.path.join(a.dir, "casboxd-%d.log" % r))
        print("run %d%s: listening after %.2f s wall; after the scan %.2f s CPU, RSS %.0f MiB; %s "
              "(load %.1f)" % (r + 1, " (cold cache)" if r == 0 and a.drop_caches else "",
                               wall, cpu, rss / 1048576, line, load), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
