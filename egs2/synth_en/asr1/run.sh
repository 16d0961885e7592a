#!/usr/bin/env bash
# Embedded default recipe: a multi-speaker English corpus synthesized from Debian TTS voices,
# the stock ESPnet Conformer (batch norm) and espnet_ext's group-norm Conformer, CTC/attention.
# Usage: ./run.sh [--stage N] [--stop_stage M] [any option of ../../TEMPLATE/asr1/asr.sh]
set -euo pipefail
cd "$(dirname "$0")"

train_set=train
valid_set=dev
test_sets="test"
asr_configs="conf/train_asr_conformer.yaml conf/train_asr_conformer_gn.yaml"
inference_config=conf/decode_asr.yaml

../../TEMPLATE/asr1/asr.sh \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --asr_configs "${asr_configs}" \
    --inference_config "${inference_config}" \
    --nbpe 50 \
    --seeds 1 \
    --scan_granularities "block submodule" \
    --scan_taus 0,1,2,4,8,16,last \
    "$@"
