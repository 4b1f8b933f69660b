#!/bin/sh
# Writes the packaged /etc/casbox/casboxd.conf from `casboxd --print-config`.
#
#   casboxd --print-config | sh packaging/gen-config.sh > packaging/casboxd.conf
#
# (scripts/package --update-config does exactly that.)  The package builds and
# tests/e2e/test_packaging.sh run it again and diff the result against the
# committed file, so a key added to config/config.c cannot be missing from the
# packaged config.
#
# Every key is commented out, showing its compiled-in default, except
# state_dir, which casboxd requires and which the packages set to
# /var/lib/casbox.  Values that --print-config resolves on the machine it runs
# on are written as their defaults instead: worker_name (the hostname), and
# [execution] slots and every key whose help says "0 = number of CPUs" (0).  Byte sizes (keys ending in
# "bytes") and their bounds are written with a K/M/G/T suffix when they are an
# exact multiple.
set -eu

awk '
function human(v,   u, i) {
    split("K M G T", u, " ")
    if (v !~ /^[0-9]+$/ || v == 0) return v
    for (i = 4; i >= 1; i--)
        if (v % (1024 ^ i) == 0) return (v / (1024 ^ i)) u[i]
    return v
}
BEGIN {
    print "# /etc/casbox/casboxd.conf: configuration of casboxd, the casbox remote-execution"
    print "# daemon (systemd unit casbox.service).  INI format, read by libinih."
    print "#"
    print "# Every key is shown commented out with its built-in default; uncomment a line"
    print "# to change it.  Sizes take K, M, G, T suffixes (powers of 1024); durations are"
    print "# seconds; [a .. b] are the bounds, and a value outside them stops casboxd at"
    print "# start-up with a message naming the key.  The full reference is in"
    print "# /usr/share/doc/casbox/configuration.md (docs/configuration.md in the sources)."
    print "#"
    print "# Check a change, then apply it:"
    print "#     casboxd --config /etc/casbox/casboxd.conf --print-config"
    print "#     systemctl reload casbox     # limits, timeouts, seccomp, platform"
    print "#                                 # properties, log_level, worker_name"
    print "#     systemctl restart casbox    # any other key (the log says which)"
    print "#"
    print "# casboxd serves plaintext gRPC without authentication: listen on loopback"
    print "# (the default) or on a network only trusted build clients can reach."
    print "# See /usr/share/doc/casbox/security.md."
}
function flush_help() { if (help != "") print help; help = "" }
/^\[.*\]$/ { flush_help(); section = $0; print ""; print; next }
/^#/ { flush_help(); help = $0; next }
/^[a-z_]+ = / {
    key = $1
    val = substr($0, index($0, "=") + 2)
    if (key ~ /bytes$/ && match(help, /\[[0-9]+ \.\. [0-9]+\]$/)) {
        split(substr(help, RSTART + 1, RLENGTH - 2), b, " ")
        help = substr(help, 1, RSTART - 1) "[" human(b[1]) " .. " human(b[3]) "]"
    }
    flush_help()
    if (key == "state_dir") { print "state_dir = /var/lib/casbox"; next }
    if (key == "worker_name" || (section == "[worker]" && key == "name")) val = ""
    if (help ~ /0 = number of CPUs/ || (section == "[execution]" && key == "slots")) val = 0
    if (key ~ /bytes$/) val = human(val)
    line = "#" key " = " val
    sub(/ +$/, "", line)
    print line
    next
}
/^$/ { flush_help(); next }
{ print "gen-config.sh: unexpected line in --print-config output: " $0 > "/dev/stderr"; exit 1 }
'
