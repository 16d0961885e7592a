"""Where a training run keeps its weights: `<exp_dir>/checkpoints/{0,1,...,T}epoch.pth`.

0 is the initial weights (saved before the first update), N the weights after N epochs. Written by
`espnet_ext.training` (stage 4); read by the layer-reset scan and the weight-update analysis. Kept
free of ESPnet imports so that read-only tools start fast.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Union

CHECKPOINT_DIR = "checkpoints"
EPOCH_FILE = re.compile(r"^(\d+)epoch\.pth$")


def checkpoint_path(exp_dir: Union[str, Path], epoch: int) -> Path:
    """Path of the weights after `epoch` epochs (0 = initial weights) of a training run."""
    return Path(exp_dir) / CHECKPOINT_DIR / f"{epoch}epoch.pth"


def saved_epochs(exp_dir: Union[str, Path]) -> List[int]:
    """Sorted epochs (0 = initial weights) whose weights are kept under `exp_dir/checkpoints`."""
    d = Path(exp_dir) / CHECKPOINT_DIR
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for p in d.iterdir() if (m := EPOCH_FILE.match(p.name)))
