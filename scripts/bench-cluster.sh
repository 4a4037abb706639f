#!/usr/bin/env bash
# The replicated cluster's benchmarks of issue 9 (docs/benchmarks.md,
# "Replicated cluster"): produce throughput at RF=3 against RF=1 on the same
# 3-node cluster with the nodes' CPU per MB, failover time after a leader's
# SIGKILL (for fresh one-record clients and for a long-lived producer, every
# other kill also taking the quorum's leader), the time a restarted replica
# that missed REJOIN_MB takes to rejoin the ISR, and topic creates per
# second through the quorum. The three nodes
# run on this machine (they share its cores with each other and the client);
# every step uses the one cluster the script starts.
#
# Usage: scripts/bench-cluster.sh [--trial] [STEP...]
#   STEP: limits produce failover rejoin creates (default: all, in that order)
#   --trial: reduced sizes (5 kills, 100 MiB rejoin, ...), to check the script
# Environment (defaults in brackets; --trial lowers them):
#   WEIR [target/release/weir, built when missing]: nodes and client
#   DATA_ROOT [target/benchdata-cluster] (wiped at start and, unless KEEP_DATA=1, at exit)
#   OUT [target/bench-cluster]   PORT [39192]: node N listens on PORT+100*(N-1), its Raft on +1,
#     its admin API on +2
#   SERVE_ARGS: extra `weir serve` flags for every node
#   PRODUCE_RECORDS [300000] 1 KiB records per produce run   PRODUCE_RUNS [3] (RF 3 and RF 1 alternate)
#   PRODUCE_PARTITIONS [3]   KILLS [20]   PROBE_TIMEOUT_S [30]: give up on one failover after this
#   PROBE_ARGS: extra flags for the failover probes, e.g. "-X retry.backoff.max.ms=100"
#   KILL_QUORUM_LEADER [alternate]: alternate (every other kill first makes the quorum
#     leader lead the partition, so that both cases are measured), never, or always
#   REJOIN_MB [1024]   CREATE_TOPICS [1000]   CREATE_CLIENTS ["1 4"]
#   LIMITS_MB [1024]  LIMITS_SYNCS [5000]  LIMITS_SECONDS [3]   READY_TIMEOUT_S [120]
# Results: one JSON file per measurement and each node's log in OUT, and the
# results block in OUT/summary.txt. CPU is utime+stime from /proc/PID/stat.
set -euo pipefail

cd "$(dirname "$0")/.."
TRIAL=0
STEPS=()
for arg in "$@"; do
    case "$arg" in
        --trial) TRIAL=1 ;;
        -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        limits|produce|failover|rejoin|creates) STEPS+=("$arg") ;;
        *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#STEPS[@]} -gt 0 ] || STEPS=(limits produce failover rejoin creates)

if [ "$TRIAL" = 1 ]; then
    : "${PRODUCE_RECORDS:=100000}" "${PRODUCE_RUNS:=1}" "${KILLS:=5}" "${REJOIN_MB:=100}"
    : "${CREATE_TOPICS:=200}" "${LIMITS_MB:=256}" "${LIMITS_SYNCS:=1000}" "${LIMITS_SECONDS:=2}"
fi
: "${WEIR:=target/release/weir}" "${DATA_ROOT:=target/benchdata-cluster}" "${OUT:=target/bench-cluster}"
: "${PORT:=39192}" "${PRODUCE_RECORDS:=300000}" "${PRODUCE_RUNS:=3}" "${PRODUCE_PARTITIONS:=3}"
: "${KILLS:=20}" "${PROBE_TIMEOUT_S:=30}" "${REJOIN_MB:=1024}" "${CREATE_TOPICS:=1000}"
: "${CREATE_CLIENTS:=1 4}" "${LIMITS_MB:=1024}" "${LIMITS_SYNCS:=5000}" "${LIMITS_SECONDS:=3}"
: "${READY_TIMEOUT_S:=120}" "${KEEP_DATA:=0}" "${KILL_QUORUM_LEADER:=alternate}"
NODES=(1 2 3)
TICKS=$(getconf CLK_TCK)
addr() { echo "127.0.0.1:$((PORT + 100 * ($1 - 1)))"; }
admin_addr() { echo "127.0.0.1:$((PORT + 100 * ($1 - 1) + 2))"; }
VOTERS=$(for n in "${NODES[@]}"; do printf '%s@127.0.0.1:%s,' "$n" "$((PORT + 100 * (n - 1) + 1))"; done)
VOTERS=${VOTERS%,}
BOOTSTRAP=$(for n in "${NODES[@]}"; do printf '%s,' "$(addr "$n")"; done)
BOOTSTRAP=${BOOTSTRAP%,}
export WEIR_BROKERS=$BOOTSTRAP

if [ ! -x "$WEIR" ]; then
    cargo build --release --bin weir
fi
rm -rf "$DATA_ROOT"
mkdir -p "$OUT" "$DATA_ROOT"
# Medians are taken over OUT's files: none may be left from an earlier run.
rm -f "$OUT"/*.json "$OUT"/*.txt "$OUT"/*.log
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
# Each line ends with the load average when it was written: other tenants of
# the machine move every figure.
note() { echo "$* [load $(cut -d' ' -f1-3 /proc/loadavg)]" | tee -a "$SUMMARY" >&2; }
now_ms() { date +%s%3N; }
die() { echo "bench-cluster: $*" >&2; exit 1; }

declare -A PID=()
start_node() { # $1: node id
    local n=$1
    # shellcheck disable=SC2086
    "$WEIR" serve --node-id "$n" --listen "$(addr "$n")" --admin-listen "$(admin_addr "$n")" \
        --voters "$VOTERS" --data-dir "$DATA_ROOT/node-$n" --set default.replication.factor=3 ${SERVE_ARGS:-} \
        >>"$OUT/node-$n.log" 2>&1 &
    PID[$n]=$!
}
stop_node() { # $1: node id, $2: signal
    local pid=${PID[$1]:-}
    [ -n "$pid" ] || return 0
    kill "-$2" "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    PID[$1]=
}
cleanup() {
    local n
    for n in "${NODES[@]}"; do stop_node "$n" KILL; done
    [ -z "${PROBE_PID:-}" ] || { kill "$PROBE_PID" 2>/dev/null || true; wait "$PROBE_PID" 2>/dev/null || true; }
    [ -z "${STEADY_PID:-}" ] || { kill "$STEADY_PID" 2>/dev/null || true; wait "$STEADY_PID" 2>/dev/null || true; }
    [ "$KEEP_DATA" = 1 ] || rm -rf "$DATA_ROOT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Polls (every 50 ms, at most READY_TIMEOUT_S) until the command "$@" succeeds.
wait_for() { # $1: what, for the error; the rest: the command
    local what=$1 deadline=$(($(now_ms) + READY_TIMEOUT_S * 1000))
    shift
    until "$@"; do
        [ "$(now_ms)" -lt "$deadline" ] || die "$what not within ${READY_TIMEOUT_S} s"
        sleep 0.05
    done
}
# The "listening on" lines a node has printed so far (one per start).
listening_lines() {
    [ -e "$OUT/node-$1.log" ] || { echo 0; return; }
    grep -c '^listening on' "$OUT/node-$1.log" || true
}
listened_more() { [ "$(listening_lines "$1")" -gt "$2" ]; } # $1: node, $2: lines before
successes_at_least() { [ "$(awk '$3 == 0' "$1" | wc -l)" -ge "$2" ]; } # $1: probe file
all_active() {
    [ "$("$WEIR" cluster status --json 2>/dev/null |
        jq '[.brokers[] | select(.state == "active")] | length')" = "${#NODES[@]}" ]
}
describe() { "$WEIR" topic describe "$1" --json 2>/dev/null; }
# True when every partition of topic $1 has all its replicas in sync.
full_isr() {
    describe "$1" | jq -e '.partitions | length > 0 and all(.leader != null and (.isr | length) == (.replicas | length))' >/dev/null
}
leader_of() { describe "$1" | jq -r ".partitions[] | select(.partition == $2) | .leader"; }
# utime + stime of every running node, in seconds.
cpu_s() {
    local n
    for n in "${NODES[@]}"; do cat "/proc/${PID[$n]}/stat"; done |
        awk -v t="$TICKS" '{ s += ($14 + $15) / t } END { printf "%.2f", s }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
maximum() { sort -n | tail -1; }
create_topic() { # $1: name, $2: partitions, $3: replication factor
    "$WEIR" topic create "$1" --partitions "$2" --replication-factor "$3" \
        --config min.insync.replicas=$(( $3 > 1 ? 2 : 1 )) >/dev/null
    wait_for "full ISR of $1" full_isr "$1"
}

start_cluster() {
    local n started
    started=$(now_ms)
    for n in "${NODES[@]}"; do start_node "$n"; done
    for n in "${NODES[@]}"; do wait_for "node $n listening" listened_more "$n" 0; done
    wait_for "every broker active in Metadata" all_active
    note "cluster: 3 nodes up and registered in $(($(now_ms) - started)) ms"
}

step_limits() {
    "$WEIR" bench limits --dir "$DATA_ROOT" --size-mb "$LIMITS_MB" --syncs "$LIMITS_SYNCS" \
        --seconds "$LIMITS_SECONDS" --json >"$OUT/limits-$1.json"
    note "limits ($1): $(jq -c '{seq: .sequential_write_mb_s|round, sync_p50_ms: .sync_4k_p50_ms, sync_p99_ms: .sync_4k_p99_ms, ceiling: .group_commit_mb_s|round, loopback: .loopback_tcp_mb_s|round}' "$OUT/limits-$1.json")"
}

# 1 KiB acks=all, RF 3 and RF 1 alternating, the nodes' CPU summed.
step_produce() {
    local run rf before after json
    create_topic produce-rf3 "$PRODUCE_PARTITIONS" 3
    create_topic produce-rf1 "$PRODUCE_PARTITIONS" 1
    for run in $(seq 1 "$PRODUCE_RUNS"); do
        for rf in 3 1; do
            json="$OUT/produce-rf$rf-$run.json"
            before=$(cpu_s)
            "$WEIR" bench produce --topic "produce-rf$rf" --size 1024 --acks all --linger-ms 5 \
                -X batch.num.messages=10000 --count "$PRODUCE_RECORDS" --duration 10m --json >"$json"
            after=$(cpu_s)
            jq --argjson cpu "$(awk -v a="$after" -v b="$before" 'BEGIN { print a - b }')" \
                '. + {nodes_cpu_s: $cpu, nodes_cpu_s_per_mb: ($cpu / (.bytes / 1e6)), nodes_cores: ($cpu / .elapsed_s)}' \
                "$json" >"$json.tmp" && mv "$json.tmp" "$json"
            note "produce RF $rf run $run: $(jq -r '"\(.mb_per_sec|round) MB/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms; nodes \(.nodes_cpu_s_per_mb*1000|round) CPU ms per MB, \(.nodes_cores*100|round/100) cores"' "$json")"
        done
    done
    local rf3 rf1 c3 c1
    rf3=$(jq '.mb_per_sec' "$OUT"/produce-rf3-*.json | median)
    rf1=$(jq '.mb_per_sec' "$OUT"/produce-rf1-*.json | median)
    c3=$(jq '.nodes_cpu_s_per_mb * 1000' "$OUT"/produce-rf3-*.json | median)
    c1=$(jq '.nodes_cpu_s_per_mb * 1000' "$OUT"/produce-rf1-*.json | median)
    note "produce: medians of $PRODUCE_RUNS: RF 3 $(printf '%.0f' "$rf3") MB/s, RF 1 $(printf '%.0f' "$rf1") MB/s, RF3/RF1 $(awk -v a="$rf3" -v b="$rf1" 'BEGIN { printf "%.2f", a / b }'); CPU per MB produced (3 nodes summed): RF 3 $(printf '%.1f' "$c3") ms, RF 1 $(printf '%.1f' "$c1") ms"
}

# A loop of one-record acks=all producers (each its own process and
# librdkafka client, so each looks the leader up afresh): "start_ms end_ms rc"
# per probe in $1, until the file $1.stop exists.
probe_loop() {
    local file=$1 started rc
    while [ ! -e "$file.stop" ]; do
        started=$(now_ms)
        rc=0
        # shellcheck disable=SC2086
        "$WEIR" bench produce --topic failover --size 1024 --acks all --linger-ms 0 --count 1 \
            -X "message.timeout.ms=$((PROBE_TIMEOUT_S * 1000))" ${PROBE_ARGS:-} --json >/dev/null 2>&1 || rc=$?
        echo "$started $(now_ms) $rc" >>"$file"
    done
}
# When the steady producer's first record sent after the kill at $2 (ms) was
# acknowledged, from its --deliveries file $1; nothing yet if none was.
steady_success_after() {
    awk -v t="$2" '$1 > t { print $2; exit }' "$1"
}
# The end of the first successful probe after the kill at $2 (ms), or nothing.
# The loop is sequential, so one probe is usually in flight at the kill; it
# counts only if it ended more than $3 ms (twice a quiet probe) after the
# kill: then its record was acknowledged after the kill, not before.
first_success_after() {
    awk -v t="$2" -v held="$3" '$3 == 0 && ($1 >= t || $2 - t > held) { print $2; exit }' "$1"
}
# When the quorum leader logged fencing broker $1 at or after $2 (ms), from
# the nodes' log timestamps (UTC); nothing if no node logged it.
fenced_at() {
    local stamp ms
    grep -h "fencing a broker .* broker=$1\b" "$OUT"/node-*.log 2>/dev/null |
        awk '{ print $1 }' | while read -r stamp; do
            ms=$(date -d "$stamp" +%s%3N)
            [ "$ms" -lt "$2" ] || echo "$ms"
        done | sort -n | head -1
}

# Make the quorum leader lead partition $2 of topic $1: it goes first in the
# replica list (the same replicas) and a preferred election follows.
lead_with_quorum_leader() {
    local controller replicas
    controller=$("$WEIR" cluster status --json | jq '.controller')
    replicas=$(describe "$1" | jq -r --argjson c "$controller" \
        ".partitions[] | select(.partition == $2) | [\$c] + (.replicas - [\$c]) | map(tostring) | join(\",\")")
    "$WEIR" topic reassign "$1" --partition "$2:$replicas" --wait 60 >/dev/null
    "$WEIR" cluster elect-leaders --topic "$1" --partition "$2" >/dev/null
    wait_for "the quorum leader to lead $1-$2" is_leader "$1" "$2" "$controller"
}
is_leader() { [ "$(leader_of "$1" "$2")" = "$3" ]; }

step_failover() {
    local kill leader controller also killed_ms ok_ms steady_ms fenced_ms probes restarted lines
    create_topic failover 1 3
    : >"$OUT/failover.txt"; : >"$OUT/failover-fenced.txt"; : >"$OUT/failover-steady.txt"
    # A long-lived idempotent producer beside the probes, as an application
    # keeps one: it learns of the new leader through its own client's
    # metadata refreshes, not through a fresh lookup.
    local steady="$OUT/failover-deliveries.txt"
    : >"$steady"
    # shellcheck disable=SC2086
    "$WEIR" bench produce --topic failover --size 1024 --acks all --linger-ms 0 --rate 50 \
        --count 100000000 --duration 24h -X enable.idempotence=true ${PROBE_ARGS:-} \
        --deliveries "$steady" --json >"$OUT/failover-steady.json" 2>"$OUT/failover-steady.log" &
    STEADY_PID=$!
    for kill in $(seq 1 "$KILLS"); do
        wait_for "full ISR of failover" full_isr failover
        case $KILL_QUORUM_LEADER in
            always) lead_with_quorum_leader failover 0 ;;
            alternate) [ $((kill % 2)) = 1 ] || lead_with_quorum_leader failover 0 ;;
            never) ;;
            *) die "KILL_QUORUM_LEADER is alternate, never or always, not $KILL_QUORUM_LEADER" ;;
        esac
        leader=$(leader_of failover 0)
        controller=$("$WEIR" cluster status --json | jq '.controller')
        # Killing the quorum leader too adds a Raft election before the
        # fencing: the two cases are reported apart.
        also= case=partition
        [ "$leader" != "$controller" ] || { also=" and the quorum leader"; case=both; }
        [ -n "${PID[$leader]:-}" ] || die "leader $leader is not a node this script runs"
        probes="$OUT/failover-probes-$kill.txt"
        rm -f "$probes" "$probes.stop"; : >"$probes"
        probe_loop "$probes" &
        PROBE_PID=$!
        # Some probes succeed first: the baseline, and the probe's own duration.
        wait_for "a probe before the kill" successes_at_least "$probes" 3
        killed_ms=$(now_ms)
        stop_node "$leader" KILL
        local deadline=$((killed_ms + PROBE_TIMEOUT_S * 1000)) baseline
        baseline=$(awk '$3 == 0 { print $2 - $1 }' "$probes" | head -3 | median)
        ok_ms= steady_ms=
        while { [ -z "$ok_ms" ] || [ -z "$steady_ms" ]; } && [ "$(now_ms)" -lt "$deadline" ]; do
            [ -n "$ok_ms" ] || ok_ms=$(first_success_after "$probes" "$killed_ms" "$((2 * baseline))")
            [ -n "$steady_ms" ] || steady_ms=$(steady_success_after "$steady" "$killed_ms")
            { [ -n "$ok_ms" ] && [ -n "$steady_ms" ]; } || sleep 0.02
        done
        touch "$probes.stop"; wait "$PROBE_PID" || true; PROBE_PID=
        fenced_ms=$(fenced_at "$leader" "$killed_ms")
        local fenced="not logged"
        [ -z "$fenced_ms" ] || fenced="$((fenced_ms - killed_ms)) ms"
        if [ -n "$ok_ms" ]; then
            echo "$((ok_ms - killed_ms)) $case" >>"$OUT/failover.txt"
            [ -z "$fenced_ms" ] || echo "$((fenced_ms - killed_ms)) $case" >>"$OUT/failover-fenced.txt"
            note "failover $kill: killed node $leader (partition leader$also); fenced after $fenced; acks=all produce succeeded again after $((ok_ms - killed_ms)) ms (one probe takes ~$baseline ms when all is well)"
        else
            echo "timeout $case" >>"$OUT/failover.txt"
            note "failover $kill: killed node $leader; no acks=all produce within ${PROBE_TIMEOUT_S} s"
        fi
        if [ -n "$steady_ms" ]; then
            echo "$((steady_ms - killed_ms)) $case" >>"$OUT/failover-steady.txt"
            note "failover $kill: the steady producer's first record sent after the kill acknowledged after $((steady_ms - killed_ms)) ms"
        else
            echo "timeout $case" >>"$OUT/failover-steady.txt"
            note "failover $kill: the steady producer had no record acknowledged within ${PROBE_TIMEOUT_S} s"
        fi
        lines=$(listening_lines "$leader")
        restarted=$(now_ms)
        start_node "$leader"
        wait_for "node $leader listening again" listened_more "$leader" "$lines"
        wait_for "full ISR of failover after restarting node $leader" full_isr failover
        note "failover $kill: node $leader back in the ISR $(($(now_ms) - restarted)) ms after its restart"
    done
    local which pattern label
    for which in all partition both; do
        case $which in
            all) pattern='.'; label="all kills" ;;
            partition) pattern=' partition$'; label="partition leader only" ;;
            both) pattern=' both$'; label="partition and quorum leader" ;;
        esac
        local n times fenced steady_times
        n=$(grep -c "$pattern" "$OUT/failover.txt" || true)
        [ "$n" -gt 0 ] || continue
        times=$(grep "$pattern" "$OUT/failover.txt" | grep -v '^timeout' | cut -d' ' -f1 || true)
        fenced=$(grep "$pattern" "$OUT/failover-fenced.txt" | cut -d' ' -f1 || true)
        steady_times=$(grep "$pattern" "$OUT/failover-steady.txt" | grep -v '^timeout' | cut -d' ' -f1 || true)
        note "failover ($label): $n kills, $(grep "$pattern" "$OUT/failover.txt" | grep -c '^timeout' || true) timed out; kill to acks=all produce by a fresh client p50 $(echo "$times" | median) ms, max $(echo "$times" | maximum) ms; by the steady producer p50 $(echo "$steady_times" | median) ms, max $(echo "$steady_times" | maximum) ms, $(grep "$pattern" "$OUT/failover-steady.txt" | grep -c '^timeout' || true) timed out (target: under 3,000 ms); kill to fenced p50 $(echo "$fenced" | median) ms, max $(echo "$fenced" | maximum) ms"
    done
    kill "$STEADY_PID" 2>/dev/null || true; wait "$STEADY_PID" 2>/dev/null || true; STEADY_PID=
}

step_rejoin() {
    local leader controller follower n lines restarted listening rejoined records
    create_topic rejoin 1 3
    leader=$(leader_of rejoin 0)
    controller=$("$WEIR" cluster status --json | jq '.controller')
    # A follower that is not the quorum leader, so no Raft election muddles the figure.
    follower=
    for n in "${NODES[@]}"; do
        if [ "$n" != "$leader" ] && [ "$n" != "$controller" ]; then follower=$n; break; fi
    done
    [ -n "$follower" ] || die "no follower outside the quorum leader"
    stop_node "$follower" TERM
    records=$((REJOIN_MB * 1024))
    "$WEIR" bench produce --topic rejoin --size 1024 --acks all --linger-ms 5 \
        -X batch.num.messages=10000 --count "$records" --duration 30m --json >"$OUT/rejoin-produce.json"
    note "rejoin: node $follower stopped (SIGTERM); $(jq -r '"\(.bytes / 1048576 | round) MiB produced to the other two at \(.mb_per_sec|round) MB/s"' "$OUT/rejoin-produce.json")"
    note "rejoin: ISR of rejoin before the restart: $(describe rejoin | jq -c '.partitions[0].isr')"
    lines=$(listening_lines "$follower")
    restarted=$(now_ms)
    start_node "$follower"
    wait_for "node $follower listening again" listened_more "$follower" "$lines"
    listening=$(now_ms)
    wait_for "node $follower back in the ISR of rejoin" full_isr rejoin
    rejoined=$(now_ms)
    note "rejoin: node $follower missed $REJOIN_MB MiB; back in the ISR $((rejoined - restarted)) ms after exec ($((listening - restarted)) ms to listen, $((rejoined - listening)) ms catching up: $(awk -v mb="$REJOIN_MB" -v ms="$((rejoined - listening))" 'BEGIN { printf "%.0f", mb * 1.048576 / (ms / 1000) }') MB/s)"
}

# CreateTopics of 1-partition RF 3 topics (the nodes' default.replication.factor),
# each timed until Metadata shows it led; from 1 client, then several at once.
step_creates() {
    local clients i each started elapsed pids
    for clients in $CREATE_CLIENTS; do
        each=$((CREATE_TOPICS / clients))
        pids=()
        started=$(now_ms)
        for i in $(seq 1 "$clients"); do
            "$WEIR" bench partitions --topic-prefix "create${clients}x$i" --step 1 --total "$each" \
                --timeout 60s --json >"$OUT/creates-$clients-$i.json" &
            pids+=($!)
        done
        for i in "${pids[@]}"; do wait "$i"; done
        elapsed=$(($(now_ms) - started))
        note "creates: $((each * clients)) topics (1 partition, RF 3) from $clients client(s): $(awk -v n="$((each * clients))" -v ms="$elapsed" 'BEGIN { printf "%.0f", n / (ms / 1000) }') creates/s; each until led: median $(jq '.steps[].ready_ms' "$OUT"/creates-"$clients"-*.json | median | xargs printf '%.1f') ms, max $(jq '.steps[].ready_ms' "$OUT"/creates-"$clients"-*.json | maximum | xargs printf '%.1f') ms"
    done
}

note "bench-cluster $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || true); $(nproc) cores shared by the 3 nodes and the client; trial=$TRIAL"
start_cluster
for step in "${STEPS[@]}"; do
    case "$step" in
        limits) step_limits start ;;
        *) "step_$step" ;;
    esac
done
echo "results in $OUT (summary: $SUMMARY)" >&2
