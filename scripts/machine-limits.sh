#!/usr/bin/env bash
# This machine's limits, to set beside any benchmark figure measured in the
# same period (docs/benchmarks.md): sequential write bandwidth with one
# fdatasync at the end, 4 KiB write + fdatasync latency, 256 KiB writes each
# followed by fdatasync (the group-commit ceiling), and loopback TCP
# bandwidth. Builds the release binary, then runs `weir bench limits`, which
# needs nothing installed.
#
# Usage: bash scripts/machine-limits.sh DIR [weir bench limits flags...]
#   DIR: a folder on the disk the broker's data uses (not a tmpfs).
# Example: bash scripts/machine-limits.sh target/benchdata --json
set -euo pipefail
if [ $# -lt 1 ]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
# Absolute before the cd below, so a relative DIR means the caller's.
dir=$(cd "$1" && pwd) || { echo "machine-limits.sh: $1 is not a folder" >&2; exit 2; }
shift
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin weir
exec target/release/weir bench limits --dir "$dir" "$@"
