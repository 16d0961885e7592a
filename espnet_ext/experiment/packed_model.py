"""Packed ESPnet models and model dirs as experiment dirs, without retraining.

Two layouts are accepted:

* a **packed model archive** as ``python -m espnet2.bin.pack asr`` writes it (``.zip``, ``.tar``,
  ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``): ``meta.yaml`` at the top names the training
  config (``yaml_files: asr_train_config``) and the weights (``files: asr_model_file``); the
  statistics and token files the config names are in the archive under the same relative paths;
* an **unpacked model dir** as model hubs distribute them: the same layout in a directory (with
  ``meta.yaml``), or a directory holding ``config.yaml`` and the weights directly.

:func:`open_packed_model` makes either usable by every tool here: an archive is extracted into a
directory this tool owns (never in place), a model dir is referenced, not copied: the tool's
directory receives a copy of its config with the files it names made absolute, and links to its
weights. Every later step reads the result as an ordinary
:class:`~espnet_ext.experiment.experiment_dir.ExperimentDir`. Nothing is downloaded; weights are only
ever loaded with ``torch.load(weights_only=True)`` by this project.

The directory written is marked (``.espnet_ext_model.json``: source, size, modification time):
a second call with the same source reuses it, a directory this tool did not write or that holds
another model is refused, and nothing outside it is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import List, Optional, Union

import yaml

from espnet_ext.experiment.experiment_dir import ExperimentDir, ExperimentError
from espnet_ext.experiment.checkpoints import init_param_path
from espnet_ext.utils.atomic import write_text_atomic

MARKER = ".espnet_ext_model.json"
META = "meta.yaml"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz")


@dataclasses.dataclass
class PackedModel:
    """A packed model opened for analysis.

    Attributes:
        source: The archive or model dir given.
        root: The directory this tool owns (extracted archive, or the imported dir's config).
        exp: The experiment dir (config.yaml with absolute paths; the weights).
        model_file: The packed weights (``asr_model_file``).
    """

    source: Path
    root: Path
    exp: ExperimentDir
    model_file: Path


def default_unpack_dir(source: Union[str, Path]) -> Path:
    """``exp/packed_<name>`` (from the current directory), the name without archive suffixes."""
    name = Path(source).name
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return Path("exp") / f"packed_{name}"


def open_packed_model(source: Union[str, Path], dest: Optional[Union[str, Path]] = None,
                      model_file: Optional[str] = None) -> PackedModel:
    """Make a packed model archive or a model dir usable as an experiment dir.

    Args:
        source: The archive (``espnet2.bin.pack`` layout) or model dir.
        dest: Directory this tool owns for the result (default :func:`default_unpack_dir`).
        model_file: For a model dir without ``meta.yaml`` holding several ``*.pth``: which one.

    Returns:
        The :class:`PackedModel`.

    Raises:
        ExperimentError: The source is missing or not such a model (says what is expected);
            `dest` exists and was not written by this tool for this source.
    """
    source = Path(source)
    dest = Path(dest) if dest is not None else default_unpack_dir(source)
    if not source.exists():
        raise ExperimentError(f"packed model {source} not found")
    stat = source.stat()
    identity = {"source": str(source.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "model_file": model_file}
    reused = _reuse(dest, identity)
    if reused is not None:
        return reused
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        if source.is_dir():
            exp_rel, model_rel = _import_dir(source, staging, model_file)
        else:
            exp_rel, model_rel = _extract_archive(source, staging)
        # The config was rewritten with paths under the staging dir's name: point them at dest
        # before dest exists, so that a published dir (which later calls reuse) is always whole.
        _rebase_config(staging / exp_rel / "config.yaml", str(staging.resolve()), str(dest.resolve()))
        record = {**identity, "exp_dir": exp_rel, "model_path": model_rel}
        (staging / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _opened(dest, record)


def _opened(dest: Path, record: dict) -> PackedModel:
    return PackedModel(source=Path(record["source"]), root=dest, exp=ExperimentDir(dest / record["exp_dir"]),
                       model_file=(dest / record["model_path"]))


def _reuse(dest: Path, identity: dict) -> Optional[PackedModel]:
    """The earlier result in `dest` for the same source, None if `dest` is free; else refuse."""
    if not dest.exists():
        return None
    marker = dest / MARKER
    if not marker.is_file():
        raise ExperimentError(
            f"{dest} exists and was not written by espnet_ext (no {MARKER}); it is left alone: "
            "pass another --unpack_dir")
    record = json.loads(marker.read_text(encoding="utf-8"))
    if any(record.get(k) != v for k, v in identity.items()):
        raise ExperimentError(
            f"{dest} holds another packed model ({record.get('source')}, size {record.get('size')}); "
            "pass another --unpack_dir, or delete that dir to unpack this one there")
    return _opened(dest, record)


def _read_meta(text: str, where: str) -> tuple:
    meta = yaml.safe_load(text)
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict) \
            or not isinstance(meta.get("yaml_files"), dict):
        raise ExperimentError(f"{where}: not the meta.yaml of an ESPnet packed model "
                              "(needs 'files' and 'yaml_files' mappings)")
    config = meta["yaml_files"].get("asr_train_config")
    model = meta["files"].get("asr_model_file")
    if not config or not model:
        raise ExperimentError(
            f"{where}: no asr_train_config/asr_model_file (files: {', '.join(meta['files']) or 'none'}); "
            "only ESPnet ASR models are supported (pack them with python -m espnet2.bin.pack asr)")
    return str(config), str(model)


def _safe_member(name: str, where: Path) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not name:
        raise ExperimentError(f"{where}: member {name!r} points outside the archive; refused")
    return p


def _extract_archive(archive: Path, dest: Path) -> tuple:
    """Extract an espnet2.bin.pack archive into `dest`; returns (exp dir, model file) relative."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            names = [i.filename for i in z.infolist() if not i.is_dir()]
            for n in names:
                _safe_member(n, archive)
            if META not in names:
                raise ExperimentError(f"{archive}: no {META} at the top: not an ESPnet packed model "
                                      "(python -m espnet2.bin.pack asr writes one)")
            config_rel, model_rel = _read_meta(z.read(META).decode("utf-8"), f"{archive}:{META}")
            z.extractall(dest, members=names)
    else:
        try:
            tar = tarfile.open(archive)
        except tarfile.TarError:
            raise ExperimentError(
                f"{archive} is neither a zip nor a tar archive (packed models are "
                f"{', '.join(ARCHIVE_SUFFIXES)}), nor a model dir") from None
        with tar:
            members = []
            for m in tar.getmembers():
                if m.isdir():
                    continue
                if not m.isfile():
                    raise ExperimentError(f"{archive}: member {m.name!r} is a link or device; refused")
                _safe_member(m.name, archive)
                members.append(m)
            names = [m.name for m in members]
            if META not in names:
                raise ExperimentError(f"{archive}: no {META} at the top: not an ESPnet packed model "
                                      "(python -m espnet2.bin.pack asr writes one)")
            config_rel, model_rel = _read_meta(tar.extractfile(META).read().decode("utf-8"),
                                               f"{archive}:{META}")
            tar.extractall(dest, members=members, filter="data")
    for rel in (config_rel, model_rel):
        if not (dest / rel).is_file():
            raise ExperimentError(f"{archive}: {META} names {rel}, which is not in the archive")
    _write_config(dest / config_rel, dest / config_rel, [dest])
    return str(PurePosixPath(config_rel).parent), model_rel


def _import_dir(src: Path, dest: Path, model_file: Optional[str]) -> tuple:
    """Reference a model dir: config copy (absolute paths) and links to its weights in `dest`."""
    src = src.resolve()
    if (src / META).is_file():
        config_rel, model_rel = _read_meta((src / META).read_text(encoding="utf-8"), str(src / META))
        if model_file is not None:
            model_rel = str(PurePosixPath(config_rel).parent / model_file)
    elif (src / "config.yaml").is_file():
        config_rel = "config.yaml"
        weights = sorted(p.name for p in src.glob("*.pth") if p.is_file())
        if model_file is not None:
            model_rel = model_file
        elif len(weights) == 1:
            model_rel = weights[0]
        else:
            raise ExperimentError(
                f"{src}: {len(weights)} weight files ({', '.join(weights) or 'none'}); name the one "
                "to use with --model_file")
    else:
        raise ExperimentError(f"{src} is not a model dir: neither {META} (ESPnet's packed layout) "
                              "nor config.yaml with the weights")
    for rel in (config_rel, model_rel):
        if not (src / rel).is_file():
            raise ExperimentError(f"{src}: {rel} not found (named by {META} or --model_file)")
    exp_src = (src / config_rel).parent
    exp_dst = dest / PurePosixPath(config_rel).parent
    exp_dst.mkdir(parents=True, exist_ok=True)
    _write_config(src / config_rel, exp_dst / "config.yaml", [src, exp_src])
    # The weights stay where they are: links, so epochs and model files are found by name.
    for sub in ("", "checkpoints"):
        found = sorted((exp_src / sub).glob("*.pth")) if (exp_src / sub).is_dir() else []
        if sub:
            found += sorted((exp_src / sub).glob("*.json"))  # checkpoint 0's identity record
        for w in found:
            if w.is_file():
                (exp_dst / sub).mkdir(parents=True, exist_ok=True)
                os.symlink(w.resolve(), exp_dst / sub / w.name)
    model_in_exp = (src / model_rel).resolve()
    link = exp_dst / Path(model_rel).name
    if not link.exists():
        os.symlink(model_in_exp, link)
    return str(PurePosixPath(config_rel).parent), str(PurePosixPath(config_rel).parent / link.name)


def _absolute(value, roots: List[Path], key: Optional[str] = None):
    """`value` with every relative string naming a file under one of `roots` made absolute."""
    if isinstance(value, dict):
        return {k: (v if k == "token_list" and isinstance(v, list) else _absolute(v, roots, k))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_absolute(v, roots, key) for v in value]
    if isinstance(value, str) and value and "\n" not in value and not Path(value).is_absolute():
        path = init_param_path(value) if key == "init_param" else value
        for root in roots:
            candidate = root / path
            if candidate.is_file():
                return str(candidate.resolve()) + value[len(path):]
    return value


def _write_config(src: Path, dst: Path, roots: List[Path]) -> None:
    with open(src, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ExperimentError(f"{src} is not a YAML mapping (an ESPnet training config)")
    config = _absolute(config, roots)
    write_text_atomic(dst, yaml.safe_dump(config, allow_unicode=True, sort_keys=False))


def _rebase_config(config_path: Path, old: str, new: str) -> None:
    """Replace the staging-dir prefix `old` by `new` in the config's path strings."""
    def walk(v):
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, str) and v.startswith(old + os.sep):
            return new + v[len(old):]
        return v

    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    write_text_atomic(config_path, yaml.safe_dump(walk(config), allow_unicode=True, sort_keys=False))
