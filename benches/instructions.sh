#!/bin/sh
# Instructions per request on each path, counted by callgrind: stable where timings on a
# shared machine are not. Runs benches/allocations.rs once per path, collecting only inside
# its `measured` loop (warm-up included, hence ITERS + 100).
#
#   benches/instructions.sh [ITERS] [PATH...]   # default 2000 requests, every path
#   ALLOCATIONS_BIN=path/to/allocations-<hash> benches/instructions.sh   # a given build
#
# Needs valgrind; the Redis paths also need redis-server (the bench starts its own).
# SHA-256 runs in software under valgrind (no SHA-NI), so paths that verify a MAC or hash
# a token count more than they cost natively: the last column is that share.
set -eu
iters=${1:-2000}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/.."
bin=${ALLOCATIONS_BIN:-$(cargo bench --all-features --bench allocations --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*allocations[^"]*\)".*/\1/p' | tail -n 1)}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
paths=${*:-"bare/service_fn layer/no_token layer/12_other_cookies layer/bad_mac \
    layer/memory_hit layer/memory_refresh layer/sqlite_hit cache/no_token cache/12_other_cookies \
    cache/hit cache/hit_encrypted layer/redis_hit layer/redis_refresh cache/hit_with_redis \
    bare/router router/no_token outer_layer/no_token router/memory_hit_me router/cache_hit_me"}
echo "| path | instructions per request | of which SHA-256 |"
echo "|---|---|---|"
for path in $paths; do
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured*' \
        --callgrind-out-file="$out" "$bin" --only "$path" --iters "$iters" >/dev/null 2>&1
    total=$(sed -n 's/^summary: //p' "$out")
    # A path that did not run (no redis-server) leaves no summary.
    if [ -n "$total" ]; then
        sha=$(callgrind_annotate --inclusive=yes "$out" 2>/dev/null |
            sed -n 's/^ *\([0-9,]*\) .*sha2::sha256::compress256.*/\1/p' | head -n 1 | tr -d ,)
        echo "| $path | $((total / (iters + 100))) | $((${sha:-0} / (iters + 100))) |"
    fi
done
