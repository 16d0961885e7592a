"""Score a decoding: WER and CER of a hypothesis `text` against a reference `text`.

Writes OUT_DIR/scores.json and OUT_DIR/result.md (ESPnet's table rows) and prints the rates.
"""

import argparse
from pathlib import Path

from espnet_ext.scoring import write_scores


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ref", type=Path, required=True, help="reference Kaldi text file")
    p.add_argument("--hyp", type=Path, required=True, help="hypothesis Kaldi text file")
    p.add_argument("--out_dir", type=Path, required=True)
    args = p.parse_args(argv)
    scores = write_scores(args.ref, args.hyp, args.out_dir)
    print(f"{args.out_dir}: WER {scores['WER'].error_rate:.2f}% CER {scores['CER'].error_rate:.2f}%")


if __name__ == "__main__":
    main()
