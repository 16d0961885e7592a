"""Train a sentencepiece model on a Kaldi `text` file (see espnet_ext.tokens)."""

import argparse
from pathlib import Path

from espnet_ext.tokens import train_sentencepiece


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--text", type=Path, required=True, help="Kaldi text file (key transcript)")
    p.add_argument("--model_prefix", type=Path, required=True, help="writes PREFIX.model/.vocab")
    p.add_argument("--vocab_size", type=int, required=True)
    p.add_argument("--model_type", default="unigram", choices=["unigram", "bpe", "char", "word"])
    args = p.parse_args(argv)
    print(train_sentencepiece(args.text, args.model_prefix, args.vocab_size, args.model_type))


if __name__ == "__main__":
    main()
