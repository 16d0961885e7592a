"""What the scan benches share: the model and data to scan, trained on the fly or given."""

import logging
import sys
import time
from pathlib import Path
from typing import Callable, Tuple


def scan_inputs(args, train: Callable[[], Tuple[Path, Path]]) -> Tuple[Path, Path, str]:
    """(exp dir, data dir, model file) from `--exp_dir/--data_dir/--model_file`, or from
    `train()` (the bench's own small model) when no `--exp_dir` is given."""
    from espnet_ext.experiment.checkpoints import saved_epochs

    t0 = time.perf_counter()
    if args.exp_dir is None:
        exp_dir, data_dir = train()
        logging.getLogger().setLevel(logging.WARNING)  # ESPnet's training set INFO
        print(f"trained the bench model in {time.perf_counter() - t0:.1f} s")
    else:
        if args.data_dir is None:
            sys.exit("--data_dir is required with --exp_dir")
        exp_dir, data_dir = args.exp_dir, args.data_dir
    model_file = args.model_file or f"checkpoints/{max(saved_epochs(exp_dir))}epoch.pth"
    return exp_dir, data_dir, model_file
