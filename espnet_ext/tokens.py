"""Subword tokens: train a sentencepiece model on the training transcripts.

ESPnet's pip package has no `spm_train` entry point; the token *list* is then written by ESPnet's
own `espnet2.bin.tokenize_text --write_vocabulary`, exactly as ESPnet recipes do.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import sentencepiece as spm

from espnet_ext.data.kaldi import read_kaldi_map


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
    finally:
        Path(corpus).unlink()
    return model_prefix.with_suffix(".model")
