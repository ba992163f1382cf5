#!/usr/bin/env bash
# End-to-end pipeline benchmark: `livefunnel bench` (Kafka mock cluster in-process ->
# pipeline -> ClickHouse and /metrics) against a throwaway local ClickHouse server.
#
# Usage (from anywhere in the workspace):
#   scripts/bench-pipeline.sh                         # the documented defaults
#   scripts/bench-pipeline.sh --events 500000 --freshness-seconds 10
#                                                     # extra flags go to `livefunnel bench`
#   LIVEFUNNEL_WINDOWS__SET=1m,session scripts/bench-pipeline.sh
#   CLICKHOUSE_URL=http://127.0.0.1:8123 scripts/bench-pipeline.sh
#                                                     # a server you run instead of a fresh one
#
# What it does:
#   1. cargo build --release -p livefunnel (into $CARGO_TARGET_DIR, default target/)
#   2. starts a throwaway clickhouse-server (the testkit's `throwaway-clickhouse`: its
#      own config, data directory and free loopback ports, as for the tests; the binary
#      is $TESTKIT_CLICKHOUSE_SERVER, clickhouse-server, or `clickhouse server`)
#   3. prints the machine's load (uptime), runs
#        livefunnel bench --clickhouse-url URL --clickhouse-pid PID --json FILE [your flags]
#      with the defaults: 2,000,000 events, 1,000 rooms, 4 partitions, then 50,000
#      events/s for 30 s with a probe every 100 ms and /metrics scraped every 20 ms;
#      the figures go to target/bench-data/pipeline.json
#   4. prints the load again, stops the server and removes its directory.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
bin="$target/release/livefunnel"
out_dir="$target/bench-data"
json="$out_dir/pipeline.json"
mkdir -p "$out_dir"

cargo build --release -p livefunnel >&2

helper_pid=""
cleanup() {
    # Closing the helper's stdin makes it kill the server and remove its directory.
    if [[ -n "$helper_pid" ]]; then
        if [[ -n "${clickhouse[1]:-}" ]]; then
            eval "exec ${clickhouse[1]}>&-"
        fi
        wait "$helper_pid" 2> /dev/null || true
    fi
}
trap cleanup EXIT

bench_args=()
if [[ -n "${CLICKHOUSE_URL:-}" ]]; then
    url="$CLICKHOUSE_URL"
    echo "clickhouse: $url (yours)"
else
    # The tests' own throwaway server (crates/livefunnel-testkit): it prints "URL PID"
    # and runs until its stdin closes, which happens when this script exits.
    cargo build --release -p livefunnel-testkit --bin throwaway-clickhouse >&2
    coproc clickhouse { exec "$target/release/throwaway-clickhouse"; }
    helper_pid=$clickhouse_PID
    read -r url ch_pid <&"${clickhouse[0]}" || {
        echo "error: the throwaway clickhouse server did not start (see above)" >&2
        exit 1
    }
    bench_args+=(--clickhouse-pid "$ch_pid")
    echo "clickhouse: $url (pid $ch_pid)"
fi

echo "machine: $(nproc) cpus; before: $(uptime)"
"$bin" bench --clickhouse-url "$url" "${bench_args[@]}" --json "$json" "$@"
echo "after: $(uptime)"
echo "figures: $json"
