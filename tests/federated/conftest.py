"""Fixtures of the federated tests: a tiny model trained on one domain, data of another."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from helpers import tiny_asr_config, train_args, write_char_token_list

# A learnable toy language: each letter is a 0.1 s tone, words are separated by silence.
FREQS = {"A": 300.0, "B": 600.0, "C": 1200.0, "D": 2400.0}


def tone_alphabet_dir(root: Path, name: str, speakers, utts_per_speaker: int, shift: float, seed: int) -> Path:
    """Kaldi data dir of tone-coded letter sequences; `shift` scales every frequency (the domain)."""
    rng = np.random.default_rng(seed)
    d, wav_dir = root / name, root / f"{name}_wav"
    d.mkdir(parents=True)
    wav_dir.mkdir(parents=True)
    wav, text, utt2spk = [], [], []
    for spk in speakers:
        pitch = rng.uniform(0.95, 1.05)  # speakers differ a little
        for i in range(utts_per_speaker):
            words = ["".join(rng.choice(list(FREQS), size=rng.integers(1, 4))) for _ in range(2)]
            parts = [np.zeros(800)]
            for w, word in enumerate(words):
                if w:
                    parts.append(np.zeros(960))
                t = np.arange(1600) / 16000
                parts += [0.3 * np.sin(2 * np.pi * FREQS[c] * shift * pitch * t) for c in word]
            parts.append(np.zeros(800))
            audio = np.concatenate(parts)
            audio = audio + 0.005 * rng.standard_normal(len(audio))
            utt = f"{spk}-{name}-{i:03d}"
            sf.write(wav_dir / f"{utt}.wav", audio.astype(np.float32), 16000, subtype="PCM_16")
            wav.append(f"{utt} {wav_dir / f'{utt}.wav'}")
            text.append(f"{utt} {' '.join(words)}")
            utt2spk.append(f"{utt} {spk}")
    for fname, lines in (("wav.scp", wav), ("text", text), ("utt2spk", utt2spk)):
        (d / fname).write_text("\n".join(sorted(lines)) + "\n")
    spk2utt = {}
    for line in sorted(utt2spk):
        u, s = line.split()
        spk2utt.setdefault(s, []).append(u)
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items())))
    return d


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A model trained centrally on domain A (tones as is) and data of domain B (tones x 1.6)."""
    pytest.importorskip("espnet2.tasks.asr")
    from espnet_ext.experiment.training import CheckpointKeepingASRTask
    from espnet_ext.scan.result import ScanRow, write_tsv

    root = tmp_path_factory.mktemp("fl")
    data = root / "data"
    spk_a, spk_b = [f"a{i}" for i in range(4)], [f"b{i}" for i in range(4)]
    central = tone_alphabet_dir(data, "central", spk_a, 10, 1.0, 0)
    central_dev = tone_alphabet_dir(data, "central_dev", spk_a, 2, 1.0, 1)
    adapt = tone_alphabet_dir(data, "adapt", spk_b, 6, 1.6, 2)
    adapt_test = tone_alphabet_dir(data, "adapt_test", spk_b, 2, 1.6, 3)
    tokens = write_char_token_list(root / "tokens.txt")
    conf = tiny_asr_config("norm_conformer", conv_norm_type="group_norm", conv_norm_groups=2)
    conf["batch_size"] = 4
    config = root / "train.yaml"
    config.write_text(yaml.safe_dump(conf))
    torch.set_num_threads(1)
    CheckpointKeepingASRTask.main(cmd=train_args(central, central_dev, tokens, config, root / "exp",
                                                 max_epoch=15))
    scan = root / "scan.tsv"
    rows = [ScanRow("dev", g, "enc_block", None, None, "reinit", 0, None, 0.0, d, 0.0, d, label)
            for g, label, d in (("encoder.embed", "critical", 90.0), ("encoder.encoders.0", "critical", 40.0),
                                ("encoder.encoders.1", "ambient", 1.0), ("ctc", "critical", 99.0))]
    write_tsv(scan, rows)
    return {"root": root, "exp": root / "exp", "adapt": adapt, "scan": scan,
            "eval": [("adapt", adapt_test), ("orig", central_dev)]}
