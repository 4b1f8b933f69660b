#!/usr/bin/python3
"""Buildbarn's worker protocol for casbox's fleet end-to-end tests; not a test.

Generates the Python module of the project's own proto/remoteworker.proto
(package buildbarn.remoteworker) next to reapi_client's REAPI modules, and
offers a scripted worker slot that speaks Synchronize, and the admin calls:

    import fleet_client as fc
    w = fc.Worker("127.0.0.1:8980", {"hostname": "py", "slot": "0"})
    r = w.idle()                       # SynchronizeResponse
    if fc.executing(r): w.running(r.desired_state.executing.action_digest)
    fc.admin(target, "Status")         # the scheduler's status text
"""

import hashlib
import os
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import reapi_client as rc  # noqa: E402
from reapi_client import re_pb2  # noqa: E402
from google.protobuf import empty_pb2, wrappers_pb2  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO = os.path.join(REPO, "proto", "remoteworker.proto")
SYNC = "/buildbarn.remoteworker.OperationQueue/Synchronize"


def _generate():
    with open(PROTO, "rb") as f:
        h = hashlib.sha256(f.read()).hexdigest()[:16]
    out = os.path.join(rc._cache_dir(), "pyproto-remoteworker-" + h)
    if not os.path.exists(os.path.join(out, "remoteworker_pb2.py")):
        os.makedirs(out, exist_ok=True)
        subprocess.run(
            ["protoc", "-I" + os.path.dirname(PROTO),
             "-I" + os.path.join(rc.PROTO_ROOT, "remoteapis"),
             "-I" + os.path.join(rc.PROTO_ROOT, "googleapis"), "-I" + rc.PROTOBUF_INCLUDE,
             "--python_out=" + out, PROTO], check=True, capture_output=True)
    return out


sys.path.insert(0, _generate())
import remoteworker_pb2 as rw  # noqa: E402


def executing(resp):
    return resp.HasField("desired_state") and resp.desired_state.WhichOneof("worker_state") == \
        "executing"


def idle_wanted(resp):
    return resp.HasField("desired_state") and resp.desired_state.WhichOneof("worker_state") == \
        "idle"


class Worker:
    """One scripted worker slot."""

    def __init__(self, target, worker_id, platform=None, prefix="", timeout=30, credentials=None,
                 token=None):
        """credentials, token: as reapi_client.Client's (TLS; a bearer token)."""
        self.channel = grpc.secure_channel(target, credentials) if credentials is not None \
            else grpc.insecure_channel(target)
        if token is not None:
            self.channel = grpc.intercept_channel(self.channel, rc.BearerToken(token))
        self.sync = self.channel.unary_unary(
            SYNC, request_serializer=rw.SynchronizeRequest.SerializeToString,
            response_deserializer=rw.SynchronizeResponse.FromString)
        self.raw = self.channel.unary_unary(SYNC)
        self.worker_id = dict(worker_id)
        self.platform = platform if platform is not None else {"OSFamily": "Linux"}
        self.prefix = prefix
        self.timeout = timeout

    def request(self, prefer_idle=False):
        req = rw.SynchronizeRequest(instance_name_prefix=self.prefix,
                                    prefer_being_idle=prefer_idle)
        for k, v in self.worker_id.items():
            req.worker_id[k] = v
        for k, v in sorted(self.platform.items()):
            req.platform.properties.add(name=k, value=v)
        return req

    def idle(self, prefer_idle=False, timeout=None):
        req = self.request(prefer_idle)
        req.current_state.idle.CopyFrom(empty_pb2.Empty())
        return self.sync(req, timeout=timeout or self.timeout)

    def running(self, action_digest, timeout=None):
        req = self.request()
        req.current_state.executing.action_digest.CopyFrom(action_digest)
        req.current_state.executing.running.CopyFrom(empty_pb2.Empty())
        return self.sync(req, timeout=timeout or self.timeout)

    def completed(self, action_digest, exit_code=0, stdout_digest=None, worker_name="py"):
        req = self.request()
        ex = req.current_state.executing
        ex.action_digest.CopyFrom(action_digest)
        ex.completed.result.exit_code = exit_code
        ex.completed.result.execution_metadata.worker = worker_name
        if stdout_digest is not None:
            ex.completed.result.stdout_digest.CopyFrom(stdout_digest)
        return self.sync(req, timeout=self.timeout)

    def close(self):
        self.channel.close()


def admin(target, method, value="", timeout=10):
    """Calls casbox.fleet.v1.FleetAdmin/<method> with a StringValue; the answer's text."""
    with grpc.insecure_channel(target) as ch:
        call = ch.unary_unary("/casbox.fleet.v1.FleetAdmin/" + method,
                              request_serializer=wrappers_pb2.StringValue.SerializeToString,
                              response_deserializer=wrappers_pb2.StringValue.FromString)
        return call(wrappers_pb2.StringValue(value=value), timeout=timeout).value


__all__ = ["rw", "re_pb2", "Worker", "admin", "executing", "idle_wanted"]
