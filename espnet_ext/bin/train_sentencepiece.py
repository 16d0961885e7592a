"""Train a sentencepiece model on a Kaldi `text` file (see espnet_ext.evaluation.tokens).

A vocabulary size the transcripts cannot give (e.g. 500 pieces from a few sentences) ends in one
line naming the largest (or smallest) size allowed, and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from espnet_ext.bin.cli import fail, run_guarded
from espnet_ext.data.kaldi import DataDirError
from espnet_ext.evaluation.tokens import VocabularySizeError, train_sentencepiece


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--text", type=Path, required=True, help="Kaldi text file (key transcript)")
    p.add_argument("--model_prefix", type=Path, required=True, help="writes PREFIX.model/.vocab")
    p.add_argument("--vocab_size", type=int, required=True,
                   help="number of pieces (the recipes' --nbpe)")
    p.add_argument("--model_type", default="unigram", choices=["unigram", "bpe", "char", "word"])
    args = p.parse_args(argv)
    if not args.text.is_file():
        return fail("train_sentencepiece", f"--text {args.text} not found (a Kaldi text file)")
    return run_guarded(
        "train_sentencepiece",
        lambda: print(train_sentencepiece(args.text, args.model_prefix, args.vocab_size,
                                          args.model_type)),
        (VocabularySizeError, DataDirError))


if __name__ == "__main__":
    sys.exit(main())
