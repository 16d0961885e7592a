"""Layer-reset scan of a trained model: which layers are ambient, which critical.

Resets every layer group of the model (re-initialization to checkpoint tau, re-randomization),
scores each variant on the data dirs in one process, and writes scan.tsv, scan.json, scan.md
and heatmaps into --out_dir. Resumable; a finished scan re-run computes nothing. Run from the
recipe directory (config.yaml paths are relative to it). Prints one summary line per data dir.

Example:
    python -m espnet_ext.bin.layer_scan --exp_dir exp/asr_conformer_seed1 \\
        --data_dir data/dev --out_dir exp/asr_conformer_seed1/scan_block_dev \\
        --granularity block --modes reinit,rerandomize --taus 0,1,last
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from espnet_ext.asr.registration import register_encoders
from espnet_ext.bin.cli import (
    boolean,
    csv_list,
    fail,
    float_or_none,
    int_list,
    run_guarded,
    setup_logging,
)

ADAPTIVE_DEFAULT = False


def get_parser() -> argparse.ArgumentParser:
    from espnet_ext.layers.layer_map import GRANULARITIES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dir", type=Path, default=None,
                   help="trained experiment dir (espnet_ext's or ESPnet's own training)")
    p.add_argument("--packed_model", type=Path, default=None,
                   help="instead of --exp_dir: an ESPnet packed model (espnet2.bin.pack archive) or "
                        "model dir; unpacked into --unpack_dir, never in place")
    p.add_argument("--unpack_dir", type=Path, default=None,
                   help="where --packed_model is unpacked (default: exp/packed_<name>)")
    p.add_argument("--data_dir", type=Path, action="append", required=True,
                   help="Kaldi data dir to score on; repeat for several (scored separately)")
    p.add_argument("--out_dir", type=Path, default=None,
                   help="output dir (default: <exp_dir>/scan_<granularity>_<first data dir name>)")
    p.add_argument("--granularity", default="block", choices=GRANULARITIES,
                   help="what a layer is (default: %(default)s)")
    p.add_argument("--pattern", action="append", default=[],
                   help="regular expression for --granularity pattern (repeatable); capturing "
                        "parentheses split groups, e.g. 'encoder\\.encoders\\.(\\d+)\\.conv_module'")
    p.add_argument("--groups", type=csv_list, default=None,
                   help="comma-separated group names to scan (default: all)")
    p.add_argument("--modes", type=csv_list, default=["reinit", "rerandomize"],
                   help="comma-separated: reinit, rerandomize (default: both)")
    p.add_argument("--taus", type=csv_list, default=["0"],
                   help="checkpoints for reinit: comma-separated epochs, 'last', 'all' (default: 0)")
    p.add_argument("--seeds", type=int_list, default=None,
                   help="comma-separated re-randomization seeds (default: training seed + 1)")
    p.add_argument("--scoring", default="ctc_greedy", choices=["ctc_greedy", "beam"],
                   help="ctc_greedy: fast, decoder not scanned; beam: ESPnet's joint CTC/attention "
                        "beam search (default: %(default)s)")
    p.add_argument("--decode_config", type=Path, default=None,
                   help="YAML decoding options for --scoring beam (e.g. conf/decode_asr.yaml)")
    p.add_argument("--model_file", default=None,
                   help="weights to scan, relative to --exp_dir or a path (default: "
                        "valid.acc.ave.pth; with --packed_model its packed weights)")
    p.add_argument("--batch_size", type=int, default=16, help="utterances per batch (default: %(default)s)")
    p.add_argument("--metric", default="cer", choices=["cer", "wer"],
                   help="error rate that labels layers (default: %(default)s)")
    p.add_argument("--threshold_abs", type=float_or_none, default=2.0,
                   help="ambient if the error rises by at most this many points ('none' to disable; "
                        "default: %(default)s)")
    p.add_argument("--threshold_rel", type=float_or_none, default=0.10,
                   help="... or by at most this fraction of the baseline error ('none' to disable; "
                        "default: %(default)s)")
    p.add_argument("--threshold_combine", default="any", choices=["any", "all"],
                   help="any: within either threshold; all: within both (default: %(default)s)")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="confidence of the paired bootstrap intervals on the deltas; a layer whose "
                        "interval straddles the threshold is labelled uncertain (default: %(default)s)")
    p.add_argument("--bootstrap_samples", type=int, default=1000,
                   help="bootstrap resamples per interval (default: %(default)s)")
    p.add_argument("--bootstrap_seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    p.add_argument("--adaptive", type=boolean, default=ADAPTIVE_DEFAULT,
                   help="true: score each variant on growing prefixes of a seeded utterance order "
                        "(16, 32, 64, ..., all) and stop once its label is decided at the "
                        "Bonferroni-corrected confidence; false: every variant on every utterance "
                        "(default: %(default)s)")
    p.add_argument("--adaptive_first", type=int, default=16,
                   help="utterances in the adaptive scan's first look, doubled at each further look "
                        "(default: %(default)s)")
    p.add_argument("--ngpu", type=int, default=0, choices=[0, 1], help="0: CPU, 1: one GPU")
    p.add_argument("--num_threads", type=int, default=0,
                   help="CPU threads for torch (0: torch's default); 1 avoids contention on busy "
                        "machines")
    p.add_argument("--max_cached_checkpoints", type=int, default=4,
                   help="checkpoints held in memory at once (default: %(default)s)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument("--log_level", default="WARNING", help="logging level (default: %(default)s)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    from espnet_ext.scan.labels import AmbientCriterion
    from espnet_ext.scan.scanner import ScanOptions, run_scan

    try:
        criterion = AmbientCriterion(args.metric, args.threshold_abs, args.threshold_rel,
                                     args.threshold_combine)
    except ValueError as e:
        get_parser().error(str(e))
    from espnet_ext.evaluation.bootstrap import check_bootstrap_options

    try:
        check_bootstrap_options(args.confidence, args.bootstrap_samples)
    except ValueError as e:
        get_parser().error(str(e))
    if args.granularity == "pattern" and not args.pattern:
        get_parser().error("--granularity pattern needs at least one --pattern")
    if args.pattern and args.granularity != "pattern":
        get_parser().error("--pattern needs --granularity pattern")
    if (args.exp_dir is None) == (args.packed_model is None):
        get_parser().error("give one of --exp_dir and --packed_model")
    model_file = args.model_file or "valid.acc.ave.pth"
    if args.packed_model is not None:
        from espnet_ext.experiment.experiment_dir import ExperimentError
        from espnet_ext.experiment.packed_model import open_packed_model

        try:
            packed = open_packed_model(args.packed_model, args.unpack_dir)
        except ExperimentError as e:
            return fail("layer_scan", e)
        args.exp_dir = packed.exp.path
        model_file = args.model_file or str(packed.model_file)
    from espnet_ext.scan.result import scan_dir

    out_dir = args.out_dir or scan_dir(args.exp_dir, args.granularity, args.data_dir[0].name)
    import torch

    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    if args.ngpu > 0:
        if not torch.cuda.is_available():
            get_parser().error("--ngpu 1 but no CUDA device is available")
    opts = ScanOptions(
        exp_dir=args.exp_dir, data_dirs=args.data_dir, out_dir=out_dir,
        granularity=args.granularity, patterns=args.pattern, groups=args.groups,
        modes=args.modes, taus=args.taus, seeds=args.seeds, scoring=args.scoring,
        decode_config=args.decode_config, model_file=model_file,
        batch_size=args.batch_size, device="cuda" if args.ngpu > 0 else "cpu",
        criterion=criterion, max_cached_checkpoints=args.max_cached_checkpoints,
        progress=not args.no_progress, confidence=args.confidence,
        bootstrap_samples=args.bootstrap_samples, bootstrap_seed=args.bootstrap_seed,
        adaptive=args.adaptive, adaptive_first=args.adaptive_first,
    )
    register_encoders()
    # Bad input (and a config ESPnet cannot build): one clear line, no traceback.
    results = []
    status = run_guarded("layer_scan", lambda: results.append(run_scan(opts)),
                         (ValueError, FileNotFoundError, KeyError))
    if status:
        return status
    result = results[0]
    for line in result.summary:
        print(line)
    print(f"{result.out_dir}/scan.md ({result.computed} variants computed in {result.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
