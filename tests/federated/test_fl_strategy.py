"""The server's view of a client reply: arrays read once, checked from their metadata."""

from __future__ import annotations

import weakref

import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import ArrayRecord  # noqa: E402

from espnet_ext.federated.cost import tensor_bytes  # noqa: E402
from espnet_ext.federated.strategy import ReplyArrays  # noqa: E402
from espnet_ext.federated.submodel import merge_update  # noqa: E402


def _reply_state(seed: int):
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(2, 3, generator=g), "b": torch.randn(2, generator=g),
            "h": torch.randn(4, generator=g, dtype=torch.float64), "n": torch.tensor(seed + 3)}


def test_reply_arrays_are_checked_from_metadata_and_converted_once_as_flower_does():
    state = _reply_state(0)
    record = ArrayRecord(torch_state_dict=state)
    reply = ReplyArrays(record)
    assert reply.shapes() == {k: tuple(v.shape) for k, v in state.items()}
    assert reply.nbytes() == tensor_bytes(state)
    assert sorted(reply) == sorted(state) and len(reply) == 4 and "w" in reply
    expected = ArrayRecord(torch_state_dict=state).to_torch_state_dict()
    w = reply["w"]
    assert torch.equal(w, expected["w"]) and w.dtype == expected["w"].dtype
    # Read once: the array left the reply's record with the read.
    assert "w" not in reply and "w" not in record and len(record) == 3
    assert reply.nbytes() == tensor_bytes({k: v for k, v in state.items() if k != "w"})
    with pytest.raises(KeyError):
        reply["w"]


def test_merge_of_replies_streams_is_bit_identical_and_leaves_nothing_behind():
    g = {"w": torch.zeros(4, 3), "b": torch.ones(4), "h": torch.zeros(4, dtype=torch.float64),
         "n": torch.tensor(0), "frozen": torch.full((2,), 7.0)}
    states = [_reply_state(c) for c in range(3)]
    maps = [{"w": (0, torch.tensor([0, 1])), "b": (0, torch.tensor([0, 1]))},
            {"w": (0, torch.tensor([1, 2])), "b": (0, torch.tensor([1, 2]))},
            {"w": (0, torch.tensor([2, 3])), "b": (0, torch.tensor([2, 3]))}]
    weights = [2.0, 1.0, 3.5]
    expected = merge_update(g, states, maps, weights, server_lr=0.9)
    records = [ArrayRecord(torch_state_dict=s) for s in states]
    seen = []

    class Watched(ReplyArrays):
        def __getitem__(self, key):
            value = super().__getitem__(key)
            seen.append(weakref.ref(value))
            return value

    merged = merge_update(g, [Watched(r) for r in records], maps, weights, server_lr=0.9)
    for k in g:
        assert torch.equal(merged[k], expected[k]), k
    assert torch.equal(merged["frozen"], g["frozen"])
    assert all(len(r) == 0 for r in records)  # every array read and gone from its reply
    assert len(seen) == 12 and all(r() is None for r in seen)  # no tensor of a reply kept


def test_round_makes_each_message_when_the_grid_takes_it_and_runs_each_client_when_asked(tmp_path):
    """In-process rounds hold one client's sub-model message at a time: the strategy makes a message
    only when the grid takes it, and the grid runs a client only when its reply is asked for; the
    merge and the costs are those of the whole round."""
    pytest.importorskip("espnet2.tasks.asr")
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from helpers import build_tiny_model

    from espnet_ext.federated.partition import Client, ClientSampler
    from espnet_ext.federated.plan import ModelInfo, uniform_plan
    from espnet_ext.federated.simulation import LocalGrid
    from espnet_ext.federated.strategy import FederatedDropoutFedAvg

    model = build_tiny_model(tmp_path)
    info = ModelInfo.from_model(model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if k in info.sent_keys}
    events = []
    app = ClientApp()

    @app.train()
    def train(msg: Message, context) -> Message:
        events.append(("client", int(msg.content["config"]["client-index"])))
        sub = msg.content["arrays"].to_torch_state_dict()
        metrics = MetricRecord({"num-examples": 2, "params-trained": 1, "steps": 1, "train-seconds": 0.0,
                                "step-seconds": 0.0, "peak-rss-bytes": 0, "peak-device-bytes": 0,
                                "model-state-bytes": 0, "loss": 1.0})
        return Message(RecordDict({"arrays": ArrayRecord(torch_state_dict={k: v + 1 if v.is_floating_point() else v
                                                                           for k, v in sub.items()}),
                                   "metrics": metrics}), reply_to=msg)

    n = 3
    grid = LocalGrid(app, n)
    strategy = FederatedDropoutFedAvg(info, uniform_plan(info, 0.5), [Client(i, f"s{i}", ("u", "v")) for i in range(n)],
                                      ClientSampler(n, n, seed=0), {c: 101 + c for c in range(n)}, seed=0)
    # Flower's API gives a list (its grids iterate the messages twice) ...
    listed = strategy.configure_train(1, ArrayRecord(torch_state_dict=state), ConfigRecord(), grid)
    assert isinstance(listed, list) and len(listed) == n
    # ... the server's own entry point a generator, which the in-process grid takes one at a time.
    assert LocalGrid.STREAMS_MESSAGES
    messages = strategy.configure_train_state(1, state, ConfigRecord())
    assert strategy._pending == {}  # nothing extracted before the grid takes a message

    def taken(it):
        for msg in it:
            events.append(("message", int(msg.content["config"]["client-index"])))
            yield msg

    replies = grid.send_and_receive(taken(iter(messages)))
    assert events == []  # nothing sent or run until a reply is asked for
    first = next(replies)
    assert events == [("message", 0), ("client", 0)] and first.metadata.src_node_id == 101
    arrays, metrics = strategy.aggregate_train(1, [first, *replies])
    assert events == [("message", 0), ("client", 0), ("message", 1), ("client", 1), ("message", 2), ("client", 2)]
    assert int(metrics["clients"]) == n and len(strategy.last_costs) == n
    assert all(not c.failed and c.bytes_up == c.bytes_down for c in strategy.last_costs)
    new = arrays.to_torch_state_dict()
    moved = [k for k in state if state[k].is_floating_point() and not torch.equal(new[k], state[k])]
    assert moved  # the clients' +1 reached the merged model
