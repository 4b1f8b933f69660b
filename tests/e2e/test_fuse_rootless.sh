#!/bin/bash
# End-to-end: test_exec_rootless.sh with execution.staging=fuse. An ordinary
# user's casboxd (empty bounding set, so no setuid fusermount3) mounts its FUSE
# input filesystem inside a user and mount namespace of its own
# (daemon/rootless.c); Bazel builds and tests the tiny workspace through it,
# the sandbox checks pass, and every action was staged through FUSE. Needs
# root to create the user and to make /dev/fuse 0666 for the test (as
# distributions ship it; restored afterwards).
E2E_ROOTLESS_STAGING=fuse
# shellcheck source=test_exec_rootless.sh
source "$(dirname "$0")/test_exec_rootless.sh"
