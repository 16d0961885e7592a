"""Training curves of ESPnet runs: per-epoch numbers side by side, as a table and a PNG.

Did a training learn, and when? The numbers come from ESPnet's own reporter in each run's
``checkpoint.pth`` (:meth:`~espnet_ext.experiment.experiment_dir.ExperimentDir.epoch_stats`),
so a run that was killed and resumed shows every epoch. A curve is named ``<phase>/<key>`` after
ESPnet's ``<epoch>epoch results`` line: ``train/loss_ctc``, ``valid/acc``, ``valid/cer_ctc``,
``train/time`` (seconds)...

* :func:`read_curves`: the chosen curves of several runs;
* :func:`curves_markdown` / :func:`curves_tsv`: one row per run and epoch;
* :func:`plot_curves`: one panel per curve, one line per run (x: epoch).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from espnet_ext.reporting.figures import pyplot, save_figure
from espnet_ext.reporting.tables import fixed, markdown_table, tsv_text

#: Curves shown when none are asked for: is it learning (CTC loss, accuracy) and how fast.
DEFAULT_CURVES = ("train/loss_ctc", "valid/loss_ctc", "valid/acc", "valid/cer_ctc", "train/time")


class CurveError(ValueError):
    """A run has no per-epoch numbers, or a curve name is not one of them."""


@dataclasses.dataclass(frozen=True)
class RunCurves:
    """One run's curves.

    Attributes:
        name: The run (its directory name).
        path: Its experiment dir.
        values: {curve: {epoch: value}}; an epoch without that number is left out.
    """

    name: str
    path: Path
    values: Dict[str, Dict[int, float]]

    @property
    def epochs(self) -> List[int]:
        return sorted({e for points in self.values.values() for e in points})


def split_curve(curve: str) -> tuple:
    """``"valid/acc"`` -> ``("valid", "acc")``.

    Raises:
        CurveError: Not ``<phase>/<key>``.
    """
    phase, sep, key = curve.partition("/")
    if not sep or not phase or not key:
        raise CurveError(f"curve {curve!r} is not <phase>/<key> (e.g. train/loss_ctc, valid/acc)")
    return phase, key


def read_curves(exp_dirs: Sequence[Path], curves: Sequence[str] = DEFAULT_CURVES) -> List[RunCurves]:
    """The `curves` of each run in `exp_dirs`, in order.

    Raises:
        CurveError: A run without per-epoch numbers (no ESPnet ``checkpoint.pth``), or a curve
            that none of the runs reports (lists the ones they do).
    """
    from espnet_ext.experiment.experiment_dir import ExperimentDir

    wanted = [split_curve(c) for c in curves]
    out, available = [], set()
    for path in exp_dirs:
        stats = ExperimentDir(path).epoch_stats()
        if not stats:
            raise CurveError(
                f"{path}: no per-epoch numbers (looked for ESPnet's checkpoint.pth, written after "
                "each epoch by espnet2's trainer, with its reporter); give a training's output dir")
        available |= {f"{phase}/{key}" for subs in stats.values() for phase, row in subs.items() for key in row}
        values = {f"{phase}/{key}": {e: subs[phase][key] for e, subs in stats.items()
                                     if key in subs.get(phase, {})} for phase, key in wanted}
        out.append(RunCurves(Path(path).name, Path(path), values))
    # Runs of the same name from different places (e.g. two sweeps) are told apart by their path.
    names = [r.name for r in out]
    out = [dataclasses.replace(r, name=str(r.path)) if names.count(r.name) > 1 else r for r in out]
    missing = [c for c in curves if c not in available]
    if missing:
        raise CurveError(f"no run reports {', '.join(missing)}; they report: {', '.join(sorted(available))}")
    return out


def _rows(runs: Sequence[RunCurves], curves: Sequence[str], digits: int) -> List[list]:
    return [[r.name, e] + [fixed(r.values[c].get(e), digits) for c in curves]
            for r in runs for e in r.epochs]


def curves_markdown(runs: Sequence[RunCurves], curves: Sequence[str], digits: int = 3) -> List[str]:
    """A markdown table: run, epoch, one column per curve (blank where not reported)."""
    return markdown_table(["run", "epoch"] + list(curves), _rows(runs, curves, digits))


def curves_tsv(runs: Sequence[RunCurves], curves: Sequence[str]) -> str:
    """The same rows, tab-separated with a header line (full precision)."""
    return tsv_text(["run", "epoch"] + list(curves), _rows(runs, curves, 6))


def plot_curves(runs: Sequence[RunCurves], curves: Sequence[str], path: Path,
                title: Optional[str] = None) -> Path:
    """One panel per curve, one line per run; x = epoch. Returns `path`."""
    if not runs or not curves:
        raise CurveError("training curves: nothing to draw")
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    cols = min(3, len(curves))
    rows = -(-len(curves) // cols)
    ncol = min(len(runs), 3)
    legend_in = 0.22 * -(-len(runs) // ncol) + 0.15  # legend rows below the panels, inches
    height = 3.0 * rows + legend_in
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, height), squeeze=False)
    for i, curve in enumerate(curves):
        ax = axes[i // cols][i % cols]
        for r in runs:
            points = sorted(r.values[curve].items())
            ax.plot([e for e, _ in points], [v for _, v in points], marker="o", ms=2.5, lw=1.2, label=r.name)
        ax.set_title(curve, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
    for j in range(len(curves), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, legend_in / height, 1, 1))
    return save_figure(fig, path)
