"""What a "layer" is: ordered, named groups of an ESPnet ASR model's state-dict entries.

One layer map is computed from a model (or only its state-dict key names) and a granularity, and
is shared by everything that treats layers as units: the layer-reset scan, the weight-update
analysis and the federated-dropout plan.

Granularities (`GRANULARITIES`):

* ``block``: each encoder block ``encoder.encoders.N`` and decoder block ``decoder.decoders.N``
  is one group; every other child of the encoder/decoder (``encoder.embed``,
  ``encoder.after_norm``, ``decoder.embed``, ``decoder.after_norm``, ``decoder.output_layer``,
  ...) and every other top-level module with parameters (``ctc``, a learnable ``frontend``,
  ``preencoder``, ...) is its own group.
* ``submodule``: inside each encoder/decoder block, each child module is a group, in forward
  order (see :data:`BLOCK_SUBMODULES`), except that all the block's norms (children named
  ``norm*``: ``norm_ff``, ``norm_mha``, ``norm_conv``, ``norm_mlp``, ``norm_final``, ``norm1``...)
  form one group ``<block>.norms``, and a Branchformer's learned-average weight projections
  (``pooling_proj1/2``, ``weight_proj1/2``) form one group ``<block>.merge_weights``. A norm
  inside a sub-module (the Conformer convolution module's batch/group/layer norm, the cgMLP
  gate's layer norm) belongs to that sub-module. Groups outside the blocks are as for ``block``.
* ``frontend``: only the input side: ``encoder.embed`` (convolutional subsampling),
  ``decoder.embed`` (token embedding) and a learnable ``frontend``/``preencoder`` if any.
* ``pattern``: groups from user regular expressions (see :func:`build_layer_map`).

Buffers: a group holds every state-dict entry under its modules, parameters *and* persistent
buffers (e.g. BatchNorm ``running_mean``/``running_var``/``num_batches_tracked``), so that a
reset puts a module back into one consistent state (statistics that belong to the weights they
were collected with). Groups are made only of modules that own at least one parameter; entries
that no group holds (fixed buffers such as the mel matrix ``frontend.logmel.melmat`` or global
MVN statistics ``normalize.mean``) are listed in :attr:`LayerMap.unassigned`.

Depth: ``block`` is the block index (0-based) and ``depth`` = block / number of blocks of that
stack (encoder or decoder), in [0, 1); groups outside the blocks have neither. Depth lets maps
of models with different numbers of blocks be compared.

Kinds: one vocabulary across encoder families, so that "the attention of the block at depth d"
is the same kind in a Conformer, a Transformer, a Branchformer and an E-Branchformer (the
E-Branchformer names its attention ``attn``, the Conformer ``self_attn``: both are
``enc_self_attn``). The names are the Conformer's (``enc_feed_forward_macaron``,
``enc_self_attn``, ``enc_conv_module``, ``enc_feed_forward``, ``enc_norms``), which scans
written before the other families were mapped already use, plus ``enc_cgmlp``, ``enc_fusion``
(E-Branchformer's depthwise fusion convolution) and ``enc_merge`` (the branch merge projection
and learned-average weights); see :data:`SUBMODULE_KINDS`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch

#: Granularity names accepted by :func:`build_layer_map`.
GRANULARITIES = ("block", "submodule", "frontend", "pattern")

# State-dict entries that are buffers, recognisable by name when only a state dict is given.
_BUFFER_KEY = re.compile(
    r"(^|\.)(running_mean|running_var|num_batches_tracked|melmat|mean|std|count)$"
)
_BLOCK_KEY = re.compile(r"^(encoder\.encoders|decoder\.decoders)\.(\d+)(?:\.|$)")
_STACKS = {"encoder": "encoders", "decoder": "decoders"}
_STACK_PREFIX = {"encoder": "enc", "decoder": "dec"}
# Input-side top-level modules, in forward order.
_INPUT_MODULES = ("frontend", "normalize", "preencoder")
#: Forward order of the sub-modules of an encoder/decoder block, per ESPnet block family (names
#: of the block's children; ``norms`` and ``merge_weights`` are the gathered groups). Sub-modules
#: a block lacks are skipped (e.g. no macaron feed-forward module); unknown children follow the
#: known ones in state-dict order, the norms come last.
BLOCK_SUBMODULES = {
    # espnet.nets.pytorch_backend.conformer.encoder_layer.EncoderLayer (also norm_conformer,
    # multiconvformer: its multi-kernel cgMLP is the block's conv_module)
    "conformer": ("feed_forward_macaron", "self_attn", "concat_linear", "conv_module",
                  "feed_forward", "norms"),
    # espnet.nets.pytorch_backend.transformer.encoder_layer.EncoderLayer
    "transformer": ("self_attn", "concat_linear", "feed_forward", "norms"),
    # espnet2.asr.encoder.branchformer_encoder.BranchformerEncoderLayer: attn || cgmlp, merge
    "branchformer": ("attn", "cgmlp", "merge_weights", "merge_proj", "norms"),
    # espnet2.asr.encoder.e_branchformer_encoder.EBranchformerEncoderLayer:
    # macaron FF, attn || cgmlp, depthwise fusion, merge, FF
    "e_branchformer": ("feed_forward_macaron", "attn", "cgmlp", "depthwise_conv_fusion",
                       "merge_proj", "feed_forward", "norms"),
    # espnet.nets.pytorch_backend.transformer.decoder_layer.DecoderLayer
    "transformer_decoder": ("self_attn", "concat_linear1", "src_attn", "concat_linear2",
                            "feed_forward", "norms"),
}

#: Kind (without the ``enc_``/``dec_`` prefix) of each block child, shared by every family.
#: Children not listed keep their own name as kind.
SUBMODULE_KINDS = {
    "feed_forward_macaron": "feed_forward_macaron",
    "self_attn": "self_attn",
    "attn": "self_attn",  # Branchformer/E-Branchformer name for the same self-attention
    "src_attn": "src_attn",
    "conv_module": "conv_module",
    "cgmlp": "cgmlp",
    "depthwise_conv_fusion": "fusion",
    "merge_proj": "merge",
    "merge_weights": "merge",
    "feed_forward": "feed_forward",
    "norms": "norms",
}

# One order for all families: the families' orders never disagree on a pair of names.
_SUBMODULE_ORDER = (
    "feed_forward_macaron", "self_attn", "attn", "concat_linear", "concat_linear1", "src_attn",
    "concat_linear2", "conv_module", "cgmlp", "depthwise_conv_fusion", "merge_weights",
    "merge_proj", "feed_forward",
)
# Branchformer's learned-average merge: per-branch attention pooling and weight projections.
_MERGE_WEIGHTS = re.compile(r"^(pooling_proj|weight_proj)\d+$")


class LayerMapError(ValueError):
    """A layer map cannot be built as asked (unknown granularity, pattern matching nothing...)."""


@dataclasses.dataclass(frozen=True)
class LayerGroup:
    """One "layer": a named set of state-dict entries that is reset or dropped as a unit.

    Attributes:
        name: Unique name, usually the module path (``encoder.encoders.3``,
            ``encoder.encoders.3.conv_module``), or ``<block>.norms`` for a block's norms.
        keys: State-dict keys of the group (parameters and buffers), in state-dict order.
        param_keys: The subset of `keys` that are parameters (trained by the optimizer).
        kind: What the group is, comparable across models and encoder families:
            ``enc_block``, ``dec_block``, ``enc_embed``, ``enc_after_norm``, ``ctc``,
            ``dec_embed``, ``dec_after_norm``, ``dec_output_layer``, ``enc_self_attn``,
            ``enc_conv_module``, ``enc_cgmlp``, ``enc_fusion``, ``enc_merge``, ``enc_norms``,
            ``dec_src_attn``, ... (:data:`SUBMODULE_KINDS`), ``frontend``, or ``pattern`` for
            pattern groups.
        stack: ``encoder``, ``decoder`` or None (other top-level modules).
        block: Block index within its stack (0-based), or None outside the blocks.
        depth: block / number of blocks of the stack, or None outside the blocks.
        numel: Number of parameter elements (buffers not counted); 0 when unknown.
    """

    name: str
    keys: Tuple[str, ...]
    param_keys: Tuple[str, ...]
    kind: str
    stack: Optional[str] = None
    block: Optional[int] = None
    depth: Optional[float] = None
    numel: int = 0

    @property
    def buffer_keys(self) -> Tuple[str, ...]:
        """State-dict keys of the group that are buffers (e.g. BatchNorm statistics)."""
        params = set(self.param_keys)
        return tuple(k for k in self.keys if k not in params)


@dataclasses.dataclass(frozen=True)
class LayerMap:
    """Ordered, disjoint layer groups of one model at one granularity.

    Attributes:
        granularity: One of :data:`GRANULARITIES`.
        groups: The groups, in forward order (input side first, encoder blocks by index, ctc,
            decoder).
        num_blocks: Number of blocks per stack, e.g. ``{"encoder": 12, "decoder": 6}``.
        unassigned: State-dict keys that belong to no group.
        patterns: The regular expressions of a ``pattern`` map (empty otherwise).
    """

    granularity: str
    groups: Tuple[LayerGroup, ...]
    num_blocks: Mapping[str, int]
    unassigned: Tuple[str, ...] = ()
    patterns: Tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.groups)

    def __iter__(self):
        return iter(self.groups)

    def names(self) -> List[str]:
        """Group names in order."""
        return [g.name for g in self.groups]

    def __getitem__(self, name: str) -> LayerGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no layer group {name!r}; groups: {', '.join(self.names())}")

    def group_of(self, key: str) -> Optional[LayerGroup]:
        """The group holding state-dict entry `key`, or None."""
        for g in self.groups:
            if key in g.keys:
                return g
        return None

    def select(self, names: Iterable[str]) -> "LayerMap":
        """The same map restricted to the named groups (order kept).

        Raises:
            KeyError: A name is not a group of this map.
        """
        wanted = list(names)
        for n in wanted:
            self[n]  # raises with the list of groups
        keep = set(wanted)
        return dataclasses.replace(self, groups=tuple(g for g in self.groups if g.name in keep))


def _state_info(
    model_or_state_dict: Union[torch.nn.Module, Mapping[str, object]]
) -> Tuple[List[str], set, Dict[str, int]]:
    """(state-dict keys in order, parameter keys, numel per key) of a model or state dict."""
    if isinstance(model_or_state_dict, torch.nn.Module):
        state = model_or_state_dict.state_dict()
        params = {n for n, _ in model_or_state_dict.named_parameters()}
        # state_dict() names a shared parameter once; named_parameters() too (same first name).
    elif isinstance(model_or_state_dict, Mapping):
        state = model_or_state_dict
        params = {k for k in state if not _BUFFER_KEY.search(k)}
    else:
        raise TypeError(
            f"build_layer_map needs a torch.nn.Module or a state dict, got "
            f"{type(model_or_state_dict).__name__}"
        )
    keys = list(state.keys())
    numel = {k: int(v.numel()) if hasattr(v, "numel") else 0 for k, v in state.items()}
    return keys, params, numel


def _count_blocks(keys: Sequence[str]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for k in keys:
        m = _BLOCK_KEY.match(k)
        if m:
            stack = m.group(1).split(".")[0]
            counts[stack] = max(counts.get(stack, 0), int(m.group(2)) + 1)
    return counts


def _block_of(name_or_key: str) -> Tuple[Optional[str], Optional[int]]:
    m = _BLOCK_KEY.match(name_or_key)
    if not m:
        return None, None
    return m.group(1).split(".")[0], int(m.group(2))


def _structural_group(key: str, granularity: str) -> Optional[Tuple[str, str]]:
    """(group name, kind) of a state-dict key at a structural granularity, or None."""
    parts = key.split(".")
    top = parts[0]
    if top in _STACKS and len(parts) >= 3:
        stack_prefix = _STACK_PREFIX[top]
        child = parts[1]
        if child == _STACKS[top] and len(parts) >= 4 and parts[2].isdigit():
            if granularity == "frontend":
                return None
            block = f"{top}.{child}.{parts[2]}"
            if granularity == "block":
                return block, f"{stack_prefix}_block"
            sub = parts[3]
            if sub.startswith("norm"):
                sub = "norms"
            elif _MERGE_WEIGHTS.match(sub):
                sub = "merge_weights"
            return f"{block}.{sub}", f"{stack_prefix}_{SUBMODULE_KINDS.get(sub, sub)}"
        if granularity == "frontend" and child != "embed":
            return None
        return f"{top}.{child}", f"{stack_prefix}_{child}"
    if top in _STACKS:  # a parameter owned directly by the encoder/decoder
        if granularity == "frontend":
            return None
        return key, f"{_STACK_PREFIX[top]}_{parts[-1]}"
    if granularity == "frontend" and top not in _INPUT_MODULES:
        return None
    return top, top


def _order_key(group: LayerGroup, first_seen: int) -> Tuple:
    """Forward order: input side, encoder (embed, blocks, rest), ctc, decoder, others."""
    name = group.name
    top = name.split(".")[0]
    if top in _INPUT_MODULES:
        return (0, _INPUT_MODULES.index(top), 0, first_seen)
    if top in _STACKS:
        section = 1 if top == "encoder" else 4
        child = name.split(".")[1] if "." in name else ""
        if child == "embed":
            return (section, 0, 0, 0, first_seen)
        if group.block is not None:
            tail = name.split(".")[3] if name.count(".") >= 3 else ""
            if tail == "norms":
                sub_rank = len(_SUBMODULE_ORDER) + 1
            elif tail in _SUBMODULE_ORDER:
                sub_rank = _SUBMODULE_ORDER.index(tail)
            else:
                sub_rank = len(_SUBMODULE_ORDER)
            return (section, 1, group.block, sub_rank, first_seen)
        rank = {"after_norm": 0, "output_layer": 1}.get(child, 2)
        return (section, 2, rank, 0, first_seen)
    if top == "ctc":
        return (3, 0, 0, first_seen)
    return (5, 0, 0, first_seen)


def _forward_rank(keys: Sequence[str], num_blocks: Dict[str, int]) -> Dict[str, Tuple]:
    """Sort key of every state-dict key: forward order of its submodule, then state-dict order."""
    rank = {}
    for i, key in enumerate(keys):
        name, _ = _structural_group(key, "submodule")
        stack, block = _block_of(key)
        pseudo = LayerGroup(name=name, keys=(key,), param_keys=(), kind="", block=block)
        rank[key] = (_order_key(pseudo, 0), i)
    return rank


def _make_groups(
    members: Dict[str, List[str]],
    kinds: Dict[str, str],
    params: set,
    numel: Dict[str, int],
    num_blocks: Dict[str, int],
) -> List[LayerGroup]:
    groups = []
    for name, keys in members.items():
        stack, block = _block_of(keys[0])
        if block is not None and any(_block_of(k) != (stack, block) for k in keys):
            stack, block = None, None  # a pattern group spanning several blocks
        if stack is None and name.split(".")[0] in _STACKS and all(
            k.split(".")[0] == name.split(".")[0] for k in keys
        ):
            stack = name.split(".")[0]
        depth = block / num_blocks[stack] if block is not None else None
        pkeys = tuple(k for k in keys if k in params)
        groups.append(
            LayerGroup(
                name=name,
                keys=tuple(keys),
                param_keys=pkeys,
                kind=kinds[name],
                stack=stack,
                block=block,
                depth=depth,
                numel=sum(numel[k] for k in pkeys),
            )
        )
    return groups


def build_layer_map(
    model_or_state_dict: Union[torch.nn.Module, Mapping[str, object]],
    granularity: str = "block",
    pattern: Union[str, Sequence[str], None] = None,
) -> LayerMap:
    """Group a model's state-dict entries into layers at a granularity.

    Works from a model or from a state dict's key names alone (then parameters and buffers are
    told apart by name: ``running_mean``, ``running_var``, ``num_batches_tracked``, ``melmat``,
    ``mean``/``std``/``count`` are buffers).

    Pattern groups (granularity ``pattern``, or any granularity when `pattern` is given): each
    regular expression is matched at the start of every state-dict key (``re.match``).

    * Without capturing parentheses, everything a pattern matches is **one** group, named by
      the matched text when that is the same for every key (``encoder\\.encoders\\.3\\.`` ->
      ``encoder.encoders.3``), else by the pattern itself.
    * With capturing parentheses, keys are split by the captured values: one group per
      distinct capture, named by the matched text (trailing dots stripped) of its first key.
      ``encoder\\.encoders\\.(\\d+)\\.self_attn`` gives ``encoder.encoders.0.self_attn``,
      ``encoder.encoders.1.self_attn``, ... Use ``(?:...)`` for grouping without splitting.

    A key matched by several patterns belongs to the first. Groups are ordered by their first
    key in forward order.

    Args:
        model_or_state_dict: An ESPnet model (``ESPnetASRModel``) or its state dict.
        granularity: ``block``, ``submodule``, ``frontend`` or ``pattern``.
        pattern: A regular expression or a list of them (required for ``pattern``; giving it
            with another granularity means ``pattern``).

    Returns:
        The layer map.

    Raises:
        LayerMapError: Unknown granularity, a missing/invalid pattern, a pattern that matches
            no key, or a model without any group at that granularity.
    """
    if granularity not in GRANULARITIES:
        raise LayerMapError(
            f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}"
        )
    keys, params, numel = _state_info(model_or_state_dict)
    num_blocks = _count_blocks(keys)
    if pattern is not None or granularity == "pattern":
        return _pattern_map(keys, params, numel, num_blocks, pattern)

    members: Dict[str, List[str]] = {}
    kinds: Dict[str, str] = {}
    first_seen: Dict[str, int] = {}
    unassigned = []
    for i, key in enumerate(keys):
        found = _structural_group(key, granularity)
        if found is None:
            unassigned.append(key)
            continue
        name, kind = found
        members.setdefault(name, []).append(key)
        kinds[name] = kind
        first_seen.setdefault(name, i)
    # Modules without any parameter (fixed buffers only) are no layer.
    for name in [n for n, ks in members.items() if not any(k in params for k in ks)]:
        unassigned.extend(members.pop(name))
    groups = _make_groups(members, kinds, params, numel, num_blocks)
    if not groups:
        where = "encoder.embed/decoder.embed/frontend" if granularity == "frontend" else "encoder/decoder/ctc"
        raise LayerMapError(f"the model has no {granularity!r} groups (no parameters under {where})")
    groups.sort(key=lambda g: _order_key(g, first_seen[g.name]))
    order = {k: i for i, k in enumerate(keys)}
    return LayerMap(
        granularity=granularity,
        groups=tuple(groups),
        num_blocks=num_blocks,
        unassigned=tuple(sorted(unassigned, key=order.__getitem__)),
    )


def _pattern_map(keys, params, numel, num_blocks, pattern) -> LayerMap:
    if pattern is None or (not isinstance(pattern, str) and len(pattern) == 0):
        raise LayerMapError("granularity 'pattern' needs at least one regular expression (pattern=...)")
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    compiled = []
    for p in patterns:
        try:
            compiled.append(re.compile(p))
        except re.error as e:
            raise LayerMapError(f"invalid layer pattern '{p}': {e}") from None

    members: Dict[str, List[str]] = {}
    identity_name: Dict[Tuple, str] = {}
    matched_texts: Dict[str, set] = {}
    taken = set()
    for p, rx in zip(patterns, compiled):
        hits = 0
        for key in keys:
            m = rx.match(key)
            if not m:
                continue
            hits += 1
            if key in taken:
                continue
            taken.add(key)
            text = m.group(0).rstrip(".")
            if rx.groups:
                ident = (p,) + m.groups()
                name = identity_name.setdefault(ident, text or p)
            else:
                name = p
                matched_texts.setdefault(p, set()).add(text)
            members.setdefault(name, []).append(key)
        if hits == 0:
            example = next((k for k in keys if k.startswith("encoder.")), keys[0] if keys else "")
            raise LayerMapError(
                f"layer pattern '{p}' matches no state-dict key; patterns are matched at the "
                f"start of keys such as '{example}' (e.g. 'encoder\\.encoders\\.(\\d+)\\.' "
                "makes one group per encoder block)"
            )
    # Rename single-prefix groups of capture-free patterns by their matched text.
    renamed: Dict[str, List[str]] = {}
    for name, ks in members.items():
        texts = matched_texts.get(name)
        if texts is not None and len(texts) == 1 and next(iter(texts)):
            new = next(iter(texts))
            if new not in members and new not in renamed:
                name = new
        renamed[name] = ks
    groups = _make_groups(renamed, {n: "pattern" for n in renamed}, params, numel, num_blocks)
    rank = _forward_rank(keys, num_blocks)
    groups.sort(key=lambda g: rank[g.keys[0]])
    return LayerMap(
        granularity="pattern",
        groups=tuple(groups),
        num_blocks=num_blocks,
        unassigned=tuple(k for k in keys if k not in taken),
        patterns=tuple(patterns),
    )
