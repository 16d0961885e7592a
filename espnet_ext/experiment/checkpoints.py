"""Where a training run keeps its weights, and which run checkpoint 0 belongs to.

Weights of epoch N (N >= 1) are found in two places: ``<exp_dir>/checkpoints/{N}epoch.pth``
(written by ``espnet_ext.experiment.training``, which keeps every epoch) and ESPnet's own
``<exp_dir>/{N}epoch.pth`` (the n-best epochs ESPnet keeps; ``--keep_nbest_models`` decides how
many). Epoch 0, the initial weights, is ``checkpoints/0epoch.pth`` when the training saved it, or
``checkpoints/0epoch.reconstructed.pth`` when it was rebuilt from ``config.yaml`` afterwards
(see :mod:`espnet_ext.experiment.experiment_dir`).

Checkpoint 0 carries the identity of the run it belongs to in a sidecar JSON
(``0epoch.json`` / ``0epoch.reconstructed.json``): the training seed and a SHA-256 of the
config entries that decide the initial weights (:data:`INIT_CONFIG_KEYS`). A checkpoint 0 whose
identity differs from the run's ``config.yaml`` is from another attempt (e.g. a killed training
re-run with another seed) and must not be used.

Also the one reader of weight files (:func:`load_state_dict_file`). Kept free of ESPnet
imports, and of torch until weights are read, so that read-only tools start fast.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Union

from espnet_ext.utils.atomic import write_json_atomic

if TYPE_CHECKING:
    import torch

CHECKPOINT_DIR = "checkpoints"
EPOCH_FILE = re.compile(r"^(\d+)epoch\.pth$")
RECONSTRUCTED_INIT = "0epoch.reconstructed.pth"

#: Entries of an ESPnet ASR config that ``ASRTask.build_model``, ESPnet's dtype cast, adapters and
#: ``--init_param`` read: together with ``seed`` they decide the initial weights.
INIT_CONFIG_KEYS = (
    "token_list", "input_size", "init", "init_param", "ignore_init_mismatch", "train_dtype",
    "model", "model_conf", "frontend", "frontend_conf", "specaug", "specaug_conf", "normalize",
    "normalize_conf", "preencoder", "preencoder_conf", "encoder", "encoder_conf", "postencoder",
    "postencoder_conf", "decoder", "decoder_conf", "ctc_conf", "joint_net_conf", "aux_ctc",
    "use_adapter", "adapter", "adapter_conf", "use_lora", "lora_conf",
)


def checkpoint_path(exp_dir: Union[str, Path], epoch: int) -> Path:
    """Where espnet_ext keeps the weights after `epoch` epochs (0 = initial weights)."""
    return Path(exp_dir) / CHECKPOINT_DIR / f"{epoch}epoch.pth"


def reconstructed_init_path(exp_dir: Union[str, Path]) -> Path:
    """Where a checkpoint 0 rebuilt from ``config.yaml`` is stored (never a saved one's name)."""
    return Path(exp_dir) / CHECKPOINT_DIR / RECONSTRUCTED_INIT


def identity_path(weights_file: Union[str, Path]) -> Path:
    """The sidecar JSON of a checkpoint 0 file (``0epoch.pth`` -> ``0epoch.json``)."""
    p = Path(weights_file)
    return p.with_name(p.name[: -len(".pth")] + ".json" if p.name.endswith(".pth") else p.name + ".json")


def epoch_file(exp_dir: Union[str, Path], epoch: int) -> Optional[Path]:
    """The saved weights of `epoch` (``checkpoints/`` first, then ESPnet's own file), or None.

    Checkpoint 0 is only ever ``checkpoints/0epoch.pth``: ESPnet never writes a ``0epoch.pth``.
    """
    kept = checkpoint_path(exp_dir, epoch)
    if kept.is_file():
        return kept
    if epoch > 0:
        own = Path(exp_dir) / f"{epoch}epoch.pth"
        if own.is_file():
            return own
    return None


def saved_epochs(exp_dir: Union[str, Path]) -> List[int]:
    """Sorted epochs (0 = initial weights) whose weights were saved by the training.

    Both ``checkpoints/{N}epoch.pth`` and ESPnet's ``{N}epoch.pth`` next to it count; a
    reconstructed checkpoint 0 does not (see :func:`reconstructed_init_path`).
    """
    exp_dir = Path(exp_dir)
    found = set()
    d = exp_dir / CHECKPOINT_DIR
    if d.is_dir():
        found.update(int(m.group(1)) for p in d.iterdir() if (m := EPOCH_FILE.match(p.name)) and p.is_file())
    if exp_dir.is_dir():
        found.update(int(m.group(1)) for p in exp_dir.iterdir()
                     if (m := EPOCH_FILE.match(p.name)) and int(m.group(1)) > 0 and p.is_file())
    return sorted(found)


def init_identity(config: dict) -> dict:
    """The identity of a run's initial weights: its seed and a hash of what builds the model.

    Args:
        config: The run's training config (``config.yaml`` contents, or ``vars(args)``).

    Returns:
        ``{"seed": int or None, "config_sha256": hex}``; the hash covers the
        :data:`INIT_CONFIG_KEYS` entries (absent ones as null; file names without their
        directories), so options that do not change the initial weights (epochs, batch size,
        optimizer, data paths) and moving the files do not change it.
    """
    relevant = {k: config.get(k) for k in INIT_CONFIG_KEYS}
    # Where files lie is no part of the identity (a packed or moved run names them elsewhere);
    # their contents reach the initial weights and are checked with them.
    if isinstance(relevant.get("normalize_conf"), dict):
        relevant["normalize_conf"] = {k: (Path(str(v)).name if k == "stats_file" else v)
                                      for k, v in relevant["normalize_conf"].items()}
    if isinstance(relevant.get("init_param"), list):
        relevant["init_param"] = [_without_dirs(str(p)) for p in relevant["init_param"]]
    blob = json.dumps(relevant, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8")
    seed = config.get("seed")
    return {"seed": int(seed) if seed is not None else None,
            "config_sha256": hashlib.sha256(blob).hexdigest()}


def init_param_path(init_param: str) -> str:
    """The file of an ESPnet ``--init_param`` spec (``<file>:<src_key>:<dst_key>:<exclude>``)."""
    # ESPnet's load_pretrained_model splits the same way.
    return init_param.split(":", 4)[0]


def _without_dirs(init_param: str) -> str:
    path = init_param_path(init_param)
    return Path(path).name + init_param[len(path):]


def read_identity(weights_file: Union[str, Path]) -> Optional[dict]:
    """The sidecar record of a checkpoint 0 file, or None when it has none (older trainings)."""
    path = identity_path(weights_file)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def identity_mismatch(record: Optional[dict], expected: dict) -> Optional[str]:
    """Why a sidecar record does not belong to the run of `expected`, or None if it does.

    A missing record (checkpoint 0 of a training older than the sidecar) is not a mismatch.
    """
    if record is None:
        return None
    differ = []
    if record.get("seed") != expected["seed"]:
        differ.append(f"seed {record.get('seed')} there, {expected['seed']} in config.yaml")
    if record.get("config_sha256") != expected["config_sha256"]:
        differ.append(f"model config hash {str(record.get('config_sha256'))[:12]} there, "
                      f"{expected['config_sha256'][:12]} in config.yaml")
    return "; ".join(differ) or None


def write_identity(weights_file: Union[str, Path], identity: dict, reconstructed: bool,
                   **extra) -> Path:
    """Write the sidecar record of a checkpoint 0 file (atomically) with versions and `extra`."""
    import platform

    record = {"reconstructed": bool(reconstructed), **identity, "versions": _versions(),
              "python": platform.python_version(), **extra}
    path = identity_path(weights_file)
    write_json_atomic(path, record, indent=2, sort_keys=True)
    return path


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("torch", "espnet", "espnet_ext"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _resume_file_globals():
    """Types ESPnet's ``checkpoint.pth`` pickles besides tensors (its reporter's statistics)."""
    import datetime

    import numpy as np

    types = [np.dtype, datetime.timedelta]
    core = getattr(np, "_core", None) or getattr(np, "core")
    types.append(core.multiarray.scalar)
    # numpy >= 1.25 pickles dtypes by their classes (numpy.dtypes.Float64DType, ...).
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        types += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return types


def load_state_dict_file(path: Union[str, Path], what: str = "model file") -> Dict[str, "torch.Tensor"]:
    """Load a state dict written by ESPnet (``*.pth``) onto the CPU, as weights only.

    Nothing is unpickled beyond tensors and plain containers (``torch.load(weights_only=True)``).
    ESPnet's resume file ``checkpoint.pth`` (model, optimizer and scheduler states, reporter
    statistics) is read the same way, with NumPy scalars/dtypes and ``timedelta`` allowed for
    its statistics, and its ``"model"`` entry returned.

    Args:
        path: The file.
        what: How to name it in errors (``model file``, ``init_param file``...).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file holds no state dict, or objects other than weights (names them).
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        allowed = {f"{t.__module__}.{t.__qualname__}" for t in _resume_file_globals()}
        if not unsafe or not unsafe <= allowed:
            raise ValueError(
                f"{path} ({what}) holds pickled objects other than weights "
                f"({', '.join(sorted(unsafe - allowed)) or 'unknown'}); espnet_ext loads weights "
                "only: save the model's state dict alone (torch.save(model.state_dict(), path)) "
                "and pass that file") from None
        with torch.serialization.safe_globals(_resume_file_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"{path} ({what}) is not a readable torch file: {e}") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # ESPnet's checkpoint.pth (model + optimizer states)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} ({what}) does not hold a model state dict")
    return obj
