#!/usr/bin/env bash
# Your own corpus, given as existing Kaldi data dirs (the data contract is in
# ../../TEMPLATE/asr1/README.md): they are checked and imported as data/train, data/dev and
# data/<test name>, then the Conformer with batch norm and with group norm is trained, decoded,
# scored, layer-reset scanned and analysed by the shared stage driver.
#   ./run.sh --train_dir /corpora/mine/train --valid_dir /corpora/mine/dev --test_dirs "/corpora/mine/test"
#   ./run.sh --stage 5          # later runs: the dirs are already imported (test names: see below)
# Any other option goes to the stage driver (../../TEMPLATE/asr1/asr.sh --help).
# egs2/TEMPLATE/asr1/setup.sh <new recipe dir> makes a copy of this recipe with the paths filled in.
set -euo pipefail
cd "$(dirname "$0")"

# Path from this recipe to the espnet_ext repository (setup.sh sets it for recipes elsewhere).
repo_rel=../../..
# log, die and the option parser of the stage driver's scripts.
# shellcheck source=../../TEMPLATE/asr1/common.sh
. "${repo_rel}/egs2/TEMPLATE/asr1/common.sh"

# Test sets to decode when test_dirs is empty, space-separated (data/<name> must exist; give them
# as --test_sets, an option of the stage driver); with neither, only dev is decoded.
test_sets=
asr_configs="conf/train_asr_conformer_bn.yaml conf/train_asr_conformer_gn.yaml"
inference_config=conf/decode_asr.yaml

begin_options
# Existing Kaldi data dirs; empty: data/train and data/dev are there already.
train_dir=
valid_dir=
# Space-separated test dirs; DIR is imported as data/<basename of DIR>, NAME=DIR as data/NAME.
test_dirs=
# More options for local/data.sh, e.g. "--extract_audio true" (segments, piped or ark audio).
import_opts=

help_message="Usage: $0 [--train_dir DIR] [--valid_dir DIR] [--test_dirs \"DIR NAME=DIR ...\"]
          [--import_opts \"...\"] [any option of ${repo_rel}/egs2/TEMPLATE/asr1/asr.sh]
Imports the given Kaldi dirs as data/train, data/dev and data/<test name> (stage 1), then runs
the stage driver on them; the other options go to the stage driver."

# Options this script does not declare go on to the stage driver, in order.
parse_known_options "$@"
driver_args=(${positional[@]+"${positional[@]}"})

# The stage driver word-splits --local_data_opts, so paths must be free of whitespace (wav.scp
# paths must be anyway).
[[ "${train_dir}${valid_dir}" != *[[:space:]]* ]] || die "--train_dir/--valid_dir paths must not contain spaces"
local_data_opts="${import_opts}"
[ -z "${train_dir}" ] || local_data_opts+=" --train_dir ${train_dir}"
[ -z "${valid_dir}" ] || local_data_opts+=" --valid_dir ${valid_dir}"
if [ -n "${test_dirs// /}" ]; then
    test_sets=
    for entry in ${test_dirs}; do
        if [[ ${entry} == *=* ]]; then name=${entry%%=*}; else name=$(basename "${entry}"); fi
        test_sets+=" ${name}"
    done
    local_data_opts+=" --test_dirs $(echo ${test_dirs} | tr ' ' ',')"
fi

"${repo_rel}/egs2/TEMPLATE/asr1/asr.sh" \
    --train_set train \
    --valid_set dev \
    --test_sets "${test_sets# }" \
    --local_data_opts "${local_data_opts# }" \
    --asr_configs "${asr_configs}" \
    --inference_config "${inference_config}" \
    --nbpe 500 \
    --seeds 1 \
    --scan_granularities "block submodule" \
    --scan_taus 0,1,2,5,10,20,last \
    "${driver_args[@]}"
