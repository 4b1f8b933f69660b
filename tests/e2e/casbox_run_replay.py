#!/usr/bin/python3
"""Replay checks of `casbox run --action` against a running casboxd (a helper
of test_casbox_run.sh, not a test by itself).

    casbox_run_replay.py --target HOST:PORT --casbox PATH [--label NAME]

Each check executes an action on the daemon (Execute, skip_cache_lookup),
then replays it with `casbox run --action HASH/SIZE --remote grpc://TARGET`
and compares what the replay printed with the daemon's ActionResult:
  - a deterministic action (a 3 MiB input fetched with ByteStream.Read, the
    rest with BatchReadBlobs; outputs: a file, an executable, a directory,
    a symlink) gives the same output digests, and --compare exits 0;
  - an action writing the time differs: --compare exits 1 naming the file;
  - a failing action replays with its exit code; --compare has no cached
    result to compare with (125);
  - an action the server does not have: 125, naming the digest;
  - --dry-run prints the sandbox spec.
One line per check; exit status 1 when any failed.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reapi_client as rc  # noqa: E402
from reapi_client import re_pb2  # noqa: E402

LABEL = "replay"
FAILS = []


def ok(msg):
    print("[%s] ok   %s" % (LABEL, msg), file=sys.stderr, flush=True)


def fail(msg):
    print("[%s] FAIL: %s" % (LABEL, msg), file=sys.stderr, flush=True)
    FAILS.append(msg)


def upload_tree(c, spec):
    """spec: name -> bytes | (bytes, executable) | dict. Returns the root digest."""
    d = re_pb2.Directory()
    for name in sorted(spec):
        v = spec[name]
        if isinstance(v, dict):
            d.directories.add(name=name, digest=upload_tree(c, v))
            continue
        data, exe = (v, False) if isinstance(v, bytes) else v
        dg = c.upload_bytestream(data) if len(data) > (1 << 20) else c.upload_blob(data)
        d.files.add(name=name, digest=dg, is_executable=exe)
    return c.upload_message(d)


def execute(c, argv, tree, outputs):
    cmd = re_pb2.Command(arguments=argv, output_paths=outputs)
    cmd.environment_variables.add(name="PATH", value="/usr/bin:/bin")
    act = re_pb2.Action(command_digest=c.upload_message(cmd), input_root_digest=upload_tree(c, tree))
    ad = c.upload_message(act)
    ops = c.execute(ad, skip_cache_lookup=True, timeout=120)
    r = c.execute_response(ops[-1])
    if r is None or r.status.code != 0:
        raise AssertionError("Execute of %s failed: %s" % (rc.dstr(ad), r.status if r else ops[-1]))
    return ad, r.result


def replay(casbox, target, instance, ad, *extra):
    args = [casbox, "run", "--action", rc.dstr(ad), "--remote", "grpc://" + target]
    if instance:
        args += ["--instance", instance]
    p = subprocess.run(args + list(extra), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=300)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def printed_outputs(text):
    """{(kind, path): value} from the replay's ActionResult text."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(output_file|output_directory|output_symlink): (\S+) (.*)$", line)
        if m:
            out[(m.group(1), m.group(2))] = m.group(3)
        if line.startswith("compared with"):
            break
    return out


def expected_outputs(result):
    out = {}
    for f in result.output_files:
        out[("output_file", f.path)] = rc.dstr(f.digest) + (" executable" if f.is_executable else "")
    for d in result.output_directories:
        out[("output_directory", d.path)] = "tree " + rc.dstr(d.tree_digest)
    for s in list(result.output_symlinks) + list(result.output_file_symlinks) + \
            list(result.output_directory_symlinks):
        out[("output_symlink", s.path)] = "-> " + s.target
    return out


def main():
    global LABEL
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--casbox", required=True)
    ap.add_argument("--instance", default="casbox-run/e2e")
    ap.add_argument("--label", default="replay")
    a = ap.parse_args()
    LABEL = a.label
    c = rc.Client(a.target, instance=a.instance, timeout=120)

    # -- the same outputs, bit for bit --------------------------------------------------
    big = os.urandom(3 << 20)
    tree = {"src": {"in.txt": b"hello replay\n", "big.bin": big,
                    "tool.sh": (b"#!/bin/sh\necho tool says $1\n", True)}}
    script = ("set -e; mkdir -p out/dir/sub; tr a-z A-Z < src/in.txt > out/up.txt; "
              "./src/tool.sh hi > out/dir/sub/t; sha256sum src/big.bin > out/dir/sum; "
              "cp src/tool.sh out/tool; ln -s up.txt out/link; echo on-stdout; echo on-stderr >&2")
    ad, result = execute(c, ["/bin/sh", "-c", script], tree,
                         ["out/up.txt", "out/tool", "out/dir", "out/link"])
    if result.exit_code != 0:
        fail("the daemon ran the action with exit code %d" % result.exit_code)
    want = expected_outputs(result)
    code, out, err = replay(a.casbox, a.target, a.instance, ad, "--compare")
    got = printed_outputs(out)
    if code == 0 and got == want and "result: the same" in out:
        ok("replay of %s gives the daemon's output digests (%d outputs), --compare exits 0"
           % (rc.dstr(ad), len(want)))
    else:
        fail("replay --compare: exit %d; printed %s; daemon %s; stderr %s; stdout %s"
             % (code, got, want, err.strip()[-400:], out[-600:]))
    if "--- stdout (10 bytes) ---\non-stdout" in out and "on-stderr" in out:
        ok("the replay prints the action's stdout and stderr")
    else:
        fail("stdout/stderr not printed: %s" % out[-400:])
    if re.search(r"^exit_code: 0$", out, re.M):
        ok("the replay prints the exit code")
    else:
        fail("no exit_code line: %s" % out[:300])
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o1777)  # casbox may run as another user (--casbox wrapper)
        jpath = os.path.join(tmp, "r.json")
        code, out, err = replay(a.casbox, a.target, a.instance, ad, "--json", jpath)
        try:
            with open(jpath) as f:
                j = json.load(f)
        except (OSError, ValueError) as e:
            j = {"error": str(e)}
        if code == 0 and printed_outputs(out) == want and j.get("action") == rc.dstr(ad) and \
                j.get("exit_code") == 0 and j.get("argv", [None])[0] == "/bin/sh":
            ok("replay without --compare, with a --json report")
        else:
            fail("replay --json: exit %d, json %s, stderr %s" % (code, j, err.strip()[-300:]))

    # -- a difference is found -------------------------------------------------------------
    ad, result = execute(c, ["/bin/sh", "-c", "date +%s%N > t; echo same > s"], {},
                         ["t", "s"])
    code, out, err = replay(a.casbox, a.target, a.instance, ad, "--compare")
    if code == 1 and re.search(r"DIFFERENT\s+output_file t:", out) and \
            re.search(r"same\s+output_file s ", out):
        ok("--compare exits 1 and names the output that differs")
    else:
        fail("--compare of a nondeterministic action: exit %d, %s %s" % (code, out[-500:], err[-200:]))

    # -- a failing action ----------------------------------------------------------------------
    ad, result = execute(c, ["/bin/sh", "-c", "echo failing >&2; exit 3"], {}, [])
    code, out, err = replay(a.casbox, a.target, a.instance, ad)
    if code == 3 and re.search(r"^exit_code: 3$", out, re.M) and "failing" in out:
        ok("a failing action replays with its exit code (3)")
    else:
        fail("failing action: exit %d, %s %s" % (code, out[-300:], err[-200:]))
    code, out, err = replay(a.casbox, a.target, a.instance, ad, "--compare")
    if code == 125 and "no cached ActionResult" in err:
        ok("--compare without a cached result: 125, one clear line")
    else:
        fail("--compare of an uncached action: exit %d, %s" % (code, err[-300:]))

    # -- an action the server does not have ----------------------------------------------------
    missing = rc.digest_of(b"casbox run: no such action " + os.urandom(8))
    code, out, err = replay(a.casbox, a.target, a.instance, missing)
    if code == 125 and missing.hash in err:
        ok("an action the server does not have: 125, naming it")
    else:
        fail("missing action: exit %d, %s" % (code, err[-300:]))

    # -- --dry-run ----------------------------------------------------------------------------
    ad, result = execute(c, ["/bin/true"], {}, [])
    code, out, err = replay(a.casbox, a.target, a.instance, ad, "--dry-run")
    if code == 0 and 'argv: "/bin/true"' in out and "seccomp: default" in out:
        ok("--dry-run prints the sandbox spec casboxd would use")
    else:
        fail("--dry-run: exit %d, %s %s" % (code, out[-300:], err[-200:]))

    c.close()
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
