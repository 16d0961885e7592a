"""CPU mixed precision for ESPnet training: the model's forward under ``torch.autocast("cpu")``.

ESPnet's ``--use_amp`` autocasts on CUDA only. On a CPU with bfloat16 instructions (AVX512-BF16,
AMX) the matrix products of a Conformer's forward and backward run faster in bfloat16; measured
by ``bench/bench_training.py``. As ESPnet's AMP does on CUDA (``autocast_frontend=False``), the
front end (STFT, mel filterbank) and feature normalization stay in float32: only the encoder,
decoder and losses are autocast. Parameters, optimizer state and saved weights stay float32;
backward runs outside the autocast region, in the dtypes the forward chose.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, Optional

import torch

#: ``--cpu_autocast`` choices -> autocast dtype (None: no autocast, plain float32).
CPU_AUTOCAST_DTYPES: Dict[str, Optional[torch.dtype]] = {"none": None, "bf16": torch.bfloat16}

# Sub-modules of an ESPnet ASR model that run in float32 even under autocast (feature extraction).
FLOAT32_SUBMODULES = ("frontend", "normalize")


def autocast_dtype(name: str) -> Optional[torch.dtype]:
    """The dtype of a ``--cpu_autocast`` choice (None for ``none``).

    Raises:
        ValueError: `name` is not one of :data:`CPU_AUTOCAST_DTYPES`.
    """
    try:
        return CPU_AUTOCAST_DTYPES[name]
    except KeyError:
        raise ValueError(f"cpu_autocast must be one of {', '.join(CPU_AUTOCAST_DTYPES)}, "
                         f"got {name!r}") from None


def _wrap_forward(module: torch.nn.Module, context: Callable[[], contextlib.AbstractContextManager]
                  ) -> Callable[[], None]:
    """Run `module`'s forward inside ``context()``; returns the function that undoes it.

    The wrapper is an instance attribute, so the class (and every other instance) is untouched
    and ``state_dict`` keys do not change.
    """
    original = module.forward

    def forward(*args, **kwargs):
        with context():
            return original(*args, **kwargs)

    module.forward = forward
    return lambda: module.__dict__.pop("forward", None)


@contextlib.contextmanager
def cpu_autocast(model: torch.nn.Module, dtype: Optional[torch.dtype]) -> Iterator[None]:
    """While active, `model`'s forward runs under CPU autocast to `dtype` (None: unchanged).

    Args:
        model: the model the training loop calls (an ESPnet ``ESPnetASRModel``, or a
            ``DistributedDataParallel`` wrapping one); its ``frontend`` and ``normalize``
            sub-modules, where present, keep float32.
        dtype: the lower-precision dtype (``torch.bfloat16``), or None for no autocast.
    """
    if dtype is None:
        yield
        return
    inner = getattr(model, "module", model)
    undo = [_wrap_forward(model, lambda: torch.autocast("cpu", dtype=dtype))]
    for name in FLOAT32_SUBMODULES:
        sub = getattr(inner, name, None)
        if isinstance(sub, torch.nn.Module):
            undo.append(_wrap_forward(sub, lambda: torch.autocast("cpu", enabled=False)))
    try:
        yield
    finally:
        for restore in reversed(undo):
            restore()
