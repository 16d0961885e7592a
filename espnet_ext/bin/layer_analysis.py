"""Ambient layers across runs and sizes, and weight updates vs reset robustness (stage 7).

Reads finished experiment dirs (config.yaml, checkpoints/, the stage-6 scan
scan_<granularity>_<dataset>/) and writes analysis.md, analysis.json, weight_updates.tsv,
trajectories.tsv and PNG figures into --out_dir. Runs are grouped by their config.yaml (conv
norm, encoder blocks x dimension, seed). Directories that are no training run (e.g.
exp/asr_stats_*) are skipped. Prints the factual reading.

Examples (from the recipe directory):
    python -m espnet_ext.bin.layer_analysis --exp_dirs exp/asr_* --granularity block \\
        --dataset dev --out_dir exp/analysis_block_dev [--mode reinit --tau 0]
    # several granularities, one pass over the checkpoints:
    python -m espnet_ext.bin.layer_analysis --exp_dirs exp/asr_* --granularity block submodule \\
        --dataset dev --out_dir 'exp/analysis_{granularity}_dev'

Subcommand ``depth``: the depth sweep (egs2/synth_en/asr1/run_depth.sh), per norm and number of
encoder blocks: fraction of ambient groups per kind, where the ambient blocks sit in normalized
depth, dev/test error rates, stability across seeds and weight update vs reset; writes depth.json,
depth.md, depth_ambient_fraction.png and depth_ambient_positions.png into --out_dir:
    python -m espnet_ext.bin.layer_analysis depth --exp_dir exp \\
        --runs_glob 'asr_train_asr_conformer*_[0-9]*x64_seed*' --dataset dev \\
        --out_dir exp/analysis_depth_dev [--tau 10 | --mode rerandomize]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# No register_encoders() here: ESPnet builds a model only where a run's checkpoint 0 must be
# reconstructed, and that code registers the encoders itself.
from espnet_ext.bin.cli import fail, run_guarded, setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dirs", nargs="+", default=[],
                   help="experiment dirs or glob patterns (quoted globs are expanded too)")
    p.add_argument("--packed_model", type=Path, action="append", default=[],
                   help="an ESPnet packed model (archive or model dir) scanned with layer_scan "
                        "--packed_model; repeatable; read from its unpack dir (default "
                        "exp/packed_<name>, as layer_scan's)")
    p.add_argument("--granularity", nargs="+", default=["block"],
                   help="granularity of the scans to read; several (e.g. block submodule) share "
                        "one pass over the checkpoints (default: block)")
    p.add_argument("--dataset", required=True, help="scanned data set name, e.g. dev")
    p.add_argument("--out_dir", required=True,
                   help="output dir; {granularity} in it is replaced by the granularity (needed "
                        "with several, e.g. exp/analysis_{granularity}_dev)")
    p.add_argument("--mode", default=None, choices=["reinit", "rerandomize"],
                   help="reset to analyse (default: each scan's reference reset, i.e. reinit to "
                        "the smallest tau scanned)")
    p.add_argument("--tau", type=int, default=None,
                   help="checkpoint of --mode reinit (default: the smallest scanned)")
    p.add_argument("--reset_seed", type=int, default=None,
                   help="seed of --mode rerandomize (default: each run's first)")
    p.add_argument("--depth_bins", type=int, default=4,
                   help="normalized-depth bins for comparing model sizes (default: %(default)s)")
    p.add_argument("--allow_missing", action="store_true",
                   help="skip runs without a finished scan or checkpoints instead of failing")
    p.add_argument("--num_threads", type=int, default=1,
                   help="CPU threads for torch (default: %(default)s; the work is small tensor "
                        "arithmetic, where more threads only add hand-offs on a busy machine)")
    p.add_argument("--log_level", default="WARNING", help="logging level (default: %(default)s)")
    return p


#: First argument that selects the depth-sweep analysis.
DEPTH_COMMAND = "depth"


def get_depth_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="layer_analysis depth", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The depth sweep: ambient groups per kind and block positions vs encoder depth, "
                    "error rates, stability across seeds and weight updates, per norm and depth "
                    "(depth.json, depth.md, depth_ambient_fraction.png, depth_ambient_positions.png).")
    p.add_argument("--exp_dir", type=Path, required=True, help="the recipe's experiment dir, e.g. exp")
    p.add_argument("--runs_glob", required=True,
                   help="glob of the sweep's run dirs inside --exp_dir, e.g. "
                        "'asr_train_asr_conformer*_[0-9]*x64_seed*' (quote it)")
    p.add_argument("--dataset", required=True, help="scanned data set name, e.g. dev")
    p.add_argument("--out_dir", type=Path, required=True, help="output dir, e.g. exp/analysis_depth_dev")
    p.add_argument("--granularity", nargs="+", default=["block", "submodule"],
                   help="scan granularities to read (block positions need block; default: %(default)s)")
    p.add_argument("--mode", default=None, choices=["reinit", "rerandomize"],
                   help="reset to analyse (default: reinit when --tau is given, else each scan's "
                        "reference reset, i.e. reinit to the smallest tau scanned)")
    p.add_argument("--tau", type=int, default=None,
                   help="analyse re-initialization to this tau (default: each scan's reference "
                        "reset, the smallest tau scanned)")
    p.add_argument("--reset_seed", type=int, default=None,
                   help="seed of --mode rerandomize (default: each run's first)")
    p.add_argument("--decode_sets", nargs="+", default=None,
                   help="decoded sets whose error rates are reported (default: every set decoded)")
    p.add_argument("--decode_tag", default=None,
                   help="decoding dir to read (e.g. decode_asr_valid.acc.ave) when a run has several")
    p.add_argument("--depth_bins", type=int, default=4,
                   help="normalized-depth bins for comparing runs whose groups differ (default: %(default)s)")
    p.add_argument("--allow_missing", action="store_true",
                   help="skip runs without a finished scan or checkpoints instead of failing")
    p.add_argument("--max_base_error", type=float, default=50.0,
                   help="leave out runs whose scan baseline on --dataset is above this many percent "
                        "(the ambient rule's metric): they did not converge, and resetting their "
                        "layers says nothing; a negative value keeps every run (default: %(default)s)")
    p.add_argument("--num_threads", type=int, default=1, help="CPU threads for torch (default: %(default)s)")
    p.add_argument("--log_level", default="WARNING", help="logging level (default: %(default)s)")
    return p


def depth_main(argv=None) -> int:
    """``layer_analysis depth ...``: the depth-sweep analysis."""
    parser = get_depth_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if args.depth_bins < 1:
        parser.error("--depth_bins must be >= 1")
    if args.num_threads < 1:
        parser.error("--num_threads must be >= 1")
    if args.tau is not None and args.mode == "rerandomize":
        parser.error("--tau selects a re-initialization: use --reset_seed with --mode rerandomize")
    if args.reset_seed is not None and args.mode != "rerandomize":
        parser.error("--reset_seed needs --mode rerandomize")
    import torch

    torch.set_num_threads(args.num_threads)
    from espnet_ext.analysis.depth import DepthOptions, run_depth_analysis

    opts = DepthOptions(exp_dir=args.exp_dir, runs_glob=args.runs_glob, dataset=args.dataset,
                        out_dir=args.out_dir, granularities=list(dict.fromkeys(args.granularity)),
                        tau=args.tau, mode=args.mode, reset_seed=args.reset_seed,
                        decode_sets=args.decode_sets, decode_tag=args.decode_tag,
                        depth_bins=args.depth_bins, allow_missing=args.allow_missing,
                        max_base_error=args.max_base_error if args.max_base_error >= 0 else None)
    results = []
    status = run_guarded("layer_analysis depth", lambda: results.append(run_depth_analysis(opts)),
                         (ValueError, FileNotFoundError))
    if status:
        return status
    result = results[0]
    for path, why in result.skipped.items():
        print(f"skipped {path}: {why.removeprefix(f'{path}: ')}")
    for note in result.notes:
        print(f"note: {note}")
    for n in result.not_converged:
        print(f"left out (not converged): {n.run}: {n.metric} {n.base_error:g}% on {args.dataset}")
    for s in result.setups:
        fractions = ", ".join(f"{k.kind} {k.mean:.2f}" for ks in s.fractions.values() for k in ks)
        print(f"{s.setup} ({len(s.runs)} seeds): ambient fraction {fractions}")
    print(f"{result.out_dir}/depth.md ({len(result.figures)} figures)")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [DEPTH_COMMAND]:
        return depth_main(argv[1:])
    parser = get_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if args.tau is not None and args.mode != "reinit":
        parser.error("--tau needs --mode reinit")
    if args.reset_seed is not None and args.mode != "rerandomize":
        parser.error("--reset_seed needs --mode rerandomize")
    if args.depth_bins < 1:
        parser.error("--depth_bins must be >= 1")
    if args.num_threads < 1:
        parser.error("--num_threads must be >= 1")
    if not args.exp_dirs and not args.packed_model:
        parser.error("give --exp_dirs and/or --packed_model")
    for source in args.packed_model:
        from espnet_ext.experiment.experiment_dir import ExperimentError
        from espnet_ext.experiment.packed_model import open_packed_model

        try:
            args.exp_dirs.append(str(open_packed_model(source).exp.path))
        except ExperimentError as e:
            return fail("layer_analysis", e)
    import torch

    torch.set_num_threads(args.num_threads)
    from espnet_ext.analysis.layer_analysis import AnalysisOptions, run_layer_analysis

    if len(set(args.granularity)) > 1 and "{granularity}" not in args.out_dir:
        parser.error("several --granularity values need {granularity} in --out_dir, e.g. "
                     "exp/analysis_{granularity}_dev")
    opts = AnalysisOptions(
        exp_dirs=args.exp_dirs, granularities=args.granularity, dataset=args.dataset,
        out_dir=args.out_dir, mode=args.mode,
        value=args.tau if args.mode == "reinit" else args.reset_seed,
        depth_bins=args.depth_bins, allow_missing=args.allow_missing,
    )
    # Bad input: one clear message, no traceback.
    results = []
    status = run_guarded("layer_analysis", lambda: results.extend(run_layer_analysis(opts)),
                         (ValueError, FileNotFoundError))
    if status:
        return status
    for result in results:
        print(f"== {result.granularity}")
        for path, why in result.skipped.items():
            print(f"skipped {path}: {why.removeprefix(f'{path}: ')}")
        for line in result.reading:
            print(line)
        print(f"{result.out_dir}/analysis.md ({len(result.figures)} figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
