"""Training step time, float32 vs CPU bfloat16 autocast, side by side in one run.

One step = forward + backward + Adam update of an ESPnet ASR model built from a training config
(default: the synth_en recipe's batch-norm Conformer 4x96), on a random batch of --batch
utterances of --seconds seconds each, exactly as espnet_ext's trainer runs it with
``--cpu_autocast none`` (A) and ``--cpu_autocast bf16`` (B). A and B alternate step by step
(ABAB...) at each thread count, so load from other processes hits both alike; medians are
printed per setting, and the ratio B / A (< 1: bf16 is faster).

    python bench/bench_training.py                     # 1 and 2 threads, 20 steps each
    python bench/bench_training.py --threads 1 --steps 40

Whether bf16 keeps the recipe's accuracy is a training question, not a timing one: compare
valid acc per epoch of two short trainings (``--cpu_autocast bf16`` vs ``none``).
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "egs2/synth_en/asr1/conf/train_asr_conformer.yaml"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="ESPnet training config")
    p.add_argument("--vocab", type=int, default=50, help="token list size (the recipe: 50 BPE units)")
    p.add_argument("--batch", type=int, default=16, help="utterances per step")
    p.add_argument("--seconds", type=float, default=2.2, help="audio seconds per utterance")
    p.add_argument("--tokens", type=int, default=30, help="tokens per utterance")
    p.add_argument("--steps", type=int, default=20, help="measured steps per setting")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured steps per setting first")
    p.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    return p.parse_args()


def build_model(config: Path, vocab: int) -> torch.nn.Module:
    """The model ESPnet builds from `config` with a `vocab`-token list (seed 0)."""
    from espnet_ext.asr.registration import register_encoders
    from espnet_ext.experiment.training import CheckpointKeepingASRTask as ASRTask  # reads cpu_autocast

    register_encoders()
    tokens = Path(tempfile.mkdtemp(prefix="bench_training_")) / "tokens.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>"] + [f"t{i}" for i in range(vocab - 3)]
                                + ["<sos/eos>"]) + "\n")
    args = ASRTask.get_parser().parse_args(
        ["--config", str(config), "--token_list", str(tokens), "--token_type", "char",
         "--output_dir", str(tokens.parent / "exp")])
    torch.manual_seed(0)
    return ASRTask.build_model(args)


def main():
    args = parse_args()
    from espnet_ext.experiment.cpu_autocast import autocast_dtype, cpu_autocast

    model = build_model(args.config, args.vocab)
    model.train()
    optim = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    n = int(args.seconds * 16000)
    batch = {
        "speech": torch.randn(args.batch, n, generator=gen) * 0.1,
        "speech_lengths": torch.full((args.batch,), n, dtype=torch.long),
        "text": torch.randint(2, args.vocab - 1, (args.batch, args.tokens), generator=gen),
        "text_lengths": torch.full((args.batch,), args.tokens, dtype=torch.long),
    }

    def step(name: str) -> float:
        t0 = time.perf_counter()
        with cpu_autocast(model, autocast_dtype(name)):
            loss = model(**batch)[0]
        loss.backward()
        optim.step()
        optim.zero_grad()
        return time.perf_counter() - t0

    params = sum(p.numel() for p in model.parameters())
    print(f"model: {args.config.name} ({params:,} parameters); batch {args.batch} x {args.seconds} s, "
          f"{args.tokens} tokens; fwd+bwd+Adam; A = float32, B = bf16 autocast, alternating ABAB; "
          f"medians of {args.steps} steps")
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for _ in range(args.warmup):
            step("none"), step("bf16")
        times = {"none": [], "bf16": []}
        for _ in range(args.steps):
            for name in ("none", "bf16"):
                times[name].append(step(name))
        a, b = statistics.median(times["none"]), statistics.median(times["bf16"])
        rows.append((threads, a, b))
        print(f"{threads} thread(s): float32 {a:.3f} s/step ({1 / a:.2f} steps/s), "
              f"bf16 {b:.3f} s/step ({1 / b:.2f} steps/s), ratio bf16/fp32 = {b / a:.2f}")
    if len(rows) > 1:
        (t1, a1, _), (t2, a2, b2) = rows[0], rows[-1]
        print(f"threads {t2} vs {t1}: float32 {a2 / a1:.2f}x the step time, bf16 {b2 / rows[0][2]:.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
