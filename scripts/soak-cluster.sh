#!/usr/bin/env bash
# The cluster soak of issue 9 (docs/testing.md, "Fault tests"): the 3-node
# leader-kill test of tests/cluster_faults.rs with KILLS leader SIGKILLs
# instead of CI's 10. Each kill prints its failover time (SIGKILL of the
# leader to the first acks=all acknowledgement on a partition it led), and
# the end prints p50, p90 and max, which docs/benchmarks.md quotes. Not run
# by CI or scripts/test.sh. Needs root (network namespaces).
#
# Usage: scripts/soak-cluster.sh [--release] [KILLS]
#   KILLS: leader kills [100], at most 1000
#   --release: build and run optimized (what benchmarks should quote)
# Environment: WEIR_FAULT_SEED replays a run's choices (printed at the start).
# Output: the test's stderr, also kept in target/soak-cluster.log.
set -euo pipefail

cd "$(dirname "$0")/.."
KILLS=100
PROFILE=()
for arg in "$@"; do
    case "$arg" in
        --release) PROFILE=(--release) ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *[!0-9]*|'') echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
        *) KILLS=$arg ;;
    esac
done

mkdir -p target
log=target/soak-cluster.log
WEIR_SOAK_KILLS=$KILLS cargo test "${PROFILE[@]}" --test cluster_faults \
    acked_records_and_group_offsets_survive_repeated_leader_sigkills \
    -- --exact --nocapture --test-threads=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
echo
grep -E '^(fault schedule seed|failover |history:)' "$log" || true
exit "$status"
