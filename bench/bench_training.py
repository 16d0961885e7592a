"""Training step time under the CPU training levers, side by side in one run; where a step's time goes.

One step = forward + backward + Adam update of an ESPnet ASR model built from a training config
(default: the synth_en recipe's batch-norm Conformer 4x96), on a random batch of --batch
utterances of --seconds seconds each, exactly as espnet_ext's trainer runs it. Levers (--levers):

- ``fp32``: ``--cpu_autocast none --cpu_dropout torch`` (ESPnet's own training step);
- ``bf16``: ``--cpu_autocast bf16``;
- ``bf16+fast_dropout``: ``--cpu_autocast bf16 --cpu_dropout fast``;
- ``bf16+fast_dropout+channels_last``: the same and ``--cpu_channels_last true``;
- ``bf16+compile``: ``bf16`` with the encoder under ``torch.compile`` (not a trainer option: the
  bench measures whether it would be worth one; its compile time is printed apart);
- ``fp32+fast_dropout``, ``fp32+fast_dropout+channels_last``: the two newer levers in float32,
  as federated clients train (e.g. ``--batch 4 --seconds 3``).

The levers alternate step by step (ABCABC...) at each thread count, so load from other processes
hits all alike; medians are printed per lever, with each one's ratio to ``fp32`` (< 1: faster).
``--profile`` instead prints torch.profiler's operator table for --profile_steps steps of one
lever: where a step's time goes.

    python bench/bench_training.py                     # 1 and 2 threads, 20 steps each
    python bench/bench_training.py --threads 1 --steps 40
    python bench/bench_training.py --threads 1 --profile bf16

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
#: lever -> (cpu_autocast, cpu_dropout, cpu_channels_last, compile the encoder)
LEVERS = {
    "fp32": ("none", "torch", False, False),
    "bf16": ("bf16", "torch", False, False),
    "bf16+fast_dropout": ("bf16", "fast", False, False),
    "bf16+fast_dropout+channels_last": ("bf16", "fast", True, False),
    "bf16+compile": ("bf16", "torch", False, True),
    # float32 with the other two levers: the federated clients' precision (fl_simulate)
    "fp32+fast_dropout": ("none", "fast", False, False),
    "fp32+fast_dropout+channels_last": ("none", "fast", True, False),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="ESPnet training config")
    p.add_argument("--vocab", type=int, default=50, help="token list size (the recipe: 50 BPE units)")
    p.add_argument("--batch", type=int, default=33,
                   help="utterances per step (the recipe: batch_bins 1.2M samples of ~2.2 s audio: ~33)")
    p.add_argument("--seconds", type=float, default=2.2, help="audio seconds per utterance")
    p.add_argument("--tokens", type=int, default=30, help="tokens per utterance")
    p.add_argument("--steps", type=int, default=20, help="measured steps per setting")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured steps per setting first")
    p.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    p.add_argument("--levers", default="fp32,bf16,bf16+fast_dropout,bf16+fast_dropout+channels_last",
                   help=f"comma-separated, of {', '.join(LEVERS)}; the first is the reference")
    p.add_argument("--profile", choices=LEVERS, default=None,
                   help="print the operator profile of this lever instead of timing the levers")
    p.add_argument("--profile_steps", type=int, default=4, help="profiled steps")
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


def make_batch(args: argparse.Namespace) -> dict:
    """A random batch: --batch utterances of --seconds s of audio and --tokens tokens each."""
    gen = torch.Generator().manual_seed(0)
    n = int(args.seconds * 16000)
    return {
        "speech": torch.randn(args.batch, n, generator=gen) * 0.1,
        "speech_lengths": torch.full((args.batch,), n, dtype=torch.long),
        "text": torch.randint(2, args.vocab - 1, (args.batch, args.tokens), generator=gen),
        "text_lengths": torch.full((args.batch,), args.tokens, dtype=torch.long),
    }


class Stepper:
    """One training step of `model` under a lever; the compiled encoder is built on first use."""

    def __init__(self, model: torch.nn.Module, batch: dict):
        self.model, self.batch = model, batch
        self.optim = torch.optim.Adam(model.parameters(), lr=1e-4)
        self.eager_encoder = model.encoder
        self.compiled_encoder = None

    def __call__(self, lever: str) -> float:
        """Seconds of one step (forward, backward, Adam) under `lever`."""
        from espnet_ext.experiment.cpu_autocast import autocast_dtype, cpu_autocast
        from espnet_ext.experiment.cpu_dropout import cpu_fast_dropout
        from espnet_ext.experiment.cpu_layout import channels_last_convs

        autocast, dropout, channels_last, compiled = LEVERS[lever]
        if compiled and self.compiled_encoder is None:
            self.compiled_encoder = torch.compile(self.eager_encoder)
        self.model.encoder = self.compiled_encoder if compiled else self.eager_encoder
        t0 = time.perf_counter()
        with cpu_autocast(self.model, autocast_dtype(autocast)), \
                cpu_fast_dropout(self.model, dropout == "fast"), \
                channels_last_convs(self.model, channels_last):
            loss = self.model(**self.batch)[0]
            loss.backward()
            self.optim.step()
        self.optim.zero_grad()
        return time.perf_counter() - t0


def profile(step: Stepper, lever: str, steps: int, warmup: int) -> None:
    """Print torch.profiler's operator table (self CPU time) for `steps` steps of `lever`."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(warmup):
        step(lever)
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step(lever)
    print(f"operators of {steps} steps under {lever}, by self CPU time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20,
                                    max_name_column_width=40))
    print("the same, by input shape (which layer an operator ran for):")
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=30,
        max_shapes_column_width=80))


def main():
    args = parse_args()
    levers = [name.strip() for name in args.levers.split(",") if name.strip()]
    unknown = [name for name in levers if name not in LEVERS]
    if unknown:
        sys.exit(f"bench_training: unknown lever(s) {', '.join(unknown)}; "
                 f"choose from {', '.join(LEVERS)}")
    model = build_model(args.config, args.vocab)
    model.train()
    step = Stepper(model, make_batch(args))
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {args.config.name} ({params:,} parameters); batch {args.batch} x {args.seconds} s, "
          f"{args.tokens} tokens; fwd+bwd+Adam")
    if args.profile:
        torch.set_num_threads(int(args.threads.split(",")[0]))
        profile(step, args.profile, args.profile_steps, args.warmup)
        return
    print(f"levers {', '.join(levers)}, alternating step by step; medians of {args.steps} steps")
    for lever in levers:
        if LEVERS[lever][3]:
            t0 = time.perf_counter()
            step(lever)
            print(f"{lever}: first step (compilation) {time.perf_counter() - t0:.1f} s")
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for _ in range(args.warmup):
            for lever in levers:
                step(lever)
        times = {lever: [] for lever in levers}
        for _ in range(args.steps):
            for lever in levers:
                times[lever].append(step(lever))
        medians = {lever: statistics.median(t) for lever, t in times.items()}
        ref = medians[levers[0]]
        print(f"{threads} thread(s): " + ", ".join(
            f"{lever} {m:.3f} s/step ({m / ref:.2f})" for lever, m in medians.items())
            + f"   (ratio to {levers[0]})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
