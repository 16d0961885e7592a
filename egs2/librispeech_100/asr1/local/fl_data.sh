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
[[ ${every} =~ ^[0-9]+$ ]] && [ "${every}" -ge 2 ] || die "--every must be an integer >= 2, got '${every}'"
src=data/${source_set}
[ -f "${src}/utt2chapter" ] || die "${src}/utt2chapter not found: run stage 1 (local/data.sh) first"

marker=data/fl_adapt/.fl_data_options
options="source_set=${source_set} every=${every}"
if [ -f "${marker}" ] && [ "$(cat "${marker}")" = "${options}" ]; then
    log "data/fl and data/fl_adapt exist (${options}): kept"
    exit 0
fi
fl() { "${python}" -m espnet_ext.bin.fl_simulate "$@"; }

readers=$(cut -d' ' -f1 "${src}/spk2utt" | awk -v n="${every}" 'NR % n == 0' | paste -sd,)
[ -n "${readers}" ] || die "${src} has fewer than ${every} speakers: lower --every"
if [ -f "${marker}" ]; then
    # Outputs of an earlier run with other options: remove exactly what this script wrote.
    log "Replacing data/fl and data/fl_adapt of an earlier run ($(cat "${marker}"))"
    rm -rf data/fl/central data/fl/withheld data/fl_adapt/train data/fl_adapt/test
    rm -f data/fl/split_rule data/fl_adapt/test_split_rule "${marker}"
    rmdir data/fl data/fl_adapt 2>/dev/null || true  # kept when they hold anything else
fi
# Anything else already there is not this script's: `fl split` refuses dirs it did not write, and
# the moves below must not land inside existing dirs.
for out in data/fl_adapt/train data/fl_adapt/test data/fl_adapt/test_split_rule; do
    [ ! -e "${out}" ] || die "${out} exists but was not written by $0; move it away (mv ${out} ${out}.orig) and run again"
done
fl split --data_dir "${src}" --out_dir data/fl --method speakers --speakers "${readers}"
# The last chapter of each withheld reader (utterance ids are <reader>-<chapter>-<n>, sorted).
chapters=$(awk '{ split($1, id, "-"); last[id[1]] = $2 } END { for (r in last) print last[r] }' \
    data/fl/withheld/utt2chapter | sort -u | paste -sd,)
fl split --data_dir data/fl/withheld --out_dir data/.fl_split --method field --field chapter \
    --values "${chapters}"
mkdir -p data/fl_adapt
mv -T data/.fl_split/central data/fl_adapt/train
mv -T data/.fl_split/withheld data/fl_adapt/test
mv -T data/.fl_split/split_rule data/fl_adapt/test_split_rule
rmdir data/.fl_split
echo "${options}" >"${marker}"
log "Withheld readers: $(echo "${readers}" | tr ',' ' ' | wc -w); clients' data data/fl_adapt/train, held-out chapters data/fl_adapt/test"
