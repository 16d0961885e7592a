"""Subword tokens: train a sentencepiece model on the training transcripts.

ESPnet's pip package has no `spm_train` entry point; the token *list* is then written by ESPnet's
own `espnet2.bin.tokenize_text --write_vocabulary`, exactly as ESPnet recipes do.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import sentencepiece as spm

from espnet_ext.data.kaldi import read_kaldi_map

# sentencepiece's own limits, as its trainer reports them (RuntimeError text).
_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_LOW = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


class VocabularySizeError(ValueError):
    """The requested number of pieces does not fit the transcripts (too many or too few).

    Attributes:
        text_file: The Kaldi text file trained on.
        vocab_size: The requested number of pieces.
        limit: The largest (``too_high``) or smallest allowed number for this text.
        too_high: True when `vocab_size` exceeds `limit`, False when it is below.
        model_type: The sentencepiece model type.
    """

    def __init__(self, text_file: Path, vocab_size: int, limit: int, too_high: bool, model_type: str):
        self.text_file, self.vocab_size, self.limit = Path(text_file), vocab_size, limit
        self.too_high, self.model_type = too_high, model_type
        if too_high:
            what = (f"too large for these transcripts: sentencepiece's {model_type} model can make "
                    f"at most {limit} pieces from them; set --nbpe {limit} or less (or use more "
                    "training text, or --token_type char)")
        else:
            what = (f"too small: these transcripts have {limit} distinct characters and special "
                    f"pieces, each needs a piece; set --nbpe {limit} or more")
        super().__init__(
            f"{text_file}: vocabulary size {vocab_size} (the recipe's --nbpe; --vocab_size of "
            f"train_sentencepiece) is {what}"
        )


def _vocabulary_size_error(message: str, text_file: Path, vocab_size: int,
                           model_type: str):
    m = _TOO_HIGH.search(message)
    if m:
        return VocabularySizeError(text_file, vocab_size, int(m.group(2)), True, model_type)
    m = _TOO_LOW.search(message)
    if m:
        return VocabularySizeError(text_file, vocab_size, int(m.group(2)), False, model_type)
    return None


def train_sentencepiece(
    text_file: Path, model_prefix: Path, vocab_size: int, model_type: str = "unigram"
) -> Path:
    """Train a sentencepiece model on the transcripts of a Kaldi `text` file.

    Args:
        text_file: Kaldi `text` (utterance key, then the transcript).
        model_prefix: output prefix; writes `<prefix>.model` and `<prefix>.vocab`.
        vocab_size: number of pieces; small vocabularies (tens) suit small corpora.
        model_type: "unigram", "bpe", "char" or "word" (sentencepiece's model types).

    Returns:
        Path of the `.model` file.

    Raises:
        VocabularySizeError: `vocab_size` is more pieces than the transcripts allow, or fewer
            than their distinct characters need (names the allowed limit).
        ValueError: An unknown model type.
    """
    if model_type not in ("unigram", "bpe", "char", "word"):
        raise ValueError(f"model_type must be unigram, bpe, char or word, got {model_type!r}")
    transcripts = list(read_kaldi_map(Path(text_file)).values())
    model_prefix = Path(model_prefix)
    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(transcripts) + "\n")
        corpus = f.name
    try:
        spm.SentencePieceTrainer.train(
            input=corpus,
            model_prefix=str(model_prefix),
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=1.0,
            input_sentence_size=100_000_000,
            # Deterministic training: no sentence sampling, one thread.
            shuffle_input_sentence=False,
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as e:
        error = _vocabulary_size_error(str(e), Path(text_file), vocab_size, model_type)
        if error is None:
            raise
        raise error from None
    finally:
        Path(corpus).unlink()
    return model_prefix.with_suffix(".model")
