"""Training curves (``python -m espnet_ext.bin.training_curves``) from ESPnet's reporter in
checkpoint.pth: the table, the TSV, the figure and the errors."""

from __future__ import annotations

import datetime

import numpy as np
import pytest
import torch

from espnet_ext.bin.training_curves import main
from espnet_ext.reporting.training_curves import CurveError, curves_tsv, read_curves


def write_checkpoint(exp, losses, accs):
    """checkpoint.pth as ESPnet's trainer writes it: its reporter holds, per epoch, numpy values
    and timedelta times (train 60 s + epoch, valid 2 s)."""
    stats = {}
    for epoch, (loss, acc) in enumerate(zip(losses, accs), start=1):
        stats[epoch] = {
            "train": {"loss_ctc": np.float64(loss), "time": datetime.timedelta(seconds=60 + epoch),
                      "total_count": 10 * epoch},
            "valid": {"acc": np.float64(acc), "time": datetime.timedelta(seconds=2), "total_count": epoch}}
    exp.mkdir(parents=True)
    torch.save({"model": {"w": torch.ones(1)}, "reporter": {"stats": stats, "epoch": len(losses)},
                "optimizers": [], "schedulers": [], "scaler": None}, exp / "checkpoint.pth")
    return exp


@pytest.fixture
def runs(tmp_path):
    stalled = write_checkpoint(tmp_path / "a" / "run_16x64", [104.0, 93.0, 91.6], [0.16, 0.19, 0.20])
    learning = write_checkpoint(tmp_path / "b" / "run_16x64", [107.0, 95.6, 87.9], [0.13, 0.18, 0.20])
    other = write_checkpoint(tmp_path / "a" / "run_4x64", [100.0, 60.0], [0.2, 0.5])
    return stalled, learning, other


def test_read_curves_and_tables(runs):
    stalled, learning, other = runs
    curves = read_curves([stalled, learning, other], ["train/loss_ctc", "valid/acc", "train/time"])
    # Same directory name in two places: told apart by the path.
    assert [r.name for r in curves] == [str(stalled), str(learning), "run_4x64"]
    assert curves[0].values["train/loss_ctc"] == {1: 104.0, 2: 93.0, 3: pytest.approx(91.6)}
    assert curves[2].values["train/time"] == {1: 61.0, 2: 62.0}
    assert curves[2].epochs == [1, 2]
    tsv = curves_tsv(curves, ["train/loss_ctc", "valid/acc", "train/time"]).splitlines()
    assert tsv[0] == "run\tepoch\ttrain/loss_ctc\tvalid/acc\ttrain/time"
    assert tsv[-1] == "run_4x64\t2\t60.000000\t0.500000\t62.000000"


def test_cli_prints_and_writes_files(runs, tmp_path, capsys):
    stalled, learning, _ = runs
    out = tmp_path / "curves"
    assert main([str(stalled), str(learning), "--curves", "train/loss_ctc", "valid/acc",
                 "--epochs", "2", "--out_dir", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"| {learning} | 2 | 95.600 | 0.180 |" in stdout
    assert f"| {learning} | 3 |" not in stdout  # --epochs 2: printed table only
    assert f"| {learning} | 3 | 87.900 | 0.200 |" in (out / "curves.md").read_text()
    assert len((out / "curves.tsv").read_text().splitlines()) == 1 + 6
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_are_one_line(runs, tmp_path, capsys):
    stalled = runs[0]
    (tmp_path / "untrained").mkdir()
    assert main([str(tmp_path / "untrained")]) == 1
    assert "no per-epoch numbers (looked for ESPnet's checkpoint.pth" in capsys.readouterr().err
    assert main([str(stalled), "--curves", "valid/loss_att"]) == 1
    err = capsys.readouterr().err
    assert "no run reports valid/loss_att; they report:" in err and "train/loss_ctc" in err
    with pytest.raises(CurveError, match="not <phase>/<key>"):
        read_curves([stalled], ["loss_ctc"])
