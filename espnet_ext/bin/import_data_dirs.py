"""Import existing Kaldi data dirs into a recipe's data/ (checked; copied or linked).

Example (from a recipe directory):
    python -m espnet_ext.bin.import_data_dirs --data_dir data \\
        --dir train=/corpora/mine/train --dir dev=/corpora/mine/dev --dir test=/corpora/mine/test
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from espnet_ext.bin.cli import fail, print_summaries, setup_logging
from espnet_ext.data.import_dirs import MODES, import_data_dirs


def _named_dir(value: str) -> tuple:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR (e.g. train=/corpora/mine/train), got {value!r}")
    return name, path


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dir", dest="dirs", type=_named_dir, action="append", required=True,
                   metavar="NAME=DIR", help="import DIR as <data_dir>/NAME; repeatable")
    p.add_argument("--data_dir", default="data", help="parent of the imported dirs")
    p.add_argument("--mode", default="copy", choices=MODES,
                   help="copy (absolute audio paths) or link (a symbolic link to the source)")
    p.add_argument("--extract_audio", action="store_true",
                   help="write each utterance as a 16-bit FLAC file (segments, piped commands, ark entries)")
    p.add_argument("--audio_base", default=None,
                   help="folder that relative audio paths in wav.scp are relative to (default: current dir)")
    p.add_argument("--no_audio", action="store_true", help="skip the audio header checks")
    p.add_argument("--expected_rate", type=int, default=16000, help="required sample rate in Hz")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Import; one summary line per dir, or the error and exit status 1."""
    args = get_parser().parse_args(argv)
    setup_logging()
    names = [n for n, _ in args.dirs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        return fail("import_data_dirs", f"data dir name '{duplicate}' is given twice")
    return print_summaries("import_data_dirs", lambda: import_data_dirs(
        dict(args.dirs), args.data_dir, mode=args.mode, extract_audio=args.extract_audio,
        audio_base=args.audio_base, check_audio=not args.no_audio, expected_rate=args.expected_rate,
    ))


if __name__ == "__main__":
    sys.exit(main())
