#!/usr/bin/env bash
# What metrics cost (issue 14; docs/benchmarks.md, "Metrics"): produce
# throughput of one broker recording metrics (the default) against one with
# `metrics.enabled=false`, in the same run, with a scrape of GET /metrics
# during each metered run so that the scrape's cost is in the figure too.
# Two brokers on fresh data folders; the machine's disk and loopback limits
# are measured first. Rounds alternate which broker goes first, and each
# round's topics are deleted after it, so that drift and a filling disk fall
# on both alike. The cost is the median over rounds of each round's paired
# ratio. Each run starts after a `sync`, so that no run pays for the
# write-back of the one before it.
#
# Usage: scripts/bench-metrics.sh
# Environment (defaults in brackets):
#   WEIR [target/release/weir, built when missing]
#   OUT [target/bench-metrics]   DATA_ROOT [target/benchdata]   ROUNDS [7]
#   RECORDS [2000000]  SIZE [100]  PARTITIONS [8]
# Small records make the broker's per-request work, where metrics are
# recorded, weigh more than the disk's bandwidth. The broker's CPU time per
# run is recorded beside the throughput: on a shared disk it is the steadier
# of the two.
# Results: one JSON line per measurement in OUT/results.jsonl, and a summary
# on stdout.
set -euo pipefail

cd "$(dirname "$0")/.."
: "${WEIR:=target/release/weir}" "${OUT:=target/bench-metrics}" "${DATA_ROOT:=target/benchdata}"
: "${ROUNDS:=7}" "${RECORDS:=2000000}" "${SIZE:=100}" "${PARTITIONS:=8}"
if [ ! -x "$WEIR" ]; then
    cargo build --release --bin weir
fi
mkdir -p "$OUT" "$DATA_ROOT"
work=$(mktemp -d "$DATA_ROOT/bench-metrics-XXXX")
on_pid="" off_pid=""
cleanup() {
    for pid in $on_pid $off_pid; do
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null || true
    done
    # The brokers' output stays with the results.
    cp "$work"/*.out "$work"/*.err "$OUT"/ 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
results="$OUT/results.jsonl"
: >"$results"

"$WEIR" bench limits --dir "$work" --size-mb 256 --json | tee -a "$results"

"$WEIR" serve --data-dir "$work/on" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    >"$work/on.out" 2>"$work/on.err" &
on_pid=$!
"$WEIR" serve --data-dir "$work/off" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --set metrics.enabled=false >"$work/off.out" 2>"$work/off.err" &
off_pid=$!
# wait_ready OUT ERR PID: until the broker printed its admin address.
wait_ready() {
    for _ in $(seq 1 300); do
        grep -q '^admin listening on ' "$1" && return 0
        kill -0 "$3" 2>/dev/null || { cat "$2"; exit 1; }
        sleep 0.1
    done
    echo "no admin address in $1" >&2
    exit 1
}
wait_ready "$work/on.out" "$work/on.err" "$on_pid"
wait_ready "$work/off.out" "$work/off.err" "$off_pid"
kafka() { sed -n 's/^listening on //p' "$1" | head -1; }
admin() { sed -n 's/^admin listening on //p' "$1"; }
on=$(kafka "$work/on.out") off=$(kafka "$work/off.out") on_admin=$(admin "$work/on.out")

# cpu PID: the CPU time the process has used, in clock ticks.
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# label BROKERS TOPIC: produce, and record the result and the broker's CPU
# seconds with a label.
run() {
    local label=$1 brokers=$2 topic=$3 json pid before
    case $brokers in "$on") pid=$on_pid ;; *) pid=$off_pid ;; esac
    "$WEIR" --brokers "$brokers" topic create "$topic" --partitions "$PARTITIONS" >/dev/null
    # The previous run's dirty pages are written back first, so that no run
    # pays for the one before it.
    sync
    before=$(cpu "$pid")
    json=$("$WEIR" bench produce --brokers "$brokers" --topic "$topic" --count "$RECORDS" --size "$SIZE" --json)
    printf '{"label":"%s","broker_cpu_s":%s,"result":%s}\n' "$label" \
        "$(awk -v a="$(cpu "$pid")" -v b="$before" -v t="$(getconf CLK_TCK)" 'BEGIN { print (a - b) / t }')" "$json" | tee -a "$results"
    "$WEIR" --brokers "$brokers" topic delete "$topic" >/dev/null
}
# on ROUND: the metered run, with /metrics scraped every second meanwhile
# by a separate process (a subshell would inherit the EXIT trap), and the
# last scrape's size and time recorded.
on() {
    bash -c 'while true; do
        curl -s -o /dev/null -w "%{size_download} %{time_total}\n" "http://$1/metrics" >"$2.tmp" &&
            mv "$2.tmp" "$2"
        sleep 1
    done' scraper "$on_admin" "$work/scrape.stat" &
    local scraper=$!
    run "produce metrics on" "$on" "on-$1"
    kill "$scraper"
    wait "$scraper" 2>/dev/null || true
    local bytes seconds
    read -r bytes seconds <"$work/scrape.stat"
    printf '{"label":"scrape","result":{"bytes":%s,"seconds":%s}}\n' "$bytes" "$seconds" | tee -a "$results"
}
for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then
        on "$round"
        run "produce metrics off" "$off" "off-$round"
    else
        run "produce metrics off" "$off" "off-$round"
        on "$round"
    fi
done

echo "== medians over $ROUNDS rounds"
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith('{"label"')]
on = [r["result"]["mb_per_sec"] for r in rows if r["label"] == "produce metrics on"]
off = [r["result"]["mb_per_sec"] for r in rows if r["label"] == "produce metrics off"]
ratios = [a / b for a, b in zip(on, off)]
print(f"produce: metrics on {statistics.median(on):.1f} MB/s, off {statistics.median(off):.1f} MB/s")
print(f"throughput on/off, paired by round: {', '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}")
cpu_on = [r["broker_cpu_s"] for r in rows if r["label"] == "produce metrics on"]
cpu_off = [r["broker_cpu_s"] for r in rows if r["label"] == "produce metrics off"]
cpu_ratios = [a / b for a, b in zip(cpu_on, cpu_off)]
print(f"broker CPU per run: on {statistics.median(cpu_on):.2f} s, off {statistics.median(cpu_off):.2f} s")
print(f"broker CPU on/off, paired by round: {', '.join(f'{r:.3f}' for r in cpu_ratios)}; median {statistics.median(cpu_ratios):.3f}")
scrapes = [r["result"] for r in rows if r["label"] == "scrape"]
print(f"a scrape: {statistics.median(s['bytes'] for s in scrapes):.0f} bytes in {statistics.median(s['seconds'] for s in scrapes) * 1000:.1f} ms (median)")
PY
