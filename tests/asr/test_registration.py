"""Tests for registering espnet_ext's encoders into ESPnet's ASR task."""

import importlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

import espnet_ext
from espnet_ext.asr.registration import register_encoders

TINY_CONFIG = {
    "input_size": 20,
    "frontend": None,
    "specaug": None,
    "normalize": None,
    "encoder": "norm_conformer",
    "encoder_conf": {
        "output_size": 16,
        "attention_heads": 2,
        "linear_units": 32,
        "num_blocks": 2,
        "cnn_module_kernel": 7,
        "rel_pos_type": "latest",
        "conv_norm_type": "group_norm",
        "conv_norm_groups": 4,
    },
    "decoder": "transformer",
    "decoder_conf": {"attention_heads": 2, "linear_units": 32, "num_blocks": 1},
    "model_conf": {"ctc_weight": 0.3},
}
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "<sos/eos>"]


@pytest.fixture(scope="module")
def asr_task():
    from espnet2.tasks.asr import ASRTask

    return ASRTask


def write_config(directory, config):
    token_file = directory / "tokens.txt"
    token_file.write_text("\n".join(TOKENS) + "\n")
    config_file = directory / "train.yaml"
    config_file.write_text(yaml.safe_dump(dict(config, token_list=str(token_file))))
    return config_file


def build_from_config(asr_task, config_file, output_dir):
    parser = asr_task.get_parser()
    args = parser.parse_args(["--config", str(config_file), "--output_dir", str(output_dir)])
    return asr_task.build_model(args), args


def test_import_does_not_load_asr_task_and_registers_when_it_loads(tmp_path, asr_task):
    """In a fresh process: cheap import; key present after ESPnet's import; a saved model loads."""
    config_file = write_config(tmp_path, TINY_CONFIG)
    torch.manual_seed(0)
    model, args = build_from_config(asr_task, config_file, tmp_path / "exp")
    model.eval()
    speech = torch.randn(2, 40, 20)
    lengths = torch.tensor([40, 33])
    with torch.no_grad():
        reference = model.encode(speech, lengths)[0]
    saved_config = tmp_path / "config.yaml"
    saved_config.write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), tmp_path / "model.pth")
    torch.save({"speech": speech, "lengths": lengths, "out": reference}, tmp_path / "ref.pt")

    script = textwrap.dedent(
        f"""
        import sys
        import espnet_ext
        assert "espnet2.tasks.asr" not in sys.modules, "import espnet_ext imported the ASR task"
        assert "espnet_ext.asr.encoder" not in sys.modules
        heavy = sorted(m for m in ("torch", "numpy", "espnet", "espnet2", "nltk") if m in sys.modules)
        assert not heavy, f"import espnet_ext imported {{heavy}}"
        import torch
        from espnet2.tasks.asr import ASRTask, encoder_choices
        assert encoder_choices.classes["norm_conformer"].__name__ == "NormConformerEncoder"
        model, _ = ASRTask.build_model_from_file(
            r"{saved_config}", r"{tmp_path / 'model.pth'}", "cpu"
        )
        model.eval()
        ref = torch.load(r"{tmp_path / 'ref.pt'}")
        with torch.no_grad():
            out = model.encode(ref["speech"], ref["lengths"])[0]
        torch.testing.assert_close(out, ref["out"], atol=1e-6, rtol=0)
        print("OK", model.encoder.conv_norm_type)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK group_norm" in result.stdout


def test_build_model_uses_norm_conformer(tmp_path, asr_task):
    from espnet_ext.asr.encoder import NormConformerEncoder

    model, _ = build_from_config(asr_task, write_config(tmp_path, TINY_CONFIG), tmp_path / "exp")
    assert isinstance(model.encoder, NormConformerEncoder)
    norms = [layer.conv_module.norm for layer in model.encoder.encoders]
    assert all(isinstance(n, torch.nn.GroupNorm) and n.num_groups == 4 for n in norms)
    speech = torch.randn(2, 40, 20)
    speech_lengths = torch.tensor([40, 31])
    text = torch.tensor([[2, 3, 4], [3, 2, -1]])
    text_lengths = torch.tensor([3, 2])
    loss, stats, _ = model(speech, speech_lengths, text, text_lengths)
    assert torch.isfinite(loss)
    loss.backward()


def test_config_with_bad_norm_fails_with_the_allowed_values(tmp_path, asr_task):
    config = dict(TINY_CONFIG)
    config["encoder_conf"] = dict(TINY_CONFIG["encoder_conf"], conv_norm_type="groupnorm")
    with pytest.raises(ValueError, match="conv_norm_type must be one of 'batch_norm'"):
        build_from_config(asr_task, write_config(tmp_path, config), tmp_path / "exp")


def test_registration_is_idempotent_and_runs_if_task_already_imported(asr_task):
    from espnet2.tasks.asr import encoder_choices

    registered = encoder_choices.classes["norm_conformer"]
    register_encoders()
    register_encoders()
    assert encoder_choices.classes["norm_conformer"] is registered
    # Importing espnet_ext after espnet2.tasks.asr registers at once.
    del encoder_choices.classes["norm_conformer"]
    try:
        importlib.reload(espnet_ext)
        assert encoder_choices.classes["norm_conformer"].__name__ == "NormConformerEncoder"
    finally:
        encoder_choices.classes.setdefault("norm_conformer", registered)
    hooks = [f for f in sys.meta_path if getattr(f, "is_espnet_ext_import_hook", False)]
    assert len(hooks) == 1


def test_key_taken_by_another_class_is_an_error(asr_task, monkeypatch):
    from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
    from espnet2.tasks.asr import encoder_choices

    monkeypatch.setitem(encoder_choices.classes, "norm_conformer", ConformerEncoder)
    with pytest.raises(ValueError, match="already registered"):
        register_encoders()


def test_entry_points_neither_download_nltk_data_nor_print_its_errors(tmp_path):
    """ESPnet imports g2p_en, which calls nltk.download when its data is missing (offline: eight
    lines of "[nltk_data] Error loading ..." on stderr; online: files in ~/nltk_data)."""
    nltk_dir = tmp_path / "nltk_data"  # the only data dir: empty, so g2p_en wants to download
    nltk_dir.mkdir()
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    (site_dir / "sitecustomize.py").write_text(
        f"import nltk.data\nnltk.data.path[:] = [{str(nltk_dir)!r}]\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site_dir), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-m", "espnet_ext.bin.asr_inference", "--help"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--asr_train_config" in result.stdout
    assert "nltk_data" not in result.stderr
    assert list(nltk_dir.iterdir()) == []
    # nltk.download itself is left working for anyone who calls it.
    script = (
        "import espnet_ext, nltk, g2p_en, nltk.downloader as d; "
        "print(nltk.download.__func__ is d.Downloader.download)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.stdout.strip() == "True", result.stderr[-3000:]
