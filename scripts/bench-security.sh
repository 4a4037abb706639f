#!/usr/bin/env bash
# The security benchmarks of issue 13 (docs/benchmarks.md, "TLS and SASL"):
# produce and consume throughput over TLS against plaintext on one broker in
# the same run, and the connection set-up a new client pays for TLS and for
# SASL/SCRAM-SHA-512 (each over plaintext TCP and over TLS), and what ACL
# checks cost: produce throughput of a SCRAM user on a broker enforcing
# ACLs with 10,000 bindings in place, against the same on a broker without
# an authorizer. One broker with four listeners (PLAINTEXT, SSL,
# SASL_PLAINTEXT, SASL_SSL) and one with ACLs on (PLAINTEXT for the
# operator, SASL_PLAINTEXT), on fresh data folders, certificates from `weir
# cert dev`, one SCRAM user; the machine's disk and loopback limits are
# measured first. Rounds alternate the
# listeners so that the machine's drift falls on both alike.
#
# Usage: scripts/bench-security.sh
# Environment (defaults in brackets):
#   WEIR [target/release/weir, built with --features ssl when missing]
#   OUT [target/bench-security]   DATA_ROOT [target/benchdata]   ROUNDS [3]
#   RECORDS [1000000]  SIZE [1024]  CONNECTS [200]
# Results: one JSON line per measurement in OUT/results.jsonl, and a summary
# on stdout.
set -euo pipefail

cd "$(dirname "$0")/.."
: "${WEIR:=target/release/weir}" "${OUT:=target/bench-security}" "${DATA_ROOT:=target/benchdata}"
: "${ROUNDS:=3}" "${RECORDS:=1000000}" "${SIZE:=1024}" "${CONNECTS:=200}"
if [ ! -x "$WEIR" ]; then
    cargo build --release --features ssl --bin weir
fi
mkdir -p "$OUT" "$DATA_ROOT"
work=$(mktemp -d "$DATA_ROOT/bench-security-XXXX")
broker_pid="" acl_pid=""
cleanup() {
    for pid in $broker_pid $acl_pid; do
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
results="$OUT/results.jsonl"
: >"$results"

"$WEIR" bench limits --dir "$work" --size-mb 256 --json | tee -a "$results"

"$WEIR" cert dev --dir "$work/certs" >/dev/null
"$WEIR" serve --data-dir "$work/data" --admin-listen none \
    --set listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0 \
    --set "ssl.keystore.location=$work/certs/broker.pem" \
    --set sasl.enabled.mechanisms=SCRAM-SHA-512 \
    >"$work/broker.out" 2>"$work/broker.err" &
broker_pid=$!
"$WEIR" serve --data-dir "$work/data-acl" --admin-listen none \
    --set listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0 \
    --set authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer \
    --set super.users=User:ANONYMOUS \
    --set sasl.enabled.mechanisms=SCRAM-SHA-512 \
    >"$work/acl.out" 2>"$work/acl.err" &
acl_pid=$!
# wait_listeners OUT ERR PID COUNT
wait_listeners() {
    for _ in $(seq 1 300); do
        [ "$(grep -c '^listener ' "$1")" -ge "$4" ] && return 0
        kill -0 "$3" 2>/dev/null || { cat "$2"; exit 1; }
        sleep 0.1
    done
    echo "no listeners in $1" >&2
    exit 1
}
wait_listeners "$work/broker.out" "$work/broker.err" "$broker_pid" 4
wait_listeners "$work/acl.out" "$work/acl.err" "$acl_pid" 2
address() { sed -n "s/^listener $2 listening on //p" "$1"; }
plain=$(address "$work/broker.out" PLAINTEXT) ssl=$(address "$work/broker.out" SSL)
sasl=$(address "$work/broker.out" SASL_PLAINTEXT) sasl_ssl=$(address "$work/broker.out" SASL_SSL)
acl_plain=$(address "$work/acl.out" PLAINTEXT) acl_sasl=$(address "$work/acl.out" SASL_PLAINTEXT)
for brokers in "$plain" "$acl_plain"; do
    printf 'bench-secret\n' | "$WEIR" --brokers "$brokers" user create bench --password-stdin \
        --mechanism SCRAM-SHA-512 >/dev/null
done
# 10,000 bindings on the ACL broker: 9,999 for other principals and topics,
# and the one that lets the bench user do everything to its topics.
for batch in $(seq 0 9); do
    topics=()
    for i in $(seq $((batch * 1000)) $((batch * 1000 + 999))); do
        [ "$i" -lt 9999 ] && topics+=(--topic "other-$i")
    done
    "$WEIR" --brokers "$acl_plain" acl add --allow-principal "User:tenant-$batch" \
        --operation Read "${topics[@]}" >/dev/null
done
"$WEIR" --brokers "$acl_plain" acl add --allow-principal User:bench --operation All \
    --topic acl- --resource-pattern-type prefixed >/dev/null
acls=$("$WEIR" --brokers "$acl_plain" acl list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "ACL bindings in place: $acls"

tls=(-X security.protocol=ssl -X "ssl.ca.location=$work/certs/ca.crt")
scram=(-X sasl.mechanism=SCRAM-SHA-512 -X sasl.username=bench -X sasl.password=bench-secret)
# label ARGS...: run one `weir bench` and record its JSON with a label.
run() {
    local label=$1
    shift
    local json
    json=$("$WEIR" bench "$@" --json)
    printf '{"label":"%s","result":%s}\n' "$label" "$json" | tee -a "$results"
}
for round in $(seq 1 "$ROUNDS"); do
    run "produce plaintext" produce --brokers "$plain" --topic "plain-$round" --count "$RECORDS" --size "$SIZE"
    run "produce tls" produce --brokers "$ssl" --topic "tls-$round" --count "$RECORDS" --size "$SIZE" "${tls[@]}"
    run "consume plaintext" consume --brokers "$plain" --topic "plain-$round" --count "$RECORDS"
    run "consume tls" consume --brokers "$ssl" --topic "tls-$round" --count "$RECORDS" "${tls[@]}"
    run "connect plaintext" connect --brokers "$plain" --count "$CONNECTS"
    run "connect tls" connect --brokers "$ssl" --count "$CONNECTS" "${tls[@]}"
    run "connect sasl scram" connect --brokers "$sasl" --count "$CONNECTS" \
        -X security.protocol=sasl_plaintext "${scram[@]}"
    run "connect sasl_ssl scram" connect --brokers "$sasl_ssl" --count "$CONNECTS" \
        "${tls[@]}" -X security.protocol=sasl_ssl "${scram[@]}"
    run "produce sasl no authorizer" produce --brokers "$sasl" --topic "acl-$round" \
        --count "$RECORDS" --size "$SIZE" -X security.protocol=sasl_plaintext "${scram[@]}"
    run "produce sasl 10000 acls" produce --brokers "$acl_sasl" --topic "acl-$round" \
        --count "$RECORDS" --size "$SIZE" -X security.protocol=sasl_plaintext "${scram[@]}"
done

echo "== medians over $ROUNDS rounds"
python3 - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith('{"label"')]
by = {}
for row in rows:
    by.setdefault(row["label"], []).append(row["result"])
def median(label, pick):
    values = [pick(r) for r in by.get(label, [])]
    return statistics.median(values) if values else float("nan")
for kind in ("produce", "consume"):
    plain = median(f"{kind} plaintext", lambda r: r["mb_per_sec"])
    tls = median(f"{kind} tls", lambda r: r["mb_per_sec"])
    print(f"{kind}: plaintext {plain:.1f} MB/s, tls {tls:.1f} MB/s, tls/plaintext {tls / plain:.2f}")
plain = median("produce sasl no authorizer", lambda r: r["mb_per_sec"])
acl = median("produce sasl 10000 acls", lambda r: r["mb_per_sec"])
print(f"produce as a SCRAM user: no authorizer {plain:.1f} MB/s, 10,000 ACLs {acl:.1f} MB/s, ratio {acl / plain:.2f}")
for label in ("connect plaintext", "connect tls", "connect sasl scram", "connect sasl_ssl scram"):
    p50 = median(label, lambda r: r["first_answer_ms"]["p50"])
    p99 = median(label, lambda r: r["first_answer_ms"]["p99"])
    print(f"{label}: first answer p50 {p50:.2f} ms, p99 {p99:.2f} ms")
EOF
