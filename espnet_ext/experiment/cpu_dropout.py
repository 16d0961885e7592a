"""Dropout with a cheaper random mask for CPU training.

On CPU, ``torch.nn.functional.dropout`` draws its mask with ``bernoulli_``, which costs ~15x a
multiply per element: in the synth_en Conformer's training step (4x96, batch 33, bf16 autocast,
one thread) it is the single largest operator, 14-16% of the step (``bench/bench_training.py
--profile``). Drawing 16-bit random integers and comparing them with a threshold gives the same
Bernoulli mask for a fraction of the cost (``bench/bench_training.py --levers``).

The mask keeps an element with probability ``1 - t / 32768``, ``t = round(p * 32768)`` (p = 0.1:
drop probability 0.100006), and kept elements are scaled by the exact inverse of that
probability, so the output is unbiased as with ``torch.nn.Dropout``. Draws come from torch's
global generator (seeded by ESPnet's ``--seed``), so a training is reproducible; its random stream
differs from torch's dropout, so a run with and without it are different draws of the same
training, not the same numbers.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List

import torch

#: ``--cpu_dropout`` choices: torch's own dropout, or the 16-bit mask of this module.
CPU_DROPOUT_KINDS = ("torch", "fast")

# Values of a 16-bit integer tensor's random_(): uniform on [0, 2**15 - 1].
_LEVELS = 2 ** 15


def drop_threshold(p: float) -> int:
    """Integer threshold t: an element is dropped when its draw in [0, 32767] is below t."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    return round(p * _LEVELS)


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout of `x` with drop probability `p` (quantized to 1/32768) on a 16-bit mask.

    Identity when not `training` or when `p` rounds to 0; all zeros when `p` rounds to 1.
    Differentiable: the gradient is the mask times the scale, as with ``torch.nn.Dropout``.
    """
    t = drop_threshold(p)
    if not training or t == 0:
        return x
    if t >= _LEVELS:
        return x * 0.0
    keep = torch.empty(x.shape, dtype=torch.int16, device=x.device).random_().ge_(t)
    return x * keep.to(x.dtype).mul_(_LEVELS / (_LEVELS - t))


def _dropout_modules(model: torch.nn.Module) -> List[torch.nn.Dropout]:
    """Every ``torch.nn.Dropout`` of `model` (ESPnet's Conformer: 26 at 4 encoder, 2 decoder blocks)."""
    return [m for m in model.modules() if type(m) is torch.nn.Dropout]


@contextlib.contextmanager
def cpu_fast_dropout(model: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """While active, `model`'s ``torch.nn.Dropout`` modules draw their masks with :func:`fast_dropout`.

    The replacement forward is an instance attribute, restored on exit: module classes, other
    models and ``state_dict`` keys are untouched (dropout holds no state). A
    ``DistributedDataParallel`` wrapper is looked through. Other dropout classes (e.g.
    ``Dropout2d``) keep their own forward.
    """
    if not enabled:
        yield
        return
    replaced = _dropout_modules(getattr(model, "module", model))
    for module in replaced:
        module.forward = _forward_of(module)
    try:
        yield
    finally:
        for module in replaced:
            module.__dict__.pop("forward", None)


def _forward_of(module: torch.nn.Dropout):
    def forward(x: torch.Tensor) -> torch.Tensor:
        if module.inplace or x.device.type != "cpu":
            return torch.nn.functional.dropout(x, module.p, module.training, module.inplace)
        return fast_dropout(x, module.p, module.training)
    return forward
