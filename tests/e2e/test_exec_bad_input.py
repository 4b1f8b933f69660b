#!/usr/bin/python3
"""End-to-end: casboxd's Execution service against bad actions, over real
gRPC.

Each check uploads a broken Action, Command or input tree (or sends a broken
request) and asserts the status the REAPI asks for, and that the message
names what is wrong (the entry name, path, property or limit).  The REAPI
allows an error to come as the gRPC status of Execute ("errors discovered
during creation of the Operation") or in ExecuteResponse.status of the final
Operation ("while running the action"); both are accepted, the Operation's
`error` field never.  Missing blobs must come as FAILED_PRECONDITION with a
PreconditionFailure listing every one of them as MISSING blobs/{hash}/{size}.
After every check the daemon must still be alive; at the end it must still
execute a good action and exit 0 on SIGTERM.  Two daemons: `main` (defaults)
and `tight` (execution.max_timeout=10, default_timeout=10).

    test_exec_bad_input.py                start build/bin/casboxd (or $CASBOXD)
    test_exec_bad_input.py -k platform    only checks whose name contains it

Exit status: 0 all passed, 1 something failed.
"""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import exec_helpers as eh  # noqa: E402
import reapi_client as rc  # noqa: E402
from exec_helpers import BASH, need  # noqa: E402
from reapi_client import re_pb2, operations_pb2  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402

INVALID = eh.code_value("INVALID_ARGUMENT")
PRECONDITION = eh.code_value("FAILED_PRECONDITION")
C_OK = 0

check = eh.Checks()


class Ctx:
    def __init__(self, ds):
        self.ds = ds

    def main(self):
        return self.ds.get("main")

    def tight(self):
        return self.ds.get("tight", ["--set", "execution.max_timeout=10",
                                     "--set", "execution.default_timeout=10"])


def expect(c, ad, code, mention=None, what=""):
    """Execute ad; the status must be code (int) and the message must name
    mention (a string or tuple of alternatives, case-insensitive)."""
    got, msg, st, where = eh.exec_status(c, ad)
    need(got == code, "%s: %s %r (%s), want %s", what or rc.dstr(ad), rc.code_name(got), msg,
         where, rc.code_name(code))
    if mention is not None:
        alts = (mention,) if isinstance(mention, str) else tuple(mention)
        need(any(a.lower() in msg.lower() for a in alts), "%s: message %r does not name %s",
             what or rc.dstr(ad), msg, " or ".join(repr(a) for a in alts))
    return msg, st, where


def raw_dir_digest(c, d):
    """Uploads a Directory message as given (no sorting); returns its digest."""
    return c.upload_message(d)


def file_node(c, d, name, data=b"x"):
    dg = c.upload_blob(data) if data else re_pb2.Digest(hash=rc.EMPTY_SHA256, size_bytes=0)
    d.files.add(name=name, digest=dg)


def dir_node(c, d, name, sub=None):
    sub = sub if sub is not None else re_pb2.Directory()
    d.directories.add(name=name, digest=raw_dir_digest(c, sub))


def action_with_root(c, root_dir, **kw):
    """An Action whose input root is root_dir (a Directory message, uploaded as is)."""
    return eh.upload_action(c, [BASH, "-c", "true"], root=raw_dir_digest(c, root_dir), **kw)


def nested(c, bad, name="ok"):
    """A root holding bad as subdirectory `name`."""
    root = re_pb2.Directory()
    dir_node(c, root, name, bad)
    return root


# -- Directory rules --------------------------------------------------------------------

def bad_dirs(c):
    """(description, bad Directory, strings the message must name)."""
    out = []
    d = re_pb2.Directory()
    file_node(c, d, "")
    out.append(("file name ''", d, ("''", "empty")))
    d = re_pb2.Directory()
    file_node(c, d, ".")
    out.append(("file name '.'", d, "'.'"))
    d = re_pb2.Directory()
    dir_node(c, d, "..")
    out.append(("directory name '..'", d, "'..'"))
    d = re_pb2.Directory()
    file_node(c, d, "a/b")
    out.append(("file name 'a/b'", d, "a/b"))
    d = re_pb2.Directory()
    d.symlinks.add(name="s/t", target="x")
    out.append(("symlink name 's/t'", d, "s/t"))
    d = re_pb2.Directory()
    file_node(c, d, "dup", b"1")
    file_node(c, d, "dup", b"2")
    out.append(("duplicate file 'dup'", d, "dup"))
    d = re_pb2.Directory()
    file_node(c, d, "zeta")
    file_node(c, d, "alpha")
    out.append(("unsorted files zeta, alpha", d, ("zeta", "alpha")))
    d = re_pb2.Directory()
    dir_node(c, d, "yy")
    dir_node(c, d, "xx")
    out.append(("unsorted directories yy, xx", d, ("yy", "xx")))
    d = re_pb2.Directory()
    file_node(c, d, "same")
    dir_node(c, d, "same")
    out.append(("'same' as file and directory", d, "same"))
    d = re_pb2.Directory()
    file_node(c, d, "both")
    d.symlinks.add(name="both", target="x")
    out.append(("'both' as file and symlink", d, "both"))
    return out


@check("Directory: '', '.', '..', 'a/b', duplicate, unsorted, file+dir -> INVALID_ARGUMENT naming it")
def _(ctx):
    _d, c = ctx.main()
    for desc, bad, mention in bad_dirs(c):
        ad = action_with_root(c, bad)
        expect(c, ad, INVALID, mention, "input root with " + desc)
        ad = action_with_root(c, nested(c, nested(c, bad, "inner"), "outer"))
        msg, _st, _w = expect(c, ad, INVALID, mention, "input dir 'outer/inner' with " + desc)
        need("outer/inner" in msg, "input dir 'outer/inner' with %s: message %r does not name "
             "the path 'outer/inner'", desc, msg)


@check("Directory: symlink target empty -> INVALID_ARGUMENT; absolute or climbing ones run")
def _(ctx):
    _d, c = ctx.main()
    d = re_pb2.Directory()
    d.symlinks.add(name="lnk", target="")
    expect(c, action_with_root(c, nested(c, d, "sub")), INVALID, ("lnk", "empty"),
           "symlink sub/lnk -> ''")
    # symlink_absolute_path_strategy ALLOWED: "allow symlink targets to escape the input
    # root tree"; the sandbox resolves them inside the action (test_exec_sandbox.py).
    for target in ("/etc/passwd", "../../outside", "a/../../../x", "../sub/../../x"):
        d = re_pb2.Directory()
        d.symlinks.add(name="lnk", target=target)
        ad = action_with_root(c, nested(c, d, "sub"))
        got, msg, _st, where = eh.exec_status(c, ad)
        need(got == C_OK, "symlink sub/lnk -> %s: %s %r (%s), want OK", target,
             rc.code_name(got), msg, where)


@check("Directory: file digest of size 0 with a non-empty hash -> INVALID_ARGUMENT")
def _(ctx):
    _d, c = ctx.main()
    d = re_pb2.Directory()
    d.files.add(name="zero", digest=re_pb2.Digest(hash=rc.digest_of(b"not empty").hash,
                                                  size_bytes=0))
    expect(c, action_with_root(c, d), INVALID, "zero", "file 'zero' with size-0 digest")


@check("Directory: input tree 200 levels deep -> INVALID_ARGUMENT naming the depth bound")
def _(ctx):
    _d, c = ctx.main()
    blobs = []
    d = re_pb2.Directory()
    for _ in range(200):
        data = d.SerializeToString(deterministic=True)
        dg = rc.digest_of(data)
        blobs.append((dg, data))
        d = re_pb2.Directory()
        d.directories.add(name="d", digest=dg)
    eh.upload_blobs(c, blobs)
    root = c.upload_message(d)
    ad = eh.upload_action(c, [BASH, "-c", "true"], root=root)
    expect(c, ad, INVALID, ("deep", "depth", "levels", "128"), "200-level input tree")


# -- Command / Action --------------------------------------------------------------------

@check("Command with no arguments / empty arguments[0] -> INVALID_ARGUMENT naming arguments")
def _(ctx):
    _d, c = ctx.main()
    expect(c, eh.upload_action(c, []), INVALID, "arguments", "Command without arguments")
    expect(c, eh.upload_action(c, ["", "x"]), INVALID, "arguments", "Command arguments[0] ''")


@check("output paths absolute, with '..' or a trailing '/' -> INVALID_ARGUMENT naming the path")
def _(ctx):
    _d, c = ctx.main()
    for field in ("output_paths", "output_files", "output_directories"):
        for p in ("/tmp/abs", "../up", "a/../../b", "trail/"):
            ad = eh.upload_action(c, [BASH, "-c", "true"], **{field: [p]})
            expect(c, ad, INVALID, p, "%s [%r]" % (field, p))
    for wd in ("/abs", "../up", "a/.."):
        ad = eh.upload_action(c, [BASH, "-c", "true"], working_directory=wd)
        expect(c, ad, INVALID, ("working_directory", wd), "working_directory %r" % wd)


@check("'.' and '//' in output paths and working_directory are not refused (the spec allows "
       "them): normalised, results named as asked")
def _(ctx):
    _d, c = ctx.main()
    for field in ("output_paths", "output_files", "output_directories"):
        for p in ("a/./b", "a//b", "./a"):
            if field == "output_directories":
                script = "mkdir -p a/b"
            else:
                script = "echo z > a" if p == "./a" else "mkdir a; echo x > a/b"
            ad = eh.upload_action(c, [BASH, "-c", script], **{field: [p]})
            _ops, resp = eh.execute(c, ad)
            need(resp.status.code == C_OK and resp.result.exit_code == 0,
                 "%s [%r]: %s %r exit %d", field, p, rc.code_name(resp.status.code),
                 resp.status.message, resp.result.exit_code)
            got = [f.path for f in resp.result.output_files] + \
                [x.path for x in resp.result.output_directories]
            need(got == [p], "%s [%r]: outputs %s, want the path as the Command spells it",
                 field, p, got)
    for wd in (".", "./", "./w/", "w//x"):
        ad = eh.upload_action(c, [BASH, "-c", "pwd > o"], working_directory=wd,
                              output_paths=["o"])
        _ops, resp = eh.execute(c, ad)
        need(resp.status.code == C_OK and resp.result.exit_code == 0,
             "working_directory %r: %s %r exit %d", wd, rc.code_name(resp.status.code),
             resp.status.message, resp.result.exit_code)
        want = {".": "", "./": "", "./w/": "/w", "w//x": "/w/x"}[wd]
        o = [f for f in resp.result.output_files if f.path == "o"]
        need(o and eh.read_blob(c, o[0].digest).decode().strip().endswith("/casbox/exec" + want),
             "working_directory %r: pwd %r, want /casbox/exec%s", wd,
             eh.read_blob(c, o[0].digest) if o else None, want)


@check("Command: duplicate output path, file in output file, env twice, output_node_properties "
       "-> INVALID_ARGUMENT")
def _(ctx):
    _d, c = ctx.main()
    cmd = eh.command([BASH, "-c", "true"], output_paths=["o", "o"])
    ad = c.upload_message(eh.action(c.upload_message(cmd), eh.upload_tree(c, {}), salt="dup"))
    expect(c, ad, INVALID, "'o'", "output_paths o twice")
    ad = eh.upload_action(c, [BASH, "-c", "true"], output_files=["f", "f/g"])
    expect(c, ad, INVALID, "f/g", "output_files f and f/g")
    ad = eh.upload_action(c, [BASH, "-c", "true"], output_files=["x"], output_directories=["x"])
    expect(c, ad, INVALID, "'x'", "x as output file and directory")
    cmd = re_pb2.Command(arguments=["/bin/true"])
    cmd.environment_variables.add(name="DUP", value="1")
    cmd.environment_variables.add(name="DUP", value="2")
    ad = c.upload_message(eh.action(c.upload_message(cmd), eh.upload_tree(c, {}), salt="env"))
    expect(c, ad, INVALID, "DUP", "environment variable DUP twice")
    cmd = eh.command([BASH, "-c", "true"])
    cmd.output_node_properties.append("unix_mode")
    ad = c.upload_message(eh.action(c.upload_message(cmd), eh.upload_tree(c, {}), salt="onp"))
    expect(c, ad, INVALID, "output_node_properties", "Command.output_node_properties")


def junk():
    """Bytes that are not a protobuf message: a length-delimited field 1
    whose length runs past the end, then random bytes."""
    return b"\x0a\xff\xff\xff\x0f" + os.urandom(24)


@check("Action.command_digest -> bytes that are not a Command -> INVALID_ARGUMENT naming Command")
def _(ctx):
    _d, c = ctx.main()
    cd = c.upload_blob(junk())
    ad = c.upload_message(re_pb2.Action(command_digest=cd, input_root_digest=eh.upload_tree(c, {})))
    expect(c, ad, INVALID, ("Command", cd.hash), "junk Command")


@check("input root / action blob that are not valid messages -> INVALID_ARGUMENT")
def _(ctx):
    _d, c = ctx.main()
    cd = c.upload_message(eh.command([BASH, "-c", "true"]))
    rd = c.upload_blob(junk())
    ad = c.upload_message(re_pb2.Action(command_digest=cd, input_root_digest=rd))
    expect(c, ad, INVALID, ("Directory", rd.hash), "junk input root")
    ad = c.upload_blob(junk())
    expect(c, ad, INVALID, ("Action", ad.hash), "junk Action")


@check("platform: unknown property foo=bar -> INVALID_ARGUMENT naming foo (Command and Action)")
def _(ctx):
    _d, c = ctx.main()
    ad = eh.upload_action(c, [BASH, "-c", "true"], platform={"foo": "bar"})
    expect(c, ad, INVALID, "foo", "Command.platform foo=bar")
    ad = eh.upload_action(c, [BASH, "-c", "true"], action_platform={"OSFamily": "Linux",
                                                                    "foo": "bar"})
    expect(c, ad, INVALID, "foo", "Action.platform foo=bar")


@check("platform: OSFamily=Windows and network=on (not allowed) -> INVALID_ARGUMENT")
def _(ctx):
    _d, c = ctx.main()
    ad = eh.upload_action(c, [BASH, "-c", "true"], platform={"OSFamily": "Windows"})
    expect(c, ad, INVALID, ("OSFamily", "Windows"), "OSFamily=Windows")
    ad = eh.upload_action(c, [BASH, "-c", "true"], action_platform={"OSFamily": "windows"})
    expect(c, ad, INVALID, ("OSFamily", "Windows"), "Action OSFamily=windows")
    ad = eh.upload_action(c, [BASH, "-c", "true"], platform={"network": "on"})
    expect(c, ad, INVALID, "network", "network=on")
    ad = eh.upload_action(c, [BASH, "-c", "echo ok"], platform={"OSFamily": "Linux",
                                                                "network": "off"})
    _ops, resp = eh.execute(c, ad)
    need(resp.status.code == C_OK and resp.result.exit_code == 0,
         "OSFamily=Linux network=off is refused: %s %r", rc.code_name(resp.status.code),
         resp.status.message)


@check("Action.timeout 60 s above max_timeout=10 -> INVALID_ARGUMENT; 5 s runs; negative refused")
def _(ctx):
    _d, c = ctx.tight()
    ad = eh.upload_action(c, [BASH, "-c", "true"], timeout=60)
    expect(c, ad, INVALID, ("max_timeout", "10 s", "maximum"), "timeout 60 s over a max of 10 s")
    ad = eh.upload_action(c, [BASH, "-c", "echo ok"], timeout=5)
    _ops, resp = eh.execute(c, ad)
    need(resp.status.code == C_OK and resp.result.exit_code == 0,
         "timeout 5 s under a max of 10 s: %s %r", rc.code_name(resp.status.code),
         resp.status.message)
    cd = c.upload_message(eh.command([BASH, "-c", "true"]))
    a = re_pb2.Action(command_digest=cd, input_root_digest=eh.upload_tree(c, {}),
                      timeout=duration_pb2.Duration(seconds=-5))
    expect(c, c.upload_message(a), INVALID, "timeout", "timeout -5 s")


# -- missing blobs ----------------------------------------------------------------------------

@check("missing Command and two input files -> FAILED_PRECONDITION listing every blob MISSING; "
       "after upload it runs")
def _(ctx):
    _d, c = ctx.main()
    f1, f2 = os.urandom(40), os.urandom(50)
    here = os.urandom(30)
    blobs = {}
    root = eh.directory_message(c, {"present.txt": here, "m1.bin": f1,
                                    "sub": {"m2.bin": f2}}, blobs)
    d1, d2 = rc.digest_of(f1), rc.digest_of(f2)
    eh.upload_blobs(c, [b for k, b in blobs.items() if k not in (rc.dkey(d1), rc.dkey(d2))])
    rd = c.upload_message(root)
    cmd = eh.command([BASH, "-c", "cat m1.bin sub/m2.bin present.txt"])
    cmd_data = cmd.SerializeToString(deterministic=True)
    cd = rc.digest_of(cmd_data)
    ad = c.upload_message(eh.action(cd, rd, salt=os.urandom(4).hex()))
    need(sorted(rc.dkey(x) for x in c.find_missing([cd, d1, d2])) ==
         sorted([rc.dkey(cd), rc.dkey(d1), rc.dkey(d2)]), "set-up: blobs not missing")
    msg, st, where = expect(c, ad, PRECONDITION, None, "missing Command + 2 files")
    need(st is not None, "FAILED_PRECONDITION (%s) carries no google.rpc.Status details", where)
    got = sorted(eh.missing_subjects(st))
    want = sorted("blobs/%s/%d" % (d.hash, d.size_bytes) for d in (cd, d1, d2))
    need(got == want, "PreconditionFailure MISSING subjects %s, want exactly %s (%s)", got, want,
         where)
    # What Bazel does next: upload what is missing and execute again.
    c.upload_blob(cmd_data)
    c.upload_blob(f1)
    c.upload_blob(f2)
    _ops, resp = eh.execute(c, ad)
    need(resp.status.code == C_OK and resp.result.exit_code == 0 and
         eh.read_blob(c, resp.result.stdout_digest) == f1 + f2 + here,
         "after uploading the missing blobs: %s %r exit %d", rc.code_name(resp.status.code),
         resp.status.message, resp.result.exit_code)


@check("missing Action / missing input subdirectory -> FAILED_PRECONDITION with MISSING subject")
def _(ctx):
    _d, c = ctx.main()
    ad = rc.digest_of(os.urandom(77))
    _msg, st, _w = expect(c, ad, PRECONDITION, None, "missing Action")
    want = "blobs/%s/%d" % (ad.hash, ad.size_bytes)
    need(want in eh.missing_subjects(st), "MISSING subjects %s lack %s", eh.missing_subjects(st),
         want)
    sub = re_pb2.Directory()
    file_node(c, sub, "f", os.urandom(9))
    sd = rc.digest_of(sub.SerializeToString(deterministic=True))  # not uploaded
    root = re_pb2.Directory()
    root.directories.add(name="gone", digest=sd)
    ad = eh.upload_action(c, [BASH, "-c", "true"], root=c.upload_message(root))
    _msg, st, _w = expect(c, ad, PRECONDITION, None, "missing subdirectory")
    want = "blobs/%s/%d" % (sd.hash, sd.size_bytes)
    need(eh.missing_subjects(st) == [want], "MISSING subjects %s, want [%s]",
         eh.missing_subjects(st), want)


# -- the request itself -----------------------------------------------------------------------

@check("malformed action digest (bad hash, negative size, unset) -> INVALID_ARGUMENT naming it")
def _(ctx):
    _d, c = ctx.main()
    h = rc.digest_of(b"casbox").hash
    cases = [
        ("63-char hash", re_pb2.Digest(hash=h[:63], size_bytes=6), h[:63]),
        ("non-hex hash", re_pb2.Digest(hash="g" * 64, size_bytes=6), "g" * 64),
        ("65-char hash", re_pb2.Digest(hash=h + "0", size_bytes=6), h + "0"),
        ("negative size", re_pb2.Digest(hash=h, size_bytes=-1), ("-1", "size")),
        ("no digest", None, ("action_digest", "digest")),
    ]
    for desc, dg, mention in cases:
        got, msg, _st, where = exec_req(c, dg)
        need(got == INVALID, "Execute with %s: %s %r (%s), want INVALID_ARGUMENT", desc,
             rc.code_name(got), msg, where)
        alts = (mention,) if isinstance(mention, str) else mention
        need(any(a.lower() in msg.lower() for a in alts), "%s: message %r does not name %s",
             desc, msg, " or ".join(repr(a) for a in alts))


def exec_req(c, dg):
    req = re_pb2.ExecuteRequest(skip_cache_lookup=True)
    if dg is not None:
        req.action_digest.CopyFrom(dg)
    try:
        ops = list(c._us("/" + rc.RE + "Execution/Execute", operations_pb2.Operation)(
            req, timeout=30))
    except grpc.RpcError as e:
        code, msg, st = rc.rpc_status(e)
        return code.value[0], msg, st, "grpc"
    need(ops and ops[-1].done and not ops[-1].HasField("error"), "bad Operation stream %s", ops)
    r = c.execute_response(ops[-1])
    return r.status.code, r.status.message, r.status, "response"


@check("undecodable ExecuteRequest / WaitExecutionRequest bytes -> INVALID_ARGUMENT")
def _(ctx):
    _d, c = ctx.main()
    for m in ("Execute", "WaitExecution"):
        call = c.channel.unary_stream("/" + rc.RE + "Execution/" + m)
        try:
            got = list(call(b"\x0a\xff\xff\xff\x0f\x01", timeout=10))
        except grpc.RpcError as e:
            code, msg, _st = rc.rpc_status(e)
            need(code == grpc.StatusCode.INVALID_ARGUMENT, "%s with junk bytes: %s %r", m,
                 rc.code_name(code), msg)
            continue
        raise eh.Fail("%s with junk bytes answered %d messages" % (m, len(got)))


@check("after all of that, a good action still executes")
def _(ctx):
    for get in (ctx.main, ctx.tight):
        _d, c = get()
        ad = eh.upload_action(c, [BASH, "-c", "echo fine"])
        _ops, resp = eh.execute(c, ad)
        need(resp.status.code == C_OK and resp.result.exit_code == 0 and
             eh.read_blob(c, resp.result.stdout_digest) == b"fine\n",
             "good action: %s %r exit %d", rc.code_name(resp.status.code), resp.status.message,
             resp.result.exit_code)


def make_ctx(ds):
    _d, c = ds.get("main")
    caps = c.get_capabilities()
    need(caps.execution_capabilities.exec_enabled,
         "casboxd does not advertise execution (GetCapabilities: exec_enabled is false)")
    return Ctx(ds)


if __name__ == "__main__":
    sys.exit(eh.main(__doc__, check, make_ctx, "casbox-e2e-execbad-"))
