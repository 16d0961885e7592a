#!/usr/bin/env bash
# Withheld domain of the librispeech_100 recipe for federated adaptation (stage 8): a set of
# train-clean-100 readers the central model does not train on. Writes
#   data/fl/central      train-clean-100 without the withheld readers (train the central model on it)
#   data/fl_adapt/train  the withheld readers' utterances except one chapter each (clients' data)
#   data/fl_adapt/test   that last chapter of each withheld reader (readers with one chapter are
#                        test-only), to score adaptation on speech no client trained on
# Each withheld reader is one client. Run from egs2/librispeech_100/asr1 after stage 1; a re-run
# with the same options is a no-op.
set -euo pipefail

# log, die, option parsing, default_python; the repository on PYTHONPATH.
# shellcheck source=../../../TEMPLATE/asr1/common.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../../TEMPLATE/asr1/common.sh"

begin_options
# Options
source_set=train_clean_100  # Data dir (under data/) the readers are taken from.
every=5                     # Withhold every N-th reader (in spk2utt order): 50 of 251 with 5.
python=                     # Python interpreter (default: tools/venv/bin/python, else python3).

help_message="Usage: $0 [--source_set NAME] [--every N] [--python PATH]
Splits data/<source_set> into data/fl/central (central training) and data/fl_adapt/{train,test}
(withheld readers: federated clients' data and their held-out chapters)."

parse_options "$@"
no_positional
python=${python:-$(default_python)}
src=data/${source_set}
[ -f "${src}/utt2chapter" ] || die "${src}/utt2chapter not found: run stage 1 (local/data.sh) first"

fl() { "${python}" -m espnet_ext.bin.fl_simulate "$@"; }

# A dir the data tools did not write (no marker) stops the script before data/fl is written.
for out in data/fl_adapt/train data/fl_adapt/test; do
    [ ! -e "${out}" ] || [ -f "${out}/.espnet_ext.json" ] \
        || die "${out} exists but was not written by $0; move it away (mv ${out} ${out}.orig) and run again"
done
# Each split keeps outputs that already hold it (a re-run is a no-op) and replaces, with
# --overwrite, only the outputs of an earlier split with other options.
fl split --data_dir "${src}" --out_dir data/fl --method every_nth_speaker --every "${every}" --overwrite
fl split --data_dir data/fl/withheld --out_dir data/fl_adapt --method last_chapter \
    --central_name train --withheld_name test --overwrite
log "Withheld readers: $(cut -d' ' -f1 data/fl/withheld/spk2utt | wc -l); clients' data data/fl_adapt/train, held-out chapters data/fl_adapt/test"
