#!/usr/bin/env bash
# The DANet paper's question on the embedded digits data: what does each residual
# connection type cost on Loihi 2? Trains (or reuses) digits_resnet with every
# connection type, compiles each for loihi2-sim, accounts the test split, and shows
# accuracy, SOPs, MACs, energy, synapse memory and cores side by side.
# About 5 minutes on 2 CPU cores; checkpoints are reused on later runs.
#     bash examples/compare_connections.sh [PROFILE]
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-loihi2}
OUT=runs/compare
mkdir -p "$OUT"
.venv/bin/danet-deploy compare --arch digits_resnet --connections plain,aa,sew,sew-and,ms,pa,da \
    --profile "$PROFILE" --data digits --epochs 12 --models-dir "$OUT" --format html -o "$OUT/compare.html"
.venv/bin/danet-deploy compare --arch digits_resnet --connections plain,aa,sew,sew-and,ms,pa,da \
    --profile "$PROFILE" --data digits --epochs 12 --models-dir "$OUT"
echo "HTML with plots: $OUT/compare.html"
