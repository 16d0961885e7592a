"""How far each layer group's weights moved in training, from a run's kept checkpoints.

theta_0, the initial weights, is a run's checkpoint 0: saved by ``python -m
espnet_ext.bin.asr_train`` as ``checkpoints/0epoch.pth``, or reconstructed from ``config.yaml``
(:class:`espnet_ext.experiment.experiment_dir.ExperimentDir`). theta_tau are the epochs that exist:
``checkpoints/{tau}epoch.pth`` (every epoch, with espnet_ext's training) or ESPnet's own
``{tau}epoch.pth`` (its n-best); theta_T
is the model whose layers the reset scan resets (its model file, e.g. ``valid.acc.ave.pth``;
by default the last epoch's checkpoint). For every group of a layer map
(:mod:`espnet_ext.layers.layer_map`), with ||.|| the Frobenius norm over all of the group's
*parameters* taken together (buffers such as batch-norm running statistics are left out: the
optimizer does not update them):

* ``abs_update`` = ||theta_T - theta_0||, ``rel_update`` = ||theta_T - theta_0|| / ||theta_0||;
* trajectory at every saved epoch tau: ``from_init`` = ||theta_tau - theta_0|| / ||theta_0||
  (how far the group has moved so far) and ``to_final`` = ||theta_T - theta_tau|| /
  ||theta_tau|| (the relative change that a re-initialization to tau undoes; at tau = 0 it
  equals ``rel_update``). Absolute distances are kept beside the relative ones.

Zero norms: a relative value whose denominator is <= ``eps`` (a group whose parameters all
start at zero, e.g. a group made only of biases) is undefined and reported as NaN; the absolute
value is still reported, and NaN values are left out of rank correlations.

Only state dicts are read (``torch.load(weights_only=True, map_location="cpu")``), one epoch
checkpoint at a time (a model is built once only to reconstruct a theta_0 that was not saved): at most three state dicts (theta_0, theta_T and the
current theta_tau) are in memory at once. Squared norms are kept per parameter tensor, so one
pass over the checkpoints serves several layer maps (e.g. ``block`` and ``submodule``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from espnet_ext.experiment.checkpoints import epoch_file, load_state_dict_file, saved_epochs
from espnet_ext.layers.layer_map import LayerMap, build_layer_map
from espnet_ext.layers.reset import check_compatible

#: Relative values with a denominator at or below this norm are undefined (NaN).
DEFAULT_EPS = 1e-8

TRAIN_HINT = ("the initial weights come from checkpoints/0epoch.pth (saved by training stage 4, "
              "python -m espnet_ext.bin.asr_train) or are reconstructed from config.yaml; epochs "
              "from checkpoints/<N>epoch.pth or ESPnet's own <N>epoch.pth (ESPnet keeps the "
              "n-best: --keep_nbest_models max_epoch keeps all)")


class WeightUpdateError(ValueError):
    """A run lacks the checkpoints the weight-update analysis needs."""


@dataclasses.dataclass
class GroupUpdate:
    """Weight movement of one layer group.

    Attributes:
        group, kind, stack, block, depth, numel: As in the layer map's group.
        init_norm: ||theta_0|| of the group's parameters.
        final_norm: ||theta_T||.
        abs_update: ||theta_T - theta_0||.
        rel_update: abs_update / init_norm (NaN when init_norm <= eps).
        from_init: Per saved epoch: ||theta_tau - theta_0|| / ||theta_0||.
        to_final: Per saved epoch: ||theta_T - theta_tau|| / ||theta_tau||.
        abs_from_init: Per saved epoch: ||theta_tau - theta_0||.
        abs_to_final: Per saved epoch: ||theta_T - theta_tau||.
    """

    group: str
    kind: str
    stack: Optional[str]
    block: Optional[int]
    depth: Optional[float]
    numel: int
    init_norm: float
    final_norm: float
    abs_update: float
    rel_update: float
    from_init: List[float] = dataclasses.field(default_factory=list)
    to_final: List[float] = dataclasses.field(default_factory=list)
    abs_from_init: List[float] = dataclasses.field(default_factory=list)
    abs_to_final: List[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RunUpdates:
    """Weight updates of every group of one run.

    Attributes:
        exp_dir: The experiment dir.
        final_file: The weights taken as theta_T.
        granularity: Of the layer map used.
        epochs: Saved epochs, the trajectory's x axis (0 first).
        num_blocks: Blocks per stack of the layer map (e.g. {"encoder": 4, "decoder": 2}).
        groups: One entry per layer group, in layer order.
        encoder_output_size: Encoder dimension (size of ``encoder.after_norm.weight``), or
            None when the model has no such entry.
        init_file: The weights taken as theta_0 (saved or reconstructed checkpoint 0).
    """

    exp_dir: Path
    final_file: Path
    granularity: str
    epochs: List[int]
    num_blocks: Dict[str, int]
    groups: List[GroupUpdate]
    encoder_output_size: Optional[int] = None
    init_file: Optional[Path] = None

    def by_name(self) -> Dict[str, GroupUpdate]:
        return {g.group: g for g in self.groups}

    def for_reset(self, mode: str, tau: Optional[int]) -> Dict[str, float]:
        """The update measure that matches a reset, per group.

        Re-initialization to tau undoes ||theta_T - theta_tau||, so its measure is
        ``to_final`` at tau (``rel_update`` for tau = 0); a re-randomization replaces the
        weights by a fresh initial sample, whose counterpart is ``rel_update``.

        Raises:
            WeightUpdateError: tau is not a saved epoch.
        """
        if mode != "reinit" or tau is None or tau == 0:
            return {g.group: g.rel_update for g in self.groups}
        if tau not in self.epochs:
            raise WeightUpdateError(
                f"{self.exp_dir}: epoch {tau} is not kept (kept: {', '.join(map(str, self.epochs))})"
            )
        i = self.epochs.index(tau)
        return {g.group: g.to_final[i] for g in self.groups}


def _ratio(num: float, den: float, eps: float) -> float:
    return num / den if den > eps else math.nan


def _sq_norm(x: torch.Tensor) -> float:
    """||x||^2, accumulated in float64."""
    return float(torch.linalg.vector_norm(x.detach(), dtype=torch.float64)) ** 2


class _KeyStats:
    """Squared norms per parameter key of one checkpoint tau: ||x - x0||^2, ||xT - x||^2, ||x||^2.

    Per key rather than per group, so that one pass over the checkpoints serves any number of
    layer maps (a group's squared norm is the sum over its keys).
    """

    def __init__(self, keys: Sequence[str], state: Mapping[str, torch.Tensor],
                 init: Mapping[str, torch.Tensor], final: Mapping[str, torch.Tensor]):
        self.from_init = {k: _sq_norm(state[k] - init[k]) for k in keys}
        self.to_final = {k: _sq_norm(final[k] - state[k]) for k in keys}
        self.norm = {k: _sq_norm(state[k]) for k in keys}

    @staticmethod
    def group(values: Mapping[str, float], keys: Sequence[str]) -> float:
        """Frobenius norm over a group's keys from per-key squared norms."""
        return math.sqrt(sum(values[k] for k in keys))


def _updates_of_map(layer_map: LayerMap, first: _KeyStats, trajectory: Sequence[_KeyStats],
                    final: _KeyStats, eps: float) -> List[GroupUpdate]:
    """GroupUpdates of one map from per-key stats of theta_0, of each epoch and of theta_T."""
    out = []
    for g in layer_map.groups:
        keys = g.param_keys
        n0 = _KeyStats.group(first.norm, keys)
        d = _KeyStats.group(final.from_init, keys)
        u = GroupUpdate(group=g.name, kind=g.kind, stack=g.stack, block=g.block, depth=g.depth,
                        numel=g.numel, init_norm=n0, final_norm=_KeyStats.group(final.norm, keys),
                        abs_update=d, rel_update=_ratio(d, n0, eps))
        for st in trajectory:
            d0, dT = _KeyStats.group(st.from_init, keys), _KeyStats.group(st.to_final, keys)
            u.abs_from_init.append(d0)
            u.abs_to_final.append(dT)
            u.from_init.append(_ratio(d0, n0, eps))
            u.to_final.append(_ratio(dT, _KeyStats.group(st.norm, keys), eps))
        out.append(u)
    return out


def _param_keys(layer_maps: Sequence[LayerMap]) -> List[str]:
    seen: Dict[str, None] = {}
    for m in layer_maps:
        for g in m.groups:
            for k in g.param_keys:
                seen.setdefault(k)
    return list(seen)


def updates_from_states(layer_map: LayerMap, init: Mapping[str, torch.Tensor],
                        final: Mapping[str, torch.Tensor],
                        epoch_states: Sequence[tuple] = (), eps: float = DEFAULT_EPS) -> List[GroupUpdate]:
    """Per-group updates from state dicts in memory (see the module doc).

    Args:
        layer_map: The groups (their parameter keys are used).
        init: theta_0.
        final: theta_T.
        epoch_states: (epoch, state dict) pairs for the trajectory, in epoch order (may be
            empty: no trajectory).
        eps: Denominators at or below eps make a relative value NaN.

    Returns:
        One :class:`GroupUpdate` per group, in layer order.
    """
    keys = _param_keys([layer_map])
    trajectory = [_KeyStats(keys, state, init, final) for _, state in epoch_states]
    return _updates_of_map(layer_map, _KeyStats(keys, init, init, final), trajectory,
                           _KeyStats(keys, final, init, final), eps)


def compute_weight_updates(
    exp_dir: Union[str, Path],
    granularity: str = "block",
    patterns: Optional[Sequence[str]] = None,
    final_file: Optional[Union[str, Path]] = None,
    eps: float = DEFAULT_EPS,
) -> RunUpdates:
    """Weight updates of a run's layer groups, streamed from its checkpoints.

    Args:
        exp_dir: Experiment dir with ``checkpoints/{0..E}epoch.pth``.
        granularity: Layer map granularity (as the scan's).
        patterns: Regular expressions for ``pattern`` granularity.
        final_file: theta_T (e.g. the scanned ``valid.acc.ave.pth``); default: the last
            kept epoch.
        eps: Zero-norm threshold for relative values.

    Returns:
        The run's :class:`RunUpdates`.

    Raises:
        WeightUpdateError: No kept checkpoints, or no checkpoint 0 (says which stage writes
            them), or the final file is missing.
        ArchitectureMismatchError: A checkpoint's parameters differ from theta_T's (names the key).
    """
    return compute_weight_updates_for_maps(exp_dir, [(granularity, patterns)], final_file, eps)[0]


def compute_weight_updates_for_maps(
    exp_dir: Union[str, Path],
    layer_specs: Sequence[Tuple[str, Optional[Sequence[str]]]],
    final_file: Optional[Union[str, Path]] = None,
    eps: float = DEFAULT_EPS,
) -> List[RunUpdates]:
    """:func:`compute_weight_updates` for several layer maps in one pass over the checkpoints.

    Args:
        exp_dir: Experiment dir.
        layer_specs: (granularity, patterns or None) per layer map.
        final_file: theta_T; default: the last kept epoch.
        eps: Zero-norm threshold for relative values.

    Returns:
        One :class:`RunUpdates` per spec, in order.

    Raises:
        As :func:`compute_weight_updates`.
    """
    from espnet_ext.experiment.experiment_dir import ExperimentDir, ExperimentError

    exp = ExperimentDir(exp_dir)
    exp_dir = exp.path
    epochs = [e for e in saved_epochs(exp_dir) if e > 0]
    if final_file is None and not epochs:
        raise WeightUpdateError(f"{exp_dir}: no epoch's weights are kept and no final model file "
                                f"was given; {TRAIN_HINT}")
    try:
        init_path, _ = exp.initial_weights_file()
    except ExperimentError as e:
        raise WeightUpdateError(f"{exp_dir}: no initial weights: {e}") from None
    final_path = Path(final_file) if final_file is not None else epoch_file(exp_dir, epochs[-1])
    if not final_path.is_file():
        raise WeightUpdateError(f"{exp_dir}: final weights {final_path} not found")
    final = load_state_dict_file(final_path)
    maps = [build_layer_map(final, g, list(p) if p else None) for g, p in layer_specs]
    keys = _param_keys(maps)
    init = load_state_dict_file(init_path)
    check_compatible(final, init, str(init_path), keys=keys)
    trajectory = [_KeyStats(keys, init, init, final)]
    for tau in epochs:  # one checkpoint in memory at a time, beside theta_0 and theta_T
        path = epoch_file(exp_dir, tau)
        state = load_state_dict_file(path)
        check_compatible(final, state, str(path), keys=keys)
        trajectory.append(_KeyStats(keys, state, init, final))
        del state
    last = _KeyStats(keys, final, init, final)
    after_norm = final.get("encoder.after_norm.weight")
    output_size = int(after_norm.shape[0]) if after_norm is not None else None
    return [RunUpdates(exp_dir=exp_dir, final_file=final_path, granularity=m.granularity, epochs=[0] + epochs,
                       init_file=init_path,
                       num_blocks=dict(m.num_blocks),
                       groups=_updates_of_map(m, trajectory[0], trajectory, last, eps),
                       encoder_output_size=output_size) for m in maps]
