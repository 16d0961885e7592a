"""Federated dropout sub-models: smaller tensors, same function as the zeroed full model, merging."""

import copy
import weakref

import numpy as np
import pytest
import torch

from helpers import PERTURBED_ENCODERS, build_perturbed_model

asr = pytest.importorskip("espnet2.tasks.asr")

from espnet_ext.federated.submodel import (  # noqa: E402
    build_submodel,
    choose_submodel,
    extract_submodel,
    kept_units,
    merge_update,
    shrink_model_to_structure_,
)
from espnet_ext.federated.units import find_droppable_modules  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for name, (enc, conf) in PERTURBED_ENCODERS.items():
        out[name] = build_perturbed_model(tmp_path_factory.mktemp(name), enc, **conf)
    return out


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    speech = torch.randn(2, 8000, generator=g) * 0.1
    lens = torch.tensor([8000, 6400])
    text = torch.tensor([[3, 4, 5, 6], [7, 8, 9, -1]])
    text_lens = torch.tensor([4, 3])
    return speech, lens, text, text_lens


def _kept_channel_norm_(norm, kept):
    """Make a layer norm over channels normalize over the `kept` channels only (zeros elsewhere)."""
    def hook(module, inputs, output):
        x = inputs[0]
        out = torch.zeros_like(output)
        out[..., kept] = torch.nn.functional.layer_norm(
            x[..., kept], (len(kept),), module.weight[kept], module.bias[kept], module.eps)
        return out
    norm.register_forward_hook(hook)


def _zero_dropped_(model, layout):
    """The full model with every dropped unit's weights (and statistics) set to zero.

    A cgMLP's gate layer norm normalizes over the kept channels, as the sub-model's does.
    """
    state = model.state_dict()
    with torch.no_grad():
        for name, kept in layout.kept.items():
            d = layout.modules[name]
            dropped = torch.tensor(sorted(set(range(d.num_units)) - set(kept.tolist())), dtype=torch.long)
            if len(dropped) == 0:
                continue
            for key, slices in d.index_map(dropped).items():
                for dim, idx in slices:
                    state[key].index_fill_(dim, idx, 0.0)
            if d.kind == "cgmlp":
                _kept_channel_norm_(model.get_submodule(name).csgu.norm, kept)
    return model


def _layout(model, rate, kinds, seed=1):
    modules = find_droppable_modules(model)
    rates = {m.name: rate for m in modules if m.kind in kinds}
    return modules, choose_submodel(modules, rates, np.random.default_rng(seed))


def test_droppable_modules_of_a_conformer(models):
    mods = {m.name: m for m in find_droppable_modules(models["group_norm_2_groups"])}
    block = "encoder.encoders.1"
    assert mods[f"{block}.feed_forward"].kind == "ff" and mods[f"{block}.feed_forward"].num_units == 32
    assert mods[f"{block}.feed_forward_macaron"].kind == "ff"
    att = mods[f"{block}.self_attn"]
    assert (att.kind, att.num_units, att.head_dim, att.has_pos) == ("heads", 2, 8, True)
    conv = mods[f"{block}.conv_module"]
    assert (conv.kind, conv.num_units, conv.norm, conv.norm_groups) == ("conv", 16, "group_norm", 2)
    assert {"decoder.decoders.0.self_attn", "decoder.decoders.0.src_attn",
            "decoder.decoders.0.feed_forward"} <= set(mods)
    bn = {m.name: m for m in find_droppable_modules(models["espnet_batch_norm"])}
    assert bn[f"{block}.conv_module"].norm == "batch_norm"


CONFORMER_CASES = [
    ("espnet_batch_norm", ("ff",)),
    ("espnet_batch_norm", ("heads",)),
    ("espnet_batch_norm", ("conv",)),
    ("group_norm_2_groups", ("conv",)),
    ("group_norm_2_groups", ("ff", "heads", "conv")),
]
# (E-)Branchformers have no batch statistics: eval mode only (train mode adds nothing with no dropout).
BRANCHFORMER_CASES = [
    ("e_branchformer", ("merge",)),
    ("e_branchformer", ("cgmlp",)),
    ("e_branchformer", ("ff", "heads", "cgmlp", "merge")),
    ("branchformer", ("heads", "cgmlp", "merge")),
    ("branchformer_learned_ave", ("heads", "cgmlp", "merge")),
]


@pytest.mark.parametrize("which,kinds,train_mode",
                         [(w, k, t) for w, k in CONFORMER_CASES for t in (False, True)]
                         + [(w, k, False) for w, k in BRANCHFORMER_CASES])
def test_submodel_computes_the_full_model_with_dropped_units_zeroed(models, which, kinds, train_mode):
    full = models[which]
    modules, layout = _layout(full, 0.5, kinds)
    assert layout.kept and not layout.is_full
    sub = build_submodel(full, layout)
    zeroed = _zero_dropped_(copy.deepcopy(full), layout)

    # Genuinely smaller: fewer parameters, and the sliced tensors are what extract_submodel sends.
    n_full = sum(p.numel() for p in full.parameters())
    n_sub = sum(p.numel() for p in sub.parameters())
    assert n_sub < n_full
    small, imap = extract_submodel(full.state_dict(), layout)
    for k, v in sub.state_dict().items():
        assert torch.equal(v, small[k]), k

    for m in (sub, zeroed):
        m.train(train_mode)
    speech, lens, text, text_lens = _batch()
    torch.manual_seed(0)
    enc_sub, enc_lens_sub = sub.encode(speech, lens)
    torch.manual_seed(0)
    enc_zero, enc_lens_zero = zeroed.encode(speech, lens)
    assert torch.equal(enc_lens_sub, enc_lens_zero)
    for b, n in enumerate(enc_lens_sub.tolist()):
        torch.testing.assert_close(enc_sub[b, :n], enc_zero[b, :n], rtol=1e-5, atol=1e-5)
    torch.manual_seed(1)  # the decoder's positional dropout draws random numbers in train mode
    loss_sub = sub(speech, lens, text, text_lens)[0]
    torch.manual_seed(1)
    loss_zero = zeroed(speech, lens, text, text_lens)[0]
    torch.testing.assert_close(loss_sub, loss_zero, rtol=1e-5, atol=1e-5)


def test_group_norm_policies_keep_groups_consistent(models):
    model = models["group_norm_2_groups"]
    modules = find_droppable_modules(model)
    conv = [m for m in modules if m.kind == "conv"]
    rates = {m.name: 0.5 for m in conv}
    whole = choose_submodel(modules, rates, np.random.default_rng(0), "whole_groups")
    for name, kept in whole.kept.items():
        assert len(kept) == 8 and len({int(i) // 8 for i in kept}) == 1  # one whole group of 8
        assert whole.structure()[name] == {"kept": 8, "norm_groups": 1}
    per = choose_submodel(modules, {m.name: 0.25 for m in conv}, np.random.default_rng(0), "per_group")
    for name, kept in per.kept.items():
        # 6 of 8 channels in each of the two groups; the group count stays 2.
        assert [sum(1 for i in kept if int(i) // 8 == g) for g in (0, 1)] == [6, 6]
        assert per.structure()[name] == {"kept": 12, "norm_groups": 2}
    sub = build_submodel(model, per)
    norm = sub.get_submodule(conv[0].name).norm
    assert (norm.num_groups, norm.num_channels, tuple(norm.weight.shape)) == (2, 12, (12,))
    sub.eval()
    speech, lens, _, _ = _batch()
    enc, _ = sub.encode(speech, lens)
    assert torch.isfinite(enc).all()
    # One group: "auto" drops channels within the group; whole-group dropping cannot drop any.
    one = find_droppable_modules(models["group_norm_1_group"])
    c1 = [m for m in one if m.kind == "conv"][0]
    assert kept_units(c1, 0.5, "auto") == 8
    assert kept_units(c1, 0.5, "whole_groups") == 16


@pytest.mark.parametrize("which", ["group_norm_2_groups", "e_branchformer", "branchformer_learned_ave"])
def test_client_rebuilds_the_submodel_from_its_structure_alone(models, which):
    full = models[which]
    modules, layout = _layout(full, 0.5, ("ff", "heads", "conv", "cgmlp", "merge"), seed=7)
    small, _ = extract_submodel(full.state_dict(), layout)
    client_model = copy.deepcopy(full)
    with torch.no_grad():  # the client's own copy has other values: only sizes matter
        for p in client_model.parameters():
            p.normal_()
    shrink_model_to_structure_(client_model, modules, layout.structure())
    client_model.load_state_dict(small, strict=True)
    ref = build_submodel(full, layout).eval()
    client_model.eval()
    speech, lens, _, _ = _batch()
    torch.testing.assert_close(client_model.encode(speech, lens)[0], ref.encode(speech, lens)[0])


@pytest.mark.parametrize("which", ["espnet_batch_norm", "e_branchformer", "branchformer_learned_ave"])
def test_extract_then_merge_of_untrained_submodels_changes_nothing(models, which):
    full = models[which]
    state = full.state_dict()
    modules = find_droppable_modules(full)
    rates = {m.name: 0.5 for m in modules}
    smalls, maps = [], []
    for seed in range(3):
        small, imap = extract_submodel(state, choose_submodel(modules, rates, np.random.default_rng(seed)))
        smalls.append(small)
        maps.append(imap)
    merged = merge_update(state, smalls, maps, [3, 1, 2])
    assert merged.keys() == state.keys()
    for k in state:
        assert torch.equal(merged[k], state[k]), k


def test_merge_averages_each_element_over_the_clients_that_trained_it():
    g = {"w": torch.zeros(4, 2), "b": torch.tensor([1.0, 1.0, 1.0]), "n": torch.tensor(5)}
    # Client A (2 examples) trained rows 0,1 of w and all of b; client B (1 example) rows 1,3.
    a = {"w": torch.tensor([[1.0, 1.0], [2.0, 2.0]]), "b": torch.tensor([4.0, 4.0, 4.0]), "n": torch.tensor(9)}
    b = {"w": torch.tensor([[5.0, 5.0], [7.0, 7.0]]), "n": torch.tensor(7)}
    maps = [{"w": (0, torch.tensor([0, 1]))}, {"w": (0, torch.tensor([1, 3]))}]
    merged = merge_update(g, [a, b], maps, weights=[2, 1])
    expected_w = torch.tensor([[1.0, 1.0],                    # only A: its value
                               [(2 * 2 + 1 * 5) / 3] * 2,     # both: example-weighted
                               [0.0, 0.0],                    # nobody: unchanged
                               [7.0, 7.0]])                   # only B
    torch.testing.assert_close(merged["w"], expected_w)
    torch.testing.assert_close(merged["b"], torch.tensor([4.0, 4.0, 4.0]))  # B did not return b
    assert int(merged["n"]) == 9
    # A server learning rate scales the step from the old value.
    half = merge_update(g, [a, b], maps, weights=[2, 1], server_lr=0.5)
    torch.testing.assert_close(half["w"], expected_w * 0.5)
    with pytest.raises(ValueError, match="positive"):
        merge_update(g, [a], maps[:1], weights=[0])


def test_entries_cut_along_two_dims_merge_back_in_place():
    g = {"w": torch.zeros(3, 4)}
    # Rows 0, 2 and columns 1, 3 kept (e.g. merge channels x heads of an attention output layer).
    imap = {"w": ((0, torch.tensor([0, 2])), (1, torch.tensor([1, 3])))}
    merged = merge_update(g, [{"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}], [imap], [1.0])
    torch.testing.assert_close(merged["w"], torch.tensor([[0.0, 1.0, 0.0, 2.0],
                                                          [0.0, 0.0, 0.0, 0.0],
                                                          [0.0, 3.0, 0.0, 4.0]]))


def _merge_by_full_size_scatter(global_state, small_states, index_maps, weights, server_lr=1.0):
    """merge_update written out plainly: each client's slice scattered into full-size zeros."""
    def scatter(small, shape, slices):
        out = small
        for dim, idx in slices:
            size = list(out.shape)
            size[dim] = shape[dim]
            out = torch.zeros(size, dtype=out.dtype).index_copy_(dim, idx, out)
        return out

    new = {}
    for key, g in global_state.items():
        holders = [(s[key], m.get(key), float(w)) for s, m, w in zip(small_states, index_maps, weights) if key in s]
        if not holders:
            new[key] = g.clone()
            continue
        if not g.is_floating_point():
            new[key] = torch.stack([v.reshape(g.shape) for v, _, _ in holders]).amax(dim=0)
            continue
        num = torch.zeros(g.shape, dtype=torch.float64)
        den = torch.zeros(g.shape, dtype=torch.float64)
        for value, sliced, w in holders:
            v = value.to(torch.float64)
            if sliced is None:
                num.add_(v, alpha=w)
                den.add_(w)
            else:
                slices = sliced if isinstance(sliced[0], tuple) else (sliced,)
                num.add_(scatter(v, g.shape, slices), alpha=w)
                den.add_(scatter(torch.ones_like(v), g.shape, slices), alpha=w)
        trained = den > 0
        g64 = g.to(torch.float64)
        avg = torch.where(trained, num / den.clamp(min=1e-300), g64)
        new[key] = torch.where(trained, g64 + server_lr * (avg - g64), g64).to(g.dtype)
    return new


@pytest.mark.parametrize("which,cut_along_two_dims", [("espnet_batch_norm", False), ("e_branchformer", True)])
def test_merge_of_trained_submodels_is_bit_identical_to_a_full_size_scatter(models, which, cut_along_two_dims):
    full = models[which]
    state = full.state_dict()
    modules = find_droppable_modules(full)
    rates = {m.name: 0.5 for m in modules}
    g = torch.Generator().manual_seed(0)
    smalls, maps = [], []
    for seed in range(3):
        small, imap = extract_submodel(state, choose_submodel(modules, rates, np.random.default_rng(seed)))
        # "Trained" values: every float entry moved by noise (integers stay counters).
        smalls.append({k: v + torch.randn(v.shape, generator=g) if v.is_floating_point() else v + seed
                       for k, v in small.items()})
        maps.append(imap)
    assert any(len(s) == 2 for m in maps for s in m.values()) == cut_along_two_dims
    assert any(state[k].dim() == 1 for k in maps[0])  # and 1-d entries (biases, norms)
    weights = [3.0, 1.7, 2.25]
    merged = merge_update(state, smalls, maps, weights, server_lr=0.7)
    expected = _merge_by_full_size_scatter(state, smalls, maps, weights, server_lr=0.7)
    assert merged.keys() == expected.keys()
    for k in expected:
        assert torch.equal(merged[k], expected[k]), k


def test_merge_allocates_no_full_size_tensor_per_client(monkeypatch):
    g = {"w": torch.zeros(6, 4), "b": torch.zeros(6)}
    clients = [({"w": torch.ones(2, 4), "b": torch.ones(2)},
                {"w": (0, torch.tensor([c, c + 1])), "b": (0, torch.tensor([c, c + 1]))}) for c in range(4)]
    full_size = []
    zeros = torch.zeros

    def counting_zeros(*size, **kwargs):
        out = zeros(*size, **kwargs)
        if out.numel() in (24, 6):
            full_size.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch, "zeros", counting_zeros)
    merge_update(g, [c[0] for c in clients], [c[1] for c in clients], [1.0] * 4)
    # Only the two accumulators (weighted sum, total weight) of each entry, whatever the clients.
    assert sorted(full_size) == [(6,), (6,), (6, 4), (6, 4)]


def _merge_all_at_once(global_state, small_states, index_maps, weights, server_lr=1.0):
    """merge_update as it was before it streamed: every client's value of an entry gathered
    into one list before any is added."""
    from espnet_ext.federated.submodel import add_slice_
    from espnet_ext.federated.units import as_slices

    new = {}
    for key, g in global_state.items():
        holders = [(s[key], m.get(key), float(w)) for s, m, w in zip(small_states, index_maps, weights) if key in s]
        if not holders:
            new[key] = g.clone()
            continue
        if not g.is_floating_point():
            new[key] = torch.stack([v.to(g.device, g.dtype).reshape(g.shape) for v, _, _ in holders]).amax(dim=0)
            continue
        num = torch.zeros(g.shape, dtype=torch.float64)
        den = torch.zeros(g.shape, dtype=torch.float64)
        for value, sliced, w in holders:
            v = value.to(dtype=torch.float64)
            if sliced is None:
                num.add_(v, alpha=w)
                den.add_(w)
            else:
                slices = as_slices(sliced)
                add_slice_(num, slices, v, w)
                add_slice_(den, slices, torch.ones_like(v), w)
        trained = den > 0
        g64 = g.to(torch.float64)
        avg = torch.where(trained, num / den.clamp(min=1e-300), g64)
        new[key] = torch.where(trained, g64 + server_lr * (avg - g64), g64).to(g.dtype)
    return new


class _ReadOnce:
    """A client state whose values are made on reading (a copy of the stored value) and may be
    read once; it records, per read, how many values it handed out earlier are still alive."""

    def __init__(self, state):
        self._state = dict(state)
        self.handed = []
        self.alive_at_read = []

    def __contains__(self, key):
        return key in self._state

    def __getitem__(self, key):
        self.alive_at_read.append((key, sum(r() is not None for r in self.handed)))
        value = self._state.pop(key).clone()  # pop: a second read of a key fails
        self.handed.append(weakref.ref(value))
        return value


def _overlapping_clients(state, modules, frozen):
    """Four clients' trained sub-models: two share a draw (overlapping slices), the others
    differ; the `frozen` keys are absent from every reply, and client 3 returns only a few."""
    g = torch.Generator().manual_seed(1)
    rates = {m.name: 0.5 for m in modules}
    smalls, maps = [], []
    for seed in (0, 0, 1, 2):
        small, imap = extract_submodel(state, choose_submodel(modules, rates, np.random.default_rng(seed)))
        smalls.append({k: v + torch.randn(v.shape, generator=g) if v.is_floating_point() else v + seed
                       for k, v in small.items() if k not in frozen})
        maps.append(imap)
    smalls[3] = {k: v for i, (k, v) in enumerate(smalls[3].items()) if i % 3 == 0}
    return smalls, maps


@pytest.mark.parametrize("which", ["espnet_batch_norm", "e_branchformer"])
def test_streaming_merge_is_bit_identical_to_the_all_at_once_merge_and_releases_each_value(models, which):
    full = models[which]
    state = full.state_dict()
    modules = find_droppable_modules(full)
    frozen = {k for k in state if k.startswith("encoder.encoders.1.")}
    smalls, maps = _overlapping_clients(state, modules, frozen)
    # Overlapping slices (clients 0 and 1 share a draw) and disjoint ones (units only one drew).
    pairs = [(set(maps[0][k][0][1].tolist()), set(maps[2][k][0][1].tolist()))
             for k in maps[0] if k in smalls[2] and len(maps[0][k]) == 1]
    assert any(a & b for a, b in pairs) and any(a - b for a, b in pairs)
    weights = [3.0, 1.7, 2.25, 0.5]
    expected = _merge_all_at_once(state, smalls, maps, weights, server_lr=0.7)
    sources = [_ReadOnce(s) for s in smalls]
    merged = merge_update(state, sources, maps, weights, server_lr=0.7)
    assert merged.keys() == expected.keys() == state.keys()
    for k in expected:
        assert torch.equal(merged[k], expected[k]), k
    for k in frozen:  # returned by no client: the global value, bit for bit
        assert torch.equal(merged[k], state[k]), k
    for src, small in zip(sources, smalls):
        assert [k for k, _ in src.alive_at_read] == [k for k in state if k in small]  # each read once
        # A float value is dropped before the next is read; after the merge none is alive.
        assert all(n == 0 for k, n in src.alive_at_read if state[k].is_floating_point())
        assert all(r() is None for r in src.handed)


@pytest.mark.parametrize("which", ["espnet_batch_norm", "e_branchformer", "branchformer",
                                   "branchformer_learned_ave"])
def test_droppable_units_cover_the_encoder_blocks(models, which):
    """Nearly every parameter of an encoder block is in some droppable unit, whatever the family:
    what stays whole are the block's layer norms and the biases on the residual stream."""
    model = models[which]
    modules = find_droppable_modules(model)
    cut = {key for m in modules for key in m.index_map(torch.arange(m.num_units))}
    block = {n: p.numel() for n, p in model.named_parameters() if n.startswith("encoder.encoders.")}
    covered = sum(n for k, n in block.items() if k in cut) / sum(block.values())
    print(f"{which}: {covered:.3f} of the encoder blocks' parameters are in droppable units")
    assert covered > 0.9
    whole = {k.split(".", 3)[3] for k in block if k not in cut}
    assert all(w.startswith("norm") or w.endswith(".bias") for w in whole), whole
    if which == "e_branchformer":
        merge = {m.name: m for m in modules}["encoder.encoders.0.merge_proj"]
        assert (merge.kind, merge.num_units, merge.segments) == ("merge", 32, 2)
        cg = {m.name: m for m in modules}["encoder.encoders.0.cgmlp"]
        assert (cg.kind, cg.num_units) == ("cgmlp", 16)


def test_rates_are_validated(models):
    modules = find_droppable_modules(models["espnet_batch_norm"])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        choose_submodel(modules, {modules[0].name: 1.0}, np.random.default_rng(0))
    with pytest.raises(ValueError, match="not a droppable module"):
        choose_submodel(modules, {"encoder.embed": 0.5}, np.random.default_rng(0))
    with pytest.raises(ValueError, match="group_norm_policy"):
        choose_submodel(modules, {}, np.random.default_rng(0), "sometimes")


def test_same_seed_same_submodel_different_seed_different(models):
    modules = find_droppable_modules(models["espnet_batch_norm"])
    rates = {m.name: 0.5 for m in modules if m.kind == "ff"}
    p1 = choose_submodel(modules, rates, np.random.default_rng([3, 1, 2]))
    p2 = choose_submodel(modules, rates, np.random.default_rng([3, 1, 2]))
    p3 = choose_submodel(modules, rates, np.random.default_rng([3, 1, 5]))
    assert all(torch.equal(p1.kept[n], p2.kept[n]) for n in p1.kept)
    assert any(not torch.equal(p1.kept[n], p3.kept[n]) for n in p1.kept)
