"""The subsampling layers that take and return the padding mask, named in one place."""

from __future__ import annotations

from espnet.nets.pytorch_backend.transformer import subsampling

from espnet_ext.asr.encoder.subsampling_mask import MASKED_SUBSAMPLING_NAMES, masked_subsampling_classes


def test_masked_subsampling_classes_are_espnets_convolutional_input_layers():
    classes = masked_subsampling_classes()
    assert subsampling.Conv2dSubsampling in classes and subsampling.Conv2dSubsampling8 in classes
    assert all(c.__name__ in MASKED_SUBSAMPLING_NAMES for c in classes)
    # Every name this ESPnet version has is found, and nothing else.
    assert {c.__name__ for c in classes} == {n for n in MASKED_SUBSAMPLING_NAMES if hasattr(subsampling, n)}
