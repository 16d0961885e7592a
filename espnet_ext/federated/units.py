"""Structural units of an ESPnet ASR model that federated dropout can drop.

Federated dropout (Caldas et al. 2018) removes whole *units* so that the client's model is
genuinely smaller, not merely masked. A unit is everything a hidden neuron, head or channel owns
across the tensors it touches:

* ``ff``: a hidden unit of a position-wise feed-forward module (``w_1``: Linear d -> ff,
  ``w_2``: Linear ff -> d): row i of ``w_1.weight`` and ``w_1.bias``, column i of ``w_2.weight``.
* ``heads``: an attention head of a multi-headed attention module (self- or source-attention,
  with or without relative positions): the d_k rows of head h in ``linear_q/k/v`` (weight and
  bias) and in ``linear_pos.weight``, row h of ``pos_bias_u``/``pos_bias_v``, and the d_k
  input columns of head h in ``linear_out.weight``. q/k norms (``qk_norm``) act per head with
  shared weights and stay whole.
* ``conv``: a channel c of a Conformer convolution module: rows c and C + c of
  ``pointwise_conv1`` (the two halves that the GLU multiplies), row c of ``depthwise_conv``,
  entry c of the norm's weight/bias (and batch-norm running statistics), input column c of
  ``pointwise_conv2``.

Conv channels and norms. Batch norm is per channel, so any channel can go. Group norm
normalizes over the channels of a group together, so removing some channels of a group changes
the statistics of the others. Two policies (``group_norm_policy``):

* ``whole_groups``: channels are dropped a whole norm group at a time; the sub-model's group
  norm has fewer groups of the same size, and its output on the kept channels is exactly the
  full model's. Needs more than one group to drop anything.
* ``per_group``: the same number of channels is dropped from every group; the sub-model keeps
  the number of groups, each smaller, and normalizes over the kept channels (not bit-equal to
  the full model with those channels zeroed, but the only option with one group).
* ``auto`` (default): ``whole_groups`` when the norm has more than one group, else ``per_group``.

Layer norm over channels (``layer_norm``) behaves as ``per_group`` with one group.

Branchformer and E-Branchformer blocks (ESPnet's ``branchformer``/``e_branchformer``) add:

* ``cgmlp``: a hidden channel c of a convolutional gating MLP (``channel_proj1``: Linear
  d -> 2n, GELU; the gating unit ``csgu`` splits the 2n channels into a value half and a gate
  half, normalizes the gate half (layer norm over n), convolves it depthwise, optionally mixes
  it (``linear``: n -> n) and multiplies; ``channel_proj2``: Linear n -> d): rows c and n + c of
  ``channel_proj1.0``, entry c of the gate norm, row c of the depthwise ``conv``, row and column
  c of ``linear``, input column c of ``channel_proj2``. The gate's layer norm then normalizes
  over the kept channels, as a ``layer_norm`` conv module does: a sub-model is the full model
  with the dropped channels zeroed, except that the gate statistics are those of the kept
  channels (the zeros of dropped channels would otherwise pull the mean and variance down).
* ``merge``: a channel of the branches' outputs where they meet, named ``<block>.merge_proj``.
  Each branch ends in a projection to the model dimension d (attention ``linear_out``, cgMLP
  ``channel_proj2``) that feeds only the merge, never the residual stream, so its output
  channels are internal to the block: E-Branchformer concatenates the two (2d channels), runs a
  depthwise convolution over them (``depthwise_conv_fusion``, one kernel per channel) and
  projects ``concat + fusion(concat)`` back to d (``merge_proj``); Branchformer projects the
  concatenation (``concat``) or a weighted sum of the branches (``learned_ave``, with
  ``pooling_proj1/2`` and ``weight_proj1/2`` reading every channel; ``fixed_ave``). A merge
  channel is the branch projection's output row, its fusion kernel, and its input columns of
  ``merge_proj`` (and of the pooling and weight projections). Concatenations keep the same
  number of channels in each half (``segments`` = 2), drawn independently. The block's model
  dimension (``merge_proj``'s output, the residual stream) is never cut. Dropped merge channels
  give the full model with those channels zeroed, exactly.

A key can be sliced along two dimensions by two units (attention ``linear_out``: heads cut its
input columns, merge channels its output rows; ``csgu.linear``: rows and columns); index maps
hold one (dim, indices) pair per sliced dimension.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import torch

FF = "ff"
HEADS = "heads"
CONV = "conv"
CGMLP = "cgmlp"
MERGE = "merge"
UNIT_KINDS = (FF, HEADS, CONV, CGMLP, MERGE)
GROUP_NORM_POLICIES = ("auto", "whole_groups", "per_group")

#: Where a sliced entry came from: one (dim, indices into the full tensor) pair per sliced dim.
Slices = Tuple[Tuple[int, torch.Tensor], ...]
IndexMap = Dict[str, Slices]


def as_slices(entry) -> Slices:
    """An index-map entry as (dim, indices) pairs; a single (dim, indices) pair is accepted."""
    if len(entry) == 2 and isinstance(entry[0], int):
        return ((entry[0], entry[1]),)
    return tuple(entry)


def add_slices(index_map: IndexMap, key: str, slices: Slices) -> None:
    """Add `slices` of `key` to an index map (a key cut by two units gets both dims)."""
    have = dict(index_map.get(key, ()))
    for dim, idx in slices:
        if dim in have:
            raise ValueError(f"{key}: dimension {dim} is sliced by two droppable units")
        have[dim] = idx
    index_map[key] = tuple(sorted(have.items(), key=lambda d: d[0]))


@dataclasses.dataclass(frozen=True)
class DroppableModule:
    """One module whose units can be dropped.

    Attributes:
        name: Module path, e.g. ``encoder.encoders.0.feed_forward`` (for ``merge`` units the
            block's ``merge_proj``).
        kind: ``ff``, ``heads``, ``conv``, ``cgmlp`` or ``merge``.
        num_units: Hidden units, heads, or channels.
        head_dim: d_k (``heads`` only; 1 otherwise).
        norm: ``conv`` only: ``batch_norm``, ``group_norm``, ``layer_norm`` or None.
        norm_groups: Number of groups of a group norm (1 otherwise).
        has_pos: ``heads`` only: relative-position attention (``linear_pos``, ``pos_bias_*``).
        segments: The units form this many equal consecutive segments that each keep the same
            number of units (a concatenation of two branches: 2); 1 otherwise.
        keys: State-dict keys this module's units slice, with the dimension sliced and the
            unit layout (see :meth:`index_map`); a key may appear once per sliced dimension.
    """

    name: str
    kind: str
    num_units: int
    head_dim: int = 1
    norm: Optional[str] = None
    norm_groups: int = 1
    has_pos: bool = False
    segments: int = 1
    keys: Tuple[Tuple[str, int, str], ...] = ()

    @property
    def group_size(self) -> int:
        """Channels per norm group (conv with group norm), else 1."""
        return self.num_units // self.norm_groups if self.norm == "group_norm" else 1

    def unit_step(self, policy: str) -> int:
        """Units that must be dropped together under a group-norm policy (see module doc)."""
        if self.kind == CONV and self.norm == "group_norm" and resolve_policy(self, policy) == "whole_groups":
            return self.group_size
        return 1

    def kept_norm_groups(self, num_kept: int, policy: str) -> int:
        """Groups of the sub-model's group norm when `num_kept` channels are kept."""
        if self.norm != "group_norm":
            return 1
        if resolve_policy(self, policy) == "whole_groups":
            return num_kept // self.group_size
        return self.norm_groups

    @property
    def segment_size(self) -> int:
        """Units per segment (all units when `segments` is 1)."""
        return self.num_units // self.segments

    def first_units(self, n: int) -> torch.Tensor:
        """A kept set of `n` units with the shape every draw of `n` units has (sizes only).

        The first ``n / segments`` units of each segment; used to size sub-models without
        knowing which units a client keeps.
        """
        per = n // self.segments
        return torch.cat([s * self.segment_size + torch.arange(per) for s in range(self.segments)])

    def index_map(self, kept: torch.Tensor) -> IndexMap:
        """{state-dict key: ((dim, indices into the full tensor), ...)} for kept unit indices.

        Args:
            kept: Sorted unit indices (int64) to keep.
        """
        kept = kept.to(torch.long)
        out: IndexMap = {}
        for key, dim, layout in self.keys:
            if layout == "unit":
                idx = kept
            elif layout == "head_rows":  # d_k consecutive rows per head
                idx = (kept[:, None] * self.head_dim + torch.arange(self.head_dim)).reshape(-1)
            elif layout == "glu_rows":  # value half, then gate half
                idx = torch.cat([kept, kept + self.num_units])
            elif layout.startswith("segment"):  # the units of one segment, numbered from 0
                s, size = int(layout[len("segment"):]), self.segment_size
                idx = kept[(kept >= s * size) & (kept < (s + 1) * size)] - s * size
            else:
                raise AssertionError(layout)
            add_slices(out, key, ((dim, idx),))
        return out


def resolve_policy(module: DroppableModule, policy: str) -> str:
    """The effective group-norm policy of a conv module (``auto`` resolved)."""
    if policy not in GROUP_NORM_POLICIES:
        raise ValueError(
            f"group_norm_policy must be one of {', '.join(GROUP_NORM_POLICIES)}, got {policy!r}"
        )
    if policy == "auto":
        return "whole_groups" if module.norm_groups > 1 else "per_group"
    return policy


def _is_linear(m) -> bool:
    return isinstance(m, torch.nn.Linear)


def _ff_module(name: str, m: torch.nn.Module) -> Optional[DroppableModule]:
    w1, w2 = getattr(m, "w_1", None), getattr(m, "w_2", None)
    if not (_is_linear(w1) and _is_linear(w2)) or w1.out_features != w2.in_features:
        return None
    keys = [(f"{name}.w_1.weight", 0, "unit"), (f"{name}.w_2.weight", 1, "unit")]
    if w1.bias is not None:
        keys.insert(1, (f"{name}.w_1.bias", 0, "unit"))
    return DroppableModule(name=name, kind=FF, num_units=w1.out_features, keys=tuple(keys))


def _attention_module(name: str, m: torch.nn.Module) -> Optional[DroppableModule]:
    names = ("linear_q", "linear_k", "linear_v", "linear_out")
    if not all(_is_linear(getattr(m, n, None)) for n in names):
        return None
    h, d_k = getattr(m, "h", None), getattr(m, "d_k", None)
    if not isinstance(h, int) or not isinstance(d_k, int) or m.linear_q.out_features != h * d_k:
        return None
    keys = []
    for n in ("linear_q", "linear_k", "linear_v"):
        keys.append((f"{name}.{n}.weight", 0, "head_rows"))
        if getattr(m, n).bias is not None:
            keys.append((f"{name}.{n}.bias", 0, "head_rows"))
    keys.append((f"{name}.linear_out.weight", 1, "head_rows"))
    has_pos = _is_linear(getattr(m, "linear_pos", None))
    if has_pos:
        keys.append((f"{name}.linear_pos.weight", 0, "head_rows"))
        if m.linear_pos.bias is not None:
            keys.append((f"{name}.linear_pos.bias", 0, "head_rows"))
        for p in ("pos_bias_u", "pos_bias_v"):
            if isinstance(getattr(m, p, None), torch.nn.Parameter):
                keys.append((f"{name}.{p}", 0, "unit"))
    return DroppableModule(name=name, kind=HEADS, num_units=h, head_dim=d_k, has_pos=has_pos,
                           keys=tuple(keys))


def _norm_kind(norm: torch.nn.Module) -> Optional[str]:
    if isinstance(norm, torch.nn.GroupNorm):
        return "group_norm"
    if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
        return "batch_norm"
    if isinstance(norm, torch.nn.LayerNorm):
        return "layer_norm"
    return None


def _conv_module(name: str, m: torch.nn.Module) -> Optional[DroppableModule]:
    pw1, dw, pw2 = (getattr(m, n, None) for n in ("pointwise_conv1", "depthwise_conv", "pointwise_conv2"))
    if not all(isinstance(c, torch.nn.Conv1d) for c in (pw1, dw, pw2)):
        return None
    channels = dw.in_channels
    if dw.groups != channels or pw1.out_channels != 2 * channels or pw2.in_channels != channels:
        return None
    norm_module = getattr(m, "norm", None)
    norm = _norm_kind(norm_module) if norm_module is not None else None
    if norm_module is not None and norm is None:
        return None  # an unknown norm: its per-channel layout is not known, leave the module whole
    keys = [(f"{name}.pointwise_conv1.weight", 0, "glu_rows")]
    if pw1.bias is not None:
        keys.append((f"{name}.pointwise_conv1.bias", 0, "glu_rows"))
    keys.append((f"{name}.depthwise_conv.weight", 0, "unit"))
    if dw.bias is not None:
        keys.append((f"{name}.depthwise_conv.bias", 0, "unit"))
    if norm is not None:
        for p in ("weight", "bias"):
            if getattr(norm_module, p, None) is not None:
                keys.append((f"{name}.norm.{p}", 0, "unit"))
        if norm == "batch_norm" and norm_module.running_mean is not None:
            keys += [(f"{name}.norm.running_mean", 0, "unit"), (f"{name}.norm.running_var", 0, "unit")]
    keys.append((f"{name}.pointwise_conv2.weight", 1, "unit"))
    groups = norm_module.num_groups if norm == "group_norm" else 1
    return DroppableModule(name=name, kind=CONV, num_units=channels, norm=norm, norm_groups=groups,
                           keys=tuple(keys))


def _with_bias(keys: list, prefix: str, layer: torch.nn.Module, dim: int, layout: str) -> None:
    keys.append((f"{prefix}.weight", dim, layout))
    if dim == 0 and getattr(layer, "bias", None) is not None:
        keys.append((f"{prefix}.bias", 0, layout))


def _cgmlp_module(name: str, m: torch.nn.Module) -> Optional[DroppableModule]:
    proj1, proj2, csgu = (getattr(m, n, None) for n in ("channel_proj1", "channel_proj2", "csgu"))
    if not isinstance(proj1, torch.nn.Sequential) or not len(proj1) or not _is_linear(proj1[0]):
        return None
    conv, norm, lin = (getattr(csgu, n, None) for n in ("conv", "norm", "linear"))
    if not (_is_linear(proj2) and isinstance(conv, torch.nn.Conv1d)
            and isinstance(norm, torch.nn.LayerNorm)):
        return None
    n = conv.in_channels
    if (conv.groups != n or conv.out_channels != n or proj1[0].out_features != 2 * n
            or proj2.in_features != n or tuple(norm.normalized_shape) != (n,)
            or getattr(norm, "dim", -1) != -1 or (lin is not None and not _is_linear(lin))):
        return None
    keys: list = []
    _with_bias(keys, f"{name}.channel_proj1.0", proj1[0], 0, "glu_rows")
    if norm.elementwise_affine:
        keys += [(f"{name}.csgu.norm.weight", 0, "unit")]
        if norm.bias is not None:
            keys += [(f"{name}.csgu.norm.bias", 0, "unit")]
    _with_bias(keys, f"{name}.csgu.conv", conv, 0, "unit")
    if lin is not None:
        _with_bias(keys, f"{name}.csgu.linear", lin, 0, "unit")
        keys.append((f"{name}.csgu.linear.weight", 1, "unit"))
    keys.append((f"{name}.channel_proj2.weight", 1, "unit"))
    return DroppableModule(name=name, kind=CGMLP, num_units=n, norm="layer_norm", keys=tuple(keys))


def _merge_module(name: str, m: torch.nn.Module) -> Optional[DroppableModule]:
    """The merge channels of a (E-)Branchformer block with both branches, or None."""
    attn, cgmlp, merge = (getattr(m, n, None) for n in ("attn", "cgmlp", "merge_proj"))
    out_att = getattr(attn, "linear_out", None)
    out_mlp = getattr(cgmlp, "channel_proj2", None)
    if not (_is_linear(merge) and _is_linear(out_att) and _is_linear(out_mlp)):
        return None
    d = out_att.out_features
    if out_mlp.out_features != d or merge.out_features != d:
        return None
    fusion = getattr(m, "depthwise_conv_fusion", None)
    keys: list = []
    if merge.in_features == 2 * d:  # concatenation: attention channels, then cgMLP channels
        _with_bias(keys, f"{name}.attn.linear_out", out_att, 0, "segment0")
        _with_bias(keys, f"{name}.cgmlp.channel_proj2", out_mlp, 0, "segment1")
        if fusion is not None:
            if not (isinstance(fusion, torch.nn.Conv1d) and fusion.groups == fusion.in_channels
                    == fusion.out_channels == 2 * d):
                return None
            _with_bias(keys, f"{name}.depthwise_conv_fusion", fusion, 0, "unit")
        num, segments = 2 * d, 2
    elif merge.in_features == d and fusion is None:  # weighted sum of the branches
        _with_bias(keys, f"{name}.attn.linear_out", out_att, 0, "unit")
        _with_bias(keys, f"{name}.cgmlp.channel_proj2", out_mlp, 0, "unit")
        for p in ("pooling_proj1", "pooling_proj2", "weight_proj1", "weight_proj2"):
            layer = getattr(m, p, None)
            if layer is not None:
                if not (_is_linear(layer) and layer.in_features == d):
                    return None
                keys.append((f"{name}.{p}.weight", 1, "unit"))
        num, segments = d, 1
    else:
        return None
    keys.append((f"{name}.merge_proj.weight", 1, "unit"))
    return DroppableModule(name=f"{name}.merge_proj", kind=MERGE, num_units=num,
                           segments=segments, keys=tuple(keys))


def find_droppable_modules(model: torch.nn.Module) -> List[DroppableModule]:
    """Every module of a model with droppable units (see the module doc), in order.

    Modules are recognized by structure (attribute names and layer types of ESPnet's
    ``PositionwiseFeedForward``, ``MultiHeadedAttention`` and its relative-position variants,
    Conformer ``ConvolutionModule`` including espnet_ext's padding-aware one,
    ``ConvolutionalGatingMLP``, and the merge of ``BranchformerEncoderLayer`` and
    ``EBranchformerEncoderLayer``), so ESPnet's own and espnet_ext's encoders are covered alike.

    Args:
        model: The full model (e.g. ``ESPnetASRModel``).

    Returns:
        Droppable modules in ``named_modules`` order.
    """
    found = []
    for name, m in model.named_modules():
        for detect in (_ff_module, _attention_module, _conv_module, _cgmlp_module, _merge_module):
            d = detect(name, m)
            if d is not None:
                found.append(d)
                break
    return found


def modules_by_name(modules: Sequence[DroppableModule]) -> Dict[str, DroppableModule]:
    return {m.name: m for m in modules}
