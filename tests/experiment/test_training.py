"""The training wrapper keeps checkpoint 0 (the model before any update) and every epoch."""

import contextlib

import pytest
import torch
import yaml

from helpers import train_args

asr = pytest.importorskip("espnet2.tasks.asr")


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _rebuilt_initial_model(exp_dir):
    """The model ESPnet builds for this run before training: same config, same seed."""
    import argparse

    from espnet2.torch_utils.set_all_random_seed import set_all_random_seed

    with open(exp_dir / "config.yaml") as f:
        args = argparse.Namespace(**yaml.safe_load(f))
    set_all_random_seed(args.seed)
    return asr.ASRTask.build_model(args)


def test_checkpoint0_is_the_model_before_any_update_and_every_epoch_is_kept(tiny_asr_setup, tmp_path):
    from espnet_ext.experiment.checkpoints import checkpoint_path, saved_epochs
    from espnet_ext.experiment.training import CheckpointKeepingASRTask

    out = tmp_path / "exp"
    CheckpointKeepingASRTask.main(cmd=train_args(*tiny_asr_setup, out, max_epoch=2))

    ckpt0 = _load(checkpoint_path(out, 0))
    initial = _rebuilt_initial_model(out).state_dict()
    assert ckpt0.keys() == initial.keys()
    for k in initial:
        assert torch.equal(ckpt0[k], initial[k]), f"checkpoint 0 differs from the initial model at {k}"

    # Training moved the weights: epoch 1 differs from checkpoint 0.
    ckpt1 = _load(checkpoint_path(out, 1))
    assert any(not torch.equal(ckpt0[k], ckpt1[k]) for k in ckpt0 if ckpt0[k].is_floating_point())
    assert saved_epochs(out) == [0, 1, 2]

    # Resume to more epochs: ESPnet keeps only the n-best (1) in the output dir, we keep them all,
    # and checkpoint 0 is not overwritten by the resumed (trained) weights.
    mtime0 = checkpoint_path(out, 0).stat().st_mtime_ns
    CheckpointKeepingASRTask.main(cmd=train_args(*tiny_asr_setup, out, max_epoch=4))
    assert saved_epochs(out) == [0, 1, 2, 3, 4]
    assert len(list(out.glob("*epoch.pth"))) < 4
    assert checkpoint_path(out, 0).stat().st_mtime_ns == mtime0
    final = _load(checkpoint_path(out, 4))
    latest = _load(out / "latest.pth")
    assert all(torch.equal(final[k], latest[k]) for k in final)

    # The epochs' times survive the resume: all four, read from ESPnet's own checkpoint.pth.
    from espnet_ext.experiment.experiment_dir import ExperimentDir

    times = ExperimentDir(out).epoch_seconds()
    assert list(times) == [1, 2, 3, 4] and all(t > 0 for t in times.values())


def test_bf16_cpu_autocast_trains_and_keeps_float32_weights(tiny_asr_setup, tmp_path, one_thread):
    from espnet_ext.experiment.checkpoints import checkpoint_path, saved_epochs
    from espnet_ext.experiment.training import CheckpointKeepingASRTask

    out = tmp_path / "exp"
    CheckpointKeepingASRTask.main(cmd=train_args(*tiny_asr_setup, out, max_epoch=1, cpu_autocast="bf16"))

    assert yaml.safe_load((out / "config.yaml").read_text())["cpu_autocast"] == "bf16"
    assert saved_epochs(out) == [0, 1]
    ckpt0, ckpt1 = _load(checkpoint_path(out, 0)), _load(checkpoint_path(out, 1))
    floats = [k for k in ckpt1 if ckpt1[k].is_floating_point()]
    assert floats and all(ckpt1[k].dtype == torch.float32 for k in floats)
    assert all(torch.isfinite(ckpt1[k]).all() for k in floats)
    assert any(not torch.equal(ckpt0[k], ckpt1[k]) for k in floats)


def test_cpu_autocast_is_a_training_option_with_fixed_choices(tiny_asr_setup, tmp_path):
    from espnet_ext.experiment.training import CheckpointKeepingASRTask

    with pytest.raises(SystemExit):
        CheckpointKeepingASRTask.main(cmd=train_args(*tiny_asr_setup, tmp_path / "exp", max_epoch=1,
                                                     cpu_autocast="fp8"))
    args = CheckpointKeepingASRTask.get_parser().parse_args(
        train_args(*tiny_asr_setup, tmp_path / "exp", max_epoch=1))
    assert args.cpu_autocast == "none"  # off unless asked


def test_fast_dropout_and_channels_last_options_train(tiny_asr_setup, tmp_path, one_thread, monkeypatch):
    from espnet_ext.experiment import cpu_dropout, training
    from espnet_ext.experiment.checkpoints import checkpoint_path, saved_epochs
    from espnet_ext.experiment.training import CheckpointKeepingASRTask

    masks, layouts = [], []
    original_dropout, original_layout = cpu_dropout.fast_dropout, training.channels_last_convs

    def counting_dropout(x, p, training=True):
        masks.append(training and p > 0)
        return original_dropout(x, p, training)

    def seen_layout(model, enabled=True):
        conv = getattr(model, "module", model).encoder.embed.conv[2]  # 2nd conv: >1 input channel
        with original_layout(model, enabled):
            layouts.append(conv.weight.is_contiguous(memory_format=torch.channels_last)
                           and not conv.weight.is_contiguous())
            yield

    monkeypatch.setattr(cpu_dropout, "fast_dropout", counting_dropout)
    monkeypatch.setattr(training, "channels_last_convs", contextlib.contextmanager(seen_layout))
    train, valid, tokens, config = tiny_asr_setup
    conf = yaml.safe_load(config.read_text())
    conf["encoder_conf"]["dropout_rate"] = 0.1  # the tiny config has none
    config.write_text(yaml.safe_dump(conf))
    out = tmp_path / "exp"
    CheckpointKeepingASRTask.main(cmd=train_args(train, valid, tokens, config, out, max_epoch=1,
                                                 cpu_dropout="fast", cpu_channels_last="true"))

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["cpu_dropout"] == "fast" and saved["cpu_channels_last"] is True
    assert any(masks)  # the training forward drew its masks here
    assert layouts == [True]  # the epoch ran with channels-last convolutions
    assert saved_epochs(out) == [0, 1]
    ckpt0, ckpt1 = _load(checkpoint_path(out, 0)), _load(checkpoint_path(out, 1))
    conv_weights = [k for k, t in ckpt1.items() if t.dim() == 4]
    assert conv_weights and all(ckpt1[k].is_contiguous() for k in conv_weights)  # the usual layout
    assert any(not torch.equal(ckpt0[k], ckpt1[k]) for k in ckpt1 if ckpt1[k].is_floating_point())
    args = CheckpointKeepingASRTask.get_parser().parse_args(
        train_args(*tiny_asr_setup, tmp_path / "exp2", max_epoch=1))
    assert args.cpu_dropout == "torch" and args.cpu_channels_last is False  # off unless asked
