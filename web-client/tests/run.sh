#!/bin/sh
# Run the browser end-to-end tests inside a private network namespace (loopback only), so
# Chromium's ICE sees no other interface. Needs root (unshare -n). Extra args: test files
# (or node --test options). nat.test.mjs builds its own named namespaces (nat-net.sh):
# `ip netns add` makes fresh ones whatever namespace it runs in, so it runs here too.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
for m in playwright-core axe-core typescript; do
  if [ ! -d "$here/../node_modules/$m" ]; then
    echo "$m is missing: run 'npm ci --prefix web-client' first" >&2
    exit 2
  fi
done
if [ "$#" -eq 0 ]; then set -- "$here"/*.test.mjs; fi
exec unshare -n sh -c 'ip link set lo up && exec node --test --test-concurrency=1 "$@"' sh "$@"
