"""The sample rate a model's front end expects, checked against a data dir's audio.

ESPnet's front ends compute features for one sample rate (``frontend_conf.fs`` of the training
config, 16 kHz when absent) and never resample: audio at another rate gives features the model
never saw, and scoring, decoding or adapting on it "works" but measures nothing. Everything
that feeds a data dir to a trained model calls :func:`check_sample_rate` first; it reads only
the audio headers (``soundfile.info``), so it costs milliseconds per file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

import soundfile
import yaml

from espnet_ext.data.kaldi import DataDirError, PathLike, read_kaldi_map

# ESPnet's DefaultFrontend (and every other front end in espnet2.tasks.asr) defaults to 16 kHz.
DEFAULT_FS = 16000

__all__ = ["DEFAULT_FS", "SampleRateError", "check_sample_rate", "model_sample_rate",
           "recording_rates"]


class SampleRateError(DataDirError):
    """A data dir's audio is not at the rate the model's front end expects (or fs is invalid)."""


def _parse_fs(value: object, where: str) -> int:
    """``fs`` as ESPnet reads it: an int (Hz) or a string such as ``16k`` / ``16000``."""
    if isinstance(value, bool):
        value = None  # a YAML boolean is no rate; reported below
    if isinstance(value, (int, float)) and value > 0 and float(value).is_integer():
        return int(value)
    if isinstance(value, str):
        import humanfriendly  # what ESPnet's front ends use to read "16k"

        try:
            hz = humanfriendly.parse_size(value)
        except humanfriendly.InvalidSize:
            hz = None
        if hz:
            return int(hz)
    raise SampleRateError(
        f"{where}: frontend_conf.fs = {value!r} is not a sample rate; write it in Hz, e.g. "
        "16000 or 16k"
    )


def model_sample_rate(config: Union[PathLike, dict], name: Optional[str] = None) -> Optional[int]:
    """The sample rate (Hz) the model of a training config expects.

    Args:
        config: The training config (``config.yaml`` path) or its contents.
        name: How to name the config in errors (default: its path, or "the model config").

    Returns:
        ``frontend_conf.fs`` in Hz (ESPnet's default 16000 when absent), or None for a model
        without a front end (``frontend: null``: it reads features, not audio).

    Raises:
        SampleRateError: The config cannot be read, or fs is not a rate.
    """
    if not isinstance(config, dict):
        path = Path(config)
        name = name or str(path)
        try:
            with open(path, encoding="utf-8") as f:
                config = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as e:
            raise SampleRateError(f"{path}: cannot read the model config: {e}") from None
        if not isinstance(config, dict):
            raise SampleRateError(f"{path} is not a YAML mapping (an ESPnet training config)")
    name = name or "the model config"
    if "frontend" in config and config["frontend"] is None:
        return None
    fs = (config.get("frontend_conf") or {}).get("fs", DEFAULT_FS)
    return _parse_fs(fs, name)


def _wav_scp(source: PathLike) -> Tuple[Path, Path]:
    source = Path(source)
    if source.is_dir():
        return source, source / "wav.scp"
    return source.parent, source


def recording_rates(source: PathLike, keys: Optional[Iterable[str]] = None) -> Dict[str, Tuple[int, str]]:
    """Sample rate of every audio file of a data dir, read from the file headers only.

    Args:
        source: A Kaldi data dir, or its ``wav.scp`` (any name, e.g. ``wav_part1.scp``).
        keys: Only these recordings (e.g. a decoding job's key file); None: all.

    Returns:
        Recording id -> (rate in Hz, audio path), in wav.scp order. Piped commands and Kaldi
        ark references are left out (they cannot be read without running or loading them).

    Raises:
        DataDirError: wav.scp is missing or malformed, or an audio file cannot be read.
    """
    data_dir, scp = _wav_scp(source)
    if not scp.is_file():
        raise DataDirError(f"{scp} not found: {data_dir} is not a Kaldi data dir with audio")
    wanted = None if keys is None else set(keys)
    rates: Dict[str, Tuple[int, str]] = {}
    for rec, value in read_kaldi_map(scp).items():
        value = value.strip()
        if wanted is not None and rec not in wanted:
            continue
        if value.endswith("|") or value.startswith("ark:") or ".ark:" in value:
            continue
        try:
            rate = soundfile.info(value).samplerate
        except Exception as e:  # soundfile raises RuntimeError/LibsndfileError/OSError
            raise DataDirError(f"{scp}: recording '{rec}': cannot read {value}: {e}") from None
        rates[rec] = (int(rate), value)
    return rates


def check_sample_rate(source: PathLike, config: Union[PathLike, dict], config_name: Optional[str] = None,
                      keys: Optional[Iterable[str]] = None) -> Optional[int]:
    """Stop unless every audio file of a data dir is at the rate the model expects.

    Args:
        source: The Kaldi data dir (or its wav.scp).
        config: The model's training config (path or contents).
        config_name: How to name the config in the message (default: its path).
        keys: Only these recordings (None: all).

    Returns:
        The rate (Hz) the audio and the model share; None when nothing could be checked (a
        model without a front end, or only piped/ark audio).

    Raises:
        SampleRateError: Some audio is at another rate: names the data dir, the rate found (with
            an example file and how many recordings), the rate expected and how to resample.
        DataDirError: No wav.scp, or unreadable audio.
    """
    expected = model_sample_rate(config, config_name)
    if expected is None:
        return None
    where = config_name or (str(config) if not isinstance(config, dict) else "the model config")
    rates = recording_rates(source, keys)
    wrong: Dict[int, List[Tuple[str, str]]] = {}
    for rec, (rate, path) in rates.items():
        if rate != expected:
            wrong.setdefault(rate, []).append((rec, path))
    if not wrong:
        return expected if rates else None
    data_dir, _ = _wav_scp(source)
    found = ", ".join(
        f"{rate} Hz in {len(recs)} of {len(rates)} recordings (e.g. '{recs[0][0]}': {recs[0][1]})"
        for rate, recs in sorted(wrong.items(), key=lambda kv: -len(kv[1]))
    )
    raise SampleRateError(
        f"{data_dir}: audio is sampled at {found}, but the model expects {expected} Hz "
        f"(frontend_conf.fs of {where}); resample the audio to {expected} Hz, e.g. "
        f"`sox in.wav -r {expected} out.wav`, and point wav.scp at the new files"
    )
