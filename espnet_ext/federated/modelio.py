"""The pre-trained ESPnet model of a federated run: config, weights, data pipeline.

A federated run starts from a centrally trained experiment dir (``config.yaml`` plus a model
file). Paths inside ``config.yaml`` (sentencepiece model, global-MVN statistics) are relative to
the recipe directory the training ran in, and client processes (Ray workers) may run elsewhere,
so the run keeps its own copy of the config with those paths made absolute.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict, Tuple

import torch
import yaml

# Keys of an ESPnet ASR config that name files read when building the model or tokenizer.
_PATH_KEYS = (("bpemodel",), ("normalize_conf", "stats_file"), ("token_list",))


class ModelSetupError(ValueError):
    """The pre-trained model or its config cannot be used for a federated run."""


def resolve_train_config(exp_dir: Path, out_path: Path) -> Path:
    """Copy ``<exp_dir>/config.yaml`` to `out_path` with file paths made absolute.

    Relative paths are resolved from the current directory (the recipe directory), as ESPnet
    resolves them.

    Raises:
        ModelSetupError: No config, or a file it names does not exist.
    """
    src = Path(exp_dir) / "config.yaml"
    if not src.is_file():
        raise ModelSetupError(f"{src} not found: --exp_dir must be a trained ESPnet experiment dir")
    with open(src, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ModelSetupError(f"{src} is not a YAML mapping")
    for path in _PATH_KEYS:
        holder = config
        for key in path[:-1]:
            holder = holder.get(key) or {}
        value = holder.get(path[-1]) if isinstance(holder, dict) else None
        if not isinstance(value, str) or not value:
            continue
        resolved = Path(value).resolve()
        if not resolved.is_file():
            raise ModelSetupError(
                f"{src}: {'.'.join(path)} = {value!r} not found from {Path.cwd()}; paths in "
                "config.yaml are relative to the recipe directory the model was trained in: run "
                "from there"
            )
        holder[path[-1]] = str(resolved)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, allow_unicode=True, sort_keys=False)
    tmp.replace(out_path)
    return out_path


def read_config(config_path: Path) -> dict:
    with open(config_path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def build_asr_model(config_path: Path, device: str = "cpu") -> torch.nn.Module:
    """An ESPnet ASR model of a training config (initial weights; load weights after)."""
    import espnet_ext  # noqa: F401  (registers espnet_ext's encoders before ESPnet builds)
    from espnet2.tasks.asr import ASRTask

    model, _ = ASRTask.build_model_from_file(Path(config_path), None, device)
    return model


def load_weights(path: Path) -> Dict[str, torch.Tensor]:
    """A model file's state dict on the CPU.

    Raises:
        ModelSetupError: The file is missing.
    """
    from espnet_ext.layers.reset import load_state_dict_file

    path = Path(path)
    if not path.is_file():
        raise ModelSetupError(f"model file {path} not found")
    return load_state_dict_file(path)


def resolve_model_file(exp_dir: Path, model_file: str) -> Path:
    """`model_file` as given if it exists, else relative to `exp_dir`.

    Raises:
        ModelSetupError: Not found (lists the experiment's ``*.pth`` files).
    """
    for candidate in (Path(model_file), Path(exp_dir) / model_file):
        if candidate.is_file():
            return candidate.resolve()
    available = sorted(p.name for p in Path(exp_dir).glob("*.pth"))
    raise ModelSetupError(f"model file {model_file!r} not found in {exp_dir}; available: "
                          f"{', '.join(available) or 'none'}")


def build_data_pipeline(config_path: Path) -> Tuple[Callable, Callable]:
    """ESPnet's training preprocessor (tokenizer) and collate function of a config.

    Returns:
        (preprocess_fn(uid, {"speech": wav, "text": str}) -> {"speech", "text" ids},
         collate_fn([(uid, data), ...]) -> (uids, batch with *_lengths)).
    """
    import espnet_ext  # noqa: F401
    from espnet2.tasks.asr import ASRTask

    args = argparse.Namespace(**read_config(config_path))
    return ASRTask.build_preprocess_fn(args, train=True), ASRTask.build_collate_fn(args, train=True)
