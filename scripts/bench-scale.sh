#!/usr/bin/env bash
# The scale benchmarks of issue 8 (docs/benchmarks.md, "Scale"): partition
# creation, restart and idle RSS with many partitions, broker CPU per million
# records at 1 / 1,000 / 10,000 partitions, sustained durable produce against
# the group-commit ceiling, and the index memory demo. Each step starts its own
# broker on a fresh data folder (restart reuses the partitions step's).
#
# Usage: scripts/bench-scale.sh [--smoke] [STEP...]
#   STEP: limits partitions restart cpu sustained memory (default: all, in that order)
#   --smoke: tiny sizes, to check the script and the modes in a few minutes
# Environment (defaults in brackets; --smoke lowers them):
#   WEIR [target/release/weir, built when missing]: the broker; BENCH [$WEIR]: the client
#   (another build's broker can be measured with this build's bench)   DATA_ROOT [target/benchdata]
#   SERVE_ARGS: extra `weir serve` flags for every broker the script starts
#   OUT [target/bench-scale]   PORT [39092]
#   STEP_PARTITIONS [10000]  TOTAL_PARTITIONS [100000]   restart needs partitions first
#   CPU_RECORDS [1000000]  CPU_PARTITIONS ["1 1000 10000"]  CPU_CLIENTS [2]
#   SUSTAIN_S [60]  LIMITS_MB [1024]  LIMITS_SYNCS [5000]  LIMITS_SECONDS [3]  PERF [0: 1 records a perf profile of the sustained run]
#   MEMORY_BATCHES [50000000]  MEMORY_PARTITIONS [100]  MEMORY_DURATION [30m]  LOOKUPS [1000]
#   IDLE_S [5]: pause before an idle RSS reading
# Results: one JSON file per measurement in OUT, and OUT/summary.txt.
# Broker CPU is utime+stime from /proc/PID/stat; RSS is VmRSS from /proc/PID/status.
set -euo pipefail

cd "$(dirname "$0")/.."
SMOKE=0
STEPS=()
for arg in "$@"; do
    case "$arg" in
        --smoke) SMOKE=1 ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        limits|partitions|restart|cpu|sustained|memory) STEPS+=("$arg") ;;
        *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#STEPS[@]} -gt 0 ] || STEPS=(limits partitions restart cpu sustained memory)

if [ "$SMOKE" = 1 ]; then
    : "${STEP_PARTITIONS:=100}" "${TOTAL_PARTITIONS:=300}" "${CPU_RECORDS:=20000}"
    : "${CPU_PARTITIONS:=1 10 100}" "${SUSTAIN_S:=3}" "${LIMITS_MB:=64}"
    : "${MEMORY_BATCHES:=20000}" "${MEMORY_PARTITIONS:=4}" "${LOOKUPS:=100}" "${IDLE_S:=1}"
    : "${LIMITS_SYNCS:=200}" "${LIMITS_SECONDS:=1}"
fi
: "${WEIR:=target/release/weir}" "${BENCH:=${WEIR}}" "${DATA_ROOT:=target/benchdata}" "${OUT:=target/bench-scale}"
: "${PORT:=39092}" "${STEP_PARTITIONS:=10000}" "${TOTAL_PARTITIONS:=100000}"
: "${CPU_RECORDS:=1000000}" "${CPU_PARTITIONS:=1 1000 10000}" "${CPU_CLIENTS:=2}"
: "${SUSTAIN_S:=60}" "${LIMITS_MB:=1024}" "${LIMITS_SYNCS:=5000}" "${LIMITS_SECONDS:=3}" "${PERF:=0}"
: "${MEMORY_BATCHES:=50000000}" "${MEMORY_PARTITIONS:=100}" "${MEMORY_DURATION:=30m}"
: "${LOOKUPS:=1000}" "${IDLE_S:=5}"
ADDR="127.0.0.1:$PORT"
TICKS=$(getconf CLK_TCK)

if [ ! -x "$WEIR" ]; then
    cargo build --release --bin weir
fi
mkdir -p "$OUT" "$DATA_ROOT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
# Each line ends with the load average when it was written: other tenants of
# the machine move every figure.
note() { echo "$* [load $(cut -d' ' -f1-3 /proc/loadavg)]" | tee -a "$SUMMARY" >&2; }

BROKER_PID=
# Starts a broker on data folder $1 (the log goes to $1.log) and waits for its
# "listening on" line; sets BROKER_PID.
start_broker() {
    # SERVE_ARGS: extra `weir serve` flags, e.g. "--set log.index.memory.bytes=16777216".
    # shellcheck disable=SC2086
    "$WEIR" serve --listen "$ADDR" --admin-listen 127.0.0.1:0 --data-dir "$1" --log-level warn \
        ${SERVE_ARGS:-} >>"$1.log" 2>&1 &
    BROKER_PID=$!
}
wait_listening() {
    local tries=0
    until grep -q '^listening on' "$1.log" 2>/dev/null; do
        kill -0 "$BROKER_PID" 2>/dev/null || { echo "broker exited; see $1.log" >&2; exit 1; }
        tries=$((tries + 1))
        [ "$tries" -lt 6000 ] || { echo "broker did not listen within 60 s" >&2; exit 1; }
        sleep 0.01
    done
}
stop_broker() { # $1: signal
    [ -n "$BROKER_PID" ] || return 0
    kill "-$1" "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
}
trap 'stop_broker KILL' EXIT
fresh_dir() { rm -rf "$DATA_ROOT/$1" "$DATA_ROOT/$1.log"; echo "$DATA_ROOT/$1"; }
rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$BROKER_PID/status"; }
# utime + stime of the broker, in seconds. Field 2 (the name) has no spaces.
cpu_s() { awk -v t="$TICKS" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$BROKER_PID/stat"; }
now_ms() { date +%s%3N; }
# Per-thread CPU seconds of the broker, grouped by thread name.
threads_cpu() {
    for stat in /proc/"$BROKER_PID"/task/*/stat; do
        cat "$stat" 2>/dev/null || true
    done | sed 's/^[0-9]* (\([^)]*\)) /\1 /' |
        awk -v t="$TICKS" '{ cpu[$1] += ($14 + $15) / t } END { for (n in cpu) printf "%s %.2f\n", n, cpu[n] }' |
        sort -k2 -nr
}

step_limits() {
    "$BENCH" bench limits --dir "$DATA_ROOT" --size-mb "$LIMITS_MB" --syncs "$LIMITS_SYNCS" \
        --seconds "$LIMITS_SECONDS" --json >"$OUT/limits-$1.json"
    note "limits ($1): $(jq -c '{seq: .sequential_write_mb_s|round, sync_p50_ms: .sync_4k_p50_ms, sync_p99_ms: .sync_4k_p99_ms, ceiling: .group_commit_mb_s|round, loopback: .loopback_tcp_mb_s|round}' "$OUT/limits-$1.json")"
}

step_partitions() {
    local dir; dir=$(fresh_dir partitions)
    start_broker "$dir"; wait_listening "$dir"
    note "partitions: RSS at start $(rss_mib) MiB"
    "$BENCH" bench partitions --brokers "$ADDR" --step "$STEP_PARTITIONS" --total "$TOTAL_PARTITIONS" \
        --json >"$OUT/partitions.json"
    jq -r '.steps[] | "partitions: \(.topic) \(.partitions) ready in \(.ready_ms|round) ms (total \(.total_after))"' \
        "$OUT/partitions.json" | tee -a "$SUMMARY" >&2
    note "partitions: median step $(jq '.ready_ms_median|round' "$OUT/partitions.json") ms"
    sleep "$IDLE_S"
    note "partitions: RSS idle with $TOTAL_PARTITIONS partitions $(rss_mib) MiB"
    stop_broker TERM
}

# Restarts on the partitions step's folder after SIGTERM, then after SIGKILL,
# timing from exec until Metadata shows every partition.
step_restart() {
    local dir="$DATA_ROOT/partitions" signal started ready
    [ -d "$dir" ] || { echo "restart needs the partitions step first" >&2; exit 1; }
    for signal in TERM KILL; do
        start_broker "$dir"; wait_listening "$dir"
        sleep "$IDLE_S"
        stop_broker "$signal"
        started=$(now_ms)
        start_broker "$dir"
        "$BENCH" bench partitions --wait --brokers "$ADDR" --total "$TOTAL_PARTITIONS" --timeout 10m \
            --json >"$OUT/restart-$signal.json"
        ready=$(now_ms)
        note "restart after SIG$signal: $((ready - started)) ms until Metadata showed $TOTAL_PARTITIONS partitions"
        sleep "$IDLE_S"
        note "restart after SIG$signal: RSS idle $(rss_mib) MiB"
        stop_broker TERM
    done
}

# Broker CPU per million 1 KiB records, acks=all, at each partition count,
# CPU_CLIENTS client processes sharing the count.
step_cpu() {
    local dir partitions before after each i pids cpu1=
    dir=$(fresh_dir cpu)
    start_broker "$dir"; wait_listening "$dir"
    each=$((CPU_RECORDS / CPU_CLIENTS))
    for partitions in $CPU_PARTITIONS; do
        # Creates the topic and warms up; not counted.
        "$BENCH" bench produce --brokers "$ADDR" --topic "cpu-$partitions" --partitions "$partitions" \
            --size 1024 --count 10000 --json >/dev/null
        before=$(cpu_s)
        pids=()
        for i in $(seq 1 "$CPU_CLIENTS"); do
            "$BENCH" bench produce --brokers "$ADDR" --topic "cpu-$partitions" --size 1024 --acks all \
                --linger-ms 5 -X batch.num.messages=10000 --count "$each" --json \
                >"$OUT/cpu-$partitions-client$i.json" &
            pids+=($!)
        done
        for i in "${pids[@]}"; do wait "$i"; done
        after=$(cpu_s)
        local per_million
        per_million=$(awk -v a="$after" -v b="$before" -v n="$((each * CPU_CLIENTS))" \
            'BEGIN { printf "%.2f", (a - b) / (n / 1e6) }')
        local mbs
        mbs=$(jq -s 'map(.mb_per_sec) | add | round' "$OUT"/cpu-"$partitions"-client*.json)
        note "cpu: $partitions partitions: $per_million broker CPU s per million records ($mbs MB/s over $CPU_CLIENTS clients)"
        [ -n "$cpu1" ] || cpu1=$per_million
        echo "$partitions $per_million" >>"$OUT/cpu.txt"
    done
    note "cpu: ratio last/first $(awk -v a="$per_million" -v b="$cpu1" 'BEGIN { printf "%.2f", a / b }')"
    stop_broker TERM
}

# 60 s of 1 KiB acks=all to one partition, between two limits runs.
step_sustained() {
    local dir before after
    step_limits before-sustained
    dir=$(fresh_dir sustained)
    start_broker "$dir"; wait_listening "$dir"
    if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
        ( sleep 5; perf record -F 499 -g -p "$BROKER_PID" -o "$OUT/sustained.perf.data" \
            -- sleep $((SUSTAIN_S / 2)) 2>/dev/null ) &
    fi
    before=$(cpu_s)
    "$BENCH" bench produce --brokers "$ADDR" --topic sustained --partitions 1 --size 1024 --acks all \
        --linger-ms 5 -X batch.num.messages=10000 --count 1000000000 --duration "${SUSTAIN_S}s" \
        --json >"$OUT/sustained.json"
    after=$(cpu_s)
    threads_cpu >"$OUT/sustained-threads.txt"
    stop_broker TERM
    wait || true
    step_limits after-sustained
    local mbs ceiling
    mbs=$(jq '.mb_per_sec' "$OUT/sustained.json")
    ceiling=$(jq -s 'map(.group_commit_mb_s) | max' "$OUT/limits-before-sustained.json" "$OUT/limits-after-sustained.json")
    note "sustained: $(printf '%.0f' "$mbs") MB/s for ${SUSTAIN_S} s; ceiling (higher of the two) $(printf '%.0f' "$ceiling") MB/s; ratio $(awk -v a="$mbs" -v b="$ceiling" 'BEGIN { printf "%.2f", a / b }')"
    note "sustained: broker CPU $(awk -v a="$after" -v b="$before" -v s="$SUSTAIN_S" 'BEGIN { printf "%.2f", (a - b) / s }') cores; per thread (s): $(tr '\n' ';' <"$OUT/sustained-threads.txt")"
}

step_memory() {
    local dir
    dir=$(fresh_dir memory)
    start_broker "$dir"; wait_listening "$dir"
    note "memory: RSS at start $(rss_mib) MiB"
    "$BENCH" bench batches --brokers "$ADDR" --count "$MEMORY_BATCHES" --partitions "$MEMORY_PARTITIONS" \
        --duration "$MEMORY_DURATION" --json >"$OUT/memory-batches.json"
    note "memory: wrote $(jq '.batches' "$OUT/memory-batches.json") single-record batches at $(jq '.batches_per_sec|round' "$OUT/memory-batches.json")/s"
    sleep "$IDLE_S"
    note "memory: RSS after writing $(rss_mib) MiB"
    stop_broker TERM
    local started
    started=$(now_ms)
    start_broker "$dir"
    "$BENCH" bench partitions --wait --brokers "$ADDR" --topic-prefix weir-batches \
        --total "$MEMORY_PARTITIONS" --timeout 10m --json >/dev/null
    note "memory: restart took $(($(now_ms) - started)) ms"
    sleep "$IDLE_S"
    note "memory: RSS after restart $(rss_mib) MiB"
    "$BENCH" bench lookup --brokers "$ADDR" --lookups "$LOOKUPS" --json >"$OUT/memory-lookup.json"
    note "memory: look-ups $(jq -c '{retained, fetch_ms_p50, fetch_ms_p99, time_ms_p50, time_ms_p99}' "$OUT/memory-lookup.json")"
    note "memory: RSS after look-ups $(rss_mib) MiB"
    stop_broker TERM
}

note "bench-scale $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || true) $(nproc) cores; smoke=$SMOKE"
for step in "${STEPS[@]}"; do
    case "$step" in
        limits) step_limits start ;;
        *) "step_$step" ;;
    esac
done
echo "results in $OUT (summary: $SUMMARY)" >&2
