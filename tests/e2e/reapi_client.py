#!/usr/bin/python3
"""A small REAPI v2 client for casbox's end-to-end tests.

Runs with Debian's /usr/bin/python3 (python3-grpcio, python3-protobuf).  The
REAPI/googleapis Python modules are not in git: they are generated on first
use with `protoc --python_out` from Debian's bazel-bootstrap-source protos
(/usr/src/bazel-bootstrap/third_party/{remoteapis,googleapis}) into a cache
directory ($CASBOX_TEST_CACHE or ~/.cache/casbox-test, pyproto-<hash>/).

Library use (from a test):
    import reapi_client as rc
    c = rc.Client("127.0.0.1:8980", instance="")
    d = c.upload_blob(b"hello")          # BatchUpdateBlobs
    c.find_missing([d])                  # -> []
    try: c.bs_read(c.read_name(rc.digest_of(b"x")))
    except grpc.RpcError as e: print(rc.rpc_status(e))

Command line (used by the shell tests):
    reapi_client.py --target HOST:PORT capabilities     # print them
    reapi_client.py --target HOST:PORT exec-enabled     # exit 0 if exec_enabled
    reapi_client.py --target HOST:PORT wait-ready [SECONDS]
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import time
import uuid

import grpc

PROTO_ROOT = os.environ.get("REAPI_PROTO_DIR", "/usr/src/bazel-bootstrap/third_party")
PROTOBUF_INCLUDE = os.environ.get("PROTOBUF_INCLUDE_DIR", "/usr/include")
PROTOS = [
    "build/bazel/remote/execution/v2/remote_execution.proto",
    "build/bazel/remote/asset/v1/remote_asset.proto",
    "build/bazel/semver/semver.proto",
    "google/longrunning/operations.proto",
    "google/rpc/status.proto",
    "google/rpc/code.proto",
    "google/rpc/error_details.proto",
    "google/bytestream/bytestream.proto",
    "google/api/annotations.proto",
    "google/api/http.proto",
]


def _cache_dir():
    d = os.environ.get("CASBOX_TEST_CACHE")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "casbox-test")
    return d


def _proto_path(p):
    for root in (os.path.join(PROTO_ROOT, "remoteapis"), os.path.join(PROTO_ROOT, "googleapis")):
        if os.path.exists(os.path.join(root, p)):
            return os.path.join(root, p)
    raise SystemExit(
        "reapi_client: %s not found under %s: install bazel-bootstrap-source "
        "(scripts/setup) or set REAPI_PROTO_DIR" % (p, PROTO_ROOT))


def generate_protos():
    """Generate the Python modules once per (protoc, proto sources); return the dir."""
    h = hashlib.sha256()
    try:
        h.update(subprocess.run(["protoc", "--version"], check=True, capture_output=True).stdout)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit("reapi_client: protoc does not run (%s): install protobuf-compiler" % e)
    for p in PROTOS:
        with open(_proto_path(p), "rb") as f:
            h.update(p.encode() + b"\0" + f.read())
    out = os.path.join(_cache_dir(), "pyproto-" + h.hexdigest()[:16])
    if os.path.exists(os.path.join(out, ".complete")):
        return out
    os.makedirs(_cache_dir(), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".pyproto-", dir=_cache_dir())
    try:
        subprocess.run(
            ["protoc", "-I" + os.path.join(PROTO_ROOT, "remoteapis"),
             "-I" + os.path.join(PROTO_ROOT, "googleapis"), "-I" + PROTOBUF_INCLUDE,
             "--python_out=" + tmp] + PROTOS,
            check=True, capture_output=True)
        # Regular packages (with __init__.py) everywhere except the top-level
        # `google`, which must stay a namespace package shared with
        # google.protobuf from python3-protobuf.
        for dirpath, _dirs, _files in os.walk(tmp):
            rel = os.path.relpath(dirpath, tmp)
            if rel not in (".", "google"):
                open(os.path.join(dirpath, "__init__.py"), "a").close()
        open(os.path.join(tmp, ".complete"), "w").close()
        try:
            os.rename(tmp, out)
        except OSError:  # another process won the race
            pass
    except subprocess.CalledProcessError as e:
        raise SystemExit("reapi_client: protoc failed: %s" % e.stderr.decode(errors="replace"))
    finally:
        if os.path.exists(tmp):
            subprocess.run(["rm", "-rf", tmp])
    return out


sys.path.insert(0, generate_protos())
from build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2  # noqa: E402
from google.bytestream import bytestream_pb2 as bs_pb2  # noqa: E402
from google.longrunning import operations_pb2  # noqa: E402
from google.rpc import error_details_pb2, status_pb2  # noqa: E402

RE = "build.bazel.remote.execution.v2."
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MiB = 1 << 20


def digest_of(data):
    return re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def dkey(d):
    return (d.hash, d.size_bytes)


def dstr(d):
    return "%s/%d" % (d.hash, d.size_bytes)


def rpc_status(err):
    """(grpc.StatusCode, message, google.rpc.Status or None) of an RpcError.

    The rich status comes from the `grpc-status-details-bin` trailer."""
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    st = None
    try:
        md = err.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - some errors carry no call
        md = ()
    for k, v in md:
        if k == "grpc-status-details-bin":
            st = status_pb2.Status()
            st.ParseFromString(v)
    return code, details or "", st


def status_details(st):
    """Decode the Any details of a google.rpc.Status we know about."""
    out = []
    if st is None:
        return out
    known = {}
    for name in ("PreconditionFailure", "BadRequest", "RetryInfo", "ResourceInfo",
                 "ErrorInfo", "DebugInfo", "QuotaFailure", "RequestInfo", "Help",
                 "LocalizedMessage"):
        cls = getattr(error_details_pb2, name, None)  # the old googleapis lacks some
        if cls is not None:
            known["type.googleapis.com/google.rpc." + name] = cls
    for any_ in st.details:
        cls = known.get(any_.type_url)
        if cls is None:
            out.append(any_)
        else:
            m = cls()
            any_.Unpack(m)
            out.append(m)
    return out


# -- fields newer than Debian's v2.2-era protos -----------------------------------
#
# The generated Python types lack API 2.3's fields (digest_function, ...); a
# test adds them to a serialized request as raw bytes and reads them from a
# reply's bytes with these.

def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7f) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def varint_field(field, value):
    """The wire bytes of varint field `field` = value (append them to a
    serialized message to set a field its generated type lacks)."""
    return varint(field << 3) + varint(value)


def _read_varint(data, pos):
    v = shift = 0
    while True:
        b = data[pos]
        pos += 1
        v |= (b & 0x7f) << shift
        shift += 7
        if not b & 0x80:
            return v, pos


def wire_fields(data):
    """[(field number, wire type, value)] of a serialized message: an int
    for varints, bytes for length-delimited fields, raw bytes otherwise."""
    out, pos = [], 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = _read_varint(data, pos)
        elif wt == 2:
            n, pos = _read_varint(data, pos)
            v, pos = data[pos:pos + n], pos + n
        elif wt in (1, 5):
            n = 8 if wt == 1 else 4
            v, pos = data[pos:pos + n], pos + n
        else:
            raise ValueError("wire type %d at %d" % (wt, pos))
        out.append((field, wt, v))
    return out


def varints_of(data, field):
    """Every value of varint field `field` (repeated, packed or not) in data."""
    vals = []
    for f, wt, v in wire_fields(data):
        if f != field:
            continue
        if wt == 0:
            vals.append(v)
        elif wt == 2:
            pos = 0
            while pos < len(v):
                x, pos = _read_varint(v, pos)
                vals.append(x)
    return vals


def code_name(code):
    """grpc.StatusCode or int -> 'NOT_FOUND'."""
    if isinstance(code, grpc.StatusCode):
        return code.name
    for c in grpc.StatusCode:
        if c.value[0] == code:
            return c.name
    return str(code)


def _ser(m):
    return m.SerializeToString()


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                  grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds "authorization: Bearer TOKEN" to every call (plaintext channels
    too, where grpc's call credentials are not allowed)."""

    def __init__(self, token):
        self.md = ("authorization", "Bearer " + token)

    def _details(self, d):
        md = list(d.metadata or []) + [self.md]
        return d._replace(metadata=md) if hasattr(d, "_replace") else _CallDetails(d, md)

    def intercept_unary_unary(self, cont, d, req):
        return cont(self._details(d), req)

    def intercept_unary_stream(self, cont, d, req):
        return cont(self._details(d), req)

    def intercept_stream_unary(self, cont, d, it):
        return cont(self._details(d), it)

    def intercept_stream_stream(self, cont, d, it):
        return cont(self._details(d), it)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, d, md):
        self.method = d.method
        self.timeout = d.timeout
        self.metadata = md
        self.credentials = d.credentials
        self.wait_for_ready = getattr(d, "wait_for_ready", None)
        self.compression = getattr(d, "compression", None)


class Client:
    """One channel to a REAPI endpoint, with a method per RPC."""

    def __init__(self, target, instance="", timeout=60, max_message=64 * MiB, credentials=None,
                 token=None):
        """credentials: grpc.ssl_channel_credentials(...) for TLS (None:
        plaintext); token: sent as "authorization: Bearer TOKEN" with every call."""
        self.target = target
        self.instance = instance
        self.timeout = timeout
        options = [
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message),
            ("grpc.enable_retries", 0),
        ]
        if credentials is not None:
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        if token is not None:
            self.channel = grpc.intercept_channel(self.channel, BearerToken(token))
        self._m = {}

    def close(self):
        self.channel.close()

    # -- raw method objects ------------------------------------------------
    def _uu(self, method, resp_cls):
        key = ("uu", method)
        if key not in self._m:
            self._m[key] = self.channel.unary_unary(
                method, request_serializer=_ser,
                response_deserializer=resp_cls.FromString if resp_cls else None)
        return self._m[key]

    def _us(self, method, resp_cls):
        key = ("us", method)
        if key not in self._m:
            self._m[key] = self.channel.unary_stream(
                method, request_serializer=_ser, response_deserializer=resp_cls.FromString)
        return self._m[key]

    def _su(self, method, resp_cls):
        key = ("su", method)
        if key not in self._m:
            self._m[key] = self.channel.stream_unary(
                method, request_serializer=_ser, response_deserializer=resp_cls.FromString)
        return self._m[key]

    def raw_unary(self, method, payload, timeout=None):
        """Call any method with raw request bytes; returns raw response bytes."""
        key = ("raw", method)
        if key not in self._m:
            self._m[key] = self.channel.unary_unary(method)  # bytes in, bytes out
        return self._m[key](payload, timeout=timeout or self.timeout)

    def raw_unary_stream(self, method, payload, timeout=None):
        """A server-streaming method with raw request bytes; a list of raw responses."""
        key = ("raws", method)
        if key not in self._m:
            self._m[key] = self.channel.unary_stream(method)
        return list(self._m[key](payload, timeout=timeout or self.timeout))

    def _inst(self, instance):
        return self.instance if instance is None else instance

    # -- Capabilities --------------------------------------------------------
    def get_capabilities(self, instance=None, timeout=None):
        return self._uu("/" + RE + "Capabilities/GetCapabilities", re_pb2.ServerCapabilities)(
            re_pb2.GetCapabilitiesRequest(instance_name=self._inst(instance)),
            timeout=timeout or self.timeout)

    # -- ContentAddressableStorage ------------------------------------------
    def find_missing(self, digests, instance=None):
        r = self._uu("/" + RE + "ContentAddressableStorage/FindMissingBlobs",
                     re_pb2.FindMissingBlobsResponse)(
            re_pb2.FindMissingBlobsRequest(instance_name=self._inst(instance),
                                           blob_digests=list(digests)),
            timeout=self.timeout)
        return list(r.missing_blob_digests)

    def batch_update(self, blobs, instance=None):
        """blobs: iterable of (Digest, bytes). Returns the BatchUpdateBlobsResponse."""
        req = re_pb2.BatchUpdateBlobsRequest(instance_name=self._inst(instance))
        for d, data in blobs:
            req.requests.add(digest=d, data=data)
        return self._uu("/" + RE + "ContentAddressableStorage/BatchUpdateBlobs",
                        re_pb2.BatchUpdateBlobsResponse)(req, timeout=self.timeout)

    def batch_read(self, digests, instance=None):
        return self._uu("/" + RE + "ContentAddressableStorage/BatchReadBlobs",
                        re_pb2.BatchReadBlobsResponse)(
            re_pb2.BatchReadBlobsRequest(instance_name=self._inst(instance), digests=list(digests)),
            timeout=self.timeout)

    def get_tree(self, root, page_size=0, page_token="", instance=None):
        """All GetTreeResponse messages of one GetTree call."""
        return list(self._us("/" + RE + "ContentAddressableStorage/GetTree",
                             re_pb2.GetTreeResponse)(
            re_pb2.GetTreeRequest(instance_name=self._inst(instance), root_digest=root,
                                  page_size=page_size, page_token=page_token),
            timeout=self.timeout))

    def upload_blob(self, data, instance=None):
        """Store one blob with BatchUpdateBlobs; raise unless it succeeded."""
        d = digest_of(data)
        r = self.batch_update([(d, data)], instance=instance)
        st = r.responses[0].status
        if st.code != 0:
            raise AssertionError("BatchUpdateBlobs of %s failed: %s %s"
                                 % (dstr(d), code_name(st.code), st.message))
        return d

    def upload_message(self, msg, instance=None):
        return self.upload_blob(msg.SerializeToString(deterministic=True), instance=instance)

    # -- ByteStream ------------------------------------------------------------
    def read_name(self, d, instance=None):
        inst = self._inst(instance)
        return "%sblobs/%s/%d" % (inst + "/" if inst else "", d.hash, d.size_bytes)

    def write_name(self, d, instance=None, upload_id=None):
        inst = self._inst(instance)
        return "%suploads/%s/blobs/%s/%d" % (inst + "/" if inst else "",
                                            upload_id or str(uuid.uuid4()), d.hash, d.size_bytes)

    def bs_read(self, resource_name, offset=0, limit=0, timeout=None):
        """Concatenated data of a ByteStream.Read."""
        it = self._us("/google.bytestream.ByteStream/Read", bs_pb2.ReadResponse)(
            bs_pb2.ReadRequest(resource_name=resource_name, read_offset=offset, read_limit=limit),
            timeout=timeout or self.timeout)
        return b"".join(r.data for r in it)

    def bs_write_requests(self, requests, timeout=None):
        """ByteStream.Write from an iterable of WriteRequest; returns WriteResponse."""
        return self._su("/google.bytestream.ByteStream/Write", bs_pb2.WriteResponse)(
            iter(requests), timeout=timeout or self.timeout)

    def bs_write(self, resource_name, data, offset=0, chunk=MiB, finish=True, timeout=None):
        """Write data[offset:] in chunks starting at write_offset=offset."""
        def gen():
            pos = offset
            first = True
            while True:
                piece = data[pos:pos + chunk]
                last = pos + len(piece) >= len(data)
                yield bs_pb2.WriteRequest(resource_name=resource_name if first else "",
                                          write_offset=pos, data=piece,
                                          finish_write=finish and last)
                first = False
                pos += len(piece)
                if last:
                    return
        return self.bs_write_requests(gen(), timeout=timeout)

    def upload_bytestream(self, data, instance=None, chunk=MiB):
        d = digest_of(data)
        r = self.bs_write(self.write_name(d, instance=instance), data, chunk=chunk)
        if r.committed_size != len(data):
            raise AssertionError("ByteStream.Write of %s: committed_size %d, want %d"
                                 % (dstr(d), r.committed_size, len(data)))
        return d

    def query_write_status(self, resource_name):
        return self._uu("/google.bytestream.ByteStream/QueryWriteStatus",
                        bs_pb2.QueryWriteStatusResponse)(
            bs_pb2.QueryWriteStatusRequest(resource_name=resource_name), timeout=self.timeout)

    # -- ActionCache -----------------------------------------------------------
    def get_action_result(self, action_digest, instance=None, inline_stdout=False,
                          inline_stderr=False, inline_output_files=()):
        return self._uu("/" + RE + "ActionCache/GetActionResult", re_pb2.ActionResult)(
            re_pb2.GetActionResultRequest(instance_name=self._inst(instance),
                                          action_digest=action_digest,
                                          inline_stdout=inline_stdout, inline_stderr=inline_stderr,
                                          inline_output_files=list(inline_output_files)),
            timeout=self.timeout)

    def update_action_result(self, action_digest, result, instance=None):
        return self._uu("/" + RE + "ActionCache/UpdateActionResult", re_pb2.ActionResult)(
            re_pb2.UpdateActionResultRequest(instance_name=self._inst(instance),
                                             action_digest=action_digest, action_result=result),
            timeout=self.timeout)

    # -- Execution -------------------------------------------------------------
    def execute(self, action_digest, skip_cache_lookup=False, instance=None, timeout=None):
        """All Operations streamed by one Execute call."""
        return list(self._us("/" + RE + "Execution/Execute", operations_pb2.Operation)(
            re_pb2.ExecuteRequest(instance_name=self._inst(instance), action_digest=action_digest,
                                  skip_cache_lookup=skip_cache_lookup),
            timeout=timeout or self.timeout))

    def wait_execution(self, name, timeout=None):
        return list(self._us("/" + RE + "Execution/WaitExecution", operations_pb2.Operation)(
            re_pb2.WaitExecutionRequest(name=name), timeout=timeout or self.timeout))

    @staticmethod
    def execute_response(op):
        """The ExecuteResponse of a finished Operation (or None)."""
        if not op.done or not op.HasField("response"):
            return None
        r = re_pb2.ExecuteResponse()
        op.response.Unpack(r)
        return r

    @staticmethod
    def execute_metadata(op):
        m = re_pb2.ExecuteOperationMetadata()
        if op.HasField("metadata"):
            op.metadata.Unpack(m)
        return m


# -- running casboxd -----------------------------------------------------------

def free_port():
    """A TCP port that was free a moment ago (the daemon does not take port 0)."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Casboxd:
    """Start casboxd on a free port with a state dir; stop it and check its exit.

        with Casboxd(state_dir) as d:
            c = Client(d.target)
    """

    def __init__(self, state_dir, binary=None, log_path=None, extra_args=(), ready_timeout=60):
        self.binary = binary or os.environ.get("CASBOXD") or default_casboxd()
        self.state_dir = state_dir
        self.log_path = log_path or os.path.join(state_dir + ".log")
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.proc = None
        self.port = None

    @property
    def target(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        if not os.access(self.binary, os.X_OK):
            raise SystemExit("casboxd binary %s does not exist: build it first (scripts/build) "
                             "or set CASBOXD" % self.binary)
        for attempt in range(3):
            self.port = free_port()
            line = "casboxd: listening on 127.0.0.1:%d" % self.port
            log = open(self.log_path, "ab")
            start_pos = log.tell()
            self.proc = subprocess.Popen(
                [self.binary, "--listen", "127.0.0.1:%d" % self.port,
                 "--state-dir", self.state_dir] + self.extra_args,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            log.close()
            deadline = time.time() + self.ready_timeout
            while time.time() < deadline:
                with open(self.log_path, "rb") as f:
                    f.seek(start_pos)
                    text = f.read().decode(errors="replace")
                if line in text:
                    return self
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("casboxd printed no %r within %ds; log %s:\n%s"
                                     % (line, self.ready_timeout, self.log_path, self.log_tail()))
            if "in use" in text.lower() and attempt < 2:
                continue  # lost the port race: try another port
            raise AssertionError("casboxd exited with %s before listening; log %s:\n%s"
                                 % (self.proc.returncode, self.log_path, self.log_tail()))
        raise AssertionError("could not start casboxd")

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=30):
        """SIGTERM; raise AssertionError unless it exits 0 within timeout."""
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        if p.poll() is not None:
            raise AssertionError("casboxd had already exited with status %s; log %s:\n%s"
                                 % (p.returncode, self.log_path, self.log_tail()))
        p.terminate()
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise AssertionError("casboxd did not exit within %ds of SIGTERM; log %s:\n%s"
                                 % (timeout, self.log_path, self.log_tail()))
        if rc != 0:
            raise AssertionError("casboxd exited with status %s after SIGTERM (want 0); log %s:\n%s"
                                 % (rc, self.log_path, self.log_tail()))

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.stop()
        else:
            self.kill()


def default_casboxd():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(os.path.dirname(here)), "build", "bin", "casboxd")


# -- command line ----------------------------------------------------------------

def _main(argv):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="HOST:PORT of the REAPI endpoint")
    ap.add_argument("--instance", default="")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("capabilities", help="print GetCapabilities")
    sub.add_parser("exec-enabled", help="exit 0 if execution is enabled, 3 if not")
    w = sub.add_parser("wait-ready", help="retry GetCapabilities until it answers")
    w.add_argument("seconds", nargs="?", type=float, default=30)
    args = ap.parse_args(argv)
    c = Client(args.target, instance=args.instance, timeout=10)
    if args.cmd == "wait-ready":
        deadline = time.time() + args.seconds
        while True:
            try:
                c.get_capabilities(timeout=2)
                return 0
            except grpc.RpcError as e:
                if time.time() > deadline:
                    print("no answer from %s: %s" % (args.target, rpc_status(e)[:2]), file=sys.stderr)
                    return 1
                time.sleep(0.2)
    try:
        caps = c.get_capabilities()
    except grpc.RpcError as e:
        code, msg, _ = rpc_status(e)
        print("GetCapabilities failed: %s %s" % (code_name(code), msg), file=sys.stderr)
        return 1
    if args.cmd == "capabilities":
        print(caps)
        return 0
    if args.cmd == "exec-enabled":
        return 0 if caps.HasField("execution_capabilities") and \
            caps.execution_capabilities.exec_enabled else 3
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
