"""Channels-last convolution weights during CPU training: same function, same parameters, restored."""

import torch

from espnet_ext.experiment.cpu_layout import channels_last_convs


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, 2), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, 2),
                               torch.nn.Flatten(), torch.nn.Linear(8 * 3 * 3, 2))


def test_weights_are_channels_last_inside_and_contiguous_after_with_the_same_parameters():
    model = _model()
    x = torch.randn(4, 1, 15, 15)
    before = model(x)
    params = list(model.parameters())
    optim = torch.optim.Adam(params, lr=0.1)
    with channels_last_convs(model):
        assert list(model.parameters()) == params  # the same Parameter objects
        for conv in (model[0], model[2]):
            assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert not model[2].weight.is_contiguous()  # (1 input channel: both layouts coincide)
        inside = model(x)
        inside.sum().backward()
        optim.step()  # the optimizer built before still updates them
    assert torch.allclose(inside, before, atol=1e-6)  # only the layout changed
    assert all(p.is_contiguous() for p in model.parameters())
    assert not torch.allclose(model(x), before)  # the step inside the context took effect
    with channels_last_convs(model, enabled=False):
        assert model[2].weight.is_contiguous()
