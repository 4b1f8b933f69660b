"""BuildStream's artifact server (Debian's `buildstream` package) in a network
namespace of the test's own; not a test.

It is a REAPI CAS + ByteStream + Capabilities server written by another
project (no ActionCache, no instance names, batches capped at 1 MiB), started
as issue 16 says. It binds every address ([::]), so it runs inside a fresh
network namespace joined to this one by a veth pair with a /30 of its own:
only that link's address reaches it, and nothing listens on the host's
interfaces. Names are unique per run; stop() removes the namespace and the
link.

    srv = ArtifactServer(repo_dir).start()   # srv.url: grpc://10.X.Y.2:PORT
    srv.objpath(digest)                      # the blob's file in its repository
    srv.stop(); srv.start()                  # down and up again (same address)
    srv.close()

Also a command line for the shell tests (tests/e2e/lib_shared_storage.sh):
    artifact_server.py up REPO STATEFILE    # prints URL, writes pids and names
    artifact_server.py stop|start|down STATEFILE
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import reapi_client as rc  # noqa: E402

PY = "/usr/bin/python3"
START = ('import sys; sys.argv=["bst-artifact-server","--port",sys.argv[1],"--enable-push",'
         '"--head-room-min","0","--head-room-max","0",sys.argv[2]]; '
         'from buildstream._artifactcache.casserver import server_main; server_main()')


def available():
    """None when the server can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    r = subprocess.run([PY, "-c", "import buildstream._artifactcache.casserver"],
                       capture_output=True)
    if r.returncode != 0:
        return "Debian's buildstream package is not installed (apt-get install buildstream)"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "ip netns does not work here"
    return None


def _ip(*args, check=True):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args), r.stderr.strip()))
    return r


class ArtifactServer:
    def __init__(self, repo, log_path=None, port=None):
        self.repo = os.path.abspath(repo)
        self.log_path = log_path or os.path.join(self.repo + ".log")
        tag = "%d%03d" % (os.getpid() % 100000, random.randrange(1000))
        self.ns = "cbx-ns-" + tag
        self.host_if = "cbxh" + tag[-8:]
        self.ns_if = "cbxn" + tag[-8:]
        net = (random.randrange(16, 32), random.randrange(256), random.randrange(0, 256, 4))
        self.host_ip = "172.%d.%d.%d" % (net[0], net[1], net[2] + 1)
        self.ip = "172.%d.%d.%d" % (net[0], net[1], net[2] + 2)
        self.port = port or random.randrange(20000, 60000)
        self.url = "grpc://%s:%d" % (self.ip, self.port)
        self.target = "%s:%d" % (self.ip, self.port)
        self.proc = None
        self.pid = None
        self.netns_up = False

    # -- the namespace --------------------------------------------------------

    def _netns(self):
        if self.netns_up:
            return
        _ip("netns", "add", self.ns)
        self.netns_up = True
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        _ip("link", "set", self.ns_if, "netns", self.ns)
        _ip("addr", "add", self.host_ip + "/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("-n", self.ns, "addr", "add", self.ip + "/30", "dev", self.ns_if)
        _ip("-n", self.ns, "link", "set", self.ns_if, "up")
        _ip("-n", self.ns, "link", "set", "lo", "up")

    def _netns_down(self):
        if not self.netns_up:
            return
        _ip("link", "del", self.host_if, check=False)  # takes its peer along
        _ip("netns", "del", self.ns, check=False)
        self.netns_up = False

    # -- the server -----------------------------------------------------------

    def start(self, timeout=60):
        self._netns()
        os.makedirs(self.repo, exist_ok=True)
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, PY, "-c", START, str(self.port), self.repo],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.pid = self.proc.pid
        deadline = time.time() + timeout
        c = rc.Client(self.target, timeout=5)
        try:
            while True:
                try:
                    c.get_capabilities(timeout=2)
                    return self
                except grpc.RpcError:
                    if self.proc.poll() is not None:
                        raise RuntimeError("bst-artifact-server exited with %s (log %s)"
                                           % (self.proc.returncode, self.log_path))
                    if time.time() > deadline:
                        raise RuntimeError("bst-artifact-server did not answer on %s within %ds"
                                           % (self.target, timeout))
                    time.sleep(0.3)
        finally:
            c.close()

    def stop(self):
        if self.pid is None:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc is not None:
            self.proc.wait()
        else:
            for _ in range(100):
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        self.proc = None
        self.pid = None

    def close(self):
        self.stop()
        self._netns_down()

    # -- its repository -------------------------------------------------------

    def objpath(self, d):
        return os.path.join(self.repo, "cas", "objects", d.hash[:2], d.hash[2:])

    def has(self, d):
        return os.path.exists(self.objpath(d))

    def client(self):
        return rc.Client(self.target, timeout=30)

    # -- state for the shell tests ---------------------------------------------

    def save(self, path):
        with open(path, "w") as f:
            json.dump({k: getattr(self, k) for k in (
                "repo", "log_path", "ns", "host_if", "ns_if", "host_ip", "ip", "port", "url",
                "target", "pid", "netns_up")}, f)

    @classmethod
    def load(cls, path):
        with open(path) as f:
            st = json.load(f)
        srv = cls.__new__(cls)
        srv.__dict__.update(st)
        srv.proc = None
        return srv


def main(argv):
    if len(argv) >= 2 and argv[1] == "check":
        why = available()
        print(why or "ok")
        return 0 if why is None else 77
    if len(argv) == 4 and argv[1] == "up":
        srv = ArtifactServer(argv[2], log_path=argv[2] + ".log")
        srv.save(argv[3])  # names first: a failed start is still cleaned up
        try:
            srv.start()
        finally:
            srv.save(argv[3])
        print(srv.url)
        return 0
    if len(argv) == 3 and argv[1] in ("stop", "start", "down"):
        srv = ArtifactServer.load(argv[2])
        if argv[1] == "stop":
            srv.stop()
        elif argv[1] == "start":
            srv.start()
        else:
            srv.close()
        srv.save(argv[2])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
