#!/usr/bin/python3
"""End-to-end: what newer REAPI clients send and expect, over real gRPC.

Bazel 7 and buildbox 1.4 (trexe, recc, rexplorer) speak API 2.3, whose
fields Debian 12's v2.2-era protos (here and in casboxd) lack; this test
writes and reads those fields as raw wire bytes (reapi_client.varint_field,
wire_fields).  Checks:

  * Capabilities: symlink_absolute_path_strategy ALLOWED; SHA256 in
    CacheCapabilities.digest_functions, ExecutionCapabilities.digest_function
    and API 2.3's ExecutionCapabilities.digest_functions (5).
  * digest_function on every request that has it (ExecuteRequest 9,
    GetActionResultRequest 6, UpdateActionResultRequest 5,
    FindMissingBlobsRequest 3, BatchUpdateBlobsRequest 5,
    BatchReadBlobsRequest 4, GetTreeRequest 5): unset, UNKNOWN (0) and SHA256
    (1) give the answer a request without it gets; BLAKE3 (9), SHA1 (2) or an
    unknown number give INVALID_ARGUMENT naming it.
  * ExecuteOperationMetadata.digest_function (6) is SHA256 on every Operation.
  * ExecutedActionMetadata.auxiliary_metadata holds only well-known types (a
    google.protobuf.Struct with casbox's staging counters), so an
    ActionResult converts to JSON as buildbox's trexe --action-result-json
    and rexplorer do (with the old custom casbox.StagingStats they failed:
    "cannot deserialize proto message").
  * trexe's defaults: Command.working_directory "." runs in the input root.
  * An ActionResult with a dangling absolute symlink round-trips through the
    action cache (Bazel's --remote_cache path).

The buildbox tools themselves are not in Debian 12 (sid only); this test
speaks their wire format.

    test_reapi_interop.py               start build/bin/casboxd (or $CASBOXD)
    test_reapi_interop.py -k digest     only checks whose name contains it

Exit status: 0 all passed, 1 something failed.
"""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import exec_helpers as eh  # noqa: E402
import reapi_client as rc  # noqa: E402
from exec_helpers import BASH, need  # noqa: E402
from reapi_client import re_pb2, operations_pb2  # noqa: E402
from google.protobuf import json_format, struct_pb2  # noqa: E402

RE = "/" + rc.RE
SHA256, BLAKE3, SHA1 = 1, 9, 2
INVALID = grpc.StatusCode.INVALID_ARGUMENT

check = eh.Checks()


class Ctx:
    def __init__(self, ds):
        self.ds = ds

    def main(self):
        return self.ds.get("main")


def with_df(req, field, value):
    """req serialized, with digest_function (field number `field`) = value
    appended (None: not set)."""
    data = req.SerializeToString()
    return data if value is None else data + rc.varint_field(field, value)


def call(c, method, req, field, value, stream=False):
    """Raw call of method with digest_function value; the raw response(s)."""
    payload = with_df(req, field, value)
    if stream:
        return c.raw_unary_stream(method, payload)
    return c.raw_unary(method, payload)


def expect_refused(c, method, req, field, stream=False):
    for value, name in ((BLAKE3, "BLAKE3 (9)"), (SHA1, "SHA1 (2)"), (42, "42")):
        try:
            call(c, method, req, field, value, stream)
        except grpc.RpcError as e:
            code, msg, _st = rc.rpc_status(e)
            need(code == INVALID, "%s with digest_function %s: %s %r, want INVALID_ARGUMENT",
                 method, name, rc.code_name(code), msg)
            want = "digest_function %s is not supported: this server uses SHA256" % name
            need(want in msg, "%s with digest_function %s: message %r does not say %r",
                 method, name, msg, want)
            continue
        raise eh.Fail("%s with digest_function %s was accepted" % (method, name))


def expect_same(c, method, req, field, stream=False, normalise=None):
    """Unset, UNKNOWN and SHA256 give the same answer."""
    norm = normalise or (lambda x: x)
    base = norm(call(c, method, req, field, None, stream))
    for value in (0, SHA256):
        got = norm(call(c, method, req, field, value, stream))
        need(got == base, "%s with digest_function %d answered %r, without it %r", method,
             value, got, base)


# -- Capabilities -------------------------------------------------------------------

@check("Capabilities: absolute symlinks ALLOWED, SHA256 in every digest function list (2.3's "
       "ExecutionCapabilities.digest_functions too)")
def _(ctx):
    _d, c = ctx.main()
    raw = c.raw_unary(RE + "Capabilities/GetCapabilities",
                      re_pb2.GetCapabilitiesRequest().SerializeToString())
    caps = re_pb2.ServerCapabilities.FromString(raw)
    cc, ec = caps.cache_capabilities, caps.execution_capabilities
    need(cc.symlink_absolute_path_strategy == re_pb2.SymlinkAbsolutePathStrategy.ALLOWED,
         "symlink_absolute_path_strategy %s, want ALLOWED", cc.symlink_absolute_path_strategy)
    need(list(cc.digest_function) == [SHA256], "CacheCapabilities.digest_function %s",
         list(cc.digest_function))
    need(ec.digest_function == SHA256, "ExecutionCapabilities.digest_function %s",
         ec.digest_function)
    exec_raw = [v for f, wt, v in rc.wire_fields(raw) if f == 2 and wt == 2]
    need(len(exec_raw) == 1, "no ExecutionCapabilities in %r", raw)
    need(rc.varints_of(exec_raw[0], 5) == [SHA256],
         "ExecutionCapabilities.digest_functions (5) %s, want [SHA256 (1)]",
         rc.varints_of(exec_raw[0], 5))


# -- digest_function on each request -------------------------------------------------

@check("digest_function: FindMissingBlobs (3), BatchUpdateBlobs (5), BatchReadBlobs (4), "
       "GetTree (5): SHA256 / unset as usual, BLAKE3, SHA1, 42 -> INVALID_ARGUMENT naming it")
def _(ctx):
    _d, c = ctx.main()
    data = b"digest function " + os.urandom(8).hex().encode()
    dg = rc.digest_of(data)
    root = eh.upload_tree(c, {"a": b"x", "sub": {"b": b"y"}})
    cas = RE + "ContentAddressableStorage/"

    req = re_pb2.BatchUpdateBlobsRequest()
    req.requests.add(digest=dg, data=data)
    expect_refused(c, cas + "BatchUpdateBlobs", req, 5)
    need(c.find_missing([dg]) == [dg], "a refused BatchUpdateBlobs stored the blob")
    for value in (SHA256, 0, None):
        r = re_pb2.BatchUpdateBlobsResponse.FromString(
            call(c, cas + "BatchUpdateBlobs", req, 5, value))
        need([x.status.code for x in r.responses] == [0], "BatchUpdateBlobs with "
             "digest_function %s: %s", value, r)

    other = rc.digest_of(b"never uploaded " + os.urandom(8).hex().encode())
    req = re_pb2.FindMissingBlobsRequest(blob_digests=[dg, other])
    expect_refused(c, cas + "FindMissingBlobs", req, 3)
    expect_same(c, cas + "FindMissingBlobs", req, 3)
    r = re_pb2.FindMissingBlobsResponse.FromString(call(c, cas + "FindMissingBlobs", req, 3,
                                                        SHA256))
    need([rc.dkey(x) for x in r.missing_blob_digests] == [rc.dkey(other)],
         "FindMissingBlobs with SHA256: missing %s", list(r.missing_blob_digests))

    req = re_pb2.BatchReadBlobsRequest(digests=[dg])
    expect_refused(c, cas + "BatchReadBlobs", req, 4)
    expect_same(c, cas + "BatchReadBlobs", req, 4)
    r = re_pb2.BatchReadBlobsResponse.FromString(call(c, cas + "BatchReadBlobs", req, 4, SHA256))
    need([x.data for x in r.responses] == [data], "BatchReadBlobs with SHA256: %s", r)

    req = re_pb2.GetTreeRequest(root_digest=root)
    expect_refused(c, cas + "GetTree", req, 5, stream=True)
    expect_same(c, cas + "GetTree", req, 5, stream=True)
    pages = [re_pb2.GetTreeResponse.FromString(x)
             for x in call(c, cas + "GetTree", req, 5, SHA256, stream=True)]
    need(sum(len(p.directories) for p in pages) == 2, "GetTree with SHA256: %s", pages)


@check("digest_function: GetActionResult (6), UpdateActionResult (5): SHA256 / unset as usual, "
       "BLAKE3, SHA1, 42 -> INVALID_ARGUMENT naming it")
def _(ctx):
    _d, c = ctx.main()
    ad = rc.digest_of(b"an action " + os.urandom(8).hex().encode())
    result = re_pb2.ActionResult(exit_code=3)
    ac = RE + "ActionCache/"
    req = re_pb2.UpdateActionResultRequest(action_digest=ad, action_result=result)
    expect_refused(c, ac + "UpdateActionResult", req, 5)
    get = re_pb2.GetActionResultRequest(action_digest=ad)
    try:
        c.get_action_result(ad)
        raise eh.Fail("a refused UpdateActionResult stored a result")
    except grpc.RpcError as e:
        need(e.code() == grpc.StatusCode.NOT_FOUND, "GetActionResult: %s", rc.rpc_status(e)[:2])
    got = re_pb2.ActionResult.FromString(call(c, ac + "UpdateActionResult", req, 5, SHA256))
    need(got.exit_code == 3, "UpdateActionResult with SHA256 answered %s", got)
    expect_refused(c, ac + "GetActionResult", get, 6)
    expect_same(c, ac + "GetActionResult", get, 6)
    got = re_pb2.ActionResult.FromString(call(c, ac + "GetActionResult", get, 6, SHA256))
    need(got.exit_code == 3, "GetActionResult with SHA256 answered %s", got)


@check("digest_function: Execute (9): SHA256 runs, BLAKE3, SHA1, 42 -> INVALID_ARGUMENT naming "
       "it; ExecuteOperationMetadata.digest_function (6) is SHA256 on every Operation")
def _(ctx):
    _d, c = ctx.main()
    ad = eh.upload_action(c, [BASH, "-c", "echo ran"])
    req = re_pb2.ExecuteRequest(action_digest=ad, skip_cache_lookup=True)
    expect_refused(c, RE + "Execution/Execute", req, 9, stream=True)
    for value in (SHA256, 0, None):
        ops = [operations_pb2.Operation.FromString(x)
               for x in call(c, RE + "Execution/Execute", req, 9, value, stream=True)]
        need(ops and ops[-1].done, "Execute with digest_function %s: %d operations, last not "
             "done", value, len(ops))
        resp = rc.Client.execute_response(ops[-1])
        need(resp.status.code == 0 and resp.result.exit_code == 0 and
             eh.read_blob(c, resp.result.stdout_digest) == b"ran\n",
             "Execute with digest_function %s: %s", value, resp)
        for i, op in enumerate(ops):
            got = rc.varints_of(op.metadata.value, 6)
            need(got == [SHA256], "Operation %d (%s): ExecuteOperationMetadata.digest_function "
                 "%s, want [SHA256]", i, eh.stage(op), got)


# -- results every client can print ---------------------------------------------------

@check("auxiliary_metadata: a google.protobuf.Struct of staging counters; the ActionResult "
       "converts to JSON (trexe --action-result-json, rexplorer)")
def _(ctx):
    _d, c = ctx.main()
    ad = eh.upload_action(c, [BASH, "-c", "cat in.txt"],
                          root=eh.upload_tree(c, {"in.txt": b"some input\n"}))
    ops, resp = eh.execute(c, ad)
    md = resp.result.execution_metadata
    urls = [a.type_url for a in md.auxiliary_metadata]
    need(urls == ["type.googleapis.com/google.protobuf.Struct"],
         "auxiliary_metadata type_urls %s, want one google.protobuf.Struct", urls)
    st = struct_pb2.Struct()
    need(md.auxiliary_metadata[0].Unpack(st), "auxiliary_metadata[0] does not unpack")
    fields = dict(st.items())
    need(fields.get("mode") in ("fuse", "hardlink"), "Struct mode %r", fields.get("mode"))
    need(isinstance(fields.get("staging_us"), float) and fields["staging_us"] >= 0,
         "Struct staging_us %r", fields.get("staging_us"))
    if fields["mode"] == "fuse":
        need(fields.get("files_opened", 0) >= 1 and "bytes_read" in fields,
             "fuse staging that read in.txt: %s", fields)
    else:
        need(set(fields) == {"mode", "staging_us"}, "hardlink staging: fields %s", sorted(fields))
    # What buildbox's tools do with a result; the old casbox.StagingStats made this raise.
    try:
        js = json_format.MessageToJson(resp.result)
        json_format.MessageToJson(resp)
        for op in ops:
            json_format.MessageToJson(op)
    except Exception as e:  # noqa: BLE001 - json_format raises several kinds
        raise eh.Fail("the ActionResult does not convert to JSON: %s" % e)
    need('"@type": "type.googleapis.com/google.protobuf.Struct"' in js and '"staging_us"' in js,
         "JSON of the result lacks the Struct: %s", js[-600:])


@check("trexe's defaults: working_directory '.' runs in the input root, outputs relative to it")
def _(ctx):
    _d, c = ctx.main()
    root = eh.upload_tree(c, {"src": {"in.txt": b"trexe input\n"}})
    ad = eh.upload_action(c, [BASH, "-c", "pwd; mkdir -p out; cat src/in.txt > out/copy.txt"],
                          root=root, working_directory=".", output_paths=["out/copy.txt"])
    _ops, resp = eh.execute(c, ad)
    need(resp.status.code == 0 and resp.result.exit_code == 0, "working_directory '.': %s %r "
         "exit %d, stderr %r", rc.code_name(resp.status.code), resp.status.message,
         resp.result.exit_code, eh.read_blob(c, resp.result.stderr_digest)[-300:])
    need(eh.read_blob(c, resp.result.stdout_digest) == b"/casbox/exec\n",
         "pwd printed %r, want the exec root", eh.read_blob(c, resp.result.stdout_digest))
    files = {f.path: f for f in resp.result.output_files}
    need(list(files) == ["out/copy.txt"] and
         eh.read_blob(c, files["out/copy.txt"].digest) == b"trexe input\n",
         "output_files %s", list(files))


@check("action cache: a result with a dangling absolute output symlink round-trips")
def _(ctx):
    _d, c = ctx.main()
    ad = rc.digest_of(b"remote cache action " + os.urandom(8).hex().encode())
    target = "/nonexistent/casbox-%s/target" % os.urandom(4).hex()
    result = re_pb2.ActionResult(exit_code=0)
    result.output_symlinks.add(path="out/link", target=target)
    result.output_file_symlinks.add(path="out/link", target=target)
    c.update_action_result(ad, result)
    got = c.get_action_result(ad)
    need([(x.path, x.target) for x in got.output_symlinks] == [("out/link", target)] and
         [(x.path, x.target) for x in got.output_file_symlinks] == [("out/link", target)],
         "GetActionResult returned %s", got)


if __name__ == "__main__":
    sys.exit(eh.main(__doc__, check, Ctx, "casbox-interop-"))
