"""Figure of a federated comparison: error rate against client model size, one marker per plan.

Each table row (one run, or one plan over several seeds) contributes one point per evaluation set:
x = parameters a client trains (fraction of the full model, as measured by the cost ledger), y =
the final global model's error rate, its mean over the seeds with an error bar from the lowest to
the highest seed. The pre-trained model is a dashed line, so adaptation gain and forgetting read
off the same panel. With paired differences, a second row of panels shows targeted minus uniform
and targeted minus no dropout at each client size, with their paired bootstrap intervals as error
bars and a line at zero.

The numbers come already aggregated (:func:`espnet_ext.federated.results.client_size_rows`); this
module reads no result files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

from espnet_ext.reporting.figures import pyplot, save_figure

PLAN_MARKERS = {"none": "o", "uniform": "s", "targeted": "^", "file": "D"}
_PLOTTABLE_METRICS = ("CER", "WER")
# Horizontal distance (fraction of the full model) between two comparisons drawn at one client
# size, so that their error bars do not hide each other.
_DIFFERENCE_OFFSET = 0.004


@dataclasses.dataclass(frozen=True)
class ClientSizeRow:
    """One table row's numbers for the figure.

    Attributes:
        label: Row label (e.g. ``r0.25/targeted``), as used by the paired differences.
        plan: Dropout plan name (``none``, ``uniform``, ``targeted``, ``file``).
        params_fraction: Parameters a client trains, fraction of the full model (mean over seeds).
        final: ``{set: {metric: {"mean", "min", "max"}}}``: the final model's error rates in
            percent over the row's seeds.
        seeds: Number of seeds of the row.
    """

    label: str
    plan: str
    params_fraction: float
    final: Mapping[str, Mapping[str, Mapping[str, float]]]
    seeds: int = 1


def plot_error_vs_client_size(rows: Sequence[ClientSizeRow], pretrained: Mapping[str, Mapping[str, float]],
                              path: Path, metric: str = "CER", differences: Sequence = ()) -> Path:
    """Write a PNG with one panel per evaluation set (and one more row for the differences).

    Args:
        rows: The table rows.
        pretrained: ``{set: {metric: error rate in percent}}`` of the pre-trained model.
        path: Output PNG path (parent directories are created).
        metric: ``CER`` or ``WER`` (percent).
        differences: Paired differences, each with ``a``, ``b`` (row labels), ``set``, ``metric``
            and ``result`` (``difference``, ``low``, ``high`` in points, ``confidence``), e.g.
            :class:`espnet_ext.federated.results.PairedRow`; those of `metric` are drawn in the
            second row, placed at the client size of their ``a`` row.

    Returns:
        `path`.

    Raises:
        ValueError: No rows, or a metric that is neither CER nor WER.
    """
    if not rows:
        raise ValueError("no runs to plot")
    if metric not in _PLOTTABLE_METRICS:
        raise ValueError(f"metric must be CER or WER, got {metric!r}")
    plt = pyplot()
    x_of = {r.label: r.params_fraction for r in rows}
    plan_of = {r.label: r.plan for r in rows}
    sets: List[str] = []
    for r in rows:
        sets += [s for s in r.final if s not in sets]
    diffs = [d for d in differences if d.metric == metric]
    n_rows = 2 if diffs else 1
    fig, axes = plt.subplots(n_rows, len(sets), figsize=(4.2 * len(sets), 3.6 * n_rows), squeeze=False)
    several = any(r.seeds > 1 for r in rows)
    xlabel = "client parameters trained (fraction of full model)"
    for ax, name in zip(axes[0], sets):
        for plan in sorted({r.plan for r in rows}):
            pts = sorted((r.params_fraction, r.final[name][metric])
                         for r in rows if r.plan == plan and name in r.final)
            if pts:
                xs = [x for x, _ in pts]
                ys = [st["mean"] for _, st in pts]
                err = [[st["mean"] - st["min"] for _, st in pts], [st["max"] - st["mean"] for _, st in pts]]
                ax.errorbar(xs, ys, yerr=err if several else None, marker=PLAN_MARKERS.get(plan, "x"),
                            capsize=3, label=plan)
        if name in pretrained:
            ax.axhline(pretrained[name][metric], color="grey", linestyle="--", label="pre-trained")
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} (%)" + (", mean and min-max over seeds" if several else ""))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if diffs:
        for ax, name in zip(axes[1], sets):
            kinds: Dict[str, list] = {}
            for d in diffs:
                if d.set != name:
                    continue
                kinds.setdefault(f"targeted - {plan_of.get(d.b, d.b)}", []).append(
                    (x_of.get(d.a, float("nan")), d.result.difference, d.result.low, d.result.high))
            for k, (kind, pts) in enumerate(sorted(kinds.items())):
                pts.sort()
                xs = [p[0] + (k - 0.5) * _DIFFERENCE_OFFSET for p in pts]
                ax.errorbar(xs, [p[1] for p in pts], yerr=[[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]],
                            marker="^", linestyle="none", capsize=3, label=kind)
            ax.axhline(0.0, color="grey", linestyle="--")
            ax.set_title(f"{name}: paired differences")
            ax.set_xlabel(xlabel)
            conf = 100 * diffs[0].result.confidence
            ax.set_ylabel(f"{metric} difference (points), {conf:g}% interval")
            ax.grid(alpha=0.3)
        axes[1][0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
