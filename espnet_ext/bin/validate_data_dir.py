"""Check Kaldi data dirs (files, sorting, keys, transcripts, audio) before training.

Example:
    python -m espnet_ext.bin.validate_data_dir data/train data/dev data/test
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from espnet_ext.bin.cli import fail, setup_logging
from espnet_ext.data.validate import DataDirError, validate_data_dir


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("data_dirs", nargs="+", metavar="DIR", help="Kaldi data dirs")
    p.add_argument("--no_audio", action="store_true", help="skip the audio header checks")
    p.add_argument("--expected_rate", type=int, default=16000, help="required sample rate in Hz (0: any)")
    p.add_argument("--run_pipes", action="store_true", help="run piped wav.scp commands and check their audio")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Validate each dir; print one summary line per dir, or the error and exit status 1."""
    args = get_parser().parse_args(argv)
    setup_logging()  # warnings (e.g. a truncated WAV file) in ESPnet's log format
    for path in args.data_dirs:
        try:
            summary = validate_data_dir(
                path,
                check_audio=not args.no_audio,
                expected_rate=args.expected_rate or None,
                run_pipes=args.run_pipes,
            )
        except DataDirError as e:
            return fail("validate_data_dir", e)
        print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
