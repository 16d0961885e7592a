"""Channels-last weights for a model's 2-D convolutions during CPU training.

An ESPnet Conformer's ``Conv2dSubsampling`` front runs two 3x3 convolutions over the whole
spectrogram; on CPU, oneDNN computes them (and, above all, their backward) faster when the weights
are channels-last (NHWC), and the reorders between layouts disappear: in the synth_en Conformer's
bf16 training step the second convolution's backward alone is ~7% of the step in the default
layout (``bench/bench_training.py --profile bf16``); channels-last makes the whole step ~0.9x
(``bench/bench_training.py --levers``). Only the memory layout changes, not the values, so the
model computes the same function (up to float rounding order).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List

import torch


def _conv2d_modules(model: torch.nn.Module) -> List[torch.nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


@contextlib.contextmanager
def channels_last_convs(model: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """While active, `model`'s ``Conv2d`` weights are channels-last; contiguous again on exit.

    The parameters stay the same ``Parameter`` objects (their data is re-laid out in place), so
    an optimizer built on them keeps working, and checkpoints written outside the context hold
    the usual contiguous tensors. A ``DistributedDataParallel`` wrapper is looked through, but
    espnet_ext's trainer does not use this under several processes (DDP lays out its gradient
    buckets for the parameters' layout when it wraps the model).
    """
    convs = _conv2d_modules(getattr(model, "module", model)) if enabled else []
    for conv in convs:
        conv.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for conv in convs:
            conv.to(memory_format=torch.contiguous_format)
