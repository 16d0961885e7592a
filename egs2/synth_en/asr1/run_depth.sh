#!/usr/bin/env bash
# The depth sweep of the default recipe: do ambient blocks appear with depth? Batch-norm and
# group-norm Conformers of 4, 8, 12 and 16 blocks at one narrow width (64 dim, the small size of
# run_stability.sh; conf/depth/*.yaml), 2 seeds each: 16 trainings, decoded (stage 5),
# layer-reset scanned at block and sub-module level (stage 6: reset to tau 0 and to epoch 10 of 20,
# and re-randomization) and analysed across runs (stage 7: exp/analysis_{block,submodule}_dev, then
# the depth analysis of the sweep: exp/analysis_depth_<set>/, i.e. `layer_analysis depth`: fraction
# of ambient groups per kind and ambient block positions vs depth, error rates, stability across
# seeds, weight updates; also exp/analysis_depth_<set>_tau10/ and _rerandomize/ for the other
# resets). Runs already trained are reused, and an interrupted training resumes.
# Trainings run two at a time with one thread each, with the CPU training levers (the configs'
# cpu_autocast, cpu_dropout, cpu_channels_last) and a peak learning rate of 0.002 (at 0.005 most
# deep runs stayed on the CTC blank plateau); epoch times, per depth, and the sweep's results are
# in RESULTS.md ("Ambient blocks and depth").
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
stage=1          # First stage to run (passed on to run.sh).
stop_stage=7     # Last stage (passed on to run.sh); the depth analysis runs with stage 7.
expdir=exp       # Directory for experiments (passed on to run.sh).
python=          # Python interpreter (default: tools/venv/bin/python, else python3; passed on to run.sh).
depth_sets=dev   # Scanned data sets the depth analysis reads (space separated): exp/analysis_depth_<set>/.
mid_tau=10       # The mid-training checkpoint the scans also reset to (epoch 10 of 20).

help_message="Usage: $0 [--stage N] [--stop_stage M] [--seeds \"1 2 3\"] [--depth_sets \"dev\"] [any option of asr.sh]
The depth sweep (stages up to 7, then the depth analysis); other options go to ./run.sh and the stage driver."

# Options this script does not declare go on to run.sh, in order.
parse_known_options "$@"
python=${python:-$(default_python)}

./run.sh --asr_configs "${asr_configs# }" --seeds "1 2" --scan_taus "0,${mid_tau}" --expdir "${expdir}" \
    --python "${python}" --stage "${stage}" --stop_stage "${stop_stage}" ${positional[@]+"${positional[@]}"}

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
    for dset in ${depth_sets}; do
        # One analysis per reset the scans hold: re-initialization to tau 0 (the reference), to
        # the mid-training checkpoint, and re-randomization.
        for reset in "" "--tau ${mid_tau}" "--mode rerandomize"; do
            out="${expdir}/analysis_depth_${dset}"
            case "${reset}" in
                --tau*) out+="_tau${mid_tau}" ;;
                --mode*) out+="_rerandomize" ;;
            esac
            log "Depth analysis of the sweep on ${dset} ${reset:-(reset to tau 0)}: ${out}"
            # The sweep's runs, every seed trained: conf/depth/train_asr_conformer{,_gn}_<blocks>x64.yaml.
            # shellcheck disable=SC2086  # ${reset} is zero or two words
            "${python}" -m espnet_ext.bin.layer_analysis depth --exp_dir "${expdir}" ${reset} \
                --runs_glob 'asr_train_asr_conformer*_[0-9]*x64_seed*' --dataset "${dset}" --out_dir "${out}"
        done
    done
fi
