#!/usr/bin/env bash
# Installs everything espnet_ext needs on a Debian machine (Python 3.11), idempotently:
#   1. Debian packages: sox, flac, TTS voices (espeak-ng, flite, festival), WordNet sentences;
#   2. tools/venv: torch/torchaudio, ESPnet, Flower and espnet_ext itself (editable, with its
#      federated and test extras), at the tested versions of tools/constraints.txt.
# A second run checks and does nothing. Usage: bash tools/install.sh [--no-apt]
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}
die() { log "ERROR: $*"; exit 1; }

tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname "${tools_dir}")
venv="${tools_dir}/venv"
python=${PYTHON:-python3}
with_apt=true
[ "${1:-}" = "--no-apt" ] && with_apt=false

# libtcmalloc-minimal4: the recipes' Python processes allocate through tcmalloc (asr.sh
# --cpu_allocator; 0.87-0.89x the CPU training step time of glibc's malloc, README "Speed").
apt_packages=(sox libsox-fmt-all flac espeak-ng flite festival festvox-kallpc16k
    festvox-kdlpc16k festvox-us-slt-hts wordnet-base libtcmalloc-minimal4)

# ---- 1. Debian packages ----------------------------------------------------------------------
if "${with_apt}"; then
    missing=()
    for p in "${apt_packages[@]}"; do
        dpkg-query -W -f='${Status}' "${p}" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("${p}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "Installing Debian packages: ${missing[*]}"
        command -v apt-get >/dev/null || die "apt-get not found; install by hand: ${missing[*]}"
        [ "$(id -u)" = 0 ] && sudo="" || sudo="sudo"
        ${sudo} apt-get update -qq || die "apt-get update failed (network to the Debian mirror?)"
        DEBIAN_FRONTEND=noninteractive ${sudo} apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null \
            || die "apt-get install failed for: ${missing[*]}"
    else
        log "Debian packages: all present"
    fi
fi

# ---- 2. Python virtual environment -----------------------------------------------------------
# 3.11: the tested version (Flower 1.42, the federated extra, needs >= 3.11).
"${python}" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
    || die "${python} must be Python 3.11 (found: $(${python} --version 2>&1)); set PYTHON=python3.11"

if [ ! -x "${venv}/bin/python" ]; then
    log "Creating ${venv}"
    "${python}" -m venv "${venv}" || die "python -m venv failed (apt-get install python3-venv?)"
fi
pip="${venv}/bin/python -m pip"

# The stamp records what was installed; a change to setup.py or the pins re-runs pip.
stamp="${venv}/.espnet_ext_installed"
want=$(cat "${repo_dir}/setup.py" "${tools_dir}/constraints.txt" | sha1sum | cut -d' ' -f1)
if [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${want}" ]; then
    log "Python environment: up to date (${venv})"
    exit 0
fi

# torch first, pinned: an unpinned resolver would pull the newest CUDA build instead.
log "Installing torch/torchaudio into ${venv} (a few minutes on first run)"
${pip} install -q -c "${tools_dir}/constraints.txt" torch torchaudio \
    || die "pip install torch failed; see the pins in tools/constraints.txt"
# setup.py declares ranges (espnet_ext installs into other ESPnet environments too); the
# constraints hold this environment at the versions tested together.
log "Installing espnet_ext with its federated and test extras (ESPnet, Flower, Ray, pytest)"
${pip} install -q -c "${tools_dir}/constraints.txt" -e "${repo_dir}[federated,test]" \
    || die "pip install -e '.[federated,test]' failed; see the pins in tools/constraints.txt"
${pip} check >/dev/null || log "WARNING: pip check reports conflicts: $(${pip} check | head -5)"
"${venv}/bin/python" -c "import espnet_ext, espnet2.tasks.asr, flwr, ray" \
    || die "the environment installed but 'import espnet_ext, espnet2.tasks.asr, flwr, ray' fails"
echo "${want}" >"${stamp}"
log "Done: activate with 'source ${venv}/bin/activate'"
