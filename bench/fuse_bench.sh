#!/bin/bash
# FUSE staging versus hardlink staging, and FUSE read throughput (prints only;
# not a test).
#
#   bench/fuse_bench.sh [CASBOXD]        default build/bin/casboxd
#
# 1. Stage + run + tear down an action that reads 1% of its input files, for
#    input trees of 1,000, 10,000 and 100,000 files (directories of 100 files
#    sharing 16 blobs), against two daemons started side by side: one with
#    execution.staging=fuse, one with hardlink. Prints the median Execute round
#    trip and the staging time the daemon reports (auxiliary_metadata), and the
#    100k/1k ratio (target for FUSE: within 1.5x). Beside it, per size: the
#    action's own run time (ExecutedActionMetadata execution_start ..
#    completed) with each staging, which is what reading 1% of the files costs
#    (the reader's own per-file cost is in both), and the round trip of an
#    action that reads nothing (`true`): staging + run + teardown alone.
# 2. A 1 GiB input read with dd inside an action through the FUSE mount and its
#    overlay, beside dd of the same CAS blob file on the host: warm (read twice,
#    second counted), and cold (drop_caches before each; root only). Target:
#    FUSE warm at least 80% of direct. Prints whether FUSE passthrough was on
#    (casboxd's log) and the bytes casboxd served (0 with passthrough).
# The load average is printed at the start and the end: the figures are
# wall times on a shared machine.
#
# Env: FUSE_BENCH_RUNS (default 5 per size), FUSE_BENCH_SIZES ("1000 10000 100000"),
# FUSE_BENCH_BIG_MIB (default 1024). Needs root or a usable /dev/fuse.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
casboxd="${1:-${CASBOXD:-$repo/build/bin/casboxd}}"
[ -x "$casboxd" ] || { echo "fuse_bench: no casboxd at $casboxd (scripts/build)" >&2; exit 1; }
tmp="$(mktemp -d "${TMPDIR:-/tmp}/casbox-fuse-bench.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
export CASBOXD="$casboxd" PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 - "$repo" "$tmp" <<'PYEOF'
import hashlib, os, re, statistics, subprocess, sys, time
repo, tmp = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(repo, "tests", "e2e"))
import reapi_client as rc
from reapi_client import re_pb2, bs_pb2
from google.protobuf import struct_pb2

RUNS = int(os.environ.get("FUSE_BENCH_RUNS", "5"))
SIZES = [int(x) for x in os.environ.get("FUSE_BENCH_SIZES", "1000 10000 100000").split()]
BIG = int(os.environ.get("FUSE_BENCH_BIG_MIB", "1024")) << 20
ENV = [re_pb2.Command.EnvironmentVariable(name="PATH", value="/usr/bin:/bin")]
STATS_URL = "type.googleapis.com/google.protobuf.Struct"

def stats(result):
    """casbox's staging counters (docs/fuse.md): files_opened, bytes_read,
    staging_us, mode."""
    for a in result.execution_metadata.auxiliary_metadata:
        if a.type_url == STATS_URL:
            st = struct_pb2.Struct()
            a.Unpack(st)
            return dict(st.items())
    return {}

def ts(t):
    return t.seconds + t.nanos / 1e9

def run_ms(result):
    md = result.execution_metadata
    return (ts(md.execution_completed_timestamp) - ts(md.execution_start_timestamp)) * 1000

def load():
    return open("/proc/loadavg").read().split()[:3]

def execute(c, root, script, timeout=600):
    cmd = re_pb2.Command(arguments=["/bin/sh", "-c", script], environment_variables=ENV)
    act = re_pb2.Action(command_digest=c.upload_message(cmd), input_root_digest=root,
                        do_not_cache=True)
    ad = c.upload_message(act)
    t0 = time.perf_counter()
    resp = c.execute_response(c.execute(ad, skip_cache_lookup=True, timeout=timeout)[-1])
    wall = time.perf_counter() - t0
    r = resp.result
    if resp.status.code != 0 or r.exit_code != 0:
        raise SystemExit("action failed: %s %s" % (resp.status, r.exit_code))
    err = c.bs_read(c.read_name(r.stderr_digest)) if r.stderr_digest.size_bytes else b""
    return wall, stats(r), run_ms(r), err

def tree(c, n):
    blobs = [c.upload_blob(b"blob %d\n" % i * 64) for i in range(16)]
    per = 100
    files = [re_pb2.FileNode(name="f%03d" % i, digest=blobs[i % 16]) for i in range(per)]
    sub = c.upload_message(re_pb2.Directory(files=files))
    dirs = [re_pb2.DirectoryNode(name="d%05d" % i, digest=sub) for i in range(n // per)]
    root = c.upload_message(re_pb2.Directory(directories=dirs))
    paths = ["d%05d/f%03d" % (i, (i * 7) % per) for i in range(n // per)]  # 1% of the files
    return root, "cat %s > /dev/null" % " ".join(paths)

daemons = {}
for mode in ("fuse", "hardlink"):
    d = rc.Casboxd(os.path.join(tmp, mode), log_path=os.path.join(tmp, mode + ".log"),
                   extra_args=["--set", "execution.staging=" + mode, "--log-level", "warn"])
    d.start()
    daemons[mode] = (d, rc.Client(d.target, timeout=600))

print("load average at start: %s" % " ".join(load()))
print("== stage + run + tear down, action reading 1%% of its files (median of %d)" % RUNS)
print("%-9s %10s %10s %10s %10s %10s %10s %10s %8s" % (
    "files", "fuse ms", "fuse stage", "fuse run", "fuse true", "hl ms", "hl stage", "hl run",
    "fuse/hl"))
res = {}
for n in SIZES:
    row = {}
    for mode, (d, c) in daemons.items():
        root, script = tree(c, n)
        execute(c, root, script)  # warm-up: Directory cache, exec copies, page cache
        walls, stages, runs, trues = [], [], [], []
        for _ in range(RUNS):
            w, s, r, _ = execute(c, root, script)
            walls.append(w * 1000); stages.append(s.get("staging_us", 0) / 1000.0); runs.append(r)
            if mode == "fuse":
                trues.append(execute(c, root, "true")[0] * 1000)
        row[mode] = (statistics.median(walls), statistics.median(stages),
                     statistics.median(runs), statistics.median(trues) if trues else 0.0)
    res[n] = row
    f, h = row["fuse"], row["hardlink"]
    print("%-9d %10.1f %10.2f %10.1f %10.1f %10.1f %10.2f %10.1f %7.2fx" % (
        n, f[0], f[1], f[2], f[3], h[0], h[1], h[2], f[0] / h[0]))
if len(SIZES) > 1:
    lo, hi = SIZES[0], SIZES[-1]
    print("%d/%d files round-trip ratio: fuse %.2fx (target <= 1.5x), hardlink %.2fx; "
          "fuse with no reads (true) %.2fx" % (
              hi, lo, res[hi]["fuse"][0] / res[lo]["fuse"][0],
              res[hi]["hardlink"][0] / res[lo]["hardlink"][0],
              res[hi]["fuse"][3] / res[lo]["fuse"][3]))
    print("reading %d files (%d/100) costs the action %.1f ms with fuse, %.1f ms with hardlinks "
          "(run time %d files minus %d files)" % (
              hi // 100, hi, res[hi]["fuse"][2] - res[lo]["fuse"][2],
              res[hi]["hardlink"][2] - res[lo]["hardlink"][2], hi, lo))

print("\n== %d MiB read: dd bs=1M through FUSE (+overlay, inside an action) vs the CAS file" % (BIG >> 20))
d, c = daemons["fuse"]
pattern = hashlib.sha256(b"bench").digest() * (1 << 15)
h = hashlib.sha256()
for off in range(0, BIG, len(pattern)):
    h.update(pattern[:min(len(pattern), BIG - off)])
big = re_pb2.Digest(hash=h.hexdigest(), size_bytes=BIG)
name = c.write_name(big)
def gen():
    off = 0
    while off < BIG:
        piece = pattern[:min(len(pattern), BIG - off)]
        yield bs_pb2.WriteRequest(resource_name=name if off == 0 else "", write_offset=off,
                                  data=piece, finish_write=off + len(piece) >= BIG)
        off += len(piece)
c.bs_write_requests(gen(), timeout=1200)
root = c.upload_message(re_pb2.Directory(files=[re_pb2.FileNode(name="big.bin", digest=big)]))
blob = os.path.join(d.state_dir, "cas", "blobs", big.hash[:2], big.hash)

def rate(text):
    m = re.search(r"copied, ([0-9.]+) s", text)
    return BIG / float(m.group(1)) / 1e9 if m else float("nan")

def direct():
    p = subprocess.run(["dd", "if=" + blob, "of=/dev/null", "bs=1M"], capture_output=True, text=True)
    return rate(p.stderr)

served = []
def through_fuse():
    _, st, _, err = execute(c, root, "dd if=big.bin of=/dev/null bs=1M")
    served.append(int(st.get("bytes_read", 0)))
    return rate(err.decode())

def drop():
    subprocess.run(["sync"]); open("/proc/sys/vm/drop_caches", "w").write("3\n")

through_fuse(); direct()  # warm both (and the store's first-open verification)
warm_f = statistics.median([through_fuse() for _ in range(3)])
warm_d = statistics.median([direct() for _ in range(3)])
pt = [ln.strip() for ln in open(d.log_path, errors="replace") if "FUSE passthrough" in ln]
print("casboxd: %s" % (pt[-1].split(" casfs: ", 1)[-1] if pt else "(no passthrough line)"))
print("warm: fuse %.2f GB/s, direct %.2f GB/s, fuse/direct %.0f%% (target >= 80%%); "
      "bytes served by casboxd per read: %d" % (warm_f, warm_d, 100 * warm_f / warm_d, served[-1]))
if os.geteuid() == 0:
    cf, cd = [], []
    for _ in range(2):
        drop(); cf.append(through_fuse())
        drop(); cd.append(direct())
    print("cold: fuse %.2f GB/s, direct %.2f GB/s, fuse/direct %.0f%%" % (
        statistics.median(cf), statistics.median(cd), 100 * statistics.median(cf) / statistics.median(cd)))
else:
    print("cold: skipped (drop_caches needs root)")
print("load average at end: %s" % " ".join(load()))
for d, c in daemons.values():
    d.stop()
PYEOF
