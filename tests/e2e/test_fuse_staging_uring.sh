#!/bin/sh
# test_fuse_staging.py with FUSE requests over io_uring (execution.fuse_uring
# = on; the fuse module's enable_uring is turned on for the run and put back).
# Skips (77) when not root or the kernel has no FUSE io_uring. The 1 GiB read
# runs only in the /dev/fuse run (test_fuse_staging.py), to keep the suite short.
exec /usr/bin/python3 "$(dirname "$0")/test_fuse_staging.py" --uring on --skip-big "$@"
