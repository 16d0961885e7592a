"""Layer resets: re-initialization to a checkpoint, re-randomization, and swapping them in.

Definitions (Zhang, Bengio, Singer, "Are All Layers Created Equal?"):

* **Re-initialization** of group d to checkpoint tau replaces the group's entries of the trained
  state by their values in checkpoint tau (tau = 0: the run's initial weights).
* **Re-randomization** replaces them by a fresh sample from the initialization distribution.

A fresh sample is taken the way ESPnet initializes a model: the whole model is built again from
its training config (``ASRTask.build_model``: each module's constructor initialization, then the
config's ``init:`` scheme such as ``xavier_uniform`` if set) after seeding every generator with
the given seed, exactly as ESPnet's trainer does before it builds the model, then cast to the
training dtype and given the config's ``init_param`` weights as ESPnet's trainer does
(:func:`build_initial_model`). Rebuilding the
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
import logging
import random
from pathlib import Path
from typing import Callable, Dict, Iterator, Mapping, Optional, Union

import numpy as np
import torch

from espnet_ext.experiment.checkpoints import init_param_path, load_state_dict_file
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
    # ESPnet's own seeding (Python, NumPy, torch), as its trainer does right before build_model.
    from espnet2.torch_utils.set_all_random_seed import set_all_random_seed

    set_all_random_seed(seed)


def build_initial_model(train_args: argparse.Namespace, task=None,
                        apply_init_param: bool = True) -> torch.nn.Module:
    """The model exactly as ESPnet's trainer has it before the first update (CPU).

    The steps of ``AbsTask.main_worker`` after ``set_all_random_seed(seed)`` (the caller seeds):
    ``build_model``, the cast to ``train_dtype``, adapters (``use_adapter``), then every
    ``init_param`` through ESPnet's own ``load_pretrained_model``. Nothing else between them
    draws random numbers, so under the run's seed this reproduces its checkpoint 0 exactly.

    Args:
        train_args: The training config (``config.yaml`` contents) as a Namespace; paths in it
            must resolve from the current directory.
        task: ESPnet task class (default ``espnet2.tasks.asr.ASRTask``).
        apply_init_param: Load the ``init_param`` files (False: the architecture's own
            initialization everywhere).

    Raises:
        ValueError: An ``init_param`` file is missing or holds more than weights (it is opened
            with ``torch.load(weights_only=True)`` before ESPnet unpickles it).
    """
    if task is None:
        from espnet_ext.asr.registration import register_encoders

        register_encoders()  # before ESPnet builds a config naming espnet_ext's encoders
        from espnet2.tasks.asr import ASRTask as task  # noqa: N813
    model = task.build_model(train_args)
    model = model.to(dtype=getattr(torch, getattr(train_args, "train_dtype", None) or "float32"))
    if getattr(train_args, "use_adapter", False):
        from espnet2.layers.create_adapter import create_adapter

        create_adapter(model, train_args.adapter, train_args.adapter_conf)
    if apply_init_param:
        from espnet2.torch_utils.load_pretrained_model import load_pretrained_model

        for spec in getattr(train_args, "init_param", None) or []:
            # ESPnet unpickles the file without restrictions: check that it is weights only first.
            load_state_dict_file(init_param_path(spec), what="init_param file")
            load_pretrained_model(init_param=spec, model=model,
                                  ignore_init_mismatch=bool(getattr(train_args, "ignore_init_mismatch", False)),
                                  map_location="cpu")
    return model


class InitialWeightSampler:
    """Fresh samples of a model's initial weights: the model built anew under a seed.

    Args:
        build_model: Builds the (CPU) model from scratch, e.g.
            ``lambda: build_initial_model(train_args)``; called after seeding.

    The random generators' states (Python, NumPy, torch) are restored after each build, so
    drawing a sample does not change any other random stream of the process. Samples are cached
    per seed (one model's worth of CPU memory per seed).
    """

    def __init__(self, build_model: Callable[[], torch.nn.Module]):
        self._build_model = build_model
        self._cache: Dict[int, Dict[str, torch.Tensor]] = {}

    @classmethod
    def from_train_args(cls, train_args: Union[argparse.Namespace, dict], task=None,
                        apply_init_param: Optional[bool] = None) -> "InitialWeightSampler":
        """Sampler for the model of an ESPnet training config (``config.yaml`` contents).

        Built as ESPnet's trainer builds it (:func:`build_initial_model`), so the sample under
        the training seed equals checkpoint 0, and groups loaded from ``init_param`` files come
        back to those pre-trained values (their initialization in this run).

        Args:
            train_args: The training config as a Namespace or dict.
            task: ESPnet task class (default ``espnet2.tasks.asr.ASRTask``).
            apply_init_param: Load the config's ``init_param`` files. None: load them when all
                exist; otherwise sample the architecture's own initialization for those parts
                too (logged: then no seed reproduces checkpoint 0).
        """
        args = argparse.Namespace(**train_args) if isinstance(train_args, dict) else train_args
        if apply_init_param is None:
            missing = [init_param_path(s) for s in (getattr(args, "init_param", None) or [])
                       if not Path(init_param_path(s)).is_file()]
            apply_init_param = not missing
            if missing:
                logging.warning(
                    f"init_param file(s) {', '.join(missing)} not found from {Path.cwd()}: fresh "
                    "samples use the architecture's own initialization for those parts too, so "
                    "no seed reproduces checkpoint 0")
        return cls(lambda: build_initial_model(args, task, apply_init_param))

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
