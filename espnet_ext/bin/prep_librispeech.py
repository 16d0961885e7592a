"""Prepare Kaldi data dirs from an extracted LibriSpeech tree (no download, no Kaldi).

Example (ESPnet's librispeech_100 sets; dev = dev-clean + dev-other):
    python -m espnet_ext.bin.prep_librispeech --librispeech_dir /corpora --data_dir data \\
        --parts train-clean-100,dev-clean,dev-other,test-clean,test-other \\
        --combine dev=dev_clean,dev_other
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional

from espnet_ext.bin.cli import csv_list, print_summaries, setup_logging
from espnet_ext.corpora.librispeech import ALL_PARTS, PARTS_100H, SPEAKER_UNITS, prepare_librispeech


def _combine(value: str) -> tuple:
    name, sep, sources = value.partition("=")
    if not sep or not name.strip() or not csv_list(sources):
        raise argparse.ArgumentTypeError(f"expected NAME=DIR1,DIR2 (e.g. dev=dev_clean,dev_other), got {value!r}")
    return name.strip(), csv_list(sources)


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--librispeech_dir", required=True,
                   help="folder holding LibriSpeech/ (as extracted from the openslr.org/12 archives)")
    p.add_argument("--data_dir", default="data", help="parent of the Kaldi dirs written")
    p.add_argument("--parts", type=csv_list, default=list(PARTS_100H),
                   help=f"comma-separated parts among {', '.join(ALL_PARTS)}")
    p.add_argument("--combine", type=_combine, action="append", default=[],
                   help="NAME=DIR1,DIR2: also write <data_dir>/NAME combining prepared dirs; repeatable")
    p.add_argument("--speaker_unit", default="reader", choices=SPEAKER_UNITS,
                   help="speaker ids: LibriSpeech readers, or reader-chapter pairs (Kaldi's recipe)")
    p.add_argument("--no_durations", action="store_true", help="skip utt2dur (no FLAC header reads)")
    p.add_argument("--check_audio", action="store_true", help="validation also reads every audio header")
    p.add_argument("--overwrite", action="store_true",
                   help="replace dirs this tool wrote earlier with other options; dirs it did not "
                        "write (no .librispeech.json / .espnet_ext.json marker) are never replaced")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Prepare and validate; one summary line per dir, or the error and exit status 1."""
    args = get_parser().parse_args(argv)
    setup_logging()
    combine: Dict[str, List[str]] = dict(args.combine)
    return print_summaries("prep_librispeech", lambda: prepare_librispeech(
        args.librispeech_dir, args.data_dir, parts=args.parts, combine=combine,
        speaker_unit=args.speaker_unit, read_durations=not args.no_durations,
        check_audio=args.check_audio, overwrite=args.overwrite,
    ))


if __name__ == "__main__":
    sys.exit(main())
