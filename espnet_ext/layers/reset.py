"""Layer resets: re-initialization to a checkpoint, re-randomization, and swapping them in.

Definitions (Zhang, Bengio, Singer, "Are All Layers Created Equal?"):

* **Re-initialization** of group d to checkpoint tau replaces the group's entries of the trained
  state by their values in checkpoint tau (tau = 0: the run's initial weights).
* **Re-randomization** replaces them by a fresh sample from the initialization distribution.

A fresh sample is taken the way ESPnet initializes a model: the whole model is built again from
its training config (``ASRTask.build_model``: each module's constructor initialization, then the
config's ``init:`` scheme such as ``xavier_uniform`` if set) after seeding every generator with
the given seed, exactly as ESPnet's trainer does before it builds the model. Rebuilding the
model, rather than calling ``reset_parameters()`` on the group's modules, also covers parameters
that ESPnet initializes in constructors only (e.g. ``pos_bias_u``/``pos_bias_v`` of relative
self-attention) and the draw order of ``init:``; with the run's own training seed the sample
equals checkpoint 0.

Buffers are reset with their group (to checkpoint tau's values, or to their initial values for
a re-randomization), so e.g. BatchNorm statistics always match the weights they belong to.

All functions here are pure: they return new state dicts or tensor maps and never modify the
state they are given. :class:`WeightSwap` applies such a map to a live model temporarily and
restores the trained values bit for bit.
"""

from __future__ import annotations

import argparse
import contextlib
import random
from pathlib import Path
from typing import Callable, Dict, Iterator, Mapping, Optional, Union

import numpy as np
import torch

from espnet_ext.layers.layer_map import LayerGroup

StateDict = Mapping[str, torch.Tensor]


class ArchitectureMismatchError(ValueError):
    """A checkpoint does not have the keys or shapes of the model it is applied to."""


def check_compatible(
    reference: StateDict, other: StateDict, other_name: str = "checkpoint", keys=None
) -> None:
    """Check that `other` has every key of `reference` (or of `keys`) with the same shape.

    Args:
        reference: The model's state dict.
        other: The state dict to be used in its place (a checkpoint, a fresh sample).
        other_name: How to name `other` in the error (e.g. its file path).
        keys: Only check these keys (default: all keys of `reference`, and also that `other`
            has no extra keys).

    Raises:
        ArchitectureMismatchError: Names the first missing/unexpected key or shape mismatch.
    """
    check_keys = list(reference.keys()) if keys is None else list(keys)
    missing = [k for k in check_keys if k not in other]
    if missing:
        raise ArchitectureMismatchError(
            f"{other_name} does not match the model: key {missing[0]!r} is missing "
            f"({len(missing)} missing in all); was it written by a model with another config?"
        )
    if keys is None:
        extra = [k for k in other if k not in reference]
        if extra:
            raise ArchitectureMismatchError(
                f"{other_name} does not match the model: unexpected key {extra[0]!r} "
                f"({len(extra)} unexpected in all); was it written by a model with another config?"
            )
    for k in check_keys:
        a, b = reference[k], other[k]
        if tuple(a.shape) != tuple(b.shape):
            raise ArchitectureMismatchError(
                f"{other_name} does not match the model at key {k!r}: shape "
                f"{tuple(b.shape)} there, {tuple(a.shape)} in the model"
            )


def group_values(group: LayerGroup, source: StateDict, source_name: str = "checkpoint",
                 reference: Optional[StateDict] = None) -> Dict[str, torch.Tensor]:
    """The group's entries taken from `source` (a checkpoint or a fresh sample).

    Args:
        group: The layer group.
        source: State dict to take the values from.
        source_name: Name of `source` for error messages (e.g. its path).
        reference: The model's state dict, to check shapes against (optional).

    Returns:
        {key: tensor} for every key of the group (the tensors of `source`, not copies).

    Raises:
        ArchitectureMismatchError: A key of the group is missing in `source`, or has another
            shape than in `reference`.
    """
    if reference is not None:
        check_compatible(reference, source, source_name, keys=group.keys)
    else:
        missing = [k for k in group.keys if k not in source]
        if missing:
            raise ArchitectureMismatchError(
                f"{source_name} does not match the model: key {missing[0]!r} of group "
                f"{group.name!r} is missing"
            )
    return {k: source[k] for k in group.keys}


def reset_to_checkpoint(
    state: StateDict, group: LayerGroup, ckpt_state: StateDict, ckpt_name: str = "checkpoint"
) -> Dict[str, torch.Tensor]:
    """Re-initialization: `state` with the group's entries (parameters and buffers) from a checkpoint.

    Args:
        state: The trained model's state dict (not modified).
        group: The layer group to reset.
        ckpt_state: State dict of checkpoint tau (e.g. ``checkpoints/0epoch.pth``).
        ckpt_name: Name of the checkpoint for error messages.

    Returns:
        A new state dict (entries outside the group are the same tensor objects as in `state`).

    Raises:
        ArchitectureMismatchError: The checkpoint lacks a key of the group or has another shape.
    """
    out = dict(state)
    out.update(group_values(group, ckpt_state, ckpt_name, reference=state))
    return out


def _seed_everything(seed: int) -> None:
    # What espnet2.torch_utils.set_all_random_seed does before ESPnet builds a model.
    random.seed(seed)
    np.random.seed(seed)
    torch.random.manual_seed(seed)


class InitialWeightSampler:
    """Fresh samples of a model's initial weights: the model built anew under a seed.

    Args:
        build_model: Builds the (CPU) model from scratch, e.g.
            ``lambda: ASRTask.build_model(train_args)``; called after seeding.

    The random generators' states (Python, NumPy, torch) are restored after each build, so
    drawing a sample does not change any other random stream of the process. Samples are cached
    per seed (one model's worth of CPU memory per seed).
    """

    def __init__(self, build_model: Callable[[], torch.nn.Module]):
        self._build_model = build_model
        self._cache: Dict[int, Dict[str, torch.Tensor]] = {}

    @classmethod
    def from_train_args(cls, train_args: Union[argparse.Namespace, dict],
                        task=None) -> "InitialWeightSampler":
        """Sampler for the model of an ESPnet training config (``config.yaml`` contents).

        Args:
            train_args: The training config as a Namespace or dict.
            task: ESPnet task class (default ``espnet2.tasks.asr.ASRTask``).
        """
        if task is None:
            from espnet2.tasks.asr import ASRTask as task  # noqa: N813
        args = argparse.Namespace(**train_args) if isinstance(train_args, dict) else train_args
        return cls(lambda: task.build_model(args))

    def sample(self, seed: int) -> Dict[str, torch.Tensor]:
        """State dict of a freshly initialized model under `seed` (CPU tensors, cached)."""
        seed = int(seed)
        if seed not in self._cache:
            py_state, np_state = random.getstate(), np.random.get_state()
            torch_state = torch.random.get_rng_state()
            cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
            try:
                _seed_everything(seed)
                model = self._build_model()
                self._cache[seed] = {
                    k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()
                }
                del model
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
                torch.random.set_rng_state(torch_state)
                if cuda_states is not None:
                    torch.cuda.set_rng_state_all(cuda_states)
        return self._cache[seed]


def rerandomize(
    state: StateDict, group: LayerGroup, seed: int, sampler: InitialWeightSampler
) -> Dict[str, torch.Tensor]:
    """Re-randomization: `state` with the group's entries from a fresh initialization sample.

    Args:
        state: The trained model's state dict (not modified).
        group: The layer group to re-randomize.
        seed: Seed of the fresh sample; the same seed gives the same tensors. A run's own
            training seed reproduces its checkpoint 0.
        sampler: Builds the fresh model (see :class:`InitialWeightSampler`).

    Returns:
        A new state dict.

    Raises:
        ArchitectureMismatchError: The freshly built model lacks a key of the group or has
            another shape (the config does not describe the model of `state`).
    """
    out = dict(state)
    out.update(group_values(group, sampler.sample(seed), f"a model freshly built with seed {seed}",
                            reference=state))
    return out


def load_state_dict_file(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Load a state dict written by ESPnet (``*.pth``) onto the CPU.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # ESPnet's checkpoint.pth (model + optimizer states)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a model state dict")
    return obj


class WeightSwap:
    """Temporarily replace some entries of a live model's state, restoring the trained values.

    The trained values of every entry are kept on the side (one copy of the state on the
    model's device) when the swap is created; :meth:`swapped` copies a variant's tensors into
    the model's own parameter/buffer storage and copies the kept values back afterwards, so the
    model is bit-identical to before, and nothing is reloaded from disk.

    Args:
        model: The model; its state at construction is what is restored.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        # state_dict() tensors share storage with the parameters and buffers.
        self._live = model.state_dict()
        self.trained: Dict[str, torch.Tensor] = {
            k: v.detach().clone() for k, v in self._live.items()
        }

    @contextlib.contextmanager
    def swapped(self, values: Mapping[str, torch.Tensor]) -> Iterator[None]:
        """Context in which the model holds `values` ({key: tensor}) instead of its trained ones.

        Raises:
            ArchitectureMismatchError: A key is not in the model or has another shape.
        """
        for k, v in values.items():
            if k not in self._live:
                raise ArchitectureMismatchError(f"variant key {k!r} is not in the model")
            if tuple(v.shape) != tuple(self._live[k].shape):
                raise ArchitectureMismatchError(
                    f"variant key {k!r} has shape {tuple(v.shape)}, the model "
                    f"{tuple(self._live[k].shape)}"
                )
        try:
            with torch.no_grad():
                for k, v in values.items():
                    self._live[k].copy_(v)
            yield
        finally:
            with torch.no_grad():
                for k in values:
                    self._live[k].copy_(self.trained[k])
