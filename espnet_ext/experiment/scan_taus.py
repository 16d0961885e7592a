"""Which checkpoints a layer-reset scan asks for, checked against what training will save.

Stage 6 re-initializes layers to the weights of checkpoint tau; training (stage 4) saves epochs
0..max_epoch. A tau above max_epoch would make stage 6 fail only after hours of training, so the
stage driver checks the requested taus against every training config before stage 4 starts.

Kept free of ESPnet imports so that the check starts fast.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import yaml

# ESPnet's default of --max_epoch (espnet2.tasks.abs_task), used when a config does not set it.
ESPNET_DEFAULT_MAX_EPOCH = 40


class ScanTausError(ValueError):
    """The requested scan taus cannot all exist after training (or are malformed)."""


def parse_taus(spec: str) -> List[Union[int, str]]:
    """A scan's ``--taus`` spec (comma-separated epochs, ``last``, ``all``) as a list.

    Raises:
        ScanTausError: An entry that is neither a non-negative integer, ``last`` nor ``all``.
    """
    out: List[Union[int, str]] = []
    for item in (t.strip() for t in str(spec).split(",")):
        if not item:
            continue
        if item in ("last", "all"):
            out.append(item)
            continue
        try:
            tau = int(item)
        except ValueError:
            tau = -1
        if tau < 0:
            raise ScanTausError(
                f"--scan_taus {spec}: {item!r} is not an epoch number (0, 1, ...), 'last' or 'all'"
            )
        out.append(tau)
    if not out:
        raise ScanTausError("--scan_taus is empty: give epochs (e.g. 0,1,last) or 'all'")
    return out


def _max_epoch_in_args(args: str) -> Optional[int]:
    """The last ``--max_epoch N`` (or ``--max_epoch=N``) of extra training arguments, if any."""
    words = shlex.split(args or "")
    value = None
    for i, w in enumerate(words):
        if w == "--max_epoch" and i + 1 < len(words):
            value = words[i + 1]
        elif w.startswith("--max_epoch="):
            value = w.split("=", 1)[1]
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ScanTausError(f"--asr_args: --max_epoch {value!r} is not an integer") from None


def training_epochs(config: Path, train_args: str = "") -> Tuple[int, str]:
    """How many epochs a training run will save, and where that number comes from:
    ``--max_epoch`` of the extra training arguments, else the config's ``max_epoch``, else
    ESPnet's default.

    Raises:
        ScanTausError: The config cannot be read, or max_epoch is not an integer.
    """
    from_args = _max_epoch_in_args(train_args)
    if from_args is not None:
        return from_args, f"--max_epoch {from_args} in --asr_args"
    try:
        with open(config, encoding="utf-8") as f:
            conf = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ScanTausError(f"{config}: cannot read the training config: {e}") from None
    if not isinstance(conf, dict):
        raise ScanTausError(f"{config} is not a YAML mapping (an ESPnet training config)")
    if "max_epoch" not in conf:
        return ESPNET_DEFAULT_MAX_EPOCH, f"ESPnet's default max_epoch {ESPNET_DEFAULT_MAX_EPOCH}"
    value = conf["max_epoch"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScanTausError(f"{config}: max_epoch = {value!r} is not an integer")
    return value, f"max_epoch: {value} in the config"


def check_scan_taus(spec: str, configs: Sequence[Path], train_args: str = "") -> Dict[str, int]:
    """Stop before training when a requested scan tau will not be saved by every run.

    Args:
        spec: The scan's taus (``--scan_taus``: comma-separated epochs, ``last``, ``all``).
        configs: The training configs (``--asr_configs``).
        train_args: Extra training arguments (``--asr_args``); a ``--max_epoch`` there wins.

    Returns:
        Config path -> epochs it will train.

    Raises:
        ScanTausError: A tau above some config's max_epoch: names the taus, the config, its
            epochs and the option to change.
    """
    taus = parse_taus(spec)
    numbers = sorted({t for t in taus if isinstance(t, int)})
    epochs = {}
    for config in configs:
        n, source = training_epochs(Path(config), train_args)
        epochs[str(config)] = n
        missing = [t for t in numbers if t > n]
        if missing:
            kept = ",".join([str(t) for t in numbers if t <= n] + ["last"])
            raise ScanTausError(
                f"--scan_taus {spec} asks for epoch {', '.join(map(str, missing))}, but {config} "
                f"trains {n} epochs ({source}), so stage 6 would fail after training: change "
                f"--scan_taus (e.g. {kept}, or all), or raise max_epoch"
            )
    return epochs
