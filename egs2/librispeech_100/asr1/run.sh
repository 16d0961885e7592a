#!/usr/bin/env bash
# LibriSpeech 100 h (train-clean-100), ESPnet's librispeech_100 sets: train_clean_100 for training,
# dev (= dev-clean + dev-other) for validation, test/dev clean/other for evaluation.
# Paper-scale Conformers with batch norm (stock ESPnet `conformer`) and group norm
# (espnet_ext's `norm_conformer`); sizes S/M/L and ESPnet's own baseline are in conf/tuning/.
# Needs the corpus (see README.md: db.sh, or --local_data_opts "--librispeech_dir DIR").
# Usage: ./run.sh [--stage N] [--stop_stage M] [any option of ../../TEMPLATE/asr1/asr.sh]
set -euo pipefail
cd "$(dirname "$0")"

train_set=train_clean_100
valid_set=dev
test_sets="test_clean test_other dev_clean dev_other"
asr_configs="conf/tuning/train_asr_conformer_s_bn.yaml conf/tuning/train_asr_conformer_s_gn.yaml"
inference_config=conf/decode_asr.yaml

../../TEMPLATE/asr1/asr.sh \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --asr_configs "${asr_configs}" \
    --inference_config "${inference_config}" \
    --ngpu 1 \
    --train_nj 1 \
    --nj 8 \
    --inference_nj 8 \
    --nbpe 5000 \
    --seeds 1 \
    --scan_sets dev_clean \
    --scan_granularities "block submodule" \
    --scan_taus 0,1,2,5,10,20,40,last \
    "$@"
