#!/usr/bin/python3
"""casboxd --role scheduler against scripted worker slots (Buildbarn's worker
protocol, buildbarn.remoteworker.OperationQueue/Synchronize) and real
Execute streams: an action reaches a worker and its result the client; a
lost worker's action is requeued to another, and fails UNAVAILABLE naming
the lost workers past scheduler.max_retries; a platform nobody announced is
FAILED_PRECONDITION (UNAVAILABLE during the start-up grace); drains and
prefer_being_idle; and bad input on the protocol (empty worker_id, a
completion for an action not given, two concurrent Synchronize calls of one
slot, garbage bytes): each a clear status, and the scheduler keeps serving.

    tests/e2e/test_fleet_protocol.py [-k PATTERN] [--list]
"""

import os
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import exec_helpers as eh  # noqa: E402
import fleet_client as fc  # noqa: E402
import reapi_client as rc  # noqa: E402
from exec_helpers import need  # noqa: E402

checks = eh.Checks()
SCHED_ARGS = ["--role", "scheduler", "--set", "scheduler.worker_timeout=4",
              "--set", "scheduler.idle_poll=2", "--set", "scheduler.grace=0",
              "--set", "scheduler.max_retries=1", "--set", "scheduler.orphan_timeout=2"]


class Ctx:
    def __init__(self, ds):
        self.ds = ds
        self.d, self.c = ds.get("scheduler", SCHED_ARGS)

    def worker(self, name, slot="0", platform=None):
        return fc.Worker(self.d.target, {"hostname": name, "slot": slot}, platform=platform)

    def log(self):
        with open(self.d.log_path, "rb") as f:
            return f.read().decode(errors="replace")


def code_of(fn):
    try:
        fn()
    except grpc.RpcError as e:
        code, msg, _ = rc.rpc_status(e)
        return code, msg
    return grpc.StatusCode.OK, ""


def wait_executing(w, ad, tries=30):
    """Idle Synchronize calls (each held by the scheduler) until w is given ad."""
    for _ in range(tries):
        r = w.idle()
        if fc.executing(r):
            need(r.desired_state.executing.action_digest == ad,
                 "worker given %s, expected %s", rc.dstr(r.desired_state.executing.action_digest),
                 rc.dstr(ad))
            return r
    raise eh.Fail("worker %s never given %s" % (w.worker_id, rc.dstr(ad)))


@checks("before any worker: Execute is FAILED_PRECONDITION naming the platform")
def _no_worker(ctx):
    ad = eh.upload_action(ctx.c, ["/bin/true"], action_platform={"OSFamily": "Linux"})
    code, msg, _st, _where = eh.exec_status(ctx.c, ad)
    need(code == grpc.StatusCode.FAILED_PRECONDITION.value[0], "code %s: %s", code, msg)
    need("OSFamily=Linux" in msg, "message does not name the platform: %s", msg)


@checks("during the start-up grace: UNAVAILABLE instead")
def _grace(ctx):
    d2, c2 = ctx.ds.get("grace", ["--role", "scheduler", "--set", "scheduler.grace=600"])
    ad = eh.upload_action(c2, ["/bin/true"])
    code, msg, _st, _where = eh.exec_status(c2, ad)
    need(code == grpc.StatusCode.UNAVAILABLE.value[0], "code %s: %s", code, msg)
    need("scheduler.grace" in msg, "message: %s", msg)


@checks("an idle worker joins (log line) and is told to poll again")
def _idle(ctx):
    w = ctx.worker("alpha")
    r = w.idle()
    need(not fc.executing(r), "idle worker given work with nothing queued")
    need(r.HasField("next_synchronization_at"), "no next_synchronization_at")
    need("worker hostname=alpha,slot=0 joined" in ctx.log(), "no join log line")
    w.close()


@checks("an action reaches a worker, its stages and result reach the client")
def _roundtrip(ctx):
    out = ctx.c.upload_blob(b"from the scripted worker\n")
    ad = eh.upload_action(ctx.c, ["/bin/echo", "hi"], action_platform={"OSFamily": "Linux"})
    s = eh.Stream(ctx.c, ad)
    w = ctx.worker("alpha")
    r = wait_executing(w, ad)
    ex = r.desired_state.executing
    need(ex.action.command_digest.size_bytes > 0, "no Action in the assignment")
    need(ex.HasField("queued_timestamp"), "no queued_timestamp")
    s.wait_for(lambda ops: any(eh.stage(o) == "EXECUTING" for o in ops), 10)
    need("EXECUTING" in s.stages(), "client never saw EXECUTING: %s", s.stages())
    r = w.running(ad)
    need(not r.HasField("desired_state"), "a busy report should be answered 'carry on'")
    need(r.next_synchronization_at.seconds > 0, "no next_synchronization_at for a busy worker")
    w.completed(ad, exit_code=7, stdout_digest=out, worker_name="alpha/0")
    _ops, resp = s.final()
    need(resp.result.exit_code == 7, "exit code %d, expected the worker's 7",
         resp.result.exit_code)
    need(resp.result.execution_metadata.worker == "alpha/0", "worker %r",
         resp.result.execution_metadata.worker)
    need(resp.result.stdout_digest == out, "stdout digest not relayed")
    w.close()


@checks("Synchronize with an empty worker_id: INVALID_ARGUMENT")
def _empty_id(ctx):
    w = fc.Worker(ctx.d.target, {})
    code, msg = code_of(lambda: w.idle())
    need(code == grpc.StatusCode.INVALID_ARGUMENT, "%s: %s", code, msg)
    need("worker_id" in msg, "message: %s", msg)
    w.close()


@checks("a completion for an action the worker was not given: FAILED_PRECONDITION")
def _not_given(ctx):
    w = ctx.worker("beta")
    w.idle(prefer_idle=True)
    code, msg = code_of(lambda: w.completed(rc.digest_of(b"never queued")))
    need(code == grpc.StatusCode.FAILED_PRECONDITION, "%s: %s", code, msg)
    need("not running it" in msg, "message: %s", msg)
    w.close()


@checks("two concurrent Synchronize calls with one worker_id: RESOURCE_EXHAUSTED")
def _concurrent(ctx):
    for _attempt in range(5):
        a, b = ctx.worker("gamma"), ctx.worker("gamma")
        t = threading.Thread(target=lambda: a.idle(), daemon=True)
        t.start()
        time.sleep(0.3)  # a is held by the scheduler (idle_poll = 2 s)
        code, msg = code_of(lambda: b.idle())
        t.join()
        a.close()
        b.close()
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            need("already has a Synchronize" in msg, "message: %s", msg)
            return
    raise eh.Fail("second Synchronize never refused (last: %s %s)" % (code, msg))


@checks("past half of max_async_calls held, an idle slot is told to poll again later")
def _held_bound(ctx):
    # held calls are parked (event-driven), bounded by half of max_async_calls
    d2, _c2 = ctx.ds.get("tight", SCHED_ARGS + ["--set", "server.max_async_calls=4"])
    ws = [fc.Worker(d2.target, {"hostname": "t%d" % i, "slot": "0"}) for i in range(3)]
    for w in ws:
        w.idle(prefer_idle=True)  # joined
    for _attempt in range(5):
        held = [threading.Thread(target=w.idle, daemon=True) for w in ws[:2]]
        for t in held:
            t.start()
        time.sleep(0.5)  # both held (idle_poll = 2 s): the bound, 4 / 2
        r = ws[2].idle()
        answered = time.time()
        for t in held:
            t.join()
        # told to come back in a second, not held until idle_poll and then
        # told to come back at once
        if r.next_synchronization_at.ToNanoseconds() / 1e9 > answered + 0.5:
            for w in ws:
                w.close()
            return
    raise eh.Fail("a third idle slot was never told to come back later")


@checks("garbage bytes on Synchronize: INVALID_ARGUMENT")
def _garbage(ctx):
    w = ctx.worker("delta")
    code, msg = code_of(lambda: w.raw(b"\xff\xff\xff\xff\x0f", timeout=10))
    need(code == grpc.StatusCode.INVALID_ARGUMENT, "%s: %s", code, msg)
    w.close()


@checks("a platform no worker announced: FAILED_PRECONDITION naming it")
def _absent_platform(ctx):
    ad = eh.upload_action(ctx.c, ["/bin/true"], action_platform={"gpu": "tesla"})
    code, msg, _st, _where = eh.exec_status(ctx.c, ad)
    need(code == grpc.StatusCode.FAILED_PRECONDITION.value[0], "code %s: %s", code, msg)
    need("gpu=tesla" in msg, "message does not name the platform: %s", msg)


@checks("a lost worker's action is requeued to another and completes once")
def _requeue(ctx):
    ad = eh.upload_action(ctx.c, ["/bin/true"])
    s = eh.Stream(ctx.c, ad)
    a, b = ctx.worker("lost1"), ctx.worker("heir")
    wait_executing(a, ad)
    a.close()  # a falls silent: lost after scheduler.worker_timeout
    wait_executing(b, ad)
    b.completed(ad, exit_code=0, worker_name="heir/0")
    _ops, resp = s.final()
    need(resp.result.execution_metadata.worker == "heir/0", "worker %r",
         resp.result.execution_metadata.worker)
    log = ctx.log()
    need("worker hostname=lost1,slot=0 left" in log and "requeued" in log,
         "no leave/requeue log line")
    # the lost worker's late completion is refused, nothing duplicated
    code, msg = code_of(lambda: ctx.worker("lost1").completed(ad))
    need(code == grpc.StatusCode.FAILED_PRECONDITION, "late completion: %s %s", code, msg)
    b.close()


@checks("past scheduler.max_retries: UNAVAILABLE naming the lost workers")
def _retry_limit(ctx):
    ad = eh.upload_action(ctx.c, ["/bin/true"])
    s = eh.Stream(ctx.c, ad)
    for name in ("doomed1", "doomed2"):
        w = ctx.worker(name)
        wait_executing(w, ad)
        w.close()
    _ops, resp = s.final()
    need(resp.status.code == grpc.StatusCode.UNAVAILABLE.value[0], "status %s %r",
         resp.status.code, resp.status.message)
    need("doomed1" in resp.status.message and "doomed2" in resp.status.message,
         "message does not name the lost workers: %s", resp.status.message)


@checks("an action no client waits for any more is cancelled, queued or on its worker")
def _orphans(ctx):
    w = ctx.worker("orphan")
    w.idle(prefer_idle=True)  # announced: its platform is known
    queued = eh.upload_action(ctx.c, ["/bin/true"])
    running = eh.upload_action(ctx.c, ["/bin/true"])
    sq, sr = eh.Stream(ctx.c, queued), eh.Stream(ctx.c, running)
    # Bounds by the clock, not by a count of tries, so that a loaded machine
    # (slow calls) does not run out of tries before the timers fire.
    need(sq.wait_for(lambda ops: ops, 60) and sr.wait_for(lambda ops: ops, 60),
         "the Execute streams were not answered")
    # the worker takes one of the two (either order), the other stays queued
    deadline = time.time() + 60
    r = w.idle()
    while not fc.executing(r) and time.time() < deadline:
        r = w.idle()
    need(fc.executing(r), "worker given nothing")
    taken = r.desired_state.executing.action_digest
    sq.cancel()
    sr.cancel()
    # Busy reports until the scheduler drops it: a stream notices its client
    # left at its next keep-alive (30 s), then orphan_timeout (2 s) runs.
    deadline = time.time() + 150
    while not fc.idle_wanted(w.running(taken)):
        if time.time() > deadline:
            raise eh.Fail("the running orphan was never taken off its worker")
        time.sleep(0.5)
    lines = ("cancelled on worker hostname=orphan,slot=0", "cancelled while queued")
    deadline = time.time() + 60  # the queued one goes in the same reaper pass or a later one
    while not all(x in ctx.log() for x in lines) and time.time() < deadline:
        time.sleep(0.5)
    log = ctx.log()
    need(lines[0] in log, "no log line for the running orphan %s", rc.dstr(taken))
    need(lines[1] in log, "no log line for the queued orphan")
    need(not fc.executing(w.idle()), "the queued orphan was still handed out")
    w.close()


@checks("a drained worker and one preferring to be idle get no work; admin Status shows them")
def _drain(ctx):
    fc.admin(ctx.d.target, "Drain", "hostname=drained,*")
    ad = eh.upload_action(ctx.c, ["/bin/true"])
    s = eh.Stream(ctx.c, ad)
    dr, stop = ctx.worker("drained"), ctx.worker("stopping")
    need(not fc.executing(dr.idle()), "drained worker given work")
    need(not fc.executing(stop.idle(prefer_idle=True)), "worker preferring idle given work")
    status = fc.admin(ctx.d.target, "Status")
    need("hostname=drained,slot=0: idle" in status and "drained" in status, "status:\n%s",
         status)
    need("queued 1" in status, "status does not show the queued action:\n%s", status)
    fc.admin(ctx.d.target, "Undrain", "hostname=drained,*")
    wait_executing(dr, ad)
    dr.completed(ad)
    s.final()
    code, _msg = code_of(lambda: fc.admin(ctx.d.target, "Undrain", "hostname=drained,*"))
    need(code == grpc.StatusCode.NOT_FOUND, "second Undrain: %s", code)
    dr.close()
    stop.close()


if __name__ == "__main__":
    sys.exit(eh.main(__doc__, checks, Ctx, "casbox-fleet-protocol-"))
