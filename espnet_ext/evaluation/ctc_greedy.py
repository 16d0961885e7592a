"""Fast scoring path: batched CTC greedy decoding and detokenization into words.

Greedy CTC: per frame the most likely token (argmax of the CTC layer's output), then repeated
tokens collapsed and blanks dropped (as ESPnet's intermediate-CTC greedy decoding also drops
<sos/eos>). Token ids become text with the model's token list and the tokenizer of its training
config (sentencepiece model ``bpemodel`` for ``token_type: bpe``), as in
``espnet2.bin.asr_inference``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import torch


class TokenTextConverter:
    """Token ids -> text, the way ``espnet2.bin.asr_inference.Speech2Text`` converts them.

    Args:
        token_list: The model's tokens (``model.token_list``), index = token id.
        token_type: ``bpe``, ``char``, ``word``, ... (the training config's ``token_type``).
        bpemodel: Sentencepiece model path for ``bpe`` (the config's ``bpemodel``).
        exclude_ids: Ids never emitted as text (default: blank 0 and the last id <sos/eos>).

    Raises:
        FileNotFoundError: token_type is ``bpe`` and the sentencepiece model does not exist.
    """

    def __init__(self, token_list: Sequence[str], token_type: str, bpemodel: Optional[str] = None,
                 exclude_ids: Optional[Sequence[int]] = None):
        from espnet2.text.build_tokenizer import build_tokenizer
        from espnet2.text.token_id_converter import TokenIDConverter

        if token_type == "bpe":
            if not bpemodel or not Path(bpemodel).is_file():
                raise FileNotFoundError(
                    f"sentencepiece model {bpemodel!r} (config.yaml key 'bpemodel') not found from "
                    f"{Path.cwd()}; config paths are relative to the recipe directory: run from there"
                )
            self.tokenizer = build_tokenizer(token_type="bpe", bpemodel=bpemodel)
        else:
            self.tokenizer = build_tokenizer(token_type=token_type)
        self.converter = TokenIDConverter(token_list=list(token_list))
        if exclude_ids is None:
            exclude_ids = (0, len(token_list) - 1)
        self.exclude_ids = set(int(i) for i in exclude_ids)

    def ids_to_text(self, ids: Sequence[int]) -> str:
        """Text of a token id sequence, excluded ids dropped."""
        tokens = self.converter.ids2tokens([i for i in ids if i not in self.exclude_ids])
        return self.tokenizer.tokens2text(tokens)


def ctc_greedy_ids(ctc: torch.nn.Module, enc: torch.Tensor, enc_lens: torch.Tensor) -> List[List[int]]:
    """Greedy CTC token ids of a padded batch (repeats collapsed, blanks still in).

    Args:
        ctc: The model's ``espnet2.asr.ctc.CTC``.
        enc: Encoder output (B, T, D).
        enc_lens: Valid frames per utterance (B,).

    Returns:
        One id list per utterance (consecutive duplicates merged).
    """
    best = ctc.argmax(enc).cpu()
    lens = enc_lens.cpu().tolist()
    out = []
    for b, n in enumerate(lens):
        ids = torch.unique_consecutive(best[b, : int(n)]).tolist()
        out.append(ids)
    return out


def ctc_greedy_texts(ctc: torch.nn.Module, enc: torch.Tensor, enc_lens: torch.Tensor,
                     converter: TokenTextConverter) -> List[str]:
    """Greedy CTC hypotheses (text) of a padded batch."""
    return [converter.ids_to_text(ids) for ids in ctc_greedy_ids(ctc, enc, enc_lens)]
