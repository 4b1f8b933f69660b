#!/usr/bin/python3
"""End-to-end: casboxd's CAS, ByteStream, ActionCache and Capabilities
services against good and bad input, over real gRPC.

Every check asserts the gRPC status code and, for errors, that the message
names what was wrong (the digest, resource name or offset).  After all checks
the daemon must still answer and must exit 0 on SIGTERM.

    test_cas_bad_input.py                 start build/bin/casboxd (or $CASBOXD)
    test_cas_bad_input.py --target H:P    use a running daemon instead
    test_cas_bad_input.py -k bytestream   only checks whose name contains it

Exit status: 0 all passed, 1 something failed.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import reapi_client as rc  # noqa: E402
from reapi_client import re_pb2, bs_pb2, error_details_pb2  # noqa: E402

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
OUT_OF_RANGE = grpc.StatusCode.OUT_OF_RANGE
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED
C_OK, C_INVALID, C_NOT_FOUND = 0, 3, 5

CHECKS = []


def check(name):
    def reg(fn):
        CHECKS.append((name, fn))
        return fn
    return reg


class Fail(AssertionError):
    pass


class Skip(Exception):
    pass


def need(cond, msg, *args):
    if not cond:
        raise Fail(msg % args if args else msg)


def expect_error(what, fn, codes, mention=None):
    """fn() must raise an RpcError with a code in codes.

    mention: a string (or tuple of alternatives) that the message must
    contain, case-insensitively, so the client learns what was wrong."""
    if isinstance(codes, grpc.StatusCode):
        codes = (codes,)
    try:
        fn()
    except grpc.RpcError as e:
        code, msg, st = rc.rpc_status(e)
        need(code in codes, "%s: got %s %r, want %s", what, rc.code_name(code), msg,
             "/".join(c.name for c in codes))
        if mention is not None:
            alts = (mention,) if isinstance(mention, str) else tuple(mention)
            need(any(a.lower() in msg.lower() for a in alts),
                 "%s: %s message %r does not name %s", what, code.name, msg,
                 " or ".join(repr(a) for a in alts))
        return code, msg, st
    raise Fail("%s: succeeded, want %s" % (what, "/".join(c.name for c in codes)))


def rnd(n):
    return os.urandom(n)


def bad_digests():
    """(description, Digest, what the message must name)."""
    h = rc.digest_of(b"casbox").hash
    return [
        ("63-char hash", re_pb2.Digest(hash=h[:63], size_bytes=6), h[:63]),
        ("65-char hash", re_pb2.Digest(hash=h + "0", size_bytes=6), h + "0"),
        ("non-hex hash", re_pb2.Digest(hash="g" * 64, size_bytes=6), "g" * 64),
        ("hash with a slash", re_pb2.Digest(hash=h[:32] + "/" + h[33:], size_bytes=6),
         (h[:32] + "/", "hash")),
        ("empty hash", re_pb2.Digest(hash="", size_bytes=6), ("hash", "digest")),
        ("negative size", re_pb2.Digest(hash=h, size_bytes=-5), ("-5", "size")),
    ]


# -- Capabilities ---------------------------------------------------------------

@check("capabilities: SHA256, api 2.0..2.2, max_batch_total_size_bytes > 0, AC updates")
def _(c):
    caps = c.get_capabilities()
    cc = caps.cache_capabilities
    need(re_pb2.DigestFunction.SHA256 in cc.digest_function,
         "cache_capabilities.digest_function %s lacks SHA256", list(cc.digest_function))
    lo = (caps.low_api_version.major, caps.low_api_version.minor)
    hi = (caps.high_api_version.major, caps.high_api_version.minor)
    need(lo == (2, 0), "low_api_version %s, want 2.0", lo)
    need(hi == (2, 2), "high_api_version %s, want 2.2 (the protos are v2.2-era)", hi)
    need(cc.max_batch_total_size_bytes > 0, "max_batch_total_size_bytes is %d",
         cc.max_batch_total_size_bytes)
    need(cc.action_cache_update_capabilities.update_enabled,
         "action_cache_update_capabilities.update_enabled is false: Bazel's "
         "--remote_cache mode would not upload local results")
    for inst in ("a", "a/b/c"):
        c.get_capabilities(instance=inst)


# -- FindMissingBlobs --------------------------------------------------------------

@check("FindMissingBlobs: reports exactly the missing blobs; empty blob always present")
def _(c):
    present = c.upload_blob(rnd(100))
    missing = rc.digest_of(rnd(100))
    empty = re_pb2.Digest(hash=rc.EMPTY_SHA256, size_bytes=0)
    got = [rc.dkey(d) for d in c.find_missing([present, missing, empty])]
    need(got == [rc.dkey(missing)], "FindMissingBlobs returned %s, want only %s", got,
         rc.dstr(missing))
    need(c.find_missing([]) == [], "FindMissingBlobs of nothing returned something")


@check("FindMissingBlobs: a known hash with the wrong size is missing")
def _(c):
    d = c.upload_blob(rnd(64))
    wrong = re_pb2.Digest(hash=d.hash, size_bytes=d.size_bytes + 1)
    got = [rc.dkey(x) for x in c.find_missing([wrong])]
    need(got == [rc.dkey(wrong)], "FindMissingBlobs(%s) returned %s: the digest is (hash, size)",
         rc.dstr(wrong), got)


@check("FindMissingBlobs: malformed digests -> INVALID_ARGUMENT naming the digest")
def _(c):
    good = rc.digest_of(b"fine")
    for desc, bad, mention in bad_digests():
        # The bad digest comes second: every entry must be validated.
        expect_error("FindMissingBlobs with a %s" % desc,
                     lambda: c.find_missing([good, bad]), INVALID, mention)


@check("garbage request bytes -> INVALID_ARGUMENT")
def _(c):
    for m in (rc.RE + "ContentAddressableStorage/FindMissingBlobs",
              rc.RE + "ContentAddressableStorage/BatchUpdateBlobs",
              rc.RE + "ActionCache/GetActionResult"):
        expect_error("/%s with undecodable protobuf" % m,
                     lambda: c.raw_unary("/" + m, b"\xff\xff\xff\xff\x0f", timeout=10), INVALID)


# -- BatchUpdateBlobs / BatchReadBlobs -----------------------------------------------

@check("BatchUpdateBlobs: data not matching its digest -> per-blob INVALID_ARGUMENT, not stored")
def _(c):
    good = rnd(200)
    gd = rc.digest_of(good)
    claimed = rc.digest_of(rnd(200))          # digest of other data of the same size
    longer = rnd(50)
    ld = re_pb2.Digest(hash=rc.digest_of(longer).hash, size_bytes=53)  # right hash, wrong size
    r = c.batch_update([(gd, good), (claimed, rnd(200)), (ld, longer)])
    need(len(r.responses) == 3, "%d responses for 3 blobs", len(r.responses))
    by = {rc.dkey(x.digest): x.status for x in r.responses}
    need(set(by) == {rc.dkey(gd), rc.dkey(claimed), rc.dkey(ld)},
         "responses name digests %s, not the requested ones", sorted(by))
    need(by[rc.dkey(gd)].code == C_OK, "the good blob got %s %r", rc.code_name(by[rc.dkey(gd)].code),
         by[rc.dkey(gd)].message)
    for d, what in ((claimed, "hash mismatch"), (ld, "size mismatch")):
        st = by[rc.dkey(d)]
        need(st.code == C_INVALID, "%s: per-blob status %s %r, want INVALID_ARGUMENT", what,
             rc.code_name(st.code), st.message)
        need(st.message, "%s: per-blob INVALID_ARGUMENT without a message", what)
    got = sorted(rc.dkey(x) for x in c.find_missing([gd, claimed, ld]))
    need(got == sorted([rc.dkey(claimed), rc.dkey(ld)]),
         "after the batch FindMissingBlobs says missing=%s; the bad blobs must not be stored "
         "and the good one must", got)


@check("BatchUpdateBlobs: malformed digest -> INVALID_ARGUMENT (call or per blob)")
def _(c):
    for desc, bad, _mention in bad_digests():
        try:
            r = c.batch_update([(bad, b"casbox")])
        except grpc.RpcError as e:
            code, msg, _ = rc.rpc_status(e)
            need(code == INVALID, "BatchUpdateBlobs with a %s: %s %r", desc, rc.code_name(code), msg)
            continue
        need(len(r.responses) == 1 and r.responses[0].status.code == C_INVALID,
             "BatchUpdateBlobs with a %s: per-blob status %s", desc,
             [(rc.code_name(x.status.code), x.status.message) for x in r.responses])


@check("BatchUpdateBlobs: request over max_batch_total_size_bytes -> INVALID_ARGUMENT/RESOURCE_EXHAUSTED")
def _(c):
    limit = c.get_capabilities().cache_capabilities.max_batch_total_size_bytes
    if limit <= 0 or limit > 200 * rc.MiB:
        raise Skip("max_batch_total_size_bytes=%d: too large to exceed in a test" % limit)
    big = rc.Client(c.target, instance=c.instance, max_message=limit + 64 * rc.MiB)
    try:
        blobs = []
        left = limit + 1024
        while left > 0:
            n = min(left, rc.MiB)
            data = rnd(n)
            blobs.append((rc.digest_of(data), data))
            left -= n
        expect_error("BatchUpdateBlobs of %d bytes (limit %d)" % (limit + 1024, limit),
                     lambda: big.batch_update(blobs), (INVALID, EXHAUSTED))
    finally:
        big.close()


@check("BatchReadBlobs: present OK, missing NOT_FOUND, empty blob OK")
def _(c):
    data = rnd(300)
    d = c.upload_blob(data)
    missing = rc.digest_of(rnd(300))
    empty = re_pb2.Digest(hash=rc.EMPTY_SHA256, size_bytes=0)
    r = c.batch_read([d, missing, empty])
    by = {rc.dkey(x.digest): x for x in r.responses}
    need(set(by) == {rc.dkey(d), rc.dkey(missing), rc.dkey(empty)},
         "BatchReadBlobs answered for %s", sorted(by))
    need(by[rc.dkey(d)].status.code == C_OK and by[rc.dkey(d)].data == data,
         "present blob: status %s, %d bytes", rc.code_name(by[rc.dkey(d)].status.code),
         len(by[rc.dkey(d)].data))
    need(by[rc.dkey(missing)].status.code == C_NOT_FOUND,
         "missing blob: status %s %r, want NOT_FOUND", rc.code_name(by[rc.dkey(missing)].status.code),
         by[rc.dkey(missing)].status.message)
    need(by[rc.dkey(empty)].status.code == C_OK and by[rc.dkey(empty)].data == b"",
         "empty blob: status %s (servers must behave as if it were always present)",
         rc.code_name(by[rc.dkey(empty)].status.code))


@check("BatchReadBlobs: malformed digest -> INVALID_ARGUMENT (call or per blob)")
def _(c):
    for desc, bad, _mention in bad_digests():
        try:
            r = c.batch_read([bad])
        except grpc.RpcError as e:
            code, msg, _ = rc.rpc_status(e)
            need(code == INVALID, "BatchReadBlobs with a %s: %s %r", desc, rc.code_name(code), msg)
            continue
        need(len(r.responses) == 1 and r.responses[0].status.code == C_INVALID,
             "BatchReadBlobs with a %s: per-blob %s", desc,
             [(rc.code_name(x.status.code), x.status.message) for x in r.responses])


# -- ByteStream.Read ------------------------------------------------------------------

@check("ByteStream.Read: unparseable resource names -> INVALID_ARGUMENT naming the name")
def _(c):
    data = rnd(1000)
    d = c.upload_blob(data)
    h, n = d.hash, d.size_bytes
    u = str(uuid.uuid4())
    names = [
        "blobs", "blobs/", "blobs/%s" % h, "blobs/%s/" % h, "blobs/%s/abc" % h,
        "blobs/%s/%dx" % (h, n), "blobs/%s/-1" % h, "blobs/%s/%d" % (h[:-1], n),
        "blobs/%s/%d" % ("z" * 64, n), "nonsense", "a/b/c",
        "uploads/%s/blobs/%s/%d" % (u, h, n), "blob/%s/%d" % (h, n),
        "blobs/%s/99999999999999999999999" % h,
    ]
    for name in names:
        expect_error("Read(%r)" % name, lambda: c.bs_read(name), INVALID, name)
    expect_error("Read('')", lambda: c.bs_read(""), INVALID, ("resource", "name"))


@check("ByteStream.Read: missing blob -> NOT_FOUND naming the hash")
def _(c):
    d = rc.digest_of(rnd(77))
    expect_error("Read of a missing blob", lambda: c.bs_read(c.read_name(d)), NOT_FOUND, d.hash)


@check("ByteStream.Read: empty blob reads as empty without upload")
def _(c):
    e = re_pb2.Digest(hash=rc.EMPTY_SHA256, size_bytes=0)
    got = c.bs_read(c.read_name(e))
    need(got == b"", "read %d bytes of the empty blob", len(got))


@check("ByteStream.Read: read_offset/read_limit honoured; bad ones -> OUT_OF_RANGE/INVALID_ARGUMENT")
def _(c):
    data = rnd(10000)
    d = c.upload_blob(data)
    name = c.read_name(d)
    for off, lim in ((0, 0), (10, 0), (10, 100), (9995, 100), (0, 1), (9999, 0), (10000, 0),
                     (10000, 5), (1, 9999), (1, 10000)):
        want = data[off:off + lim] if lim else data[off:]
        got = c.bs_read(name, offset=off, limit=lim)
        need(got == want, "Read(offset=%d, limit=%d) gave %d bytes, want %d%s", off, lim, len(got),
             len(want), "" if len(got) != len(want) else " (same length, different bytes)")
    expect_error("Read with read_offset 10001 > size 10000",
                 lambda: c.bs_read(name, offset=10001), OUT_OF_RANGE, ("10001", "offset"))
    expect_error("Read with negative read_offset", lambda: c.bs_read(name, offset=-1),
                 OUT_OF_RANGE, ("-1", "offset"))
    expect_error("Read with negative read_limit", lambda: c.bs_read(name, limit=-1),
                 (INVALID, OUT_OF_RANGE), ("-1", "limit"))


@check("ByteStream: 6 MiB blob round trip; chunks fit a client with the default 4 MiB limit")
def _(c):
    data = rnd(6 * rc.MiB + 123)
    d = c.upload_bytestream(data, chunk=rc.MiB)
    small = rc.Client(c.target, instance=c.instance, max_message=4 * rc.MiB)
    try:
        got = small.bs_read(small.read_name(d))
        need(got == data, "read back %d bytes, want %d (content %s)", len(got), len(data),
             "differs" if len(got) == len(data) else "short")
        off = 3 * rc.MiB + 7
        got = small.bs_read(small.read_name(d), offset=off, limit=2 * rc.MiB)
        need(got == data[off:off + 2 * rc.MiB], "ranged read of the large blob is wrong")
    finally:
        small.close()
    need(c.find_missing([d]) == [], "the 6 MiB blob is missing after its upload")


@check("instance names '', 'a', 'a/b/c' all work for Write, Read, FindMissing, BatchRead")
def _(c):
    for inst in ("", "a", "a/b/c"):
        data = rnd(500)
        d = rc.digest_of(data)
        r = c.bs_write(c.write_name(d, instance=inst), data)
        need(r.committed_size == len(data), "instance %r: committed_size %d", inst, r.committed_size)
        need(c.bs_read(c.read_name(d, instance=inst)) == data, "instance %r: read back differs", inst)
        need(c.find_missing([d], instance=inst) == [], "instance %r: blob missing after upload", inst)
        br = c.batch_read([d], instance=inst)
        need(br.responses[0].status.code == C_OK and br.responses[0].data == data,
             "instance %r: BatchReadBlobs %s", inst, rc.code_name(br.responses[0].status.code))


# -- ByteStream.Write ---------------------------------------------------------------

def _write_reqs(name, parts, finish_last=True):
    """parts: [(offset, data)] -> WriteRequests (name on the first only)."""
    out = []
    for i, (off, data) in enumerate(parts):
        out.append(bs_pb2.WriteRequest(resource_name=name if i == 0 else "", write_offset=off,
                                       data=data, finish_write=finish_last and i == len(parts) - 1))
    return out


@check("ByteStream.Write: data not matching the digest -> INVALID_ARGUMENT, blob absent")
def _(c):
    data = rnd(4096)
    d = rc.digest_of(data)
    other = rnd(4096)
    expect_error("Write of other data under %s" % rc.dstr(d),
                 lambda: c.bs_write(c.write_name(d), other, chunk=1000), INVALID, d.hash)
    need(c.find_missing([d]) == [d], "blob %s present after a rejected Write", rc.dstr(d))
    need(c.find_missing([rc.digest_of(other)]) == [rc.digest_of(other)],
         "the wrong data was stored under its own digest")
    # More data than the size in the name, and less.
    expect_error("Write of %d bytes to a %d-byte resource" % (len(data) + 5, len(data)),
                 lambda: c.bs_write(c.write_name(d), data + b"extra", chunk=1000),
                 (INVALID, OUT_OF_RANGE))
    expect_error("Write of %d bytes to a %d-byte resource" % (len(data) - 1, len(data)),
                 lambda: c.bs_write(c.write_name(d), data[:-1], chunk=1000), INVALID)
    need(c.find_missing([d]) == [d], "blob %s present after rejected Writes", rc.dstr(d))


@check("ByteStream.Write: gap or overlap in write_offset -> INVALID_ARGUMENT")
def _(c):
    data = rnd(3000)
    d = rc.digest_of(data)
    cases = {
        "gap": [(0, data[:1000]), (1500, data[1500:])],
        "overlap": [(0, data[:1000]), (500, data[500:])],
        "first offset not 0 on a new upload": [(100, data[100:])],
        "offset going backwards to 0": [(0, data[:1000]), (0, data)],
    }
    for what, parts in cases.items():
        name = c.write_name(d)
        bad_off = str(parts[-1][0])
        expect_error("Write with a %s" % what,
                     lambda: c.bs_write_requests(_write_reqs(name, parts)),
                     (INVALID, OUT_OF_RANGE) if what.startswith("first") else INVALID,
                     ("offset", bad_off))
    need(c.find_missing([d]) == [d], "blob present after rejected Writes")


@check("ByteStream.Write: malformed resource names -> INVALID_ARGUMENT")
def _(c):
    d = rc.digest_of(b"x" * 10)
    u = str(uuid.uuid4())
    names = ["uploads", "uploads/%s" % u, "uploads/%s/blobs/%s" % (u, d.hash),
             "uploads/%s/blobs/%s/abc" % (u, d.hash), "uploads/%s/blobs/nothex/10" % u,
             "uploads/%s/blobs/%s/10" % (u, d.hash[:40]), "garbage/%s/blobs/%s/10" % (u, d.hash)]
    for name in names:
        expect_error("Write(%r)" % name,
                     lambda: c.bs_write_requests(_write_reqs(name, [(0, b"x" * 10)])),
                     INVALID, name)
    expect_error("Write without a resource name",
                 lambda: c.bs_write_requests(_write_reqs("", [(0, b"x" * 10)])),
                 INVALID, ("resource", "name"))


@check("ByteStream: digest function segment (API 2.3): sha256/ accepted; blake3/, sha1/ -> "
       "INVALID_ARGUMENT naming it, nothing stored")
def _(c):
    data = rnd(3000)
    d = rc.digest_of(data)
    h, n = d.hash, d.size_bytes
    for fn in ("blake3", "sha1", "sha256tree", "vso"):
        wname = "uploads/%s/blobs/%s/%s/%d" % (uuid.uuid4(), fn, h, n)
        expect_error("Write(%r)" % wname, lambda: c.bs_write(wname, data), INVALID,
                     "digest function '%s'" % fn)
        expect_error("QueryWriteStatus(%r)" % wname, lambda: c.query_write_status(wname),
                     INVALID, fn)
        expect_error("Read(blobs/%s/...)" % fn,
                     lambda: c.bs_read("blobs/%s/%s/%d" % (fn, h, n)), INVALID, fn)
    need(c.find_missing([d]) == [d], "blob stored through an unsupported digest function")
    r = c.bs_write("inst/uploads/%s/blobs/sha256/%s/%d" % (uuid.uuid4(), h, n), data, chunk=1000)
    need(r.committed_size == n, "blobs/sha256/ Write: committed_size %d", r.committed_size)
    need(c.bs_read("inst/blobs/sha256/%s/%d" % (h, n)) == data, "blobs/sha256/ Read differs")
    need(c.bs_read(c.read_name(d)) == data, "the sha256/ upload is not the plain blob")


@check("ByteStream.Write: trailing path after the size is ignored; re-upload of a present blob ok")
def _(c):
    data = rnd(2000)
    d = rc.digest_of(data)
    name = c.write_name(d) + "/some/file.cc"
    r = c.bs_write(name, data, chunk=700)
    need(r.committed_size == len(data), "committed_size %d, want %d", r.committed_size, len(data))
    need(c.bs_read(c.read_name(d)) == data, "read back differs")
    r = c.bs_write(c.write_name(d), data, chunk=700)
    need(r.committed_size == len(data), "second upload: committed_size %d", r.committed_size)
    e = re_pb2.Digest(hash=rc.EMPTY_SHA256, size_bytes=0)
    r = c.bs_write_requests(_write_reqs(c.write_name(e), [(0, b"")]))
    need(r.committed_size == 0, "empty blob upload: committed_size %d", r.committed_size)


@check("ByteStream.Write: resumable: half, QueryWriteStatus, continue, complete")
def _(c):
    data = rnd(3 * rc.MiB + 17)
    d = rc.digest_of(data)
    name = c.write_name(d)
    half = len(data) // 2
    r = c.bs_write(name, data[:half], chunk=256 * 1024, finish=False)
    need(r.committed_size == half, "half-close after %d bytes: committed_size %d", half,
         r.committed_size)
    q = c.query_write_status(name)
    need(q.committed_size == half and not q.complete,
         "QueryWriteStatus after half: committed_size=%d complete=%s, want %d/False",
         q.committed_size, q.complete, half)
    need(c.find_missing([d]) == [d], "blob visible before the upload finished")
    r = c.bs_write(name, data, offset=q.committed_size, chunk=256 * 1024)
    need(r.committed_size == len(data), "resumed write: committed_size %d, want %d",
         r.committed_size, len(data))
    q = c.query_write_status(name)
    need(q.complete and q.committed_size == len(data),
         "QueryWriteStatus of the finished upload: committed_size=%d complete=%s",
         q.committed_size, q.complete)
    need(c.bs_read(c.read_name(d)) == data, "resumed upload reads back wrong")


@check("ByteStream.Write: 16 uploads whose client has sent nothing yet do not hold up other calls")
def _(c):
    # More stalled streams than server.rpc_threads (8): a Write waits on its
    # client, and while they wait, unary calls must still be answered.
    import threading
    go = threading.Event()
    blobs = [rnd(100 + i) for i in range(16)]

    def stalled(data):
        d = rc.digest_of(data)
        go.wait(60)
        yield bs_pb2.WriteRequest(resource_name=c.write_name(d), data=data, finish_write=True)

    write = c._su("/google.bytestream.ByteStream/Write", bs_pb2.WriteResponse)
    futures = [write.future(stalled(b), timeout=60) for b in blobs]
    saved_timeout = c.timeout
    try:
        time.sleep(0.5)  # let the server start every call
        other = rnd(64)
        od = rc.digest_of(other)
        c.timeout = 10  # queued behind the stalled Writes, they would time out
        try:
            missing = c.find_missing([od] + [rc.digest_of(b) for b in blobs])
            c.batch_update([(od, other)])
        except grpc.RpcError as e:
            raise Fail("with 16 Writes waiting on their client, a unary call failed: %s %s"
                       % (e.code(), e.details()))
        need(len(missing) == 17, "FindMissingBlobs: %d missing, want 17", len(missing))
        need(c.find_missing([od]) == [], "BatchUpdateBlobs did not store the blob")
    finally:
        c.timeout = saved_timeout
        go.set()
    for b, f in zip(blobs, futures):
        need(f.result().committed_size == len(b), "stalled Write committed %d of %d bytes",
             f.result().committed_size, len(b))
    need(c.find_missing([rc.digest_of(b) for b in blobs]) == [],
         "a blob of a stalled Write is missing after it finished")


@check("ByteStream.Write: resuming at an offset other than committed_size -> INVALID_ARGUMENT")
def _(c):
    data = rnd(100000)
    d = rc.digest_of(data)
    name = c.write_name(d)
    r = c.bs_write(name, data[:40000], chunk=10000, finish=False)
    bad = r.committed_size + 10
    expect_error("resume at %d after committed_size %d" % (bad, r.committed_size),
                 lambda: c.bs_write(name, data, offset=bad, chunk=10000),
                 (INVALID, OUT_OF_RANGE), ("offset", str(bad)))
    need(c.find_missing([d]) == [d], "blob present after a rejected resume")


@check("QueryWriteStatus: unknown upload -> NOT_FOUND; malformed name -> INVALID_ARGUMENT")
def _(c):
    d = rc.digest_of(rnd(100))
    expect_error("QueryWriteStatus of an upload never started",
                 lambda: c.query_write_status(c.write_name(d)), NOT_FOUND)
    expect_error("QueryWriteStatus('nonsense')", lambda: c.query_write_status("nonsense"),
                 INVALID, "nonsense")


# -- ActionCache -----------------------------------------------------------------------

def _new_action(c, tag):
    cmd = re_pb2.Command(arguments=["/bin/echo", tag], output_paths=["out/a.txt"])
    cd = c.upload_message(cmd)
    root = c.upload_message(re_pb2.Directory())
    act = re_pb2.Action(command_digest=cd, input_root_digest=root, do_not_cache=False)
    return c.upload_message(act)


@check("ActionCache: GetActionResult of an unknown action -> NOT_FOUND naming it")
def _(c):
    ad = rc.digest_of(rnd(140))
    expect_error("GetActionResult of an unknown action", lambda: c.get_action_result(ad),
                 NOT_FOUND, ad.hash)


@check("ActionCache: UpdateActionResult then GetActionResult round trip (instances too)")
def _(c):
    for inst in ("", "a/b"):
        ad = _new_action(c, "roundtrip " + inst + str(uuid.uuid4()))
        out = c.upload_blob(rnd(321))
        so = c.upload_blob(b"stdout of the action\n")
        ar = re_pb2.ActionResult(exit_code=0, stdout_digest=so)
        ar.output_files.add(path="out/a.txt", digest=out, is_executable=True)
        ar.execution_metadata.worker = "e2e-test"
        c.update_action_result(ad, ar, instance=inst)
        got = c.get_action_result(ad, instance=inst)
        need(len(got.output_files) == 1, "instance %r: %d output files back", inst,
             len(got.output_files))
        f = got.output_files[0]
        need(f.path == "out/a.txt" and rc.dkey(f.digest) == rc.dkey(out) and f.is_executable,
             "instance %r: output file came back as %s", inst, f)
        need(got.exit_code == 0 and rc.dkey(got.stdout_digest) == rc.dkey(so),
             "instance %r: exit_code/stdout_digest changed: %s", inst, got)


@check("ActionCache: GetActionResult when a referenced blob is missing -> NOT_FOUND")
def _(c):
    cases = {}
    gone = rc.digest_of(rnd(999))
    ar = re_pb2.ActionResult(exit_code=0)
    ar.output_files.add(path="out/a.txt", digest=gone)
    cases["output file"] = ar
    ar = re_pb2.ActionResult(exit_code=0)
    ar.output_directories.add(path="out/dir", tree_digest=rc.digest_of(rnd(99)))
    cases["output directory tree"] = ar
    ar = re_pb2.ActionResult(exit_code=0, stderr_digest=rc.digest_of(rnd(55)))
    cases["stderr"] = ar
    for what, ar in cases.items():
        ad = _new_action(c, "missing-" + what + str(uuid.uuid4()))
        try:
            c.update_action_result(ad, ar)
        except grpc.RpcError as e:  # refusing such an entry up front is fine too
            code, msg, _ = rc.rpc_status(e)
            need(code in (PRECONDITION, INVALID, NOT_FOUND),
                 "UpdateActionResult with a missing %s: %s %r", what, rc.code_name(code), msg)
        expect_error("GetActionResult whose %s blob is missing" % what,
                     lambda: c.get_action_result(ad), NOT_FOUND)


@check("ActionCache: malformed action digest -> INVALID_ARGUMENT")
def _(c):
    for desc, bad, mention in bad_digests():
        expect_error("GetActionResult with a %s" % desc, lambda: c.get_action_result(bad),
                     INVALID, mention)
        expect_error("UpdateActionResult with a %s" % desc,
                     lambda: c.update_action_result(bad, re_pb2.ActionResult()), INVALID, mention)


# -- GetTree -------------------------------------------------------------------------

def _tree(c):
    """Upload a 3-level tree of 6 directories; return (root digest, {digest key: Directory})."""
    tag = str(uuid.uuid4())
    f = c.upload_blob(("file " + tag).encode())

    def node(name):
        return re_pb2.FileNode(name=name, digest=f)

    c1 = re_pb2.Directory(files=[node("c1-" + tag)])
    c2 = re_pb2.Directory(files=[node("c2-" + tag)])
    c3 = re_pb2.Directory(files=[node("c3-" + tag)])
    dirs = {}

    def up(d):
        dd = c.upload_message(d)
        dirs[rc.dkey(dd)] = d
        return dd

    b1 = re_pb2.Directory(files=[node("b1")], directories=[
        re_pb2.DirectoryNode(name="c1", digest=up(c1)), re_pb2.DirectoryNode(name="c2", digest=up(c2))])
    b2 = re_pb2.Directory(directories=[re_pb2.DirectoryNode(name="c3", digest=up(c3))])
    root = re_pb2.Directory(directories=[re_pb2.DirectoryNode(name="b1", digest=up(b1)),
                                         re_pb2.DirectoryNode(name="b2", digest=up(b2))])
    return up(root), dirs


def _collect_tree(c, root, page_size):
    """Follow next_page_token across calls; return (directories, calls, responses)."""
    got, token, calls, resps = [], "", 0, 0
    while True:
        calls += 1
        need(calls <= 50, "GetTree(page_size=%d) did not finish in 50 calls", page_size)
        rs = c.get_tree(root, page_size=page_size, page_token=token)
        need(rs, "GetTree returned an empty stream")
        for r in rs:
            resps += 1
            if page_size:
                need(len(r.directories) <= page_size, "a GetTree response has %d directories, "
                     "page_size %d", len(r.directories), page_size)
            got.extend(r.directories)
        token = rs[-1].next_page_token
        if not token:
            return got, calls, resps


@check("GetTree: whole 3-level tree, and paged with page_size 1/2/4")
def _(c):
    root, dirs = _tree(c)
    want = sorted(dirs)
    for ps in (0, 1, 2, 4):
        got, calls, resps = _collect_tree(c, root, ps)
        keys = sorted(rc.dkey(rc.digest_of(d.SerializeToString(deterministic=True))) for d in got)
        need(keys == want, "GetTree(page_size=%d): %d directories (%d distinct) in %d calls, want "
             "the %d of the tree", ps, len(got), len(set(keys)), calls, len(want))
        if ps:
            need(resps >= (len(want) + ps - 1) // ps, "page_size %d: only %d responses", ps, resps)


@check("GetTree: missing root -> NOT_FOUND; missing subtree omitted; malformed -> INVALID_ARGUMENT")
def _(c):
    missing = rc.digest_of(rnd(50))
    expect_error("GetTree of a missing root", lambda: c.get_tree(missing), NOT_FOUND, missing.hash)
    leaf = re_pb2.Directory(files=[re_pb2.FileNode(name="x" + str(uuid.uuid4()),
                                                   digest=c.upload_blob(b"x"))])
    ld = c.upload_message(leaf)
    root = re_pb2.Directory(directories=[re_pb2.DirectoryNode(name="gone", digest=missing),
                                         re_pb2.DirectoryNode(name="here", digest=ld)])
    rd = c.upload_message(root)
    got, _calls, _resps = _collect_tree(c, rd, 0)
    keys = sorted(rc.dkey(rc.digest_of(d.SerializeToString(deterministic=True))) for d in got)
    need(keys == sorted([rc.dkey(rd), rc.dkey(ld)]),
         "GetTree with a missing subtree returned %d directories, want the 2 present", len(got))
    for desc, bad, mention in bad_digests():
        expect_error("GetTree with a %s" % desc, lambda: c.get_tree(bad), INVALID, mention)


# -- unknown methods, Execution -----------------------------------------------------------

@check("unknown methods -> UNIMPLEMENTED promptly (5 s deadline)")
def _(c):
    for m in ("/google.longrunning.Operations/ListOperations",
              "/casbox.test.NoSuchService/NoSuchMethod",
              "/" + rc.RE + "ContentAddressableStorage/NoSuchMethod"):
        t0 = time.time()
        expect_error(m, lambda: c.raw_unary(m, b"", timeout=5), UNIMPLEMENTED)
        need(time.time() - t0 < 4.5, "%s took %.1f s to fail", m, time.time() - t0)


@check("Execute of a missing action -> FAILED_PRECONDITION with a MISSING violation (if exec_enabled)")
def _(c):
    caps = c.get_capabilities()
    if not caps.execution_capabilities.exec_enabled:
        raise Skip("casboxd does not advertise execution")
    ad = rc.digest_of(rnd(123))
    st = None
    try:
        ops = c.execute(ad, timeout=30)
        need(ops and ops[-1].done, "Execute stream ended without a done Operation")
        need(not ops[-1].HasField("error"), "the Operation's error field is set (the spec says "
             "MUST NOT): %s", ops[-1].error)
        resp = c.execute_response(ops[-1])
        need(resp is not None, "done Operation without an ExecuteResponse")
        st = resp.status
    except grpc.RpcError as e:
        _code, _msg, st = rc.rpc_status(e)
        need(_code == PRECONDITION, "Execute of a missing action: %s %r", rc.code_name(_code), _msg)
        need(st is not None, "FAILED_PRECONDITION without grpc-status-details-bin")
    need(st.code == PRECONDITION.value[0], "status %s %r, want FAILED_PRECONDITION",
         rc.code_name(st.code), st.message)
    subjects = [v.subject for det in rc.status_details(st)
                if isinstance(det, error_details_pb2.PreconditionFailure) for v in det.violations
                if v.type == "MISSING"]
    want = "blobs/%s/%d" % (ad.hash, ad.size_bytes)
    need(want in subjects, "PreconditionFailure MISSING subjects %s lack %s", subjects, want)


# -- driver ---------------------------------------------------------------------------------

def run(target, pattern, daemon):
    c = rc.Client(target, timeout=60)
    failed, skipped, passed = [], [], 0
    for name, fn in CHECKS:
        if pattern and pattern.lower() not in name.lower():
            continue
        t0 = time.time()
        try:
            fn(c)
            passed += 1
            print("ok    %s (%.1fs)" % (name, time.time() - t0), flush=True)
        except Skip as e:
            skipped.append(name)
            print("SKIP  %s: %s" % (name, e), flush=True)
        except Fail as e:
            failed.append(name)
            print("FAIL  %s\n      %s" % (name, e), flush=True)
        except grpc.RpcError as e:
            code, msg, _ = rc.rpc_status(e)
            failed.append(name)
            print("FAIL  %s\n      unexpected RPC error %s: %s" % (name, rc.code_name(code), msg),
                  flush=True)
        except Exception:  # noqa: BLE001 - a bug in the check itself
            failed.append(name)
            print("FAIL  %s\n%s" % (name, traceback.format_exc()), flush=True)
        if daemon is not None and not daemon.alive():
            print("FAIL  casboxd died during %r (exit status %s); log tail:\n%s"
                  % (name, daemon.proc.returncode, daemon.log_tail()), flush=True)
            failed.append("casboxd alive")
            return passed, failed, skipped
    try:
        c.get_capabilities(timeout=10)
        passed += 1
        print("ok    casboxd still serves GetCapabilities after all of that", flush=True)
    except grpc.RpcError as e:
        failed.append("still serving")
        print("FAIL  GetCapabilities after the checks: %s" % (rc.rpc_status(e)[:2],), flush=True)
    c.close()
    return passed, failed, skipped


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", help="HOST:PORT of a running casboxd (default: start one)")
    ap.add_argument("-k", dest="pattern", help="only checks whose name contains this")
    ap.add_argument("--list", action="store_true", help="list the checks")
    args = ap.parse_args()
    if args.list:
        for name, _ in CHECKS:
            print(name)
        return 0
    daemon = None
    tmp = None
    try:
        if args.target:
            target = args.target
        else:
            tmp = tempfile.mkdtemp(prefix="casbox-e2e-cas-")
            log = os.path.join(os.environ.get("E2E_LOG_DIR") or tmp, "casboxd.log")
            os.makedirs(os.path.dirname(log), exist_ok=True)
            daemon = rc.Casboxd(os.path.join(tmp, "state"), log_path=log).start()
            target = daemon.target
            print("casboxd %s on %s (state %s, log %s)" % (daemon.binary, target,
                                                           daemon.state_dir, log), flush=True)
        passed, failed, skipped = run(target, args.pattern, daemon)
        if daemon is not None and daemon.alive():
            try:
                daemon.stop()
                print("ok    casboxd exited 0 on SIGTERM", flush=True)
            except AssertionError as e:
                failed.append("clean exit")
                print("FAIL  %s" % e, flush=True)
    finally:
        if daemon is not None:
            daemon.kill()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print("\n%d passed, %d failed, %d skipped" % (passed, len(failed), len(skipped)))
    for f in failed:
        print("  failed: %s" % f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
