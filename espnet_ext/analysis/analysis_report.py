"""Text outputs of the cross-run layer analysis: analysis.md tables and its factual reading.

The reading states numbers only (means, correlations with p-values and counts, which groups are
ambient in every seed); it draws no conclusion the numbers do not spell out.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

from espnet_ext.analysis.stability import (
    ALIGN_DEPTH,
    CellStats,
    Correlation,
    PairComparison,
    SeedStability,
    bin_label,
)
from espnet_ext.reporting.tables import fixed


def fmt(v: Optional[float], digits: int = 2) -> str:
    """A number for analysis.md (`digits` decimals); ``n/a`` for None/NaN."""
    return fixed(v, digits, missing="n/a")


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    if p == 0.0:
        return "<1e-300"  # scipy's p for a perfect rank correlation underflows to 0
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def fmt_corr(c: Correlation) -> str:
    """``0.41 (p=0.03, n=9)``."""
    return f"{fmt(c.rho)} (p={fmt_p(c.p)}, n={c.n})"


def describe_rule(criterion: dict) -> str:
    """The scans' ambient rule in words (``CER within max(+2 points, +10% of baseline)``)."""
    from espnet_ext.scan.labels import AmbientCriterion

    try:
        return AmbientCriterion(**criterion).describe()
    except (TypeError, ValueError):
        return str(criterion) if criterion else "not recorded"


def cell_text(s: Optional[CellStats]) -> str:
    """``2/3 amb, +0.4`` : ambient share and mean delta of a pooled cell."""
    if s is None:
        return ""
    amb = round(s.ambient_fraction * s.n)
    return f"{amb}/{s.n} amb, {s.mean_delta:+.1f}"


def reading(
    metric: str,
    seed_stab: Sequence[SeedStability],
    norm_sizes: Dict[str, List[str]],
    variant_norm: Dict[str, str],
    cross: Sequence[PairComparison],
    run_variant: Dict[str, str],
    per_run_update: Dict[str, Correlation],
    pooled_update: Correlation,
    median_updates: Dict[str, tuple],
    n_bins: int,
    pair_kinds: Sequence = (),
) -> List[str]:
    """Sentences made of the numbers only (see module doc)."""
    m = f"Δ{metric.upper()}"
    out = []
    for s in seed_stab:
        if len(s.runs) < 2:
            out.append(f"{s.variant}: one run only, no seed comparison.")
            continue
        always = ", ".join(s.always_ambient) or "none"
        decided = ""
        if s.mean_jaccard_decided != s.mean_jaccard and not math.isnan(s.mean_jaccard_decided):
            decided = f", {fmt(s.mean_jaccard_decided)} without uncertain labels"
        out.append(
            f"{s.variant}: across {len(s.runs)} seeds, mean pairwise Jaccard of ambient sets "
            f"{fmt(s.mean_jaccard)} (chance {fmt(s.mean_chance_jaccard)}{decided}), mean Spearman of {m} "
            f"{fmt(s.mean_spearman)}; "
            f"{len(s.always_ambient)} group(s) ambient in every seed ({always}), "
            f"{len(s.ever_ambient)} in at least one."
        )
    by_variant = {s.variant: s for s in seed_stab}
    for size, variants in norm_sizes.items():
        parts = [f"{variant_norm[v]} {fmt(by_variant[v].mean_jaccard)}" for v in variants
                 if len(by_variant[v].runs) > 1]
        between = [p for p in cross if {run_variant[p.a], run_variant[p.b]} <= set(variants)]
        line = [f"mean Jaccard across seeds {', '.join(parts)}"] if parts else []
        if between:
            mj = _mean([p.jaccard for p in between])
            ms = _mean([p.spearman.rho for p in between])
            line.append(f"between runs of different norms ({_pairs(len(between))}, aligned by "
                        f"{between[0].aligned_by}): mean Jaccard {fmt(mj)}, mean Spearman of {m} {fmt(ms)}")
        if line:
            out.append(f"Size {size}: " + "; ".join(line) + ".")
    sizes = [p for p in cross if p.aligned_by == ALIGN_DEPTH]
    if sizes:
        out.append(
            f"Across sizes ({_pairs(len(sizes))} of runs, aligned by (kind, normalized-depth bin), "
            f"{n_bins} bins): mean Jaccard {fmt(_mean([p.jaccard for p in sizes]))}, mean Spearman "
            f"of {m} {fmt(_mean([p.spearman.rho for p in sizes]))}."
        )
    if len(pair_kinds) > 1:
        parts = [f"{k.kind} {fmt(k.mean_jaccard)} (chance {fmt(k.mean_chance_jaccard)}, "
                 f"Spearman {fmt(k.mean_spearman)}, {_pairs(k.pairs)})" for k in pair_kinds]
        out.append("Mean Jaccard of ambient sets by what differs between two runs: "
                   + "; ".join(parts) + ".")
    if per_run_update:
        parts = [f"{name} {fmt_corr(c)}" for name, c in per_run_update.items()]
        out.append(f"Spearman(weight update, {m}) per run: " + "; ".join(parts) + ".")
        out.append(f"Pooled over all runs' groups: Spearman(weight update, {m}) = "
                   f"{fmt_corr(pooled_update)}; rho > 0 means that groups with larger updates "
                   "show larger error increases when reset.")
        parts = [f"{name} {fmt(a, 3)} vs {fmt(c, 3)}" for name, (a, c) in median_updates.items()]
        out.append("Median weight update, ambient vs critical groups: " + "; ".join(parts) + ".")
    return out


def _pairs(n: int) -> str:
    return f"{n} pair" if n == 1 else f"{n} pairs"


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def depth_rows(depth_table: Dict[str, Dict[tuple, CellStats]], variants: Sequence[str],
               n_bins: int) -> List[List[str]]:
    """Rows (kind, depth bin) x variants of pooled outcomes."""
    cells: List[tuple] = []
    for v in variants:
        for c in depth_table[v]:
            if c not in cells:
                cells.append(c)
    return [[c[0], bin_label(c[1], n_bins)] + [cell_text(depth_table[v].get(c)) for v in variants]
            for c in cells]
