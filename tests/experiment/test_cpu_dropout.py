"""CPU dropout on a 16-bit mask: the same Bernoulli keep probability and scale as torch's dropout."""

import pytest
import torch

from espnet_ext.experiment.cpu_dropout import cpu_fast_dropout, drop_threshold, fast_dropout


def test_keep_rate_and_scale_match_the_drop_probability():
    torch.manual_seed(0)
    x = torch.ones(2_000_000)
    for p in (0.1, 0.25, 0.5):
        y = fast_dropout(x, p)
        kept = (y != 0).float().mean().item()
        q = drop_threshold(p) / 32768  # the quantized drop probability
        assert abs(q - p) <= 0.5 / 32768
        sd = (q * (1 - q) / x.numel()) ** 0.5
        assert abs((1 - kept) - q) < 5 * sd, (p, kept)
        # Kept elements carry exactly the inverse keep probability: the output is unbiased.
        assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - q)))
        assert abs(y.mean().item() - 1.0) < 5 * (q / (1 - q) / x.numel()) ** 0.5


def test_identity_in_eval_and_at_zero_and_all_zero_at_one():
    x = torch.randn(100)
    assert fast_dropout(x, 0.1, training=False) is x
    assert fast_dropout(x, 0.0) is x
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros(100))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        drop_threshold(1.5)


def test_gradient_is_the_mask_times_the_scale_in_bf16_too():
    torch.manual_seed(1)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(64, 32).to(dtype).requires_grad_()
        y = fast_dropout(x, 0.3)
        y.sum().backward()
        scale = 32768 / (32768 - drop_threshold(0.3))
        expected = (y != 0).to(dtype) * scale
        assert y.dtype == dtype and torch.equal(x.grad, expected)


def test_context_swaps_the_dropouts_of_the_model_and_restores_them():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.5), torch.nn.Dropout2d(0.5))
    keys = list(model.state_dict())
    x = torch.ones(4, 8)

    torch.manual_seed(2)
    reference = torch.nn.functional.dropout(model[0](x), 0.5, True)
    torch.manual_seed(2)
    with cpu_fast_dropout(model):
        assert "forward" in model[1].__dict__ and "forward" not in model[2].__dict__
        inside = model[1](model[0](x))
        torch.manual_seed(3)
        a = model[1](torch.ones(1000))
        torch.manual_seed(3)
        b = model[1](torch.ones(1000))
        model.eval()
        assert torch.equal(model[1](x), x)  # eval: identity
        model.train()
    assert torch.equal(a, b)  # reproducible from torch's seed
    assert not torch.equal(inside, reference)  # a different random stream from torch's dropout
    assert "forward" not in model[1].__dict__ and list(model.state_dict()) == keys
    with cpu_fast_dropout(model, enabled=False):
        assert "forward" not in model[1].__dict__
