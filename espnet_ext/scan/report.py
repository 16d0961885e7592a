"""Reports of a layer-reset scan: scan.md, heatmaps, the summary line.

The rows and their file format are :mod:`espnet_ext.scan.result`'s.

The **reference reset** that decides whether a group is an ambient layer (summary, scan.md) is
re-initialization to the smallest scanned tau (the initial weights when tau=0 is scanned, as in
the paper's definition), or re-randomization with the first seed when no re-initialization was
scanned.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_ext.reporting.tables import fixed, markdown_table
from espnet_ext.scan.labels import AMBIENT, CRITICAL, UNCERTAIN, AmbientCriterion
from espnet_ext.scan.result import (
    MODES,
    REINIT,
    RERANDOMIZE,
    ScanRow,
    reference_variant,
    rows_of_variant,
    variant_title,
)
from espnet_ext.scan.result import variant_value as _variant_value


def ambient_groups(rows: Sequence[ScanRow], dataset: str,
                   group_order: Sequence[str]) -> Tuple[List[str], int, Optional[tuple]]:
    """(ambient group names in layer order, number of groups labelled, reference variant)."""
    mine = [r for r in rows if r.dataset == dataset]
    ref = reference_variant(mine)
    if ref is None:
        return [], 0, None
    labelled = {r.group: r.label for r in rows_of_variant(mine, *ref)}
    ambient = [g for g in group_order if labelled.get(g) == AMBIENT]
    return ambient, len(labelled), ref


def ci_counts(rows: Sequence[ScanRow], dataset: str, group_order: Sequence[str]) -> Dict[str, List[str]]:
    """{label_ci: group names in layer order} of the reference reset's rows that have an interval."""
    mine = [r for r in rows if r.dataset == dataset]
    ref = reference_variant(mine)
    out: Dict[str, List[str]] = {AMBIENT: [], CRITICAL: [], UNCERTAIN: []}
    if ref is None:
        return out
    labelled = {r.group: r.label_ci for r in rows_of_variant(mine, *ref) if r.label_ci}
    for g in group_order:
        if g in labelled:
            out[labelled[g]].append(g)
    return out


def summary_line(rows, dataset, group_order, baseline, criterion: AmbientCriterion,
                 confidence: Optional[float] = None) -> str:
    """One line: how many groups are ambient on a dataset, and which; with intervals, how many
    labels are decided at `confidence` and which are uncertain."""
    ambient, n, ref = ambient_groups(rows, dataset, group_order)
    if ref is None:
        return f"{dataset}: no reset scanned"
    metric = criterion.metric.upper()
    base = baseline[metric]
    how = "reinit to " + variant_title(*ref) if ref[0] == REINIT else "rerandomize " + variant_title(*ref)
    line = (
        f"{dataset}: {len(ambient)} of {n} groups ambient ({how}; {criterion.describe()}, "
        f"baseline {metric} {base:.2f}%, tolerance {criterion.tolerance(base):.2f} points)"
        + (f": {', '.join(ambient)}" if ambient else "")
    )
    ci = ci_counts(rows, dataset, group_order)
    if confidence is not None and any(ci.values()):
        line += (f"; at {100 * confidence:g}% confidence {len(ci[AMBIENT])} ambient, "
                 f"{len(ci[CRITICAL])} critical, {len(ci[UNCERTAIN])} uncertain"
                 + (f" ({', '.join(ci[UNCERTAIN])})" if ci[UNCERTAIN] else ""))
    return line


def _matrix(rows, dataset, mode, group_order, metric, base: float):
    mine = [r for r in rows if r.dataset == dataset and r.mode == mode]
    cols = sorted({_variant_value(r) for r in mine})
    groups = [g for g in group_order if any(r.group == g for r in mine)]
    cell = {(r.group, _variant_value(r)): r for r in mine}
    # Baseline + paired change: the row's error on the whole set, and for a variant the adaptive
    # scan stopped early, its estimate (its own error is on fewer, other-difficulty utterances).
    values = [[base + cell[(g, c)].delta(metric) if (g, c) in cell else math.nan for c in cols]
              for g in groups]
    ambient = [[(g, c) in cell and cell[(g, c)].label == AMBIENT for c in cols] for g in groups]
    uncertain = [[(g, c) in cell and cell[(g, c)].label_ci == UNCERTAIN for c in cols] for g in groups]
    return groups, cols, values, ambient, uncertain


def write_heatmaps(out_dir: Path, rows, datasets, group_order, baseline, criterion) -> List[Path]:
    """heatmap_<mode>_<dataset>.png: groups x tau (reinit) or x seed (rerandomize)."""
    from espnet_ext.reporting.figures import HeatmapPanel, plot_heatmap

    paths = []
    metric = criterion.metric
    for ds in datasets:
        for mode in MODES:
            base = baseline[ds][metric.upper()]
            groups, cols, values, ambient, uncertain = _matrix(rows, ds, mode, group_order, metric, base)
            if not groups:
                continue
            label = "checkpoint tau" if mode == REINIT else "re-randomization seed"
            what = "re-initialization" if mode == REINIT else "re-randomization"
            paths.append(plot_heatmap(
                [HeatmapPanel(values, frame=ambient, uncertain=uncertain)], groups, [str(c) for c in cols],
                Path(out_dir) / f"heatmap_{mode}_{ds}.png",
                title=f"{ds}: {metric.upper()} after {what} (baseline {base:.1f}%; framed: ambient"
                      + ("; ?: uncertain)" if any(any(u) for u in uncertain) else ")"),
                colorbar_label=f"{metric.upper()} (%)", xlabel=label, annotate=True,
            ))
    return paths


def _cell_text(r: Optional[ScanRow], metric: str, full_n: Optional[int]) -> str:
    if r is None:
        return ""
    lo, hi = r.bounds(metric)
    text = f"{r.error(metric):.1f} ({r.delta(metric):+.1f}"
    if not math.isnan(lo):
        text += f" [{lo:+.1f}, {hi:+.1f}]"
    text += ")"
    if r.n_utts is not None and full_n is not None and r.n_utts < full_n:
        text += f" /{r.n_utts}"
    if r.label_ci == UNCERTAIN:
        text += " ?"
    return text


def markdown(title: str, rows, datasets, groups, baseline, criterion, excluded: Dict[str, str],
             heatmaps: Sequence[Path], notes: Sequence[str] = (),
             confidence: Optional[float] = None) -> str:
    """scan.md: per dataset a table (groups x resets, error and delta) and the summary line."""
    metric = criterion.metric
    order = [g.name for g in groups]
    info = {g.name: g for g in groups}
    out = [f"# Layer-reset scan: {title}", ""]
    out += [f"- {n}" for n in notes]
    out.append(f"- Ambient rule: {criterion.describe()}; a group's label is that of its reference "
               "reset (re-initialization to the smallest tau scanned, else the first "
               "re-randomization seed)")
    if excluded:
        out.append("- Not scanned: " + "; ".join(f"{g} ({why})" for g, why in excluded.items()))
    out.append("")
    for ds in datasets:
        mine = [r for r in rows if r.dataset == ds]
        b = baseline[ds]
        out += [f"## {ds}", "", f"Baseline: WER {b['WER']:.2f}%, CER {b['CER']:.2f}%", ""]
        ref = reference_variant(mine)
        cols = [(REINIT, t) for t in sorted({r.tau for r in mine if r.mode == REINIT})]
        cols += [(RERANDOMIZE, s) for s in sorted({r.seed for r in mine if r.mode == RERANDOMIZE})]
        head = ["group", "kind", "depth", "params"]
        head += [("reinit " if m == REINIT else "rerand ") + variant_title(m, v) for m, v in cols]
        head.append("label")
        table = []
        cell = {(r.group, r.mode, _variant_value(r)): r for r in mine}
        full_n = b.get("utterances") or max((r.n_utts for r in mine if r.n_utts is not None), default=None)
        for g in order:
            if not any(r.group == g for r in mine):
                continue
            gi = info[g]
            line = [f"`{g}`", gi.kind, fixed(gi.depth, 2), f"{gi.numel:,}"]
            for m, v in cols:
                line.append(_cell_text(cell.get((g, m, v)), metric, full_n))
            r = cell.get((g, ref[0], ref[1])) if ref else None
            line.append("" if r is None else r.label + (f" ({r.label_ci})" if r.label_ci else ""))
            table.append(line)
        out += markdown_table(head, table)
        has_ci = any(r.label_ci for r in mine)
        cells = f"Cells: {metric.upper()} % (change vs. baseline, points"
        if has_ci:
            cells += (f"; [interval at {100 * confidence:g}% confidence]; /n: utterances scored, when "
                      "the adaptive scan stopped early (its interval is at the Bonferroni-corrected "
                      "confidence of its look; error and change are then those of these utterances)"
                      if confidence is not None else "; [interval]")
        cells += "). Label: observed change vs. tolerance"
        cells += " (at the interval: ambient, critical or uncertain)." if has_ci else "."
        out += ["", cells, "",
                "**" + summary_line(rows, ds, order, b, criterion, confidence) + "**", ""]
        for p in heatmaps:
            if p.name in {f"heatmap_{m}_{ds}.png" for m in MODES}:
                out.append(f"![{p.stem}]({p.name})")
        out.append("")
    return "\n".join(out)
