"""Weight updates per layer group: known norms, zero-norm groups, buffers, trajectories, errors."""

import math

import pytest
import torch

from espnet_ext.experiment.checkpoints import checkpoint_path

from espnet_ext.analysis import weight_updates as wu
from espnet_ext.layers import ArchitectureMismatchError, build_layer_map


def _state(scale_block0=1.0, scale_block1=1.0, bias=0.0, running_var=1.0):
    """A hand-made Conformer-like state dict with exactly known norms."""
    return {
        "encoder.embed.out.0.weight": torch.full((2, 2), 1.0),  # norm 2
        "encoder.encoders.0.feed_forward.w_1.weight": torch.tensor([[3.0, 4.0]]) * scale_block0,  # 5
        "encoder.encoders.0.conv_module.norm.weight": torch.zeros(2) * scale_block0,
        "encoder.encoders.0.conv_module.norm.running_var": torch.full((2,), running_var),
        "encoder.encoders.0.conv_module.norm.num_batches_tracked": torch.tensor(7),
        "encoder.encoders.1.feed_forward.w_1.weight": torch.tensor([[0.0, 2.0]]) * scale_block1,
        "encoder.after_norm.bias": torch.full((4,), bias),  # starts at zero
    }


def _map(state):
    return build_layer_map(state, "block")


def test_relative_update_is_frobenius_over_the_group_parameters_only():
    init = _state()
    final = _state(scale_block0=1.5, scale_block1=0.5, bias=0.5, running_var=100.0)
    ups = {u.group: u for u in wu.updates_from_states(_map(final), init, final)}
    b0 = ups["encoder.encoders.0"]
    # Parameters of block 0: w_1 [3,4] and the norm weight [0,0]; running_var/num_batches_tracked
    # are buffers and must not count.
    assert b0.init_norm == pytest.approx(5.0)
    assert b0.abs_update == pytest.approx(2.5)
    assert b0.rel_update == pytest.approx(0.5)
    assert ups["encoder.encoders.1"].rel_update == pytest.approx(0.5)
    assert ups["encoder.embed"].rel_update == 0.0
    # A group whose parameters start at zero: relative update undefined, absolute reported.
    bias = ups["encoder.after_norm"]
    assert bias.init_norm == 0.0 and math.isnan(bias.rel_update)
    assert bias.abs_update == pytest.approx(1.0)  # ||[.5,.5,.5,.5]||


def test_trajectory_from_init_and_to_final():
    init = _state()
    mid = _state(scale_block0=1.2)
    final = _state(scale_block0=1.5)
    (b0,) = [u for u in wu.updates_from_states(_map(final), init, final, [(0, init), (1, mid), (2, final)])
             if u.group == "encoder.encoders.0"]
    assert b0.from_init == pytest.approx([0.0, 0.2, 0.5])
    # ||theta_T - theta_tau|| / ||theta_tau||: 2.5/5, 1.5/6, 0
    assert b0.to_final == pytest.approx([0.5, 0.25, 0.0])
    assert b0.abs_to_final == pytest.approx([2.5, 1.5, 0.0])


def _write_run(tmp_path, scales, name="run"):
    exp = tmp_path / name
    (exp / "checkpoints").mkdir(parents=True)
    for tau, s in enumerate(scales):
        torch.save(_state(scale_block0=s), checkpoint_path(exp, tau))
    return exp


def test_compute_from_checkpoints_streams_one_epoch_at_a_time(tmp_path, monkeypatch):
    exp = _write_run(tmp_path, [1.0, 1.1, 1.3, 1.4])
    torch.save(_state(scale_block0=1.5), exp / "valid.acc.ave.pth")
    loads = []
    real = wu.load_state_dict_file
    monkeypatch.setattr(wu, "load_state_dict_file", lambda p: loads.append(p.name) or real(p))
    run = wu.compute_weight_updates(exp, "block", final_file=exp / "valid.acc.ave.pth")
    # theta_T, theta_0, then each later epoch once (checkpoint 0 is not read twice).
    assert loads == ["valid.acc.ave.pth", "0epoch.pth", "1epoch.pth", "2epoch.pth", "3epoch.pth"]
    assert run.epochs == [0, 1, 2, 3]
    assert run.num_blocks == {"encoder": 2}
    b0 = run.by_name()["encoder.encoders.0"]
    assert b0.rel_update == pytest.approx(0.5)
    assert b0.from_init == pytest.approx([0.0, 0.1, 0.3, 0.4])
    # The update a reset to tau undoes: to_final at tau; tau 0 and re-randomization: rel_update.
    assert run.for_reset("reinit", 2)["encoder.encoders.0"] == pytest.approx(0.2 / 1.3)
    assert run.for_reset("reinit", 0)["encoder.encoders.0"] == pytest.approx(0.5)
    assert run.for_reset("rerandomize", 5)["encoder.encoders.0"] == pytest.approx(0.5)
    with pytest.raises(wu.WeightUpdateError, match=r"epoch 7 is not kept \(kept: 0, 1, 2, 3\)"):
        run.for_reset("reinit", 7)
    # Without a final file: the last kept epoch.
    assert wu.compute_weight_updates(exp).by_name()["encoder.encoders.0"].rel_update == pytest.approx(0.4)


def test_missing_checkpoints_say_what_is_missing_and_how_to_get_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(wu.WeightUpdateError, match=r"no epoch's weights are kept.*asr_train.*keep_nbest_models"):
        wu.compute_weight_updates(tmp_path / "empty")
    exp = _write_run(tmp_path, [1.0, 1.1], name="no_init")
    (exp / "checkpoints" / "0epoch.pth").unlink()
    with pytest.raises(wu.WeightUpdateError, match=r"no initial weights: .*config.yaml not found"):
        wu.compute_weight_updates(exp)


def test_espnet_own_epoch_files_are_the_trajectory(tmp_path):
    """ESPnet's n-best {N}epoch.pth next to checkpoints/ count as epochs; gaps stay gaps."""
    exp = _write_run(tmp_path, [1.0], name="espnet_nbest")  # checkpoint 0 only under checkpoints/
    torch.save(_state(scale_block0=1.2), exp / "2epoch.pth")
    torch.save(_state(scale_block0=1.5), exp / "5epoch.pth")
    run = wu.compute_weight_updates(exp)
    assert run.epochs == [0, 2, 5]
    assert run.final_file == exp / "5epoch.pth"
    b0 = run.by_name()["encoder.encoders.0"]
    assert b0.from_init == pytest.approx([0.0, 0.2, 0.5])
    assert run.for_reset("reinit", 2)["encoder.encoders.0"] == pytest.approx(0.3 / 1.2)


def test_a_checkpoint_of_another_model_is_named(tmp_path):
    exp = _write_run(tmp_path, [1.0, 1.1, 1.2])
    other = _state()
    other["encoder.encoders.1.feed_forward.w_1.weight"] = torch.zeros(3, 2)
    torch.save(other, checkpoint_path(exp, 1))
    with pytest.raises(ArchitectureMismatchError,
                       match=r"1epoch.pth.*encoder.encoders.1.feed_forward.w_1.weight"):
        wu.compute_weight_updates(exp)
