"""Bad input at the entry points: audio at the wrong sample rate, a config ESPnet cannot build a
model from, a vocabulary too large for the transcripts, scan taus training will not save. Each
ends in one ``<prog>: error: ...`` line and exit status 1, before anything is computed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from helpers import make_tone_data_dir, tiny_asr_config, train_args, train_tiny_model, write_char_token_list

REPO = Path(__file__).resolve().parents[2]
MODEL_FILE = "valid.loss.ave.pth"


def make_8k_data_dir(root: Path, name: str, n_utts: int = 4, resample: int = None) -> Path:
    """A tone data dir whose audio is rewritten at 8 kHz (every recording, or only the first
    `resample` ones)."""
    d = make_tone_data_dir(root, name, n_utts=n_utts, seed=5)
    lines = (d / "wav.scp").read_text().split("\n")
    for i, line in enumerate(l for l in lines if l):
        if resample is not None and i >= resample:
            break
        path = line.split(maxsplit=1)[1]
        audio, rate = sf.read(path, dtype="float32")
        sf.write(path, audio[::2], rate // 2, subtype="PCM_16")
    return d


def error_lines(err: str, prog: str) -> list:
    return [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained one epoch by the checkpoint-keeping training (16 kHz front end)."""
    root = tmp_path_factory.mktemp("checks")
    exp, train = train_tiny_model(root, max_epoch=1)
    return {"root": root, "exp": exp, "train": train, "valid": root / "data" / "valid"}


def broken_config(trained, tmp_path, **change) -> Path:
    """A copy of the trained run's config.yaml with some entries changed."""
    config = yaml.safe_load((trained["exp"] / "config.yaml").read_text())
    for key, value in change.items():
        if key == "encoder_conf":
            config["encoder_conf"].update(value)
        else:
            config[key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ------------------------------------------------------------------------------------------------
# The sample-rate check (one library function)


@pytest.mark.parametrize("frontend_conf, expected", [
    ({}, 16000), ({"fs": "16k"}, 16000), ({"fs": "8k"}, 8000), ({"fs": 8000}, 8000),
    ({"fs": "22050"}, 22050),
])
def test_model_sample_rate_reads_fs_as_espnet_does(frontend_conf, expected):
    from espnet_ext.data.audio import model_sample_rate

    assert model_sample_rate({"frontend": "default", "frontend_conf": frontend_conf}) == expected


def test_model_sample_rate_without_front_end_and_with_a_bad_fs():
    from espnet_ext.data.audio import SampleRateError, model_sample_rate

    assert model_sample_rate({"frontend": None, "input_size": 80}) is None
    with pytest.raises(SampleRateError, match=r"conf\.yaml: frontend_conf\.fs = 'fast' is not a sample "
                                               r"rate; write it in Hz, e.g\. 16000 or 16k"):
        model_sample_rate({"frontend_conf": {"fs": "fast"}}, "conf.yaml")


def test_check_sample_rate_names_dir_rates_and_fix(tmp_path):
    from espnet_ext.data.audio import SampleRateError, check_sample_rate

    d8 = make_8k_data_dir(tmp_path, "dev8k")
    with pytest.raises(SampleRateError) as e:
        check_sample_rate(d8, {"frontend_conf": {"fs": "16k"}}, "exp/a/config.yaml")
    msg = str(e.value)
    assert msg.startswith(f"{d8}: audio is sampled at 8000 Hz in 4 of 4 recordings (e.g. 'spk0-dev8k-000': ")
    assert "but the model expects 16000 Hz (frontend_conf.fs of exp/a/config.yaml)" in msg
    assert "`sox in.wav -r 16000 out.wav`" in msg
    # The same audio suits an 8 kHz model; the wav.scp may be given instead of the dir.
    assert check_sample_rate(d8 / "wav.scp", {"frontend_conf": {"fs": 8000}}) == 8000


def test_check_sample_rate_counts_mixed_rates_and_honours_keys(tmp_path):
    from espnet_ext.data.audio import SampleRateError, check_sample_rate

    d = make_8k_data_dir(tmp_path, "mixed", n_utts=4, resample=1)
    with pytest.raises(SampleRateError, match=r"8000 Hz in 1 of 4 recordings \(e\.g\. 'spk0-mixed-000'"):
        check_sample_rate(d, {})
    # A decoding job that holds only 16 kHz recordings passes.
    assert check_sample_rate(d, {}, keys=["spk0-mixed-002", "spk1-mixed-001"]) == 16000


# ------------------------------------------------------------------------------------------------
# Entry points: audio at another rate than the model's front end


def test_layer_scan_refuses_8k_audio_for_a_16k_model(trained, tmp_path, capsys):
    from espnet_ext.bin.layer_scan import main

    d8 = make_8k_data_dir(tmp_path, "dev8k")
    out = tmp_path / "scan"
    status = main(["--exp_dir", str(trained["exp"]), "--data_dir", str(d8), "--out_dir", str(out),
                   "--model_file", MODEL_FILE, "--modes", "reinit", "--taus", "0",
                   "--num_threads", "1", "--no_progress"])
    err = capsys.readouterr().err
    assert status == 1
    [line] = error_lines(err, "layer_scan")
    assert f"{d8}: audio is sampled at 8000 Hz in 4 of 4 recordings" in line
    assert f"the model expects 16000 Hz (frontend_conf.fs of {trained['exp'] / 'config.yaml'})" in line
    assert not (out / "scan.tsv").exists() and not (out / "scan.md").exists()


def test_asr_inference_refuses_8k_audio_and_still_decodes_16k(trained, tmp_path, capsys):
    from espnet_ext.bin.asr_inference import main

    exp = trained["exp"]
    d8 = make_8k_data_dir(tmp_path, "test8k")

    def decode(data_dir, out, *extra):
        return main(["--data_path_and_name_and_type", f"{data_dir}/wav.scp,speech,sound",
                     "--asr_train_config", str(exp / "config.yaml"),
                     "--asr_model_file", str(exp / MODEL_FILE), "--output_dir", str(out),
                     "--ngpu", "0", "--batch_size", "1", "--beam_size", "1", *extra])

    assert decode(d8, tmp_path / "out8k") == 1
    [line] = error_lines(capsys.readouterr().err, "asr_inference")
    assert f"{d8}: audio is sampled at 8000 Hz in 4 of 4 recordings" in line
    assert "expects 16000 Hz" in line and "sox in.wav -r 16000 out.wav" in line
    assert not (tmp_path / "out8k" / "1best_recog" / "text").exists()

    # A decoding job checks only its own keys; 16 kHz audio decodes as before.
    keys = tmp_path / "keys.1"
    keys.write_text("".join(line.split()[0] + "\n" for line in (trained["valid"] / "wav.scp").read_text().splitlines()[:2]))
    assert decode(trained["valid"], tmp_path / "out16k", "--key_file", str(keys)) == 0
    hyps = (tmp_path / "out16k" / "1best_recog" / "text").read_text().splitlines()
    assert [h.split()[0] for h in hyps] == keys.read_text().split()


def test_fl_prepare_run_reports_the_rate_before_the_client_count(trained, tmp_path):
    from espnet_ext.data.kaldi import DataDirError
    from espnet_ext.federated.client import LocalTraining
    from espnet_ext.federated.plan import no_dropout_plan
    from espnet_ext.federated.simulation import prepare_run

    adapt = make_8k_data_dir(tmp_path, "adapt8k")  # 2 speakers: too few for 4 clients per round
    out = tmp_path / "fl"
    # fl_simulate prints DataDirErrors as one line.
    with pytest.raises(DataDirError, match=rf"{adapt}: audio is sampled at 8000 Hz in 4 of 4 "
                                            r"recordings .* the model expects 16000 Hz"):
        prepare_run(trained["exp"], MODEL_FILE, adapt, [], out, no_dropout_plan(), rounds=1,
                    clients_per_round=4, backend="local", progress=False,
                    local=LocalTraining(epochs=1, batch_size=2, optim="sgd", lr=0.1))
    assert not (out / "config.yaml").exists() and not (out / ".config.yaml.new").exists()


# ------------------------------------------------------------------------------------------------
# Entry points: a config ESPnet cannot build a model from


def test_asr_train_prints_one_line_naming_the_config(tmp_path, capsys, monkeypatch):
    from espnet_ext.bin.asr_train import main

    train = make_tone_data_dir(tmp_path / "data", "train", n_utts=2)
    tokens = write_char_token_list(tmp_path / "tokens.txt")
    cases = {
        "groups": (tiny_asr_config("norm_conformer", conv_norm_type="group_norm", conv_norm_groups=3),
                   "conv_norm_groups=3 must divide the number of channels (output_size=16)"),
        "norm": (tiny_asr_config("norm_conformer", conv_norm_type="batchnorm"),
                 "conv_norm_type must be one of 'batch_norm', 'group_norm', 'layer_norm', got 'batchnorm'"),
        "encoder": (dict(tiny_asr_config(), encoder="conformr"), "--encoder must be one of ("),
        "option": (tiny_asr_config(conv_kernel=3), "unexpected keyword argument 'conv_kernel'"),
    }
    for name, (conf, expected) in cases.items():
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(conf))
        out = tmp_path / f"exp_{name}"
        assert main(train_args(train, train, tokens, config, out, max_epoch=1)) == 1, name
        err = capsys.readouterr().err
        assert "Traceback" not in err
        [line] = error_lines(err, "asr_train")
        assert line.startswith(f"asr_train: error: {config}: cannot build the model from this config: "), line
        assert expected in line, line
        assert line.endswith("(set ESPNET_EXT_DEBUG=1 for the traceback)")
        assert not (out / "checkpoints" / "0epoch.pth").exists()
    # For debugging, the full traceback.
    monkeypatch.setenv("ESPNET_EXT_DEBUG", "1")
    with pytest.raises(ValueError, match="conv_norm_groups=3 must divide"):
        main(train_args(train, train, tokens, tmp_path / "groups.yaml", tmp_path / "exp_debug", max_epoch=1))


# runpy re-executes a module the test session imported already; that is the point here.
@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
def test_asr_train_exit_status_as_a_module(tmp_path, capsys, monkeypatch):
    import runpy

    train = make_tone_data_dir(tmp_path / "data", "train", n_utts=2)
    tokens = write_char_token_list(tmp_path / "tokens.txt")
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(tiny_asr_config("norm_conformer", conv_norm_type="group_norm",
                                                     conv_norm_groups=3)))
    # What `python -m espnet_ext.bin.asr_train ...` runs (in this process: ESPnet is imported once).
    monkeypatch.setattr(sys, "argv", ["asr_train", *train_args(train, train, tokens, config,
                                                                 tmp_path / "exp", max_epoch=1)])
    monkeypatch.delenv("ESPNET_EXT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        runpy.run_module("espnet_ext.bin.asr_train", run_name="__main__", alter_sys=False)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"asr_train: error: {config}: cannot build the model")


def test_asr_inference_config_error_is_one_line(trained, tmp_path, capsys):
    from espnet_ext.bin.asr_inference import main

    config = broken_config(trained, tmp_path, encoder="norm_conformer",
                           encoder_conf={"conv_norm_type": "groupnorm"})
    status = main(["--data_path_and_name_and_type", f"{trained['valid']}/wav.scp,speech,sound",
                   "--asr_train_config", str(config), "--asr_model_file", str(trained["exp"] / MODEL_FILE),
                   "--output_dir", str(tmp_path / "out"), "--ngpu", "0"])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    [line] = error_lines(err, "asr_inference")
    assert f"{config}: cannot build the model from this config: conv_norm_type must be one of" in line


def test_layer_scan_config_type_error_is_one_line(trained, tmp_path, capsys):
    from espnet_ext.bin.layer_scan import main

    exp = tmp_path / "exp"
    shutil.copytree(trained["exp"], exp)
    broken_config(trained, exp, encoder_conf={"conv_kernel": 3})  # overwrites exp/config.yaml
    status = main(["--exp_dir", str(exp), "--data_dir", str(trained["valid"]), "--model_file", MODEL_FILE,
                   "--modes", "rerandomize", "--num_threads", "1", "--no_progress"])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    [line] = error_lines(err, "layer_scan")
    assert f"{exp / 'config.yaml'}: cannot build the model from this config:" in line
    assert "unexpected keyword argument 'conv_kernel'" in line


def test_layer_analysis_debug_env_shows_the_traceback(tmp_path, capsys, monkeypatch):
    from espnet_ext.bin.layer_analysis import main

    argv = ["--exp_dirs", str(tmp_path / "no_such_run"), "--dataset", "dev", "--out_dir", str(tmp_path / "a")]
    assert main(argv) == 1
    [line] = error_lines(capsys.readouterr().err, "layer_analysis")
    monkeypatch.setenv("ESPNET_EXT_DEBUG", "1")
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        main(argv)
    assert str(e.value) in line


def test_bugs_keep_their_traceback():
    from espnet_ext.bin.cli import run_guarded

    def buggy():
        raise TypeError("not a config problem")

    # A TypeError outside model building is a bug, not bad input.
    with pytest.raises(TypeError, match="not a config problem"):
        run_guarded("tool", buggy, (ValueError,))


# ------------------------------------------------------------------------------------------------
# Tokens: a vocabulary the transcripts cannot give


def _text(tmp_path) -> Path:
    text = tmp_path / "text"
    text.write_text("".join(f"u{i:02d} {s}\n" for i, s in enumerate(
        ["HELLO WORLD", "A CAT SAT ON THE MAT", "THE DOG RAN", "HELLO CAT"] * 3)))
    return text


def test_sentencepiece_vocabulary_too_large_names_the_maximum(tmp_path, capsys):
    from espnet_ext.bin.train_sentencepiece import main
    from espnet_ext.evaluation.tokens import VocabularySizeError, train_sentencepiece

    text = _text(tmp_path)
    with pytest.raises(VocabularySizeError) as e:
        train_sentencepiece(text, tmp_path / "big" / "bpe", 500)
    limit = e.value.limit
    assert e.value.too_high and 10 < limit < 500
    assert not (tmp_path / "big" / "bpe.model").exists()
    # The maximum it names works.
    model = train_sentencepiece(text, tmp_path / "max" / "bpe", limit)
    assert model.is_file()

    assert main(["--text", str(text), "--model_prefix", str(tmp_path / "cli" / "bpe"), "--vocab_size", "500"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = error_lines(err, "train_sentencepiece")
    assert (f"{text}: vocabulary size 500 (the recipe's --nbpe; --vocab_size of train_sentencepiece) is too "
            f"large for these transcripts: sentencepiece's unigram model can make at most {limit} pieces") in line
    assert f"set --nbpe {limit} or less" in line


def test_sentencepiece_vocabulary_too_small_names_the_minimum(tmp_path):
    from espnet_ext.evaluation.tokens import VocabularySizeError, train_sentencepiece

    text = _text(tmp_path)
    with pytest.raises(VocabularySizeError, match=r"vocabulary size 5 .* is too small: .* set --nbpe (\d+) or more") as e:
        train_sentencepiece(text, tmp_path / "small" / "bpe", 5)
    assert train_sentencepiece(text, tmp_path / "min" / "bpe", e.value.limit).is_file()


def test_stage_2_names_the_largest_nbpe(tmp_path):
    recipe = tmp_path / "egs2" / "mine" / "asr1"
    (recipe / "data" / "train").mkdir(parents=True)
    (recipe / "data" / "train" / "text").write_text("u1 HELLO WORLD\nu2 THE CAT SAT\nu3 A DOG RAN\n")
    (recipe / "conf").mkdir()
    (recipe / "conf" / "train.yaml").write_text("max_epoch: 3\n")
    proc = subprocess.run(
        ["bash", str(REPO / "egs2" / "TEMPLATE" / "asr1" / "asr.sh"), "--stage", "2", "--stop_stage", "2",
         "--train_set", "train", "--valid_set", "dev", "--asr_configs", "conf/train.yaml", "--nbpe", "500",
         "--python", sys.executable],
        cwd=recipe, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert re.search(r"train_sentencepiece: error: data/train/text: vocabulary size 500 .* can make at "
                     r"most \d+ pieces from them; set --nbpe \d+ or less", proc.stderr), proc.stderr


# ------------------------------------------------------------------------------------------------
# Scan taus against the epochs training will save


def test_espnet_default_max_epoch_is_espnets():
    from espnet2.tasks.abs_task import AbsTask

    from espnet_ext.experiment.scan_taus import ESPNET_DEFAULT_MAX_EPOCH

    parser = AbsTask.get_parser()
    assert parser.get_default("max_epoch") == ESPNET_DEFAULT_MAX_EPOCH


def test_check_scan_taus(tmp_path, capsys):
    from espnet_ext.bin.check_scan_taus import main
    from espnet_ext.experiment.scan_taus import ScanTausError, check_scan_taus

    short, default = tmp_path / "short.yaml", tmp_path / "default.yaml"
    short.write_text("max_epoch: 5\n")
    default.write_text("encoder: conformer\n")
    assert check_scan_taus("0,1,5,last", [short, default]) == {str(short): 5, str(default): 40}
    assert check_scan_taus("all", [short]) == {str(short): 5}
    with pytest.raises(ScanTausError, match=rf"--scan_taus 0,1,2,5,10,20,last asks for epoch 10, 20, but "
                                             rf"{short} trains 5 epochs \(max_epoch: 5 in the config\), so stage 6 "
                                             r"would fail after training: change --scan_taus \(e\.g\. 0,1,2,5,last, or all\)"):
        check_scan_taus("0,1,2,5,10,20,last", [default, short])
    # --max_epoch in the training arguments wins over the config.
    with pytest.raises(ScanTausError, match=r"trains 3 epochs \(--max_epoch 3 in --asr_args\)"):
        check_scan_taus("0,5", [default], "--batch_size 4 --max_epoch 3")
    assert check_scan_taus("0,7", [short], "--max_epoch=8") == {str(short): 8}
    with pytest.raises(ScanTausError, match=r"'first' is not an epoch number"):
        check_scan_taus("0,first", [short])
    assert main(["--taus", "0,10", "--configs", str(short)]) == 1
    [line] = error_lines(capsys.readouterr().err, "check_scan_taus")
    assert "asks for epoch 10" in line
    assert main(["--taus", "0,5,last", "--configs", str(short), str(default)]) == 0


def test_stage_4_stops_on_scan_taus_before_training(tmp_path):
    recipe = tmp_path / "egs2" / "mine" / "asr1"
    (recipe / "conf").mkdir(parents=True)
    (recipe / "conf" / "train.yaml").write_text("max_epoch: 3\n")
    (recipe / "exp" / "asr_stats_bpe50").mkdir(parents=True)
    (recipe / "exp" / "asr_stats_bpe50" / ".done").write_text("train\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        ["bash", str(REPO / "egs2" / "TEMPLATE" / "asr1" / "asr.sh"), "--stage", "4", "--stop_stage", "6",
         "--train_set", "train", "--valid_set", "dev", "--asr_configs", "conf/train.yaml",
         "--scan_taus", "0,2,10", "--python", sys.executable],
        cwd=recipe, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert ("check_scan_taus: error: --scan_taus 0,2,10 asks for epoch 10, but conf/train.yaml trains 3 "
            "epochs") in proc.stderr
    assert not (recipe / "exp" / "asr_train_seed1").exists()


# ------------------------------------------------------------------------------------------------
# Scoring


def test_score_bad_input_is_one_line(tmp_path, capsys):
    from espnet_ext.bin.score import main

    ref, hyp = tmp_path / "ref", tmp_path / "hyp"
    ref.write_text("u1 A B\n")
    hyp.write_text("u2 A B\n")
    assert main(["--ref", str(ref), "--hyp", str(tmp_path / "none"), "--out_dir", str(tmp_path / "s")]) == 1
    [line] = error_lines(capsys.readouterr().err, "score")
    assert f"--hyp {tmp_path / 'none'} not found" in line
    assert main(["--ref", str(ref), "--hyp", str(hyp), "--out_dir", str(tmp_path / "s")]) == 1
    [line] = error_lines(capsys.readouterr().err, "score")
    assert "1 hypothesis keys have no reference (first: 'u2')" in line
    assert not (tmp_path / "s" / "scores.json").exists()
    hyp.write_text("u1 A C\n")
    assert main(["--ref", str(ref), "--hyp", str(hyp), "--out_dir", str(tmp_path / "s")]) == 0
    assert "WER 50.00% CER" in capsys.readouterr().out
