"""The synth_en recipe end to end on a tiny corpus: files, numbers and re-run behaviour."""

import json
import os
import subprocess
from pathlib import Path

import torch
import yaml

from helpers import tiny_asr_config

from helpers import make_recipe_workdir

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "egs2" / "synth_en" / "asr1"
TINY_CORPUS = (
    "--num_speakers 3 --train_per_speaker 8 --dev_per_speaker 2 --test_per_speaker 2 --nj 2"
)
TINY_FL = [
    "--fl_data_opts", "--num_speakers 2 --train_per_speaker 3 --dev_per_speaker 1 --test_per_speaker 1",
    "--fl_rates", "0.5", "--fl_args", "--rounds 1 --clients_per_round 2 --backend local", "--fl_seeds", "1 2",
]


def _recipe_copy(tmp_path: Path) -> Path:
    """A scratch copy of the recipe with a tiny model config."""
    work = make_recipe_workdir(RECIPE, tmp_path)
    tiny = {
        "train_asr_conformer.yaml": tiny_asr_config(),
        "train_asr_conformer_gn.yaml": tiny_asr_config(
            "norm_conformer", conv_norm_type="group_norm", conv_norm_groups=2),
    }
    for name, conf in tiny.items():
        conf.update(max_epoch=2, batch_size=4, best_model_criterion=[["valid", "acc", "max"]])
        (work / "conf" / name).write_text(yaml.safe_dump(conf))
    return work


def _run(work: Path, *args: str) -> str:
    env = dict(os.environ, PYTHON=str(REPO / "tools" / "venv" / "bin" / "python"))
    proc = subprocess.run(
        ["./run.sh", "--local_data_opts", TINY_CORPUS, "--nbpe", "30", "--scan_taus", "0,last",
         *TINY_FL, *args],
        cwd=work, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_tiny_recipe_end_to_end_and_rerun_is_noop(tmp_path):
    work = _recipe_copy(tmp_path)
    log = _run(work, "--num_threads", "2")
    # The two trainings run side by side and share the 2 threads (4 would oversubscribe the cores).
    assert "2 at a time, 1 thread(s) each" in log
    for name in ("asr_train_asr_conformer_seed1", "asr_train_asr_conformer_gn_seed1"):
        assert "export OMP_NUM_THREADS=1 " in (work / "exp" / name / "train.sh").read_text()

    # Stage 1: validated Kaldi dirs.
    for dset, n in (("train", 24), ("dev", 6), ("test", 6)):
        text = (work / "data" / dset / "text").read_text().splitlines()
        assert len(text) == n
    # Stage 2: sentencepiece tokens.
    tokens = (work / "dump/token_list/bpe_unigram30/tokens.txt").read_text().split()
    assert tokens[0] == "<blank>" and tokens[-1] == "<sos/eos>" and len(tokens) == 30
    # Stage 4: both models (batch norm, group norm) trained; checkpoint 0 and both epochs kept.
    assert (work / "exp" / "asr_train_asr_conformer_gn_seed1" / "checkpoints" / "2epoch.pth").exists()
    exp = work / "exp" / "asr_train_asr_conformer_seed1"
    assert sorted(p.name for p in (exp / "checkpoints").iterdir()) == [
        "0epoch.json", "0epoch.pth", "1epoch.pth", "2epoch.pth"]
    assert json.loads((exp / "checkpoints/0epoch.json").read_text())["seed"] == 1  # its run's identity
    ck0 = torch.load(exp / "checkpoints/0epoch.pth", weights_only=True)
    ck2 = torch.load(exp / "checkpoints/2epoch.pth", weights_only=True)
    assert any(not torch.equal(ck0[k], ck2[k]) for k in ck0 if ck0[k].is_floating_point())
    assert "espnet_ext.bin.asr_train" in (exp / "train.sh").read_text()
    # Stage 5: hypotheses for every utterance, scores and RESULTS.md.
    for dset in ("dev", "test"):
        out = next(exp.glob(f"decode_*/{dset}"))
        hyp_keys = [line.split()[0] for line in (out / "text").read_text().splitlines()]
        assert len(hyp_keys) == 6
        scores = json.loads((out / "scores.json").read_text())
        assert scores["WER"]["sentences"] == 6
        assert scores["CER"]["ref_tokens"] > 0 and scores["CER"]["error_rate"] >= 0
    # Stage 6: a layer-reset scan per granularity, labelled, with heatmaps, linked from RESULTS.md.
    for granularity in ("block", "submodule"):
        scan = exp / f"scan_{granularity}_dev"
        rows = (scan / "scan.tsv").read_text().splitlines()
        assert rows[0].split("\t")[:3] == ["dataset", "group", "kind"]
        labels = {line.split("\t")[-1] for line in rows[1:]}
        assert labels <= {"ambient", "critical", ""} and len(rows) > 5
        assert list(scan.glob("heatmap_reinit_*.png"))
    results = (work / "exp" / "RESULTS.md").read_text()
    assert "## Layer-reset scans (ambient layers)" in results
    assert "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|" in results
    assert "asr_train_asr_conformer_seed1" in results
    assert "asr_train_asr_conformer_gn_seed1" in results
    # Stage 8: federated adaptation of the group-norm model, three plans side by side, plotted.
    fl = work / "exp" / "fl_asr_train_asr_conformer_gn_seed1"
    for plan in ("none", "uniform", "targeted"):
        for seed in (1, 2):  # --fl_seeds "1 2": each plan once per seed
            res = json.loads((fl / "r0.5" / plan / f"seed{seed}" / "results.json").read_text())
            assert res["rounds"] == 1 and set(res["scores"]["final"]) == {"fl_adapt_test", "test"}
            assert res["cost"]["updates"] == 2 and res["seed"] == seed
    fl_table = (fl / "results.md").read_text()
    assert all(f"|{plan}|{plan}|1|" in fl_table for plan in ("none", "uniform", "targeted"))
    assert "|targeted - uniform|fl_adapt_test|CER|" in fl_table and "|targeted - none|test|WER|" in fl_table
    assert (fl / "cer_vs_client_size.png").stat().st_size > 1000
    assert "## Federated adaptation (stage 8)" in results

    # A second run finds every stage done and changes nothing.
    mtimes = {p: p.stat().st_mtime_ns for p in (exp / "checkpoints").iterdir()}
    log = _run(work)
    assert "Skip: " in log and "Training exp/" not in log and "Federated runs" not in log
    assert {p: p.stat().st_mtime_ns for p in (exp / "checkpoints").iterdir()} == mtimes

    # Tokens and statistics made from data/train are not silently reused for another training set.
    proc = subprocess.run(["./run.sh", "--stage", "2", "--stop_stage", "3", "--nbpe", "30", "--train_set", "dev"],
                          cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "was made from data/train, not data/dev" in proc.stdout + proc.stderr
