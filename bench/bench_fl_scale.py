"""Federated simulation at scale, measured side by side in one run.

(a) Many clients. Rounds of --clients_per_round sampled clients (tiny Conformer, in-process
    backend, no dropout, --local_steps SGD steps per client) on populations of --populations
    clients (speakers of --utts synthetic tone utterances each). Each population runs in a fresh
    process of its own, one after the other; printed per population: round time (median of
    rounds 2..R; round 1 separately), the process's RSS before the run (model, data dir, client
    list) and its peak RSS during the run. A simulation that scales keeps both flat in the number
    of clients that are not sampled.
(b) Server aggregation for a LibriSpeech-size model: the Conformer L of
    egs2/librispeech_100/asr1 (17 blocks x 512, encoder ~115M parameters, 5000 tokens) built on
    CPU, --agg_clients clients per round, each sent a federated-dropout sub-model (uniform plan at
    --rate) and replying with a random update of it. The server side is the strategy's own code
    (FederatedDropoutFedAvg.configure_train: sub-model draw and extraction; aggregate_train:
    reply checks and merge_update), through Flower messages as in a run; the clients' work is not
    timed. Each client count of --agg_clients runs in a fresh process of its own; printed per
    count: seconds of each per round (median over --agg_rounds) and the process's peak RSS against
    its RSS with the model alone, and, from the two largest counts, the cost per extra client and
    a linear estimate at --agg_estimate clients (for machines without the memory to measure it).

    python bench/bench_fl_scale.py                          # (a) 50, 200, 500 clients; (b) 20 clients
    python bench/bench_fl_scale.py --skip_aggregation       # (a) only
    python bench/bench_fl_scale.py --populations "" --agg_clients 10   # (b) only, 10 clients
    python bench/bench_fl_scale.py --agg_clients 1,2        # where memory is short: peak RSS grows
                                                            # by about one sub-model per client
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import yaml

import espnet_ext  # noqa: F401  (before ESPnet: its import hook keeps g2p_en from fetching NLTK data)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from helpers import make_tone_data_dir, tiny_asr_config, write_char_token_list  # noqa: E402

CONFORMER_L = REPO / "egs2/librispeech_100/asr1/conf/tuning/train_asr_conformer_l_bn.yaml"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--populations", default="50,200,500", help="(a) client counts, comma-separated")
    p.add_argument("--utts", type=int, default=3, help="(a) utterances per client")
    p.add_argument("--rounds", type=int, default=5, help="(a) rounds per population")
    p.add_argument("--clients_per_round", type=int, default=4)
    p.add_argument("--local_steps", type=int, default=2, help="(a) SGD steps per client and round")
    p.add_argument("--agg_clients", default="20", help="(b) clients per round, comma-separated (a process each)")
    p.add_argument("--agg_estimate", type=int, default=20, help="(b) clients per round to extrapolate to")
    p.add_argument("--agg_rounds", type=int, default=3, help="(b) rounds timed")
    p.add_argument("--rate", type=float, default=0.5, help="(b) uniform dropout rate")
    p.add_argument("--agg_config", type=Path, default=CONFORMER_L, help="(b) training config")
    p.add_argument("--vocab", type=int, default=5000, help="(b) token list size")
    p.add_argument("--skip_aggregation", action="store_true", help="run (a) only")
    # Internal: one population of (a) / one client count of (b) in this process, result as one JSON line.
    p.add_argument("--population_worker", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--aggregation_worker", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args()


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    """Highest resident set size of this process so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def tiny_experiment(root: Path) -> Path:
    """An experiment dir (config.yaml, untrained model.pth) of the tests' tiny char Conformer."""
    import torch
    from espnet2.tasks.asr import ASRTask

    tokens = write_char_token_list(root / "tokens.txt")
    (root / "train.yaml").write_text(yaml.safe_dump(tiny_asr_config()))
    parsed = ASRTask.get_parser().parse_args(
        ["--config", str(root / "train.yaml"), "--token_type", "char", "--token_list", str(tokens),
         "--cleaner", "none", "--g2p", "none"])
    exp = root / "exp"
    exp.mkdir()
    torch.manual_seed(0)
    torch.save(ASRTask.build_model(parsed).state_dict(), exp / "model.pth")
    with open(exp / "config.yaml", "w") as f:
        yaml.safe_dump(vars(parsed), f)
    return exp


def population_worker(spec_file: Path) -> int:
    """(a) for one population, in this process; prints one JSON line."""
    import torch

    from espnet_ext.federated.client import LocalTraining
    from espnet_ext.federated.cost import PeakMemory
    from espnet_ext.federated.plan import no_dropout_plan
    from espnet_ext.federated.simulation import prepare_run, run_federated

    spec = json.loads(spec_file.read_text())
    torch.set_num_threads(1)
    out = Path(spec["out_dir"])
    local = LocalTraining(steps=spec["local_steps"], batch_size=2, optim="sgd", lr=0.01)
    setup = prepare_run(Path(spec["exp_dir"]), "model.pth", Path(spec["data"]), [], out, no_dropout_plan(),
                        rounds=spec["rounds"], clients_per_round=spec["clients_per_round"], local=local,
                        backend="local", client_threads=1, device="cpu", progress=False)
    before = rss_bytes()
    t0 = time.perf_counter()
    with PeakMemory("cpu") as mem:
        run_federated(setup)
    total = time.perf_counter() - t0
    rounds = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    seconds = [r["seconds"] for r in rounds if r["round"] >= 1]
    print(json.dumps({"clients": spec["clients"], "round1_s": seconds[0],
                      "round_s": statistics.median(seconds[1:] or seconds), "total_s": total,
                      "rss_before": before, "peak_rss_run": mem.peak_rss_bytes,
                      "peak_rss_process": peak_rss_bytes()}))
    return 0


def many_clients(args, root: Path) -> None:
    """(a): one fresh process per population, one after the other."""
    populations = [int(n) for n in args.populations.split(",") if n.strip()]
    if not populations:
        return
    exp = tiny_experiment(root)
    rows: List[Dict] = []
    for n in populations:
        t0 = time.perf_counter()
        data = make_tone_data_dir(root / "data", f"clients{n}", n_utts=n * args.utts, seed=n, n_speakers=n)
        made = time.perf_counter() - t0
        spec = root / f"clients{n}.json"
        spec.write_text(json.dumps({
            "clients": n, "exp_dir": str(exp), "data": str(data), "out_dir": str(root / f"fl{n}"),
            "rounds": args.rounds, "clients_per_round": args.clients_per_round,
            "local_steps": args.local_steps}))
        proc = subprocess.run([sys.executable, __file__, "--population_worker", str(spec)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"population {n} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  {n} clients: data dir written in {made:.1f} s, simulation {rows[-1]['total_s']:.1f} s",
              flush=True)
    print(f"\n# (a) {args.clients_per_round} sampled clients per round x {args.local_steps} local steps, "
          f"tiny Conformer, in-process backend, {args.utts} utterances per client, {args.rounds} rounds")
    print(f"{'clients':>8} {'round s (median 2..)':>21} {'round 1 s':>10} {'RSS before MB':>14} "
          f"{'peak RSS in run MB':>19}")
    for r in rows:
        print(f"{r['clients']:>8} {r['round_s']:>21.3f} {r['round1_s']:>10.3f} {r['rss_before'] / 1e6:>14.0f} "
              f"{r['peak_rss_run'] / 1e6:>19.0f}")
    first, last = rows[0], rows[-1]
    print(f"ratio {last['clients']} / {first['clients']} clients: round time "
          f"{last['round_s'] / first['round_s']:.2f}, peak RSS {last['peak_rss_run'] / first['peak_rss_run']:.2f}")


def _vocab_tokens(path: Path, vocab: int) -> Path:
    path.write_text("\n".join(["<blank>", "<unk>"] + [f"t{i}" for i in range(vocab - 3)] + ["<sos/eos>"]) + "\n")
    return path


def aggregation_worker(args, n: int, root: Path) -> int:
    """(b) with `n` clients per round, in this process; prints one JSON line."""
    import torch
    from espnet2.tasks.asr import ASRTask
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from espnet_ext.asr.registration import register_encoders
    from espnet_ext.federated.partition import Client, ClientSampler
    from espnet_ext.federated.plan import ModelInfo, uniform_plan
    from espnet_ext.federated.simulation import LocalGrid
    from espnet_ext.federated.strategy import FederatedDropoutFedAvg

    register_encoders()
    torch.set_num_threads(1)
    tokens = _vocab_tokens(root / "tokens_l.txt", args.vocab)
    parsed = ASRTask.get_parser().parse_args(
        ["--config", str(args.agg_config), "--token_list", str(tokens), "--token_type", "char"])
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = ASRTask.build_model(parsed)
    built = time.perf_counter() - t0
    info = ModelInfo.from_model(model)
    state = {k: v.detach() for k, v in model.state_dict().items() if k in info.sent_keys}
    encoder = sum(p.numel() for n, p in model.named_parameters() if n.startswith("encoder."))
    total = sum(p.numel() for p in model.parameters())
    del model
    plan = uniform_plan(info, args.rate)

    # Clients reply at once with their sub-model plus noise (their training is not measured).
    app = ClientApp()

    client_s = []  # the fake clients' own time (taken out of the server's)

    @app.train()
    def train(msg: Message, context) -> Message:
        t_client = time.perf_counter()
        sub = msg.content["arrays"].to_torch_state_dict()
        updated = {k: v + 1e-3 * torch.randn_like(v) if v.is_floating_point() else v for k, v in sub.items()}
        metrics = MetricRecord({"num-examples": 10, "params-trained": 1, "steps": 1, "train-seconds": 0.0,
                                "step-seconds": 0.0, "peak-rss-bytes": 0, "peak-device-bytes": 0,
                                "model-state-bytes": 0, "loss": 1.0})
        reply = Message(RecordDict({"arrays": ArrayRecord(torch_state_dict=updated), "metrics": metrics}),
                        reply_to=msg)
        client_s.append(time.perf_counter() - t_client)
        return reply

    def timed(messages, spent):
        """`messages`, adding the time each one takes to make (sub-model draw, extraction) to spent[0]."""
        while True:
            t = time.perf_counter()
            try:
                msg = next(messages)
            except StopIteration:
                return
            spent[0] += time.perf_counter() - t
            yield msg

    grid = LocalGrid(app, n)
    clients = [Client(i, f"spk{i}", ("u",) * 10) for i in range(n)]
    strategy = FederatedDropoutFedAvg(info, plan, clients, ClientSampler(n, n, seed=0),
                                      {c: 101 + c for c in range(n)}, seed=0)
    rss_model = rss_bytes()
    configure_s, aggregate_s, sub_bytes = [], [], []
    for server_round in range(1, args.agg_rounds + 1):
        # As in the server's round: messages made as the grid takes them, each client run as its
        # reply is asked for, the merge once all replies are in.
        client_s.clear()
        spent = [0.0]
        t0 = time.perf_counter()
        messages = strategy.configure_train_state(server_round, state, ConfigRecord())
        spent[0] += time.perf_counter() - t0
        replies = grid.send_and_receive(timed(messages, spent))
        new, _ = strategy.aggregate_train_state(server_round, replies)
        round_s = time.perf_counter() - t0
        configure_s.append(spent[0])
        aggregate_s.append(round_s - spent[0] - sum(client_s))
        sub_bytes.append(statistics.mean(c.bytes_down for c in strategy.last_costs))
        del messages, replies
        state = new
    print(json.dumps({"clients": n, "encoder_params": encoder, "total_params": total, "built_s": built,
                      "full_bytes": sum(v.numel() * v.element_size() for v in state.values()),
                      "sub_bytes": statistics.mean(sub_bytes),
                      "configure_s": statistics.median(configure_s),
                      "aggregate_s": statistics.median(aggregate_s),
                      "rss_model": rss_model, "peak_rss": peak_rss_bytes()}))
    return 0


def server_aggregation(args, root: Path) -> None:
    """(b): one fresh process per client count (peak RSS is per process)."""
    rows = []
    for n in [int(c) for c in args.agg_clients.split(",") if c.strip()]:
        cmd = [sys.executable, __file__, "--aggregation_worker", str(n), "--agg_rounds", str(args.agg_rounds),
               "--rate", str(args.rate), "--agg_config", str(args.agg_config), "--vocab", str(args.vocab)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"aggregation with {n} clients failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if not rows:
        return
    r0 = rows[0]
    print(f"\n# (b) server side of a round, uniform dropout rate {args.rate}: {args.agg_config.name} with "
          f"{args.vocab} tokens (encoder {r0['encoder_params'] / 1e6:.1f}M, total {r0['total_params'] / 1e6:.1f}M "
          f"parameters; built in {r0['built_s']:.1f} s), 1 thread, median of {args.agg_rounds} rounds")
    print(f"sub-model sent per client: {r0['sub_bytes'] / 1e6:.0f} MB ({r0['sub_bytes'] / r0['full_bytes']:.2f} "
          f"of the full {r0['full_bytes'] / 1e6:.0f} MB)")
    print(f"{'clients':>8} {'configure_train s':>18} {'aggregate_train s':>18} {'RSS model MB':>13} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['clients']:>8} {r['configure_s']:>18.2f} {r['aggregate_s']:>18.2f} {r['rss_model'] / 1e6:>13.0f} "
              f"{r['peak_rss'] / 1e6:>12.0f}")
    if len(rows) >= 2 and args.agg_estimate not in [r["clients"] for r in rows]:
        a, b = rows[-2], rows[-1]
        per = {k: (b[k] - a[k]) / (b["clients"] - a["clients"]) for k in ("configure_s", "aggregate_s", "peak_rss")}
        at = {k: b[k] + per[k] * (args.agg_estimate - b["clients"]) for k in per}
        print(f"per extra client: configure {per['configure_s']:.2f} s, aggregate {per['aggregate_s']:.2f} s, "
              f"peak RSS {per['peak_rss'] / 1e6:.0f} MB; linear estimate at {args.agg_estimate} clients: "
              f"configure {at['configure_s']:.1f} s, aggregate {at['aggregate_s']:.1f} s, "
              f"peak RSS {at['peak_rss'] / 1e9:.1f} GB (not measured)")
    print("(configure: sub-model draws and extraction, message by message as the grid takes them; aggregate: "
          "reply checks and the merge. The server holds one message at a time and every reply until the "
          "merge, serialized; the merge turns one reply array at a time into a tensor)")


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.population_worker is not None:
        return population_worker(args.population_worker)
    if args.aggregation_worker is not None:
        return aggregation_worker(args, args.aggregation_worker, Path(tempfile.mkdtemp(prefix="bench_fl_agg_")))
    root = Path(tempfile.mkdtemp(prefix="bench_fl_scale_"))
    many_clients(args, root)
    if not args.skip_aggregation:
        server_aggregation(args, root)
    print(f"(work dir {root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
