#!/usr/bin/env bash
# Withheld domain of the synth_en recipe for federated adaptation (stage 8): speakers the central
# model never heard (another speaker seed), two thirds of their utterances noisy or reverberant.
# Writes data/fl_adapt/{train,dev,test}; each speaker is one federated client. Run from
# egs2/synth_en/asr1. A re-run of a finished build is a no-op.
set -euo pipefail

# log, die, option parsing.
# shellcheck source=../../../TEMPLATE/asr1/common.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../../TEMPLATE/asr1/common.sh"

begin_options
# Options (defaults: 8 unseen speakers x 40 adaptation / 2 dev / 10 test utterances)
corpus_dir=downloads/synth_en_fl  # Audio tree and metadata of the withheld domain.
data_dir=data/fl_adapt            # Kaldi dirs: ${data_dir}/{train,dev,test}.
num_speakers=8                    # Unseen speakers = federated clients.
train_per_speaker=40              # Adaptation utterances per client.
dev_per_speaker=2                 # Development utterances per speaker.
test_per_speaker=10               # Held-out test utterances per speaker.
seed=2                            # Must differ from the central corpus' seed (1): new speakers.
noise_snr_db=5,15                 # MIN,MAX SNR in dB of the noisy condition ("" for none).
reverb=true                       # Reverberant condition.
nj=2                              # Parallel rendering processes.
python=                           # Python interpreter (default: tools/venv/bin/python).

help_message="Usage: $0 [--corpus_dir DIR] [--data_dir DIR] [--num_speakers N] [--train_per_speaker N]
  [--dev_per_speaker N] [--test_per_speaker N] [--seed N] [--noise_snr_db MIN,MAX] [--reverb true|false]
  [--nj N] [--python PATH]
Synthesizes the withheld (federated adaptation) domain into ${data_dir}/{train,dev,test}."

parse_options "$@"
no_positional
[ "${seed}" != 1 ] || die "--seed 1 is the central corpus' seed: the withheld speakers must be new"

# The central corpus builder does the work; only its options differ.
"$(dirname "${BASH_SOURCE[0]}")/data.sh" --corpus_dir "${corpus_dir}" --data_dir "${data_dir}" \
    --num_speakers "${num_speakers}" --train_per_speaker "${train_per_speaker}" \
    --dev_per_speaker "${dev_per_speaker}" --test_per_speaker "${test_per_speaker}" \
    --seed "${seed}" --noise_snr_db "${noise_snr_db}" --reverb "${reverb}" --nj "${nj}" \
    ${python:+--python "${python}"}
