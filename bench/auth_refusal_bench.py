#!/usr/bin/python3
"""Served calls while thousands of calls are refused (not a test: it prints).

Starts casboxd with [auth] tokens_file, then times N FindMissingBlobs calls
of a valid token one at a time, first alone and then while P processes send
calls with a wrong token as fast as they can (each refused UNAUTHENTICATED
before any handler runs, its log line rate-limited). Prints p50/p99 of the
served calls in both phases, their ratio, the refusals per second and how
many refusal lines reached the log. Run it once and note the load (printed).

    bench/auth_refusal_bench.py [--calls N] [--refusers P] [--casboxd PATH]
"""

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import grpc  # noqa: E402

import reapi_client as rc  # noqa: E402


def refuser(target, token, stop, count):
    c = rc.Client(target, token=token, timeout=10)
    n = 0
    while not stop.is_set():
        try:
            c.find_missing([])
        except grpc.RpcError:
            pass
        n += 1
    with count.get_lock():
        count.value += n


def cpu_seconds(pid):
    """casboxd's user+system CPU time so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served(c, digests, n):
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.find_missing(digests)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--refusers", type=int, default=2)
    ap.add_argument("--casboxd", default=None)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="casbox-auth-bench.")
    tokens = os.path.join(tmp, "tokens")
    with open(tokens, "w") as f:
        f.write("tok-good read,write\n")
    os.chmod(tokens, 0o600)
    conf = os.path.join(tmp, "casboxd.conf")
    with open(conf, "w") as f:
        f.write("[auth]\ntokens_file = %s\n" % tokens)
    d = rc.Casboxd(os.path.join(tmp, "state"), binary=a.casboxd,
                   extra_args=["--config", conf, "--no-execution"])
    d.start()
    try:
        c = rc.Client(d.target, token="tok-good")
        digests = [c.upload_blob(b"blob %d" % i) for i in range(10)]
        served(c, digests, 100)  # warm-up
        print("load %s at start" % " ".join(open("/proc/loadavg").read().split()[:3]))
        p50a, p99a = served(c, digests, a.calls)

        def loaded(token):
            stop = multiprocessing.Event()
            count = multiprocessing.Value("l", 0)
            procs = [multiprocessing.Process(target=refuser, args=(d.target, token, stop, count))
                     for _ in range(a.refusers)]
            for p in procs:
                p.start()
            cpu0, t0 = cpu_seconds(d.proc.pid), time.time()
            time.sleep(1)
            p50, p99 = served(c, digests, a.calls)
            stop.set()
            for p in procs:
                p.join()
            elapsed, cpu = time.time() - t0, cpu_seconds(d.proc.pid) - cpu0
            calls = count.value + a.calls
            return p50, p99, count.value / elapsed, cpu / calls * 1e6

        p50b, p99b, rate_b, cpu_b = loaded("tok-wrong")
        # The same load of calls that are served (FindMissingBlobs of nothing):
        # what any client's cheap calls cost, to tell refusals apart.
        p50c, p99c, rate_c, cpu_c = loaded("tok-good")
        with open(d.log_path, errors="replace") as f:
            lines = sum(1 for line in f if " refused " in line)
        print("served FindMissingBlobs (10 digests), %d calls one at a time:" % a.calls)
        print("  alone:                               p50 %.3f ms  p99 %.3f ms" % (p50a, p99a))
        print("  beside %d processes of refused calls: p50 %.3f ms  p99 %.3f ms  (= %.2fx, %.2fx)"
              ", %.0f refusals/s, casboxd %.0f CPU us per call"
              % (a.refusers, p50b, p99b, p50b / p50a, p99b / p99a, rate_b, cpu_b))
        print("  beside %d processes of served calls:  p50 %.3f ms  p99 %.3f ms  (= %.2fx, %.2fx)"
              ", %.0f calls/s, casboxd %.0f CPU us per call"
              % (a.refusers, p50c, p99c, p50c / p50a, p99c / p99a, rate_c, cpu_c))
        print("refusal lines logged: %d (at most 20 a second)" % lines)
        print("load %s at the end" % " ".join(open("/proc/loadavg").read().split()[:3]))
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
