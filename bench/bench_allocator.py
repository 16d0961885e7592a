"""Training step time under glibc's malloc vs tcmalloc (vs jemalloc), side by side in one run.

The allocator is chosen per process (``LD_PRELOAD``, as asr.sh's ``--cpu_allocator`` does), so
each repetition runs ``bench/bench_training.py`` once per allocator, in turn (ABAB...: load from
other processes hits all alike), and reads its median step time. ``--concurrent 2`` runs two
copies at once for each allocator, as the recipe trains its two models side by side on 2 cores.
Prints every repetition's median(s), the median over them per allocator and its ratio to the
first (< 1: faster).

    python bench/bench_allocator.py                                   # recipe model, 1 thread
    python bench/bench_allocator.py --concurrent 2                    # two trainings at once
    python bench/bench_allocator.py --levers fp32 --batch 4 --seconds 3   # a federated client's step
"""

import argparse
import ctypes.util
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

BENCH_TRAINING = Path(__file__).resolve().parent / "bench_training.py"
#: allocator -> library to preload (None: the system's malloc)
LIBRARIES = {"system": None, "tcmalloc": "tcmalloc_minimal", "jemalloc": "jemalloc"}
_STEP = re.compile(r"thread\(s\): \S+ ([0-9.]+) s/step")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--allocators", default="system,tcmalloc",
                   help=f"comma-separated, first = reference; from {', '.join(LIBRARIES)}")
    p.add_argument("--reps", type=int, default=3, help="repetitions (each runs every allocator)")
    p.add_argument("--concurrent", type=int, default=1, help="copies run at once per allocator")
    p.add_argument("--levers", default="bf16+fast_dropout+channels_last",
                   help="one lever of bench_training.py (the recipe's training: the default)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per copy")
    p.add_argument("--steps", type=int, default=12, help="measured steps per copy")
    p.add_argument("--batch", type=int, default=None, help="bench_training.py --batch")
    p.add_argument("--seconds", type=float, default=None, help="bench_training.py --seconds")
    return p.parse_args()


def library(allocator: str) -> str:
    """The shared library to preload for `allocator` ('' for the system's malloc)."""
    name = LIBRARIES[allocator]
    if name is None:
        return ""
    found = ctypes.util.find_library(name)
    if not found:
        sys.exit(f"bench_allocator: lib{name} not found (Debian: libtcmalloc-minimal4 / libjemalloc2)")
    return found


def run_copies(args, lib: str) -> list:
    """Median s/step of each of --concurrent copies of bench_training, run at once."""
    cmd = [sys.executable, str(BENCH_TRAINING), "--threads", str(args.threads), "--levers", args.levers,
           "--steps", str(args.steps)]
    if args.batch is not None:
        cmd += ["--batch", str(args.batch)]
    if args.seconds is not None:
        cmd += ["--seconds", str(args.seconds)]
    env = dict(os.environ, TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD="1099511627776")
    env.pop("LD_PRELOAD", None)
    if lib:
        env["LD_PRELOAD"] = lib
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(args.concurrent)]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate()
        match = _STEP.search(stdout)
        if proc.returncode or not match:
            sys.exit(f"bench_allocator: bench_training failed:\n{stdout}")
        out.append(float(match.group(1)))
    return out


def main() -> None:
    args = parse_args()
    allocators = [a.strip() for a in args.allocators.split(",") if a.strip()]
    unknown = [a for a in allocators if a not in LIBRARIES]
    if unknown:
        sys.exit(f"bench_allocator: unknown allocator(s) {', '.join(unknown)}; choose from {', '.join(LIBRARIES)}")
    libs = {a: library(a) for a in allocators}
    print(f"lever {args.levers}, {args.threads} thread(s), {args.concurrent} cop{'y' if args.concurrent == 1 else 'ies'} "
          f"at once, {args.reps} repetitions, allocators alternating: "
          + ", ".join(f"{a} ({libs[a] or 'glibc malloc'})" for a in allocators))
    times = {a: [] for a in allocators}
    for rep in range(1, args.reps + 1):
        for a in allocators:
            medians = run_copies(args, libs[a])
            times[a] += medians
            print(f"  rep {rep} {a}: " + ", ".join(f"{m:.3f}" for m in medians) + " s/step")
    ref = statistics.median(times[allocators[0]])
    print("median s/step: " + ", ".join(
        f"{a} {statistics.median(t):.3f} ({statistics.median(t) / ref:.2f})" for a, t in times.items())
        + f"   (ratio to {allocators[0]})")


if __name__ == "__main__":
    main()
