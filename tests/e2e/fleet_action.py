#!/usr/bin/python3
"""One action through a casbox fleet, for test_fleet.sh; not a test.

    fleet_action.py --target HOST:PORT [--sleep S] [--platform K=V ...]
                    [--expect-code CODE]

Uploads a fresh action (unique salt) that sleeps S seconds and prints "ok",
executes it (skipping the cache) and prints one line:
    ok WORKER STDOUT          the action succeeded (exit 0, status OK)
    status CODE MESSAGE       it failed (gRPC or ExecuteResponse status)
Exit 0 when the outcome is what was asked: success, or --expect-code.
"""

import argparse
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import exec_helpers as eh  # noqa: E402
import reapi_client as rc  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--sleep", type=float, default=0)
    ap.add_argument("--platform", action="append", default=[])
    ap.add_argument("--expect-code", default=None)
    ap.add_argument("--timeout", type=float, default=240)
    args = ap.parse_args()
    platform = dict(p.split("=", 1) for p in args.platform) or None
    c = rc.Client(args.target, timeout=args.timeout)
    ad = eh.upload_action(c, ["/bin/sh", "-c", "sleep %s; echo ok" % args.sleep],
                          action_platform=platform)
    try:
        _ops, resp = eh.execute(c, ad, skip_cache_lookup=True, timeout=args.timeout)
        code, msg = grpc.StatusCode.OK, ""
        if resp.status.code != 0:
            code = [s for s in grpc.StatusCode if s.value[0] == resp.status.code][0]
            msg = resp.status.message
    except grpc.RpcError as e:
        code, msg, _st = rc.rpc_status(e)
    if code == grpc.StatusCode.OK:
        out = eh.read_blob(c, resp.result.stdout_digest).decode(errors="replace")
        print("ok %s %s exit=%d" % (resp.result.execution_metadata.worker, out.strip() or "-",
                                    resp.result.exit_code))
        return 0 if args.expect_code is None and resp.result.exit_code == 0 and \
            out == "ok\n" else 1
    print("status %s %s" % (code.name, msg))
    return 0 if args.expect_code == code.name else 1


if __name__ == "__main__":
    sys.exit(main())
