#!/usr/bin/env bash
# The depth sweep of the default recipe: do ambient blocks appear with depth? Batch-norm and
# group-norm Conformers of 4, 8, 12 and 16 blocks at one narrow width (64 dim, the small size of
# run_stability.sh; conf/depth/*.yaml), 2 seeds each: 16 trainings, decoded (stage 5),
# layer-reset scanned at block and sub-module level (stage 6: reset to tau 0 and to epoch 10 of 20,
# and re-randomization) and analysed across runs (stage 7). Runs already trained are reused, and an
# interrupted training resumes.
# Trainings run two at a time with one thread each; RESULTS.md ("Ambient blocks and depth") has the
# measured times.
#
# Usage: ./run_depth.sh [--stage N] [--stop_stage M] [--seeds "1 2 3"] [any option of asr.sh]
#        e.g. train the first seed of every depth only: ./run_depth.sh --stop_stage 4 --seeds 1
set -euo pipefail
cd "$(dirname "$0")"

# log, die and the option parser of the stage driver's scripts.
# shellcheck source=../../TEMPLATE/asr1/common.sh
. ../../TEMPLATE/asr1/common.sh

asr_configs=""
for n in 4 8 12 16; do
    asr_configs+=" conf/depth/train_asr_conformer_${n}x64.yaml conf/depth/train_asr_conformer_gn_${n}x64.yaml"
done

begin_options
help_message="Usage: $0 [--stage N] [--stop_stage M] [--seeds \"1 2 3\"] [any option of asr.sh]
The depth sweep (stages up to 7); every option goes to ./run.sh and the stage driver."

# This script declares no option of its own: all go on to run.sh, in order.
parse_known_options "$@"

./run.sh --asr_configs "${asr_configs# }" --seeds "1 2" --scan_taus 0,10 --stop_stage 7 ${positional[@]+"${positional[@]}"}
