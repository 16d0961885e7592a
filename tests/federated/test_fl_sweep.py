"""Federated sweeps over dropout rates: one call for the runs of every rate, no dropout once, the
uniform plan's stacks from the scan's recorded scoring, resumable, one table and plot."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from helpers import make_tone_data_dir, train_tiny_model

from espnet_ext.federated.options import OptionsError
from espnet_ext.federated.sweep import (
    done_record,
    locate_scan,
    rate_dir,
    rate_name,
    rate_plans,
    uniform_stacks_for,
)

pytest.importorskip("espnet2.tasks.asr")
pytest.importorskip("flwr")

PLANS = ("none", "uniform", "targeted")


def test_rate_names_plans_per_rate_and_done_records():
    assert [rate_name(r) for r in (0.25, 0.5, 0.1, 1.0, 1 / 3)] == ["0.25", "0.5", "0.1", "1", repr(1 / 3)]
    assert rate_dir("fl", 0.5) == Path("fl/r0.5")
    assert rate_plans([0.25, 0.5], PLANS) == [(0.25, list(PLANS)), (0.5, ["uniform", "targeted"])]
    assert rate_plans([0.5], ["targeted"]) == [(0.5, ["targeted"])]
    assert done_record([1, 2, 3]) == "seeds 1,2,3" and done_record(None) == "seeds 0"


def test_uniform_stacks_follow_the_scans_scoring_and_scans_are_located():
    assert uniform_stacks_for("ctc_greedy") == ("encoder",)
    assert uniform_stacks_for("beam") == ("encoder", "decoder")
    with pytest.raises(OptionsError, match=r"scoring is not recorded .*\(--uniform_stacks encoder"):
        uniform_stacks_for(None, "exp/scan_block_dev")
    assert locate_scan("exp/a", granularity="block", dataset="dev") == Path("exp/a/scan_block_dev")
    assert locate_scan("exp/a", scan_dir="elsewhere/scan") == Path("elsewhere/scan")
    with pytest.raises(OptionsError, match="give the scan as --scan_dir DIR or as --scan_granularity"):
        locate_scan("exp/a")
    with pytest.raises(OptionsError, match="needs --scan_dataset"):
        locate_scan("exp/a", granularity="block")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained model with a ctc_greedy block scan in its experiment dir, and its data."""
    from espnet_ext.scan.result import ScanRow, scan_dir, write_tsv

    root = tmp_path_factory.mktemp("sweep")
    exp, _ = train_tiny_model(root, max_epoch=1)
    adapt = make_tone_data_dir(root / "data", "adapt", n_utts=4, seed=2)
    scan = scan_dir(exp, "block", "valid")
    scan.mkdir()
    rows = [ScanRow("valid", g, "enc_block", None, None, "reinit", 0, None, 0.0, d, 0.0, d, label)
            for g, label, d in (("encoder.embed", "critical", 90.0), ("encoder.encoders.0", "critical", 40.0),
                                ("encoder.encoders.1", "ambient", 1.0), ("ctc", "critical", 99.0))]
    write_tsv(scan / "scan.tsv", rows)
    (scan / "scan.json").write_text(json.dumps({"granularity": "block", "scoring": "ctc_greedy",
                                                "datasets": ["valid"], "status": "done"}))
    return {"exp": exp, "adapt": adapt, "valid": root / "data" / "valid"}


def _sweep(trained, out: Path, seeds: str) -> int:
    from espnet_ext.bin.fl_simulate import main

    return main(["sweep", "--exp_dir", str(trained["exp"]), "--model_file", "latest.pth",
                 "--scan_granularity", "block", "--scan_dataset", "valid", "--rates", "0.25,0.5",
                 "--adapt_data", str(trained["adapt"]), "--eval_data", f"adapt={trained['valid']}",
                 "--out_dir", str(out), "--seeds", seeds, "--rounds", "1", "--clients_per_round", "1",
                 "--batch_size", "2", "--bootstrap_resamples", "50", "--backend", "local", "--no_progress"])


def _mtimes(out: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in out.rglob("history.jsonl")}


def test_sweep_runs_no_dropout_once_resumes_and_reruns_for_new_seeds(trained, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "fl"
    assert _sweep(trained, out, "1") == 0
    # No dropout at the first rate only; uniform and targeted at both.
    runs = sorted(str(p.parent.relative_to(out)) for p in out.rglob("results.json"))
    assert runs == ["r0.25/none/seed1", "r0.25/targeted/seed1", "r0.25/uniform/seed1",
                    "r0.5/targeted/seed1", "r0.5/uniform/seed1"]
    assert all((out / r / ".done").read_text() == "seeds 1\n" for r in ("r0.25", "r0.5"))
    # A ctc_greedy scan scored the encoder only: uniform dropout is drawn from the encoder too.
    uniform = json.loads((out / "r0.5" / "uniform" / "seed1" / "plan.json").read_text())
    assert uniform["group_rates"] and all(g.startswith("encoder.") for g in uniform["group_rates"])
    assert "every encoder block" in uniform["note"]
    targeted = json.loads((out / "r0.25" / "targeted" / "seed1" / "plan.json").read_text())
    assert targeted["group_rates"] == {"encoder.encoders.1": 0.25}
    # One table over both rates (as `fl_simulate compare` writes it) and the plot.
    table = (out / "results.md").read_text()
    labels = [line.split("|")[1] for line in table.splitlines() if line.startswith("|")]
    for label in ("none", "r0.25/uniform", "r0.25/targeted", "r0.5/uniform", "r0.5/targeted"):
        assert label in labels
    assert "|r0.5/targeted - r0.5/uniform|adapt|CER|" in table and "|r0.5/targeted - none|adapt|CER|" in table
    assert (out / "cer_vs_client_size.png").stat().st_size > 1000

    # The same call again: every rate is complete, nothing runs, the table is the same.
    before = _mtimes(out)
    caplog.clear()
    assert _sweep(trained, out, "1") == 0
    assert _mtimes(out) == before and (out / "results.md").read_text() == table
    assert f"Skip: {out / 'r0.25'} is complete (seeds 1)" in caplog.text and "Federated runs" not in caplog.text

    # Another seed list re-runs the rates: the finished seed-1 runs compute nothing new, seed 2 is added.
    histories = {p: p.read_text() for p in before}
    assert _sweep(trained, out, "1,2") == 0
    assert {p: p.read_text() for p in before} == histories
    assert (out / "r0.5" / "targeted" / "seed2" / "results.json").is_file()
    assert not (out / "r0.5" / "none").exists()
    assert (out / "r0.5" / ".done").read_text() == "seeds 1,2\n"
    none_row = next(line for line in (out / "results.md").read_text().splitlines() if line.startswith("|none|"))
    assert none_row.split("|")[12] == "1,2"  # the seeds column


def test_sweep_without_a_scan_fails_before_any_run(trained, tmp_path, capsys):
    from espnet_ext.bin.fl_simulate import main

    out = tmp_path / "fl"
    code = main(["sweep", "--exp_dir", str(trained["exp"]), "--scan_granularity", "submodule",
                 "--scan_dataset", "valid", "--rates", "0.5", "--adapt_data", str(trained["adapt"]),
                 "--out_dir", str(out), "--backend", "local"])
    assert code != 0  # one error line, nothing run
    assert "scan_submodule_valid/scan.tsv not found; run the layer-reset scan" in capsys.readouterr().err
    assert not out.exists()
