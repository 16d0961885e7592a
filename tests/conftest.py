"""Shared fixtures (the helpers they use live in helpers.py)."""

from __future__ import annotations

import pytest
import yaml

from helpers import make_tone_data_dir, tiny_asr_config, write_char_token_list


@pytest.fixture
def tiny_asr_setup(tmp_path):
    """(train dir, valid dir, token list, config path) for a tiny char-level ASR model."""
    train = make_tone_data_dir(tmp_path / "data", "train", n_utts=6, seed=0)
    valid = make_tone_data_dir(tmp_path / "data", "valid", n_utts=3, seed=1)
    tokens = write_char_token_list(tmp_path / "tokens.txt")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(tiny_asr_config()))
    return train, valid, tokens, config


@pytest.fixture
def one_thread():
    """Run the test with one torch thread: on tiny tensors, thread hand-offs cost more than the
    work on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
