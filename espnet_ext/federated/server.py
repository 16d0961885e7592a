"""The federated server: rounds, per-round checkpoints, resume, evaluation, results.

:func:`run_server` is the body of the Flower ``ServerApp``. It maps Flower nodes to clients
(each node reports its partition id, i.e. its speaker), then runs the rounds with
:class:`espnet_ext.federated.strategy.FederatedDropoutFedAvg`:
``configure_train`` -> ``grid.send_and_receive`` -> ``aggregate_train`` (their state-dict forms).

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
import re
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from espnet_ext.federated.cost import CostLedger
from espnet_ext.utils.atomic import save_torch_atomic, write_text_atomic

ROUND_CHECKPOINT_DIR = "checkpoints"
_ROUND_CHECKPOINT = re.compile(r"^round(\d+)\.pth$")
logger = logging.getLogger(__name__)


def round_checkpoint_path(out_dir: Path, server_round: int) -> Path:
    """The global model after federated round `server_round`: ``<out_dir>/checkpoints/round<N>.pth``."""
    return Path(out_dir) / ROUND_CHECKPOINT_DIR / f"round{server_round}.pth"


def saved_rounds(out_dir: Path) -> List[int]:
    """Rounds with a complete round checkpoint (written atomically), ascending."""
    d = Path(out_dir) / ROUND_CHECKPOINT_DIR
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for p in d.iterdir() if (m := _ROUND_CHECKPOINT.match(p.name)))


def save_round_checkpoint(out_dir: Path, server_round: int, state: Dict[str, torch.Tensor], keep: int) -> None:
    """Write the global state after `server_round` atomically; keep the last `keep` rounds' files."""
    save_torch_atomic({"round": server_round, "state": state}, round_checkpoint_path(out_dir, server_round))
    for r in saved_rounds(out_dir)[:-keep]:
        round_checkpoint_path(out_dir, r).unlink(missing_ok=True)


def load_round_checkpoint(out_dir: Path, server_round: int) -> Dict[str, torch.Tensor]:
    """The global state saved after `server_round` (:func:`save_round_checkpoint`)."""
    data = torch.load(round_checkpoint_path(out_dir, server_round), map_location="cpu", weights_only=True)
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
        write_text_atomic(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows))

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


def connect_clients(grid, num_clients: int, timeout: float) -> Dict[int, int]:
    """Wait for a node per client and learn which node runs which client.

    Returns:
        Client index (partition id) -> node id.

    Raises:
        TimeoutError: Fewer nodes than clients after the wait.
        RuntimeError: A node that does not report its client, or a client no node reported.
    """
    nodes = wait_for_nodes(grid, num_clients)
    node_of_client = map_nodes_to_clients(grid, nodes, timeout)
    missing = [c for c in range(num_clients) if c not in node_of_client]
    if missing:
        raise RuntimeError(f"no node reported client {missing[0]}")
    return node_of_client


def resume_point(out_dir: Path, rounds: int, initial: Dict[str, torch.Tensor]) -> Tuple[int, Dict[str, torch.Tensor]]:
    """(last finished round, global state after it): the newest round checkpoint of at most
    `rounds`, or (0, copies of `initial`) for a new run."""
    done = [r for r in saved_rounds(out_dir) if r <= rounds]
    if not done:
        return 0, {k: v.clone() for k, v in initial.items()}
    logger.info(f"resuming after round {done[-1]} from {round_checkpoint_path(out_dir, done[-1])}")
    return done[-1], load_round_checkpoint(out_dir, done[-1])


def _evaluate_pretrained(evaluator, history: History, state: Dict[str, torch.Tensor], out_dir: Path) -> None:
    """History row 0: the pre-trained model's scores (once per run directory)."""
    if history.row(0) is not None:
        return
    t0 = time.perf_counter()
    scores = evaluator.evaluate(state, Path(out_dir) / "decode" / "round0") if evaluator else {}
    history.add({"round": 0, "seconds": 0.0, "eval_seconds": time.perf_counter() - t0, "scores": scores})


def _train_round(strategy, grid, server_round: int, state: Dict[str, torch.Tensor],
                 timeout: float) -> Tuple[Dict[str, torch.Tensor], Optional[Mapping[str, float]]]:
    """One round of client training and merging: (new global state, round metrics or None).

    A round without any client update keeps `state` and has no metrics. The strategy takes and
    gives state dicts here (its ``*_state`` methods): Flower's ArrayRecord entry points would
    serialize and copy the whole global model twice per round for nothing.
    """
    from flwr.app import ConfigRecord

    messages = strategy.configure_train_state(server_round, state, ConfigRecord())
    if not getattr(grid, "STREAMS_MESSAGES", False):
        messages = list(messages)  # Flower's grids iterate the messages twice (checks, then push)
    replies = grid.send_and_receive(messages, timeout=timeout)
    new, metrics = strategy.aggregate_train_state(server_round, replies)
    return (new if new is not None else state), metrics


def _evaluate_round(evaluator, setup, server_round: int, state: Dict[str, torch.Tensor]) -> Tuple[dict, float]:
    """(scores, seconds) of the global model after `server_round`: every ``eval_every`` rounds
    and after the last (which also writes its hypotheses and ``per_utt.tsv``); ({}, 0) otherwise."""
    from espnet_ext.federated.evaluate import PER_UTT_FILE

    last = server_round == setup.rounds
    if not evaluator or not (last or (setup.eval_every and server_round % setup.eval_every == 0)):
        return {}, 0.0
    out = Path(setup.out_dir)
    t0 = time.perf_counter()
    scores = (evaluator.evaluate(state, out / "decode" / f"round{server_round}", out / PER_UTT_FILE)
              if last else evaluator.evaluate(state))
    return scores, time.perf_counter() - t0


def _round_row(server_round: int, seconds: float, eval_seconds: float, metrics: Optional[Mapping[str, float]],
               costs, scores: dict) -> dict:
    """A round's ``history.jsonl`` row (seconds: wall time of training and merging)."""
    return {
        "round": server_round, "seconds": seconds, "eval_seconds": eval_seconds,
        "loss": float(metrics["loss"]) if metrics is not None else float("nan"),
        "clients": int(metrics["clients"]) if metrics is not None else 0,
        "failures": sum(1 for c in costs if c.failed),
        "scores": scores,
    }


def _log_round(setup, row: dict) -> None:
    """Without a progress bar (recipe stages, logs), one line per round shows progress instead."""
    scores = " ".join(f"{name} CER {s['CER']:.2f}" for name, s in row["scores"].items())
    logger.info(f"round {row['round']}/{setup.rounds} ({setup.plan.name}): loss {row['loss']:.3g}, "
                f"{row['failures']} failed, {row['seconds']:.1f} s {scores}".rstrip())


def _save_final_model(out_dir: Path, pretrained: Dict[str, torch.Tensor], state: Dict[str, torch.Tensor]) -> None:
    """``model.pth``: the full ESPnet state dict, the federated entries replaced by `state`."""
    final = {k: v.clone() for k, v in pretrained.items()}
    final.update(state)
    save_torch_atomic(final, Path(out_dir) / "model.pth")


def run_server(grid, setup) -> dict:
    """Run (or resume) the federated rounds of `setup` on a Flower grid.

    Args:
        grid: Flower ``Grid`` (simulation runtime) or :class:`espnet_ext.federated.simulation.LocalGrid`.
        setup: The run's :class:`espnet_ext.federated.options.FederatedSetup`.

    Returns:
        The results dict (also written to ``results.json``).
    """
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
    node_of_client = connect_clients(grid, len(clients), setup.round_timeout)

    sent_pretrained = {k: pretrained[k] for k in info.sent_keys}
    start, state = resume_point(out, setup.rounds, sent_pretrained)
    ledger = CostLedger(out / "costs.tsv")
    ledger.truncate_after(start)
    history = History(out / "history.jsonl")
    history.truncate_after(start)
    evaluator = (GlobalModelEvaluator(setup.config_path, pretrained, setup.eval_data, setup.device,
                                      setup.eval_batch_size) if setup.eval_data else None)
    _evaluate_pretrained(evaluator, history, sent_pretrained, out)

    strategy = FederatedDropoutFedAvg(info, setup.plan, clients, sampler, node_of_client,
                                      seed=setup.seed, server_lr=setup.server_lr)
    strategy.summary()
    bar = tqdm(total=setup.rounds, initial=start, desc=f"federated rounds ({setup.plan.name})",
               unit="round", disable=not setup.progress)
    for server_round in range(start + 1, setup.rounds + 1):
        t0 = time.perf_counter()
        state, metrics = _train_round(strategy, grid, server_round, state, setup.round_timeout)
        seconds = time.perf_counter() - t0
        ledger.add(strategy.last_costs)
        ledger.save()
        scores, eval_seconds = _evaluate_round(evaluator, setup, server_round, state)
        history.add(_round_row(server_round, seconds, eval_seconds, metrics, strategy.last_costs, scores))
        save_round_checkpoint(out, server_round, state, setup.keep_checkpoints)
        row = history.row(server_round)
        bar.set_postfix(loss=f"{row['loss']:.3g}", failed=row["failures"])
        bar.update(1)
        if not setup.progress:
            _log_round(setup, row)
    bar.close()
    if evaluator and not (out / PER_UTT_FILE).is_file():
        # A run finished before per-utterance counts were kept gets them from its final model.
        evaluator.evaluate(state, per_utt=out / PER_UTT_FILE)
    _save_final_model(out, pretrained, state)
    return write_results(out, setup, info, ledger, history)
