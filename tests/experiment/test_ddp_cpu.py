"""Distributed data-parallel training on CPU: two processes under torchrun with the gloo backend
(ESPnet's own launcher needs --ngpu > 1), as the recipe's ``--train_procs`` runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
import yaml

from helpers import make_tone_data_dir, tiny_asr_config, train_args, write_char_token_list

asr = pytest.importorskip("espnet2.tasks.asr")

# 1 process with the whole batch vs 2 processes with half of it each, after one update: the
# updates agree to float round-off plus the front end's padding effect (the STFT frames at the end
# of an utterance see the batch's zero padding, which differs between a batch of 4 and of 2).
# Measured: max |difference| 3.1e-5 with updates up to 0.13, i.e. < 0.4% of each tensor's update.
# Gradients that were not averaged over the ranks (each rank stepping on its own half) would
# differ by tens of percent.
MAX_ABS_DIFF = 1e-4
MAX_REL_DIFF = 0.01


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _setup(root):
    """4 training utterances in one batch of 4 (one update per epoch), SGD, nothing random in the
    forward (no dropout) and a padding-invariant encoder, so the two trainings can be compared."""
    train = make_tone_data_dir(root / "data", "train", n_utts=4, seed=0)
    valid = make_tone_data_dir(root / "data", "valid", n_utts=2, seed=1)
    tokens = write_char_token_list(root / "tokens.txt")
    config = tiny_asr_config("norm_conformer", conv_norm_type="group_norm", conv_norm_groups=2)
    config["decoder_conf"]["positional_dropout_rate"] = 0.0
    config.update(batch_size=4, optim="sgd", optim_conf={"lr": 0.1})
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return train, valid, tokens, path


def test_only_rank_0_of_a_distributed_training_writes_checkpoints():
    from espnet2.train.distributed_utils import DistributedOption

    from espnet_ext.experiment.training import is_checkpoint_writer

    assert is_checkpoint_writer(DistributedOption(distributed=False))
    assert is_checkpoint_writer(DistributedOption(distributed=True, dist_rank=0, dist_world_size=2))
    assert not is_checkpoint_writer(DistributedOption(distributed=True, dist_rank=1, dist_world_size=2))


@pytest.mark.slow
def test_two_cpu_processes_train_like_one_process_with_the_whole_batch(tmp_path):
    from espnet_ext.experiment.checkpoints import (
        checkpoint_path,
        identity_mismatch,
        init_identity,
        read_identity,
        saved_epochs,
    )
    from espnet_ext.experiment.training import CheckpointKeepingASRTask

    setup = _setup(tmp_path)
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "espnet_ext.bin.asr_train", *train_args(*setup, ddp_out, max_epoch=2),
         "--dist_backend", "gloo", "--multiprocessing_distributed", "false"],
        capture_output=True, text=True, env=env, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    # ESPnet ran distributed (its log lines carry rank/world size) and finished every epoch.
    assert re.search(r"\[[^\]:]+:0/2\]", log)
    assert "The training was finished at 2 epochs" in log

    # One set of checkpoints, written by rank 0: checkpoint 0 of this run's config and seed.
    assert saved_epochs(ddp_out) == [0, 1, 2]
    assert sorted(p.name for p in (ddp_out / "checkpoints").iterdir()) == [
        "0epoch.json", "0epoch.pth", "1epoch.pth", "2epoch.pth"]
    with open(ddp_out / "config.yaml") as f:
        config = yaml.safe_load(f)
    assert identity_mismatch(read_identity(checkpoint_path(ddp_out, 0)), init_identity(config)) is None

    # The saved model loads into the model its config builds.
    import argparse

    model = asr.ASRTask.build_model(argparse.Namespace(**config))
    model.load_state_dict(_load(ddp_out / "valid.loss.best.pth"))

    # The same training in one process (one thread) with the whole batch.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        CheckpointKeepingASRTask.main(cmd=train_args(*setup, single_out, max_epoch=1))
    finally:
        torch.set_num_threads(threads)
    init = _load(checkpoint_path(single_out, 0))
    assert all(torch.equal(init[k], v) for k, v in _load(checkpoint_path(ddp_out, 0)).items())
    single, ddp = _load(checkpoint_path(single_out, 1)), _load(checkpoint_path(ddp_out, 1))
    moved = 0
    for k, w in single.items():
        if not w.is_floating_point():
            continue
        update, diff = w - init[k], ddp[k] - w
        assert diff.abs().max() <= MAX_ABS_DIFF, k
        if update.norm() > 0:
            moved += 1
            assert diff.norm() <= MAX_REL_DIFF * update.norm(), k
    assert moved > 0
