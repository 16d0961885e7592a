"""ESPnet ASR training that keeps the initial weights and every epoch's weights.

Layer-reset analysis needs theta_0 (the weights right before the first update) and theta_tau for
every epoch tau. ESPnet never writes the initial weights (they can be rebuilt from config.yaml:
:mod:`espnet_ext.experiment.experiment_dir`), and it deletes `{N}epoch.pth` files outside the n-best
(``--keep_nbest_models``). This module's trainer writes
`<output_dir>/checkpoints/0epoch.pth` (with its identity, seed and model-config hash, in
`checkpoints/0epoch.json`) before the first update and hard-links each
`{N}epoch.pth` into `checkpoints/` before ESPnet can delete it (a hard link costs no disk space).
It adds three options for CPU training (config keys of the same names), all ignored with
``--ngpu`` > 0: ``--cpu_autocast {none,bf16}``, the training forward under CPU mixed precision
(:mod:`espnet_ext.experiment.cpu_autocast`; on a GPU ESPnet's ``--use_amp`` applies);
``--cpu_dropout {torch,fast}``, dropout masks drawn from 16-bit random integers
(:mod:`espnet_ext.experiment.cpu_dropout`); ``--cpu_channels_last {false,true}``, channels-last
2-D convolution weights (:mod:`espnet_ext.experiment.cpu_layout`). Everything else is ESPnet's
own training loop, unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Optional

import torch
import yaml
from espnet2.tasks.asr import ASRTask
from espnet2.train.trainer import Trainer, TrainerOptions
from espnet2.utils.types import str2bool

from espnet_ext.experiment.checkpoints import (
    CHECKPOINT_DIR,
    EPOCH_FILE,
    checkpoint_path,
    identity_mismatch,
    init_identity,
    read_identity,
    write_identity,
)
from espnet_ext.experiment.cpu_autocast import CPU_AUTOCAST_DTYPES, autocast_dtype, cpu_autocast
from espnet_ext.experiment.cpu_dropout import CPU_DROPOUT_KINDS, cpu_fast_dropout
from espnet_ext.experiment.cpu_layout import channels_last_convs
from espnet_ext.utils.atomic import save_torch_atomic


def is_checkpoint_writer(distributed_option) -> bool:
    """Whether this process writes checkpoint 0 and the kept epochs: the only process of a
    single-process training, rank 0 of a distributed one (as ESPnet writes its own files).

    Every rank of a distributed training holds the same weights (same seed, and
    DistributedDataParallel broadcasts rank 0's weights and averages the gradients), so one
    writer is enough; several would race on the same files.
    """
    return not distributed_option.distributed or distributed_option.dist_rank == 0


class InitialWeightsMismatchError(ValueError):
    """A resumed training's kept checkpoint 0 belongs to another config or seed."""


def _same_state(a, b) -> bool:
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def save_initial_weights(model: torch.nn.Module, output_dir: Path, resuming: bool,
                         config: Optional[dict] = None) -> None:
    """Write checkpoint 0 (the model's weights before any update) and its identity, atomically.

    The model handed in is always the freshly built one (ESPnet loads ``checkpoint.pth`` later,
    inside ``Trainer.run``), i.e. the initial weights of the current config and seed.

    Args:
        model: the model exactly as it enters the training loop (initialized, pre-trained
            parts loaded, on its device).
        output_dir: the training output directory.
        resuming: True when ESPnet will resume from `checkpoint.pth`: the weights it resumes
            descend from the checkpoint 0 already kept, which is then never replaced.
        config: the run's training config (``config.yaml``); its seed and model entries are
            recorded in ``checkpoints/0epoch.json`` (see :func:`espnet_ext.experiment.checkpoints.init_identity`).

    A kept checkpoint 0 of another seed or model config (a killed attempt re-run with other
    options) is rewritten on a fresh start, since this tool wrote it; on a resume it is refused.

    Raises:
        InitialWeightsMismatchError: resuming, and the kept checkpoint 0 belongs to another
            seed or model config than this training's.
    """
    dst = checkpoint_path(output_dir, 0)
    identity = init_identity(config) if config is not None else None
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    if dst.exists():
        record = read_identity(dst)
        if record is not None and identity is not None:
            why = identity_mismatch(record, identity)
        else:
            # No sidecar (kept by an older version): compare the weights themselves.
            same = _same_state(torch.load(dst, map_location="cpu", weights_only=True), state)
            why = None if same else "its weights differ from this training's initial weights"
        if why is None:
            if record is None and identity is not None:
                write_identity(dst, identity, reconstructed=False)
            return
        if resuming:
            raise InitialWeightsMismatchError(
                f"{dst} belongs to another run than this training resumes ({why}): resume with "
                f"the config and seed that training started with, or train into a new --output_dir"
            )
        logging.warning(f"{dst} is from an earlier attempt with other options ({why}); "
                        "replacing it with this training's initial weights")
        # The earlier attempt's kept epochs (written here by keep_epoch_checkpoints) would pair
        # with the new checkpoint 0 as if they were one run's trajectory.
        for stale in sorted(dst.parent.iterdir()):
            m = EPOCH_FILE.match(stale.name)
            if m and int(m.group(1)) >= 1:
                logging.warning(f"removing {stale}: an epoch of that earlier attempt")
                stale.unlink()
    elif resuming:
        logging.warning(
            f"{dst} is missing but training resumes from {output_dir}/checkpoint.pth: the "
            "initial weights were not kept. Layer analysis reconstructs them from config.yaml "
            "(python -m espnet_ext.bin.reconstruct_init) where the config allows it."
        )
        return
    save_torch_atomic(state, dst)
    if identity is not None:
        write_identity(dst, identity, reconstructed=False)
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


@dataclasses.dataclass
class ExtTrainerOptions(TrainerOptions):
    """ESPnet's trainer options plus the CPU training options ``cpu_autocast`` (``none`` or
    ``bf16``), ``cpu_dropout`` (``torch`` or ``fast``) and ``cpu_channels_last``."""

    cpu_autocast: str = "none"
    cpu_dropout: str = "torch"
    cpu_channels_last: bool = False


class CheckpointKeepingTrainer(Trainer):
    """ESPnet's Trainer, plus checkpoint 0, a kept copy of every epoch's weights, and the CPU
    training options (autocast, dropout, channels-last convolutions)."""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("espnet_ext trainer")
        group.add_argument(
            "--cpu_autocast", default="none", choices=list(CPU_AUTOCAST_DTYPES),
            help="CPU mixed precision of the training forward (front end stays float32; "
                 "weights and optimizer stay float32); ignored with --ngpu > 0 (see --use_amp)")
        group.add_argument(
            "--cpu_dropout", default="torch", choices=list(CPU_DROPOUT_KINDS),
            help="dropout masks on CPU: torch's bernoulli, or 'fast' (16-bit random integers, "
                 "same keep probability to 1/32768, ~0.9x the step time); ignored with --ngpu > 0")
        group.add_argument(
            "--cpu_channels_last", type=str2bool, default=False,
            help="channels-last 2-D convolution weights while training on CPU (the conv2d "
                 "subsampling front, ~0.9x the step time); ignored with --ngpu > 0 or several "
                 "processes")

    @classmethod
    def build_options(cls, args: argparse.Namespace) -> ExtTrainerOptions:
        fields = {f.name for f in dataclasses.fields(ExtTrainerOptions)}
        return ExtTrainerOptions(**{k: v for k, v in vars(args).items() if k in fields})

    @classmethod
    def run(cls, model, optimizers, schedulers, train_iter_factory, valid_iter_factory,
            plot_attention_iter_factory, trainer_options, distributed_option) -> None:
        output_dir = Path(trainer_options.output_dir)
        if is_checkpoint_writer(distributed_option):
            resuming = bool(trainer_options.resume) and (output_dir / "checkpoint.pth").exists()
            # ESPnet wrote this training's config.yaml before it calls the trainer.
            with open(output_dir / "config.yaml", encoding="utf-8") as f:
                config = yaml.safe_load(f)
            save_initial_weights(model, output_dir, resuming, config)
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
        if is_checkpoint_writer(distributed_option):
            keep_epoch_checkpoints(output_dir)

    @classmethod
    def train_one_epoch(cls, model, iterator, optimizers, schedulers, scaler, reporter,
                        summary_writer, options, distributed_option) -> bool:
        # The previous epoch's file exists now and may be deleted at the end of this epoch.
        if is_checkpoint_writer(distributed_option):
            keep_epoch_checkpoints(Path(options.output_dir))
        dtype = autocast_dtype(getattr(options, "cpu_autocast", "none"))
        if dtype is not None and options.ngpu > 0:
            logging.warning("--cpu_autocast applies to CPU training only; ignored with --ngpu > 0")
            dtype = None
        fast_dropout = getattr(options, "cpu_dropout", "torch") == "fast"
        if fast_dropout and options.ngpu > 0:
            logging.warning("--cpu_dropout applies to CPU training only; ignored with --ngpu > 0")
            fast_dropout = False
        channels_last = bool(getattr(options, "cpu_channels_last", False))
        if channels_last and (options.ngpu > 0 or distributed_option.distributed):
            # DDP's gradient buckets are laid out for the parameters' layout at wrap time.
            logging.warning("--cpu_channels_last applies to single-process CPU training only; ignored")
            channels_last = False
        with cpu_autocast(model, dtype), cpu_fast_dropout(model, fast_dropout), \
                channels_last_convs(model, channels_last):
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
