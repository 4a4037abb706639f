#!/usr/bin/env bash
# The test command: `bash scripts/test.sh`.
#
# On a fresh Debian machine with Rust, Python and Node, it installs what the
# tests need (kcat, curl, chromium and chromium-driver from Debian, cargo-deb, a Python venv at .venv
# with kafka-python and confluent-kafka, npm packages for kafkajs), runs every Rust test of the
# workspace (unit, property,
# crash and end-to-end tests with librdkafka built by cargo, and those that
# need the storage failpoints), then the client
# suites that share no code with librdkafka's Rust binding: Debian's kcat,
# kafka-python's own integration tests, confluent-kafka's ShareConsumer and
# kafkajs; and the Debian package (scripts/test-package.sh: `cargo deb`
# from the test build's binary, installed, run and purged). It prints one
# `N passed, M failed` line per suite and a total, and exits non-zero if
# anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt-get install, running apt-get update first when the package lists are
# missing or the install fails on a stale list.
apt_install() {
    if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
        as_root apt-get update -qq
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" ||
        { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; }
}

if ! command -v kcat >/dev/null; then
    echo "== installing kcat"
    apt_install kcat >/dev/null || echo "warning: could not install kcat; its suite will fail"
fi
# tests/console.rs drives the web console in Debian's headless Chromium
# through chromedriver (WebDriver).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "== installing chromium and chromium-driver"
    apt_install chromium chromium-driver >/dev/null ||
        echo "warning: could not install chromium; tests/console.rs will fail"
fi
# The package suite: curl asks the installed broker's /ready; cargo-deb
# makes the package.
if ! command -v curl >/dev/null; then
    echo "== installing curl"
    apt_install curl >/dev/null || echo "warning: could not install curl; the package suite will fail"
fi
if ! cargo deb --version >/dev/null 2>&1; then
    echo "== installing cargo-deb"
    cargo install cargo-deb --locked --quiet --version 3.8.0 ||
        echo "warning: could not install cargo-deb; the package suite will fail"
fi
# librdkafka's TLS in the Rust tests (rdkafka's `ssl` feature) links OpenSSL.
if ! pkg-config --exists openssl 2>/dev/null; then
    echo "== installing libssl-dev and pkg-config"
    apt_install libssl-dev pkg-config >/dev/null ||
        echo "warning: could not install libssl-dev; the Rust tests will not build"
fi
if [ ! -x .venv/bin/python ]; then
    echo "== creating the Python venv at .venv"
    python3 -m venv .venv 2>/dev/null || { apt_install python3-venv >/dev/null && python3 -m venv .venv; } ||
        echo "warning: could not create .venv"
fi

# One full build: incremental caches would only double the disk it takes.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

log_dir=$(mktemp -d -t weir-test-XXXXXX)
summary=()
total_passed=0
total_failed=0

# record SUITE PASSED FAILED
record() {
    summary+=("$1: $2 passed, $3 failed")
    total_passed=$((total_passed + $2))
    total_failed=$((total_failed + $3))
}

# With the storage failpoints compiled in (docs/testing.md), so the tests
# gated on them (a slow or failing disk under a real broker) run too.
echo "== cargo test --workspace --features weir/failpoints"
cargo test --workspace --no-fail-fast --features weir/failpoints 2>&1 | tee "$log_dir/cargo.log"
cargo_status=${PIPESTATUS[0]}
read -r cargo_passed cargo_failed < <(
    sed -n 's/^test result: .*\. \([0-9][0-9]*\) passed; \([0-9][0-9]*\) failed;.*/\1 \2/p' "$log_dir/cargo.log" |
        awk '{p += $1; f += $2} END {print p + 0, f + 0}'
)
if [ "$cargo_status" -ne 0 ] && [ "$cargo_failed" -eq 0 ]; then
    # A build failure or a crashed test binary: no per-test count says so.
    cargo_failed=1
fi
record cargo "$cargo_passed" "$cargo_failed"

# run_suite NAME SCRIPT: run a client suite whose last summary line is
# `NAME: N passed, M failed`; a non-zero exit without a failure count counts as one failure.
run_suite() {
    local name=$1 script=$2 status passed failed
    echo "== $name"
    bash "$script" 2>&1 | tee "$log_dir/$name.log"
    status=${PIPESTATUS[0]}
    read -r passed failed < <(
        sed -n "s/^$name: \([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed\$/\1 \2/p" "$log_dir/$name.log" | tail -n 1
    )
    passed=${passed:-0}
    failed=${failed:-0}
    if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
        failed=1
    fi
    record "$name" "$passed" "$failed"
}

run_suite kcat tests/compat/kcat_smoke.sh
run_suite kafka-python tests/compat/kafka_python.sh
run_suite confluent-kafka tests/compat/confluent_kafka.sh
run_suite kafkajs tests/compat/kafkajs.sh
run_suite package scripts/test-package.sh

rm -rf "$log_dir"
echo
echo "== summary"
for line in "${summary[@]}"; do
    echo "$line"
done
echo "total: $total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]
