#!/usr/bin/env bash
# espnet_ext's stage driver for ASR recipes, shared by every recipe under egs2/.
# Run from a recipe directory (egs2/<corpus>/asr1) through its run.sh. It calls ESPnet as a library
# (python -m espnet_ext.bin.* / espnet2.bin.*) and needs no Kaldi. Each stage writes a `.done`
# marker when it finishes, so a re-run skips finished work and an interrupted training resumes.
set -euo pipefail

# log, die, min, option parsing, default_python (and the repository on PYTHONPATH).
# shellcheck source=common.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/common.sh"

SECONDS=0

begin_options
# General options
stage=1               # First stage to run.
stop_stage=10000      # Last stage to run.
ngpu=0                # Number of GPUs (0: CPU).
nj=2                  # Parallel jobs for statistics collection.
inference_nj=2        # Parallel jobs for decoding.
python=               # Python interpreter (default: tools/venv/bin/python, else python3).
dumpdir=dump          # Directory for tokens and other derived data.
expdir=exp            # Directory for experiments.
num_threads=1         # CPU threads per process (OMP_NUM_THREADS), as ESPnet's path.sh sets.
cpu_allocator=tcmalloc  # Memory allocator of every process: tcmalloc (if installed) or system.

# Data options
local_data_opts=""    # Options passed to local/data.sh.
train_set=            # Training data dir name under data/.
valid_set=            # Validation data dir name under data/.
test_sets=            # Evaluation data dir names under data/ (space separated).

# Tokenization options
token_type=bpe        # bpe (sentencepiece) or char.
nbpe=50               # Number of sentencepiece pieces.
bpemode=unigram       # sentencepiece model type: unigram or bpe.

# Training options
asr_configs=          # Training configs (space separated); each is trained with each seed.
asr_config=           # Alias of asr_configs for a single config.
seeds=1               # Training seeds (space separated).
asr_args=             # Extra arguments for espnet_ext.bin.asr_train.
train_nj=            # Trainings run at once (config x seed pairs) [2 on CPU, 1 with GPUs].
train_procs=1         # CPU processes per training (data parallel, torchrun + gloo); GPUs: --ngpu N.
feats_normalize=global_mvn  # Feature normalization at training time (global_mvn or none).

# Decoding options
inference_config=     # Decoding config.
inference_args=       # Extra arguments for espnet_ext.bin.asr_inference.
inference_model=valid.acc.ave.pth  # Which weights to decode.

# Layer-reset scan options (stage 6)
scan_sets=            # Data dirs to score variants on (default: the valid set).
scan_granularities="block submodule"  # Layer granularities (block, submodule, frontend).
scan_modes=reinit,rerandomize  # Reset modes.
scan_taus=all         # Checkpoints for re-initialization: comma-separated epochs, last, all.
scan_scoring=ctc_greedy  # ctc_greedy (fast) or beam (joint CTC/attention).
scan_model=valid.acc.ave.pth  # Weights to scan.
scan_adaptive=false   # true: each variant on growing utterance prefixes until its label is decided.
scan_confidence=0.95  # Confidence of the reset deltas' bootstrap intervals (uncertain labels).
scan_args=            # Extra arguments for espnet_ext.bin.layer_scan.

# Federated adaptation options (stage 8)
fl_adapt_set=         # Withheld-domain data dir under data/; each speaker is a client. Empty: no stage 8.
fl_test_sets=         # Data dirs scored before and after adaptation (the withheld domain's test set and
                      # the original test sets, for forgetting; default: the test sets).
fl_data_opts=         # Options for local/fl_data.sh, which (when the recipe has one) makes the withheld domain.
fl_config=            # Training config of the pre-trained model (default: the last of asr_configs).
fl_seed=              # Its seed (default: the first of seeds).
fl_model=valid.acc.ave.pth  # Its weights.
fl_scan=submodule     # Granularity of the stage-6 scan that targets the dropout.
fl_rates="0.25 0.5"   # Ambient-group dropout rates of the targeted plans, one client size each; every
                      # rate also runs uniform dropout at the same client cost (no dropout runs once).
fl_plans="none uniform targeted frozen"  # Plans of every rate (none at the first rate only); frozen: the
                      # ambient groups not trained (nor uploaded), frozen up to the targeted plan's cost.
fl_args=              # Extra arguments for espnet_ext.bin.fl_simulate sweep (--rounds, --client_lr, ...).
fl_seeds="1 2 3"      # Federated seeds: every plan runs once per seed (client sampling, sub-models, local
                      # training); results give mean ± std (min-max) and paired bootstrap intervals.
                      # Empty: one run per plan with seed 0 (the single-seed layout <plan>/).

help_message=$(cat <<EOF
Usage: $0 --train_set <name> --valid_set <name> --test_sets "<names>" --asr_configs "<yamls>" [options]

Stages:
  1: data preparation (local/data.sh) and validation of the data dirs
  2: sentencepiece model and token list
  3: feature statistics and shape files (ESPnet --collect_stats)
  4: training: every config x seed; keeps checkpoints/0epoch.pth (initial weights) and every epoch
  5: decoding and scoring (WER/CER) -> RESULTS.md
  6: layer-reset scan: every model x granularity; ambient/critical labels, tables, heatmaps
  7: analysis across runs: ambient-set stability across seeds and sizes, weight updates vs resets
  8: federated adaptation on a withheld domain (Flower): no dropout, uniform and importance-targeted
     federated dropout, and frozen ambient groups, at matched client cost (needs --fl_adapt_set)

Options (defaults in brackets):
  --stage / --stop_stage   stages to run [${stage} / ${stop_stage}]
  --ngpu                   number of GPUs, 0 for CPU [${ngpu}]
  --nj / --inference_nj    parallel jobs for stats / decoding [${nj} / ${inference_nj}]
  --python                 interpreter [tools/venv/bin/python]
  --num_threads            CPU threads per process [${num_threads}]
  --cpu_allocator          memory allocator: tcmalloc (when installed) or system [${cpu_allocator}]
  --local_data_opts        options for local/data.sh [${local_data_opts}]
  --train_set / --valid_set / --test_sets   data dir names under data/
  --token_type / --nbpe / --bpemode         tokens [${token_type} / ${nbpe} / ${bpemode}]
  --asr_configs            training configs (space separated)
  --seeds                  training seeds (space separated) [${seeds}]
  --train_nj               trainings run at once [2 on CPU, 1 with --ngpu or --train_procs > 1]
  --train_procs            CPU processes per training, data parallel; they share its threads [${train_procs}]
  --asr_args               extra arguments for training
  --inference_config       decoding config
  --inference_args         extra arguments for decoding
  --inference_model        weights to decode [${inference_model}]
  --scan_sets              data dirs for the layer-reset scan [valid set]
  --scan_granularities     layer granularities [${scan_granularities}]
  --scan_modes / --scan_taus / --scan_scoring   [${scan_modes} / ${scan_taus} / ${scan_scoring}]
  --scan_model             weights to scan [${scan_model}]
  --scan_adaptive          adaptive scan: stop a variant once its label is decided [${scan_adaptive}]
  --scan_confidence        confidence of the delta intervals [${scan_confidence}]
  --scan_args              extra arguments for espnet_ext.bin.layer_scan
  --fl_adapt_set           withheld-domain data dir (clients = speakers) [${fl_adapt_set:-none}]
  --fl_test_sets           data dirs scored before/after adaptation [test sets]
  --fl_data_opts           options for local/fl_data.sh
  --fl_config / --fl_seed / --fl_model   pre-trained model [last config / first seed / ${fl_model}]
  --fl_scan                scan granularity that targets the dropout [${fl_scan}]
  --fl_rates               targeted dropout rates, one client size each [${fl_rates}]
  --fl_plans               plans per rate (none runs once) [${fl_plans}]
  --fl_args                extra arguments for espnet_ext.bin.fl_simulate sweep
  --fl_seeds               federated seeds, each plan once per seed [${fl_seeds:-none}]
EOF
)

parse_options "$@"
no_positional

[ -n "${asr_config}" ] && asr_configs="${asr_configs} ${asr_config}"
python=${python:-$(default_python)}
[ -n "${train_set}" ] || die "--train_set is required"
[ -n "${valid_set}" ] || die "--valid_set is required"
[ -n "${asr_configs// /}" ] || die "--asr_configs is required"
for c in ${asr_configs}; do [ -f "${c}" ] || die "training config not found: ${c}"; done
[ -z "${inference_config}" ] || [ -f "${inference_config}" ] \
    || die "decoding config not found: ${inference_config}"
case "${token_type}" in bpe|char) ;; *) die "--token_type must be bpe or char, got ${token_type}" ;; esac

export PYTHONUNBUFFERED=1
# One thread per process by default: on small CPUs, torch's threads spin against the other jobs
# (parallel stats/decoding jobs, or anything else running) and a 2-thread training can be several
# times slower than a 1-thread one.
export OMP_NUM_THREADS=${num_threads} MKL_NUM_THREADS=${num_threads}
# tcmalloc instead of glibc's malloc: a CPU training step allocates and frees thousands of small
# tensors, and glibc's malloc costs 11-13% of its time (README, "Speed"). The allocator does not
# change any number computed. Preloaded for every process of the stages (Python and the rest).
case "${cpu_allocator}" in
    tcmalloc)
        tcmalloc_lib=$(tcmalloc_library)
        if [ -z "${tcmalloc_lib}" ]; then
            log "tcmalloc not found (Debian: libtcmalloc-minimal4, installed by tools/install.sh): the system allocator"
        elif [[ ":${LD_PRELOAD:-}:" != *":${tcmalloc_lib}:"* ]]; then
            export LD_PRELOAD="${tcmalloc_lib}${LD_PRELOAD:+:${LD_PRELOAD}}"
            # tcmalloc reports every allocation above 1 GiB on stderr by default: not news here.
            export TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=${TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD:-1099511627776}
        fi ;;
    system) ;;
    *) die "--cpu_allocator must be tcmalloc or system, got ${cpu_allocator}" ;;
esac
# Parallel jobs (statistics, decoding) share the --num_threads budget: n jobs with num_threads
# threads each would oversubscribe the cores, which made decoding several times slower.
job_threads() { local t=$((num_threads / $1)); [ "${t}" -ge 1 ] && echo "${t}" || echo 1; }
if [ "${token_type}" = bpe ]; then
    token_dir="${dumpdir}/token_list/bpe_${bpemode}${nbpe}"
    bpemodel="${token_dir}/bpe.model"
else
    token_dir="${dumpdir}/token_list/char"
    bpemodel=none
fi
token_list="${token_dir}/tokens.txt"
if [ "${token_type}" = bpe ]; then
    stats_dir="${expdir}/asr_stats_bpe${nbpe}"
else
    stats_dir="${expdir}/asr_stats_char"
fi
[[ "${train_procs}" =~ ^[1-9][0-9]*$ ]] || die "--train_procs must be a positive integer, got ${train_procs}"
[ "${train_procs}" -eq 1 ] || [ "${ngpu}" -eq 0 ] \
    || die "--train_procs is for CPU training; with GPUs, --ngpu N trains with N processes"
[ -n "${train_nj}" ] || train_nj=$({ [ "${ngpu}" -gt 0 ] || [ "${train_procs}" -gt 1 ]; } && echo 1 || echo 2)
# Decoding and the scan run on one device; several GPUs are for training only.
infer_ngpu=$([ "${ngpu}" -gt 0 ] && echo 1 || echo 0)
# Several GPUs: one process per GPU (DistributedDataParallel) instead of ESPnet's DataParallel.
ddp_args=()
[ "${ngpu}" -gt 1 ] && ddp_args=(--multiprocessing_distributed true)
# Several CPU processes: ESPnet's own launcher needs GPUs, so torchrun starts them (--standalone:
# a free local port, so trainings side by side do not collide) and DistributedDataParallel
# averages their gradients over gloo. ESPnet splits each batch between them (same batches, same
# steps and learning rate as one process).
train_launcher=()
if [ "${train_procs}" -gt 1 ]; then
    train_launcher=(-m torch.distributed.run --standalone --nproc_per_node "${train_procs}")
    ddp_args=(--dist_backend gloo --multiprocessing_distributed false)
fi

# Token lists and statistics are derived from the training set: a finished one records which, and
# a different --train_set with the same --dumpdir/--expdir is an error instead of a silent reuse.
check_done_for_train_set() {
    local marker=$1 what=$2 made_from
    made_from=$(cat "${marker}")
    [ -z "${made_from}" ] || [ "${made_from}" = "${train_set}" ] \
        || die "${what} was made from data/${made_from}, not data/${train_set}: use another --dumpdir/--expdir, or delete ${marker%/*}"
}

# Writes the exact command to <cmdfile> (replayable) and runs it with output in <logfile>.
# On failure, prints the end of the log and the paths to look at.
# With progress_pattern set, log lines matching it are also shown (e.g. one line per epoch).
# With log_append=true the log is added to, not replaced (a resumed training keeps its history).
progress_pattern=
progress_prefix=
log_append=false
run_logged() {
    local logfile=$1 cmdfile=$2; shift 2
    mkdir -p "$(dirname "${logfile}")" "$(dirname "${cmdfile}")"
    { echo "#!/usr/bin/env bash"; echo "# $(date '+%Y-%m-%dT%H:%M:%S') from $(pwd)";
      echo "cd $(printf '%q' "$(pwd)")";
      echo "export OMP_NUM_THREADS=${OMP_NUM_THREADS} MKL_NUM_THREADS=${MKL_NUM_THREADS}";
      [ -z "${LD_PRELOAD:-}" ] || echo "export LD_PRELOAD=$(printf '%q' "${LD_PRELOAD}") TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=${TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD:-}";
      printf '%q ' "$@"; echo; } >"${cmdfile}"
    chmod +x "${cmdfile}"
    local rc=0
    local tee_args=()
    [ "${log_append}" = true ] && tee_args=(-a)
    if [ -n "${progress_pattern}" ]; then
        "$@" 2>&1 | tee ${tee_args[@]+"${tee_args[@]}"} "${logfile}" \
            | { grep --line-buffered -E "${progress_pattern}" | sed -u "s|^|${progress_prefix}|" || true; }
        rc=${PIPESTATUS[0]}
    elif [ "${log_append}" = true ]; then
        "$@" >>"${logfile}" 2>&1 || rc=$?
    else
        "$@" >"${logfile}" 2>&1 || rc=$?
    fi
    if [ "${rc}" -ne 0 ]; then
        tail -n 20 "${logfile}" >&2 || true
        die "command failed; full log: ${logfile}; replay: ${cmdfile}"
    fi
}

# Splits a Kaldi key file into <n> contiguous parts: <outdir>/keys.1 ... keys.<n>.
split_keys() {
    local scp=$1 n=$2 outdir=$3
    mkdir -p "${outdir}"
    rm -f "${outdir}"/keys.*
    local total; total=$(wc -l <"${scp}")
    awk -v n="${n}" -v total="${total}" -v out="${outdir}/keys." \
        '{ part = int((NR - 1) * n / total) + 1; print > (out part) }' "${scp}"
}

stage_start() { log "Stage $1: $2"; stage_t0=${SECONDS}; }
stage_end() { log "Stage $1 finished in $((SECONDS - stage_t0)) s"; }

# ------------------------------------------------------------------------------------------------
if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    stage_start 1 "Data preparation and validation"
    [ -x local/data.sh ] || die "local/data.sh not found or not executable in $(pwd)"
    # shellcheck disable=SC2086
    local/data.sh ${local_data_opts}
    # shellcheck disable=SC2086
    "${python}" -m espnet_ext.bin.validate_data_dir \
        "data/${train_set}" "data/${valid_set}" $(for t in ${test_sets}; do echo "data/${t}"; done)
    stage_end 1
fi

# ------------------------------------------------------------------------------------------------
if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    stage_start 2 "Token list (${token_type})"
    if [ -f "${token_dir}/.done" ]; then
        check_done_for_train_set "${token_dir}/.done" "${token_list}"
        log "Skip: ${token_list} exists"
    else
        mkdir -p "${token_dir}"
        if [ "${token_type}" = bpe ]; then
            run_logged "${token_dir}/train_bpe.log" "${token_dir}/train_bpe.sh" \
                "${python}" -m espnet_ext.bin.train_sentencepiece --text "data/${train_set}/text" \
                --model_prefix "${token_dir}/bpe" --vocab_size "${nbpe}" --model_type "${bpemode}"
        fi
        run_logged "${token_dir}/tokenize.log" "${token_dir}/tokenize.sh" \
            "${python}" -m espnet2.bin.tokenize_text --token_type "${token_type}" \
            --bpemodel "${bpemodel}" --input "data/${train_set}/text" --output "${token_list}" \
            --field 2- --cleaner none --g2p none --write_vocabulary true \
            --add_symbol '<blank>:0' --add_symbol '<unk>:1' --add_symbol '<sos/eos>:-1'
        echo "${train_set}" >"${token_dir}/.done"
        log "Token list: ${token_list} ($(wc -l <"${token_list}") tokens)"
    fi
    stage_end 2
fi

# Arguments shared by stats collection and training.
common_train_args() {
    echo --use_preprocessor true --token_type "${token_type}" --token_list "${token_list}" \
        --bpemodel "${bpemodel}" --non_linguistic_symbols none --cleaner none --g2p none
}

# ------------------------------------------------------------------------------------------------
if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
    stage_start 3 "Feature statistics -> ${stats_dir}"
    if [ -f "${stats_dir}/.done" ]; then
        check_done_for_train_set "${stats_dir}/.done" "${stats_dir}"
        log "Skip: ${stats_dir} is complete"
    else
        [ -f "${token_list}" ] || die "${token_list} not found: run stage 2 first"
        first_config=$(echo ${asr_configs} | cut -d' ' -f1)
        logdir="${stats_dir}/logdir"
        _nj=$(min "${nj}" "$(wc -l <"data/${valid_set}/wav.scp")")
        split_keys "data/${train_set}/wav.scp" "${_nj}" "${logdir}/train"
        split_keys "data/${valid_set}/wav.scp" "${_nj}" "${logdir}/valid"
        pids=()
        for n in $(seq "${_nj}"); do
            # shellcheck disable=SC2046
            (export OMP_NUM_THREADS=$(job_threads "${_nj}") MKL_NUM_THREADS=$(job_threads "${_nj}")
             run_logged "${logdir}/stats.${n}.log" "${logdir}/stats.${n}.sh" \
                "${python}" -m espnet_ext.bin.asr_train --collect_stats true \
                --config "${first_config}" --ngpu 0 $(common_train_args) \
                --train_data_path_and_name_and_type "data/${train_set}/wav.scp,speech,sound" \
                --train_data_path_and_name_and_type "data/${train_set}/text,text,text" \
                --valid_data_path_and_name_and_type "data/${valid_set}/wav.scp,speech,sound" \
                --valid_data_path_and_name_and_type "data/${valid_set}/text,text,text" \
                --train_shape_file "${logdir}/train/keys.${n}" \
                --valid_shape_file "${logdir}/valid/keys.${n}" \
                --output_dir "${logdir}/stats.${n}") &
            pids+=($!)
        done
        for pid in "${pids[@]}"; do wait "${pid}" || die "statistics collection failed (${logdir})"; done
        # shellcheck disable=SC2046
        run_logged "${logdir}/aggregate.log" "${logdir}/aggregate.sh" \
            "${python}" -m espnet2.bin.aggregate_stats_dirs \
            $(for n in $(seq "${_nj}"); do echo --input_dir "${logdir}/stats.${n}"; done) \
            --output_dir "${stats_dir}"
        # Token shapes need the vocabulary size appended (ESPnet's convention).
        ntok=$(wc -l <"${token_list}")
        for d in train valid; do
            awk -v N="${ntok}" '{ print $0 "," N }' "${stats_dir}/${d}/text_shape" \
                >"${stats_dir}/${d}/text_shape.${token_type}"
        done
        echo "${train_set}" >"${stats_dir}/.done"
    fi
    stage_end 3
fi

# Experiment directory of a config and seed.
exp_name() { echo "${expdir}/asr_$(basename "${1%.*}")_seed${2}"; }

# ------------------------------------------------------------------------------------------------
# Trains one config with one seed into its experiment dir (resumes an interrupted run).
train_one() {
    local config=$1 seed=$2 dir
    dir=$(exp_name "${config}" "${seed}")
    local resume=false
    if [ -f "${dir}/checkpoint.pth" ]; then
        resume=true
        log "Resuming ${dir}"
        # The interrupted part's log stays: the resumed run's lines follow it.
        echo "# $(date '+%Y-%m-%dT%H:%M:%S') resumed from ${dir}/checkpoint.pth" >>"${dir}/train.log"
    fi
    log "Training ${dir} (log: ${dir}/train.log)"
    local t0=${SECONDS}
    # Trainings that run side by side share the --num_threads budget (called in a subshell).
    # A training's processes (--train_procs) share its threads in turn.
    local threads=$((train_threads / train_procs))
    [ "${threads}" -ge 1 ] || threads=1
    export OMP_NUM_THREADS=${threads} MKL_NUM_THREADS=${threads}
    [ "${train_procs}" -eq 1 ] || log "${dir}: ${train_procs} processes x ${threads} thread(s), gloo"
    # shellcheck disable=SC2046,SC2086
    progress_pattern="epoch results|initial weights|Traceback|Error:" progress_prefix="[${dir##*/}] " \
    log_append=${resume} run_logged "${dir}/train.log" "${dir}/train.sh" \
        "${python}" "${train_launcher[@]}" -m espnet_ext.bin.asr_train --config "${config}" --seed "${seed}" \
        --ngpu "${ngpu}" "${ddp_args[@]}" $(common_train_args) "${normalize_args[@]}" \
        --train_data_path_and_name_and_type "data/${train_set}/wav.scp,speech,sound" \
        --train_data_path_and_name_and_type "data/${train_set}/text,text,text" \
        --valid_data_path_and_name_and_type "data/${valid_set}/wav.scp,speech,sound" \
        --valid_data_path_and_name_and_type "data/${valid_set}/text,text,text" \
        --train_shape_file "${stats_dir}/train/speech_shape" \
        --train_shape_file "${stats_dir}/train/text_shape.${token_type}" \
        --valid_shape_file "${stats_dir}/valid/speech_shape" \
        --valid_shape_file "${stats_dir}/valid/text_shape.${token_type}" \
        --resume true --output_dir "${dir}" ${asr_args}
    # Wall time summed over interrupted and resumed runs.
    local prev
    prev=$(cat "${dir}/train_wall_s.txt" 2>/dev/null || echo 0)
    echo $((prev + SECONDS - t0)) >"${dir}/train_wall_s.txt"
    touch "${dir}/.done"
}

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
    [ -f "${stats_dir}/.done" ] || die "${stats_dir} is incomplete: run stage 3 first"
    # Stage 6 resets layers to saved epochs: a tau no run saves is an error now, not after training.
    if [ ${stop_stage} -ge 6 ]; then
        # shellcheck disable=SC2086
        "${python}" -m espnet_ext.bin.check_scan_taus --taus "${scan_taus}" --configs ${asr_configs} \
            --train_args="${asr_args}" || exit 1
    fi
    normalize_args=()
    if [ "${feats_normalize}" = global_mvn ]; then
        normalize_args=(--normalize global_mvn --normalize_conf
            "stats_file=$(pwd)/${stats_dir}/train/feats_stats.npz")
    fi
    n_todo=0
    for config in ${asr_configs}; do
        for seed in ${seeds}; do
            [ -f "$(exp_name "${config}" "${seed}")/.done" ] || n_todo=$((n_todo + 1))
        done
    done
    train_threads=$(job_threads "$(min "${train_nj}" "$((n_todo > 0 ? n_todo : 1))")")
    stage_start 4 "Training: configs [${asr_configs}] x seeds [${seeds}], $(min "${train_nj}" "${n_todo}") at a time, ${train_threads} thread(s) each"
    pids=()
    for config in ${asr_configs}; do
        for seed in ${seeds}; do
            dir=$(exp_name "${config}" "${seed}")
            if [ -f "${dir}/.done" ]; then
                log "Skip: ${dir} is trained"; continue
            fi
            # At most train_nj trainings at once (one CPU thread or one GPU share each).
            while [ "$(jobs -rp | wc -l)" -ge "${train_nj}" ]; do wait -n || true; done
            train_one "${config}" "${seed}" &
            pids+=($!)
        done
    done
    failed=0
    for pid in "${pids[@]}"; do wait "${pid}" || failed=$((failed + 1)); done
    [ "${failed}" -eq 0 ] || die "${failed} training run(s) failed (see the messages above)"
    stage_end 4
fi

# ------------------------------------------------------------------------------------------------
if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
    stage_start 5 "Decoding and scoring: [${valid_set} ${test_sets}]"
    inference_tag=$(basename "${inference_config:-default}" .yaml)
    [[ ${inference_tag} == decode* ]] || inference_tag=decode_${inference_tag}
    inference_tag=${inference_tag}_$(basename "${inference_model}" .pth)
    for config in ${asr_configs}; do
        for seed in ${seeds}; do
            dir=$(exp_name "${config}" "${seed}")
            [ -f "${dir}/.done" ] || die "${dir} is not trained: run stage 4 first"
            for dset in ${valid_set} ${test_sets}; do
                out="${dir}/${inference_tag}/${dset}"
                if [ -f "${out}/.done" ]; then
                    log "Skip: ${out} is scored"; continue
                fi
                logdir="${out}/logdir"
                _nj=$(min "${inference_nj}" "$(wc -l <"data/${dset}/wav.scp")")
                split_keys "data/${dset}/wav.scp" "${_nj}" "${logdir}"
                log "Decoding ${dset} with ${dir}/${inference_model} in ${_nj} jobs (logs: ${logdir})"
                pids=()
                for n in $(seq "${_nj}"); do
                    # shellcheck disable=SC2046,SC2086
                    (export OMP_NUM_THREADS=$(job_threads "${_nj}") MKL_NUM_THREADS=$(job_threads "${_nj}")
                     run_logged "${logdir}/asr_inference.${n}.log" "${logdir}/asr_inference.${n}.sh" \
                        "${python}" -m espnet_ext.bin.asr_inference --ngpu "${infer_ngpu}" --batch_size 1 \
                        $([ -n "${inference_config}" ] && echo --config "${inference_config}") \
                        --data_path_and_name_and_type "data/${dset}/wav.scp,speech,sound" \
                        --key_file "${logdir}/keys.${n}" \
                        --asr_train_config "${dir}/config.yaml" \
                        --asr_model_file "${dir}/${inference_model}" \
                        --output_dir "${logdir}/output.${n}" ${inference_args}) &
                    pids+=($!)
                done
                for pid in "${pids[@]}"; do wait "${pid}" || die "decoding failed (${logdir})"; done
                for n in $(seq "${_nj}"); do cat "${logdir}/output.${n}/1best_recog/text"; done \
                    | LC_ALL=C sort >"${out}/text"
                "${python}" -m espnet_ext.bin.score --ref "data/${dset}/text" --hyp "${out}/text" \
                    --out_dir "${out}"
                touch "${out}/.done"
            done
        done
    done
    "${python}" -m espnet_ext.bin.make_results --expdir "${expdir}" --out "${expdir}/RESULTS.md"
    log "Results: ${expdir}/RESULTS.md"
    stage_end 5
fi

# ------------------------------------------------------------------------------------------------
if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
    stage_start 6 "Layer-reset scan: granularities [${scan_granularities}] on [${scan_sets:-${valid_set}}]"
    for config in ${asr_configs}; do
        for seed in ${seeds}; do
            dir=$(exp_name "${config}" "${seed}")
            [ -f "${dir}/.done" ] || die "${dir} is not trained: run stage 4 first"
            for granularity in ${scan_granularities}; do
                for dset in ${scan_sets:-${valid_set}}; do
                    # The scan dir is named by the library (espnet_ext.scan.result), as every reader finds it.
                    out=$("${python}" -c 'import sys; from espnet_ext.scan.result import scan_dir; print(scan_dir(*sys.argv[1:]))' \
                        "${dir}" "${granularity}" "${dset}")
                    if [ -f "${out}/.done" ]; then
                        log "Skip: ${out} is complete"; continue
                    fi
                    log "Scanning ${dir} (${granularity}) on ${dset} (log: ${out}/scan.log)"
                    # shellcheck disable=SC2086
                    run_logged "${out}/scan.log" "${out}/scan.sh" \
                        "${python}" -m espnet_ext.bin.layer_scan --exp_dir "${dir}" \
                        --data_dir "data/${dset}" --out_dir "${out}" \
                        --granularity "${granularity}" --modes "${scan_modes}" --taus "${scan_taus}" \
                        --scoring "${scan_scoring}" --model_file "${scan_model}" \
                        --adaptive "${scan_adaptive}" --confidence "${scan_confidence}" \
                        --ngpu "${infer_ngpu}" --no_progress ${scan_args}
                    tail -n 2 "${out}/scan.log"
                    touch "${out}/.done"
                done
            done
        done
    done
    if compgen -G "${expdir}/*/decode_*/*/scores.json" >/dev/null; then
        "${python}" -m espnet_ext.bin.make_results --expdir "${expdir}" --out "${expdir}/RESULTS.md"
        log "Results (with the scans' ambient layers): ${expdir}/RESULTS.md"
    fi
    stage_end 6
fi

# ------------------------------------------------------------------------------------------------
if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
    stage_start 7 "Analysis across runs: granularities [${scan_granularities}]"
    exp_dirs=()
    for config in ${asr_configs}; do
        for seed in ${seeds}; do exp_dirs+=("$(exp_name "${config}" "${seed}")"); done
    done
    for dset in ${scan_sets:-${valid_set}}; do
        out="${expdir}/analysis_{granularity}_${dset}"
        # One call for all granularities: the checkpoints are read once.
        # shellcheck disable=SC2086
        run_logged "${expdir}/analysis_${dset}.log" "${expdir}/analysis_${dset}.sh" \
            "${python}" -m espnet_ext.bin.layer_analysis --exp_dirs "${exp_dirs[@]}" \
            --granularity ${scan_granularities} --dataset "${dset}" --out_dir "${out}"
        log "Analysis: ${out} (log: ${expdir}/analysis_${dset}.log)"
    done
    stage_end 7
fi

# ------------------------------------------------------------------------------------------------
if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ]; then
    stage_start 8 "Federated adaptation on [${fl_adapt_set:-none}]"
    if [ -z "${fl_adapt_set}" ]; then
        log "Skip: no --fl_adapt_set (a withheld-domain data dir) given"
    else
        if [ -x local/fl_data.sh ]; then
            # shellcheck disable=SC2086
            local/fl_data.sh ${fl_data_opts}
        fi
        fl_sets=${fl_test_sets:-${test_sets}}
        # shellcheck disable=SC2046
        "${python}" -m espnet_ext.bin.validate_data_dir "data/${fl_adapt_set}" \
            $(for t in ${fl_sets}; do echo "data/${t}"; done)
        _fl_config=${fl_config:-$(echo ${asr_configs} | awk '{ print $NF }')}
        _fl_seed=${fl_seed:-$(echo ${seeds} | awk '{ print $1 }')}
        dir=$(exp_name "${_fl_config}" "${_fl_seed}")
        [ -f "${dir}/.done" ] || die "${dir} is not trained: run stage 4 first (or set --fl_config/--fl_seed)"
        scan_set=${scan_sets:-${valid_set}}
        eval_args=()
        for t in ${fl_sets}; do eval_args+=(--eval_data "${t//\//_}=data/${t}"); done
        fl_root="${expdir}/fl_${dir##*/}"
        # Runs go to r<rate>/<plan>/seed<N>/ (several seeds) or r<rate>/<plan>/ (no --fl_seeds):
        # no dropout once, uniform (at the targeted plan's cost, from the stacks the scan scored),
        # targeted and frozen (at the targeted plan's cost) per rate; completed rates are skipped.
        # Then one row per plan and rate: mean ± spread over the seeds, paired intervals of
        # targeted minus uniform, minus frozen and minus no dropout.
        fl_seed_list=$(echo ${fl_seeds} | tr -s ' ' ',')
        seed_args=()
        [ -n "${fl_seed_list}" ] && seed_args=(--seeds "${fl_seed_list}")
        log "Federated adaptation of ${dir}/${fl_model} at rates [${fl_rates}] (log: ${fl_root}/fl.log)"
        # shellcheck disable=SC2086
        progress_pattern="Federated runs|Skip: |plan |round [0-9]+/|Traceback|Error" progress_prefix="[fl] " \
        run_logged "${fl_root}/fl.log" "${fl_root}/fl.sh" \
            "${python}" -m espnet_ext.bin.fl_simulate sweep --exp_dir "${dir}" --model_file "${fl_model}" \
            --scan_granularity "${fl_scan}" --scan_dataset "${scan_set%% *}" \
            --rates "$(echo ${fl_rates} | tr -s ' ' ',')" --plans "$(echo ${fl_plans} | tr -s ' ' ',')" \
            --adapt_data "data/${fl_adapt_set}" \
            "${eval_args[@]}" --out_dir "${fl_root}" \
            --device "$([ "${ngpu}" -gt 0 ] && echo cuda || echo cpu)" \
            "${seed_args[@]}" --no_progress ${fl_args}
        log "Federated results: ${fl_root}/results.md"
        if compgen -G "${expdir}/*/decode_*/*/scores.json" >/dev/null; then
            "${python}" -m espnet_ext.bin.make_results --expdir "${expdir}" --out "${expdir}/RESULTS.md"
        fi
    fi
    stage_end 8
fi

log "Successfully finished in ${SECONDS} s"
