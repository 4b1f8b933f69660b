#!/usr/bin/python3
"""End-to-end: casboxd's /metrics and web pages ([http] listen).

/metrics must parse as the Prometheus text exposition format (checked by the
small parser below, not by trusting the daemon), follow the naming
conventions, and its counters must move by exactly what a known sequence of
gRPC calls did: an upload by BatchUpdateBlobs and by ByteStream, a
FindMissingBlobs, an ActionCache miss and hit, a failing action, a timeout
and a clean one. The pages are loaded by Debian's real chromium in headless
mode (--dump-dom, and a --screenshot kept in the log dir): the overview while
an action runs shows it with its mnemonic from RequestMetadata; the page of a
finished failing action shows its exit code, stdout and stderr (escaped) and
an output link that downloads the right bytes; an unknown digest is a 404
page. Bad input: malformed paths and digests, a huge query string, huge
headers, a body, other methods, slow clients and more connections than
[http] max_connections get clear HTTP errors, memory stays bounded and the
gRPC side keeps answering.
With [tls] the listener is HTTPS only (curl --cacert; a plain request gets no
answer), a token is still needed under [auth], SIGHUP serves a new
certificate there too, and with client_ca a request needs a client
certificate of that CA whose name has read.
"""

import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import exec_helpers as eh  # noqa: E402
import reapi_client as rc  # noqa: E402
from exec_helpers import Fail, need  # noqa: E402
from reapi_client import re_pb2, operations_pb2  # noqa: E402

checks = eh.Checks()
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
METADATA_KEY = "build.bazel.remote.execution.v2.requestmetadata-bin"


# -- a checker of the exposition format -----------------------------------------

NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def parse_value(s):
    if s in ("+Inf", "-Inf", "NaN"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.match(r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$", s):
        raise Fail("sample value %r is not a number" % s)
    return float(s)


def parse_labels(text, line):
    """'a="x",b="y"' -> (("a","x"),("b","y"))."""
    out, pos = [], 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        if not m:
            raise Fail("bad label set in line %r" % line)
        value = m.group(2).replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        out.append((m.group(1), value))
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise Fail("labels not separated by ',' in line %r" % line)
            pos += 1
    names = [k for k, _ in out]
    if len(set(names)) != len(names):
        raise Fail("repeated label name in line %r" % line)
    return tuple(out)


def parse_exposition(text):
    """{family: {"type", "help", "samples": {(name, labels): value}}}; raises
    Fail on anything the text format (0.0.4) does not allow."""
    fams, current = {}, None
    if not text.endswith("\n"):
        raise Fail("the exposition does not end with a newline")
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            parts = line.split(" ", 3)
            if len(parts) < 4 or not NAME_RE.match(parts[2]):
                raise Fail("malformed comment line %r" % line)
            f = fams.setdefault(parts[2], {"type": None, "help": None, "samples": {}})
            if line.startswith("# TYPE "):
                if f["type"] is not None or f["samples"]:
                    raise Fail("TYPE of %s repeated or after its samples" % parts[2])
                if parts[3] not in ("counter", "gauge", "histogram", "summary", "untyped"):
                    raise Fail("unknown type in %r" % line)
                f["type"] = parts[3]
            else:
                if f["help"] is not None:
                    raise Fail("HELP of %s repeated" % parts[2])
                f["help"] = parts[3]
            current = parts[2]
            continue
        if line.startswith("#") or line == "":
            if line == "":
                raise Fail("empty line in the exposition")
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?[0-9]+)?$", line)
        if not m:
            raise Fail("malformed sample line %r" % line)
        name, labels, value = m.group(1), parse_labels(m.group(3) or "", line), m.group(4)
        fam = None
        for cand in (name, re.sub(r"_(bucket|sum|count)$", "", name)):
            if cand in fams:
                fam = cand
                break
        if fam is None or fam != current:
            raise Fail("sample %r is not under its family's TYPE line" % line)
        key = (name, labels)
        if key in fams[fam]["samples"]:
            raise Fail("duplicate sample %r" % line)
        fams[fam]["samples"][key] = parse_value(value)
    for name, f in fams.items():
        check_family(name, f)
    return fams


def check_family(name, f):
    """Prometheus' naming and type conventions, and histogram consistency."""
    if f["type"] is None or f["help"] is None:
        raise Fail("%s lacks a TYPE or HELP line" % name)
    if not (name.startswith("casbox_") or name.startswith("process_")):
        raise Fail("%s has neither the casbox_ nor the process_ prefix" % name)
    if name != name.lower():
        raise Fail("%s is not snake_case" % name)
    if re.search(r"_(ms|milliseconds|us|microseconds|kb|mb|kib|mib)(_|$)", name):
        raise Fail("%s uses a unit other than the base units (seconds, bytes)" % name)
    if f["type"] == "counter":
        if not name.endswith("_total"):
            raise Fail("counter %s does not end in _total" % name)
        for (_n, lab), v in f["samples"].items():
            if v < 0:
                raise Fail("counter %s%s is negative" % (name, lab))
    elif name.endswith("_total"):
        raise Fail("%s ends in _total but is a %s" % (name, f["type"]))
    if f["type"] == "histogram":
        series = {}
        for (n, lab), v in f["samples"].items():
            base = tuple(x for x in lab if x[0] != "le")
            s = series.setdefault(base, {"buckets": [], "sum": None, "count": None})
            if n == name + "_bucket":
                le = dict(lab).get("le")
                if le is None:
                    raise Fail("%s bucket without le" % name)
                s["buckets"].append((parse_value(le), v))
            elif n == name + "_sum":
                s["sum"] = v
            elif n == name + "_count":
                s["count"] = v
            else:
                raise Fail("%s: unexpected sample %s" % (name, n))
        for base, s in series.items():
            b = sorted(s["buckets"])
            if not b or b[-1][0] != float("inf") or s["count"] is None or s["sum"] is None:
                raise Fail("%s%s lacks +Inf, _sum or _count" % (name, base))
            if any(b[i][1] > b[i + 1][1] for i in range(len(b) - 1)):
                raise Fail("%s%s buckets are not cumulative" % (name, base))
            if b[-1][1] != s["count"]:
                raise Fail("%s%s: +Inf bucket %s != _count %s" % (name, base, b[-1][1],
                                                                   s["count"]))
    for (_n, lab) in f["samples"]:
        for k, v in lab:
            if re.fullmatch(r"[0-9a-f]{64}", v):
                raise Fail("%s has a digest as a label value (%s)" % (name, k))


def value(fams, name, sample=None, **labels):
    """One sample's value (0 when absent)."""
    fam = re.sub(r"_(bucket|sum|count)$", "", name) if name not in fams else name
    key = (sample or name, tuple(sorted(labels.items())))
    for (n, lab), v in fams.get(fam, {"samples": {}})["samples"].items():
        if n == key[0] and tuple(sorted(lab)) == key[1]:
            return v
    return 0.0


# -- HTTP and the browser ---------------------------------------------------------

def http_get(ctx, path, method="GET", headers=None, body=None):
    """(status, headers dict, body bytes) of one request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", ctx.http_port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def raw_request(ctx, data, timeout=30):
    """Sends raw bytes, returns what came back until the server closed."""
    s = socket.create_connection(("127.0.0.1", ctx.http_port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
            if b"\r\n\r\n" in out and len(out) > 64 * 1024:
                return out
    except socket.timeout:
        return out
    finally:
        s.close()


def metrics(ctx):
    status, hdrs, body = http_get(ctx, "/metrics")
    need(status == 200, "/metrics answered %d", status)
    need(hdrs.get("content-type", "").startswith("text/plain; version=0.0.4"),
         "/metrics Content-Type %r", hdrs.get("content-type"))
    return parse_exposition(body.decode())


def chromium(ctx, path, screenshot=None):
    """The DOM chromium (headless, no sandbox: we are root) builds for path."""
    need(os.access(CHROMIUM, os.X_OK), "chromium is not installed (scripts/setup installs it)")
    profile = tempfile.mkdtemp(prefix="casbox-chromium.")
    url = "http://127.0.0.1:%d%s" % (ctx.http_port, path)
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-dev-shm-usage", "--user-data-dir=" + profile]
    try:
        r = subprocess.run(base + ["--dump-dom", url], capture_output=True, timeout=180)
        need(r.returncode == 0 and r.stdout, "chromium --dump-dom %s failed (%d): %s", url,
             r.returncode, r.stderr.decode(errors="replace")[-800:])
        if screenshot:
            shot = os.path.join(ctx.ds.logdir, screenshot)
            r2 = subprocess.run(base + ["--window-size=1280,1600", "--screenshot=" + shot, url],
                                capture_output=True, timeout=180)
            need(r2.returncode == 0 and os.path.getsize(shot) > 1000,
                 "chromium --screenshot of %s failed (%d): %s", url, r2.returncode,
                 r2.stderr.decode(errors="replace")[-800:])
            print("      screenshot: %s" % shot, flush=True)
        return r.stdout.decode(errors="replace")
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def hexsize(d):
    return "%s/%d" % (d.hash, d.size_bytes)


class Ctx:
    pass


def make_ctx(ds):
    ctx = Ctx()
    ctx.ds = ds
    ctx.http_port = rc.free_port()
    ctx.d, ctx.c = ds.get("main", extra_args=[
        "--set", "http.listen=127.0.0.1:%d" % ctx.http_port,
        "--set", "http.max_connections=16",
        "--set", "http.connection_timeout=2",
        "--set", "http.inline_bytes=4K",
        "--set", "http.history_size=50",
        "--set", "execution.slots=3",
    ])
    return ctx


def execute_with_metadata(c, ad, mnemonic, target, timeout=120):
    """An Execute stream carrying RequestMetadata, read on a thread."""
    md = re_pb2.RequestMetadata(action_mnemonic=mnemonic, target_id=target,
                                tool_invocation_id="test-web")
    call = c._us("/" + rc.RE + "Execution/Execute", operations_pb2.Operation)(
        re_pb2.ExecuteRequest(action_digest=ad, skip_cache_lookup=True), timeout=timeout,
        metadata=[(METADATA_KEY, md.SerializeToString())])
    ops = []

    def run():
        try:
            for op in call:
                ops.append(op)
        except Exception:  # noqa: BLE001 - cancelled at the end of the test
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return call, ops


# -- checks -------------------------------------------------------------------------

@checks("/metrics parses as the exposition format and follows the naming conventions")
def check_metrics_format(ctx):
    fams = metrics(ctx)
    for name in ("casbox_grpc_requests_total", "casbox_grpc_request_duration_seconds",
                 "casbox_grpc_requests_in_flight", "casbox_cas_blobs", "casbox_cas_bytes",
                 "casbox_cas_evicted_blobs_total", "casbox_cas_verification_failures_total",
                 "casbox_cas_transfer_bytes_total", "casbox_cas_find_missing_digests_total",
                 "casbox_action_cache_lookups_total", "casbox_execution_actions_total",
                 "casbox_execution_queue_length", "casbox_execution_queue_wait_seconds",
                 "casbox_execution_stage_duration_seconds", "casbox_sandbox_setup_seconds",
                 "casbox_fuse_read_bytes_total", "process_cpu_seconds_total",
                 "process_resident_memory_bytes", "process_open_fds", "process_max_fds",
                 "process_threads", "process_start_time_seconds", "casbox_http_requests_total"):
        need(name in fams, "family %s missing from /metrics", name)
    need(fams["casbox_grpc_request_duration_seconds"]["type"] == "histogram",
         "grpc latency is not a histogram")
    need(value(fams, "process_resident_memory_bytes") > 1 << 20, "resident memory implausible")
    # the checker itself must reject what the format does not allow
    for bad in ("# TYPE x_total counter\nx_total -1\n", "# TYPE casbox_a counter\ncasbox_a 1\n",
                "# HELP casbox_b b\n# TYPE casbox_b gauge\ncasbox_b{x=\"1} 2\n",
                "# HELP casbox_c c\n# TYPE casbox_c gauge\ncasbox_c 1\ncasbox_c 2\n"):
        try:
            parse_exposition(bad)
        except Fail:
            continue
        raise Fail("the exposition checker accepted %r" % bad)


@checks("counters move by what an upload, a cache miss and hit, a failure and a timeout did")
def check_counters_move(ctx):
    c = ctx.c
    cas = "build.bazel.remote.execution.v2.ContentAddressableStorage"
    ac = "build.bazel.remote.execution.v2.ActionCache"

    def deltas(before, after, expect):
        bad = []
        for names, labels, want in expect:
            sample = names[1] if len(names) > 1 else None
            got = (value(after, names[0], sample, **labels)
                   - value(before, names[0], sample, **labels))
            if got != want:
                bad.append("%s%s moved by %s, expected %s" % (names[-1], labels, got, want))
        need(not bad, "; ".join(bad))

    # uploads and FindMissingBlobs
    s0 = metrics(ctx)
    data = os.urandom(3000)
    d1 = rc.digest_of(data)
    c.batch_update([(d1, data)])
    c.upload_bytestream(os.urandom(5000))
    missing = c.find_missing([d1, rc.digest_of(os.urandom(10)), rc.digest_of(os.urandom(11))])
    need(len(missing) == 2, "FindMissingBlobs: %d missing", len(missing))
    try:
        c.raw_unary("/casbox.test.NoSuchService/Guess-" + os.urandom(4).hex(), b"")
        raise Fail("an unknown method answered")
    except rc.grpc.RpcError as e:
        need(e.code() == rc.grpc.StatusCode.UNIMPLEMENTED, "unknown method: %s", e.code())
    s1 = metrics(ctx)
    deltas(s0, s1, [
        (("casbox_grpc_requests_total",), dict(service=cas, method="FindMissingBlobs",
                                                code="OK"), 1),
        (("casbox_grpc_requests_total",), dict(service=cas, method="BatchUpdateBlobs",
                                                code="OK"), 1),
        (("casbox_grpc_request_duration_seconds", "casbox_grpc_request_duration_seconds_count"),
         dict(service=cas, method="FindMissingBlobs"), 1),
        (("casbox_cas_transfer_blobs_total",), dict(direction="written", api="batch"), 1),
        (("casbox_cas_transfer_bytes_total",), dict(direction="written", api="batch"), 3000),
        (("casbox_cas_transfer_blobs_total",), dict(direction="written", api="bytestream"), 1),
        (("casbox_cas_transfer_bytes_total",), dict(direction="written", api="bytestream"),
         5000),
        (("casbox_cas_find_missing_digests_total",), {}, 3),
        (("casbox_cas_find_missing_missing_total",), {}, 2),
        (("casbox_cas_blobs",), {}, 2),
        # the name the client sent never becomes a label
        (("casbox_grpc_requests_total",), dict(service="unknown", method="unknown",
                                                code="UNIMPLEMENTED"), 1),
    ])
    need(value(s1, "casbox_grpc_requests_in_flight", service=cas, method="FindMissingBlobs") == 0,
         "FindMissingBlobs still counted in flight after it finished")
    need(not any("Guess-" in v for f in s1.values() for (_n, lab) in f["samples"]
                 for _k, v in lab), "a client-chosen method name became a label value")

    # the ActionCache and executions
    ad_fail = eh.upload_action(c, [eh.SH, "-c", "echo out; exit 3"])
    ad_timeout = eh.upload_action(c, [eh.SH, "-c", "sleep 30"], timeout=1)
    ad_ok = eh.upload_action(c, [eh.SH, "-c", "echo fine"])
    s2 = metrics(ctx)
    try:
        c.get_action_result(ad_ok)
        raise Fail("GetActionResult of a never-run action answered")
    except rc.grpc.RpcError as e:
        need(e.code() == rc.grpc.StatusCode.NOT_FOUND, "GetActionResult miss: %s", e.code())
    _ops, resp = eh.execute(c, ad_fail)
    need(resp.result.exit_code == 3, "failing action exit %d", resp.result.exit_code)
    code, msg, _st, _w = eh.exec_status(c, ad_timeout)
    need(code == eh.code_value("DEADLINE_EXCEEDED"), "timeout gave %d %r", code, msg)
    _ops, resp = eh.execute(c, ad_ok)
    need(resp.result.exit_code == 0, "ok action exit %d", resp.result.exit_code)
    c.get_action_result(ad_ok)  # a hit: the clean success was cached
    _ops, resp = eh.execute(c, ad_ok, skip_cache_lookup=False)
    need(resp.cached_result, "Execute of a cached action did not answer from the cache")
    s3 = metrics(ctx)
    deltas(s2, s3, [
        (("casbox_grpc_requests_total",), dict(service=ac, method="GetActionResult",
                                                code="NOT_FOUND"), 1),
        (("casbox_grpc_requests_total",), dict(service=ac, method="GetActionResult", code="OK"),
         1),
        (("casbox_action_cache_lookups_total",), dict(via="get_action_result", result="miss"),
         1),
        (("casbox_action_cache_lookups_total",), dict(via="get_action_result", result="hit"), 1),
        (("casbox_action_cache_lookups_total",), dict(via="execute", result="hit"), 1),
        (("casbox_execution_actions_total",), dict(outcome="exit_nonzero"), 1),
        (("casbox_execution_actions_total",), dict(outcome="timeout"), 1),
        (("casbox_execution_actions_total",), dict(outcome="ok"), 1),
        (("casbox_execution_stage_duration_seconds",
          "casbox_execution_stage_duration_seconds_count"), dict(stage="execution"), 3),
        (("casbox_execution_queue_wait_seconds", "casbox_execution_queue_wait_seconds_count"),
         {}, 3),
        (("casbox_sandbox_setup_seconds", "casbox_sandbox_setup_seconds_count"), {}, 3),
        (("casbox_cas_transfer_blobs_total",), dict(direction="written", api="batch"), 0),
    ])
    need(value(s3, "casbox_execution_queue_length") == 0, "queue not empty after the runs")
    with open(ctx.d.log_path, errors="replace") as f:
        fuse = "input staging: fuse" in f.read()
    if fuse:
        ops = sum(v for (n, _l), v in s3["casbox_fuse_requests_total"]["samples"].items())
        ops0 = sum(v for (n, _l), v in s2["casbox_fuse_requests_total"]["samples"].items())
        need(ops > ops0, "staged through FUSE, but casbox_fuse_requests_total did not move")


@checks("the overview shows a running action with its mnemonic (chromium --dump-dom)")
def check_overview_running(ctx):
    c = ctx.c
    ad = eh.upload_action(c, [eh.SH, "-c", "sleep 40"], timeout=120)
    call, ops = execute_with_metadata(c, ad, "CppCompile<x>", "//web:running_target")
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not any(
                eh.stage(o) == "EXECUTING" for o in ops):
            time.sleep(0.1)
        need(any(eh.stage(o) == "EXECUTING" for o in ops), "the action never reached EXECUTING")
        # The pipeline reports its step: the sleep is in stage running.
        while time.time() < deadline and value(
                metrics(ctx), "casbox_execution_actions_by_stage", stage="running") < 1:
            time.sleep(0.1)
        fams = metrics(ctx)
        need(value(fams, "casbox_execution_actions_by_stage", stage="running") == 1,
             "casbox_execution_actions_by_stage{stage=\"running\"} never reached 1")
        dom = chromium(ctx, "/", screenshot="overview.png")
        m = re.search(r'<table id="running">(.*?)</table>', dom, re.S)
        need(m, "the overview has no running table while %s runs:\n%s", hexsize(ad), dom[:2000])
        row = m.group(1)
        need(ad.hash[:12] in row, "running table lacks %s", hexsize(ad))
        need("CppCompile&lt;x&gt;" in row, "running table lacks the escaped mnemonic:\n%s", row)
        need("CppCompile<x>" not in row, "the mnemonic was not escaped")
        need("//web:running_target" in row, "running table lacks the target")
        need('data-stage="running">running<' in row, "running row lacks the stage 'running':\n%s",
             row)
        need(re.search(r'class="span-queued">queued [0-9.]+ (?:µs|ms|s|min)', row) and
             re.search(r'class="span-inputs">inputs [0-9.]+ (?:µs|ms|s|min)', row) and
             re.search(r'class="span-running">running [0-9.]+ (?:µs|ms|s|min)', row) and
             "span-outputs" not in row,
             "running row lacks the elapsed time of each stage reached so far:\n%s", row)
        need(re.search(r'id="chart-hit-rate"', dom) and re.search(r'id="chart-throughput"', dom),
             "the overview lacks its charts")
    finally:
        call.cancel()


@checks("a failed action's page: exit code, stdout, escaped stderr and argv, output link")
def check_action_page(ctx):
    c = ctx.c
    script = ("echo hello-stdout; echo '<b>bold-stderr</b>' >&2; printf payload-bytes > out.txt;"
              " : '<script>alert(1)</script>'; exit 7")
    ad = eh.upload_action(c, [eh.SH, "-c", script], output_paths=["out.txt"])
    _ops, resp = eh.execute(c, ad)
    need(resp.result.exit_code == 7, "exit %d", resp.result.exit_code)
    # The slot files the result on the board right after the client has it.
    link = "/action/%s" % hexsize(ad)
    deadline = time.time() + 60
    while time.time() < deadline:
        status, _h, body = http_get(ctx, "/history")
        if link.encode() in body:
            break
        time.sleep(0.1)
    # click 1: the overview lists the failed action among the finished ones
    status, _h, body = http_get(ctx, "/")
    m = re.search(rb'<table id="finished">(.*?)</table>', body, re.S)
    need(status == 200 and m and link.encode() in m.group(1),
         "the overview's finished table has no link %s", link)
    dom = chromium(ctx, link, screenshot="action.png")
    m = re.search(r'id="exit-code"[^>]*>(\d+)<', dom)
    need(m and m.group(1) == "7", "exit code on the page: %s", m and m.group(1))
    need(re.search(r'<pre id="stdout">hello-stdout\n?</pre>', dom), "stdout not shown inline")
    need("&lt;b&gt;bold-stderr&lt;/b&gt;" in dom and "<b>bold-stderr" not in dom,
         "stderr not shown escaped")
    need("<script>" not in dom.lower(), "a <script> element reached the page")
    need("&lt;script&gt;alert(1)&lt;/script&gt;" in dom, "argv not shown escaped")
    need("casbox run --action %s --remote grpc://%s" % (hexsize(ad), ctx.d.target) in dom,
         "no casbox-replay line")
    out = [f for f in resp.result.output_files if f.path == "out.txt"]
    need(out, "no output out.txt in the result")
    href = "/blob/%s/out.txt" % hexsize(out[0].digest)
    need('href="%s"' % href in dom, "no output link %s on the page", href)
    status, hdrs, body = http_get(ctx, href)
    need(status == 200 and body == b"payload-bytes", "output link gave %d %r", status, body[:50])
    need(hdrs.get("content-length") == str(len(b"payload-bytes")), "Content-Length %r",
         hdrs.get("content-length"))
    # the history keeps it (the ActionCache does not keep failures)
    status, _h, body = http_get(ctx, "/history")
    need(status == 200 and link.encode() in body, "/history lacks the failed action")


@checks("an unknown digest is a clear 404 page")
def check_unknown_404(ctx):
    d = rc.digest_of(b"never uploaded " + os.urandom(8))
    status, hdrs, body = http_get(ctx, "/action/%s" % hexsize(d))
    need(status == 404, "unknown action answered %d", status)
    need(b"Unknown action" in body and hdrs.get("content-type", "").startswith("text/html"),
         "404 page unclear: %r", body[:300])
    dom = chromium(ctx, "/action/%s" % hexsize(d), screenshot="unknown.png")
    need("404 Unknown action" in dom, "chromium shows no 404 page: %s", dom[:500])
    status, _h, _b = http_get(ctx, "/blob/%s" % hexsize(d))
    need(status == 404, "unknown blob answered %d", status)


@checks("blobs stream with their size; the input root is browsable and escaped")
def check_blob_and_dir(ctx):
    c = ctx.c
    big = os.urandom(3 * 1024 * 1024 + 17)
    root = eh.upload_tree(c, {"x<y>.txt": b"12345", "sub": {"big.bin": big}})
    ad = eh.upload_action(c, ["/bin/true"], root=root)
    status, _h, body = http_get(ctx, "/action/%s" % hexsize(ad))
    need(status == 200, "action page of a never-run action answered %d", status)
    need(('href="/dir/%s"' % hexsize(root)).encode() in body, "no input root link")
    status, _h, body = http_get(ctx, "/dir/%s" % hexsize(root))
    need(status == 200 and b"x&lt;y&gt;.txt" in body and b"x<y>" not in body,
         "the listing does not show the escaped name")
    m = re.search(rb'href="(/dir/[0-9a-f]{64}/\d+)">sub<', body)
    need(m, "no link to the subdirectory")
    status, _h, body = http_get(ctx, m.group(1).decode())
    bd = rc.digest_of(big)
    need(("/blob/%s/big.bin" % hexsize(bd)).encode() in body, "no link to big.bin")
    status, hdrs, body = http_get(ctx, "/blob/%s/big.bin" % hexsize(bd))
    need(status == 200 and hdrs.get("content-length") == str(len(big)),
         "blob: %d, Content-Length %r", status, hdrs.get("content-length"))
    need(hashlib.sha256(body).hexdigest() == bd.hash, "downloaded bytes differ")
    status, hdrs, body = http_get(ctx, "/blob/%s" % hexsize(bd), method="HEAD")
    need(status == 200 and body == b"" and hdrs.get("content-length") == str(len(big)),
         "HEAD: %d %r", status, hdrs.get("content-length"))


@checks("bad input: malformed paths and digests, huge requests, bodies, methods")
def check_bad_input(ctx):
    h = "a" * 64
    cases = [
        ("/action/xyz/1", 400), ("/action/%s/-1" % h, 400), ("/action/%s/1x" % h, 400),
        ("/action/%s/1" % h.upper(), 400), ("/action/%s" % h, 400), ("/action/", 400),
        ("/action/%s/99999999999999999999999" % h, 400), ("/blob/%s/1/a/b" % h, 400),
        ("/blob/%s/1/..%%2fetc" % h, 400), ("/dir/%s/1/extra" % h, 400),
        ("/nothing-here", 404), ("/metrics/x", 404), ("/Metrics", 404),
    ]
    bad = []
    for path, want in cases:
        status, hdrs, body = http_get(ctx, path)
        if status != want or not hdrs.get("content-type", "").startswith("text/html"):
            bad.append("%s: %d (expected %d)" % (path, status, want))
        elif want == 400 and b"expected" not in body and b"unexpected" not in body:
            bad.append("%s: 400 page does not say what was expected" % path)
    need(not bad, "; ".join(bad))
    status, _h, _b = http_get(ctx, "/?" + "q=" + "a" * 200000)
    need(status in (414, 431), "a 200 KB query string answered %d", status)
    status, _h, _b = http_get(ctx, "/", headers={"X-Big": "b" * 100000})
    need(status in (413, 431), "100 KB of headers answered %d", status)
    status, hdrs, _b = http_get(ctx, "/", method="POST", body=b"x" * 1000)
    need(status == 405 and "GET" in hdrs.get("allow", ""), "POST answered %d", status)
    status, _h, _b = http_get(ctx, "/", method="DELETE")
    need(status == 405, "DELETE answered %d", status)
    status, _h, _b = http_get(ctx, "/", headers={"Content-Length": "5"}, body=b"hello")
    need(status == 413, "GET with a body answered %d", status)
    for req, want in ((b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", b"HTTP/1.1 505"),
                      (b"GET / FOO\r\n\r\n", b"HTTP/1.1 400"),
                      (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", b"HTTP/1.1 400")):
        out = raw_request(ctx, req)
        need(out.startswith(want), "%r got %r, expected %r", req, out[:60], want)
    # a line that is no request at all: the connection is closed, nothing served
    out = raw_request(ctx, b"GARBAGE\r\n\r\n")
    need(out == b"" or out.startswith(b"HTTP/1.1 400"), "garbage got %r", out[:60])
    status, _h, _b = http_get(ctx, "/")
    need(status == 200, "the overview after bad requests: %d", status)


@checks("slow clients and too many connections: bounded, and gRPC unaffected")
def check_connections(ctx):
    before = value(metrics(ctx), "process_resident_memory_bytes")
    socks = []
    try:
        # 40 idle connections, more than http.max_connections (16)
        for _ in range(40):
            s = socket.socket()
            s.settimeout(30)
            try:
                s.connect(("127.0.0.1", ctx.http_port))
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
                socks.append(s)
            except OSError:
                s.close()
        t0 = time.time()
        ctx.c.get_capabilities(timeout=10)
        r = ctx.c.find_missing([rc.digest_of(b"grpc still works")])
        need(len(r) == 1, "FindMissingBlobs while HTTP is flooded")
        # a slow client is dropped after http.connection_timeout of silence
        closed = 0
        for s in socks:
            try:
                if s.recv(4096) == b"":
                    closed += 1
            except (socket.timeout, OSError):
                pass
        need(closed == len(socks), "%d of %d idle connections were not closed", len(socks) - closed,
             len(socks))
        print("      %d idle connections dropped by the server" % closed, flush=True)
        del t0
    finally:
        for s in socks:
            s.close()
    # the server serves again once they are gone
    deadline = time.time() + 30
    status = 0
    while time.time() < deadline:
        try:
            status, _h, _b = http_get(ctx, "/metrics")
            if status == 200:
                break
        except OSError:
            time.sleep(0.2)
    need(status == 200, "the HTTP side did not recover")
    # many quick requests: memory stays bounded
    for _ in range(200):
        http_get(ctx, "/action/%s" % ("b" * 64 + "/1"))
    after = value(metrics(ctx), "process_resident_memory_bytes")
    need(after - before < 64 * 1024 * 1024, "resident memory grew by %d bytes", after - before)


@checks("[auth] on: the pages need a bearer token with read on every instance")
def check_auth(ctx):
    tokens = os.path.join(ctx.ds.tmp, "tokens")
    with open(tokens, "w") as f:
        f.write("tok-read read\ntok-team read teamA\ntok-exec execute\n")
    os.chmod(tokens, 0o600)
    port = rc.free_port()
    dmn, _c = ctx.ds.get("auth", ["--set", "auth.tokens_file=" + tokens,
                                  "--set", "http.listen=127.0.0.1:%d" % port])
    ctx.ds.clients["auth"] = rc.Client(dmn.target, token="tok-read")

    def get(path, token=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("GET", path, headers={"Authorization": "Bearer " + token}
                         if token else {})
            r = conn.getresponse()
            return r.status, r.getheader("WWW-Authenticate") or "", r.read()
        finally:
            conn.close()

    for path in ("/", "/metrics", "/history", "/action/%s/1" % ("c" * 64)):
        status, www, _b = get(path)
        need(status == 401 and www.startswith("Bearer"), "%s without a token: %d %r", path,
             status, www)
    for token in ("tok-team", "tok-exec", "nonsense"):
        status, _w, _b = get("/metrics", token)
        need(status == 401, "/metrics with %s: %d", token, status)
    status, _w, body = get("/metrics", "tok-read")
    need(status == 200 and b"casbox_grpc_requests_total" in body, "/metrics with read: %d", status)
    status, _w, _b = get("/", "tok-read")
    need(status == 200, "the overview with read: %d", status)


def curl(url, *args):
    """(exit code, HTTP status or 0, body) of curl; never raises."""
    r = subprocess.run(["curl", "-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}",
                        *args, url], capture_output=True, timeout=60)
    out = r.stdout.decode(errors="replace")
    body, _sep, code = out.rpartition("\n")
    return r.returncode, int(code) if code.isdigit() else 0, body


def wait_log(dmn, start, needle, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(dmn.log_path, errors="replace") as f:
            text = f.read()[start:]
        if needle in text:
            return text
        time.sleep(0.05)
    raise Fail("no %r in %s after the SIGHUP" % (needle, dmn.log_path))


@checks("[tls]: the pages are HTTPS only with the gRPC certificate, a token still needed, "
        "SIGHUP serves a new certificate, client_ca needs a client certificate with read")
def check_tls(ctx):
    import grpc  # noqa: PLC0415 - only this check speaks TLS

    need(shutil.which("curl"), "curl is not installed")
    certs = os.path.join(ctx.ds.tmp, "certs")
    subprocess.run([os.path.join(os.path.dirname(os.path.abspath(__file__)), "auth_certs.sh"),
                    certs], check=True)
    crt = lambda name: os.path.join(certs, name)  # noqa: E731
    with open(crt("ca.pem"), "rb") as f:
        ca_pem = f.read()
    rot = os.path.join(ctx.ds.tmp, "tls-rotate")
    os.makedirs(rot)
    shutil.copy(crt("server.pem"), os.path.join(rot, "server.pem"))
    shutil.copy(crt("server.key"), os.path.join(rot, "server.key"))
    tokens = os.path.join(ctx.ds.tmp, "tokens-tls")
    with open(tokens, "w") as f:
        f.write("tok-read read\n")
    os.chmod(tokens, 0o600)
    conf = os.path.join(ctx.ds.tmp, "tls.conf")
    with open(conf, "w") as f:
        f.write("[tls]\ncertificate = %s/server.pem\nprivate_key = %s/server.key\n"
                "[auth]\ntokens_file = %s\n" % (rot, rot, tokens))
    port = rc.free_port()
    dmn, _c = ctx.ds.get("tls", ["--config", conf, "--set", "http.listen=127.0.0.1:%d" % port])
    ctx.ds.clients["tls"] = rc.Client(dmn.target, credentials=grpc.ssl_channel_credentials(ca_pem),
                                      token="tok-read")
    url = "https://localhost:%d/metrics" % port
    auth = ["-H", "Authorization: Bearer tok-read"]

    code, status, body = curl("http://127.0.0.1:%d/metrics" % port, *auth)
    need(code != 0 and status == 0 and "casbox_" not in body,
         "plain HTTP on the TLS listener: curl %d, HTTP %d, %r", code, status, body[:200])
    reply = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        reply.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-read"
                      b"\r\n\r\n")
        got = b""
        while len(got) < 65536:
            chunk = reply.recv(65536)
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    finally:
        reply.close()
    need(b"HTTP/1." not in got and b"casbox_" not in got,
         "a plain request on the TLS listener was answered: %r", got[:200])
    code, status, body = curl(url, "--cacert", crt("ca.pem"), *auth)
    need(code == 0 and status == 200 and "casbox_grpc_requests_total" in body,
         "HTTPS /metrics with the CA and the token: curl %d, HTTP %d", code, status)
    code, status, _b = curl(url, "--cacert", crt("ca.pem"))
    need(code == 0 and status == 401, "HTTPS without a token: curl %d, HTTP %d", code, status)
    code, status, _b = curl(url, "--cacert", crt("other-ca.pem"), *auth)
    need(code != 0 and status == 0, "a client trusting another CA connected: curl %d, HTTP %d",
         code, status)

    # SIGHUP with the key certified by another CA: the pages serve it.
    with open(dmn.log_path, errors="replace") as f:
        start = len(f.read())
    shutil.copy(crt("server-other.pem"), os.path.join(rot, "server.pem"))
    dmn.proc.send_signal(signal.SIGHUP)
    wait_log(dmn, start, "http: web pages and /metrics on https://")
    with open(crt("other-ca.pem"), "rb") as f:
        ctx.ds.clients["tls"] = rc.Client(dmn.target, token="tok-read",
                                          credentials=grpc.ssl_channel_credentials(f.read()))
    code, status, _b = curl(url, "--cacert", crt("other-ca.pem"), *auth)
    need(code == 0 and status == 200, "after the reload, a client of the new CA: curl %d, HTTP %d",
         code, status)
    code, status, _b = curl(url, "--cacert", crt("ca.pem"), *auth)
    need(code != 0, "after the reload, the old certificate is still served (curl %d, HTTP %d)",
         code, status)

    # client_ca: a request must bring a client certificate signed by it.
    # [auth] certificates_file: the certificate's name must have read.
    names = os.path.join(ctx.ds.tmp, "names-tls")
    with open(names, "w") as f:
        f.write("ci read\n")
    os.chmod(names, 0o600)
    conf2 = os.path.join(ctx.ds.tmp, "mtls.conf")
    with open(conf2, "w") as f:
        f.write("[tls]\ncertificate = %s\nprivate_key = %s\nclient_ca = %s\n"
                "[auth]\ncertificates_file = %s\n"
                % (crt("server.pem"), crt("server.key"), crt("ca.pem"), names))
    port2 = rc.free_port()
    dmn2, _c = ctx.ds.get("mtls", ["--config", conf2, "--set", "http.listen=127.0.0.1:%d" % port2])
    with open(crt("ci.pem"), "rb") as f, open(crt("ci.key"), "rb") as k:
        ctx.ds.clients["mtls"] = rc.Client(dmn2.target, credentials=grpc.ssl_channel_credentials(
            ca_pem, k.read(), f.read()))
    url2 = "https://localhost:%d/metrics" % port2
    code, status, _b = curl(url2, "--cacert", crt("ca.pem"))
    need(code == 0 and status == 403, "without a client certificate: curl %d, HTTP %d", code,
         status)
    code, status, _b = curl(url2, "--cacert", crt("ca.pem"), "--cert", crt("other.pem"), "--key",
                            crt("other.key"))
    need(status != 200, "a client certificate of another CA: curl %d, HTTP %d", code, status)
    code, status, _b = curl(url2, "--cacert", crt("ca.pem"), "--cert", crt("dev.pem"), "--key",
                            crt("dev.key"))
    need(code == 0 and status == 401, "a certificate not in certificates_file: curl %d, HTTP %d",
         code, status)
    code, status, body = curl(url2, "--cacert", crt("ca.pem"), "--cert", crt("ci.pem"), "--key",
                              crt("ci.key"))
    need(code == 0 and status == 200 and "casbox_" in body,
         "with a client certificate of client_ca: curl %d, HTTP %d", code, status)


if __name__ == "__main__":
    sys.exit(eh.main(__doc__, checks, make_ctx, "casbox-e2e-web."))
