#!/usr/bin/env bash
# The seeds-and-sizes study of the default recipe: the batch-norm and the group-norm Conformer at
# two sizes (4 blocks x 96, the default; 6 blocks x 64, conf/*_small.yaml), 3 seeds each: 12
# trainings, decoded (stage 5), layer-reset scanned (stage 6) and analysed across runs (stage 7:
# exp/analysis_{block,submodule}_dev). Runs that run.sh already trained are reused.
# About 3 h on 2 cores (2.8 h of it training: two runs side by side, one thread each, ~30 min per
# pair of default-size and ~27 min per pair of small models); RESULTS.md has the figures.
#
# Other encoder families join the same study with --add_configs: e.g. the E-Branchformer of the
# same size (conf/train_asr_e_branchformer.yaml, 3 more trainings). Its runs form their own
# variant ("e_branchformer 4x96") and are compared with the Conformers by sub-module kind and
# normalized depth: the layer map gives every family one kind vocabulary (attention, cgMLP,
# merge, feed-forward, norms; see the README's layer-map table).
# --asr_configs "..." replaces the list instead.
#
# Usage: ./run_stability.sh [--stage N] [--stop_stage M] [--seeds "1 2 3 4"]
#                           [--add_configs "conf/train_asr_e_branchformer.yaml"] [any option of asr.sh]
set -euo pipefail
cd "$(dirname "$0")"

# log, die and the option parser of the stage driver's scripts.
# shellcheck source=../../TEMPLATE/asr1/common.sh
. ../../TEMPLATE/asr1/common.sh

asr_configs="conf/train_asr_conformer.yaml conf/train_asr_conformer_gn.yaml"
asr_configs+=" conf/train_asr_conformer_small.yaml conf/train_asr_conformer_gn_small.yaml"

begin_options
add_configs=   # More training configs (space-separated) joining the study.

help_message="Usage: $0 [--stage N] [--stop_stage M] [--seeds \"1 2 3 4\"]
          [--add_configs \"conf/train_asr_e_branchformer.yaml\"] [any option of asr.sh]
The seeds-and-sizes study (stages up to 7); other options go to ./run.sh and the stage driver."

# Options this script does not declare go on to run.sh, in order.
parse_known_options "$@"
for c in ${add_configs}; do
    [ -f "${c}" ] || die "--add_configs: no config file ${c} (relative to $(pwd))"
done
[ -z "${add_configs// /}" ] || asr_configs+=" ${add_configs}"

./run.sh --asr_configs "${asr_configs}" --seeds "1 2 3" --stop_stage 7 ${positional[@]+"${positional[@]}"}
