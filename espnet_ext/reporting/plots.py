"""Figures written as PNG files (matplotlib, no display needed).

`plot_heatmap` draws the layer-reset figure of Zhang et al. ("Are All Layers Created Equal?"):
layers as rows, reset variants (checkpoint tau, or re-randomization seeds) as columns, colour =
error rate after the reset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def plot_heatmap(
    values: Sequence[Sequence[float]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: Path,
    title: str = "",
    colorbar_label: str = "",
    xlabel: str = "",
    highlight: Optional[Sequence[Sequence[bool]]] = None,
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
    annotate: bool = True,
    uncertain: Optional[Sequence[Sequence[bool]]] = None,
) -> Path:
    """Write a heatmap PNG: rows x columns of numbers, NaN cells left blank.

    Args:
        values: Matrix (rows x columns), e.g. error rates in percent.
        row_labels: One label per row (e.g. layer group names), drawn top to bottom.
        col_labels: One label per column (e.g. ``tau=0``).
        path: Output PNG path (parent directories are created).
        title: Figure title.
        colorbar_label: Label of the colour scale (e.g. ``CER (%)``).
        xlabel: Label of the column axis.
        highlight: Optional boolean matrix; True cells get a frame (e.g. ambient resets).
        vmin, vmax: Colour scale limits (default: the finite values' range).
        annotate: Write each cell's value into it.
        uncertain: Optional boolean matrix; True cells are hatched and their value gets a ``?``
            (e.g. labels whose interval straddles the threshold).

    Returns:
        `path`.

    Raises:
        ValueError: The label counts do not match the matrix shape.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    data = np.asarray(values, dtype=float).reshape(len(row_labels), -1) if len(row_labels) else \
        np.zeros((0, len(col_labels)))
    if data.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"heatmap: {data.shape[0]}x{data.shape[1]} values for {len(row_labels)} row and "
            f"{len(col_labels)} column labels"
        )
    finite = data[np.isfinite(data)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:
        hi = lo + 1.0

    height = max(2.5, 0.32 * len(row_labels) + 1.6)
    width = max(4.0, 0.9 * len(col_labels) + 0.09 * max((len(r) for r in row_labels), default=10) + 2.5)
    fig, ax = plt.subplots(figsize=(width, height))
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
    ax.set_xticks(range(len(col_labels)), labels=list(col_labels))
    ax.set_yticks(range(len(row_labels)), labels=list(row_labels), fontsize=8)
    if xlabel:
        ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize=9)
    cbar = fig.colorbar(im, ax=ax)
    if colorbar_label:
        cbar.set_label(colorbar_label)
    for r in range(data.shape[0]):
        for c in range(data.shape[1]):
            v = data[r, c]
            unsure = uncertain is not None and uncertain[r][c]
            if annotate and np.isfinite(v):
                dark = (v - lo) / (hi - lo) < 0.6
                ax.text(c, r, f"{v:.1f}" + ("?" if unsure else ""), ha="center", va="center",
                        fontsize=7, color="white" if dark else "black")
            elif unsure:
                ax.text(c, r, "?", ha="center", va="center", fontsize=8)
            if unsure:
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, hatch="///",
                                       edgecolor="grey", lw=0.0))
            if highlight is not None and highlight[r][c]:
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="magenta", lw=1.8))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
