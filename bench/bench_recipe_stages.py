"""Stage-by-stage wall time and peak memory of a recipe, run in a scratch copy.

Each stage runs as its own process tree (`run.sh --stage N --stop_stage N`); peak memory is the
largest resident set of any process of that stage (getrusage of the waited-for children).

    python bench/bench_recipe_stages.py                      # default synth_en recipe (~20+ min)
    python bench/bench_recipe_stages.py --tiny               # 3 speakers, tiny model (~2 min)
    python bench/bench_recipe_stages.py --keep /tmp/bench    # keep the scratch copy
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from helpers import make_recipe_workdir  # noqa: E402

STAGE_NAMES = {1: "data", 2: "tokens", 3: "stats", 4: "training", 5: "decoding+scoring",
               6: "layer-reset scan", 7: "analysis", 8: "federated adaptation"}
# Runs one stage and reports its peak RSS: ru_maxrss of RUSAGE_CHILDREN is the largest
# resident set among the waited-for descendants, in KiB on Linux.
_MEASURE = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)
TINY_CONFIG = {
    "encoder_conf": {"output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 2},
    "decoder_conf": {"attention_heads": 2, "linear_units": 64, "num_blocks": 1},
    "max_epoch": 2,
}


def _tiny(work: Path) -> list:
    for conf in work.glob("conf/train_*.yaml"):
        c = yaml.safe_load(conf.read_text())
        for k, v in TINY_CONFIG.items():
            c[k] = {**c.get(k, {}), **v} if isinstance(v, dict) else v
        conf.write_text(yaml.safe_dump(c))
    return ["--local_data_opts",
            "--num_speakers 3 --train_per_speaker 8 --dev_per_speaker 2 --test_per_speaker 2",
            "--nbpe", "30", "--fl_data_opts",
            "--num_speakers 2 --train_per_speaker 3 --dev_per_speaker 1 --test_per_speaker 1",
            "--fl_rates", "0.5", "--fl_args", "--rounds 1 --clients_per_round 2"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--recipe", type=Path, default=REPO / "egs2" / "synth_en" / "asr1")
    p.add_argument("--tiny", action="store_true", help="tiny corpus and model (a quick check)")
    p.add_argument("--keep", type=Path, help="scratch directory to use and keep")
    p.add_argument("--stages", default="1 2 3 4 5 6 7 8")
    p.add_argument("--json", type=Path, help="also write the measurements here")
    args, extra = p.parse_known_args(argv)

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_recipe_"))
    work = make_recipe_workdir(args.recipe, root)
    extra = (_tiny(work) if args.tiny else []) + extra
    rows = []
    for stage in map(int, args.stages.split()):
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _MEASURE, "./run.sh", "--stage", str(stage),
             "--stop_stage", str(stage), *extra],
            cwd=work, capture_output=True, text=True,
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"stage {stage} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        peak_kib = int(proc.stdout.rsplit("PEAK_KIB", 1)[1].split()[0])
        rows.append({"stage": stage, "name": STAGE_NAMES.get(stage, "?"), "wall_s": wall,
                     "peak_rss_mib": peak_kib / 1024})
        print(f"stage {stage} ({rows[-1]['name']}): {wall:.1f} s, peak {peak_kib / 1024:.0f} MiB",
              flush=True)

    total = sum(r["wall_s"] for r in rows)
    print(f"\n|stage|wall (s)|share of total|peak RSS (MiB)|\n|---|---|---|---|")
    for r in rows:
        print(f"|{r['stage']} {r['name']}|{r['wall_s']:.1f}|{r['wall_s'] / total:.2f}|"
              f"{r['peak_rss_mib']:.0f}|")
    print(f"|total|{total:.1f}|1.00|{max(r['peak_rss_mib'] for r in rows):.0f}|")
    print(f"(scratch copy: {work})")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "total_s": total}, indent=2))


if __name__ == "__main__":
    main()
