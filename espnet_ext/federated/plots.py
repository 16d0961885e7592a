"""Figure of a federated comparison: error rate against client model size, one marker per plan.

Each table row (one run, or one plan over several seeds) contributes one point per evaluation set:
x = parameters a client trains (fraction of the full model, as measured by the cost ledger), y =
the final global model's error rate, its mean over the seeds with an error bar from the lowest to
the highest seed. The pre-trained model is a dashed line, so adaptation gain and forgetting read
off the same panel. With paired differences (:func:`espnet_ext.federated.results.paired_differences`),
a second row of panels shows targeted minus uniform and targeted minus no dropout at each client
size, with their paired bootstrap intervals as error bars and a line at zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

PLAN_MARKERS = {"none": "o", "uniform": "s", "targeted": "^", "file": "D"}


def plot_error_vs_client_size(runs: Sequence[Union[dict, Sequence[dict]]], path: Path, metric: str = "CER",
                              differences: Sequence = ()) -> Path:
    """Write a PNG with one panel per evaluation set (and one more row for the differences).

    Args:
        runs: Results dicts (``results.json`` of :func:`espnet_ext.federated.results.write_results`)
            or lists of them (the seeds of one plan), each optionally with a ``label`` key.
        path: Output PNG path (parent directories are created).
        metric: ``CER`` or ``WER`` (percent).
        differences: :class:`espnet_ext.federated.results.PairedRow` items; those of `metric`
            are drawn in the second row, placed at the client size of their ``a`` row.

    Returns:
        `path`.

    Raises:
        ValueError: No runs, or a metric that is neither CER nor WER.
    """
    if not runs:
        raise ValueError("no runs to plot")
    if metric not in ("CER", "WER"):
        raise ValueError(f"metric must be CER or WER, got {metric!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from espnet_ext.federated.results import aggregate

    groups = [list(r) if isinstance(r, (list, tuple)) else [r] for r in runs]
    aggs = [aggregate(g) for g in groups]
    labels = [g[0].get("label", g[0]["run"]) for g in groups]
    x_of = {label: a["cost"]["params_fraction"] for label, a in zip(labels, aggs)}
    sets = []
    for a in aggs:
        sets += [s for s in a["final"] if s not in sets]
    diffs = [d for d in differences if d.metric == metric]
    n_rows = 2 if diffs else 1
    fig, axes = plt.subplots(n_rows, len(sets), figsize=(4.2 * len(sets), 3.6 * n_rows), squeeze=False)
    pre = groups[0][0]["scores"]["pretrained"]
    several = any(a["n"] > 1 for a in aggs)
    for ax, name in zip(axes[0], sets):
        for plan in sorted({a["plan"] for a in aggs}):
            pts = sorted((a["cost"]["params_fraction"], a["final"][name][metric])
                         for a in aggs if a["plan"] == plan and name in a["final"])
            if pts:
                xs = [x for x, _ in pts]
                ys = [st["mean"] for _, st in pts]
                err = [[st["mean"] - st["min"] for _, st in pts], [st["max"] - st["mean"] for _, st in pts]]
                ax.errorbar(xs, ys, yerr=err if several else None, marker=PLAN_MARKERS.get(plan, "x"),
                            capsize=3, label=plan)
        if name in pre:
            ax.axhline(pre[name][metric], color="grey", linestyle="--", label="pre-trained")
        ax.set_title(name)
        ax.set_xlabel("client parameters trained (fraction of full model)")
        ax.set_ylabel(f"{metric} (%)" + (", mean and min-max over seeds" if several else ""))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if diffs:
        for ax, name in zip(axes[1], sets):
            kinds = {}
            for d in diffs:
                if d.set != name:
                    continue
                b_plan = next((a["plan"] for label, a in zip(labels, aggs) if label == d.b), d.b)
                kinds.setdefault(f"targeted - {b_plan}", []).append(
                    (x_of.get(d.a, float("nan")), d.result.difference, d.result.low, d.result.high))
            for k, (kind, pts) in enumerate(sorted(kinds.items())):
                pts.sort()
                # A small horizontal offset keeps the two comparisons at one client size apart.
                xs = [p[0] + (k - 0.5) * 0.004 for p in pts]
                ax.errorbar(xs, [p[1] for p in pts], yerr=[[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]],
                            marker="^", linestyle="none", capsize=3, label=kind)
            ax.axhline(0.0, color="grey", linestyle="--")
            ax.set_title(f"{name}: paired differences")
            ax.set_xlabel("client parameters trained (fraction of full model)")
            conf = 100 * diffs[0].result.confidence
            ax.set_ylabel(f"{metric} difference (points), {conf:g}% interval")
            ax.grid(alpha=0.3)
        axes[1][0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
