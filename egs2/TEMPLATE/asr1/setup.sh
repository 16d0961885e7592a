#!/usr/bin/env bash
# Creates a new recipe for your own corpus: run.sh, conf/, local/data.sh and README.md copied from
# a template recipe (egs2/own_corpus/asr1 by default), with paths set so that the new recipe finds
# this repository's stage driver wherever it lives. Given --train_dir/--valid_dir/--test_dirs, the
# new run.sh imports those existing Kaldi dirs; without them, edit run.sh or write data/ yourself.
#   egs2/TEMPLATE/asr1/setup.sh --train_dir /corpora/mine/train --valid_dir /corpora/mine/dev \
#       --test_dirs "/corpora/mine/test" egs2/mine/asr1
#   egs2/mine/asr1/run.sh
set -euo pipefail

# log, die, option parsing; espnet_ext_root (this repository).
# shellcheck source=common.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/common.sh"
repo_dir=${espnet_ext_root}

begin_options
from=${repo_dir}/egs2/own_corpus/asr1
train_dir=
valid_dir=
test_dirs=

help_message=$(cat <<EOH
Usage: $0 [options] <new_recipe_dir>
Creates <new_recipe_dir> (e.g. egs2/mycorpus/asr1) from a template recipe.

Options:
  --from DIR          template recipe [egs2/own_corpus/asr1]
  --train_dir DIR     existing Kaldi dir for training (imported as data/train)
  --valid_dir DIR     existing Kaldi dir for validation (imported as data/dev)
  --test_dirs "D ..." existing Kaldi dirs for evaluation (space-separated; NAME=DIR to name one)
Paths must exist and must not contain spaces (move or link such a dir elsewhere).
  --help              this message
The Kaldi dir contract (files, audio formats): egs2/TEMPLATE/asr1/README.md
EOH
)

parse_options "$@"
[ "${#positional[@]}" -le 1 ] || die "one recipe dir only (got: ${positional[*]})"
new_dir=${positional[0]:-}
[ -n "${new_dir}" ] || { echo "${help_message}" >&2; die "give the new recipe dir"; }
[ -f "${from}/run.sh" ] && [ -d "${from}/conf" ] || die "${from} is not a recipe (no run.sh or conf/)"
if [ -e "${new_dir}" ] && [ -n "$(ls -A "${new_dir}")" ]; then
    die "${new_dir} exists and is not empty; choose a new dir (nothing was changed)"
fi
# Paths with whitespace are refused: the recipe passes dir lists split on spaces (as ESPnet's egs2
# tools do), so "data/with space" would silently become the two dirs "data/with" and "space".
no_space() {  # <option> <path>
    [[ $2 != *[[:space:]]* ]] || die "$1 '$2': paths with spaces are not supported (dir lists are split on spaces); move or link the dir to a path without spaces (e.g. ln -s \"$(readlink -f "$2")\" /corpora/mine_test) and pass that (nothing was changed)"
}
must_be_dir() {  # <option> <path>
    [ -d "$2" ] || die "$1 '$2' is not a directory; give an existing Kaldi data dir (nothing was changed)"
}
for opt in train_dir valid_dir; do
    [ -z "${!opt}" ] || { no_space "--${opt}" "${!opt}"; must_be_dir "--${opt}" "${!opt}"; }
done
read -r -a test_entries <<<"${test_dirs}"
for ((i = 0; i < ${#test_entries[@]}; i++)); do
    dir=${test_entries[i]#*=}
    [ -d "${dir}" ] && continue
    # A missing entry that is the start of an existing dir with a space in its name: say so.
    joined=${test_entries[i]}
    for ((j = i + 1; j < ${#test_entries[@]}; j++)); do
        joined+=" ${test_entries[j]}"
        [ ! -d "${joined#*=}" ] || no_space --test_dirs "${joined#*=}"
    done
    must_be_dir --test_dirs "${dir}"
done
# Kaldi dirs must be given as absolute paths: the new recipe runs from its own directory.
abs() { [ -z "$1" ] || { [[ $1 == /* ]] && echo "$1" || echo "$(pwd)/$1"; }; }
train_dir=$(abs "${train_dir}")
valid_dir=$(abs "${valid_dir}")
tests=
for entry in ${test_dirs}; do
    if [[ ${entry} == *=* ]]; then tests+=" ${entry%%=*}=$(abs "${entry#*=}")"; else tests+=" $(abs "${entry}")"; fi
done
test_dirs=${tests# }

mkdir -p "${new_dir}/local"
new_dir=$(cd "${new_dir}" && pwd)
repo_rel=$(realpath --relative-to="${new_dir}" "${repo_dir}")

# Replaces the line `<name>=...` of a file by `<name>=<value>` (value shell-quoted).
set_var() {
    local file=$1 name=$2 value=$3 tmp line
    tmp=$(mktemp)
    while IFS= read -r line || [ -n "${line}" ]; do
        if [[ ${line} == "${name}="* ]]; then printf '%s=%q\n' "${name}" "${value}"; else printf '%s\n' "${line}"; fi
    done <"${file}" >"${tmp}"
    chmod --reference="${file}" "${tmp}"
    mv "${tmp}" "${file}"
}

cp "${from}/run.sh" "${new_dir}/run.sh"
cp -r "${from}/conf" "${new_dir}/conf"
[ ! -f "${from}/README.md" ] || cp "${from}/README.md" "${new_dir}/README.md"
if [ -f "${from}/local/data.sh" ]; then
    cp "${from}/local/data.sh" "${new_dir}/local/data.sh"
    set_var "${new_dir}/local/data.sh" repo_rel "${repo_rel}"
fi
set_var "${new_dir}/run.sh" repo_rel "${repo_rel}"
[ -z "${train_dir}" ] || set_var "${new_dir}/run.sh" train_dir "${train_dir}"
[ -z "${valid_dir}" ] || set_var "${new_dir}/run.sh" valid_dir "${valid_dir}"
[ -z "${test_dirs}" ] || set_var "${new_dir}/run.sh" test_dirs "${test_dirs}"

log "Created ${new_dir} from ${from}:"
log "  run.sh, conf/ ($(ls "${new_dir}/conf" | tr '\n' ' ')), local/data.sh"
if [ -n "${train_dir}" ]; then
    log "Next: ${new_dir}/run.sh   (imports ${train_dir} and the other dirs in stage 1)"
else
    log "Next: set train_dir/valid_dir/test_dirs in ${new_dir}/run.sh (or write data/train, data/dev yourself), then run it"
fi
