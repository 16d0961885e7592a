"""Write RESULTS.md from every scored decoding under an experiment directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from espnet_ext.reporting.recipe_results import write_results_md


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--expdir", type=Path, required=True, help="e.g. exp (holds exp/*/decode_*)")
    p.add_argument("--out", type=Path, required=True, help="markdown file to write")
    args = p.parse_args(argv)
    write_results_md(args.expdir, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
