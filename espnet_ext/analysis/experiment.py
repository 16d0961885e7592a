"""A trained experiment directory as the reset scan needs it: config, model, checkpoints.

An experiment dir (written by ``python -m espnet_ext.bin.asr_train``) has ``config.yaml``, the
model files (``valid.acc.ave.pth``, ``latest.pth``, ...) and ``checkpoints/{tau}epoch.pth`` with
tau = 0 the initial weights. Paths inside ``config.yaml`` (``bpemodel``, global-MVN statistics)
are relative to the recipe directory the training ran in, so tools run from there too.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
import yaml

from espnet_ext.layers.reset import check_compatible, load_state_dict_file

TRAIN_COMMAND = "python -m espnet_ext.bin.asr_train"


class ExperimentError(ValueError):
    """An experiment dir lacks something the scan needs (config, model file, checkpoint)."""


def read_train_config(exp_dir: Path) -> dict:
    """The training config (``<exp_dir>/config.yaml``) as a dict.

    Raises:
        ExperimentError: The file is missing or not a YAML mapping.
    """
    path = Path(exp_dir) / "config.yaml"
    if not path.is_file():
        raise ExperimentError(
            f"{path} not found: {exp_dir} is not a trained ESPnet experiment dir "
            f"(train it with stage 4 / {TRAIN_COMMAND})"
        )
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ExperimentError(f"{path} is not a YAML mapping")
    return config


def check_config_paths(config: dict, config_path: Path) -> None:
    """Fail early, with the key and the fix, when a file named in config.yaml cannot be found.

    Raises:
        ExperimentError: ``bpemodel`` (token_type bpe) or global-MVN ``stats_file`` is missing.
    """
    wanted = []
    if config.get("token_type") == "bpe" and config.get("bpemodel"):
        wanted.append(("bpemodel", config["bpemodel"]))
    if config.get("normalize") == "global_mvn":
        stats = (config.get("normalize_conf") or {}).get("stats_file")
        if stats:
            wanted.append(("normalize_conf.stats_file", stats))
    if isinstance(config.get("token_list"), str):
        wanted.append(("token_list", config["token_list"]))
    for key, value in wanted:
        if not Path(value).is_file():
            raise ExperimentError(
                f"{config_path}: {key} = {value!r} not found from the current directory "
                f"{Path.cwd()}; paths in config.yaml are relative to the recipe directory the "
                "model was trained in: run from there"
            )


def resolve_model_file(exp_dir: Path, model_file: Union[str, Path]) -> Path:
    """The model file: `model_file` as given if it exists, else relative to `exp_dir`.

    Raises:
        ExperimentError: Not found (lists the ``*.pth`` files of the experiment dir).
    """
    exp_dir = Path(exp_dir)
    for candidate in (Path(model_file), exp_dir / model_file):
        if candidate.is_file():
            return candidate
    available = sorted(p.name for p in exp_dir.glob("*.pth"))
    raise ExperimentError(
        f"model file {model_file!r} not found in {exp_dir}; available: "
        f"{', '.join(available) or 'none'} (and checkpoints/<N>epoch.pth)"
    )


class CheckpointStore:
    """The kept checkpoints of a run (``checkpoints/{tau}epoch.pth``), loaded on demand.

    Args:
        exp_dir: The experiment dir.
        reference: The model's state dict; every loaded checkpoint is checked against it.
        max_cached: How many loaded checkpoints to keep in memory (least recently used go).
    """

    def __init__(self, exp_dir: Path, reference: Optional[Dict[str, torch.Tensor]] = None,
                 max_cached: int = 4):
        from espnet_ext.checkpoints import saved_epochs

        self.exp_dir = Path(exp_dir)
        self.available: List[int] = saved_epochs(self.exp_dir)
        self.reference = reference
        self.max_cached = max(1, max_cached)
        self._cache: "collections.OrderedDict[int, Dict[str, torch.Tensor]]" = collections.OrderedDict()

    def path(self, tau: int) -> Path:
        from espnet_ext.checkpoints import checkpoint_path

        return checkpoint_path(self.exp_dir, tau)

    def resolve(self, taus: Sequence[Union[str, int]]) -> List[int]:
        """Checkpoint indices from a spec: integers, ``last`` (the final epoch) or ``all``.

        Returns:
            Sorted, unique taus, all saved.

        Raises:
            ExperimentError: Checkpoint 0 is asked for but missing (says how to get it), or a
                tau was not saved (lists the saved ones).
        """
        out = set()
        for t in taus:
            t = str(t).strip()
            if t == "all":
                out.update(self.available)
            elif t == "last":
                if not self.available:
                    out.add(-1)  # reported below
                else:
                    out.add(max(self.available))
            else:
                try:
                    out.add(int(t))
                except ValueError:
                    raise ExperimentError(
                        f"checkpoint tau {t!r} is not an integer, 'last' or 'all'"
                    ) from None
        if not out:
            raise ExperimentError(f"no checkpoints kept in {self.exp_dir / 'checkpoints'}")
        for tau in sorted(out):
            if tau in self.available:
                continue
            if tau == 0:
                raise ExperimentError(
                    f"checkpoint 0 (the initial weights) not found: {self.path(0)}. It is written "
                    f"by stage 4 training via `{TRAIN_COMMAND}` (plain ESPnet training does not "
                    "keep it); retrain the model with it to re-initialize layers to tau=0"
                )
            saved = ", ".join(map(str, self.available)) or "none"
            raise ExperimentError(
                f"checkpoint tau={tau if tau >= 0 else 'last'} was not saved in "
                f"{self.exp_dir / 'checkpoints'}; available taus: {saved}"
            )
        return sorted(out)

    def load(self, tau: int) -> Dict[str, torch.Tensor]:
        """State dict of checkpoint tau (CPU), checked against the model.

        Raises:
            ExperimentError: tau was not saved.
            ArchitectureMismatchError: Its keys or shapes differ from the model's.
        """
        if tau in self._cache:
            self._cache.move_to_end(tau)
            return self._cache[tau]
        if tau not in self.available:
            self.resolve([tau])  # raises with the right message
        state = load_state_dict_file(self.path(tau))
        if self.reference is not None:
            check_compatible(self.reference, state, str(self.path(tau)))
        self._cache[tau] = state
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return state


def build_model(config_path: Path, state: Dict[str, torch.Tensor], state_name: str, device: str,
                decode_options: Optional[dict] = None):
    """Build the ESPnet ASR model of a training config and load checked weights into it.

    With `decode_options` (beam-search scoring) the model is built through
    ``espnet2.bin.asr_inference.Speech2Text`` so that its beam search uses this very model.

    Args:
        config_path: The training config (``<exp_dir>/config.yaml``).
        state: The weights (CPU state dict).
        state_name: Name of the weights for error messages (the file path).
        device: ``cpu`` or ``cuda``.
        decode_options: Speech2Text options (beam_size, ctc_weight, penalty, ...), or None.

    Returns:
        (model in eval mode, Speech2Text or None).

    Raises:
        ArchitectureMismatchError: The weights do not match the model of the config.
        ExperimentError: An unknown decoding option.
    """
    import espnet_ext  # noqa: F401  (registers espnet_ext's encoders before ESPnet builds)
    from espnet2.tasks.asr import ASRTask

    speech2text = None
    if decode_options is None:
        model, _ = ASRTask.build_model_from_file(config_path, None, "cpu")
    else:
        from espnet2.bin.asr_inference import Speech2Text

        # No model file here: the weights are loaded below, after checking them.
        try:
            speech2text = Speech2Text(asr_train_config=str(config_path), asr_model_file=None,
                                      device="cpu", **decode_options)
        except TypeError as e:
            raise ExperimentError(f"unknown decoding option in the decode config: {e}") from None
        model = speech2text.asr_model
    check_compatible(model.state_dict(), state, state_name)
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    if speech2text is not None:
        speech2text.device = device
        speech2text.beam_search.to(device=device)
    logging.info(f"Loaded {state_name} into {type(model).__name__} on {device}")
    return model, speech2text
