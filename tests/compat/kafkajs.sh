#!/usr/bin/env bash
# kafkajs (from npm, pinned by tests/compat/kafkajs/package-lock.json) against
# a real `weir serve`: tests/compat/kafkajs/smoke.js creates a topic with the
# admin client, produces records with keys and headers, lists offsets (latest
# and by timestamp), and consumes them in a consumer group. Installs its
# node_modules with `npm ci`, builds the broker, starts it the way the client
# suites expect (auto-created topics, 4 partitions, advertised 127.0.0.1).
# The last line is `kafkajs: N passed, M failed`; exits non-zero on any failure.
#
# WEIR_BIN picks the binary instead of building target/debug/weir.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
suite_dir=$root/tests/compat/kafkajs

start_timeout_s=30
stop_timeout_s=15
npm_timeout_s=300
build_timeout_s=1800
# smoke.js bounds each step and itself; this bounds node as a whole.
smoke_timeout_s=300

setup_failed() {
    echo "kafkajs: setup failed: $1"
    echo "kafkajs: 0 passed, 1 failed"
    exit 1
}

command -v node >/dev/null || setup_failed "node is not installed"
command -v npm >/dev/null || setup_failed "npm is not installed"
echo "== npm ci in tests/compat/kafkajs"
(cd "$suite_dir" && timeout "$npm_timeout_s" npm ci --prefer-offline --no-audit --no-fund --loglevel=error) ||
    setup_failed "npm ci"

if [ -n "${WEIR_BIN:-}" ]; then
    weir=$WEIR_BIN
else
    echo "== cargo build --bin weir"
    (cd "$root" && timeout "$build_timeout_s" cargo build --quiet --bin weir) || setup_failed "cargo build --bin weir"
    weir=${CARGO_TARGET_DIR:-$root/target}/debug/weir
fi
[ -x "$weir" ] || setup_failed "no broker binary at $weir"

work=$(mktemp -d -t weir-kafkajs-XXXXXX)
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
weir_start "$work" --admin-listen 127.0.0.1:0 --auto-create-topics true --default-partitions 4
if [ -z "$bootstrap" ]; then
    tail -n 50 "$work/broker.err"
    setup_failed "weir serve did not print its address within ${start_timeout_s}s"
fi
echo "== weir listening on $bootstrap"

# kafkajs 2 warns on every producer that its default partitioner changed;
# smoke.js picks one explicitly.
(cd "$suite_dir" && KAFKAJS_NO_PARTITIONER_WARNING=1 timeout --kill-after=10 "$smoke_timeout_s" \
    node smoke.js "$bootstrap") >"$work/smoke.log" 2>&1
smoke_status=$?
grep -v '^kafkajs: [0-9]* passed, [0-9]* failed$' "$work/smoke.log"
read -r passed failed < <(
    sed -n 's/^kafkajs: \([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed$/\1 \2/p' "$work/smoke.log" | tail -n 1
)
passed=${passed:-0}
failed=${failed:-0}
if [ "$smoke_status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "FAIL node smoke.js exited with status $smoke_status"
    failed=1
fi

if kill -0 "$broker_pid" 2>/dev/null; then
    kill -TERM "$broker_pid" 2>/dev/null
    for _ in $(seq 1 $((stop_timeout_s * 10))); do
        kill -0 "$broker_pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$broker_pid" 2>/dev/null; then
        echo "FAIL weir serve did not stop within ${stop_timeout_s}s of SIGTERM"
        failed=$((failed + 1))
    fi
else
    echo "FAIL weir serve exited during the run"
    failed=$((failed + 1))
fi
if [ "$failed" -gt 0 ]; then
    echo "----- broker stderr (last 50 lines) -----"
    tail -n 50 "$work/broker.err"
fi
echo "kafkajs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
