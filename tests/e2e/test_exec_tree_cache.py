#!/usr/bin/python3
"""End-to-end: casboxd remembers input trees it has checked complete
(execution.tree_cache_entries, exec/tree_cache.c), and forgets them the
moment the CAS removes a blob.

Execute walks the input tree once to list every missing blob (the REAPI's
FAILED_PRECONDITION); a second Execute of the same input root skips the
walk. These checks make sure the shortcut never hides a missing input:

  - run an action over a tree (checked and remembered), run it again (the
    remembered path), then make the store evict one file blob of the tree by
    its LRU limit (cas.max_bytes) and execute again: the answer must be
    FAILED_PRECONDITION with that blob listed as MISSING, exactly as with no
    cache at all;
  - after re-uploading it, the action runs again;
  - a subtree remembered from one root counts as checked inside another
    root, and a file missing beside it in the new root is still listed.

Each check runs on a daemon with the cache on (the default, FUSE staging as
root), one with it on and hardlink staging (which reads the remembered
subtrees' Directories lazily), and one with it off (tree_cache_entries=0),
which must all answer the same. One daemon per
mode, with cas.max_bytes = 4 MiB (and max_blob_percent = 100) so that two 2 MiB blobs evict the
oldest ones.

    test_exec_tree_cache.py            start build/bin/casboxd (or $CASBOXD)
    test_exec_tree_cache.py -k evict   only checks whose name contains it

Exit status: 0 all passed, 1 something failed.
"""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import exec_helpers as eh  # noqa: E402
import reapi_client as rc  # noqa: E402
from exec_helpers import need  # noqa: E402

PRECONDITION = eh.code_value("FAILED_PRECONDITION")
LIMIT = 4 * 1024 * 1024
MODES = {"cached": [],
         "cached-hardlink": ["--set", "execution.staging=hardlink"],
         "uncached": ["--set", "execution.tree_cache_entries=0"]}

check = eh.Checks()


class Ctx:
    def __init__(self, ds):
        self.ds = ds

    def daemons(self):
        for mode, extra in MODES.items():
            _d, c = self.ds.get(mode, ["--set", "cas.max_bytes=%d" % LIMIT, "--set", "cas.max_blob_percent=100"] + extra)
            yield mode, c


def run_ok(c, ad, want, what):
    _ops, resp = eh.execute(c, ad)
    need(resp.status.code == 0 and resp.result.exit_code == 0,
         "%s: status %s %r, exit %d", what, rc.code_name(resp.status.code),
         resp.status.message, resp.result.exit_code)
    out = resp.result.stdout_raw or eh.read_blob(c, resp.result.stdout_digest)
    need(out == want, "%s: stdout %r, want %r", what, out, want)


def evict_all_but(c, keep):
    """Evicts every blob but keep (digests) by the LRU limit: a blob of just
    over half the limit, then keep marked recently used, then another: the
    store goes over its limit and drops the oldest blobs, the first big one
    last."""
    c.upload_bytestream(os.urandom(LIMIT // 2 + 1))
    missing = c.find_missing(keep)  # FindMissingBlobs marks them recently used
    need(not missing, "blobs to keep are already missing: %s", [rc.dstr(d) for d in missing])
    c.upload_bytestream(os.urandom(LIMIT // 2 + 1))


def tree_blobs(spec):
    blobs = {}
    root = eh.directory_message(None, spec, blobs)
    data = root.SerializeToString(deterministic=True)
    dg = rc.digest_of(data)
    blobs[rc.dkey(dg)] = (dg, data)
    return dg, blobs


@check("evicting a file blob of a checked tree: the next Execute lists it MISSING")
def check_evict(ctx):
    for mode, c in ctx.daemons():
        tag = os.urandom(8).hex().encode()
        victim = b"victim " + tag + b"\n"
        spec = {"a.txt": b"a " + tag + b"\n", "sub": {"victim.txt": victim}}
        root, blobs = tree_blobs(spec)
        eh.upload_blobs(c, blobs.values())
        ad = eh.upload_action(c, ["/bin/cat", "a.txt"], root=root, do_not_cache=True)
        want = spec["a.txt"]
        run_ok(c, ad, want, "%s: first Execute" % mode)
        run_ok(c, ad, want, "%s: second Execute (tree remembered)" % mode)
        victim_d = rc.digest_of(victim)
        keep = [d for d, _ in blobs.values() if rc.dkey(d) != rc.dkey(victim_d)]
        cd = c.upload_message(eh.command(["/bin/cat", "a.txt"]))
        cmd_ad = c.upload_message(eh.action(cd, root, do_not_cache=True, salt=tag))
        keep += [cd, cmd_ad]
        evict_all_but(c, keep)
        need(c.find_missing([victim_d]), "%s: the victim blob was not evicted (the test's "
             "LRU arithmetic is wrong)", mode)
        code, msg, st, where = eh.exec_status(c, cmd_ad)
        need(code == PRECONDITION, "%s: Execute after the eviction: %s %r (%s), want "
             "FAILED_PRECONDITION", mode, rc.code_name(code), msg, where)
        subjects = eh.missing_subjects(st)
        want_subject = "blobs/%s/%d" % (victim_d.hash, victim_d.size_bytes)
        need(want_subject in subjects, "%s: MISSING violations %r do not list %s", mode,
             subjects, want_subject)
        eh.upload_blobs(c, [(victim_d, victim)])
        run_ok(c, cmd_ad, want, "%s: Execute after re-uploading" % mode)


@check("a remembered subtree inside a new root: a missing file beside it is still listed")
def check_shared_subtree(ctx):
    for mode, c in ctx.daemons():
        tag = os.urandom(8).hex().encode()
        shared = {"lib.txt": b"lib " + tag + b"\n", "deep": {"x": b"x " + tag + b"\n"}}
        root1, blobs1 = tree_blobs({"shared": shared, "one.txt": b"one " + tag + b"\n"})
        eh.upload_blobs(c, blobs1.values())
        ad1 = eh.upload_action(c, ["/bin/cat", "shared/deep/x"], root=root1, do_not_cache=True)
        run_ok(c, ad1, shared["deep"]["x"], "%s: first root" % mode)
        absent = b"never uploaded " + tag + b"\n"
        root2, blobs2 = tree_blobs({"shared": shared, "two.txt": absent})
        absent_d = rc.digest_of(absent)
        eh.upload_blobs(c, [b for k, b in blobs2.items() if k != rc.dkey(absent_d)])
        ad2 = eh.upload_action(c, ["/bin/cat", "shared/lib.txt"], root=root2, do_not_cache=True)
        code, msg, st, where = eh.exec_status(c, ad2)
        need(code == PRECONDITION, "%s: second root with a missing file: %s %r (%s)", mode,
             rc.code_name(code), msg, where)
        subjects = eh.missing_subjects(st)
        need(subjects == ["blobs/%s/%d" % (absent_d.hash, absent_d.size_bytes)],
             "%s: MISSING violations %r, want exactly the one absent file", mode, subjects)
        eh.upload_blobs(c, [(absent_d, absent)])
        run_ok(c, ad2, shared["lib.txt"], "%s: second root after uploading" % mode)


def make_ctx(ds):
    _d, c = ds.get("cached", ["--set", "cas.max_bytes=%d" % LIMIT, "--set", "cas.max_blob_percent=100"])
    need(c.get_capabilities().execution_capabilities.exec_enabled,
         "casboxd does not advertise execution (GetCapabilities: exec_enabled is false)")
    return Ctx(ds)


if __name__ == "__main__":
    sys.exit(eh.main(__doc__, check, make_ctx, "casbox-e2e-treecache-"))
