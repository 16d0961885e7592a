"""ESPnet's Conformer encoder with a selectable convolution-module norm, padding-aware.

Registered in ESPnet as `encoder: norm_conformer` (see espnet_ext.asr.registration). Example config:

    encoder: norm_conformer
    encoder_conf:
        output_size: 144
        num_blocks: 16
        conv_norm_type: group_norm   # batch_norm | group_norm | layer_norm
        conv_norm_groups: 1
"""

from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from typeguard import typechecked

from espnet_ext.asr.encoder.masked_norm import check_conv_norm_options
from espnet_ext.asr.encoder.padding_aware_convolution import PaddingAwareConvolutionModule
from espnet_ext.asr.encoder.subsampling_mask import masked_subsampling_classes, recompute_subsampling_mask


def _share_mask_with_conv_module(
    layer: torch.nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> None:
    """Forward pre-hook of an EncoderLayer: hand its mask to its convolution module.

    ESPnet's `EncoderLayer.forward(x_input, mask, cache=None)` calls `conv_module(x)` without
    the mask. The hook uses its `layer` argument (not a captured module) so that replicas made
    by DataParallel each set their own conv module's mask.
    """
    layer.conv_module.padding_mask = kwargs.get("mask", args[1] if len(args) > 1 else None)


def _forget_conv_module_mask(layer: torch.nn.Module, args: Tuple[Any, ...], output: Any) -> None:
    """Forward hook of an EncoderLayer: drop the mask so that it cannot outlive the call."""
    layer.conv_module.padding_mask = None


class NormConformerEncoder(ConformerEncoder):
    """Conformer encoder (ESPnet's) with a selectable, padding-aware conv-module norm.

    All of ESPnet's ConformerEncoder options are accepted with the same meaning and defaults
    (see `espnet2.asr.encoder.conformer_encoder.ConformerEncoder`); the options below are new.
    With conv_norm_type="batch_norm" the parameters and buffers have ESPnet's names, so an
    ESPnet ConformerEncoder state dict loads with strict=True; on unpadded input the outputs
    are ESPnet's, and with conv_padding_aware=False and exact_subsampling_mask=False they are
    ESPnet's on padded input too. A fixed seed gives the same initial weights as ESPnet's
    encoder (the norms start at weight 1, bias 0).

    Padding awareness: in a padded batch, each utterance's output over its valid frames equals
    its output when encoded alone (eval mode for every norm; also train mode for group_norm and
    layer_norm, whose statistics are per utterance). Batch norm in train mode takes its
    statistics over the valid frames of the whole batch. This needs rel_pos_type="latest" (as
    ESPnet's Conformer recipes use) or absolute positions: the deprecated legacy relative
    attention, ESPnet's default, shifts its scores by an amount that depends on the padded
    length, so there a padded utterance's output still differs from its output alone.

    Args:
        input_size (int): Input feature dimension (e.g. 80 log-mel bins).
        output_size (int): Model dimension = conv-module channels.
        conv_norm_type (str): Norm after the depthwise convolution: "batch_norm" (ESPnet's),
            "group_norm" (per-utterance statistics over valid frames and each channel group)
            or "layer_norm" (per-frame statistics over channels).
        conv_norm_groups (int): Number of channel groups for "group_norm"; must be positive
            and divide output_size. 1 normalizes over all channels and frames of an
            utterance (torchaudio's `use_group_norm`).
        conv_padding_aware (bool): Zero padded frames before the depthwise convolution and
            keep them out of batch/group statistics. False reproduces ESPnet's computation.
        exact_subsampling_mask (bool): Rebuild the mask after convolutional subsampling from
            each utterance's true output length in frames (ESPnet's sliced mask marks up to
            two extra frames per padded utterance as valid). Also fixes the returned output
            lengths. False keeps ESPnet's mask.
        **others: As ESPnet's ConformerEncoder (input_layer, num_blocks, attention_heads,
            linear_units, cnn_module_kernel in frames, dropout rates, ...).
    """

    @typechecked
    def __init__(
        self,
        input_size: int,
        output_size: int = 256,
        attention_heads: int = 4,
        linear_units: int = 2048,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
        input_layer: Optional[str] = "conv2d",
        normalize_before: bool = True,
        concat_after: bool = False,
        positionwise_layer_type: str = "linear",
        positionwise_conv_kernel_size: int = 3,
        macaron_style: bool = False,
        rel_pos_type: str = "legacy",
        pos_enc_layer_type: str = "rel_pos",
        selfattention_layer_type: str = "rel_selfattn",
        activation_type: str = "swish",
        use_cnn_module: bool = True,
        zero_triu: bool = False,
        cnn_module_kernel: int = 31,
        padding_idx: int = -1,
        interctc_layer_idx: Optional[List[int]] = None,
        interctc_use_conditioning: bool = False,
        ctc_trim: bool = False,
        stochastic_depth_rate: Union[float, List[float]] = 0.0,
        layer_drop_rate: float = 0.0,
        max_pos_emb_len: int = 5000,
        qk_norm: bool = False,
        use_flash_attn: bool = True,
        conv_norm_type: str = "batch_norm",
        conv_norm_groups: int = 1,
        conv_padding_aware: bool = True,
        exact_subsampling_mask: bool = True,
    ):
        # Fail on a bad norm option before building anything.
        check_conv_norm_options(conv_norm_type, conv_norm_groups, output_size)
        super().__init__(
            input_size=input_size,
            output_size=output_size,
            attention_heads=attention_heads,
            linear_units=linear_units,
            num_blocks=num_blocks,
            dropout_rate=dropout_rate,
            positional_dropout_rate=positional_dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            input_layer=input_layer,
            normalize_before=normalize_before,
            concat_after=concat_after,
            positionwise_layer_type=positionwise_layer_type,
            positionwise_conv_kernel_size=positionwise_conv_kernel_size,
            macaron_style=macaron_style,
            rel_pos_type=rel_pos_type,
            pos_enc_layer_type=pos_enc_layer_type,
            selfattention_layer_type=selfattention_layer_type,
            activation_type=activation_type,
            use_cnn_module=use_cnn_module,
            zero_triu=zero_triu,
            cnn_module_kernel=cnn_module_kernel,
            padding_idx=padding_idx,
            interctc_layer_idx=[] if interctc_layer_idx is None else interctc_layer_idx,
            interctc_use_conditioning=interctc_use_conditioning,
            ctc_trim=ctc_trim,
            stochastic_depth_rate=stochastic_depth_rate,
            layer_drop_rate=layer_drop_rate,
            max_pos_emb_len=max_pos_emb_len,
            qk_norm=qk_norm,
            use_flash_attn=use_flash_attn,
        )
        self.conv_norm_type = conv_norm_type
        self.conv_norm_groups = conv_norm_groups
        self.conv_padding_aware = conv_padding_aware
        self.exact_subsampling_mask = exact_subsampling_mask

        # ESPnet's layers are kept; only their convolution modules are swapped, reusing the
        # convolution weights, so names and initial values stay ESPnet's.
        for layer in self.encoders:
            if layer.conv_module is None:
                continue
            layer.conv_module = PaddingAwareConvolutionModule.from_convolution_module(
                layer.conv_module,
                norm_type=conv_norm_type,
                norm_groups=conv_norm_groups,
                padding_aware=conv_padding_aware,
            )
            if conv_padding_aware:
                layer.register_forward_pre_hook(_share_mask_with_conv_module, with_kwargs=True)
                layer.register_forward_hook(_forget_conv_module_mask, always_call=True)

        if exact_subsampling_mask and isinstance(self.embed, masked_subsampling_classes()):
            self.embed.register_forward_hook(recompute_subsampling_mask, with_kwargs=True)
