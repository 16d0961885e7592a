"""The federated server: rounds, per-round checkpoints, resume, evaluation, results.

:func:`run_server` is the body of the Flower ``ServerApp``. It maps Flower nodes to clients
(each node reports its partition id, i.e. its speaker), then runs the rounds with
:class:`espnet_ext.federated.strategy.FederatedDropoutFedAvg`:
``configure_train`` -> ``grid.send_and_receive`` -> ``aggregate_train``.

After every round it writes, in this order, the cost ledger (``costs.tsv``), the round history
(``history.jsonl``: seconds, loss, clients, failures, scores) and a checkpoint
(``checkpoints/round<N>.pth``, atomically). A run started again in the same ``out_dir`` resumes
after the last checkpoint and drops ledger/history rows of later rounds, so a killed run ends
with the same final model as an uninterrupted one: every random choice is seeded by (seed,
round, client), and the checkpoint holds the whole server state (the global model).

At the end: ``model.pth`` (the full ESPnet state dict; with the run's ``config.yaml`` it decodes
like any ESPnet model), ``decode/round<N>/<set>/text`` hypotheses of the pre-trained and the
final model, the final model's per-utterance error counts (``per_utt.tsv``), and
``results.json`` / ``results.md`` (:mod:`espnet_ext.federated.results`). Rounds in which no client
update arrived keep the global model; ``results.json`` counts the rounds that had one
(``rounds_with_updates``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from espnet_ext.federated.cost import CostLedger

CHECKPOINT_DIR = "checkpoints"
_CKPT = re.compile(r"^round(\d+)\.pth$")
logger = logging.getLogger(__name__)


def checkpoint_path(out_dir: Path, server_round: int) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR / f"round{server_round}.pth"


def saved_rounds(out_dir: Path) -> List[int]:
    """Rounds with a complete checkpoint (written atomically), ascending."""
    d = Path(out_dir) / CHECKPOINT_DIR
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for p in d.iterdir() if (m := _CKPT.match(p.name)))


def save_checkpoint(out_dir: Path, server_round: int, state: Dict[str, torch.Tensor], keep: int) -> None:
    """Write the global state after `server_round` atomically; keep the last `keep` ones."""
    path = checkpoint_path(out_dir, server_round)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"round": server_round, "state": state}, tmp)
    os.replace(tmp, path)
    for r in saved_rounds(out_dir)[:-keep]:
        checkpoint_path(out_dir, r).unlink(missing_ok=True)


def load_checkpoint(out_dir: Path, server_round: int) -> Dict[str, torch.Tensor]:
    data = torch.load(checkpoint_path(out_dir, server_round), map_location="cpu", weights_only=True)
    return data["state"]


class History:
    """One JSON line per round (round 0 = the pre-trained model) in ``history.jsonl``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: List[dict] = []
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    self.rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by an interruption: the round is redone

    def truncate_after(self, server_round: int) -> None:
        self.rows = [r for r in self.rows if r["round"] <= server_round]
        self.save()

    def add(self, row: dict) -> None:
        self.rows = [r for r in self.rows if r["round"] != row["round"]] + [row]
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows), encoding="utf-8")
        os.replace(tmp, self.path)

    def row(self, server_round: int) -> Optional[dict]:
        return next((r for r in self.rows if r["round"] == server_round), None)


def wait_for_nodes(grid, count: int, timeout: float = 300.0) -> List[int]:
    """Node ids once `count` nodes are connected.

    Raises:
        TimeoutError: Fewer nodes after `timeout` seconds.
    """
    t0 = time.monotonic()
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"only {len(nodes)} of {count} client nodes connected after {timeout:.0f} s")
        time.sleep(0.1)


def map_nodes_to_clients(grid, nodes: List[int], timeout: float) -> Dict[int, int]:
    """Client index (partition id) -> node id, asked of every node once."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    messages = [Message(RecordDict({"config": ConfigRecord({"ask": "partition-id"})}),
                        dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
    node_of_client: Dict[int, int] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            raise RuntimeError(f"node {reply.metadata.src_node_id} did not report its client: "
                               f"{reply.error.reason}")
        node_of_client[int(reply.content["metrics"]["partition-id"])] = reply.metadata.src_node_id
    return node_of_client


def run_server(grid, setup) -> dict:
    """Run (or resume) the federated rounds of `setup` on a Flower grid.

    Args:
        grid: Flower ``Grid`` (simulation runtime) or :class:`espnet_ext.federated.simulation.LocalGrid`.
        setup: The run's :class:`espnet_ext.federated.options.FederatedSetup`.

    Returns:
        The results dict (also written to ``results.json``).
    """
    from flwr.app import ArrayRecord, ConfigRecord
    from tqdm import tqdm

    from espnet_ext.federated.evaluate import PER_UTT_FILE, GlobalModelEvaluator
    from espnet_ext.federated.modelio import build_asr_model, load_weights
    from espnet_ext.federated.partition import ClientSampler, speaker_clients
    from espnet_ext.federated.plan import ModelInfo
    from espnet_ext.federated.results import write_results
    from espnet_ext.federated.strategy import FederatedDropoutFedAvg

    out = Path(setup.out_dir)
    model = build_asr_model(setup.config_path)
    pretrained = load_weights(setup.model_file)
    model.load_state_dict(pretrained, strict=True)
    info = ModelInfo.from_model(model)
    setup.plan.validate(info)
    clients = speaker_clients(setup.adapt_data, setup.min_utts)
    sampler = ClientSampler(len(clients), setup.clients_per_round, setup.seed)

    nodes = wait_for_nodes(grid, len(clients))
    node_of_client = map_nodes_to_clients(grid, nodes, setup.round_timeout)
    missing = [c for c in range(len(clients)) if c not in node_of_client]
    if missing:
        raise RuntimeError(f"no node reported client {missing[0]}")

    done = [r for r in saved_rounds(out) if r <= setup.rounds]
    start = done[-1] if done else 0
    state = (load_checkpoint(out, start) if start else
             {k: pretrained[k].clone() for k in info.sent_keys})
    if start:
        logger.info(f"resuming after round {start} from {checkpoint_path(out, start)}")
    ledger = CostLedger(out / "costs.tsv")
    ledger.truncate_after(start)
    history = History(out / "history.jsonl")
    history.truncate_after(start)

    evaluator = None
    if setup.eval_data:
        evaluator = GlobalModelEvaluator(setup.config_path, pretrained, setup.eval_data,
                                         setup.device, setup.eval_batch_size)
    if history.row(0) is None:
        t0 = time.perf_counter()
        scores = evaluator.evaluate({k: pretrained[k] for k in info.sent_keys},
                                    out / "decode" / "round0") if evaluator else {}
        history.add({"round": 0, "seconds": 0.0, "eval_seconds": time.perf_counter() - t0,
                     "scores": scores})

    strategy = FederatedDropoutFedAvg(info, setup.plan, clients, sampler, node_of_client,
                                      seed=setup.seed, server_lr=setup.server_lr)
    strategy.summary()
    bar = tqdm(total=setup.rounds, initial=start, desc=f"federated rounds ({setup.plan.name})",
               unit="round", disable=not setup.progress)
    for server_round in range(start + 1, setup.rounds + 1):
        t0 = time.perf_counter()
        messages = strategy.configure_train(server_round, ArrayRecord(torch_state_dict=state),
                                            ConfigRecord(), grid)
        replies = grid.send_and_receive(messages, timeout=setup.round_timeout)
        arrays, metrics = strategy.aggregate_train(server_round, replies)
        if arrays is not None:
            state = arrays.to_torch_state_dict()
        seconds = time.perf_counter() - t0
        ledger.add(strategy.last_costs)
        ledger.save()
        last = server_round == setup.rounds
        scores, eval_seconds = {}, 0.0
        if evaluator and (last or (setup.eval_every and server_round % setup.eval_every == 0)):
            t1 = time.perf_counter()
            scores = (evaluator.evaluate(state, out / "decode" / f"round{server_round}", out / PER_UTT_FILE)
                      if last else evaluator.evaluate(state))
            eval_seconds = time.perf_counter() - t1
        history.add({
            "round": server_round, "seconds": seconds, "eval_seconds": eval_seconds,
            "loss": float(metrics["loss"]) if metrics is not None else float("nan"),
            "clients": int(metrics["clients"]) if metrics is not None else 0,
            "failures": sum(1 for c in strategy.last_costs if c.failed),
            "scores": scores,
        })
        save_checkpoint(out, server_round, state, setup.keep_checkpoints)
        row = history.row(server_round)
        bar.set_postfix(loss=f"{row['loss']:.3g}", failed=row["failures"])
        bar.update(1)
        if not setup.progress:
            # Without a bar (recipe stages, logs), one line per round shows progress instead.
            done = " ".join(f"{name} CER {s['CER']:.2f}" for name, s in scores.items())
            logger.info(f"round {server_round}/{setup.rounds} ({setup.plan.name}): loss {row['loss']:.3g}, "
                        f"{row['failures']} failed, {seconds:.1f} s {done}".rstrip())
    bar.close()
    if evaluator and not (out / PER_UTT_FILE).is_file():
        # A run finished before per-utterance counts were kept gets them from its final model.
        evaluator.evaluate(state, per_utt=out / PER_UTT_FILE)

    final = {k: v.clone() for k, v in pretrained.items()}
    final.update(state)
    tmp = out / "model.pth.tmp"
    torch.save(final, tmp)
    os.replace(tmp, out / "model.pth")
    return write_results(out, setup, info, ledger, history)
