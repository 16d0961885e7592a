"""Helpers shared by the tests and the benchmarks: synthetic tones, tiny Kaldi data dirs with
synthetic audio, tiny ESPnet configs and models, a fake LibriSpeech tree, fake trained runs
(checkpoints, layer-reset scans, decoding scores) and scratch copies of a recipe.

Imported as ``helpers`` (tests/ is on the path in pytest; bench/ scripts add it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Collection, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import yaml

from espnet_ext.scan.labels import AmbientCriterion

REPO = Path(__file__).resolve().parents[1]
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"


def tone_samples(seconds: float, rate: int = 16000, channels: int = 1) -> np.ndarray:
    """float32 samples of a 220 Hz sine of amplitude 0.3, `seconds` long at `rate` Hz.

    Shape (samples,) for one channel, (samples, channels) otherwise (the same sine in each).
    """
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


def write_tone(path: Path, seconds: float, rate: int = 16000, channels: int = 1) -> Path:
    """Writes `tone_samples` as 16-bit PCM at `rate` Hz; the format follows the suffix (.wav, .flac)."""
    sf.write(path, tone_samples(seconds, rate, channels), rate, subtype="PCM_16")
    return path


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


# Fake trained runs: what the analyses read from an experiment dir, written without training.

#: Model dimension of the fake Conformer.
FAKE_DIM = 4
#: Error rates (percent) of a fake run's unreset model on the scanned set "dev".
FAKE_BASELINE = {"WER": 20.0, "CER": 10.0}
#: The fake scans' ambient rule: CER at most 2 points above the baseline.
FAKE_CRITERION = AmbientCriterion("cer", abs_points=2.0, rel=None)
#: Relative update per epoch of a group that the rates given to make_fake_run leave out.
FAKE_DEFAULT_RATE = 0.01
#: Decoding dir of a fake run (the model file of ESPnet's default averaging).
FAKE_DECODE_DIR = "decode_asr_valid.acc.ave"

# Shape of each parameter of a fake Conformer block (name under encoder.encoders.<i>) for model
# dimension d.
_BLOCK_PARAM_SHAPES: Dict[str, Callable[[int], Tuple[int, ...]]] = {
    "feed_forward_macaron.w_1.weight": lambda d: (2 * d, d),
    "self_attn.linear_q.weight": lambda d: (d, d),
    "conv_module.pointwise_conv1.weight": lambda d: (2 * d, d, 1),
    "conv_module.norm.weight": lambda d: (d,),
    "feed_forward.w_1.weight": lambda d: (2 * d, d),
    "norm_ff.weight": lambda d: (d,),
    "norm_mha.weight": lambda d: (d,),
}
#: A full fake Conformer block: one parameter of each sub-module kind, in ESPnet's order.
CONFORMER_BLOCK_PARAMS = tuple(_BLOCK_PARAM_SHAPES)


def fake_conformer_state(num_blocks: int, norm: str = "batch_norm", seed: int = 1,
                         dim: int = FAKE_DIM, block_params: Sequence[str] = CONFORMER_BLOCK_PARAMS,
                         decoder: bool = False) -> dict:
    """A Conformer-shaped state dict of standard normal tensors (torch generator seeded `seed`).

    Keys: the embedding (two weights), `num_blocks` blocks of `block_params` (names of
    CONFORMER_BLOCK_PARAMS, drawn in the order given), the final norm, the CTC output layer and,
    with `decoder`, one decoder block. With ``norm == "batch_norm"`` the conv module's norm also has
    BatchNorm's buffers (running statistics, batch count).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)

    def t(*shape):
        return torch.randn(*shape, generator=gen)

    s = {"encoder.embed.conv.0.weight": t(dim, 1, 3, 3), "encoder.embed.out.0.weight": t(dim, dim)}
    for i in range(num_blocks):
        b = f"encoder.encoders.{i}"
        for name in block_params:
            s[f"{b}.{name}"] = t(*_BLOCK_PARAM_SHAPES[name](dim))
            if name == "conv_module.norm.weight" and norm == "batch_norm":
                s[f"{b}.conv_module.norm.running_mean"] = t(dim)
                s[f"{b}.conv_module.norm.running_var"] = t(dim).abs()
                s[f"{b}.conv_module.norm.num_batches_tracked"] = torch.tensor(0)
    s["encoder.after_norm.weight"] = t(dim)
    s["ctc.ctc_lo.weight"] = t(6, dim)
    if decoder:
        s["decoder.decoders.0.self_attn.linear_q.weight"] = t(dim, dim)
    return s


def _encoder_block_of(group: str) -> str:
    """The block-granularity group a group belongs to (``encoder.encoders.<i>`` or itself)."""
    return ".".join(group.split(".")[:3]) if group.startswith("encoder.encoders.") else group


def make_fake_run(
    root: Path,
    name: str,
    rates: Mapping[str, float],
    *,
    epochs: int,
    norm: str = "batch_norm",
    seed: int = 1,
    block_params: Sequence[str] = CONFORMER_BLOCK_PARAMS,
    decoder: bool = False,
    scan: bool = True,
    granularities: Sequence[str] = ("block",),
    taus: Sequence[int] = (0, 1),
    rerandomize: bool = False,
    kind_factor: Optional[Mapping[str, float]] = None,
    uncertain: Optional[Collection[int]] = None,
    status: str = "done",
    criterion: AmbientCriterion = FAKE_CRITERION,
    decodings: Optional[Mapping[str, int]] = None,
) -> Path:
    """Writes `root/name`, a trained run of `epochs` epochs as the analyses read it; returns it.

    - config.yaml: seed, encoder (``conformer`` for batch norm, else ``norm_conformer`` with
      ``conv_norm_type: norm``), encoder_conf (output_size FAKE_DIM, num_blocks: the blocks
      named in `rates`), optimiser.
    - checkpoints/<tau>epoch.pth for tau = 0..epochs and valid.acc.ave.pth (the last): block group
      g's parameters are theta_0 * (1 + rates[g] * tau), so its relative update from the start is
      rates[g] * tau; buffers are theta_0 + 100 * tau (they must not count as updates).
    - with `scan`, scan_<granularity>_dev/{scan.tsv,scan.json} for each of `granularities`,
      written with the scan module's own writers, decoder groups left out (as ctc_greedy scans
      do): a reinit row per tau of `taus` whose WER and CER are FAKE_BASELINE's plus
      10 * rates[block of g] * kind_factor[kind of g] * (epochs - tau) / epochs points, and with
      `rerandomize` a rerandomize row (seed + 1; WER 50, CER 40). Rows are labelled by
      `criterion`; with `uncertain` (block indices) reinit rows carry intervals, +-2.5 points for
      those blocks' groups (straddling the rule) and +-0.05 for the others.
    - decode_asr_valid.acc.ave/<set>/ scores of `decodings` ({set: characters wrong of 10}).

    Args:
        rates: {block-granularity group name: relative update per epoch}; groups left out move
            FAKE_DEFAULT_RATE per epoch.
        block_params: Parameters of each block (fake_conformer_state).
        decoder: Whether the model has a decoder block.
        kind_factor: {group kind: factor} of the scanned error change (default 1).
        status: scan.json status (``done``: finished).
    """
    import torch

    from espnet_ext.layers import build_layer_map

    num_blocks = sum(1 for g in rates if g.startswith("encoder.encoders."))
    exp = root / name
    (exp / "checkpoints").mkdir(parents=True)
    config = {"seed": seed, "collect_stats": False,
              "encoder": "conformer" if norm == "batch_norm" else "norm_conformer",
              "encoder_conf": {"output_size": FAKE_DIM, "num_blocks": num_blocks},
              "optim": "adam", "optim_conf": {"lr": 0.003}}
    if config["encoder"] == "norm_conformer":
        config["encoder_conf"]["conv_norm_type"] = norm
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    init = fake_conformer_state(num_blocks, norm, seed, block_params=block_params, decoder=decoder)
    blocks = build_layer_map(init, "block")
    for tau in range(epochs + 1):
        state = dict(init)
        for g in blocks.groups:
            for key in g.param_keys:
                state[key] = init[key] * (1 + rates.get(g.name, FAKE_DEFAULT_RATE) * tau)
            for key in g.buffer_keys:
                state[key] = init[key] + 100.0 * tau
        torch.save(state, exp / "checkpoints" / f"{tau}epoch.pth")
    shutil.copy(exp / "checkpoints" / f"{epochs}epoch.pth", exp / "valid.acc.ave.pth")
    if scan:
        for granularity in granularities:
            _write_fake_scan(exp, build_layer_map(init, granularity), rates, epochs=epochs,
                             seed=seed, taus=taus, rerandomize=rerandomize,
                             kind_factor=kind_factor or {}, uncertain=uncertain, status=status,
                             criterion=criterion)
    for dataset, wrong in (decodings or {}).items():
        write_fake_decoding(exp / FAKE_DECODE_DIR / dataset, wrong)
    return exp


def _write_fake_scan(exp: Path, layer_map, rates: Mapping[str, float], *, epochs: int, seed: int,
                     taus: Sequence[int], rerandomize: bool, kind_factor: Mapping[str, float],
                     uncertain: Optional[Collection[int]], status: str,
                     criterion: AmbientCriterion) -> None:
    """scan_<granularity>_dev of make_fake_run."""
    from espnet_ext.evaluation.bootstrap import DeltaInterval
    from espnet_ext.scan.result import REINIT, RERANDOMIZE, ScanRow, write_tsv

    rows = []
    for g in layer_map.groups:
        if g.name.startswith("decoder."):
            continue
        rate = rates.get(_encoder_block_of(g.name), FAKE_DEFAULT_RATE)
        for tau in taus:
            d = 10 * rate * kind_factor.get(g.kind, 1.0) * (epochs - tau) / epochs
            row = ScanRow("dev", g.name, g.kind, g.block, g.depth, REINIT, tau, None,
                          FAKE_BASELINE["WER"] + d, FAKE_BASELINE["CER"] + d)
            if uncertain is None:
                row.relabel(FAKE_BASELINE, criterion)
            else:
                half = 2.5 if g.block in uncertain else 0.05
                interval = DeltaInterval(d, d - half, d + half, 10, 0.95)
                row.relabel(FAKE_BASELINE, criterion, {"WER": interval, "CER": interval})
            rows.append(row)
        if rerandomize:
            row = ScanRow("dev", g.name, g.kind, g.block, g.depth, RERANDOMIZE, None, seed + 1,
                          50.0, 40.0)
            row.relabel(FAKE_BASELINE, criterion)
            rows.append(row)
    out = exp / f"scan_{layer_map.granularity}_dev"
    out.mkdir()
    write_tsv(out / "scan.tsv", rows)
    meta = {"identity": {"model_file": str((exp / "valid.acc.ave.pth").resolve()),
                         "granularity": layer_map.granularity, "patterns": []},
            "options": {"criterion": dataclasses.asdict(criterion)},
            "baseline": {"dev": FAKE_BASELINE}, "status": status}
    (out / "scan.json").write_text(json.dumps(meta))


def write_fake_decoding(out: Path, wrong: int) -> Path:
    """Decoding scores in `out` (ref, hyp, scores) of one utterance of 10 characters with `wrong`
    of them substituted: CER 10 * wrong percent, WER 100 percent when `wrong` > 0."""
    from espnet_ext.evaluation.scoring import write_scores

    out.mkdir(parents=True)
    ref = "abcdefghij"
    (out / "ref").write_text(f"utt1 {ref}\n")
    (out / "hyp").write_text(f"utt1 {'z' * wrong}{ref[wrong:]}\n")
    write_scores(out / "ref", out / "hyp", out)
    return out
