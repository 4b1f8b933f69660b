#!/usr/bin/python3
"""Shared storage ([cas] remote, issue 16): casboxd as a cache in front of a
REAPI CAS that is the source of truth, against two real remotes:
BuildStream's artifact server (Debian's buildstream, another project's
code) in a network namespace of this test's own, and a second casboxd
(casbox in front of casbox).

For each remote: writes through casbox land in the remote (BatchUpdateBlobs,
ByteStream.Write); FindMissingBlobs is the remote's answer, not the cache's
(a blob the cache holds but the remote lost is reported missing); a blob only
in the remote is served (BatchReadBlobs, ByteStream.Read) and then cached,
and casbox_cas_remote_fetches_total / _fetched_bytes_total on /metrics move
by exactly those blobs (rejected wrong bytes move the failure counters); an
action whose input tree lives only in the remote runs, fetching only the
files it opens (auxiliary_metadata counts fetched blobs and local hits); its
outputs and stdout are in the remote; GetActionResult answers NOT_FOUND once
an output blob it names is gone from the remote and Execute runs it again;
an input the remote lacks gives FAILED_PRECONDITION with a MISSING violation
naming it (the action then runs once it is uploaded). Faults (artifact
server): a remote that sends other bytes than the digest is rejected
(logged with the digest, nothing stored, UNAVAILABLE for the client);
the remote stopped at start and while an action reads its inputs gives
UNAVAILABLE naming the remote, nothing corrupt is cached, and service
resumes once it is back. Skips without root or without the buildstream
package.

    tests/e2e/test_shared_storage.py [-k PATTERN] [--list]
"""

import os
import sys
import time
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import artifact_server  # noqa: E402
import exec_helpers as eh  # noqa: E402
import reapi_client as rc  # noqa: E402
from exec_helpers import need  # noqa: E402
from reapi_client import re_pb2  # noqa: E402

checks = eh.Checks()
KiB = 1024


class CasboxRemote:
    """A second casboxd as the remote (cache only)."""

    def __init__(self, ds):
        self.dmn, self.c = ds.get("remote", ["--no-execution"])
        self.url = "grpc://" + self.dmn.target
        self.name = "casboxd"

    def client(self):
        return self.c

    def blob_file(self, d):
        return os.path.join(self.dmn.state_dir, "cas", "blobs", d.hash[:2], d.hash)

    def corrupt(self, d):
        """Same size, other bytes, same inode: casboxd trusts a blob it
        verified, so it then serves these bytes."""
        path = self.blob_file(d)
        os.chmod(path, 0o644)
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            data[len(data) // 2] ^= 0xFF
            f.seek(0)
            f.write(bytes(data))
        os.chmod(path, 0o444)


class BstRemote:
    def __init__(self, ds):
        self.srv = artifact_server.ArtifactServer(
            os.path.join(ds.tmp, "bst-repo"),
            log_path=os.path.join(ds.logdir, "bst-artifact-server.log")).start()
        self.url = self.srv.url
        self.c = self.srv.client()
        self.name = "bst-artifact-server"

    def client(self):
        return self.c

    def delete(self, d):
        os.unlink(self.srv.objpath(d))

    def corrupt(self, d):
        path = self.srv.objpath(d)
        os.chmod(path, 0o644)
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            data[len(data) // 2] ^= 0xFF
            f.seek(0)
            f.write(bytes(data))


class Ctx:
    def __init__(self, ds):
        self.ds = ds
        why = artifact_server.available()
        if why:
            raise eh.Skip(why)
        self.bst = BstRemote(ds)
        ds_cleanup = ds.cleanup

        def cleanup():
            self.bst.srv.close()
            ds_cleanup()
        ds.cleanup = cleanup
        self.front = {}

    def pair(self, kind):
        """(remote, casboxd in front of it, its client)."""
        if kind not in self.front:
            remote = self.bst if kind == "bst" else CasboxRemote(self.ds)
            port = rc.free_port()
            dmn, c = self.ds.get("front-" + kind, ["--set", "cas.remote=" + remote.url,
                                                   "--set", "cas.remote_timeout=20",
                                                   "--set", "http.listen=127.0.0.1:%d" % port])
            dmn.http_port = port
            self.front[kind] = (remote, dmn, c)
        return self.front[kind]


def remote_counters(dmn):
    """casbox_cas_remote_* from the front's /metrics: {name: value}."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % dmn.http_port, timeout=30) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("casbox_cas_remote_"):
            name, value = line.split()
            out[name] = float(value)
    need("casbox_cas_remote_fetches_total" in out, "/metrics has no remote fetch counters:\n%s",
         text[:2000])
    return out


def counters_moved(before, after, expect):
    for name, want in expect.items():
        got = after[name] - before[name]
        need(got == want if want is not None else got >= 1,
             "%s moved by %g, expected %s", name, got, want if want is not None else ">= 1")


def unique(tag):
    return ("%s %s %f\n" % (tag, os.getpid(), time.time())).encode()



def local_blob(dmn, d):
    return os.path.join(dmn.state_dir, "cas", "blobs", d.hash[:2], d.hash)


# -- checks, for each remote -------------------------------------------------------

def for_each_remote(title):
    def reg(fn):
        for kind in ("bst", "casboxd"):
            checks("%s [%s]" % (title, kind))(lambda ctx, fn=fn, kind=kind: fn(ctx, kind))
        return fn
    return reg


@for_each_remote("writes through casbox land in the remote")
def _writes(ctx, kind):
    remote, _dmn, c = ctx.pair(kind)
    small = c.upload_blob(unique("small"))
    big = c.upload_bytestream(unique("big") * 40000, chunk=256 * KiB)  # ~1.5 MiB, streamed
    need(remote.client().find_missing([small, big]) == [],
         "%s lacks blobs written through casbox: %s", remote.name,
         [rc.dstr(d) for d in remote.client().find_missing([small, big])])


@for_each_remote("FindMissingBlobs is the remote's answer, not the cache's")
def _find_missing(ctx, kind):
    remote, _dmn, c = ctx.pair(kind)
    if kind != "bst":
        raise eh.Skip("deleting from a casboxd remote behind its index is not a supported "
                      "operation; checked against the artifact server")
    d = c.upload_blob(unique("lost"))
    need(c.find_missing([d]) == [], "just written, yet reported missing")
    remote.delete(d)
    missing = c.find_missing([d])
    need([rc.dkey(x) for x in missing] == [rc.dkey(d)],
         "the remote lost %s but casbox (which caches it) said missing=%s: Bazel would skip "
         "the upload", rc.dstr(d), [rc.dstr(x) for x in missing])
    c.upload_blob(unique("lost"))  # a client re-uploads what was reported
    d2 = c.upload_blob(b"".join([unique("lost")]))
    need(remote.client().find_missing([d2]) == [], "re-upload did not reach the remote")


@for_each_remote("a blob only in the remote is read through casbox and then cached")
def _read_through(ctx, kind):
    remote, dmn, c = ctx.pair(kind)
    data_s, data_b = unique("r-small"), unique("r-big") * 30000
    ds_ = remote.client().upload_blob(data_s)
    db = remote.client().upload_bytestream(data_b, chunk=512 * KiB)
    need(not os.path.exists(local_blob(dmn, ds_)), "blob already cached before any read")
    before = remote_counters(dmn)
    r = c.batch_read([ds_]).responses[0]
    need(r.status.code == 0 and r.data == data_s, "BatchReadBlobs of a remote-only blob: %s %r",
         rc.code_name(r.status.code), r.status.message)
    need(c.bs_read(c.read_name(db)) == data_b, "ByteStream.Read of a remote-only blob differs")
    need(os.path.exists(local_blob(dmn, ds_)) and os.path.exists(local_blob(dmn, db)),
         "blobs read through were not kept in the local cache")
    need(c.bs_read(c.read_name(db)) == data_b, "a second read differs")  # cached: no fetch
    counters_moved(before, remote_counters(dmn), {
        "casbox_cas_remote_fetches_total": 2,
        "casbox_cas_remote_fetched_bytes_total": len(data_s) + len(data_b),
        "casbox_cas_remote_fetch_failures_total": 0})


@for_each_remote("an action whose inputs are only in the remote fetches just what it opens")
def _lazy_action(ctx, kind):
    remote, _dmn, c = ctx.pair(kind)
    rcl = remote.client()
    tag = unique("lazy")
    unread = [os.urandom(200 * KiB) for _ in range(4)]
    root = eh.upload_tree(rcl, {"in.txt": tag, "sub": {"x": b"x" + tag},
                                "unread": {"u%d" % i: u for i, u in enumerate(unread)}})
    ad = eh.upload_action(rcl, [eh.SH, "-c", "cat in.txt sub/x > out; echo done"],
                          root=root, env=eh.ENV, output_paths=["out"])
    _ops, resp = eh.execute(c, ad, skip_cache_lookup=True)
    need(resp.status.code == 0 and resp.result.exit_code == 0, "action failed: %s %r",
         rc.code_name(resp.status.code), resp.status.message)
    m = eh.aux_metadata(resp)
    need("fetched_blobs" in m and "local_hits" in m,
         "auxiliary_metadata has no fetch counters: %r", m)
    need(m["fetched_bytes"] < 100 * KiB,
         "fetched %d bytes: the unread 800 KiB were fetched too (%r)", m["fetched_bytes"], m)
    need(m["fetched_blobs"] >= 2, "fetched %d blobs, the action read 2 files (%r)",
         m["fetched_blobs"], m)
    out = resp.result.output_files[0].digest
    need(rcl.find_missing([out, resp.result.stdout_digest]) == [],
         "outputs/stdout of the action are not in the remote")
    need(eh.read_blob(rcl, out) == tag + b"x" + tag, "output read from the remote differs")
    got = c.get_action_result(ad)
    need(got.output_files[0].digest == out, "GetActionResult differs from the Execute result")


@for_each_remote("GetActionResult is NOT_FOUND when the remote lost an output; Execute re-runs")
def _ac_output_lost(ctx, kind):
    remote, _dmn, c = ctx.pair(kind)
    if kind != "bst":
        raise eh.Skip("checked against the artifact server (deletion in its repository)")
    ad = eh.upload_action(c, [eh.SH, "-c", "printf '%s' \"$T\" > out"],
                          env=dict(eh.ENV, T=unique("ac").decode()), output_paths=["out"])
    _ops, resp = eh.execute(c, ad, skip_cache_lookup=False)
    need(resp.status.code == 0, "first run failed: %r", resp.status.message)
    out = resp.result.output_files[0].digest
    c.get_action_result(ad)  # served while everything is there
    remote.delete(out)
    try:
        c.get_action_result(ad)
        raise eh.Fail("GetActionResult served a result whose output %s the remote lost "
                      "(the local cache still has it)" % rc.dstr(out))
    except grpc.RpcError as e:
        code, msg, _ = rc.rpc_status(e)
        need(code == grpc.StatusCode.NOT_FOUND, "expected NOT_FOUND, got %s %r",
             rc.code_name(code), msg)
    _ops, resp2 = eh.execute(c, ad, skip_cache_lookup=False)
    need(not resp2.cached_result and resp2.status.code == 0,
         "Execute after the loss: cached_result=%s status %r", resp2.cached_result,
         resp2.status.message)
    need(remote.client().find_missing([out]) == [], "the re-run did not push the output again")


@for_each_remote("an input neither cached nor in the remote is FAILED_PRECONDITION/MISSING")
def _input_missing(ctx, kind):
    remote, _dmn, c = ctx.pair(kind)
    if kind != "bst":
        raise eh.Skip("checked against the artifact server (deletion in its repository)")
    rcl = remote.client()
    gone = unique("gone") * 10
    root = eh.upload_tree(rcl, {"gone.txt": gone, "ok.txt": b"ok"})
    ad = eh.upload_action(rcl, [eh.SH, "-c", "cat gone.txt ok.txt > out"], root=root,
                          env=eh.ENV, output_paths=["out"])
    dg = rc.digest_of(gone)
    remote.delete(dg)
    code, msg, st, _where = eh.exec_status(c, ad)
    need(code == eh.code_value("FAILED_PRECONDITION"),
         "expected FAILED_PRECONDITION, got %s %r", rc.code_name(code), msg)
    subjects = eh.missing_subjects(st)
    need(any(dg.hash in s for s in subjects), "MISSING violations %r do not name %s",
         subjects, rc.dstr(dg))
    c.upload_blob(gone)  # what Bazel does on MISSING
    _ops, resp = eh.execute(c, ad)
    need(resp.status.code == 0 and resp.result.exit_code == 0,
         "after re-upload: %s %r", rc.code_name(resp.status.code), resp.status.message)


@for_each_remote("a remote sending bytes that do not match the digest is rejected")
def _wrong_bytes(ctx, kind):
    remote, dmn, c = ctx.pair(kind)
    rcl = remote.client()
    data = unique("wrong") * 1000
    d = rcl.upload_blob(data)
    if kind != "bst":
        eh.read_blob(rcl, d)  # casboxd verifies a blob on first read; then trusts it
    remote.corrupt(d)
    before = remote_counters(dmn)
    try:
        got = c.bs_read(c.read_name(d))
        raise eh.Fail("casbox served %d bytes for %s from a corrupt remote" % (len(got),
                                                                              rc.dstr(d)))
    except grpc.RpcError as e:
        code, msg, _ = rc.rpc_status(e)
        need(code == grpc.StatusCode.UNAVAILABLE and d.hash in msg and remote.url in msg,
             "expected UNAVAILABLE naming %s and the remote, got %s %r", d.hash,
             rc.code_name(code), msg)
    need(not os.path.exists(local_blob(dmn, d)), "the corrupt bytes were stored in the cache")
    counters_moved(before, remote_counters(dmn), {
        "casbox_cas_remote_fetches_total": 0,
        "casbox_cas_remote_rejected_blobs_total": None,
        "casbox_cas_remote_fetch_failures_total": None})
    with open(dmn.log_path, errors="replace") as f:
        need(any(d.hash in line and "do not match" in line for line in f),
             "casboxd's log has no line naming %s as rejected (%s)", d.hash, dmn.log_path)


# -- faults (artifact server) ----------------------------------------------------

def wait_back(c, d, timeout=30):
    deadline = time.time() + timeout
    while True:
        try:
            return c.find_missing([d])
        except grpc.RpcError:
            if time.time() > deadline:
                raise eh.Fail("casbox did not use the remote again within %ds of its return"
                              % timeout)
            time.sleep(0.5)


@checks("remote down (also when casboxd starts): UNAVAILABLE naming it; back: service "
        "resumes [bst]")
def _down_and_up(ctx):
    remote, dmn, c = ctx.pair("bst")
    remote.srv.stop()
    try:
        # A casboxd started while its remote is down starts, and says why it
        # cannot answer.
        _late, late_c = ctx.ds.get("front-started-while-down",
                                   ["--set", "cas.remote=" + remote.url])
        try:
            late_c.find_missing([rc.digest_of(b"x")])
            raise eh.Fail("FindMissingBlobs answered with the remote down")
        except grpc.RpcError as e:
            code, msg, _ = rc.rpc_status(e)
            need(code == grpc.StatusCode.UNAVAILABLE and remote.url in msg,
                 "casboxd started with its remote down: %s %r", rc.code_name(code), msg)
        data = unique("while-down")
        d = rc.digest_of(data)
        for name, call in (("FindMissingBlobs", lambda: c.find_missing([d])),
                           ("ByteStream.Write", lambda: c.upload_bytestream(data)),
                           ("ByteStream.Read", lambda: c.bs_read(c.read_name(
                               rc.digest_of(unique("never"))))),
                           ("GetActionResult", lambda: c.get_action_result(d))):
            try:
                call()
                raise eh.Fail("%s succeeded with the remote down" % name)
            except grpc.RpcError as e:
                code, msg, _ = rc.rpc_status(e)
                if name == "GetActionResult" and code == grpc.StatusCode.NOT_FOUND:
                    continue  # no such entry in the local ActionCache: nothing to check
                need(code == grpc.StatusCode.UNAVAILABLE and remote.url in msg,
                     "%s with the remote down: %s %r (want UNAVAILABLE naming %s)", name,
                     rc.code_name(code), msg, remote.url)
        except_upload = None
        try:
            c.upload_blob(data)
        except AssertionError as e:  # reapi_client raises on a per-blob status
            except_upload = str(e)
        need(except_upload and "UNAVAILABLE" in except_upload and remote.url in except_upload,
             "BatchUpdateBlobs with the remote down: %r", except_upload)
    finally:
        remote.srv.start()
    wait_back(c, d)
    wait_back(late_c, d)
    c.upload_blob(data)
    need(remote.client().find_missing([d]) == [], "after recovery a write did not reach it")
    for dirpath, _dirs, files in os.walk(os.path.join(dmn.state_dir, "cas", "blobs")):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                need(rc.digest_of(fh.read()).hash == f, "corrupt blob %s in the cache", f)


@checks("remote lost while an action reads its inputs: UNAVAILABLE, not cached [bst]")
def _down_mid_action(ctx):
    remote, _dmn, c = ctx.pair("bst")
    rcl = remote.client()
    late = unique("late") * 100
    root = eh.upload_tree(rcl, {"late.txt": late, "early.txt": b"e"})
    ad = eh.upload_action(rcl, [eh.SH, "-c", "cat early.txt; sleep 4; cat late.txt > out"],
                          root=root, env=eh.ENV, output_paths=["out"])
    s = eh.Stream(c, ad)
    # Wait until it runs (inputs checked and the early file read), then pull the plug.
    s.wait_for(lambda ops: ops and eh.stage(ops[-1]) == "EXECUTING", 60)
    time.sleep(1)
    remote.srv.stop()
    try:
        _ops, resp = s.final()
    finally:
        remote.srv.start()
    need(resp.status.code == eh.code_value("UNAVAILABLE") and remote.url in resp.status.message
         and rc.digest_of(late).hash in resp.status.message,
         "expected UNAVAILABLE naming the remote and the digest, got %s %r",
         rc.code_name(resp.status.code), resp.status.message)
    try:
        c.get_action_result(ad)
        raise eh.Fail("the failed run was cached")
    except grpc.RpcError as e:
        need(rc.rpc_status(e)[0] == grpc.StatusCode.NOT_FOUND, "GetActionResult: %s",
             rc.rpc_status(e)[:2])
    wait_back(c, rc.digest_of(late))
    _ops, resp = eh.execute(c, ad)
    need(resp.status.code == 0 and resp.result.exit_code == 0, "after recovery: %s %r",
         rc.code_name(resp.status.code), resp.status.message)


if __name__ == "__main__":
    why = artifact_server.available()
    if why:
        print("SKIP: %s" % why)
        sys.exit(77)
    sys.exit(eh.main(__doc__, checks, Ctx, "casbox-shared-"))
