#!/usr/bin/python3
"""End-to-end: SIGHUP re-reads casboxd's configuration file.

Keys that are safe at run time apply to the next action (here:
accepted_properties and stdio_bytes); keys that need a restart are kept and
logged; a broken file changes nothing and the daemon keeps serving.
"""

import os
import shutil
import signal
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import exec_helpers as eh  # noqa: E402
import reapi_client as rc  # noqa: E402


def write(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def wait_log(d, needle, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(d.log_path, errors="replace") as f:
            if needle in f.read():
                return True
        time.sleep(0.05)
    return False


def main():
    failures = 0
    tmp = tempfile.mkdtemp(prefix="casbox-e2e-reload.")
    conf = os.path.join(tmp, "casboxd.conf")
    write(conf, "[execution]\nstdio_bytes = 64M\n")
    d = rc.Casboxd(os.path.join(tmp, "state"), extra_args=["--config", conf])
    d.start()
    try:
        c = rc.Client(d.target)

        def check(name, cond, why):
            nonlocal failures
            print("%s  %s%s" % ("ok  " if cond else "FAIL", name, "" if cond else "\n      " + why))
            failures += 0 if cond else 1

        ad = eh.upload_action(c, ["/bin/true"], env=eh.ENV, platform={"Pool": "big"})
        code, msg, _st, _w = eh.exec_status(c, ad)
        check("before reload: unknown property Pool is rejected",
              code == 3 and "Pool" in msg, "got code %d %r" % (code, msg))

        write(conf, "[server]\nrpc_threads = 3\n[execution]\nstdio_bytes = 1K\n"
                    "accepted_properties = Pool\n")
        os.kill(d.proc.pid, signal.SIGHUP)
        check("reload logged", wait_log(d, "reload: 2 key(s) applied, 1 need a restart"),
              "log:\n" + d.log_tail())
        ad = eh.upload_action(c, ["/bin/true"], env=eh.ENV, platform={"Pool": "big"})
        _ops, resp = eh.execute(c, ad)
        check("after reload: Pool is accepted", resp.status.code == 0 and
              resp.result.exit_code == 0, "status %s exit %d" % (resp.status, resp.result.exit_code))
        ad = eh.upload_action(c, ["/bin/sh", "-c", "head -c 100000 /dev/zero"], env=eh.ENV)
        _ops, resp = eh.execute(c, ad)
        out = eh.read_blob(c, resp.result.stdout_digest)
        check("after reload: stdio_bytes = 1K caps stdout", len(out) == 1024,
              "stdout has %d bytes" % len(out))
        check("restart-only key logged, not applied",
              wait_log(d, "'rpc_threads = 3' needs a restart"), "log:\n" + d.log_tail())

        write(conf, "[execution]\nstdio_bytes = lots\n")
        os.kill(d.proc.pid, signal.SIGHUP)
        check("a broken file changes nothing",
              wait_log(d, "reload: the configuration has errors"), "log:\n" + d.log_tail())
        ad = eh.upload_action(c, ["/bin/true"], env=eh.ENV, platform={"Pool": "big"})
        _ops, resp = eh.execute(c, ad)
        check("still serving with the previous configuration", resp.status.code == 0,
              "status %s" % resp.status)
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n%s" % ("all passed" if failures == 0 else "%d failed" % failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
