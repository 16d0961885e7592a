"""Adaptive vs full layer-reset scan, measured side by side in one run on the same model and data.

Both scans score the same variants (groups x reinit taus + rerandomize) with the same bootstrap
options; the full scan scores every variant on every utterance, the adaptive one on growing
prefixes of a seeded utterance order until the label is decided. Printed:

* utterance evaluations (utterances decoded for variants, summed over variants) and their ratio
  full / adaptive (goal >= 3x on the default recipe's models);
* wall time of the variant loops and of the whole scans, ratio adaptive / full;
* label agreement: the fraction of variants whose interval label (ambient / critical /
  uncertain, 'uncertain' counted as a label of its own) is the same in both scans (goal >= 98%),
  the same for the point label (ambient / critical), and every disagreement.

Without --exp_dir, a small Conformer is trained for a few epochs on synthetic tone data first
(a smoke check: its labels say nothing about real models); its scan set holds its own training
utterances followed by unseen ones, so that variants differ in how clearly they are decided.

    python bench/bench_adaptive_scan.py                       # own small model (~2 min on 2 cores)
    python bench/bench_adaptive_scan.py --exp_dir exp/asr_train_asr_conformer_seed1 \\
        --data_dir data/dev --granularity submodule           # from a recipe dir
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from scan_bench_inputs import scan_inputs  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--exp_dir", type=Path, default=None, help="trained experiment dir (default: train one)")
    p.add_argument("--data_dir", type=Path, default=None, help="data dir to scan (with --exp_dir)")
    p.add_argument("--model_file", default=None, help="weights to scan (default: the last epoch)")
    p.add_argument("--granularity", default="block")
    p.add_argument("--taus", default="0,last", help="reinit taus (comma-separated)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--bootstrap_samples", type=int, default=1000)
    p.add_argument("--first_look", type=int, default=16, help="utterances in the adaptive scan's first look")
    p.add_argument("--utts", type=int, default=64, help="scan set size of the bench's own model")
    p.add_argument("--epochs", type=int, default=12, help="training epochs of the bench's own model")
    p.add_argument("--conv_norm", default="batch_norm", choices=["batch_norm", "group_norm"],
                   help="the bench's own model: ESPnet's Conformer (batch_norm) or the padding-aware "
                        "norm_conformer with group norm")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--work_dir", type=Path, default=None, help="where to write (default: a temp dir)")
    return p.parse_args()


def train_small_model(root: Path, utts: int, epochs: int, conv_norm: str = "batch_norm"):
    """Train the bench's own model: (exp dir, scan data dir). Uses the tests' data helpers."""
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import make_tone_data_dir, tiny_asr_config, train_args, write_char_token_list

    from espnet_ext.experiment.training import CheckpointKeepingASRTask

    n_train = utts // 2
    train = make_tone_data_dir(root / "data", "train", n_utts=n_train, seed=0)
    valid = make_tone_data_dir(root / "data", "valid", n_utts=4, seed=1)
    # Same generator and seed: its first n_train utterances are the training utterances.
    scan_set = make_tone_data_dir(root / "data", "dev", n_utts=utts, seed=0)
    tokens = write_char_token_list(root / "tokens.txt")
    if conv_norm == "batch_norm":
        config = tiny_asr_config(output_size=32, attention_heads=2, linear_units=64, num_blocks=4)
    else:
        config = tiny_asr_config("norm_conformer", output_size=32, attention_heads=2, linear_units=64,
                                 num_blocks=4, conv_norm_type="group_norm", conv_norm_groups=8)
    config["batch_size"] = 8
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    CheckpointKeepingASRTask.main(cmd=train_args(train, valid, tokens, root / "train.yaml", root / "exp",
                                                 max_epoch=epochs))
    return root / "exp", scan_set


def main():
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_adaptive_scan_"))
    work.mkdir(parents=True, exist_ok=True)
    from espnet_ext.scan.scanner import ScanOptions, run_scan

    exp_dir, data_dir, model_file = scan_inputs(
        args, lambda: train_small_model(work / "model", args.utts, args.epochs, args.conv_norm))

    def scan(adaptive: bool, out: Path, groups=None):
        shutil.rmtree(out, ignore_errors=True)
        opts = ScanOptions(exp_dir=exp_dir, data_dirs=[data_dir], out_dir=out, model_file=model_file,
                           granularity=args.granularity, taus=args.taus.split(","), groups=groups,
                           modes=["reinit", "rerandomize"], batch_size=args.batch_size,
                           progress=False, confidence=args.confidence,
                           bootstrap_samples=args.bootstrap_samples, adaptive=adaptive,
                           adaptive_first=args.first_look)
        t = time.perf_counter()
        result = run_scan(opts)
        return result, time.perf_counter() - t

    import json

    def loop_seconds(result):
        return json.loads((result.out_dir / "scan.json").read_text())["timing"]["variants_s"]

    # Warm-up (imports, first model build, caches) on the CTC layer alone, then the two scans.
    scan(False, work / "scan_warmup", groups=["ctc"])
    full, full_s = scan(False, work / "scan_full")
    adaptive, adaptive_s = scan(True, work / "scan_adaptive")

    f = {r.variant_key: r for r in full.rows}
    a = {r.variant_key: r for r in adaptive.rows}
    keys = [k for k in f if k in a]
    same_ci = [k for k in keys if f[k].label_ci == a[k].label_ci]
    same_point = [k for k in keys if f[k].label == a[k].label]
    n = full.baseline[full.rows[0].dataset]["utterances"]

    def counts(rows, attr):
        out = {}
        for r in rows:
            out[getattr(r, attr)] = out.get(getattr(r, attr), 0) + 1
        return ", ".join(f"{v} {k}" for k, v in sorted(out.items()))

    print(f"model: {exp_dir} ({model_file}); data: {data_dir} ({n} utterances); {len(keys)} variants "
          f"({args.granularity} groups x reinit taus {args.taus} + rerandomize); batch_size "
          f"{args.batch_size}; {torch.get_num_threads()} thread(s); {100 * args.confidence:g}% "
          f"confidence, {args.bootstrap_samples} resamples; adaptive looks from {args.first_look}")
    print(f"baseline: WER {full.baseline[full.rows[0].dataset]['WER']:.2f}%, "
          f"CER {full.baseline[full.rows[0].dataset]['CER']:.2f}%")
    n_full, n_adaptive = full.utterance_evaluations, adaptive.utterance_evaluations
    print(f"utterance evaluations: full {n_full}, adaptive {n_adaptive}  -> "
          f"{n_full / max(n_adaptive, 1):.2f}x fewer   goal >= 3x")
    loop_full, loop_adaptive = loop_seconds(full), loop_seconds(adaptive)
    print(f"wall time, variant loop: full {loop_full:.2f} s, adaptive {loop_adaptive:.2f} s "
          f"-> ratio adaptive/full {loop_adaptive / max(loop_full, 1e-9):.2f}")
    print(f"wall time, whole scan:   full {full_s:.2f} s, adaptive {adaptive_s:.2f} s "
          f"-> ratio adaptive/full {adaptive_s / full_s:.2f}")
    print(f"label agreement (ambient/critical/uncertain): {len(same_ci)}/{len(keys)} = "
          f"{100 * len(same_ci) / len(keys):.1f}%   goal >= 98%")
    print(f"point-label agreement (ambient/critical):     {len(same_point)}/{len(keys)} = "
          f"{100 * len(same_point) / len(keys):.1f}%")
    print(f"labels: full {counts(full.rows, 'label_ci')}; adaptive {counts(adaptive.rows, 'label_ci')}")
    stops = {}
    for r in adaptive.rows:
        stops[r.n_utts] = stops.get(r.n_utts, 0) + 1
    print("adaptive variants by utterances scored: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(stops.items())))
    for k in keys:
        if f[k].label_ci != a[k].label_ci or f[k].label != a[k].label:
            print(f"  differs: {' '.join(k)}: full {f[k].label}/{f[k].label_ci} "
                  f"dCER {f[k].delta_cer:+.2f} [{f[k].delta_cer_lo:+.2f}, {f[k].delta_cer_hi:+.2f}]; "
                  f"adaptive {a[k].label}/{a[k].label_ci} on {a[k].n_utts} utts dCER {a[k].delta_cer:+.2f} "
                  f"[{a[k].delta_cer_lo:+.2f}, {a[k].delta_cer_hi:+.2f}]")
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
