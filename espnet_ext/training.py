"""ESPnet ASR training that keeps the initial weights and every epoch's weights.

Layer-reset analysis needs theta_0 (the weights right before the first update) and theta_tau for
every epoch tau. ESPnet saves neither: it never writes the initial weights, and it deletes
`{N}epoch.pth` files outside the n-best. This module's trainer writes
`<output_dir>/checkpoints/0epoch.pth` before the first update and hard-links each
`{N}epoch.pth` into `checkpoints/` before ESPnet can delete it (a hard link costs no disk space).
Everything else is ESPnet's own training loop, unchanged.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch
from espnet2.tasks.asr import ASRTask
from espnet2.train.trainer import Trainer

# checkpoint_path and saved_epochs are re-exported for callers of this module.
from espnet_ext.checkpoints import (  # noqa: F401
    CHECKPOINT_DIR,
    EPOCH_FILE,
    checkpoint_path,
    saved_epochs,
)

def _is_writer(distributed_option) -> bool:
    return not distributed_option.distributed or distributed_option.dist_rank == 0


def save_initial_weights(model: torch.nn.Module, output_dir: Path, resuming: bool) -> None:
    """Write checkpoint 0 (the model's weights before any update), atomically, once.

    Args:
        model: the model exactly as it enters the training loop (initialized, pre-trained
            parts loaded, on its device).
        output_dir: the training output directory.
        resuming: True when ESPnet will resume from `checkpoint.pth`; the current weights are
            then not the initial ones, so nothing is written.
    """
    dst = checkpoint_path(output_dir, 0)
    if dst.exists():
        return
    if resuming:
        logging.warning(
            f"{dst} is missing but training resumes from {output_dir}/checkpoint.pth: the "
            "initial weights of this run are lost, so reset-to-initialization analysis cannot "
            "use it. Train from scratch with espnet_ext.bin.asr_train to keep them."
        )
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    torch.save(state, tmp)
    os.replace(tmp, dst)
    logging.info(f"Saved the initial weights (checkpoint 0) to {dst}")


def keep_epoch_checkpoints(output_dir: Path) -> None:
    """Hard-link every `{N}epoch.pth` in `output_dir` into `output_dir/checkpoints/`."""
    output_dir = Path(output_dir)
    keep_dir = output_dir / CHECKPOINT_DIR
    keep_dir.mkdir(parents=True, exist_ok=True)
    for src in output_dir.iterdir():
        dst = keep_dir / src.name
        if not EPOCH_FILE.match(src.name) or src.is_symlink() or dst.exists():
            continue
        try:
            os.link(src, dst)
        except OSError:  # file systems without hard links
            shutil.copy2(src, dst)


class CheckpointKeepingTrainer(Trainer):
    """ESPnet's Trainer, plus checkpoint 0 and a kept copy of every epoch's weights."""

    @classmethod
    def run(cls, model, optimizers, schedulers, train_iter_factory, valid_iter_factory,
            plot_attention_iter_factory, trainer_options, distributed_option) -> None:
        output_dir = Path(trainer_options.output_dir)
        if _is_writer(distributed_option):
            resuming = bool(trainer_options.resume) and (output_dir / "checkpoint.pth").exists()
            save_initial_weights(model, output_dir, resuming)
        super().run(
            model=model,
            optimizers=optimizers,
            schedulers=schedulers,
            train_iter_factory=train_iter_factory,
            valid_iter_factory=valid_iter_factory,
            plot_attention_iter_factory=plot_attention_iter_factory,
            trainer_options=trainer_options,
            distributed_option=distributed_option,
        )
        if _is_writer(distributed_option):
            keep_epoch_checkpoints(output_dir)

    @classmethod
    def train_one_epoch(cls, model, iterator, optimizers, schedulers, scaler, reporter,
                        summary_writer, options, distributed_option) -> bool:
        # The previous epoch's file exists now and may be deleted at the end of this epoch.
        if _is_writer(distributed_option):
            keep_epoch_checkpoints(Path(options.output_dir))
        return super().train_one_epoch(
            model=model,
            iterator=iterator,
            optimizers=optimizers,
            schedulers=schedulers,
            scaler=scaler,
            reporter=reporter,
            summary_writer=summary_writer,
            options=options,
            distributed_option=distributed_option,
        )


class CheckpointKeepingASRTask(ASRTask):
    """ESPnet's ASR task trained with :class:`CheckpointKeepingTrainer`."""

    trainer = CheckpointKeepingTrainer
