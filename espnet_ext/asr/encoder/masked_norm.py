"""Normalization layers for (batch, channels, time) tensors that ignore padded frames.

A padded batch holds utterances of different lengths; frames past an utterance's length are
filler. Batch and group normalization compute statistics over time, so filler frames would shift
the statistics of real ones and make an utterance's output depend on what it was batched with.
The layers here take an optional validity mask and compute statistics over valid frames only.

Mask convention (ESPnet's encoder masks): a bool tensor of shape (batch, 1, time), True where a
frame is valid. `None` means every frame is valid and the layers behave exactly as their torch
base classes.
"""

from typing import Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

CONV_NORM_TYPES: Tuple[str, ...] = ("batch_norm", "group_norm", "layer_norm")


class MaskAwareNorm:
    """Marker for norms whose `forward(x, mask)` accepts a validity mask."""


def _stats_dtype(x: torch.Tensor) -> torch.dtype:
    # Half-precision sums over thousands of frames lose digits or overflow; torch's own
    # batch/group norm kernels accumulate in float32 too.
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _valid_count(valid: torch.Tensor, shape: torch.Size, dims: Tuple[int, ...]) -> torch.Tensor:
    """Number of valid entries per slice reduced over `dims` (at least 1, as a float tensor)."""
    count = valid.sum(dim=dims, keepdim=True)
    for dim in dims:  # dimensions the mask broadcasts over count every entry
        if valid.size(dim) == 1:
            count = count * shape[dim]
    # An utterance without valid frames gets finite zeros rather than NaN.
    return count.clamp(min=1)


class _MaskedNormalization(torch.autograd.Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, mean/var over the valid entries.

    A hand-written backward: autograd through the dozen elementwise steps of the forward
    would launch about twice as many kernels and keep several intermediates alive; here only
    the normalized input is kept.

    Forward args:
        x: Values, any shape; entries outside `valid` must be finite (they are multiplied by 0).
        valid: Float 0/1 tensor broadcastable to `x`, 1 for entries that count.
        count: `_valid_count(valid, x.shape, dims)`.
        dims: Dimensions to reduce.
        eps: Added to the variance.
        weight, bias: Per-channel scale and shift broadcastable to `x`, or both None.

    Returns:
        (y, mean, var): `y` like `x`, equal to `bias` at invalid entries; the biased variance.
        mean and var are not differentiable (they feed running statistics only).
    """

    @staticmethod
    def forward(ctx, x, valid, count, dims, eps, weight, bias):
        mean = (x * valid).sum(dim=dims, keepdim=True) / count
        x_hat = (x - mean) * valid
        var = x_hat.square().sum(dim=dims, keepdim=True) / count
        inv_std = torch.rsqrt(var + eps)
        x_hat.mul_(inv_std)
        y = x_hat if weight is None else torch.addcmul(bias, x_hat, weight)
        ctx.dims = dims
        ctx.save_for_backward(x_hat, inv_std, valid, count, weight)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        x_hat, inv_std, valid, count, weight = ctx.saved_tensors
        dims = ctx.dims
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x_hat = grad_y if weight is None else grad_y * weight
            mean_grad = (grad_x_hat * valid).sum(dim=dims, keepdim=True) / count
            mean_grad_x_hat = (grad_x_hat * x_hat).sum(dim=dims, keepdim=True) / count
            grad_x = (grad_x_hat - mean_grad - x_hat * mean_grad_x_hat) * (inv_std * valid)
        if weight is not None and ctx.needs_input_grad[5]:
            grad_weight = (grad_y * x_hat).sum_to_size(weight.shape)
        if weight is not None and ctx.needs_input_grad[6]:
            grad_bias = grad_y.sum_to_size(weight.shape)
        return grad_x, None, None, None, None, grad_weight, grad_bias


def masked_normalize(
    x: torch.Tensor,
    valid: torch.Tensor,
    dims: Tuple[int, ...],
    eps: float,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalize `x` with mean and variance over `dims` of its valid entries, then scale/shift.

    Args:
        x: Values, any shape; entries outside `valid` must be finite.
        valid: Bool tensor broadcastable to `x`, True for entries that count.
        dims: Dimensions to reduce.
        eps: Added to the variance.
        weight: Per-channel scale broadcastable to `x`, or None (then bias must be None).
        bias: Per-channel shift broadcastable to `x`, or None.

    Returns:
        (y, mean, var, count): `y` like `x` (meaningless at invalid entries); the biased
        variance; `count` the number of valid entries per reduced slice (at least 1).
    """
    valid_float = valid.to(x.dtype)
    count = _valid_count(valid_float, x.shape, dims)
    y, mean, var = _MaskedNormalization.apply(x, valid_float, count, dims, eps, weight, bias)
    return y, mean, var, count


class MaskedBatchNorm1d(torch.nn.BatchNorm1d, MaskAwareNorm):
    """`torch.nn.BatchNorm1d` whose training-mode statistics use valid frames only.

    Parameters and buffers are those of `torch.nn.BatchNorm1d` (weight, bias, running_mean,
    running_var, num_batches_tracked), so its state dict is interchangeable with a plain
    BatchNorm1d. In eval mode (running statistics) padding cannot leak and the plain
    computation is used.

    Args:
        num_features (int): Number of channels C of the (batch, C, time) input.
        eps (float): Added to the variance for numerical stability.
        momentum (Optional[float]): Running-statistics update factor; None means a
            cumulative average, as in torch.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Normalize `x` (batch, C, time); `mask` (batch, 1, time) bool, True = valid frame."""
        uses_batch_stats = self.training or self.running_mean is None
        if mask is None or not uses_batch_stats:
            return super().forward(x)

        weight = self.weight[:, None] if self.affine else None
        bias = self.bias[:, None] if self.affine else None
        y, mean, var, count = masked_normalize(
            x.to(_stats_dtype(x)), mask, (0, 2), self.eps, weight, bias
        )
        if self.training and self.track_running_stats:
            self._update_running_stats(mean, var, count)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(
        self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor
    ) -> None:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        # Running variance is the unbiased estimate, as torch's BatchNorm keeps it.
        unbiased_var = var * count / (count - 1).clamp(min=1)
        self.running_mean.lerp_(mean.flatten().to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.flatten().to(self.running_var.dtype), factor)


class MaskedGroupNorm(torch.nn.GroupNorm, MaskAwareNorm):
    """`torch.nn.GroupNorm` over (batch, C, time) whose statistics use valid frames only.

    Each utterance is normalized with the mean and variance of its own valid frames within
    each channel group, so its output does not depend on the padding it was batched with.

    Args:
        num_groups (int): Number of channel groups; must divide `num_channels`.
        num_channels (int): Number of channels C of the (batch, C, time) input.
        eps (float): Added to the variance for numerical stability.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5):
        super().__init__(num_groups, num_channels, eps=eps)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Normalize `x` (batch, C, time); `mask` (batch, 1, time) bool, True = valid frame."""
        if mask is None:
            return super().forward(x)
        batch, channels, time = x.shape
        group_shape = (1, self.num_groups, channels // self.num_groups, 1)
        weight = self.weight.reshape(group_shape) if self.affine else None
        bias = self.bias.reshape(group_shape) if self.affine else None
        grouped = x.to(_stats_dtype(x)).reshape(batch, self.num_groups, -1, time)
        valid = mask.reshape(batch, 1, 1, time)
        y, _, _, _ = masked_normalize(grouped, valid, (2, 3), self.eps, weight, bias)
        return y.reshape(batch, channels, time).to(x.dtype)


class ChannelLayerNorm(torch.nn.LayerNorm):
    """`torch.nn.LayerNorm` over the channel axis of a (batch, C, time) tensor.

    Statistics are per frame, so padded frames cannot affect valid ones and no mask is needed.

    Args:
        num_channels (int): Number of channels C of the (batch, C, time) input.
        eps (float): Added to the variance for numerical stability.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize each frame of `x` (batch, C, time) over its C channels."""
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def check_conv_norm_options(norm_type: str, norm_groups: int, channels: int) -> None:
    """Raise ValueError, naming the option and what is allowed, for a bad norm configuration.

    Args:
        norm_type: One of CONV_NORM_TYPES.
        norm_groups: Number of groups for "group_norm"; a positive integer in any case.
        channels: Number of channels the norm will see (the encoder's output_size).
    """
    if norm_type not in CONV_NORM_TYPES:
        raise ValueError(
            f"conv_norm_type must be one of {', '.join(map(repr, CONV_NORM_TYPES))}, "
            f"got {norm_type!r}"
        )
    if norm_groups <= 0:
        raise ValueError(f"conv_norm_groups must be a positive integer, got {norm_groups}")
    if norm_type == "group_norm" and channels % norm_groups != 0:
        raise ValueError(
            f"conv_norm_groups={norm_groups} must divide the number of channels "
            f"(output_size={channels}); use a divisor of {channels}, e.g. 1"
        )


def build_conv_norm(norm_type: str, channels: int, norm_groups: int = 1) -> torch.nn.Module:
    """The normalization layer for a Conformer convolution module.

    Args:
        norm_type: "batch_norm", "group_norm" or "layer_norm".
        channels: Number of channels C of the (batch, C, time) input.
        norm_groups: Number of channel groups for "group_norm" (ignored otherwise).

    Returns:
        MaskedBatchNorm1d, MaskedGroupNorm or ChannelLayerNorm.
    """
    check_conv_norm_options(norm_type, norm_groups, channels)
    if norm_type == "batch_norm":
        return MaskedBatchNorm1d(channels)
    if norm_type == "group_norm":
        return MaskedGroupNorm(norm_groups, channels)
    return ChannelLayerNorm(channels)
