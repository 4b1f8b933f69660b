#!/usr/bin/python3
"""End-to-end load: 1,000 concurrent slow streams against one casboxd.

750 ByteStream.Reads of a 4 MiB blob whose client never consumes (BDP
probing off, so the server's sends block on a 64 KiB flow-control window)
and 250 ByteStream.Writes that send one chunk and then nothing, all held
open at once over 20 connections. ByteStream is event-driven (rpc.h): a
stream waiting on its client holds buffers and an fd, not a thread.
While they are open, casboxd's RSS, open fds and threads are sampled twice
a second and GetCapabilities is called every 0.2 s. Checked:
  - every GetCapabilities is answered (a 10 s deadline: no wall-time claim,
    just "not starved");
  - threads do not grow with the streams: at most 8 more than at idle, and
    within the configured pools plus grpc's own;
  - fds and RSS stay within what the config allows for this many streams
    (an fd and at most two read_chunk_bytes messages per Read);
  - a fresh 1 KiB Write and Read are answered while the 1,000 are held;
  - run 1, server.max_async_calls = 1200, stream_stall_timeout = 0: none of
    the 1,000 is refused;
  - run 2, server.max_async_calls = 900, stream_stall_timeout = 5: the
    streams past 900 are refused with RESOURCE_EXHAUSTED well before their
    deadline, and the stalled ones are cancelled after 5 s (logged);
  - after the load is gone a fresh 1 KiB Write and Read work, and casboxd
    exits 0.
Figures (max RSS, fds, threads, the fresh transfers' latency, the
refusals) are printed for docs/benchmarks.md; no wall time is asserted.
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
STALL_S = 5
CHUNK = 1 << 20  # server.read_chunk_bytes (the default)
# (stall timeout, server.max_async_calls): all served, then some refused
PHASES = ((0, 1200), (STALL_S, 900))
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

    for stall, max_async in PHASES:
        print("--- server.stream_stall_timeout = %d, max_async_calls = %d" % (stall, max_async),
              flush=True)
        run_phase(os.path.join(tmp, "stall%d" % stall), check, stall, max_async)
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


def run_phase(tmp, check, stall, max_async):
    os.makedirs(tmp)
    d = rc.Casboxd(os.path.join(tmp, "state"), log_path=os.path.join(tmp, "casboxd.log"),
                   extra_args=["--no-execution", "--set",
                               "server.max_async_calls=%d" % max_async, "--set",
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
        fresh_ok = max_async > READS + WRITES
        try:
            dg = fresh.upload_bytestream(small)
            w = "%.2f s" % (time.time() - t0)
        except grpc.RpcError as e:
            dg, w = None, "%s after %.2f s" % (e.code().name, time.time() - t0)
            fresh_ok = False
        t0 = time.time()
        try:
            got = fresh.bs_read(c.read_name(dg or big), limit=1024)
            r = "%.2f s" % (time.time() - t0)
            fresh_ok = fresh_ok and got == small
        except grpc.RpcError as e:
            r = "%s after %.2f s" % (e.code().name, time.time() - t0)
            fresh_ok = False
        fresh.close()
        print("under load: a fresh 1 KiB Write took %s, a 1 KiB Read %s" % (w, r))
        if max_async > READS + WRITES:
            check("a fresh 1 KiB Write and Read are answered while 1,000 streams are held",
                  fresh_ok, "Write: %s, Read: %s" % (w, r))
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
        print("past max_async_calls: %d of %d streams refused with RESOURCE_EXHAUSTED "
              "(all within %.1f s of opening)" % (refused, READS + WRITES, refuse_worst))
        if max_async > READS + WRITES:
            check("streams within max_async_calls are all served", refused == 0,
                  "%d refused" % refused)
        else:
            check("streams past max_async_calls are RESOURCE_EXHAUSTED",
                  refused >= READS + WRITES - max_async,
                  "%d of %d refused" % (refused, READS + WRITES))
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
        bound = 8 + 256 + 64 + 2 + THREAD_SLACK  # the default pools + grpc's own
        check("threads do not grow with the streams", threads <= min(bound, idle[1] + 8),
              "%d threads, %d at idle" % (threads, idle[1]))
        streams = min(READS + WRITES, max_async)
        check("fds bounded (one per stream)", fds <= idle[2] + streams + CHANNELS + 50,
              "%d fds" % fds)
        # a Read holds at most two chunks (one in grpc, one queued); a Write
        # its one received message (64 KiB) and grpc's buffers
        rss_bound = idle[0] + (READS * 2 * CHUNK + WRITES * 256 * 1024) // MiB + 256
        check("RSS bounded (two read_chunk_bytes per Read)", rss <= rss_bound,
              "%d MiB > %d MiB" % (rss, rss_bound))
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
