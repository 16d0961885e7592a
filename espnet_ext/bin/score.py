"""Score a decoding: WER and CER of a hypothesis `text` against a reference `text`.

Writes OUT_DIR/scores.json and OUT_DIR/result.md (ESPnet's table rows) and prints the rates.
Missing files or hypotheses of utterances the reference lacks end in one `score: error: ...`
line and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from espnet_ext.bin.cli import fail, run_guarded
from espnet_ext.evaluation.scoring import write_scores


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ref", type=Path, required=True, help="reference Kaldi text file")
    p.add_argument("--hyp", type=Path, required=True, help="hypothesis Kaldi text file")
    p.add_argument("--out_dir", type=Path, required=True)
    args = p.parse_args(argv)
    for what, path in (("--ref", args.ref), ("--hyp", args.hyp)):
        if not path.is_file():
            return fail("score", f"{what} {path} not found (a Kaldi text file: <utterance id> <words>)")

    def run() -> int:
        scores = write_scores(args.ref, args.hyp, args.out_dir)
        print(f"{args.out_dir}: WER {scores['WER'].error_rate:.2f}% CER {scores['CER'].error_rate:.2f}%")
        return 0

    return run_guarded("score", run, (ValueError,))


if __name__ == "__main__":
    sys.exit(main())
