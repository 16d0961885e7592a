"""Comparison of finished federated runs: labels, table, figure, and the RESULTS.md section."""

import json
from pathlib import Path

import pytest

from espnet_ext.federated.results import comparison_table, write_comparison


def _results(run: str, plan: str, fraction: float, adapt_cer: float) -> dict:
    cost = {"updates": 4, "failures": 0, "params_trained": 1000 * fraction, "params_fraction": fraction,
            "bytes_down": 4e6 * fraction, "bytes_up": 4e6 * fraction, "step_seconds": 0.1,
            "peak_rss_bytes": 5e8}
    return {"run": run, "plan": plan, "plan_note": f"{plan} note", "rounds": 2, "cost": cost,
            "round_seconds": 1.5,
            "scores": {"pretrained": {"adapt": {"WER": 80.0, "CER": 40.0}, "orig": {"WER": 50.0, "CER": 15.0}},
                       "final": {"adapt": {"WER": 60.0, "CER": adapt_cer}, "orig": {"WER": 52.0, "CER": 16.0}}}}


def _write_run(root: Path, rel: str, results: dict) -> Path:
    d = root / rel
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(results))
    return d


def test_runs_sharing_a_name_are_labelled_by_their_rate_dir_and_plotted(tmp_path):
    dirs = [
        _write_run(tmp_path, "r0.25/none", _results("none", "none", 1.0, 30.0)),
        _write_run(tmp_path, "r0.25/uniform", _results("uniform", "uniform", 0.8, 33.0)),
        _write_run(tmp_path, "r0.5/uniform", _results("uniform", "uniform", 0.6, 35.0)),
    ]
    out = tmp_path / "results.md"
    table = write_comparison(dirs, out, plot=tmp_path / "fig" / "cer.png")
    rows = [line.split("|") for line in table.splitlines() if line.startswith("|")]
    labels = [r[1] for r in rows[2:]]
    assert labels == ["pre-trained", "none", "r0.25/uniform", "r0.5/uniform"]
    header = rows[0]
    assert rows[4][header.index("adapt CER")] == "33.00" and rows[2][header.index("orig CER")] == "15.00"
    assert (tmp_path / "fig" / "cer.png").stat().st_size > 1000
    assert "](fig/cer.png)" in out.read_text()


def test_unfinished_run_is_a_clear_error(tmp_path):
    (tmp_path / "r0.5" / "targeted").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has not finished"):
        write_comparison([tmp_path / "r0.5" / "targeted"], tmp_path / "out.md")


def test_table_rows_hold_each_runs_final_scores():
    table = comparison_table([_results("none", "none", 1.0, 30.0), _results("targeted", "targeted", 0.7, 31.0)])
    assert "|targeted|targeted|2|700 (0.700)|" in table
    assert table.splitlines()[4].endswith("|60.00|31.00|52.00|16.00|")


def test_results_md_includes_the_federated_comparison(tmp_path):
    from espnet_ext.reporting.recipe_results import write_results_md

    exp = tmp_path / "exp"
    scored = exp / "asr_x_seed1" / "decode_asr" / "test"
    scored.mkdir(parents=True)
    (scored / "scores.json").write_text(json.dumps({
        "WER": {"sentences": 1, "ref_tokens": 2, "hits": 2, "substitutions": 0, "deletions": 0,
                "insertions": 0, "sentence_errors": 0},
        "CER": {"sentences": 1, "ref_tokens": 5, "hits": 5, "substitutions": 0, "deletions": 0,
                "insertions": 0, "sentence_errors": 0}}))
    fl = exp / "fl_asr_x_seed1"
    fl.mkdir()
    (fl / "results.md").write_text("|model|\n|---|\n|none|\n\n![CER](cer_vs_client_size.png)\n")
    text = write_results_md(exp, exp / "RESULTS.md")
    assert "## Federated adaptation (stage 8)" in text
    assert "![CER](fl_asr_x_seed1/cer_vs_client_size.png)" in text
