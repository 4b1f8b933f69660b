#!/usr/bin/python3
"""End-to-end: zstd compressed blobs over real gRPC, good and bad.

ByteStream compressed-blobs/zstd Read and Write (offsets in compressed bytes,
resumable), compressed inline data in BatchUpdateBlobs and BatchReadBlobs,
the compressors in GetCapabilities, the optional digest function segment of
resource names (API 2.3); and the bad input: corrupt and truncated frames,
uploads that decompress to other bytes than the digest says, decompression
bombs, unsupported compressors and digest functions. Every failure must be a
clear status naming what was wrong, and must store nothing (FindMissingBlobs
still reports the blob, the store's tmp/ is empty afterwards).

The fields newer than Debian's protos (CacheCapabilities 6/7,
BatchUpdateBlobsRequest.Request 3, BatchReadBlobsRequest 3,
BatchReadBlobsResponse.Response 4) are written and read here as raw
protobuf wire bytes.

    test_compression.py                 start build/bin/casboxd (or $CASBOXD)
    test_compression.py --target H:P    use a running daemon instead
    test_compression.py -k bomb         only checks whose name contains it

Needs python3-zstandard (scripts/setup). Exit status: 0 all passed, 1 not.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

try:
    import zstandard  # noqa: E402
except ImportError:
    sys.exit("test_compression: python3-zstandard is missing (scripts/setup installs it)")

import reapi_client as rc  # noqa: E402
from reapi_client import re_pb2, bs_pb2  # noqa: E402
from exec_helpers import Checks, Fail, need  # noqa: E402

INVALID = grpc.StatusCode.INVALID_ARGUMENT
OUT_OF_RANGE = grpc.StatusCode.OUT_OF_RANGE
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
C_OK, C_INVALID = 0, 3
IDENTITY, ZSTD, DEFLATE, BROTLI = 0, 1, 2, 3
CAS = "/" + rc.RE + "ContentAddressableStorage/"

# The project's check-list driver (exec_helpers.Checks): ok/FAIL/SKIP lines,
# unexpected RPC errors named, a casboxd that died reported.
check = Checks()


def expect_error(what, fn, codes, mention=None):
    """fn() must fail with a code in codes and a message naming mention."""
    if isinstance(codes, grpc.StatusCode):
        codes = (codes,)
    try:
        fn()
    except grpc.RpcError as e:
        code, msg, _ = rc.rpc_status(e)
        need(code in codes, "%s: got %s %r, want %s", what, rc.code_name(code), msg,
             "/".join(c.name for c in codes))
        if mention is not None:
            alts = (mention,) if isinstance(mention, str) else tuple(mention)
            need(any(a.lower() in msg.lower() for a in alts),
                 "%s: %s message %r does not name %s", what, code.name, msg,
                 " or ".join(repr(a) for a in alts))
        return msg
    raise Fail("%s: succeeded, want %s" % (what, "/".join(c.name for c in codes)))


# -- data ------------------------------------------------------------------------

def source_text(limit):
    """limit bytes of C headers: compressible like a build's inputs."""
    out, total = [], 0
    for root, _dirs, files in sorted(os.walk("/usr/include")):
        for f in sorted(files):
            if not f.endswith(".h"):
                continue
            try:
                with open(os.path.join(root, f), "rb") as fh:
                    b = fh.read()
            except OSError:
                continue
            out.append(b)
            total += len(b)
            if total >= limit:
                return b"".join(out)[:limit]
    return (b"".join(out) * (limit // max(total, 1) + 1))[:limit]


def unique_text(n):
    """Compressible and new: source text with a random line in front."""
    head = ("/* %s */\n" % uuid.uuid4()).encode()
    return head + source_text(n - len(head))


def zc(data, level=3):
    return zstandard.ZstdCompressor(level=level).compress(data)


def zd(data):
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


# -- protobuf wire bytes -------------------------------------------------------------

def pb_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7f
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_key(num, wire_type):
    return pb_varint(num << 3 | wire_type)


def pb_len(num, payload):
    return pb_key(num, 2) + pb_varint(len(payload)) + payload


def _read_varint(buf, i):
    shift = v = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7f) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def pb_fields(buf):
    """[(number, wire type, int or bytes)] of one message."""
    out, i = [], 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _read_varint(buf, i)
        elif wt == 2:
            n, i = _read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise Fail("bad wire type %d in an answer" % wt)
        out.append((num, wt, v))
    return out


def pb_varints(fields, num):
    """Every value of a repeated varint field, packed or not."""
    vals = []
    for n, wt, v in fields:
        if n != num:
            continue
        if wt == 0:
            vals.append(v)
        else:
            i = 0
            while i < len(v):
                x, i = _read_varint(v, i)
                vals.append(x)
    return vals


def batch_update_raw(c, entries, instance=""):
    """entries: (Digest, data, compressor or None). The BatchUpdateBlobsResponse."""
    payload = pb_len(1, instance.encode()) if instance else b""
    for d, data, comp in entries:
        r = re_pb2.BatchUpdateBlobsRequest.Request(digest=d, data=data).SerializeToString()
        if comp is not None:
            r += pb_key(3, 0) + pb_varint(comp)
        payload += pb_len(2, r)
    return re_pb2.BatchUpdateBlobsResponse.FromString(
        c.raw_unary(CAS + "BatchUpdateBlobs", payload))


def batch_read_raw(c, digests, acceptable=()):
    """[(Digest, data, status code, message, compressor)] of a BatchReadBlobs."""
    payload = b"".join(pb_len(2, d.SerializeToString()) for d in digests)
    if acceptable:
        payload += pb_len(3, b"".join(pb_varint(x) for x in acceptable))
    out = []
    for num, _wt, entry in pb_fields(c.raw_unary(CAS + "BatchReadBlobs", payload)):
        if num != 1:
            continue
        f = pb_fields(entry)
        d = re_pb2.Digest()
        data, st, comp = b"", None, 0
        for n, _w, v in f:
            if n == 1:
                d = re_pb2.Digest.FromString(v)
            elif n == 2:
                data = v
            elif n == 3:
                st = rc.status_pb2.Status.FromString(v)
            elif n == 4:
                comp = v
        out.append((d, data, st.code if st else 0, st.message if st else "", comp))
    return out


# -- resource names -------------------------------------------------------------------

def cread(d, comp="zstd", fn=""):
    return "compressed-blobs/%s/%s%s/%d" % (comp, fn + "/" if fn else "", d.hash, d.size_bytes)


def cwrite(d, comp="zstd", fn="", upload=None):
    return "uploads/%s/%s" % (upload or uuid.uuid4(), cread(d, comp, fn))


def absent(c, d, what):
    need([rc.dkey(x) for x in c.find_missing([d])] == [rc.dkey(d)],
         "%s: blob %s was stored", what, rc.dstr(d))


def present(c, d, what):
    need(c.find_missing([d]) == [], "%s: blob %s is missing", what, rc.dstr(d))


def write_compressed(c, d, comp, chunk=64 << 10, name=None):
    return c.bs_write(name or cwrite(d), comp, chunk=chunk)


# -- the checks ----------------------------------------------------------------------

@check("GetCapabilities lists identity and zstd in supported_compressors and "
       "supported_batch_update_compressors")
def _(c):
    raw = c.raw_unary("/" + rc.RE + "Capabilities/GetCapabilities",
                      re_pb2.GetCapabilitiesRequest().SerializeToString())
    cache = [v for n, wt, v in pb_fields(raw) if n == 1]
    need(len(cache) == 1, "no cache_capabilities in %r", raw)
    f = pb_fields(cache[0])
    for num, name in ((6, "supported_compressors"), (7, "supported_batch_update_compressors")):
        got = pb_varints(f, num)
        need(ZSTD in got and IDENTITY in got, "%s is %s, want identity (0) and zstd (1)", name, got)


@check("ByteStream: compressed Write, then Read plain and compressed (whole, offsets, limits)")
def _(c):
    data = unique_text(3 << 20)
    d = rc.digest_of(data)
    comp = zc(data)
    need(len(comp) < len(data) // 2, "test data did not compress (%d -> %d)", len(data), len(comp))
    r = write_compressed(c, d, comp)
    need(r.committed_size == len(comp), "committed_size %d, want the %d compressed bytes",
         r.committed_size, len(comp))
    present(c, d, "compressed Write")
    need(c.bs_read(c.read_name(d)) == data, "plain Read of a compressed upload differs")
    got = c.bs_read(cread(d))
    need(zd(got) == data, "compressed Read does not decompress to the blob")
    need(len(got) < len(data), "compressed Read sent %d bytes for %d", len(got), len(data))
    # Offsets and limits count compressed bytes; the same bytes every time.
    parts, off = [], 0
    while off < len(got):
        piece = c.bs_read(cread(d), offset=off, limit=100000)
        need(0 < len(piece) <= 100000, "read_limit 100000 at %d gave %d bytes", off, len(piece))
        parts.append(piece)
        off += len(piece)
    need(b"".join(parts) == got, "compressed Read in pieces differs from the whole")
    need(c.bs_read(cread(d), offset=len(got)) == b"", "read_offset at the end is not empty")
    expect_error("compressed Read past the end",
                 lambda: c.bs_read(cread(d), offset=len(got) + 1), OUT_OF_RANGE, "read_offset")
    expect_error("compressed Read, negative offset",
                 lambda: c.bs_read(cread(d), offset=-1), OUT_OF_RANGE, "read_offset")


@check("ByteStream: compressed Read of a missing blob -> NOT_FOUND; of the empty blob works")
def _(c):
    d = rc.digest_of(os.urandom(50))
    expect_error("compressed Read of a missing blob", lambda: c.bs_read(cread(d)),
                 grpc.StatusCode.NOT_FOUND, d.hash)
    e = rc.digest_of(b"")
    need(zd(c.bs_read(cread(e))) == b"", "compressed empty blob is not empty")


@check("ByteStream: compressed-blobs/identity is the plain blob")
def _(c):
    data = unique_text(10000)
    d = rc.digest_of(data)
    r = c.bs_write(cwrite(d, "identity"), data)
    need(r.committed_size == len(data), "committed_size %d", r.committed_size)
    need(c.bs_read(cread(d, "identity")) == data, "identity Read differs")


@check("ByteStream: resumed compressed Write (QueryWriteStatus in compressed bytes), restart at 0")
def _(c):
    data = unique_text(2 << 20)
    d = rc.digest_of(data)
    comp = zc(data)
    name = cwrite(d)
    half = len(comp) // 2
    r = c.bs_write(name, comp[:half], chunk=32 << 10, finish=False)
    need(r.committed_size == half, "first half: committed_size %d, want %d", r.committed_size,
         half)
    q = c.query_write_status(name)
    need(q.committed_size == half and not q.complete,
         "QueryWriteStatus: committed_size %d complete %s, want %d False",
         q.committed_size, q.complete, half)
    absent(c, d, "half an upload")
    expect_error("resume at a gap", lambda: c.bs_write(name, comp, offset=half + 10),
                 INVALID, "gap")
    r = c.bs_write(name, comp, offset=half, chunk=32 << 10)
    need(r.committed_size == len(comp), "resumed: committed_size %d, want %d", r.committed_size,
         len(comp))
    present(c, d, "resumed compressed Write")
    need(c.bs_read(c.read_name(d)) == data, "resumed upload stored other bytes")
    q = c.query_write_status(name)
    need(q.complete, "QueryWriteStatus after the commit: not complete")
    # Another upload: a third, then again from 0 with other framing.
    data2 = unique_text(1 << 20)
    d2 = rc.digest_of(data2)
    name2 = cwrite(d2)
    c.bs_write(name2, zc(data2, 1)[:1000], finish=False)
    r = c.bs_write(name2, zc(data2, 9))
    need(r.committed_size == len(zc(data2, 9)), "restart at 0: committed_size %d",
         r.committed_size)
    need(c.bs_read(c.read_name(d2)) == data2, "restarted upload stored other bytes")


@check("ByteStream: compressed Write of a stored blob completes at once with committed_size -1")
def _(c):
    data = unique_text(1 << 20)
    d = c.upload_bytestream(data)
    comp = zc(data)
    sent = []

    def gen():
        for off in range(0, len(comp), 16 << 10):
            sent.append(off)
            yield bs_pb2.WriteRequest(resource_name=cwrite(d) if off == 0 else "",
                                      write_offset=off, data=comp[off:off + (16 << 10)],
                                      finish_write=off + (16 << 10) >= len(comp))
            time.sleep(0.05)
    r = c.bs_write_requests(gen())
    need(r.committed_size == -1, "committed_size %d, want -1", r.committed_size)
    need(len(sent) < len(range(0, len(comp), 16 << 10)),
         "the server read all %d messages before answering", len(sent))


@check("BatchUpdateBlobs with zstd data, BatchReadBlobs with acceptable_compressors")
def _(c):
    blobs = [unique_text(n) for n in (100, 5000, 200000)] + [os.urandom(3000)]
    ds = [rc.digest_of(b) for b in blobs]
    resp = batch_update_raw(c, [(d, zc(b), ZSTD) for d, b in zip(ds, blobs)] +
                            [(rc.digest_of(b"plain" + blobs[0]), b"plain" + blobs[0], IDENTITY)])
    for r in resp.responses:
        need(r.status.code == C_OK, "BatchUpdateBlobs %s: %s %s", rc.dstr(r.digest),
             rc.code_name(r.status.code), r.status.message)
    for d, b in zip(ds, blobs):
        need(c.bs_read(c.read_name(d)) == b, "blob %s stored other bytes", rc.dstr(d))
    got = batch_read_raw(c, ds, acceptable=(ZSTD,))
    need(len(got) == len(ds), "%d answers for %d digests", len(got), len(ds))
    for (d, data, code, msg, comp), b in zip(got, blobs):
        need(code == C_OK, "BatchReadBlobs %s: %s %s", rc.dstr(d), rc.code_name(code), msg)
        need(comp in (IDENTITY, ZSTD), "compressor %d", comp)
        plain = zd(data) if comp == ZSTD else data
        need(plain == b, "BatchReadBlobs %s (compressor %d) gave other bytes", rc.dstr(d), comp)
    need(got[2][4] == ZSTD and len(got[2][1]) < len(blobs[2]),
         "a compressible 200 kB blob came back with compressor %d, %d bytes", got[2][4],
         len(got[2][1]))
    need(got[3][4] == IDENTITY, "random data was sent compressed (it does not shrink)")
    for d, data, code, msg, comp in batch_read_raw(c, ds):
        need(comp == IDENTITY, "compressor %d without acceptable_compressors", comp)


@check("compressed upload whose bytes do not match the digest -> INVALID_ARGUMENT, nothing stored")
def _(c):
    data = unique_text(300000)
    other = bytearray(data)
    other[1000] ^= 1
    d = rc.digest_of(data)
    expect_error("ByteStream, same size, other bytes",
                 lambda: write_compressed(c, d, zc(bytes(other))), INVALID, "does not match")
    expect_error("ByteStream, fewer bytes", lambda: write_compressed(c, d, zc(data[:-10])),
                 INVALID, ("decompresses to", d.hash))
    absent(c, d, "mismatching compressed Write")
    r = batch_update_raw(c, [(d, zc(bytes(other)), ZSTD)]).responses[0]
    need(r.status.code == C_INVALID and "match" in r.status.message,
         "BatchUpdateBlobs: %s %r", rc.code_name(r.status.code), r.status.message)
    r = batch_update_raw(c, [(d, zc(data[:-10]), ZSTD)]).responses[0]
    need(r.status.code == C_INVALID and "decompresses to" in r.status.message,
         "BatchUpdateBlobs, fewer bytes: %s %r", rc.code_name(r.status.code), r.status.message)
    absent(c, d, "mismatching compressed BatchUpdateBlobs")


@check("corrupt, truncated and non-zstd data -> INVALID_ARGUMENT, nothing stored")
def _(c):
    data = unique_text(400000)
    d = rc.digest_of(data)
    comp = zc(data)
    corrupt = bytearray(comp)
    for i in range(len(comp) // 2, len(comp) // 2 + 64):
        corrupt[i] ^= 0x5a
    # A flipped byte inside a literal run decodes without a zstd error (the
    # frame has no checksum): then the digest check is what refuses it.
    cases = [("corrupt frame", bytes(corrupt), ("zstd", "corrupt", "does not match")),
             ("truncated frame", comp[:-7], ("truncated", "ends inside")),
             ("not zstd", b"\x1f\x8b" + os.urandom(500), "zstd"),
             ("trailing garbage", comp + b"garbage!", "zstd")]
    for what, bad, mention in cases:
        expect_error("ByteStream, " + what, lambda: write_compressed(c, d, bad), INVALID, mention)
        r = batch_update_raw(c, [(d, bad, ZSTD)]).responses[0]
        need(r.status.code == C_INVALID, "BatchUpdateBlobs, %s: %s %r", what,
             rc.code_name(r.status.code), r.status.message)
    absent(c, d, "corrupt compressed data")


@check("decompression bombs -> a clear status at once, nothing stored, nothing left in tmp/")
def _(c):
    target = os.urandom(1000)
    d = rc.digest_of(target)
    bomb = zc(b"\0" * (256 << 20), 1)  # 256 MiB of zeros in a few kB
    need(len(bomb) < 100000, "the bomb is %d bytes", len(bomb))
    t0 = time.time()
    expect_error("ByteStream, 256 MiB for a 1000-byte digest", lambda: write_compressed(c, d, bomb),
                 INVALID, ("more than", "1000"))
    need(time.time() - t0 < 10, "refusing the bomb took %.1f s", time.time() - t0)
    r = batch_update_raw(c, [(d, bomb, ZSTD)]).responses[0]
    need(r.status.code == C_INVALID and "more than" in r.status.message,
         "BatchUpdateBlobs bomb: %s %r", rc.code_name(r.status.code), r.status.message)
    absent(c, d, "bomb")
    # A digest claiming more than the disk holds: refused before decoding.
    huge = re_pb2.Digest(hash=d.hash, size_bytes=1 << 60)
    expect_error("ByteStream, a 1 EiB digest", lambda: write_compressed(c, huge, bomb),
                 EXHAUSTED, "free")
    # In a batch, what a blob decompresses to counts against the batch limit.
    big = re_pb2.Digest(hash=d.hash, size_bytes=1 << 40)
    expect_error("BatchUpdateBlobs, a 1 TiB digest",
                 lambda: batch_update_raw(c, [(big, bomb, ZSTD)]), INVALID,
                 "max_batch_total_size_bytes")
    # A frame asking for a 128 MiB window (without saying its size).
    params = zstandard.ZstdCompressionParameters.from_level(1, window_log=27,
                                                             write_content_size=False)
    cobj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    wide = cobj.compress(target) + cobj.flush()
    expect_error("ByteStream, 128 MiB window", lambda: write_compressed(c, d, wide), INVALID,
                 "window")
    absent(c, d, "wide-window frame")


@check("unsupported compressors -> INVALID_ARGUMENT naming them (Read, Write, "
       "QueryWriteStatus, BatchUpdateBlobs)")
def _(c):
    data = unique_text(5000)
    d = rc.digest_of(data)
    for comp in ("deflate", "brotli", "garbage", "ZSTD"):
        expect_error("Read " + comp, lambda: c.bs_read(cread(d, comp)), INVALID, comp)
        expect_error("Write " + comp, lambda: c.bs_write(cwrite(d, comp), data), INVALID, comp)
        expect_error("QueryWriteStatus " + comp,
                     lambda: c.query_write_status(cwrite(d, comp)), INVALID, comp)
    for value, name in ((DEFLATE, "deflate"), (BROTLI, "brotli"), (42, "42")):
        r = batch_update_raw(c, [(d, data, value)]).responses[0]
        need(r.status.code == C_INVALID and name in r.status.message,
             "BatchUpdateBlobs compressor %d: %s %r", value, rc.code_name(r.status.code),
             r.status.message)
    absent(c, d, "unsupported compressors")


@check("resource names with a digest function: sha256/ accepted, blake3/ and others rejected")
def _(c):
    data = unique_text(20000)
    d = rc.digest_of(data)
    for fn in ("blake3", "sha1", "md5", "sha256tree"):
        expect_error("Write blobs/%s/" % fn,
                     lambda: c.bs_write("uploads/%s/blobs/%s/%s/%d" % (uuid.uuid4(), fn, d.hash,
                                                                        d.size_bytes), data),
                     INVALID, fn)
        expect_error("Write compressed-blobs/zstd/%s/" % fn,
                     lambda: write_compressed(c, d, zc(data), name=cwrite(d, fn=fn)), INVALID, fn)
        expect_error("Read blobs/%s/" % fn,
                     lambda: c.bs_read("blobs/%s/%s/%d" % (fn, d.hash, d.size_bytes)), INVALID,
                     fn)
    absent(c, d, "blake3 uploads")
    r = c.bs_write("main/uploads/%s/blobs/sha256/%s/%d" % (uuid.uuid4(), d.hash, d.size_bytes),
                   data)
    need(r.committed_size == len(data), "blobs/sha256/ Write: committed_size %d",
         r.committed_size)
    need(c.bs_read("main/blobs/sha256/%s/%d" % (d.hash, d.size_bytes)) == data,
         "blobs/sha256/ Read differs")
    need(zd(c.bs_read(cread(d, fn="sha256"))) == data, "compressed-blobs/zstd/sha256/ Read differs")
    data2 = unique_text(20000)
    d2 = rc.digest_of(data2)
    r = write_compressed(c, d2, zc(data2), name=cwrite(d2, fn="sha256"))
    need(r.committed_size == len(zc(data2)), "compressed sha256/ Write: committed_size %d",
         r.committed_size)
    present(c, d2, "compressed-blobs/zstd/sha256/ Write")


def tmp_leftovers(state_dir):
    t = os.path.join(state_dir, "cas", "tmp")
    return sorted(os.listdir(t)) if os.path.isdir(t) else []


def run(target, pattern, daemon):
    c = rc.Client(target, timeout=120)
    passed, failed, _ = check.run(c, pattern, {"": daemon} if daemon is not None else None)
    if daemon is not None and not daemon.alive():
        return passed, failed
    if daemon is not None:
        # Failed uploads are dropped, not kept (their temp files removed);
        # only the uploads left for resumption may remain, and none is.
        left = tmp_leftovers(daemon.state_dir)
        if left:
            failed.append("tmp/ empty")
            print("FAIL  the store's tmp/ holds %s after the checks" % left, flush=True)
        else:
            passed += 1
            print("ok    nothing left in the store's tmp/", flush=True)
    c.close()
    return passed, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", help="HOST:PORT of a running casboxd (default: start one)")
    ap.add_argument("-k", dest="pattern", help="only checks whose name contains this")
    ap.add_argument("--list", action="store_true", help="list the checks")
    args = ap.parse_args()
    if args.list:
        for name, _ in check.items:
            print(name)
        return 0
    daemon = tmp = None
    try:
        if args.target:
            target = args.target
        else:
            tmp = tempfile.mkdtemp(prefix="casbox-e2e-compression-")
            log = os.path.join(os.environ.get("E2E_LOG_DIR") or tmp, "casboxd.log")
            os.makedirs(os.path.dirname(log), exist_ok=True)
            daemon = rc.Casboxd(os.path.join(tmp, "state"), log_path=log).start()
            target = daemon.target
            print("casboxd %s on %s (log %s)" % (daemon.binary, target, log), flush=True)
        passed, failed = run(target, args.pattern, daemon)
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
    print("\n%d passed, %d failed" % (passed, len(failed)))
    for f in failed:
        print("  failed: %s" % f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
