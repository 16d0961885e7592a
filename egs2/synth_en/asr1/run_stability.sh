#!/usr/bin/env bash
# The seeds-and-sizes study of the default recipe: the batch-norm and the group-norm Conformer at
# two sizes (4 blocks x 96, the default; 6 blocks x 64, conf/*_small.yaml), 3 seeds each: 12
# trainings, decoded (stage 5), layer-reset scanned (stage 6) and analysed across runs (stage 7:
# exp/analysis_{block,submodule}_dev). Runs that run.sh already trained are reused.
# About 3 h on 2 cores (2.8 h of it training: two runs side by side, one thread each, ~30 min per
# pair of default-size and ~27 min per pair of small models); RESULTS.md has the figures.
# Usage: ./run_stability.sh [--stage N] [--stop_stage M] [--seeds "1 2 3 4"] [any option of asr.sh]
set -euo pipefail
cd "$(dirname "$0")"

asr_configs="conf/train_asr_conformer.yaml conf/train_asr_conformer_gn.yaml"
asr_configs+=" conf/train_asr_conformer_small.yaml conf/train_asr_conformer_gn_small.yaml"

./run.sh --asr_configs "${asr_configs}" --seeds "1 2 3" --stop_stage 7 "$@"
