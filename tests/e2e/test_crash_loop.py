#!/usr/bin/python3
"""End-to-end crash consistency: SIGKILL casboxd at random moments of a busy
scripted build and audit what it serves after each restart.

Each iteration starts casboxd on the same state dir (a small max_bytes, so
that evictions happen all the time), runs client threads doing uploads
(BatchUpdateBlobs and ByteStream, 1 KiB .. 3 MiB), Executes whose outputs
are committed and cached, UpdateActionResult of results naming uploaded
blobs, and reads, then SIGKILLs casboxd after a random 0.3 .. 3 s, restarts
it and audits:
  - every ActionCache entry ever written (by this run) that GetActionResult
    serves names blobs that are present and whose bytes verify;
  - every file under cas/blobs hashes to its name (no partial or torn blob
    is visible), cas/tmp holds no file;
  - at most one casfs mount on the state dir's FUSE mount point, cas/exec
    empty (a dead predecessor's scratch dirs removed), and no process but
    casboxd holds the store lock, mid-run (actions, the spawner and FUSE
    alive) or after the restart;
  - start-up (spawn to "listening") stays under 30 s; the figure is printed.
At the end: iterations, calls, errors by kind, start-up times, max RSS.

    test_crash_loop.py                        # 20 iterations (scripts/test)
    test_crash_loop.py --minutes 30 --streams 200   # scripts/soak
--streams N adds N slow ByteStream readers and stalled writers held open
during each iteration, plus a GetCapabilities probe whose failures count.
"""

import argparse
import collections
import hashlib
import os
import random
import shutil
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import exec_helpers as eh  # noqa: E402
import reapi_client as rc  # noqa: E402
from reapi_client import bs_pb2  # noqa: E402

MiB = 1 << 20
START_BOUND_S = 30


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = collections.Counter()
        self.errors = collections.Counter()

    def call(self, op, fn, *args, **kw):
        try:
            r = fn(*args, **kw)
            with self.lock:
                self.calls[op] += 1
            return r
        except grpc.RpcError as e:
            with self.lock:
                self.calls[op] += 1
                self.errors["%s %s" % (op, e.code().name)] += 1
            return None
        except AssertionError as e:
            with self.lock:
                self.calls[op] += 1
                self.errors["%s %s" % (op, str(e).split(":")[0][:40])] += 1
            return None


class Ledger:
    """What the clients wrote: ActionCache keys (the daemon may or may not
    have it after a kill, but what it serves must be whole)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.actions = []
        self.blobs = []

    def add_action(self, ad):
        with self.lock:
            self.actions.append(ad)

    def add_blob(self, d):
        with self.lock:
            self.blobs.append(d)
            if len(self.blobs) > 2000:
                del self.blobs[:1000]


def rand_data(rng):
    size = rng.choice([1024, 4096, 65536, 300000, MiB, 3 * MiB])
    return os.urandom(size)


def client_loop(target, stop, stats, ledger, seed):
    rng = random.Random(seed)
    c = rc.Client(target, timeout=20)
    try:
        while not stop.is_set():
            op = rng.random()
            if op < 0.3:
                data = rand_data(rng)
                d = rc.digest_of(data)
                if rng.random() < 0.5:
                    r = stats.call("BatchUpdateBlobs", c.batch_update, [(d, data)])
                    ok = r is not None and r.responses[0].status.code == 0
                else:
                    ok = stats.call("ByteStream.Write", c.upload_bytestream, data) is not None
                if ok:
                    ledger.add_blob(d)
            elif op < 0.55:
                # A result naming fresh outputs, written to the ActionCache.
                outs = [os.urandom(rng.choice([100, 5000, 200000])) for _ in range(2)]
                digs = [rc.digest_of(x) for x in outs]
                r = stats.call("BatchUpdateBlobs", c.batch_update, list(zip(digs, outs)))
                if r is None or any(x.status.code != 0 for x in r.responses):
                    continue
                res = rc.re_pb2.ActionResult(exit_code=0)
                for i, dg in enumerate(digs):
                    res.output_files.add(path="out%d" % i, digest=dg)
                ad = rc.digest_of(os.urandom(32))
                ledger.add_action(ad)
                stats.call("UpdateActionResult", c.update_action_result, ad, res)
            elif op < 0.7:
                n = rng.choice([10, 100000, 2 * MiB])
                ad = stats.call("upload_action", eh.upload_action, c,
                                ["/bin/sh", "-c", "head -c %d /dev/urandom > out; echo done" % n],
                                output_paths=["out"])
                if ad is None:
                    continue
                ledger.add_action(ad)
                stats.call("Execute", c.execute, ad, timeout=30)
            else:
                with ledger.lock:
                    pick = rng.choice(ledger.blobs) if ledger.blobs else None
                if pick is not None:
                    stats.call("ByteStream.Read", c.bs_read, c.read_name(pick))
    finally:
        c.close()


def slow_streams(target, stop, stats, n, ledger):
    """n/2 slow readers (a big blob read with the client not consuming) and
    n/2 stalled writers (half an upload, then nothing), held open."""
    chans = []
    calls = []
    big = os.urandom(8 * MiB)
    c = rc.Client(target, timeout=60)
    d = stats.call("ByteStream.Write", c.upload_bytestream, big)
    try:
        for i in range(n):
            ch = grpc.insecure_channel(target)
            chans.append(ch)
            if i % 2 == 0 and d is not None:
                read = ch.unary_stream("/google.bytestream.ByteStream/Read",
                                       request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=bs_pb2.ReadResponse.FromString)
                it = read(bs_pb2.ReadRequest(resource_name=c.read_name(d)), timeout=600)
                calls.append(it)
            else:
                data = os.urandom(64 * 1024)
                dg = rc.re_pb2.Digest(hash=hashlib.sha256(data + b"x").hexdigest(),
                                      size_bytes=len(data) + 1)
                gate = threading.Event()

                def gen(dg=dg, data=data, gate=gate):
                    yield bs_pb2.WriteRequest(resource_name=c.write_name(dg), data=data)
                    gate.wait()

                write = ch.stream_unary("/google.bytestream.ByteStream/Write",
                                        request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=bs_pb2.WriteResponse.FromString)
                calls.append((write.future(gen(), timeout=600), gate))
        stop.wait()
    finally:
        for x in calls:
            if isinstance(x, tuple):
                x[1].set()
                x[0].cancel()
            else:
                x.cancel()
        for ch in chans:
            ch.close()
        c.close()


def probe_capabilities(target, stop, stats):
    c = rc.Client(target, timeout=5)
    try:
        while not stop.wait(0.2):
            stats.call("GetCapabilities", c.get_capabilities)
    finally:
        c.close()


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def lock_holders(state):
    lock = os.path.realpath(os.path.join(state, "cas", "lock"))
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir("/proc/%s/fd" % pid):
                if os.readlink("/proc/%s/fd/%s" % (pid, fd)) == lock:
                    pids.append(int(pid))
                    break
        except OSError:
            continue
    return pids


def casfs_mounts(state):
    mp = os.path.realpath(os.path.join(state, "cas", "fuse"))
    with open("/proc/self/mountinfo") as f:
        return sum(1 for line in f if line.split()[4] == mp)


def audit(c, state, ledger, problems):
    blobs = os.path.join(state, "cas", "blobs")
    files = 0
    for shard in os.listdir(blobs):
        sd = os.path.join(blobs, shard)
        if not os.path.isdir(sd):
            continue
        for name in os.listdir(sd):
            files += 1
            with open(os.path.join(sd, name), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != name:
                    problems.append("blob file %s does not hash to its name" % name)
    tmp = os.path.join(state, "cas", "tmp")
    left = [n for n in os.listdir(tmp) if not os.path.isdir(os.path.join(tmp, n))]
    if left:
        problems.append("cas/tmp holds %d files after start-up" % len(left))
    served = 0
    with ledger.lock:
        actions = list(ledger.actions)
    for ad in actions[-300:]:
        try:
            res = c.get_action_result(ad)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                problems.append("GetActionResult %s: %s" % (ad.hash[:12], e.code()))
            continue
        served += 1
        digs = [f.digest for f in res.output_files]
        if res.HasField("stdout_digest") and res.stdout_digest.size_bytes:
            digs.append(res.stdout_digest)
        for dg in digs:
            try:
                data = c.bs_read(c.read_name(dg))
            except grpc.RpcError as e:
                problems.append("action %s names %s/%d: %s" % (ad.hash[:12], dg.hash[:12],
                                                              dg.size_bytes, e.code()))
                continue
            if hashlib.sha256(data).hexdigest() != dg.hash:
                problems.append("action %s: blob %s does not verify" % (ad.hash[:12], dg.hash))
    return files, served


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=0, help="run this long instead")
    ap.add_argument("--streams", type=int, default=0, help="slow streams held open")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--max-bytes", default="48M")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    print("seed %d" % args.seed, flush=True)

    tmp = tempfile.mkdtemp(prefix="casbox-e2e-crash-loop.")
    state = os.path.join(tmp, "state")
    conf = os.path.join(tmp, "casboxd.conf")
    with open(conf, "w") as f:
        f.write("[cas]\nmax_bytes = %s\n[server]\nmax_inflight_calls = 4096\n" % args.max_bytes)
    d = rc.Casboxd(state, log_path=os.path.join(tmp, "casboxd.log"),
                   extra_args=["--config", conf])
    stats, ledger = Stats(), Ledger()
    problems, starts = [], []
    max_rss = 0
    it = 0
    deadline = time.time() + args.minutes * 60 if args.minutes else None
    try:
        while (deadline is None and it < args.iterations) or \
                (deadline is not None and time.time() < deadline):
            it += 1
            t0 = time.time()
            d.start()
            starts.append(time.time() - t0)
            if starts[-1] > START_BOUND_S:
                problems.append("iteration %d: start-up took %.1f s" % (it, starts[-1]))
            holders = [p for p in lock_holders(state) if p != d.proc.pid]
            if holders:
                problems.append("iteration %d: pids %s hold the store lock" % (it, holders))
            if casfs_mounts(state) > 1:
                problems.append("iteration %d: %d casfs mounts stacked" % (it, casfs_mounts(state)))
            scratch = os.path.join(state, "cas", "exec")
            if os.path.isdir(scratch) and os.listdir(scratch):
                problems.append("iteration %d: cas/exec holds %s after start-up"
                                % (it, os.listdir(scratch)[:3]))
            c = rc.Client(d.target, timeout=30)
            files, served = audit(c, state, ledger, problems)
            print("iteration %d: start-up %.2f s, %d blob files, %d of %d AC entries served, "
                  "%d problems" % (it, starts[-1], files, served, len(ledger.actions),
                                   len(problems)), flush=True)
            stop = threading.Event()
            threads = [threading.Thread(target=client_loop,
                                        args=(d.target, stop, stats, ledger, rng.random()))
                       for _ in range(args.clients)]
            if args.streams:
                threads.append(threading.Thread(target=slow_streams,
                                                args=(d.target, stop, stats, args.streams,
                                                      ledger)))
                threads.append(threading.Thread(target=probe_capabilities,
                                                args=(d.target, stop, stats)))
            for t in threads:
                t.start()
            run_for = rng.uniform(0.3, 3.0) + (5 if args.streams else 0)
            end = time.time() + run_for
            checked = False
            while time.time() < end:
                max_rss = max(max_rss, rss_kib(d.proc.pid))
                if not checked and time.time() > end - run_for / 2:
                    # Mid-run, actions and helpers alive: only casboxd may
                    # hold the lock (no fd inherited by a child).
                    others = [p for p in lock_holders(state) if p != d.proc.pid]
                    if others:
                        problems.append("iteration %d: children %s hold the store lock"
                                        % (it, others))
                    checked = True
                time.sleep(0.1)
            d.kill()  # SIGKILL
            stop.set()
            for t in threads:
                t.join(60)
            c.close()
        d.start()
        c = rc.Client(d.target, timeout=30)
        audit(c, state, ledger, problems)
        c.close()
        d.stop()
    finally:
        d.kill()
        print("\nsummary: %d iterations, %d calls, start-up max %.2f s (median %.2f s), "
              "max RSS %d MiB" % (it, sum(stats.calls.values()), max(starts or [0]),
                                  sorted(starts)[len(starts) // 2] if starts else 0,
                                  max_rss // 1024))
        print("calls: %s" % dict(stats.calls))
        print("errors by kind (kills make some expected): %s" % dict(stats.errors))
        for p in problems[:30]:
            print("PROBLEM: %s" % p)
        if not problems:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("state kept in %s" % tmp)
    print("\n%s" % ("all passed" if not problems else "%d problems" % len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
