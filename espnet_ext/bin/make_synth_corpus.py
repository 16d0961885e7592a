"""Build the embedded default corpus (multi-speaker English from Debian TTS voices).

Example:
    python -m espnet_ext.bin.make_synth_corpus --out_dir downloads/synth_en --data_dir data
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from espnet_ext.corpora.sentences import SentenceSourceError
from espnet_ext.corpora.synth_corpus import CorpusOptionsError, build_synth_corpus
from espnet_ext.corpora.tts import TTSError
from espnet_ext.bin.cli import fail, setup_logging


def get_parser() -> argparse.ArgumentParser:
    """Command-line options (defaults: 12 speakers x 100 train / 10 dev / 10 test)."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out_dir", required=True, help="corpus folder: LibriSpeech-like audio tree and metadata")
    p.add_argument("--data_dir", default=None, help="parent of the Kaldi dirs train/dev/test (default: <out_dir>/data)")
    p.add_argument("--num_speakers", type=int, default=12, help="number of synthetic speakers")
    p.add_argument("--train_per_speaker", type=int, default=100, help="training utterances per speaker")
    p.add_argument("--dev_per_speaker", type=int, default=10, help="development utterances per speaker")
    p.add_argument("--test_per_speaker", type=int, default=10, help="test utterances per speaker")
    p.add_argument("--seed", type=int, default=1, help="seed of speakers, sentences and conditions")
    p.add_argument(
        "--noise_snr_db", type=float, nargs="+", default=None, metavar="DB",
        help="add a 'noisy' condition: SNR in dB, one value or MIN MAX",
    )
    p.add_argument("--reverb", action="store_true", help="add a 'reverb' condition (sox reverb)")
    p.add_argument(
        "--reverberance", type=float, nargs=2, default=[20.0, 60.0], metavar=("MIN", "MAX"),
        help="sox reverberance range in percent for --reverb",
    )
    p.add_argument("--nj", type=int, default=2, help="parallel rendering processes")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Parse arguments, build the corpus, print a summary; exit status 1 with a message on error."""
    args = get_parser().parse_args(argv)
    setup_logging()
    if args.noise_snr_db is not None and len(args.noise_snr_db) > 2:
        get_parser().error("--noise_snr_db takes one value or MIN MAX")
    try:
        summary = build_synth_corpus(
            out_dir=args.out_dir,
            data_dir=args.data_dir,
            num_speakers=args.num_speakers,
            train_per_speaker=args.train_per_speaker,
            dev_per_speaker=args.dev_per_speaker,
            test_per_speaker=args.test_per_speaker,
            seed=args.seed,
            noise_snr_db=args.noise_snr_db[0] if args.noise_snr_db and len(args.noise_snr_db) == 1 else args.noise_snr_db,
            reverb=tuple(args.reverberance) if args.reverb else None,
            nj=args.nj,
            progress=not args.no_progress,
        )
    except (CorpusOptionsError, SentenceSourceError, TTSError, ValueError) as e:
        return fail("make_synth_corpus", e)
    splits = ", ".join(f"{s} {n}" for s, n in summary.num_utterances.items())
    print(
        f"{summary.corpus_dir}: {summary.num_speakers} speakers, utterances: {splits}; "
        f"{summary.hours:.2f} h; Kaldi dirs under {summary.data_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
