"""Encoders for ESPnet ASR: the Conformer with a selectable, padding-aware conv-module norm."""

from espnet_ext.asr.encoder.norm_conformer_encoder import NormConformerEncoder

__all__ = ["NormConformerEncoder"]
