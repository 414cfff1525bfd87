#!/bin/sh
# Print the call figures (tests/measure.mjs) inside a private, loopback-only network namespace.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec unshare -n sh -c 'ip link set lo up && exec node "$1"' sh "$here/measure.mjs"
