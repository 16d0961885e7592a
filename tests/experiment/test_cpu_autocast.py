"""CPU autocast of a model's forward: lower precision inside, float32 front end, undone after."""

import pytest
import torch

from espnet_ext.experiment.cpu_autocast import autocast_dtype, cpu_autocast


class _Model(torch.nn.Module):
    """A front end (float32 expected) feeding an encoder (autocast expected)."""

    def __init__(self):
        super().__init__()
        self.frontend = torch.nn.Linear(4, 4)
        self.encoder = torch.nn.Linear(4, 4)
        self.seen = {}

    def forward(self, x):
        feats = self.frontend(x)
        self.seen["frontend"] = feats.dtype
        out = self.encoder(feats)
        self.seen["encoder"] = out.dtype
        return out.float().sum()


def test_bf16_autocasts_the_forward_but_not_the_front_end():
    model = _Model()
    with cpu_autocast(model, autocast_dtype("bf16")):
        loss = model(torch.randn(2, 4))
    assert model.seen == {"frontend": torch.float32, "encoder": torch.bfloat16}
    loss.backward()  # outside the autocast region
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_the_forward_is_restored_after_the_context_and_none_changes_nothing():
    model = _Model()
    with cpu_autocast(model, autocast_dtype("bf16")):
        pass
    assert "forward" not in model.__dict__ and "forward" not in model.frontend.__dict__
    with cpu_autocast(model, autocast_dtype("none")):
        model(torch.randn(2, 4))
    assert model.seen == {"frontend": torch.float32, "encoder": torch.float32}
    assert list(model.state_dict()) == ["frontend.weight", "frontend.bias", "encoder.weight", "encoder.bias"]


def test_unknown_choice_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="none, bf16"):
        autocast_dtype("fp16")
