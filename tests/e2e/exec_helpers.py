"""Helpers of the Execution end-to-end tests (test_exec_*.py); not a test.

    import exec_helpers as eh
    c = rc.Client(target)
    root = eh.upload_tree(c, {"in.txt": b"data", "tool": eh.File(b"#!/bin/sh\n", True),
                              "sub": {"x": b"1"}, "link": eh.Symlink("in.txt")})
    ad = eh.upload_action(c, ["/bin/sh", "-c", "cat in.txt"], root=root, output_paths=["out"])
    ops, resp = eh.execute(c, ad, skip_cache_lookup=True)   # resp: the final ExecuteResponse
    code, msg, st = eh.exec_status(c, ad)    # status however the daemon reports it

Plus the check-list driver shared by the tests (the style of
test_cas_bad_input.py: one line per check, ok / SKIP / FAIL with the reason).
"""

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
import grpc  # noqa: E402

import reapi_client as rc  # noqa: E402
from reapi_client import re_pb2, error_details_pb2, operations_pb2  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402

ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
SH = "/bin/sh"
BASH = "/bin/bash"


# -- input trees ---------------------------------------------------------------

class File:
    def __init__(self, data, executable=False):
        self.data = data
        self.executable = executable


class Symlink:
    def __init__(self, target):
        self.target = target


def directory_message(c, spec, blobs):
    """A Directory for spec (name -> bytes | File | Symlink | dict), names
    sorted (canonical); every blob it needs is added to blobs."""
    d = re_pb2.Directory()
    for name in sorted(spec):
        v = spec[name]
        if isinstance(v, (bytes, bytearray)):
            v = File(bytes(v))
        if isinstance(v, File):
            dg = rc.digest_of(v.data)
            blobs[rc.dkey(dg)] = (dg, v.data)
            d.files.add(name=name, digest=dg, is_executable=v.executable)
        elif isinstance(v, Symlink):
            d.symlinks.add(name=name, target=v.target)
        elif isinstance(v, dict):
            sub = directory_message(c, v, blobs)
            data = sub.SerializeToString(deterministic=True)
            dg = rc.digest_of(data)
            blobs[rc.dkey(dg)] = (dg, data)
            d.directories.add(name=name, digest=dg)
        else:
            raise TypeError("bad tree entry %r: %r" % (name, v))
    return d


def upload_blobs(c, blobs):
    """blobs: iterable of (Digest, bytes); uploaded with BatchUpdateBlobs."""
    blobs = list(blobs)
    for i in range(0, len(blobs), 500):
        r = c.batch_update(blobs[i:i + 500])
        for x in r.responses:
            if x.status.code != 0:
                raise AssertionError("BatchUpdateBlobs of %s: %s %s" % (
                    rc.dstr(x.digest), rc.code_name(x.status.code), x.status.message))


def upload_tree(c, spec):
    """Uploads the tree and its blobs; returns the root Directory's digest."""
    blobs = {}
    root = directory_message(c, spec, blobs)
    data = root.SerializeToString(deterministic=True)
    dg = rc.digest_of(data)
    blobs[rc.dkey(dg)] = (dg, data)
    upload_blobs(c, blobs.values())
    return dg


def command(args, env=None, output_paths=(), output_files=(), output_directories=(),
            working_directory="", platform=None):
    cmd = re_pb2.Command(arguments=list(args), working_directory=working_directory)
    for k in sorted((ENV if env is None else env).items()):
        cmd.environment_variables.add(name=k[0], value=k[1])
    cmd.output_paths.extend(sorted(output_paths))
    cmd.output_files.extend(sorted(output_files))
    cmd.output_directories.extend(sorted(output_directories))
    if platform:
        for k, v in sorted(platform.items()):
            cmd.platform.properties.add(name=k, value=v)
    return cmd


def action(cmd_digest, root_digest, timeout=None, do_not_cache=False, salt=None, platform=None):
    a = re_pb2.Action(command_digest=cmd_digest, input_root_digest=root_digest,
                      do_not_cache=do_not_cache)
    if timeout is not None:
        a.timeout.CopyFrom(duration_pb2.Duration(seconds=int(timeout),
                                                 nanos=int((timeout % 1) * 1e9)))
    if salt is not None:
        a.salt = salt if isinstance(salt, bytes) else salt.encode()
    if platform:
        for k, v in sorted(platform.items()):
            a.platform.properties.add(name=k, value=v)
    return a


def upload_action(c, args, root=None, env=None, output_paths=(), output_files=(),
                  output_directories=(), working_directory="", timeout=None,
                  do_not_cache=False, salt=None, platform=None, action_platform=None):
    """Uploads Command, Action (and an empty root when none); returns the
    Action digest.  A random salt (default) keeps actions of different
    checks and runs apart."""
    if root is None:
        root = upload_tree(c, {})
    cmd = command(args, env, output_paths, output_files, output_directories,
                  working_directory, platform)
    cd = c.upload_message(cmd)
    a = action(cd, root, timeout, do_not_cache, os.urandom(8).hex() if salt is None else salt,
               action_platform)
    return c.upload_message(a)


# -- executing ----------------------------------------------------------------

def execute(c, ad, skip_cache_lookup=True, timeout=120):
    """(operations, final ExecuteResponse).  Raises grpc.RpcError on a
    call error; AssertionError when the stream ends without a done
    Operation carrying an ExecuteResponse."""
    ops = c.execute(ad, skip_cache_lookup=skip_cache_lookup, timeout=timeout)
    if not ops or not ops[-1].done:
        raise AssertionError("Execute stream of %s ended without a done Operation (%d ops)"
                             % (rc.dstr(ad), len(ops)))
    if ops[-1].HasField("error"):
        raise AssertionError("Execute of %s: Operation.error set (%s %r); the REAPI puts "
                             "errors in ExecuteResponse.status"
                             % (rc.dstr(ad), rc.code_name(ops[-1].error.code),
                                ops[-1].error.message))
    resp = c.execute_response(ops[-1])
    if resp is None:
        raise AssertionError("Execute of %s: done Operation without an ExecuteResponse"
                             % rc.dstr(ad))
    return ops, resp


class Stream(threading.Thread):
    """One Execute (or WaitExecution) stream read in the background:
    ops is the list of (seconds since start, Operation) received so far,
    error the grpc.RpcError that ended it (or None)."""

    def __init__(self, c, ad=None, skip_cache_lookup=True, wait_name=None, timeout=120):
        super().__init__(daemon=True)
        if wait_name is not None:
            self.call = c._us("/" + rc.RE + "Execution/WaitExecution", operations_pb2.Operation)(
                re_pb2.WaitExecutionRequest(name=wait_name), timeout=timeout)
        else:
            self.call = c._us("/" + rc.RE + "Execution/Execute", operations_pb2.Operation)(
                re_pb2.ExecuteRequest(instance_name=c.instance, action_digest=ad,
                                      skip_cache_lookup=skip_cache_lookup), timeout=timeout)
        self.ops = []
        self.error = None
        self.t0 = time.time()
        self.cond = threading.Condition()
        self.start()

    def run(self):
        try:
            for op in self.call:
                with self.cond:
                    self.ops.append((time.time() - self.t0, op))
                    self.cond.notify_all()
        except grpc.RpcError as e:
            self.error = e
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, pred, timeout):
        """Waits until pred(list of Operations) is true or the stream ended;
        returns pred's last value."""
        deadline = time.time() + timeout
        with self.cond:
            while True:
                v = pred([o for _t, o in self.ops])
                if v or not self.is_alive() or time.time() >= deadline:
                    return v
                self.cond.wait(min(0.1, max(0.0, deadline - time.time())))

    def stages(self):
        return [stage(o) for _t, o in self.ops]

    def final(self):
        """(ops, ExecuteResponse) once finished, like execute()."""
        self.join(300)
        if self.error is not None:
            raise self.error
        ops = [o for _t, o in self.ops]
        if not ops or not ops[-1].done:
            raise AssertionError("stream ended without a done Operation (%d ops)" % len(ops))
        resp = rc.Client.execute_response(ops[-1])
        if resp is None:
            raise AssertionError("done Operation without an ExecuteResponse")
        return ops, resp

    def cancel(self):
        self.call.cancel()


def exec_status(c, ad, skip_cache_lookup=True, timeout=60):
    """(code int, message, google.rpc.Status or None, where) of an Execute
    that is expected to fail: from ExecuteResponse.status (where='response')
    or the gRPC status (where='grpc')."""
    try:
        _ops, resp = execute(c, ad, skip_cache_lookup, timeout)
        return resp.status.code, resp.status.message, resp.status, "response"
    except grpc.RpcError as e:
        code, msg, st = rc.rpc_status(e)
        return code.value[0], msg, st, "grpc"


def missing_subjects(st):
    return [v.subject for det in rc.status_details(st)
            if isinstance(det, error_details_pb2.PreconditionFailure)
            for v in det.violations if v.type == "MISSING"]


def aux_metadata(resp):
    """The google.protobuf.Struct in an ExecuteResponse's auxiliary_metadata
    (casboxd's staging and fetch counters) as a dict; {} when there is none."""
    from google.protobuf import struct_pb2
    for a in resp.result.execution_metadata.auxiliary_metadata:
        s = struct_pb2.Struct()
        if a.Unpack(s):
            return {k: (v.number_value if v.HasField("number_value") else v.string_value)
                    for k, v in s.fields.items()}
    return {}


def read_blob(c, d):
    if d.size_bytes == 0:
        return b""
    return c.bs_read(c.read_name(d))


def stage(op):
    return re_pb2.ExecutionStage.Value.Name(rc.Client.execute_metadata(op).stage)


def ts_us(ts):
    return ts.seconds * 1000000 + ts.nanos // 1000


def code_value(name):
    return getattr(grpc.StatusCode, name).value[0]


# -- the check-list driver -----------------------------------------------------

class Fail(AssertionError):
    pass


class Skip(Exception):
    pass


def need(cond, msg, *args):
    if not cond:
        raise Fail(msg % args if args else msg)


def poll_until(pred, timeout, what):
    """pred()'s first true value within timeout seconds, else Fail naming what."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise Fail("%s within %d s" % (what, timeout))


def procs_with_cmdline(cmdline):
    """Pids whose /proc/PID/cmdline is exactly cmdline (bytes)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if f.read() == cmdline:
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


class Checks:
    """A list of checks; each is fn(ctx) -> None, raising Fail or Skip."""

    def __init__(self):
        self.items = []

    def __call__(self, name):
        def reg(fn):
            self.items.append((name, fn))
            return fn
        return reg

    def run(self, ctx, pattern=None, daemon=None):
        failed, skipped, passed = [], [], 0
        for name, fn in self.items:
            if pattern and pattern.lower() not in name.lower():
                continue
            t0 = time.time()
            try:
                fn(ctx)
                passed += 1
                print("ok    %s (%.1fs)" % (name, time.time() - t0), flush=True)
            except Skip as e:
                skipped.append(name)
                print("SKIP  %s: %s" % (name, e), flush=True)
            except (Fail, AssertionError) as e:
                failed.append(name)
                print("FAIL  %s\n      %s" % (name, e), flush=True)
            except grpc.RpcError as e:
                code, msg, _ = rc.rpc_status(e)
                failed.append(name)
                print("FAIL  %s\n      unexpected RPC error %s: %s"
                      % (name, rc.code_name(code), msg), flush=True)
            except Exception:  # noqa: BLE001 - a bug in the check itself
                failed.append(name)
                print("FAIL  %s\n%s" % (name, traceback.format_exc()), flush=True)
            for dname, dmn in (daemon or {}).items():
                if dmn.proc is not None and not dmn.alive():
                    print("FAIL  casboxd %s died during %r (exit status %s); log tail:\n%s"
                          % (dname, name, dmn.proc.returncode, dmn.log_tail()), flush=True)
                    failed.append("casboxd %s alive" % dname)
                    return passed, failed, skipped
        return passed, failed, skipped


class Daemons:
    """Named casboxd instances, each with its own state dir under one temp
    dir, started on first use; all stopped (must exit 0) at the end."""

    def __init__(self, prefix):
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        # Logs outlive the temp dir, where lib.sh puts them too.
        name = os.path.splitext(os.path.basename(sys.argv[0]))[0]
        self.logdir = os.environ.get("E2E_LOG_DIR") or os.path.join(
            os.environ.get("TMPDIR") or "/tmp", "casbox-e2e-logs-%d" % os.getuid(), name)
        os.makedirs(self.logdir, exist_ok=True)
        for f in os.listdir(self.logdir):
            if f.startswith("casboxd-") and f.endswith(".log"):
                os.unlink(os.path.join(self.logdir, f))  # this run's logs only
        self.d = {}
        self.clients = {}

    def get(self, name, extra_args=(), state=None):
        """The daemon `name`, started on first use (state: its state dir,
        default <tmp>/state-<name>); returns (Casboxd, Client)."""
        if name not in self.d or self.d[name].proc is None:
            state = state or os.path.join(self.tmp, "state-" + name)
            # lib.sh's knob: extra daemon arguments for every daemon (word-split),
            # e.g. CASBOXD_ARGS="--set execution.staging=fuse".
            extra_args = os.environ.get("CASBOXD_ARGS", "").split() + list(extra_args)
            log = os.path.join(self.logdir, "casboxd-%s.log" % name)
            dmn = rc.Casboxd(state, log_path=log, extra_args=list(extra_args)).start()
            self.d[name] = dmn
            self.clients[name] = rc.Client(dmn.target, timeout=120)
            print("      casboxd[%s] %s on %s (state %s, log %s%s)"
                  % (name, dmn.binary, dmn.target, state, log,
                     ", " + " ".join(extra_args) if extra_args else ""), flush=True)
        return self.d[name], self.clients[name]

    def stop_all(self):
        """Stops every daemon; returns (passed, failed) lists of check names."""
        passed, failed = [], []
        for name, dmn in self.d.items():
            if self.clients.get(name) is not None:
                self.clients[name].close()
            if dmn.proc is None:
                continue
            try:
                dmn.stop()
                print("ok    casboxd[%s] exited 0 on SIGTERM" % name, flush=True)
                passed.append(name)
            except AssertionError as e:
                print("FAIL  casboxd[%s]: %s" % (name, e), flush=True)
                failed.append("casboxd[%s] clean exit" % name)
        return passed, failed

    def cleanup(self):
        for dmn in self.d.values():
            dmn.kill()
        # A daemon killed with SIGKILL can leave its FUSE mount (staging = fuse) behind.
        try:
            with open("/proc/self/mounts") as f:
                mounts = [line.split()[1] for line in f]
        except OSError:
            mounts = []
        for m in reversed(mounts):
            if m.startswith(self.tmp + "/"):
                if subprocess.run(["fusermount3", "-u", "-z", m], capture_output=True).returncode:
                    subprocess.run(["umount", "-l", m], capture_output=True)
        if os.environ.get("E2E_KEEP_TMP") == "1":
            print("kept %s" % self.tmp)
            return
        _dirs_writable(self.tmp)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _dirs_writable(path):
    for dirpath, dirs, _files in os.walk(path):
        for x in dirs:
            try:
                os.chmod(os.path.join(dirpath, x), 0o755)
            except OSError:
                pass


def main(doc, checks, make_ctx, prefix):
    """Command line of a check-list test: [-k PATTERN] [--list].  make_ctx(ds)
    returns the object every check gets.  After the checks, every daemon
    started must still serve and must exit 0 on SIGTERM."""
    import argparse
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("-k", dest="pattern", help="only checks whose name contains this")
    ap.add_argument("--list", action="store_true", help="list the checks")
    args = ap.parse_args()
    if args.list:
        for name, _ in checks.items:
            print(name)
        return 0
    # SIGTERM (scripts/test's timeout, Ctrl-C in a wrapper) must still stop
    # the daemons and remove the temp dir: turn it into SystemExit.
    def on_term(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    ds = Daemons(prefix)
    passed, failed, skipped = 0, [], []
    try:
        ctx = make_ctx(ds)
        passed, failed, skipped = checks.run(ctx, args.pattern, ds.d)
        for name in list(ds.d):
            dmn, c = ds.d[name], ds.clients[name]
            if not dmn.alive():
                continue
            try:
                c.get_capabilities(timeout=10)
                passed += 1
                print("ok    casboxd[%s] still serves GetCapabilities after all of that" % name,
                      flush=True)
            except grpc.RpcError as e:
                failed.append("casboxd[%s] still serving" % name)
                print("FAIL  casboxd[%s]: GetCapabilities after the checks: %s"
                      % (name, rc.rpc_status(e)[:2]), flush=True)
        ok, bad = ds.stop_all()
        passed += len(ok)
        failed += bad
    except Exception:  # noqa: BLE001 - set-up failed (e.g. casboxd did not start)
        failed.append("set-up")
        print("FAIL  set-up\n%s" % traceback.format_exc(), flush=True)
    finally:
        ds.cleanup()
    print("\n%d passed, %d failed, %d skipped" % (passed, len(failed), len(skipped)))
    for f in failed:
        print("  failed: %s" % f)
    return 1 if failed else 0
