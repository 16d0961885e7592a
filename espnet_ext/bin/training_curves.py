"""Training curves of ESPnet runs, from each run's checkpoint.pth: did it learn, and when?

Prints a table of the chosen per-epoch numbers (run, epoch, one column per curve) and, with
--out_dir, writes curves.md, curves.tsv and curves.png (one panel per curve, one line per run).
Works on any ESPnet training's output dir, also one that was killed and resumed (ESPnet keeps
every epoch's numbers in checkpoint.pth). E.g. the depth sweep's 16-block runs:

    python -m espnet_ext.bin.training_curves exp/asr_train_asr_conformer*_16x64_seed* \\
        --curves train/loss_ctc valid/acc --out_dir exp/curves_16x64
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from espnet_ext.bin.cli import run_guarded, setup_logging


def get_parser() -> argparse.ArgumentParser:
    from espnet_ext.reporting.training_curves import DEFAULT_CURVES

    p = argparse.ArgumentParser(prog="training_curves", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exp_dirs", nargs="+", type=Path, help="training output dirs (with checkpoint.pth)")
    p.add_argument("--curves", nargs="+", default=list(DEFAULT_CURVES),
                   help="<phase>/<key> as in ESPnet's 'epoch results' lines (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None,
                   help="print only the first N epochs of each run (the files keep all)")
    p.add_argument("--out_dir", type=Path, default=None, help="write curves.md, curves.tsv, curves.png here")
    p.add_argument("--log_level", default="WARNING", help="logging level (default: %(default)s)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    from espnet_ext.reporting import training_curves as tc
    from espnet_ext.utils.atomic import write_text_atomic

    def run() -> int:
        curves = list(dict.fromkeys(args.curves))
        runs = tc.read_curves(args.exp_dirs, curves)
        shown = runs if args.epochs is None else [
            tc.RunCurves(r.name, r.path, {c: {e: v for e, v in pts.items() if e <= args.epochs}
                                          for c, pts in r.values.items()}) for r in runs]
        print("\n".join(tc.curves_markdown(shown, curves)))
        if args.out_dir is not None:
            out = args.out_dir
            write_text_atomic(out / "curves.md", "\n".join(tc.curves_markdown(runs, curves)) + "\n")
            write_text_atomic(out / "curves.tsv", tc.curves_tsv(runs, curves))
            tc.plot_curves(runs, curves, out / "curves.png")
            print(f"{out}/curves.md, curves.tsv, curves.png ({len(runs)} runs)")
        return 0

    return run_guarded("training_curves", run, (ValueError,))


if __name__ == "__main__":
    sys.exit(main())
