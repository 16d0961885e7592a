"""Helpers shared by the tests and the benchmarks: tiny Kaldi data dirs with synthetic audio,
tiny ESPnet configs and models, a fake LibriSpeech tree, and scratch copies of a recipe.

Imported as ``helpers`` (tests/ is on the path in pytest; bench/ scripts add it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parents[1]
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"


def make_tone_data_dir(root: Path, name: str, n_utts: int = 6, seed: int = 0, n_speakers: int = 2,
                       seconds: tuple = (0.4, 0.8)) -> Path:
    """Writes a Kaldi data dir of 16 kHz mono tones with short letter transcripts.

    Utterance i belongs to speaker ``spk{i % n_speakers}``; durations are uniform in `seconds`.
    """
    rng = np.random.default_rng(seed)
    d = root / name
    wav_dir = root / f"{name}_wav"
    d.mkdir(parents=True)
    wav_dir.mkdir(parents=True)
    words = ["AB", "BA", "CAB", "BAD", "A", "DAB"]
    wav_scp, text, utt2spk = [], [], []
    for i in range(n_utts):
        spk = f"spk{i % n_speakers}"
        utt = f"{spk}-{name}-{i:03d}"
        n = int(16000 * rng.uniform(*seconds))
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

    from espnet_ext.experiment.training import CheckpointKeepingASRTask

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

    from espnet_ext.asr.registration import register_encoders

    register_encoders()

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

    from espnet_ext.asr.registration import register_encoders

    register_encoders()

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


WORDS = ["THE", "CAT", "SAT", "ON", "A", "MAT", "DOG", "RAN", "HOME", "IT'S", "BIG", "RED"]
TINY_PARTS = ("train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other")


def make_fake_librispeech(
    root: Path,
    parts: Sequence[str] = TINY_PARTS,
    readers_per_part: int = 2,
    utts_per_reader: Dict[str, int] = None,
    seed: int = 0,
) -> Path:
    """Writes `<root>/LibriSpeech/` with the official layout: 16 kHz mono FLAC noise-and-tone
    utterances, `<reader>-<chapter>.trans.txt` transcripts and SPEAKERS.TXT.

    Readers are distinct across parts (as in LibriSpeech); each reader has two chapters. Returns
    `<root>/LibriSpeech`.
    """
    rng = np.random.default_rng(seed)
    corpus = root / "LibriSpeech"
    corpus.mkdir(parents=True)
    speakers = [";ID  |SEX| SUBSET           |MINUTES| NAME"]
    reader = 100
    for part in parts:
        n_utts = (utts_per_reader or {}).get(part, 4)
        for r in range(readers_per_part):
            reader += 7
            # A name with '|' in it, as LibriSpeech's reader 60 has.
            name = "|CBW|Simon" if r == 0 else f"Reader {reader}"
            speakers.append(f"{reader:<5}| {'F' if r % 2 else 'M'} | {part:<17}| 1.00 | {name}")
            for c in range(2):
                chapter = 1000 + 10 * reader + c
                chapter_dir = corpus / part / str(reader) / str(chapter)
                chapter_dir.mkdir(parents=True)
                lines = []
                for i in range((n_utts + 1 - c) // 2):
                    utt = f"{reader}-{chapter}-{i:04d}"
                    n = int(16000 * rng.uniform(0.4, 0.7))
                    t = np.arange(n) / 16000
                    audio = 0.2 * np.sin(2 * np.pi * rng.uniform(150, 500) * t) + 0.02 * rng.standard_normal(n)
                    sf.write(chapter_dir / f"{utt}.flac", audio.astype(np.float32), 16000, subtype="PCM_16")
                    lines.append(f"{utt} {' '.join(rng.choice(WORDS, size=3))}")
                (chapter_dir / f"{reader}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    (corpus / "SPEAKERS.TXT").write_text("; comment line\n" + "\n".join(speakers) + "\n")
    return corpus


def run_local_data(recipe: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Runs the recipe's local/data.sh in a scratch dir, with wget/curl replaced by stubs that
    leave a trace, so a download attempt is visible (and never reaches the network)."""
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for tool in ("wget", "curl"):
        (stubs / tool).write_text(f"#!/bin/sh\necho {tool} >> {tmp_path}/download_attempts\nexit 1\n")
        (stubs / tool).chmod(0o755)
    work = tmp_path / "recipe"
    work.mkdir(exist_ok=True)
    (work / "local").mkdir(exist_ok=True)
    for f in ("local/data.sh", "db.sh"):
        if not (work / f).exists():
            os.symlink(recipe / f, work / f)
    env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}")
    env.pop("LIBRISPEECH", None)
    return subprocess.run(["local/data.sh", *args], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)


#: Encoder families built by build_family_model (the others by build_tiny_model).
FAMILIES = ("e_branchformer", "branchformer", "branchformer_learned_ave")


def build_perturbed_model(tmp_path, encoder, **encoder_conf):
    """A tiny model of `encoder` whose norms and statistics are far from their initial values."""
    import torch

    if encoder in FAMILIES:
        model = build_family_model(tmp_path, encoder)
    else:
        model = build_tiny_model(tmp_path, encoder, **encoder_conf)
    # Non-trivial norm parameters and statistics, so that zeroing and slicing them matters; the
    # cgMLP gate starts constant (ESPnet's init), fusion kernels near identity.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(s in name for s in ("conv_module.norm", "pos_bias", "csgu", "conv_fusion")):
                p.add_(torch.randn_like(p) * 0.3)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
    return model


#: Encoders for the federated sub-model tests: name -> (encoder, encoder_conf) of build_perturbed_model.
PERTURBED_ENCODERS = {
    "e_branchformer": ("e_branchformer", {}),
    "branchformer": ("branchformer", {}),
    "branchformer_learned_ave": ("branchformer_learned_ave", {}),
    "espnet_batch_norm": ("conformer", {}),
    "group_norm_2_groups": ("norm_conformer", {"conv_norm_type": "group_norm", "conv_norm_groups": 2}),
    "group_norm_1_group": ("norm_conformer", {"conv_norm_type": "group_norm", "conv_norm_groups": 1}),
}


def make_recipe_workdir(recipe_dir: Path, work_root: Path) -> Path:
    """Copy `egs2/<corpus>/asr1` under `work_root/egs2/<corpus>/asr1`; returns the copy.

    Args:
        recipe_dir: a recipe directory inside this repository (egs2/<corpus>/asr1).
        work_root: an empty or new directory.
    """
    recipe_dir = Path(recipe_dir).resolve()
    egs2 = recipe_dir.parents[1]
    if not (egs2 / "TEMPLATE" / "asr1" / "asr.sh").exists():
        raise FileNotFoundError(f"{recipe_dir} is not a recipe under egs2/ (no egs2/TEMPLATE)")
    corpus = recipe_dir.parent.name
    work = Path(work_root) / "egs2" / corpus / recipe_dir.name
    work.mkdir(parents=True)
    os.symlink(egs2 / "TEMPLATE", Path(work_root) / "egs2" / "TEMPLATE")
    shutil.copy(recipe_dir / "run.sh", work / "run.sh")
    shutil.copytree(recipe_dir / "conf", work / "conf")
    # Corpus locations (ESPnet's db.sh convention) are recipe settings a copy may edit too.
    if (recipe_dir / "db.sh").exists():
        shutil.copy(recipe_dir / "db.sh", work / "db.sh")
    if (recipe_dir / "local").exists():
        os.symlink(recipe_dir / "local", work / "local")
    return work
