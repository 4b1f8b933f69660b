#!/usr/bin/python3
"""Helper of test_sigkill_upload.sh: large ByteStream uploads, SIGKILL of the
daemon in the middle, and the checks after a restart on the same state dir.

    sigkill_upload.py put     --target T --out F [--count N]
        upload N small blobs completely (committed data that must survive)
    sigkill_upload.py killmid --target T --pid PID --out F --seed S
                              [--count 4] [--size-mib 64] [--kill-at 0.5] [--kill-delay S]
        start COUNT concurrent uploads of SIZE MiB; once every one of them
        has sent KILL-AT of its data (1.0: all of it, finish_write included),
        SIGKILL PID.  Records which uploads the daemon had acknowledged.
    sigkill_upload.py verify  --target T --state DIR --in F [--in F...]
        after the restart: committed blobs present and intact, interrupted
        ones missing (kill-at < 1) or intact, no blob file under
        DIR/cas/blobs whose SHA-256 is not its name; then every interrupted
        upload is resumed or redone and must succeed.
"""

import argparse
import hashlib
import json
import os
import random
import re
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import reapi_client as rc  # noqa: E402
from reapi_client import bs_pb2, re_pb2  # noqa: E402

MiB = rc.MiB
CHUNK = MiB


def blob_data(seed, index, size):
    """Deterministic, incompressible-enough data without paying for randbytes."""
    base = random.Random("%s-%d" % (seed, index)).randbytes(MiB)
    parts = []
    n = 0
    i = 0
    while n < size:
        k = (i * 7919) % MiB
        piece = (b"%016d" % i) + base[k:] + base[:k]
        parts.append(piece)
        n += len(piece)
        i += 1
    return b"".join(parts)[:size]


def log(msg):
    print("[sigkill_upload %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def cmd_put(a):
    c = rc.Client(a.target)
    out = []
    for i in range(a.count):
        data = ("committed blob %d %s" % (i, os.urandom(8).hex())).encode() * (1000 * (i + 1))
        d = c.upload_bytestream(data, chunk=64 * 1024)
        out.append({"hash": d.hash, "size": d.size_bytes, "kind": "committed",
                    "data_hex": data.hex()})
    json.dump(out, open(a.out, "w"))
    log("uploaded %d small blobs completely" % a.count)
    return 0


def cmd_killmid(a):
    c = rc.Client(a.target, timeout=300)
    size = a.size_mib * MiB
    kill_point = int(size * a.kill_at)
    blobs = []
    for i in range(a.count):
        data = blob_data(a.seed, i, size)
        d = rc.digest_of(data)
        blobs.append({"index": i, "hash": d.hash, "size": size, "seed": a.seed,
                      "resource": c.write_name(d), "kind": "interrupted",
                      "kill_at": a.kill_at, "outcome": None, "sent": 0})
    # Written before anything happens, so a crash of this helper still leaves
    # a record for verify.
    json.dump(blobs, open(a.out, "w"))

    reached = threading.Semaphore(0)
    killed = threading.Event()

    def uploader(b):
        data = blob_data(b["seed"], b["index"], size)
        signalled = []

        def signal_once():
            if not signalled:
                signalled.append(True)
                reached.release()

        def gen():
            pos = 0
            while pos < size:
                n = min(CHUNK, size - pos)
                last = pos + n == size
                if kill_point < size and pos >= kill_point and not signalled:
                    signal_once()
                    killed.wait(300)   # hold the stream open, mid-upload, until the kill
                elif kill_point >= size and last:
                    # kill-at 1.0: signal as the final message (finish_write) goes
                    # out; grpc may never ask for more once the daemon answers.
                    signal_once()
                b["sent"] = pos + n   # handed to grpc
                yield bs_pb2.WriteRequest(resource_name=b["resource"] if pos == 0 else "",
                                          write_offset=pos, data=data[pos:pos + n],
                                          finish_write=last)
                pos += n
        try:
            r = c.bs_write_requests(gen(), timeout=300)
            b["outcome"] = "ok"
            b["committed_size"] = r.committed_size
        except grpc.RpcError as e:
            code, msg, _ = rc.rpc_status(e)
            b["outcome"] = "error"
            b["error"] = "%s %s" % (rc.code_name(code), msg)
        signal_once()   # never leave the main thread waiting for a finished upload

    threads = [threading.Thread(target=uploader, args=(b,), daemon=True) for b in blobs]
    t0 = time.time()
    for t in threads:
        t.start()
    for _ in blobs:
        if not reached.acquire(timeout=max(1, 240 - (time.time() - t0))):
            log("FAIL: uploads did not reach %.0f%% within 240 s: sent %s"
                % (a.kill_at * 100, [b["sent"] for b in blobs]))
            os.kill(a.pid, signal.SIGKILL)
            killed.set()
            return 1
    if a.kill_delay > 0:
        time.sleep(a.kill_delay)
    os.kill(a.pid, signal.SIGKILL)
    killed.set()
    log("SIGKILLed casboxd (pid %d) with %d uploads of %d MiB at %s"
        % (a.pid, len(blobs), a.size_mib, [b["sent"] for b in blobs]))
    for t in threads:
        t.join(120)
    for b in blobs:
        log("upload %d (%s...): %s%s" % (b["index"], b["hash"][:12], b["outcome"],
                                        (" " + b.get("error", "")) if b["outcome"] == "error" else ""))
        if b["outcome"] == "ok" and b.get("committed_size") != size:
            b["outcome"] = "partial-ack"
    if a.kill_at < 1.0:
        acked = [b["index"] for b in blobs if b["outcome"] == "ok"]
        if acked:
            log("FAIL: uploads %s finished although only %.0f%% of them was sent"
                % (acked, a.kill_at * 100))
            json.dump(blobs, open(a.out, "w"))
            return 1
    json.dump(blobs, open(a.out, "w"))
    return 0


HEX64 = re.compile(r"^[0-9a-f]{64}$")


def scan_store(state):
    """(number of blob files, [problems]) for <state>/cas/blobs/<aa>/<hash>."""
    root = os.path.join(state, "cas", "blobs")
    if not os.path.isdir(root):
        return 0, ["%s does not exist: the CAS layout is <state-dir>/cas/blobs/<aa>/<hash>" % root]
    n, bad = 0, []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if os.path.islink(p) or not os.path.isfile(p):
                bad.append("%s is not a regular file" % p)
                continue
            n += 1
            if not HEX64.match(f):
                bad.append("%s: file name is not a SHA-256 hex digest" % p)
                continue
            if os.path.basename(dirpath) != f[:2]:
                bad.append("%s: not under its <aa>/ directory" % p)
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(MiB), b""):
                    h.update(chunk)
            if h.hexdigest() != f:
                bad.append("%s: content hashes to %s (%d bytes): corrupt blob in the store"
                           % (p, h.hexdigest(), os.path.getsize(p)))
    return n, bad


def cmd_verify(a):
    c = rc.Client(a.target, timeout=300)
    problems = []
    records = []
    for f in a.inputs:
        records.extend(json.load(open(f)))
    digests = [re_pb2.Digest(hash=r["hash"], size_bytes=r["size"]) for r in records]
    missing = {rc.dkey(d) for d in c.find_missing(digests)}

    for r, d in zip(records, digests):
        present = rc.dkey(d) not in missing
        tag = "%s blob %s/%d" % (r["kind"], r["hash"][:16], r["size"])
        if r["kind"] == "committed":
            if not present:
                problems.append("%s was acknowledged before the kill but is missing after the "
                                "restart: committed data lost" % tag)
            elif c.bs_read(c.read_name(d)) != bytes.fromhex(r["data_hex"]):
                problems.append("%s reads back different data" % tag)
            continue
        if r["kill_at"] < 1.0 and present:
            problems.append("%s: only %d of %d bytes were sent before the kill, yet "
                            "FindMissingBlobs says present" % (tag, r.get("sent", 0), r["size"]))
        if r["outcome"] == "ok" and not present:
            problems.append("%s: the daemon acknowledged the upload (committed_size %s) before "
                            "the kill, but it is missing after the restart"
                            % (tag, r.get("committed_size")))
        if present:
            h = hashlib.sha256(c.bs_read(c.read_name(d))).hexdigest()
            if h != r["hash"]:
                problems.append("%s is served with content hashing to %s" % (tag, h))

    n, bad = scan_store(a.state)
    problems.extend(bad)
    log("store scan: %d blob files under %s/cas/blobs, %d bad" % (n, a.state, len(bad)))
    tmpdir = os.path.join(a.state, "cas", "tmp")
    if os.path.isdir(tmpdir):
        left = os.listdir(tmpdir)
        if left:
            log("note: %d leftover file(s) in %s after the restart (not an error)"
                % (len(left), tmpdir))

    # Every interrupted upload can be finished now: resumed at QueryWriteStatus'
    # committed_size if the daemon kept it, from scratch otherwise.
    for r, d in zip(records, digests):
        if r["kind"] != "interrupted":
            continue
        data = blob_data(r["seed"], r["index"], r["size"])
        try:
            q = c.query_write_status(r["resource"])
            start = 0 if q.complete else q.committed_size
            how = "QueryWriteStatus: committed_size=%d complete=%s" % (q.committed_size, q.complete)
            if q.complete and rc.dkey(d) in missing:
                problems.append("%s...: QueryWriteStatus says complete but the blob is missing"
                                % r["hash"][:16])
        except grpc.RpcError as e:
            code, msg, _ = rc.rpc_status(e)
            if code != grpc.StatusCode.NOT_FOUND:
                problems.append("QueryWriteStatus(%s) after the restart: %s %s"
                                % (r["resource"], rc.code_name(code), msg))
            start, how = 0, "QueryWriteStatus: %s" % rc.code_name(code)
        if start > r["size"] or start > r.get("sent", r["size"]):
            problems.append("%s...: committed_size %d after the restart, but only %d bytes were "
                            "sent" % (r["hash"][:16], start, r.get("sent", 0)))
            start = 0
        try:
            if start == 0:
                # Fresh name: the old upload's state may or may not exist.
                wr = c.bs_write(c.write_name(d), data, chunk=CHUNK)
            else:
                wr = c.bs_write(r["resource"], data, offset=start, chunk=CHUNK)
            if wr.committed_size != r["size"]:
                problems.append("%s...: re-upload committed_size %d, want %d"
                                % (r["hash"][:16], wr.committed_size, r["size"]))
        except grpc.RpcError as e:
            code, msg, _ = rc.rpc_status(e)
            problems.append("%s...: re-upload from offset %d (%s) failed: %s %s"
                            % (r["hash"][:16], start, how, rc.code_name(code), msg))
            continue
        got = c.bs_read(c.read_name(d))
        if got != data:
            problems.append("%s...: after re-upload (%s) the blob reads back %s"
                            % (r["hash"][:16], how,
                               "short" if len(got) != len(data) else "different"))
        else:
            log("re-upload of %s... ok (from offset %d; %s)" % (r["hash"][:16], start, how))
    if c.find_missing(digests):
        problems.append("blobs still missing after the re-uploads: %s"
                        % [rc.dstr(x)[:20] for x in c.find_missing(digests)])
    n, bad = scan_store(a.state)
    problems.extend("after re-upload: " + b for b in bad)

    for p in problems:
        log("FAIL: " + p)
    if not problems:
        log("verify ok: %d records" % len(records))
    return 1 if problems else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("put")
    p.add_argument("--target", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=5)
    k = sub.add_parser("killmid")
    k.add_argument("--target", required=True)
    k.add_argument("--pid", type=int, required=True)
    k.add_argument("--out", required=True)
    k.add_argument("--seed", required=True)
    k.add_argument("--count", type=int, default=4)
    k.add_argument("--size-mib", type=int, default=64)
    k.add_argument("--kill-at", type=float, default=0.5)
    k.add_argument("--kill-delay", type=float, default=0.0,
                   help="seconds between the kill point and the SIGKILL")
    v = sub.add_parser("verify")
    v.add_argument("--target", required=True)
    v.add_argument("--state", required=True)
    v.add_argument("--in", dest="inputs", action="append", required=True)
    a = ap.parse_args()
    return {"put": cmd_put, "killmid": cmd_killmid, "verify": cmd_verify}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
