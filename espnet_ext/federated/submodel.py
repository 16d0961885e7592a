"""Structured federated dropout: choose a client's sub-model, cut it out, merge updates back.

A client's sub-model keeps a random subset of the units (feed-forward hidden units, attention
heads, convolution channels, cgMLP channels, (E-)Branchformer merge channels; see
:mod:`espnet_ext.federated.units`) of every module with a positive dropout rate, chosen afresh
per client and round with a seeded generator (Caldas et al. 2018; one rate per layer group as in
Guliani et al. 2022). Rates are per module here; the dropout plan
(:class:`espnet_ext.federated.plan.DropoutPlan`) turns per-group rates into per-module rates.

* :func:`choose_submodel` draws the kept units -> :class:`SubmodelLayout`.
* :func:`extract_submodel` slices a state dict into the genuinely smaller tensors the client
  receives, plus the index map that says where each slice came from.
* :func:`shrink_model_` resizes a model's modules in place (``nn.Linear``/``nn.Conv1d``/norm
  parameters sliced, sizes and the attention head count updated), so the client trains the
  sub-model with ESPnet's own ``forward`` and loss: ESPnet builds every block from one config,
  so blocks of different widths cannot be built from a config, but its forward code only reads
  sizes from the tensors and from ``MultiHeadedAttention.h``.
* :func:`merge_update` scatters the clients' trained values back and averages each element
  over the clients that trained it (weighted by examples); elements no client trained keep
  their value.

No rescaling: as in Caldas et al., kept units are not scaled by 1/(1-rate), neither during
client training nor at evaluation. Dropping whole units (not random activations) changes a
module's width, not the expected magnitude of each kept unit's contribution, and the global
model is always evaluated at full width.

Rounding: a module with n droppable blocks of units (units, or whole norm groups) keeps
``max(1, floor(n * (1 - rate) + 0.5))`` blocks, so small modules may drop less or more than the
nominal rate; :func:`kept_units` gives the exact count and the cost accounting uses it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np
import torch

from espnet_ext.federated.units import (
    CGMLP,
    CONV,
    FF,
    HEADS,
    MERGE,
    GROUP_NORM_POLICIES,
    DroppableModule,
    IndexMap,
    add_slices,
    as_slices,
    resolve_policy,
)


def kept_blocks(num_blocks: int, rate: float) -> int:
    """Blocks kept out of `num_blocks` at dropout `rate` (at least one)."""
    return max(1, int(math.floor(num_blocks * (1.0 - rate) + 0.5)))


def kept_units(module: DroppableModule, rate: float, policy: str = "auto") -> int:
    """Number of units a module keeps at dropout `rate` under a group-norm policy."""
    if rate <= 0:
        return module.num_units
    if module.kind == CONV and module.norm == "group_norm" and resolve_policy(module, policy) == "per_group":
        return module.norm_groups * kept_blocks(module.group_size, rate)
    if module.segments > 1:
        return module.segments * kept_blocks(module.segment_size, rate)
    step = module.unit_step(policy)
    return kept_blocks(module.num_units // step, rate) * step


@dataclasses.dataclass
class SubmodelLayout:
    """The units one client keeps in one round (drawn by :func:`choose_submodel`).

    Attributes:
        kept: Module name -> sorted kept unit indices (int64). Modules not listed are whole.
        modules: Module name -> its description (for every module in `kept`).
        group_norm_policy: Policy used for conv modules with group norm.
    """

    kept: Dict[str, torch.Tensor]
    modules: Dict[str, DroppableModule]
    group_norm_policy: str = "auto"

    def index_map(self) -> IndexMap:
        """{state-dict key: ((dim, indices into the full tensor), ...)} of every sliced entry."""
        out: IndexMap = {}
        for name, kept in self.kept.items():
            for key, slices in self.modules[name].index_map(kept).items():
                add_slices(out, key, slices)
        return out

    def structure(self) -> Dict[str, Dict[str, int]]:
        """What a client needs to build the sub-model: {module: {"kept": n, "norm_groups": g}}.

        JSON-serializable; unit *indices* stay on the server.
        """
        return {
            name: {
                "kept": int(len(kept)),
                "norm_groups": self.modules[name].kept_norm_groups(len(kept), self.group_norm_policy),
            }
            for name, kept in self.kept.items()
        }

    @property
    def is_full(self) -> bool:
        """True when nothing is dropped."""
        return all(len(k) == self.modules[n].num_units for n, k in self.kept.items())


def _choose(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return np.sort(rng.choice(n, size=k, replace=False))


def choose_submodel(
    modules: Sequence[DroppableModule],
    rates: Mapping[str, float],
    rng: np.random.Generator,
    group_norm_policy: str = "auto",
) -> SubmodelLayout:
    """Draw the kept units of every module with a positive rate.

    Args:
        modules: Droppable modules of the model (:func:`find_droppable_modules`).
        rates: Module name -> dropout rate in [0, 1); missing or 0 = keep whole.
        rng: Random generator; seed it per (run seed, round, client) for reproducible runs.
        group_norm_policy: ``auto``, ``whole_groups`` or ``per_group`` (see units module).

    Returns:
        The client's layout (kept units per module).

    Raises:
        ValueError: A rate outside [0, 1), or a rate for a module not in `modules`.
    """
    if group_norm_policy not in GROUP_NORM_POLICIES:
        raise ValueError(
            f"group_norm_policy must be one of {', '.join(GROUP_NORM_POLICIES)}, "
            f"got {group_norm_policy!r}"
        )
    by_name = {m.name: m for m in modules}
    for name, r in rates.items():
        if name not in by_name:
            raise ValueError(f"dropout rate given for {name!r}, which is not a droppable module")
        if not 0.0 <= r < 1.0:
            raise ValueError(f"dropout rate of {name} must be in [0, 1), got {r}")
    kept: Dict[str, torch.Tensor] = {}
    used: Dict[str, DroppableModule] = {}
    for m in modules:  # model order, so the draws do not depend on the dict's order
        r = float(rates.get(m.name, 0.0))
        if r <= 0:
            continue
        policy = resolve_policy(m, group_norm_policy) if m.kind == CONV else group_norm_policy
        if m.kind == CONV and m.norm == "group_norm" and policy == "per_group":
            size = m.group_size
            per = kept_blocks(size, r)
            idx = np.concatenate([g * size + _choose(rng, size, per) for g in range(m.norm_groups)])
        elif m.segments > 1:  # the same count from each segment, drawn independently
            size = m.segment_size
            per = kept_blocks(size, r)
            idx = np.concatenate([s * size + _choose(rng, size, per) for s in range(m.segments)])
        else:
            step = m.unit_step(group_norm_policy)
            blocks = _choose(rng, m.num_units // step, kept_blocks(m.num_units // step, r))
            idx = (blocks[:, None] * step + np.arange(step)).reshape(-1)
        kept[m.name] = torch.as_tensor(idx, dtype=torch.long)
        used[m.name] = m
    return SubmodelLayout(kept=kept, modules=used, group_norm_policy=group_norm_policy)


def extract_submodel(
    state: Mapping[str, torch.Tensor], layout: SubmodelLayout
) -> Tuple[Dict[str, torch.Tensor], IndexMap]:
    """The client's (smaller) state dict and where each sliced entry came from.

    Args:
        state: Full state dict (or the subset of it that is sent).
        layout: The client's kept units.

    Returns:
        (small_state, index_map): entries in the index map are sliced copies; the others are
        the full tensors (not copied).

    Raises:
        KeyError: The layout slices an entry the state does not have.
    """
    imap = layout.index_map()
    small = {}
    for key, value in state.items():
        if key in imap:
            for dim, idx in imap[key]:
                value = value.index_select(dim, idx.to(value.device))
            small[key] = value
        else:
            small[key] = value
    missing = [k for k in imap if k not in state]
    if missing:
        raise KeyError(f"the sub-model layout slices {missing[0]!r}, which the state dict lacks")
    return small, imap


def _slice_entry(module: torch.nn.Module, attr: str, dim: int, idx: torch.Tensor) -> None:
    """Replace parameter or buffer `attr` of `module` by its slice along `dim`."""
    if attr in module._parameters and module._parameters[attr] is not None:
        old = module._parameters[attr]
        new = old.detach().index_select(dim, idx.to(old.device)).clone()
        module._parameters[attr] = torch.nn.Parameter(new, requires_grad=old.requires_grad)
    elif attr in module._buffers and module._buffers[attr] is not None:
        old = module._buffers[attr]
        module._buffers[attr] = old.index_select(dim, idx.to(old.device)).clone()
    else:
        raise KeyError(f"{type(module).__name__} has no parameter or buffer {attr!r}")


def _update_sizes(model: torch.nn.Module, d: DroppableModule, kept: torch.Tensor,
                  norm_groups: int) -> None:
    """Set the size attributes of module `d` of `model` after slicing it to the `kept` units."""
    k = len(kept)
    if d.kind == MERGE:  # sizes live in the block: both branch outputs, fusion, merge
        block = model.get_submodule(d.name.rpartition(".")[0])
        if d.segments > 1:
            k_att = int((kept < d.segment_size).sum())
            k_mlp = k - k_att
        else:
            k_att = k_mlp = k
        block.attn.linear_out.out_features = k_att
        block.cgmlp.channel_proj2.out_features = k_mlp
        fusion = getattr(block, "depthwise_conv_fusion", None)
        if fusion is not None:
            fusion.in_channels = fusion.out_channels = fusion.groups = k
        for p in ("pooling_proj1", "pooling_proj2", "weight_proj1", "weight_proj2"):
            if getattr(block, p, None) is not None:
                getattr(block, p).in_features = k
        block.merge_proj.in_features = k
        return
    m = model.get_submodule(d.name)
    if d.kind == CGMLP:
        m.channel_proj1[0].out_features = 2 * k
        m.csgu.norm.normalized_shape = (k,)
        conv = m.csgu.conv
        conv.in_channels = conv.out_channels = conv.groups = k
        if m.csgu.linear is not None:
            m.csgu.linear.in_features = m.csgu.linear.out_features = k
        m.channel_proj2.in_features = k
    elif d.kind == FF:
        m.w_1.out_features = k
        m.w_2.in_features = k
    elif d.kind == HEADS:
        width = k * d.head_dim
        for n in ("linear_q", "linear_k", "linear_v"):
            getattr(m, n).out_features = width
        m.linear_out.in_features = width
        if d.has_pos:
            m.linear_pos.out_features = width
        m.h = k
    elif d.kind == CONV:
        m.pointwise_conv1.out_channels = 2 * k
        m.depthwise_conv.in_channels = m.depthwise_conv.out_channels = m.depthwise_conv.groups = k
        m.pointwise_conv2.in_channels = k
        norm = getattr(m, "norm", None)
        if isinstance(norm, torch.nn.GroupNorm):
            if k % norm_groups:
                raise ValueError(f"{d.name}: {k} channels cannot form {norm_groups} equal groups")
            norm.num_groups, norm.num_channels = norm_groups, k
        elif isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
            norm.num_features = k
        elif isinstance(norm, torch.nn.LayerNorm):
            norm.normalized_shape = (k,)


def _resize(model: torch.nn.Module, modules: Mapping[str, DroppableModule],
            kept: Mapping[str, torch.Tensor], norm_groups: Mapping[str, int]) -> None:
    for name, idx in kept.items():
        d = modules[name]
        for key, slices in d.index_map(idx).items():
            owner, _, attr = key.rpartition(".")
            for dim, index in slices:
                _slice_entry(model.get_submodule(owner), attr, dim, index)
        _update_sizes(model, d, idx, norm_groups[name])


def shrink_model_(model: torch.nn.Module, layout: SubmodelLayout) -> torch.nn.Module:
    """Resize `model`'s droppable modules in place to the layout's kept units (values sliced).

    The result holds exactly :func:`extract_submodel`'s tensors for the sliced entries.

    Args:
        model: The full model (modified in place).
        layout: Kept units.

    Returns:
        `model`, now the sub-model.
    """
    groups = {n: s["norm_groups"] for n, s in layout.structure().items()}
    _resize(model, layout.modules, layout.kept, groups)
    return model


def detach_cached_tensors_(model: torch.nn.Module) -> torch.nn.Module:
    """Detach tensors that modules cache from their last forward (e.g. attention weights).

    ESPnet's attention keeps its last attention matrix (``self.attn``); after a training step it
    is part of the autograd graph, and ``copy.deepcopy`` refuses such tensors.
    """
    for m in model.modules():
        for name, value in list(vars(m).items()):
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                setattr(m, name, value.detach())
    return model


def build_submodel(model: torch.nn.Module, layout: SubmodelLayout) -> torch.nn.Module:
    """A resized deep copy of `model` (the original is untouched but for detached caches)."""
    return shrink_model_(copy.deepcopy(detach_cached_tensors_(model)), layout)


def shrink_model_to_structure_(model: torch.nn.Module, modules: Sequence[DroppableModule],
                               structure: Mapping[str, Mapping[str, int]]) -> torch.nn.Module:
    """Resize a model in place to a sub-model structure received from the server.

    The client knows only how many units each module keeps (:meth:`SubmodelLayout.structure`),
    not which; it resizes its own model to those sizes (the values are placeholders) and then
    loads the received state dict with ``strict=True``.

    Args:
        model: A full model of the same architecture (built from the same config).
        modules: Its droppable modules.
        structure: {module: {"kept": n, "norm_groups": g}}.

    Raises:
        ValueError: A module the model does not have, or a size it cannot take.
    """
    by_name = {m.name: m for m in modules}
    kept, groups = {}, {}
    for name, s in structure.items():
        if name not in by_name:
            raise ValueError(f"sub-model structure names {name!r}, not a droppable module of this model")
        n, d = int(s["kept"]), by_name[name]
        if not 1 <= n <= d.num_units or n % d.segments:
            raise ValueError(f"{name}: cannot keep {n} of {d.num_units} units"
                             + (f" in {d.segments} equal segments" if d.segments > 1 else ""))
        kept[name] = d.first_units(n)
        groups[name] = int(s.get("norm_groups", 1))
    _resize(model, by_name, kept, groups)
    return model


def add_slice_(acc: torch.Tensor, slices, value: torch.Tensor, weight: float) -> torch.Tensor:
    """Add ``weight * value`` in place to the elements of `acc` that `slices` select.

    Args:
        acc: Full-size accumulator (modified in place).
        slices: (dim, indices into `acc`) pairs, one per sliced dimension
            (:data:`espnet_ext.federated.units.Slices`).
        value: The sliced tensor: `acc`'s shape with each sliced dim cut to its indices.
        weight: Scale of `value`.

    Returns:
        `acc`.
    """
    (dim, idx), rest = slices[0], slices[1:]
    idx = idx.to(acc.device)
    part = acc.index_select(dim, idx)
    if rest:
        add_slice_(part, rest, value, weight)
    else:
        # The same ``add_`` kernel on the same element pairs as adding a zero-filled full-size
        # tensor, so the sums are bit-identical to that. ``index_add_`` is not: on 1-d tensors
        # it rounds the product before adding, where ``add_`` fuses multiply and add.
        part.add_(value, alpha=weight)
    return acc.index_copy_(dim, idx, part)


def merge_update(
    global_state: Mapping[str, torch.Tensor],
    small_states: Sequence[Mapping[str, torch.Tensor]],
    index_maps: Sequence[Mapping[str, object]],
    weights: Sequence[float],
    server_lr: float = 1.0,
) -> Dict[str, torch.Tensor]:
    """Merge clients' trained sub-models into the global state (FedAvg over sub-models).

    Each floating-point element becomes ``g + server_lr * (avg - g)``, where ``avg`` is the
    weighted average of the element over the clients whose sub-model contains it (weights:
    usually their numbers of examples) and ``g`` its global value; elements no client trained
    keep ``g``. With ``server_lr = 1`` this is FedAvg restricted to the clients that trained the
    element. Integer entries (batch-norm ``num_batches_tracked``) take the largest client value.
    Accumulation is in float64, in the order of `small_states`.

    Streaming: the merge goes entry by entry and reads each client's value of an entry once,
    just before adding it (``state[key]``, clients in order), and keeps no reference to it
    after; only one entry's float64 sums exist at a time. So `small_states` may be mappings
    that convert a value when it is read and drop their own copy then (the server's replies,
    :class:`espnet_ext.federated.strategy.ReplyArrays`): the merge then never holds a whole
    client update as tensors, let alone every client's.

    Args:
        global_state: The global model's entries (those sent to clients).
        small_states: One state dict per client (entries sliced as in its index map; entries
            a client did not return, e.g. those of frozen groups, are treated as not trained by
            it, and an entry no client returned keeps its global value bit for bit). Only
            ``in`` and ``[key]`` are used, each value read once.
        index_maps: One index map per client (:func:`extract_submodel`); an entry is a tuple
            of (dim, indices) pairs, or a single (dim, indices) pair.
        weights: One positive weight per client.
        server_lr: Server learning rate (step size on the averaged update).

    Returns:
        The new global state (new tensors; inputs untouched unless reading consumes them).

    Raises:
        ValueError: Lists of different lengths, or a non-positive weight.
    """
    if not len(small_states) == len(index_maps) == len(weights):
        raise ValueError(
            f"merge_update: {len(small_states)} states, {len(index_maps)} index maps, "
            f"{len(weights)} weights; give one of each per client"
        )
    if any(w <= 0 for w in weights):
        raise ValueError(f"merge_update: client weights must be positive, got {list(weights)}")
    new: Dict[str, torch.Tensor] = {}
    for key, g in global_state.items():
        # The clients' states, not their values: each value is read once, when it is added.
        holders = [(s, m.get(key), float(w))
                   for s, m, w in zip(small_states, index_maps, weights) if key in s]
        new[key] = _merge_entry(g, key, holders, server_lr)
    return new


def _merge_entry(g: torch.Tensor, key: str,
                 holders: Sequence[Tuple[Mapping[str, torch.Tensor], object, float]],
                 server_lr: float) -> torch.Tensor:
    """Entry `key` of :func:`merge_update` from its global value `g` and the clients' (state,
    index-map entry or None for a whole tensor, weight) triples; reads ``state[key]`` once per
    client, in order, and drops it before reading the next."""
    if not holders:
        return g.clone()
    if not g.is_floating_point():  # a counter (never sliced): the most advanced one
        return torch.stack([s[key].to(g.device, g.dtype).reshape(g.shape) for s, _, _ in holders]).amax(dim=0)
    num = torch.zeros(g.shape, dtype=torch.float64, device=g.device)
    den = torch.zeros(g.shape, dtype=torch.float64, device=g.device)
    for state, sliced, w in holders:
        v = state[key].to(device=g.device, dtype=torch.float64)
        if sliced is None:
            num.add_(v, alpha=w)
            den.add_(w)
        else:
            # Only the trained slice is touched: no full-size tensor per client.
            slices = as_slices(sliced)
            add_slice_(num, slices, v, w)
            add_slice_(den, slices, torch.ones_like(v), w)
    trained = den > 0
    g64 = g.to(torch.float64)
    avg = torch.where(trained, num / den.clamp(min=1e-300), g64)
    return torch.where(trained, g64 + server_lr * (avg - g64), g64).to(g.dtype)
