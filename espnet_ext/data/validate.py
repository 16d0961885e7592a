"""Check a Kaldi data dir before anything trains on it, with one clear error per problem.

`validate_data_dir` reads only; it never writes, sorts or repairs. The first problem found is
raised as `DataDirError` naming the file, the line or key, and the fix. Checks, in order:

1. the folder and the required files (wav.scp, text, utt2spk, spk2utt) exist;
2. every file is well-formed UTF-8 `<key> <value>` lines, keys unique and sorted (C byte order);
3. the utterance keys of wav.scp (or segments), text and utt2spk agree; segments name known
   recordings; spk2utt is the inverse of utt2spk; speaker ids sort like utterance ids (Kaldi's
   "speaker id is a prefix of the utterance id" rule); `utt2*`/`spk2*` metadata cover the same keys;
4. no transcript is empty;
5. wav.scp values are well-formed (a path, a command ending in '|', or a Kaldi ark reference);
6. optionally the audio: files exist and are readable, have the expected sample rate and one
   channel and at least one sample (header reads only, no decoding; ark references are loaded
   with kaldiio; piped commands run only when asked); a WAV file shorter than its header says
   (truncated copy or download) is logged as a warning.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from espnet_ext.data.audio import audio_kind, read_audio_header, wav_truncation
from espnet_ext.data.kaldi import (
    CORE_UTT_FILES,
    DataDirError,
    PathLike,
    Segment,
    iter_kaldi_lines,
    kaldi_sort_key,
    parse_segment,
    spk2utt_from_utt2spk,
)

__all__ = ["DataDirError", "DataDirSummary", "validate_data_dir"]

logger = logging.getLogger(__name__)


def _spk2utt_command(path: Path) -> str:
    return (
        f"awk '{{a[$2]=a[$2]\" \"$1}} END{{for(s in a) print s a[s]}}' {path}/utt2spk "
        f"| LC_ALL=C sort > {path}/spk2utt"
    )


@dataclasses.dataclass
class DataDirSummary:
    """What a valid data dir holds.

    Attributes:
        path: The data dir.
        num_utterances: Number of utterances.
        num_speakers: Number of speakers.
        num_recordings: Number of wav.scp entries.
        total_seconds: Speech duration in seconds: from the audio headers when audio was checked,
            else from segments or utt2dur; None when none of these is available.
    """

    path: str
    num_utterances: int
    num_speakers: int
    num_recordings: int
    total_seconds: Optional[float]

    @property
    def hours(self) -> Optional[float]:
        """Total duration in hours, or None if unknown."""
        return None if self.total_seconds is None else self.total_seconds / 3600.0

    def line(self) -> str:
        """One-line summary, e.g. `data/train: 1200 utts, 12 speakers, 0.83 h`."""
        hours = "? h" if self.hours is None else f"{self.hours:.2f} h"
        return f"{self.path}: {self.num_utterances} utts, {self.num_speakers} speakers, {hours}"


def _read_sorted_map(path: Path, allow_empty_value: bool = False) -> Dict[str, Tuple[int, str]]:
    """Read a map file checking unique, C-sorted keys: `{key: (line_number, value)}`."""
    entries: Dict[str, Tuple[int, str]] = {}
    prev_key, prev_line = None, 0
    for lineno, key, value in iter_kaldi_lines(path, allow_empty_value=allow_empty_value):
        if key in entries:
            raise DataDirError(
                f"{path} line {lineno}: duplicate key '{key}' (also on line {entries[key][0]}); "
                f"keep one line per key (remove or rename the other)"
            )
        if prev_key is not None and kaldi_sort_key(key) < kaldi_sort_key(prev_key):
            raise DataDirError(
                f"{path} line {lineno}: not sorted: key '{key}' comes after '{prev_key}' "
                f"(line {prev_line}); Kaldi files must be sorted in C byte order: "
                f"run `LC_ALL=C sort -o {path} {path}`"
            )
        entries[key] = (lineno, value)
        prev_key, prev_line = key, lineno
    return entries


def _compare_keys(
    path: Path, name_a: str, keys_a: Set[str], name_b: str, keys_b: Set[str], what: str
) -> None:
    """Raise naming an example key present in one file and missing from the other."""
    if keys_a == keys_b:
        return
    only_a = sorted(keys_a - keys_b, key=kaldi_sort_key)
    only_b = sorted(keys_b - keys_a, key=kaldi_sort_key)
    if only_a:
        example, has, lacks, n = only_a[0], name_a, name_b, len(only_a)
    else:
        example, has, lacks, n = only_b[0], name_b, name_a, len(only_b)
    raise DataDirError(
        f"{path}/{lacks}: {what} '{example}' is in {has} but missing from {lacks} "
        f"({n} {what}(s) in {has} lack a line in {lacks}); every {what} needs a line in both: "
        f"add the missing lines or remove the {what} from {has}"
    )


def _check_wav_scp_value(path: Path, lineno: int, key: str, value: str) -> str:
    kind = audio_kind(value)
    if kind == "pipe":
        if not value[:-1].strip():
            raise DataDirError(
                f"{path} line {lineno}: recording '{key}' has an empty command before '|'; "
                f"write '<key> <command that prints audio> |'"
            )
    elif kind == "path" and any(c.isspace() for c in value):
        raise DataDirError(
            f"{path} line {lineno}: recording '{key}': value '{value}' has spaces but does not end "
            f"in '|'; write a path without spaces, or a command that prints audio followed by ' |'"
        )
    return kind


@dataclasses.dataclass
class _MapFiles:
    """The map files of a data dir, each `{key: (line number, value)}`; segments parsed.

    Attributes:
        wav_scp, text, utt2spk, spk2utt: The required files.
        segments: Utterance -> (line number, Segment), or None without a segments file.
    """

    wav_scp: Dict[str, Tuple[int, str]]
    text: Dict[str, Tuple[int, str]]
    utt2spk: Dict[str, Tuple[int, str]]
    spk2utt: Dict[str, Tuple[int, str]]
    segments: Optional[Dict[str, Tuple[int, Segment]]]

    @property
    def utt_file(self) -> str:
        """The file whose keys are the utterances: segments if there is one, else wav.scp."""
        return "segments" if self.segments is not None else "wav.scp"

    @property
    def utterances(self) -> Set[str]:
        """Utterance ids (keys of :attr:`utt_file`)."""
        return set(self.segments if self.segments is not None else self.wav_scp)


def _check_required_files(path: Path) -> None:
    """Raise unless `path` is a folder holding wav.scp, text, utt2spk and spk2utt."""
    if not path.is_dir():
        raise DataDirError(
            f"{path}: data dir does not exist (or is not a folder); run the data preparation "
            f"stage (local/data.sh) first"
        )
    for name in ("wav.scp", "text", "utt2spk"):
        if not (path / name).is_file():
            raise DataDirError(
                f"{path}/{name}: required file is missing; a Kaldi data dir needs wav.scp, text, "
                f"utt2spk and spk2utt"
            )
    if not (path / "spk2utt").is_file():
        raise DataDirError(
            f"{path}/spk2utt: required file is missing; create it from utt2spk with: "
            f"{_spk2utt_command(path)}"
        )


def _read_map_files(path: Path) -> _MapFiles:
    """Read the required files and segments, each checked for unique, sorted keys."""
    wav_scp = _read_sorted_map(path / "wav.scp")
    text = _read_sorted_map(path / "text", allow_empty_value=True)
    utt2spk = _read_sorted_map(path / "utt2spk")
    spk2utt = _read_sorted_map(path / "spk2utt")
    segments = None
    if (path / "segments").is_file():
        segments = {
            utt: (lineno, parse_segment(path / "segments", utt, value))
            for utt, (lineno, value) in _read_sorted_map(path / "segments").items()
        }
    return _MapFiles(wav_scp, text, utt2spk, spk2utt, segments)


def _check_utterance_keys(path: Path, files: _MapFiles) -> None:
    """Raise unless text and utt2spk cover the utterances, and segments name known recordings."""
    utts = files.utterances
    _compare_keys(path, files.utt_file, utts, "text", set(files.text), "utterance")
    _compare_keys(path, files.utt_file, utts, "utt2spk", set(files.utt2spk), "utterance")
    if files.segments is not None:
        for utt, (lineno, seg) in files.segments.items():
            if seg.recording not in files.wav_scp:
                raise DataDirError(
                    f"{path}/segments line {lineno}: utterance '{utt}' refers to recording "
                    f"'{seg.recording}', which is not in wav.scp; add the recording to wav.scp or "
                    f"remove the segment"
                )


def _check_spk2utt(path: Path, files: _MapFiles) -> Set[str]:
    """Raise unless spk2utt is exactly the inverse of utt2spk; returns the speaker ids."""
    expected = spk2utt_from_utt2spk({u: s for u, (_, s) in files.utt2spk.items()})
    for spk, (lineno, value) in files.spk2utt.items():
        listed = value.split()
        if spk not in expected or sorted(listed) != sorted(expected[spk]) or len(set(listed)) != len(listed):
            extra = sorted(set(listed) - set(expected.get(spk, [])))
            missing = sorted(set(expected.get(spk, [])) - set(listed))
            detail = (
                f"lists '{extra[0]}', which utt2spk does not give to '{spk}'"
                if extra
                else f"lacks '{missing[0]}'"
                if missing
                else "lists an utterance twice"
            )
            raise DataDirError(
                f"{path}/spk2utt line {lineno}: speaker '{spk}' disagrees with utt2spk ({detail}); "
                f"regenerate spk2utt from utt2spk: {_spk2utt_command(path)}"
            )
    missing_spk = sorted(set(expected) - set(files.spk2utt), key=kaldi_sort_key)
    if missing_spk:
        raise DataDirError(
            f"{path}/spk2utt: speaker '{missing_spk[0]}' of utt2spk has no line in spk2utt; "
            f"regenerate spk2utt from utt2spk: {_spk2utt_command(path)}"
        )
    return set(expected)


def _check_speaker_order(path: Path, utt2spk: Dict[str, Tuple[int, str]]) -> None:
    """Raise unless sorting by (speaker, utterance) gives the utterance order.

    Kaldi/ESPnet tools that walk utt2spk and spk2utt in step go wrong otherwise.
    """
    by_speaker = sorted(utt2spk, key=lambda u: (kaldi_sort_key(utt2spk[u][1]), kaldi_sort_key(u)))
    for (u_file, u_spk) in zip(utt2spk, by_speaker):
        if u_file != u_spk:
            raise DataDirError(
                f"{path}/utt2spk line {utt2spk[u_file][0]}: utterance '{u_file}' (speaker "
                f"'{utt2spk[u_file][1]}') breaks speaker order: sorted by speaker, '{u_spk}' "
                f"(speaker '{utt2spk[u_spk][1]}') would come here; make each speaker id a prefix "
                f"of its utterance ids (e.g. '<spk>-<utt>')"
            )


def _check_transcripts(path: Path, text: Dict[str, Tuple[int, str]]) -> None:
    """Raise at the first empty transcript."""
    for utt, (lineno, transcript) in text.items():
        if not transcript.strip():
            raise DataDirError(
                f"{path}/text line {lineno}: utterance '{utt}' has an empty transcript; give it "
                f"its words, or remove the utterance from every file of the data dir"
            )


def _check_utt2dur(meta: Path, entries: Dict[str, Tuple[int, str]]) -> None:
    """Raise at the first utt2dur value that is not a non-negative number of seconds."""
    for utt, (lineno, value) in entries.items():
        try:
            ok = float(value) >= 0
        except ValueError:
            ok = False
        if not ok:
            raise DataDirError(
                f"{meta} line {lineno}: utterance '{utt}': duration '{value}' is not a "
                f"non-negative number of seconds"
            )


def _check_metadata(path: Path, files: _MapFiles, speakers: Set[str]) -> Optional[Dict[str, Tuple[int, str]]]:
    """Raise unless every `utt2*`/`spk2*` metadata file covers the same keys as the files it
    annotates (and utt2dur holds durations); returns utt2dur's entries, or None without one."""
    utt2dur = None
    for meta in sorted(p for p in path.iterdir() if p.is_file()):
        name = meta.name
        if name.startswith("utt2") and name not in CORE_UTT_FILES and name != "utt2spk":
            entries = _read_sorted_map(meta)
            _compare_keys(path, files.utt_file, files.utterances, name, set(entries), "utterance")
            if name == "utt2dur":
                utt2dur = entries
                _check_utt2dur(meta, entries)
        elif name.startswith("spk2") and name != "spk2utt":
            entries = _read_sorted_map(meta)
            _compare_keys(path, "utt2spk", speakers, name, set(entries), "speaker")
    return utt2dur


def _warn_if_truncated(path: Path, lineno: int, rec: str, file: Path) -> None:
    """Log a warning when a WAV file holds fewer samples than its header declares."""
    try:
        shortfall = wav_truncation(file)
    except OSError:
        shortfall = None  # unreadable: the header read that follows reports it
    if shortfall is not None:
        declared, present = shortfall
        logger.warning(
            "%s/wav.scp line %d: recording '%s': %s is truncated: its header declares "
            "%d bytes of samples but the file holds only %d (%.1f%%); training reads only "
            "what is there: copy or re-create the file", path, lineno, rec, file,
            declared, present, 100.0 * present / declared)


def _check_recording(path: Path, files: _MapFiles, rec: str, kind: str, base: Path,
                     expected_rate: Optional[int]) -> float:
    """Check one recording's audio (exists, readable, rate, mono, not empty); its seconds."""
    lineno, value = files.wav_scp[rec]
    if kind == "path":
        file = Path(value) if os.path.isabs(value) else base / value
        if not file.is_file():
            raise DataDirError(
                f"{path}/wav.scp line {lineno}: recording '{rec}': audio file {value} does "
                f"not exist (relative paths are taken from {base}); fix the path or "
                f"re-run the data preparation"
            )
        _warn_if_truncated(path, lineno, rec, file)
    try:
        rate, channels, seconds = read_audio_header(value, base)
    except Exception as e:  # noqa: BLE001 - any reader failure is reported the same way
        raise DataDirError(
            f"{path}/wav.scp line {lineno}: recording '{rec}': cannot read audio "
            f"'{value}': {e}; replace the file or fix the entry"
        ) from None
    if expected_rate is not None and rate != expected_rate:
        raise DataDirError(
            f"{path}/wav.scp line {lineno}: recording '{rec}': sample rate {rate} Hz, "
            f"expected {expected_rate} Hz ({value}); resample, e.g. `sox in.wav -r "
            f"{expected_rate} out.flac`"
        )
    if channels != 1:
        raise DataDirError(
            f"{path}/wav.scp line {lineno}: recording '{rec}': {channels} channels, "
            f"expected mono ({value}); downmix, e.g. `sox in.wav -c 1 out.flac` (or pick a channel "
            f"with `remix 1`)"
        )
    if seconds <= 0:
        utts_of_rec = (
            [rec] if files.segments is None
            else [u for u, (_, seg) in files.segments.items() if seg.recording == rec]
        )
        shown = "', '".join(utts_of_rec[:3]) + ("', ..." if len(utts_of_rec) > 3 else "'")
        raise DataDirError(
            f"{path}/wav.scp line {lineno}: recording '{rec}': audio '{value}' has no "
            f"samples (a header only), so utterance(s) '{shown} cannot be trained or "
            f"scored on; re-create the file, or remove the utterance(s) from every file of "
            f"the data dir"
        )
    return seconds


def _check_audio(path: Path, files: _MapFiles, kinds: Dict[str, str], expected_rate: Optional[int],
                 run_pipes: bool) -> Dict[str, float]:
    """Check every recording's audio (piped ones only with `run_pipes`); recording -> seconds.

    Relative audio paths are taken from the current directory, as training reads them.
    """
    base = Path.cwd()
    durations: Dict[str, float] = {}
    for rec in files.wav_scp:
        if kinds[rec] == "pipe" and not run_pipes:
            continue
        durations[rec] = _check_recording(path, files, rec, kinds[rec], base, expected_rate)
    return durations


def _check_segment_ends(path: Path, files: _MapFiles, durations: Dict[str, float]) -> None:
    """Raise at the first segment that ends after its recording (when that one was read)."""
    for utt, (lineno, seg) in (files.segments or {}).items():
        rec_seconds = durations.get(seg.recording)
        if rec_seconds is not None and seg.end > rec_seconds + 0.01:
            raise DataDirError(
                f"{path}/segments line {lineno}: utterance '{utt}' ends at {seg.end} s, after "
                f"the end of recording '{seg.recording}' ({rec_seconds:.3f} s); fix the times"
            )


def _total_seconds(files: _MapFiles, durations: Dict[str, float],
                   utt2dur: Optional[Dict[str, Tuple[int, str]]]) -> Optional[float]:
    """Speech duration in seconds: from segments (with the audio read where a segment runs to
    the end), from every recording's audio, or from utt2dur; None when none of these tells."""
    if files.segments is not None:
        total: Optional[float] = 0.0
        for _, seg in files.segments.values():
            rec_seconds = durations.get(seg.recording)
            if seg.end == -1:
                total = None if rec_seconds is None or total is None else total + rec_seconds - seg.start
            elif total is not None:
                total += seg.end - seg.start
        return total
    if durations and len(durations) == len(files.wav_scp):
        return sum(durations.values())
    if utt2dur is not None:
        return sum(float(v) for _, v in utt2dur.values())
    return None


def validate_data_dir(
    path: PathLike,
    check_audio: bool = True,
    expected_rate: Optional[int] = 16000,
    run_pipes: bool = False,
) -> DataDirSummary:
    """Check a Kaldi data dir and summarize it; never modifies anything.

    Args:
        path: The data dir.
        check_audio: Read the header of every audio file (existence, sample rate, channels).
        expected_rate: Required sample rate in Hz; None accepts any rate.
        run_pipes: Also run piped wav.scp commands ("... |") and check the audio they print;
            otherwise piped entries are only checked to be well-formed.

    Returns:
        A `DataDirSummary`.

    Raises:
        DataDirError: The first problem found, naming the file, the line or key, and the fix.
    """
    path = Path(path)
    _check_required_files(path)
    files = _read_map_files(path)
    _check_utterance_keys(path, files)
    speakers = _check_spk2utt(path, files)
    _check_speaker_order(path, files.utt2spk)
    _check_transcripts(path, files.text)
    utt2dur = _check_metadata(path, files, speakers)
    kinds = {
        rec: _check_wav_scp_value(path / "wav.scp", lineno, rec, value)
        for rec, (lineno, value) in files.wav_scp.items()
    }
    durations = _check_audio(path, files, kinds, expected_rate, run_pipes) if check_audio else {}
    _check_segment_ends(path, files, durations)
    return DataDirSummary(
        path=str(path),
        num_utterances=len(files.utterances),
        num_speakers=len(speakers),
        num_recordings=len(files.wav_scp),
        total_seconds=_total_seconds(files, durations, utt2dur),
    )


def validate_data_dirs(paths: Sequence[PathLike], **kwargs) -> List[DataDirSummary]:
    """Validate several data dirs; stops at the first invalid one (see `validate_data_dir`)."""
    return [validate_data_dir(p, **kwargs) for p in paths]
