"""The pre-trained ESPnet model of a federated run: config, weights, data pipeline.

A federated run starts from a centrally trained experiment dir (read through
:class:`espnet_ext.experiment.experiment_dir.ExperimentDir`, like every other tool here). Paths inside
``config.yaml`` (sentencepiece model, global-MVN statistics) are relative to the recipe directory
the training ran in, and client processes (Ray workers) may run elsewhere, so the run keeps its
own copy of the config with those paths made absolute.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict, Tuple

import torch

from espnet_ext.experiment.experiment_dir import (
    ExperimentDir,
    ExperimentError,
    load_weights_file,
    read_config_file,
)

#: The pre-trained model or its config cannot be used for a federated run. The one error type of
#: experiment dirs: catching either name catches both.
ModelSetupError = ExperimentError


def resolve_train_config(exp_dir: Path, out_path: Path) -> Path:
    """Copy ``<exp_dir>/config.yaml`` to `out_path` with file paths made absolute.

    See :meth:`ExperimentDir.write_resolved_config`.

    Raises:
        ModelSetupError: No config, or a file it names does not exist.
    """
    return ExperimentDir(exp_dir).write_resolved_config(out_path)


def read_config(config_path: Path) -> dict:
    """The run's copy of the training config (:func:`resolve_train_config`) as a dict.

    Raises:
        ModelSetupError: Not a YAML mapping.
    """
    return read_config_file(config_path)


def build_asr_model(config_path: Path, device: str = "cpu") -> torch.nn.Module:
    """An ESPnet ASR model of a training config (initial weights; load weights after)."""
    from espnet2.tasks.asr import ASRTask

    from espnet_ext.asr.registration import register_encoders

    register_encoders()  # before ESPnet builds a config naming espnet_ext's encoders
    model, _ = ASRTask.build_model_from_file(Path(config_path), None, device)
    return model


def load_weights(path: Path) -> Dict[str, torch.Tensor]:
    """A model file's state dict on the CPU, weights only.

    Raises:
        ModelSetupError: The file is missing or holds more than weights.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelSetupError(f"model file {path} not found")
    return load_weights_file(path)


def resolve_model_file(exp_dir: Path, model_file: str) -> Path:
    """`model_file` as given if it exists, else relative to `exp_dir` (absolute path).

    Raises:
        ModelSetupError: Not found (lists the experiment's model files).
    """
    return ExperimentDir(exp_dir).resolve_model_file(model_file).resolve()


def build_data_pipeline(config_path: Path) -> Tuple[Callable, Callable]:
    """ESPnet's training preprocessor (tokenizer) and collate function of a config.

    Returns:
        (preprocess_fn(uid, {"speech": wav, "text": str}) -> {"speech", "text" ids},
         collate_fn([(uid, data), ...]) -> (uids, batch with *_lengths)).
    """
    from espnet2.tasks.asr import ASRTask

    from espnet_ext.asr.registration import register_encoders

    register_encoders()  # as for every ESPnet call on this config

    args = argparse.Namespace(**read_config(config_path))
    return ASRTask.build_preprocess_fn(args, train=True), ASRTask.build_collate_fn(args, train=True)
