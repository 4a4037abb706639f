#!/usr/bin/env bash
# kafka-python's own integration tests (from its PyPI source distribution)
# against a real `weir serve`, judged by a committed allow-list.
#
# Sets up what it needs: the venv at .venv with the pinned packages of
# tests/compat/kafka-python/requirements.txt, and the sdist, downloaded and
# unpacked under target/compat/kafka-python (kept as a cache). Starts the
# broker the way the suite expects (auto-created topics, 4 partitions,
# advertised 127.0.0.1, the group settings of kafka-python's own broker
# config), runs pytest over test/integration with a per-test
# timeout, stops the broker, then compares with
# tests/compat/kafka-python/allowlist.txt: an allow-listed test that fails,
# errors or does not run fails the script; a test that passes but is not
# listed is printed as a candidate to add. The last line is
# `kafka-python: N passed, M failed` (N: tests that passed; M: allow-listed
# tests that did not). Exits non-zero when M > 0.
#
# WEIR_BIN picks the binary instead of building target/debug/weir.
# The full pytest log and the broker's stderr of the last run are kept in
# target/compat/kafka-python/last-run.log and last-broker.err.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
suite_dir=$root/tests/compat/kafka-python
allowlist=$suite_dir/allowlist.txt
venv=$root/.venv
cache=$root/target/compat/kafka-python
version=3.0.12
src=$cache/kafka_python-$version

start_timeout_s=30
stop_timeout_s=15
# pip and cargo: generous, but a registry that never answers must not hang CI.
pip_timeout_s=600
build_timeout_s=1800
# Longest one test may run: the slowest passing one takes about 10 s.
test_timeout_s=30
# The whole pytest run, on top of the per-test timeouts.
suite_timeout_s=900

# setup_failed REASON: one failure, counted as such, then stop.
setup_failed() {
    echo "kafka-python: setup failed: $1"
    echo "kafka-python: 0 passed, 1 failed"
    exit 1
}

[ -f "$allowlist" ] || setup_failed "no allow-list at $allowlist"

# The venv and the pinned packages.
if [ ! -x "$venv/bin/python" ]; then
    echo "== creating the Python venv at .venv"
    python3 -m venv "$venv" || setup_failed "python3 -m venv $venv"
fi
echo "== installing tests/compat/kafka-python/requirements.txt into .venv"
timeout "$pip_timeout_s" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$suite_dir/requirements.txt" || setup_failed "pip install -r requirements.txt"

# The sdist, unpacked once; its tests are what this suite runs.
if [ ! -d "$src/test/integration" ]; then
    echo "== downloading the kafka-python $version source distribution"
    mkdir -p "$cache"
    rm -rf "$src"
    timeout "$pip_timeout_s" "$venv/bin/python" -m pip download --quiet --disable-pip-version-check \
        --no-binary :all: --no-deps "kafka-python==$version" -d "$cache" ||
        setup_failed "pip download kafka-python==$version"
    tar --no-same-owner -xzf "$cache/kafka_python-$version.tar.gz" -C "$cache" || setup_failed "unpacking the sdist"
    [ -d "$src/test/integration" ] || setup_failed "the sdist has no test/integration"
fi
# The sdist leaves out test/__init__.py, without which `import test.testutil`
# finds Python's own `test` package; and test/service.py, which we replace.
touch "$src/test/__init__.py"
cp "$suite_dir/service.py" "$src/test/service.py" || setup_failed "copying service.py"
# Weir's own checks with kafka-python (views, group configs), run with the suite.
for own in test_weir_views.py test_weir_group_configs.py; do
    cp "$suite_dir/$own" "$src/test/integration/$own" || setup_failed "copying $own"
done

if [ -n "${WEIR_BIN:-}" ]; then
    weir=$WEIR_BIN
else
    echo "== cargo build --bin weir"
    (cd "$root" && timeout "$build_timeout_s" cargo build --quiet --bin weir) || setup_failed "cargo build --bin weir"
    weir=${CARGO_TARGET_DIR:-$root/target}/debug/weir
fi
[ -x "$weir" ] || setup_failed "no broker binary at $weir"

work=$(mktemp -d -t weir-kafka-python-XXXXXX)
broker_pid=""
cleanup() {
    if [ -n "$broker_pid" ]; then kill -KILL "$broker_pid" 2>/dev/null; wait "$broker_pid" 2>/dev/null; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_broker [SERVE_ARGS...]: starts weir serve; sets broker_pid, and
# bootstrap once it prints its address (empty if it exits or is too slow).
# shellcheck source=tests/compat/weir_broker.sh
. "$root/tests/compat/weir_broker.sh"
start_broker() {
    weir_start "$work" --admin-listen 127.0.0.1:0 --auto-create-topics true --default-partitions 4 "$@"
}

# The group settings of the broker kafka-python's own fixtures run: its group
# tests ask for 3-second sessions, under Kafka's default 6-second minimum.
start_broker --set group.min.session.timeout.ms=1000 --set group.initial.rebalance.delay.ms=0
if [ -z "$bootstrap" ] && ! kill -0 "$broker_pid" 2>/dev/null; then
    # A broker without a group coordinator rejects these names.
    echo "== weir serve refused the group settings: $(tail -n 1 "$work/broker.err")"
    echo "== starting it without them; group tests with short sessions will fail"
    wait "$broker_pid" 2>/dev/null
    rm -rf "$work/data"
    start_broker
fi
if [ -z "$bootstrap" ]; then
    tail -n 50 "$work/broker.err"
    setup_failed "weir serve did not print its address within ${start_timeout_s}s"
fi
echo "== weir listening on $bootstrap"

# The fixtures refuse to start without KAFKA_ROOT naming a folder, even for an
# external broker; it stays empty.
mkdir -p "$work/kafka-root"
echo "== pytest test/integration (kafka-python $version, ${test_timeout_s}s per test)"
(
    cd "$src" &&
        KAFKA_VERSION=4.1.0 KAFKA_URI="PLAINTEXT://$bootstrap" KAFKA_ROOT="$work/kafka-root" \
            PYTHONDONTWRITEBYTECODE=1 \
            timeout --kill-after=10 "$suite_timeout_s" "$venv/bin/python" -m pytest test/integration \
            -p no:cacheprovider --timeout="$test_timeout_s" --timeout-method=signal -q -rA --show-capture=no -o log_level=INFO
) >"$work/pytest.log" 2>&1
pytest_status=$?

broker_crashed=0
if kill -0 "$broker_pid" 2>/dev/null; then
    kill -TERM "$broker_pid" 2>/dev/null
    for _ in $(seq 1 $((stop_timeout_s * 10))); do
        kill -0 "$broker_pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$broker_pid" 2>/dev/null; then
        echo "weir serve did not stop within ${stop_timeout_s}s of SIGTERM; killed"
        kill -KILL "$broker_pid" 2>/dev/null
    fi
else
    broker_crashed=1
fi
wait "$broker_pid" 2>/dev/null
broker_pid=""
cp "$work/pytest.log" "$cache/last-run.log"
cp "$work/broker.err" "$cache/last-broker.err"

# pytest's -rA summary: `PASSED id`, `FAILED id - why`, `ERROR id - why`.
awk '$1 == "PASSED" {print $2}' "$work/pytest.log" | sort -u >"$work/passed"
awk '$1 == "FAILED" || $1 == "ERROR" {print $2}' "$work/pytest.log" | sort -u >"$work/failed"
# A test that passed but then errored in teardown counts as failed.
comm -23 "$work/passed" "$work/failed" >"$work/passed_only"
sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$allowlist" 2>/dev/null | sort -u >"$work/allowed"

failed=0
while read -r id; do
    if grep -qxF "$id" "$work/failed"; then
        failed=$((failed + 1))
        echo "FAIL $id"
        # The test's own section of the log: its name sits between rows of underscores.
        name=${id##*::}
        awk -v name="$name" '
            /^___+ .* ___+$/ { inside = index($0, " " name " ") > 0 || index($0, "." name " ") > 0 }
            inside && /^E / { print "     " $0 }' "$work/pytest.log" | head -n 20
    elif grep -qxF "$id" "$work/passed_only"; then
        echo "ok   $id"
    else
        failed=$((failed + 1))
        echo "FAIL $id (did not run)"
    fi
done <"$work/allowed"

grep -vxF -f "$work/allowed" "$work/passed_only" >"$work/candidates"
if [ -s "$work/candidates" ]; then
    echo "== passing but not allow-listed (candidates for tests/compat/kafka-python/allowlist.txt):"
    sed 's/^/     /' "$work/candidates"
fi
others_failed=$(grep -cvxF -f "$work/allowed" "$work/failed")
skipped=$(sed -n 's/^SKIPPED \[\([0-9]*\)\].*/\1/p' "$work/pytest.log" | awk '{s += $1} END {print s + 0}')
echo "== $(wc -l <"$work/allowed") allow-listed; $others_failed tests outside it failed (expected), $skipped skipped"

if [ "$pytest_status" -ne 0 ] && [ "$pytest_status" -ne 1 ]; then
    echo "pytest exited with status $pytest_status (not a plain test failure); last lines of its log:"
    tail -n 30 "$work/pytest.log" | sed 's/^/     /'
    [ "$failed" -eq 0 ] && failed=1
fi
if [ "$broker_crashed" -eq 1 ]; then
    echo "FAIL weir serve exited during the run"
    [ "$failed" -eq 0 ] && failed=1
fi
if [ "$failed" -gt 0 ]; then
    echo "----- broker stderr (last 50 lines; all of it in target/compat/kafka-python/last-broker.err) -----"
    tail -n 50 "$work/broker.err"
    echo "----- full pytest log: target/compat/kafka-python/last-run.log -----"
fi
echo "kafka-python: $(wc -l <"$work/passed_only") passed, $failed failed"
[ "$failed" -eq 0 ]
