"""Outputs of a layer-reset scan: scan.tsv rows, scan.md, heatmaps, the summary line.

``scan.tsv`` has one row per (dataset, group, reset variant), tab-separated, with a header:

    dataset group kind block depth mode tau seed WER CER delta_WER delta_CER label

``mode`` is ``reinit`` (``tau`` set, ``seed`` empty) or ``rerandomize`` (``seed`` set, ``tau``
empty); ``block``/``depth`` are empty outside encoder/decoder blocks; error rates and deltas
are in percent / percentage points; ``label`` is ``ambient`` or ``critical``.

The **reference reset** that decides whether a group is an ambient layer (summary, scan.md) is
re-initialization to the smallest scanned tau (the initial weights when tau=0 is scanned, as in
the paper's definition), or re-randomization with the first seed when no re-initialization was
scanned.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from espnet_ext.analysis.labels import AMBIENT, AmbientCriterion

REINIT = "reinit"
RERANDOMIZE = "rerandomize"
MODES = (REINIT, RERANDOMIZE)

# Error rates are kept rounded to this many decimals everywhere (rows, baseline), so a row read
# back from scan.tsv after an interruption is identical to the row as first computed.
DECIMALS = 4

TSV_COLUMNS = ("dataset", "group", "kind", "block", "depth", "mode", "tau", "seed",
               "WER", "CER", "delta_WER", "delta_CER", "label")


@dataclasses.dataclass
class ScanRow:
    """Scores of one reset variant on one dataset (a line of scan.tsv)."""

    dataset: str
    group: str
    kind: str
    block: Optional[int]
    depth: Optional[float]
    mode: str
    tau: Optional[int]
    seed: Optional[int]
    wer: float
    cer: float
    delta_wer: float = math.nan
    delta_cer: float = math.nan
    label: str = ""

    @property
    def variant_key(self) -> Tuple[str, str, str]:
        """(group, mode, tau or seed) — what identifies the reset, across datasets."""
        return (self.group, self.mode, str(self.tau if self.mode == REINIT else self.seed))

    def error(self, metric: str) -> float:
        return self.cer if metric == "cer" else self.wer

    def relabel(self, baseline: Dict[str, float], criterion: AmbientCriterion) -> None:
        """Set deltas and label from the dataset's baseline {"WER": .., "CER": ..}."""
        self.delta_wer = round(self.wer - baseline["WER"], DECIMALS)
        self.delta_cer = round(self.cer - baseline["CER"], DECIMALS)
        self.label = criterion.label(baseline[criterion.metric.upper()], self.error(criterion.metric))

    def to_tsv(self) -> str:
        def fmt(v, digits=None):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return ""
            return f"{v:.{digits}f}" if digits is not None else str(v)

        cells = [self.dataset, self.group, self.kind, fmt(self.block), fmt(self.depth, 4), self.mode,
                 fmt(self.tau), fmt(self.seed), fmt(self.wer, DECIMALS), fmt(self.cer, DECIMALS),
                 fmt(self.delta_wer, DECIMALS), fmt(self.delta_cer, DECIMALS), self.label]
        return "\t".join(cells)

    @classmethod
    def from_tsv(cls, line: str) -> "ScanRow":
        c = line.rstrip("\n").split("\t")
        if len(c) != len(TSV_COLUMNS):
            raise ValueError(f"expected {len(TSV_COLUMNS)} fields, got {len(c)}")

        def opt(v, typ):
            return typ(v) if v != "" else None

        return cls(dataset=c[0], group=c[1], kind=c[2], block=opt(c[3], int), depth=opt(c[4], float),
                   mode=c[5], tau=opt(c[6], int), seed=opt(c[7], int), wer=float(c[8]),
                   cer=float(c[9]), delta_wer=opt(c[10], float) or 0.0,
                   delta_cer=opt(c[11], float) or 0.0, label=c[12])


def tsv_header() -> str:
    return "\t".join(TSV_COLUMNS)


def read_tsv(path: Path) -> List[ScanRow]:
    """Rows of a scan.tsv; a truncated last line (interrupted write) is ignored.

    Raises:
        ValueError: The header is not scan.tsv's, or a line other than the last is malformed.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return []
    if lines[0] != tsv_header():
        raise ValueError(f"{path}: not a scan.tsv (header {lines[0]!r}); use another --out_dir")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        try:
            rows.append(ScanRow.from_tsv(line))
        except ValueError as e:
            if n == len(lines):
                break  # the last line was cut by an interruption: recompute it
            raise ValueError(f"{path} line {n}: {e}") from None
    return rows


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_tsv(path: Path, rows: Iterable[ScanRow]) -> None:
    write_text_atomic(path, "\n".join([tsv_header()] + [r.to_tsv() for r in rows]) + "\n")


def reference_variant(rows: Sequence[ScanRow]) -> Optional[Tuple[str, Optional[int]]]:
    """(mode, tau or seed) of the reset that labels groups ambient/critical (see module doc)."""
    taus = sorted({r.tau for r in rows if r.mode == REINIT})
    if taus:
        return REINIT, taus[0]
    seeds = [r.seed for r in rows if r.mode == RERANDOMIZE]
    return (RERANDOMIZE, seeds[0]) if seeds else None


def _variant_value(row: ScanRow) -> Optional[int]:
    return row.tau if row.mode == REINIT else row.seed


def variant_title(mode: str, value) -> str:
    return f"tau={value}" if mode == REINIT else f"seed={value}"


def ambient_groups(rows: Sequence[ScanRow], dataset: str,
                   group_order: Sequence[str]) -> Tuple[List[str], int, Optional[tuple]]:
    """(ambient group names in layer order, number of groups labelled, reference variant)."""
    mine = [r for r in rows if r.dataset == dataset]
    ref = reference_variant(mine)
    if ref is None:
        return [], 0, None
    labelled = {r.group: r.label for r in mine if (r.mode, _variant_value(r)) == ref}
    ambient = [g for g in group_order if labelled.get(g) == AMBIENT]
    return ambient, len(labelled), ref


def summary_line(rows, dataset, group_order, baseline, criterion: AmbientCriterion) -> str:
    """One line: how many groups are ambient on a dataset, and which."""
    ambient, n, ref = ambient_groups(rows, dataset, group_order)
    if ref is None:
        return f"{dataset}: no reset scanned"
    metric = criterion.metric.upper()
    base = baseline[metric]
    how = "reinit to " + variant_title(*ref) if ref[0] == REINIT else "rerandomize " + variant_title(*ref)
    return (
        f"{dataset}: {len(ambient)} of {n} groups ambient ({how}; {criterion.describe()}, "
        f"baseline {metric} {base:.2f}%, tolerance {criterion.tolerance(base):.2f} points)"
        + (f": {', '.join(ambient)}" if ambient else "")
    )


def _matrix(rows, dataset, mode, group_order, metric):
    mine = [r for r in rows if r.dataset == dataset and r.mode == mode]
    cols = sorted({_variant_value(r) for r in mine})
    groups = [g for g in group_order if any(r.group == g for r in mine)]
    cell = {(r.group, _variant_value(r)): r for r in mine}
    values = [[cell[(g, c)].error(metric) if (g, c) in cell else math.nan for c in cols] for g in groups]
    ambient = [[(g, c) in cell and cell[(g, c)].label == AMBIENT for c in cols] for g in groups]
    return groups, cols, values, ambient


def write_heatmaps(out_dir: Path, rows, datasets, group_order, baseline, criterion) -> List[Path]:
    """heatmap_<mode>_<dataset>.png: groups x tau (reinit) or x seed (rerandomize)."""
    from espnet_ext.plots import plot_heatmap

    paths = []
    metric = criterion.metric
    for ds in datasets:
        for mode in MODES:
            groups, cols, values, ambient = _matrix(rows, ds, mode, group_order, metric)
            if not groups:
                continue
            label = "checkpoint tau" if mode == REINIT else "re-randomization seed"
            base = baseline[ds][metric.upper()]
            what = "re-initialization" if mode == REINIT else "re-randomization"
            paths.append(plot_heatmap(
                values, groups, [str(c) for c in cols], Path(out_dir) / f"heatmap_{mode}_{ds}.png",
                title=f"{ds}: {metric.upper()} after {what} (baseline {base:.1f}%; framed: ambient)",
                colorbar_label=f"{metric.upper()} (%)", xlabel=label, highlight=ambient,
            ))
    return paths


def markdown(title: str, rows, datasets, groups, baseline, criterion, excluded: Dict[str, str],
             heatmaps: Sequence[Path], notes: Sequence[str] = ()) -> str:
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
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        cell = {(r.group, r.mode, _variant_value(r)): r for r in mine}
        for g in order:
            if not any(r.group == g for r in mine):
                continue
            gi = info[g]
            line = [f"`{g}`", gi.kind, "" if gi.depth is None else f"{gi.depth:.2f}", f"{gi.numel:,}"]
            for m, v in cols:
                r = cell.get((g, m, v))
                line.append("" if r is None else
                            f"{r.error(metric):.1f} ({r.error(metric) - b[metric.upper()]:+.1f})")
            r = cell.get((g, ref[0], ref[1])) if ref else None
            line.append("" if r is None else r.label)
            out.append("| " + " | ".join(line) + " |")
        out += ["", f"Cells: {metric.upper()} % (change vs. baseline, points).", "",
                "**" + summary_line(rows, ds, order, b, criterion) + "**", ""]
        for p in heatmaps:
            if p.name in {f"heatmap_{m}_{ds}.png" for m in MODES}:
                out.append(f"![{p.stem}]({p.name})")
        out.append("")
    return "\n".join(out)
