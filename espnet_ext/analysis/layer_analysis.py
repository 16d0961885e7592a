"""Stage 7: ambient layers across runs and sizes, and weight updates vs reset robustness.

:func:`run_layer_analysis` reads finished runs (config.yaml, kept checkpoints, the stage-6
layer-reset scan; see :mod:`espnet_ext.analysis.cross_run`) and writes into ``out_dir``:

* ``analysis.md``: runs; stability across seeds (Jaccard of ambient sets, Spearman of reset
  deltas); every pair of runs; batch vs group norm side by side; outcomes by group kind and by
  normalized depth (sizes side by side); weight update vs reset delta; a factual reading;
* ``analysis.json``: the same numbers, the options and every figure's file name;
* ``weight_updates.tsv`` (one row per run x group) and ``trajectories.tsv`` (run x group x epoch);
* figures: ``heatmap_seeds_<setup>.png`` (setups, i.e. norm x size, with several seeds; one panel per seed:
  groups x resets, colour = error change), ``stability_jaccard.png`` and
  ``stability_spearman.png`` (runs x runs, with three runs or more),
  ``depth_profile.png`` (cells x setups), ``update_vs_delta.png`` and ``trajectories.png``
  (one row per run).

Cheap next to a scan: only state dicts are loaded, one checkpoint at a time; no model is built
and ESPnet's ASR task is not imported, except once per run whose checkpoint 0 is reconstructed
from config.yaml (stored, so only the first analysis pays for it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from espnet_ext.analysis import analysis_report as rep
from espnet_ext.analysis import stability as st
from espnet_ext.analysis.cross_run import AnalyzedRun, Collection, collect_runs_multi
from espnet_ext.reporting.tables import markdown_table
from espnet_ext.scan.result import REINIT, RERANDOMIZE, variant_title
from espnet_ext.utils.atomic import write_text_atomic
from espnet_ext.utils.jsonable import jsonable


@dataclasses.dataclass
class AnalysisOptions:
    """What to analyse.

    Attributes:
        exp_dirs: Experiment dirs or glob patterns (``exp/asr_*``).
        granularities: Scan granularities (``block``, ``submodule``, ...; a single string is
            accepted). Several are analysed in one pass over the checkpoints.
        dataset: Scanned data set (data dir name, e.g. ``dev``).
        out_dir: Output dir; ``{granularity}`` in it is replaced by the granularity (required
            with several granularities, e.g. ``exp/analysis_{granularity}_dev``).
        mode: Reset analysed: ``reinit``/``rerandomize``, or None for each scan's reference
            reset (re-initialization to the smallest tau scanned).
        value: tau (reinit) or seed (rerandomize); None: the smallest scanned.
        depth_bins: Normalized-depth bins for comparisons across sizes.
        allow_missing: Skip runs lacking a scan or checkpoints instead of failing.
    """

    exp_dirs: Sequence[str]
    granularities: Union[str, Sequence[str]]
    dataset: str
    out_dir: Union[str, Path]
    mode: Optional[str] = None
    value: Optional[int] = None
    depth_bins: int = 4
    allow_missing: bool = False

    def __post_init__(self):
        if isinstance(self.granularities, str):
            self.granularities = [self.granularities]
        self.granularities = list(dict.fromkeys(self.granularities))

    def out_dir_for(self, granularity: str) -> Path:
        """The output dir of one granularity.

        Raises:
            ValueError: Several granularities but no ``{granularity}`` in out_dir.
        """
        text = str(self.out_dir)
        if "{granularity}" not in text and len(self.granularities) > 1:
            raise ValueError(
                f"out_dir {text!r} holds one analysis, but {len(self.granularities)} granularities "
                "are asked for: put {granularity} in it, e.g. exp/analysis_{granularity}_dev")
        return Path(text.replace("{granularity}", granularity))


@dataclasses.dataclass
class AnalysisResult:
    """One granularity's analysis: where the outputs are, the reading, the time taken.

    Attributes:
        granularity: The granularity analysed.
        out_dir: Its output dir.
        reading: The factual reading (also in analysis.md).
        figures: PNG files written.
        skipped: {path: reason} of paths left out.
        seconds: Time for statistics, figures and reports (reading the checkpoints and scans,
            shared by all granularities, not included).
    """

    granularity: str
    out_dir: Path
    reading: List[str]
    figures: List[Path]
    skipped: Dict[str, str]
    seconds: float


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _uncertain_text(run: AnalyzedRun) -> str:
    """Uncertain labels of a run (``-`` when its scan has no intervals)."""
    if not any(r.label_ci for r in run.scan.reset_rows()):
        return "-"
    return str(len(run.outcome.uncertain_set()))


def _reset_text(run: AnalyzedRun) -> str:
    mode, value = run.scan.reset
    return f"{mode} {variant_title(mode, value)}"


# ----------------------------------------------------------------------------------- figures
def _seed_heatmaps(coll: Collection, out_dir: Path) -> List[Path]:
    """Per setup with several seeds, one panel per seed: groups x resets, colour = error change."""
    from espnet_ext.reporting.figures import HeatmapPanel, plot_heatmap

    metric = coll.metric
    paths = []
    by_setup: Dict[str, List[AnalyzedRun]] = {}
    for r in coll.runs:
        by_setup.setdefault(r.info.setup, []).append(r)
    for setup, members in by_setup.items():
        if len(members) < 2:
            continue  # one seed: the scan's own heatmap_<mode>_<set>.png shows it already
        groups = [g.group for g in members[0].outcome.layers]
        taus = sorted(set.intersection(*[{x.tau for x in m.scan.rows if x.mode == REINIT} for m in members]))
        with_rr = all(any(x.mode == RERANDOMIZE for x in m.scan.rows) for m in members)
        cols = [f"tau={t}" for t in taus] + (["rerand"] if with_rr else [])
        panels = []
        for m in members:
            first_seed = min((x.seed for x in m.scan.rows if x.mode == RERANDOMIZE), default=None)
            cell = {}
            for x in m.scan.rows:
                if x.mode == REINIT:
                    cell[(x.group, f"tau={x.tau}")] = x
                elif x.seed == first_seed:
                    cell[(x.group, "rerand")] = x
            values = [[(cell[(g, c)].delta_cer if metric == "cer" else cell[(g, c)].delta_wer)
                       if (g, c) in cell else math.nan for c in cols] for g in groups]
            frame = [[(g, c) in cell and cell[(g, c)].label == "ambient" for c in cols] for g in groups]
            unsure = [[(g, c) in cell and cell[(g, c)].label_ci == "uncertain" for c in cols] for g in groups]
            panels.append(HeatmapPanel(values, frame, unsure, f"{m.info.name} (seed {m.info.seed})"))
        if not cols:
            continue
        paths.append(plot_heatmap(
            panels, groups, cols, out_dir / f"heatmap_seeds_{_slug(setup)}.png",
            title=(f"{setup} on {coll.dataset}: {metric.upper()} change after reset "
                   "(points; framed: ambient" + ("; ?: uncertain)" if any(any(map(any, p.uncertain))
                                                                          for p in panels) else ")")),
            colorbar_label=f"Δ{metric.upper()} (points)", xlabel="reset"))
    return paths


def _matrix(names, pairs, attr) -> List[List[float]]:
    idx = {n: i for i, n in enumerate(names)}
    m = [[math.nan] * len(names) for _ in names]
    for i in range(len(names)):
        m[i][i] = 1.0
    for p in pairs:
        v = p.jaccard if attr == "jaccard" else p.spearman.rho
        m[idx[p.a]][idx[p.b]] = m[idx[p.b]][idx[p.a]] = v
    return m


#: Names of the figures this module writes (glob patterns).
FIGURE_PATTERNS = ("heatmap_seeds_*.png", "stability_jaccard.png", "stability_spearman.png",
                   "depth_profile.png", "update_vs_delta.png", "trajectories.png")


def _remove_stale_figures(out_dir: Path, written: Sequence[Path]) -> None:
    """Delete figures of an earlier analysis in out_dir that this one did not redraw (e.g. a
    seed heatmap of a run no longer analysed), so that the dir matches analysis.md."""
    keep = {Path(p).name for p in written}
    for pattern in FIGURE_PATTERNS:
        for path in out_dir.glob(pattern):
            if path.name not in keep:
                path.unlink()


# ----------------------------------------------------------------------------------- outputs
def _updates_tsv(coll: Collection) -> str:
    head = ["run", "variant", "seed", "group", "kind", "block", "depth", "numel", "init_norm",
            "final_norm", "abs_update", "rel_update", "reset_update", "delta", "label"]
    lines = ["\t".join(head)]
    for r in coll.runs:
        outcome = {g.group: g for g in r.outcome.layers}
        for u in r.updates.groups:
            o = outcome.get(u.group)
            cells = [r.info.name, r.info.setup, "" if r.info.seed is None else str(r.info.seed),
                     u.group, u.kind, "" if u.block is None else str(u.block),
                     "" if u.depth is None else f"{u.depth:.4f}", str(u.numel),
                     f"{u.init_norm:.6g}", f"{u.final_norm:.6g}", f"{u.abs_update:.6g}",
                     f"{u.rel_update:.6g}", "" if o is None else f"{o.update:.6g}",
                     "" if o is None else f"{o.delta:.4f}",
                     "" if o is None else ("ambient" if o.ambient else "critical")]
            lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


def _trajectories_tsv(coll: Collection) -> str:
    lines = ["\t".join(["run", "group", "epoch", "from_init", "to_final", "abs_from_init", "abs_to_final"])]
    for r in coll.runs:
        for u in r.updates.groups:
            for i, e in enumerate(r.updates.epochs):
                lines.append("\t".join([r.info.name, u.group, str(e), f"{u.from_init[i]:.6g}",
                                        f"{u.to_final[i]:.6g}", f"{u.abs_from_init[i]:.6g}",
                                        f"{u.abs_to_final[i]:.6g}"]))
    return "\n".join(lines) + "\n"


def run_layer_analysis(opts: AnalysisOptions) -> List[AnalysisResult]:
    """Analyse finished runs and write the outputs listed in the module doc, per granularity.

    Returns:
        One :class:`AnalysisResult` per granularity, in order.

    Raises:
        AnalysisInputError: Runs lacking a scan/checkpoints (says which stage makes them),
            scans with different ambient rules, a reset that was not scanned.
        ArchitectureMismatchError: A checkpoint does not match its run's model.
        ValueError: depth_bins < 1, or several granularities for one out_dir.
    """
    if opts.depth_bins < 1:
        raise ValueError(f"depth_bins must be >= 1, got {opts.depth_bins}")
    out_dirs = [opts.out_dir_for(g) for g in opts.granularities]
    t0 = time.perf_counter()
    collections = collect_runs_multi(opts.exp_dirs, opts.granularities, opts.dataset, opts.mode,
                                     opts.value, opts.allow_missing)
    t_collect = time.perf_counter() - t0
    return [analyse_collection(coll, out_dir, opts, t_collect)
            for coll, out_dir in zip(collections.values(), out_dirs)]


@dataclasses.dataclass
class _Statistics:
    """Every number of one granularity's analysis (see :mod:`espnet_ext.analysis.stability`).

    Attributes:
        outcomes: One outcome per run, in the collection's order.
        run_setup: {run name: its setup, ``<norm> <size>``}.
        setups: Setups in order of first appearance.
        setup_norm: {setup: its conv-module norm}.
        seed_stability: Agreement across seeds, per setup.
        pairs: Every pair of runs; `cross` the pairs of different setups.
        pair_kinds: Agreement by kind of pair (same setup, other norm, other size...).
        norm_sizes: {size: setups of that size with different norms}.
        kind_table, depth_table, group_table: Outcomes pooled over seeds per setup, by group
            kind, by (kind, depth bin) and by group.
        per_run_update, pooled_update, median_updates: Weight update vs reset delta.
        reading: The factual reading (lines of text).
    """

    outcomes: list
    run_setup: Dict[str, str]
    setups: List[str]
    setup_norm: Dict[str, str]
    seed_stability: list
    pairs: list
    cross: list
    pair_kinds: dict
    norm_sizes: dict
    kind_table: dict
    depth_table: dict
    group_table: dict
    per_run_update: dict
    pooled_update: object
    median_updates: dict
    reading: list


def _compute_statistics(coll: Collection, nb: int) -> _Statistics:
    """Stability across seeds and runs, pooled tables and weight-update correlations."""
    outcomes = [r.outcome for r in coll.runs]
    run_setup = {o.name: o.setup for o in outcomes}
    setup_norm = {o.setup: o.norm for o in outcomes}
    seed_stab = st.seed_stability(outcomes, nb)
    pairs = st.pairwise(outcomes, nb)
    cross = [p for p in pairs if run_setup[p.a] != run_setup[p.b]]
    pair_kinds = st.agreement_by_pair_kind(outcomes, pairs)
    norm_sizes = st.norm_pairs(outcomes)
    per_run_update = {o.name: st.update_vs_delta(o) for o in outcomes}
    pooled_update = st.pooled_update_vs_delta(outcomes)
    median_updates = {o.name: st.median_update_by_label(o) for o in outcomes}
    reading = rep.reading(coll.metric, seed_stab, norm_sizes, setup_norm, cross, run_setup,
                          per_run_update, pooled_update, median_updates, nb, pair_kinds)
    return _Statistics(
        outcomes=outcomes, run_setup=run_setup, setups=list(st.by_setup(outcomes)),
        setup_norm=setup_norm, seed_stability=seed_stab, pairs=pairs, cross=cross,
        pair_kinds=pair_kinds, norm_sizes=norm_sizes, kind_table=st.setup_kind_table(outcomes),
        depth_table=st.setup_depth_table(outcomes, nb), group_table=st.setup_group_table(outcomes),
        per_run_update=per_run_update, pooled_update=pooled_update, median_updates=median_updates,
        reading=reading)


def _draw_figures(coll: Collection, stats: _Statistics, out_dir: Path, nb: int) -> List[Path]:
    """Seed heatmaps, stability matrices, depth profile, update vs delta and trajectories."""
    from espnet_ext.reporting.analysis_figures import plot_trajectories, plot_update_vs_delta
    from espnet_ext.reporting.figures import HeatmapPanel, plot_heatmap, plot_matrix

    outcomes, setups, depth_table = stats.outcomes, stats.setups, stats.depth_table
    names = [o.name for o in outcomes]
    metric_up = coll.metric.upper()
    figures = _seed_heatmaps(coll, out_dir)
    if len(outcomes) > 2:  # two runs: the pairs table says it all
        figures.append(plot_matrix(
            names, _matrix(names, stats.pairs, "jaccard"), out_dir / "stability_jaccard.png",
            title="Jaccard of ambient sets (runs of other sizes: by depth cell)",
            label="Jaccard", vmin=0.0, vmax=1.0))
        figures.append(plot_matrix(
            names, _matrix(names, stats.pairs, "spearman"), out_dir / "stability_spearman.png",
            title=f"Spearman of Δ{metric_up} (runs of other sizes: by depth cell)",
            label="Spearman rho", vmin=-1.0, vmax=1.0))
    depth_cells = []
    for v in setups:
        for c in depth_table[v]:
            if c not in depth_cells:
                depth_cells.append(c)
    depth_profile = HeatmapPanel(
        [[depth_table[v][c].mean_delta if c in depth_table[v] else math.nan for v in setups]
         for c in depth_cells],
        frame=[[c in depth_table[v] and depth_table[v][c].ambient_fraction >= 0.5 for v in setups]
               for c in depth_cells])
    figures.append(plot_heatmap(
        [depth_profile], [f"{k} {st.bin_label(b, nb)}" for k, b in depth_cells], setups,
        out_dir / "depth_profile.png",
        title=f"Mean Δ{metric_up} over seeds by kind and normalized depth (framed: ambient in >= half)",
        colorbar_label=f"Δ{metric_up} (points)", annotate=True))
    xlabel = ("relative weight update ||θT−θτ||/||θτ|| (τ of the reset)"
              if any(r.scan.reset[0] == REINIT and r.scan.reset[1] for r in coll.runs)
              else "relative weight update ||θT−θ0||/||θ0||")
    figures.append(plot_update_vs_delta(
        [(f"{o.name}: rho {rep.fmt(stats.per_run_update[o.name].rho)}",
          [(g.update, g.delta, g.kind, g.ambient) for g in o.layers]) for o in outcomes],
        out_dir / "update_vs_delta.png", xlabel=xlabel,
        ylabel=f"Δ{metric_up} after reset (points)"))
    figures.append(plot_trajectories(
        [(f"{r.info.name} (θT = {r.updates.final_file.name})", r.updates.epochs,
          [(u.group, u.kind, u.from_init, u.to_final) for u in r.updates.groups]) for r in coll.runs],
        out_dir / "trajectories.png"))
    return figures


def _analysis_json(coll: Collection, stats: _Statistics, opts: AnalysisOptions, figures: Sequence[Path],
                   timing_s: Dict[str, float]) -> dict:
    """The content of analysis.json (see the module doc)."""
    nb = opts.depth_bins
    return {
        "options": {"exp_dirs": [str(r.info.exp_dir) for r in coll.runs], "granularity": coll.granularity,
                    "dataset": opts.dataset, "mode": opts.mode, "value": opts.value,
                    "depth_bins": nb, "metric": coll.metric, "criterion": coll.criterion},
        "runs": [{"name": r.info.name, "exp_dir": str(r.info.exp_dir), "variant": r.info.setup,
                  "norm": r.info.norm, "size": r.info.size, "seed": r.info.seed,
                  "encoder": r.info.encoder, "scan_dir": str(r.scan.scan_dir),
                  "reset": {"mode": r.scan.reset[0], "value": r.scan.reset[1]},
                  "baseline": r.scan.baseline, "final_weights": str(r.updates.final_file),
                  "epochs": r.updates.epochs, "layers": r.outcome.layers,
                  "weight_updates": r.updates.groups} for r in coll.runs],
        "seed_stability": stats.seed_stability,
        "pairs": stats.pairs,
        "pair_kinds": stats.pair_kinds,
        "norm_sizes": stats.norm_sizes,
        "by_kind": stats.kind_table,
        "by_depth": {v: [{"kind": c[0], "bin": c[1], "range": st.bin_label(c[1], nb), **dataclasses.asdict(s)}
                         for c, s in t.items()] for v, t in stats.depth_table.items()},
        "by_group": stats.group_table,
        "update_vs_delta": {"per_run": stats.per_run_update, "pooled": stats.pooled_update,
                            "median_update_ambient_critical": stats.median_updates},
        "reading": stats.reading,
        "figures": [p.name for p in figures],
        "skipped": coll.skipped,
        "notes": coll.notes,
        "timing_s": timing_s,
    }


def analyse_collection(coll: Collection, out_dir: Path, opts: AnalysisOptions,
                       load_seconds: float = math.nan) -> AnalysisResult:
    """Statistics, figures and reports of one granularity's runs into `out_dir`.

    Args:
        coll: The runs (:func:`~espnet_ext.analysis.cross_run.collect_runs`).
        out_dir: Output dir (created).
        opts: Depth bins, the reset asked for (recorded).
        load_seconds: Time spent reading scans and checkpoints (recorded).
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = _compute_statistics(coll, opts.depth_bins)
    t_fig = time.perf_counter()
    figures = _draw_figures(coll, stats, out_dir, opts.depth_bins)
    t_fig = time.perf_counter() - t_fig

    _remove_stale_figures(out_dir, figures)
    write_text_atomic(out_dir / "weight_updates.tsv", _updates_tsv(coll))
    write_text_atomic(out_dir / "trajectories.tsv", _trajectories_tsv(coll))
    md = _markdown(opts, coll, stats.seed_stability, stats.pairs, stats.norm_sizes, stats.kind_table,
                   stats.depth_table, stats.group_table, stats.per_run_update, stats.pooled_update,
                   stats.median_updates, stats.reading, figures, stats.run_setup, stats.pair_kinds)
    write_text_atomic(out_dir / "analysis.md", md)
    seconds = time.perf_counter() - t0
    payload = _analysis_json(coll, stats, opts, figures, {
        "load_all_granularities": round(load_seconds, 3), "figures": round(t_fig, 3),
        "analysis": round(seconds, 3)})
    write_text_atomic(out_dir / "analysis.json", json.dumps(jsonable(payload), indent=1) + "\n")
    return AnalysisResult(coll.granularity, out_dir, stats.reading, figures, coll.skipped, seconds)


def _markdown(opts, coll: Collection, seed_stab, pairs, norm_sizes, kind_table, depth_table,
              group_table, per_run_update, pooled_update, median_updates, reading, figures,
              run_setup, pair_kinds) -> str:
    m = coll.metric.upper()
    nb = opts.depth_bins
    setups = list(kind_table)
    crit = coll.criterion
    out = [f"# Layer analysis: {coll.granularity} groups on {coll.dataset}", ""]
    out.append(f"- Error change Δ{m}: error after the reset minus the trained model's, percentage points "
               f"(ambient rule of the scans: {rep.describe_rule(crit)}).")
    out.append("- Weight update: ||θT − θτ|| / ||θτ|| over the group's parameters (buffers excluded), "
               "θT the scanned weights, τ the reset's checkpoint (τ = 0 and re-randomization: "
               "||θT − θ0|| / ||θ0||); see weight_updates.tsv.")
    out.append(f"- Runs of different sizes are compared by (kind, normalized depth) cells, {nb} depth "
               "bins; a cell is ambient when at least half its groups are.")
    out += [f"- Note: {n}" for n in coll.notes]
    out += [f"- Skipped: {p} ({why})" for p, why in coll.skipped.items()]
    out += ["", "## Reading", ""] + [f"- {line}" for line in reading]

    out += ["", "## Runs", ""]
    out += markdown_table(
        ["run", "variant", "seed", "groups", "ambient", "uncertain", f"baseline {m} %", "reset", "θT",
         "epochs"],
        [[r.info.name, r.info.setup, r.info.seed, len(r.outcome.layers), len(r.outcome.ambient_set()),
          _uncertain_text(r), rep.fmt(r.scan.baseline.get(m)), _reset_text(r), r.updates.final_file.name,
          f"0..{r.updates.epochs[-1]}"] for r in coll.runs])

    out += ["", "## Stability across seeds", "",
            "Chance: the expected Jaccard of random ambient sets of the same sizes (module "
            "espnet_ext.analysis.stability, chance_jaccard). Without uncertain: groups whose "
            "bootstrap interval straddles the ambient threshold in either run left out (scan column "
            "label_ci; scans without intervals count every label as decided).", ""]
    out += markdown_table(
        ["variant", "seeds", "mean Jaccard", "chance", "mean Jaccard without uncertain",
         f"mean Spearman Δ{m}", "ambient in every seed", "ambient in any"],
        [[s.variant, len(s.runs), rep.fmt(s.mean_jaccard), rep.fmt(s.mean_chance_jaccard),
          rep.fmt(s.mean_jaccard_decided), rep.fmt(s.mean_spearman), ", ".join(s.always_ambient) or "-",
          ", ".join(s.ever_ambient) or "-"]
         for s in seed_stab])
    if pair_kinds:
        out += ["", "### Agreement by what differs between two runs", ""]
        out += markdown_table(["differs in", "pairs", "mean Jaccard", "chance", "mean Jaccard without uncertain",
                               f"mean Spearman Δ{m}"],
                              [[k.kind, k.pairs, rep.fmt(k.mean_jaccard), rep.fmt(k.mean_chance_jaccard),
                                rep.fmt(k.mean_jaccard_decided), rep.fmt(k.mean_spearman)] for k in pair_kinds])
    if pairs:
        out += ["", "### Every pair of runs", ""]
        out += markdown_table(["run a", "run b", "same variant", "aligned by", "n", "Jaccard", "chance",
                               "Jaccard without uncertain (n)", f"Spearman Δ{m}"],
                              [[p.a, p.b, "yes" if run_setup[p.a] == run_setup[p.b] else "no",
                                p.aligned_by, p.n, rep.fmt(p.jaccard), rep.fmt(p.chance_jaccard),
                                f"{rep.fmt(p.jaccard_decided)} ({p.n_decided})",
                                rep.fmt_corr(p.spearman)] for p in pairs])

    for size, vs in norm_sizes.items():
        out += ["", f"## Norm variants side by side: size {size}", "",
                f"Cells: ambient in k of n seeds, mean Δ{m} (points)."]
        names = []
        for v in vs:
            for g in group_table[v]:
                if g not in names:
                    names.append(g)
        out += [""] + markdown_table(["group"] + list(vs),
                                     [[f"`{g}`"] + [rep.cell_text(group_table[v].get(g)) for v in vs]
                                      for g in names])

    pooled = f"Cells: ambient groups / groups (pooled over seeds), mean Δ{m}."
    out += ["", "## By group kind", "", pooled, ""]
    kinds = []
    for v in setups:
        for k in kind_table[v]:
            if k not in kinds:
                kinds.append(k)
    out += markdown_table(["kind"] + setups, [[k] + [rep.cell_text(kind_table[v].get(k)) for v in setups]
                                                for k in kinds])
    out += ["", "## By normalized depth", "", pooled, ""]
    out += markdown_table(["kind", "depth"] + setups, rep.depth_rows(depth_table, setups, nb))

    out += ["", "## Weight update vs reset", ""]
    rows = [[name, c.n, rep.fmt(c.rho), rep.fmt_p(c.p), rep.fmt(median_updates[name][0], 3),
             rep.fmt(median_updates[name][1], 3)] for name, c in per_run_update.items()]
    rows.append(["pooled", pooled_update.n, rep.fmt(pooled_update.rho), rep.fmt_p(pooled_update.p), "", ""])
    out += markdown_table(["run", "groups", f"Spearman(update, Δ{m})", "p", "median update ambient",
                           "median update critical"], rows)
    out += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return "\n".join(out)
