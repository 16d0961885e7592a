# Shell helpers shared by the stage driver (asr.sh), setup.sh and the recipes' local/*.sh scripts.
# Sourced, not run:
#   . "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/<path to>/egs2/TEMPLATE/asr1/common.sh"
# (readlink -f: recipe copies made for a run link local/ and TEMPLATE/, and the helpers must come
# from the repository itself.) Defines log, die, min, begin_options/parse_options
# (parse_known_options), no_positional and default_python, sets espnet_ext_root and puts it on
# PYTHONPATH.

# The espnet_ext repository that holds this file (physical path, whatever links led here).
espnet_ext_root=$(cd -P "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
# With a plain python3 (no tools/venv), espnet_ext still imports from the repository.
export PYTHONPATH="${espnet_ext_root}${PYTHONPATH:+:${PYTHONPATH}}"

# Prints "<time> (<file>:<line>:<function>) <message>" for the caller <depth> frames up.
_log_from() {
    local _depth=$1
    shift
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${BASH_SOURCE[_depth + 1]##*/}:${BASH_LINENO[_depth]}:${FUNCNAME[_depth + 1]:-main}) $*"
}
log() { _log_from 1 "$@"; }
# One error line on stderr, then exit 1.
die() { _log_from 1 "ERROR: $*" >&2; exit 1; }
min() { [ "$1" -lt "$2" ] && echo "$1" || echo "$2"; }

# tools/venv/bin/python of the repository when installed (tools/install.sh), else python3.
default_python() {
    if [ -x "${espnet_ext_root}/tools/venv/bin/python" ]; then
        echo "${espnet_ext_root}/tools/venv/bin/python"
    else
        echo python3
    fi
}

# Path of tcmalloc's shared library (libtcmalloc_minimal.so.4, Debian's libtcmalloc-minimal4), or
# nothing when it is not installed.
tcmalloc_library() {
    local lib
    lib=$(ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal\.so\.4 / { print $NF; exit }')
    if [ -z "${lib}" ]; then
        for lib in /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
                   /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4 \
                   /usr/lib/libtcmalloc_minimal.so.4 ""; do
            [ -f "${lib}" ] && break
        done
    fi
    echo "${lib}"
}

# Call right before a script declares its options (`name=default  # what it is` lines);
# parse_options then accepts exactly the lower-case variables declared in between, so a mistyped
# option fails instead of being silently ignored.
begin_options() { _names_before=" $(compgen -v | tr '\n' ' ') "; }

# Sets the variable of each `--name value` pair; --help/-h prints ${help_message} and exits.
# Other arguments are kept, in order, in the array `positional` (check it if a script takes none).
parse_options() { _parse_options strict "$@"; }

# As parse_options, but an undeclared `--name value` pair is kept in `positional` too (both words,
# in order) instead of failing: for a script that hands the options it does not declare on to the
# script it runs (which then rejects the mistyped ones).
parse_known_options() { _parse_options pass "$@"; }

# _parse_options strict|pass ARGS...: what to do with an undeclared option, then the arguments.
_parse_options() {
    local _unknown=$1 _name _allowed=" "
    shift
    [ -n "${_names_before:-}" ] || die "parse_options without begin_options (a bug in $0)"
    for _name in $(compgen -v); do
        [[ ${_name} =~ ^[a-z][a-z0-9_]*$ ]] || continue
        [[ ${_names_before} == *" ${_name} "* || ${_name} == help_message ]] || _allowed+="${_name} "
    done
    positional=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --help|-h) echo "${help_message:-Usage: $0 [options]}"; exit 0 ;;
            --*)
                _name=${1#--}
                if [[ ${_allowed} != *" ${_name} "* ]]; then
                    [ "${_unknown}" = pass ] || die "unknown option '$1' (see $0 --help)"
                    # Its value goes along whatever it looks like (e.g. --fl_args "--rounds 2").
                    positional+=("${@:1:2}")
                    shift "$(min 2 $#)"
                    continue
                fi
                [ $# -ge 2 ] || die "option $1 needs a value (see $0 --help)"
                printf -v "${_name}" '%s' "$2"
                shift 2 ;;
            *) positional+=("$1"); shift ;;
        esac
    done
}

# Dies unless a script that takes no positional arguments got none.
no_positional() {
    [ "${#positional[@]}" -eq 0 ] || die "unexpected argument '${positional[0]}' (see $0 --help)"
}
