"""Conformer convolution module with a selectable norm that keeps padded frames out.

ESPnet's `ConvolutionModule` hard-codes `BatchNorm1d` and never sees the padding mask: the
depthwise convolution mixes filler frames into the last valid frames of each utterance, and
batch statistics count filler frames. This subclass fixes both when it is given the mask.
"""

from typing import Optional

import torch
from espnet.nets.pytorch_backend.conformer.convolution import ConvolutionModule

from espnet_ext.asr.encoder.masked_norm import MaskAwareNorm, build_conv_norm


class PaddingAwareConvolutionModule(ConvolutionModule):
    """ESPnet's Conformer convolution module with a choice of norm and padding masking.

    Layout (as ESPnet's): pointwise conv (C -> 2C) -> GLU -> depthwise conv (kernel over time)
    -> norm -> activation -> pointwise conv (C -> C). Parameter and buffer names are those of
    `ConvolutionModule`; with norm_type="batch_norm" its state dict is interchangeable with
    ESPnet's.

    The validity mask reaches this module through `padding_mask`, which the owning encoder layer
    sets for the duration of its forward (ESPnet's `EncoderLayer` calls `conv_module(x)` without
    the mask). With a mask, padded frames are zeroed before the depthwise convolution, as if each
    utterance ended with the convolution's own zero padding, and batch/group statistics count
    valid frames only.

    Args:
        channels (int): Number of channels C (the encoder's output_size).
        kernel_size (int): Depthwise convolution kernel size in frames (odd).
        activation (torch.nn.Module): Activation after the norm; ReLU when None.
        bias (bool): Whether the convolutions have a bias.
        norm_type (str): "batch_norm" (ESPnet's default), "group_norm" or "layer_norm".
        norm_groups (int): Number of channel groups for "group_norm"; must divide `channels`.
        padding_aware (bool): Use the mask (zero padded frames, masked statistics). False
            reproduces ESPnet's mask-blind computation, e.g. for measuring its cost.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        activation: Optional[torch.nn.Module] = None,
        bias: bool = True,
        norm_type: str = "batch_norm",
        norm_groups: int = 1,
        padding_aware: bool = True,
    ):
        super().__init__(
            channels,
            kernel_size,
            activation=torch.nn.ReLU() if activation is None else activation,
            bias=bias,
        )
        self.norm = build_conv_norm(norm_type, channels, norm_groups)
        self.norm_type = norm_type
        self.padding_aware = padding_aware
        # (batch, 1, time) bool, True = valid frame; set by the encoder layer around a call.
        self.padding_mask: Optional[torch.Tensor] = None

    @classmethod
    def from_convolution_module(
        cls,
        module: ConvolutionModule,
        norm_type: str = "batch_norm",
        norm_groups: int = 1,
        padding_aware: bool = True,
    ) -> "PaddingAwareConvolutionModule":
        """Take over the convolutions (and activation) of an existing ESPnet module.

        Draws no random numbers, so a model built with a fixed seed gets the same convolution
        weights, and everything built after it the same weights too, as with ESPnet's module.

        Args:
            module: An ESPnet `ConvolutionModule`; its convolutions are shared, not copied.
            norm_type: See the class Args.
            norm_groups: See the class Args.
            padding_aware: See the class Args.

        Returns:
            The new module (its norm freshly initialized: weight 1, bias 0, as ESPnet's).
        """
        depthwise = module.depthwise_conv
        with torch.random.fork_rng(devices=[]):
            new = cls(
                channels=depthwise.in_channels,
                kernel_size=depthwise.kernel_size[0],
                activation=module.activation,
                bias=depthwise.bias is not None,
                norm_type=norm_type,
                norm_groups=norm_groups,
                padding_aware=padding_aware,
            )
        new.pointwise_conv1 = module.pointwise_conv1
        new.depthwise_conv = module.depthwise_conv
        new.pointwise_conv2 = module.pointwise_conv2
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the module.

        Args:
            x: Input (batch, time, C).

        Returns:
            Output (batch, time, C). Values at padded frames are meaningless.
        """
        mask = self.padding_mask if self.padding_aware else None
        if mask is not None and mask.size(-1) != x.size(1):
            raise ValueError(
                f"padding_mask covers {mask.size(-1)} frames but the input has {x.size(1)}"
            )

        x = x.transpose(1, 2)  # (batch, C, time): convolutions run over time
        x = torch.nn.functional.glu(self.pointwise_conv1(x), dim=1)
        if mask is not None:
            x = x.masked_fill(~mask, 0.0)
        x = self.depthwise_conv(x)
        # A norm swapped in from outside (e.g. SyncBatchNorm conversion) takes no mask.
        if mask is not None and isinstance(self.norm, MaskAwareNorm):
            x = self.norm(x, mask)
        else:
            x = self.norm(x)
        x = self.pointwise_conv2(self.activation(x))
        return x.transpose(1, 2)
