#!/usr/bin/env bash
# The whole offline chain on the bundled digits benchmark, step by step (what `oodkit demo` does).
set -euo pipefail
OUT=${1:-runs/quickstart}
oodkit info --benchmark digits
oodkit demo --out "$OUT"
oodkit info "$OUT/metrics"
echo "Markdown table: $OUT/metrics/metrics.md; plots: $OUT/metrics/plots/"
