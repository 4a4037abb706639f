#!/usr/bin/env bash
# Fuzz what clients and disks hand the broker (docs/security.md):
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Targets (fuzz/fuzz_targets/): decode_request (request frames of every API
# and version), produce_payload (a produce's RecordBatch payload, checked and
# appended to a real partition), log_recovery (a log whose newest segment,
# index, checkpoint or leader epochs are torn, overwritten or extended,
# opened again and read back), sasl_exchange (PLAIN and SCRAM exchanges of
# arbitrary client messages with weir-auth's SASL server), oauth_exchange
# (OAUTHBEARER exchanges, with tokens of arbitrary claims signed by a test
# key). Default: all five, 30 seconds each (what .ci/run runs); the
# campaigns in docs/security.md ran 600.
#
# Installs cargo-fuzz when missing (it needs the nightly toolchain, which
# rustup provides). Each target first runs every input of its committed
# regression corpus (fuzz/corpus/TARGET), then fuzzes from it; new inputs go
# to a scratch folder, not the repository. A crash stops the run: the input
# is in fuzz/artifacts/TARGET/, and the script exits 1.
#
# WEIR_FUZZ_KEEP=DIR keeps the new inputs (DIR/TARGET/) and libFuzzer's log
# (DIR/TARGET.log) of a campaign, to merge into the regression corpus.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(decode_request produce_payload log_recovery sasl_exchange oauth_exchange)
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "== installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi

cd fuzz
# The seed writer fills every target's corpus folder; run it when one of the
# targets to fuzz has none.
for target in "${targets[@]}"; do
    if [ -z "$(ls -A "corpus/$target" 2>/dev/null)" ]; then
        cargo +nightly run --quiet --bin seeds
        break
    fi
done
if [ -n "${WEIR_FUZZ_KEEP:-}" ]; then
    mkdir -p "$WEIR_FUZZ_KEEP"
    scratch=$(cd "$WEIR_FUZZ_KEEP" && pwd)
else
    scratch=$(mktemp -d -t weir-fuzz-XXXXXX)
    trap 'rm -rf "$scratch"' EXIT
fi
status=0
for target in "${targets[@]}"; do
    echo "== fuzzing $target for ${seconds}s"
    mkdir -p "$scratch/$target"
    # -rss_limit_mb bounds what one input may make the target hold.
    set +e
    cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
        >"$scratch/$target.log" 2>&1
    code=$?
    set -e
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|Test unit written)' \
        "$scratch/$target.log" || true
    if [ "$code" -ne 0 ]; then
        echo "fuzz: $target FAILED (input in fuzz/artifacts/$target/)"
        tail -40 "$scratch/$target.log"
        status=1
    else
        echo "fuzz: $target ok"
    fi
done
exit $status
