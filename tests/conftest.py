"""Shared fixtures: tiny Kaldi data dirs with synthetic audio, and tiny ESPnet configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"


def make_tone_data_dir(root: Path, name: str, n_utts: int = 6, seed: int = 0) -> Path:
    """Writes a Kaldi data dir of 16 kHz mono tones with short letter transcripts."""
    rng = np.random.default_rng(seed)
    d = root / name
    wav_dir = root / f"{name}_wav"
    d.mkdir(parents=True)
    wav_dir.mkdir(parents=True)
    words = ["AB", "BA", "CAB", "BAD", "A", "DAB"]
    wav_scp, text, utt2spk = [], [], []
    for i in range(n_utts):
        spk = f"spk{i % 2}"
        utt = f"{spk}-{name}-{i:03d}"
        n = int(16000 * rng.uniform(0.4, 0.8))
        t = np.arange(n) / 16000
        audio = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 400) * t) + 0.01 * rng.standard_normal(n)
        path = wav_dir / f"{utt}.wav"
        sf.write(path, audio.astype(np.float32), 16000, subtype="PCM_16")
        wav_scp.append(f"{utt} {path}")
        text.append(f"{utt} {' '.join(rng.choice(words, size=2))}")
        utt2spk.append(f"{utt} {spk}")
    for fname, lines in (("wav.scp", wav_scp), ("text", text), ("utt2spk", utt2spk)):
        (d / fname).write_text("\n".join(sorted(lines)) + "\n")
    spk2utt = {}
    for line in sorted(utt2spk):
        utt, spk = line.split()
        spk2utt.setdefault(spk, []).append(utt)
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n" for s, u in sorted(spk2utt.items())))
    return d


def write_char_token_list(path: Path) -> Path:
    tokens = ["<blank>", "<unk>", "<space>"] + list(LETTERS) + ["<sos/eos>"]
    path.write_text("\n".join(tokens) + "\n")
    return path


def tiny_asr_config(encoder: str = "conformer", **encoder_conf) -> dict:
    """An ESPnet ASR training config small enough to train in seconds on a CPU."""
    conf = dict(
        output_size=16, attention_heads=2, linear_units=32, num_blocks=2, dropout_rate=0.0,
        positional_dropout_rate=0.0, attention_dropout_rate=0.0, input_layer="conv2d",
        macaron_style=True, rel_pos_type="latest", pos_enc_layer_type="rel_pos",
        selfattention_layer_type="rel_selfattn", use_cnn_module=True, cnn_module_kernel=3,
    )
    conf.update(encoder_conf)
    return {
        "frontend": "default",
        "frontend_conf": {"n_fft": 256, "hop_length": 160, "n_mels": 20},
        "encoder": encoder,
        "encoder_conf": conf,
        "decoder": "transformer",
        "decoder_conf": {"attention_heads": 2, "linear_units": 32, "num_blocks": 1,
                         "dropout_rate": 0.0},
        "model_conf": {"ctc_weight": 0.3},
        "optim": "adam",
        "optim_conf": {"lr": 0.01},
        "batch_type": "unsorted",
        "batch_size": 3,
        "num_workers": 0,
        "num_att_plot": 0,
        "use_tensorboard": False,
        "use_matplotlib": False,
        "best_model_criterion": [["valid", "loss", "min"]],
        "keep_nbest_models": 1,
    }


@pytest.fixture
def tiny_asr_setup(tmp_path):
    """(train dir, valid dir, token list, config path) for a tiny char-level ASR model."""
    train = make_tone_data_dir(tmp_path / "data", "train", n_utts=6, seed=0)
    valid = make_tone_data_dir(tmp_path / "data", "valid", n_utts=3, seed=1)
    tokens = write_char_token_list(tmp_path / "tokens.txt")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(tiny_asr_config()))
    return train, valid, tokens, config


def train_args(train: Path, valid: Path, tokens: Path, config: Path, out: Path, **extra) -> list:
    """Command-line arguments of espnet_ext.bin.asr_train for the tiny setup."""
    args = [
        "--config", str(config), "--token_type", "char", "--token_list", str(tokens),
        "--use_preprocessor", "true", "--cleaner", "none", "--g2p", "none",
        "--train_data_path_and_name_and_type", f"{train}/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type", f"{train}/text,text,text",
        "--valid_data_path_and_name_and_type", f"{valid}/wav.scp,speech,sound",
        "--valid_data_path_and_name_and_type", f"{valid}/text,text,text",
        "--train_shape_file", f"{train}/wav.scp", "--valid_shape_file", f"{valid}/wav.scp",
        "--output_dir", str(out), "--ngpu", "0", "--seed", "3", "--resume", "true",
    ]
    for k, v in extra.items():
        args += [f"--{k}", str(v)]
    return args


def train_tiny_model(root: Path, max_epoch: int, config: dict = None) -> tuple:
    """Trains a tiny char-level model on tone data in-process (one torch thread).

    Returns:
        (experiment dir, train data dir).
    """
    import torch

    from espnet_ext.training import CheckpointKeepingASRTask

    train = make_tone_data_dir(root / "data", "train", n_utts=6, seed=0)
    valid = make_tone_data_dir(root / "data", "valid", n_utts=3, seed=1)
    tokens = write_char_token_list(root / "tokens.txt")
    config_path = root / "train.yaml"
    config_path.write_text(yaml.safe_dump(config or tiny_asr_config()))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        CheckpointKeepingASRTask.main(
            cmd=train_args(train, valid, tokens, config_path, root / "exp", max_epoch=max_epoch))
    finally:
        torch.set_num_threads(threads)
    return root / "exp", train


def build_tiny_model(tmp_path: Path, encoder: str = "conformer", **encoder_conf):
    """An untrained tiny ESPnet ASR model built from `tiny_asr_config` (torch seed 0)."""
    import torch
    from espnet2.tasks.asr import ASRTask

    import espnet_ext  # noqa: F401  (registers norm_conformer)

    tokens = write_char_token_list(tmp_path / "tokens.txt")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(tiny_asr_config(encoder, **encoder_conf)))
    args = ASRTask.get_parser().parse_args(
        ["--config", str(config), "--token_type", "char", "--token_list", str(tokens)]
    )
    torch.manual_seed(0)
    return ASRTask.build_model(args)


# Tiny encoder_conf of each ESPnet encoder family with a block list (no dropout), for tests that
# compare families; the Conformer's is tiny_asr_config's own.
_TINY_BRANCHES = dict(output_size=16, attention_heads=2, cgmlp_linear_units=32, cgmlp_conv_kernel=3,
                      num_blocks=2, dropout_rate=0.0, positional_dropout_rate=0.0,
                      attention_dropout_rate=0.0, input_layer="conv2d")
TINY_ENCODERS = {
    "conformer": ("conformer", tiny_asr_config()["encoder_conf"]),
    "transformer": ("transformer", dict(output_size=16, attention_heads=2, linear_units=32,
                                        num_blocks=2, dropout_rate=0.0, positional_dropout_rate=0.0,
                                        attention_dropout_rate=0.0, input_layer="conv2d")),
    "branchformer": ("branchformer", dict(_TINY_BRANCHES, merge_method="concat")),
    "branchformer_learned_ave": ("branchformer", dict(_TINY_BRANCHES, merge_method="learned_ave",
                                                      use_linear_after_conv=True)),
    "e_branchformer": ("e_branchformer", dict(_TINY_BRANCHES, linear_units=32, use_ffn=True,
                                              macaron_ffn=True, merge_conv_kernel=3,
                                              use_linear_after_conv=True)),
}


def build_family_model(tmp_path: Path, family: str):
    """An untrained tiny ESPnet ASR model with encoder family `family` of TINY_ENCODERS (seed 0)."""
    import torch
    from espnet2.tasks.asr import ASRTask

    import espnet_ext  # noqa: F401

    encoder, conf = TINY_ENCODERS[family]
    config = tiny_asr_config()
    config["encoder"], config["encoder_conf"] = encoder, dict(conf)
    tokens = write_char_token_list(tmp_path / "tokens.txt")
    path = tmp_path / f"train_{family}.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ASRTask.get_parser().parse_args(
        ["--config", str(path), "--token_type", "char", "--token_list", str(tokens)])
    torch.manual_seed(0)
    return ASRTask.build_model(args)


@pytest.fixture
def one_thread():
    """Run the test with one torch thread: on tiny tensors, thread hand-offs cost more than the
    work on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
