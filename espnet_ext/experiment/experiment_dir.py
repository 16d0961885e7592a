"""An ESPnet experiment directory: config, model files, checkpoints by tau, building the model.

One type, :class:`ExperimentDir`, serves every tool that reads a trained run (the layer-reset
scan, the cross-run analysis, the weight-update analysis, federated training, the report). Its
errors are :class:`ExperimentError`, whose messages name the fix.

What it reads, wherever the run was trained:

* ``config.yaml``: the training config ESPnet writes. Paths in it (``bpemodel``, global-MVN
  statistics, ``init_param`` files) are relative to the directory the training ran in (the
  recipe directory), so tools run from there too; packed models are unpacked with those paths
  made absolute (:mod:`espnet_ext.experiment.packed_model`).
* model files: ``*.pth`` in the dir (``valid.acc.ave.pth``, ``latest.pth``, ESPnet's n-best
  ``{N}epoch.pth``; ``checkpoint.pth``, ESPnet's resume file, through its ``"model"`` entry),
  always loaded as weights only (``torch.load(weights_only=True)``).
* checkpoint tau (the weights after tau epochs): ``checkpoints/{tau}epoch.pth`` (kept by
  ``python -m espnet_ext.bin.asr_train``) or ESPnet's own ``{tau}epoch.pth`` next to it.
* checkpoint 0 (the initial weights): ``checkpoints/0epoch.pth`` when the training saved it
  (checked against config.yaml through its identity record, see :mod:`espnet_ext.experiment.checkpoints`);
  otherwise **reconstructed**: ESPnet's trainer seeds every generator with the run's ``seed``
  and builds the model right away, so building it again the same way
  (:func:`espnet_ext.layers.reset.build_initial_model`: ``build_model``, dtype cast,
  ``init_param``) gives the very same tensors. The reconstruction is stored as
  ``checkpoints/0epoch.reconstructed.pth`` with ``0epoch.reconstructed.json`` (reconstructed:
  true, seed, config hash, torch/espnet/espnet_ext versions), never under a saved checkpoint's
  name, and refused where it could not be exact (:meth:`ExperimentDir.reconstruction_problem`).
"""

from __future__ import annotations

import collections
import datetime
import logging
import pickle
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import yaml

from espnet_ext.experiment import checkpoints as ckpt
from espnet_ext.experiment.checkpoints import init_param_path, load_state_dict_file
from espnet_ext.layers.reset import check_compatible
from espnet_ext.utils.atomic import save_torch_atomic, write_text_atomic

TRAIN_COMMAND = "python -m espnet_ext.bin.asr_train"
RESUME_FILE = "checkpoint.pth"
#: Training wall time in seconds, one number (the recipe driver adds each training's time).
TRAIN_WALL_FILE = "train_wall_s.txt"

#: Components that load pre-trained weights from outside the experiment when they are built
#: (downloads or external checkpoints): a model with one is neither rebuilt nor re-sampled here.
PRETRAINED_COMPONENTS = {
    "frontend": ("s3prl", "espnet_ssl", "fused", "whisper", "huggingface"),
    "encoder": ("wav2vec2", "hubert", "hubert_pretrain", "torchaudiohubert", "whisper", "avhubert",
                "beats"),
    "postencoder": ("hugging_face_transformers",),
    "decoder": ("whisper", "hugging_face_transformers"),
}


# Keys of an ESPnet ASR config that name files read when building the model or tokenizer.
_PATH_KEYS = (("bpemodel",), ("normalize_conf", "stats_file"), ("token_list",))


class ExperimentError(ValueError):
    """An experiment dir lacks something a tool needs (config, model file, checkpoint...).

    The message says what is missing, where, and how to get it.
    """


def read_config_file(path: Union[str, Path]) -> dict:
    """A training config file (config.yaml, or a copy of it) as a dict.

    Raises:
        ExperimentError: The file is not a YAML mapping.
        FileNotFoundError: The file does not exist.
    """
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ExperimentError(f"{path} is not a YAML mapping")
    return config


def load_weights_file(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """A model file's state dict on the CPU, weights only.

    Raises:
        ExperimentError: Missing, or not a weights-only state dict.
    """
    try:
        return load_state_dict_file(path)
    except (ValueError, FileNotFoundError) as e:
        raise ExperimentError(str(e)) from None


def read_train_config(exp_dir: Path) -> dict:
    """The training config (``<exp_dir>/config.yaml``) as a dict.

    Raises:
        ExperimentError: The file is missing or not a YAML mapping.
    """
    return ExperimentDir(exp_dir).config


def check_config_paths(config: dict, config_path: Path, keys: Sequence[str] = ("bpemodel", "stats_file", "token_list")) -> None:
    """Fail early, with the key and the fix, when a file named in config.yaml cannot be found.

    Args:
        config: The training config.
        config_path: Its file (for the message).
        keys: Which files to check: ``bpemodel`` (token_type bpe), ``stats_file`` (global MVN),
            ``token_list`` (when a path), ``init_param``.

    Raises:
        ExperimentError: A file is missing (names the key, the value and the directory).
    """
    wanted = []
    if "bpemodel" in keys and config.get("token_type") == "bpe" and config.get("bpemodel"):
        wanted.append(("bpemodel", config["bpemodel"]))
    if "stats_file" in keys and config.get("normalize") == "global_mvn":
        stats = (config.get("normalize_conf") or {}).get("stats_file")
        if stats:
            wanted.append(("normalize_conf.stats_file", stats))
    if "token_list" in keys and isinstance(config.get("token_list"), str):
        wanted.append(("token_list", config["token_list"]))
    if "init_param" in keys:
        wanted += [("init_param", init_param_path(p)) for p in config.get("init_param") or []]
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
        ExperimentError: Not found (lists the experiment's model files).
    """
    return ExperimentDir(exp_dir).resolve_model_file(model_file)


class ExperimentDir:
    """A trained ESPnet experiment dir (see the module docstring).

    Args:
        path: The dir holding ``config.yaml`` (written by ``espnet2.bin.asr_train``,
            ``espnet_ext.bin.asr_train``, ESPnet's egs2 ``asr.sh``, or unpacked from a packed
            model).
    """

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self._config: Optional[dict] = None

    def __repr__(self) -> str:
        return f"ExperimentDir({str(self.path)!r})"

    # -- config -------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def config(self) -> dict:
        """config.yaml as a dict (read once).

        Raises:
            ExperimentError: Missing or not a YAML mapping.
        """
        if self._config is None:
            path = self.config_path
            if not path.is_file():
                raise ExperimentError(
                    f"{path} not found: {self.path} is not a trained ESPnet experiment dir "
                    f"(train it with stage 4 / {TRAIN_COMMAND} or python -m espnet2.bin.asr_train, "
                    "or pass a packed model with --packed_model)"
                )
            self._config = read_config_file(path)
        return self._config

    @property
    def seed(self) -> Optional[int]:
        seed = self.config.get("seed")
        return int(seed) if seed is not None else None

    def init_identity(self) -> dict:
        """Seed and model-config hash of this run's initial weights (:func:`ckpt.init_identity`)."""
        return ckpt.init_identity(self.config)

    def check_config_paths(self, keys: Sequence[str] = ("bpemodel", "stats_file", "token_list")) -> None:
        """See :func:`check_config_paths`."""
        check_config_paths(self.config, self.config_path, keys)

    # -- what the recipe driver records -------------------------------------------------------

    @property
    def train_wall_path(self) -> Path:
        """``train_wall_s.txt``: the training's wall time, written by the recipe's training stage."""
        return self.path / TRAIN_WALL_FILE

    def train_wall_s(self) -> Optional[float]:
        """Training wall time in seconds (summed over resumed trainings); None if not recorded."""
        try:
            return float(self.train_wall_path.read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def reporter_state(self) -> Optional[dict]:
        """ESPnet's ``Reporter.state_dict()`` as its trainer saved it in ``checkpoint.pth``.

        The reporter holds every finished epoch's numbers and is kept across resumes. Loaded
        weights-only, with the three non-tensor types it holds allowed (``datetime.timedelta``,
        numpy scalars and dtypes). None without a checkpoint.pth, with a torch too old to allow
        them (< 2.5), or with a file that holds no reporter.
        """
        path = self.path / RESUME_FILE
        if not path.is_file() or not hasattr(torch.serialization, "safe_globals"):
            return None
        import numpy

        core = getattr(numpy, "_core", None) or numpy.core  # numpy 2 renamed numpy.core
        allowed = [datetime.timedelta, core.multiarray.scalar, numpy.dtype]
        # numpy >= 1.25 pickles a scalar's dtype as its class (numpy.dtypes.Float64DType...).
        dtypes = getattr(numpy, "dtypes", None)
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")] if dtypes else []
        try:
            with torch.serialization.safe_globals(allowed):
                state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
            logging.warning("%s: no reporter (%s)", path, str(e).splitlines()[0])
            return None
        reporter = state.get("reporter") if isinstance(state, dict) else None
        return reporter if isinstance(reporter, dict) and reporter.get("stats") else None

    def epoch_stats(self) -> Optional[Dict[int, Dict[str, Dict[str, float]]]]:
        """What ESPnet's trainer reported for each finished epoch; None if unknown.

        From :meth:`reporter_state` (so unlike ``train.log`` of an older driver or
        :meth:`train_wall_s` it survives a training that was killed and resumed).

        Returns:
            {epoch: {"train": {key: value}, "valid": {key: value}}}: the numbers ESPnet logs as
            ``<epoch>epoch results`` (``loss_ctc``, ``acc``, ``cer_ctc``...), with ``time`` in
            seconds.
        """
        import numpy

        state = self.reporter_state()
        if state is None:
            return None
        out: Dict[int, Dict[str, Dict[str, float]]] = {}
        for epoch, subs in state["stats"].items():
            for key, values in (subs or {}).items():
                if not isinstance(values, dict):
                    continue
                row = {}
                for name, v in values.items():
                    if isinstance(v, datetime.timedelta):
                        row[name] = v.total_seconds()
                    elif isinstance(v, (int, float, numpy.number)) and not isinstance(v, bool):
                        row[name] = float(v)
                out.setdefault(int(epoch), {})[key] = row
        return dict(sorted(out.items())) or None

    def epoch_seconds(self) -> Optional[Dict[int, float]]:
        """Seconds each finished epoch took (training + validation), by epoch; None if unknown.

        From :meth:`epoch_stats` (ESPnet's reporter in ``checkpoint.pth``): survives a training
        that was killed and resumed, unlike :meth:`train_wall_s`.
        """
        stats = self.epoch_stats() or {}
        out = {epoch: sum(sub["time"] for sub in subs.values() if "time" in sub)
               for epoch, subs in stats.items() if any("time" in sub for sub in subs.values())}
        return out or None

    def write_resolved_config(self, out_path: Union[str, Path]) -> Path:
        """Copy config.yaml to `out_path` with the files it names made absolute.

        Relative paths are resolved from the current directory (the recipe directory), as
        ESPnet resolves them; the copy works from anywhere (e.g. in Ray worker processes).

        Raises:
            ExperimentError: No config, or a file it names does not exist.
        """
        config = dict(self.config)
        for path in _PATH_KEYS:
            holder = config
            for key in path[:-1]:
                if not isinstance(holder.get(key), dict):
                    holder = {}
                    break
                holder[key] = dict(holder[key])  # a copy: the cached config stays as read
                holder = holder[key]
            value = holder.get(path[-1])
            if not isinstance(value, str) or not value:
                continue
            resolved = Path(value).resolve()
            if not resolved.is_file():
                raise ExperimentError(
                    f"{self.config_path}: {'.'.join(path)} = {value!r} not found from {Path.cwd()}; "
                    "paths in config.yaml are relative to the recipe directory the model was "
                    "trained in: run from there"
                )
            holder[path[-1]] = str(resolved)
        if config.get("init_param"):
            config["init_param"] = [
                str(Path(init_param_path(p)).resolve()) + p[len(init_param_path(p)):]
                if Path(init_param_path(p)).is_file() else p for p in config["init_param"]]
        out_path = Path(out_path)
        write_text_atomic(out_path, yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
        return out_path

    # -- model files --------------------------------------------------------------------------

    def model_files(self) -> List[str]:
        """Names of the weight files in the dir (``*.pth``, ESPnet's epochs included)."""
        return sorted(p.name for p in self.path.glob("*.pth") if p.is_file())

    def resolve_model_file(self, model_file: Union[str, Path]) -> Path:
        """`model_file` as given if it exists, else relative to the dir.

        Raises:
            ExperimentError: Not found: lists the model files there, and for checkpoint 0 says
                how to get it.
        """
        for candidate in (Path(model_file), self.path / model_file):
            if candidate.is_file():
                return candidate
        name = Path(model_file).name
        if name == "0epoch.pth":
            hint = (f"; the initial weights are not saved here: reconstruct them with "
                    f"python -m espnet_ext.bin.reconstruct_init --exp_dir {self.path} (writes "
                    f"{ckpt.reconstructed_init_path(self.path)})")
        else:
            hint = ""
        available = self.model_files()
        taus = [e for e in self.saved_epochs() if ckpt.checkpoint_path(self.path, e).is_file()]
        raise ExperimentError(
            f"model file {str(model_file)!r} not found in {self.path}; available: "
            f"{', '.join(available) or 'none'}"
            + (f" (and checkpoints/<N>epoch.pth for N in {', '.join(map(str, taus))})" if taus else "")
            + hint
        )

    def load_weights(self, model_file: Union[str, Path]) -> Dict[str, torch.Tensor]:
        """A model file's state dict on the CPU, weights only (see :meth:`resolve_model_file`).

        Raises:
            ExperimentError: Not found, or not a weights-only state dict.
        """
        return load_weights_file(self.resolve_model_file(model_file))

    # -- checkpoints by tau -------------------------------------------------------------------

    def saved_epochs(self) -> List[int]:
        """Epochs whose weights the training saved (``checkpoints/`` and ESPnet's ``{N}epoch.pth``)."""
        return ckpt.saved_epochs(self.path)

    def epoch_file(self, tau: int) -> Optional[Path]:
        """The saved weights after `tau` epochs, or None (tau 0: a saved checkpoint 0 only)."""
        return ckpt.epoch_file(self.path, tau)

    def reconstruction_problem(self) -> Optional[str]:
        """Why checkpoint 0 cannot be rebuilt exactly from config.yaml, or None if it can."""
        config = self.config
        if config.get("collect_stats"):
            return "it is a statistics-collection dir (collect_stats: true), not a training"
        if config.get("seed") is None:
            return "config.yaml has no seed"
        for kind, names in PRETRAINED_COMPONENTS.items():
            if str(config.get(kind)) in names:
                return (f"{kind}: {config.get(kind)} loads pre-trained weights from outside the "
                        "experiment when it is built (nothing is downloaded here)")
        for key in ("use_adapter", "use_lora"):
            if config.get(key):
                return (f"{key}: true (adapter weights are drawn after the model is built, in an "
                        "order this tool does not reproduce)")
        for spec in config.get("init_param") or []:
            path = init_param_path(spec)
            if not Path(path).is_file():
                return (f"init_param file {path} not found from {Path.cwd()} (the pre-trained "
                        "weights the training started from; run from the recipe directory, or "
                        "restore the file)")
        return None

    def initial_weights_file(self, reconstruct: bool = True) -> Tuple[Path, bool]:
        """The file of checkpoint 0: (path, reconstructed?).

        A saved ``checkpoints/0epoch.pth`` is used when its identity record matches
        config.yaml; otherwise a stored reconstruction with a matching record, otherwise (with
        `reconstruct`) a new reconstruction is made and stored.

        Raises:
            ExperimentError: The saved checkpoint 0 belongs to another run (another seed or
                model config); or none is saved and it cannot be reconstructed (says why).
        """
        saved = ckpt.checkpoint_path(self.path, 0)
        if saved.is_file() and not self.config_path.is_file():
            return saved, False  # nothing to check it against
        identity = self.init_identity()
        if saved.is_file():
            why = ckpt.identity_mismatch(ckpt.read_identity(saved), identity)
            if why is not None:
                raise ExperimentError(
                    f"{saved} belongs to another run than {self.config_path} ({why}): it was kept "
                    "from an earlier training attempt with other options. Delete it and its "
                    "0epoch.json to use the weights reconstructed from config.yaml, or retrain "
                    f"with {TRAIN_COMMAND}"
                )
            return saved, False
        stored = ckpt.reconstructed_init_path(self.path)
        record = ckpt.read_identity(stored) if stored.is_file() else None
        if record is not None and ckpt.identity_mismatch(record, identity) is None:
            return stored, True
        problem = self.reconstruction_problem()
        if problem is not None:
            raise ExperimentError(
                f"checkpoint 0 (the initial weights) is not saved in {self.path} and cannot be "
                f"reconstructed exactly from its config.yaml: {problem}. Use re-randomization "
                f"(--modes rerandomize) or saved epochs (taus {self._taus_listing()}), or retrain "
                f"with {TRAIN_COMMAND}, which saves checkpoints/0epoch.pth"
            )
        if not reconstruct:
            raise ExperimentError(f"checkpoint 0 of {self.path} is not reconstructed yet")
        return self.reconstruct_initial_weights(), True

    def reconstruct_initial_weights(self, out_path: Optional[Path] = None) -> Path:
        """Rebuild checkpoint 0 from config.yaml exactly as ESPnet's trainer built it; store it.

        Args:
            out_path: Where to write it (default ``checkpoints/0epoch.reconstructed.pth``); the
                identity record goes next to it. An existing file there is replaced only when
                it is a reconstruction itself (has a record saying so).

        Returns:
            The written file.

        Raises:
            ExperimentError: Cannot be exact (:meth:`reconstruction_problem`), a file named in
                config.yaml is missing, or `out_path` is a file this tool did not write.
        """
        from espnet_ext.layers.reset import InitialWeightSampler

        problem = self.reconstruction_problem()
        if problem is not None:
            raise ExperimentError(f"checkpoint 0 of {self.path} cannot be reconstructed exactly: {problem}")
        self.check_config_paths(("stats_file", "token_list", "init_param"))
        out_path = Path(out_path) if out_path is not None else ckpt.reconstructed_init_path(self.path)
        record = ckpt.read_identity(out_path)
        ours = bool((record or {}).get("reconstructed"))
        if ckpt.identity_path(out_path).exists() and not ours:
            # The record of a saved checkpoint 0 (or a user's file of that name) stays as it is.
            raise ExperimentError(
                f"{ckpt.identity_path(out_path)} exists and is not the record of a reconstruction "
                "written by espnet_ext; it is left alone: choose another output path")
        if out_path.exists() and not ours:
            raise ExperimentError(
                f"{out_path} exists and is not a reconstruction written by espnet_ext (no "
                f"{ckpt.identity_path(out_path).name} saying so); it is left alone: choose "
                "another output path")
        trained_with = str(self.config.get("version", ""))
        import espnet

        if trained_with and trained_with != espnet.__version__:
            logging.warning(f"{self.config_path} was written by ESPnet {trained_with}, this is "
                            f"ESPnet {espnet.__version__}: the rebuilt initial weights are exact "
                            "only if the model code draws the same random numbers")
        try:
            state = InitialWeightSampler.from_train_args(self.config, apply_init_param=True).sample(self.seed)
        except (AttributeError, KeyError, TypeError, ValueError, RuntimeError, FileNotFoundError) as e:
            # ESPnet's builders fail with all of these on configs it did not write.
            raise ExperimentError(f"cannot rebuild the model of {self.config_path} "
                                  f"({type(e).__name__}: {e}); is it the config.yaml an ESPnet "
                                  "training wrote?") from None
        try:
            save_torch_atomic(state, out_path)
            ckpt.write_identity(out_path, self.init_identity(), reconstructed=True,
                                config_file=str(self.config_path.resolve()),
                                trained_with_espnet=trained_with or None)
        except OSError as e:
            raise ExperimentError(
                f"cannot write the reconstructed checkpoint 0 to {out_path} ({e}); pass a "
                "writable place (reconstruct_init --out)") from None
        logging.info(f"Reconstructed checkpoint 0 of {self.path} (seed {self.seed}) -> {out_path}")
        return out_path

    def _taus_listing(self) -> str:
        return ", ".join(map(str, self.saved_epochs())) or "none"

    def available_taus(self) -> List[int]:
        """Saved epochs, with 0 added when checkpoint 0 can be reconstructed."""
        taus = self.saved_epochs()
        if 0 not in taus and self.reconstruction_problem() is None:
            taus = [0] + taus
        return taus

    def resolve_taus(self, taus: Sequence[Union[str, int]]) -> List[int]:
        """Checkpoint indices from a spec: integers, ``last`` (the final epoch) or ``all``.

        Returns:
            Sorted, unique taus, each saved (or 0, reconstructable).

        Raises:
            ExperimentError: A tau that was not saved (lists the saved ones, and how to keep
                every epoch); checkpoint 0 that is neither saved nor reconstructable (says why).
        """
        saved = self.saved_epochs()
        out = set()
        for t in taus:
            t = str(t).strip()
            if t == "all":
                out.update(self.available_taus())
            elif t == "last":
                epochs = [e for e in saved if e > 0]
                if not epochs:
                    raise ExperimentError(
                        f"tau 'last': no epoch's weights are kept in {self.path} "
                        "({N}epoch.pth or checkpoints/{N}epoch.pth)")
                out.add(max(epochs))
            else:
                try:
                    out.add(int(t))
                except ValueError:
                    raise ExperimentError(
                        f"checkpoint tau {t!r} is not an integer, 'last' or 'all'"
                    ) from None
        if not out:
            raise ExperimentError(f"no checkpoints in {self.path}")
        for tau in sorted(out):
            if tau == 0:
                if 0 in saved or self.reconstruction_problem() is not None:
                    # A saved one is checked against config.yaml; otherwise this says why not.
                    self.initial_weights_file(reconstruct=False)
            elif tau not in saved:
                raise ExperimentError(
                    f"checkpoint tau={tau} was not saved in {self.path} (neither {tau}epoch.pth "
                    f"nor checkpoints/{tau}epoch.pth); saved taus: {self._taus_listing()}"
                    + ("" if 0 in saved else " (and 0, reconstructed from config.yaml)"
                       if self.reconstruction_problem() is None else "")
                    + ". ESPnet keeps only the n-best epochs: train with --keep_nbest_models "
                    f"set to max_epoch, or with {TRAIN_COMMAND} (keeps every epoch)"
                )
        return sorted(out)

    def checkpoint_file(self, tau: int) -> Path:
        """The weights after `tau` epochs (0: saved or reconstructed checkpoint 0).

        Raises:
            ExperimentError: As :meth:`resolve_taus`.
        """
        if tau == 0:
            return self.initial_weights_file()[0]
        path = self.epoch_file(tau)
        if path is None:
            self.resolve_taus([tau])  # raises with the listing
        return path

    def load_checkpoint(self, tau: int) -> Dict[str, torch.Tensor]:
        """State dict of checkpoint tau (CPU, weights only)."""
        path = self.checkpoint_file(tau)
        try:
            return load_state_dict_file(path)
        except ValueError as e:
            raise ExperimentError(str(e)) from None

    # -- models -------------------------------------------------------------------------------

    def weight_sampler(self):
        """Fresh initial-weight samples of this run's model (re-randomization)."""
        from espnet_ext.layers.reset import InitialWeightSampler

        config = self.config
        for kind, names in PRETRAINED_COMPONENTS.items():
            if str(config.get(kind)) in names:
                raise ExperimentError(
                    f"{self.config_path}: {kind}: {config.get(kind)} loads pre-trained weights "
                    "when built, so its layers cannot be re-randomized here")
        return InitialWeightSampler.from_train_args(config)

    def build_model(self, state: Dict[str, torch.Tensor], state_name: str, device: str,
                    decode_options: Optional[dict] = None):
        """See :func:`build_model` (with this dir's config.yaml)."""
        return build_model(self.config_path, state, state_name, device, decode_options)


class CheckpointStore:
    """The checkpoints of a run by tau, loaded on demand and checked against the model.

    Args:
        exp_dir: The experiment dir (a path or an :class:`ExperimentDir`).
        reference: The model's state dict; every loaded checkpoint is checked against it.
        max_cached: How many loaded checkpoints to keep in memory (least recently used go).
    """

    def __init__(self, exp_dir: Union[Path, ExperimentDir],
                 reference: Optional[Dict[str, torch.Tensor]] = None, max_cached: int = 4):
        self.exp = exp_dir if isinstance(exp_dir, ExperimentDir) else ExperimentDir(exp_dir)
        self.exp_dir = self.exp.path
        self.available: List[int] = self.exp.saved_epochs()
        self.reference = reference
        self.max_cached = max(1, max_cached)
        self._cache: "collections.OrderedDict[int, Dict[str, torch.Tensor]]" = collections.OrderedDict()

    def path(self, tau: int) -> Path:
        """The file of checkpoint tau (checkpoint 0: saved, else reconstructed and stored)."""
        return self.exp.checkpoint_file(tau)

    def resolve(self, taus: Sequence[Union[str, int]]) -> List[int]:
        """See :meth:`ExperimentDir.resolve_taus`."""
        return self.exp.resolve_taus(taus)

    def load(self, tau: int) -> Dict[str, torch.Tensor]:
        """State dict of checkpoint tau (CPU), checked against the model.

        Raises:
            ExperimentError: tau was not saved (and, for 0, cannot be reconstructed).
            ArchitectureMismatchError: Its keys or shapes differ from the model's.
        """
        if tau in self._cache:
            self._cache.move_to_end(tau)
            return self._cache[tau]
        state = self.exp.load_checkpoint(tau)
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
    from espnet2.tasks.asr import ASRTask

    from espnet_ext.asr.registration import register_encoders

    register_encoders()  # before ESPnet builds a config naming espnet_ext's encoders

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
