"""Outputs of a layer-reset scan: scan.tsv rows, scan.md, heatmaps, the summary line.

``scan.tsv`` has one row per (dataset, group, reset variant), tab-separated, with a header:

    dataset group kind block depth mode tau seed WER CER delta_WER delta_CER label
    n_utts delta_WER_lo delta_WER_hi delta_CER_lo delta_CER_hi label_ci

``mode`` is ``reinit`` (``tau`` set, ``seed`` empty) or ``rerandomize`` (``seed`` set, ``tau``
empty); ``block``/``depth`` are empty outside encoder/decoder blocks; error rates and deltas
are in percent / percentage points; ``label`` is ``ambient`` or ``critical`` (the observed
delta against the tolerance).

The last six columns (scans since error bars were added; older files without them are still
read): ``n_utts`` utterances the variant was scored on (fewer than the set when the adaptive scan
stopped early; WER/CER and the deltas are then those of these utterances, the deltas paired with
the baseline on the same utterances), the bounds of the paired bootstrap interval of each delta
(:mod:`espnet_ext.evaluation.bootstrap`), and ``label_ci``: ``ambient``, ``critical`` or
``uncertain`` (the interval straddles the tolerance) at the scan's confidence.

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
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple

from espnet_ext.scan.labels import AMBIENT, CRITICAL, UNCERTAIN, AmbientCriterion

if TYPE_CHECKING:
    from espnet_ext.evaluation.bootstrap import DeltaInterval

REINIT = "reinit"
RERANDOMIZE = "rerandomize"
MODES = (REINIT, RERANDOMIZE)

# Error rates are kept rounded to this many decimals everywhere (rows, baseline), so a row read
# back from scan.tsv after an interruption is identical to the row as first computed.
DECIMALS = 4

OLD_TSV_COLUMNS = ("dataset", "group", "kind", "block", "depth", "mode", "tau", "seed",
                   "WER", "CER", "delta_WER", "delta_CER", "label")
CI_TSV_COLUMNS = ("n_utts", "delta_WER_lo", "delta_WER_hi", "delta_CER_lo", "delta_CER_hi", "label_ci")
TSV_COLUMNS = OLD_TSV_COLUMNS + CI_TSV_COLUMNS


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
    n_utts: Optional[int] = None
    delta_wer_lo: float = math.nan
    delta_wer_hi: float = math.nan
    delta_cer_lo: float = math.nan
    delta_cer_hi: float = math.nan
    label_ci: str = ""

    @property
    def variant_key(self) -> Tuple[str, str, str]:
        """(group, mode, tau or seed) — what identifies the reset, across datasets."""
        return (self.group, self.mode, str(self.tau if self.mode == REINIT else self.seed))

    def error(self, metric: str) -> float:
        return self.cer if metric == "cer" else self.wer

    def delta(self, metric: str) -> float:
        return self.delta_cer if metric == "cer" else self.delta_wer

    def bounds(self, metric: str) -> Tuple[float, float]:
        """(lower, upper) bound of the delta's interval (NaN when the row has none)."""
        if metric == "cer":
            return self.delta_cer_lo, self.delta_cer_hi
        return self.delta_wer_lo, self.delta_wer_hi

    def relabel(self, baseline: Dict[str, float], criterion: AmbientCriterion,
                intervals: Optional[Dict[str, "DeltaInterval"]] = None) -> None:
        """Set deltas and labels from the dataset's baseline {"WER": .., "CER": ..} (percent).

        Args:
            baseline: The trained model's error rates on the whole dataset (the tolerance).
            criterion: The ambient rule.
            intervals: {"WER": .., "CER": ..} paired bootstrap intervals of this row's
                utterances (:func:`espnet_ext.evaluation.bootstrap.paired_bootstrap`); without
                them the deltas are taken against `baseline` and ``label_ci`` stays empty.
        """
        base = baseline[criterion.metric.upper()]
        if intervals is None:
            self.delta_wer = round(self.wer - baseline["WER"], DECIMALS)
            self.delta_cer = round(self.cer - baseline["CER"], DECIMALS)
            self.label = criterion.label(base, self.error(criterion.metric))
            return
        w, c = intervals["WER"], intervals["CER"]
        self.delta_wer, self.delta_cer = round(w.delta, DECIMALS), round(c.delta, DECIMALS)
        self.delta_wer_lo, self.delta_wer_hi = round(w.lo, DECIMALS), round(w.hi, DECIMALS)
        self.delta_cer_lo, self.delta_cer_hi = round(c.lo, DECIMALS), round(c.hi, DECIMALS)
        self.n_utts = c.n
        self.label = criterion.label(base, base + self.delta(criterion.metric))
        self.label_ci = criterion.label_interval(base, *self.bounds(criterion.metric))

    def to_tsv(self) -> str:
        def fmt(v, digits=None):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return ""
            return f"{v:.{digits}f}" if digits is not None else str(v)

        cells = [self.dataset, self.group, self.kind, fmt(self.block), fmt(self.depth, 4), self.mode,
                 fmt(self.tau), fmt(self.seed), fmt(self.wer, DECIMALS), fmt(self.cer, DECIMALS),
                 fmt(self.delta_wer, DECIMALS), fmt(self.delta_cer, DECIMALS), self.label,
                 fmt(self.n_utts), fmt(self.delta_wer_lo, DECIMALS), fmt(self.delta_wer_hi, DECIMALS),
                 fmt(self.delta_cer_lo, DECIMALS), fmt(self.delta_cer_hi, DECIMALS), self.label_ci]
        return "\t".join(cells)

    @classmethod
    def from_tsv(cls, line: str, columns: Sequence[str] = TSV_COLUMNS) -> "ScanRow":
        """A row from a scan.tsv line with the given header (the current or the older one)."""
        c = line.rstrip("\n").split("\t")
        if len(c) != len(columns):
            raise ValueError(f"expected {len(columns)} fields, got {len(c)}")

        def opt(v, typ):
            return typ(v) if v != "" else None

        def num(v):
            return float(v) if v != "" else math.nan

        row = cls(dataset=c[0], group=c[1], kind=c[2], block=opt(c[3], int), depth=opt(c[4], float),
                  mode=c[5], tau=opt(c[6], int), seed=opt(c[7], int), wer=float(c[8]),
                  cer=float(c[9]), delta_wer=opt(c[10], float) or 0.0,
                  delta_cer=opt(c[11], float) or 0.0, label=c[12])
        if len(columns) == len(TSV_COLUMNS):
            row.n_utts = opt(c[13], int)
            row.delta_wer_lo, row.delta_wer_hi = num(c[14]), num(c[15])
            row.delta_cer_lo, row.delta_cer_hi = num(c[16]), num(c[17])
            row.label_ci = c[18]
        return row


def tsv_header() -> str:
    return "\t".join(TSV_COLUMNS)


def read_tsv(path: Path) -> List[ScanRow]:
    """Rows of a scan.tsv; a truncated last line (interrupted write) is ignored.

    Files written before error bars existed (13 columns, no interval) are read too: their rows
    have no ``n_utts``, NaN bounds and an empty ``label_ci``.

    Raises:
        ValueError: The header is not scan.tsv's, or a line other than the last is malformed.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return []
    header = tuple(lines[0].split("\t"))
    if header not in (TSV_COLUMNS, OLD_TSV_COLUMNS):
        raise ValueError(f"{path}: not a scan.tsv (header {lines[0]!r}); use another --out_dir")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        try:
            rows.append(ScanRow.from_tsv(line, header))
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


def ci_counts(rows: Sequence[ScanRow], dataset: str, group_order: Sequence[str]) -> Dict[str, List[str]]:
    """{label_ci: group names in layer order} of the reference reset's rows that have an interval."""
    mine = [r for r in rows if r.dataset == dataset]
    ref = reference_variant(mine)
    out: Dict[str, List[str]] = {AMBIENT: [], CRITICAL: [], UNCERTAIN: []}
    if ref is None:
        return out
    labelled = {r.group: r.label_ci for r in mine if (r.mode, _variant_value(r)) == ref and r.label_ci}
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
    from espnet_ext.reporting.plots import plot_heatmap

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
                values, groups, [str(c) for c in cols], Path(out_dir) / f"heatmap_{mode}_{ds}.png",
                title=f"{ds}: {metric.upper()} after {what} (baseline {base:.1f}%; framed: ambient"
                      + ("; ?: uncertain)" if any(any(u) for u in uncertain) else ")"),
                colorbar_label=f"{metric.upper()} (%)", xlabel=label, highlight=ambient,
                uncertain=uncertain,
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
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        cell = {(r.group, r.mode, _variant_value(r)): r for r in mine}
        full_n = b.get("utterances") or max((r.n_utts for r in mine if r.n_utts is not None), default=None)
        for g in order:
            if not any(r.group == g for r in mine):
                continue
            gi = info[g]
            line = [f"`{g}`", gi.kind, "" if gi.depth is None else f"{gi.depth:.2f}", f"{gi.numel:,}"]
            for m, v in cols:
                line.append(_cell_text(cell.get((g, m, v)), metric, full_n))
            r = cell.get((g, ref[0], ref[1])) if ref else None
            line.append("" if r is None else r.label + (f" ({r.label_ci})" if r.label_ci else ""))
            out.append("| " + " | ".join(line) + " |")
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
