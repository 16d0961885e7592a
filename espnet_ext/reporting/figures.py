"""Figures written as PNG files: the matplotlib backend, figure saving and the heatmap.

* :func:`pyplot`: ``matplotlib.pyplot`` with the file-only Agg backend (no display needed),
  imported on first use so that importing this module stays cheap;
* :func:`save_figure`: writes a figure atomically (a reader sees the old PNG or the whole new
  one) at :data:`DPI` and closes it;
* :func:`plot_heatmap`: one or several heatmap panels side by side with one colour scale, e.g.
  the layer-reset figure of Zhang et al. ("Are All Layers Created Equal?"): layers as rows,
  reset variants (checkpoint tau, or re-randomization seeds) as columns, colour = error rate
  after the reset; one panel per seed in the cross-run analysis;
* :func:`plot_matrix`: a square runs x runs heatmap (e.g. pairwise Jaccard).

Other figure kinds: :mod:`espnet_ext.reporting.analysis_figures` (cross-run analysis) and
:mod:`espnet_ext.reporting.federated_figures` (federated comparisons).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Sequence

import numpy as np

from espnet_ext.utils.atomic import atomic_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Resolution of every PNG written here (dots per inch).
DPI = 120
#: A panel with more cells than this gets no numbers written into its cells by default: they
#: would not be readable, and drawing thousands of text objects takes seconds.
MAX_ANNOTATED_CELLS = 80
#: Colour of the frame around highlighted cells (e.g. ambient resets).
FRAME_COLOUR = "magenta"
#: Hatching of uncertain cells (labels whose interval straddles the threshold).
UNCERTAIN_HATCH = "///"
# Below this fraction of the colour scale viridis is dark, so cell text is drawn in white.
_DARK_FRACTION = 0.6
# Tick labels longer than this (characters) are turned vertical so that columns do not collide.
_MAX_HORIZONTAL_LABEL = 6


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files only; works without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: "Figure", path: Path, dpi: int = DPI, tight: bool = False) -> Path:
    """Write `fig` as a PNG at `path` (parents created, replaced atomically) and close it.

    Args:
        fig: The figure.
        path: Output PNG path.
        dpi: Resolution (dots per inch).
        tight: Crop the saved image to the drawn content (``bbox_inches="tight"``).

    Returns:
        `path` (as a Path).
    """
    path = Path(path)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    finally:
        pyplot().close(fig)
    return path


def kind_colours(kinds: Sequence[str]) -> Dict[str, tuple]:
    """One distinct colour (RGBA) per kind, in the given order (tab10, or tab20 beyond ten)."""
    cmap = pyplot().get_cmap("tab10" if len(kinds) <= 10 else "tab20")
    return {k: cmap(i % cmap.N) for i, k in enumerate(kinds)}


@dataclasses.dataclass
class HeatmapPanel:
    """One panel of a heatmap: a rows x columns matrix and its cell marks.

    Attributes:
        values: Rows x columns numbers (e.g. error rates in percent); NaN cells stay blank.
        frame: Optional boolean matrix; True cells get a frame (e.g. ambient resets).
        uncertain: Optional boolean matrix; True cells are hatched and their number gets a
            ``?`` (e.g. labels whose interval straddles the threshold).
        title: Panel title (e.g. the run); empty for none.
    """

    values: Sequence[Sequence[float]]
    frame: Optional[Sequence[Sequence[bool]]] = None
    uncertain: Optional[Sequence[Sequence[bool]]] = None
    title: str = ""


def _matrix(panel: HeatmapPanel, shape: tuple) -> np.ndarray:
    m = np.asarray(panel.values, dtype=float)
    if all(shape) and m.size == shape[0] * shape[1]:
        m = m.reshape(shape)
    elif not all(shape) and m.size == 0:
        m = np.zeros(shape)
    if m.shape != shape:
        raise ValueError(f"heatmap panel {panel.title!r}: {m.shape} values for {shape[0]} row and "
                         f"{shape[1]} column labels")
    return m


def _colour_range(mats: Sequence[np.ndarray], vmin: Optional[float], vmax: Optional[float]) -> tuple:
    finite = np.concatenate([m[np.isfinite(m)] for m in mats])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    lo = lo if vmin is None else vmin
    hi = hi if vmax is None else vmax
    return lo, (hi if hi > lo else lo + 1.0)


def plot_heatmap(
    panels: Sequence[HeatmapPanel],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: Path,
    title: str = "",
    colorbar_label: str = "",
    xlabel: str = "",
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
    annotate: Optional[bool] = None,
) -> Path:
    """Write heatmaps side by side (shared rows, columns and colour scale) as a PNG.

    Args:
        panels: One or more panels, each rows x columns.
        row_labels: Row labels, drawn top to bottom (shown left of the first panel).
        col_labels: Column labels of every panel (e.g. ``tau=0``).
        path: Output PNG path (parent directories are created).
        title: Figure title.
        colorbar_label: Label of the shared colour scale (e.g. ``CER (%)``).
        xlabel: Label of the column axis.
        vmin, vmax: Colour scale limits (default: the finite values' range over all panels).
        annotate: Write each cell's value (one decimal) into it: True always, False never,
            None (default) only in panels of at most :data:`MAX_ANNOTATED_CELLS` cells.

    Returns:
        `path`.

    Raises:
        ValueError: No panel, or a panel whose shape differs from the label counts.
    """
    if not panels:
        raise ValueError("heatmap: nothing to draw")
    plt = pyplot()
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    shape = (len(row_labels), len(col_labels))
    mats = [_matrix(p, shape) for p in panels]
    lo, hi = _colour_range(mats, vmin, vmax)
    if annotate is None:
        annotate = shape[0] * shape[1] <= MAX_ANNOTATED_CELLS
    longest_col = max((len(c) for c in col_labels), default=1)
    vertical = longest_col > _MAX_HORIZONTAL_LABEL

    label_width = 0.1 * max((len(r) for r in row_labels), default=8)
    col_width = 0.6 if annotate else 0.45
    width = max(4.0, 1.8 + label_width + len(panels) * (col_width * shape[1] + 0.8))
    tick_height = 0.07 * longest_col if vertical else 0.2
    height = max(2.5, 0.3 * shape[0] + 1.6 + tick_height)
    fig, axes = plt.subplots(1, len(panels), figsize=(width, height), squeeze=False, sharey=True,
                             layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    image = None
    for ax, panel, m in zip(axes[0], panels, mats):
        image = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
        ax.set_xticks(range(shape[1]), labels=list(col_labels), fontsize=7,
                      rotation=90 if vertical else 0)
        ax.set_yticks(range(shape[0]), labels=list(row_labels), fontsize=7)
        if panel.title:
            ax.set_title(panel.title, fontsize=8)
        if xlabel:
            ax.set_xlabel(xlabel, fontsize=8)
        frames, hatched = [], []
        for r in range(shape[0]):
            for c in range(shape[1]):
                v = m[r, c]
                unsure = panel.uncertain is not None and bool(panel.uncertain[r][c])
                if annotate and np.isfinite(v):
                    dark = (v - lo) / (hi - lo) < _DARK_FRACTION
                    ax.text(c, r, f"{v:.1f}" + ("?" if unsure else ""), ha="center", va="center",
                            fontsize=6.5, color="white" if dark else "black")
                elif unsure:
                    ax.text(c, r, "?", ha="center", va="center", fontsize=7)
                if panel.frame is not None and panel.frame[r][c]:
                    frames.append(Rectangle((c - 0.5, r - 0.5), 1, 1))
                if unsure:
                    hatched.append(Rectangle((c - 0.5, r - 0.5), 1, 1))
        # One collection per mark draws much faster than one patch per cell.
        if hatched:
            ax.add_collection(PatchCollection(hatched, facecolor="none", edgecolor="grey", lw=0.0,
                                              hatch=UNCERTAIN_HATCH))
        if frames:
            ax.add_collection(PatchCollection(frames, facecolor="none", edgecolor=FRAME_COLOUR, lw=1.6))
    cbar = fig.colorbar(image, ax=list(axes[0]), fraction=0.05, pad=0.02)
    if colorbar_label:
        cbar.set_label(colorbar_label, fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_matrix(names: Sequence[str], matrix: Sequence[Sequence[float]], path: Path, title: str = "",
                label: str = "", vmin: Optional[float] = None, vmax: Optional[float] = None) -> Path:
    """A square runs x runs heatmap (e.g. pairwise Jaccard), NaN cells blank.

    Values are written into the cells while there are at most :data:`MAX_ANNOTATED_CELLS`.
    """
    return plot_heatmap([HeatmapPanel(matrix)], list(names), list(names), path, title=title,
                        colorbar_label=label, vmin=vmin, vmax=vmax)
