"""Tests for NormConformerEncoder: norm options, padding awareness, ESPnet compatibility."""

import pytest
import torch
from espnet.nets.pytorch_backend.transformer.subsampling import (
    Conv2dSubsampling,
    Conv2dSubsampling1,
    Conv2dSubsampling2,
    Conv2dSubsampling6,
    Conv2dSubsampling8,
)
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from typeguard import TypeCheckError

from espnet_ext.asr.encoder import NormConformerEncoder
from espnet_ext.asr.encoder.masked_norm import (
    MaskedBatchNorm1d,
    MaskedGroupNorm,
    masked_normalize,
)
from espnet_ext.asr.encoder.subsampling_mask import subsampled_lengths

INPUT_SIZE = 20
NORMS = ["batch_norm", "group_norm", "layer_norm"]
LENGTHS = [37, 30, 23]  # frames; 30 and 23 are padded inside a batch of 37


def tiny_kwargs(**overrides):
    kwargs = dict(
        output_size=16,
        attention_heads=2,
        linear_units=32,
        num_blocks=2,
        cnn_module_kernel=7,
        rel_pos_type="latest",
    )
    kwargs.update(overrides)
    return kwargs


def no_dropout(**overrides):
    return tiny_kwargs(
        dropout_rate=0.0, positional_dropout_rate=0.0, attention_dropout_rate=0.0, **overrides
    )


def padded_batch(lengths=LENGTHS, pad_value=0.0, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), INPUT_SIZE, generator=generator)
    for i, length in enumerate(lengths):
        x[i, length:] = pad_value
    return x, torch.tensor(lengths)


@pytest.mark.parametrize("conv_norm_type", NORMS)
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"conv_norm_groups": 4},
        {"macaron_style": True, "input_layer": "conv2d6"},
        {"input_layer": "linear", "rel_pos_type": "legacy"},
        {"conv_padding_aware": False, "exact_subsampling_mask": False},
        {"use_cnn_module": False},
        {"interctc_layer_idx": [1], "stochastic_depth_rate": 0.1},
    ],
)
def test_forward_backward(conv_norm_type, options):
    torch.manual_seed(0)
    encoder = NormConformerEncoder(
        INPUT_SIZE, **tiny_kwargs(conv_norm_type=conv_norm_type, **options)
    )
    x, lengths = padded_batch()
    out, out_lengths, _ = encoder(x, lengths)
    if isinstance(out, tuple):  # intermediate CTC outputs
        out = out[0]
    assert out.shape[0] == 3 and out.shape[2] == 16
    assert out_lengths.max() == out.shape[1]
    out.sum().backward()
    # A layer skipped by stochastic depth gets no gradient at all.
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if options.get("use_cnn_module", True):
        norm_grads = [layer.conv_module.norm.weight.grad for layer in encoder.encoders]
        assert any(g is not None and g.abs().sum() > 0 for g in norm_grads)


def test_norm_modules_by_type():
    modules = {
        norm: NormConformerEncoder(
            INPUT_SIZE, **tiny_kwargs(conv_norm_type=norm, conv_norm_groups=4)
        ).encoders[0].conv_module.norm
        for norm in NORMS
    }
    assert isinstance(modules["batch_norm"], torch.nn.BatchNorm1d)
    assert isinstance(modules["group_norm"], torch.nn.GroupNorm)
    assert modules["group_norm"].num_groups == 4
    assert isinstance(modules["layer_norm"], torch.nn.LayerNorm)
    assert not any(isinstance(modules[n], torch.nn.BatchNorm1d) for n in NORMS[1:])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"conv_norm_type": "instance_norm"}, "'batch_norm', 'group_norm', 'layer_norm'"),
        ({"conv_norm_type": "BatchNorm"}, "conv_norm_type must be one of"),
        ({"conv_norm_type": "group_norm", "conv_norm_groups": 0}, "positive"),
        ({"conv_norm_type": "group_norm", "conv_norm_groups": -2}, "positive"),
        ({"conv_norm_type": "batch_norm", "conv_norm_groups": 0}, "positive"),
        ({"conv_norm_type": "group_norm", "conv_norm_groups": 3}, "must divide"),
        ({"conv_norm_type": "group_norm", "conv_norm_groups": 32}, "must divide"),
    ],
)
def test_invalid_norm_options(options, message):
    with pytest.raises(ValueError, match=message):
        NormConformerEncoder(INPUT_SIZE, **tiny_kwargs(**options))


@pytest.mark.parametrize(
    "options", [{"conv_norm_groups": "2"}, {"conv_norm_type": None}, {"conv_padding_aware": 1}]
)
def test_option_types_are_checked(options):
    with pytest.raises(TypeCheckError):
        NormConformerEncoder(INPUT_SIZE, **tiny_kwargs(**options))


def test_group_norm_groups_only_checked_for_group_norm():
    # 16 channels, 3 groups: irrelevant for layer norm, so accepted.
    NormConformerEncoder(INPUT_SIZE, **tiny_kwargs(conv_norm_type="layer_norm", conv_norm_groups=3))


@pytest.mark.parametrize(
    "subsampling, lengths",
    [
        (Conv2dSubsampling, range(7, 60)),
        (Conv2dSubsampling1, range(5, 40)),
        (Conv2dSubsampling2, range(7, 40)),
        (Conv2dSubsampling6, range(11, 60)),
        (Conv2dSubsampling8, range(15, 80)),
    ],
)
def test_subsampled_lengths_match_convolution_output(subsampling, lengths):
    layer = subsampling(INPUT_SIZE, 8, 0.0)
    for length in lengths:
        out, mask = layer(torch.zeros(1, length, INPUT_SIZE), torch.ones(1, 1, length, dtype=bool))
        expected = out.shape[1]
        assert mask.shape[-1] == expected  # unpadded: ESPnet's sliced mask is right
        assert subsampled_lengths(layer.conv, torch.tensor([length])).item() == expected


def test_stock_encoder_leaks_padding():
    """Why this encoder exists: ESPnet's output for a padded utterance depends on padding."""
    torch.manual_seed(0)
    stock = ConformerEncoder(INPUT_SIZE, **no_dropout()).eval()
    x, lengths = padded_batch()
    batched, batched_lengths, _ = stock(x, lengths)
    alone, alone_lengths, _ = stock(x[1:2, :30], lengths[1:2])
    assert batched_lengths[1] > alone_lengths[0]  # sliced mask: extra frames
    n = int(alone_lengths[0])
    assert not torch.allclose(batched[1, :n], alone[0, :n], atol=1e-3)


def assert_batched_equals_alone(encoder, lengths=LENGTHS):
    x, lens = padded_batch(lengths)
    batched, batched_lengths, _ = encoder(x, lens)
    for i, length in enumerate(lengths):
        alone, alone_lengths, _ = encoder(x[i : i + 1, :length], lens[i : i + 1])
        assert batched_lengths[i] == alone_lengths[0]
        n = int(alone_lengths[0])
        torch.testing.assert_close(batched[i, :n], alone[0, :n], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("conv_norm_type", NORMS)
@pytest.mark.parametrize(
    "options",
    [
        {"input_layer": "conv2d"},
        {"input_layer": "conv2d6"},
        {"pos_enc_layer_type": "abs_pos", "selfattention_layer_type": "selfattn"},
    ],
)
def test_padded_batch_equals_single_utterances_in_eval_mode(conv_norm_type, options):
    torch.manual_seed(0)
    encoder = NormConformerEncoder(
        INPUT_SIZE, **no_dropout(conv_norm_type=conv_norm_type, conv_norm_groups=4, **options)
    )
    # Non-trivial running statistics and affine parameters for the eval-mode norms.
    encoder.train()
    encoder(*padded_batch(seed=5))
    with torch.no_grad():
        for layer in encoder.encoders:
            layer.conv_module.norm.weight.uniform_(0.5, 1.5)
            layer.conv_module.norm.bias.uniform_(-0.5, 0.5)
    assert_batched_equals_alone(encoder.eval())


@pytest.mark.parametrize("conv_norm_type", ["group_norm", "layer_norm"])
@pytest.mark.parametrize("conv_norm_groups", [1, 4])
def test_padded_batch_equals_single_utterances_in_train_mode(conv_norm_type, conv_norm_groups):
    torch.manual_seed(0)
    encoder = NormConformerEncoder(
        INPUT_SIZE,
        **no_dropout(conv_norm_type=conv_norm_type, conv_norm_groups=conv_norm_groups),
    )
    assert_batched_equals_alone(encoder.train())


@pytest.mark.parametrize("conv_norm_type", NORMS)
def test_padding_values_have_no_effect_in_train_mode(conv_norm_type):
    """Outputs, running statistics and gradients ignore what the padded frames contain."""
    results = []
    for pad_value in (0.0, 1e3):
        torch.manual_seed(0)
        encoder = NormConformerEncoder(INPUT_SIZE, **no_dropout(conv_norm_type=conv_norm_type))
        x, lengths = padded_batch(pad_value=pad_value)
        x.requires_grad_(True)
        out, out_lengths, _ = encoder(x, lengths)
        valid = torch.arange(out.shape[1])[None, :] < out_lengths[:, None]
        out[valid].pow(2).sum().backward()
        results.append((out[valid].detach(), x.grad, encoder.state_dict()))
    (out_a, grad_a, state_a), (out_b, grad_b, state_b) = results
    torch.testing.assert_close(out_a, out_b, atol=1e-5, rtol=1e-5)
    for i, length in enumerate(LENGTHS):
        assert not grad_a[i, length:].any()  # padded input frames get no gradient
        assert not grad_b[i, length:].any()
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], atol=1e-5, rtol=1e-5)


def test_stock_state_dict_loads_strictly_and_gives_same_outputs():
    torch.manual_seed(0)
    stock = ConformerEncoder(INPUT_SIZE, **tiny_kwargs())
    stock.train()
    stock(*padded_batch(seed=3))  # running statistics away from their initial values
    torch.manual_seed(123)
    ours = NormConformerEncoder(INPUT_SIZE, **tiny_kwargs(conv_norm_type="batch_norm"))
    ours.load_state_dict(stock.state_dict(), strict=True)
    stock.eval()
    ours.eval()
    unpadded = padded_batch(lengths=[31, 31])
    torch.testing.assert_close(ours(*unpadded)[0], stock(*unpadded)[0], atol=1e-6, rtol=0)
    # Padding-blind settings reproduce ESPnet exactly, padded batch included.
    blind = NormConformerEncoder(
        INPUT_SIZE,
        **tiny_kwargs(conv_padding_aware=False, exact_subsampling_mask=False),
    ).eval()
    blind.load_state_dict(stock.state_dict(), strict=True)
    padded = padded_batch()
    out_stock, lengths_stock, _ = stock(*padded)
    out_blind, lengths_blind, _ = blind(*padded)
    assert torch.equal(out_blind, out_stock) and torch.equal(lengths_blind, lengths_stock)


@pytest.mark.parametrize("conv_norm_type", NORMS)
def test_same_seed_gives_stock_initial_weights(conv_norm_type):
    torch.manual_seed(0)
    stock = ConformerEncoder(INPUT_SIZE, **tiny_kwargs())
    after_stock = torch.rand(3)
    torch.manual_seed(0)
    ours = NormConformerEncoder(INPUT_SIZE, **tiny_kwargs(conv_norm_type=conv_norm_type))
    after_ours = torch.rand(3)
    stock_state, our_state = stock.state_dict(), ours.state_dict()
    for key, value in our_state.items():
        if ".conv_module.norm." not in key:
            assert torch.equal(value, stock_state[key]), key
    assert torch.equal(after_ours, after_stock)  # nothing built later is shifted
    if conv_norm_type == "batch_norm":
        assert list(our_state) == list(stock_state)


def test_norm_parameter_names():
    names = {
        norm: sorted(
            k
            for k in NormConformerEncoder(INPUT_SIZE, **tiny_kwargs(conv_norm_type=norm))
            .state_dict()
            if k.startswith("encoders.0.conv_module.norm.")
        )
        for norm in NORMS
    }
    prefix = "encoders.0.conv_module.norm."
    assert names["group_norm"] == [prefix + "bias", prefix + "weight"]
    assert names["layer_norm"] == [prefix + "bias", prefix + "weight"]
    assert prefix + "running_mean" in names["batch_norm"]


def valid_frames(x, lengths):
    """(batch, C, time) -> (1, C, sum(lengths)): the valid frames of all utterances."""
    return torch.cat([x[i, :, :n] for i, n in enumerate(lengths)], dim=1)[None]


@pytest.mark.parametrize("momentum", [0.1, None])
def test_masked_batch_norm_uses_valid_frames_only(momentum):
    lengths = [9, 5, 2]
    x = torch.randn(3, 6, 9)
    mask = (torch.arange(9)[None, :] < torch.tensor(lengths)[:, None])[:, None, :]
    x = x.masked_fill(~mask, 100.0)
    masked = MaskedBatchNorm1d(6, momentum=momentum).train()
    reference = torch.nn.BatchNorm1d(6, momentum=momentum).train()
    for _ in range(2):
        out = masked(x, mask)
        expected = reference(valid_frames(x, lengths))
    torch.testing.assert_close(valid_frames(out, lengths), expected)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(masked, name), getattr(reference, name))


def test_masked_group_norm_uses_each_utterances_valid_frames():
    lengths = [9, 4]
    x = torch.randn(2, 8, 9)
    mask = (torch.arange(9)[None, :] < torch.tensor(lengths)[:, None])[:, None, :]
    norm = MaskedGroupNorm(2, 8)
    with torch.no_grad():
        norm.weight.uniform_()
        norm.bias.uniform_()
    out = norm(x, mask)
    for i, n in enumerate(lengths):
        expected = torch.nn.functional.group_norm(x[i : i + 1, :, :n], 2, norm.weight, norm.bias)
        torch.testing.assert_close(out[i : i + 1, :, :n], expected)
    # Without padding it is torch's GroupNorm.
    full = torch.ones(2, 1, 9, dtype=torch.bool)
    expected = torch.nn.functional.group_norm(x, 2, norm.weight, norm.bias)
    torch.testing.assert_close(norm(x, full), expected)


def test_conv_module_mask_is_not_kept_after_forward():
    encoder = NormConformerEncoder(INPUT_SIZE, **tiny_kwargs(conv_norm_type="group_norm"))
    encoder(*padded_batch())
    assert all(layer.conv_module.padding_mask is None for layer in encoder.encoders)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize(
    "shape, valid_shape, dims, param_shape",
    [
        ((3, 4, 7), (3, 1, 7), (0, 2), (1, 4, 1)),  # batch norm: over batch and time
        ((3, 2, 2, 7), (3, 1, 1, 7), (2, 3), (1, 2, 2, 1)),  # group norm: per utterance, group
    ],
)
def test_masked_normalization_gradients(affine, shape, valid_shape, dims, param_shape):
    """The hand-written backward matches numerical gradients (valid outputs only)."""
    torch.manual_seed(0)
    lengths = torch.tensor([7, 4, 1])
    valid = (torch.arange(7)[None, :] < lengths[:, None]).reshape(valid_shape)
    x = torch.randn(shape, dtype=torch.double, requires_grad=True)
    weight = torch.rand(param_shape, dtype=torch.double, requires_grad=True) if affine else None
    bias = torch.rand(param_shape, dtype=torch.double, requires_grad=True) if affine else None

    def valid_outputs(x, weight=None, bias=None):
        return masked_normalize(x, valid, dims, 1e-5, weight, bias)[0] * valid

    inputs = (x, weight, bias) if affine else (x,)
    assert torch.autograd.gradcheck(valid_outputs, inputs)
