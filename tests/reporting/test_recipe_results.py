"""RESULTS.md of a recipe: the scan summaries come from scan.json, linked to scan.md and heatmaps."""

import json

from espnet_ext.reporting.recipe_results import _scan_summaries
from espnet_ext.scan.result import ScanRow, write_tsv


def _scan(d, summary, md=True):
    d.mkdir(parents=True)
    write_tsv(d / "scan.tsv", [ScanRow("dev", "encoder.encoders.0", "enc_block", 0, 0.5, "reinit", 0, None,
                                       20.0, 10.0, 0.0, 0.0, "ambient")])
    (d / "scan.json").write_text(json.dumps({"summary": summary, "status": "done"}))
    if md:
        (d / "scan.md").write_text("# Layer-reset scan\n\n**an older line that scan.json replaced**\n")
        (d / "heatmap_reinit_dev.png").write_bytes(b"png")


def test_scan_summaries_read_scan_json_of_finished_reports(tmp_path):
    expdir = tmp_path / "exp"
    _scan(expdir / "asr_b" / "scan_block_dev", ["dev: 1 of 1 groups ambient (reinit to tau=0)"])
    _scan(expdir / "asr_a" / "scan_submodule_dev", ["dev: 0 of 1 groups ambient", "test: none"])
    _scan(expdir / "asr_a" / "scan_block_dev", ["running"], md=False)  # first run not finished
    text = _scan_summaries(expdir, tmp_path)
    assert text == "\n".join([
        "## Layer-reset scans (ambient layers)",
        "",
        "- `asr_a` / `scan_submodule_dev` ([table](exp/asr_a/scan_submodule_dev/scan.md); "
        "[heatmap_reinit_dev](exp/asr_a/scan_submodule_dev/heatmap_reinit_dev.png)):",
        "  - dev: 0 of 1 groups ambient",
        "  - test: none",
        "- `asr_b` / `scan_block_dev` ([table](exp/asr_b/scan_block_dev/scan.md); "
        "[heatmap_reinit_dev](exp/asr_b/scan_block_dev/heatmap_reinit_dev.png)):",
        "  - dev: 1 of 1 groups ambient (reinit to tau=0)",
    ]) + "\n\n"
    assert _scan_summaries(tmp_path / "empty", tmp_path) == ""
