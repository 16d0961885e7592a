"""Federated-learning costs measured side by side in one run.

1. Federated round vs central training: wall time of a federated round (no dropout: K clients x
   S local steps, with everything the round does: sub-model messages, client model rebuild,
   audio loading, merging) against the same K x S training steps run centrally, like for like:
   in as many processes as the federated clients run in (1 for ``local``, ``--num_workers`` for
   ``ray``), each with ``--threads`` threads, the round's clients dealt out to them as to Ray's
   workers, a barrier per round. Prints the overhead ratio (median over rounds 2..R), the start-up
   (simulation wall time outside the rounds: Ray, worker processes, their ESPnet import) and
   round 1 separately, and what makes up a round: the clients' training (from ``costs.tsv``),
   the merge (timed apart) and the rest (messages, model rebuild, audio loading).
2. Client cost at dropout rate r vs no dropout: local training step time of the sub-model of a
   uniform plan at rate r vs the full model on the same client batches (interleaved repetition
   by repetition, median of per-repetition ratios), and bytes sent, parameters trained,
   parameter+gradient+optimizer memory and, on a GPU, the allocator's peak. (Process RSS is
   not compared: after the first steps the allocator reuses memory, so RSS growth shows 0.)

Without --exp_dir, a self-contained setup is made in a temporary folder: a Conformer of the
recipe's size (untrained: timings do not depend on the weights), and clients with random tone
audio.

    python bench/bench_federated.py                          # CPU, in-process clients
    python bench/bench_federated.py --backend ray --rounds 4 # Flower's Ray runtime, 2 workers
    python bench/bench_federated.py --exp_dir exp/asr_gn_seed1 --model_file valid.acc.best.pth \\
        --adapt_data data/fl/withheld                        # a trained recipe model
"""

import argparse
import copy
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

import numpy as np
import soundfile as sf
import torch
import yaml

from espnet_ext.asr.registration import register_encoders

register_encoders()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--exp_dir", type=Path, default=None, help="trained experiment dir (default: synthetic)")
    p.add_argument("--model_file", default="valid.acc.best.pth")
    p.add_argument("--adapt_data", type=Path, default=None, help="client data dir (with --exp_dir)")
    p.add_argument("--blocks", type=int, default=4, help="synthetic: encoder blocks")
    p.add_argument("--dim", type=int, default=144, help="synthetic: model dimension")
    p.add_argument("--heads", type=int, default=4, help="synthetic: attention heads")
    p.add_argument("--ff-units", type=int, default=576, help="synthetic: feed-forward units")
    p.add_argument("--groups", type=int, default=8, help="synthetic: conv group-norm groups")
    p.add_argument("--clients", type=int, default=4, help="synthetic: clients (speakers)")
    p.add_argument("--utts", type=int, default=8, help="synthetic: utterances per client")
    p.add_argument("--rate", type=float, default=0.5, help="dropout rate of the uniform plan")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients_per_round", type=int, default=2)
    p.add_argument("--local_steps", type=int, default=4)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--backend", default="local", choices=["local", "ray"])
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of the step comparison")
    p.add_argument("--threads", type=int, default=1, help="torch threads (here and per client)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cpu_autocast", default="none", help="none or bf16: client (and central) forward precision")
    return p.parse_args()


def synthetic_setup(root: Path, args) -> Tuple[Path, str, Path]:
    """An experiment dir (config.yaml + untrained weights) and a client data dir."""
    from espnet2.tasks.asr import ASRTask

    rng = np.random.default_rng(0)
    data, wavs = root / "data" / "clients", root / "data" / "wav"
    data.mkdir(parents=True)
    wavs.mkdir(parents=True)
    letters = "ABCDEFGH"
    wav, text, utt2spk = [], [], []
    for s in range(args.clients):
        for i in range(args.utts):
            utt = f"spk{s}-{i:03d}"
            n = int(16000 * rng.uniform(1.0, 2.0))
            audio = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * np.arange(n) / 16000)
            sf.write(wavs / f"{utt}.wav", (audio + 0.01 * rng.standard_normal(n)).astype(np.float32), 16000)
            wav.append(f"{utt} {wavs / f'{utt}.wav'}")
            text.append(f"{utt} " + " ".join("".join(rng.choice(list(letters), 4)) for _ in range(3)))
            utt2spk.append(f"{utt} spk{s}")
    for name, lines in (("wav.scp", wav), ("text", text), ("utt2spk", utt2spk)):
        (data / name).write_text("\n".join(sorted(lines)) + "\n")
    spk2utt = {}
    for line in sorted(utt2spk):
        u, s = line.split()
        spk2utt.setdefault(s, []).append(u)
    (data / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n" for s, u in sorted(spk2utt.items())))

    tokens = root / "tokens.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>", "<space>"] + list(letters) + ["<sos/eos>"]) + "\n")
    conf = {
        "frontend": "default", "frontend_conf": {"n_fft": 400, "hop_length": 160, "n_mels": 40},
        "encoder": "norm_conformer",
        "encoder_conf": {"output_size": args.dim, "attention_heads": args.heads,
                         "linear_units": args.ff_units, "num_blocks": args.blocks,
                         "input_layer": "conv2d", "macaron_style": True, "rel_pos_type": "latest",
                         "pos_enc_layer_type": "rel_pos", "selfattention_layer_type": "rel_selfattn",
                         "activation_type": "swish", "use_cnn_module": True, "cnn_module_kernel": 15,
                         "conv_norm_type": "group_norm", "conv_norm_groups": args.groups},
        "decoder": "transformer",
        "decoder_conf": {"attention_heads": args.heads, "linear_units": args.ff_units, "num_blocks": 2},
        "model_conf": {"ctc_weight": 0.5},
    }
    (root / "train.yaml").write_text(yaml.safe_dump(conf))
    parsed = ASRTask.get_parser().parse_args(["--config", str(root / "train.yaml"), "--token_type", "char",
                                              "--token_list", str(tokens), "--cleaner", "none", "--g2p", "none"])
    exp = root / "exp"
    exp.mkdir()
    torch.manual_seed(0)
    model = ASRTask.build_model(parsed)
    torch.save(model.state_dict(), exp / "model.pth")
    with open(exp / "config.yaml", "w") as f:
        yaml.safe_dump(vars(parsed) | {"token_list": parsed.token_list}, f)
    return exp, "model.pth", data


def _interleaved(fns, reps: int) -> List[List[float]]:
    times = [[] for _ in fns]
    for r in range(reps):
        order = list(range(len(fns)))[r % len(fns):] + list(range(len(fns)))[:r % len(fns)]
        for i in order:
            times[i].append(fns[i]())
    return times


def _central_process(rank, workers, barrier, queue, config_path, model_file, adapt_data, samples, local,
                     threads, device, seed):
    """One process of the central side: trains the clients dealt to it, round by round."""
    torch.set_num_threads(threads)
    register_encoders()
    from espnet_ext.data.kaldi import KaldiDataDir
    from espnet_ext.federated.client import load_utterances, local_training_seed, train_locally
    from espnet_ext.federated.modelio import build_asr_model, build_data_pipeline, load_weights
    from espnet_ext.federated.partition import speaker_clients

    model = build_asr_model(config_path)
    model.load_state_dict(load_weights(model_file))
    model.to(device)
    preprocess, collate = build_data_pipeline(config_path)
    data = KaldiDataDir.read(adapt_data)
    clients = speaker_clients(data)
    audio = {c.index: load_utterances(data, c.utterances) for c in clients}
    times = []
    for r, sampled in enumerate(samples, start=1):
        barrier.wait()
        t0 = time.perf_counter()
        for c in sampled[rank::workers]:
            # The clients' own seeds: the same shuffles, hence the same batches, as in the run.
            train_locally(model, audio[c], preprocess, collate, local, local_training_seed(seed, r, c), device)
        times.append(time.perf_counter() - t0)
        barrier.wait()
    queue.put((rank, times))


def central_round_seconds(workers: int, *args) -> List[float]:
    """Per-round wall time of the central side in `workers` spawned processes (slowest one)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_central_process, args=(rank, workers, barrier, queue) + args)
             for rank in range(workers)]
    for proc in procs:
        proc.start()
    results = dict(queue.get() for _ in procs)
    for proc in procs:
        proc.join()
    return [max(results[k][r] for k in results) for r in range(len(results[0]))]


def merge_seconds(full_state, info, plan, num_clients: int, reps: int) -> float:
    """Median seconds of one round's merge (merge_update) of `num_clients` sub-models of `plan`."""
    from espnet_ext.federated.submodel import choose_submodel, extract_submodel, merge_update

    rates = plan.module_rates(info.modules)
    smalls, maps = [], []
    for c in range(num_clients):
        small, imap = extract_submodel(full_state, choose_submodel(info.modules, rates, np.random.default_rng(c)))
        smalls.append(small)
        maps.append(imap)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        merge_update(full_state, smalls, maps, [1.0] * num_clients)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def step_flops(model, examples, preprocess, collate, batch_size: int) -> int:
    """FLOPs of one training step (forward + backward) of `model` on the client's first batch,
    as torch.utils.flop_counter counts them (matrix products and convolutions): the work kept."""
    from torch.utils.flop_counter import FlopCounterMode

    from espnet_ext.federated.submodel import detach_cached_tensors_

    work = copy.deepcopy(detach_cached_tensors_(model))
    work.train()
    items = [(uid, preprocess(uid, {"speech": wav, "text": text})) for uid, wav, text in examples[:batch_size]]
    _, batch = collate(items)
    with FlopCounterMode(display=False) as counter:
        loss, _, _ = work(**batch)
        loss.backward()
    return counter.get_total_flops()


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    from espnet_ext.data.kaldi import KaldiDataDir
    from espnet_ext.federated.client import LocalTraining, load_utterances, train_locally
    from espnet_ext.federated.cost import PeakMemory, tensor_bytes
    from espnet_ext.federated.modelio import build_asr_model, build_data_pipeline, load_weights
    from espnet_ext.federated.partition import ClientSampler, speaker_clients
    from espnet_ext.federated.plan import ModelInfo, no_dropout_plan, uniform_plan
    from espnet_ext.federated.simulation import prepare_run, run_federated
    from espnet_ext.federated.submodel import (build_submodel, choose_submodel, detach_cached_tensors_,
                                               extract_submodel)

    tmp = Path(tempfile.mkdtemp(prefix="bench_fl_"))
    if args.exp_dir is None:
        exp, model_file, adapt = synthetic_setup(tmp, args)
    else:
        exp, model_file, adapt = args.exp_dir, args.model_file, args.adapt_data
    local = LocalTraining(steps=args.local_steps, batch_size=args.batch_size, optim="sgd", lr=0.01,
                          cpu_autocast=args.cpu_autocast)

    # --- 1. federated rounds (no dropout) vs the same steps centrally ---------------------------
    setup = prepare_run(exp, model_file, adapt, [], tmp / "fl", no_dropout_plan(), rounds=args.rounds,
                        clients_per_round=args.clients_per_round, local=local, backend=args.backend,
                        num_workers=args.num_workers, client_threads=args.threads, device=args.device,
                        progress=False)
    t0 = time.perf_counter()
    run_federated(setup)
    fl_total = time.perf_counter() - t0
    history = [json.loads(line) for line in (tmp / "fl" / "history.jsonl").read_text().splitlines()]
    round_s = [h["seconds"] for h in history if h["round"] >= 1]

    model = build_asr_model(setup.config_path)
    model.load_state_dict(load_weights(setup.model_file))
    model.to(args.device)
    preprocess, collate = build_data_pipeline(setup.config_path)
    data = KaldiDataDir.read(setup.adapt_data)
    clients = speaker_clients(data)
    sampler = ClientSampler(len(clients), args.clients_per_round, setup.seed)
    audio = {c.index: load_utterances(data, c.utterances) for c in clients}
    samples = [list(sampler.sample(r)) for r in range(1, args.rounds + 1)]
    workers = args.num_workers if args.backend == "ray" else 1
    central_s = central_round_seconds(workers, setup.config_path, setup.model_file, setup.adapt_data, samples,
                                      local, args.threads, args.device, setup.seed)

    steady_fl = statistics.median(round_s[1:] or round_s)
    steady_central = statistics.median(central_s[1:] or central_s)
    eval_s = sum(h.get("eval_seconds", 0.0) for h in history)
    startup = fl_total - sum(round_s) - eval_s
    costs = [line.split("\t") for line in (tmp / "fl" / "costs.tsv").read_text().splitlines()]
    col = {name: i for i, name in enumerate(costs[0])}
    train_by_round = {}
    for row in costs[1:]:
        train_by_round.setdefault(int(row[col["round"]]), []).append(float(row[col["train_seconds"]]))
    # Clients of a round run on `workers` processes at once: their training takes about sum / workers.
    client_train = statistics.median(sum(v) / workers for r, v in train_by_round.items() if r >= 2 or args.rounds == 1)
    info = ModelInfo.from_model(model)
    merge_s = merge_seconds({k: v.cpu() for k, v in model.state_dict().items() if k in info.sent_keys},
                            info, no_dropout_plan(), args.clients_per_round, args.reps)
    print(f"# Federated round vs central training ({args.backend} backend, {args.clients_per_round} "
          f"clients x {args.local_steps} steps per round, batch {args.batch_size}; both sides {workers} "
          f"process(es) x {args.threads} thread(s))")
    print(f"start-up (simulation outside its rounds and evaluations): {startup:.1f} s; round 1: {round_s[0]:.3f} s")
    print(f"federated round (median of rounds 2..{args.rounds}): {steady_fl:.3f} s")
    print(f"  clients' local training (costs.tsv, / {workers} process(es)): {client_train:.3f} s")
    print(f"  merge (timed apart):                                     {merge_s:.3f} s")
    print(f"  rest (messages, model rebuild, audio loading):           "
          f"{steady_fl - client_train - merge_s:.3f} s")
    print(f"same steps centrally (median):            {steady_central:.3f} s")
    print(f"overhead ratio federated / central:       {steady_fl / steady_central:.2f}   goal <= 1.1")

    # --- 2. client step and bytes at dropout r vs none ----------------------------------------
    plan = uniform_plan(info, args.rate)
    layout = choose_submodel(info.modules, plan.module_rates(info.modules), np.random.default_rng(0))
    full_state = {k: v.cpu() for k, v in model.state_dict().items() if k in info.sent_keys}
    small_state, _ = extract_submodel(full_state, layout)
    sub = build_submodel(model, layout)
    client = clients[0].index
    mems = {}

    def timed(m, name):
        def run():
            work = copy.deepcopy(detach_cached_tensors_(m))
            with PeakMemory(args.device) as mem:
                res = train_locally(work, audio[client], preprocess, collate, local, (1, 1, client), args.device)
            mems[name] = max(mems.get(name, 0), mem.peak_device_bytes)
            return res.step_seconds
        return run

    full_t, sub_t = _interleaved([timed(model, "full"), timed(sub, "sub")], args.reps)
    flops_full, flops_sub = (step_flops(m, audio[client], preprocess, collate, args.batch_size)
                             for m in (model, sub))
    ratio = statistics.median(s / f for s, f in zip(sub_t, full_t))
    params_full = sum(p.numel() for p in model.parameters())
    params_sub = sum(p.numel() for p in sub.parameters())
    b_full, b_sub = tensor_bytes(full_state), tensor_bytes(small_state)
    print(f"\n# Client cost at uniform dropout rate {args.rate} vs no dropout "
          f"({args.reps} interleaved reps of {args.local_steps} steps, batch {args.batch_size})")
    print(f"step time:         {1000 * statistics.median(sub_t):.1f} ms vs {1000 * statistics.median(full_t):.1f} ms "
          f"(ratio {ratio:.2f})")
    print(f"work per step:     {flops_sub / 1e9:.2f} vs {flops_full / 1e9:.2f} GFLOP (ratio {flops_sub / flops_full:.3f}; "
          "forward + backward, matrix products and convolutions, torch.utils.flop_counter)")
    print(f"bytes down (= up): {b_sub / 1e6:.3f} MB vs {b_full / 1e6:.3f} MB (ratio {b_sub / b_full:.3f})")
    print(f"params trained:    {params_sub} vs {params_full} (ratio {params_sub / params_full:.3f})")
    print(f"params+grads+SGD:  {2 * 4 * params_sub / 1e6:.2f} MB vs {2 * 4 * params_full / 1e6:.2f} MB")
    if args.device.startswith("cuda"):
        print(f"peak GPU memory:   {mems['sub'] / 1e6:.0f} MB vs {mems['full'] / 1e6:.0f} MB")
    merge_s = merge_seconds(full_state, info, plan, args.clients_per_round, args.reps)
    print(f"server merge:      {1000 * merge_s:.1f} ms per round ({args.clients_per_round} sub-models, median)")
    print(f"(work dir {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
