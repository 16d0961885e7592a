"""An ESPnet ASR model's forward pass cut into stages, so that a computed prefix can be reused.

The stages of ``ESPnetASRModel.encode`` + CTC, and the cache *levels* between them:

    audio --frontend+normalize--> features          level FEATS (-1)
          --encoder.embed-->      input of block 0  level 0
          --block k-->            input of block k+1 level k+1   (level N: output of block N-1)
          --after_norm-->         encoder output    level OUTPUT (N+1)
          --ctc / decoder-->      hypotheses

A variant that changes block k only needs the trained model's state at level k; one that
changes the CTC layer or the decoder only needs level OUTPUT. Changing the frontend or the
normalization needs everything recomputed from audio (level AUDIO, -2).

:class:`EncoderStages` runs the stages with the model's own modules in the order of the
``forward`` of ESPnet's ``ConformerEncoder`` (and espnet_ext's ``norm_conformer``),
``TransformerEncoder``, ``BranchformerEncoder`` and ``EBranchformerEncoder`` (all four: input
layer with the padding mask, blocks in order, each taking and returning (hidden, mask), the final
layer norm; in eval mode, where layer drop and stochastic depth do nothing), so a staged run
gives the same tensors as ``model.encode``; :meth:`EncoderStages.self_check` verifies that on
real data and the scan falls back to whole-encoder runs (no block-level reuse) when it does not
hold, e.g. for intermediate-CTC conditioning, pre/post-encoders or other encoder types.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Tuple, Union

import torch

LEVEL_AUDIO = -2
LEVEL_FEATS = -1

Hidden = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


@dataclasses.dataclass
class HiddenState:
    """Encoder state between two stages of one padded batch.

    Attributes:
        xs: Hidden vectors (B, T, D), or (hidden, positional embedding) for relative-position
            encoders.
        masks: Valid-frame mask (B, 1, T), True at valid frames.
    """

    xs: Hidden
    masks: torch.Tensor


#: Encoder families whose forward the stages reproduce (names as in the fallback message).
STAGEABLE_FAMILIES = ("Conformer", "Transformer", "Branchformer", "E-Branchformer")


def _stageable_encoder_classes() -> tuple:
    from espnet2.asr.encoder.branchformer_encoder import BranchformerEncoder
    from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
    from espnet2.asr.encoder.e_branchformer_encoder import EBranchformerEncoder
    from espnet2.asr.encoder.transformer_encoder import TransformerEncoder

    return (ConformerEncoder, TransformerEncoder, BranchformerEncoder, EBranchformerEncoder)


class EncoderStages:
    """Stage-by-stage forward of an ESPnet ASR model (eval mode, no gradients).

    Args:
        model: An ``espnet2.asr.espnet_model.ESPnetASRModel`` (or compatible).
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        enc = model.encoder
        self.num_blocks = len(enc.encoders) if hasattr(enc, "encoders") else 0
        self.level_output = self.num_blocks + 1
        reasons = []
        if not isinstance(enc, _stageable_encoder_classes()):
            reasons.append(f"encoder type {type(enc).__name__} is not one of "
                           f"{', '.join(STAGEABLE_FAMILIES)}")
        if getattr(enc, "interctc_use_conditioning", False) or getattr(enc, "ctc_trim", False):
            reasons.append("intermediate CTC conditioning/trimming feeds CTC back into the blocks")
        if getattr(model, "preencoder", None) is not None:
            reasons.append("the model has a pre-encoder")
        if getattr(model, "postencoder", None) is not None:
            reasons.append("the model has a post-encoder")
        self.unsupported_reason: Optional[str] = "; ".join(reasons) or None

    @property
    def block_reuse(self) -> bool:
        """Whether states between blocks can be reused (else only features and encoder output)."""
        return self.unsupported_reason is None

    # -- stage functions ---------------------------------------------------------------------

    @torch.no_grad()
    def features(self, speech: torch.Tensor,
                 speech_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Frontend and normalization (``ESPnetASRModel.encode`` steps 1 and 3; eval mode)."""
        model = self.model
        feats, lens = speech, speech_lengths
        if model.frontend is not None:
            feats, lens = model.frontend(speech[:, : speech_lengths.max()], speech_lengths)
        if model.normalize is not None:
            feats, lens = model.normalize(feats, lens)
        return feats, lens

    @torch.no_grad()
    def encode_features(self, feats: torch.Tensor,
                        feats_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Everything after normalization as ESPnet runs it (pre-encoder, encoder, post-encoder)."""
        model = self.model
        if model.preencoder is not None:
            feats, feats_lengths = model.preencoder(feats, feats_lengths)
        enc = model.encoder
        if getattr(enc, "interctc_use_conditioning", False) or getattr(enc, "ctc_trim", False):
            out, out_lens, _ = enc(feats, feats_lengths, ctc=model.ctc)
        else:
            out, out_lens, _ = enc(feats, feats_lengths)
        if isinstance(out, tuple):
            out = out[0]
        if model.postencoder is not None:
            out, out_lens = model.postencoder(out, out_lens)
        return out, out_lens

    def min_frames(self) -> int:
        """Fewest feature frames an utterance needs to pass the encoder's subsampling (0: any)."""
        from espnet.nets.pytorch_backend.transformer.subsampling import check_short_utt

        from espnet_ext.asr.encoder.subsampling_mask import masked_subsampling_classes

        embed = getattr(self.model.encoder, "embed", None)
        if embed is None or not isinstance(embed, masked_subsampling_classes()):
            return 0
        short, limit = check_short_utt(embed, 0)
        return limit if short else 0

    @torch.no_grad()
    def embed(self, feats: torch.Tensor, feats_lengths: torch.Tensor) -> HiddenState:
        """Level FEATS -> level 0: the encoder's input layer (subsampling, positions)."""
        from espnet.nets.pytorch_backend.nets_utils import make_pad_mask
        from espnet.nets.pytorch_backend.transformer.subsampling import check_short_utt

        from espnet_ext.asr.encoder.subsampling_mask import masked_subsampling_classes

        enc = self.model.encoder
        masks = (~make_pad_mask(feats_lengths)[:, None, :]).to(feats.device)
        if enc.embed is None:
            xs = feats
        elif isinstance(enc.embed, masked_subsampling_classes()):
            short, limit = check_short_utt(enc.embed, feats.size(1))
            if short:
                raise ValueError(
                    f"a batch has only {feats.size(1)} feature frames; the encoder's "
                    f"subsampling needs more than {limit}"
                )
            xs, masks = enc.embed(feats, masks)
        else:
            xs = enc.embed(feats)
        return HiddenState(xs, masks)

    @torch.no_grad()
    def block(self, state: HiddenState, k: int) -> HiddenState:
        """Level k -> level k+1: encoder block k."""
        xs, masks = self.model.encoder.encoders[k](state.xs, state.masks)
        return HiddenState(xs, masks)

    @torch.no_grad()
    def finish(self, state: HiddenState) -> Tuple[torch.Tensor, torch.Tensor]:
        """Level N -> level OUTPUT: the final norm. Returns (encoder output, output lengths)."""
        enc = self.model.encoder
        xs = state.xs[0] if isinstance(state.xs, tuple) else state.xs
        # Conformer/Transformer have a final norm only with pre-norm blocks; the Branchformers
        # always have one (and no normalize_before option).
        if getattr(enc, "normalize_before", True):
            xs = enc.after_norm(xs)
        return xs, state.masks.squeeze(1).sum(1)

    # -- composite runs ---------------------------------------------------------------------

    def run(self, start_level: int, state, stop_level: int):
        """Advance a state from `start_level` to `stop_level` (LEVEL_FEATS <= start <= stop).

        Args:
            start_level: Level of `state`: LEVEL_FEATS ((feats, lens) tuple), 0..N
                (HiddenState) or OUTPUT ((encoder output, lengths) tuple).
            state: The state at `start_level`.
            stop_level: Level to reach.

        Returns:
            The state at `stop_level`, in the form described for `start_level`.
        """
        if stop_level < start_level:
            raise ValueError(f"cannot run backwards from level {start_level} to {stop_level}")
        if start_level == stop_level:
            return state
        if not self.block_reuse:
            # Only FEATS -> OUTPUT as one ESPnet call.
            if (start_level, stop_level) != (LEVEL_FEATS, self.level_output):
                raise ValueError(
                    f"block-level stages are not available ({self.unsupported_reason})"
                )
            return self.encode_features(*state)
        level = start_level
        if level == LEVEL_FEATS:
            state = self.embed(*state)
            level = 0
        while level < min(stop_level, self.num_blocks):
            state = self.block(state, level)
            level += 1
        if stop_level == self.level_output and level == self.num_blocks:
            state = self.finish(state)
        return state

    def self_check(self, feats: torch.Tensor, feats_lengths: torch.Tensor, atol: float = 1e-5) -> bool:
        """Whether the staged run reproduces ESPnet's encoder on this batch; disables reuse if not."""
        if not self.block_reuse:
            return False
        staged, staged_lens = self.run(LEVEL_FEATS, (feats, feats_lengths), self.level_output)
        ref, ref_lens = self.encode_features(feats, feats_lengths)
        ok = (
            staged.shape == ref.shape
            and torch.equal(staged_lens.cpu(), ref_lens.cpu())
            and torch.allclose(staged, ref, atol=atol, rtol=1e-4)
        )
        if not ok:
            self.unsupported_reason = (
                f"staged forward of {type(self.model.encoder).__name__} differs from its forward()"
            )
            logging.warning(f"Block-level reuse disabled: {self.unsupported_reason}")
        return ok
