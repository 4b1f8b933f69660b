#!/usr/bin/python3
"""1,000 idle worker slots against `casboxd --role scheduler` over gRPC (prints
only; not a test): each slot sends an idle Synchronize at once, from one
process (grpc futures over 10 channels, no thread per slot), and the bench
samples the scheduler's threads, RSS and fds while they are held, counts how
many were held (no answer within 2 s: parked for [scheduler] idle_poll) and
how many were told to poll again at once, and times GetCapabilities
meanwhile. Then one queued action is submitted and the time until a held
slot is handed it is measured (Execute to the worker's answer).

  bench/sched_idle_bench.py [WORKERS]      default 1000
Env: CASBOXD (default build/bin/casboxd).
"""
import os
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "e2e"))
sys.dont_write_bytecode = True
import grpc  # noqa: E402

import exec_helpers as eh  # noqa: E402
import fleet_client as fc  # noqa: E402
import reapi_client as rc  # noqa: E402


def proc_sample(pid):
    with open("/proc/%d/status" % pid) as f:
        st = dict(line.split(":", 1) for line in f if ":" in line)
    return (int(st["VmRSS"].split()[0]) // 1024, int(st["Threads"]),
            len(os.listdir("/proc/%d/fd" % pid)))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    tmp = tempfile.mkdtemp(prefix="casbox-sched-idle-bench.")
    d = rc.Casboxd(os.path.join(tmp, "state"), log_path=os.path.join(tmp, "casboxd.log"),
                   extra_args=["--role", "scheduler", "--set", "scheduler.idle_poll=30",
                               "--set", "scheduler.grace=0"])
    d.start()
    try:
        idle = proc_sample(d.proc.pid)
        workers = [fc.Worker(d.target, {"hostname": "w%d" % (i // 1), "slot": "0"}, timeout=90)
                   for i in range(min(n, 10))]
        chans = [w.channel for w in workers]
        sync = [ch.unary_unary(fc.SYNC,
                               request_serializer=fc.rw.SynchronizeRequest.SerializeToString,
                               response_deserializer=fc.rw.SynchronizeResponse.FromString)
                for ch in chans]
        t0 = time.time()
        futs = []
        for i in range(n):
            w = fc.Worker.__new__(fc.Worker)
            w.worker_id, w.platform, w.prefix = {"hostname": "w%d" % i, "slot": "0"}, \
                {"OSFamily": "Linux"}, ""
            req = fc.Worker.request(w)
            req.current_state.idle.CopyFrom(fc.empty_pb2.Empty())
            futs.append(sync[i % len(sync)].future(req, timeout=90))
        time.sleep(2)
        answered = sum(1 for f in futs if f.done())
        held = n - answered
        peak = proc_sample(d.proc.pid)
        c = rc.Client(d.target, timeout=20)
        t1 = time.time()
        c.get_capabilities()
        caps = time.time() - t1
        # one action: Execute, and the time until a held slot gets it
        ad = eh.upload_action(c, ["/bin/true"])
        t1 = time.time()
        s = eh.Stream(c, ad)
        got = None
        while time.time() - t1 < 30 and got is None:
            for f in futs:
                if f.done() and f.exception() is None and fc.executing(f.result()):
                    got = time.time() - t1
                    break
            time.sleep(0.001)
        print("sched_idle_bench: %d idle slots (%s)" % (n, os.getloadavg()))
        print("  held (no answer within 2 s): %d; answered at once: %d" % (held, answered))
        print("  scheduler idle: RSS %d MiB, %d threads, %d fds; with the slots held: "
              "RSS %d MiB, %d threads, %d fds" % (idle + peak))
        print("  GetCapabilities meanwhile: %.3f s; Execute to a held slot given the action: %s"
              % (caps, "%.3f s" % got if got is not None else "not within 30 s"))
        s.cancel()
        for f in futs:
            f.cancel()
        c.close()
        for ch in chans:
            ch.close()
    finally:
        d.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
