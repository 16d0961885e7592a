#!/usr/bin/env bash
# Data preparation of the librispeech_100 recipe: Kaldi dirs from an extracted LibriSpeech tree.
# Writes data/{train_clean_100,dev_clean,dev_other,test_clean,test_other} and data/dev
# (dev-clean + dev-other, ESPnet's validation set), optionally data/train_960, and validates them.
# Nothing is downloaded unless --download true. Run from egs2/librispeech_100/asr1.
set -euo pipefail

# log, die, option parsing, default_python; the repository on PYTHONPATH.
# shellcheck source=../../../TEMPLATE/asr1/common.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../../TEMPLATE/asr1/common.sh"

recipe_src_dir=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
# The corpus location: db.sh of the directory run from, else the one next to this script.
if [ -f db.sh ]; then
    # shellcheck disable=SC1091
    . ./db.sh
else
    # shellcheck disable=SC1091
    . "${recipe_src_dir}/db.sh"
fi

begin_options
# Options
librispeech_dir=${LIBRISPEECH}  # Folder holding LibriSpeech/ (db.sh; env LIBRISPEECH overrides it).
data_dir=data                   # Parent of the Kaldi dirs.
download=false                  # true: download and extract the missing parts from openslr.org first.
data_url=https://www.openslr.org/resources/12  # Where the archives are (a mirror may be faster).
train_960=false                 # true: also train-clean-360 and train-other-500, and data/train_960.
speaker_unit=reader             # Speaker ids: reader (LibriSpeech reader) or chapter (reader-chapter).
overwrite=false                 # true: replace dirs prepared earlier with other options (never others).
python=                         # Python interpreter (default: tools/venv/bin/python, else python3).

help_message=$(cat <<EOH
Usage: $0 [options]
Prepares ${data_dir}/{train_clean_100,dev,dev_clean,dev_other,test_clean,test_other} from an extracted
LibriSpeech tree (run from egs2/librispeech_100/asr1).

Options:
  --librispeech_dir DIR   folder holding LibriSpeech/ [${librispeech_dir}] (db.sh, env LIBRISPEECH)
  --data_dir DIR          parent of the Kaldi dirs [${data_dir}]
  --download true|false   download and extract missing parts from --data_url [${download}]
  --data_url URL          archive location [${data_url}]
  --train_960 true|false  also prepare train-clean-360, train-other-500 and train_960 [${train_960}]
  --speaker_unit U        reader or chapter [${speaker_unit}]
  --overwrite true|false  replace data dirs this script prepared earlier with other options; a dir
                          it did not write is never replaced [${overwrite}]
  --python PATH           Python interpreter [tools/venv/bin/python]
  --help                  this message
EOH
)

parse_options "$@"
no_positional

python=${python:-$(default_python)}
for flag in download train_960 overwrite; do
    case "${!flag}" in true|false) ;; *) die "--${flag} must be true or false, got '${!flag}'" ;; esac
done

parts="train-clean-100 dev-clean dev-other test-clean test-other"
combine=(--combine dev=dev_clean,dev_other)
overwrite_args=()
[ "${overwrite}" = false ] || overwrite_args=(--overwrite)
if [ "${train_960}" = true ]; then
    parts="${parts} train-clean-360 train-other-500"
    combine+=(--combine train_960=train_clean_100,train_clean_360,train_other_500)
fi

# Downloads <part>.tar.gz into ${librispeech_dir} and extracts it; the part folder appears only when
# the archive extracted completely (extraction goes to a scratch folder first), so an interrupted
# download or extraction is simply repeated (wget -c / curl -C - resume the archive).
download_part() {
    local part=$1 url="${data_url}/${part}.tar.gz" archive="${librispeech_dir}/${part}.tar.gz"
    local scratch="${librispeech_dir}/.extract_${part}"
    log "Downloading ${url} -> ${archive}"
    if command -v wget >/dev/null; then
        wget --continue --tries 3 -O "${archive}" "${url}" \
            || die "download of ${url} failed; retry, pass another --data_url, or download it yourself"
    elif command -v curl >/dev/null; then
        curl --fail --location --retry 3 -C - -o "${archive}" "${url}" \
            || die "download of ${url} failed; retry, pass another --data_url, or download it yourself"
    else
        die "neither wget nor curl is installed; install one, or download ${url} yourself"
    fi
    log "Extracting ${archive}"
    rm -rf "${scratch}"
    mkdir -p "${scratch}"
    tar -xzf "${archive}" -C "${scratch}" \
        || die "${archive} is damaged (extraction failed); delete it and run again"
    [ -d "${scratch}/LibriSpeech/${part}" ] || die "${archive} holds no LibriSpeech/${part}"
    mkdir -p "${librispeech_dir}/LibriSpeech"
    # Top-level files (SPEAKERS.TXT, CHAPTERS.TXT, LICENSE.TXT, ...) are the same in every archive.
    for f in "${scratch}"/LibriSpeech/*; do
        [ -f "${f}" ] && mv -f "${f}" "${librispeech_dir}/LibriSpeech/"
    done
    mv "${scratch}/LibriSpeech/${part}" "${librispeech_dir}/LibriSpeech/${part}"
    rm -rf "${scratch}" "${archive}"
}

if [ "${download}" = true ]; then
    mkdir -p "${librispeech_dir}"
    for part in ${parts}; do
        if [ -d "${librispeech_dir}/LibriSpeech/${part}" ]; then
            log "${librispeech_dir}/LibriSpeech/${part} exists: not downloaded"
        else
            download_part "${part}"
        fi
    done
fi

log "Preparing Kaldi dirs in ${data_dir} from ${librispeech_dir} (parts: ${parts})"
"${python}" -m espnet_ext.bin.prep_librispeech \
    --librispeech_dir "${librispeech_dir}" --data_dir "${data_dir}" --parts "${parts// /,}" \
    "${combine[@]}" --speaker_unit "${speaker_unit}" "${overwrite_args[@]}" \
    || die "data preparation failed (see the message above)"
log "Done"
