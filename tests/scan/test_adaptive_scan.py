"""Error bars and the adaptive layer-reset scan on a tiny trained model (known answers)."""

import json

import pytest
import yaml

from helpers import make_tone_data_dir, train_tiny_model

pytest.importorskip("espnet2.tasks.asr")

from espnet_ext.scan.scanner import ScanOptions, run_scan  # noqa: E402

EPOCHS = 30


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model that has memorized its 6 training utterances, scored on 24: the first 6 are
    the training utterances (same generator and seed), 18 are new (mixed difficulty)."""
    root = tmp_path_factory.mktemp("adaptive")
    exp, _ = train_tiny_model(root, max_epoch=EPOCHS)
    return exp, make_tone_data_dir(root, "dev", n_utts=24, seed=0)


def _opts(trained, out, **kw):
    exp, data = trained
    base = dict(exp_dir=exp, data_dirs=[data], out_dir=out, model_file=f"checkpoints/{EPOCHS}epoch.pth",
                taus=["0", "last"], batch_size=1, progress=False, adaptive=True, adaptive_first=4,
                bootstrap_samples=400)
    base.update(kw)
    return ScanOptions(**base)


def _by_key(rows):
    return {r.variant_key: r for r in rows}


def test_identical_variant_is_ambient_and_a_destroyed_layer_critical_after_the_first_look(trained, tmp_path):
    out = tmp_path / "scan"
    result = run_scan(_opts(trained, out, groups=["encoder.encoders.1", "ctc"]))
    rows = _by_key(result.rows)
    base = result.baseline["dev"]
    assert base["utterances"] == 24 and base["CER"] < 60
    # Re-initialized to the scanned epoch = the trained weights: the same counts on every utterance.
    same = rows[("encoder.encoders.1", "reinit", str(EPOCHS))]
    assert (same.delta_cer, same.delta_cer_lo, same.delta_cer_hi) == (0.0, 0.0, 0.0)
    assert (same.label, same.label_ci, same.n_utts) == ("ambient", "ambient", 4)  # decided at look 1
    # The output layer re-randomized: critical after the first look (4 utterances).
    destroyed = rows[("ctc", "rerandomize", "4")]
    assert destroyed.n_utts == 4
    assert destroyed.label_ci == "critical" and destroyed.delta_cer_lo > 2.0
    assert destroyed.delta_cer_lo <= destroyed.delta_cer <= destroyed.delta_cer_hi
    # Utterances decoded for variants: what the rows say, recorded in scan.json.
    assert result.utterance_evaluations == sum(r.n_utts for r in result.rows)
    meta = json.loads((out / "scan.json").read_text())
    assert meta["timing"]["utterance_evaluations"] == result.utterance_evaluations
    assert meta["options"]["adaptive"] is True and meta["options"]["confidence"] == 0.95
    stored = {(r["group"], r["mode"]): r for r in meta["rows"]}
    assert stored[("ctc", "rerandomize")]["delta_cer_lo"] == destroyed.delta_cer_lo
    assert (stored[("ctc", "rerandomize")]["label_ci"], stored[("ctc", "rerandomize")]["n_utts"]) == \
           ("critical", 4)
    # Per-utterance counts are kept: a re-run computes nothing and reproduces every interval.
    tsv = (out / "scan.tsv").read_text()
    again = run_scan(_opts(trained, out, groups=["encoder.encoders.1", "ctc"]))
    assert again.computed == 0 and (out / "scan.tsv").read_text() == tsv
    md = (out / "scan.md").read_text()
    assert "at 95% confidence" in md and "/4" in md  # cells scored on 4 of 24 utterances say so
    assert (out / "heatmap_reinit_dev.png").read_bytes()[:4] == b"\x89PNG"


def test_adaptive_labels_equal_the_full_scan_and_prefix_reuse_changes_nothing(trained, tmp_path):
    full = run_scan(_opts(trained, tmp_path / "full", adaptive=False))
    adaptive = run_scan(_opts(trained, tmp_path / "adaptive"))
    uncached = run_scan(_opts(trained, tmp_path / "uncached", reuse="none"))
    f, a = _by_key(full.rows), _by_key(adaptive.rows)
    assert f.keys() == a.keys() and len(f) == 15  # 5 groups x (tau 0, tau 30, seed 4)
    for key in f:
        assert (a[key].label, a[key].label_ci) == (f[key].label, f[key].label_ci), key
        assert f[key].n_utts == 24
        if a[key].n_utts == 24:  # not stopped early: the very same counts and interval
            assert (a[key].cer, a[key].delta_cer_lo, a[key].delta_cer_hi) == \
                   (f[key].cer, f[key].delta_cer_lo, f[key].delta_cer_hi)
    assert adaptive.utterance_evaluations < full.utterance_evaluations == 15 * 24
    # The prefix cache per batch gives what recomputing every variant from audio gives.
    u = _by_key(uncached.rows)
    assert [(r.cer, r.wer, r.n_utts, r.delta_cer_lo, r.delta_cer_hi) for r in adaptive.rows] == \
           [(u[r.variant_key].cer, u[r.variant_key].wer, u[r.variant_key].n_utts,
             u[r.variant_key].delta_cer_lo, u[r.variant_key].delta_cer_hi) for r in adaptive.rows]


def test_adaptive_beam_scoring_of_a_decoder_layer(trained, tmp_path):
    conf = tmp_path / "decode.yaml"
    conf.write_text(yaml.safe_dump({"beam_size": 2, "ctc_weight": 0.3, "lm_weight": 0.0, "nbest": 1}))
    result = run_scan(_opts(trained, tmp_path / "beam", scoring="beam", decode_config=conf,
                            groups=["decoder.decoders.0"], modes=["reinit"], taus=["last"]))
    (row,) = result.rows
    assert (row.n_utts, row.label_ci, row.delta_cer_lo, row.delta_cer_hi) == (4, "ambient", 0.0, 0.0)


def test_changed_rule_continues_variants_left_undecided(trained, tmp_path):
    out = tmp_path / "scan"
    first = run_scan(_opts(trained, out, groups=["ctc"], modes=["rerandomize"]))
    assert first.rows[0].n_utts == 4
    # A tolerance so large that 4 utterances cannot decide it: the variant is scored further.
    from espnet_ext.scan.labels import AmbientCriterion

    huge = AmbientCriterion("cer", first.rows[0].delta_cer, None)
    again = run_scan(_opts(trained, out, groups=["ctc"], modes=["rerandomize"], criterion=huge))
    assert again.computed == 1 and again.rows[0].n_utts > 4


def test_cli_options_and_errors(trained, tmp_path, capsys):
    from espnet_ext.bin.layer_scan import main

    exp, data = trained
    args = ["--exp_dir", str(exp), "--data_dir", str(data), "--model_file", f"checkpoints/{EPOCHS}epoch.pth",
            "--granularity", "pattern", "--pattern", r"^ctc\.", "--modes", "reinit", "--taus", "last",
            "--no_progress", "--batch_size", "1"]
    assert main(args + ["--out_dir", str(tmp_path / "a"), "--adaptive", "true", "--confidence", "0.9",
                        "--bootstrap_samples", "200", "--bootstrap_seed", "5", "--adaptive_first", "3"]) == 0
    printed = capsys.readouterr().out
    assert "at 90% confidence 1 ambient, 0 critical, 0 uncertain" in printed
    meta = json.loads((tmp_path / "a" / "scan.json").read_text())
    assert (meta["options"]["confidence"], meta["options"]["bootstrap_samples"],
            meta["options"]["bootstrap_seed"], meta["options"]["adaptive"]) == (0.9, 200, 5, True)
    assert meta["options"]["adaptive_first"] == 3 and meta["rows"][0]["n_utts"] == 3  # decided at look 1
    # One out_dir holds one utterance order: the full scan is refused there, saying why.
    assert main(args + ["--out_dir", str(tmp_path / "a"), "--adaptive", "false"]) == 1
    assert "--adaptive true and false order utterances differently" in capsys.readouterr().err
    assert main(args + ["--out_dir", str(tmp_path / "b"), "--adaptive", "true", "--adaptive_first", "0"]) == 1
    assert "--adaptive_first (utterances in the adaptive scan's first look) must be >= 1, got 0" in \
        capsys.readouterr().err
    assert not (tmp_path / "b").exists()  # refused before anything was written
    with pytest.raises(SystemExit):
        main(args + ["--confidence", "1.5"])
    assert "--confidence must be between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args + ["--adaptive", "maybe"])
    assert "expected true or false" in capsys.readouterr().err


def test_a_scan_from_before_error_bars_is_read_and_upgraded(trained, tmp_path):
    from espnet_ext.scan.result import OLD_TSV_COLUMNS, read_tsv

    out = tmp_path / "old"
    kw = dict(groups=["ctc"], modes=["reinit"], adaptive=False)
    run_scan(_opts(trained, out, **kw))
    # Make it look like a scan written before intervals: 13 columns, no per-utterance counts.
    lines = (out / "scan.tsv").read_text().splitlines()
    (out / "scan.tsv").write_text("".join("\t".join(x.split("\t")[:len(OLD_TSV_COLUMNS)]) + "\n"
                                          for x in lines))
    (out / "utt_errors.jsonl").unlink()
    old = read_tsv(out / "scan.tsv")
    assert [r.label_ci for r in old] == ["", ""] and old[0].cer > 0
    again = run_scan(_opts(trained, out, **kw))
    assert again.computed == 2  # scored again to get intervals; the scores themselves are the same
    assert [(r.cer, r.label) for r in again.rows] == [(r.cer, r.label) for r in old]
    assert all(r.label_ci and r.n_utts == 24 for r in again.rows)
    assert (out / "scan.tsv").read_text().splitlines()[0].endswith("\tlabel_ci")


def test_recipe_stage_6_passes_the_adaptive_and_confidence_options(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    recipe = tmp_path / "recipe"
    (recipe / "conf").mkdir(parents=True)
    (recipe / "conf" / "train.yaml").write_text("max_epoch: 3\n")
    (recipe / "exp" / "asr_train_seed1").mkdir(parents=True)
    (recipe / "exp" / "asr_train_seed1" / ".done").write_text("")
    import sys

    fake = tmp_path / "python"  # records the command stage 6 runs instead of scanning
    # Library questions (python -c: where a scan goes) are answered by the real interpreter.
    fake.write_text(f'#!/usr/bin/env bash\nif [ "$1" = "-c" ]; then exec "{sys.executable}" "$@"; fi\n'
                    'echo "$@" >> "$(dirname "$0")/calls.txt"\n')
    fake.chmod(0o755)
    proc = subprocess.run(
        ["bash", str(repo / "egs2" / "TEMPLATE" / "asr1" / "asr.sh"), "--stage", "6", "--stop_stage", "6",
         "--train_set", "train", "--valid_set", "dev", "--asr_configs", "conf/train.yaml",
         "--scan_granularities", "block", "--scan_adaptive", "true", "--scan_confidence", "0.9",
         "--python", str(fake)],
        cwd=recipe, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(repo)), timeout=120)
    assert proc.returncode == 0, proc.stderr
    (call,) = (tmp_path / "calls.txt").read_text().splitlines()
    assert call.startswith("-m espnet_ext.bin.layer_scan --exp_dir exp/asr_train_seed1")
    assert "--adaptive true --confidence 0.9 " in call
    assert "--out_dir exp/asr_train_seed1/scan_block_dev " in call
