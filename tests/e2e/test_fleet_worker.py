#!/usr/bin/python3
"""casboxd --role worker against a scripted scheduler: a Python gRPC server
speaking Buildbarn's Synchronize (the test decides every answer), with a real
casboxd as the fleet's CAS (--cas). The worker slot joins idle with worker_id
{hostname, slot} and the default platform; an assigned action runs with its
inputs read through from the CAS, the worker reports it busy by each
next_synchronization_at and then completed with the ExecuteResponse
(ExecutedActionMetadata.worker = NAME/slot), its outputs uploaded to the CAS
and the ActionCache entry written there; a failing or do_not_cache action
leaves no entry; an action whose blobs the CAS lacks completes with
FAILED_PRECONDITION naming them; SIGTERM makes it ask for no more work
(prefer_being_idle) and exit 0.

    tests/e2e/test_fleet_worker.py [-k PATTERN] [--list]
"""

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import exec_helpers as eh  # noqa: E402
import fleet_client as fc  # noqa: E402
import reapi_client as rc  # noqa: E402
from exec_helpers import need  # noqa: E402
from google.protobuf import timestamp_pb2  # noqa: E402

rw = fc.rw
checks = eh.Checks()


def ts(seconds_from_now):
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(int((time.time() + seconds_from_now) * 1e9))
    return t


class Scheduler:
    """A scripted scheduler: every request goes to self.requests; an idle one
    gets the next assignment put in self.assign (held up to 0.5 s), a busy
    one 'carry on' with next_synchronization_at in 0.5 s."""

    def __init__(self):
        self.requests = queue.Queue()
        self.assign = queue.Queue()
        self.give_up = None  # an action digest: its next busy report is answered idle
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.method_handlers_generic_handler(
            "buildbarn.remoteworker.OperationQueue",
            {"Synchronize": grpc.unary_unary_rpc_method_handler(
                self.sync, request_deserializer=rw.SynchronizeRequest.FromString,
                response_serializer=rw.SynchronizeResponse.SerializeToString)})
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def sync(self, req, _context):
        self.requests.put((time.time(), req))
        resp = rw.SynchronizeResponse()
        if req.current_state.WhichOneof("worker_state") == "executing" and \
                req.current_state.executing.WhichOneof("execution_state") != "completed":
            if self.give_up is not None and \
                    req.current_state.executing.action_digest == self.give_up:
                self.give_up = None
                resp.desired_state.idle.SetInParent()
                resp.next_synchronization_at.CopyFrom(ts(0))
                return resp
            resp.next_synchronization_at.CopyFrom(ts(0.5))
            return resp
        if not req.prefer_being_idle:
            try:
                ex = self.assign.get(timeout=0.5)
                resp.desired_state.executing.CopyFrom(ex)
                resp.next_synchronization_at.CopyFrom(ts(0.5))
                return resp
            except queue.Empty:
                pass
        resp.desired_state.idle.SetInParent()
        resp.next_synchronization_at.CopyFrom(ts(0))
        return resp

    def next_request(self, pred, timeout=60):
        """The first request satisfying pred (earlier ones are dropped)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                t, req = self.requests.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                break
            if pred(req):
                return t, req
        raise eh.Fail("no matching Synchronize from the worker within %ds" % timeout)


def state(req):
    s = req.current_state.WhichOneof("worker_state")
    if s == "executing":
        return req.current_state.executing.WhichOneof("execution_state")
    return s


class Ctx:
    def __init__(self, ds):
        self.ds = ds
        self.cas, self.c = ds.get("cas", ["--no-execution"])
        self.sched = Scheduler()
        self.log_path = os.path.join(ds.logdir, "worker.log")
        self.state = os.path.join(ds.tmp, "state-worker")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.cas.binary, "--role", "worker", "--scheduler",
             "grpc://127.0.0.1:%d" % self.sched.port, "--cas", "grpc://" + self.cas.target,
             "--state-dir", self.state, "--set", "worker.name=pyw",
             "--set", "execution.slots=1"] + os.environ.get("CASBOXD_ARGS", "").split(),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def run(self, ad, suffix=""):
        """Assigns ad and returns (busy reports seen, the completed ExecuteResponse)."""
        action = re_action(self.c, ad)
        ex = rw.DesiredState.Executing(action_digest=ad, instance_name_suffix=suffix)
        if action is not None:
            ex.action.CopyFrom(action)
        ex.queued_timestamp.CopyFrom(ts(0))
        self.sched.assign.put(ex)
        busy = []
        while True:
            _t, req = self.sched.next_request(lambda r: state(r) != "idle", timeout=120)
            need(req.current_state.executing.action_digest == ad, "report names %s",
                 rc.dstr(req.current_state.executing.action_digest))
            if state(req) == "completed":
                return busy, req.current_state.executing.completed
            busy.append(state(req))


def re_action(c, ad):
    try:
        return rc.re_pb2.Action.FromString(eh.read_blob(c, ad))
    except grpc.RpcError:
        return None


def ac_entry(c, ad, instance=None):
    try:
        return c.get_action_result(ad, instance=instance)
    except grpc.RpcError as e:
        if rc.rpc_status(e)[0] == grpc.StatusCode.NOT_FOUND:
            return None
        raise


@checks("the slot joins idle with worker_id {hostname, slot} and the default platform")
def _join(ctx):
    _t, req = ctx.sched.next_request(lambda r: True)
    need(dict(req.worker_id) == {"hostname": "pyw", "slot": "0"}, "worker_id %s",
         dict(req.worker_id))
    props = {p.name: p.value for p in req.platform.properties}
    need(props == {"OSFamily": "Linux", "ISA": "x86-64"}, "platform %s", props)
    need(state(req) == "idle" and not req.prefer_being_idle, "first state %s", state(req))


@checks("an action runs: busy reports, then completed with outputs and the cache entry in the CAS")
def _run(ctx):
    root = eh.upload_tree(ctx.c, {"in.txt": b"fleet input\n", "unread.bin": b"x" * 4096})
    ad = eh.upload_action(ctx.c, ["/bin/sh", "-c", "sleep 2; cat in.txt > out; echo hi"],
                          root=root, output_paths=["out"])
    busy, resp = ctx.run(ad)
    need("running" in busy, "no 'running' report during a 2 s action: %s", busy)
    need(set(busy) <= {"fetching_inputs", "running", "uploading_outputs"}, "reports %s", busy)
    need(resp.status.code == 0, "status %s %s", resp.status.code, resp.status.message)
    r = resp.result
    need(r.exit_code == 0, "exit %d", r.exit_code)
    need(r.execution_metadata.worker == "pyw/0", "worker %r", r.execution_metadata.worker)
    need(eh.read_blob(ctx.c, r.stdout_digest) == b"hi\n", "stdout not in the CAS")
    outs = {f.path: f.digest for f in r.output_files}
    need(eh.read_blob(ctx.c, outs["out"]) == b"fleet input\n", "output not in the CAS")
    need(ac_entry(ctx.c, ad) is not None, "no ActionCache entry in the CAS")
    # lazily staged: the input the action never opened was never fetched
    unread = rc.digest_of(b"x" * 4096).hash
    need(not os.path.exists(os.path.join(ctx.state, "cas", "blobs", unread[:2], unread)),
         "an input the action never opened was fetched")


@checks("the ActionCache entry goes under the client's instance name (prefix + suffix)")
def _instance(ctx):
    ad = eh.upload_action(ctx.c, ["/bin/true"])
    _busy, resp = ctx.run(ad, suffix="e2e/fleet")
    need(resp.result.exit_code == 0, "exit %d", resp.result.exit_code)
    need(ac_entry(ctx.c, ad, "e2e/fleet") is not None, "no entry under instance e2e/fleet")
    need(ac_entry(ctx.c, ad) is None, "an entry under the empty instance name")


@checks("a failing action and a do_not_cache one: no ActionCache entry")
def _no_cache(ctx):
    ad = eh.upload_action(ctx.c, ["/bin/sh", "-c", "exit 3"])
    _busy, resp = ctx.run(ad)
    need(resp.result.exit_code == 3, "exit %d", resp.result.exit_code)
    need(ac_entry(ctx.c, ad) is None, "a failed action was cached")
    ad = eh.upload_action(ctx.c, ["/bin/true"], do_not_cache=True)
    _busy, resp = ctx.run(ad)
    need(resp.result.exit_code == 0, "exit %d", resp.result.exit_code)
    need(ac_entry(ctx.c, ad) is None, "a do_not_cache action was cached")


@checks("an action whose blobs the CAS lacks: completed with FAILED_PRECONDITION naming them")
def _missing(ctx):
    cmd = eh.command(["/bin/true", os.urandom(8).hex()])
    cd = rc.digest_of(cmd.SerializeToString(deterministic=True))  # never uploaded
    ad = ctx.c.upload_message(eh.action(cd, eh.upload_tree(ctx.c, {}), salt=os.urandom(8)))
    _busy, resp = ctx.run(ad)
    need(resp.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0], "status %s %s",
         resp.status.code, resp.status.message)
    need(cd.hash in str(eh.missing_subjects(resp.status)), "missing blobs %s",
         eh.missing_subjects(resp.status))


@checks("desired_state idle while busy kills the action; the slot goes idle and runs the next")
def _give_up(ctx):
    arg = "60.%06d" % (int.from_bytes(os.urandom(3), "big") % 1000000)
    cmdline = b"/bin/sleep\0" + arg.encode() + b"\0"
    ad = eh.upload_action(ctx.c, ["/bin/sleep", arg])
    ex = rw.DesiredState.Executing(action_digest=ad, action=re_action(ctx.c, ad))
    ex.queued_timestamp.CopyFrom(ts(0))
    ctx.sched.assign.put(ex)
    ctx.sched.next_request(lambda r: state(r) == "running", timeout=120)
    eh.poll_until(lambda: eh.procs_with_cmdline(cmdline), 60, "the action's sleep did not start")
    ctx.sched.give_up = ad
    # the sleep (60 s) is killed: gone well before it would end by itself
    eh.poll_until(lambda: not eh.procs_with_cmdline(cmdline), 30,
               "the action's sleep was not killed after desired_state idle")
    _t, req = ctx.sched.next_request(lambda r: state(r) in ("idle", "completed"), timeout=30)
    need(state(req) == "idle", "after desired idle the slot reported %s, not idle", state(req))
    # cleaned up as after any run: no scratch directory is left
    scratch = os.path.join(ctx.state, "cas", "exec")
    eh.poll_until(lambda: os.path.isdir(scratch) and not os.listdir(scratch), 30,
               "the killed action's scratch space was not removed")
    need("killed: the scheduler gave it up" in ctx.log(), "no log line for the kill")
    ad2 = eh.upload_action(ctx.c, ["/bin/sh", "-c", "echo next"])
    _busy, resp = ctx.run(ad2)
    need(resp.result.exit_code == 0 and eh.read_blob(ctx.c, resp.result.stdout_digest) == b"next\n",
         "the next action: exit %d", resp.result.exit_code)


@checks("SIGTERM: prefer_being_idle, then exit 0")
def _sigterm(ctx):
    ctx.sched.next_request(lambda r: True)  # it is up and polling
    ctx.proc.send_signal(signal.SIGTERM)
    ctx.sched.next_request(lambda r: r.prefer_being_idle, timeout=30)
    try:
        rc_ = ctx.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        ctx.proc.kill()
        raise eh.Fail("the worker did not exit within 30 s of SIGTERM")
    need(rc_ == 0, "exit status %s; log:\n%s", rc_, ctx.log()[-2000:])


def make_ctx(ds):
    ctx = Ctx(ds)
    # stop the worker with the daemons, whatever happens
    orig = ds.cleanup

    def cleanup():
        if ctx.proc.poll() is None:
            ctx.proc.kill()
            ctx.proc.wait()
        ctx.sched.server.stop(0)
        orig()
    ds.cleanup = cleanup
    return ctx


if __name__ == "__main__":
    sys.exit(eh.main(__doc__, checks, make_ctx, "casbox-fleet-worker-"))
