"""Flower strategy: FedAvg where every client trains its own federated-dropout sub-model.

:class:`FederatedDropoutFedAvg` subclasses Flower's message-API ``FedAvg`` and overrides the two
hooks that differ:

* ``configure_train``: samples the round's clients (seeded, :class:`ClientSampler`), draws each
  one's sub-model (seeded by run seed, round and client), and sends each client its own message
  with the sub-model's tensors and structure, and the state-dict keys of the plan's frozen
  groups (``frozen-keys``, JSON), which the client does not train and does not return. The unit
  indices stay on the server.
* ``aggregate_train``: merges the returned sub-models into the global model, averaging every
  element over the clients that trained it, weighted by their numbers of examples, with a
  server learning rate (:func:`espnet_ext.federated.submodel.merge_update`). Clients are merged
  in client order, so the result does not depend on the order replies arrive in. Entries no
  client returned (those of frozen groups) keep their global value exactly. The merge streams:
  replies are checked from their arrays' metadata and stay serialized (:class:`ReplyArrays`);
  each array becomes a tensor only when the merge adds it and leaves its reply then, so the
  server never holds the clients' updates as tensors besides the replies themselves.

Failed clients (an error reply, a reply that does not fit what was sent, or no reply before the
timeout) are logged, recorded in the cost ledger and left out of the average. A round in which
every client fails keeps the global model, unless every failure is a real error (not an
injected one): then the run stops, since a systematic error would otherwise only repeat.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from espnet_ext.federated.client import INJECTED_FAILURE
from espnet_ext.federated.cost import ClientCost, tensor_bytes
from espnet_ext.federated.partition import Client, ClientSampler
from espnet_ext.federated.plan import DropoutPlan, ModelInfo
from espnet_ext.federated.submodel import IndexMap, choose_submodel, extract_submodel, merge_update

logger = logging.getLogger(__name__)


class ClientFailureError(RuntimeError):
    """Every client of a round failed with a real (not injected) error."""


@dataclasses.dataclass
class _Sent:
    """What the server sent one client (kept until its reply, to check and merge it).

    Attributes:
        client: Client index.
        index_map: Where each sliced entry came from.
        shapes: Shapes of the entries the client must return (those outside frozen groups).
        bytes_down: Bytes of every tensor sent.
        params: Parameter elements the client trains.
    """

    client: int
    index_map: IndexMap
    shapes: Dict[str, Tuple[int, ...]]
    bytes_down: int
    params: int


class ReplyArrays(Mapping[str, torch.Tensor]):
    """A client reply's arrays as a state dict whose values are read once.

    Reading ``[key]`` converts that array to a tensor (as ``ArrayRecord.to_torch_state_dict``
    does) and removes it from the reply's record, so the serialized copy goes as the tensor
    comes, and the tensor goes when the reader drops it (:func:`merge_update` reads each value
    once). A key that was read is no longer in the mapping.

    Args:
        record: The reply's ArrayRecord (emptied as its values are read).
    """

    def __init__(self, record: ArrayRecord):
        self._record = record

    def __getitem__(self, key: str) -> torch.Tensor:
        return torch.from_numpy(self._record.pop(key).numpy())

    def __contains__(self, key: object) -> bool:
        return key in self._record

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._record.keys()))

    def __len__(self) -> int:
        return len(self._record)

    def shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Shape of every unread array (from its metadata; nothing is converted)."""
        return {k: tuple(int(n) for n in a.shape) for k, a in self._record.items()}

    def nbytes(self) -> int:
        """Bytes of the unread arrays as tensors (numel x element size, as ``tensor_bytes``)."""
        return sum(int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize
                   for a in self._record.values())


@dataclasses.dataclass
class _Update:
    """One client's accepted update: its trained sub-model (read once) and how much it counts."""

    client: int
    state: ReplyArrays
    index_map: IndexMap
    examples: float
    loss: float


def _mean_loss(updates: Sequence[_Update]) -> float:
    """Example-weighted mean of the clients' finite losses (NaN when none is finite)."""
    weights = np.array([u.examples for u in updates])
    losses = np.array([u.loss for u in updates])
    finite = np.isfinite(losses)
    if not finite.any():
        return float("nan")
    return float((weights[finite] * losses[finite]).sum() / weights[finite].sum())


def submodel_rng(seed: int, server_round: int, client: int) -> np.random.Generator:
    """The generator that draws client `client`'s sub-model in round `server_round`."""
    return np.random.default_rng([seed, server_round, client, 1])


class FederatedDropoutFedAvg(FedAvg):
    """FedAvg with per-client sub-models (federated dropout) and seeded client sampling.

    Args:
        info: The model (droppable modules, sent entries, parameter keys).
        plan: The dropout plan (``none`` = plain FedAvg).
        clients: The client population.
        sampler: Per-round client sampler over `clients`.
        node_of_client: Client index -> Flower node id.
        seed: Run seed (sub-model draws).
        server_lr: Server learning rate on the averaged update (1 = FedAvg).
    """

    def __init__(self, info: ModelInfo, plan: DropoutPlan, clients: Sequence[Client],
                 sampler: ClientSampler, node_of_client: Dict[int, int], seed: int = 0,
                 server_lr: float = 1.0):
        # Evaluation is server-side (configure_evaluate sends nothing).
        super().__init__(fraction_train=1.0, min_train_nodes=1, min_available_nodes=1,
                         weighted_by_key="num-examples")
        if server_lr <= 0:
            raise ValueError(f"server learning rate must be > 0, got {server_lr}")
        self.info = info
        self.plan = plan
        self.module_rates = plan.module_rates(info.modules)
        self.frozen_keys = json.dumps(sorted(plan.frozen_keys(info)))
        self.returned_keys = frozenset(plan.returned_keys(info, info.sent_keys))
        self.clients = list(clients)
        self.sampler = sampler
        self.node_of_client = dict(node_of_client)
        self.seed = seed
        self.server_lr = server_lr
        self.num_params = info.num_params
        self._global: Dict[str, torch.Tensor] = {}
        self._pending: Dict[int, _Sent] = {}
        self.last_costs: List[ClientCost] = []
        self.last_round = 0

    def summary(self) -> None:
        logger.info(f"FederatedDropoutFedAvg: plan {self.plan.name} ({self.plan.note}); "
                    f"{self.sampler.clients_per_round} of {len(self.clients)} clients per round; "
                    f"server lr {self.server_lr}")

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid) -> Iterable[Message]:
        """One message per sampled client, each with that client's own sub-model (a list:
        Flower's grids iterate the messages more than once)."""
        return list(self.configure_train_state(server_round, arrays.to_torch_state_dict(), config))

    def configure_train_state(self, server_round: int, state: Dict[str, torch.Tensor],
                              config: ConfigRecord) -> Iterator[Message]:
        """:meth:`configure_train` from the global model's state dict (not copied, not changed),
        the messages made as they are taken (a generator): a grid that delivers each message
        before taking the next (:class:`espnet_ext.federated.simulation.LocalGrid`) never has
        more than one client's sub-model in the server's memory. The sampling and the global
        model are fixed here, before the first message is taken."""
        self._global = state
        self._pending = {}
        self.last_round = server_round
        return self._train_messages(server_round, list(self.sampler.sample(server_round)), config)

    def _train_messages(self, server_round: int, sampled: Sequence[int], config: ConfigRecord) -> Iterator[Message]:
        """The round's messages, in client order; each client's sub-model is drawn and
        extracted when its message is taken, and what the reply is checked against is kept."""
        for c in sampled:
            layout = choose_submodel(self.info.modules, self.module_rates,
                                     submodel_rng(self.seed, server_round, c), self.plan.group_norm_policy)
            small, imap = extract_submodel(self._global, layout)
            returned = [k for k in small if k in self.returned_keys]
            params = sum(small[k].numel() for k in self.info.param_keys
                         if k in small and k in self.returned_keys)
            cfg = ConfigRecord(dict(config))
            cfg["server-round"] = server_round
            cfg["client-index"] = c
            cfg["structure"] = json.dumps(layout.structure(), sort_keys=True)
            cfg["frozen-keys"] = self.frozen_keys
            node = self.node_of_client[c]
            self._pending[node] = _Sent(c, imap, {k: tuple(small[k].shape) for k in returned},
                                        tensor_bytes(small), params)
            yield Message(RecordDict({self.arrayrecord_key: ArrayRecord(torch_state_dict=small),
                                      self.configrecord_key: cfg}),
                          dst_node_id=node, message_type=MessageType.TRAIN)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid) -> Iterable[Message]:
        """No federated evaluation: the server scores the global model on held-out sets."""
        return []

    def _failed(self, sent: _Sent, server_round: int, reason: str) -> ClientCost:
        logger.warning(f"round {server_round}: client {sent.client} "
                       f"({self.clients[sent.client].speaker}) failed: {reason}")
        return ClientCost(server_round, sent.client, self.clients[sent.client].speaker,
                          num_examples=self.clients[sent.client].num_examples,
                          params_trained=sent.params, params_full=self.num_params,
                          bytes_down=sent.bytes_down, failed=True, reason=reason[:500])

    def _read_reply(self, sent: _Sent, msg: Message, server_round: int) -> Tuple[ClientCost, Optional[_Update]]:
        """A client's cost, and its update if the reply is usable (else the cost says why not)."""
        if msg.has_error():
            return self._failed(sent, server_round, str(msg.error.reason)), None
        state = ReplyArrays(msg.content[self.arrayrecord_key])
        metrics = msg.content["metrics"]
        shapes = state.shapes()
        if shapes != sent.shapes:
            wrong = next((k for k in sent.shapes if shapes.get(k) != sent.shapes[k]),
                         next(iter(set(shapes) - set(sent.shapes)), "?"))
            return self._failed(sent, server_round,
                                f"returned tensors do not match what was sent (at {wrong})"), None
        examples = int(metrics["num-examples"])
        if examples <= 0:
            return self._failed(sent, server_round, "reported no training examples"), None
        cost = ClientCost(
            server_round, sent.client, self.clients[sent.client].speaker, num_examples=examples,
            params_trained=int(metrics["params-trained"]), params_full=self.num_params,
            bytes_down=sent.bytes_down, bytes_up=state.nbytes(), steps=int(metrics["steps"]),
            train_seconds=float(metrics["train-seconds"]),
            step_seconds=float(metrics["step-seconds"]),
            peak_rss_bytes=int(metrics["peak-rss-bytes"]),
            peak_device_bytes=int(metrics["peak-device-bytes"]),
            model_state_bytes=int(metrics["model-state-bytes"]), loss=float(metrics["loss"]))
        return cost, _Update(sent.client, state, sent.index_map, float(examples), float(metrics["loss"]))

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> Tuple[Optional[ArrayRecord], Optional[MetricRecord]]:
        """Merge the sub-models of the clients that replied; record every client's cost."""
        state, metrics = self.aggregate_train_state(server_round, replies)
        return (ArrayRecord(torch_state_dict=state) if state is not None else None), metrics

    def aggregate_train_state(self, server_round: int, replies: Iterable[Message]
                              ) -> Tuple[Optional[Dict[str, torch.Tensor]], Optional[MetricRecord]]:
        """:meth:`aggregate_train` returning the new global state dict (None: no update)."""
        costs: List[ClientCost] = []
        updates: List[_Update] = []
        for msg in replies:
            sent = self._pending.pop(msg.metadata.src_node_id, None)
            if sent is None:
                logger.warning(f"round {server_round}: ignoring a reply from unknown node "
                               f"{msg.metadata.src_node_id}")
                continue
            cost, update = self._read_reply(sent, msg, server_round)
            costs.append(cost)
            if update is not None:
                updates.append(update)
        for sent in self._pending.values():
            costs.append(self._failed(sent, server_round, "no reply before the round's timeout"))
        self._pending = {}
        self.last_costs = sorted(costs, key=lambda c: c.client)
        if not updates:
            failures = [c.reason for c in costs]
            if failures and not any(r.startswith(INJECTED_FAILURE) for r in failures):
                raise ClientFailureError(
                    f"round {server_round}: all {len(failures)} clients failed; first error: {failures[0]}")
            logger.warning(f"round {server_round}: no client update; the global model is unchanged")
            return None, None
        updates.sort(key=lambda u: u.client)  # merge in client order: independent of reply order
        # Streams: each reply array becomes a tensor only while it is added (ReplyArrays).
        new = merge_update(self._global, [u.state for u in updates], [u.index_map for u in updates],
                           [u.examples for u in updates], server_lr=self.server_lr)
        metrics = MetricRecord({"loss": _mean_loss(updates), "clients": len(updates),
                                "failures": len(costs) - len(updates)})
        return new, metrics
