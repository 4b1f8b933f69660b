#!/bin/bash
# End-to-end: Debian's Bazel 4.2.3 downloads an http_file through casboxd's
# Remote Asset API (--experimental_remote_downloader=grpc://...).
#
# A Python http.server on loopback serves files/data.txt and logs each
# request; casboxd runs with [asset] enabled and only that server's /files/
# allowed. The `asset` workspace has an http_file of it (right sha256) used
# by a genrule, and one with a wrong sha256.
#   1. bazel build //:show with --remote_cache and the remote downloader
#      (Bazel's own repository cache off): the genrule sees the file; casboxd
#      fetched it once from the origin;
#   2. bazel clean --expunge, build again: casboxd answers from its map, the
#      origin sees no new request;
#   3. bazel build //:show_wrong fails, with casboxd's checksum mismatch
#      message, and nothing of it is cached.
source "$(dirname "$0")/lib.sh"

origin_dir="$E2E_TMP/origin"
mkdir -p "$origin_dir/files"
printf 'data served by the loopback origin\n' > "$origin_dir/files/data.txt"
origin_port="$(e2e_free_port)"
origin_log="$E2E_LOG_DIR/origin.log"
"$PY" -m http.server --bind 127.0.0.1 --directory "$origin_dir" "$origin_port" \
  > "$origin_log" 2>&1 < /dev/null &
origin_pid=$!
e2e_on_exit "kill $origin_pid 2> /dev/null; wait $origin_pid 2> /dev/null; true"
origin="http://127.0.0.1:$origin_port"
for _ in $(seq 100); do
  curl -fsS -o /dev/null "$origin/files/data.txt" 2> /dev/null && break
  sleep 0.1
done
requests() { grep -c 'GET /files/data.txt' "$origin_log" || true; }
[ "$(requests)" -ge 1 ] || e2e_fail "the loopback origin did not start (log $origin_log)"
base="$(requests)"

conf="$E2E_TMP/casboxd.conf"
cat > "$conf" <<EOF
[asset]
enabled = true
allowed_url_prefixes = $origin/files/
max_bytes = 16M
timeout = 60
EOF
CASBOXD_ARGS="--config $conf --no-execution"
start_casboxd

stage_workspace asset
cd "$WS_DIR"
sha="$(sha256sum "$origin_dir/files/data.txt" | cut -d' ' -f1)"
wrong="$(printf 'something else' | sha256sum | cut -d' ' -f1)"
sed -i -e "s|@ORIGIN@|$origin|g" -e "s|@DATA_SHA256@|$sha|" -e "s|@WRONG_SHA256@|$wrong|" WORKSPACE
flags=(
  --remote_cache="grpc://$CASBOXD_TARGET"
  --experimental_remote_downloader="grpc://$CASBOXD_TARGET"
  --repository_cache=        # Bazel's own cache of downloads: off, so every fetch asks casboxd
  --remote_timeout=60
  --verbose_failures
)

log "phase 1: bazel build //:show, downloading through casboxd"
l1="$E2E_LOG_DIR/phase1.log"
bazel_run "$l1" build //:show "${flags[@]}"
bin="$(bazel_in info bazel-bin "${flags[@]}" 2> /dev/null)"
grep -qx 'data served by the loopback origin' "$bin/show.txt" ||
  e2e_fail "show.txt does not hold the downloaded file: $(cat "$bin/show.txt")"
[ "$(requests)" = $((base + 1)) ] ||
  e2e_fail "the origin saw $(($(requests) - base)) request(s), want 1 from casboxd (log $origin_log)"
grep -q "asset: fetched $origin/files/data.txt" "$CASBOXD_LOG" ||
  e2e_fail "casboxd did not log the fetch: Bazel downloaded it itself? (log $CASBOXD_LOG)"

log "phase 2: bazel clean --expunge, build again: answered from casboxd's map"
bazel_run "$E2E_LOG_DIR/expunge.log" clean --expunge
l2="$E2E_LOG_DIR/phase2.log"
bazel_run "$l2" build //:show "${flags[@]}"
bin="$(bazel_in info bazel-bin "${flags[@]}" 2> /dev/null)"
grep -qx 'data served by the loopback origin' "$bin/show.txt" || e2e_fail "phase 2: show.txt is wrong"
[ "$(requests)" = $((base + 1)) ] ||
  e2e_fail "phase 2: the origin was asked again ($(($(requests) - base)) requests in all)"

log "phase 3: an http_file with a wrong sha256 fails with casboxd's message"
l3="$E2E_LOG_DIR/phase3.log"
if e2e_run "${_BAZEL_CMD[@]}" build //:show_wrong "${flags[@]}" --remote_retries=0 > "$l3" 2>&1; then
  e2e_fail "a file with the wrong sha256 was accepted (log $l3)"
fi
grep -q 'checksum mismatch' "$l3" || {
  tail -n 30 "$l3" >&2
  e2e_fail "Bazel's error does not carry casboxd's 'checksum mismatch' (log $l3)"
}
grep -q "sha256-" "$l3" || e2e_fail "the mismatch message does not give the checksums (log $l3)"

bazel_shutdown "$WS_DIR"
cd /
casboxd_alive || e2e_fail "casboxd died during the builds"
log "ok: http_file fetched once through casboxd, then served from its map; a wrong sha256 refused"
