#!/bin/bash
# End-to-end: Debian's Bazel 4.2.3 against a casboxd that requires bearer
# tokens ([auth] tokens_file), sent with --remote_header=Authorization=Bearer.
#
#   1. no token: the build fails (UNAUTHENTICATED), nothing is executed;
#   2. zlib, a token with read,write,execute: `bazel test //...` with every
#      spawn remote (--spawn_strategy=remote --noremote_local_fallback), the
#      tests pass, and casboxd refused nothing;
#   3. --remote_cache with a read-only token (instance "ci"): Bazel sees
#      update_enabled false and stops at once ("not authorized to write local
#      results") unless --noremote_upload_local_results; with it, it builds
#      locally and uploads nothing (no new blob, no action-cache entry, no
#      refused call);
#   4. a CI token (read,write,write-ac) fills the cache of "ci"; after `bazel
#      clean` the read-only token's build gets remote cache hits, still
#      uploading nothing.
#
# Bazel 4.2.3's JDK cannot do TLS with grpc here ("JDK provider does not
# support ALPN protocol", README), so this runs over plaintext; test_auth.py
# covers TLS with the Python client and the C client's unit test.
#
# Knobs: E2E_WORKSPACES (default zlib) for step 2, E2E_CACHE_WORKSPACES
# (default tiny) for steps 3-4, E2E_JOBS (default 8), and lib.sh's.
source "$(dirname "$0")/lib.sh"

tokens="$E2E_TMP/tokens"
( umask 077; printf '%s\n' \
  '# TOKEN PERMISSIONS [INSTANCE_PREFIX...]' \
  'tok-dev-0123456789 read,write,execute' \
  'tok-ci-0123456789 read,write,write-ac' \
  'tok-ro-0123456789 read' > "$tokens" )
conf="$E2E_TMP/casboxd.conf"
printf '[auth]\ntokens_file = %s\n' "$tokens" > "$conf"
CASBOXD_ARGS="${CASBOXD_ARGS:-} --config $conf" start_casboxd
grep -q "auth: 3 token(s)" "$CASBOXD_LOG" || e2e_fail "casboxd did not load the tokens (log $CASBOXD_LOG)"

refusals() { grep -c ' refused ' "$CASBOXD_LOG" || true; }
blob_count() { find "$CASBOXD_STATE/cas/blobs" -type f | wc -l; }
ac_count() { find "$CASBOXD_STATE/cas/ac" -type f 2> /dev/null | wc -l; }

common=(--remote_timeout=120 --jobs="${E2E_JOBS:-8}" --test_output=errors --verbose_failures)
exec_flags=(--spawn_strategy=remote --noremote_local_fallback --remote_default_exec_properties=OSFamily=Linux)

for ws in ${E2E_WORKSPACES:-zlib}; do
  stage_workspace "$ws"
  cd "$WS_DIR"
  log "$ws: no token: the build must fail, unauthenticated"
  l0="$E2E_LOG_DIR/$ws-notoken.log"
  if e2e_run "${_BAZEL_CMD[@]}" build //... --remote_executor="grpc://$CASBOXD_TARGET" \
      "${exec_flags[@]}" "${common[@]}" > "$l0" 2>&1; then
    e2e_fail "$ws: a build without a token succeeded (log $l0)"
  fi
  grep -qiE 'UNAUTHENTICATED|unauthenticated' "$l0" ||
    { tail -n 20 "$l0" >&2; e2e_fail "$ws: the failure does not say UNAUTHENTICATED (log $l0)"; }
  [ "$(ac_count)" = 0 ] || e2e_fail "$ws: action-cache entries after an unauthenticated build"
  before="$(refusals)"

  log "$ws: token with read,write,execute: every action remote"
  l1="$E2E_LOG_DIR/$ws-remote.log"
  bazel_run "$l1" test //... --remote_executor="grpc://$CASBOXD_TARGET" "${exec_flags[@]}" \
    "${common[@]}" --remote_header="Authorization=Bearer tok-dev-0123456789"
  log "$ws: $(processes_line "$l1")"
  other="$(nonremote_kinds "$l1" | paste -sd, -)"
  [ -z "$other" ] || { remote_warnings "$l1"; e2e_fail "$ws: spawns ran locally ($other) (log $l1)"; }
  [ "$(process_count "$l1" remote)" -gt 0 ] || e2e_fail "$ws: nothing ran remotely (log $l1)"
  [ "$(refusals)" = "$before" ] || e2e_fail "$ws: casboxd refused calls of the dev token (log $CASBOXD_LOG)"
  bazel_shutdown "$WS_DIR"
  cd /
done

for ws in ${E2E_CACHE_WORKSPACES:-tiny}; do
  stage_workspace "$ws"
  cd "$WS_DIR"
  cache=(--remote_cache="grpc://$CASBOXD_TARGET" --remote_instance_name=ci "${common[@]}")
  blobs0="$(blob_count)"; ac0="$(ac_count)"; ref0="$(refusals)"
  log "$ws: read-only token, --remote_cache: Bazel sees update_enabled false"
  l2="$E2E_LOG_DIR/$ws-readonly-upload.log"
  if e2e_run "${_BAZEL_CMD[@]}" test //... "${cache[@]}" \
      --remote_header="Authorization=Bearer tok-ro-0123456789" > "$l2" 2>&1; then
    e2e_fail "$ws: Bazel did not notice update_enabled false (log $l2)"
  fi
  grep -q 'not authorized to write local results' "$l2" ||
    { tail -n 20 "$l2" >&2; e2e_fail "$ws: Bazel failed for another reason (log $l2)"; }
  log "$ws: read-only token with --noremote_upload_local_results: builds locally, uploads nothing"
  ro=(--remote_header="Authorization=Bearer tok-ro-0123456789" --noremote_upload_local_results)
  l2="$E2E_LOG_DIR/$ws-readonly.log"
  bazel_run "$l2" test //... "${cache[@]}" "${ro[@]}"
  log "$ws: read-only: $(processes_line "$l2")"
  [ "$(blob_count)" = "$blobs0" ] || e2e_fail "$ws: the read-only build stored $(( $(blob_count) - blobs0 )) blob(s)"
  [ "$(ac_count)" = "$ac0" ] || e2e_fail "$ws: the read-only build wrote action-cache entries"
  [ "$(refusals)" = "$ref0" ] ||
    { grep ' refused ' "$CASBOXD_LOG" | tail -n 5 >&2; e2e_fail "$ws: Bazel tried to write with the read-only token (it should see update_enabled false)"; }

  log "$ws: CI token fills the cache of instance ci"
  bazel_run "$E2E_LOG_DIR/$ws-clean1.log" clean
  l3="$E2E_LOG_DIR/$ws-ci.log"
  bazel_run "$l3" test //... "${cache[@]}" --remote_header="Authorization=Bearer tok-ci-0123456789"
  [ "$(ac_count)" -gt "$ac0" ] || e2e_fail "$ws: the CI build wrote no action-cache entry (log $l3)"

  log "$ws: read-only token after bazel clean: remote cache hits, nothing uploaded"
  bazel_run "$E2E_LOG_DIR/$ws-clean2.log" clean
  blobs1="$(blob_count)"; ac1="$(ac_count)"; ref1="$(refusals)"
  l4="$E2E_LOG_DIR/$ws-readonly-hits.log"
  bazel_run "$l4" test //... "${cache[@]}" "${ro[@]}"
  hits="$(process_count "$l4" "remote cache hit")"
  log "$ws: read-only after CI: $(processes_line "$l4")"
  [ "$hits" -gt 0 ] || e2e_fail "$ws: no remote cache hit for the read-only token (log $l4)"
  [ "$(blob_count)" = "$blobs1" ] && [ "$(ac_count)" = "$ac1" ] ||
    e2e_fail "$ws: the read-only build changed the store"
  [ "$(refusals)" = "$ref1" ] || e2e_fail "$ws: calls of the read-only token were refused"
  bazel_shutdown "$WS_DIR"
  cd /
done

grep -q 'tok-dev\|tok-ci\|tok-ro' "$CASBOXD_LOG" && e2e_fail "a token appears in casboxd's log"
casboxd_alive || e2e_fail "casboxd died during the builds"
log "ok"
