"""Exact frame masks after ESPnet's convolutional subsampling.

ESPnet's Conv2dSubsampling* layers subsample the mask by slicing (e.g. `mask[:, :, :-2:2]` per
stride-2 convolution). For a padded utterance the slice keeps about one frame per stage more than
the convolutions produce from its own frames: an utterance of 30 frames alone gives 6 frames
after 4x subsampling, but inside a batch padded to 37 frames its mask says 8. The extra frames
are computed from padding, and attention, the convolution module and the output lengths treat
them as speech. Here the mask is rebuilt from each utterance's true output length.

:func:`masked_subsampling_classes` names the subsampling layers this concerns.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Tuple

import torch

# ESPnet's convolutional input layers that take and return the padding mask (those the
# encoders' forward passes the mask to); any other input layer is called on the features alone.
MASKED_SUBSAMPLING_NAMES = (
    "Conv2dSubsampling", "Conv1dSubsampling1", "Conv1dSubsampling2", "Conv1dSubsampling3",
    "Conv2dSubsampling1", "Conv2dSubsampling2", "Conv2dSubsampling6", "Conv2dSubsampling8",
)


def masked_subsampling_classes() -> Tuple[type, ...]:
    """ESPnet's classes of :data:`MASKED_SUBSAMPLING_NAMES` that this ESPnet version has.

    For ``isinstance`` checks; ESPnet is imported on the first call, not with this module.
    """
    from espnet.nets.pytorch_backend.transformer import subsampling

    return tuple(getattr(subsampling, n) for n in MASKED_SUBSAMPLING_NAMES if hasattr(subsampling, n))


def subsampled_lengths(convs: Iterable[torch.nn.Module], lengths: torch.Tensor) -> torch.Tensor:
    """Number of output frames the time convolutions in `convs` produce from `lengths` frames.

    Args:
        convs: Modules applied in order; Conv1d/Conv2d layers count (their first kernel axis is
            time, as in ESPnet's subsampling), anything else is ignored.
        lengths: Input lengths in frames, integer tensor of any shape.

    Returns:
        Output lengths in frames (same shape; 0 for inputs too short to produce a frame).
    """
    for conv in convs:
        if not isinstance(conv, (torch.nn.Conv1d, torch.nn.Conv2d)):
            continue
        if not isinstance(conv.padding, tuple):
            raise ValueError(f"cannot compute output lengths for padding={conv.padding!r}")
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        padding, dilation = conv.padding[0], conv.dilation[0]
        span = dilation * (kernel - 1) + 1
        lengths = (
            torch.div(lengths + 2 * padding - span, stride, rounding_mode="floor") + 1
        ).clamp(min=0)
    return lengths


def recompute_subsampling_mask(
    module: torch.nn.Module,
    args: Tuple[Any, ...],
    kwargs: Dict[str, Any],
    output: Tuple[Any, Any],
) -> Tuple[Any, Any]:
    """Forward hook for ESPnet's Conv2dSubsampling*: replace its sliced mask by the exact one.

    Register with `module.register_forward_hook(recompute_subsampling_mask, with_kwargs=True)`.
    The module is called as `module(x, x_mask)` with x_mask (batch, 1, time) bool, True = valid,
    valid frames first; it returns (x_or_(x, pos_emb), mask).

    Returns:
        The module's output with the mask replaced by (batch, 1, time') bool, True for the first
        `subsampled_lengths(module.conv, length)` frames of each utterance.
    """
    x, mask = output
    in_mask = kwargs.get("x_mask", args[1] if len(args) > 1 else None)
    if mask is None or in_mask is None:
        return output
    in_lengths = in_mask.sum(dim=-1)  # (batch, 1)
    out_lengths = subsampled_lengths(module.conv, in_lengths)
    out_time = (x[0] if isinstance(x, tuple) else x).size(1)
    frame_index = torch.arange(out_time, device=in_mask.device)
    return x, frame_index[None, None, :] < out_lengths[:, :, None]
