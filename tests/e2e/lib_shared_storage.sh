# shellcheck shell=bash
# Shell helpers of the shared-storage tests (test_shared_storage_*.sh), with
# BuildStream's artifact server as the remote CAS (artifact_server.py).
# Sourced after lib.sh. Needs BST_TARGET (HOST:PORT) and BST_REPO (its
# repository) set by the test once the server is up.
export E2E_DIR

# exec_log_digests JSON [KIND [SUFFIX]]: "hash size" of every input and output
# (KIND all), inputs only (inputs) or outputs only (outputs) in Bazel's
# execution log, optionally only paths ending in SUFFIX; deduplicated.
exec_log_digests() {
  "$PY" - "$1" "${2:-all}" "${3:-}" <<'PYEOF'
import json, sys
text, kind, suffix = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3]
dec, pos, seen = json.JSONDecoder(), 0, set()
while True:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        break
    obj, pos = dec.raw_decode(text, pos)
    lists = []
    if kind in ("all", "inputs"):
        lists.append(obj.get("inputs", []))
    if kind in ("all", "outputs"):
        lists.append(obj.get("actualOutputs", []))
    for lst in lists:
        for e in lst:
            d = e.get("digest")
            if d and e.get("path", "").endswith(suffix):
                seen.add((d["hash"], int(d.get("sizeBytes", 0))))
for h, s in sorted(seen):
    print(h, s)
PYEOF
}

# bst_missing FILE: the digests of FILE ("hash size" lines) that the artifact
# server lacks, asked through its own FindMissingBlobs.
bst_missing() {
  "$PY" - "$BST_TARGET" "$1" <<'PYEOF'
import sys
sys.path.insert(0, __import__("os").environ["E2E_DIR"])
import reapi_client as rc
c = rc.Client(sys.argv[1])
ds = []
for line in open(sys.argv[2]):
    h, s = line.split()
    ds.append(rc.re_pb2.Digest(hash=h, size_bytes=int(s)))
for i in range(0, len(ds), 1000):
    for d in c.find_missing(ds[i:i + 1000]):
        print(d.hash, d.size_bytes)
PYEOF
}

# bst_delete FILE: removes those blobs from the artifact server's repository.
bst_delete() {
  local h s n=0
  while read -r h s; do
    rm -f "$BST_REPO/cas/objects/${h:0:2}/${h:2}" && n=$((n + 1))
  done < "$1"
  echo "$n"
}
