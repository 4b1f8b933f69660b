#!/usr/bin/python3
"""The scheduler over real gRPC at fleet scale (prints only; not a test; issue
15): WORKERS simulated worker slots and ACTIONS queued trivial actions against
`casboxd --role scheduler`, all from this one process on grpc.aio (one event
loop, no thread per stream).

The actions (distinct Commands, do_not_cache) are uploaded first with
BatchUpdateBlobs. Then every slot sends an idle Synchronize (held: parked by
the scheduler), all ACTIONS Execute streams are opened, and each slot that is
handed an action reports it completed at once (exit 0) and is handed the next
in the same answer. Measured: dispatches per second (actions handed to a slot
over the time from the first to the last), and the time from an Execute's
start to its action reaching a slot (p50, p99), with the scheduler's threads
and RSS at the end. The Python client is likely the bottleneck on a small
machine: the figures are a floor for the scheduler, not its ceiling.

  bench/sched_load_bench.py [WORKERS [ACTIONS]]     default 1000 20000
Env: CASBOXD (default build/bin/casboxd).
"""
import asyncio
import os
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "e2e"))
sys.dont_write_bytecode = True
import grpc  # noqa: E402
import grpc.aio  # noqa: E402

import fleet_client as fc  # noqa: E402
import reapi_client as rc  # noqa: E402
from reapi_client import re_pb2  # noqa: E402
from google.protobuf import empty_pb2  # noqa: E402

RE = "/build.bazel.remote.execution.v2."


def proc_sample(pid):
    with open("/proc/%d/status" % pid) as f:
        st = dict(line.split(":", 1) for line in f if ":" in line)
    return int(st["VmRSS"].split()[0]) // 1024, int(st["Threads"])


def upload_actions(c, n):
    """n distinct trivial Actions, uploaded in batches; their digests."""
    empty = rc.digest_of(b"")
    digests, batch = [], []
    for i in range(n):
        cmd = re_pb2.Command(arguments=["/bin/true", str(i)]).SerializeToString()
        cd = rc.digest_of(cmd)
        act = re_pb2.Action(command_digest=cd, input_root_digest=empty,
                            do_not_cache=True).SerializeToString()
        ad = rc.digest_of(act)
        batch += [(cd, cmd), (ad, act)]
        digests.append(ad)
        if len(batch) >= 2000:
            c.batch_update(batch)
            batch = []
    if batch:
        c.batch_update(batch)
    return digests


def sync_request(i):
    req = fc.rw.SynchronizeRequest()
    req.worker_id["hostname"] = "bench%d" % i
    req.worker_id["slot"] = "0"
    req.platform.properties.add(name="OSFamily", value="Linux")
    return req


async def worker(i, sync, dispatched, done_evt):
    idle = sync_request(i)
    idle.current_state.idle.CopyFrom(empty_pb2.Empty())
    req = idle
    while not done_evt.is_set():
        try:
            resp = await sync(req, timeout=60)
        except grpc.aio.AioRpcError:
            if done_evt.is_set():
                return
            req = idle
            continue
        if fc.executing(resp):
            ad = resp.desired_state.executing.action_digest
            dispatched[ad.hash] = time.monotonic()
            req = sync_request(i)
            ex = req.current_state.executing
            ex.action_digest.CopyFrom(ad)
            ex.completed.result.exit_code = 0
        else:
            req = idle


async def execute(stub, ad, started, finished):
    started[ad.hash] = time.monotonic()
    call = stub(re_pb2.ExecuteRequest(action_digest=ad, skip_cache_lookup=True), timeout=600)
    async for op in call:
        if op.done:
            finished[ad.hash] = time.monotonic()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


async def run(target, workers, digests, pid):
    # Own connections (no shared subchannel), apart for the slots and for the
    # Executes, each under casboxd's 1,000 streams per connection: slots
    # whose connection is full of waiting Executes could not report.
    def channel():
        return grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])

    wchannels = [channel() for _ in range(workers // 500 + 1)]
    echannels = [channel() for _ in range(len(digests) // 500 + 1)]
    channels = wchannels + echannels
    syncs = [ch.unary_unary(fc.SYNC, request_serializer=fc.rw.SynchronizeRequest.SerializeToString,
                            response_deserializer=fc.rw.SynchronizeResponse.FromString)
             for ch in wchannels]
    execs = [ch.unary_stream(RE + "Execution/Execute",
                             request_serializer=re_pb2.ExecuteRequest.SerializeToString,
                             response_deserializer=rc.operations_pb2.Operation.FromString)
             for ch in echannels]
    dispatched, started, finished = {}, {}, {}
    done_evt = asyncio.Event()
    wtasks = [asyncio.ensure_future(worker(i, syncs[i % len(syncs)], dispatched, done_evt))
              for i in range(workers)]
    await asyncio.sleep(2)  # every slot joined and held
    held = proc_sample(pid)
    t0 = time.monotonic()
    etasks = [asyncio.ensure_future(execute(execs[i % len(execs)], ad, started, finished))
              for i, ad in enumerate(digests)]
    results = await asyncio.gather(*etasks, return_exceptions=True)
    t1 = time.monotonic()
    end = proc_sample(pid)
    done_evt.set()
    for t in wtasks:
        t.cancel()
    await asyncio.gather(*wtasks, return_exceptions=True)
    for ch in channels:
        await ch.close()
    errors = [r for r in results if isinstance(r, Exception)]
    lat = [dispatched[h] - started[h] for h in dispatched if h in started]
    first, last = min(dispatched.values()), max(dispatched.values())
    return dict(errors=errors, n=len(dispatched), finished=len(finished), wall=t1 - t0,
                rate=(len(dispatched) - 1) / (last - first) if last > first else float("nan"),
                p50=pct(lat, 0.5), p99=pct(lat, 0.99), held=held, end=end)


def main():
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    actions = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    tmp = tempfile.mkdtemp(prefix="casbox-sched-load-bench.")
    d = rc.Casboxd(os.path.join(tmp, "state"), log_path=os.path.join(tmp, "casboxd.log"),
                   extra_args=["--role", "scheduler", "--set", "scheduler.grace=0",
                               "--set", "scheduler.idle_poll=30",
                               "--set", "scheduler.max_queued=%d" % (actions * 2),
                               "--set", "server.max_inflight_calls=%d" % (actions + 1000),
                               "--set", "server.log_level=warn"]
                   + (["--set", "server.max_async_calls=%d" % (2 * (workers + actions))]
                      if os.environ.get("SCHED_BENCH_OLD") is None else []))
    d.start()
    try:
        c = rc.Client(d.target, timeout=120)
        idle = proc_sample(d.proc.pid)
        t = time.monotonic()
        digests = upload_actions(c, actions)
        print("sched_load_bench: %d worker slots, %d actions (uploaded in %.1f s); load %s"
              % (workers, actions, time.monotonic() - t, os.getloadavg()), flush=True)
        r = asyncio.run(run(d.target, workers, digests, d.proc.pid))
        print("  dispatched %d, completed streams %d, stream errors %d%s in %.1f s"
              % (r["n"], r["finished"], len(r["errors"]),
                 (" (first: %r)" % r["errors"][0]) if r["errors"] else "", r["wall"]))
        print("  dispatches/s: %.0f; Execute start to a slot: p50 %.1f ms, p99 %.1f ms"
              % (r["rate"], r["p50"] * 1e3, r["p99"] * 1e3))
        print("  scheduler RSS/threads: idle %d MiB/%d, slots held %d MiB/%d, at the end "
              "%d MiB/%d; load %s" % (idle + r["held"] + r["end"] + (os.getloadavg(),)))
        c.close()
    finally:
        d.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
