"""The federated server's run state: round checkpoints and where a run resumes."""

import torch

from espnet_ext.federated.server import (
    load_round_checkpoint,
    resume_point,
    round_checkpoint_path,
    save_round_checkpoint,
    saved_rounds,
)


def test_round_checkpoints_keep_the_last_rounds(tmp_path):
    for r in (1, 2, 3):
        save_round_checkpoint(tmp_path, r, {"w": torch.full((2,), float(r))}, keep=2)
    assert saved_rounds(tmp_path) == [2, 3]
    assert round_checkpoint_path(tmp_path, 3) == tmp_path / "checkpoints" / "round3.pth"
    assert torch.equal(load_round_checkpoint(tmp_path, 3)["w"], torch.full((2,), 3.0))
    (tmp_path / "checkpoints" / "round4.pth.tmp").write_bytes(b"cut")  # an interrupted write
    assert saved_rounds(tmp_path) == [2, 3]


def test_resume_point_is_the_newest_round_within_the_run(tmp_path):
    initial = {"w": torch.zeros(2)}
    start, state = resume_point(tmp_path, 5, initial)
    assert start == 0 and torch.equal(state["w"], initial["w"]) and state["w"] is not initial["w"]
    for r in (1, 2, 3):
        save_round_checkpoint(tmp_path, r, {"w": torch.full((2,), float(r))}, keep=5)
    start, state = resume_point(tmp_path, 5, initial)
    assert start == 3 and torch.equal(state["w"], torch.full((2,), 3.0))
    # A run shortened to 2 rounds resumes from round 2, not from a later round's file.
    start, state = resume_point(tmp_path, 2, initial)
    assert start == 2 and torch.equal(state["w"], torch.full((2,), 2.0))
