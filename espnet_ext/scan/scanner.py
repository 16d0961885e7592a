"""The layer-reset scan: score a trained model with each layer group reset, in one process.

For a trained experiment dir, every group of a layer map (:mod:`espnet_ext.layers.layer_map`)
is reset in turn, by re-initialization to each requested checkpoint tau and by re-randomization
with each requested seed (:mod:`espnet_ext.layers.reset`), and the model is scored on dev/test
data. The model is loaded once; the trained weights are kept on the side, each variant's tensors
are swapped in for its evaluation and the trained values copied back (the model ends
bit-identical). Features and the encoder prefix before the first changed block are reused
(:mod:`espnet_ext.evaluation.evaluator`).

Outputs in ``out_dir`` (see :mod:`espnet_ext.scan.report`): ``scan.tsv``,
``scan.json`` (baseline, options, summary, rows with intervals), ``scan.md``,
``heatmap_<mode>_<dataset>.png``, ``utt_errors.jsonl`` (per-utterance error counts) and
``baseline/<dataset>/text`` (the trained model's hypotheses).

Error bars: every variant's per-utterance error counts (and the baseline's) are kept in
``utt_errors.jsonl``; each delta gets a paired utterance-level bootstrap interval
(:mod:`espnet_ext.evaluation.bootstrap`) and a second label at the chosen confidence: ambient,
critical or **uncertain** (the interval straddles the tolerance).

Adaptive scan (``adaptive=True``): utterances are visited in a seeded random order; the baseline
is scored on all of them once, each variant on growing prefixes (16, 32, 64, ..., all) until its
interval decides the label at the Bonferroni-corrected confidence of all its looks, else on
all. Rows record the utterances scored (``n_utts``).

Resumable: each finished variant is appended to ``scan.tsv`` at once; a re-run skips variants
already there, and a re-run of a finished scan computes nothing (it only rewrites the reports,
relabelled with the current thresholds and confidence; a variant that the adaptive scan stopped
early and that the new rule leaves undecided is scored again). Asking for more taus, seeds or
modes later extends the scan. Options that change scores (model file, data, scoring, batch size,
device, granularity, adaptive utterance order) must match the scan already in ``out_dir``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from espnet_ext.evaluation import bootstrap as boot
from espnet_ext.scan import report as report
from espnet_ext.evaluation.encoder_stages import LEVEL_AUDIO, LEVEL_FEATS
from espnet_ext.experiment.experiment_dir import (
    CheckpointStore,
    build_model,
    check_config_paths,
    read_train_config,
    resolve_model_file,
)
from espnet_ext.scan.labels import UNCERTAIN, AmbientCriterion
from espnet_ext.scan.result import (
    COUNTS_FILE,
    DECIMALS,
    MODES,
    REINIT,
    RERANDOMIZE,
    SCAN_FILES,
    SCAN_JSON,
    SCAN_TSV,
    ScanRow,
    read_tsv,
    scan_dir,
    tsv_header,
    variant_value,
    write_tsv,
)
from espnet_ext.layers.layer_map import LayerGroup, LayerMap, build_layer_map
from espnet_ext.experiment.checkpoints import load_state_dict_file
from espnet_ext.layers.reset import group_values
from espnet_ext.scan.utt_errors import (
    UttErrors,
    baseline_rates,
    intervals,
    row_confidence,
    settled,
    stored_intervals,
)
from espnet_ext.utils.atomic import write_text_atomic



class ScanError(ValueError):
    """A scan cannot run as asked (bad option, an out_dir holding a different scan, ...)."""


@dataclasses.dataclass
class ScanOptions:
    """What to scan and how.

    Attributes:
        exp_dir: Trained experiment dir (config.yaml, model files, checkpoints/).
        data_dirs: Kaldi data dirs to score on (each scored separately).
        out_dir: Where the scan's files go (default
            ``<exp_dir>/scan_<granularity>_<first data dir name>``).
        granularity: Layer map granularity: block, submodule, frontend or pattern.
        patterns: Regular expressions for ``pattern`` granularity.
        groups: Restrict the scan to these group names (default: all).
        modes: ``reinit`` and/or ``rerandomize``.
        taus: Checkpoints for re-initialization: integers, ``last``, ``all``.
        seeds: Seeds for re-randomization (default: the training seed + 1, so the sample is
            independent of the run's own initialization).
        scoring: ``ctc_greedy`` (fast; decoder groups are then not scanned) or ``beam``.
        decode_config: YAML with Speech2Text options for ``beam`` (beam_size, ctc_weight, ...).
        model_file: Weights to scan, relative to exp_dir or a path.
        batch_size: Utterances per padded batch.
        device: ``cpu`` or ``cuda``.
        criterion: Ambient/critical rule.
        reuse: ``prefix`` (default) or ``none`` (recompute everything per variant; slower,
            for comparisons; part of a scan's identity only through its scores).
        max_cached_checkpoints: Checkpoints kept in memory at once.
        progress: Show a progress bar.
        confidence: Two-sided confidence of the delta intervals and of the ambient / critical /
            uncertain label.
        bootstrap_samples: Bootstrap resamples per interval.
        bootstrap_seed: Seed of the bootstrap resampling.
        adaptive: Score variants on growing prefixes of a seeded utterance order and stop once
            the label is decided (see the module doc); False scores every variant on every
            utterance.
        adaptive_first: Utterances in the adaptive scan's first look (then doubled).
        order_seed: Seed of the adaptive scan's utterance order.
    """

    exp_dir: Path
    data_dirs: Sequence[Path]
    out_dir: Optional[Path] = None
    granularity: str = "block"
    patterns: Sequence[str] = ()
    groups: Optional[Sequence[str]] = None
    modes: Sequence[str] = MODES
    taus: Sequence[str] = ("0",)
    seeds: Optional[Sequence[int]] = None
    scoring: str = "ctc_greedy"
    decode_config: Optional[Path] = None
    model_file: str = "valid.acc.ave.pth"
    batch_size: int = 16
    device: str = "cpu"
    criterion: AmbientCriterion = dataclasses.field(default_factory=AmbientCriterion)
    reuse: str = "prefix"
    max_cached_checkpoints: int = 4
    progress: bool = True
    confidence: float = boot.DEFAULT_CONFIDENCE
    bootstrap_samples: int = boot.DEFAULT_SAMPLES
    bootstrap_seed: int = boot.DEFAULT_SEED
    adaptive: bool = False
    adaptive_first: int = boot.DEFAULT_FIRST_LOOK
    order_seed: int = 0


@dataclasses.dataclass
class ScanRun:
    """What one call of :func:`run_scan` finished (read a scan dir later with
    :class:`espnet_ext.scan.result.ScanResult`).

    Attributes:
        out_dir: Where its files are.
        layer_map: The layer map scanned (before exclusions).
        baseline: {dataset: {"WER": %, "CER": %}} of the trained model.
        rows: One row per dataset x group x variant, in layer order.
        summary: One summary line per dataset.
        computed: Number of variants evaluated in this call (0 for a finished scan).
        seconds: Wall time of this call.
        utterance_evaluations: Utterances decoded for variants in this call (sum over variants
            and datasets; the baseline not counted).
    """

    out_dir: Path
    layer_map: LayerMap
    baseline: Dict[str, Dict[str, float]]
    rows: List[ScanRow]
    summary: List[str]
    computed: int
    seconds: float
    utterance_evaluations: int = 0


@dataclasses.dataclass(frozen=True)
class Variant:
    """One reset: a group, a mode, a checkpoint tau or a seed, and where evaluation starts."""

    group: LayerGroup
    mode: str
    value: int  # tau for reinit, seed for rerandomize
    level: int

    @property
    def key(self) -> Tuple[str, str, str]:
        return (self.group.name, self.mode, str(self.value))


def group_level(group: LayerGroup, num_encoder_blocks: int) -> int:
    """Lowest forward stage a group's weights affect (see encoder_stages levels).

    Frontend/normalization: LEVEL_AUDIO; encoder input layer and other encoder parts:
    LEVEL_FEATS; encoder block k: k; encoder final norm: N; CTC layer and decoder: N+1.
    """
    levels = []
    for key in group.keys:
        parts = key.split(".")
        if parts[0] == "encoder":
            if len(parts) > 2 and parts[1] == "encoders" and parts[2].isdigit():
                levels.append(int(parts[2]))
            elif len(parts) > 1 and parts[1] == "after_norm":
                levels.append(num_encoder_blocks)
            else:
                levels.append(LEVEL_FEATS)
        elif parts[0] in ("ctc", "decoder"):
            levels.append(num_encoder_blocks + 1)
        elif parts[0] == "postencoder":
            levels.append(LEVEL_FEATS)
        else:  # frontend, normalize, anything unknown: recompute from audio to be safe
            levels.append(LEVEL_AUDIO)
    return min(levels)


def _parse_modes(modes: Sequence[str]) -> List[str]:
    out = []
    for m in modes:
        if m not in MODES:
            raise ScanError(f"unknown reset mode {m!r}; choose from {', '.join(MODES)}")
        if m not in out:
            out.append(m)
    if not out:
        raise ScanError(f"no reset mode given; choose from {', '.join(MODES)}")
    return out


def _dataset_names(data_dirs: Sequence[Path]) -> List[str]:
    names = [Path(d).name for d in data_dirs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ScanError(f"two data dirs are named {dup[0]!r}; scan them into separate out_dirs")
    if not names:
        raise ScanError("no data dir given")
    for d in data_dirs:
        if not Path(d).is_dir():
            raise ScanError(f"data dir not found: {d}")
    return names


def _load_decode_options(opts: ScanOptions) -> Optional[dict]:
    from espnet_ext.evaluation.decoders import SCORINGS

    if opts.scoring not in SCORINGS:
        raise ScanError(f"unknown scoring {opts.scoring!r}; choose from {', '.join(SCORINGS)}")
    if opts.scoring != "beam":
        return None
    conf: dict = {}
    if opts.decode_config is not None:
        path = Path(opts.decode_config)
        if not path.is_file():
            raise ScanError(f"decode config not found: {path}")
        conf = yaml.safe_load(path.read_text()) or {}
        if not isinstance(conf, dict):
            raise ScanError(f"{path} is not a YAML mapping of decoding options")
    conf.setdefault("nbest", 1)
    return conf


def _identity(opts: ScanOptions, model_path: Path, decode_options, layer_map: LayerMap) -> dict:
    """Everything that changes a variant's scores: a resumed scan must match it."""
    st = model_path.stat()
    return {
        "exp_dir": str(Path(opts.exp_dir).resolve()),
        "model_file": str(model_path.resolve()),
        "model_file_bytes": st.st_size,
        "model_file_mtime_ns": st.st_mtime_ns,
        "data_dirs": [str(Path(d).resolve()) for d in opts.data_dirs],
        "scoring": opts.scoring,
        "decode_options": decode_options,
        "batch_size": opts.batch_size,
        "device": "cuda" if str(opts.device).startswith("cuda") else "cpu",
        "granularity": layer_map.granularity,
        "patterns": list(layer_map.patterns),
        # Batches are formed per look of the adaptive order, which can change padded scores.
        "utterance_order": ({"seed": opts.order_seed, "first_look": opts.adaptive_first}
                            if opts.adaptive else None),
    }


def _check_identity(out_dir: Path, stored: Optional[dict], identity: dict) -> None:
    if stored is None:
        return
    for k, v in identity.items():
        if stored.get(k) != v:
            hint = (" (--adaptive true and false order utterances differently)"
                    if k == "utterance_order" else "")
            raise ScanError(
                f"{out_dir} holds a scan with another {k} ({stored.get(k)!r}, now {v!r}){hint}; its "
                f"scores would not be comparable: use another --out_dir, or delete "
                f"{', '.join(SCAN_FILES)} there to start over"
            )


def _variants_to_scan(opts: ScanOptions, layer_map: LayerMap, store: CheckpointStore, train_config: dict,
                      uses_decoder: bool) -> Tuple[List[Variant], Dict[str, str]]:
    modes = _parse_modes(opts.modes)
    groups = list(layer_map.groups)
    if opts.groups:
        try:
            layer_map.select(opts.groups)
        except KeyError as e:
            raise ScanError(e.args[0]) from None
        wanted = set(opts.groups)
        groups = [g for g in groups if g.name in wanted]
    excluded = {}
    if not uses_decoder:
        for g in groups:
            if g.keys and all(k.startswith("decoder.") for k in g.keys):
                excluded[g.name] = "the decoder is not used by ctc_greedy scoring; use --scoring beam"
        groups = [g for g in groups if g.name not in excluded]
        if not groups:
            raise ScanError(
                "every group to scan is part of the decoder, which ctc_greedy scoring does not "
                "use: use --scoring beam"
            )
    taus = store.resolve(opts.taus) if REINIT in modes else []
    if opts.seeds:
        seeds = [int(s) for s in opts.seeds]
    else:
        seeds = [int(train_config.get("seed", 0)) + 1]
    train_seed = train_config.get("seed")
    if RERANDOMIZE in modes and train_seed is not None and int(train_seed) in seeds:
        logging.warning(
            f"re-randomization seed {train_seed} is the training seed: that sample equals "
            "checkpoint 0 (same as re-initialization to tau=0)"
        )
    n_enc = layer_map.num_blocks.get("encoder", 0)
    variants = []
    for g in groups:
        level = group_level(g, n_enc)
        if REINIT in modes:
            variants += [Variant(g, REINIT, t, level) for t in taus]
        if RERANDOMIZE in modes:
            variants += [Variant(g, RERANDOMIZE, s, level) for s in seeds]
    return variants, excluded


def _write_kaldi_text(path: Path, hyps: Dict[str, str]) -> None:
    from espnet_ext.data.kaldi import kaldi_sort_key

    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{k} {hyps[k]}".rstrip() for k in sorted(hyps, key=kaldi_sort_key)]
    write_text_atomic(path, "\n".join(lines) + "\n")


class _ScanState:
    """scan.json and scan.tsv of an out_dir, written as the scan goes."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.json_path = out_dir / SCAN_JSON
        self.tsv_path = out_dir / SCAN_TSV
        self.meta: dict = json.loads(self.json_path.read_text()) if self.json_path.is_file() else {}
        self.rows: List[ScanRow] = read_tsv(self.tsv_path)

    def save_meta(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.json_path, json.dumps(self.meta, indent=2) + "\n")

    def append(self, rows: Sequence[ScanRow]) -> None:
        new_file = not self.tsv_path.is_file()
        if not new_file:
            with open(self.tsv_path, encoding="utf-8") as f:
                header = f.readline().rstrip("\n")
            if header != tsv_header():  # a scan.tsv from before error bars: new columns
                write_tsv(self.tsv_path, self.rows)
        with open(self.tsv_path, "a", encoding="utf-8") as f:
            if new_file:
                f.write(tsv_header() + "\n")
            for r in rows:
                f.write(r.to_tsv() + "\n")
            f.flush()
        self.rows.extend(rows)


def _group_dict(g: LayerGroup) -> dict:
    return {"name": g.name, "kind": g.kind, "stack": g.stack, "block": g.block, "depth": g.depth,
            "numel": g.numel, "num_keys": len(g.keys)}


@dataclasses.dataclass
class _ScanSetup:
    """What the steps of one scan share: the options, the run, the weights and the data names.

    Attributes:
        opts: The scan's options.
        exp_dir: The experiment dir.
        train_config: Its config.yaml.
        model_path: The weights scanned (theta_T).
        trained_state: Those weights, loaded.
        decode_options: Speech2Text options of ``beam`` scoring (None for ``ctc_greedy``).
        datasets: Names of the data dirs, in the order given.
        out_dir: Where the scan's files go.
        layer_map: The layer map of the trained weights.
        store: Checkpoints by tau, loaded on demand.
    """

    opts: ScanOptions
    exp_dir: Path
    train_config: dict
    model_path: Path
    trained_state: dict
    decode_options: Optional[dict]
    datasets: List[str]
    out_dir: Path
    layer_map: LayerMap
    store: CheckpointStore


def _check_numeric_options(opts: ScanOptions) -> None:
    """Raises ScanError for a batch size, bootstrap setting or first look out of range."""
    if opts.batch_size < 1:
        raise ScanError(f"batch_size must be >= 1, got {opts.batch_size}")
    try:
        boot.check_bootstrap_options(opts.confidence, opts.bootstrap_samples)
    except ValueError as e:
        raise ScanError(str(e)) from None
    if opts.adaptive_first < 1:
        raise ScanError(f"--adaptive_first (utterances in the adaptive scan's first look) must be >= 1, "
                        f"got {opts.adaptive_first}")


def _set_up(opts: ScanOptions) -> _ScanSetup:
    """Check the options, read the run and load the weights to scan (see :func:`run_scan`)."""
    exp_dir = Path(opts.exp_dir)
    train_config = read_train_config(exp_dir)
    model_path = resolve_model_file(exp_dir, opts.model_file)
    datasets = _dataset_names(opts.data_dirs)
    out_dir = (Path(opts.out_dir) if opts.out_dir is not None
               else scan_dir(exp_dir, opts.granularity, datasets[0]))
    decode_options = _load_decode_options(opts)
    _check_numeric_options(opts)
    trained_state = load_state_dict_file(model_path)
    layer_map = build_layer_map(trained_state, opts.granularity, list(opts.patterns) or None)
    store = CheckpointStore(exp_dir, reference=trained_state, max_cached=opts.max_cached_checkpoints)
    return _ScanSetup(opts, exp_dir, train_config, model_path, trained_state, decode_options,
                      datasets, out_dir, layer_map, store)


def _pending(setup: _ScanSetup, variants: Sequence[Variant], state: _ScanState,
             counts: UttErrors) -> List[Variant]:
    """Variants still to score on some dataset (not in scan.tsv, or not settled by the rule)."""
    in_tsv = {(r.dataset, *r.variant_key) for r in state.rows}
    return [v for v in variants
            if any((ds, *v.key) not in in_tsv or not settled(counts, (ds, *v.key), setup.opts)
                   for ds in setup.datasets)]


def _stored_baseline(setup: _ScanSetup, state: _ScanState, counts: UttErrors) -> Optional[dict]:
    """The baseline of scan.json when it covers every dataset (with its counts), else None."""
    baseline = state.meta.get("baseline")
    if baseline is not None and any(ds not in baseline or ds not in counts.baseline
                                    for ds in setup.datasets):
        return None
    return baseline


def _record_setup(setup: _ScanSetup, state: _ScanState, identity: dict, variants: Sequence[Variant],
                  excluded: Dict[str, str]) -> None:
    """Put what is scanned, and how, into scan.json's record (saved with the next write)."""
    opts = setup.opts
    state.meta.update({
        "granularity": setup.layer_map.granularity,
        "scoring": opts.scoring,
        "datasets": list(setup.datasets),
        "identity": identity,
        "options": {
            "modes": list(_parse_modes(opts.modes)), "taus": list(map(str, opts.taus)),
            "seeds": sorted({v.value for v in variants if v.mode == RERANDOMIZE}),
            "groups": list(opts.groups) if opts.groups else None,
            "criterion": dataclasses.asdict(opts.criterion), "reuse": opts.reuse,
            "confidence": opts.confidence, "bootstrap_samples": opts.bootstrap_samples,
            "bootstrap_seed": opts.bootstrap_seed, "adaptive": opts.adaptive,
            "adaptive_first": opts.adaptive_first,
        },
        "groups": [_group_dict(g) for g in setup.layer_map.groups],
        "unassigned_keys": list(setup.layer_map.unassigned),
        "excluded_groups": excluded,
    })


def _relabelled_rows(setup: _ScanSetup, variants: Sequence[Variant], state: _ScanState,
                     counts: UttErrors, baseline: dict) -> Tuple[List[ScanRow], List[ScanRow]]:
    """(rows of this scan's variants in layer order, rows of other variants already in the file),
    all relabelled with the current rule and confidence."""
    datasets = setup.datasets
    wanted = {(ds, *v.key) for v in variants for ds in datasets}
    rows_by_key = {(r.dataset, *r.variant_key): r for r in state.rows}
    order = {g.name: i for i, g in enumerate(setup.layer_map.groups)}
    rows = [rows_by_key[k] for k in wanted if k in rows_by_key]
    rows.sort(key=lambda r: (datasets.index(r.dataset), order.get(r.group, 1 << 30),
                             MODES.index(r.mode), variant_value(r)))
    # Rows of other groups/variants already in the file (e.g. an earlier, larger scan) are kept.
    extra = [r for k, r in rows_by_key.items() if k not in wanted]
    for r in rows + extra:
        stored = stored_intervals(counts, (r.dataset, *r.variant_key), setup.opts)
        r.relabel(baseline[r.dataset], setup.opts.criterion, stored[0] if stored else None)
    return rows, extra


def _report_notes(setup: _ScanSetup, rows: Sequence[ScanRow], baseline: dict,
                  state: _ScanState) -> List[str]:
    """The notes at the top of scan.md (model, granularity, scoring, intervals, checkpoint 0,
    adaptive looks); records checkpoint 0's provenance in scan.json when tau 0 was scanned."""
    opts, layer_map = setup.opts, setup.layer_map
    notes = [
        f"Model: `{setup.model_path}` ({sum(g.numel for g in layer_map.groups):,} parameters in groups)",
        f"Granularity: {layer_map.granularity}"
        + (f" (patterns {', '.join(layer_map.patterns)})" if layer_map.patterns else ""),
        f"Scoring: {opts.scoring}" + (f" {setup.decode_options}" if setup.decode_options else ""),
        f"Intervals: paired utterance-level bootstrap, {opts.bootstrap_samples} resamples, seed "
        f"{opts.bootstrap_seed}, {100 * opts.confidence:g}% confidence",
    ]
    if any(r.mode == REINIT and r.tau == 0 for r in rows):
        # Provenance of tau 0: saved by the training, or rebuilt from config.yaml.
        init_file, reconstructed = setup.store.exp.initial_weights_file()
        state.meta["checkpoint0"] = {"file": str(init_file), "reconstructed": reconstructed}
        if reconstructed:
            notes.append(f"Checkpoint 0 (tau=0): not saved by the training; reconstructed from "
                         f"config.yaml (seed {setup.train_config.get('seed')}): `{init_file}`")
    if opts.adaptive:
        first = setup.datasets[0]
        looks = boot.look_sizes(baseline[first].get("utterances", 1), opts.adaptive_first)
        notes.append(f"Adaptive scan: looks at {', '.join(map(str, looks))} utterances of "
                     f"{first} (seeded order), each at "
                     f"{100 * boot.look_confidence(opts.confidence, len(looks)):.4g}% confidence "
                     "(Bonferroni over the looks); a variant stops at the first decided look")
    return notes


def _write_reports(setup: _ScanSetup, variants: Sequence[Variant], excluded: Dict[str, str],
                   state: _ScanState, counts: UttErrors, baseline: dict) -> Tuple[List[ScanRow], List[str]]:
    """Rewrite scan.tsv, the heatmaps, scan.md and scan.json (status done) from the rows.

    Returns:
        (this scan's rows in layer order, one summary line per dataset).
    """
    opts, datasets, out_dir = setup.opts, setup.datasets, setup.out_dir
    rows, extra = _relabelled_rows(setup, variants, state, counts, baseline)
    write_tsv(state.tsv_path, rows + extra)
    group_order = [g.name for g in setup.layer_map.groups]
    summary = [report.summary_line(rows, ds, group_order, baseline[ds], opts.criterion, opts.confidence)
               for ds in datasets]
    heatmaps = report.write_heatmaps(out_dir, rows, datasets, group_order, baseline, opts.criterion)
    notes = _report_notes(setup, rows, baseline, state)
    md = report.markdown(str(setup.exp_dir), rows, datasets, setup.layer_map.groups, baseline,
                         opts.criterion, excluded, heatmaps, notes, opts.confidence)
    write_text_atomic(out_dir / "scan.md", md)
    state.meta["summary"] = summary
    # Every row with its interval, for readers of JSON (NaN, i.e. no interval, as null).
    state.meta["rows"] = [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                           for k, v in dataclasses.asdict(r).items()} for r in rows]
    state.meta["status"] = "done"
    state.save_meta()
    return rows, summary


def run_scan(opts: ScanOptions) -> ScanRun:
    """Run (or resume, or re-report) a layer-reset scan. See the module docstring.

    Raises:
        ExperimentError: Missing config/model file/checkpoint (checkpoint 0 says how to get
            it), or a tau that was not saved (lists the saved ones).
        ArchitectureMismatchError: A checkpoint does not match the model (names the key).
        LayerMapError: Unknown granularity, or a pattern that matches nothing.
        ScanError: Bad options, or an out_dir holding a scan with other score-changing options.
        DataDirError: Unreadable data dirs.
    """
    t0 = time.perf_counter()
    setup = _set_up(opts)
    variants, excluded = _variants_to_scan(opts, setup.layer_map, setup.store, setup.train_config,
                                           opts.scoring == "beam")
    state = _ScanState(setup.out_dir)
    identity = _identity(opts, setup.model_path, setup.decode_options, setup.layer_map)
    _check_identity(setup.out_dir, state.meta.get("identity"), identity)
    counts = UttErrors(setup.out_dir / COUNTS_FILE)
    pending = _pending(setup, variants, state, counts)
    baseline = _stored_baseline(setup, state, counts)
    _record_setup(setup, state, identity, variants, excluded)

    computed = evaluations = 0
    if pending or baseline is None:
        check_config_paths(setup.train_config, setup.exp_dir / "config.yaml")
        baseline, computed, evaluations = _evaluate(setup, pending, state, baseline, counts)
    state.meta["baseline"] = baseline
    rows, summary = _write_reports(setup, variants, excluded, state, counts, baseline)
    seconds = time.perf_counter() - t0
    return ScanRun(setup.out_dir, setup.layer_map, baseline, rows, summary, computed, seconds, evaluations)


def _load_model(setup: _ScanSetup):
    """Build the trained model and its decoder (after checking the audio's sample rate).

    Returns:
        (model, decoder, the model's layer map).
    """
    from espnet_ext.data.audio import check_sample_rate
    from espnet_ext.evaluation.decoders import BeamSearchDecoder, CtcGreedyDecoder

    opts, exp_dir, train_config = setup.opts, setup.exp_dir, setup.train_config
    for d in opts.data_dirs:  # audio at another rate than the front end's would score nonsense
        check_sample_rate(Path(d), train_config, str(exp_dir / "config.yaml"))
    model, speech2text = build_model(exp_dir / "config.yaml", setup.trained_state, str(setup.model_path),
                                     opts.device, setup.decode_options)
    if speech2text is not None:
        decoder = BeamSearchDecoder(speech2text)
    else:
        decoder = CtcGreedyDecoder(model, train_config.get("token_type", "bpe"),
                                   train_config.get("bpemodel"))
    layer_map = build_layer_map(model, opts.granularity, list(opts.patterns) or None)
    return model, decoder, layer_map


def _make_evaluator(setup: _ScanSetup, model, decoder, sets):
    """The evaluator over every set; with ``adaptive``, batched per look of the seeded order."""
    from espnet_ext.evaluation.evaluator import Evaluator

    opts = setup.opts
    chunks = None
    if opts.adaptive:
        # Looks at prefixes of one seeded order; each look's new utterances are batched apart.
        chunks = []
        for st in sets:
            order = boot.utterance_order(len(st.keys), opts.order_seed)
            sizes = [0] + boot.look_sizes(len(st.keys), opts.adaptive_first)
            chunks.append([order[a:b] for a, b in zip(sizes, sizes[1:])])
    return Evaluator(model, sets, decoder, batch_size=opts.batch_size, device=opts.device,
                     reuse=opts.reuse, chunks=chunks)


def _score_baseline(setup: _ScanSetup, evaluator, sets, state: _ScanState, stored: Optional[dict],
                    counts: UttErrors) -> dict:
    """Score the trained model on every set, record its counts and hypotheses, save scan.json.

    Returns:
        {dataset: {"WER": %, "CER": %, "utterances": n}}.
    """
    from espnet_ext.evaluation.scoring import utterance_counts

    hyps = evaluator.hypotheses(LEVEL_FEATS)
    baseline = {}
    for st in sets:
        words = utterance_counts(st.refs, hyps[st.name], "word")
        chars = utterance_counts(st.refs, hyps[st.name], "char")
        rec = {"dataset": st.name, "baseline": True, "utts": list(st.keys),
               "words": [words[u].ref_tokens for u in st.keys],
               "chars": [chars[u].ref_tokens for u in st.keys],
               "w": [words[u].errors for u in st.keys], "c": [chars[u].errors for u in st.keys]}
        counts.append(rec)
        baseline[st.name] = {**baseline_rates(rec), "utterances": len(st.keys)}
        _write_kaldi_text(setup.out_dir / "baseline" / st.name / "text", hyps[st.name])
    if stored is not None and any(
        not math.isclose(stored[ds][m], baseline[ds][m], abs_tol=1e-6)
        for ds in setup.datasets for m in ("WER", "CER")
    ):
        logging.warning(f"baseline differs from the one stored in {state.json_path}: {stored} vs {baseline}")
    state.meta["baseline"] = baseline
    state.meta["status"] = "running"
    state.meta["block_reuse"] = evaluator.stages.block_reuse or evaluator.stages.unsupported_reason
    state.save_meta()
    logging.info(f"Baseline: {baseline}")
    return baseline


def _score_variant(setup: _ScanSetup, evaluator, refs: Dict[str, Dict[str, str]], group: LayerGroup,
                   v: Variant, values, baseline: dict, counts: UttErrors) -> Tuple[List[ScanRow], int]:
    """Score one reset variant on every dataset (on growing looks when adaptive).

    Returns:
        (one labelled row per dataset, utterances decoded).
    """
    from espnet_ext.evaluation.scoring import utterance_counts

    opts = setup.opts
    metric = opts.criterion.metric.upper()
    rows, evaluations = [], 0
    for s_idx, ds in enumerate(setup.datasets):
        base = counts.baseline[ds]
        position = {u: i for i, u in enumerate(base["utts"])}
        looks = evaluator.chunk_batches[s_idx]
        look_conf = boot.look_confidence(opts.confidence, len(looks))
        idx: List[int] = []
        w: List[int] = []
        c: List[int] = []
        for k, batches in enumerate(looks):
            hyps = evaluator.hypotheses(v.level, values, {ds: batches})[ds]
            sub_refs = {u: refs[ds][u] for u in hyps}
            words = utterance_counts(sub_refs, hyps, "word")
            chars = utterance_counts(sub_refs, hyps, "char")
            for u in hyps:
                idx.append(position[u])
                w.append(words[u].errors)
                c.append(chars[u].errors)
            if opts.adaptive and k < len(looks) - 1:
                iv = intervals(base, idx, w, c, opts, look_conf)[metric]
                if opts.criterion.label_interval(baseline[ds][metric], iv.lo, iv.hi) != UNCERTAIN:
                    break  # decided at this look: the rest of the set is not needed
        counts.append({"dataset": ds, "group": group.name, "mode": v.mode, "value": str(v.value),
                       "idx": idx, "w": w, "c": c})
        evaluations += len(idx)
        n_words = sum(base["words"][i] for i in idx)
        n_chars = sum(base["chars"][i] for i in idx)
        row = ScanRow(ds, group.name, group.kind, group.block, group.depth, v.mode,
                      v.value if v.mode == REINIT else None,
                      v.value if v.mode == RERANDOMIZE else None,
                      round(100.0 * sum(w) / max(n_words, 1), DECIMALS),
                      round(100.0 * sum(c) / max(n_chars, 1), DECIMALS))
        conf = row_confidence(opts, len(idx), len(base["utts"]))
        row.relabel(baseline[ds], opts.criterion, intervals(base, idx, w, c, opts, conf))
        rows.append(row)
    return rows, evaluations


def _evaluate(setup: _ScanSetup, pending: Sequence[Variant], state: _ScanState,
              baseline: Optional[dict], counts: UttErrors) -> Tuple[dict, int, int]:
    """Load model and data once, score the baseline and every pending variant.

    Returns:
        (baseline, variants scored, utterances decoded for variants).
    """
    from tqdm import tqdm

    from espnet_ext.evaluation.eval_data import load_eval_set

    model, decoder, layer_map = _load_model(setup)
    by_name = {g.name: g for g in layer_map.groups}
    sets = [load_eval_set(Path(d), name) for d, name in zip(setup.opts.data_dirs, setup.datasets)]
    t_setup = time.perf_counter()
    evaluator = _make_evaluator(setup, model, decoder, sets)
    refs = {st.name: st.refs for st in sets}
    baseline = _score_baseline(setup, evaluator, sets, state, baseline, counts)

    store = setup.store
    sampler = None
    if any(v.mode == RERANDOMIZE for v in pending):
        sampler = store.exp.weight_sampler()  # built as ESPnet's trainer builds it
    # Increasing start level: the prefix cache only moves forward; then by tau to reuse loads.
    pending = sorted(pending, key=lambda v: (evaluator.effective_level(v.level), v.mode, v.value))
    live = evaluator.swap.trained
    evaluations = 0
    t_variants = time.perf_counter()
    for v in tqdm(pending, desc="layer-reset scan", unit="variant", disable=not setup.opts.progress):
        group = by_name.get(v.group.name, v.group)
        if v.mode == REINIT:
            values = group_values(group, store.load(v.value), str(store.path(v.value)), reference=live)
        else:
            values = group_values(group, sampler.sample(v.value),
                                  f"the model built with seed {v.value}", reference=live)
        rows, n = _score_variant(setup, evaluator, refs, group, v, values, baseline, counts)
        evaluations += n
        state.append(rows)
    state.meta["timing"] = {
        "features_and_baseline_s": round(t_variants - t_setup, 3),
        "variants": len(pending),
        "variants_s": round(time.perf_counter() - t_variants, 3),
        "utterance_evaluations": evaluations,
    }
    return baseline, len(pending), evaluations
