"""Training-step cost of the conv-module norms of NormConformerEncoder, measured side by side.

Prints, for one encoder configuration and one padded batch:
  * group_norm/batch_norm (and layer_norm/batch_norm) training-step time ratios, and
  * the cost of padding awareness: padding-aware / padding-blind step time for each norm.
Padding-blind means conv_padding_aware=False (the exact subsampling mask stays on in every
variant). A training step is forward + backward + Adam step. All variants are timed in one
process, interleaved repetition by repetition (order rotated each time); ratios are medians of
the per-repetition ratios.

    python bench/bench_norm_encoder.py        # CPU, 4 blocks x 144 dims, 8 x 210-300 frames
    python bench/bench_norm_encoder.py --device cuda --batch 32 --frames 1000
"""

import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch

from espnet_ext.asr.encoder import NormConformerEncoder

# (name, conv_norm_type, conv_padding_aware)
VARIANTS = [
    ("batch_norm", "batch_norm", True),
    ("group_norm", "group_norm", True),
    ("layer_norm", "layer_norm", True),
    ("batch_norm (padding-blind)", "batch_norm", False),
    ("group_norm (padding-blind)", "group_norm", False),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=4, help="Conformer blocks")
    parser.add_argument("--dim", type=int, default=144, help="model dimension (channels)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads")
    parser.add_argument("--ff-units", type=int, default=576, help="feed-forward units")
    parser.add_argument("--kernel", type=int, default=31, help="conv-module kernel (frames)")
    parser.add_argument("--groups", type=int, default=1, help="conv_norm_groups for group_norm")
    parser.add_argument("--input-dim", type=int, default=80, help="input feature dimension")
    parser.add_argument("--batch", type=int, default=8, help="utterances per batch")
    parser.add_argument("--frames", type=int, default=300, help="longest utterance (frames)")
    parser.add_argument(
        "--min-frames-ratio",
        type=float,
        default=0.7,
        help="shortest utterance as a fraction of --frames (lengths spread evenly between)",
    )
    parser.add_argument("--reps", type=int, default=8, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    return parser.parse_args()


def make_step(args: argparse.Namespace, norm_type: str, padding_aware: bool) -> Callable:
    """A closure running one training step of a fresh encoder on a fixed padded batch."""
    torch.manual_seed(0)
    encoder = NormConformerEncoder(
        args.input_dim,
        output_size=args.dim,
        attention_heads=args.heads,
        linear_units=args.ff_units,
        num_blocks=args.blocks,
        cnn_module_kernel=args.kernel,
        rel_pos_type="latest",
        conv_norm_type=norm_type,
        conv_norm_groups=args.groups,
        conv_padding_aware=padding_aware,
    ).to(args.device)
    encoder.train()
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(1)
    shortest = int(args.frames * args.min_frames_ratio)
    lengths = torch.linspace(args.frames, shortest, args.batch).round().long()
    speech = torch.randn(args.batch, args.frames, args.input_dim, generator=generator)
    padded = torch.arange(args.frames)[None, :, None] >= lengths[:, None, None]
    speech = speech.masked_fill(padded, 0.0)
    speech, lengths = speech.to(args.device), lengths.to(args.device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out, out_lengths, _ = encoder(speech, lengths)
        valid = torch.arange(out.size(1), device=out.device)[None, :] < out_lengths[:, None]
        loss = out[valid].pow(2).mean()
        loss.backward()
        optimizer.step()

    return step


def time_interleaved(steps: Dict[str, Callable], reps: int, warmup: int, device: str):
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for step in steps.values():
        for _ in range(warmup):
            step()
    sync()
    times: Dict[str, List[float]] = {name: [] for name in steps}
    names = list(steps)
    for rep in range(reps):
        shift = rep % len(names)  # rotate the order so no variant always runs first
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            steps[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    steps = {name: make_step(args, norm, aware) for name, norm, aware in VARIANTS}
    started = time.perf_counter()
    times = time_interleaved(steps, args.reps, args.warmup, args.device)
    elapsed = time.perf_counter() - started
    device = args.device
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name()})"
    else:
        device += f" ({torch.get_num_threads()} threads)"
    print(
        f"NormConformerEncoder {args.blocks} blocks x {args.dim} dims, kernel {args.kernel}, "
        f"group_norm groups {args.groups}; batch {args.batch} x {args.frames} frames "
        f"(shortest {int(args.frames * args.min_frames_ratio)}) x {args.input_dim} dims; "
        f"{device}; {args.reps} interleaved steps (fwd+bwd+Adam) per variant, {elapsed:.0f} s"
    )
    for name, seconds in times.items():
        print(f"  {name:<28s} median {1000 * statistics.median(seconds):8.1f} ms/step")

    def ratio(numerator: str, denominator: str) -> str:
        # Median of per-repetition ratios: steps of one repetition ran back to back, so
        # slow drifts of machine load cancel.
        paired = [a / b for a, b in zip(times[numerator], times[denominator])]
        return f"{statistics.median(paired):.2f}x (range {min(paired):.2f}-{max(paired):.2f})"

    print(f"group_norm/batch_norm step time: {ratio('group_norm', 'batch_norm')}")
    print(f"layer_norm/batch_norm step time: {ratio('layer_norm', 'batch_norm')}")
    for norm in ("batch_norm", "group_norm"):
        blind = f"{norm} (padding-blind)"
        print(f"{norm} padding-aware/padding-blind step time: {ratio(norm, blind)}")

if __name__ == "__main__":
    main()
