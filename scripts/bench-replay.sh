#!/usr/bin/env bash
# End-to-end replay benchmark: events/s and peak memory of `livefunnel replay`.
#
# Usage (from anywhere in the workspace):
#   scripts/bench-replay.sh                  # the simulator's standard rooms
#   PROFILE=dense scripts/bench-replay.sh    # the dense stream: 1,000 busy rooms, ~5 M events
#   ROOMS=1000 DURATION=10m SEED=1 scripts/bench-replay.sh
#
# What it does:
#   1. cargo build --release -p livefunnel
#   2. once, cached: target/release/livefunnel sim --profile standard --rooms 1000 \
#        --duration 10m --seed 1 --output target/bench-data/sim-standard-1000r-10m-s1.jsonl
#      (>= 1,000,000 events over 1,000 rooms; the script checks the count), or with
#      PROFILE=dense: --profile dense --rooms 1000 --duration 310s (>= 5,000,000 events:
#      every room ~1,000 events per minute, ~1,000 viewers online, 200 products)
#   3. /usr/bin/time -v target/release/livefunnel replay --input FILE --output /dev/null \
#        --summary target/bench-data/summary.json
#      with the default configuration (windows 1m, 5m/10s, 10m/1m, session),
#      then prints events/s (lines / wall seconds), events per CPU second (user + system
#      time: the figure to compare on a shared machine) and the maximum RSS.
#   Without /usr/bin/time it falls back to bash timing and VmHWM sampled from /proc.
set -euo pipefail

PROFILE="${PROFILE:-standard}"
case "$PROFILE" in
    standard) default_duration=10m default_min=1000000 ;;
    dense) default_duration=310s default_min=5000000 ;;
    *) echo "error: PROFILE must be standard or dense, got $PROFILE" >&2; exit 1 ;;
esac
ROOMS="${ROOMS:-1000}"
DURATION="${DURATION:-$default_duration}"
SEED="${SEED:-1}"
MIN_EVENTS="${MIN_EVENTS:-$default_min}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="target/release/livefunnel"
data_dir="target/bench-data"
data="$data_dir/sim-${PROFILE}-${ROOMS}r-${DURATION}-s${SEED}.jsonl"
summary="$data_dir/summary.json"
mkdir -p "$data_dir"

cargo build --release -p livefunnel >&2

if [[ ! -s "$data" ]]; then
    echo "generating $data ..." >&2
    "$bin" sim --profile "$PROFILE" --rooms "$ROOMS" --duration "$DURATION" --seed "$SEED" --output "$data.tmp"
    mv "$data.tmp" "$data"
fi
lines=$(wc -l < "$data")
bytes=$(wc -c < "$data")
if (( lines < MIN_EVENTS )); then
    echo "error: $data has $lines events, fewer than $MIN_EVENTS; raise DURATION or ROOMS" >&2
    exit 1
fi
echo "input: $data ($lines events, $((bytes / 1000000)) MB, $ROOMS $PROFILE rooms)"

cmd=("$bin" replay --input "$data" --output /dev/null --summary "$summary")
timelog="$data_dir/time.log"
if [[ -x /usr/bin/time ]]; then
    /usr/bin/time -v "${cmd[@]}" > /dev/null 2> "$timelog"
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$timelog")
    # h:mm:ss or m:ss.ss -> seconds
    secs=$(awk -v t="$wall" 'BEGIN { n = split(t, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }')
    rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$timelog")
    cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {print s}' "$timelog")
else
    start=$(date +%s.%N)
    "${cmd[@]}" > /dev/null 2> "$timelog" &
    pid=$!
    rss_kb=0
    while kill -0 "$pid" 2> /dev/null; do
        hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2> /dev/null || true)
        [[ -n "$hwm" ]] && (( hwm > rss_kb )) && rss_kb=$hwm
        sleep 0.05
    done
    wait "$pid"
    end=$(date +%s.%N)
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')
    cpu=$secs
fi

awk -v n="$lines" -v s="$secs" -v c="$cpu" -v r="$rss_kb" 'BEGIN {
    printf "replay: %d events in %.2f s = %.0f events/s; %.2f s CPU = %.0f events per CPU second; max RSS %.1f MiB\n", n, s, n / s, c, n / c, r / 1024
}'
echo "summary: $(cat "$summary")"
