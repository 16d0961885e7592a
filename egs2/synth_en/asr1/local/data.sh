#!/usr/bin/env bash
# Data preparation of the synth_en recipe: synthesizes the embedded default corpus (multi-speaker
# English from Debian TTS voices and WordNet sentences), writes data/{train,dev,test} and
# validates them. Run from egs2/synth_en/asr1. A re-run of a finished build is a no-op.
set -euo pipefail

# log, die, option parsing, default_python; the repository on PYTHONPATH.
# shellcheck source=../../../TEMPLATE/asr1/common.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../../TEMPLATE/asr1/common.sh"

recipe_dir=$(pwd)

begin_options
# Options (defaults give 12 speakers x 250 train / 10 dev / 10 test utterances, ~2 h)
corpus_dir=downloads/synth_en  # LibriSpeech-like audio tree and corpus metadata.
data_dir=data                  # Kaldi dirs are written to ${data_dir}/{train,dev,test}.
num_speakers=12                # Synthetic speakers.
train_per_speaker=250          # Training utterances per speaker.
dev_per_speaker=10             # Development utterances per speaker.
test_per_speaker=10            # Test utterances per speaker.
seed=1                         # Seed of speakers, sentences and conditions.
noise_snr_db=                  # MIN,MAX (or one value) in dB: adds a "noisy" condition.
reverb=false                   # true: adds a "reverb" condition.
nj=2                           # Parallel rendering processes.
python=                        # Python interpreter (default: tools/venv/bin/python, else python3).

help_message=$(cat <<EOH
Usage: $0 [options]
Synthesizes the synth_en corpus and writes ${data_dir}/{train,dev,test} (run from egs2/synth_en/asr1).

Options:
  --corpus_dir DIR          audio tree and metadata [${corpus_dir}]
  --data_dir DIR            parent of the Kaldi dirs [${data_dir}]
  --num_speakers N          synthetic speakers [${num_speakers}]
  --train_per_speaker N     training utterances per speaker [${train_per_speaker}]
  --dev_per_speaker N       development utterances per speaker [${dev_per_speaker}]
  --test_per_speaker N      test utterances per speaker [${test_per_speaker}]
  --seed N                  seed [${seed}]
  --noise_snr_db MIN,MAX   add a noisy condition at this SNR range in dB ("MIN MAX" or one value too) [none]
  --reverb true|false       add a reverberant condition [${reverb}]
  --nj N                    parallel processes [${nj}]
  --python PATH             Python interpreter [tools/venv/bin/python]
  --help                    this message
EOH
)

parse_options "$@"
no_positional

python=${python:-$(default_python)}
case "${reverb}" in
    true) reverb_opt=(--reverb) ;;
    false) reverb_opt=() ;;
    *) die "--reverb must be true or false, got '${reverb}'" ;;
esac
noise_opt=()
# shellcheck disable=SC2206
# A comma form (10,20) survives being passed through the stage driver's --local_data_opts.
[ -n "${noise_snr_db}" ] && noise_opt=(--noise_snr_db ${noise_snr_db//,/ })

log "Synthesizing the corpus into ${corpus_dir} and ${data_dir}/{train,dev,test} (cwd: ${recipe_dir})"
"${python}" -m espnet_ext.bin.make_synth_corpus \
    --out_dir "${corpus_dir}" \
    --data_dir "${data_dir}" \
    --num_speakers "${num_speakers}" \
    --train_per_speaker "${train_per_speaker}" \
    --dev_per_speaker "${dev_per_speaker}" \
    --test_per_speaker "${test_per_speaker}" \
    --seed "${seed}" \
    --nj "${nj}" \
    "${noise_opt[@]}" "${reverb_opt[@]}" \
    || die "corpus synthesis failed (see the message above)"

log "Validating ${data_dir}/{train,dev,test}"
"${python}" -m espnet_ext.bin.validate_data_dir \
    "${data_dir}/train" "${data_dir}/dev" "${data_dir}/test"
log "Done"
