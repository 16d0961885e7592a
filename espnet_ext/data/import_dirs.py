"""Bring existing Kaldi data dirs into a recipe's `data/`, checked, as training can read them.

Training and decoding read audio with ESPnet's `sound` loader: one audio file per utterance,
keyed by utterance id, read whole with soundfile. It supports neither `segments`, nor piped
commands (`... |`), nor Kaldi ark references, although `espnet_ext.data.validate` accepts them as
well-formed Kaldi. A dir that uses any of them is therefore refused with a clear message, unless
`extract_audio` is set: then each utterance is written as a 16-bit FLAC file (segments cut,
commands run, ark entries loaded) and `wav.scp` points at those files.

Modes: `copy` (default) writes a copy with absolute audio paths (relative ones are resolved
against `audio_base`), so later changes to the source do not leak into a trained recipe; `link`
makes `data/<name>` a symbolic link to the source. Either way the result is validated (audio headers
included) before it appears under its name, and an imported dir is not imported again: a re-run is a
no-op, and a different source for the same name is an error rather than a silent overwrite.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import soundfile

from espnet_ext.data.audio import audio_kind, cut_segment, read_audio
from espnet_ext.data.kaldi import DataDirError, KaldiDataDir, PathLike, Segment
from espnet_ext.data.outdir import building_dir
from espnet_ext.data.validate import DataDirSummary, validate_data_dir
from espnet_ext.utils.atomic import atomic_output

logger = logging.getLogger(__name__)

MODES = ("copy", "link")
MARKER = ".import.json"
AUDIO_SUBDIR = "audio"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def unsupported_audio(data: KaldiDataDir) -> Optional[str]:
    """Why ESPnet's `sound` loader cannot read this dir as it is, or None when it can."""
    if data.segments is not None:
        return "it has a segments file (utterances cut from longer recordings)"
    for rec, value in data.wav_scp.items():
        kind = audio_kind(value)
        if kind == "pipe":
            return f"wav.scp entry '{rec}' is a piped command ('{value}')"
        if kind == "ark":
            return f"wav.scp entry '{rec}' is a Kaldi ark reference ('{value}')"
    return None


def check_name(name: str) -> None:
    """A data dir name is one path component of letters, digits, '_', '-', '.'."""
    if not _NAME.match(name):
        raise DataDirError(
            f"data dir name {name!r} is not allowed; use letters, digits, '_', '-' and '.' "
            f"(e.g. train, dev, test_other)"
        )


def import_data_dir(
    src: PathLike,
    dst: PathLike,
    mode: str = "copy",
    extract_audio: bool = False,
    audio_base: Optional[PathLike] = None,
    check_audio: bool = True,
    expected_rate: int = 16000,
) -> DataDirSummary:
    """Import the Kaldi dir `src` as `dst` (see the module docstring).

    Args:
        src: An existing Kaldi data dir.
        dst: Where it goes, e.g. `data/train`.
        mode: "copy" or "link".
        extract_audio: Write every utterance as FLAC under `dst/audio/` (needed for segments,
            piped commands and ark references; implies a copy).
        audio_base: Folder that relative audio paths in `src/wav.scp` are relative to
            (default: the current directory, as the validation takes them).
        check_audio: Validate audio headers (existence, 16 kHz, mono).
        expected_rate: Required sample rate in Hz.

    Returns:
        The summary of the imported dir.

    Raises:
        DataDirError: Invalid source, audio the training cannot read (without `extract_audio`),
            or `dst` exists and was not imported from `src` with the same options.
    """
    if mode not in MODES:
        raise DataDirError(f"import mode must be one of {', '.join(MODES)}, got {mode!r}")
    src, dst = Path(src).absolute(), Path(dst)
    check_name(dst.name)
    if not src.is_dir():
        raise DataDirError(
            f"{src}: not a folder; pass the path of an existing Kaldi data dir (wav.scp, text, "
            f"utt2spk, spk2utt; see egs2/TEMPLATE/asr1/README.md)"
        )
    base = Path(audio_base).absolute() if audio_base is not None else Path.cwd()
    if extract_audio:
        mode = "copy"
    marker = {"source": str(src.resolve()), "mode": mode, "extract_audio": extract_audio,
              "audio_base": str(base)}
    if _already_imported(dst, marker):
        logger.info("%s: already imported from %s; kept (delete it to import again)", dst, src)
        return validate_data_dir(dst, check_audio=False, expected_rate=expected_rate)
    _refuse_existing(src, dst)
    data = _read_source(src, extract_audio, expected_rate)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "link":
        return _link(src, dst, data, base, marker, check_audio, expected_rate)
    _copy(src, dst, data, base, marker, extract_audio, check_audio, expected_rate)
    logger.info("%s: imported from %s (%s%s)", dst, src, mode, ", audio extracted" if extract_audio else "")
    return validate_data_dir(dst, check_audio=False, expected_rate=expected_rate)


def _refuse_existing(src: Path, dst: Path) -> None:
    """Raise when `dst` exists (it was not imported from `src` with the same options)."""
    if dst.exists() or dst.is_symlink():
        previous = _read_marker(dst)
        origin = f"was imported from {previous['source']} with other options" if previous else \
            "was not made by an import"
        raise DataDirError(
            f"{dst} already exists and {origin}; delete it (rm -r {dst}) to import {src} there, "
            f"or import under another name"
        )


def _read_source(src: Path, extract_audio: bool, expected_rate: int) -> KaldiDataDir:
    """The source dir, its structure (sorting, keys, transcripts) validated; audio the `sound`
    loader cannot read is refused unless it is to be extracted. Audio is checked on the result."""
    validate_data_dir(src, check_audio=False, expected_rate=expected_rate)
    data = KaldiDataDir.read(src)
    reason = unsupported_audio(data)
    if reason and not extract_audio:
        raise DataDirError(
            f"{src}: {reason}. Training and decoding read audio with ESPnet's `sound` loader, "
            f"which needs one audio file per utterance (no segments, piped commands or ark "
            f"references). Import with --extract_audio (own_corpus run.sh: --import_opts "
            f"\"--extract_audio true\"; local/data.sh: --extract_audio true) to write each utterance "
            f"as a FLAC file, or give each utterance its own audio file"
        )
    return data


def _link(src: Path, dst: Path, data: KaldiDataDir, base: Path, marker: dict, check_audio: bool,
          expected_rate: int) -> DataDirSummary:
    """Make `dst` a symbolic link to the validated `src`, its marker next to it."""
    relative = [v for v in data.wav_scp.values() if not os.path.isabs(v)]
    if relative and base != Path.cwd():
        raise DataDirError(
            f"{src}/wav.scp has relative audio paths (e.g. '{relative[0]}'), which a link can "
            f"only keep relative to the recipe directory; import it with mode copy instead"
        )
    summary = validate_data_dir(src, check_audio=check_audio, expected_rate=expected_rate)
    os.symlink(src, dst, target_is_directory=True)
    _write_marker_for_link(dst, marker)
    return summary


def _copy(src: Path, dst: Path, data: KaldiDataDir, base: Path, marker: dict, extract_audio: bool,
          check_audio: bool, expected_rate: int) -> None:
    """Write `dst` as a copy of `data`: audio paths made absolute, or the audio extracted.

    Built in a fresh hidden folder next to dst, which any failure removes again (with the audio
    extracted so far): only a complete, validated import appears under its name.
    """
    with building_dir(dst) as tmp:
        if extract_audio:
            data = _extract(data, src, base, tmp / AUDIO_SUBDIR, dst.absolute() / AUDIO_SUBDIR, expected_rate)
        else:
            data.wav_scp = {r: str((base / v).resolve()) if not os.path.isabs(v) else v
                            for r, v in data.wav_scp.items()}
        data.write(tmp)
        try:
            validate_data_dir(tmp, check_audio=check_audio and not extract_audio, expected_rate=expected_rate)
        except DataDirError as e:
            # Same sorted files, same line numbers: name the source the user can fix.
            raise DataDirError(str(e).replace(str(tmp), str(src))) from None
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        tmp.rename(dst)


def import_data_dirs(
    sources: Mapping[str, PathLike],
    data_dir: PathLike,
    **kwargs,
) -> List[DataDirSummary]:
    """Import several dirs as `<data_dir>/<name>`; every source is checked before any is written.

    Args:
        sources: Name -> source dir, e.g. `{"train": "/corpora/x/train", "dev": ...}`.
        data_dir: Parent of the imported dirs (the recipe's `data`).
        **kwargs: As `import_data_dir`.

    Returns:
        One summary per imported dir, in the order given.
    """
    for name, src in sources.items():
        check_name(name)
        if not Path(src).is_dir():
            raise DataDirError(
                f"{Path(src).absolute()} (for data/{name}): not a folder; pass the path of an "
                f"existing Kaldi data dir (wav.scp, text, utt2spk, spk2utt)"
            )
        validate_data_dir(Path(src).absolute(), check_audio=False)
    resolved: Dict[str, str] = {}
    for name, src in sources.items():
        key = str(Path(src).absolute().resolve())
        if key in resolved:
            logger.warning("%s and %s are the same source dir %s", resolved[key], name, src)
        resolved[key] = name
    return [import_data_dir(src, Path(data_dir) / name, **kwargs) for name, src in sources.items()]


def _read_marker(dst: Path) -> Optional[dict]:
    for f in (dst / MARKER, dst.with_name(f".{dst.name}{MARKER}")):
        try:
            return json.loads(f.read_text())
        except (OSError, ValueError):
            continue
    return None


def _already_imported(dst: Path, marker: dict) -> bool:
    return (dst.exists() or dst.is_symlink()) and _read_marker(dst) == marker and (dst / "wav.scp").is_file()


def _write_marker_for_link(dst: Path, marker: dict) -> None:
    # Never write into the linked source: the marker of a link sits next to it.
    (dst.with_name(f".{dst.name}{MARKER}")).write_text(json.dumps(marker, indent=1) + "\n")


def _read_source_recording(src: Path, rec: str, value: str, base: Path,
                           expected_rate: int) -> Tuple[np.ndarray, int]:
    """(float32 mono samples, rate in Hz) of one recording of the source, for extraction.

    Raises:
        DataDirError: Unreadable audio, more than one channel, or another rate than expected.
    """
    try:
        samples, rate = read_audio(value, base)
    except Exception as e:  # noqa: BLE001 - any reader failure is reported the same way
        raise DataDirError(
            f"{src}/wav.scp: recording '{rec}': cannot read audio '{value}': {e}; "
            f"fix the entry or the file"
        ) from None
    if samples.ndim != 1:
        raise DataDirError(
            f"{src}/wav.scp: recording '{rec}' has {samples.shape[1]} channels, expected mono; "
            f"downmix it (e.g. `sox in.wav -c 1 out.flac`, or `remix 1` for one channel)"
        )
    if expected_rate and rate != expected_rate:
        raise DataDirError(
            f"{src}/wav.scp: recording '{rec}': sample rate {rate} Hz, expected "
            f"{expected_rate} Hz; resample it (e.g. `sox in.wav -r {expected_rate} out.flac`)"
        )
    return samples, rate


def _cut_checked_segment(src: Path, utt: str, rec: str, samples: np.ndarray, rate: int,
                         segment: Segment) -> np.ndarray:
    """The samples of utterance `utt`'s segment of recording `rec`.

    Raises:
        DataDirError: The segment ends more than 10 ms after the recording.
    """
    end = len(samples) if segment.end == -1 else int(round(segment.end * rate))
    if end > len(samples) + int(0.01 * rate):
        raise DataDirError(
            f"{src}/segments: utterance '{utt}' ends at {segment.end} s, after the end of "
            f"recording '{rec}' ({len(samples) / rate:.3f} s); fix the times"
        )
    return cut_segment(samples, rate, segment)


def _extract(
    data: KaldiDataDir, src: Path, base: Path, out_dir: Path, final_dir: Path, expected_rate: int
) -> KaldiDataDir:
    """Write one 16-bit FLAC per utterance into `out_dir`; wav.scp points into `final_dir`."""
    bad = next((u for u in data.utterances if "/" in u), None)
    if bad is not None:
        raise DataDirError(f"{src}: utterance id '{bad}' contains '/', which cannot name its FLAC file; rename it")
    out_dir.mkdir(parents=True, exist_ok=True)
    cached: Tuple[Optional[str], Optional[np.ndarray], int] = (None, None, 0)
    wav_scp: Dict[str, str] = {}
    for utt in data.utterances:
        rec = data.recording_of(utt)
        if cached[0] != rec:  # segments of one recording are usually adjacent: read it once
            cached = (rec, *_read_source_recording(src, rec, data.wav_scp[rec], base, expected_rate))
        _, samples, rate = cached
        if data.segments is not None:
            samples = _cut_checked_segment(src, utt, rec, samples, rate, data.segments[utt])
        if len(samples) == 0:
            where = f"recording '{rec}' ('{data.wav_scp[rec]}')"
            if data.segments is not None:
                where += f", segment {data.segments[utt].start}-{data.segments[utt].end} s"
            raise DataDirError(
                f"{src}: utterance '{utt}' has no audio samples ({where}); training cannot use "
                f"it: fix the audio or remove the utterance from every file of the data dir"
            )
        name = f"{utt}.flac"
        with atomic_output(out_dir / name) as tmp:
            soundfile.write(str(tmp), np.clip(samples, -1.0, 1.0), rate, subtype="PCM_16", format="FLAC")
        wav_scp[utt] = str(final_dir / name)
    return KaldiDataDir(
        wav_scp=wav_scp,
        text=data.text,
        utt2spk=data.utt2spk,
        segments=None,
        utt_fields=data.utt_fields,
        spk_fields=data.spk_fields,
    )
