#!/usr/bin/python3
"""End-to-end load: 1,000 concurrent slow streams against one casboxd.

750 ByteStream.Reads of a 4 MiB blob whose client never consumes (BDP
probing off, so the server's sends block on a 64 KiB flow-control window)
and 250 ByteStream.Writes that send one chunk and then nothing, all held
open at once over 20 connections, against a casboxd whose
[server] max_inflight_calls is 200, so that some 700 of them go past the
transfer pool's 64 threads and its queue.
While they are open, casboxd's RSS, open fds and threads are sampled twice
a second and GetCapabilities is called every 0.2 s. Checked:
  - every GetCapabilities is answered (a 10 s deadline: no wall-time claim,
    just "not starved");
  - threads stay within the configured pools (rpc_threads + stream_threads +
    transfer_threads) plus grpc's and the daemon's own (64 allowed);
  - fds and RSS stay bounded (4 fds per stream at most, 1 GiB);
  - calls past the queue are refused with RESOURCE_EXHAUSTED, and each
    refusal arrives well before the call's deadline;
  - after the load is gone a fresh 1 KiB Write and Read work, and casboxd
    exits 0.
Run twice: with server.stream_stall_timeout = 0 (a stalled client holds
its transfer thread until its deadline: a fresh 1 KiB transfer is refused
or waits; reported, not asserted) and = 5 (stalled streams are cancelled
with RESOURCE_EXHAUSTED after 5 s, so a fresh 1 KiB Write, retried while
refused, must get through). Figures (max RSS, fds, threads, the fresh
transfers' latency, the refusals) are printed for docs/operations.md.
"""

import os
import shutil
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import reapi_client as rc  # noqa: E402
from reapi_client import bs_pb2  # noqa: E402

MiB = 1 << 20
READS, WRITES = 750, 250
INFLIGHT = 200
STALL_S = 5
CHANNELS = 20
THREAD_SLACK = 64


def proc_sample(pid):
    with open("/proc/%d/status" % pid) as f:
        st = dict(line.split(":", 1) for line in f if ":" in line)
    return (int(st["VmRSS"].split()[0]) // 1024, int(st["Threads"]),
            len(os.listdir("/proc/%d/fd" % pid)))


class Sampler(threading.Thread):
    def __init__(self, pid, target):
        super().__init__(daemon=True)
        self.pid, self.target = pid, target
        self.stop = threading.Event()
        self.max = [0, 0, 0]
        self.caps_ok = self.caps_fail = 0
        self.caps_worst = 0.0

    def run(self):
        c = rc.Client(self.target, timeout=10)
        n = 0
        while not self.stop.wait(0.2):
            n += 1
            if n % 2 == 0:
                for i, v in enumerate(proc_sample(self.pid)):
                    self.max[i] = max(self.max[i], v)
            t0 = time.time()
            try:
                c.get_capabilities()
                self.caps_ok += 1
            except grpc.RpcError:
                self.caps_fail += 1
            self.caps_worst = max(self.caps_worst, time.time() - t0)
        c.close()


def ser(m):
    return m.SerializeToString()


def main():
    tmp = tempfile.mkdtemp(prefix="casbox-e2e-load.")
    failures = 0

    def check(name, cond, why=""):
        nonlocal failures
        print("%s  %s%s" % ("ok  " if cond else "FAIL", name, "" if cond else "\n      " + why),
              flush=True)
        failures += 0 if cond else 1

    for stall in (0, STALL_S):
        print("--- server.stream_stall_timeout = %d" % stall, flush=True)
        run_phase(os.path.join(tmp, "stall%d" % stall), check, stall)
    shutil.rmtree(tmp, ignore_errors=True)
    print("\n%s" % ("all passed" if failures == 0 else "%d failed" % failures))
    return 1 if failures else 0


def fresh_write_until(target, limit_s):
    """A 1 KiB ByteStream.Write retried on RESOURCE_EXHAUSTED: (ok, seconds)."""
    fresh = rc.Client(target, timeout=20)
    t0 = time.time()
    try:
        while time.time() - t0 < limit_s:
            try:
                fresh.upload_bytestream(os.urandom(1024))
                return True, time.time() - t0
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    return False, time.time() - t0
                time.sleep(0.5)
        return False, time.time() - t0
    finally:
        fresh.close()


def run_phase(tmp, check, stall):
    os.makedirs(tmp)
    d = rc.Casboxd(os.path.join(tmp, "state"), log_path=os.path.join(tmp, "casboxd.log"),
                   extra_args=["--no-execution", "--set",
                               "server.max_inflight_calls=%d" % INFLIGHT, "--set",
                               "server.stream_stall_timeout=%d" % stall])
    d.start()
    chans, held, gates = [], [], []
    try:
        c = rc.Client(d.target, timeout=60)
        idle = proc_sample(d.proc.pid)
        big = c.upload_bytestream(os.urandom(4 * MiB))
        sampler = Sampler(d.proc.pid, d.target)
        sampler.start()
        chans = [grpc.insecure_channel(d.target, options=[("grpc.http2.bdp_probe", 0)])
                 for _ in range(CHANNELS)]
        t_open = time.time()
        for i in range(READS + WRITES):
            ch = chans[i % CHANNELS]
            if i < READS:
                read = ch.unary_stream("/google.bytestream.ByteStream/Read",
                                       request_serializer=ser,
                                       response_deserializer=bs_pb2.ReadResponse.FromString)
                held.append(read(bs_pb2.ReadRequest(resource_name=c.read_name(big)),
                                 timeout=300))
            else:
                held.append(stalled_write(ch, c, gates, 300))
        time.sleep(5)
        print("opened %d streams in %.1f s" % (READS + WRITES, time.time() - t_open))

        # Fresh small transfers while everything is held.
        small = os.urandom(1024)
        fresh = rc.Client(d.target, timeout=20)
        t0 = time.time()
        try:
            dg = fresh.upload_bytestream(small)
            w = "%.2f s" % (time.time() - t0)
        except grpc.RpcError as e:
            dg, w = None, "%s after %.2f s" % (e.code().name, time.time() - t0)
        t0 = time.time()
        try:
            fresh.bs_read(c.read_name(dg or big), limit=1024)
            r = "%.2f s" % (time.time() - t0)
        except grpc.RpcError as e:
            r = "%s after %.2f s" % (e.code().name, time.time() - t0)
        fresh.close()
        print("under load: a fresh 1 KiB Write took %s, a 1 KiB Read %s" % (w, r))
        if stall:
            ok, took = fresh_write_until(d.target, 90)
            print("with stalled streams cancelled after %d s: a 1 KiB Write retried on "
                  "RESOURCE_EXHAUSTED went through after %.1f s" % (stall, took))
            check("stall timeout %d s: stalled clients give their threads back, a fresh "
                  "Write goes through" % stall, ok, "still refused after %.1f s" % took)
            with open(d.log_path) as f:
                check("... and the log says so", "made no progress" in f.read(), "")

        # Past the pool and its queue: refusals, among the 1,000.
        refused, refuse_worst, t0 = 0, 0.0, time.time()
        for h in held:
            if h.done() and h.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                refused += 1
        refuse_worst = time.time() - t_open
        print("past the queue: %d of %d streams refused with RESOURCE_EXHAUSTED "
              "(all within %.1f s of opening)" % (refused, READS + WRITES, refuse_worst))
        check("calls past the pool and max_inflight_calls are RESOURCE_EXHAUSTED", refused > 0,
              "none of %d refused" % (READS + WRITES))
        check("... at once, not at their 300 s deadline", refuse_worst < 150,
              "checked after %.1f s" % refuse_worst)

        sampler.stop.set()
        sampler.join()
        rss, threads, fds = sampler.max
        print("casboxd idle: RSS %d MiB, %d threads, %d fds; under load max: RSS %d MiB, "
              "%d threads, %d fds; GetCapabilities %d answered, %d failed, worst %.2f s (%s)"
              % (idle[0], idle[1], idle[2], rss, threads, fds, sampler.caps_ok,
                 sampler.caps_fail, sampler.caps_worst, os.getloadavg()))
        check("GetCapabilities answered throughout", sampler.caps_fail == 0 and sampler.caps_ok,
              "%d failed" % sampler.caps_fail)
        bound = 8 + 256 + 64 + THREAD_SLACK  # the default pools + grpc's own
        check("threads stay within the configured pools", threads <= bound,
              "%d threads > %d" % (threads, bound))
        check("fds bounded", fds <= 4 * (READS + WRITES) + 100, "%d fds" % fds)
        check("RSS bounded", rss <= 1024, "%d MiB" % rss)
    finally:
        for g in gates:
            g.set()
        for h in held:
            h.cancel()
        for ch in chans:
            ch.close()
    try:
        c = rc.Client(d.target, timeout=60)
        dg = c.upload_bytestream(os.urandom(1024))
        check("after the load: a 1 KiB Write and Read work",
              len(c.bs_read(c.read_name(dg))) == 1024)
        c.close()
        d.stop()
    except (grpc.RpcError, AssertionError) as e:
        check("after the load: casboxd serves and exits 0", False, repr(e))
        d.kill()


def stalled_write(ch, c, gates, timeout):
    """A Write that sends one 64 KiB chunk and then nothing until released."""
    data = os.urandom(64 * 1024)
    dg = rc.re_pb2.Digest(hash=rc.digest_of(data + b"!").hash, size_bytes=len(data) + 1)
    gate = threading.Event()
    gates.append(gate)

    def gen():
        yield bs_pb2.WriteRequest(resource_name=c.write_name(dg), data=data)
        gate.wait()

    write = ch.stream_unary("/google.bytestream.ByteStream/Write", request_serializer=ser,
                            response_deserializer=bs_pb2.WriteResponse.FromString)
    return write.future(gen(), timeout=timeout)


if __name__ == "__main__":
    sys.exit(main())
