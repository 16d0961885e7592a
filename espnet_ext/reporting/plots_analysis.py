"""Figures of the cross-run layer analysis, written as PNG files (matplotlib Agg).

* :func:`plot_heatmap_panels`: heatmaps side by side with one colour scale (one panel per seed:
  groups x resets, colour = error change), ambient cells framed;
* :func:`plot_matrix`: a square runs x runs matrix (pairwise Jaccard or Spearman);
* :func:`plot_update_vs_delta`: one scatter panel per run, a point per group (x: weight update,
  y: error change after the reset), coloured by group kind, ambient groups filled;
* :func:`plot_trajectories`: per run (a row), each group's distance from its initial weights
  and to its final weights over the saved epochs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def _kind_colours(kinds: Sequence[str]) -> Dict[str, tuple]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if len(kinds) <= 10 else "tab20")
    return {k: cmap(i % cmap.N) for i, k in enumerate(kinds)}


def plot_heatmap_panels(
    panels: Sequence[Tuple[str, Sequence[Sequence[float]], Optional[Sequence[Sequence[bool]]]]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: Path,
    title: str = "",
    colorbar_label: str = "",
    xlabel: str = "",
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
    annotate: bool = True,
    uncertain: Optional[Sequence[Optional[Sequence[Sequence[bool]]]]] = None,
) -> Path:
    """Heatmaps side by side (shared rows, columns and colour scale), NaN cells blank.

    Args:
        panels: (panel title, rows x columns values, optional boolean frame matrix) per panel.
        row_labels: Row labels (shown on the first panel).
        col_labels: Column labels of every panel.
        path: Output PNG.
        title: Figure title.
        colorbar_label: Label of the shared colour scale.
        xlabel: Column axis label.
        vmin, vmax: Colour scale limits (default: the finite values' range).
        annotate: Write each cell's value into it (only with at most 80 cells per panel).
        uncertain: Per panel, an optional boolean matrix: True cells are hatched and their value
            gets a ``?`` (labels whose interval straddles the threshold).

    Returns:
        `path`.

    Raises:
        ValueError: No panel, or a panel whose shape differs from the labels.
    """
    if not panels:
        raise ValueError("heatmap panels: nothing to draw")
    plt = _pyplot()
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    shape = (len(row_labels), len(col_labels))
    mats = []
    for name, values, _ in panels:
        m = np.asarray(values, dtype=float).reshape(shape) if all(shape) else np.zeros(shape)
        if m.shape != shape:
            raise ValueError(f"panel {name!r}: {m.shape} values for {shape} labels")
        mats.append(m)
    finite = np.concatenate([m[np.isfinite(m)] for m in mats])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    lo = lo if vmin is None else vmin
    hi = hi if vmax is None else vmax
    if hi <= lo:
        hi = lo + 1.0
    label_width = 0.12 * max((len(r) for r in row_labels), default=8)
    width = 1.6 + label_width + len(panels) * (0.55 * len(col_labels) + 0.8)
    height = max(2.5, 0.3 * len(row_labels) + 1.8)
    fig, axes = plt.subplots(1, len(panels), figsize=(width, height), squeeze=False, sharey=True,
                             layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    # Numbers in the cells only while there are few enough to read (and to draw quickly).
    annotate = annotate and shape[0] * shape[1] <= 80
    im = None
    unsure_of = list(uncertain) if uncertain is not None else [None] * len(panels)
    for ax, (name, _, frame), m, unsure in zip(axes[0], panels, mats, unsure_of):
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
        ax.set_xticks(range(len(col_labels)), labels=list(col_labels), fontsize=7, rotation=90)
        ax.set_yticks(range(len(row_labels)), labels=list(row_labels), fontsize=7)
        ax.set_title(name, fontsize=8)
        if xlabel:
            ax.set_xlabel(xlabel, fontsize=8)
        frames, hatched = [], []
        for r in range(shape[0]):
            for c in range(shape[1]):
                v = m[r, c]
                mark = unsure is not None and unsure[r][c]
                if annotate and np.isfinite(v):
                    dark = (v - lo) / (hi - lo) < 0.6
                    ax.text(c, r, f"{v:.1f}" + ("?" if mark else ""), ha="center", va="center",
                            fontsize=6, color="white" if dark else "black")
                if frame is not None and frame[r][c]:
                    frames.append(Rectangle((c - 0.5, r - 0.5), 1, 1))
                if mark:
                    hatched.append(Rectangle((c - 0.5, r - 0.5), 1, 1))
        if frames:  # one collection draws much faster than one patch per cell
            ax.add_collection(PatchCollection(frames, facecolor="none", edgecolor="magenta", lw=1.5))
        if hatched:
            ax.add_collection(PatchCollection(hatched, facecolor="none", edgecolor="grey", lw=0.0,
                                              hatch="///"))
    cbar = fig.colorbar(im, ax=list(axes[0]), fraction=0.05, pad=0.02)
    if colorbar_label:
        cbar.set_label(colorbar_label)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_matrix(names: Sequence[str], matrix: Sequence[Sequence[float]], path: Path, title: str = "",
                label: str = "", vmin: Optional[float] = None, vmax: Optional[float] = None) -> Path:
    """A square runs x runs matrix (e.g. pairwise Jaccard), NaN cells blank, values written in."""
    return plot_heatmap_panels([("", matrix, None)], list(names), list(names), path, title=title,
                               colorbar_label=label, vmin=vmin, vmax=vmax)


def plot_update_vs_delta(
    panels: Sequence[Tuple[str, Sequence[Tuple[float, float, str, bool]]]],
    path: Path,
    xlabel: str = "relative weight update",
    ylabel: str = "error change after reset (points)",
) -> Path:
    """Scatter panels: one point per group (update, delta), colour = kind, filled = ambient.

    Args:
        panels: (panel title, [(update, delta, kind, ambient), ...]) per run; points with a
            NaN coordinate are not drawn.
        path: Output PNG.
        xlabel, ylabel: Axis labels.

    Returns:
        `path`.
    """
    if not panels:
        raise ValueError("update-vs-delta: nothing to draw")
    plt = _pyplot()
    kinds: List[str] = []
    for _, points in panels:
        for _, _, kind, _ in points:
            if kind not in kinds:
                kinds.append(kind)
    colour = _kind_colours(kinds)
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 1.8, 3.4 * rows), squeeze=False)
    for ax, (name, points) in zip(axes.flat, panels):
        pts = [p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])]
        for kind in kinds:
            for ambient in (True, False):
                sel = [p for p in pts if p[2] == kind and p[3] == ambient]
                if sel:
                    ax.scatter([p[0] for p in sel], [p[1] for p in sel], s=28, edgecolors=colour[kind],
                               facecolors=colour[kind] if ambient else "none", linewidths=1.2)
        if pts and min(p[0] for p in pts) > 0 and max(p[0] for p in pts) / min(p[0] for p in pts) > 20:
            ax.set_xscale("log")
        ax.axhline(0.0, color="grey", lw=0.6)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=colour[k], label=k) for k in kinds]
    handles += [Line2D([], [], marker="o", ls="", color="black", label="ambient (filled)"),
                Line2D([], [], marker="o", ls="", markerfacecolor="none", color="black",
                       label="critical (hollow)")]
    fig.legend(handles=handles, loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / (4.2 * cols + 1.8), 1))
    return _save(fig, path)


def plot_trajectories(
    runs: Sequence[Tuple[str, Sequence[int], Sequence[Tuple[str, str, Sequence[float], Sequence[float]]]]],
    path: Path,
) -> Path:
    """Per run (a row), two panels: ||θτ − θ0|| / ||θ0|| and ||θT − θτ|| / ||θτ|| over epochs τ.

    Args:
        runs: (run title, saved epochs, curves) per run, with curves = (group name, kind,
            from_init per epoch, to_final per epoch) per group; one line per group, coloured by
            kind, darker for deeper groups (layer order).
        path: Output PNG.

    Returns:
        `path`.
    """
    if not runs:
        raise ValueError("trajectories: nothing to draw")
    plt = _pyplot()
    kinds: List[str] = []
    for _, _, curves in runs:
        for _, kind, _, _ in curves:
            if kind not in kinds:
                kinds.append(kind)
    colour = _kind_colours(kinds)
    fig, axes = plt.subplots(len(runs), 2, figsize=(10.5, 2.7 * len(runs) + 0.4), squeeze=False)
    for row, (title, epochs, curves) in zip(axes, runs):
        for kind in kinds:
            members = [c for c in curves if c[1] == kind]
            for i, (_, _, from_init, to_final) in enumerate(members):
                alpha = 0.35 + 0.65 * (i + 1) / len(members)
                label = kind if i == len(members) - 1 else None
                row[0].plot(epochs, from_init, color=colour[kind], alpha=alpha, lw=1.1, label=label)
                row[1].plot(epochs, to_final, color=colour[kind], alpha=alpha, lw=1.1)
        row[0].set_ylabel("||θτ − θ0|| / ||θ0||", fontsize=7)
        row[1].set_ylabel("||θT − θτ|| / ||θτ||", fontsize=7)
        row[0].set_title(title, fontsize=8, loc="left")
        for ax in row:
            ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("epoch τ", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    height = 2.7 * len(runs) + 0.4
    fig.legend(handles, labels, loc="upper right", fontsize=7, ncol=min(len(kinds), 6))
    # Fixed margins: tight_layout would draw the whole figure once more.
    fig.subplots_adjust(left=0.08, right=0.98, wspace=0.25, bottom=0.5 / height, top=1 - 0.45 / height,
                        hspace=0.35)
    return _save(fig, path)
