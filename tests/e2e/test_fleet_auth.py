#!/usr/bin/python3
"""End-to-end: the fleet's worker protocol under [auth] and mutual TLS.

A scheduler (casboxd --role scheduler) with tokens: Synchronize without a
token is UNAUTHENTICATED, with a build client's token (read, write,
execute) PERMISSION_DENIED naming `worker`, with a worker token limited to
instance prefix teamA refused for the prefix "" and served for teamA.
FleetAdmin: Status needs read, Drain worker. Then a scheduler over mutual
TLS with a certificates file: a real casboxd --role worker whose client
certificate has `worker` (and read, write, write-ac for the outputs it
stores through the scheduler) joins and runs a client's action; a worker
whose certificate lacks `worker` is refused (the scheduler logs why) and
never joins.
"""

import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import exec_helpers as eh  # noqa: E402
import fleet_client as fc  # noqa: E402
import reapi_client as rc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
checks = eh.Checks()


def write_file(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def code_of(fn):
    try:
        fn()
        return "OK"
    except grpc.RpcError as e:
        return rc.code_name(rc.rpc_status(e)[0])


def wait_log(path, needle, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(path, errors="replace") as f:
            if needle in f.read():
                return True
        time.sleep(0.1)
    return False


class Ctx:
    def __init__(self, ds):
        self.ds = ds
        self.certs = os.path.join(ds.tmp, "certs")
        subprocess.run([os.path.join(HERE, "auth_certs.sh"), self.certs], check=True)
        self.workers = []

    def cert(self, name):
        return os.path.join(self.certs, name)

    def creds(self, name):
        with open(self.cert("ca.pem"), "rb") as ca, open(self.cert(name + ".key"), "rb") as k, \
                open(self.cert(name + ".pem"), "rb") as c:
            return grpc.ssl_channel_credentials(ca.read(), k.read(), c.read())

    def conf(self, name, text):
        return write_file(os.path.join(self.ds.tmp, name + ".conf"), text, 0o644)


@checks("Synchronize: no token UNAUTHENTICATED, a build token PERMISSION_DENIED, a worker token "
        "only on its instance prefix; FleetAdmin needs read / worker")
def tokens(ctx):
    tokens = write_file(os.path.join(ctx.ds.tmp, "tokens"),
                        "tok-dev read,write,execute\ntok-worker worker teamA\n"
                        "tok-ops read,worker\n")
    dmn, _ = ctx.ds.get("sched-tokens", ["--role", "scheduler", "--config",
                                         ctx.conf("sched-tokens", "[auth]\ntokens_file = %s\n"
                                                  % tokens)])
    ctx.ds.clients["sched-tokens"] = rc.Client(dmn.target, token="tok-dev")
    wid = {"hostname": "py", "slot": "0"}
    bad = []
    for token, prefix, want in ((None, "", "UNAUTHENTICATED"), ("tok-dev", "", "PERMISSION_DENIED"),
                                ("tok-worker", "", "PERMISSION_DENIED"),
                                ("tok-worker", "teamAB", "PERMISSION_DENIED"),
                                ("tok-worker", "teamA", "OK")):
        w = fc.Worker(dmn.target, wid, prefix=prefix, token=token, timeout=10)
        got = code_of(lambda: w.idle(prefer_idle=True, timeout=3) if want != "OK" else
                      w.idle(prefer_idle=True))
        if got != want and not (want == "OK" and got == "DEADLINE_EXCEEDED"):
            bad.append("Synchronize with %s for prefix '%s': %s, want %s"
                       % (token, prefix, got, want))
        w.close()
    try:
        fc.Worker(dmn.target, wid, token="tok-dev").idle(timeout=3)
    except grpc.RpcError as e:
        if "worker" not in rc.rpc_status(e)[1]:
            bad.append("the refusal does not name the worker permission: %r" % rc.rpc_status(e)[1])

    def admin(method, token):
        with grpc.intercept_channel(grpc.insecure_channel(dmn.target), rc.BearerToken(token)) as ch:
            call = ch.unary_unary("/casbox.fleet.v1.FleetAdmin/" + method,
                                  request_serializer=fc.wrappers_pb2.StringValue.SerializeToString,
                                  response_deserializer=fc.wrappers_pb2.StringValue.FromString)
            return call(fc.wrappers_pb2.StringValue(value="nothing-*"), timeout=10)
    for method, token, want in (("Status", "tok-dev", "OK"), ("Drain", "tok-dev", "PERMISSION_DENIED"),
                                ("Drain", "tok-ops", "OK"), ("Undrain", "tok-ops", "OK")):
        got = code_of(lambda: admin(method, token))
        if got != want:
            bad.append("FleetAdmin/%s with %s: %s, want %s" % (method, token, got, want))
    eh.need(not bad, "%d wrong:\n      %s", len(bad), "\n      ".join(bad))


def start_worker(ctx, name, cert, sched_target):
    conf = ctx.conf(name, "[client]\ntls_ca = %s\ntls_certificate = %s\ntls_private_key = %s\n"
                    % (ctx.cert("ca.pem"), ctx.cert(cert + ".pem"), ctx.cert(cert + ".key")))
    log = os.path.join(ctx.ds.logdir, "casboxd-%s.log" % name)
    p = subprocess.Popen([os.environ.get("CASBOXD") or rc.default_casboxd(), "--role", "worker",
                          "--scheduler", "grpcs://" + sched_target, "--state-dir",
                          os.path.join(ctx.ds.tmp, "state-" + name), "--config", conf,
                          "--set", "worker.name=" + name, "--set", "execution.slots=1"],
                         stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    ctx.workers.append(p)
    return p, log


def stop_worker(p):
    p.terminate()
    try:
        return p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return "killed"


@checks("mutual TLS fleet: a worker certificate with `worker` joins and runs an action; one "
        "without it is refused and never joins")
def mtls_fleet(ctx):
    names = write_file(os.path.join(ctx.ds.tmp, "names"),
                       "worker worker,read,write,write-ac\nci read,write,write-ac,execute\n"
                       "dev read,write,execute\n")
    conf = ctx.conf("sched-mtls", "[tls]\ncertificate = %s\nprivate_key = %s\nclient_ca = %s\n"
                    "[auth]\ncertificates_file = %s\n"
                    % (ctx.cert("server.pem"), ctx.cert("server.key"), ctx.cert("ca.pem"), names))
    dmn, _ = ctx.ds.get("sched-mtls", ["--role", "scheduler", "--config", conf])
    ci = rc.Client(dmn.target, credentials=ctx.creds("ci"), timeout=120)
    ctx.ds.clients["sched-mtls"] = ci

    bad_worker, bad_log = start_worker(ctx, "w-dev", "dev", dmn.target)
    eh.need(wait_log(dmn.log_path, "refused /buildbarn.remoteworker.OperationQueue/Synchronize"),
            "the scheduler did not log refusing the dev worker")
    with open(dmn.log_path, errors="replace") as f:
        text = f.read()
    eh.need("certificate 'dev' lacks permission 'worker'" in text,
            "the refusal should name the certificate and the permission:\n%s",
            "\n".join(line for line in text.splitlines() if "refused" in line)[:800])
    eh.need("hostname=w-dev,slot=0 joined" not in text,
            "the dev worker joined")
    rc_dev = stop_worker(bad_worker)

    good, good_log = start_worker(ctx, "w-ok", "worker", dmn.target)
    eh.need(wait_log(dmn.log_path, "fleet: worker hostname=w-ok,slot=0 joined", 30),
            "the worker with the worker permission did not join; its log:\n%s"
            % open(good_log, errors="replace").read()[-1500:])
    ad = eh.upload_action(ci, ["/bin/sh", "-c", "echo fleet over mtls"])
    _, resp = eh.execute(ci, ad, timeout=120)
    eh.need(resp.status.code == 0 and resp.result.exit_code == 0,
            "the action failed: %s", resp)
    out = eh.read_blob(ci, resp.result.stdout_digest) if resp.result.HasField("stdout_digest") \
        else resp.result.stdout_raw
    eh.need(out == b"fleet over mtls\n", "stdout %r", out)
    eh.need("w-ok" in resp.result.execution_metadata.worker,
            "ran on %r", resp.result.execution_metadata.worker)
    rc_ok = stop_worker(good)
    eh.need(rc_ok == 0, "the worker exited %s on SIGTERM", rc_ok)
    eh.need(rc_dev in (0, 1), "the refused worker exited %s on SIGTERM", rc_dev)


def make_ctx(ds):
    return Ctx(ds)


if __name__ == "__main__":
    sys.exit(eh.main(__doc__, checks, make_ctx, "casbox-e2e-fleet-auth."))
