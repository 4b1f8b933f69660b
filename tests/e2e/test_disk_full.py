#!/usr/bin/python3
"""End-to-end: casboxd with its state dir on a small filesystem that fills up.

Run twice, on a 64 MiB tmpfs and on a 64 MiB ext4 on a loop device (real
ENOSPC from the kernel, no mocks). On each:
  - the log states an effective CAS limit below the filesystem's size, though
    max_bytes is the default 20 GiB;
  - 100 uploads of 1 MiB (BatchUpdateBlobs and ByteStream) all succeed: old
    blobs are evicted;
  - a blob larger than the filesystem is RESOURCE_EXHAUSTED naming the
    filesystem, at once, and evicts nothing;
  - the disk filled behind the store's back (a file written until ENOSPC):
    the next upload evicts and succeeds;
  - every blob pinned (hard-linked elsewhere, as hardlink staging does) and
    the disk full: RESOURCE_EXHAUSTED, never INTERNAL; GetCapabilities and
    reads keep working; after the filler is removed uploads work again;
  - an action that fills the disk (an output file, or stdout) fails
    RESOURCE_EXHAUSTED naming the filesystem, with no (cut-short) output, and
    the next action runs (its freshly uploaded inputs were not evicted);
  - (on a third tmpfs, max_bytes 16 MiB) an output over [cas]
    max_blob_percent of the store's size fails the action naming that key,
    and the blobs stored before are all still there;
  - every blob the daemon reports present reads back and verifies, every file
    under cas/blobs hashes to its name, and casboxd exits 0 on SIGTERM.
Needs root (mount); skips otherwise. Mounts and loop devices are removed in
every case.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import exec_helpers as eh  # noqa: E402
import reapi_client as rc  # noqa: E402

MiB = 1 << 20
FS_MIB = 64


class Checks:
    def __init__(self):
        self.failures = 0

    def __call__(self, name, cond, why=""):
        print("%s  %s%s" % ("ok  " if cond else "FAIL", name, "" if cond else "\n      " + why),
              flush=True)
        self.failures += 0 if cond else 1
        return cond


def mount_fs(kind, mnt, image):
    os.makedirs(mnt)
    if kind == "tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % FS_MIB, "tmpfs", mnt],
                       check=True)
    else:
        with open(image, "wb") as f:
            f.truncate(FS_MIB * MiB)
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
        # -o loop: the loop device is released (autoclear) when unmounted.
        subprocess.run(["mount", "-o", "loop", image, mnt], check=True)


def umount_fs(mnt):
    if os.path.ismount(mnt):
        subprocess.run(["umount", "-l", mnt], check=False)


def fill(path):
    """Writes path until ENOSPC; returns the bytes written."""
    n = 0
    chunk = b"\0" * (256 * 1024)
    with open(path, "ab") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
                n += len(chunk)
        except OSError:
            pass
    return n


def upload(c, data, bytestream):
    d = rc.digest_of(data)
    try:
        if bytestream:
            c.upload_bytestream(data)
            return d, 0, ""
        r = c.batch_update([(d, data)])
        st = r.responses[0].status
        return d, st.code, st.message
    except grpc.RpcError as e:
        return d, e.code().value[0], e.details() or ""
    except AssertionError as e:
        return d, -1, str(e)


def start_write(c, digest):
    """(code, message) of a ByteStream.Write of digest's first MiB: 0 when taken."""
    try:
        c.bs_write(c.write_name(digest), b"\0" * MiB, finish=False)
        return 0, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


def audit(ck, c, state, digests, kind):
    present = [d for d in digests if d.hash not in
               {m.hash for m in c.find_missing(digests)}]
    bad = []
    for d in present:
        try:
            data = c.bs_read(c.read_name(d))
            if hashlib.sha256(data).hexdigest() != d.hash:
                bad.append(d.hash)
        except grpc.RpcError as e:
            bad.append("%s (%s)" % (d.hash, e.code()))
    ck("%s: every blob reported present (%d) reads back and verifies" % (kind, len(present)),
       not bad, "bad: %s" % bad[:5])
    wrong = []
    blobs = os.path.join(state, "cas", "blobs")
    for shard in os.listdir(blobs):
        for name in os.listdir(os.path.join(blobs, shard)):
            with open(os.path.join(blobs, shard, name), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != name:
                    wrong.append(name)
    ck("%s: every file under cas/blobs hashes to its name" % kind, not wrong, str(wrong[:5]))
    return present


def run_on(kind, tmp, ck):
    mnt = os.path.join(tmp, kind)
    state = os.path.join(mnt, "state")
    mount_fs(kind, mnt, os.path.join(tmp, kind + ".img"))
    d = None
    try:
        d = rc.Casboxd(state, log_path=os.path.join(tmp, kind + "-casboxd.log"))
        d.start()
        c = rc.Client(d.target, timeout=120)
        with open(d.log_path) as f:
            m = re.search(r"cas: effective limit (\d+) bytes", f.read())
        ck("%s: start-up logs an effective limit below the filesystem's size" % kind,
           m is not None and int(m.group(1)) < FS_MIB * MiB,
           "log:\n" + d.log_tail(10))

        digests, codes = [], []
        for i in range(100):
            dg, code, msg = upload(c, os.urandom(MiB), bytestream=i % 2 == 1)
            digests.append(dg)
            codes.append((code, msg))
        failed = [x for x in codes if x[0] != 0]
        ck("%s: 100 x 1 MiB uploads on a %d MiB filesystem all succeed (eviction)"
           % (kind, FS_MIB), not failed, "failures: %s" % failed[:3])
        missing = {m.hash for m in c.find_missing(digests)}
        ck("%s: the oldest were evicted, the newest kept" % kind,
           digests[0].hash in missing and digests[-1].hash not in missing,
           "%d missing" % len(missing))

        t0 = time.time()
        code, msg = start_write(c, rc.re_pb2.Digest(hash="ab" * 32, size_bytes=100 * MiB))
        ck("%s: a 100 MiB upload is RESOURCE_EXHAUSTED naming the filesystem, at once" % kind,
           code == grpc.StatusCode.RESOURCE_EXHAUSTED and kind in msg and time.time() - t0 < 10,
           "got %s %r" % (code, msg))
        still = {m.hash for m in c.find_missing(digests)}
        ck("%s: ... and evicted nothing" % kind, still == missing,
           "%d missing before, %d after" % (len(missing), len(still)))

        filler = os.path.join(mnt, "filler")
        fill(filler)
        dg, code, msg = upload(c, os.urandom(MiB), bytestream=False)
        digests.append(dg)
        ck("%s: disk filled behind the store's back: an upload evicts and succeeds" % kind,
           code == 0, "got %s %r" % (rc.code_name(code) if code > 0 else code, msg))
        dg, code, msg = upload(c, os.urandom(MiB), bytestream=True)
        digests.append(dg)
        ck("%s: ... through ByteStream too" % kind, code == 0, "got %s %r" % (code, msg))

        # Pin every blob (a second link, as hardlink staging makes) and fill.
        pins = os.path.join(mnt, "pins")
        os.makedirs(pins)
        blobs = os.path.join(state, "cas", "blobs")
        for shard in os.listdir(blobs):
            for name in os.listdir(os.path.join(blobs, shard)):
                os.link(os.path.join(blobs, shard, name), os.path.join(pins, name))
        fill(filler)
        results = [upload(c, os.urandom(MiB), bytestream=b) for b in (False, True)]
        for (dg, code, msg), how in zip(results, ("BatchUpdateBlobs", "ByteStream")):
            ck("%s: all blobs pinned, disk full: %s is RESOURCE_EXHAUSTED naming the "
               "filesystem and sizes" % (kind, how),
               code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and kind in msg and
               "bytes" in msg, "got %s %r" % (code, msg))
        small = os.urandom(100)
        dg, code, msg = upload(c, small, bytestream=False)
        ck("%s: ... even a 100-byte blob, not INTERNAL" % kind,
           code in (0, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]), "got %s %r" % (code, msg))
        caps = c.get_capabilities()
        ck("%s: GetCapabilities still answers" % kind,
           len(caps.cache_capabilities.digest_function) > 0, "")
        audit(ck, c, state, digests, kind + " (full)")

        os.unlink(filler)
        shutil.rmtree(pins)
        dg, code, msg = upload(c, os.urandom(MiB), bytestream=True)
        digests.append(dg)
        ck("%s: space freed: uploads work again" % kind, code == 0, "got %s %r" % (code, msg))

        # Actions that fill the disk from their scratch dir: an output file,
        # and stdout. Each fails RESOURCE_EXHAUSTED naming the filesystem
        # (never a success with a cut-short file), and the next one runs.
        for what, script, outs in (
                ("an output file", "head -c %d /dev/zero > big" % (2 * FS_MIB * MiB), ["big"]),
                ("stdout", "head -c %d /dev/zero" % (2 * FS_MIB * MiB), [])):
            ad = eh.upload_action(c, ["/bin/sh", "-c", script], output_paths=outs, timeout=60)
            _ops, resp = eh.execute(c, ad, timeout=120)
            ck("%s: an action filling the disk through %s is RESOURCE_EXHAUSTED naming the "
               "filesystem, with no output" % (kind, what),
               resp.status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and
               "filled the filesystem holding " + os.path.join(state, "cas", "exec")
               in resp.status.message and not resp.result.output_files,
               "status %s %r exit %d outputs %s" % (
                   rc.code_name(resp.status.code), resp.status.message, resp.result.exit_code,
                   [(f.path, f.digest.size_bytes) for f in resp.result.output_files]))
            ad2 = eh.upload_action(c, ["/bin/sh", "-c", "echo next after %s" % what])
            _ops, resp = eh.execute(c, ad2)
            ck("%s: ... and the next action runs (its inputs were not evicted)" % kind,
               resp.status.code == 0 and resp.result.exit_code == 0, "status %s" % resp.status)

        ad = eh.upload_action(c, ["/bin/sh", "-c", "echo hello"])
        _ops, resp = eh.execute(c, ad)
        ck("%s: the next action runs" % kind,
           resp.status.code == 0 and resp.result.exit_code == 0, "status %s" % resp.status)
        audit(ck, c, state, digests, kind + " (end)")
        with open(d.log_path) as f:
            log = f.read()
        ck("%s: the log tells the disk was full" % kind, "disk full on" in log, "")
        c.close()
        d.stop()
        d = None
    finally:
        if d is not None:
            d.kill()
        umount_fs(mnt)


def blob_bound(tmp, ck):
    """One huge output cannot evict the cache: with [cas] max_bytes = 16 MiB
    and max_blob_percent = 50, 12 x 1 MiB blobs stored, a 10 MiB output (it
    fits on the disk, and would evict 6 of them) fails the action naming
    max_blob_percent, and all 12 are still there."""
    mnt = os.path.join(tmp, "bound")
    mount_fs("tmpfs", mnt, None)
    d = None
    try:
        d = rc.Casboxd(os.path.join(mnt, "state"), log_path=os.path.join(tmp, "bound-casboxd.log"),
                       extra_args=["--set", "cas.max_bytes=16M",
                                   "--set", "cas.max_blob_percent=50"])
        d.start()
        c = rc.Client(d.target, timeout=120)
        kept = [upload(c, os.urandom(MiB), bytestream=False)[0] for _ in range(12)]
        ad = eh.upload_action(c, ["/bin/sh", "-c", "head -c %d /dev/urandom > big" % (10 * MiB)],
                              output_paths=["big"], timeout=60)
        _ops, resp = eh.execute(c, ad, timeout=120)
        text = resp.status.message + eh.read_blob(c, resp.result.stderr_digest).decode(
            errors="replace")
        ck("bound: a 10 MiB output over max_blob_percent of a 16 MiB CAS fails naming it",
           (resp.status.code != 0 or resp.result.exit_code != 0) and
           "max_blob_percent" in text and not resp.result.output_files,
           "status %s exit %d %r" % (rc.code_name(resp.status.code), resp.result.exit_code, text))
        missing = c.find_missing(kept)
        ck("bound: ... and the 12 blobs stored before are all still there", missing == [],
           "%d missing" % len(missing))
        ad = eh.upload_action(c, ["/bin/sh", "-c", "head -c %d /dev/urandom > small" % (4 * MiB)],
                              output_paths=["small"])
        _ops, resp = eh.execute(c, ad)
        ck("bound: a 4 MiB output is stored", resp.status.code == 0 and
           resp.result.exit_code == 0 and len(resp.result.output_files) == 1,
           "status %s exit %d" % (resp.status, resp.result.exit_code))
        c.close()
        d.stop()
        d = None
    finally:
        if d is not None:
            d.kill()
        umount_fs(mnt)


def main():
    if os.geteuid() != 0:
        print("SKIP: needs root to mount a tmpfs and a loop device")
        return 77
    ck = Checks()
    tmp = tempfile.mkdtemp(prefix="casbox-e2e-disk-full.")
    try:
        for kind in ("tmpfs", "ext4"):
            try:
                run_on(kind, tmp, ck)
            except Exception as e:  # noqa: BLE001 - report and go on to the next filesystem
                ck("%s: ran to the end" % kind, False, repr(e))
        try:
            blob_bound(tmp, ck)
        except Exception as e:  # noqa: BLE001 - report it as a failure
            ck("bound: ran to the end", False, repr(e))
    finally:
        for kind in ("tmpfs", "ext4", "bound"):
            umount_fs(os.path.join(tmp, kind))
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n%s" % ("all passed" if ck.failures == 0 else "%d failed" % ck.failures))
    return 1 if ck.failures else 0


if __name__ == "__main__":
    sys.exit(main())
