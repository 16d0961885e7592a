"""The depth sweep: do ambient blocks appear as encoders get deeper?

:func:`run_depth_analysis` reads the runs of a depth sweep (Conformers of several block counts,
batch and group norm, several seeds; ``egs2/synth_en/asr1/run_depth.sh``) through
:func:`~espnet_ext.analysis.cross_run.collect_runs_multi` (config.yaml via ExperimentDir, the
stage-6 scans via ScanResult, the weight updates) and the decoding scores of stage 5
(``<exp_dir>/decode_*/<set>/scores.json``, read as RESULTS.md reads them), and writes into
``out_dir``:

* ``depth.json``: every number below, per setup (norm x encoder blocks x dimension);
* ``depth.md``: the same as tables;
* ``depth_ambient_fraction.png``: fraction of ambient groups per kind vs encoder blocks, one
  panel per norm, one line per kind (mean over seeds; dots: the seeds);
* ``depth_ambient_positions.png``: where the ambient blocks sit, x = normalized depth
  (block index / (blocks - 1)), one row per depth, one panel per norm.

Per setup:

* **fraction ambient per kind** at the analysed reset (default: each scan's reference reset,
  re-initialization to the smallest tau scanned; or re-initialization to a given tau, or
  re-randomization, for the same question at the scan's other resets): per run, ambient groups /
  groups of that kind among the encoder blocks' groups (``enc_block`` at block granularity;
  ``enc_self_attn``, ``enc_feed_forward``, ``enc_feed_forward_macaron``, ``enc_conv_module``,
  ``enc_norms``... at sub-module granularity), its mean over seeds, and the number of uncertain
  labels (interval straddling the threshold, scan column ``label_ci``; None for scans without
  intervals). Groups
  outside the blocks (embedding, final norm, CTC) do not grow with depth and are left out;
* **block positions**: each block's normalized depth and its mark (``uncertain`` when its interval
  straddles the threshold, else ``ambient`` or ``critical``), from the block-granularity scan;
* **error rates** of the trained models: CER and WER (percent) per decoded set, per seed and mean;
* **stability across seeds**: mean pairwise Jaccard of ambient sets (with its chance level and
  without uncertain labels) and mean Spearman of reset deltas
  (:func:`espnet_ext.analysis.stability.seed_stability`);
* **weight update vs reset delta**: Spearman per run and pooled over the setup's runs
  (:func:`espnet_ext.analysis.stability.update_vs_delta`);
* **training time** per run: epochs, median and summed epoch time (training + validation,
  seconds) from ESPnet's reporter in ``checkpoint.pth``
  (:meth:`~espnet_ext.experiment.experiment_dir.ExperimentDir.epoch_seconds`), which survives a
  training that was interrupted and resumed.

A run that did not learn is no evidence about its layers: resetting a layer of a model whose
error is already near 100% barely changes it, so every layer would read ambient. Runs whose scan
baseline (the trained model's error on the scanned set, the ambient rule's metric) is above
``max_base_error`` percent are therefore left out of everything above and listed on their own
with their error rates (``not_converged`` in depth.json).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_ext.analysis import analysis_report as rep
from espnet_ext.analysis import stability as st
from espnet_ext.analysis.cross_run import AnalysisInputError, AnalyzedRun, Collection, collect_runs_multi
from espnet_ext.reporting.tables import markdown_table
from espnet_ext.scan.labels import AmbientCriterion
from espnet_ext.scan.result import REINIT, RERANDOMIZE, variant_title
from espnet_ext.utils.atomic import write_text_atomic

#: The granularity whose ``enc_block`` groups give the block positions.
BLOCK_GRANULARITY = "block"
#: Marks of a block in the positions list and figure, in legend order.
MARKS = ("ambient", "critical", "uncertain")
#: Error rates read from each decoding's scores.json (percent).
METRICS = ("CER", "WER")
#: Figure file names.
FRACTION_FIGURE = "depth_ambient_fraction.png"
POSITIONS_FIGURE = "depth_ambient_positions.png"
DELTA_FIGURE = "depth_block_delta.png"


@dataclasses.dataclass
class DepthOptions:
    """What the depth analysis reads and where it writes.

    Attributes:
        exp_dir: The recipe's experiment dir (``exp``).
        runs_glob: Glob of the sweep's run dirs inside exp_dir
            (``asr_train_asr_conformer*_[0-9]*x64_seed*``).
        dataset: Scanned data set (``dev``).
        out_dir: Output dir (``exp/analysis_depth_dev``).
        granularities: Scan granularities read (the block positions need ``block``).
        tau: Reset analysed: re-initialization to this tau; None: each scan's reference reset
            (re-initialization to the smallest tau scanned), or with ``mode`` reinit the smallest
            tau scanned.
        mode: Reset mode analysed (``reinit``/``rerandomize``); None: ``reinit`` when `tau` is
            given, else each scan's reference reset.
        reset_seed: Seed of the ``rerandomize`` reset; None: each run's first.
        decode_sets: Decoded data sets whose error rates are reported; None: every set decoded.
        decode_tag: The decoding dir (``decode_asr_valid.acc.ave``) when a run has several;
            None: each run's only one.
        depth_bins: Normalized-depth bins of the cross-run comparison (only used when the runs of
            one setup have different groups).
        allow_missing: Skip runs without a scan or checkpoints instead of failing.
        max_base_error: Runs whose scan baseline on `dataset` is above this (percent, the ambient
            rule's metric) did not converge and are left out of the analysis (listed apart);
            None: keep every run.
    """

    exp_dir: Path
    runs_glob: str
    dataset: str
    out_dir: Path
    granularities: Sequence[str] = ("block", "submodule")
    tau: Optional[int] = None
    mode: Optional[str] = None
    reset_seed: Optional[int] = None
    decode_sets: Optional[Sequence[str]] = None
    decode_tag: Optional[str] = None
    depth_bins: int = 4
    allow_missing: bool = False
    max_base_error: Optional[float] = 50.0

    def reset(self) -> Tuple[Optional[str], Optional[int]]:
        """(mode, tau or seed) of the reset analysed; (None, None): each scan's reference reset.

        Raises:
            ValueError: `tau` with the ``rerandomize`` mode, `reset_seed` without it, or an
                unknown mode.
        """
        mode = self.mode if self.mode is not None else (REINIT if self.tau is not None else None)
        if mode not in (None, REINIT, RERANDOMIZE):
            raise ValueError(f"unknown reset mode {mode!r}: use {REINIT} or {RERANDOMIZE}")
        if mode == RERANDOMIZE:
            if self.tau is not None:
                raise ValueError("tau selects a re-initialization: it does not go with the "
                                 f"{RERANDOMIZE} mode (use reset_seed)")
            return mode, self.reset_seed
        if self.reset_seed is not None:
            raise ValueError(f"reset_seed selects a re-randomization: it needs the {RERANDOMIZE} mode")
        return mode, self.tau


@dataclasses.dataclass(frozen=True)
class SeedFraction:
    """One run's ambient groups of one kind.

    Attributes:
        run: Run name.
        seed: Training seed.
        groups: Groups of the kind (one per block).
        ambient: Of these, labelled ambient.
        uncertain: Of these, with an interval straddling the threshold; None when the scan has
            no intervals.
        fraction: ambient / groups (0..1).
    """

    run: str
    seed: Optional[int]
    groups: int
    ambient: int
    uncertain: Optional[int]
    fraction: float


@dataclasses.dataclass(frozen=True)
class KindFraction:
    """Fraction of ambient groups of one kind in one setup.

    Attributes:
        granularity: Scan granularity the kind comes from.
        kind: Group kind (``enc_block``, ``enc_self_attn``...).
        mean: Mean over seeds of the per-run fraction (0..1).
        per_seed: The runs, by seed.
    """

    granularity: str
    kind: str
    mean: float
    per_seed: Tuple[SeedFraction, ...]


@dataclasses.dataclass(frozen=True)
class BlockPosition:
    """One encoder block of one run in normalized depth.

    Attributes:
        block: Block index (0-based).
        position: block / (blocks - 1), in [0, 1] (0 for a one-block encoder).
        ambient: The scan's label.
        uncertain: Its interval straddles the ambient threshold.
        delta: Error change after the reset, percentage points (the scans' metric).
        tolerance: The run's ambient tolerance, percentage points (the largest change the rule
            calls ambient at the run's baseline error); NaN when the scan has no rule recorded.
    """

    block: int
    position: float
    ambient: bool
    uncertain: bool
    delta: float
    tolerance: float = math.nan

    @property
    def mark(self) -> str:
        """``uncertain`` (the label could not be decided), else ``ambient`` or ``critical``."""
        return "uncertain" if self.uncertain else "ambient" if self.ambient else "critical"


@dataclasses.dataclass(frozen=True)
class RunPositions:
    """The blocks of one run in normalized depth."""

    run: str
    seed: Optional[int]
    blocks: Tuple[BlockPosition, ...]

    def ambient_positions(self) -> List[float]:
        return [b.position for b in self.blocks if b.mark == "ambient"]

    def delta_in_tolerances(self) -> List[Tuple[float, float]]:
        """(normalized depth, error change / ambient tolerance) per block: 1 is the threshold.

        Blocks whose run has no positive tolerance recorded (NaN, or a 0-point rule) are left out.
        """
        return [(b.position, b.delta / b.tolerance) for b in self.blocks if b.tolerance > 0]


@dataclasses.dataclass(frozen=True)
class ErrorRate:
    """One error rate of one setup on one decoded set.

    Attributes:
        dataset: Decoded data set.
        metric: ``CER`` or ``WER``.
        mean: Mean over the seeds decoded (percent); NaN when none was.
        per_seed: {run name: percent} of the runs decoded.
    """

    dataset: str
    metric: str
    mean: float
    per_seed: Dict[str, float]


@dataclasses.dataclass(frozen=True)
class UpdateCorrelation:
    """Spearman of weight update vs reset delta: per run and over the setup's runs together."""

    per_run: Dict[str, st.Correlation]
    pooled: st.Correlation


@dataclasses.dataclass(frozen=True)
class TrainingTime:
    """How long one run's training took, from its epochs' times.

    Attributes:
        run: Run name.
        epochs: Epochs finished.
        median_epoch_s: Median epoch time (training + validation), seconds: robust to epochs that
            shared the machine or were paused.
        min_epoch_s: The fastest epoch, seconds: the closest to an idle machine's epoch when the
            run shared it.
        total_s: Sum of the epoch times, seconds (start-up and lost partial epochs not included).
    """

    run: str
    epochs: int
    median_epoch_s: float
    min_epoch_s: float
    total_s: float


@dataclasses.dataclass(frozen=True)
class NotConverged:
    """A run left out of the analysis because its trained model's error is too high.

    Attributes:
        run: Run name.
        norm, num_blocks, output_size, seed: Its setup and seed.
        metric: The ambient rule's metric (``CER``/``WER``).
        base_error: The scan baseline on the analysed set, percent.
        error_rates: Its decodings: {set: {metric: percent}}.
    """

    run: str
    norm: str
    num_blocks: Optional[int]
    output_size: Optional[int]
    seed: Optional[int]
    metric: str
    base_error: float
    error_rates: Dict[str, Dict[str, float]]


@dataclasses.dataclass
class DepthSetup:
    """Everything the depth analysis says about one setup (norm x blocks x dimension).

    Attributes:
        norm: Conv-module norm (``batch_norm``, ``group_norm``...).
        num_blocks: Encoder blocks (the depth).
        output_size: Encoder dimension.
        runs: {run name: seed}, by seed.
        fractions: Per granularity, the ambient fraction of each in-block kind (layer order).
        positions: Per run, its blocks in normalized depth (block granularity; empty without it).
        error_rates: Per decoded set and metric.
        stability: Per granularity, the agreement across seeds.
        updates: Per granularity, weight update vs reset delta.
        training: Per run (by seed), its training time; runs without epoch times left out.
    """

    norm: str
    num_blocks: Optional[int]
    output_size: Optional[int]
    runs: Dict[str, Optional[int]]
    fractions: Dict[str, List[KindFraction]]
    positions: List[RunPositions]
    error_rates: List[ErrorRate]
    stability: Dict[str, st.SeedStability]
    updates: Dict[str, UpdateCorrelation]
    training: List[TrainingTime] = dataclasses.field(default_factory=list)

    @property
    def setup(self) -> str:
        """``<norm> <blocks>x<dimension>`` as the cross-run analysis names it."""
        return f"{self.norm} {self.num_blocks if self.num_blocks is not None else '?'}x" \
               f"{self.output_size if self.output_size is not None else '?'}"


@dataclasses.dataclass
class DepthResult:
    """The written analysis: the setups, the files, the runs left out."""

    setups: List[DepthSetup]
    out_dir: Path
    figures: List[Path]
    skipped: Dict[str, str]
    notes: List[str]
    not_converged: List[NotConverged] = dataclasses.field(default_factory=list)


# ----------------------------------------------------------------------------- per run
def _in_block_layers(run: AnalyzedRun) -> List[st.LayerOutcome]:
    """The run's encoder-block groups (what grows with depth)."""
    return [g for g in run.outcome.layers if g.block is not None and g.kind.startswith("enc_")]


def _has_intervals(run: AnalyzedRun) -> bool:
    return any(r.label_ci for r in run.scan.reset_rows())


def kind_counts(run: AnalyzedRun) -> Dict[str, SeedFraction]:
    """Per in-block kind (layer order): the run's groups, ambient and uncertain counts."""
    by_kind: Dict[str, List[st.LayerOutcome]] = {}
    for g in _in_block_layers(run):
        by_kind.setdefault(g.kind, []).append(g)
    intervals = _has_intervals(run)
    return {kind: SeedFraction(
        run=run.info.name, seed=run.info.seed, groups=len(gs), ambient=sum(g.ambient for g in gs),
        uncertain=sum(g.uncertain for g in gs) if intervals else None,
        fraction=sum(g.ambient for g in gs) / len(gs)) for kind, gs in by_kind.items()}


def normalized_depth(block: int, num_blocks: int) -> float:
    """block / (num_blocks - 1): 0 for the first block, 1 for the last (0 with one block)."""
    if not 0 <= block < num_blocks:
        raise ValueError(f"block {block} is outside 0..{num_blocks - 1}")
    return block / (num_blocks - 1) if num_blocks > 1 else 0.0


def _tolerance(run: AnalyzedRun) -> float:
    """The run's ambient tolerance in points at its scan baseline (NaN without a recorded rule)."""
    baseline = run.scan.baseline.get(run.scan.metric.upper())
    if not run.scan.criterion or baseline is None:
        return math.nan
    return AmbientCriterion(**run.scan.criterion).tolerance(baseline)


def block_positions(run: AnalyzedRun) -> RunPositions:
    """The run's ``enc_block`` groups in normalized depth (its depth: config.yaml's num_blocks)."""
    blocks = [g for g in _in_block_layers(run) if g.kind == "enc_block"]
    tolerance = _tolerance(run)
    out = []
    for g in blocks:
        n = run.info.num_blocks or g.num_blocks or len(blocks)
        out.append(BlockPosition(g.block, normalized_depth(g.block, n), g.ambient, g.uncertain, g.delta,
                                 tolerance))
    return RunPositions(run.info.name, run.info.seed, tuple(out))


# ----------------------------------------------------------------------------- error rates
def decode_error_rates(exp_dir: Path, datasets: Optional[Sequence[str]] = None,
                       decode_tag: Optional[str] = None) -> Dict[str, Dict[str, float]]:
    """A run's error rates from its decodings (``<exp_dir>/decode_*/<set>/scores.json``).

    Args:
        exp_dir: The run.
        datasets: Sets to read; None: every set decoded. A set not decoded is left out.
        decode_tag: The decoding dir to read; None: the run's only one for each set.

    Returns:
        {set: {"CER": percent, "WER": percent}}.

    Raises:
        AnalysisInputError: A set decoded in several dirs and no `decode_tag` to choose.
    """
    from espnet_ext.evaluation.scoring import load_scores

    found: Dict[str, List[Path]] = {}
    for f in sorted(Path(exp_dir).glob(f"{decode_tag or 'decode_*'}/*/scores.json")):
        found.setdefault(f.parent.name, []).append(f)
    out = {}
    for dataset in (datasets if datasets is not None else sorted(found)):
        files = found.get(dataset, [])
        if len(files) > 1:
            tags = ", ".join(f.parent.parent.name for f in files)
            raise AnalysisInputError(
                f"{exp_dir}: {dataset} was decoded in several dirs ({tags}); choose one with "
                "--decode_tag")
        if files:
            scores = load_scores(files[0])
            out[dataset] = {m: scores[m].error_rate for m in METRICS if m in scores}
    return out


def _error_rates(runs: Sequence[str], rates: Dict[str, Dict[str, Dict[str, float]]],
                 datasets: Sequence[str]) -> List[ErrorRate]:
    out = []
    for dataset in datasets:
        for metric in METRICS:
            per_seed = {r: rates[r][dataset][metric] for r in runs
                        if metric in rates.get(r, {}).get(dataset, {})}
            out.append(ErrorRate(dataset, metric,
                                 statistics.fmean(per_seed.values()) if per_seed else math.nan, per_seed))
    return out


def training_time(run: AnalyzedRun) -> Optional[TrainingTime]:
    """The run's epochs and their times (None when its checkpoint.pth has none)."""
    from espnet_ext.experiment.experiment_dir import ExperimentDir

    times = ExperimentDir(run.info.exp_dir).epoch_seconds()
    if not times:
        return None
    return TrainingTime(run.info.name, len(times), statistics.median(times.values()),
                        min(times.values()), sum(times.values()))


# ----------------------------------------------------------------------------- convergence
def split_not_converged(collections: Dict[str, Collection], max_base_error: Optional[float],
                        rates: Dict[str, Dict[str, Dict[str, float]]]
                        ) -> Tuple[Dict[str, Collection], List[NotConverged]]:
    """Leave out the runs whose scan baseline is above `max_base_error` percent.

    A run is left out of every granularity when any of its scans is above the limit.

    Args:
        collections: {granularity: its runs}.
        max_base_error: The limit (percent, each scan's metric); None: keep every run.
        rates: {run name: {set: {metric: percent}}}, reported for the runs left out.

    Returns:
        ({granularity: the runs kept}, the runs left out, in the collections' order).

    Raises:
        AnalysisInputError: No run is left in any granularity.
    """
    if max_base_error is None:
        return collections, []
    out: Dict[str, NotConverged] = {}
    for coll in collections.values():
        for r in coll.runs:
            metric = coll.metric.upper()
            base = r.scan.baseline.get(metric)
            if base is not None and base > max_base_error and r.info.name not in out:
                out[r.info.name] = NotConverged(
                    r.info.name, r.info.norm, r.info.num_blocks, r.info.output_size, r.info.seed,
                    metric, base, rates.get(r.info.name, {}))
    kept = {g: dataclasses.replace(c, runs=[r for r in c.runs if r.info.name not in out])
            for g, c in collections.items()}
    kept = {g: c for g, c in kept.items() if c.runs}
    if not kept:
        raise AnalysisInputError(
            f"every run's scan baseline is above --max_base_error {max_base_error:g}% "
            f"({', '.join(f'{n.run}: {n.metric} {n.base_error:g}%' for n in out.values())}): no "
            "trained model to analyse; train longer, or raise the limit if these error rates are "
            "what a converged model gets on this data")
    return kept, list(out.values())


# ----------------------------------------------------------------------------- per setup
SetupKey = Tuple[str, Optional[int], Optional[int]]


def _setup_key(run: AnalyzedRun) -> SetupKey:
    return (run.info.norm, run.info.num_blocks, run.info.output_size)


def _by_seed(runs: Sequence[AnalyzedRun]) -> List[AnalyzedRun]:
    return sorted(runs, key=lambda r: (r.info.seed is None, r.info.seed or 0, r.info.name))


def _fractions(runs: Sequence[AnalyzedRun], granularity: str) -> List[KindFraction]:
    per_run = [kind_counts(r) for r in runs]
    kinds: List[str] = []
    for counts in per_run:
        kinds += [k for k in counts if k not in kinds]
    out = []
    for kind in kinds:
        seeds = tuple(c[kind] for c in per_run if kind in c)
        out.append(KindFraction(granularity, kind, statistics.fmean(s.fraction for s in seeds), seeds))
    return out


def depth_setups(collections: Dict[str, Collection], rates: Dict[str, Dict[str, Dict[str, float]]],
                 datasets: Sequence[str], depth_bins: int = 4) -> List[DepthSetup]:
    """The setups of a depth sweep, by norm then depth.

    Args:
        collections: {granularity: its runs} (:func:`~espnet_ext.analysis.cross_run.collect_runs_multi`).
        rates: {run name: {set: {metric: percent}}} (:func:`decode_error_rates`).
        datasets: Decoded sets to report, in order.
        depth_bins: Bins of :func:`~espnet_ext.analysis.stability.seed_stability`.
    """
    grouped: Dict[SetupKey, Dict[str, List[AnalyzedRun]]] = {}
    for granularity, coll in collections.items():
        for run in coll.runs:
            grouped.setdefault(_setup_key(run), {}).setdefault(granularity, []).append(run)
    big = float("inf")
    out = []
    for key in sorted(grouped, key=lambda k: (k[0], k[1] if k[1] is not None else big,
                                              k[2] if k[2] is not None else big)):
        norm, num_blocks, output_size = key
        by_gran = {g: _by_seed(runs) for g, runs in grouped[key].items()}
        # The setup's runs, each once (a run has one entry per granularity scanned), by seed.
        unique = _by_seed(list({r.info.name: r for runs in by_gran.values() for r in runs}.values()))
        names = {r.info.name: r.info.seed for r in unique}
        stability, updates = {}, {}
        for g, runs in by_gran.items():
            outcomes = [r.outcome for r in runs]
            stability[g] = st.seed_stability(outcomes, depth_bins)[0]
            updates[g] = UpdateCorrelation({o.name: st.update_vs_delta(o) for o in outcomes},
                                           st.pooled_update_vs_delta(outcomes))
        out.append(DepthSetup(
            norm=norm, num_blocks=num_blocks, output_size=output_size, runs=names,
            fractions={g: _fractions(runs, g) for g, runs in by_gran.items()},
            positions=[block_positions(r) for r in by_gran.get(BLOCK_GRANULARITY, [])],
            error_rates=_error_rates(list(names), rates, datasets),
            stability=stability, updates=updates,
            training=[t for t in map(training_time, unique) if t]))
    return out


# ----------------------------------------------------------------------------- outputs
def _fraction_cell(k: Optional[KindFraction]) -> str:
    """``0.50 (0.25, 0.75; ? 1, 0)``: mean fraction, per seed, uncertain counts per seed."""
    if k is None:
        return ""
    seeds = ", ".join(rep.fmt(s.fraction) for s in k.per_seed)
    if any(s.uncertain is not None for s in k.per_seed):
        seeds += "; ? " + ", ".join("-" if s.uncertain is None else str(s.uncertain) for s in k.per_seed)
    return f"{rep.fmt(k.mean)} ({seeds})"


def _rate_cell(setup: DepthSetup, dataset: str, metric: str) -> str:
    rate = next((e for e in setup.error_rates if e.dataset == dataset and e.metric == metric), None)
    if rate is None or not rate.per_seed:
        return "n/a"
    # One entry per seed, in the setup's seed order (n/a: that seed was not decoded).
    return f"{rep.fmt(rate.mean)} ({', '.join(rep.fmt(rate.per_seed.get(r)) for r in setup.runs)})"


def _markdown(setups: Sequence[DepthSetup], collections: Dict[str, Collection], opts: DepthOptions,
              datasets: Sequence[str], figures: Sequence[Path], skipped: Dict[str, str],
              notes: Sequence[str], not_converged: Sequence[NotConverged] = ()) -> str:
    first = next(iter(collections.values()))
    m = first.metric.upper()
    # Runs may differ in the reset read (e.g. each run's own re-randomization seed): name each once.
    resets = list(dict.fromkeys(r.scan.reset for coll in collections.values() for r in coll.runs))
    reset = ", ".join(f"{mode} {variant_title(mode, value)}" for mode, value in resets) \
        if opts.reset()[0] is not None else \
        "each scan's reference reset (re-initialization to the smallest tau scanned)"
    if opts.reset()[0] is not None and len(resets) > 1:
        reset += " (each run's own)"
    out = [f"# Depth sweep: ambient groups vs encoder depth on {opts.dataset}", ""]
    out.append(f"- Runs: `{opts.runs_glob}` in {opts.exp_dir}; reset: {reset}; ambient rule of the "
               f"scans: {rep.describe_rule(first.criterion)}.")
    out.append("- Fraction ambient: ambient groups / groups of the kind among the encoder blocks' "
               "groups, per seed, mean over seeds first; `?`: uncertain labels per seed (interval "
               "straddles the threshold; `-`: scan without intervals).")
    out.append("- Normalized depth of a block: block index / (blocks - 1).")
    out += [f"- Note: {n}" for n in notes]
    # A reason usually starts with its run's path: say it once.
    out += [f"- Skipped: {p} ({why.removeprefix(f'{p}: ')})" for p, why in skipped.items()]
    if opts.max_base_error is not None:
        out.append(f"- Left out as not converged: runs whose scan baseline on {opts.dataset} is above "
                   f"{opts.max_base_error:g}% ({len(not_converged)} run(s); table at the end).")
    head = ["norm", "blocks", "seeds"]
    for granularity in collections:
        kinds: List[str] = []
        for s in setups:
            for k in s.fractions.get(granularity, []):
                if k.kind not in kinds:
                    kinds.append(k.kind)
        if not kinds:
            continue
        out += ["", f"## Fraction of ambient groups: {granularity} granularity", "",
                "Cells: mean over seeds (per seed; ? uncertain per seed).", ""]
        rows = []
        for s in setups:
            by_kind = {k.kind: k for k in s.fractions.get(granularity, [])}
            rows.append([s.norm, s.num_blocks, len(s.runs)] + [_fraction_cell(by_kind.get(k)) for k in kinds])
        out += markdown_table(head + kinds, rows)

    if any(s.positions for s in setups):
        out += ["", "## Where the ambient blocks sit (normalized depth)", "",
                "Per run: the normalized depth of its ambient blocks (uncertain blocks in brackets).", ""]
        rows = []
        for s in setups:
            for p in s.positions:
                amb = ", ".join(f"{x:.2f}" for x in p.ambient_positions()) or "-"
                unsure = [f"{b.position:.2f}" for b in p.blocks if b.mark == "uncertain"]
                rows.append([s.norm, s.num_blocks, p.run, p.seed,
                             amb + (f" [{', '.join(unsure)}]" if unsure else "")])
        out += markdown_table(["norm", "blocks", "run", "seed", "ambient blocks at"], rows)

    out += ["", "## Error rates of the trained models", "",
            "Cells: mean over seeds (per seed), percent.", ""]
    out += markdown_table(head + [f"{d} {metric}" for d in datasets for metric in METRICS],
                          [[s.norm, s.num_blocks, len(s.runs)]
                           + [_rate_cell(s, d, metric) for d in datasets for metric in METRICS]
                           for s in setups])

    out += ["", "## Stability across seeds", ""]
    rows = []
    for s in setups:
        for g, stab in s.stability.items():
            rows.append([s.norm, s.num_blocks, g, len(stab.runs), rep.fmt(stab.mean_jaccard),
                         rep.fmt(stab.mean_chance_jaccard), rep.fmt(stab.mean_jaccard_decided),
                         rep.fmt(stab.mean_spearman)])
    out += markdown_table(["norm", "blocks", "granularity", "seeds", "mean Jaccard", "chance",
                           "mean Jaccard without uncertain", f"mean Spearman Δ{m}"], rows)

    out += ["", "## Weight update vs reset", "",
            f"Spearman(relative weight update, Δ{m}) over the groups: per run and pooled over the "
            "setup's runs.", ""]
    rows = []
    for s in setups:
        for g, u in s.updates.items():
            per_run = "; ".join(f"{name}: {rep.fmt_corr(c)}" for name, c in u.per_run.items())
            rows.append([s.norm, s.num_blocks, g, per_run, rep.fmt_corr(u.pooled)])
    out += markdown_table(["norm", "blocks", "granularity", "per run", "pooled"], rows)
    if any(s.training for s in setups):
        out += ["", "## Training time", "",
                "Per run: epochs finished, median and summed epoch time (training + validation, "
                "seconds; from ESPnet's reporter in checkpoint.pth), fastest epoch. The sum counts "
                "every second an epoch was running, also while the machine was shared or the run "
                "paused; the median is the typical epoch, the fastest the closest to an idle one.", ""]
        rows = [[s.norm, s.num_blocks, t.run, t.epochs, f"{t.median_epoch_s:.0f}", f"{t.total_s:.0f}",
                 f"{t.min_epoch_s:.0f}"] for s in setups for t in s.training]
        out += markdown_table(["norm", "blocks", "run", "epochs", "median epoch (s)", "sum (s)",
                               "fastest epoch (s)"], rows)

    if not_converged:
        out += ["", "## Runs left out: not converged", "",
                f"Scan baseline on {opts.dataset} above {opts.max_base_error:g}%: resetting a layer "
                "of such a model says nothing about the layer. Their decodings, percent:", ""]
        out += markdown_table(
            ["norm", "blocks", "run", "seed", f"scan baseline ({opts.dataset})"]
            + [f"{d} {metric}" for d in datasets for metric in METRICS],
            [[n.norm, n.num_blocks, n.run, n.seed, f"{n.metric} {rep.fmt(n.base_error)}"]
             + [rep.fmt(n.error_rates.get(d, {}).get(metric)) for d in datasets for metric in METRICS]
             for n in not_converged])
    out += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return "\n".join(out)


def _json(setups: Sequence[DepthSetup], collections: Dict[str, Collection], opts: DepthOptions,
          datasets: Sequence[str], figures: Sequence[Path], skipped: Dict[str, str],
          notes: Sequence[str], not_converged: Sequence[NotConverged] = ()) -> dict:
    first = next(iter(collections.values()))
    setup_json = []
    for s in setups:
        item = dataclasses.asdict(s)
        item["setup"] = s.setup
        item["positions"] = [{"run": p.run, "seed": p.seed,
                              "blocks": [dict(dataclasses.asdict(b), mark=b.mark) for b in p.blocks],
                              "ambient_positions": p.ambient_positions()} for p in s.positions]
        setup_json.append(item)
    return {
        "options": {"exp_dir": str(opts.exp_dir), "runs_glob": opts.runs_glob, "dataset": opts.dataset,
                    "granularities": list(collections), "mode": opts.reset()[0], "tau": opts.tau,
                    "reset_seed": opts.reset_seed, "decode_sets": list(datasets),
                    "decode_tag": opts.decode_tag, "metric": first.metric, "criterion": first.criterion,
                    "max_base_error": opts.max_base_error},
        "runs": {g: [{"name": r.info.name, "exp_dir": str(r.info.exp_dir), "norm": r.info.norm,
                      "num_blocks": r.info.num_blocks, "output_size": r.info.output_size,
                      "seed": r.info.seed, "scan_dir": str(r.scan.scan_dir),
                      "reset": {"mode": r.scan.reset[0], "value": r.scan.reset[1]}}
                     for r in coll.runs] for g, coll in collections.items()},
        "setups": setup_json,
        "figures": [p.name for p in figures],
        "skipped": skipped,
        "notes": list(notes),
        "not_converged": [dataclasses.asdict(n) for n in not_converged],
    }


def _draw_figures(setups: Sequence[DepthSetup], out_dir: Path) -> List[Path]:
    from espnet_ext.reporting.analysis_figures import (
        plot_ambient_fraction,
        plot_block_delta,
        plot_block_positions,
    )

    norms = list(dict.fromkeys(s.norm for s in setups))
    panels = []
    for norm in norms:
        lines: Dict[str, List[Tuple[float, float, List[float]]]] = {}
        for s in setups:
            if s.norm != norm or s.num_blocks is None:
                continue
            for fractions in s.fractions.values():
                for k in fractions:
                    lines.setdefault(k.kind, []).append(
                        (s.num_blocks, k.mean, [x.fraction for x in k.per_seed]))
        panels.append((norm, list(lines.items())))
    figures = [plot_ambient_fraction(panels, out_dir / FRACTION_FIGURE)]
    if any(s.positions for s in setups):
        position_panels = []
        for norm in norms:
            rows = [(f"{s.num_blocks} blocks",
                     [[(b.position, b.mark) for b in p.blocks] for p in s.positions])
                    for s in setups if s.norm == norm and s.positions]
            if rows:
                position_panels.append((norm, rows))
        figures.append(plot_block_positions(position_panels, out_dir / POSITIONS_FIGURE))
        delta_panels = []
        for norm in norms:
            rows = []
            for s in setups:
                seeds = [p.delta_in_tolerances() for p in s.positions] if s.norm == norm else []
                seeds = [points for points in seeds if points]
                if seeds:
                    rows.append((f"{s.num_blocks} blocks", seeds))
            if rows:
                delta_panels.append((norm, rows))
        if delta_panels:
            figures.append(plot_block_delta(delta_panels, out_dir / DELTA_FIGURE))
    for name in (POSITIONS_FIGURE, DELTA_FIGURE):
        if out_dir / name not in figures and (out_dir / name).exists():
            # An earlier analysis with the block scan drew it; depth.md must not link a stale one.
            (out_dir / name).unlink()
    return figures


def run_depth_analysis(opts: DepthOptions) -> DepthResult:
    """Collect the sweep's runs, compute the per-depth numbers, write depth.json/md and figures.

    Raises:
        AnalysisInputError: No run matches, runs lack scans or checkpoints (without
            ``allow_missing``), a set decoded in several dirs without ``decode_tag``.
        ValueError: Contradictory reset options (:meth:`DepthOptions.reset`).
    """
    from espnet_ext.utils.jsonable import jsonable

    mode, value = opts.reset()
    pattern = str(Path(opts.exp_dir) / opts.runs_glob)
    collections = collect_runs_multi([pattern], list(opts.granularities), opts.dataset, mode, value,
                                     opts.allow_missing)
    runs = {r.info.name: r.info.exp_dir for coll in collections.values() for r in coll.runs}
    rates = {name: decode_error_rates(path, opts.decode_sets, opts.decode_tag) for name, path in runs.items()}
    if opts.decode_sets is not None:
        datasets = list(opts.decode_sets)
    else:
        found = sorted({d for r in rates.values() for d in r})
        datasets = [d for d in [opts.dataset] if d in found] + [d for d in found if d != opts.dataset]
    skipped: Dict[str, str] = {}
    notes: List[str] = []
    for coll in collections.values():
        skipped.update(coll.skipped)
        notes += [n for n in coll.notes if n not in notes]
    undecoded = [name for name, r in rates.items() if not r]
    if undecoded:
        notes.append(f"no decoding scores (stage 5) for {', '.join(sorted(undecoded))}")
    collections, not_converged = split_not_converged(collections, opts.max_base_error, rates)
    setups = depth_setups(collections, rates, datasets, opts.depth_bins)
    out_dir = Path(opts.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = _draw_figures(setups, out_dir)
    write_text_atomic(out_dir / "depth.md", _markdown(setups, collections, opts, datasets, figures,
                                                      skipped, notes, not_converged))
    payload = _json(setups, collections, opts, datasets, figures, skipped, notes, not_converged)
    write_text_atomic(out_dir / "depth.json", json.dumps(jsonable(payload), indent=1) + "\n")
    return DepthResult(setups, out_dir, figures, skipped, notes, not_converged)
