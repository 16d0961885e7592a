"""A data dir's audio: how a wav.scp value gives it, reading it, and the rate a model expects.

A wav.scp value gives a recording's audio in one of three ways (:func:`audio_kind`): an audio
file path, a command ending in ``|`` that prints audio, or a Kaldi ark reference
(``[ark:]<file>.ark:<byte offset>``, loaded with kaldiio). :func:`read_audio` reads the samples
of any of them, :func:`read_audio_header` only what the header says (rate, channels, length),
:func:`read_recording` one recording as ESPnet's ``sound`` data type reads it (mono files, no
pipes), and :func:`utterance_audio` the utterances of a data dir, cut from their recordings.

ESPnet's front ends compute features for one sample rate (``frontend_conf.fs`` of the training
config, 16 kHz when absent) and never resample: audio at another rate gives features the model
never saw, and scoring, decoding or adapting on it "works" but measures nothing. Everything
that feeds a data dir to a trained model calls :func:`check_sample_rate` first; it reads only
the audio headers (``soundfile.info``), so it costs milliseconds per file.
"""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile
import yaml

from espnet_ext.data.kaldi import DataDirError, KaldiDataDir, PathLike, Segment, read_kaldi_map

# ESPnet's DefaultFrontend (and every other front end in espnet2.tasks.asr) defaults to 16 kHz.
DEFAULT_FS = 16000

# A Kaldi ark reference: an optional "ark:", the ark file, a colon and the byte offset.
_ARK_REF = re.compile(r"^(ark:)?\S+\.ark:\d+$")
AUDIO_KINDS = ("path", "pipe", "ark")
# Seconds a piped command may take: checking a header is meant to be quick, while extracting
# audio may run a slow conversion of a long recording.
HEADER_PIPE_TIMEOUT_S = 60
READ_PIPE_TIMEOUT_S = 600

__all__ = ["AUDIO_KINDS", "DEFAULT_FS", "AudioHeader", "SampleRateError", "audio_kind",
           "audio_path", "check_sample_rate", "cut_segment", "model_sample_rate", "read_audio",
           "read_audio_header", "read_recording", "recording_rates", "utterance_audio",
           "wav_truncation"]


def audio_kind(value: str) -> str:
    """How a wav.scp value gives its audio: "path" (an audio file), "pipe" (a command ending in
    '|' that prints audio) or "ark" (a Kaldi ark reference, ``[ark:]<file>.ark:<offset>``)."""
    if value.rstrip().endswith("|"):
        return "pipe"
    if _ARK_REF.match(value):
        return "ark"
    return "path"


def audio_path(value: str, base: Optional[PathLike] = None) -> str:
    """The file a "path" wav.scp value names.

    Args:
        value: The wav.scp value.
        base: Folder that relative paths are taken from; None: the value as written (so
            relative to the current directory, and named as written in errors).
    """
    if base is None:
        return value
    path = Path(value)
    return str(path if path.is_absolute() else Path(base) / path)


def _run_pipe(value: str, timeout_s: float) -> bytes:
    """What the command of a piped wav.scp value ("<command> |") prints.

    Raises:
        RuntimeError: The command exits with an error (its status and the end of its stderr).
        subprocess.TimeoutExpired: It runs longer than `timeout_s` seconds.
    """
    proc = subprocess.run(value.rstrip()[:-1], shell=True, capture_output=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(
            f"command exited with status {proc.returncode}: "
            f"{proc.stderr.decode(errors='replace').strip()[-300:]}"
        )
    return proc.stdout


def _load_ark(value: str) -> Tuple[np.ndarray, int]:
    """(samples as stored, rate in Hz) of an ark reference holding audio.

    Raises:
        RuntimeError: The entry holds a matrix (features) rather than audio.
    """
    import kaldiio  # Only needed for ark references; keeps reading plain files light.

    loaded = kaldiio.load_mat(value[4:] if value.startswith("ark:") else value)
    if not (isinstance(loaded, tuple) and len(loaded) == 2):
        raise RuntimeError("the ark entry holds a matrix (features), not audio")
    rate, samples = loaded
    return np.asarray(samples), int(rate)


class AudioHeader(NamedTuple):
    """What a recording's header says.

    Attributes:
        sample_rate: Samples per second (Hz).
        channels: Number of channels.
        seconds: Duration in seconds.
    """

    sample_rate: int
    channels: int
    seconds: float


def read_audio_header(value: str, base: Optional[PathLike] = None,
                      pipe_timeout_s: float = HEADER_PIPE_TIMEOUT_S) -> AudioHeader:
    """Rate, channels and duration of one wav.scp value, without decoding a file's samples.

    Files are read with ``soundfile.info`` (header only); an ark entry is loaded; a piped
    command is run, and its samples counted when its WAV header carries no length.

    Args:
        value: The wav.scp value.
        base: Folder of relative paths (see :func:`audio_path`).
        pipe_timeout_s: Seconds a piped command may run.

    Raises:
        Exception: Whatever the reader raises for missing or unreadable audio (soundfile's
            errors, OSError, RuntimeError, subprocess.TimeoutExpired).
    """
    kind = audio_kind(value)
    if kind == "ark":
        samples, rate = _load_ark(value)
        channels = 1 if samples.ndim == 1 else samples.shape[1]
        return AudioHeader(rate, int(channels), samples.shape[0] / float(rate))
    if kind == "pipe":
        with soundfile.SoundFile(io.BytesIO(_run_pipe(value, pipe_timeout_s))) as f:
            frames = f.frames
            if frames <= 0:  # Piped WAV headers often carry no length; count what arrives.
                frames = sum(len(b) for b in f.blocks(blocksize=65536))
            return AudioHeader(f.samplerate, f.channels, frames / float(f.samplerate))
    info = soundfile.info(audio_path(value, base))
    return AudioHeader(info.samplerate, info.channels, info.frames / float(info.samplerate))


def read_audio(value: str, base: Optional[PathLike] = None,
               pipe_timeout_s: float = READ_PIPE_TIMEOUT_S) -> Tuple[np.ndarray, int]:
    """Samples and rate of one wav.scp value (a file, a piped command or an ark entry).

    Args:
        value: The wav.scp value.
        base: Folder of relative paths (see :func:`audio_path`).
        pipe_timeout_s: Seconds a piped command may run.

    Returns:
        (float32 samples, [time] for mono or [time, channels]; rate in Hz). Files and piped
        audio are scaled to [-1, 1] by soundfile; 16-bit ark audio is divided by 32768.

    Raises:
        Exception: Whatever the reader raises for missing or unreadable audio.
    """
    kind = audio_kind(value)
    if kind == "pipe":
        samples, rate = soundfile.read(io.BytesIO(_run_pipe(value, pipe_timeout_s)), dtype="float32")
        return samples, rate
    if kind == "ark":
        samples, rate = _load_ark(value)
        if samples.dtype == np.int16:
            samples = samples.astype(np.float32) / 32768.0
        return samples.astype(np.float32), rate
    samples, rate = soundfile.read(audio_path(value, base), dtype="float32")
    return samples, rate


def read_recording(data_dir: PathLike, rec: str, value: str) -> Tuple[np.ndarray, int]:
    """(float32 mono samples, rate in Hz) of one wav.scp entry, as ESPnet's ``sound`` type
    reads it: relative paths from the current directory, no piped commands.

    Args:
        data_dir: The data dir (named in errors).
        rec: The recording id (named in errors).
        value: Its wav.scp value.

    Raises:
        DataDirError: A piped command, unreadable audio, or multi-channel audio.
    """
    if audio_kind(value) == "pipe":
        raise DataDirError(
            f"{data_dir}/wav.scp: recording '{rec}' is a piped command; ESPnet's 'sound' reader "
            "(and this scan) needs audio files: write the audio to files first"
        )
    try:
        audio, rate = read_audio(value)
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError/OSError
        raise DataDirError(f"{data_dir}/wav.scp: recording '{rec}': cannot read {value}: {e}") from None
    if audio.ndim != 1:
        raise DataDirError(
            f"{data_dir}/wav.scp: recording '{rec}' ({value}) has {audio.shape[1]} channels; "
            "the scan needs mono audio"
        )
    return audio, rate


def cut_segment(samples: np.ndarray, rate: int, segment: Segment) -> np.ndarray:
    """The samples of `segment` (times in seconds, end -1: to the end) of its recording."""
    end = len(samples) if segment.end == -1 else int(round(segment.end * rate))
    return samples[int(round(segment.start * rate)):end]


def utterance_audio(data: KaldiDataDir, utterances: Sequence[str],
                    data_dir: PathLike) -> Iterator[Tuple[str, np.ndarray, int]]:
    """(utterance id, contiguous float32 mono samples, rate in Hz) of each utterance, in the
    order given: recordings read with :func:`read_recording`, each once, segments cut from them.

    Args:
        data: The data dir's contents.
        utterances: Utterance ids of `data`.
        data_dir: The data dir (named in errors).

    Raises:
        DataDirError: A recording missing from wav.scp, or one :func:`read_recording` refuses.
    """
    recordings: Dict[str, Tuple[np.ndarray, int]] = {}
    for utt in utterances:
        rec = data.recording_of(utt)
        if rec not in data.wav_scp:
            raise DataDirError(f"{data_dir}/wav.scp: recording '{rec}' of utterance '{utt}' is missing")
        if rec not in recordings:
            recordings[rec] = read_recording(data_dir, rec, data.wav_scp[rec])
        samples, rate = recordings[rec]
        if data.segments is not None:
            samples = cut_segment(samples, rate, data.segments[utt])
        yield utt, np.ascontiguousarray(samples), rate


def wav_truncation(file: PathLike) -> Optional[Tuple[int, int]]:
    """(bytes of sample data the header of a RIFF/WAVE file declares, bytes the file holds), when
    the file holds fewer; None for complete WAV files and for other formats.

    Reads the chunk headers only (a few bytes per chunk), never the samples. Readers such as
    soundfile silently shorten a truncated file to what is there, so its frame count alone does
    not show the loss. A declared size of 0xFFFFFFFF (streamed WAV of unknown length) is not a
    promise and is accepted.
    """
    file = Path(file)
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        for _ in range(1000):  # real files have a handful of chunks; a bound guards odd ones
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            declared = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                present = size - f.tell()
                return (declared, present) if declared != 0xFFFFFFFF and present < declared else None
            f.seek(declared + (declared & 1), io.SEEK_CUR)  # chunks are padded to even sizes
    return None


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
        if wanted is not None and rec not in wanted:
            continue
        if audio_kind(value) != "path":
            continue
        try:
            rate = read_audio_header(value).sample_rate
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
