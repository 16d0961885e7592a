"""Layer resets: re-initialization to checkpoint tau, re-randomization, swapping weights in."""

import pytest
import torch
import yaml

from helpers import train_tiny_model

asr = pytest.importorskip("espnet2.tasks.asr")

from espnet_ext.layers import (  # noqa: E402
    ArchitectureMismatchError,
    InitialWeightSampler,
    WeightSwap,
    build_layer_map,
    load_state_dict_file,
    reset_to_checkpoint,
    rerandomize,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny model trained for 2 epochs: (exp dir, training config dict)."""
    exp, train = train_tiny_model(tmp_path_factory.mktemp("reset"), max_epoch=2)
    return exp, yaml.safe_load((exp / "config.yaml").read_text())


def _ckpt(exp, tau):
    return load_state_dict_file(exp / "checkpoints" / f"{tau}epoch.pth")


def test_reset_to_checkpoint0_changes_exactly_the_group(run):
    exp, _ = run
    trained, ckpt0 = _ckpt(exp, 2), _ckpt(exp, 0)
    before = {k: v.clone() for k, v in trained.items()}
    group = build_layer_map(trained, "block")["encoder.encoders.1"]
    out = reset_to_checkpoint(trained, group, ckpt0)
    assert out.keys() == trained.keys()
    for k in trained:
        expected = ckpt0[k] if k in group.keys else trained[k]
        assert torch.equal(out[k], expected), k
    # Buffers come along: batch-norm statistics are those of checkpoint 0 (initial values).
    rv = "encoder.encoders.1.conv_module.norm.running_var"
    nbt = "encoder.encoders.1.conv_module.norm.num_batches_tracked"
    assert torch.equal(out[rv], torch.ones_like(out[rv])) and not torch.equal(trained[rv], out[rv])
    assert int(out[nbt]) == 0 < int(trained[nbt])
    # The trained state given in is not touched.
    assert all(torch.equal(before[k], trained[k]) for k in trained)
    # Resetting to the trained weights themselves is the identity.
    same = reset_to_checkpoint(trained, group, _ckpt(exp, 2))
    assert all(torch.equal(same[k], trained[k]) for k in trained)


def test_architecture_mismatch_names_the_key(run):
    exp, _ = run
    trained = _ckpt(exp, 2)
    group = build_layer_map(trained, "block")["encoder.encoders.0"]
    broken = dict(_ckpt(exp, 0))
    del broken["encoder.encoders.0.conv_module.depthwise_conv.weight"]
    with pytest.raises(ArchitectureMismatchError,
                       match="my.pth.*'encoder.encoders.0.conv_module.depthwise_conv.weight' is missing"):
        reset_to_checkpoint(trained, group, broken, "my.pth")
    wide = dict(_ckpt(exp, 0))
    wide["encoder.encoders.0.feed_forward.w_1.weight"] = torch.zeros(64, 16)
    with pytest.raises(ArchitectureMismatchError, match=r"feed_forward.w_1.weight.*\(64, 16\).*\(32, 16\)"):
        reset_to_checkpoint(trained, group, wide)


def test_rerandomize_is_seeded_and_uses_the_models_own_initialization(run):
    exp, config = run
    trained = _ckpt(exp, 2)
    sampler = InitialWeightSampler.from_train_args(config)
    group = build_layer_map(trained, "submodule")["encoder.encoders.0.self_attn"]
    rng_before = torch.random.get_rng_state()
    a = rerandomize(trained, group, 11, sampler)
    b = rerandomize(trained, group, 11, InitialWeightSampler.from_train_args(config))
    c = rerandomize(trained, group, 12, sampler)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # other random streams untouched
    for k in group.keys:
        assert torch.equal(a[k], b[k]), k
        assert not torch.equal(a[k], c[k]), k
        assert not torch.equal(a[k], trained[k]), k
    assert all(torch.equal(a[k], trained[k]) for k in trained if k not in group.keys)
    # The training seed reproduces the run's own initial weights, constructor-only parameters
    # (pos_bias_u/v) included: the sample is the exact initialization procedure.
    own = rerandomize(trained, group, config["seed"], sampler)
    ckpt0 = _ckpt(exp, 0)
    assert "encoder.encoders.0.self_attn.pos_bias_u" in group.keys
    assert all(torch.equal(own[k], ckpt0[k]) for k in group.keys)


def test_rerandomize_honours_the_configs_init_scheme(run):
    exp, config = run
    trained = _ckpt(exp, 2)
    group = build_layer_map(trained, "submodule")["encoder.encoders.0.feed_forward"]
    default = rerandomize(trained, group, 5, InitialWeightSampler.from_train_args(config))
    xavier_sampler = InitialWeightSampler.from_train_args(dict(config, init="xavier_uniform"))
    xavier = rerandomize(trained, group, 5, xavier_sampler)
    bias, weight = "encoder.encoders.0.feed_forward.w_1.bias", "encoder.encoders.0.feed_forward.w_1.weight"
    assert default[bias].abs().sum() > 0  # torch's Linear default: uniform biases
    assert torch.equal(xavier[bias], torch.zeros_like(xavier[bias]))  # ESPnet's init zeroes biases
    fan_out, fan_in = xavier[weight].shape
    assert xavier[weight].abs().max() <= (6.0 / (fan_in + fan_out)) ** 0.5


def test_weight_swap_restores_the_model_bit_for_bit(run):
    exp, config = run
    model = InitialWeightSampler.from_train_args(config)._build_model()
    model.load_state_dict(_ckpt(exp, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    group = build_layer_map(model, "block")["encoder.encoders.0"]
    ckpt0 = _ckpt(exp, 0)
    swap = WeightSwap(model)
    key = "encoder.encoders.0.feed_forward.w_1.weight"
    with swap.swapped({k: ckpt0[k] for k in group.keys}):
        assert torch.equal(model.state_dict()[key], ckpt0[key])
    with pytest.raises(RuntimeError, match="boom"):
        with swap.swapped({k: ckpt0[k] for k in group.keys}):
            raise RuntimeError("boom")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ArchitectureMismatchError, match="w_1.weight"):
        with swap.swapped({key: torch.zeros(3)}):
            pass


def test_sampler_builds_as_espnets_trainer_dtype_and_init_param(run, caplog, tmp_path):
    exp, config = run
    ckpt0 = _ckpt(exp, 0)
    # train_dtype: ESPnet casts the model before training; so does every sample.
    wide = InitialWeightSampler.from_train_args(dict(config, train_dtype="float64")).sample(config["seed"])
    assert wide["encoder.encoders.0.feed_forward.w_1.weight"].dtype == torch.float64
    assert torch.equal(wide["encoder.encoders.0.feed_forward.w_1.weight"].float(),
                       ckpt0["encoder.encoders.0.feed_forward.w_1.weight"])
    # init_param: the named parts come from the file (here: the trained encoder).
    pretrained = exp / "checkpoints" / "2epoch.pth"
    with_init = InitialWeightSampler.from_train_args(
        dict(config, init_param=[f"{pretrained}:encoder:encoder"])).sample(config["seed"])
    trained = _ckpt(exp, 2)
    for k in ckpt0:
        assert torch.equal(with_init[k], trained[k] if k.startswith("encoder.") else ckpt0[k]), k
    # A missing init_param file: the architecture's own initialization, and a warning saying so.
    gone = dict(config, init_param=["gone/pretrained.pth:encoder:encoder"])
    with caplog.at_level("WARNING"):
        sample = InitialWeightSampler.from_train_args(gone).sample(config["seed"])
    assert "gone/pretrained.pth not found" in caplog.text and "no seed reproduces checkpoint 0" in caplog.text
    assert all(torch.equal(sample[k], ckpt0[k]) for k in ckpt0)
    with pytest.raises(FileNotFoundError, match="init_param file not found: gone/pretrained.pth"):
        InitialWeightSampler.from_train_args(gone, apply_init_param=True).sample(1)
    # An init_param file holding more than weights is refused before ESPnet unpickles it.
    import argparse

    unsafe = tmp_path / "unsafe.pth"
    torch.save({"encoder.x": torch.zeros(1), "args": argparse.Namespace(a=1)}, unsafe)
    with pytest.raises(ValueError, match=r"unsafe.pth \(init_param file\) holds pickled objects other "
                                         r"than weights \(argparse.Namespace\)"):
        InitialWeightSampler.from_train_args(dict(config, init_param=[str(unsafe)])).sample(1)
