#!/usr/bin/env bash
# Data preparation for a corpus that already exists as Kaldi data dirs: each given dir is validated
# (files, sorting, keys, transcripts, audio: 16 kHz mono) and imported into data/ (a copy with
# absolute audio paths, or a link). Without dirs it only checks that data/train and data/dev exist.
# To build the Kaldi dirs from raw files instead, replace the import below by your own script that
# writes data/train, data/dev and data/<test> (contract: ../../TEMPLATE/asr1/README.md).
set -euo pipefail

# Path from this recipe to the espnet_ext repository (setup.sh sets it for recipes elsewhere: such a
# copy has its own local/, so the repository is found through this path, not through a link).
repo_rel=../../..
recipe_src_dir=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
# log, die, option parsing, default_python; the repository on PYTHONPATH.
# shellcheck source=../../../TEMPLATE/asr1/common.sh
. "${recipe_src_dir}/${repo_rel}/egs2/TEMPLATE/asr1/common.sh"

begin_options
# Options
train_dir=          # Existing Kaldi dir imported as data/train.
valid_dir=          # Existing Kaldi dir imported as data/dev.
test_dirs=          # Comma-separated DIR or NAME=DIR: data/<basename of DIR> or data/NAME.
data_dir=data       # Parent of the imported dirs.
mode=copy           # copy (absolute audio paths) or link (symbolic links to the given dirs).
extract_audio=false # true: write each utterance as FLAC (needed for segments, piped or ark audio).
audio_base=         # Folder that relative wav.scp paths are relative to [current directory].
python=             # Python interpreter (default: tools/venv/bin/python, else python3).

help_message=$(cat <<EOH
Usage: $0 [--train_dir DIR] [--valid_dir DIR] [--test_dirs DIR1,NAME=DIR2,...] [options]
Imports existing Kaldi data dirs as ${data_dir}/train, ${data_dir}/dev and ${data_dir}/<test names>.

Options:
  --train_dir DIR          imported as ${data_dir}/train
  --valid_dir DIR          imported as ${data_dir}/dev
  --test_dirs LIST         comma-separated DIR (-> ${data_dir}/<basename>) or NAME=DIR (-> ${data_dir}/NAME)
  --data_dir DIR           parent of the imported dirs [${data_dir}]
  --mode copy|link         copy with absolute audio paths, or symbolic link [${mode}]
  --extract_audio true|false  write each utterance as FLAC (segments, pipes, ark) [${extract_audio}]
  --audio_base DIR         base of relative wav.scp paths [current directory]
  --python PATH            Python interpreter [tools/venv/bin/python]
  --help                   this message
EOH
)

parse_options "$@"
no_positional

python=${python:-$(default_python)}
case "${extract_audio}" in
    true) import_args=(--extract_audio) ;;
    false) import_args=() ;;
    *) die "--extract_audio must be true or false, got '${extract_audio}'" ;;
esac
import_args+=(--mode "${mode}" --data_dir "${data_dir}")
[ -z "${audio_base}" ] || import_args+=(--audio_base "${audio_base}")

dirs=()
[ -z "${train_dir}" ] || dirs+=(--dir "train=${train_dir}")
[ -z "${valid_dir}" ] || dirs+=(--dir "dev=${valid_dir}")
IFS=',' read -r -a tests <<<"${test_dirs}"
for entry in "${tests[@]}"; do
    [ -n "${entry}" ] || continue
    if [[ ${entry} == *=* ]]; then name=${entry%%=*}; dir=${entry#*=}; else name=$(basename "${entry}"); dir=${entry}; fi
    case "${name}" in
        train|dev) die "test dir ${dir} would be imported as ${data_dir}/${name}, the name of the training or validation set; name it: --test_dirs other_name=${dir}" ;;
    esac
    dirs+=(--dir "${name}=${dir}")
done

if [ ${#dirs[@]} -gt 0 ]; then
    log "Importing Kaldi dirs into ${data_dir}/"
    "${python}" -m espnet_ext.bin.import_data_dirs \
        "${dirs[@]}" "${import_args[@]}" || die "import failed (see the message above)"
fi
for name in train dev; do
    [ -e "${data_dir}/${name}" ] || die "${data_dir}/${name} does not exist: pass --train_dir DIR and --valid_dir DIR (existing Kaldi data dirs), or write ${data_dir}/${name} yourself (contract: egs2/TEMPLATE/asr1/README.md)"
done
log "Done"
