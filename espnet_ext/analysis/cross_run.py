"""Several finished runs side by side: which run is which, and what its scan and weights say.

A **run** is a trained experiment dir (read through
:class:`~espnet_ext.experiment.experiment_dir.ExperimentDir`: ``config.yaml``, the epochs that exist,
checkpoint 0 saved or reconstructed from config.yaml, and the layer-reset scan of stage 6 in ``scan_<granularity>_<dataset>/``). Runs are told apart by
their ``config.yaml``, not by their names: the conv-module norm (ESPnet's ``conformer`` encoder:
batch norm; ``norm_conformer``: its ``conv_norm_type``), the size (encoder ``num_blocks`` x
``output_size``) and the training ``seed``. Runs that share norm and size are one **setup**
and differ by seed.

For every run this module reads the scan rows of one dataset and one reset (``reinit`` to a
tau, or ``rerandomize`` with a seed; by default the scan's reference reset, i.e.
re-initialization to the smallest tau scanned) and computes the weight updates of its groups
(:mod:`espnet_ext.analysis.weight_updates`) from the model the scan reset, giving one
:class:`~espnet_ext.analysis.stability.RunOutcome` per run.

Directories that are no training run (no ``config.yaml``, or ESPnet's statistics dir
``asr_stats_*``) are skipped with a note, so ``exp/asr_*`` can be given as is. A run without
the scan, or whose initial weights are neither saved nor reconstructable, is an error that says
how to get them (or, with ``allow_missing``, a skipped run with that reason).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_ext.scan.result import (
    MODES,
    REINIT,
    ScanResult,
    ScanResultError,
    ScanRow,
    find_scan_dirs,
    reference_variant,
    rows_of_variant,
    scan_dir,
    variant_value,
)
from espnet_ext.analysis.stability import LayerOutcome, RunOutcome
from espnet_ext.analysis.weight_updates import (
    TRAIN_HINT,
    RunUpdates,
    WeightUpdateError,
    compute_weight_updates_for_maps,
)
from espnet_ext.experiment.experiment_dir import ExperimentDir, ExperimentError

SCAN_HINT = ("run stage 6 of the recipe (./run.sh --stage 6 --stop_stage 6) or "
             "python -m espnet_ext.bin.layer_scan --exp_dir {exp} --data_dir data/{dataset} "
             "--granularity {granularity}")
# Config entries that must agree between runs of one setup (besides norm, size and seed).
_COMPARED_CONFIG = ("frontend_conf", "encoder_conf", "decoder", "decoder_conf", "model_conf",
                    "optim", "optim_conf", "scheduler", "scheduler_conf", "max_epoch", "init")
_PER_RUN_ENCODER_CONF = ("conv_norm_type", "conv_norm_groups")


class AnalysisInputError(ValueError):
    """Runs cannot be analysed as asked (a missing scan or checkpoint, mismatching scans...)."""


@dataclasses.dataclass
class RunInfo:
    """A training run as its config.yaml describes it.

    Attributes:
        exp_dir: The experiment dir.
        name: Its directory name (labels in tables and figures).
        seed: Training seed (``seed`` of config.yaml).
        encoder: Encoder type (``conformer``, ``norm_conformer``...).
        norm: Conv-module norm: ``batch_norm``, ``group_norm``, ``layer_norm``, ``no_conv``
            (a Conformer without convolution module), or the encoder type for other encoders.
        num_blocks: Encoder blocks (None until known: see :func:`collect_runs`).
        output_size: Encoder dimension (None until known).
        config: The whole config.yaml.
    """

    exp_dir: Path
    name: str
    seed: Optional[int]
    encoder: str
    norm: str
    num_blocks: Optional[int]
    output_size: Optional[int]
    config: dict

    @property
    def size(self) -> str:
        """``<encoder blocks>x<dimension>``, e.g. ``4x96``."""
        return f"{self.num_blocks if self.num_blocks is not None else '?'}x" \
               f"{self.output_size if self.output_size is not None else '?'}"

    @property
    def setup(self) -> str:
        """``<norm> <size>``: runs of one setup differ only by their seed."""
        return f"{self.norm} {self.size}"


def conv_norm_of(config: dict) -> str:
    """The conv-module norm of a training config (see :class:`RunInfo`)."""
    encoder = str(config.get("encoder", ""))
    conf = config.get("encoder_conf") or {}
    if encoder in ("conformer", "norm_conformer"):
        if conf.get("use_cnn_module", True) is False:
            return "no_conv"
        # ESPnet's Conformer convolution module always uses BatchNorm1d.
        return str(conf.get("conv_norm_type", "batch_norm")) if encoder == "norm_conformer" else "batch_norm"
    return encoder or "unknown"


def describe_run(exp_dir: Path) -> RunInfo:
    """Read a run's config.yaml.

    Raises:
        AnalysisInputError: No config.yaml, or not a YAML mapping.
    """
    exp = ExperimentDir(exp_dir)
    try:
        config = exp.config
    except ExperimentError as e:
        raise AnalysisInputError(str(e)) from None
    conf = config.get("encoder_conf") or {}
    seed = config.get("seed")
    return RunInfo(
        exp_dir=exp.path, name=exp.path.name, seed=int(seed) if seed is not None else None,
        encoder=str(config.get("encoder", "")), norm=conv_norm_of(config),
        num_blocks=int(conf["num_blocks"]) if "num_blocks" in conf else None,
        output_size=int(conf["output_size"]) if "output_size" in conf else None,
        config=config,
    )


def _expand(patterns: Sequence[str]) -> List[Path]:
    """Paths from arguments that may be glob patterns (kept as given when nothing matches)."""
    out, seen = [], set()
    for p in patterns:
        matches = sorted(glob.glob(str(p))) if glob.has_magic(str(p)) else [str(p)]
        for m in matches or [str(p)]:
            key = str(Path(m).resolve())
            if key not in seen:
                seen.add(key)
                out.append(Path(m))
    return out


def discover_runs(exp_dirs: Sequence[str]) -> Tuple[List[RunInfo], Dict[str, str]]:
    """Training runs among directories or glob patterns.

    Returns:
        (runs in the given order, {path: why it was skipped} for paths that are no training run:
        not a directory, no config.yaml, or a statistics-collection dir).

    Raises:
        AnalysisInputError: No training run at all.
    """
    runs, skipped = [], {}
    for path in _expand(exp_dirs):
        if not path.is_dir():
            skipped[str(path)] = "not a directory"
        elif not (path / "config.yaml").is_file():
            skipped[str(path)] = "no config.yaml (not a training run)"
        else:
            info = describe_run(path)
            if info.config.get("collect_stats"):
                skipped[str(path)] = "a statistics-collection dir (collect_stats: true)"
            else:
                runs.append(info)
    if not runs:
        why = "; ".join(f"{p}: {w}" for p, w in skipped.items()) or "nothing given"
        raise AnalysisInputError(f"no trained experiment dir among the given paths ({why})")
    return runs, skipped


@dataclasses.dataclass
class ScanData:
    """The part of a run's scan that the analysis uses.

    Attributes:
        scan_dir: ``<exp_dir>/scan_<granularity>_<dataset>``.
        dataset: The data set's name.
        rows: Every row of that dataset (all resets scanned).
        reset: (mode, tau or seed) analysed.
        baseline: {"WER": %, "CER": %} of the trained model on the dataset.
        criterion: The ambient rule the rows are labelled with (scan.json options).
        metric: ``wer`` or ``cer``: the rule's metric, whose deltas are analysed.
        model_file: The weights the scan reset (theta_T).
        patterns: Layer patterns of a ``pattern`` scan.
    """

    scan_dir: Path
    dataset: str
    rows: List[ScanRow]
    reset: Tuple[str, Optional[int]]
    baseline: Dict[str, float]
    criterion: dict
    metric: str
    model_file: Path
    patterns: List[str]

    def reset_rows(self) -> List[ScanRow]:
        """The rows of the analysed reset, one per group."""
        return rows_of_variant(self.rows, *self.reset)


def _find_scan(exp_dir: Path, granularity: str, dataset: str) -> ScanResult:
    """The scan holding `dataset` rows (also a scan of several data dirs named by the first)."""
    default = scan_dir(exp_dir, granularity, dataset)
    for d in [default] + [d for d in find_scan_dirs(exp_dir, granularity) if d != default]:
        if (d / "scan.tsv").is_file():
            try:
                scan = ScanResult.load(d)
            except ScanResultError as e:
                raise AnalysisInputError(str(e)) from None
            if d == default or any(r.dataset == dataset for r in scan.rows):
                return scan
    others = [p.name for p in find_scan_dirs(exp_dir)]
    raise AnalysisInputError(
        f"{exp_dir}: no layer-reset scan at granularity {granularity!r} on {dataset!r} (looked for "
        f"{default / 'scan.tsv'}"
        + (f"; scans there: {', '.join(others)}" if others else "")
        + "): " + SCAN_HINT.format(exp=exp_dir, dataset=dataset, granularity=granularity)
    )


def choose_reset(rows: Sequence[ScanRow], mode: Optional[str], value: Optional[int],
                 where: str) -> Tuple[str, Optional[int]]:
    """The reset to analyse: (mode, tau or seed).

    Args:
        rows: One dataset's scan rows.
        mode: ``reinit``, ``rerandomize`` or None (the scan's reference reset).
        value: tau (reinit) or seed (rerandomize); None: the smallest tau, or the first seed
            of the run (each run's re-randomization seed is its own).
        where: Scan dir, for errors.

    Raises:
        AnalysisInputError: That reset was not scanned (lists the ones that were).
    """
    scanned = sorted({(r.mode, variant_value(r)) for r in rows}, key=lambda v: (MODES.index(v[0]), v[1]))
    listing = ", ".join(f"{m} {'tau' if m == REINIT else 'seed'}={v}" for m, v in scanned) or "none"
    if mode is None:
        ref = reference_variant(list(rows))
        if ref is None:
            raise AnalysisInputError(f"{where}: the scan has no rows")
        return ref
    if mode not in MODES:
        raise AnalysisInputError(f"unknown reset mode {mode!r}; choose from {', '.join(MODES)}")
    values = sorted(v for m, v in scanned if m == mode)
    if not values:
        raise AnalysisInputError(f"{where}: no {mode} reset was scanned (scanned: {listing})")
    if value is None:
        return mode, values[0]
    if value not in values:
        what = "tau" if mode == REINIT else "seed"
        raise AnalysisInputError(
            f"{where}: {mode} with {what}={value} was not scanned (scanned: {listing}); re-run "
            f"the scan with it (layer_scan --{'taus' if mode == REINIT else 'seeds'} ...) or choose "
            "one that was"
        )
    return mode, value


def load_scan(run: RunInfo, granularity: str, dataset: str, mode: Optional[str] = None,
              value: Optional[int] = None) -> ScanData:
    """Read a run's finished scan for one dataset and pick the reset to analyse.

    Raises:
        AnalysisInputError: No scan (says how to run it), an unfinished scan, a reset that was
            not scanned, or a scanned model file that is gone.
    """
    scan = _find_scan(run.exp_dir, granularity, dataset)
    hint = SCAN_HINT.format(exp=run.exp_dir, dataset=dataset, granularity=granularity)
    if not scan.finished:
        raise AnalysisInputError(
            f"{scan.path}: the scan is not finished (scan.json status: {scan.status or 'missing'}); "
            f"{hint} to finish it (it resumes)")
    if dataset not in scan.baseline:
        raise AnalysisInputError(f"{scan.json_path}: no baseline for {dataset!r}; {hint}")
    rows = scan.rows_of(dataset)
    reset = choose_reset(rows, mode, value, str(scan.path))
    criterion = scan.criterion
    identity = scan.identity
    model_file = _model_file(run.exp_dir, identity.get("model_file"), scan.json_path)
    return ScanData(scan_dir=scan.path, dataset=dataset, rows=rows, reset=reset,
                    baseline=scan.baseline[dataset], criterion=criterion,
                    metric=str(criterion.get("metric", "cer")), model_file=model_file,
                    patterns=list(identity.get("patterns") or []))


def _model_file(exp_dir: Path, recorded: Optional[str], meta_path: Path) -> Path:
    """The scanned model file: as recorded, else by its name in exp_dir (a moved exp dir)."""
    if recorded is None:
        raise AnalysisInputError(f"{meta_path}: no identity.model_file (not written by layer_scan?)")
    for candidate in (Path(recorded), Path(exp_dir) / Path(recorded).name):
        if candidate.is_file():
            return candidate
    raise AnalysisInputError(
        f"{meta_path}: the scanned model file {recorded} is gone (not in {exp_dir} either); the "
        "weight updates need the very weights that were scanned")


def _initial_weights_problem(exp_dir: Path) -> Optional[str]:
    """Why a run has no usable theta_0 (neither saved nor reconstructable), or None.

    The weight updates need theta_0 whatever reset the scan made; it is reconstructed from
    config.yaml when the training did not save it (ESPnet's own training never does).
    """
    exp = ExperimentDir(exp_dir)
    try:
        exp.initial_weights_file(reconstruct=False)  # a saved one must belong to this run
        return None
    except ExperimentError as e:
        if 0 not in exp.saved_epochs() and exp.reconstruction_problem() is None:
            return None  # reconstructed when the weight updates are computed
        return f"{e}; {TRAIN_HINT}"


@dataclasses.dataclass
class AnalyzedRun:
    """One run with its scan, its weight updates and the outcome the statistics use."""

    info: RunInfo
    scan: ScanData
    updates: RunUpdates
    outcome: RunOutcome


@dataclasses.dataclass
class Collection:
    """Runs ready for analysis.

    Attributes:
        runs: Analysed runs, by size (encoder blocks, dimension), norm, then seed.
        skipped: {path: reason} for paths that were left out.
        notes: Facts worth a line in the report (differing configs within a setup, ...).
        granularity, dataset: What was analysed.
        metric: ``wer`` or ``cer`` (of the ambient rule shared by all scans).
        criterion: That rule (scan.json options).
    """

    runs: List[AnalyzedRun]
    skipped: Dict[str, str]
    notes: List[str]
    granularity: str
    dataset: str
    metric: str
    criterion: dict


def outcome_of(info: RunInfo, scan: ScanData, updates: RunUpdates) -> RunOutcome:
    """Join a run's scan rows (the analysed reset) with its weight updates, group by group."""
    measure = updates.for_reset(*scan.reset)
    layers = []
    for r in scan.reset_rows():
        stack = r.group.split(".")[0] if r.block is not None else None
        delta = r.delta_cer if scan.metric == "cer" else r.delta_wer
        layers.append(LayerOutcome(
            group=r.group, kind=r.kind, block=r.block,
            num_blocks=updates.num_blocks.get(stack) if stack else None,
            delta=float(delta), ambient=r.label == "ambient",
            update=measure.get(r.group, math.nan), uncertain=r.label_ci == "uncertain",
        ))
    return RunOutcome(name=info.name, norm=info.norm, size=info.size, seed=info.seed,
                      layers=tuple(layers))


def _config_notes(runs: Sequence[RunInfo]) -> List[str]:
    notes = []
    setups: Dict[str, List[RunInfo]] = {}
    for r in runs:
        setups.setdefault(r.setup, []).append(r)
    for setup, members in setups.items():
        seeds = [m.seed for m in members]
        dup = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
        if dup:
            notes.append(f"{setup}: several runs with seed {dup[0]} "
                         f"({', '.join(m.name for m in members if m.seed == dup[0])})")
        first = members[0]
        for other in members[1:]:
            differ = []
            for key in _COMPARED_CONFIG:
                a, b = first.config.get(key), other.config.get(key)
                if key == "encoder_conf":
                    a = {k: v for k, v in (a or {}).items() if k not in _PER_RUN_ENCODER_CONF}
                    b = {k: v for k, v in (b or {}).items() if k not in _PER_RUN_ENCODER_CONF}
                if a != b:
                    differ.append(key)
            if differ:
                notes.append(f"{setup}: {other.name} differs from {first.name} in "
                             f"{', '.join(differ)} (not only in the seed)")
    return notes


def collect_runs(exp_dirs: Sequence[str], granularity: str, dataset: str,
                 mode: Optional[str] = None, value: Optional[int] = None,
                 allow_missing: bool = False) -> Collection:
    """Discover runs, read their scans, compute their weight updates.

    Args:
        exp_dirs: Experiment dirs or glob patterns (``exp/asr_*``).
        granularity: Scan granularity (``block``, ``submodule``...).
        dataset: Data set scanned (the data dir's name, e.g. ``dev``).
        mode: Reset to analyse (``reinit``/``rerandomize``; None: each scan's reference reset).
        value: tau (reinit) or seed (rerandomize); None: the smallest scanned.
        allow_missing: Skip runs without a scan or checkpoints (with the reason) instead of failing.

    Returns:
        The :class:`Collection`.

    Raises:
        AnalysisInputError: Runs without the scan/checkpoints (every such run in one message),
            scans labelled with different ambient rules, or nothing left to analyse.
        ArchitectureMismatchError: A checkpoint does not match its run's model.
    """
    return collect_runs_multi(exp_dirs, [granularity], dataset, mode, value, allow_missing)[granularity]


def collect_runs_multi(exp_dirs: Sequence[str], granularities: Sequence[str], dataset: str,
                       mode: Optional[str] = None, value: Optional[int] = None,
                       allow_missing: bool = False) -> Dict[str, Collection]:
    """:func:`collect_runs` for several granularities, reading each run's checkpoints once.

    Returns:
        {granularity: Collection}, in the order given.

    Raises:
        As :func:`collect_runs`; with ``allow_missing``, a run lacking one granularity's scan
        is skipped for that granularity only.
    """
    granularities = list(dict.fromkeys(granularities))
    if not granularities:
        raise AnalysisInputError("no granularity given")
    infos, skipped_common = discover_runs(exp_dirs)
    scans, problems = _read_scans(infos, granularities, dataset, mode, value)
    messages = list(dict.fromkeys(m for g in granularities for m in problems[g].values()))
    if messages and not allow_missing:
        raise AnalysisInputError("\n".join(messages)
                                 + ("\n(--allow_missing skips such runs)" if len(infos) > 1 else ""))
    for g in granularities:
        _check_same_rule(g, scans[g])
    analysed = _compute_updates(infos, granularities, scans, problems, allow_missing)
    out = {}
    for g in granularities:
        skipped = dict(skipped_common)
        skipped.update(problems[g])
        out[g] = _collection(g, dataset, analysed[g], skipped)
    return out


# Per granularity, {str(exp_dir): value}.
_ByRun = Dict[str, Dict[str, ScanData]]


def _read_scans(infos: Sequence[RunInfo], granularities: Sequence[str], dataset: str,
                mode: Optional[str], value: Optional[int]) -> Tuple[_ByRun, Dict[str, Dict[str, str]]]:
    """Each run's scan at each granularity.

    Returns:
        ({granularity: {exp_dir: ScanData}}, {granularity: {exp_dir: why it has none}}); a run
        without usable initial weights has a problem at every granularity.
    """
    problems: Dict[str, Dict[str, str]] = {g: {} for g in granularities}
    scans: _ByRun = {g: {} for g in granularities}
    for info in infos:
        key = str(info.exp_dir)
        missing_init = _initial_weights_problem(info.exp_dir)
        if missing_init is not None:
            for g in granularities:
                problems[g][key] = missing_init
            continue
        for g in granularities:
            try:
                scans[g][key] = load_scan(info, g, dataset, mode, value)
            except AnalysisInputError as e:
                problems[g][key] = str(e)
    return scans, problems


def _check_same_rule(granularity: str, scans: Dict[str, ScanData]) -> None:
    """Raises AnalysisInputError when the scans label ambient layers with different rules."""
    rules = {key: scan.criterion for key, scan in scans.items()}
    if len({json.dumps(c, sort_keys=True) for c in rules.values()}) > 1:
        listing = "; ".join(f"{Path(p).name}: {c}" for p, c in rules.items())
        raise AnalysisInputError(
            f"the {granularity} scans label ambient layers with different rules ({listing}); re-run "
            "python -m espnet_ext.bin.layer_scan on them with the same --metric/--threshold_* "
            "options (a finished scan is only relabelled, nothing is recomputed)")


def _compute_updates(infos: Sequence[RunInfo], granularities: Sequence[str], scans: _ByRun,
                     problems: Dict[str, Dict[str, str]], allow_missing: bool
                     ) -> Dict[str, List[Tuple[RunInfo, ScanData, RunUpdates]]]:
    """Weight updates of every scanned run, one pass over its checkpoints per scanned model file.

    Fills in a run's encoder size when its config.yaml does not give it; with `allow_missing`,
    a run whose checkpoints fail is recorded in `problems` instead of raising.

    Returns:
        {granularity: [(run, its scan, its weight updates)]}.
    """
    analysed: Dict[str, List[Tuple[RunInfo, ScanData, RunUpdates]]] = {g: [] for g in granularities}
    for info in infos:
        key = str(info.exp_dir)
        wanted = [g for g in granularities if key in scans[g]]
        # One pass over the checkpoints per scanned model file (normally one for all granularities).
        by_model: Dict[str, List[str]] = {}
        for g in wanted:
            by_model.setdefault(str(scans[g][key].model_file), []).append(g)
        for model_file, grans in by_model.items():
            specs = [(g, scans[g][key].patterns or None) for g in grans]
            try:
                updates = compute_weight_updates_for_maps(info.exp_dir, specs, final_file=model_file)
            except WeightUpdateError as e:
                if not allow_missing:
                    raise AnalysisInputError(str(e)) from None
                for g in grans:
                    problems[g][key] = str(e)
                continue
            if info.num_blocks is None:
                info.num_blocks = updates[0].num_blocks.get("encoder")
            if info.output_size is None:
                info.output_size = updates[0].encoder_output_size
            for g, u in zip(grans, updates):
                analysed[g].append((info, scans[g][key], u))
    return analysed


def _collection(granularity: str, dataset: str, analysed: Sequence[Tuple[RunInfo, ScanData, RunUpdates]],
                skipped: Dict[str, str]) -> Collection:
    """The runs of one granularity joined with their outcomes, by size, norm, then seed.

    Raises:
        AnalysisInputError: No run left.
    """
    runs = [AnalyzedRun(i, s, u, outcome_of(i, s, u)) for i, s, u in analysed]
    if not runs:
        raise AnalysisInputError(f"no run left to analyse at granularity {granularity!r}: "
                                 + "; ".join(skipped.values()))
    big = float("inf")
    runs.sort(key=lambda r: (r.info.num_blocks if r.info.num_blocks is not None else big,
                             r.info.output_size if r.info.output_size is not None else big,
                             r.info.norm, r.info.seed is None, r.info.seed or 0, r.info.name))
    first = runs[0].scan
    return Collection(runs=runs, skipped=skipped, notes=_config_notes([r.info for r in runs]),
                      granularity=granularity, dataset=dataset, metric=first.metric,
                      criterion=first.criterion)
