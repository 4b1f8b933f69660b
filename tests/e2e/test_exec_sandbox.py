#!/usr/bin/python3
"""End-to-end: casboxd's Execution service and sandbox, driven over real gRPC
as Bazel drives it.

Each check uploads an input root (Directory/FileNode messages, canonical
order), a Command and an Action, calls Execute and reads the Operation
stream, then asserts on what came back: stages, ExecuteResponse.status and
result, outputs and stdout/stderr read back through ByteStream, the action
cache, and what the command could and could not do inside the sandbox
(network, ptrace, mount, host paths, the CAS under the overlay, pids,
memory and output limits), operations (sharing, WaitExecution, the queue)
and shutdown with an action running.  Daemons, each with its own state dir
and port: `main` (defaults), `limits` (execution.pids_max=128,
memory_bytes=256M), `outlim` (max_output_bytes=1M, max_output_files=5,
stdio_bytes=64K), `queue` (slots=1, queue_length=1) and `term` (SIGTERM'd
while an action runs, then restarted).  After the checks every daemon must
still serve and exit 0 on SIGTERM.  As root the limits must be cgroup
limits (reported as such); otherwise rlimits are accepted.

    test_exec_sandbox.py                start build/bin/casboxd (or $CASBOXD)
    test_exec_sandbox.py -k timeout     only checks whose name contains it
    CASBOXD_ARGS="--set execution.staging=fuse" test_exec_sandbox.py
                                        every daemon with extra arguments

Exit status: 0 all passed, 1 something failed.
"""

import hashlib
import os
import stat
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import exec_helpers as eh  # noqa: E402
import reapi_client as rc  # noqa: E402
from exec_helpers import BASH, File, Symlink, need  # noqa: E402
from reapi_client import re_pb2  # noqa: E402

NOT_FOUND = grpc.StatusCode.NOT_FOUND
C_OK = 0
STAGE_ORDER = {"UNKNOWN": 0, "CACHE_CHECK": 1, "QUEUED": 2, "EXECUTING": 3, "COMPLETED": 4}
IS_ROOT = os.geteuid() == 0

check = eh.Checks()


class Ctx:
    def __init__(self, ds):
        self.ds = ds
        self.last_completed = None  # (operation name, ExecuteResponse) for WaitExecution

    def main(self):
        return self.ds.get("main")

    def limits(self):
        return self.ds.get("limits", ["--set", "execution.pids_max=128",
                                      "--set", "execution.memory_bytes=256M"])

    def outlim(self):
        return self.ds.get("outlim", ["--set", "execution.max_output_bytes=1M",
                                      "--set", "execution.max_output_files=5",
                                      "--set", "execution.stdio_bytes=64K"])

    def queue(self):
        return self.ds.get("queue", ["--set", "execution.slots=1",
                                     "--set", "execution.queue_length=1"])


def text(c, d):
    return eh.read_blob(c, d).decode(errors="replace")


def check_stream(ops, ad, what="Execute"):
    """The Operation stream of one execution: one name, metadata with the
    action digest on every message, stages in order, only the last done."""
    need(ops, "%s: no Operation received", what)
    names = {o.name for o in ops}
    need(len(names) == 1 and "" not in names, "%s: operation names %s, want one non-empty name",
         what, sorted(names))
    stages = []
    for i, o in enumerate(ops):
        need(o.HasField("metadata"), "%s: Operation %d has no metadata", what, i)
        need(o.metadata.type_url.endswith("build.bazel.remote.execution.v2.ExecuteOperationMetadata"),
             "%s: metadata type %s", what, o.metadata.type_url)
        md = rc.Client.execute_metadata(o)
        need(rc.dkey(md.action_digest) == rc.dkey(ad),
             "%s: metadata.action_digest %s, want %s", what, rc.dstr(md.action_digest), rc.dstr(ad))
        stages.append(eh.stage(o))
        need(o.done == (i == len(ops) - 1), "%s: Operation %d (%s) done=%s", what, i, stages[-1],
             o.done)
    need(stages[-1] == "COMPLETED", "%s: last stage %s, want COMPLETED", what, stages[-1])
    order = [STAGE_ORDER.get(s, -1) for s in stages]
    need(order == sorted(order), "%s: stages out of order: %s", what, stages)
    return stages


def run(c, args, want_exit=0, **kw):
    """Upload and execute; checks the stream, an OK status and the exit code."""
    ad = eh.upload_action(c, args, **kw)
    ops, resp = eh.execute(c, ad)
    check_stream(ops, ad)
    need(resp.HasField("result"), "ExecuteResponse.result is not set")
    if resp.status.code != C_OK or (want_exit is not None and resp.result.exit_code != want_exit):
        raise eh.Fail("%r: status %s %r, exit %d (want OK, exit %s); stdout %r stderr %r"
                      % (args[-1][:200], rc.code_name(resp.status.code), resp.status.message,
                         resp.result.exit_code, want_exit,
                         text(c, resp.result.stdout_digest)[:400],
                         text(c, resp.result.stderr_digest)[-600:]))
    return ad, ops, resp


def sh(c, script, **kw):
    return run(c, [BASH, "-c", script], **kw)


def not_cached(c, ad, why):
    try:
        ar = c.get_action_result(ad)
    except grpc.RpcError as e:
        code, msg, _ = rc.rpc_status(e)
        need(code == NOT_FOUND, "GetActionResult of %s (%s): %s %r, want NOT_FOUND",
             rc.dstr(ad), why, rc.code_name(code), msg)
        return
    raise eh.Fail("%s was cached (GetActionResult found exit code %d)" % (why, ar.exit_code))


def same(a, b):
    """Messages equal byte for byte (no comparison of Any payloads of unknown
    types, which makes python-protobuf log noise)."""
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def files_by_path(result):
    return {f.path: f for f in result.output_files}


# -- results, cache, stdout/stderr ---------------------------------------------------

@check("exit 3 / SIGSEGV: exit_code 3 / 139, status OK, result set, stages in order, not cached")
def _(ctx):
    _d, c = ctx.main()
    ad, ops, resp = sh(c, "echo out; echo err >&2; exit 3", want_exit=3)
    need(not resp.cached_result, "cached_result is true for a fresh execution")
    need(text(c, resp.result.stdout_digest) == "out\n", "stdout %r",
         text(c, resp.result.stdout_digest))
    need(text(c, resp.result.stderr_digest) == "err\n", "stderr %r",
         text(c, resp.result.stderr_digest))
    not_cached(c, ad, "an action that exited 3")
    ad, _ops, resp = sh(c, "kill -SEGV $$", want_exit=139)
    need(resp.status.code == C_OK, "killed by SIGSEGV: status %s", rc.code_name(resp.status.code))
    not_cached(c, ad, "an action killed by SIGSEGV")


@check("exit 0: cached (GetActionResult equal), re-Execute gives cached_result=true")
def _(ctx):
    _d, c = ctx.main()
    ad, ops, resp = sh(c, "echo hello > out.txt; echo line", output_paths=["out.txt"])
    need(not resp.cached_result, "first Execute says cached_result")
    ar = c.get_action_result(ad)
    need(ar.exit_code == 0 and files_by_path(ar).keys() == {"out.txt"},
         "GetActionResult: exit %d, outputs %s", ar.exit_code, list(files_by_path(ar)))
    need(same(ar, resp.result), "GetActionResult differs from the executed result:\n%s\nvs\n%s",
         ar, resp.result)
    ops2 = c.execute(ad, skip_cache_lookup=False)
    need(ops2 and ops2[-1].done, "second Execute: no done Operation")
    r2 = c.execute_response(ops2[-1])
    need(r2 is not None and r2.cached_result, "second Execute without skip_cache_lookup: "
         "cached_result is %s, want true", r2 and r2.cached_result)
    need(r2.status.code == C_OK, "cache hit status %s", rc.code_name(r2.status.code))
    need(r2.result.output_files == resp.result.output_files and
         r2.result.stdout_digest == resp.result.stdout_digest,
         "cache hit result differs: %s vs %s", r2.result, resp.result)
    need(eh.stage(ops2[-1]) == "COMPLETED", "cache hit stage %s", eh.stage(ops2[-1]))
    # do_not_cache: same success, not cached
    ad3, _o, _r = sh(c, "echo hi", do_not_cache=True)
    not_cached(c, ad3, "an action with do_not_cache")


@check("stdout/stderr in the CAS: 2.7 MB stdout and stderr read back via ByteStream, exact")
def _(ctx):
    _d, c = ctx.main()
    _ad, _ops, resp = sh(c, "seq 1 400000; seq 1 2000 >&2; printf 'no newline' >&2")
    want_out = "".join("%d\n" % i for i in range(1, 400001)).encode()
    want_err = ("".join("%d\n" % i for i in range(1, 2001)) + "no newline").encode()
    r = resp.result
    need(rc.dkey(r.stdout_digest) == rc.dkey(rc.digest_of(want_out)),
         "stdout_digest %s, want %s", rc.dstr(r.stdout_digest), rc.dstr(rc.digest_of(want_out)))
    need(rc.dkey(r.stderr_digest) == rc.dkey(rc.digest_of(want_err)),
         "stderr_digest %s, want %s", rc.dstr(r.stderr_digest), rc.dstr(rc.digest_of(want_err)))
    need(eh.read_blob(c, r.stdout_digest) == want_out, "stdout read via ByteStream differs")
    need(eh.read_blob(c, r.stderr_digest) == want_err, "stderr read via ByteStream differs")
    need(c.find_missing([r.stdout_digest, r.stderr_digest]) == [],
         "FindMissingBlobs: stdout/stderr blobs missing")
    _ad, _ops, resp = run(c, ["/bin/true"])
    for name in ("stdout_digest", "stderr_digest"):
        d = getattr(resp.result, name)
        need(resp.result.HasField(name) and d.hash == rc.EMPTY_SHA256 and d.size_bytes == 0,
             "no output: %s is %s, want the empty blob's digest", name, rc.dstr(d))


# -- outputs ----------------------------------------------------------------------------

def fetch_tree(c, d):
    t = re_pb2.Tree()
    t.ParseFromString(eh.read_blob(c, d))
    return t


def dir_digest(m):
    return rc.digest_of(m.SerializeToString(deterministic=True))


@check("output_paths: file, executable file, directory (Tree, children deduplicated), symlink")
def _(ctx):
    _d, c = ctx.main()
    script = r"""
printf 'plain\n' > file.txt
printf '#!/bin/sh\necho hi\n' > tool; chmod 755 tool
mkdir -p tree/a tree/b tree/empty
printf same > tree/a/f; printf same > tree/b/f; printf top > tree/top
printf '#!/bin/sh\n' > tree/run.sh; chmod 755 tree/run.sh; ln -s a/f tree/lnk
ln -s file.txt link
printf deep > deep/er/out.txt
"""
    _ad, _ops, resp = sh(c, script, output_paths=["file.txt", "tool", "tree", "link",
                                                  "deep/er/out.txt"])
    r = resp.result
    files = files_by_path(r)
    need(set(files) == {"file.txt", "tool", "deep/er/out.txt"}, "output_files %s", sorted(files))
    need(not files["file.txt"].is_executable, "file.txt is_executable is true")
    need(files["tool"].is_executable, "tool (mode 755) is_executable is false")
    need(eh.read_blob(c, files["file.txt"].digest) == b"plain\n", "file.txt content differs")
    need(eh.read_blob(c, files["tool"].digest) == b"#!/bin/sh\necho hi\n", "tool content differs")
    need(eh.read_blob(c, files["deep/er/out.txt"].digest) == b"deep", "deep/er/out.txt differs")
    syms = {s.path: s.target for s in r.output_symlinks}
    need(syms == {"link": "file.txt"}, "output_symlinks %s, want link -> file.txt", syms)
    dirs = {d.path: d for d in r.output_directories}
    need(set(dirs) == {"tree"}, "output_directories %s", sorted(dirs))
    t = fetch_tree(c, dirs["tree"].tree_digest)
    root = t.root
    need([f.name for f in root.files] == ["run.sh", "top"], "Tree root files %s",
         [f.name for f in root.files])
    need([(f.name, f.is_executable) for f in root.files] == [("run.sh", True), ("top", False)],
         "Tree root executable bits %s", [(f.name, f.is_executable) for f in root.files])
    need([d.name for d in root.directories] == ["a", "b", "empty"], "Tree root directories %s",
         [d.name for d in root.directories])
    need([(s.name, s.target) for s in root.symlinks] == [("lnk", "a/f")], "Tree root symlinks %s",
         [(s.name, s.target) for s in root.symlinks])
    sub = {d.name: d.digest for d in root.directories}
    need(rc.dkey(sub["a"]) == rc.dkey(sub["b"]), "identical dirs a and b have different digests")
    kids = [rc.dkey(dir_digest(k)) for k in t.children]
    need(len(kids) == len(set(kids)), "Tree.children has duplicates: %s", kids)
    need(set(kids) == {rc.dkey(sub["a"]), rc.dkey(sub["empty"])},
         "Tree.children %s, want exactly the digests of a(=b) and empty", kids)
    top = [f for f in root.files if f.name == "top"][0]
    need(eh.read_blob(c, top.digest) == b"top", "tree/top content differs")
    achild = [k for k in t.children if rc.dkey(dir_digest(k)) == rc.dkey(sub["a"])][0]
    need([f.name for f in achild.files] == ["f"] and
         eh.read_blob(c, achild.files[0].digest) == b"same", "tree/a contents: %s", achild)


@check("output_files / output_directories (v2.0 API): files, symlinks, dirs; missing ones absent")
def _(ctx):
    _d, c = ctx.main()
    script = r"""
printf f > f.txt; printf '#!/bin/sh\n' > exe; chmod 755 exe; ln -s f.txt flink
mkdir -p d/sub; printf x > d/sub/x; ln -s d dlink
"""
    _ad, _ops, resp = sh(c, script, output_files=["f.txt", "exe", "flink", "missing.txt"],
                         output_directories=["d", "dlink", "missingdir"])
    r = resp.result
    files = files_by_path(r)
    need(set(files) == {"f.txt", "exe"}, "output_files %s, want f.txt and exe", sorted(files))
    need(files["exe"].is_executable and not files["f.txt"].is_executable,
         "is_executable: exe %s, f.txt %s", files["exe"].is_executable,
         files["f.txt"].is_executable)
    fs = {s.path: s.target for s in r.output_file_symlinks}
    ds = {s.path: s.target for s in r.output_directory_symlinks}
    need(fs == {"flink": "f.txt"}, "output_file_symlinks %s", fs)
    need(ds == {"dlink": "d"}, "output_directory_symlinks %s", ds)
    dirs = {d.path: d for d in r.output_directories}
    need(set(dirs) == {"d"}, "output_directories %s, want only d", sorted(dirs))
    t = fetch_tree(c, dirs["d"].tree_digest)
    need([x.name for x in t.root.directories] == ["sub"] and len(t.children) == 1 and
         [f.name for f in t.children[0].files] == ["x"], "Tree of d: %s", t)


@check("declared outputs not produced are absent (output_paths)")
def _(ctx):
    _d, c = ctx.main()
    _ad, _ops, resp = sh(c, "true", output_paths=["nothere.txt", "nodir", "a/b/c"])
    r = resp.result
    need(not r.output_files and not r.output_directories and not r.output_symlinks and
         not r.output_file_symlinks and not r.output_directory_symlinks,
         "outputs reported for nothing produced: %s", r)


@check("working_directory honoured: cwd, relative inputs, outputs relative to it")
def _(ctx):
    _d, c = ctx.main()
    root = eh.upload_tree(c, {"top.txt": b"top\n", "wd": {"sub": {"data.txt": b"in wd\n"}}})
    _ad, _ops, resp = sh(c, "pwd; cat data.txt ../../top.txt; echo o > out.txt; mkdir od; "
                         "echo y > od/y; echo p > par/p.txt", root=root,
                         working_directory="wd/sub",
                         output_paths=["out.txt", "od", "par/p.txt"])
    out = text(c, resp.result.stdout_digest).splitlines()
    need(out and out[0].endswith("/wd/sub"), "pwd printed %r, want .../wd/sub", out[:1])
    need(out[1:] == ["in wd", "top"], "inputs read from the working dir: %r", out[1:])
    files = files_by_path(resp.result)
    need(set(files) == {"out.txt", "par/p.txt"}, "output_files %s (paths are relative to the "
         "working directory)", sorted(files))
    need([d.path for d in resp.result.output_directories] == ["od"], "output_directories %s",
         [d.path for d in resp.result.output_directories])


@check("environment is exactly the Command's (env run directly)")
def _(ctx):
    _d, c = ctx.main()
    env = {"PATH": "/usr/bin:/bin", "FOO": "bar baz", "EMPTY": "", "Z_LAST": "a=b=c",
           "HOME": "/nonexistent-home"}
    _ad, _ops, resp = run(c, ["/usr/bin/env"], env=env)
    got = text(c, resp.result.stdout_digest).splitlines()
    want = ["%s=%s" % kv for kv in env.items()]
    need(sorted(got) == sorted(want), "env printed %s, want exactly %s", sorted(got), sorted(want))
    _ad, _ops, resp = run(c, ["/usr/bin/env"], env={})
    need(text(c, resp.result.stdout_digest) == "", "empty environment: env printed %r",
         text(c, resp.result.stdout_digest))


@check("parents of declared outputs exist before the command runs, the outputs themselves not")
def _(ctx):
    _d, c = ctx.main()
    script = ("test -d a/b/c && test -d d/e && test ! -e a/b/c/out.txt && test ! -e d/e/outdir "
              "|| { ls -R >&2; exit 9; }; echo x > a/b/c/out.txt; mkdir d/e/outdir; "
              "echo y > d/e/outdir/f")
    _ad, _ops, resp = sh(c, script, output_paths=["a/b/c/out.txt", "d/e/outdir"])
    need(set(files_by_path(resp.result)) == {"a/b/c/out.txt"}, "output_files %s",
         sorted(files_by_path(resp.result)))
    need([d.path for d in resp.result.output_directories] == ["d/e/outdir"],
         "output_directories %s", [d.path for d in resp.result.output_directories])
    script = ("test -d g && test ! -e g/h && test -d k && test ! -e k/f.txt || exit 9; "
              "mkdir g/h; echo z > k/f.txt")
    sh(c, script, output_files=["k/f.txt"], output_directories=["g/h"])


@check("ExecutedActionMetadata: worker, timestamps queued <= worker_start <= ... <= worker_completed")
def _(ctx):
    _d, c = ctx.main()
    t_before = time.time()
    _ad, _ops, resp = sh(c, "sleep 0.3; echo x > o", output_paths=["o"])
    t_after = time.time()
    md = resp.result.execution_metadata
    need(md.worker != "", "ExecutedActionMetadata.worker is empty")
    names = ["queued_timestamp", "worker_start_timestamp", "input_fetch_start_timestamp",
             "input_fetch_completed_timestamp", "execution_start_timestamp",
             "execution_completed_timestamp", "output_upload_start_timestamp",
             "output_upload_completed_timestamp", "worker_completed_timestamp"]
    for n in names:
        need(md.HasField(n), "ExecutedActionMetadata.%s is not set", n)
    ts = [eh.ts_us(getattr(md, n)) for n in names]
    for i in range(1, len(ts)):
        need(ts[i - 1] <= ts[i], "%s (%d) > %s (%d)", names[i - 1], ts[i - 1], names[i], ts[i])
    need(t_before - 5 <= ts[0] / 1e6 and ts[-1] / 1e6 <= t_after + 5,
         "timestamps %.3f..%.3f outside the call's %.3f..%.3f", ts[0] / 1e6, ts[-1] / 1e6,
         t_before, t_after)
    ran = ts[5] - ts[4]
    need(ran >= 300000, "execution took %d us by the metadata, but the command slept 300 ms", ran)


@check("inputs staged as declared: exec bits, empty file/dir, symlinks, shared subtree, 8 MB file")
def _(ctx):
    _d, c = ctx.main()
    big = os.urandom(8 << 20)
    bd = c.upload_bytestream(big)
    shared = {"f": b"shared\n", "g": {"h": b"deep\n"}}
    tree = {"plain": b"plain\n", "tool": File(b"#!/bin/sh\necho ran tool\n", True),
            "empty": b"", "emptydir": {}, "link": Symlink("plain"), "dlink": Symlink("x/g"),
            "x": shared, "y": shared, "big.bin": b"placeholder"}
    blobs = {}
    root = eh.directory_message(c, tree, blobs)
    for f in root.files:
        if f.name == "big.bin":
            f.digest.CopyFrom(bd)
    eh.upload_blobs(c, [b for k, b in blobs.items() if k != rc.dkey(rc.digest_of(b"placeholder"))])
    rd = c.upload_message(root)
    script = ("test -x tool && ./tool; test -x plain && echo PLAIN-EXECUTABLE; test -f empty && "
              "test ! -s empty && echo empty-ok; test -d emptydir && test -z \"$(ls -A emptydir)\" "
              "&& echo emptydir-ok; echo link=$(readlink link) dlink=$(readlink dlink); cat link "
              "x/f y/f dlink/h y/g/h; sha256sum big.bin | cut -c1-64; stat -c %s big.bin")
    _ad, _ops, resp = sh(c, script, root=rd)
    got = text(c, resp.result.stdout_digest).splitlines()
    want = ["ran tool", "empty-ok", "emptydir-ok", "link=plain dlink=x/g", "plain", "shared",
            "shared", "deep", "deep", bd.hash, str(len(big))]
    need(got == want, "the staged inputs look wrong:\n        got  %s\n        want %s", got, want)


@check("large output file (32 MiB) stored intact")
def _(ctx):
    _d, c = ctx.main()
    _ad, _ops, resp = sh(c, "head -c 32M /dev/urandom > big; sha256sum big | cut -c1-64",
                         output_paths=["big"])
    f = files_by_path(resp.result).get("big")
    need(f is not None, "output big missing: %s", resp.result)
    h = text(c, resp.result.stdout_digest).strip()
    need(f.digest.hash == h and f.digest.size_bytes == 32 << 20, "output digest %s, the "
         "action's sha256sum %s (32 MiB)", rc.dstr(f.digest), h)
    data = eh.read_blob(c, f.digest)
    need(hashlib.sha256(data).hexdigest() == h, "ByteStream read of %s does not hash to it",
         rc.dstr(f.digest))


@check("12 concurrent distinct actions all complete with their own results")
def _(ctx):
    _d, c = ctx.main()
    ads = [eh.upload_action(c, [BASH, "-c", "sleep 0.%d; echo action-%d; echo %d > o" % (i % 4, i, i)],
                            output_paths=["o"]) for i in range(12)]
    streams = [eh.Stream(c, ad) for ad in ads]
    for i, (ad, st) in enumerate(zip(ads, streams)):
        ops, resp = st.final()
        check_stream(ops, ad, "action %d" % i)
        need(resp.status.code == C_OK and resp.result.exit_code == 0,
             "action %d: %s exit %d", i, rc.code_name(resp.status.code), resp.result.exit_code)
        need(text(c, resp.result.stdout_digest) == "action-%d\n" % i, "action %d stdout %r", i,
             text(c, resp.result.stdout_digest))
        o = files_by_path(resp.result).get("o")
        need(o is not None and eh.read_blob(c, o.digest) == b"%d\n" % i, "action %d output o "
             "wrong", i)
    names = {st.ops[-1][1].name for st in streams}
    need(len(names) == 12, "12 distinct actions got %d operation names", len(names))


@check("output symlinks with absolute targets, dangling or not, come back as symlinks (cached)")
def _(ctx):
    _d, c = ctx.main()
    # symlink_absolute_path_strategy = ALLOWED: the targets are returned as they are.
    gone = "/nonexistent/casbox-%s" % os.urandom(4).hex()
    caps = c.get_capabilities()
    need(caps.cache_capabilities.symlink_absolute_path_strategy ==
         re_pb2.SymlinkAbsolutePathStrategy.ALLOWED,
         "Capabilities symlink_absolute_path_strategy %s, want ALLOWED",
         caps.cache_capabilities.symlink_absolute_path_strategy)
    ad, _ops, resp = sh(c, "ln -s /etc/passwd abs; ln -s %s dangling; mkdir d; "
                        "ln -s /usr/bin d/inner; ln -s %s d/gone" % (gone, gone),
                        output_paths=["abs", "d", "dangling"])
    r = resp.result
    syms = {x.path: x.target for x in r.output_symlinks}
    need(syms == {"abs": "/etc/passwd", "dangling": gone}, "output_symlinks %s", syms)
    need(not r.output_files, "an absolute symlink came back as a file: %s",
         [f.path for f in r.output_files])
    dirs = {x.path: x for x in r.output_directories}
    need(set(dirs) == {"d"}, "output_directories %s", sorted(dirs))
    t = fetch_tree(c, dirs["d"].tree_digest)
    inner = [(x.name, x.target) for x in t.root.symlinks]
    need(inner == [("gone", gone), ("inner", "/usr/bin")], "Tree of d: symlinks %s", inner)
    cached = c.get_action_result(ad)
    need({x.path: x.target for x in cached.output_symlinks} == syms,
         "the cached result's output_symlinks %s", list(cached.output_symlinks))
    # the v2.0 fields
    _ad, _ops, resp = sh(c, "ln -s /etc/passwd f; ln -s /usr dl",
                         output_files=["f"], output_directories=["dl"])
    r = resp.result
    fs = {x.path: x.target for x in r.output_file_symlinks}
    ds = {x.path: x.target for x in r.output_directory_symlinks}
    need(fs == {"f": "/etc/passwd"} and ds == {"dl": "/usr"},
         "output_file_symlinks %s, output_directory_symlinks %s", fs, ds)
    need(not r.output_files and not r.output_directories, "resolved instead of kept: %s", r)


@check("output that is a fifo -> FAILED_PRECONDITION naming it, stdio kept, not cached")
def _(ctx):
    _d, c = ctx.main()
    for script, out, mention in (("mkfifo p", ["p"], "'p'"),):
        ad = eh.upload_action(c, [BASH, "-c", "echo out; " + script], output_paths=out)
        ops, resp = eh.execute(c, ad)
        check_stream(ops, ad)
        need(resp.status.code == eh.code_value("FAILED_PRECONDITION"),
             "%r: status %s %r, want FAILED_PRECONDITION", script,
             rc.code_name(resp.status.code), resp.status.message)
        need(mention in resp.status.message, "%r: message %r does not name %s", script,
             resp.status.message, mention)
        need(resp.HasField("result"), "%r: ExecuteResponse.result not set", script)
        not_cached(c, ad, "an action with an invalid output")


@check("absolute (and climbing) input symlinks resolve inside the sandbox, never on the host")
def _(ctx):
    d, c = ctx.main()
    # A host directory beside the daemon's state dir: not visible in the sandbox
    # (see the state dir check), so a symlink to it must not reach it.
    mark = os.urandom(4).hex()
    host_dir = os.path.join(os.path.dirname(d.state_dir), "host-" + mark)
    os.mkdir(host_dir)
    secret = os.path.join(host_dir, "secret.txt")
    with open(secret, "w") as f:
        f.write("HOST SECRET\n")
    data = b"inside " + mark.encode() + b"\n"
    blob = os.path.join(d.state_dir, "cas", "blobs", rc.digest_of(data).hash[:2],
                        rc.digest_of(data).hash)
    root = eh.upload_tree(c, {
        "data.txt": data,
        "in_exec": Symlink("/casbox/exec/data.txt"),  # SANDBOX_EXEC_ROOT: the action's own
        "to_host": Symlink(secret),
        "to_hostdir": Symlink(host_dir),
        "to_blob": Symlink(blob),
        "climb": Symlink("../" * 12 + secret.lstrip("/")),
        "sub": {"up": Symlink("../data.txt")},
    })
    need(os.path.isfile(blob), "blob file %s not found (CAS layout blobs/<aa>/<hash>)", blob)
    script = r"""
cat in_exec sub/up
for l in to_host to_blob climb; do cat $l 2>/dev/null || echo "NO $l"; done
echo written > to_host 2>/dev/null; echo written >> to_blob 2>/dev/null
mkdir -p "$(readlink to_hostdir)" && echo new > to_hostdir/new
true
"""
    _ad, _ops, resp = sh(c, script, root=root)
    out = text(c, resp.result.stdout_digest)
    need(out == "%s%sNO to_host\nNO to_blob\nNO climb\n" % (data.decode(), data.decode()),
         "through absolute/climbing input symlinks the action read %r", out)
    # An output below an input symlink to the host: nothing made on the host
    # by staging, nothing returned from the host by collection.
    ad = eh.upload_action(c, [BASH, "-c", "mkdir -p \"$(readlink to_hostdir)\"; "
                              "echo out > to_hostdir/out"],
                          root=root, output_paths=["to_hostdir/out"])
    _ops, resp = eh.execute(c, ad)
    need(not resp.result.output_files, "an output through an input symlink to the host "
         "returned %s", [f.path for f in resp.result.output_files])
    with open(secret) as f:
        need(f.read() == "HOST SECRET\n", "the host file %s was written through a symlink",
             secret)
    need(sorted(os.listdir(host_dir)) == ["secret.txt"], "the host dir %s got %s", host_dir,
         sorted(os.listdir(host_dir)))
    need(eh.read_blob(c, rc.digest_of(data)) == data, "the CAS blob changed through to_blob")
    with open(blob, "rb") as f:
        need(f.read() == data, "blob file %s written through a symlink", blob)
    time.sleep(1)  # the scratch dirs' removal (off the answer's path) must not follow them
    need(sorted(os.listdir(host_dir)) == ["secret.txt"] and os.path.isfile(blob),
         "cleaning up after the actions removed or changed %s or %s", host_dir, blob)


@check("output limits (max_output_bytes=1M, max_output_files=5): a failed action, not retriable")
def _(ctx):
    _d, c = ctx.outlim()
    for script, out, key in (("head -c 2M /dev/zero > big", ["big"], "max_output_bytes"),
                             ("mkdir d; for i in 1 2 3 4 5 6 7 8; do echo $i > d/$i; done",
                              ["d"], "max_output_files")):
        ad = eh.upload_action(c, [BASH, "-c", "echo out-line; echo err-line >&2; " + script],
                              output_paths=out)
        ops, resp = eh.execute(c, ad)
        check_stream(ops, ad)
        r = resp.result
        # action.h: the output limit is RESOURCE_EXHAUSTED from action_outputs_collect, which
        # "the caller turns into a failed action": Bazel retries RESOURCE_EXHAUSTED
        # (RemoteRetrier), so as an ExecuteResponse.status it would re-run the action.
        need(resp.status.code != eh.code_value("RESOURCE_EXHAUSTED"),
             "%s exceeded: ExecuteResponse.status RESOURCE_EXHAUSTED %r, which Bazel retries; "
             "want a failed action (non-zero exit, the limit named in stderr)", key,
             resp.status.message)
        need(r.exit_code != 0, "%s exceeded: exit_code 0", key)
        err = text(c, r.stderr_digest)
        need(key in err and "err-line" in err, "%s exceeded: stderr %r does not keep the "
             "command's stderr and name the limit", key, err[-300:])
        need(text(c, r.stdout_digest) == "out-line\n", "%s exceeded: stdout %r lost", key,
             text(c, r.stdout_digest))
        not_cached(c, ad, "an action over %s" % key)


@check("stdio cap (stdio_bytes=64K): stdout truncated to exactly 64 KiB, noted in stderr")
def _(ctx):
    _d, c = ctx.outlim()
    _ad, _ops, resp = sh(c, "seq 1 100000")
    want = "".join("%d\n" % i for i in range(1, 100001)).encode()[:65536]
    out = eh.read_blob(c, resp.result.stdout_digest)
    need(out == want, "stdout is %d bytes (want the first 65536 of seq's output)", len(out))
    err = text(c, resp.result.stderr_digest)
    need("stdio_bytes" in err, "stderr %r does not say the output was truncated", err[-200:])


# -- timeout --------------------------------------------------------------------------

@check("timeout: Action.timeout 1 s, sleep 30 -> DEADLINE_EXCEEDED quickly, partial stdout kept, "
       "no process left")
def _(ctx):
    _d, c = ctx.main()
    mark = "31.%d" % (os.getpid() % 100000)
    ad = eh.upload_action(c, [BASH, "-c", "(trap '' TERM HUP; setsid sleep %s &); echo partial; "
                              "echo partial-err >&2; sleep 30; echo never" % mark], timeout=1)
    t0 = time.time()
    ops, resp = eh.execute(c, ad)
    took = time.time() - t0
    check_stream(ops, ad)
    need(resp.status.code == eh.code_value("DEADLINE_EXCEEDED"),
         "status %s %r, want DEADLINE_EXCEEDED", rc.code_name(resp.status.code),
         resp.status.message)
    need(took < 10, "the 1 s timeout took %.1f s to be reported", took)
    need(resp.HasField("result"), "ExecuteResponse.result not set after a timeout")
    need(resp.result.exit_code != 0, "exit code 0 after a timeout")
    out = text(c, resp.result.stdout_digest)
    need(out == "partial\n", "stdout after the timeout %r, want 'partial\\n'", out)
    need("partial-err" in text(c, resp.result.stderr_digest), "stderr lost: %r",
         text(c, resp.result.stderr_digest))
    not_cached(c, ad, "a timed-out action")
    time.sleep(0.3)
    left = subprocess.run(["pgrep", "-f", "sleep %s" % mark], capture_output=True, text=True).stdout
    need(left.strip() == "", "a background 'sleep %s' (setsid, SIGTERM ignored) survived the "
         "timeout: pids %s", mark, left.split())


# -- the sandbox ------------------------------------------------------------------------

@check("sandbox: no network (connect to 1.1.1.1:53 fails, only lo in /proc/net/dev)")
def _(ctx):
    _d, c = ctx.main()
    _ad, _ops, resp = sh(c, "if exec 3<>/dev/tcp/1.1.1.1/53; then echo CONNECTED; "
                         "else echo REFUSED; fi; cat /proc/net/dev")
    out = text(c, resp.result.stdout_digest)
    need("CONNECTED" not in out and "REFUSED" in out, "TCP connect to 1.1.1.1:53: %r", out[:300])
    ifaces = sorted(line.split(":")[0].strip() for line in out.splitlines()[3:] if ":" in line)
    need(ifaces == ["lo"], "network interfaces inside: %s, want only lo", ifaces)


PY_SYSCALLS = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def res(r):
    return "%d %s" % (r, os.strerror(ctypes.get_errno()) if r != 0 else "ok")
print("ptrace", res(libc.ptrace(0, 0, None, None)))
print("mount", res(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)))
print("unshare", res(libc.unshare(0x10000000)))
"""


@check("sandbox: ptrace, mount and unshare(CLONE_NEWUSER) fail with EPERM")
def _(ctx):
    _d, c = ctx.main()
    _ad, _ops, resp = run(c, ["/usr/bin/python3", "-c", PY_SYSCALLS])
    got = dict(line.split(" ", 1) for line in text(c, resp.result.stdout_digest).splitlines())
    for call in ("ptrace", "mount", "unshare"):
        need(got.get(call) == "-1 Operation not permitted", "%s inside the sandbox: %r, want "
             "-1 EPERM", call, got.get(call))
    _ad, _ops, resp = sh(c, "mount -t tmpfs none /tmp && echo MOUNTED; "
                         "mount -o remount,rw /usr && echo REMOUNTED; "
                         "touch /usr/casbox-probe && echo USR-WRITABLE; true")
    out = text(c, resp.result.stdout_digest)
    need(out == "", "mount/remount/write to /usr succeeded inside: %r", out)


@check("sandbox: daemon state dir, /root, /home, /etc/shadow, /var, /run, /sys not visible")
def _(ctx):
    d, c = ctx.main()
    state = d.state_dir
    paths = [state, os.path.join(state, "cas"), os.path.join(state, "cas", "blobs"),
             os.path.dirname(state), "/root", "/home", "/etc/shadow", "/etc/gshadow",
             "/etc/sudoers", "/var", "/run", "/sys/kernel", "/opt", "/boot", "/work",
             os.path.dirname(os.path.abspath(__file__))]
    script = "for p in %s; do test -e \"$p\" && echo \"VISIBLE $p\"; done; ls -A /; echo --; " \
             "ls -A /etc" % " ".join("'%s'" % p for p in paths)
    _ad, _ops, resp = sh(c, script)
    out = text(c, resp.result.stdout_digest)
    vis = [line for line in out.splitlines() if line.startswith("VISIBLE ")]
    need(not vis, "host paths visible inside the sandbox: %s", vis)
    top, _sep, etc = out.partition("--\n")
    allowed_top = {"bin", "casbox", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc",
                   "sbin", "tmp", "usr"}
    extra = set(top.split()) - allowed_top
    need(not extra, "unexpected entries in the sandbox's /: %s", sorted(extra))
    allowed_etc = {"alternatives", "ca-certificates", "ca-certificates.conf", "debian_version",
                   "gai.conf", "group", "host.conf", "hosts", "ld.so.cache", "ld.so.conf",
                   "ld.so.conf.d", "localtime", "mime.types", "mtab", "nsswitch.conf",
                   "os-release", "passwd", "pki", "protocols", "resolv.conf", "services", "ssl",
                   "timezone"}
    extra = set(etc.split()) - allowed_etc
    need(not extra, "/etc inside has entries outside docs/sandbox.md's allow-list: %s",
         sorted(extra))


@check("sandbox: writing/chmod of inputs through the overlay leaves the CAS blobs intact")
def _(ctx):
    d, c = ctx.main()
    orig = b"original contents " + os.urandom(8).hex().encode() + b"\n"
    tool = b"#!/bin/sh\necho tool " + os.urandom(8).hex().encode() + b"\n"
    root = eh.upload_tree(c, {"in.txt": orig, "tool.sh": File(tool, True),
                              "sub": {"deep.txt": orig}})
    od, td = rc.digest_of(orig), rc.digest_of(tool)
    blob = {}
    for dg in (od, td):
        p = os.path.join(d.state_dir, "cas", "blobs", dg.hash[:2], dg.hash)
        need(os.path.isfile(p), "blob file %s not found (CAS layout blobs/<aa>/<hash>)", p)
        st = os.stat(p)
        blob[dg.hash] = (p, stat.S_IMODE(st.st_mode), st.st_size)
    script = r"""
echo direct > in.txt 2>/dev/null      # inputs are 0444: may fail, must not reach the CAS
chmod 777 in.txt; chmod 666 sub/deep.txt; chmod 644 tool.sh
echo overwritten > in.txt; echo appended >> sub/deep.txt; : > tool.sh
ln in.txt hard && echo more >> hard
truncate -s 1 sub/deep.txt; chmod 000 sub/deep.txt; touch -d 2001-01-01 tool.sh
cat in.txt; stat -c %a in.txt
"""
    _ad, _ops, resp = sh(c, script, root=root)
    out = text(c, resp.result.stdout_digest)
    need(out == "overwritten\nmore\n777\n", "the action could not change its copy of the "
         "inputs (chmod, write, hardlink): %r", out)
    for dg, data in ((od, orig), (td, tool)):
        p, mode, size = blob[dg.hash]
        need(eh.read_blob(c, dg) == data, "ByteStream read of input blob %s changed",
             rc.dstr(dg))
        with open(p, "rb") as f:
            disk = f.read()
        need(hashlib.sha256(disk).hexdigest() == dg.hash and len(disk) == size,
             "blob file %s no longer hashes to its name (size %d, was %d)", p, len(disk), size)
        st = os.stat(p)
        need(stat.S_IMODE(st.st_mode) == mode, "blob file %s mode %o, was %o (chmod went through)",
             p, stat.S_IMODE(st.st_mode), mode)
    need(c.find_missing([od, td]) == [], "FindMissingBlobs reports the input blobs missing")
    # A later action sees the original inputs.
    _ad, _ops, resp = sh(c, "cat in.txt sub/deep.txt; stat -c %a tool.sh; ./tool.sh", root=root)
    out = eh.read_blob(c, resp.result.stdout_digest)
    need(out.startswith(orig + orig), "next action saw changed inputs: %r", out[:200])
    need(b"\n555\n" in out or b"\n755\n" in out, "tool.sh lost its mode: %r", out)
    need(out.endswith(tool[len("#!/bin/sh\necho "):]), "tool.sh did not run: %r", out)


@check("sandbox: concurrent actions do not see each other's /tmp or exec root")
def _(ctx):
    _d, c = ctx.main()
    mark = os.urandom(6).hex()
    a = eh.upload_action(c, [BASH, "-c", "echo s > /tmp/leak-%s; echo s > leak-%s; sleep 2"
                             % (mark, mark)])
    b = eh.upload_action(c, [BASH, "-c", "sleep 1; ls -d /tmp/leak-* leak-* /casbox/exec/../*/leak-* "
                             "2>/dev/null; true"])
    sa = eh.Stream(c, a)
    sa.wait_for(lambda ops: any(eh.stage(o) == "EXECUTING" for o in ops), 10)
    _ops, rb = eh.Stream(c, b).final()
    sa.final()
    out = text(c, rb.result.stdout_digest)
    need(out == "", "another action's files are visible: %r", out)


@check("sandbox: an output whose parent symlink leaves the exec root returns no host file")
def _(ctx):
    _d, c = ctx.main()
    ad = eh.upload_action(c, [BASH, "-c", "rm -rf esc rel; ln -s /etc esc; "
                              "ln -s ../../../../../../../../etc rel; true"],
                          output_paths=["esc/passwd", "rel/passwd"])
    _ops, resp = eh.execute(c, ad)
    code, msg = resp.status.code, resp.status.message
    if code == C_OK:
        got = files_by_path(resp.result)
        need(not got, "outputs through a symlink out of the exec root returned: %s "
             "(host files?)", sorted(got))
    else:
        need(code in (eh.code_value("INVALID_ARGUMENT"), eh.code_value("FAILED_PRECONDITION")),
             "status %s %r", rc.code_name(code), msg)
        need("esc/passwd" in msg or "rel/passwd" in msg, "message %r does not name the output",
             msg)
        need(not resp.result.output_files, "outputs returned with an error status: %s",
             resp.result.output_files)
    not_cached(c, ad, "an action whose outputs escape the exec root") if code != C_OK else None


# -- limits -----------------------------------------------------------------------------

@check("limits: fork bomb (pids_max=128) is contained; a concurrent action still runs")
def _(ctx):
    _d, c = ctx.limits()
    bomb = eh.upload_action(c, [BASH, "-c", "bomb(){ bomb | bomb & }; bomb; sleep 6; "
                                "echo bomb-done"], timeout=30)
    sb = eh.Stream(c, bomb)
    need(sb.wait_for(lambda ops: any(eh.stage(o) == "EXECUTING" for o in ops), 10),
         "the fork bomb never reached EXECUTING")
    time.sleep(1.5)  # let it hit the limit
    t0 = time.time()
    need(c.find_missing([rc.digest_of(b"probe")]) != [], "FindMissingBlobs during the bomb")
    _ad, _ops, resp = run(c, [BASH, "-c", "echo alive"])
    took = time.time() - t0
    need(text(c, resp.result.stdout_digest) == "alive\n", "concurrent action stdout %r",
         text(c, resp.result.stdout_digest))
    need(took < 15, "a trivial action took %.1f s during the fork bomb", took)
    ops, rb = sb.final()
    need(sb.ops[-1][0] < 40, "the fork bomb's operation took %.1f s", sb.ops[-1][0])
    err = text(c, rb.result.stderr_digest)
    if IS_ROOT:
        need("process limit of 128" in err and "pids_max" in err,
             "fork bomb stderr does not report the process limit (cgroup pids): %r", err[-300:])
    else:
        need("process limit" in err or "Resource temporarily unavailable" in err,
             "fork bomb stderr shows no sign of a process limit: %r", err[-300:])


@check("limits: memory hog (memory_bytes=256M) is killed and reported; daemon survives")
def _(ctx):
    _d, c = ctx.limits()
    ad = eh.upload_action(c, ["/usr/bin/python3", "-c",
                              "b = b'x' * (1 << 30); print('allocated', len(b))"], timeout=60)
    t0 = time.time()
    ops, resp = eh.execute(c, ad)
    took = time.time() - t0
    check_stream(ops, ad)
    need(resp.HasField("result"), "no result")
    r = resp.result
    out, err = text(c, r.stdout_digest), text(c, r.stderr_digest)
    need(r.exit_code != 0, "the 1 GiB allocation succeeded under a 256M limit (exit 0, %r)", out)
    need("allocated" not in out, "stdout %r", out)
    if IS_ROOT:
        need("memory limit" in err and "memory_bytes" in err,
             "stderr does not name the memory limit: %r", err[-300:])
    else:
        need("memory limit" in err or "MemoryError" in err, "stderr %r", err[-300:])
    need(took < 60, "the memory hog took %.1f s", took)
    not_cached(c, ad, "an action killed for memory")
    run(c, ["/bin/true"])


# -- operations -------------------------------------------------------------------------

@check("two identical Executes in flight share one operation")
def _(ctx):
    _d, c = ctx.main()
    ad = eh.upload_action(c, [BASH, "-c", "sleep 1.5; date +%s%N"])
    s1 = eh.Stream(c, ad)
    need(s1.wait_for(lambda ops: len(ops) > 0, 10), "first Execute sent no Operation")
    s2 = eh.Stream(c, ad)
    ops1, r1 = s1.final()
    ops2, r2 = s2.final()
    n1, n2 = {o.name for o in ops1}, {o.name for o in ops2}
    need(n1 == n2 and len(n1) == 1, "operation names %s and %s, want one shared name", n1, n2)
    need(r1.result.stdout_digest == r2.result.stdout_digest,
         "the two streams got different results (ran twice?)")
    ctx.last_completed = (ops1[-1].name, r1)


@check("WaitExecution after completion returns the final result")
def _(ctx):
    _d, c = ctx.main()
    if ctx.last_completed is None:
        ad, ops, resp = sh(c, "echo waited")
        ctx.last_completed = (ops[-1].name, resp)
    name, resp = ctx.last_completed
    ops = c.wait_execution(name, timeout=30)
    need(ops and ops[-1].done, "WaitExecution(%s): no done Operation", name)
    need(all(o.name == name for o in ops), "WaitExecution names %s", [o.name for o in ops])
    r = c.execute_response(ops[-1])
    need(r is not None and same(r.result, resp.result), "WaitExecution result differs: %s", r)


@check("WaitExecution of a running operation after the Execute stream is dropped")
def _(ctx):
    _d, c = ctx.main()
    ad = eh.upload_action(c, [BASH, "-c", "sleep 1.5; echo finished"])
    s = eh.Stream(c, ad)
    need(s.wait_for(lambda ops: len(ops) > 0, 10), "Execute sent no Operation")
    name = s.ops[0][1].name
    s.cancel()
    s.join(10)
    ops = c.wait_execution(name, timeout=60)
    need(ops and ops[-1].done, "WaitExecution(%s): no done Operation", name)
    r = c.execute_response(ops[-1])
    need(r is not None and r.status.code == C_OK and r.result.exit_code == 0,
         "WaitExecution result: %s", r)
    need(text(c, r.result.stdout_digest) == "finished\n", "stdout %r",
         text(c, r.result.stdout_digest))


@check("WaitExecution of an unknown operation -> NOT_FOUND naming it")
def _(ctx):
    _d, c = ctx.main()
    for name in ("operations/" + "0" * 32, "no-such-operation"):
        try:
            ops = c.wait_execution(name, timeout=10)
        except grpc.RpcError as e:
            code, msg, _ = rc.rpc_status(e)
            need(code == NOT_FOUND, "WaitExecution(%r): %s %r, want NOT_FOUND", name,
                 rc.code_name(code), msg)
            need(name in msg, "NOT_FOUND message %r does not name %r", msg, name)
            continue
        raise eh.Fail("WaitExecution(%r) answered %d operations, want NOT_FOUND" % (name, len(ops)))


@check("queue: slots=1, queue_length=1: QUEUED stage seen, 3rd concurrent action RESOURCE_EXHAUSTED")
def _(ctx):
    _d, c = ctx.queue()
    a = eh.upload_action(c, [BASH, "-c", "sleep 3; echo a"])
    b = eh.upload_action(c, [BASH, "-c", "echo b"])
    x = eh.upload_action(c, [BASH, "-c", "echo c"])
    sa = eh.Stream(c, a)
    need(sa.wait_for(lambda ops: any(eh.stage(o) == "EXECUTING" for o in ops), 15),
         "action A never reached EXECUTING: %s", sa.stages())
    sb = eh.Stream(c, b)
    need(sb.wait_for(lambda ops: len(ops) > 0, 10), "action B sent no Operation")
    need(sb.stages()[0] == "QUEUED", "B's first stage %s while the only slot is busy, want QUEUED",
         sb.stages()[0])
    code, msg, _st, where = eh.exec_status(c, x, timeout=20)
    need(code == eh.code_value("RESOURCE_EXHAUSTED"), "3rd action: %s %r (%s), want "
         "RESOURCE_EXHAUSTED", rc.code_name(code), msg, where)
    need("queue" in msg.lower(), "RESOURCE_EXHAUSTED message %r does not say which limit", msg)
    ops_a, ra = sa.final()
    ops_b, rb = sb.final()
    check_stream(ops_a, a, "A")
    stages = check_stream(ops_b, b, "B")
    need(stages[0] == "QUEUED" and "EXECUTING" in stages, "B's stages %s, want QUEUED, "
         "EXECUTING, COMPLETED", stages)
    need(text(c, ra.result.stdout_digest) == "a\n" and text(c, rb.result.stdout_digest) == "b\n",
         "A/B outputs wrong")
    qa = eh.ts_us(ra.result.execution_metadata.worker_completed_timestamp)
    sb_ = eh.ts_us(rb.result.execution_metadata.worker_start_timestamp)
    need(qa <= sb_, "B started (%d) before A completed (%d) with one slot", sb_, qa)
    _ops, rx = eh.execute(c, x)
    need(rx.status.code == C_OK and text(c, rx.result.stdout_digest) == "c\n",
         "the refused action runs once the queue has room: %s", rx.status)


@check("SIGTERM while an action runs: casboxd exits 0 within 30 s, stream UNAVAILABLE, nothing left")
def _(ctx):
    d, c = ctx.ds.get("term")
    mark = "45.%d" % (os.getpid() % 100000)
    ad = eh.upload_action(c, [BASH, "-c", "sleep %s; echo finished" % mark], timeout=120)
    s = eh.Stream(c, ad)
    need(s.wait_for(lambda ops: any(eh.stage(o) == "EXECUTING" for o in ops), 15),
         "the action never reached EXECUTING: %s", s.stages())
    t0 = time.time()
    stop_error = None
    try:
        d.stop(timeout=30)  # docs/testing.md: exit 0 within 30 s of SIGTERM
    except AssertionError as e:
        stop_error = str(e).splitlines()[0]
    took = time.time() - t0
    s.join(10)
    left = subprocess.run(["pgrep", "-f", "sleep %s" % mark], capture_output=True,
                          text=True).stdout.split()
    need(stop_error is None, "SIGTERM with an action running (sleep 45, timeout 120 s): %s "
         "(after %.1f s; exec_service_stop waits for running actions instead of cancelling "
         "them)", stop_error, took)
    need(s.error is not None and s.error.code() == grpc.StatusCode.UNAVAILABLE,
         "the Execute stream ended with %s, want UNAVAILABLE (Bazel retries it)",
         rc.rpc_status(s.error)[:2] if s.error else "a done Operation")
    need(not left, "the action's 'sleep %s' survived casboxd: pids %s", mark, left)
    _d2, c2 = ctx.ds.get("term", state=d.state_dir)  # restart on the same state dir
    not_cached(c2, ad, "an action cancelled by SIGTERM")


@check("scratch space: removed after every action, none left when casboxd stops right after a batch")
def _(ctx):
    d, c = ctx.ds.get("scratch")
    base = os.path.join(d.state_dir, "cas", "exec")

    def left():
        return sorted(os.listdir(base)) if os.path.isdir(base) else []

    def batch(n):
        threads = []
        for i in range(n):
            root = eh.upload_tree(c, {"in.txt": b"input %d\n" % i, "sub": {"x": b"x"}})
            ad = eh.upload_action(c, [BASH, "-c", "cat in.txt > out.txt; mkdir -p d; echo y > d/y"],
                                  root=root, output_paths=["out.txt", "d"])
            threads.append(eh.Stream(c, ad))
        for t in threads:
            _ops, resp = t.final()
            need(resp.status.code == 0 and resp.result.exit_code == 0, "action failed: %s", resp)

    batch(6)
    deadline = time.time() + 20
    while left() and time.time() < deadline:
        time.sleep(0.1)
    need(not left(), "scratch directories left 20 s after 6 actions finished: %s", left())
    batch(6)
    d.stop()  # at once: removals may still be pending; stopping drains them
    need(not left(), "scratch directories left after casboxd stopped: %s", left())


def make_ctx(ds):
    if not IS_ROOT:
        print("      (not root: limits are checked as rlimits)", flush=True)
    _d, c = ds.get("main")
    caps = c.get_capabilities()
    need(caps.execution_capabilities.exec_enabled,
         "casboxd does not advertise execution (GetCapabilities: exec_enabled is false)")
    return Ctx(ds)


if __name__ == "__main__":
    sys.exit(eh.main(__doc__, check, make_ctx, "casbox-e2e-exec-"))
