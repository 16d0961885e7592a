"""The model a shorter training would have ended with: ESPnet's n-best average over epochs 1..N
of a longer run (espnet_ext.experiment.truncated_average), for each N given.

    python -m espnet_ext.bin.average_epochs exp/asr_train_asr_conformer_seed1 --up_to 15 16 17
    # then decode them: ./run.sh --stage 5 --stop_stage 5 --inference_model valid.acc.ave_upto17.pth

Writes <exp_dir>/<phase>.<key>.ave_upto<N>.pth and a .json record beside it (epochs averaged),
and prints one line per N. Needs the epochs' weights (checkpoints/{N}epoch.pth, kept by
espnet_ext.bin.asr_train) and ESPnet's checkpoint.pth.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from espnet_ext.bin.cli import csv_list, run_guarded, setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="average_epochs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exp_dir", type=Path, help="training output dir (checkpoint.pth, kept epochs)")
    p.add_argument("--up_to", type=int, nargs="+", required=True, help="last epoch(s) N considered")
    p.add_argument("--criterion", type=csv_list, default=None,
                   help="phase,key,max|min (default: the run's first best_model_criterion)")
    p.add_argument("--nbest", type=int, default=None,
                   help="epochs averaged (default: the run's keep_nbest_models)")
    p.add_argument("--log_level", default="WARNING", help="logging level (default: %(default)s)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    from espnet_ext.experiment.truncated_average import truncated_average

    def run() -> int:
        for n in args.up_to:
            avg = truncated_average(args.exp_dir, n, args.criterion, args.nbest)
            epochs = ", ".join(f"{e} ({v:.4f})" for e, v in avg.epochs)
            print(f"{avg.path}: {'.'.join(avg.criterion[:2])} best {len(avg.epochs)} of epochs 1..{n}: {epochs}")
        return 0

    return run_guarded("average_epochs", run, (ValueError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
