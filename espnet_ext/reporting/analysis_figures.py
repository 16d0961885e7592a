"""Figures of the cross-run layer analysis other than heatmaps, written as PNG files.

* :func:`plot_update_vs_delta`: one scatter panel per run, a point per group (x: weight update,
  y: error change after the reset), coloured by group kind, ambient groups filled;
* :func:`plot_trajectories`: per run (a row), each group's distance from its initial weights
  and to its final weights over the saved epochs;
* :func:`plot_ambient_fraction`: the depth sweep's fraction of ambient groups per kind vs encoder
  blocks, one panel per norm;
* :func:`plot_block_positions`: the depth sweep's ambient / critical / uncertain blocks by
  normalized depth, one row per model depth;
* :func:`plot_block_delta`: the depth sweep's error change after resetting each block, in units
  of the ambient tolerance, vs normalized depth, one line per model depth.

The analysis's heatmaps (one panel per seed, runs x runs matrices, the depth profile) are
:func:`espnet_ext.reporting.figures.plot_heatmap`'s.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Sequence, Tuple

from espnet_ext.reporting.figures import kind_colours, pyplot, save_figure


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
    plt = pyplot()
    kinds: List[str] = []
    for _, points in panels:
        for _, _, kind, _ in points:
            if kind not in kinds:
                kinds.append(kind)
    colour = kind_colours(kinds)
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
    return save_figure(fig, path)


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
    plt = pyplot()
    kinds: List[str] = []
    for _, _, curves in runs:
        for _, kind, _, _ in curves:
            if kind not in kinds:
                kinds.append(kind)
    colour = kind_colours(kinds)
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
    return save_figure(fig, path)


def _line_labels(panels: Sequence[Tuple[str, Sequence[Tuple[str, object]]]]) -> List[str]:
    """The lines' labels over all panels, each once, in order of appearance (one legend)."""
    return list(dict.fromkeys(label for _, lines in panels for label, _ in lines))


def plot_ambient_fraction(
    panels: Sequence[Tuple[str, Sequence[Tuple[str, Sequence[Tuple[float, float, Sequence[float]]]]]]],
    path: Path,
    xlabel: str = "encoder blocks",
    ylabel: str = "fraction of groups ambient",
) -> Path:
    """Panels side by side (e.g. one per norm), one line per group kind: fraction vs depth.

    Args:
        panels: (panel title, [(kind, [(x, mean fraction, per-seed fractions), ...]), ...]);
            the line joins the means, the seeds are small dots at the same x.
        path: Output PNG.
        xlabel, ylabel: Axis labels.

    Returns:
        `path`.
    """
    if not panels:
        raise ValueError("ambient fraction: nothing to draw")
    plt = pyplot()
    kinds = _line_labels(panels)
    colour = kind_colours(kinds)
    xs = sorted({p[0] for _, lines in panels for _, points in lines for p in points})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 2.2, 3.6), squeeze=False,
                             sharey=True)
    for ax, (title, lines) in zip(axes[0], panels):
        for kind, points in lines:
            points = sorted(points)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=colour[kind],
                    lw=1.4, ms=4)
            seeds = [(p[0], v) for p in points for v in p[2]]
            ax.scatter([x for x, _ in seeds], [v for _, v in seeds], s=9, color=colour[kind], alpha=0.45)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(xs)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel(ylabel, fontsize=8)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", color=colour[k], label=k) for k in kinds]
    handles.append(Line2D([], [], marker="o", ls="", ms=3, color="grey", alpha=0.6, label="seeds"))
    fig.legend(handles=handles, loc="center right", fontsize=7)
    width = 4.6 * len(panels) + 2.2
    fig.tight_layout(rect=(0, 0, 1 - 1.7 / width, 1))
    return save_figure(fig, path)


#: Marker and colour of each block mark in :func:`plot_block_positions`.
_POSITION_MARKS = {"ambient": ("o", "tab:green"), "critical": ("x", "tab:red"),
                   "uncertain": ("s", "tab:orange")}


def plot_block_positions(
    panels: Sequence[Tuple[str, Sequence[Tuple[str, Sequence[Sequence[Tuple[float, str]]]]]]],
    path: Path,
    xlabel: str = "normalized depth (block / (blocks − 1))",
) -> Path:
    """Where blocks of each mark sit: x = normalized depth, one row per model, seeds stacked.

    Args:
        panels: (panel title, [(row label, [[(position, mark), ...] per seed]), ...]) with mark
            ``ambient``, ``critical`` or ``uncertain``; a row's seeds are drawn slightly apart.
        path: Output PNG.
        xlabel: Axis label.

    Returns:
        `path`.
    """
    if not panels:
        raise ValueError("block positions: nothing to draw")
    plt = pyplot()
    n_rows = max(len(rows) for _, rows in panels)
    height = 0.55 * n_rows + 1.6
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels) + 1.6, height), squeeze=False)
    for ax, (title, rows) in zip(axes[0], panels):
        for i, (_, seeds) in enumerate(rows):
            # Seeds spread over +-0.25 around the row (one seed: on the row).
            offsets = ([0.0] if len(seeds) == 1
                       else [-0.25 + 0.5 * j / (len(seeds) - 1) for j in range(len(seeds))])
            for off, blocks in zip(offsets, seeds):
                for mark, (marker, col) in _POSITION_MARKS.items():
                    xs = [x for x, m in blocks if m == mark]
                    if xs:
                        ax.scatter(xs, [i + off] * len(xs), marker=marker, s=26, color=col,
                                   linewidths=1.2)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([label for label, _ in rows], fontsize=7)
        ax.set_ylabel("seeds stacked, first lowest", fontsize=7)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlim(-0.05, 1.05)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", color="grey", alpha=0.25, lw=0.5)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker=marker, ls="", color=col, label=mark)
               for mark, (marker, col) in _POSITION_MARKS.items()]
    fig.legend(handles=handles, loc="center right", fontsize=7)
    width = 4.8 * len(panels) + 1.6
    fig.tight_layout(rect=(0, 0, 1 - 1.3 / width, 1))
    return save_figure(fig, path)


#: y ticks of :func:`plot_block_delta` (tolerance units; linear below 1, logarithmic above).
_DELTA_TICKS = (-1, -0.5, 0, 0.5, 1, 2, 5, 10, 20, 50, 100)


def plot_block_delta(
    panels: Sequence[Tuple[str, Sequence[Tuple[str, Sequence[Sequence[Tuple[float, float]]]]]]],
    path: Path,
    xlabel: str = "normalized depth (block / (blocks − 1))",
    ylabel: str = "error change / ambient tolerance",
) -> Path:
    """How much resetting each block hurts, by normalized depth: one line per model depth.

    Args:
        panels: (panel title, [(line label, [[(position, value), ...] per seed]), ...]); a line
            joins the mean over seeds at each position, the seeds are small dots. With values in
            units of the ambient tolerance, 1 is the ambient threshold (dashed).
        path: Output PNG.
        xlabel, ylabel: Axis labels.

    Returns:
        `path`.
    """
    if not panels:
        raise ValueError("block delta: nothing to draw")
    plt = pyplot()
    labels = _line_labels(panels)
    cmap = plt.get_cmap("viridis")
    colour = {label: cmap(i / max(1, len(labels) - 1) * 0.9) for i, label in enumerate(labels)}
    values = [v for _, lines in panels for _, seeds in lines for seed in seeds for _, v in seed]
    lo, hi = min(values, default=0.0), max(values, default=1.0)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels) + 1.8, 3.6), squeeze=False,
                             sharey=True)
    for ax, (title, lines) in zip(axes[0], panels):
        for label, seeds in lines:
            by_x: dict = {}
            for seed in seeds:
                for x, v in seed:
                    by_x.setdefault(x, []).append(v)
            xs = sorted(by_x)
            ax.plot(xs, [sum(by_x[x]) / len(by_x[x]) for x in xs], marker="o", ms=3, lw=1.3,
                    color=colour[label])
            dots = [(x, v) for x in xs for v in by_x[x]]
            ax.scatter([x for x, _ in dots], [v for _, v in dots], s=8, color=colour[label], alpha=0.4)
        # Symmetric log: changes span from below the tolerance (ambient) to tens of times it.
        ax.set_yscale("symlog", linthresh=1.0)
        ticks = [t for t in _DELTA_TICKS if lo - 0.5 <= t <= max(hi, 1.0) * 1.5]
        ax.set_yticks(ticks)
        ax.set_yticklabels([f"{t:g}" for t in ticks])
        ax.set_ylim(min(lo, 0.0) - 0.1, max(hi, 1.0) * 1.4)
        ax.axhline(1.0, color="grey", ls="--", lw=0.9)
        ax.set_xlim(-0.05, 1.05)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", color="grey", alpha=0.25, lw=0.5)
    axes[0][0].set_ylabel(ylabel, fontsize=8)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ms=3, color=colour[label], label=label) for label in labels]
    handles.append(Line2D([], [], ls="--", color="grey", label="ambient threshold"))
    fig.legend(handles=handles, loc="center right", fontsize=7)
    width = 4.8 * len(panels) + 1.8
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / width, 1))
    return save_figure(fig, path)
