#!/usr/bin/env bash
# confluent-kafka (PyPI) against a real `weir serve`: its ShareConsumer
# (librdkafka's share consumer, KIP-932), Weir's dead-letter topics
# (KIP-1191), SCRAM users (its AdminClient's Alter/DescribeUserScram-
# Credentials, beside `weir user`), and its Producer and Consumer over
# SASL_SSL with SCRAM-SHA-512 (against a broker the test starts), in
# tests/compat/confluent-kafka/test_*.py.
#
# Sets up what it needs: the venv at .venv with the pinned packages of
# tests/compat/confluent-kafka/requirements.txt. Starts the broker with share
# groups on, runs pytest with a per-test timeout, stops the broker. Every
# test must pass. The last line is `confluent-kafka: N passed, M failed`;
# exits non-zero when M > 0.
#
# WEIR_BIN picks the binary instead of building target/debug/weir. The
# pytest log and the broker's stderr of the last run are kept in
# target/compat/confluent-kafka/last-run.log and last-broker.err.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
suite_dir=$root/tests/compat/confluent-kafka
venv=$root/.venv
cache=$root/target/compat/confluent-kafka

start_timeout_s=30
stop_timeout_s=15
pip_timeout_s=600
build_timeout_s=1800
test_timeout_s=120
suite_timeout_s=600

setup_failed() {
    echo "confluent-kafka: setup failed: $1"
    echo "confluent-kafka: 0 passed, 1 failed"
    exit 1
}

if [ ! -x "$venv/bin/python" ]; then
    echo "== creating the Python venv at .venv"
    python3 -m venv "$venv" || setup_failed "python3 -m venv $venv"
fi
echo "== installing tests/compat/confluent-kafka/requirements.txt into .venv"
timeout "$pip_timeout_s" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$suite_dir/requirements.txt" || setup_failed "pip install -r requirements.txt"

if [ -n "${WEIR_BIN:-}" ]; then
    weir=$WEIR_BIN
else
    echo "== cargo build --bin weir"
    (cd "$root" && timeout "$build_timeout_s" cargo build --quiet --bin weir) || setup_failed "cargo build --bin weir"
    weir=${CARGO_TARGET_DIR:-$root/target}/debug/weir
fi
[ -x "$weir" ] || setup_failed "no broker binary at $weir"
weir=$(realpath "$weir")

mkdir -p "$cache"
work=$(mktemp -d -t weir-confluent-kafka-XXXXXX)
broker_pid=""
cleanup() {
    if [ -n "$broker_pid" ]; then kill -KILL "$broker_pid" 2>/dev/null; wait "$broker_pid" 2>/dev/null; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=tests/compat/weir_broker.sh
. "$root/tests/compat/weir_broker.sh"
weir_start "$work" --admin-listen none --set group.share.enable=true
if [ -z "$bootstrap" ]; then
    tail -n 50 "$work/broker.err"
    setup_failed "weir serve did not print its address within ${start_timeout_s}s"
fi
echo "== weir listening on $bootstrap"

echo "== pytest tests/compat/confluent-kafka (${test_timeout_s}s per test)"
(
    cd "$suite_dir" &&
        WEIR_BOOTSTRAP="$bootstrap" WEIR_CLI="$weir" PYTHONDONTWRITEBYTECODE=1 \
            timeout --kill-after=10 "$suite_timeout_s" "$venv/bin/python" -m pytest . \
            -p no:cacheprovider --timeout="$test_timeout_s" --timeout-method=signal -q -rA
) >"$work/pytest.log" 2>&1
pytest_status=$?

broker_crashed=0
if kill -0 "$broker_pid" 2>/dev/null; then
    kill -TERM "$broker_pid" 2>/dev/null
    for _ in $(seq 1 $((stop_timeout_s * 10))); do
        kill -0 "$broker_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$broker_pid" 2>/dev/null
else
    broker_crashed=1
fi
wait "$broker_pid" 2>/dev/null
broker_pid=""
cp "$work/pytest.log" "$cache/last-run.log"
cp "$work/broker.err" "$cache/last-broker.err"

passed=$(awk '$1 == "PASSED"' "$work/pytest.log" | sort -u | wc -l)
failed=$(awk '$1 == "FAILED" || $1 == "ERROR"' "$work/pytest.log" | sort -u | wc -l)
awk '$1 == "PASSED" {print "ok   " $2} $1 == "FAILED" || $1 == "ERROR" {print "FAIL " $2}' "$work/pytest.log"
if [ "$pytest_status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "pytest exited with status $pytest_status; last lines of its log:"
    tail -n 30 "$work/pytest.log" | sed 's/^/     /'
    failed=1
fi
if [ "$broker_crashed" -eq 1 ]; then
    echo "FAIL weir serve exited during the run"
    failed=$((failed + 1))
fi
if [ "$failed" -gt 0 ]; then
    echo "----- pytest log (last 80 lines; all of it in target/compat/confluent-kafka/last-run.log) -----"
    tail -n 80 "$work/pytest.log"
    echo "----- broker stderr (last 30 lines) -----"
    tail -n 30 "$work/broker.err"
fi
echo "confluent-kafka: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
