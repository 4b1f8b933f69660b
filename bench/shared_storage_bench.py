#!/usr/bin/python3
"""Shared storage ([cas] remote) benchmark: prints figures, judges nothing.

    bench/shared_storage_bench.py [--files N] [--blob-mib M] [--casboxd PATH]

Three casboxd on loopback: R, cache only, the source of truth; W, a worker
whose store is an empty cache in front of R, staging inputs lazily through
FUSE (execution.staging=fuse); H, the same with hardlink staging.

1. An action reading 3 files of an N-file input tree (default 100,000 files
   of 200 bytes in 100 directories), uploaded to R only: Execute on W and
   on H, each with an empty cache. Prints the bytes each fetched from R
   (auxiliary_metadata fetched_bytes), the tree's size (files plus Directory
   messages), and the Execute round trips. W should fetch the 3 files (the
   Directory messages go through the FUSE layer's own cache, not counted);
   H fetches every file.
2. ByteStream through a frontend: an M MiB blob (default 64) uploaded to R
   directly and through W (which verifies it, then streams it on to R), and
   read from R directly and through W (cold: fetched whole into W's cache
   first; warm: from the cache). Prints each time and the ratio against the
   direct call (target for the proxy: <= 1.2x).

Prints `uptime` before and after: these are wall times on a shared machine.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import exec_helpers as eh  # noqa: E402
import reapi_client as rc  # noqa: E402
from reapi_client import re_pb2  # noqa: E402

MiB = 1 << 20


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()



def build_tree(c, n_files, n_dirs, size):
    """Uploads n_files files in n_dirs directories to c; returns (root digest,
    file bytes, Directory bytes, the paths of 3 files)."""
    per = n_files // n_dirs
    subdirs, dir_bytes, file_bytes, batch, batch_bytes = [], 0, 0, [], 0
    tag = os.urandom(8).hex().encode()

    def flush():
        nonlocal batch, batch_bytes
        if batch:
            r = c.batch_update(batch)
            bad = [x for x in r.responses if x.status.code != 0]
            if bad:
                raise SystemExit("upload failed: %s" % bad[0].status.message)
        batch, batch_bytes = [], 0

    for d in range(n_dirs):
        files = []
        for f in range(per):
            data = (b"%s %d %d " % (tag, d, f)).ljust(size, b".")
            dg = rc.digest_of(data)
            files.append(re_pb2.FileNode(name="f%05d" % f, digest=dg))
            batch.append((dg, data))
            batch_bytes += len(data)
            file_bytes += len(data)
            if batch_bytes > 3 * MiB or len(batch) >= 5000:
                flush()
        msg = re_pb2.Directory(files=files).SerializeToString()
        dg = rc.digest_of(msg)
        batch.append((dg, msg))
        batch_bytes += len(msg)
        dir_bytes += len(msg)
        subdirs.append(re_pb2.DirectoryNode(name="d%03d" % d, digest=dg))
        if batch_bytes > 3 * MiB:
            flush()
    root = re_pb2.Directory(directories=subdirs).SerializeToString()
    rdg = rc.digest_of(root)
    batch.append((rdg, root))
    dir_bytes += len(root)
    flush()
    picks = ["d%03d/f%05d" % (0, 0), "d%03d/f%05d" % (n_dirs // 2, per // 2),
             "d%03d/f%05d" % (n_dirs - 1, per - 1)]
    return rdg, file_bytes, dir_bytes, picks


def timed(fn):
    t = time.time()
    v = fn()
    return time.time() - t, v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100000)
    ap.add_argument("--dirs", type=int, default=100)
    ap.add_argument("--file-bytes", type=int, default=200)
    ap.add_argument("--blob-mib", type=int, default=64)
    ap.add_argument("--casboxd", default=os.environ.get("CASBOXD") or os.path.join(
        HERE, "..", "build", "bin", "casboxd"))
    args = ap.parse_args()
    print("load before: %s" % uptime(), flush=True)
    tmp = tempfile.mkdtemp(prefix="casbox-shared-bench-")
    daemons = []
    try:
        def start(name, extra):
            d = rc.Casboxd(os.path.join(tmp, name), binary=args.casboxd,
                           log_path=os.path.join(tmp, name + ".log"), extra_args=extra).start()
            daemons.append(d)
            return d, rc.Client(d.target, timeout=3600)

        r, rcl = start("remote", ["--no-execution"])
        remote = ["--set", "cas.remote=grpc://" + r.target, "--set", "cas.remote_timeout=600"]
        w, wcl = start("fuse-worker", remote + ["--set", "execution.staging=fuse"])
        h, hcl = start("hardlink-worker", remote + ["--set", "execution.staging=hardlink"])

        # 1. lazy inputs
        t_up, (root, fbytes, dbytes, picks) = timed(
            lambda: build_tree(rcl, args.files, args.dirs, args.file_bytes))
        print("tree: %d files (%d bytes) in %d directories (%d bytes of Directory messages), "
              "uploaded to the remote in %.1f s" % (args.files, fbytes, args.dirs, dbytes, t_up),
              flush=True)
        ad = eh.upload_action(rcl, [eh.SH, "-c", "cat %s > out" % " ".join(picks)],
                              root=root, env=eh.ENV, output_paths=["out"])
        rows = []
        for name, c in (("fuse (lazy)", wcl), ("hardlink (whole tree)", hcl)):
            t, (_ops, resp) = timed(lambda c=c: eh.execute(c, ad, skip_cache_lookup=True,
                                                          timeout=3600))
            if resp.status.code != 0 or resp.result.exit_code != 0:
                raise SystemExit("%s: action failed: %s" % (name, resp.status.message))
            m = eh.aux_metadata(resp)
            rows.append((name, t, m.get("fetched_blobs", 0), m.get("fetched_bytes", 0)))
        print("\naction reading 3 files of the tree, empty worker cache:")
        print("  %-24s %10s %14s %16s" % ("staging", "Execute s", "blobs fetched", "bytes fetched"))
        for name, t, b, n in rows:
            print("  %-24s %10.2f %14d %16d" % (name, t, b, n))
        print("  fuse fetched %.4f%% of the tree's file bytes; round trip ratio hardlink/fuse "
              "%.1fx" % (100.0 * rows[0][3] / max(1, fbytes), rows[1][1] / max(1e-9, rows[0][1])),
              flush=True)

        # 2. ByteStream through the frontend
        size = args.blob_mib * MiB
        chunk = MiB
        res = {}
        for name, c in (("direct", rcl), ("frontend", wcl)):
            data = os.urandom(size)
            res["up " + name], _ = timed(lambda c=c, data=data: c.upload_bytestream(data,
                                                                                    chunk=chunk))
        data = os.urandom(size)
        dg = rcl.upload_bytestream(data, chunk=chunk)
        res["down direct"], got = timed(lambda: rcl.bs_read(rcl.read_name(dg)))
        assert got == data
        res["down frontend cold"], got = timed(lambda: wcl.bs_read(wcl.read_name(dg)))
        assert got == data
        res["down frontend warm"], got = timed(lambda: wcl.bs_read(wcl.read_name(dg)))
        assert got == data
        print("\nByteStream, %d MiB blob (python client, %d KiB messages):" % (args.blob_mib,
                                                                          chunk // 1024))
        for k in ("up direct", "up frontend", "down direct", "down frontend cold",
                  "down frontend warm"):
            base = res["up direct"] if k.startswith("up") else res["down direct"]
            print("  %-20s %7.2f s  %7.1f MiB/s  ratio %.2fx" % (
                k, res[k], args.blob_mib / max(1e-9, res[k]), res[k] / max(1e-9, base)))
        print("  target for the proxy: <= 1.2x", flush=True)
    finally:
        for d in daemons:
            try:
                d.stop()
            except AssertionError as e:
                print("casboxd did not stop cleanly: %s" % e)
        shutil.rmtree(tmp, ignore_errors=True)
        print("\nload after: %s" % uptime())


if __name__ == "__main__":
    main()
