#!/usr/bin/env bash
# The DANet paper's question on the embedded digits data: what does each residual
# connection type cost on Loihi 2? Trains (or reuses) digits_resnet with every
# connection type, compiles each for loihi2-sim, accounts the test split, and shows
# accuracy, SOPs, MACs, energy, synapse memory and cores side by side.
# About 2 minutes on 2 CPU cores; checkpoints are reused on later runs.
# With one block per stage, digits_resnet's da and pa graphs coincide (DA's dense sums
# differ from pre-activation from the second block of a stage on, docs/danets.md):
# their rows are equal. Use --arch resnet20 for the deeper picture, with an expand and
# a relay row for ms/pa/da.
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
