#!/usr/bin/env bash
# Smoke test of Debian's kcat (librdkafka 2.0.2, an older client than the
# rdkafka crate's) against a real `weir serve`: metadata (-L, -J), produce with
# keys, headers and every codec, consume from the beginning and from a
# timestamp (-o s@TS), an idempotent producer, a consumer group (-G) that
# commits and resumes, a tag-filtered view read as an ordinary topic, and
# SASL/SCRAM-SHA-512 over TLS (SASL_SSL) against a second broker, with a
# user made by `weir user create` and certificates by `weir cert dev`. Prints one line per check and a closing
# `kcat: N passed, M failed`; exits non-zero on any failure.
#
# WEIR_BIN picks the binary (default: target/debug/weir, built if missing).
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
weir=${WEIR_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/weir}
start_timeout_s=30
# Bounds every kcat call, so a broker that never answers fails the check instead of hanging.
kcat_timeout_s=30

if ! command -v kcat >/dev/null; then
    echo "kcat is not installed (scripts/test.sh installs it)"
    echo "kcat: 0 passed, 1 failed"
    exit 1
fi
if [ ! -x "$weir" ]; then
    (cd "$root" && cargo build --quiet --bin weir) || { echo "kcat: 0 passed, 1 failed"; exit 1; }
fi

work=$(mktemp -d -t weir-kcat-XXXXXX)
broker_pid=""
secured_pid=""
cleanup() {
    if [ -n "$broker_pid" ]; then kill -KILL "$broker_pid" 2>/dev/null; wait "$broker_pid" 2>/dev/null; fi
    if [ -n "$secured_pid" ]; then kill -KILL "$secured_pid" 2>/dev/null; wait "$secured_pid" 2>/dev/null; fi
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=tests/compat/weir_broker.sh
. "$root/tests/compat/weir_broker.sh"
weir_start "$work" --admin-listen 127.0.0.1:0 --set group.initial.rebalance.delay.ms=0
if [ -z "$bootstrap" ]; then
    echo "weir serve did not print its address within ${start_timeout_s}s:"
    tail -n 50 "$work/broker.err"
    echo "kcat: 0 passed, 1 failed"
    exit 1
fi

passed=0
failed=0
# check NAME EXPECTED_FILE ACTUAL_FILE
check() {
    if cmp -s "$2" "$3"; then
        passed=$((passed + 1))
        echo "ok   $1"
    else
        failed=$((failed + 1))
        echo "FAIL $1"
        diff -u "$2" "$3" | head -n 40 | sed 's/^/     /'
        tail -n 5 "$work/kcat.err" 2>/dev/null | sed 's/^/     kcat: /'
    fi
}
# ok NAME COMMAND...: passes when the command succeeds.
ok() {
    local name=$1
    shift
    if "$@" >"$work/ok.out" 2>&1; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name"
        tail -n 20 "$work/ok.out" | sed 's/^/     /'
    fi
}
k() { timeout "$kcat_timeout_s" kcat -b "$bootstrap" "$@" 2>>"$work/kcat.err"; }
now_ms() { date +%s%3N; }

# Metadata: plain and JSON.
ok "kcat -L lists the broker" bash -c "timeout $kcat_timeout_s kcat -b $bootstrap -L | grep -q '1 brokers:'"
ok "kcat -L -J is JSON with one broker" bash -c "timeout $kcat_timeout_s kcat -b $bootstrap -L -J |
    python3 -c 'import json,sys; m=json.load(sys.stdin); assert len(m[\"brokers\"]) == 1, m'"

# Keys, duplicate headers, every codec.
printf 'k1=v1|h=one,h=two,tag=x\nk2=v2|h=one,h=two,tag=x\nk3=|h=one,h=two,tag=x\n' >"$work/expected.keyed"
for codec in none gzip snappy lz4 zstd; do
    topic="smoke-$codec"
    printf 'k1:v1\nk2:v2\nk3:\n' | k -P -t "$topic" -p 0 -K: -z "$codec" -H h=one -H h=two -H tag=x
    k -C -t "$topic" -p 0 -o beginning -e -q -f '%k=%s|%h\n' >"$work/actual.keyed"
    check "produce and consume with keys and headers, compression $codec" "$work/expected.keyed" "$work/actual.keyed"
done

# Consume from a timestamp: only records created after it come back.
seq 1 5 | sed 's/^/before-/' | k -P -t smoke-time -p 0
boundary=$(( $(now_ms) + 1 ))
while [ "$(now_ms)" -le "$boundary" ]; do :; done
seq 1 5 | sed 's/^/after-/' | k -P -t smoke-time -p 0
seq 1 5 | sed 's/^/after-/' >"$work/expected.time"
k -C -t smoke-time -p 0 -o "s@$boundary" -e -q -f '%s\n' >"$work/actual.time"
check "consume from a timestamp (-o s@TS)" "$work/expected.time" "$work/actual.time"
seq 1 5 | sed 's/^/before-/' >"$work/expected.all"
cat "$work/expected.time" >>"$work/expected.all"
k -C -t smoke-time -p 0 -o beginning -e -q -f '%s\n' >"$work/actual.all"
check "consume everything from the beginning" "$work/expected.all" "$work/actual.all"

# An idempotent producer: every record once, in order.
seq 1 200 | sed 's/^/idem-/' >"$work/expected.idem"
k -P -t smoke-idem -p 0 -X enable.idempotence=true <"$work/expected.idem"
k -C -t smoke-idem -p 0 -o beginning -e -q -f '%s\n' >"$work/actual.idem"
check "idempotent producer (enable.idempotence=true)" "$work/expected.idem" "$work/actual.idem"

# A consumer group (-G): the first run reads everything and commits on exit;
# the second resumes after the committed offsets and reads only what is new.
group_consume() {
    k -G smoke-group -X auto.offset.reset=earliest -X enable.auto.commit=true \
        -e -q -f '%s\n' smoke-grouped
}
seq 1 10 | sed 's/^/first-/' >"$work/expected.group1"
k -P -t smoke-grouped -p 0 <"$work/expected.group1"
group_consume >"$work/actual.group1"
check "consumer group (-G) reads from the beginning" "$work/expected.group1" "$work/actual.group1"
seq 1 10 | sed 's/^/second-/' >"$work/expected.group2"
k -P -t smoke-grouped -p 0 <"$work/expected.group2"
group_consume >"$work/actual.group2"
check "consumer group (-G) resumes after its committed offsets" "$work/expected.group2" "$work/actual.group2"

# A view (weir topic create-view) read as an ordinary topic: only records
# tagged VIP or GOLD, at their offsets in the source, for every codec; a
# batch of mixed tags is rebuilt, and the read moves past untagged tails.
"$weir" topic create smoke-tags --partitions 1 --brokers "$bootstrap" >/dev/null 2>>"$work/kcat.err"
"$weir" topic create-view smoke-vip --source smoke-tags --tags 'VIP || GOLD' \
    --brokers "$bootstrap" >/dev/null 2>>"$work/kcat.err"
: >"$work/expected.view"
offset=0
for codec in none gzip snappy lz4 zstd; do
    printf "a-$codec\nb-$codec\n" | k -P -t smoke-tags -p 0 -z "$codec" -H weir.tag=VIP -H x=1 -H x=2
    printf "c-$codec\n" | k -P -t smoke-tags -p 0 -z "$codec" -H weir.tag=IRON
    printf "d-$codec\n" | k -P -t smoke-tags -p 0 -z "$codec" -H weir.tag=GOLD
    printf "e-$codec\n" | k -P -t smoke-tags -p 0 -z "$codec"
    printf '%s\n' "$offset:a-$codec|weir.tag=VIP,x=1,x=2" "$((offset + 1)):b-$codec|weir.tag=VIP,x=1,x=2" \
        "$((offset + 3)):d-$codec|weir.tag=GOLD" >>"$work/expected.view"
    offset=$((offset + 5))
done
k -C -t smoke-vip -p 0 -o beginning -e -q -f '%o:%s|%h\n' >"$work/actual.view"
check "a view serves only its tags, at the source's offsets" "$work/expected.view" "$work/actual.view"

# SASL_SSL with SCRAM-SHA-512: a broker of its own, whose SASL_SSL listener
# serves TLS from `weir cert dev`'s keystore, and a user made through its
# PLAINTEXT listener. kcat trusts the dev CA and logs in as alice.
mkdir -p "$work/secured"
"$weir" cert dev --dir "$work/certs" >/dev/null 2>>"$work/kcat.err"
listener_PLAINTEXT="" listener_SASL_SSL=""
weir_start_listeners "$work/secured" "PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0" \
    --admin-listen none --default-partitions 1 \
    --set "ssl.keystore.location=$work/certs/broker.pem" \
    --set sasl.enabled.mechanisms=SCRAM-SHA-512
if [ -z "$listener_SASL_SSL" ]; then
    failed=$((failed + 1))
    echo "FAIL a broker with a SASL_SSL listener starts"
    tail -n 20 "$work/secured/broker.err" | sed 's/^/     /'
else
    printf 'alice-secret\n' | "$weir" --brokers "$listener_PLAINTEXT" user create alice \
        --password-stdin --mechanism SCRAM-SHA-512 >/dev/null 2>>"$work/kcat.err"
    ks() {
        timeout "$kcat_timeout_s" kcat -b "$listener_SASL_SSL" -X security.protocol=SASL_SSL \
            -X sasl.mechanisms=SCRAM-SHA-512 -X sasl.username=alice -X "sasl.password=$1" \
            -X "ssl.ca.location=$work/certs/ca.crt" "${@:2}" 2>>"$work/kcat.err"
    }
    seq 1 20 | sed 's/^/secured-/' >"$work/expected.sasl"
    ks alice-secret -P -t smoke-sasl -p 0 <"$work/expected.sasl"
    ks alice-secret -C -t smoke-sasl -p 0 -o beginning -e -q -f '%s\n' >"$work/actual.sasl"
    check "SASL_SSL with SCRAM-SHA-512: produce and consume as alice" "$work/expected.sasl" "$work/actual.sasl"
    if ks wrong-password -L -m 5 >/dev/null; then
        failed=$((failed + 1))
        echo "FAIL SASL_SSL refuses a wrong password"
    else
        passed=$((passed + 1))
        echo "ok   SASL_SSL refuses a wrong password"
    fi
    if grep -q 'SASL authentication failed' "$work/secured/broker.err"; then
        passed=$((passed + 1))
        echo "ok   the broker logs the refused login"
    else
        failed=$((failed + 1))
        echo "FAIL the broker logs the refused login"
        tail -n 20 "$work/secured/broker.err" | sed 's/^/     /'
    fi
fi

if ! kill -0 "$broker_pid" 2>/dev/null; then
    failed=$((failed + 1))
    echo "FAIL the broker is still running"
    tail -n 50 "$work/broker.err"
fi
if [ "$failed" -gt 0 ]; then
    echo "----- broker stderr (last 50 lines) -----"
    tail -n 50 "$work/broker.err"
fi
echo "kcat: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
