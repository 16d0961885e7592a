"""Data-parallel training on CPU: wall time per epoch of one process with T threads (A) vs T
processes with one thread each (B, torchrun + gloo, as the recipe's ``--train_procs T`` runs it),
side by side in one run.

Both train the same model (default: the synth_en recipe's Conformer 4x96, its own config) with
``espnet_ext.bin.asr_train`` on the same synthetic tone data and batches (ESPnet splits each batch
between B's processes: same steps, same learning rate). The time of epoch N is the time between
the log lines of epoch N-1's and epoch N's results (training, validation and checkpoint saving;
epoch 1, with start-up, is not counted). A and B alternate run by run (ABBA... over --reps), so
load from other processes hits both alike. Prints the median epoch time of each and B / A
(< 1: the processes are faster).

    python bench/bench_ddp_cpu.py                       # 2 threads vs 2 processes, 1 rep each
    python bench/bench_ddp_cpu.py --procs 2 --reps 2 --utts 96
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import List

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from helpers import make_tone_data_dir, train_args, write_char_token_list  # noqa: E402

DEFAULT_CONFIG = REPO / "egs2/synth_en/asr1/conf/train_asr_conformer.yaml"
# "[host:0/2] 2026-01-01 10:00:00,123 (trainer:394) INFO: 2epoch results: ..."
EPOCH_RESULTS = re.compile(r"\] (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) \(trainer:\d+\) INFO: (\d+)epoch results")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="ESPnet training config")
    p.add_argument("--procs", type=int, default=2, help="B's processes = A's threads")
    p.add_argument("--utts", type=int, default=64, help="training utterances")
    p.add_argument("--seconds", type=float, default=2.0, help="audio seconds per utterance (about)")
    p.add_argument("--batch", type=int, default=16, help="utterances per step (all processes together)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per training (epoch 1 not counted)")
    p.add_argument("--reps", type=int, default=1, help="trainings of each of A and B")
    return p.parse_args()


def epoch_seconds(log: str) -> List[float]:
    """Wall seconds of epochs 2.. from the timestamps of ESPnet's epoch-results log lines."""
    stamps = {int(m.group(2)): datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
              for m in EPOCH_RESULTS.finditer(log)}
    return [(stamps[e] - stamps[e - 1]).total_seconds() for e in sorted(stamps) if e - 1 in stamps]


def train(args, root: Path, name: str, procs: int, threads: int) -> List[float]:
    """One training; returns its per-epoch wall seconds (epochs 2..)."""
    cmd = [sys.executable]
    extra = []
    if procs > 1:
        cmd += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
        extra = ["--dist_backend", "gloo", "--multiprocessing_distributed", "false"]
    cmd += ["-m", "espnet_ext.bin.asr_train",
            *train_args(root / "data" / "train", root / "data" / "valid", root / "tokens.txt",
                        root / "train.yaml", root / name, max_epoch=args.epochs), *extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"training {name} failed:\n{log[-3000:]}")
    seconds = epoch_seconds(log)
    print(f"  {name}: {len(seconds) + 1} epochs in {time.perf_counter() - t0:.1f} s, "
          f"epochs 2..: {', '.join(f'{s:.2f}' for s in seconds)} s", flush=True)
    return seconds


def main() -> int:
    args = parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_ddp_cpu_"))
    spread = (0.8 * args.seconds, 1.2 * args.seconds)
    make_tone_data_dir(root / "data", "train", n_utts=args.utts, seed=0, seconds=spread)
    make_tone_data_dir(root / "data", "valid", n_utts=max(args.procs, 4), seed=1, seconds=spread)
    write_char_token_list(root / "tokens.txt")
    with open(args.config) as f:
        config = yaml.safe_load(f)
    # Fixed batches of --batch utterances (the config's numel batches would hold the whole set).
    config.update(batch_type="unsorted", batch_size=args.batch, max_epoch=args.epochs,
                  keep_nbest_models=1, best_model_criterion=[["valid", "loss", "min"]])
    (root / "train.yaml").write_text(yaml.safe_dump(config))

    a_name, b_name = f"1 process x {args.procs} threads", f"{args.procs} processes x 1 thread"
    times = {a_name: [], b_name: []}
    print(f"# {args.config.name}: {args.utts} utterances of ~{args.seconds} s, batches of {args.batch} "
          f"({-(-args.utts // args.batch)} steps per epoch), {args.epochs} epochs per training")
    for r in range(args.reps):
        order = [(a_name, 1, args.procs), (b_name, args.procs, 1)]
        for name, procs, threads in (order if r % 2 == 0 else order[::-1]):
            times[name] += train(args, root, f"{'A' if procs == 1 else 'B'}{r}", procs, threads)
    a, b = statistics.median(times[a_name]), statistics.median(times[b_name])
    print(f"epoch wall time, A {a_name}: {a:.2f} s (median of {len(times[a_name])})")
    print(f"epoch wall time, B {b_name}: {b:.2f} s (median of {len(times[b_name])})")
    print(f"ratio B / A: {b / a:.2f}")
    print(f"(work dir {root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
