"""Real-corpus recipes end to end on tiny stand-ins: librispeech_100 on a fake LibriSpeech tree,
and a recipe made by egs2/TEMPLATE/asr1/setup.sh on existing Kaldi dirs. Every stage runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import sentencepiece
import yaml

from helpers import make_tone_data_dir, tiny_asr_config
from helpers import make_fake_librispeech

from espnet_ext.data.kaldi import read_kaldi_map
from helpers import make_recipe_workdir

REPO = Path(__file__).resolve().parents[2]
TINY_DECODE = {"beam_size": 3, "ctc_weight": 0.3, "lm_weight": 0.0, "nbest": 1}


def _tiny_configs(conf_dir: Path, names: dict) -> None:
    """Overwrite the recipe's configs `{file name: "bn" | "gn"}` with tiny 2-epoch models."""
    for name, norm in names.items():
        conf = tiny_asr_config() if norm == "bn" else tiny_asr_config(
            "norm_conformer", conv_norm_type="group_norm", conv_norm_groups=2)
        conf.update(max_epoch=2, batch_size=4, best_model_criterion=[["valid", "acc", "max"]])
        (conf_dir / name).write_text(yaml.safe_dump(conf))


def _run(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["./run.sh", *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    log = proc.stdout + proc.stderr
    (cwd / "run.log").write_text(log)  # kept in the test's tmp dir for inspection
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return log


def _check_decoded(exp: Path, sets: dict) -> None:
    """Every set decoded and scored with one hypothesis per utterance."""
    for dset, n in sets.items():
        out = next(exp.glob(f"decode_*/{dset}"))
        assert len((out / "text").read_text().splitlines()) == n
        scores = json.loads((out / "scores.json").read_text())
        assert scores["WER"]["sentences"] == n and scores["CER"]["ref_tokens"] > 0


@pytest.mark.slow
def test_librispeech_100_recipe_on_a_fake_corpus(tmp_path):
    utts_per_reader = {"train-clean-100": 16, "dev-clean": 2, "dev-other": 2, "test-clean": 2, "test-other": 2}
    corpus = make_fake_librispeech(tmp_path / "corpora", utts_per_reader=utts_per_reader, readers_per_part=2)
    work = make_recipe_workdir(REPO / "egs2" / "librispeech_100" / "asr1", tmp_path / "work")
    _tiny_configs(work / "conf" / "tuning",
                  {"train_asr_conformer_s_bn.yaml": "bn", "train_asr_conformer_s_gn.yaml": "gn"})
    (work / "conf" / "decode_asr.yaml").write_text(yaml.safe_dump(TINY_DECODE))
    log = _run(work, "--stop_stage", "1", "--local_data_opts", f"--librispeech_dir {corpus.parent}")

    # Stage 1: ESPnet's set names; dev = dev-clean + dev-other; plain FLAC paths into the tree.
    data = work / "data"
    sizes = {"train_clean_100": 32, "dev": 8, "dev_clean": 4, "dev_other": 4, "test_clean": 4, "test_other": 4}
    for name, n in sizes.items():
        assert len(read_kaldi_map(data / name / "text")) == n, name
    assert set(read_kaldi_map(data / "dev" / "text")) == set(read_kaldi_map(data / "dev_clean" / "text")) | set(
        read_kaldi_map(data / "dev_other" / "text"))
    assert all(v.startswith(str(corpus / "train-clean-100")) and v.endswith(".flac")
               for v in read_kaldi_map(data / "train_clean_100" / "wav.scp").values())
    assert "train_clean_100: 32 utts, 2 speakers" in log

    # The federated set-up of the README: withheld readers (here 1 of 2), the central model trained
    # on the others, then stages 2-8 (stage 8 re-runs local/fl_data.sh, a no-op by then).
    proc = subprocess.run(["local/fl_data.sh", "--every", "2"], cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(read_kaldi_map(data / "fl" / "central" / "text")) == 16
    adapt, held_out = (read_kaldi_map(data / "fl_adapt" / d / "utt2chapter") for d in ("train", "test"))
    assert len(adapt) == len(held_out) == 8 and not set(adapt.values()) & set(held_out.values())
    _run(work, "--stage", "2", "--train_set", "fl/central", "--ngpu", "0", "--train_nj", "2", "--nj", "2",
         "--inference_nj", "1", "--nbpe", "24", "--scan_taus", "0,last", "--scan_granularities", "block",
         "--fl_adapt_set", "fl_adapt/train", "--fl_test_sets", "fl_adapt/test test_clean",
         "--fl_data_opts", "--every 2", "--fl_scan", "block", "--fl_rates", "0.5",
         "--fl_args", "--rounds 1 --clients_per_round 1 --backend local", "--fl_seeds", "1")

    # Stage 2: sentencepiece units from the training set (the list holds the pieces its text uses).
    token_dir = work / "dump/token_list/bpe_unigram24"
    tokens = (token_dir / "tokens.txt").read_text().split()
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(token_dir / "bpe.model"))
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>" and len(tokens) > 10
    assert pieces.get_piece_size() == 24 and all(pieces.piece_to_id(t) > 0 for t in tokens[2:-1])
    # Stages 4-5: both norms trained (checkpoint 0 kept) and decoded on dev and the four test sets.
    results = (work / "exp" / "RESULTS.md").read_text()
    for norm in ("bn", "gn"):
        exp = work / "exp" / f"asr_train_asr_conformer_s_{norm}_seed1"
        assert sorted(p.name for p in (exp / "checkpoints").iterdir()) == [
            "0epoch.json", "0epoch.pth", "1epoch.pth", "2epoch.pth"]
        _check_decoded(exp, {"dev": 8, "test_clean": 4, "test_other": 4, "dev_clean": 4, "dev_other": 4})
        assert exp.name in results
        # Stage 6: the scan runs on dev_clean (the recipe's scan set).
        rows = (exp / "scan_block_dev_clean" / "scan.tsv").read_text().splitlines()
        assert len(rows) > 3 and rows[0].startswith("dataset\tgroup\tkind")
    for dset in ("test_clean", "test_other", "dev_clean", "dev_other"):
        assert f"{dset}|" in results
    # Stage 7: analysis across the two runs.
    assert (work / "exp" / "analysis_block_dev_clean" / "analysis.md").is_file()
    # Stage 8: the group-norm model adapted on the withheld reader, scored on its held-out chapter.
    fl = work / "exp" / "fl_asr_train_asr_conformer_s_gn_seed1"
    for plan in ("none", "uniform", "targeted"):
        res = json.loads((fl / "r0.5" / plan / "seed1" / "results.json").read_text())
        assert res["rounds"] == 1 and set(res["scores"]["final"]) == {"fl_adapt_test", "test_clean"}


def test_setup_sh_recipe_on_existing_kaldi_dirs(tmp_path):
    corpus = tmp_path / "corpus"
    train = make_tone_data_dir(corpus, "train", n_utts=12, seed=0)
    dev = make_tone_data_dir(corpus, "dev", n_utts=4, seed=1)
    evaluation = make_tone_data_dir(corpus, "eval", n_utts=4, seed=2)
    recipe = tmp_path / "recipes" / "mine" / "asr1"
    proc = subprocess.run(
        [str(REPO / "egs2/TEMPLATE/asr1/setup.sh"), "--train_dir", str(train), "--valid_dir", str(dev),
         "--test_dirs", str(evaluation), str(recipe)],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in recipe.iterdir()) == ["README.md", "conf", "local", "run.sh"]
    _tiny_configs(recipe / "conf", {"train_asr_conformer_gn.yaml": "gn"})
    (recipe / "conf" / "decode_asr.yaml").write_text(yaml.safe_dump(TINY_DECODE))

    log = _run(recipe, "--asr_configs", "conf/train_asr_conformer_gn.yaml", "--token_type", "char",
               "--nj", "1", "--inference_nj", "1", "--scan_taus", "0,last", "--scan_granularities", "block")

    # Stage 1: the given dirs imported under the recipe's names, checked, with absolute audio paths.
    data = recipe / "data"
    for name, src in (("train", train), ("dev", dev), ("eval", evaluation)):
        assert read_kaldi_map(data / name / "text") == read_kaldi_map(src / "text")
        assert read_kaldi_map(data / name / "wav.scp") == read_kaldi_map(src / "wav.scp")
    assert "data/train: 12 utts, 2 speakers" in log
    # Stages 2-5: character tokens, one trained model, dev and the test set decoded and scored.
    exp = recipe / "exp" / "asr_train_asr_conformer_gn_seed1"
    assert (exp / "checkpoints" / "0epoch.pth").is_file() and (exp / "checkpoints" / "2epoch.pth").is_file()
    _check_decoded(exp, {"dev": 4, "eval": 4})
    assert exp.name in (recipe / "exp" / "RESULTS.md").read_text()
    # Stages 6-7: scan and analysis on the validation set.
    assert (exp / "scan_block_dev" / "scan.tsv").is_file()
    assert (recipe / "exp" / "analysis_block_dev" / "analysis.md").is_file()
    # A second run finds the dirs imported and every stage done.
    log = _run(recipe, "--asr_configs", "conf/train_asr_conformer_gn.yaml", "--token_type", "char",
               "--stop_stage", "5")
    assert "already imported" in log and "Training exp/" not in log
