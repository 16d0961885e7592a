"""Figure of a federated comparison: error rate against client model size, one marker per plan.

Each finished run contributes one point per evaluation set: x = parameters a client trains (fraction
of the full model, as measured by the cost ledger), y = the final global model's error rate. The
pre-trained model is a dashed line, so adaptation gain and forgetting read off the same panel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

PLAN_MARKERS = {"none": "o", "uniform": "s", "targeted": "^", "file": "D"}


def plot_error_vs_client_size(runs: Sequence[dict], path: Path, metric: str = "CER") -> Path:
    """Write a PNG with one panel per evaluation set.

    Args:
        runs: Results dicts (``results.json`` of :func:`espnet_ext.federated.results.write_results`),
            each optionally with a ``label`` key (else its ``run`` name).
        path: Output PNG path (parent directories are created).
        metric: ``CER`` or ``WER`` (percent).

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

    sets = []
    for r in runs:
        for name in r["scores"]["final"]:
            if name not in sets:
                sets.append(name)
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.6), squeeze=False)
    pre = runs[0]["scores"]["pretrained"]
    for ax, name in zip(axes[0], sets):
        for plan in sorted({r["plan"] for r in runs}):
            pts = sorted((r["cost"]["params_fraction"], r["scores"]["final"][name][metric])
                         for r in runs if r["plan"] == plan and name in r["scores"]["final"])
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker=PLAN_MARKERS.get(plan, "x"), label=plan)
        if name in pre:
            ax.axhline(pre[name][metric], color="grey", linestyle="--", label="pre-trained")
        ax.set_title(name)
        ax.set_xlabel("client parameters trained (fraction of full model)")
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
