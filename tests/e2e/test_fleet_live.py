#!/usr/bin/python3
"""A real scheduler and a real worker on one host, through [scheduler]
worker_listen: the worker protocol is served on the worker address alone
and the client services on the client address alone; the worker (size class
3, its own [http] listen) joins there and runs a client's action; the
scheduler's /metrics (checked with test_web.py's exposition parser) show
the slot idle, then busy with the action executing in its (platform, size
class) queue, and its board names the worker; a client that leaves gets its
running action (`sleep 60`) killed on the worker after orphan_timeout, and
the worker takes the next action; a worker SIGKILLed mid-action counts a
loss and a requeue, the action waits queued, and a new worker runs it.

    tests/e2e/test_fleet_live.py [-k PATTERN] [--list]
"""

import os
import signal
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import exec_helpers as eh  # noqa: E402
import fleet_client as fc  # noqa: E402
import reapi_client as rc  # noqa: E402
import test_web as tw  # noqa: E402  (the exposition parser)
from exec_helpers import need  # noqa: E402

checks = eh.Checks()
QUEUE = {"platform": "(none)", "size_class": "3"}  # actions name no property


def http_text(port, path="/metrics"):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        need(r.status == 200, "GET %s on port %d: %d", path, port, r.status)
        return r.read().decode(errors="replace")
    finally:
        conn.close()


class Ctx:
    def __init__(self, ds):
        self.ds = ds
        self.worker_port = rc.free_port()
        self.http_port = rc.free_port()
        self.d, self.c = ds.get("scheduler", [
            "--role", "scheduler",
            "--set", "scheduler.worker_listen=127.0.0.1:%d" % self.worker_port,
            "--set", "scheduler.worker_timeout=6", "--set", "scheduler.idle_poll=2",
            "--set", "scheduler.grace=120", "--set", "scheduler.orphan_timeout=2",
            "--set", "http.listen=127.0.0.1:%d" % self.http_port])
        self.worker_target = "127.0.0.1:%d" % self.worker_port
        self.proc = None
        self.worker_http = None

    def start_worker(self, name):
        self.worker_http = rc.free_port()
        log = open(os.path.join(self.ds.logdir, "worker-%s.log" % name), "ab")
        self.proc = subprocess.Popen(
            [self.d.binary, "--role", "worker", "--scheduler", "grpc://" + self.worker_target,
             "--cas", "grpc://" + self.d.target,
             "--state-dir", os.path.join(self.ds.tmp, "state-" + name),
             "--set", "worker.name=" + name, "--set", "execution.slots=1",
             "--set", "worker.size_class=3",
             "--set", "http.listen=127.0.0.1:%d" % self.worker_http]
            + os.environ.get("CASBOXD_ARGS", "").split(),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()

    def metrics(self):
        return tw.parse_exposition(http_text(self.http_port))

    def gauge(self, name, **labels):
        return tw.value(self.metrics(), name, **labels)

    def log(self):
        with open(self.d.log_path, "rb") as f:
            return f.read().decode(errors="replace")


def code_of(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return rc.rpc_status(e)[0]
    return grpc.StatusCode.OK


def sleep_action(ctx, seconds):
    arg = "%d.%06d" % (seconds, int.from_bytes(os.urandom(3), "big") % 1000000)
    return eh.upload_action(ctx.c, ["/bin/sleep", arg]), b"/bin/sleep\0" + arg.encode() + b"\0"


@checks("worker_listen: Synchronize only on the worker address, client services only on the "
        "client address; the same address for both is refused")
def _listen(ctx):
    w = fc.Worker(ctx.d.target, {"hostname": "py", "slot": "0"})
    need(code_of(lambda: w.idle(prefer_idle=True)) == grpc.StatusCode.UNIMPLEMENTED,
         "Synchronize on the client address was served")
    w.close()
    c = rc.Client(ctx.worker_target, timeout=30)
    need(code_of(lambda: c.get_capabilities()) == grpc.StatusCode.UNIMPLEMENTED,
         "GetCapabilities on the worker address was served")
    c.close()
    need(ctx.c.get_capabilities() is not None, "no Capabilities on the client address")
    # the same address twice (grpc binds with SO_REUSEPORT) is refused at start
    port = rc.free_port()
    p = subprocess.run([ctx.d.binary, "--role", "scheduler", "--listen", "127.0.0.1:%d" % port,
                        "--set", "scheduler.worker_listen=127.0.0.1:%d" % port,
                        "--state-dir", os.path.join(ctx.ds.tmp, "state-same")],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    need(p.returncode != 0 and b"worker_listen" in p.stderr,
         "worker_listen = listen: exit %d, %s", p.returncode, p.stderr[-300:])


@checks("a real worker joins on the worker address and runs a client's action; /metrics show "
        "it idle; its own /metrics are served")
def _join(ctx):
    ctx.start_worker("live")
    eh.poll_until(lambda: ctx.gauge("casbox_fleet_workers", state="idle") >= 1, 60,
               "the worker never showed up idle on /metrics")
    ad = eh.upload_action(ctx.c, ["/bin/sh", "-c", "echo live"])
    _ops, resp = eh.execute(ctx.c, ad)
    need(resp.result.exit_code == 0, "exit %d: %s", resp.result.exit_code, resp.status.message)
    need(resp.result.execution_metadata.worker == "live/0", "worker %r",
         resp.result.execution_metadata.worker)
    wm = tw.parse_exposition(http_text(ctx.worker_http))
    need(tw.value(wm, "casbox_execution_actions_total", outcome="ok") >= 1,
         "the worker's /metrics count no action")
    need(tw.value(ctx.metrics(), "casbox_execution_actions_total", outcome="ok") >= 1,
         "the scheduler's /metrics count no finished action")


@checks("busy: fleet status and /metrics show the slot busy and the action executing in its "
        "queue (size class 3), the board names the worker and its table the slot; the client "
        "leaves: killed on the worker after orphan_timeout")
def _orphan(ctx):
    ad, cmdline = sleep_action(ctx, 60)
    s = eh.Stream(ctx.c, ad, timeout=300)
    eh.poll_until(lambda: eh.procs_with_cmdline(cmdline), 60, "the action's sleep never started")
    status = fc.admin(ctx.d.target, "Status")
    need("size class 3" in status and "queue platform (none) size class 3: 0 queued, 1 executing"
         in status, "fleet status does not show the size class and the queue:\n%s", status)
    m = ctx.metrics()
    need(tw.value(m, "casbox_fleet_workers", state="busy") == 1, "busy gauge %s",
         tw.value(m, "casbox_fleet_workers", state="busy"))
    need(tw.value(m, "casbox_fleet_executing_actions", **QUEUE) == 1,
         "executing gauge of queue %s: %s", QUEUE,
         tw.value(m, "casbox_fleet_executing_actions", **QUEUE))
    # the worker's exec steps: its next busy report says running, and the
    # scheduler's board and its own show that stage
    eh.poll_until(lambda: tw.value(ctx.metrics(), "casbox_execution_actions_by_stage",
                                stage="running") == 1, 30,
               "the scheduler's board never showed the action's stage as running")
    need(tw.value(tw.parse_exposition(http_text(ctx.worker_http)),
                  "casbox_execution_actions_by_stage", stage="running") == 1,
         "the worker's own board does not show the action running")
    page = http_text(ctx.http_port, "/")
    need(rc.dstr(ad).split("/")[0][:12] in page and "live/0" in page,
         "the scheduler's overview does not show the running action on live/0")
    table = page.split('id="workers"', 1)[-1].split("</table>", 1)[0]
    need("hostname=live,slot=0" in table and ">busy<" in table and rc.dstr(ad) in table,
         "the overview's workers table does not show live's slot busy with the action: %s",
         table[:600])
    s.cancel()
    # a stream notices its client left at its next keep-alive (30 s), then
    # orphan_timeout (2 s), then the worker's next report (2 s)
    eh.poll_until(lambda: not eh.procs_with_cmdline(cmdline), 120,
               "the orphaned action's sleep was not killed on the worker")
    need("cancelled on worker hostname=live,slot=0" in ctx.log(), "no cancel line in the log")
    eh.poll_until(lambda: ctx.gauge("casbox_fleet_workers", state="idle") == 1, 30,
               "the worker did not go idle")
    need(ctx.gauge("casbox_fleet_executing_actions", **QUEUE) == 0, "still executing")
    ad2 = eh.upload_action(ctx.c, ["/bin/true"])
    _ops, resp = eh.execute(ctx.c, ad2)
    need(resp.result.exit_code == 0, "the next action: exit %d", resp.result.exit_code)


@checks("a worker SIGKILLed mid-action: losses and requeues counted, the action queued, a new "
        "worker runs it")
def _lost(ctx):
    m0 = ctx.metrics()
    losses0 = tw.value(m0, "casbox_fleet_worker_losses_total")
    requeues0 = tw.value(m0, "casbox_fleet_requeues_total")
    ad, cmdline = sleep_action(ctx, 3)
    s = eh.Stream(ctx.c, ad, timeout=300)
    eh.poll_until(lambda: eh.procs_with_cmdline(cmdline), 60, "the action's sleep never started")
    ctx.proc.send_signal(signal.SIGKILL)
    ctx.proc.wait()
    eh.poll_until(lambda: ctx.gauge("casbox_fleet_requeues_total") == requeues0 + 1, 60,
               "no requeue counted")
    m = ctx.metrics()
    need(tw.value(m, "casbox_fleet_worker_losses_total") == losses0 + 1, "losses %s -> %s",
         losses0, tw.value(m, "casbox_fleet_worker_losses_total"))
    need(tw.value(m, "casbox_fleet_queued_actions", **QUEUE) == 1, "queued gauge %s",
         tw.value(m, "casbox_fleet_queued_actions", **QUEUE))
    need(tw.value(m, "casbox_fleet_workers", state="idle") +
         tw.value(m, "casbox_fleet_workers", state="busy") == 0, "a lost worker still counted")
    ctx.start_worker("live2")
    _ops, resp = s.final()
    need(resp.result.exit_code == 0, "exit %d: %s", resp.result.exit_code, resp.status.message)
    need(resp.result.execution_metadata.worker == "live2/0", "ran on %r",
         resp.result.execution_metadata.worker)


def make_ctx(ds):
    ctx = Ctx(ds)
    orig = ds.cleanup

    def cleanup():
        if ctx.proc is not None and ctx.proc.poll() is None:
            ctx.proc.kill()
            ctx.proc.wait()
        orig()
    ds.cleanup = cleanup
    return ctx


if __name__ == "__main__":
    sys.exit(eh.main(__doc__, checks, make_ctx, "casbox-fleet-live-"))
