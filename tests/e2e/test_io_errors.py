#!/usr/bin/python3
"""End-to-end: casboxd's store on a disk that returns I/O errors (real EIO).

btrfs on a loop device checksums data: a 4 KiB block of a committed blob
overwritten on the device makes reads of that blob fail with EIO. Checked:
  1. blobs damaged while casboxd was stopped (first read after a restart,
     when the store re-hashes them): ByteStream.Read and BatchReadBlobs
     answer NOT_FOUND, FindMissingBlobs then lists them, an Execute naming
     one as input is FAILED_PRECONDITION with a MISSING violation;
  2. blobs damaged under a running casboxd after they were verified (the
     read itself fails): NOT_FOUND, and missing afterwards;
  3. every damaged blob can be uploaded again, and then reads back right;
     the undamaged ones kept serving throughout;
  3b. an input read through FUSE (staging = fuse, fuse_passthrough = off:
     casboxd serves the reads) whose blob is damaged after verification: the
     action's cat fails with EIO, and FUSE's read reports it to the store:
     the blob is missing afterwards and the log names it;
  4. ext4 shut down under casboxd (FS_IOC_SHUTDOWN: every write and read
     fails): uploads fail with a status (not a crash), GetCapabilities still
     answers, and casboxd exits 0 on SIGTERM.
Needs root (mount, loop devices); skips otherwise or without mkfs.btrfs.
Mounts and loop devices are removed in every case.
"""

import fcntl
import hashlib
import os
import shutil
import struct
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
BLOB = 256 * 1024
FS_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
SHUTDOWN_NOLOGFLUSH = 2


class Checks:
    def __init__(self):
        self.failures = 0

    def __call__(self, name, cond, why=""):
        print("%s  %s%s" % ("ok  " if cond else "FAIL", name, "" if cond else "\n      " + why),
              flush=True)
        self.failures += 0 if cond else 1
        return cond


def sh(*args):
    subprocess.run(list(args), check=True, stdout=subprocess.DEVNULL)


def umount(mnt):
    """Unmounts (flushing everything to the image); lazily only as a last resort."""
    os.sync()
    for _ in range(20):
        if not os.path.ismount(mnt):
            return
        subprocess.run(["umount", mnt], check=False, stderr=subprocess.DEVNULL)
        time.sleep(0.25)
    subprocess.run(["umount", "-l", mnt], check=False)


def corrupt(image, blobs):
    """Overwrites, in the image file, the second 4 KiB block of each blob."""
    with open(image, "r+b") as f:
        img = f.read()
        for data in blobs:
            at = img.find(data[4096:8192])
            if at < 0:
                raise AssertionError("blob data not found in the image")
            f.seek(at)
            f.write(os.urandom(4096))
        f.flush()
        os.fsync(f.fileno())


def blob_path(state, d):
    return os.path.join(state, "cas", "blobs", d.hash[:2], d.hash)


def read_code(c, d):
    try:
        data = c.bs_read(c.read_name(d))
        return 0 if hashlib.sha256(data).hexdigest() == d.hash else -1
    except grpc.RpcError as e:
        return e.code().value[0]


NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]


def btrfs_part(tmp, ck):
    image = os.path.join(tmp, "btrfs.img")
    mnt = os.path.join(tmp, "btrfs")
    state = os.path.join(mnt, "state")
    os.makedirs(mnt)
    with open(image, "wb") as f:
        f.truncate(256 * MiB)
    sh("mkfs.btrfs", "-q", "-f", image)
    sh("mount", "-o", "loop", image, mnt)
    d = None
    try:
        d = rc.Casboxd(state, log_path=os.path.join(tmp, "btrfs-casboxd.log"))
        d.start()
        c = rc.Client(d.target)
        datas = [os.urandom(BLOB) for _ in range(24)]
        digs = []
        for i, data in enumerate(datas):
            digs.append(c.upload_bytestream(data) if i % 2 else c.upload_blob(data))
        d.stop()
        umount(mnt)
        corrupt(image, datas[0:8])
        sh("mount", "-o", "loop", image, mnt)
        d.start()
        c = rc.Client(d.target)

        # 1. damaged while stopped: found on the first (verifying) read.
        codes = [read_code(c, x) for x in digs[0:4]]
        ck("damaged while stopped: ByteStream.Read is NOT_FOUND", codes == [NOT_FOUND] * 4,
           "codes %s" % codes)
        r = c.batch_read(digs[4:6])
        codes = [x.status.code for x in r.responses]
        ck("damaged while stopped: BatchReadBlobs is NOT_FOUND", codes == [NOT_FOUND] * 2,
           "codes %s" % codes)
        missing = {m.hash for m in c.find_missing(digs)}
        ck("... and FindMissingBlobs lists them", missing == {x.hash for x in digs[0:6]},
           "missing %d: %s" % (len(missing), sorted(missing)[:3]))
        root = eh.upload_tree(c, {})
        # An input tree naming a damaged blob (digs[6], not yet read).
        tree = rc.re_pb2.Directory()
        tree.files.add(name="in", digest=digs[6])
        root = c.upload_message(tree)
        ad = eh.upload_action(c, ["/bin/cat", "in"], root=root)
        # Inputs are checked by the index, not read, before the action runs:
        # the action meets the damage (staging verifies the blob), then the
        # blob is missing and the client's retry is told so.
        eh.exec_status(c, ad)
        code, msg, st, _w = eh.exec_status(c, ad)
        subjects = eh.missing_subjects(st) if st is not None else []
        ck("an Execute whose input is damaged: the retry is FAILED_PRECONDITION MISSING "
           "naming it",
           code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and
           any(digs[6].hash in s for s in subjects),
           "code %s %r subjects %s" % (code, msg, subjects))

        # 2. damaged under a running casboxd, after being verified.
        codes = [read_code(c, x) for x in digs[8:16]]
        ck("undamaged blobs serve and verify", codes == [0] * 8, "codes %s" % codes)
        corrupt_live = datas[8:12]
        with open(image, "r+b") as f:
            img = f.read()
            for data in corrupt_live:
                at = img.find(data[4096:8192])
                f.seek(at)
                f.write(os.urandom(4096))
            os.fsync(f.fileno())
        for x in digs[8:12]:
            fd = os.open(blob_path(state, x), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        codes = [read_code(c, x) for x in digs[8:12]]
        ck("damaged under a running casboxd after verification: NOT_FOUND",
           codes == [NOT_FOUND] * 4, "codes %s" % codes)
        missing = {m.hash for m in c.find_missing(digs[8:16])}
        ck("... and missing afterwards, the others not",
           missing == {x.hash for x in digs[8:12]}, "missing %s" % sorted(missing))

        # 3. re-upload replaces the bad files.
        for i in list(range(0, 6)) + list(range(8, 12)):
            if i % 2:
                c.upload_bytestream(datas[i])
            else:
                c.upload_blob(datas[i])
        codes = [read_code(c, x) for x in digs[0:6] + digs[8:12]]
        ck("re-uploaded damaged blobs read back right", codes == [0] * 10, "codes %s" % codes)
        codes = [read_code(c, x) for x in digs[12:]]
        ck("the undamaged rest still serve", codes == [0] * 12, "codes %s" % codes)
        with open(d.log_path) as f:
            ck("the log names the unreadable blobs", "is unreadable" in f.read(), "")
        c.close()
        d.stop()

        # 3b. damaged under a FUSE read (casboxd serving the read path).
        d = rc.Casboxd(state, log_path=os.path.join(tmp, "btrfs-casboxd-fuse.log"),
                       extra_args=["--set", "execution.staging=fuse",
                                   "--set", "execution.fuse_passthrough=off"])
        d.start()
        c = rc.Client(d.target)
        x = digs[16]
        ck("FUSE read path: the blob verifies first", read_code(c, x) == 0, "")
        with open(image, "r+b") as f:
            img = f.read()
            at = img.find(datas[16][4096:8192])
            f.seek(at)
            f.write(os.urandom(4096))
            os.fsync(f.fileno())
        fd = os.open(blob_path(state, x), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        tree = rc.re_pb2.Directory()
        tree.files.add(name="in", digest=x)
        root = c.upload_message(tree)
        ad = eh.upload_action(c, ["/bin/sh", "-c", "cat in > /dev/null; echo rc=$? >&2"],
                              root=root)
        _ops, resp = eh.execute(c, ad)
        err = eh.read_blob(c, resp.result.stderr_digest).decode(errors="replace") \
            if resp.result.HasField("stderr_digest") else resp.result.stderr_raw.decode()
        ck("FUSE read path: the action's read of the damaged input fails with EIO",
           "Input/output error" in err and "rc=1" in err, "stderr %r" % err)
        missing = {m.hash for m in c.find_missing([x])}
        ck("... and FUSE reported it: the blob is missing", missing == {x.hash},
           "missing %s" % sorted(missing))
        with open(d.log_path) as f:
            ck("... the log names it", "the blob is missing from the store now" in f.read(), "")
        c.close()
        d.stop()
        d = None
    finally:
        if d is not None:
            d.kill()
        umount(mnt)


def ext4_shutdown_part(tmp, ck):
    image = os.path.join(tmp, "ext4.img")
    mnt = os.path.join(tmp, "ext4")
    state = os.path.join(mnt, "state")
    os.makedirs(mnt)
    with open(image, "wb") as f:
        f.truncate(128 * MiB)
    sh("mkfs.ext4", "-q", "-F", image)
    sh("mount", "-o", "loop", image, mnt)
    d = None
    try:
        d = rc.Casboxd(state, log_path=os.path.join(tmp, "ext4-casboxd.log"),
                       extra_args=["--no-execution"])
        d.start()
        c = rc.Client(d.target, timeout=30)
        before = c.upload_blob(os.urandom(BLOB))
        fd = os.open(mnt, os.O_RDONLY)
        fcntl.ioctl(fd, FS_IOC_SHUTDOWN, struct.pack("I", SHUTDOWN_NOLOGFLUSH))
        os.close(fd)
        codes = []
        for i in range(4):
            data = os.urandom(BLOB)
            try:
                if i % 2:
                    c.upload_bytestream(data)
                else:
                    c.upload_blob(data)
                codes.append(0)
            except grpc.RpcError as e:
                codes.append(e.code().name)
            except AssertionError as e:
                codes.append(str(e)[:80])
        ck("ext4 shut down: uploads fail with a status", 0 not in codes, "codes %s" % codes)
        code = read_code(c, before)
        ck("ext4 shut down: a read answers a status", code != 0, "code %s" % code)
        caps = c.get_capabilities()
        ck("ext4 shut down: GetCapabilities answers",
           len(caps.cache_capabilities.digest_function) > 0, "")
        ck("ext4 shut down: casboxd still runs", d.alive(), d.log_tail())
        c.close()
        d.stop()
        d = None
    finally:
        if d is not None:
            d.kill()
        umount(mnt)


def main():
    if os.geteuid() != 0:
        print("SKIP: needs root for loop devices and mounts")
        return 77
    if shutil.which("mkfs.btrfs") is None:
        print("SKIP: mkfs.btrfs missing (apt-get install btrfs-progs)")
        return 77
    ck = Checks()
    tmp = tempfile.mkdtemp(prefix="casbox-e2e-io-errors.")
    try:
        for part in (btrfs_part, ext4_shutdown_part):
            try:
                part(tmp, ck)
            except Exception as e:  # noqa: BLE001 - report, then the next part
                ck("%s ran to the end" % part.__name__, False, repr(e))
    finally:
        for name in ("btrfs", "ext4"):
            umount(os.path.join(tmp, name))
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n%s" % ("all passed" if ck.failures == 0 else "%d failed" % ck.failures))
    return 1 if ck.failures else 0


if __name__ == "__main__":
    sys.exit(main())
