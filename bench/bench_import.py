"""Start-up cost of every ESPnet process: importing ``espnet2.tasks.asr``, as is vs without
typeguard's import-time instrumentation, side by side in one run.

Every recipe process that builds or trains a model (training, each decoding job, each scan, the
analysis, each federated worker) imports ESPnet's ASR task first. ESPnet decorates many functions
and classes with typeguard's ``@typechecked``, which re-parses and compiles their source at
import time. A = a fresh interpreter importing the task as is; B = the same with
``typeguard.typechecked`` replaced by a decorator that returns its target unchanged (no run-time
type checks). A and B alternate (ABAB...) in fresh processes; medians and the ratio B / A are
printed.

    python bench/bench_import.py --reps 3
"""

import argparse
import statistics
import subprocess
import sys

_SNIPPET = """
import sys, time
if sys.argv[1] == "B":
    import typeguard
    typeguard.typechecked = lambda target=None, **kw: target if target is not None else (lambda t: t)
t0 = time.perf_counter()
import espnet2.tasks.asr
print(time.perf_counter() - t0)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    times = {"A": [], "B": []}
    for _ in range(args.reps):
        for side in ("A", "B"):
            out = subprocess.run([sys.executable, "-c", _SNIPPET, side], check=True, capture_output=True, text=True)
            times[side].append(float(out.stdout.strip().splitlines()[-1]))
    a, b = statistics.median(times["A"]), statistics.median(times["B"])
    print(f"import espnet2.tasks.asr, fresh process, medians of {args.reps}:")
    print(f"A as is:                     {a:.2f} s  ({', '.join(f'{t:.1f}' for t in times['A'])})")
    print(f"B typeguard decorator no-op: {b:.2f} s  ({', '.join(f'{t:.1f}' for t in times['B'])})")
    print(f"ratio B / A = {b / a:.2f}")


if __name__ == "__main__":
    main()
