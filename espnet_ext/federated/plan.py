"""Dropout plans: a federated-dropout rate per layer group, and plans compared at equal cost.

A plan gives a dropout rate to layer groups named as in the layer map
(:mod:`espnet_ext.layers.layer_map`): a block (``encoder.encoders.3``) or a sub-module
(``encoder.encoders.3.self_attn``). A block's rate applies to every droppable module in it
(feed-forward units, heads, conv channels, cgMLP channels, merge channels); a sub-module's rate
overrides its block's. Groups
without droppable units (embeddings, norms, CTC, output layer) are always sent whole.

Plans:

* ``none``: no dropout (plain FedAvg), the reference.
* ``uniform``: the same rate for every droppable module of the encoder and decoder blocks
  (Caldas et al.).
* ``targeted``: from a layer-reset scan (``scan.tsv``): groups labelled **ambient** get rate r,
  **critical** ones are kept whole (``label`` mode); or every droppable group gets
  ``r x (1 - d / d_max)`` with ``d`` its CER increase after reset (``scaled`` mode: the least
  important groups get r, the most important none).
* ``frozen``: no dropout; clients receive the full model, train only the groups that are not
  frozen and return only those (:func:`matched_frozen_plan`: the scan's ambient groups are
  frozen, least harmful first, until the client cost is at most the targeted plan's). The
  baseline that asks whether dropping ambient units beats simply not training them.
* :func:`matched_uniform_plan`: the uniform plan whose client cost (trained parameters or bytes
  moved) is closest to a given plan's, so that targeted and uniform dropout are compared at
  equal client cost (Cheng et al. 2022).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from espnet_ext.federated.cost import submodel_numels
from espnet_ext.federated.units import (
    GROUP_NORM_POLICIES,
    UNIT_KINDS,
    DroppableModule,
    find_droppable_modules,
)

PLAN_KINDS = ("none", "uniform", "targeted", "frozen")
# Keys of a plan JSON (DropoutPlan.to_dict); any other key is refused.
PLAN_KEYS = ("name", "group_rates", "unit_kinds", "group_norm_policy", "note", "frozen_groups")
TARGET_MODES = ("label", "scaled")
COST_METRICS = ("params", "bytes")
# The DropoutPlan.cost field each metric matches on. Upload bytes: without frozen groups a client
# returns what it received (up = down); a frozen plan saves upload only.
_COST_FIELDS = {"params": "params_trained", "bytes": "bytes_up"}
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class PlanError(ValueError):
    """A dropout plan is invalid for the model (bad rate, unknown group, nothing to drop...)."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What plans and costs need to know about a model, computed once from it.

    Attributes:
        shapes: Shape of every state-dict entry.
        element_sizes: Bytes per element of every entry.
        param_keys: Entries that are parameters (trained).
        sent_keys: Entries exchanged with clients: parameters and batch-norm statistics.
            Fixed buffers (mel filterbank, global-MVN statistics) are rebuilt by the client from
            the same config and never sent.
        modules: Droppable modules.
        group_names: Layer-group names at block and sub-module granularity.
        group_keys: Layer-group name -> its state-dict keys (parameters and buffers); a block's
            ``<block>.norms`` group holds keys that do not share its name as a prefix.
    """

    shapes: Mapping[str, Tuple[int, ...]]
    element_sizes: Mapping[str, int]
    param_keys: Tuple[str, ...]
    sent_keys: Tuple[str, ...]
    modules: Tuple[DroppableModule, ...]
    group_names: Tuple[str, ...]
    group_keys: Mapping[str, Tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> "ModelInfo":
        from espnet_ext.layers.layer_map import build_layer_map

        state = model.state_dict()
        params = {n for n, _ in model.named_parameters()}
        sent = tuple(k for k in state if k in params or k.rsplit(".", 1)[-1] in _BN_BUFFERS)
        group_keys: Dict[str, Tuple[str, ...]] = {}
        for granularity in ("block", "submodule"):
            for g in build_layer_map(model, granularity):
                group_keys.setdefault(g.name, tuple(g.keys))
        names = list(group_keys)
        return cls(
            shapes={k: tuple(v.shape) for k, v in state.items()},
            element_sizes={k: v.element_size() for k, v in state.items()},
            param_keys=tuple(k for k in state if k in params),
            sent_keys=sent,
            modules=tuple(find_droppable_modules(model)),
            group_names=tuple(names),
            group_keys=group_keys,
        )

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(self.shapes[k])) for k in self.param_keys)

    def droppable_groups(self, unit_kinds: Sequence[str] = UNIT_KINDS) -> List[str]:
        """Group names that contain at least one droppable module of the given kinds."""
        return [g for g in self.group_names
                if any(_in_group(m.name, g) for m in self.modules if m.kind in unit_kinds)]


def _in_group(module_name: str, group: str) -> bool:
    return module_name == group or module_name.startswith(group + ".")


@dataclasses.dataclass(frozen=True)
class DropoutPlan:
    """Per-group federated-dropout rates.

    Attributes:
        name: ``none``, ``uniform``, ``targeted`` or a user name.
        group_rates: Layer group name -> dropout rate in [0, 1).
        unit_kinds: Which units may be dropped (``ff``, ``heads``, ``conv``).
        group_norm_policy: ``auto``, ``whole_groups`` or ``per_group``.
        note: How the plan was made (for the results table).
        frozen_groups: Layer groups clients do not train: their parameters are sent but not
            updated, and their tensors are not returned (the global values stay).
    """

    name: str
    group_rates: Mapping[str, float]
    unit_kinds: Tuple[str, ...] = UNIT_KINDS
    group_norm_policy: str = "auto"
    note: str = ""
    frozen_groups: Tuple[str, ...] = ()

    def frozen_keys(self, info: ModelInfo) -> FrozenSet[str]:
        """State-dict keys of the frozen groups (sent to clients, not trained, not returned)."""
        return frozenset(k for g in self.frozen_groups for k in info.group_keys.get(g, ()))

    def returned_keys(self, info: ModelInfo, keys: Sequence[str]) -> Tuple[str, ...]:
        """The entries of `keys` a client trains and returns: those outside the frozen groups."""
        frozen = self.frozen_keys(info)
        return tuple(k for k in keys if k not in frozen)

    def module_rates(self, modules: Sequence[DroppableModule]) -> Dict[str, float]:
        """Rate of every droppable module: the rate of the most specific group holding it."""
        out = {}
        for m in modules:
            if m.kind not in self.unit_kinds:
                continue
            best = None
            for g in self.group_rates:
                if _in_group(m.name, g) and (best is None or len(g) > len(best)):
                    best = g
            if best is not None and self.group_rates[best] > 0:
                out[m.name] = float(self.group_rates[best])
        return out

    def validate(self, info: ModelInfo) -> None:
        """Check the plan against a model, raising one clear error.

        Raises:
            PlanError: A rate outside [0, 1), an unknown group name, a group with a positive
                rate but no droppable units, an unknown unit kind or group-norm policy, an
                unknown frozen group, or frozen groups that leave no parameter to train.
        """
        bad_kinds = [k for k in self.unit_kinds if k not in UNIT_KINDS]
        if bad_kinds:
            raise PlanError(f"plan {self.name!r}: unknown unit kind {bad_kinds[0]!r}; "
                            f"choose from {', '.join(UNIT_KINDS)}")
        if self.group_norm_policy not in GROUP_NORM_POLICIES:
            raise PlanError(f"plan {self.name!r}: group_norm_policy must be one of "
                            f"{', '.join(GROUP_NORM_POLICIES)}, got {self.group_norm_policy!r}")
        known = set(info.group_names)
        droppable = set(info.droppable_groups(self.unit_kinds))
        for g, r in self.group_rates.items():
            if not isinstance(r, (int, float)) or not 0.0 <= float(r) < 1.0:
                raise PlanError(f"plan {self.name!r}: dropout rate of group {g!r} is {r}; "
                                "rates must be in [0, 1)")
            if g not in known:
                examples = ", ".join(list(info.droppable_groups())[:4])
                raise PlanError(f"plan {self.name!r}: unknown layer group {g!r}; groups are "
                                f"blocks or sub-modules such as {examples}")
            if r > 0 and g not in droppable:
                raise PlanError(
                    f"plan {self.name!r}: group {g!r} has no droppable units of kinds "
                    f"{', '.join(self.unit_kinds)} (feed-forward units, attention heads, conv "
                    "channels, cgMLP channels, merge channels); give it rate 0 or leave it out")
        for g in self.frozen_groups:
            if g not in known:
                raise PlanError(f"plan {self.name!r}: unknown frozen layer group {g!r}; groups are "
                                "blocks or sub-modules such as encoder.encoders.0")
        if self.frozen_groups and not self.returned_keys(info, info.param_keys):
            raise PlanError(f"plan {self.name!r}: the frozen groups cover every parameter; "
                            "clients would have nothing to train")

    def cost(self, info: ModelInfo) -> Dict[str, float]:
        """Per-client cost of this plan: trained parameters and bytes each way.

        Returns:
            ``params_trained`` (parameter elements outside the frozen groups),
            ``params_fraction`` (of the full model), ``bytes_down`` (every sent entry of the
            sub-model) and ``bytes_up`` (the entries outside the frozen groups; without frozen
            groups equal to ``bytes_down``: the client returns what it received, trained).
        """
        numels = submodel_numels(info.shapes, info.modules, self.module_rates(info.modules),
                                 self.group_norm_policy)
        params = sum(numels[k] for k in self.returned_keys(info, info.param_keys))
        down = sum(numels[k] * info.element_sizes[k] for k in info.sent_keys)
        up = sum(numels[k] * info.element_sizes[k] for k in self.returned_keys(info, info.sent_keys))
        return {"params_trained": params, "params_fraction": params / info.num_params,
                "bytes_down": down, "bytes_up": up}

    def to_dict(self) -> dict:
        d = {"name": self.name, "group_rates": dict(self.group_rates),
             "unit_kinds": list(self.unit_kinds), "group_norm_policy": self.group_norm_policy,
             "note": self.note}
        if self.frozen_groups:  # plans without frozen groups keep their JSON (and run identity)
            d["frozen_groups"] = list(self.frozen_groups)
        return d

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "plan") -> "DropoutPlan":
        """A plan from its :meth:`to_dict` form.

        ``name`` and ``group_rates`` are required (``{}`` is an explicit no-dropout plan); the
        other keys default as in the constructor.

        Args:
            d: The dict (e.g. parsed plan JSON).
            source: Where `d` came from, named in errors (e.g. the JSON file).

        Raises:
            PlanError: Not a dict, an unknown key (a misspelt key would otherwise silently mean
                "no dropout"), a missing required key, or a value of the wrong type.
        """
        allowed = ", ".join(PLAN_KEYS)
        if not isinstance(d, Mapping):
            raise PlanError(f"{source}: a dropout plan is a JSON object with keys {allowed}, "
                            f"got {type(d).__name__}")
        unknown = [k for k in d if k not in PLAN_KEYS]
        if unknown:
            raise PlanError(f"{source}: unknown key {unknown[0]!r} in the dropout plan; allowed keys: "
                            f"{allowed} (fix the key's spelling)")
        missing = [k for k in ("name", "group_rates") if k not in d]
        if missing:
            raise PlanError(f"{source}: the dropout plan has no {missing[0]!r}; a plan needs 'name' "
                            "and 'group_rates' ({} for no dropout)")
        types = {"name": str, "group_rates": Mapping, "unit_kinds": (list, tuple),
                 "group_norm_policy": str, "note": str, "frozen_groups": (list, tuple)}
        for key, kind in types.items():
            if key in d and not isinstance(d[key], kind):
                wanted = {"group_rates": "an object {group: rate}", "unit_kinds": "a list of strings",
                          "frozen_groups": "a list of layer group names"}
                raise PlanError(f"{source}: {key!r} must be {wanted.get(key, 'a string')}, "
                                f"got {json.dumps(d[key])}")
        return cls(name=d["name"], group_rates=dict(d["group_rates"]),
                   unit_kinds=tuple(d.get("unit_kinds", UNIT_KINDS)),
                   group_norm_policy=d.get("group_norm_policy", "auto"), note=d.get("note", ""),
                   frozen_groups=tuple(d.get("frozen_groups", ())))

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> "DropoutPlan":
        """A plan from a JSON file written by :meth:`write` (or by hand).

        Raises:
            PlanError: A missing or unreadable file, invalid JSON, or a dict that is not a plan
                (:meth:`from_dict`); the message names the file.
        """
        path = Path(path)
        if not path.is_file():
            raise PlanError(f"plan file {path} not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PlanError(f"{path}: not a dropout plan JSON ({e})") from None
        return cls.from_dict(data, source=str(path))


def no_dropout_plan() -> DropoutPlan:
    return DropoutPlan(name="none", group_rates={}, note="no dropout (FedAvg)")


def _check_rate(rate: float, what: str) -> None:
    if not 0.0 <= rate < 1.0:
        raise PlanError(f"{what}: dropout rate must be in [0, 1), got {rate}")


def uniform_plan(info: ModelInfo, rate: float, unit_kinds: Sequence[str] = UNIT_KINDS,
                 group_norm_policy: str = "auto", stacks: Sequence[str] = ("encoder", "decoder")) -> DropoutPlan:
    """The same rate for every droppable module in the blocks of the given stacks.

    Raises:
        PlanError: A rate outside [0, 1), or an unknown stack.
    """
    _check_rate(rate, "uniform plan")
    bad = [s for s in stacks if s not in ("encoder", "decoder")]
    if bad or not stacks:
        raise PlanError(f"uniform plan stacks must be encoder and/or decoder, got {list(stacks)}")
    blocks = [g for g in info.droppable_groups(unit_kinds)
              if g.split(".")[0] in stacks and g.count(".") == 2]
    return DropoutPlan(name="uniform", group_rates={g: float(rate) for g in blocks},
                       unit_kinds=tuple(unit_kinds), group_norm_policy=group_norm_policy,
                       note=f"rate {rate:g} on every {' and '.join(stacks)} block")


@dataclasses.dataclass(frozen=True)
class GroupImportance:
    """One group's reset result from a scan: its label and CER increase (points)."""

    group: str
    label: str
    delta_cer: float


def read_scan_importance(scan_tsv: Path, dataset: Optional[str] = None) -> Tuple[List[GroupImportance], str]:
    """Importance of each scanned group from a layer-reset scan's ``scan.tsv``.

    Uses the scan's reference reset (re-initialization to the smallest scanned tau, else the
    first re-randomization seed) on one dataset.

    Args:
        scan_tsv: The scan's ``scan.tsv``.
        dataset: Dataset whose rows to use (default: the first in the file).

    Returns:
        (importances in file order, description of the rows used).

    Raises:
        PlanError: Missing/empty file or unknown dataset.
    """
    from espnet_ext.scan.result import ScanResult, ScanResultError, variant_title

    try:
        scan = ScanResult.load(scan_tsv)
    except ScanResultError as e:
        raise PlanError(str(e)) from None
    if not scan.rows:
        raise PlanError(f"{scan.tsv_path} has no rows")
    dataset = dataset or scan.rows[0].dataset
    try:
        scan.check_dataset(dataset)
    except ScanResultError as e:
        raise PlanError(str(e)) from None
    mode, value = scan.reference_variant(dataset)
    chosen = scan.reference_rows(dataset)
    desc = f"{scan_tsv} ({dataset}, {mode} {variant_title(mode, value)})"
    return [GroupImportance(r.group, r.label, r.delta_cer) for r in chosen], desc


def _listing(names: Sequence[str], limit: int = 8) -> str:
    """Names joined by commas, the first `limit` of them and how many more."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def targeted_plan(info: ModelInfo, importance: Sequence[GroupImportance], rate: float,
                  mode: str = "label", unit_kinds: Sequence[str] = UNIT_KINDS,
                  group_norm_policy: str = "auto", source: str = "") -> DropoutPlan:
    """Dropout targeted by layer importance (see module doc).

    Args:
        info: The model.
        importance: Scan results per group (:func:`read_scan_importance`).
        rate: Rate for ambient groups (``label``) or the largest rate (``scaled``).
        mode: ``label`` or ``scaled``.
        unit_kinds: Unit kinds that may be dropped.
        group_norm_policy: As in the units module.
        source: Where the importance came from (kept in the plan's note).

    Ambient groups without droppable units of `unit_kinds` (a block's norms, the input layer,
    the CTC layer, E-Branchformer's depthwise fusion, whose channels are merge units of the
    block's ``merge_proj``) cannot be made smaller: they are sent whole, named in a warning and
    in the plan's note.

    Raises:
        PlanError: Bad rate or mode, scan groups unknown to the model (a scan of another
            architecture), no group labelled ambient (``label``), ambient groups none of which
            has droppable units (``label``), or no droppable group to drop.
    """
    _check_rate(rate, "targeted plan")
    if mode not in TARGET_MODES:
        raise PlanError(f"targeted plan mode must be one of {', '.join(TARGET_MODES)}, got {mode!r}")
    known = set(info.group_names)
    unknown = [i.group for i in importance if i.group not in known]
    if unknown:
        raise PlanError(f"scan group {unknown[0]!r} is not a layer group of this model; was the "
                        "scan made on the same architecture?")
    droppable = set(info.droppable_groups(unit_kinds))
    usable = [i for i in importance if i.group in droppable]
    if not usable:
        raise PlanError("the scan has no group with droppable units (scan blocks or sub-modules)")
    if mode == "label":
        ambient = [i.group for i in importance if i.label == "ambient"]
        rates = {g: float(rate) for g in ambient if g in droppable}
        whole = [g for g in ambient if g not in droppable]
        kinds = ", ".join(unit_kinds)
        if not ambient:
            raise PlanError(f"the scan labels no group ambient ({source}); nothing to drop in a "
                            "targeted plan: relax the ambient threshold or use the scaled mode")
        if not rates:
            raise PlanError(
                f"the scan labels {len(whole)} groups ambient ({source}), but none has droppable "
                f"units of kinds {kinds}: {_listing(whole)}; nothing to drop in a targeted plan: "
                "allow more unit kinds (--unit_kinds), scan at block granularity, or use the "
                "scaled mode")
        note = f"rate {rate:g} on {len(rates)} ambient groups, critical whole; {source}"
        if whole:
            logging.warning(
                f"targeted plan: {len(whole)} ambient groups have no droppable units of kinds "
                f"{kinds} and are sent whole: {_listing(whole)}")
            note += f"; ambient but sent whole (no droppable units): {_listing(whole)}"
    else:
        d = {i.group: max(float(i.delta_cer), 0.0) for i in usable}
        d_max = max(d.values())
        rates = {g: float(rate) * (1.0 - (v / d_max if d_max > 0 else 0.0)) for g, v in d.items()}
        rates = {g: r for g, r in rates.items() if r > 0}
        note = f"rate {rate:g} x (1 - dCER/max dCER); {source}"
    return DropoutPlan(name="targeted", group_rates=rates, unit_kinds=tuple(unit_kinds),
                       group_norm_policy=group_norm_policy, note=note)


def matched_uniform_plan(info: ModelInfo, reference: DropoutPlan, metric: str = "params",
                         step: float = 0.0025,
                         stacks: Sequence[str] = ("encoder", "decoder")) -> DropoutPlan:
    """The uniform plan whose per-client cost is closest to `reference`'s.

    Kept-unit counts are rounded, so cost is a step function of the rate: the rate grid
    0, step, 2 step, ... < 1 is searched and the closest cost wins (ties: the smaller rate).

    Args:
        info: The model.
        reference: The plan to match (usually the targeted one).
        metric: ``params`` (trained parameters) or ``bytes`` (bytes each client returns; for
            dropout plans the same as it receives).
        step: Rate grid resolution.
        stacks: Stacks whose blocks the uniform plan drops from (``encoder``, ``decoder``).

    Raises:
        PlanError: Unknown metric.
    """
    _check_metric(metric)
    field = _COST_FIELDS[metric]
    target = reference.cost(info)[field]
    best = None
    for r in np.arange(0.0, 1.0, step):
        plan = uniform_plan(info, float(r), reference.unit_kinds, reference.group_norm_policy, stacks)
        c = plan.cost(info)[field]
        if best is None or abs(c - target) < abs(best[1] - target):
            best = (plan, c, float(r))
    plan, c, r = best
    gap = 100.0 * (c - target) / target if target else 0.0
    return dataclasses.replace(
        plan, note=f"rate {r:.4g} on every {' and '.join(stacks)} block, matched to {reference.name} on {metric} "
                   f"({int(c)} vs {int(target)}, {gap:+.2f}%)")


def _check_metric(metric: str) -> None:
    if metric not in COST_METRICS:
        raise PlanError(f"cost metric must be one of {', '.join(COST_METRICS)}, got {metric!r}")


def least_harm_first(importance: Sequence[GroupImportance]) -> List[str]:
    """The groups labelled ambient, smallest CER increase after reset first (ties: scan order)."""
    ambient = [(i.delta_cer, n, i.group) for n, i in enumerate(importance) if i.label == "ambient"]
    # A reset that could not be scored (NaN) is treated as the most harmful.
    ambient.sort(key=lambda t: (np.isnan(t[0]), t[0] if not np.isnan(t[0]) else 0.0, t[1]))
    return [g for _, _, g in ambient]


def matched_frozen_plan(info: ModelInfo, importance: Sequence[GroupImportance], reference: DropoutPlan,
                        metric: str = "params", source: str = "") -> DropoutPlan:
    """The frozen plan at the reference plan's client cost: ambient groups frozen, least harm first.

    Clients receive the full model; frozen groups are not trained and not returned, which saves
    trained parameters and upload bytes (not download). Ambient groups are frozen in
    :func:`least_harm_first` order until the plan's cost in `metric` is at most the reference's
    per-client cost: the fewest frozen groups, i.e. the cost closest to and not above it. If
    freezing every ambient group still costs more, all are frozen and the note gives the gap.

    Args:
        info: The model.
        importance: Scan results per group (:func:`read_scan_importance`).
        reference: The plan to match (the targeted plan at the same rate).
        metric: ``params`` (trained parameters) or ``bytes`` (bytes each client returns).
        source: Where the importance came from (kept in the plan's note).

    Raises:
        PlanError: Unknown metric, scan groups unknown to the model, or no group labelled ambient.
    """
    _check_metric(metric)
    known = set(info.group_names)
    unknown = [i.group for i in importance if i.group not in known]
    if unknown:
        raise PlanError(f"scan group {unknown[0]!r} is not a layer group of this model; was the "
                        "scan made on the same architecture?")
    order = least_harm_first(importance)
    if not order:
        raise PlanError(f"the scan labels no group ambient ({source}); nothing to freeze in a frozen "
                        "plan: relax the ambient threshold")
    field = _COST_FIELDS[metric]
    target = reference.cost(info)[field]
    frozen: List[str] = []
    plan = DropoutPlan(name="frozen", group_rates={}, unit_kinds=reference.unit_kinds,
                       group_norm_policy=reference.group_norm_policy)
    cost = plan.cost(info)[field]
    for group in order:
        if cost <= target:
            break
        frozen.append(group)
        plan = dataclasses.replace(plan, frozen_groups=tuple(frozen))
        cost = plan.cost(info)[field]
    gap = 100.0 * (cost - target) / target if target else 0.0
    matched = (f"matched to {reference.name} on {metric} ({int(cost)} vs {int(target)}, {gap:+.2f}%)"
               if cost <= target else
               f"still above {reference.name} on {metric} with every ambient group frozen "
               f"({int(cost)} vs {int(target)}, {gap:+.2f}%)")
    if cost > target:
        logging.warning(f"frozen plan: {matched}")
    note = (f"{len(frozen)} of {len(order)} ambient groups frozen (least harm first), the rest trained "
            f"whole; {matched}; {source}")
    return dataclasses.replace(plan, note=note)
