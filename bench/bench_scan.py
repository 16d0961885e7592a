"""Cost of a layer-reset scan, measured side by side in one run.

(a) The scan (one process, features and encoder prefix reused) against V full evaluations (the
    same engine and batching, every variant recomputed from audio: frontend, whole encoder,
    decoding). Goal: ratio <= 0.6.
(b) The scan against a loop that, per variant, writes the variant's weights to a model file and
    runs ESPnet's decoding CLI (`python -m espnet_ext.bin.asr_inference`, CTC-only search with
    beam 1, the CLI's cheapest setting) and scores its output. The CLI loop is run for
    --cli_variants variants and extrapolated to V (printed as an estimate). Goal: >= 10x.

Without --exp_dir, a small Conformer (--blocks x 64 dims, batch-norm conv module) is trained
for a few epochs on synthetic tone data first; its weights are poor, but the cost of a scan does
not depend on the quality of the model.

    python bench/bench_scan.py                       # trains its own model (~1 min on 2 cores)
    python bench/bench_scan.py --exp_dir exp/asr_train_asr_conformer_seed1 \\
        --data_dir data/dev --model_file valid.acc.ave.pth   # from a recipe dir
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
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
    p.add_argument("--data_dir", type=Path, default=None, help="data dir to score (with --exp_dir)")
    p.add_argument("--model_file", default=None, help="weights to scan (default: the last epoch)")
    p.add_argument("--blocks", type=int, default=6, help="encoder blocks of the bench's own model")
    p.add_argument("--granularity", default="block")
    p.add_argument("--taus", default="0,last", help="reinit taus (comma-separated)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--reps", type=int, default=3, help="repetitions of (a); medians are printed")
    p.add_argument("--cli_variants", type=int, default=2, help="variants decoded with the CLI")
    p.add_argument("--threads", type=int, default=1, help="CPU threads, here and in the CLI")
    p.add_argument("--work_dir", type=Path, default=None, help="where to write (default: a temp dir)")
    return p.parse_args()


def train_small_model(root: Path, blocks: int):
    """Train the bench's own model: (exp dir, dev data dir). Uses the tests' data helpers."""
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import make_tone_data_dir, tiny_asr_config, train_args, write_char_token_list

    from espnet_ext.experiment.training import CheckpointKeepingASRTask

    train = make_tone_data_dir(root / "data", "train", n_utts=24, seed=0)
    dev = make_tone_data_dir(root / "data", "dev", n_utts=24, seed=1)
    tokens = write_char_token_list(root / "tokens.txt")
    config = tiny_asr_config(output_size=64, attention_heads=4, linear_units=256, num_blocks=blocks,
                             cnn_module_kernel=15)
    config["batch_size"] = 8
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    CheckpointKeepingASRTask.main(cmd=train_args(train, dev, tokens, root / "train.yaml", root / "exp",
                                                 max_epoch=3))
    return root / "exp", dev


def cli_variant_seconds(exp_dir: Path, trained, data_dir: Path, variants, work: Path, threads: int):
    """Per-variant seconds of the CLI loop (write weights, decode with the CLI, score)."""
    from espnet_ext.layers import load_state_dict_file, reset_to_checkpoint
    from espnet_ext.evaluation.scoring import score_files

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    times = []
    for i, (group, tau) in enumerate(variants):
        t0 = time.perf_counter()
        ckpt = load_state_dict_file(exp_dir / "checkpoints" / f"{tau}epoch.pth")
        model_path = work / f"variant{i}.pth"
        torch.save(reset_to_checkpoint(trained, group, ckpt), model_path)
        out = work / f"cli_decode{i}"
        cmd = [sys.executable, "-m", "espnet_ext.bin.asr_inference", "--ngpu", "0",
               "--batch_size", "1", "--beam_size", "1", "--ctc_weight", "1.0", "--lm_weight", "0.0",
               "--data_path_and_name_and_type", f"{data_dir}/wav.scp,speech,sound",
               "--asr_train_config", str(exp_dir / "config.yaml"), "--asr_model_file", str(model_path),
               "--output_dir", str(out)]
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        score_files(data_dir / "text", out / "1best_recog" / "text")
        times.append(time.perf_counter() - t0)
    return times


def main():
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_scan_"))
    work.mkdir(parents=True, exist_ok=True)
    from espnet_ext.scan.scanner import ScanOptions, run_scan
    from espnet_ext.layers import build_layer_map, load_state_dict_file

    exp_dir, data_dir, model_file = scan_inputs(
        args, lambda: train_small_model(work / "model", args.blocks))
    model_path = Path(model_file) if Path(model_file).is_file() else exp_dir / model_file
    trained = load_state_dict_file(model_path)

    def scan(reuse: str, out: Path):
        shutil.rmtree(out, ignore_errors=True)
        opts = ScanOptions(exp_dir=exp_dir, data_dirs=[data_dir], out_dir=out, model_file=model_file,
                           granularity=args.granularity, taus=args.taus.split(","),
                           modes=["reinit", "rerandomize"], batch_size=args.batch_size,
                           reuse=reuse, progress=False)
        t = time.perf_counter()
        result = run_scan(opts)
        total = time.perf_counter() - t
        timing = json.loads((out / "scan.json").read_text())["timing"]
        return result, total, timing["variants_s"]

    # Warm-up (imports, first model build), then both measured alternately; medians of --reps.
    scan("prefix", work / "scan_warmup")
    fast_runs, full_runs = [], []
    for _ in range(args.reps):
        fast_runs.append(scan("prefix", work / "scan_prefix"))
        full_runs.append(scan("none", work / "scan_full"))
    fast, full = fast_runs[0][0], full_runs[0][0]
    fast_total = statistics.median(r[1] for r in fast_runs)
    fast_loop = statistics.median(r[2] for r in fast_runs)
    full_total = statistics.median(r[1] for r in full_runs)
    full_loop = statistics.median(r[2] for r in full_runs)
    same = [(r.group, r.mode, r.tau, r.seed, r.wer, r.cer) for r in fast.rows] == \
           [(r.group, r.mode, r.tau, r.seed, r.wer, r.cer) for r in full.rows]
    v = fast.computed
    n_params = sum(t.numel() for t in trained.values())
    print(f"model: {exp_dir} ({model_file}, {n_params:,} values); data: {data_dir}; "
          f"{v} variants ({args.granularity} groups x reinit taus {args.taus} + rerandomize); "
          f"batch_size {args.batch_size}; {torch.get_num_threads()} thread(s); medians of {args.reps} runs")
    print(f"(a) scan with prefix reuse: {fast_total:.2f} s in all, {fast_loop:.2f} s for the variants")
    print(f"    {v} x full evaluation:    {full_total:.2f} s in all, {full_loop:.2f} s for the variants"
          f"  (same scores: {same})")
    print(f"    ratio scan / full = {fast_loop / full_loop:.2f} (variants), "
          f"{fast_total / full_total:.2f} (in all)   goal <= 0.6")

    groups = [g for g in build_layer_map(trained, args.granularity) if g.stack != "decoder"]
    variants = [(g, 0) for g in groups[: args.cli_variants]]
    cli = cli_variant_seconds(exp_dir, trained, data_dir, variants, work, args.threads)
    per = sum(cli) / len(cli)
    print(f"(b) asr_inference CLI loop: {per:.2f} s per variant (mean of {len(cli)} runs: "
          f"{', '.join(f'{t:.2f}' for t in cli)} s), estimated {per * v:.1f} s for {v} variants")
    print(f"    speed-up of the scan = {per * v / fast_total:.1f}x (estimate)   goal >= 10x")
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
