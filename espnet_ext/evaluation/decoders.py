"""Hypotheses from encoder output, in two scoring modes.

* ``ctc_greedy`` (the scan's default, and the federated evaluation's mode): batched greedy CTC; uses only the encoder and the CTC
  layer, so decoder layers cannot change its result and are not scanned with it.
* ``beam``: ESPnet's joint CTC/attention beam search (``Speech2Text``'s own search on the same
  in-memory model), one utterance at a time, as stage 5 decodes.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from espnet_ext.evaluation.ctc_greedy import TokenTextConverter, ctc_greedy_texts

SCORINGS = ("ctc_greedy", "beam")


class CtcGreedyDecoder:
    """Greedy CTC hypotheses of a padded batch.

    Args:
        model: The ESPnet ASR model (its ``ctc``, ``token_list``, blank and <sos/eos> ids).
        token_type: The training config's ``token_type``.
        bpemodel: The training config's ``bpemodel`` (for ``bpe``).
    """

    name = "ctc_greedy"
    uses_decoder = False

    def __init__(self, model: torch.nn.Module, token_type: str, bpemodel: Optional[str]):
        self.model = model
        exclude = {getattr(model, "blank_id", 0), getattr(model, "sos", None), getattr(model, "eos", None)}
        self.converter = TokenTextConverter(
            model.token_list, token_type, bpemodel, exclude_ids=[i for i in exclude if i is not None]
        )

    @torch.no_grad()
    def decode_batch(self, enc: torch.Tensor, enc_lens: torch.Tensor) -> List[str]:
        return ctc_greedy_texts(self.model.ctc, enc, enc_lens, self.converter)


class BeamSearchDecoder:
    """ESPnet's joint CTC/attention beam search per utterance (``Speech2Text``).

    Args:
        speech2text: A ``espnet2.bin.asr_inference.Speech2Text`` whose ``asr_model`` is the
            model being scanned.
    """

    name = "beam"
    uses_decoder = True

    def __init__(self, speech2text):
        self.speech2text = speech2text

    @torch.no_grad()
    def decode_batch(self, enc: torch.Tensor, enc_lens: torch.Tensor) -> List[str]:
        texts = []
        for b, n in enumerate(enc_lens.tolist()):
            # Speech2Text.__call__ = encode + this per-utterance search; the encoding is ours.
            results = self.speech2text._decode_single_sample(enc[b, : int(n)])
            texts.append(results[0][0] or "")
        return texts
