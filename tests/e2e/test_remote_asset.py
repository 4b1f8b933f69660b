#!/usr/bin/python3
"""End-to-end: the Remote Asset API (build.bazel.remote.asset.v1 Fetch and
Push) against an HTTP server on loopback that this test runs.

casboxd runs with [asset] enabled, a small max_bytes and one allowed prefix
(http://127.0.0.1:PORT/files/). The server counts requests per path, so a
FetchBlob answered from casboxd's map is seen not to reach it. Every error
check asserts the gRPC status code and that the message names what was
wrong; the refused downloads must leave nothing in the CAS
(FindMissingBlobs). The map must survive a restart, and a casboxd without
[asset] must answer UNIMPLEMENTED.

    test_remote_asset.py                 start build/bin/casboxd (or $CASBOXD)
    test_remote_asset.py -k sri          only checks whose name contains it

Exit status: 0 all passed, 1 something failed.
"""

import argparse
import base64
import hashlib
import http.server
import os
import shutil
import socketserver
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import reapi_client as rc  # noqa: E402
from reapi_client import re_pb2  # noqa: E402
from build.bazel.remote.asset.v1 import remote_asset_pb2 as ra_pb2  # noqa: E402
from exec_helpers import Checks, Fail, need  # noqa: E402

# curl must reach the loopback server directly, whatever the environment says.
for _v in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_v, None)

MAX_BYTES = 1 << 20  # [asset] max_bytes
BIG = 32 << 20       # what /files/big* would send
FETCH = "/build.bazel.remote.asset.v1.Fetch/"
PUSH = "/build.bazel.remote.asset.v1.Push/"

HELLO = b"hello from the loopback origin\n"
OTHER = b"other content, fetched with a wrong checksum\n"
REDIRECTED = b"reached through a redirect\n"
PRIVATE = b"outside the allowed prefix\n"
DELAYED = b"sent after 1.5 s: "


def sri(data, alg="sha256"):
    return "%s-%s" % (alg, base64.b64encode(hashlib.new(alg, data).digest()).decode())


# -- the origin ---------------------------------------------------------------------

class Origin:
    """An HTTP/1.0 server on 127.0.0.1 in a thread, counting requests."""

    def __init__(self):
        self.counts = {}
        self.sent = {}  # path -> body bytes written before the client went away
        self.lock = threading.Lock()
        self.stop = threading.Event()
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):
                pass

            def body(self, data, length=True):
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if length:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def stream(self, total, announce):
                self.send_response(200)
                if announce:
                    self.send_header("Content-Length", str(total))
                self.end_headers()
                chunk = b"x" * 65536
                sent = 0
                try:
                    while sent < total:
                        self.wfile.write(chunk)
                        sent += len(chunk)
                except OSError:
                    pass
                with origin.lock:
                    origin.sent[self.path] = sent

            def do_GET(self):
                with origin.lock:
                    origin.counts[self.path] = origin.counts.get(self.path, 0) + 1
                p = self.path.split("?")[0]
                if p == "/files/hello.txt":
                    self.body(HELLO)
                elif p == "/files/other.txt":
                    self.body(OTHER)
                elif p == "/files/redirected.txt":
                    self.body(REDIRECTED)
                elif p == "/private/secret.txt":
                    self.body(PRIVATE)
                elif p == "/files/big.bin":
                    self.stream(BIG, announce=True)
                elif p == "/files/big-unannounced.bin":
                    self.stream(BIG, announce=False)
                elif p == "/files/slow":
                    origin.stop.wait(30)
                    try:
                        self.body(b"late\n")
                    except OSError:
                        pass
                elif p == "/files/delayed":
                    origin.stop.wait(1.5)
                    try:
                        self.body(DELAYED + self.path.encode())
                    except OSError:
                        pass
                elif p == "/files/redirect-in":
                    self.send_response(302)
                    self.send_header("Location", "/files/redirected.txt")
                    self.end_headers()
                elif p == "/files/redirect-out":
                    self.send_response(302)
                    self.send_header("Location", "/private/secret.txt")
                    self.end_headers()
                elif p == "/files/forbidden":
                    self.send_error(403)
                elif p == "/files/header":
                    # Answers only with the header a qualifier asked for.
                    if self.headers.get("X-Casbox-Test") == "yes":
                        self.body(b"header seen\n")
                    else:
                        self.send_error(404)
                else:
                    self.send_error(404)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def count(self, path):
        with self.lock:
            return self.counts.get(path, 0)

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# -- checks ---------------------------------------------------------------------------

# The project's check-list driver (exec_helpers.Checks): ok/FAIL/SKIP lines,
# unexpected RPC errors named, a casboxd that died reported.
check = Checks()


class Env:
    """What every check gets: the client, the origin and the daemon."""

    def __init__(self, client, origin, daemon, tmp):
        self.c = client
        self.origin = origin
        self.daemon = daemon
        self.tmp = tmp

    def call(self, method, req, resp_cls, timeout=30):
        prefix = PUSH if method.startswith("Push") else FETCH
        return self.c._uu(prefix + method, resp_cls)(req, timeout=timeout)

    def fetch_blob(self, uris, qualifiers=(), timeout=30, req_timeout=None, oldest=None):
        req = ra_pb2.FetchBlobRequest(uris=list(uris))
        for n, v in qualifiers:
            req.qualifiers.add(name=n, value=v)
        if req_timeout is not None:
            req.timeout.FromMilliseconds(int(req_timeout * 1000))
        if oldest is not None:
            req.oldest_content_accepted.FromMicroseconds(int(oldest * 1e6))
        return self.call("FetchBlob", req, ra_pb2.FetchBlobResponse, timeout=timeout)


def expect_error(what, fn, code, mention=()):
    """fn() must fail with code; its message must name each of mention."""
    try:
        fn()
    except grpc.RpcError as e:
        got, msg, _st = rc.rpc_status(e)
        need(got == code, "%s: got %s %r, want %s", what, rc.code_name(got), msg, code.name)
        for m in (mention,) if isinstance(mention, str) else mention:
            need(m.lower() in msg.lower(), "%s: %s message %r does not name %r", what, got.name,
                 msg, m)
        return msg
    raise Fail("%s: succeeded, want %s" % (what, code.name))


def missing(env, data):
    d = rc.digest_of(data)
    return [rc.dkey(x) for x in env.c.find_missing([d])] == [rc.dkey(d)]


@check("FetchBlob: downloads, verifies checksum.sri, stores; the blob reads back")
def _(env):
    url = env.origin.url("/files/hello.txt")
    r = env.fetch_blob([url], [("checksum.sri", sri(HELLO))])
    need(r.status.code == 0, "response status %s", r.status)
    need(rc.dkey(r.blob_digest) == rc.dkey(rc.digest_of(HELLO)), "blob_digest %s, want %s",
         rc.dstr(r.blob_digest), rc.dstr(rc.digest_of(HELLO)))
    need(r.uri == url, "uri %r, want %r", r.uri, url)
    got = env.c.batch_read([r.blob_digest]).responses[0]
    need(got.status.code == 0 and got.data == HELLO, "BatchReadBlobs gave %s %r", got.status,
         got.data[:40])
    need(env.origin.count("/files/hello.txt") == 1, "the origin saw %d requests, want 1",
         env.origin.count("/files/hello.txt"))


@check("FetchBlob again: answered from the map, the origin sees no request")
def _(env):
    url = env.origin.url("/files/hello.txt")
    before = env.origin.count("/files/hello.txt")
    for _i in range(3):
        r = env.fetch_blob([url], [("checksum.sri", sri(HELLO))])
        need(rc.dkey(r.blob_digest) == rc.dkey(rc.digest_of(HELLO)), "blob_digest %s",
             rc.dstr(r.blob_digest))
    need(env.origin.count("/files/hello.txt") == before, "the origin saw %d more request(s)",
         env.origin.count("/files/hello.txt") - before)
    # Another mirror listed first that was never fetched: the known URI answers.
    r = env.fetch_blob([env.origin.url("/files/never-asked"), url],
                       [("checksum.sri", sri(HELLO))])
    need(r.uri == url and env.origin.count("/files/never-asked") == 0,
         "uri %r, never-asked requested %d time(s)", r.uri,
         env.origin.count("/files/never-asked"))


@check("FetchBlob: other qualifiers or oldest_content_accepted in the future fetch again")
def _(env):
    url = env.origin.url("/files/hello.txt")
    before = env.origin.count("/files/hello.txt")
    env.fetch_blob([url], [("checksum.sri", sri(HELLO)), ("bazel.canonical_id", "v2")])
    need(env.origin.count("/files/hello.txt") == before + 1,
         "a new canonical_id did not fetch again (%d requests)",
         env.origin.count("/files/hello.txt") - before)
    env.fetch_blob([url], [("checksum.sri", sri(HELLO))], oldest=time.time() + 1)
    need(env.origin.count("/files/hello.txt") == before + 2,
         "oldest_content_accepted after the fetch did not fetch again")


@check("FetchBlob: checksum.sri mismatch -> ABORTED naming both checksums, nothing stored")
def _(env):
    url = env.origin.url("/files/other.txt")
    msg = expect_error("FetchBlob with the wrong sha256",
                       lambda: env.fetch_blob([url], [("checksum.sri", sri(HELLO))]),
                       grpc.StatusCode.ABORTED, ("mismatch", sri(HELLO), sri(OTHER), url))
    need(missing(env, OTHER), "the mismatching content was stored (%s)", msg)
    # sha384 and sha512 are checked too.
    expect_error("FetchBlob with the wrong sha512",
                 lambda: env.fetch_blob([url], [("checksum.sri", sri(HELLO, "sha512"))]),
                 grpc.StatusCode.ABORTED, "mismatch")
    need(missing(env, OTHER), "the mismatching content was stored")
    r = env.fetch_blob([url], [("checksum.sri", sri(OTHER, "sha384"))])
    need(rc.dkey(r.blob_digest) == rc.dkey(rc.digest_of(OTHER)), "sha384 fetch: %s",
         rc.dstr(r.blob_digest))


@check("FetchBlob: unknown checksum.sri algorithm or malformed value -> INVALID_ARGUMENT")
def _(env):
    url = env.origin.url("/files/hello.txt")
    before = env.origin.count("/files/hello.txt")
    expect_error("checksum.sri md5-...",
                 lambda: env.fetch_blob([url], [("checksum.sri", sri(HELLO, "md5"))]),
                 grpc.StatusCode.INVALID_ARGUMENT, "md5")
    expect_error("checksum.sri sha1-...",
                 lambda: env.fetch_blob([url], [("checksum.sri", sri(HELLO, "sha1"))]),
                 grpc.StatusCode.INVALID_ARGUMENT, "sha1")
    expect_error("checksum.sri with a short digest",
                 lambda: env.fetch_blob([url], [("checksum.sri", "sha256-aGVsbG8=")]),
                 grpc.StatusCode.INVALID_ARGUMENT, "checksum.sri")
    expect_error("a qualifier given twice",
                 lambda: env.fetch_blob([url], [("bazel.canonical_id", "a"),
                                                ("bazel.canonical_id", "b")]),
                 grpc.StatusCode.INVALID_ARGUMENT, "bazel.canonical_id")
    expect_error("a qualifier origin fetches cannot honour",
                 lambda: env.fetch_blob([url], [("vcs.branch", "main")]),
                 grpc.StatusCode.INVALID_ARGUMENT, '"vcs.branch" not supported')
    expect_error("no URI", lambda: env.fetch_blob([]), grpc.StatusCode.INVALID_ARGUMENT, "uris")
    need(env.origin.count("/files/hello.txt") == before, "a refused request reached the origin")


@check("FetchBlob: URL outside [asset] allowed_url_prefixes -> PERMISSION_DENIED, not requested")
def _(env):
    for path in ("/private/secret.txt", "/files/../private/secret.txt"):
        url = env.origin.url(path)
        expect_error("FetchBlob %s" % path, lambda: env.fetch_blob([url]),
                     grpc.StatusCode.PERMISSION_DENIED, (url, "allowed_url_prefixes"))
    need(env.origin.count("/private/secret.txt") == 0, "the origin was asked for it")
    url = "http://127.0.0.1:%d@example.org/files/x" % env.origin.port
    expect_error("a URL with a user name", lambda: env.fetch_blob([url]),
                 grpc.StatusCode.INVALID_ARGUMENT, url)
    # A redirect out of the prefixes is refused before it is followed.
    url = env.origin.url("/files/redirect-out")
    expect_error("a redirect out of the prefixes", lambda: env.fetch_blob([url]),
                 grpc.StatusCode.PERMISSION_DENIED, ("/private/secret.txt",
                                                     "allowed_url_prefixes"))
    need(env.origin.count("/private/secret.txt") == 0, "the redirect was followed")
    need(missing(env, PRIVATE), "the private content is in the CAS")


@check("FetchBlob: a redirect inside the prefixes is followed")
def _(env):
    r = env.fetch_blob([env.origin.url("/files/redirect-in")],
                       [("checksum.sri", sri(REDIRECTED))])
    need(rc.dkey(r.blob_digest) == rc.dkey(rc.digest_of(REDIRECTED)), "blob_digest %s",
         rc.dstr(r.blob_digest))


@check("FetchBlob: larger than [asset] max_bytes -> RESOURCE_EXHAUSTED, stopped early, not stored")
def _(env):
    for path in ("/files/big.bin", "/files/big-unannounced.bin"):
        url = env.origin.url(path)
        expect_error("FetchBlob %s" % path, lambda: env.fetch_blob([url]),
                     grpc.StatusCode.RESOURCE_EXHAUSTED, (url, "max_bytes"))
        deadline = time.time() + 10
        while path not in env.origin.sent and time.time() < deadline:
            time.sleep(0.05)
        with env.origin.lock:
            sent = env.origin.sent.get(path)
        need(sent is not None and sent < BIG // 2,
             "%s: the origin wrote %s of %d bytes: the download did not stop early", path, sent,
             BIG)
    need(missing(env, b"x" * MAX_BYTES), "a prefix of the big file was stored")
    left = [f for f in os.listdir(os.path.join(env.daemon.state_dir, "cas", "tmp"))
            if f.startswith("asset-")]
    need(not left, "temp files left in cas/tmp: %s", left)


@check("FetchBlob: HTTP 404 -> NOT_FOUND naming the URL and the status; 403 -> PERMISSION_DENIED")
def _(env):
    url = env.origin.url("/files/missing.txt")
    expect_error("FetchBlob of a 404", lambda: env.fetch_blob([url]), grpc.StatusCode.NOT_FOUND,
                 (url, "404"))
    url = env.origin.url("/files/forbidden")
    expect_error("FetchBlob of a 403", lambda: env.fetch_blob([url]),
                 grpc.StatusCode.PERMISSION_DENIED, (url, "403"))
    # Allowed, but nothing listens on port 1.
    expect_error("FetchBlob of an unreachable server",
                 lambda: env.fetch_blob(["http://127.0.0.1:1/files/x"]),
                 grpc.StatusCode.NOT_FOUND, "http://127.0.0.1:1/files/x")


@check("FetchBlob: mirrors in order; the first that works answers")
def _(env):
    bad = env.origin.url("/files/gone.txt")
    good = env.origin.url("/files/hello.txt")
    r = env.fetch_blob([bad, good], [("checksum.sri", sri(HELLO)), ("bazel.canonical_id", "m")])
    need(r.uri == good, "uri %r, want %r", r.uri, good)
    need(env.origin.count("/files/gone.txt") == 1, "the first mirror was not tried")


@check("FetchBlob: http_header qualifiers are sent")
def _(env):
    url = env.origin.url("/files/header")
    expect_error("without the header", lambda: env.fetch_blob([url]), grpc.StatusCode.NOT_FOUND,
                 "404")
    r = env.fetch_blob([url], [("http_header:X-Casbox-Test", "yes")])
    need(rc.dkey(r.blob_digest) == rc.dkey(rc.digest_of(b"header seen\n")), "blob_digest %s",
         rc.dstr(r.blob_digest))
    expect_error("a header value with CR LF",
                 lambda: env.fetch_blob([url], [("http_header:X-Casbox-Test", "yes\r\nX: y")]),
                 grpc.StatusCode.INVALID_ARGUMENT, "http_header:X-Casbox-Test")


@check("FetchBlob: the request's timeout -> DEADLINE_EXCEEDED naming the URL")
def _(env):
    url = env.origin.url("/files/slow")
    t0 = time.time()
    expect_error("FetchBlob of a server that does not answer",
                 lambda: env.fetch_blob([url], req_timeout=1.0, timeout=20),
                 grpc.StatusCode.DEADLINE_EXCEEDED, (url, "timed out"))
    need(time.time() - t0 < 10, "the 1 s timeout took %.1f s", time.time() - t0)


@check("FetchBlob: [asset] timeout caps a longer request timeout")
def _(env):
    url = env.origin.url("/files/slow?cap")
    t0 = time.time()
    expect_error("FetchBlob asking for 60 s", lambda: env.fetch_blob([url], req_timeout=60,
                                                                     timeout=30),
                 grpc.StatusCode.DEADLINE_EXCEEDED, "timed out")
    need(time.time() - t0 < 15, "[asset] timeout = 3 did not apply (%.1f s)", time.time() - t0)


@check("FetchBlob: no free download slot until the client's deadline -> RESOURCE_EXHAUSTED")
def _(env):
    # [asset] max_fetches = 2: two slow fetches hold both slots.
    errors = []

    def slow(tag):
        try:
            env.fetch_blob([env.origin.url("/files/slow?" + tag)], req_timeout=3, timeout=20)
        except grpc.RpcError as e:
            errors.append(rc.rpc_status(e)[0])

    threads = [threading.Thread(target=slow, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    deadline = time.time() + 5
    while (env.origin.count("/files/slow?a") == 0 or env.origin.count("/files/slow?b") == 0) \
            and time.time() < deadline:
        time.sleep(0.05)
    try:
        expect_error("a third fetch", lambda: env.fetch_blob([env.origin.url("/files/hello.txt")],
                                                             [("bazel.canonical_id", "third")],
                                                             timeout=1.0),
                     grpc.StatusCode.RESOURCE_EXHAUSTED, "max_fetches")
    finally:
        for t in threads:
            t.join()
    need(errors == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2, "the slow fetches ended with %s",
         errors)


@check("FetchBlob: the same request twice at once is one download")
def _(env):
    path = "/files/delayed?together"
    digests, errors = [], []

    def fetch():
        try:
            digests.append(rc.dkey(env.fetch_blob([env.origin.url(path)]).blob_digest))
        except grpc.RpcError as e:
            errors.append(rc.rpc_status(e)[:2])

    threads = [threading.Thread(target=fetch) for _i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    need(not errors and len(digests) == 2 and digests[0] == digests[1],
         "digests %s, errors %s", digests, errors)
    need(digests[0] == rc.dkey(rc.digest_of(DELAYED + path.encode())), "wrong content")
    need(env.origin.count(path) == 1, "the origin saw %d requests, want 1", env.origin.count(path))


@check("FetchBlob: a download outlives a client that gave up; the next FetchBlob gets it")
def _(env):
    path = "/files/delayed?outlived"
    expect_error("FetchBlob with a 0.5 s deadline",
                 lambda: env.fetch_blob([env.origin.url(path)], timeout=0.5),
                 grpc.StatusCode.DEADLINE_EXCEEDED)
    # A retry while it is still downloading waits for it.
    r = env.fetch_blob([env.origin.url(path)], timeout=10)
    need(rc.dkey(r.blob_digest) == rc.dkey(rc.digest_of(DELAYED + path.encode())),
         "blob_digest %s", rc.dstr(r.blob_digest))
    need(env.origin.count(path) == 1, "the origin saw %d requests, want 1", env.origin.count(path))
    # A retry that cannot wait long enough is told to come back.
    path = "/files/delayed?again"
    expect_error("FetchBlob with a 0.3 s deadline",
                 lambda: env.fetch_blob([env.origin.url(path)], timeout=0.3),
                 grpc.StatusCode.DEADLINE_EXCEEDED)
    expect_error("its retry with a 0.5 s deadline",
                 lambda: env.fetch_blob([env.origin.url(path)], timeout=0.5),
                 grpc.StatusCode.UNAVAILABLE, "still being downloaded")
    time.sleep(1.5)
    r = env.fetch_blob([env.origin.url(path)], timeout=10)
    need(env.origin.count(path) == 1, "the origin saw %d requests, want 1", env.origin.count(path))


@check("PushBlob then FetchBlob: the pushed mapping answers, with exactly its qualifiers")
def _(env):
    data = b"pushed content " + os.urandom(8)
    d = env.c.upload_blob(data)
    uri = "urn:casbox-test:" + d.hash[:12]
    req = ra_pb2.PushBlobRequest(uris=[uri, uri + ":alias"], blob_digest=d)
    req.qualifiers.add(name="vcs.commit", value="abc")
    env.call("PushBlob", req, ra_pb2.PushBlobResponse)
    for u in (uri, uri + ":alias"):
        r = env.fetch_blob([u], [("vcs.commit", "abc")])
        need(rc.dkey(r.blob_digest) == rc.dkey(d), "FetchBlob %s: %s", u, rc.dstr(r.blob_digest))
    expect_error("other qualifiers", lambda: env.fetch_blob([uri], [("vcs.commit", "def")]),
                 grpc.StatusCode.INVALID_ARGUMENT, '"vcs.commit" not supported')
    expect_error("no qualifiers", lambda: env.fetch_blob([uri]), grpc.StatusCode.NOT_FOUND,
                 (uri, "not pushed"))
    # An http URL pushed is answered without asking the origin.
    url = env.origin.url("/files/pushed-only")
    env.call("PushBlob", ra_pb2.PushBlobRequest(uris=[url], blob_digest=d),
             ra_pb2.PushBlobResponse)
    r = env.fetch_blob([url])
    need(rc.dkey(r.blob_digest) == rc.dkey(d) and env.origin.count("/files/pushed-only") == 0,
         "pushed URL: %s, origin asked %d time(s)", rc.dstr(r.blob_digest),
         env.origin.count("/files/pushed-only"))


@check("PushBlob: a blob not in the CAS -> FAILED_PRECONDITION naming it, nothing recorded")
def _(env):
    d = rc.digest_of(os.urandom(40))
    uri = "urn:casbox-test:absent"
    expect_error("PushBlob of an absent blob",
                 lambda: env.call("PushBlob", ra_pb2.PushBlobRequest(uris=[uri], blob_digest=d),
                                  ra_pb2.PushBlobResponse),
                 grpc.StatusCode.FAILED_PRECONDITION, d.hash)
    expect_error("FetchBlob of it", lambda: env.fetch_blob([uri]), grpc.StatusCode.NOT_FOUND, uri)
    present = env.c.upload_blob(b"present " + os.urandom(8))
    expect_error("PushBlob with an absent references_blobs",
                 lambda: env.call("PushBlob", ra_pb2.PushBlobRequest(
                     uris=[uri], blob_digest=present, references_blobs=[d]),
                     ra_pb2.PushBlobResponse),
                 grpc.StatusCode.FAILED_PRECONDITION, d.hash)
    expect_error("PushBlob whose sha256 checksum.sri contradicts blob_digest",
                 lambda: env.call("PushBlob", ra_pb2.PushBlobRequest(
                     uris=[uri], blob_digest=present,
                     qualifiers=[ra_pb2.Qualifier(name="checksum.sri", value=sri(HELLO))]),
                     ra_pb2.PushBlobResponse),
                 grpc.StatusCode.INVALID_ARGUMENT, "checksum.sri")
    expect_error("PushBlob without a digest",
                 lambda: env.call("PushBlob", ra_pb2.PushBlobRequest(uris=[uri]),
                                  ra_pb2.PushBlobResponse),
                 grpc.StatusCode.INVALID_ARGUMENT, "blob_digest")


@check("PushBlob: expire_at in the past is not returned")
def _(env):
    d = env.c.upload_blob(b"expiring " + os.urandom(8))
    uri = "urn:casbox-test:expired"
    req = ra_pb2.PushBlobRequest(uris=[uri], blob_digest=d)
    req.expire_at.FromSeconds(int(time.time()) - 10)
    env.call("PushBlob", req, ra_pb2.PushBlobResponse)
    expect_error("FetchBlob of an expired mapping", lambda: env.fetch_blob([uri]),
                 grpc.StatusCode.NOT_FOUND, uri)


@check("PushDirectory then FetchDirectory; missing blobs and unknown URIs refused")
def _(env):
    f = env.c.upload_blob(b"file in a pushed tree " + os.urandom(8))
    sub = re_pb2.Directory(files=[re_pb2.FileNode(name="a.txt", digest=f)])
    subd = env.c.upload_message(sub)
    root = re_pb2.Directory(directories=[re_pb2.DirectoryNode(name="sub", digest=subd)])
    rootd = env.c.upload_message(root)
    uri = "https://example.org/repo.git"
    req = ra_pb2.PushDirectoryRequest(uris=[uri], root_directory_digest=rootd)
    req.qualifiers.add(name="vcs.commit", value="0123")
    env.call("PushDirectory", req, ra_pb2.PushDirectoryResponse)
    freq = ra_pb2.FetchDirectoryRequest(uris=[uri])
    freq.qualifiers.add(name="vcs.commit", value="0123")
    r = env.call("FetchDirectory", freq, ra_pb2.FetchDirectoryResponse)
    need(rc.dkey(r.root_directory_digest) == rc.dkey(rootd), "root_directory_digest %s",
         rc.dstr(r.root_directory_digest))
    expect_error("FetchDirectory of an unknown URI",
                 lambda: env.call("FetchDirectory",
                                  ra_pb2.FetchDirectoryRequest(uris=[uri + "x"]),
                                  ra_pb2.FetchDirectoryResponse),
                 grpc.StatusCode.NOT_FOUND, uri + "x")
    # A FetchBlob of the same URI is another mapping.
    expect_error("FetchBlob of a pushed directory's URI",
                 lambda: env.fetch_blob([uri], [("vcs.commit", "0123")]),
                 grpc.StatusCode.INVALID_ARGUMENT, "vcs.commit")
    absent = rc.digest_of(os.urandom(30))
    bad = re_pb2.Directory(files=[re_pb2.FileNode(name="b.txt", digest=absent)])
    badd = env.c.upload_message(bad)
    expect_error("PushDirectory of a tree with a missing file",
                 lambda: env.call("PushDirectory", ra_pb2.PushDirectoryRequest(
                     uris=[uri + "/bad"], root_directory_digest=badd),
                     ra_pb2.PushDirectoryResponse),
                 grpc.StatusCode.FAILED_PRECONDITION, absent.hash)


@check("garbage request bytes -> INVALID_ARGUMENT")
def _(env):
    for m in (FETCH + "FetchBlob", FETCH + "FetchDirectory", PUSH + "PushBlob",
              PUSH + "PushDirectory"):
        expect_error(m, lambda: env.c.raw_unary(m, b"\xff\xff\xff\xff\x0f", timeout=10),
                     grpc.StatusCode.INVALID_ARGUMENT)


@check("SIGTERM during a download ends it at once (UNAVAILABLE); after the restart the map "
       "is kept and answers without the origin")
def _(env):
    url = env.origin.url("/files/hello.txt")
    before = env.origin.count("/files/hello.txt")
    codes = []

    def slow():
        try:
            env.fetch_blob([env.origin.url("/files/slow?term")], req_timeout=60, timeout=20)
        except grpc.RpcError as e:
            codes.append(rc.rpc_status(e)[:2])

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.time() + 5
    while env.origin.count("/files/slow?term") == 0 and time.time() < deadline:
        time.sleep(0.05)
    t0 = time.time()
    env.daemon.stop()
    took = time.time() - t0
    t.join()
    env.c.close()
    # [asset] timeout is 3 s here: a stop that waited for the download took that long.
    need(took < 2.5, "casboxd took %.1f s to stop with a download running", took)
    need(len(codes) == 1 and codes[0][0] in (grpc.StatusCode.UNAVAILABLE,
                                             grpc.StatusCode.CANCELLED),
         "the interrupted FetchBlob ended with %s", codes)
    env.daemon.start()
    env.c = rc.Client(env.daemon.target)
    r = env.fetch_blob([url], [("checksum.sri", sri(HELLO))])
    need(rc.dkey(r.blob_digest) == rc.dkey(rc.digest_of(HELLO)), "blob_digest %s",
         rc.dstr(r.blob_digest))
    need(env.origin.count("/files/hello.txt") == before,
         "after a restart the origin was asked again")


def disabled_checks(tmp, log_dir):
    """A casboxd without [asset]: every method answers UNIMPLEMENTED."""
    failed = []
    log = os.path.join(log_dir, "casboxd-disabled.log")
    d = rc.Casboxd(os.path.join(tmp, "state-disabled"), log_path=log,
                   extra_args=["--no-execution"]).start()
    c = rc.Client(d.target)
    try:
        for path, req, resp in (
                (FETCH + "FetchBlob", ra_pb2.FetchBlobRequest(uris=["http://x/"]),
                 ra_pb2.FetchBlobResponse),
                (FETCH + "FetchDirectory", ra_pb2.FetchDirectoryRequest(uris=["http://x/"]),
                 ra_pb2.FetchDirectoryResponse),
                (PUSH + "PushBlob", ra_pb2.PushBlobRequest(uris=["urn:x"]),
                 ra_pb2.PushBlobResponse),
                (PUSH + "PushDirectory", ra_pb2.PushDirectoryRequest(uris=["urn:x"]),
                 ra_pb2.PushDirectoryResponse)):
            name = "disabled: %s -> UNIMPLEMENTED" % path
            try:
                expect_error(path, lambda: c._uu(path, resp)(req, timeout=10),
                             grpc.StatusCode.UNIMPLEMENTED)
                print("ok    %s" % name, flush=True)
            except Fail as e:
                print("FAIL  %s\n      %s" % (name, e), flush=True)
                failed.append(name)
    finally:
        c.close()
        d.stop()
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", dest="pattern", help="only checks whose name contains this")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="casbox-e2e-asset-")
    log_dir = os.environ.get("E2E_LOG_DIR") or tmp
    os.makedirs(log_dir, exist_ok=True)
    origin = Origin()
    conf = os.path.join(tmp, "casboxd.conf")
    with open(conf, "w") as f:
        f.write("[asset]\nenabled = true\nmax_bytes = %d\ntimeout = 3\nmax_fetches = 2\n"
                "allowed_url_prefixes = %s http://127.0.0.1:1/\n"
                % (MAX_BYTES, origin.url("/files/")))
    daemon = rc.Casboxd(os.path.join(tmp, "state"), log_path=os.path.join(log_dir, "casboxd.log"),
                        extra_args=["--config", conf, "--no-execution"])
    passed, failed = 0, []
    try:
        daemon.start()
        print("casboxd %s on %s, origin on port %d (log %s)" % (daemon.binary, daemon.target,
                                                               origin.port, daemon.log_path),
              flush=True)
        env = Env(rc.Client(daemon.target), origin, daemon, tmp)
        passed, failed, _ = check.run(env, args.pattern, {"": daemon})
        env.c.close()
        if daemon.alive():
            try:
                daemon.stop()
                print("ok    casboxd exited 0 on SIGTERM", flush=True)
            except AssertionError as e:
                failed.append("clean exit")
                print("FAIL  %s" % e, flush=True)
        if not args.pattern or "disabled" in args.pattern.lower():
            failed += disabled_checks(tmp, log_dir)
    finally:
        daemon.kill()
        origin.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n%d passed, %d failed" % (passed, len(failed)))
    for f in failed:
        print("  failed: %s" % f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
