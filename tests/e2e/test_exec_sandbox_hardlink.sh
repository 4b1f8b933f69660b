#!/bin/bash
# End-to-end: test_exec_sandbox.py with execution.staging=hardlink. The
# default (auto) stages through FUSE wherever /dev/fuse opens, so this runs
# every sandbox check (an input written or chmodded must not change its CAS
# blob, the state dir unseen, limits, outputs) once more with inputs
# hardlinked from the CAS under the overlay, the fallback of machines
# without FUSE; then checks that the daemons did stage that way.
export CASBOXD_ARGS="${CASBOXD_ARGS:-} --set execution.staging=hardlink"
: "${E2E_LOG_DIR:=${TMPDIR:-/tmp}/casbox-e2e-logs-$(id -u)/test_exec_sandbox_hardlink}"
export E2E_LOG_DIR
/usr/bin/python3 "$(dirname "$0")/test_exec_sandbox.py" "$@" || exit
if ! grep -q "input staging: hardlink (execution.staging = hardlink)" \
  "$E2E_LOG_DIR/casboxd-main.log"; then
  echo "FAIL  casboxd[main] did not stage by hardlinks (log $E2E_LOG_DIR/casboxd-main.log)"
  exit 1
fi
echo "ok    casboxd[main] staged by hardlinks"
