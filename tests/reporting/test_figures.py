"""Heatmaps (one and several panels, frames, hatching), figure saving, other figure kinds."""

from __future__ import annotations

import math
import sys

import pytest

from espnet_ext.reporting import figures
from espnet_ext.reporting.figures import HeatmapPanel, plot_heatmap, plot_matrix

PNG = b"\x89PNG"


def _capture_figures(monkeypatch):
    """Capture the figure before it is saved: returns a list that receives it."""
    captured = []
    real = figures.save_figure

    def keep(fig, path, **kw):
        captured.append(fig)
        return real(fig, path, **kw)

    monkeypatch.setattr(figures, "save_figure", keep)
    return captured


def test_import_does_not_load_matplotlib():
    import subprocess

    code = "import sys, espnet_ext.reporting.figures, espnet_ext.reporting.tables; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pyplot_uses_the_file_only_backend():
    plt = figures.pyplot()
    assert plt.get_backend().lower() == "agg"


def test_one_panel_heatmap_writes_png_with_hatched_uncertain_cells(tmp_path, monkeypatch):
    captured = _capture_figures(monkeypatch)
    png = plot_heatmap([HeatmapPanel([[1.0], [2.0]], uncertain=[[False], [True]])], ["a", "b"], ["tau=0"],
                       tmp_path / "sub" / "h.png", title="t", colorbar_label="CER (%)")
    assert png == tmp_path / "sub" / "h.png" and png.read_bytes()[:4] == PNG
    (fig,) = captured
    ax = fig.axes[0]
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["1.0", "2.0?"]
    hatches = [c.get_hatch() for c in ax.collections if c.get_hatch()]
    assert hatches == [figures.UNCERTAIN_HATCH]
    assert fig.get_suptitle() == "t"
    assert not list(tmp_path.glob("sub/.*.tmp"))  # the temporary file was renamed


def test_several_panels_share_rows_and_colour_scale(tmp_path, monkeypatch):
    captured = _capture_figures(monkeypatch)
    panels = [HeatmapPanel([[0.0, 1.0], [2.0, math.nan]], frame=[[True, False], [False, False]], title="s1"),
              HeatmapPanel([[4.0, 5.0], [6.0, 7.0]], uncertain=[[False, False], [False, True]], title="s2")]
    png = plot_heatmap(panels, ["g1", "g2"], ["tau=0", "rerand"], tmp_path / "p.png", xlabel="reset")
    assert png.read_bytes()[:4] == PNG
    (fig,) = captured
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == 2
    assert {im.get_clim() for im in images} == {(0.0, 7.0)}  # one colour scale
    assert [ax.get_title() for ax in fig.axes[:2]] == ["s1", "s2"]
    first, second = fig.axes[:2]
    from matplotlib.colors import to_rgba

    framed = [c for c in first.collections if tuple(c.get_edgecolor()[0]) == to_rgba(figures.FRAME_COLOUR)]
    assert len(framed) == 1 and len(framed[0].get_paths()) == 1  # one framed cell
    assert [c.get_hatch() for c in second.collections if c.get_hatch()] == [figures.UNCERTAIN_HATCH]
    assert "7.0?" in [t.get_text() for t in second.texts]
    assert "nan" not in [t.get_text() for t in first.texts]  # NaN cells stay blank


def test_large_panels_are_not_annotated_unless_asked(tmp_path, monkeypatch):
    captured = _capture_figures(monkeypatch)
    rows = [f"g{i}" for i in range(30)]
    values = [[float(i + j) for j in range(3)] for i in range(30)]
    unsure = [[i == 0 and j == 0 for j in range(3)] for i in range(30)]
    plot_heatmap([HeatmapPanel(values, uncertain=unsure)], rows, ["0", "1", "2"], tmp_path / "a.png")
    plot_heatmap([HeatmapPanel(values)], rows, ["0", "1", "2"], tmp_path / "b.png", annotate=True)
    auto, forced = captured
    assert [t.get_text() for t in auto.axes[0].texts] == ["?"]  # uncertain cells keep their mark
    assert len(forced.axes[0].texts) == 90


def test_heatmap_rejects_bad_shapes_and_no_panels(tmp_path):
    with pytest.raises(ValueError, match="nothing to draw"):
        plot_heatmap([], ["a"], ["b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="2 row and 1 column labels"):
        plot_heatmap([HeatmapPanel([[1.0, 2.0], [3.0, 4.0]])], ["a", "b"], ["c"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_matrix_is_a_square_heatmap(tmp_path, monkeypatch):
    captured = _capture_figures(monkeypatch)
    png = plot_matrix(["r1", "r2"], [[1.0, 0.5], [0.5, 1.0]], tmp_path / "m.png", label="Jaccard",
                      vmin=0.0, vmax=1.0)
    assert png.read_bytes()[:4] == PNG
    assert captured[0].axes[0].images[0].get_clim() == (0.0, 1.0)


def test_save_figure_replaces_atomically_and_closes(tmp_path):
    plt = figures.pyplot()
    path = tmp_path / "f.png"
    path.write_bytes(b"old")
    fig = plt.figure()
    assert figures.save_figure(fig, path, dpi=50) == path
    assert path.read_bytes()[:4] == PNG
    assert not plt.fignum_exists(fig.number)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]


def test_analysis_figures_write_pngs(tmp_path):
    from espnet_ext.reporting.analysis_figures import plot_trajectories, plot_update_vs_delta

    scatter = plot_update_vs_delta([("run1", [(0.1, 1.0, "enc", True), (0.5, math.nan, "dec", False)])],
                                   tmp_path / "u.png")
    lines = plot_trajectories([("run1", [0, 1, 2], [("g", "enc", [0.0, 0.1, 0.2], [0.2, 0.1, 0.0])])],
                              tmp_path / "t.png")
    assert scatter.read_bytes()[:4] == PNG and lines.read_bytes()[:4] == PNG


def test_client_size_figure_from_aggregated_rows(tmp_path):
    from types import SimpleNamespace

    from espnet_ext.reporting.federated_figures import ClientSizeRow, plot_error_vs_client_size

    def stats(v):
        return {"CER": {"mean": v, "min": v - 1, "max": v + 1}, "WER": {"mean": v, "min": v, "max": v}}

    rows = [ClientSizeRow("none", "none", 1.0, {"adapt": stats(20.0)}, seeds=2),
            ClientSizeRow("targeted", "targeted", 0.5, {"adapt": stats(22.0)}, seeds=2)]
    diff = SimpleNamespace(a="targeted", b="none", set="adapt", metric="CER",
                           result=SimpleNamespace(difference=2.0, low=1.0, high=3.0, confidence=0.95))
    png = plot_error_vs_client_size(rows, {"adapt": {"CER": 30.0, "WER": 40.0}}, tmp_path / "c.png",
                                    differences=[diff])
    assert png.stat().st_size > 1000
    with pytest.raises(ValueError, match="CER or WER"):
        plot_error_vs_client_size(rows, {}, tmp_path / "d.png", metric="PER")
