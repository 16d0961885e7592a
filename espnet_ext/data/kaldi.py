"""Read and write Kaldi-style data directories (wav.scp, text, utt2spk, spk2utt, ...).

A Kaldi data dir is a folder of "map" files: one `<key> <value>` line per entry, sorted by key
in C-locale byte order. Required files are `wav.scp` (recording -> audio path or piped command),
`text` (utterance -> transcript), `utt2spk` (utterance -> speaker) and `spk2utt` (its inverse).
Optional: `segments` (utterance -> recording, start, end in seconds) and any `utt2<field>` /
`spk2<field>` metadata file (`utt2dur`, `utt2voice`, `spk2gender`, ...).

Writers here always sort by key so that Kaldi, ESPnet and `LC_ALL=C sort -c` agree with us.
Checking a directory that came from elsewhere is the job of `espnet_ext.data.validate`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from espnet_ext.utils.atomic import write_text_atomic

PathLike = Union[str, os.PathLike]

# Files every data dir has; `segments` is optional, the rest are per-key metadata.
REQUIRED_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")
# Per-utterance files handled explicitly (not as generic `utt2<field>` metadata).
CORE_UTT_FILES = ("text", "utt2spk", "segments")
# The UTF-8 byte-order mark some editors put at the start of a text file.
UTF8_BOM = b"\xef\xbb\xbf"


class DataDirError(ValueError):
    """A Kaldi data dir (or one of its files) is missing, malformed or inconsistent.

    The message names the file, the line or key, and what to do about it.
    """


def kaldi_sort_key(key: str) -> bytes:
    """Sort key equal to `LC_ALL=C sort` order: byte-wise comparison of the UTF-8 key."""
    return key.encode("utf-8")


def iter_kaldi_lines(path: PathLike, allow_empty_value: bool = False) -> Iterator[Tuple[int, str, str]]:
    """Yield `(line_number, key, value)` for each line of a Kaldi map file.

    The key is everything before the first run of whitespace; the value is the rest of the line
    (may contain spaces, e.g. a transcript or a piped command).

    Args:
        path: The map file.
        allow_empty_value: Accept lines with a key only (value ""), as `text` may have them;
            otherwise such a line is malformed.

    Yields:
        Tuples (1-based line number, key, value).

    Raises:
        DataDirError: Undecodable bytes, Windows line ends, blank lines or a key without value.
    """
    path = Path(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(UTF8_BOM):
                # Editors on Windows add it; Kaldi and ESPnet would read it as part of the first key.
                raise DataDirError(
                    f"{path} line 1: the file starts with a UTF-8 byte-order mark (bytes EF BB BF), "
                    f"which Kaldi tools read as part of the first key; remove it with "
                    f"`sed -i '1s/^\\xEF\\xBB\\xBF//' {path}`"
                )
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataDirError(
                    f"{path} line {lineno}: not valid UTF-8 ({e.reason} at byte {e.start}); "
                    f"re-encode the file as UTF-8"
                ) from None
            line = line.rstrip("\n")
            if line.endswith("\r"):
                raise DataDirError(
                    f"{path} line {lineno}: Windows line ending (\\r\\n); "
                    f"convert the file with `dos2unix {path}` or `sed -i 's/\\r$//' {path}`"
                )
            if not line.strip():
                raise DataDirError(f"{path} line {lineno}: blank line; delete it")
            if line[0].isspace():
                raise DataDirError(
                    f"{path} line {lineno}: line starts with whitespace, so it has no key; "
                    f"each line must be '<key> <value>'"
                )
            parts = line.split(maxsplit=1)
            key = parts[0]
            value = parts[1].strip() if len(parts) > 1 else ""
            if not value and not allow_empty_value:
                raise DataDirError(
                    f"{path} line {lineno}: key '{key}' has no value; each line must be "
                    f"'<key> <value>'"
                )
            yield lineno, key, value


def read_kaldi_map(path: PathLike, allow_empty_value: bool = False) -> Dict[str, str]:
    """Read a Kaldi map file into an insertion-ordered dict `{key: value}`.

    Args:
        path: The map file (e.g. `data/train/text`).
        allow_empty_value: Accept key-only lines (value "").

    Returns:
        The entries in file order.

    Raises:
        DataDirError: Malformed lines or a duplicate key (first repeat named).
    """
    mapping: Dict[str, str] = {}
    first_line: Dict[str, int] = {}
    for lineno, key, value in iter_kaldi_lines(path, allow_empty_value=allow_empty_value):
        if key in mapping:
            raise DataDirError(
                f"{path} line {lineno}: duplicate key '{key}' (first on line {first_line[key]}); "
                f"each key may appear once: remove or rename one of them"
            )
        mapping[key] = value
        first_line[key] = lineno
    return mapping


def _check_entry(path: Path, key: str, value: str) -> None:
    if not key or any(c.isspace() for c in key):
        raise ValueError(f"cannot write {path}: key {key!r} is empty or contains whitespace")
    if "\n" in value or "\r" in value:
        raise ValueError(f"cannot write {path}: value for key '{key}' contains a line break")


def render_kaldi_map(path: PathLike, mapping: Mapping[str, object]) -> str:
    """The text of a Kaldi map file for `{key: value}`, sorted by key (C byte order).

    Values that are lists/tuples are joined with single spaces (as in spk2utt).

    Args:
        path: The file the text is meant for (named in errors only).
        mapping: Keys without whitespace; values without line breaks.

    Raises:
        ValueError: A key with whitespace or a value with a line break.
    """
    path = Path(path)
    lines = []
    for key in sorted(mapping, key=kaldi_sort_key):
        value = mapping[key]
        if isinstance(value, (list, tuple)):
            value = " ".join(str(v) for v in value)
        value = str(value)
        _check_entry(path, key, value)
        lines.append(f"{key} {value}\n" if value else f"{key}\n")
    return "".join(lines)


def write_kaldi_map(path: PathLike, mapping: Mapping[str, object]) -> None:
    """Write `{key: value}` as a Kaldi map file sorted by key (C byte order), atomically.

    Args:
        path: Destination file; written to a temporary file in the same folder, then renamed.
        mapping: As `render_kaldi_map`.

    Raises:
        ValueError: A key with whitespace or a value with a line break.
    """
    write_text_atomic(path, render_kaldi_map(path, mapping))


def spk2utt_from_utt2spk(utt2spk: Mapping[str, str]) -> Dict[str, List[str]]:
    """Invert utt2spk: `{speaker: [utterances sorted in C byte order]}`, speakers sorted too."""
    spk2utt: Dict[str, List[str]] = {}
    for utt in sorted(utt2spk, key=kaldi_sort_key):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return {spk: spk2utt[spk] for spk in sorted(spk2utt, key=kaldi_sort_key)}


@dataclasses.dataclass
class Segment:
    """One line of `segments`: an utterance cut from a recording.

    Attributes:
        recording: Key into wav.scp.
        start: Start time in seconds.
        end: End time in seconds (exclusive).
    """

    recording: str
    start: float
    end: float


@dataclasses.dataclass
class KaldiDataDir:
    """In-memory Kaldi data dir.

    Attributes:
        wav_scp: Recording id -> audio path or piped command ("... |"). Without segments the
            recording id is the utterance id.
        text: Utterance id -> transcript.
        utt2spk: Utterance id -> speaker id.
        segments: Utterance id -> Segment, or None when utterances are whole recordings.
        utt_fields: Extra per-utterance files, `{"dur": {utt: "1.23"}}` for `utt2dur`.
        spk_fields: Extra per-speaker files, `{"gender": {spk: "f"}}` for `spk2gender`.
    """

    wav_scp: Dict[str, str]
    text: Dict[str, str]
    utt2spk: Dict[str, str]
    segments: Optional[Dict[str, Segment]] = None
    utt_fields: Dict[str, Dict[str, str]] = dataclasses.field(default_factory=dict)
    spk_fields: Dict[str, Dict[str, str]] = dataclasses.field(default_factory=dict)

    @property
    def utterances(self) -> List[str]:
        """Utterance ids in C byte order."""
        return sorted(self.utt2spk, key=kaldi_sort_key)

    @property
    def speakers(self) -> List[str]:
        """Speaker ids in C byte order."""
        return sorted(set(self.utt2spk.values()), key=kaldi_sort_key)

    @property
    def spk2utt(self) -> Dict[str, List[str]]:
        """Speaker id -> sorted utterance ids."""
        return spk2utt_from_utt2spk(self.utt2spk)

    def recording_of(self, utt: str) -> str:
        """wav.scp key holding utterance `utt`."""
        return self.segments[utt].recording if self.segments is not None else utt

    @classmethod
    def read(cls, path: PathLike) -> "KaldiDataDir":
        """Read a data dir: required files plus segments and every `utt2*` / `spk2*` file.

        Only parses; use `espnet_ext.data.validate.validate_data_dir` to check consistency.

        Args:
            path: The directory.

        Raises:
            DataDirError: A required file is missing, or a file has malformed/duplicate lines.
        """
        path = Path(path)
        for name in ("wav.scp", "text", "utt2spk"):
            if not (path / name).is_file():
                raise DataDirError(f"{path}: required file '{name}' is missing")
        segments = None
        if (path / "segments").is_file():
            segments = {}
            for utt, value in read_kaldi_map(path / "segments").items():
                segments[utt] = parse_segment(path / "segments", utt, value)
        utt_fields, spk_fields = {}, {}
        for f in sorted(path.iterdir()):
            if not f.is_file() or f.name.startswith("."):
                continue
            if f.name.startswith("utt2") and f.name != "utt2spk":
                utt_fields[f.name[len("utt2"):]] = read_kaldi_map(f)
            elif f.name.startswith("spk2") and f.name != "spk2utt":
                spk_fields[f.name[len("spk2"):]] = read_kaldi_map(f)
        return cls(
            wav_scp=read_kaldi_map(path / "wav.scp"),
            text=read_kaldi_map(path / "text", allow_empty_value=True),
            utt2spk=read_kaldi_map(path / "utt2spk"),
            segments=segments,
            utt_fields=utt_fields,
            spk_fields=spk_fields,
        )

    def files(self, where: PathLike = "") -> Dict[str, str]:
        """The text of every file this data dir consists of: `{file name: content}`.

        spk2utt is derived from utt2spk; `segments` times are written in seconds with 3 decimals.

        Args:
            where: The dir the files are meant for (named in errors only).

        Raises:
            ValueError: A key with whitespace or a value with a line break (file and key named).
        """
        maps: Dict[str, Mapping[str, object]] = {
            "wav.scp": self.wav_scp, "text": self.text, "utt2spk": self.utt2spk, "spk2utt": self.spk2utt,
        }
        if self.segments is not None:
            maps["segments"] = {u: f"{s.recording} {s.start:.3f} {s.end:.3f}" for u, s in self.segments.items()}
        maps.update({f"utt2{field}": m for field, m in self.utt_fields.items()})
        maps.update({f"spk2{field}": m for field, m in self.spk_fields.items()})
        return {name: render_kaldi_map(Path(where) / name, m) for name, m in maps.items()}

    def digest(self) -> str:
        """SHA-256 (hex) of every file's name and content: equal digests, byte-identical dirs."""
        h = hashlib.sha256()
        for name, content in sorted(self.files().items()):
            h.update(f"{name}\0{len(content)}\0".encode("utf-8"))
            h.update(content.encode("utf-8"))
        return h.hexdigest()

    def write(self, path: PathLike) -> None:
        """Write every file (sorted by key) into directory `path`, creating it.

        spk2utt is derived from utt2spk. Files of fields this object does not hold are left as they
        are, so write into an empty or dedicated directory (`espnet_ext.data.outdir.write_dir`
        builds such a directory and refuses to replace one the data layer did not write).
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, content in self.files(path).items():
            write_text_atomic(path / name, content)

    def subset(
        self,
        utterances: Optional[Iterable[str]] = None,
        speakers: Optional[Iterable[str]] = None,
        predicate: Optional[Callable[[str], bool]] = None,
    ) -> "KaldiDataDir":
        """A new data dir with the utterances that pass every given filter.

        Args:
            utterances: Keep only these utterance ids.
            speakers: Keep only utterances of these speakers (e.g. one federated client).
            predicate: Keep utterance `u` only if `predicate(u)` is true, e.g.
                `lambda u: d.utt_fields["condition"][u] == "clean"`.

        Returns:
            The subset; recordings, speakers and metadata no longer referenced are dropped.

        Raises:
            ValueError: An utterance or speaker asked for is not in this data dir.
        """
        keep = set(self.utt2spk)
        if utterances is not None:
            wanted = set(utterances)
            unknown = sorted(wanted - keep, key=kaldi_sort_key)
            if unknown:
                raise ValueError(f"subset: {len(unknown)} unknown utterance(s), e.g. '{unknown[0]}'")
            keep &= wanted
        if speakers is not None:
            wanted_spk = set(speakers)
            unknown = sorted(wanted_spk - set(self.utt2spk.values()), key=kaldi_sort_key)
            if unknown:
                raise ValueError(
                    f"subset: {len(unknown)} unknown speaker(s), e.g. '{unknown[0]}'; "
                    f"known: {' '.join(self.speakers[:10])}{' ...' if len(self.speakers) > 10 else ''}"
                )
            keep = {u for u in keep if self.utt2spk[u] in wanted_spk}
        if predicate is not None:
            keep = {u for u in keep if predicate(u)}
        recordings = {self.recording_of(u) for u in keep}
        spks = {self.utt2spk[u] for u in keep}
        return KaldiDataDir(
            wav_scp={r: v for r, v in self.wav_scp.items() if r in recordings},
            text={u: v for u, v in self.text.items() if u in keep},
            utt2spk={u: v for u, v in self.utt2spk.items() if u in keep},
            segments=None
            if self.segments is None
            else {u: s for u, s in self.segments.items() if u in keep},
            utt_fields={
                f: {u: v for u, v in m.items() if u in keep} for f, m in self.utt_fields.items()
            },
            spk_fields={
                f: {s: v for s, v in m.items() if s in spks} for f, m in self.spk_fields.items()
            },
        )


def parse_segment(path: PathLike, utt: str, value: str) -> Segment:
    """Parse the value of a `segments` line: `<recording> <start_s> <end_s>`.

    Raises:
        DataDirError: Wrong number of fields, non-numeric or negative times, or end <= start.
    """
    fields = value.split()
    where = f"{path}: utterance '{utt}'"
    if len(fields) != 3:
        raise DataDirError(
            f"{where}: expected '<utt> <recording> <start> <end>', got '{utt} {value}'"
        )
    try:
        start, end = float(fields[1]), float(fields[2])
    except ValueError:
        raise DataDirError(f"{where}: start/end '{fields[1]} {fields[2]}' are not numbers") from None
    # Kaldi allows end = -1 to mean "to the end of the recording".
    if start < 0 or (end <= start and end != -1):
        raise DataDirError(f"{where}: invalid times start={start} end={end} (need 0 <= start < end)")
    return Segment(fields[0], start, end)


@dataclasses.dataclass
class Utterance:
    """One utterance to be written by `write_data_dir` (whole recording, no segments).

    Attributes:
        utt_id: Utterance id; by Kaldi convention prefixed by the speaker id so that utt2spk and
            spk2utt sort consistently.
        audio: wav.scp value: an audio path or a piped command ending in '|'.
        text: Transcript.
        speaker: Speaker id.
        fields: Extra per-utterance values, `{"dur": "1.23"}` -> utt2dur.
    """

    utt_id: str
    audio: str
    text: str
    speaker: str
    fields: Dict[str, str] = dataclasses.field(default_factory=dict)


def write_data_dir(
    path: PathLike,
    utts: Iterable[Utterance],
    spk_fields: Optional[Mapping[str, Mapping[str, str]]] = None,
) -> KaldiDataDir:
    """Write utterances as a Kaldi data dir (wav.scp, text, utt2spk, spk2utt, utt2<field>...).

    Args:
        path: Output directory (created).
        utts: The utterances; every utterance must have the same set of `fields`.
        spk_fields: Per-speaker files, `{"gender": {"1001": "f"}}` -> spk2gender.

    Returns:
        The data dir as written.

    Raises:
        ValueError: Duplicate utterance ids, or utterances with differing field sets.
    """
    wav_scp, text, utt2spk = {}, {}, {}
    utt_fields: Dict[str, Dict[str, str]] = {}
    field_names = None
    for u in utts:
        if u.utt_id in utt2spk:
            raise ValueError(f"write_data_dir: duplicate utterance id '{u.utt_id}'")
        if field_names is None:
            field_names = sorted(u.fields)
            utt_fields = {f: {} for f in field_names}
        elif sorted(u.fields) != field_names:
            raise ValueError(
                f"write_data_dir: utterance '{u.utt_id}' has fields {sorted(u.fields)}, "
                f"others have {field_names}"
            )
        wav_scp[u.utt_id] = u.audio
        text[u.utt_id] = u.text
        utt2spk[u.utt_id] = u.speaker
        for f, v in u.fields.items():
            utt_fields[f][u.utt_id] = v
    data = KaldiDataDir(
        wav_scp=wav_scp,
        text=text,
        utt2spk=utt2spk,
        utt_fields=utt_fields,
        spk_fields={f: dict(m) for f, m in (spk_fields or {}).items()},
    )
    data.write(path)
    return data


def subset_data_dir(
    src: PathLike,
    dst: PathLike,
    speakers: Optional[Iterable[str]] = None,
    utterances: Optional[Iterable[str]] = None,
    predicate: Optional[Callable[[str], bool]] = None,
    overwrite: bool = False,
) -> KaldiDataDir:
    """Copy the utterances of `src` that pass the filters into a new data dir `dst`.

    Args:
        src: Source data dir.
        dst: Destination directory (created; must not be `src`). An existing `dst` holding the
            same subset is kept; one this function did not write is never replaced; an earlier,
            different subset is replaced only with `overwrite` (see `espnet_ext.data.outdir`).
        speakers, utterances, predicate: As in `KaldiDataDir.subset`.
        overwrite: Replace an earlier, different subset in `dst`.

    Returns:
        The subset (as written, or as kept).

    Raises:
        DataDirError: `dst` exists and may not be replaced.
    """
    from espnet_ext.data.outdir import write_dir  # outdir builds on this module

    if Path(src).resolve() == Path(dst).resolve():
        raise ValueError(f"subset_data_dir: destination {dst} is the source; choose another folder")
    sub = KaldiDataDir.read(src).subset(utterances=utterances, speakers=speakers, predicate=predicate)
    options = {"tool": "subset_data_dir", "source": str(Path(src).resolve()), "sha256": sub.digest()}
    write_dir(dst, sub.write, "subset_data_dir", options, overwrite=overwrite, overwrite_hint=None)
    return sub
