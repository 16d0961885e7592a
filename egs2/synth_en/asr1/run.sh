#!/usr/bin/env bash
# Embedded default recipe: a multi-speaker English corpus synthesized from Debian TTS voices,
# the stock ESPnet Conformer (batch norm) and espnet_ext's group-norm Conformer, CTC/attention;
# then federated adaptation of the group-norm model to 8 unseen, noisy/reverberant speakers.
# Usage: ./run.sh [--stage N] [--stop_stage M] [any option of ../../TEMPLATE/asr1/asr.sh]
set -euo pipefail
cd "$(dirname "$0")"

train_set=train
valid_set=dev
test_sets="test"
asr_configs="conf/train_asr_conformer.yaml conf/train_asr_conformer_gn.yaml"
inference_config=conf/decode_asr.yaml
# Stage 8: the withheld domain made by local/fl_data.sh (clients = its 8 speakers); scored on its
# test set and on the original test set (forgetting).
fl_adapt_set=fl_adapt/train
fl_test_sets="fl_adapt/test test"
# Runs go two at a time, each in one process of one thread (--backend local --parallel_runs 2): no
# Ray start-up per run, both cores busy, the same results as Ray's (bench/bench_fl_backends.py:
# 0.19x the wall time of Ray one run at a time, same final scores, on a busy machine).
fl_args="--rounds 20 --clients_per_round 4 --local_epochs 1 --batch_size 4 --client_optim sgd --client_lr 0.05"
fl_args+=" --backend local --parallel_runs 2 --client_threads 1"
# Clients train in float32: under CPU bf16 autocast (--client_cpu_autocast bf16) their batches of 4
# utterances took 9.1 s per round instead of 5.3 s on this corpus (RESULTS.md, "Recipe time").
# Their dropout masks come from 16-bit random integers and their conv2d weights are channels-last
# while they train (README, "Speed": 0.94 of a float32 client step together).
fl_args+=" --client_cpu_dropout fast --client_cpu_channels_last true"
# One federated seed (stage 8 took 380 s on 2 cores; RESULTS.md, "Recipe time"); its results.md still
# gives paired bootstrap intervals over the test utterances. For the spread over seeds run every plan
# once per seed: --fl_seeds "1 2 3" (each seed adds about as much again).
fl_seeds="1"

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
    --fl_adapt_set "${fl_adapt_set}" \
    --fl_test_sets "${fl_test_sets}" \
    --fl_args "${fl_args}" \
    --fl_seeds "${fl_seeds}" \
    "$@"
