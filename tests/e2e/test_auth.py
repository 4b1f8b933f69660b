#!/usr/bin/python3
"""End-to-end: TLS, mutual TLS, bearer tokens and per-instance permissions.

Certificates are made with openssl at test time (auth_certs.sh). Checks:
TLS on: a plaintext client fails, a TLS client with the CA succeeds; with
client_ca: no certificate, or one of another CA, is refused in the
handshake; certificates_file maps a CN to permissions and an unlisted one is
PERMISSION_DENIED. Tokens: every method with no token, a wrong token, and a
token of each single permission, plus instances outside a token's prefixes
(whole segments): the right status and nothing written (the blob or the
action-cache entry is absent afterwards); a read-only token's
UpdateActionResult leaves the original entry intact; Capabilities tells each
caller what it may do. anonymous = read. SIGHUP reloads the tokens file, and
a broken one keeps the old. Bad input (expired or not yet valid
certificates, a mismatched key, an unreadable or world-readable file, a
malformed tokens line) stops casboxd with a line naming the file. The
refusal log is rate-limited and never holds the token.
"""

import hashlib
import os
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import exec_helpers as eh  # noqa: E402
import reapi_client as rc  # noqa: E402
from reapi_client import re_pb2  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OK = "OK"
UNAUTH = "UNAUTHENTICATED"
DENIED = "PERMISSION_DENIED"

# token -> permissions; the sha256: line's token is HASHED.
HASHED = "tok-hashed-in-the-file"
TOKENS = """# test tokens: TOKEN PERMISSIONS [INSTANCE_PREFIX...]
tok-all\tread,write,write-ac,execute
tok-read    read
tok-write   write
tok-ac      write-ac
tok-exec    execute
tok-worker  worker
sha256:%s read,write
tok-teamA   read,write,write-ac,execute   teamA  other/deep
""" % hashlib.sha256(HASHED.encode()).hexdigest().upper()

SINGLE = {"tok-read": "read", "tok-write": "write", "tok-ac": "write-ac",
          "tok-exec": "execute", "tok-worker": "worker"}

checks = eh.Checks()


def write_file(path, text, mode=0o600):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.chmod(path + ".tmp", mode)
    os.rename(path + ".tmp", path)


def code_of(fn):
    """OK, or the status name of the grpc.RpcError fn raised."""
    try:
        fn()
        return OK
    except grpc.RpcError as e:
        return rc.code_name(rc.rpc_status(e)[0])


class Ctx:
    def __init__(self, ds):
        self.ds = ds
        self.certs = os.path.join(ds.tmp, "certs")
        subprocess.run([os.path.join(HERE, "auth_certs.sh"), self.certs], check=True)
        self.tokens = os.path.join(ds.tmp, "tokens")
        write_file(self.tokens, TOKENS)
        self.names = os.path.join(ds.tmp, "names")
        write_file(self.names, "ci read,write,write-ac,execute\ndev read,write,execute\n")

    def cert(self, name):
        return os.path.join(self.certs, name)

    def pem(self, name):
        with open(self.cert(name), "rb") as f:
            return f.read()

    def tls_creds(self, client=None, ca="ca.pem"):
        if client is None:
            return grpc.ssl_channel_credentials(self.pem(ca))
        return grpc.ssl_channel_credentials(self.pem(ca), self.pem(client + ".key"),
                                            self.pem(client + ".pem"))

    def conf(self, name, text):
        path = os.path.join(self.ds.tmp, name + ".conf")
        write_file(path, text, 0o644)
        return path

    def daemon(self, name, conf_text):
        """(Casboxd, None): the daemon's own client is replaced by the test's."""
        dmn, c = self.ds.get(name, ["--config", self.conf(name, conf_text)])
        return dmn

    def tls_conf(self, client_ca=False):
        t = "[tls]\ncertificate = %s\nprivate_key = %s\n" % (self.cert("server.pem"),
                                                             self.cert("server.key"))
        if client_ca:
            t += "client_ca = %s\n" % self.cert("ca.pem")
        return t

    def tokens_daemon(self):
        dmn = self.daemon("tokens", "[auth]\ntokens_file = %s\n" % self.tokens)
        # The harness's final GetCapabilities must authenticate.
        self.ds.clients["tokens"] = rc.Client(dmn.target, token="tok-all")
        return dmn


def make_ctx(ds):
    return Ctx(ds)


def refused_startup(ctx, conf_text, want, name):
    """casboxd with conf_text must exit non-zero at once, its error naming want."""
    conf = ctx.conf(name, conf_text)
    state = os.path.join(ctx.ds.tmp, "state-" + name)
    p = subprocess.run([rc.default_casboxd() if not os.environ.get("CASBOXD")
                        else os.environ["CASBOXD"], "--listen", "127.0.0.1:%d" % rc.free_port(),
                        "--state-dir", state, "--config", conf, "--no-execution"],
                       capture_output=True, text=True, timeout=30)
    out = p.stdout + p.stderr
    eh.need(p.returncode != 0, "casboxd started (status %d) with %s; output:\n%s",
            p.returncode, name, out)
    eh.need("listening" not in out, "casboxd listened with %s", name)
    lines = [line for line in out.splitlines() if line.startswith("casboxd: ")]
    eh.need(lines and all(w in lines[-1] for w in want),
            "error line should name %s; got:\n%s", want, out)
    return lines[-1]


# -- TLS ------------------------------------------------------------------------

@checks("TLS: a TLS client with the CA is served, a plaintext client is not")
def tls_basic(ctx):
    dmn = ctx.daemon("tls", ctx.tls_conf())
    c = rc.Client(dmn.target, credentials=ctx.tls_creds())
    ctx.ds.clients["tls"] = c
    d = c.upload_blob(b"over tls")
    eh.need(c.bs_read(c.read_name(d)) == b"over tls", "read back over TLS")
    caps = c.get_capabilities()
    eh.need(caps.cache_capabilities.action_cache_update_capabilities.update_enabled,
            "no auth: update_enabled")
    plain = rc.Client(dmn.target, timeout=5)
    got = code_of(lambda: plain.find_missing([d]))
    eh.need(got == "UNAVAILABLE", "plaintext client against TLS: %s, want UNAVAILABLE", got)
    other = rc.Client(dmn.target, credentials=ctx.tls_creds(ca="other-ca.pem"), timeout=5)
    got = code_of(lambda: other.find_missing([d]))
    eh.need(got == "UNAVAILABLE", "client trusting another CA: %s, want UNAVAILABLE", got)


@checks("mutual TLS: no client certificate, another CA's or an expired one is refused; "
        "client_ca's is served")
def mtls_basic(ctx):
    dmn = ctx.daemon("mtls", ctx.tls_conf(True) + "[auth]\nanonymous = read,write\n")
    good = rc.Client(dmn.target, credentials=ctx.tls_creds("stranger"))
    ctx.ds.clients["mtls"] = good
    d = good.upload_blob(b"mtls blob")
    eh.need(good.find_missing([d]) == [], "blob stored over mutual TLS")
    got = code_of(lambda: good.update_action_result(d, re_pb2.ActionResult()))
    eh.need(got == DENIED, "certificate with anonymous=read,write: UpdateActionResult %s, want "
            "PERMISSION_DENIED", got)
    expired = grpc.ssl_channel_credentials(ctx.pem("ca.pem"), ctx.pem("server.key"),
                                           ctx.pem("expired.pem"))
    for who, creds in (("no certificate", ctx.tls_creds()),
                       ("another CA's certificate", ctx.tls_creds("other")),
                       ("an expired certificate of the CA", expired)):
        c = rc.Client(dmn.target, credentials=creds, timeout=5)
        got = code_of(lambda: c.find_missing([d]))
        eh.need(got == "UNAVAILABLE", "%s: %s, want the handshake refused (UNAVAILABLE)", who, got)
        got = code_of(lambda: c.upload_blob(b"never stored " + who.encode()))
        eh.need(got != OK, "%s could write", who)
    eh.need(good.find_missing([rc.digest_of(b"never stored no certificate")]) != [],
            "a refused client's blob exists")


@checks("mutual TLS + certificates_file: CN maps to permissions, unlisted CN is PERMISSION_DENIED; "
        "SIGHUP re-reads the file")
def mtls_names(ctx):
    dmn = ctx.daemon("mtls-names", ctx.tls_conf(True) +
                     "[auth]\ncertificates_file = %s\n" % ctx.names)
    ci = rc.Client(dmn.target, credentials=ctx.tls_creds("ci"))
    dev = rc.Client(dmn.target, credentials=ctx.tls_creds("dev"))
    stranger = rc.Client(dmn.target, credentials=ctx.tls_creds("stranger"))
    ctx.ds.clients["mtls-names"] = ci
    d = ci.upload_blob(b"ci wrote this")
    ad = rc.digest_of(b"some action for mtls")
    ci.update_action_result(ad, re_pb2.ActionResult(exit_code=7))
    eh.need(ci.get_capabilities().cache_capabilities.action_cache_update_capabilities
            .update_enabled, "ci: update_enabled")
    eh.need(not dev.get_capabilities().cache_capabilities.action_cache_update_capabilities
            .update_enabled, "dev: update_enabled should be false")
    eh.need(dev.batch_read([d]).responses[0].data == b"ci wrote this", "dev reads")
    got = code_of(lambda: dev.update_action_result(ad, re_pb2.ActionResult(exit_code=0)))
    eh.need(got == DENIED, "dev UpdateActionResult: %s, want PERMISSION_DENIED", got)
    eh.need(ci.get_action_result(ad).exit_code == 7, "entry changed by a refused call")
    got = code_of(lambda: stranger.find_missing([d]))
    eh.need(got == DENIED, "unlisted certificate: %s, want PERMISSION_DENIED", got)
    # SIGHUP re-reads the certificates file: the stranger is listed now,
    # over the connection it already has.
    write_file(ctx.names, "ci read,write,write-ac,execute\ndev read,write,execute\n"
               "stranger read\n")
    with open(dmn.log_path, errors="replace") as f:
        start = len(f.read())
    dmn.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline:
        with open(dmn.log_path, errors="replace") as f:
            if "reload: auth: 0 token(s), 3 certificate name(s)" in f.read()[start:]:
                break
        time.sleep(0.05)
    got = code_of(lambda: stranger.find_missing([d]))
    eh.need(got == OK, "after the reload listing it, the stranger's read: %s", got)
    got = code_of(lambda: stranger.upload_blob(b"stranger writes"))
    eh.need(got == DENIED, "the stranger may only read: %s", got)


# -- tokens ----------------------------------------------------------------------

class World:
    """What the method matrix needs, made by an all-permission client."""

    def __init__(self, admin):
        self.admin = admin
        self.blob = admin.upload_blob(b"a blob everybody may know")
        self.root = eh.upload_tree(admin, {"f": b"tree file"})
        self.ad = eh.upload_action(admin, ["/bin/true"])
        admin.update_action_result(self.ad, re_pb2.ActionResult(exit_code=0))
        ops, _ = eh.execute(admin, eh.upload_action(admin, ["/bin/true"]))
        self.op_name = ops[-1].name
        self.n = 0

    def unique(self, what):
        self.n += 1
        return ("%s %d %s" % (what, self.n, os.urandom(8).hex())).encode()


def method_calls(w):
    """(method, permission, call(client, instance) -> None, written(instance) -> bool or None)."""
    state = {}

    def batch_update(c, inst):
        data = w.unique("batch")
        state["batch"] = rc.digest_of(data)
        r = c.batch_update([(state["batch"], data)], instance=inst)
        eh.need(r.responses[0].status.code == 0, "BatchUpdateBlobs entry failed")

    def bs_write(c, inst):
        data = w.unique("bytestream")
        state["write"] = rc.digest_of(data)
        c.upload_bytestream(data, instance=inst)

    def update_ac(c, inst):
        state["ac"] = rc.digest_of(w.unique("ac"))
        c.update_action_result(state["ac"], re_pb2.ActionResult(exit_code=3), instance=inst)

    def execute(c, inst):
        # The CAS is shared by every instance: the admin's upload serves them all.
        state["exec"] = eh.upload_action(w.admin, ["/bin/true"], salt=w.unique("exec"))
        ops = c.execute(state["exec"], skip_cache_lookup=True, instance=inst)
        eh.need(ops and ops[-1].done, "Execute ended without a done Operation")

    def missing(d, inst):
        return w.admin.find_missing([d], instance=inst or "") == []

    def ac_present(d, inst):
        return code_of(lambda: w.admin.get_action_result(d, instance=inst or "")) == OK

    return [
        ("FindMissingBlobs", "read", lambda c, i: c.find_missing([w.blob], instance=i), None),
        ("BatchReadBlobs", "read", lambda c, i: c.batch_read([w.blob], instance=i), None),
        ("ByteStream.Read", "read", lambda c, i: c.bs_read(c.read_name(w.blob, instance=i)),
         None),
        ("GetTree", "read", lambda c, i: c.get_tree(w.root, instance=i), None),
        ("GetActionResult", "read", lambda c, i: c.get_action_result(w.ad, instance=i), None),
        ("BatchUpdateBlobs", "write", batch_update, lambda i: missing(state["batch"], i)),
        ("ByteStream.Write", "write", bs_write, lambda i: missing(state["write"], i)),
        ("QueryWriteStatus", "write",
         lambda c, i: c.query_write_status(c.write_name(w.blob, instance=i)), None),
        ("UpdateActionResult", "write-ac", update_ac, lambda i: ac_present(state["ac"], i)),
        ("Execute", "execute", execute, lambda i: ac_present(state["exec"], i)),
        ("WaitExecution", "execute", lambda c, i: c.wait_execution(w.op_name), None),
        ("GetCapabilities", None, lambda c, i: c.get_capabilities(instance=i), None),
    ]


def expect_for(token, perm):
    if token is None or token == "tok-wrong":
        return UNAUTH
    if perm is None:
        return OK
    return OK if token == "tok-all" or SINGLE.get(token) == perm else DENIED


@checks("tokens: every method x (no token, wrong token, each single permission): right status, "
        "nothing written")
def tokens_matrix(ctx):
    dmn = ctx.tokens_daemon()
    w = World(rc.Client(dmn.target, token="tok-all", timeout=120))
    bad = []
    for token in [None, "tok-wrong", "tok-all"] + sorted(SINGLE):
        c = rc.Client(dmn.target, token=token, timeout=120)
        for name, perm, call, written in method_calls(w):
            got = code_of(lambda: call(c, None))
            want = expect_for(token, perm)
            if got != want:
                bad.append("%s with %s: %s, want %s" % (name, token, got, want))
            elif written is not None and (got == OK) != written(None):
                bad.append("%s with %s: %s, but written=%s afterwards"
                           % (name, token, got, written(None)))
        c.close()
    eh.need(not bad, "%d wrong:\n      %s", len(bad), "\n      ".join(bad))


@checks("tokens: instance prefixes match whole segments; outside them PERMISSION_DENIED, "
        "nothing written")
def tokens_prefixes(ctx):
    dmn = ctx.tokens_daemon()
    w = World(rc.Client(dmn.target, token="tok-all", timeout=120))
    c = rc.Client(dmn.target, token="tok-teamA", timeout=120)
    bad = []
    cases = [("teamA", OK), ("teamA/linux", OK), ("other/deep", OK), ("other/deep/x", OK),
             ("", DENIED), ("teamB", DENIED), ("teamAB", DENIED), ("other", DENIED),
             ("other/deeper", DENIED)]
    for inst, want in cases:
        for name, perm, call, written in method_calls(w):
            if name in ("WaitExecution", "GetActionResult"):
                continue  # not per instance here (the operation's; the admin's entry)
            if perm is None:
                want_here = OK  # Capabilities answers every authenticated caller
            else:
                want_here = want
            got = code_of(lambda: call(c, inst))
            if got != want_here:
                bad.append("%s on '%s': %s, want %s" % (name, inst, got, want_here))
            elif written is not None and (got == OK) != written(inst):
                bad.append("%s on '%s': %s but written=%s" % (name, inst, got, written(inst)))
        caps = c.get_capabilities(instance=inst)
        upd = caps.cache_capabilities.action_cache_update_capabilities.update_enabled
        if upd != (want == OK) or caps.execution_capabilities.exec_enabled != (want == OK):
            bad.append("Capabilities on '%s': update_enabled %s exec_enabled %s"
                       % (inst, upd, caps.execution_capabilities.exec_enabled))
    # A refused call's message names the permission and the instance.
    try:
        c.update_action_result(w.ad, re_pb2.ActionResult(), instance="teamB")
        bad.append("UpdateActionResult on teamB succeeded")
    except grpc.RpcError as e:
        msg = rc.rpc_status(e)[1]
        if "teamB" not in msg or "write-ac" not in msg:
            bad.append("PERMISSION_DENIED message should name write-ac and teamB: %r" % msg)
    eh.need(not bad, "%d wrong:\n      %s", len(bad), "\n      ".join(bad))


@checks("tokens: sha256:<hex> lines (upper-case hex) authenticate the token they hash")
def tokens_hashed(ctx):
    dmn = ctx.tokens_daemon()
    c = rc.Client(dmn.target, token=HASHED)
    d = c.upload_blob(b"written with a hashed token")
    eh.need(c.find_missing([d]) == [], "stored")
    got = code_of(lambda: c.update_action_result(d, re_pb2.ActionResult()))
    eh.need(got == DENIED, "hashed token has no write-ac: %s", got)
    digest_as_token = rc.Client(dmn.target, token=hashlib.sha256(HASHED.encode()).hexdigest())
    got = code_of(lambda: digest_as_token.find_missing([d]))
    eh.need(got == UNAUTH, "the digest itself must not work as a token: %s", got)


@checks("poisoning: a read-only token's UpdateActionResult leaves the original entry intact")
def tokens_poison(ctx):
    dmn = ctx.tokens_daemon()
    admin = rc.Client(dmn.target, token="tok-all")
    ad = eh.upload_action(admin, ["/bin/true"])
    out = admin.upload_blob(b"the real output")
    good = re_pb2.ActionResult(exit_code=0)
    good.output_files.add(path="out", digest=out)
    admin.update_action_result(ad, good)
    evil = admin.upload_blob(b"the attacker's output")
    bad = re_pb2.ActionResult(exit_code=0)
    bad.output_files.add(path="out", digest=evil)
    for tok in ("tok-read", "tok-write", "tok-exec", "tok-worker"):
        got = code_of(lambda: rc.Client(dmn.target, token=tok).update_action_result(ad, bad))
        eh.need(got == DENIED, "%s UpdateActionResult: %s, want PERMISSION_DENIED", tok, got)
    now = admin.get_action_result(ad)
    eh.need(len(now.output_files) == 1 and now.output_files[0].digest == out,
            "the entry changed: %s", now)


@checks("anonymous = read: reads without a token, writes PERMISSION_DENIED, wrong token "
        "UNAUTHENTICATED")
def anonymous_read(ctx):
    dmn = ctx.daemon("anon", "[auth]\ntokens_file = %s\nanonymous = read\n" % ctx.tokens)
    anon = rc.Client(dmn.target)
    d = rc.Client(dmn.target, token="tok-all").upload_blob(b"public")
    eh.need(anon.batch_read([d]).responses[0].data == b"public", "anonymous read")
    caps = anon.get_capabilities()
    eh.need(not caps.cache_capabilities.action_cache_update_capabilities.update_enabled and
            not caps.execution_capabilities.exec_enabled, "anonymous capabilities: %s", caps)
    got = code_of(lambda: anon.upload_blob(b"anonymous write"))
    eh.need(got == DENIED, "anonymous write: %s, want PERMISSION_DENIED", got)
    got = code_of(lambda: rc.Client(dmn.target, token="nope").find_missing([d]))
    eh.need(got == UNAUTH, "wrong token with anonymous=read: %s, want UNAUTHENTICATED", got)


@checks("refusal log: one line per refused call with peer, method, instance, reason; "
        "rate-limited; never the token")
def refusal_log(ctx):
    dmn = ctx.tokens_daemon()
    secret = "tok-SECRET-never-logged-" + os.urandom(4).hex()
    c = rc.Client(dmn.target, token=secret)
    for _ in range(300):
        code_of(lambda: c.find_missing([]))
    code_of(lambda: rc.Client(dmn.target, token="tok-read").batch_update(
        [(rc.digest_of(b"y"), b"y")], instance="some/inst"))
    time.sleep(1.2)
    code_of(lambda: rc.Client(dmn.target, token="tok-read").batch_update(
        [(rc.digest_of(b"y"), b"y")], instance="later"))
    time.sleep(0.3)
    with open(dmn.log_path, errors="replace") as f:
        log = f.read()
    eh.need(secret not in log and "tok-read" not in log, "a token is in the log")
    refused = [line for line in log.splitlines() if " refused " in line]
    eh.need(len(refused) < 150, "%d refusal lines for 302 refusals: not rate-limited",
            len(refused))
    eh.need(any("ipv4:127.0.0.1:" in line and "FindMissingBlobs" in line and
                "UNAUTHENTICATED" in line for line in refused),
            "no line with peer, method, status:\n%s", "\n".join(refused[:5]))
    eh.need(any("'later'" in line and "lacks permission 'write'" in line for line in refused),
            "the refusal after the burst (instance 'later') is not logged")
    eh.need("not logged" in log, "the count of refusals not logged is not reported")


@checks("SIGHUP: a new tokens file applies without dropping connections; a broken one keeps "
        "the old and says why")
def reload_tokens(ctx):
    tokens = os.path.join(ctx.ds.tmp, "tokens-reload")
    write_file(tokens, "tok-old read,write\n")
    dmn = ctx.daemon("reload", "[auth]\ntokens_file = %s\n" % tokens)
    old = rc.Client(dmn.target, token="tok-old")
    ctx.ds.clients["reload"] = old
    new = rc.Client(dmn.target, token="tok-new")
    d = old.upload_blob(b"before reload")
    eh.need(code_of(lambda: new.find_missing([d])) == UNAUTH, "tok-new before the reload")

    def hup_and_wait(needle):
        with open(dmn.log_path, errors="replace") as f:
            start = len(f.read())
        dmn.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline:
            with open(dmn.log_path, errors="replace") as f:
                text = f.read()[start:]
            if needle in text:
                return text
            time.sleep(0.05)
        raise eh.Fail("no %r in the log after SIGHUP:\n%s" % (needle, text))

    write_file(tokens, "tok-old read\ntok-new read,write,write-ac\n")
    hup_and_wait("reload: auth: 2 token(s)")
    eh.need(new.find_missing([d]) == [], "tok-new after the reload")
    eh.need(code_of(lambda: old.upload_blob(b"old lost write")) == DENIED,
            "tok-old lost write in the new file")
    write_file(tokens, "tok-old read\ntok-new read,write,write-ac\ntok-broken reed\n")
    text = hup_and_wait("keeping the current credentials")
    eh.need(":3:" in text and "reed" in text, "the reason names the file's line 3 and the word:\n%s",
            text)
    eh.need(new.find_missing([d]) == [], "tok-new still works after a broken reload")
    write_file(tokens, "tok-new read\n", 0o644)
    text = hup_and_wait("keeping the current credentials")
    eh.need("readable by other users" in text, "world-readable tokens file on reload:\n%s", text)
    eh.need(new.upload_blob(b"still the old rules") is not None, "old rules kept")


def served_issuer(ctx, target):
    """The issuer CN of the certificate casboxd presents to a new connection."""
    import socket
    import ssl
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.load_verify_locations(ctx.cert("ca.pem"))
    c.load_verify_locations(ctx.cert("other-ca.pem"))
    c.set_alpn_protocols(["h2"])
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with c.wrap_socket(sock) as s:
            issuer = dict(x[0] for x in s.getpeercert()["issuer"])
    return issuer.get("commonName")


@checks("SIGHUP: a new TLS certificate serves new connections while open ones keep working; "
        "a broken one keeps the old")
def reload_tls(ctx):
    rot = os.path.join(ctx.ds.tmp, "rotate")
    os.makedirs(rot, exist_ok=True)
    write_file(os.path.join(rot, "server.pem"), ctx.pem("server.pem").decode(), 0o644)
    write_file(os.path.join(rot, "server.key"), ctx.pem("server.key").decode())
    dmn = ctx.daemon("tls-rotate", "[tls]\ncertificate = %s/server.pem\nprivate_key = %s/server.key\n"
                     % (rot, rot))
    old = rc.Client(dmn.target, credentials=ctx.tls_creds())
    d = old.upload_blob(b"before the rotation")
    eh.need(served_issuer(ctx, dmn.target) == "casbox-test-ca", "first certificate's issuer")

    def hup_and_wait(needle):
        with open(dmn.log_path, errors="replace") as f:
            start = len(f.read())
        dmn.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline:
            with open(dmn.log_path, errors="replace") as f:
                text = f.read()[start:]
            if needle in text:
                return text
            time.sleep(0.05)
        raise eh.Fail("no %r in the log after SIGHUP:\n%s" % (needle, text))

    write_file(os.path.join(rot, "server.pem"), ctx.pem("server-other.pem").decode(), 0o644)
    hup_and_wait("read again; new connections use it")
    eh.need(served_issuer(ctx, dmn.target) == "casbox-other-ca",
            "a new connection still gets the old certificate")
    eh.need(old.find_missing([d]) == [], "the connection made before the reload")
    fresh = rc.Client(dmn.target, credentials=ctx.tls_creds(ca="other-ca.pem"))
    ctx.ds.clients["tls-rotate"] = fresh
    eh.need(fresh.find_missing([d]) == [], "a client of the new CA")
    write_file(os.path.join(rot, "server.pem"), ctx.pem("expired.pem").decode(), 0o644)
    text = hup_and_wait("keeping the current TLS certificate")
    eh.need("expired" in text, "the reason should say expired:\n%s", text)
    eh.need(served_issuer(ctx, dmn.target) == "casbox-other-ca", "a broken reload changed the "
            "certificate served")


# -- bad input at start-up -------------------------------------------------------

@checks("bad input: casboxd refuses to start, naming the file (and line)")
def bad_startup(ctx):
    t = ctx.ds.tmp
    cert, key = ctx.cert("server.pem"), ctx.cert("server.key")
    cases = []
    write_file(os.path.join(t, "tok-malformed"), "# ok\ngood read\nbad-line\n")
    cases.append(("[auth]\ntokens_file = %s/tok-malformed\n" % t, ["tok-malformed:3"]))
    write_file(os.path.join(t, "tok-perm"), "good read,wirte\n")
    cases.append(("[auth]\ntokens_file = %s/tok-perm\n" % t, ["tok-perm:1", "wirte"]))
    write_file(os.path.join(t, "tok-prefix"), "good read team//x\n")
    cases.append(("[auth]\ntokens_file = %s/tok-prefix\n" % t, ["tok-prefix:1", "team//x"]))
    write_file(os.path.join(t, "tok-dup"), "same read\nsame write\n")
    cases.append(("[auth]\ntokens_file = %s/tok-dup\n" % t, ["tok-dup:2", "line 1"]))
    write_file(os.path.join(t, "tok-world"), "good read\n", 0o644)
    cases.append(("[auth]\ntokens_file = %s/tok-world\n" % t, ["tok-world", "other users"]))
    cases.append(("[auth]\ntokens_file = %s/does-not-exist\n" % t, ["does-not-exist"]))
    cases.append(("[auth]\ncertificates_file = %s\n" % ctx.names, ["client_ca"]))
    cases.append(("[auth]\nanonymous = reed\n", ["anonymous", "reed"]))
    cases.append(("[tls]\ncertificate = %s\nprivate_key = %s\n" % (ctx.cert("expired.pem"), key),
                  ["expired.pem", "expired"]))
    cases.append(("[tls]\ncertificate = %s\nprivate_key = %s\n" % (ctx.cert("future.pem"), key),
                  ["future.pem", "not valid yet"]))
    cases.append(("[tls]\ncertificate = %s\nprivate_key = %s\n" % (cert, ctx.cert("wrong.key")),
                  ["wrong.key", "does not match"]))
    cases.append(("[tls]\ncertificate = %s\nprivate_key = %s\n" % (cert, ctx.cert("ci.pem")),
                  ["ci.pem", "private key"]))
    cases.append(("[tls]\ncertificate = %s\n" % cert, ["private_key"]))
    cases.append(("[tls]\ncertificate = %s\nprivate_key = %s\nclient_ca = %s/nope.pem\n"
                  % (cert, key, t), ["nope.pem"]))
    world_key = os.path.join(t, "world.key")
    write_file(world_key, ctx.pem("server.key").decode(), 0o644)
    cases.append(("[tls]\ncertificate = %s\nprivate_key = %s\n" % (cert, world_key),
                  ["world.key", "other users"]))
    bad = []
    for i, (text, want) in enumerate(cases):
        try:
            refused_startup(ctx, text, want, "bad-%d" % i)
        except eh.Fail as e:
            bad.append(str(e))
    # Group-readable: a warning, and it starts.
    write_file(os.path.join(t, "tok-group"), "good read\n", 0o640)
    dmn = ctx.daemon("group-readable", "[auth]\ntokens_file = %s/tok-group\n" % t)
    ctx.ds.clients["group-readable"] = rc.Client(dmn.target, token="good")
    with open(dmn.log_path, errors="replace") as f:
        if "readable by its group" not in f.read():
            bad.append("no warning for a group-readable tokens file")
    eh.need(not bad, "%d wrong:\n      %s", len(bad), "\n      ".join(bad))


@checks("C client: casbox run --action --remote grpcs:// with CASBOX_TLS_CA, client certificate "
        "and CASBOX_TOKEN_FILE replays an action; without the token PERMISSION_DENIED")
def c_client(ctx):
    dmn = ctx.daemon("c-client", ctx.tls_conf(True) + "[auth]\ntokens_file = %s\n" % ctx.tokens)
    admin = rc.Client(dmn.target, credentials=ctx.tls_creds("ci"), token="tok-all", timeout=120)
    ctx.ds.clients["c-client"] = admin
    casbox = os.path.join(os.path.dirname(rc.default_casboxd()), "casbox")
    eh.need(os.access(casbox, os.X_OK), "no %s", casbox)
    ad = eh.upload_action(admin, ["/bin/sh", "-c", "echo replayed over tls"])
    eh.execute(admin, ad)
    token_file = os.path.join(ctx.ds.tmp, "c-client.token")
    write_file(token_file, "tok-read\n")
    env = dict(os.environ, CASBOX_TLS_CA=ctx.cert("ca.pem"), CASBOX_TLS_CERT=ctx.cert("ci.pem"),
               CASBOX_TLS_KEY=ctx.cert("ci.key"), CASBOX_TOKEN_FILE=token_file)
    args = [casbox, "run", "--action", rc.dstr(ad), "--remote", "grpcs://" + dmn.target]
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    eh.need(p.returncode == 0 and "replayed over tls" in p.stdout,
            "replay with the read token: exit %d\n%s%s", p.returncode, p.stdout[-500:],
            p.stderr[-500:])
    del env["CASBOX_TOKEN_FILE"]
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    # The certificate is known (client_ca), anonymous may do nothing.
    eh.need(p.returncode != 0 and "PERMISSION_DENIED" in p.stderr + p.stdout,
            "replay without a token: exit %d\n%s", p.returncode, (p.stdout + p.stderr)[-500:])


if __name__ == "__main__":
    sys.exit(eh.main(__doc__, checks, make_ctx, "casbox-e2e-auth."))
