#!/usr/bin/python3
"""End-to-end: FUSE staging (execution.staging = fuse) with a real casboxd,
a real FUSE mount and the real sandbox.

Checks, each a function below:
  big_tree     an input root of 100,000 files (100 dirs x 1000 files sharing 4
               blobs) of which the action reads 3: right output, and the
               staging counters in auxiliary_metadata (a google.protobuf.Struct)
               say 3 files opened
  passthrough  FUSE passthrough is on when root on Linux >= 6.9 (the log says
               so, bytes_read stays 0: the kernel reads the CAS file), read and
               mmap give the exact bytes; then a second daemon with
               execution.fuse_passthrough = off serves the same reads itself
               (bytes_read counted)
  attributes   modes, executable bit, symlinks, nested empty dirs, zero-byte files
  no_writes    write, chmod, truncate, rename, rm go to the overlay's upper
               layer; the CAS and the next action see the original bytes; the
               FUSE mount and other actions' trees are invisible in the sandbox
  concurrent   4 actions at once over inputs sharing blobs
  big_file     a 1 GiB input read back byte for byte (sha256sum inside)
  sigkill      SIGKILL casboxd while an action reads through FUSE; a restart on
               the same state dir detaches the stale mount and works; after a
               clean stop nothing is left mounted

  uring mode   casfs logs which way requests come: with --uring on (what
               test_fuse_staging_uring.sh runs) execution.fuse_uring = on and
               the fuse module's enable_uring turned on for the run (restored
               after), and the log must say "FUSE over io_uring on"; with the
               default --uring auto and enable_uring as the machine has it,
               the log must say off (and why) exactly when enable_uring is
               off: the /dev/fuse fallback

    test_fuse_staging.py [-k NAME] [--skip-big] [--uring auto|on]

Needs root (or /dev/fuse usable) and overlayfs over FUSE; exit 77 (skip) when
FUSE cannot be mounted. Exit 0 pass, 1 fail.
"""

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reapi_client as rc  # noqa: E402
from reapi_client import re_pb2, bs_pb2  # noqa: E402
from google.protobuf import struct_pb2  # noqa: E402

SKIP = 77
STATS_URL = "type.googleapis.com/google.protobuf.Struct"
ENV = [re_pb2.Command.EnvironmentVariable(name="PATH", value="/usr/bin:/bin")]


class Fail(AssertionError):
    pass


def need(cond, msg, *args):
    if not cond:
        raise Fail(msg % args if args else msg)


def log(msg):
    print("[test_fuse_staging %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr,
          flush=True)


# -- building inputs -------------------------------------------------------------

def file_node(name, d, exe=False):
    return re_pb2.FileNode(name=name, digest=d, is_executable=exe)


def directory(files=(), dirs=(), links=()):
    return re_pb2.Directory(
        files=sorted(files, key=lambda n: n.name),
        directories=sorted(dirs, key=lambda n: n.name),
        symlinks=sorted(links, key=lambda n: n.name))


def put_dir(c, msg):
    return c.upload_message(msg)


def dir_node(name, d):
    return re_pb2.DirectoryNode(name=name, digest=d)


def stats_of(result):
    """casbox's staging counters of an ActionResult (docs/fuse.md) as a dict;
    the counts as ints."""
    for a in result.execution_metadata.auxiliary_metadata:
        if a.type_url != STATS_URL:
            continue
        st = struct_pb2.Struct()
        a.Unpack(st)
        return {k: (int(v) if isinstance(v, float) else v) for k, v in st.items()}
    raise Fail("no %s in auxiliary_metadata" % STATS_URL)


def run(c, root, script, outputs=(), timeout=300):
    """Execute sh -c script over root; returns (ActionResult, stdout, stderr)."""
    cmd = re_pb2.Command(arguments=["/bin/sh", "-c", script], environment_variables=ENV,
                         output_paths=list(outputs))
    act = re_pb2.Action(command_digest=c.upload_message(cmd), input_root_digest=root,
                        do_not_cache=True)
    ad = c.upload_message(act)
    ops = c.execute(ad, skip_cache_lookup=True, timeout=timeout)
    resp = c.execute_response(ops[-1])
    need(resp is not None, "no ExecuteResponse")
    need(resp.status.code == 0, "Execute status %d: %s", resp.status.code, resp.status.message)
    r = resp.result
    out = c.bs_read(c.read_name(r.stdout_digest)) if r.stdout_digest.size_bytes else b""
    err = c.bs_read(c.read_name(r.stderr_digest)) if r.stderr_digest.size_bytes else b""
    return r, out, err


def check_exit(r, out, err):
    need(r.exit_code == 0, "exit %d\nstdout: %s\nstderr: %s", r.exit_code,
         out.decode(errors="replace")[-2000:], err.decode(errors="replace")[-2000:])


# -- the checks ------------------------------------------------------------------

def big_tree(t):
    c = t.client
    blobs = [c.upload_blob(b"blob number %d\n" % i) for i in range(4)]
    files = [file_node("f%04d" % i, blobs[i % 4]) for i in range(1000)]
    sub = put_dir(c, directory(files=files))
    root = put_dir(c, directory(dirs=[dir_node("d%03d" % i, sub) for i in range(100)]))
    t0 = time.time()
    r, out, err = run(c, root, "cat d007/f0001 d042/f0502 d099/f0999")
    wall = time.time() - t0
    check_exit(r, out, err)
    need(out == b"blob number 1\nblob number 2\nblob number 3\n", "stdout %r", out)
    s = stats_of(r)
    need(s.get("mode") == "fuse", "staging mode %s, want fuse", s)
    need(s.get("files_opened") == 3, "files_opened %s, want 3", s)
    # Passthrough reads never reach casboxd, so it cannot count their bytes.
    want = 0 if t.passthrough else 3 * 14
    need(s.get("bytes_read") == want, "bytes_read %s, want %d", s, want)
    log("100,000-file tree, 3 files read: staging %.1f ms, Execute round trip %.0f ms, %s"
        % (s["staging_us"] / 1000.0, wall * 1000, s))


def attributes(t):
    c = t.client
    empty = put_dir(c, directory())
    e1 = put_dir(c, directory(dirs=[dir_node("e2", empty)]))
    hello = c.upload_blob(b"hello\n")
    tool = c.upload_blob(b"#!/bin/sh\necho tool ran\n")
    zero = rc.digest_of(b"")
    root = put_dir(c, directory(
        files=[file_node("hello.txt", hello), file_node("tool.sh", tool, exe=True),
               file_node("zero", zero)],
        dirs=[dir_node("e1", e1), dir_node("emptydir", empty)],
        links=[re_pb2.SymlinkNode(name="link", target="hello.txt"),
               re_pb2.SymlinkNode(name="dirlink", target="e1")]))
    script = ("stat -c '%n %a %s %F' hello.txt tool.sh zero e1/e2 emptydir; "
              "readlink link dirlink; cat link; ./tool.sh; ls -A emptydir | wc -l; "
              "test -d dirlink/e2 && echo dirlink-ok")
    r, out, err = run(c, root, script)
    check_exit(r, out, err)
    want = ("hello.txt 444 6 regular file\ntool.sh 555 24 regular file\n"
            "zero 444 0 regular empty file\ne1/e2 755 4096 directory\n"
            "emptydir 755 4096 directory\nhello.txt\ne1\nhello\ntool ran\n0\ndirlink-ok\n")
    need(out.decode() == want, "got:\n%s\nwant:\n%s", out.decode(), want)


def no_writes(t):
    c = t.client
    text = b"original content\n"
    d = c.upload_blob(text)
    d2 = c.upload_blob(b"second\n")
    root = put_dir(c, directory(files=[file_node("a.txt", d), file_node("b.txt", d2),
                                       file_node("c.txt", d2)]))
    mnt = os.path.join(t.state, "cas", "fuse")
    # Inputs are 0444 as with hardlink staging: the owner chmods before writing.
    script = ("chmod 644 a.txt c.txt && echo changed > a.txt; chmod 777 b.txt; "
              "truncate -s 0 c.txt; mv b.txt moved.txt; rm -f nothing; "
              "cat a.txt; stat -c %%a moved.txt; wc -c < c.txt; "
              "test -e '%s' && echo MOUNT-VISIBLE; "
              "grep -c fuse.casfs /proc/self/mountinfo; ls /casbox" % mnt)
    r, out, err = run(c, root, script)
    check_exit(r, out, err)
    need(out.decode() == "changed\n777\n0\n0\nexec\n", "inside: %r (stderr %r)", out, err)
    # The CAS and a fresh action still see the original bytes and modes.
    need(c.bs_read(c.read_name(d)) == text, "the CAS blob changed")
    r, out, err = run(c, root, "cat a.txt; stat -c %a b.txt c.txt; wc -c < c.txt")
    check_exit(r, out, err)
    need(out == b"original content\n444\n444\n7\n", "second action saw %r", out)
    # Another action's tree is not reachable: the mount root is not visible
    # (checked above) and the tree name is not guessable from inside.
    need(not [m for m in open("/proc/mounts") if "casbox/exec" in m.split()[1:2]],
         "overlay leaked into the host")


def concurrent(t):
    c = t.client
    shared = c.upload_blob(b"shared data " * 1000)
    files = [file_node("s%02d" % i, shared) for i in range(20)]
    root = put_dir(c, directory(files=files))
    results, errors = [None] * 4, []

    def one(i):
        try:
            results[i] = run(c, root, "cat s*  | sha256sum; echo %d" % i)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    need(not errors, "errors: %s", errors)
    want = hashlib.sha256(b"shared data " * 1000 * 20).hexdigest()
    for i, (r, out, err) in enumerate(results):
        check_exit(r, out, err)
        need(out.decode().split()[0] == want and out.decode().split()[-1] == str(i),
             "action %d: %r", i, out)
        need(stats_of(r)["files_opened"] == 20, "action %d: %s", i, stats_of(r))


def upload_big(c, size):
    """A size-byte blob from a repeating 1 MiB pattern, streamed."""
    pattern = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB
    h = hashlib.sha256()
    for off in range(0, size, len(pattern)):
        h.update(pattern[:min(len(pattern), size - off)])
    d = re_pb2.Digest(hash=h.hexdigest(), size_bytes=size)
    name = c.write_name(d)

    def gen():
        off = 0
        while off < size:
            piece = pattern[:min(len(pattern), size - off)]
            yield bs_pb2.WriteRequest(resource_name=name if off == 0 else "", write_offset=off,
                                      data=piece, finish_write=off + len(piece) >= size)
            off += len(piece)
    r = c.bs_write_requests(gen(), timeout=600)
    need(r.committed_size == size, "committed %d", r.committed_size)
    return d


def big_file(t):
    c = t.client
    size = 1 << 30
    t0 = time.time()
    d = upload_big(c, size)
    log("uploaded 1 GiB in %.1f s" % (time.time() - t0))
    root = put_dir(c, directory(files=[file_node("big.bin", d)]))
    r, out, err = run(c, root, "sha256sum big.bin", timeout=600)
    check_exit(r, out, err)
    need(out.decode().split()[0] == d.hash, "sha256sum %r, want %s", out, d.hash)
    s = stats_of(r)
    want = 0 if t.passthrough else size
    need(s["files_opened"] == 1 and s["bytes_read"] == want, "stats %s", s)
    t.big = (d, root)


def kernel_has_passthrough():
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return (major, minor) >= (6, 9)


def initial_userns_root():
    """Root of the initial user namespace: what backing files need."""
    with open("/proc/self/uid_map") as f:
        return os.geteuid() == 0 and f.read().split()[:3] == ["0", "0", "4294967295"]


MMAP_SHA = ("python3 -c 'import hashlib, mmap; f = open(\"f\", \"rb\"); "
            "print(hashlib.sha256(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)).hexdigest())'")


def read_and_mmap(c, root, d, size):
    """sha256sum and an mmap'd sha256 of f inside an action; the stats."""
    r, out, err = run(c, root, "sha256sum f; " + MMAP_SHA)
    check_exit(r, out, err)
    lines = out.decode().split("\n")
    need(lines[0].split()[0] == d.hash, "read: %r, want %s", out, d.hash)
    need(lines[1] == d.hash, "mmap: %r, want %s", out, d.hash)
    s = stats_of(r)
    need(s["files_opened"] == 2, "files_opened %s, want 2", s)
    return s


def passthrough(t):
    c = t.client
    size = (3 << 20) + 17
    data = os.urandom(size)
    d = c.upload_blob(data)
    root = put_dir(c, directory(files=[file_node("f", d)]))
    if initial_userns_root() and kernel_has_passthrough():
        need(t.passthrough, "passthrough off as root on Linux %s: %s", os.uname().release,
             t.mode_line)
    s = read_and_mmap(c, root, d, size)
    if t.passthrough:
        need(s["bytes_read"] == 0, "passthrough on but casboxd served reads: %s", s)
    else:
        need(s["bytes_read"] >= size, "read path: bytes_read %s, want >= %d", s, size)
    log("passthrough %s: %s" % ("on" if t.passthrough else "off", t.mode_line))
    # The read path, asked for: same bytes, served (and counted) by casboxd.
    off_dir = os.path.join(t.tmp, "off")
    os.makedirs(off_dir, exist_ok=True)
    off = T(off_dir, t.extra + ["--set", "execution.fuse_passthrough=off"],
            log_name="casboxd-fuse-passthrough-off.log")
    try:
        off.start()
        need(not off.passthrough and "execution.fuse_passthrough = off" in off.mode_line,
             "fuse_passthrough = off: %s", off.mode_line)
        c2 = off.client
        c2.upload_blob(data)
        root2 = put_dir(c2, directory(files=[file_node("f", d)]))
        s = read_and_mmap(c2, root2, d, size)
        need(s["bytes_read"] >= size, "read path: bytes_read %s, want >= %d", s, size)
    finally:
        if off.daemon is not None and off.daemon.alive():
            off.stop()


def sigkill(t):
    c = t.client
    d = c.upload_blob(os.urandom(1 << 20))
    root = put_dir(c, directory(files=[file_node("f", d)]))
    done = []

    def reader():
        try:
            run(c, root, "while :; do cat f > /dev/null; done", timeout=60)
        except Exception as e:  # noqa: BLE001 - the daemon dies under it
            done.append(e)
    th = threading.Thread(target=reader)
    th.start()
    time.sleep(2)
    t.daemon.kill()
    th.join(60)
    need(not th.is_alive(), "the Execute call did not end after SIGKILL")
    mnt = os.path.join(t.state, "cas", "fuse")
    stale = [m for m in open("/proc/mounts") if m.split()[1] == mnt]
    log("after SIGKILL: %d mount(s) left on %s" % (len(stale), mnt))
    t.restart()
    c = t.client
    need(len([m for m in open("/proc/mounts") if m.split()[1] == mnt]) == 1,
         "want exactly one mount on %s after the restart", mnt)
    r, out, err = run(c, root, "cat f | wc -c")
    check_exit(r, out, err)
    need(out == b"1048576\n", "after restart: %r", out)


CHECKS = [("big_tree", big_tree), ("passthrough", passthrough), ("attributes", attributes),
          ("no_writes", no_writes),
          ("concurrent", concurrent), ("big_file", big_file), ("sigkill", sigkill)]


class T:
    def __init__(self, tmp, extra, log_name="casboxd-fuse.log"):
        self.tmp = tmp
        self.state = os.path.join(tmp, "state")
        self.extra = extra
        log_dir = os.environ.get("E2E_LOG_DIR", tmp)
        os.makedirs(log_dir, exist_ok=True)
        self.log_path = os.path.join(log_dir, log_name)
        self.daemon = None
        self.client = None
        self.passthrough = False
        self.mode_line = ""

    def start(self):
        self.daemon = rc.Casboxd(self.state, log_path=self.log_path, extra_args=self.extra)
        self.daemon.start()
        self.client = rc.Client(self.daemon.target, timeout=120)
        # casfs logs once, at mount, whether FUSE passthrough is on.
        with open(self.log_path, errors="replace") as f:
            lines = [ln for ln in f if "FUSE passthrough" in ln]
        need(lines, "no 'FUSE passthrough' line in %s", self.log_path)
        self.mode_line = lines[-1].strip()
        self.passthrough = "FUSE passthrough on" in self.mode_line

    def restart(self):
        if self.daemon is not None and self.daemon.alive():
            self.daemon.stop()
        self.start()

    def stop(self):
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None


URING_PARAM = "/sys/module/fuse/parameters/enable_uring"


def uring_param():
    """The fuse module's enable_uring (True/False), None without it."""
    try:
        with open(URING_PARAM) as f:
            return f.read().strip() in ("Y", "1")
    except OSError:
        return None


def uring_param_set(on):
    with open(URING_PARAM, "w") as f:
        f.write("1" if on else "0")


def check_uring_mode(t, want_on):
    with open(t.log_path, errors="replace") as f:
        lines = [ln.strip() for ln in f if "FUSE over io_uring" in ln]
    need(lines, "no 'FUSE over io_uring' line in %s", t.log_path)
    on = "FUSE over io_uring on" in lines[-1]
    need(on == want_on, "FUSE over io_uring should be %s: %s", "on" if want_on else "off",
         lines[-1])
    log("io_uring mode: %s" % lines[-1])


def fuse_usable():
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="")
    ap.add_argument("--skip-big", action="store_true", help="leave out the 1 GiB check")
    ap.add_argument("--uring", choices=("auto", "on"), default="auto",
                    help="on: serve FUSE over io_uring (enable_uring set for the run)")
    args = ap.parse_args()
    if not fuse_usable():
        log("SKIP: /dev/fuse cannot be opened (see docs/fuse.md)")
        return SKIP
    param = uring_param()
    if args.uring == "on" and (param is None or os.geteuid() != 0):
        log("SKIP: FUSE over io_uring needs root and a kernel with %s (Linux >= 6.14, "
            "CONFIG_FUSE_IO_URING)" % URING_PARAM)
        return SKIP
    restore_param = args.uring == "on" and not param
    if restore_param:
        uring_param_set(True)
    tmp = tempfile.mkdtemp(prefix="casbox-e2e-fuse.")
    t = T(tmp, ["--set", "execution.staging=fuse", "--set", "execution.slots=4",
                "--set", "execution.fuse_uring=%s" % args.uring],
          log_name="casboxd-fuse%s.log" % ("-uring" if args.uring == "on" else ""))
    failed = 0
    try:
        t.start()
        check_uring_mode(t, args.uring == "on" or bool(param))
        for name, fn in CHECKS:
            if args.k not in name or (args.skip_big and name == "big_file"):
                continue
            t0 = time.time()
            try:
                fn(t)
                log("ok   %s (%.1f s)" % (name, time.time() - t0))
            except Exception:  # noqa: BLE001
                failed += 1
                log("FAIL %s:\n%s" % (name, traceback.format_exc()))
                if t.daemon is None or not t.daemon.alive():
                    t.restart()
        mnt = os.path.join(t.state, "cas", "fuse")
        t.stop()
        left = [m for m in open("/proc/mounts") if m.split()[1] == mnt]
        if left:
            failed += 1
            log("FAIL: %s still mounted after a clean stop" % mnt)
    except Exception:  # noqa: BLE001
        failed += 1
        log("FAIL:\n%s\n%s" % (traceback.format_exc(), t.daemon.log_tail() if t.daemon else ""))
        if t.daemon is not None:
            t.daemon.kill()
    finally:
        subprocess.run(["umount", "-l", os.path.join(t.state, "cas", "fuse")],
                       stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        if restore_param:
            uring_param_set(False)
    log("PASS" if not failed else "%d check(s) failed (log %s)" % (failed, t.log_path))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
