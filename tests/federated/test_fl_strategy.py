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
