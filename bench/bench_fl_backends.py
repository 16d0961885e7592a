"""Stage 8's federated runs: Ray one run at a time vs in-process runs side by side, in one bench.

A = ``--backend ray`` (Flower's simulation runtime: Ray starts per run, the clients of a run in
``--num_workers`` worker processes of ``--client_threads`` threads), runs one after another, as
the recipe's stage 8 ran them. B = ``--backend local --parallel_runs N`` (each run in one process
of ``--client_threads`` threads, clients one after another, N runs at once). Both do the same
runs (plans x seeds, same rounds and options) on the same cores; A and B alternate (ABAB...) so
load from other processes hits both alike. Prints the wall time of each repetition, the medians,
the ratio B / A, and whether both gave the same final scores.

    python bench/bench_fl_backends.py --exp_dir exp/asr_train_asr_conformer_gn_seed1 \\
        --model_file valid.acc.ave.pth --adapt_data data/fl_adapt/train \\
        --eval_data fl_adapt_test=data/fl_adapt/test \\
        --scan_tsv exp/asr_train_asr_conformer_gn_seed1/scan_submodule_dev/scan.tsv   # in a recipe dir
"""

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from espnet_ext.bin.cli import csv_list, int_list


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--exp_dir", type=Path, required=True)
    p.add_argument("--model_file", default="valid.acc.ave.pth")
    p.add_argument("--adapt_data", type=Path, required=True)
    p.add_argument("--eval_data", action="append", default=[], help="name=data_dir, repeatable")
    p.add_argument("--scan_tsv", type=Path, default=None, help="scan.tsv (plans uniform/targeted)")
    p.add_argument("--plans", type=csv_list, default=["none", "targeted"])
    p.add_argument("--seeds", type=int_list, default=[1, 2])
    p.add_argument("--rate", type=float, default=0.5)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--clients_per_round", type=int, default=4)
    p.add_argument("--num_workers", type=int, default=2, help="A: Ray workers per run")
    p.add_argument("--parallel_runs", type=int, default=2, help="B: runs at once")
    p.add_argument("--client_threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=2, help="repetitions of A and B (ABAB...)")
    p.add_argument("--work_dir", type=Path, default=None)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    from espnet_ext.federated.client import LocalTraining
    from espnet_ext.federated.options import parse_eval_data
    from espnet_ext.federated.simulation import run_plans

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_fl_backends_"))
    local = LocalTraining(epochs=1, batch_size=4, optim="sgd", lr=0.05)
    common = dict(rate=args.rate, scan_tsv=args.scan_tsv, match_cost="params", uniform_stacks=("encoder",),
                  seeds=args.seeds, rounds=args.rounds, clients_per_round=args.clients_per_round,
                  local=local, client_threads=args.client_threads, num_workers=args.num_workers,
                  progress=False, bootstrap_resamples=200)
    sides = {"A ray, one run at a time": dict(backend="ray"),
             f"B local, {args.parallel_runs} runs at once": dict(backend="local",
                                                                 parallel_runs=args.parallel_runs)}
    times = {name: [] for name in sides}
    finals = {}
    for rep in range(args.reps):
        for i, (name, extra) in enumerate(sides.items()):
            out = work / f"side{i}_rep{rep}"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            run_plans(args.exp_dir, args.model_file, args.adapt_data, parse_eval_data(args.eval_data), out,
                      args.plans, **common, **extra)
            times[name].append(time.perf_counter() - t0)
            finals[name] = {str(p.relative_to(out)): json.loads(p.read_text())["scores"]["final"]
                            for p in sorted(out.glob("*/seed*/results.json"))}
            print(f"rep {rep + 1} {name}: {times[name][-1]:.1f} s", flush=True)
    runs = len(args.plans) * len(args.seeds)
    (a_name, a), (b_name, b) = [(n, statistics.median(t)) for n, t in times.items()]
    print(f"{runs} runs (plans {','.join(args.plans)} x seeds {','.join(map(str, args.seeds))}), "
          f"{args.rounds} rounds x {args.clients_per_round} clients, {args.client_threads} thread(s) per "
          f"process; medians of {args.reps}")
    print(f"{a_name}: {a:.1f} s ({a / runs:.1f} s per run)")
    print(f"{b_name}: {b:.1f} s ({b / runs:.1f} s per run)")
    print(f"ratio B / A = {b / a:.2f}; same final scores: {finals[a_name] == finals[b_name]}")
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
