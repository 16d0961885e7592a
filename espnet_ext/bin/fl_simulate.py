"""Federated adaptation with (targeted) federated dropout, simulated with Flower.

Subcommands:
  split    split a data dir into a central domain and a withheld (adaptation) domain
  run      federated simulations from a centrally trained model, one per plan, side by side
  prepare  the run directories of `run` for Flower's `flwr run` (a SuperLink's simulation runtime
           or SuperNodes on several machines): writes each run's setup file, prints the commands
  sweep    the runs of several dropout rates targeted by one layer-reset scan (no dropout once,
           uniform, targeted and frozen if asked per rate; completed rates skipped), one table and plot
  compare  one table from finished runs (plan directories with seed<N>/ runs: mean ± spread and
           paired bootstrap intervals)

Run from the recipe directory (config.yaml paths are relative to it).

Examples:
    python -m espnet_ext.bin.fl_simulate split --data_dir data/train --out_dir data/fl \\
        --method duration --max_duration 2.0
    python -m espnet_ext.bin.fl_simulate run --exp_dir exp/asr_gn_seed1 \\
        --model_file valid.acc.best.pth --adapt_data data/fl/withheld \\
        --eval_data adapt=data/fl_test/withheld --eval_data orig=data/fl_test/central \\
        --plans none,uniform,targeted --rate 0.5 --match_cost params \\
        --scan_tsv exp/asr_gn_seed1/scan_block_dev/scan.tsv \\
        --rounds 20 --clients_per_round 4 --seeds 1,2,3 --out_dir exp/fl_gn_seed1
    python -m espnet_ext.bin.fl_simulate sweep --exp_dir exp/asr_gn_seed1 \
        --model_file valid.acc.ave.pth --adapt_data data/fl/withheld \
        --eval_data adapt=data/fl_test/withheld --scan_granularity block --scan_dataset dev \
        --rates 0.25,0.5 --seeds 1,2,3 --out_dir exp/fl_asr_gn_seed1

Exit status: 0 on success; 1 for bad input (one line naming what and how to fix), and when a
run merged no client update in any round (recorded in its results.json / results.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from espnet2.utils.types import str2bool

from espnet_ext.bin.cli import csv_list, fail, float_list, int_list, setup_logging, str_or_none


def _add_simulation_options(p: argparse.ArgumentParser, out_help: str) -> None:
    """Options of the simulations themselves, shared by `run` and `sweep`."""
    from espnet_ext.federated.plan import COST_METRICS, TARGET_MODES
    from espnet_ext.federated.units import GROUP_NORM_POLICIES, UNIT_KINDS

    p.add_argument("--model_file", default=None,
                   help="its weights, relative to --exp_dir or a path (default: valid.acc.best.pth; "
                        "with --packed_model its packed weights)")
    p.add_argument("--adapt_data", type=Path, required=True,
                   help="adaptation-domain Kaldi data dir; each speaker is a client")
    p.add_argument("--eval_data", action="append", default=[],
                   help="NAME=DIR (or DIR) to score the global model on; repeatable")
    p.add_argument("--out_dir", type=Path, required=True, help=out_help)
    p.add_argument("--plans", type=csv_list, default=["none", "uniform", "targeted"],
                   help="comma-separated: none, uniform, targeted, frozen (ambient groups not trained, "
                        "at the targeted plan's cost), file (default: none,uniform,targeted)")
    p.add_argument("--scan_dataset", default=None, help="which dataset's scan rows (default: first)")
    p.add_argument("--target_mode", default="label", choices=TARGET_MODES,
                   help="label: ambient at --rate, critical whole; scaled: by CER increase")
    p.add_argument("--match_cost", type=str_or_none, default="params",
                   help=f"match uniform and frozen to targeted on {' or '.join(COST_METRICS)} (bytes: "
                        "upload), or none: uniform at --rate, frozen on params (default: %(default)s)")
    p.add_argument("--unit_kinds", type=csv_list, default=list(UNIT_KINDS),
                   help="units that may be dropped: feed-forward units, attention heads, conv-module "
                        "channels, cgMLP channels, (E-)Branchformer merge channels "
                        f"(default: {','.join(UNIT_KINDS)})")
    p.add_argument("--group_norm_policy", default="auto", choices=GROUP_NORM_POLICIES,
                   help="how conv channels under group norm are dropped (default: %(default)s)")
    p.add_argument("--plan_file", type=Path, default=None, help="plan JSON for plan 'file'")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--clients_per_round", type=int, default=4)
    p.add_argument("--min_utts", type=int, default=1, help="speakers with fewer utterances are no clients")
    p.add_argument("--local_epochs", type=int, default=1)
    p.add_argument("--local_steps", type=int, default=0, help="> 0: this many local steps instead of epochs")
    p.add_argument("--batch_size", type=int, default=4, help="client batch size (utterances)")
    p.add_argument("--client_optim", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--client_lr", type=float, default=0.01)
    p.add_argument("--client_momentum", type=float, default=0.0)
    p.add_argument("--grad_clip", type=float, default=5.0)
    p.add_argument("--client_cpu_autocast", default="none",
                   help="none or bf16: the clients' forward under CPU bf16 autocast (as asr_train's "
                        "--cpu_autocast; ignored on a GPU)")
    p.add_argument("--client_cpu_dropout", default="torch", choices=["torch", "fast"],
                   help="fast: the clients' dropout masks from 16-bit random integers (as asr_train's "
                        "--cpu_dropout; CPU only; default: %(default)s)")
    p.add_argument("--client_cpu_channels_last", type=str2bool, default=False,
                   help="true: the clients' conv2d weights channels-last while they train (as "
                        "asr_train's --cpu_channels_last; CPU only; default: %(default)s)")
    p.add_argument("--server_lr", type=float, default=1.0)
    p.add_argument("--seeds", type=int_list, default=None,
                   help="several federated seeds, comma-separated (e.g. 1,2,3): each plan's runs go "
                        "to <plan>/seed<N>; the table gives mean ± std (min-max) per plan "
                        "and paired bootstrap intervals of targeted minus uniform / no dropout")
    p.add_argument("--bootstrap_resamples", type=int, default=2000,
                   help="resamples of each paired bootstrap interval (default: %(default)s)")
    p.add_argument("--failure_prob", type=float, default=0.0, help="injected client failure probability")
    p.add_argument("--backend", default="ray", choices=["ray", "local"],
                   help="ray: Flower simulation runtime; local: in this process (default: %(default)s)")
    p.add_argument("--num_workers", type=int, default=2, help="Ray worker processes (default: %(default)s)")
    p.add_argument("--parallel_runs", type=int, default=1,
                   help="with --backend local: runs (plans x seeds) at once, one process each")
    p.add_argument("--client_threads", type=int, default=1, help="torch threads per client")
    p.add_argument("--client_gpus", type=float, default=0.0, help="GPU fraction per Ray worker")
    p.add_argument("--ray_address", default=None, help="address of a running Ray cluster (scale-out)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--eval_every", type=int, default=0, help="score every N rounds (the last always)")
    p.add_argument("--eval_batch_size", type=int, default=16)
    p.add_argument("--round_timeout", type=float, default=3600.0, help="seconds to wait for a round")
    p.add_argument("--keep_checkpoints", type=int, default=2)
    p.add_argument("--no_progress", action="store_true", help="no progress bar")


def _simulation_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of `run_plans` (and `run_sweep`) from the shared simulation options."""
    from espnet_ext.federated.client import LocalTraining

    local = LocalTraining(epochs=args.local_epochs, steps=args.local_steps, batch_size=args.batch_size,
                          optim=args.client_optim, lr=args.client_lr, momentum=args.client_momentum,
                          grad_clip=args.grad_clip, cpu_autocast=args.client_cpu_autocast,
                          cpu_dropout=args.client_cpu_dropout, cpu_channels_last=args.client_cpu_channels_last)
    return dict(scan_dataset=args.scan_dataset, target_mode=args.target_mode, match_cost=args.match_cost,
                unit_kinds=tuple(args.unit_kinds), group_norm_policy=args.group_norm_policy,
                plan_file=args.plan_file, ray_address=args.ray_address, rounds=args.rounds,
                clients_per_round=args.clients_per_round, min_utts=args.min_utts, local=local,
                server_lr=args.server_lr, failure_prob=args.failure_prob,
                bootstrap_resamples=args.bootstrap_resamples, backend=args.backend,
                num_workers=args.num_workers, parallel_runs=args.parallel_runs, client_threads=args.client_threads,
                client_gpus=args.client_gpus, device=args.device, eval_every=args.eval_every,
                eval_batch_size=args.eval_batch_size, round_timeout=args.round_timeout,
                keep_checkpoints=args.keep_checkpoints, progress=not args.no_progress)


def get_parser() -> argparse.ArgumentParser:
    from espnet_ext.federated.partition import SPLIT_METHODS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("split", help="withhold a domain for federated adaptation")
    s.add_argument("--data_dir", type=Path, required=True, help="Kaldi data dir to split")
    s.add_argument("--out_dir", type=Path, required=True,
                   help="writes <out_dir>/central and <out_dir>/withheld")
    s.add_argument("--method", required=True, choices=SPLIT_METHODS,
                   help="field: by utt2<field> value; duration: by utt2dur; speakers: by speaker; "
                        "every_nth_speaker: every --every-th speaker (C byte order); last_chapter: "
                        "each speaker's last chapter (utt2chapter)")
    s.add_argument("--field", default="condition", help="metadata field (default: %(default)s)")
    s.add_argument("--values", type=csv_list, default=[], help="withheld field values, comma-separated")
    s.add_argument("--max_duration", type=float, default=None, help="withhold utterances shorter than this (s)")
    s.add_argument("--min_duration", type=float, default=None, help="withhold utterances at least this long (s)")
    s.add_argument("--speakers", type=csv_list, default=[], help="withheld speaker ids, comma-separated")
    s.add_argument("--every", type=int, default=None, help="every_nth_speaker: withhold every N-th speaker")
    s.add_argument("--central_name", default="central", help="name of the central part (default: %(default)s)")
    s.add_argument("--withheld_name", default="withheld", help="name of the withheld part (default: %(default)s)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the output dirs of an earlier split with other options or data (only "
                        "dirs this tool wrote and that hold nothing else)")

    r = sub.add_parser("run", help="federated simulations, one per plan")
    r.add_argument("--exp_dir", type=Path, default=None, help="centrally trained experiment dir")
    r.add_argument("--packed_model", type=Path, default=None,
                   help="instead of --exp_dir: an ESPnet packed model (archive or model dir), "
                        "unpacked into <out_dir>/packed_model")
    r.add_argument("--rate", type=float, default=0.5,
                   help="dropout rate: ambient groups (targeted), every block (uniform unmatched)")
    r.add_argument("--scan_tsv", type=Path, default=None, help="layer-reset scan result (targeted)")
    r.add_argument("--uniform_stacks", type=csv_list, default=["encoder", "decoder"],
                   help="blocks the uniform plan drops from (default: encoder,decoder; a CTC-scored "
                        "scan targets the encoder only)")
    r.add_argument("--seed", type=int, default=None,
                   help="one federated seed: runs go to <out_dir>/<plan> (default: 0)")
    _add_simulation_options(r, out_help="runs go to <out_dir>/<plan>")
    sub.add_parser("prepare", parents=[r], add_help=False,
                   help="the run directories of `run` with a setup file each (<run dir>/setup.pkl), "
                        "for `flwr run` on a Flower SuperLink; prints one flwr run command per run "
                        "(--backend, --num_workers, --parallel_runs, --client_gpus and --ray_address "
                        "do not apply)")

    w = sub.add_parser("sweep", help="federated simulations at several dropout rates, one table")
    w.add_argument("--exp_dir", type=Path, required=True, help="centrally trained experiment dir")
    w.add_argument("--rates", type=float_list, required=True,
                   help="dropout rates, comma-separated (e.g. 0.25,0.5): one client model size each")
    w.add_argument("--scan_dir", type=Path, default=None,
                   help="layer-reset scan dir targeting the dropout (scan.tsv and scan.json)")
    w.add_argument("--scan_granularity", default=None,
                   help="instead of --scan_dir: the run's scan at this granularity on --scan_dataset")
    w.add_argument("--uniform_stacks", type=csv_list, default=None,
                   help="blocks the uniform plan drops from (default: from the scan's scoring: "
                        "encoder for ctc_greedy, encoder,decoder for beam)")
    _add_simulation_options(w, out_help="runs go to <out_dir>/r<rate>/<plan>; the table to "
                                        "<out_dir>/results.md, the plot to <out_dir>/cer_vs_client_size.png")

    c = sub.add_parser("compare", help="one table from finished runs")
    c.add_argument("run_dirs", type=Path, nargs="+",
                   help="one table row each: a run directory (with results.json) or a plan directory "
                        "with seed<N>/ run directories (mean and spread over them)")
    c.add_argument("--seeds", type=int_list, default=None,
                   help="use only these seed<N>/ runs of each directory (default: all it holds)")
    c.add_argument("--bootstrap_resamples", type=int, default=2000,
                   help="resamples of each paired bootstrap interval (default: %(default)s)")
    c.add_argument("--bootstrap_seed", type=int, default=0,
                   help="seed of the resampling (default: %(default)s)")
    c.add_argument("--out", type=Path, required=True, help="markdown file to write")
    c.add_argument("--plot", type=Path, default=None, help="PNG: error rate vs client model size")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    from espnet_ext.data.kaldi import DataDirError
    from espnet_ext.federated import FederatedExtraMissing, require_flower
    from espnet_ext.federated.modelio import ModelSetupError
    from espnet_ext.federated.options import OptionsError, parse_eval_data
    from espnet_ext.federated.partition import PartitionError
    from espnet_ext.federated.plan import PlanError
    from espnet_ext.federated.results import ResultsError
    from espnet_ext.federated.simulation import NoUpdateError
    from espnet_ext.scan.result import ScanResultError

    try:
        if args.command == "split":
            from espnet_ext.federated.partition import split_withheld_domain

            split = split_withheld_domain(args.data_dir, args.method, field=args.field, values=args.values,
                                          max_duration=args.max_duration, min_duration=args.min_duration,
                                          speakers=args.speakers, every=args.every)
            central, withheld = split.write(args.out_dir, args.central_name, args.withheld_name,
                                            overwrite=args.overwrite, overwrite_hint="--overwrite")
            print(f"{split.rule}: {len(split.withheld.utt2spk)} utterances withheld -> {withheld}, "
                  f"{len(split.central.utt2spk)} central -> {central}")
        elif args.command in ("run", "prepare"):
            # one clear error before anything is written
            require_flower(ray=args.command == "run" and args.backend == "ray")
            from espnet_ext.federated.simulation import prepare_plans, run_plans

            seed_options = {"seeds": args.seeds} if args.seeds is not None else {}
            if args.seed is not None or args.seeds is None:
                seed_options["seed"] = 0 if args.seed is None else args.seed
            if (args.exp_dir is None) == (args.packed_model is None):
                raise OptionsError("give one of --exp_dir and --packed_model")
            if args.packed_model is not None:
                from espnet_ext.experiment.packed_model import open_packed_model

                packed = open_packed_model(args.packed_model, args.out_dir / "packed_model")
                args.exp_dir = packed.exp.path
                args.model_file = args.model_file or str(packed.model_file)
            runs = (args.exp_dir, args.model_file or "valid.acc.best.pth", args.adapt_data,
                    parse_eval_data(args.eval_data), args.out_dir, args.plans)
            options = dict(rate=args.rate, scan_tsv=args.scan_tsv, uniform_stacks=tuple(args.uniform_stacks),
                           **seed_options, **_simulation_options(args))
            if args.command == "run":
                print(run_plans(*runs, **options))
            else:
                from espnet_ext.federated.setup_file import flwr_run_command, write_setup_file

                options.pop("ray_address")
                setups, _, _ = prepare_plans(*runs, **dict(options, backend="flwr"))
                for setup in setups:
                    print(flwr_run_command(write_setup_file(setup)))
        elif args.command == "sweep":
            require_flower(ray=args.backend == "ray")  # one clear error before anything is written
            from espnet_ext.federated.sweep import locate_scan, run_sweep

            scan = locate_scan(args.exp_dir, args.scan_dir, args.scan_granularity, args.scan_dataset)
            print(run_sweep(args.exp_dir, args.model_file or "valid.acc.best.pth", args.adapt_data,
                            parse_eval_data(args.eval_data), scan, args.rates, args.out_dir, plans=args.plans,
                            seeds=args.seeds, uniform_stacks=args.uniform_stacks, **_simulation_options(args)))
        else:
            from espnet_ext.federated.results import write_comparison

            rows = (args.run_dirs if args.seeds is None else
                    [[d / f"seed{s}" for s in args.seeds] for d in args.run_dirs])
            print(write_comparison(rows, args.out, plot=args.plot,
                                   resamples=args.bootstrap_resamples, bootstrap_seed=args.bootstrap_seed))
    except (OptionsError, PlanError, PartitionError, ModelSetupError, DataDirError, FileNotFoundError,
            ResultsError, ScanResultError, FederatedExtraMissing, NoUpdateError) as e:
        return fail("fl_simulate", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
