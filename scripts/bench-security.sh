#!/usr/bin/env bash
# The security benchmarks of issue 13 (docs/benchmarks.md, "TLS and SASL"):
# produce and consume throughput over TLS against plaintext on one broker in
# the same run, and the connection set-up a new client pays for TLS and for
# SASL/SCRAM-SHA-512 (each over plaintext TCP and over TLS). One broker with
# four listeners (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) on a fresh data
# folder, certificates from `weir cert dev`, one SCRAM user; the machine's
# disk and loopback limits are measured first. Rounds alternate the
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
broker_pid=""
cleanup() {
    if [ -n "$broker_pid" ]; then kill -TERM "$broker_pid" 2>/dev/null; wait "$broker_pid" 2>/dev/null || true; fi
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
for _ in $(seq 1 300); do
    [ "$(grep -c '^listener ' "$work/broker.out")" -ge 4 ] && break
    kill -0 "$broker_pid" 2>/dev/null || { cat "$work/broker.err"; exit 1; }
    sleep 0.1
done
address() { sed -n "s/^listener $1 listening on //p" "$work/broker.out"; }
plain=$(address PLAINTEXT) ssl=$(address SSL) sasl=$(address SASL_PLAINTEXT) sasl_ssl=$(address SASL_SSL)
printf 'bench-secret\n' | "$WEIR" --brokers "$plain" user create bench --password-stdin \
    --mechanism SCRAM-SHA-512 >/dev/null

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
for label in ("connect plaintext", "connect tls", "connect sasl scram", "connect sasl_ssl scram"):
    p50 = median(label, lambda r: r["first_answer_ms"]["p50"])
    p99 = median(label, lambda r: r["first_answer_ms"]["p99"])
    print(f"{label}: first answer p50 {p50:.2f} ms, p99 {p99:.2f} ms")
EOF
