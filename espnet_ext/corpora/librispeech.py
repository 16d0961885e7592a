"""Kaldi data dirs from an extracted LibriSpeech tree (openslr.org/12), without Kaldi.

Input (the layout of the official archives, extracted into `<root>`):

    <root>/LibriSpeech/SPEAKERS.TXT
    <root>/LibriSpeech/<part>/<reader>/<chapter>/<reader>-<chapter>-<nnnn>.flac
    <root>/LibriSpeech/<part>/<reader>/<chapter>/<reader>-<chapter>.trans.txt

Output, one Kaldi dir per part (`train-clean-100` -> `<data_dir>/train_clean_100`, as ESPnet names
them): `wav.scp` (utterance -> absolute path of its FLAC file: ESPnet's `sound` loader and
soundfile read FLAC directly, so no `flac -d ... |` pipe and no flac binary is needed), `text`,
`utt2spk`, `spk2utt`, `spk2gender` (f/m from SPEAKERS.TXT), `utt2chapter` and `utt2dur`
(seconds, from the FLAC headers). Speakers are LibriSpeech readers by default (federated clients
are speakers); Kaldi's own recipe uses reader-chapter pairs instead (`speaker_unit="chapter"`).

A part whose output carries a marker of the same source and options is not prepared again; an
existing dir without that marker (a user's own) is never replaced, and one prepared with other
options is replaced only with `overwrite` (see `espnet_ext.data.outdir`).
Downloading is not done here: see the recipe's `local/data.sh --download true`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import soundfile

from espnet_ext.data.combine import combine_data_dirs
from espnet_ext.data.kaldi import DataDirError, PathLike, Utterance, read_kaldi_map, write_data_dir
from espnet_ext.data.outdir import check_replaceable, is_complete, write_dir
from espnet_ext.data.validate import DataDirSummary, validate_data_dir

logger = logging.getLogger(__name__)

OPENSLR_URL = "https://www.openslr.org/resources/12"
PARTS_100H = ("train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other")
PARTS_960H_EXTRA = ("train-clean-360", "train-other-500")
ALL_PARTS = PARTS_100H + PARTS_960H_EXTRA
SPEAKER_UNITS = ("reader", "chapter")
SAMPLE_RATE = 16000
MARKER = ".librispeech.json"
TOOL = "prep_librispeech"
# Bump when the output of the same tree and options changes.
FORMAT_VERSION = 1

_UTT_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


class LibriSpeechError(DataDirError):
    """The LibriSpeech tree is missing, incomplete or inconsistent; the message says what to do."""


@dataclasses.dataclass
class Reader:
    """One line of SPEAKERS.TXT.

    Attributes:
        reader_id: LibriVox reader id, e.g. "103".
        gender: "f" or "m".
        subset: The part the reader belongs to, e.g. "train-clean-100".
        minutes: Minutes of speech of the reader in that part.
        name: The reader's name.
    """

    reader_id: str
    gender: str
    subset: str
    minutes: float
    name: str


def data_dir_name(part: str) -> str:
    """ESPnet's data dir name of a part: `train-clean-100` -> `train_clean_100`."""
    return part.replace("-", "_")


def _download_hint(root: Path, part: str) -> str:
    return (
        f"download {OPENSLR_URL}/{part}.tar.gz and extract it with `tar xzf {part}.tar.gz -C {root}` "
        f"so that {root}/LibriSpeech/{part} exists (the recipe's local/data.sh does this with "
        f"--download true)"
    )


def find_corpus_dir(root: PathLike) -> Path:
    """The `LibriSpeech` folder under `root` (or `root` itself when it is that folder).

    Raises:
        LibriSpeechError: Neither `root/LibriSpeech` nor `root` holds LibriSpeech parts.
    """
    root = Path(root).absolute()
    if (root / "LibriSpeech").is_dir():
        return root / "LibriSpeech"
    if root.is_dir() and any((root / p).is_dir() for p in ALL_PARTS):
        return root
    where = f"{root} does not exist" if not root.exists() else f"{root}/LibriSpeech does not exist"
    raise LibriSpeechError(
        f"LibriSpeech not found: {where}. Download the parts from https://www.openslr.org/12 and "
        f"extract them in {root} (e.g. `tar xzf train-clean-100.tar.gz -C {root}`) so that "
        f"{root}/LibriSpeech/train-clean-100 exists, or pass --librispeech_dir <folder holding "
        f"LibriSpeech/> (the recipe's local/data.sh downloads with --download true)"
    )


def read_speakers_txt(path: PathLike) -> Dict[str, Reader]:
    """Parse LibriSpeech's SPEAKERS.TXT: `ID | SEX | SUBSET | MINUTES | NAME`, ';' comments.

    Names may themselves contain '|' (e.g. reader 60), so only the first four bars split.

    Returns:
        Reader id -> Reader.

    Raises:
        LibriSpeechError: Missing file or a malformed line (line number named).
    """
    path = Path(path)
    if not path.is_file():
        raise LibriSpeechError(
            f"{path}: SPEAKERS.TXT is missing; it comes with every LibriSpeech archive "
            f"(extract any part from https://www.openslr.org/12 again to restore it)"
        )
    readers: Dict[str, Reader] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = [f.strip() for f in line.split("|", 4)]
        if len(fields) != 5 or fields[1].upper() not in ("F", "M"):
            raise LibriSpeechError(
                f"{path} line {lineno}: expected 'ID | SEX (F/M) | SUBSET | MINUTES | NAME', got {line!r}"
            )
        try:
            minutes = float(fields[3])
        except ValueError:
            raise LibriSpeechError(f"{path} line {lineno}: minutes {fields[3]!r} is not a number") from None
        readers[fields[0]] = Reader(fields[0], fields[1].lower(), fields[2], minutes, fields[4])
    return readers


def scan_part(
    corpus_dir: PathLike,
    part: str,
    readers: Mapping[str, Reader],
    speaker_unit: str = "reader",
    read_durations: bool = True,
) -> List[Utterance]:
    """Every utterance of one part, checked against its transcripts.

    Args:
        corpus_dir: The `LibriSpeech` folder.
        part: e.g. "train-clean-100".
        readers: From SPEAKERS.TXT (genders).
        speaker_unit: "reader" (speaker = reader id) or "chapter" (speaker = "<reader>-<chapter>",
            as Kaldi's LibriSpeech recipe).
        read_durations: Read each FLAC header for utt2dur, sample rate and channels.

    Returns:
        Utterances with absolute FLAC paths, fields "chapter" (and "dur" with `read_durations`).

    Raises:
        LibriSpeechError: Missing part or transcript file, a FLAC without transcript line or a
            transcript line without FLAC, misnamed files, unknown reader, unreadable or
            non-16-kHz-mono audio, or a path with whitespace.
    """
    corpus_dir = Path(corpus_dir)
    if speaker_unit not in SPEAKER_UNITS:
        raise ValueError(f"speaker_unit must be one of {', '.join(SPEAKER_UNITS)}, got {speaker_unit!r}")
    part_dir = corpus_dir / part
    if not part_dir.is_dir():
        present = sorted(p.name for p in corpus_dir.iterdir() if p.is_dir() and p.name in ALL_PARTS)
        raise LibriSpeechError(
            f"{part_dir}: part {part} not found (parts present in {corpus_dir}: "
            f"{', '.join(present) or 'none'}); {_download_hint(corpus_dir.parent, part)}"
        )
    if any(c.isspace() for c in str(part_dir.resolve())):
        raise LibriSpeechError(
            f"{part_dir.resolve()}: the path contains whitespace, which wav.scp cannot hold; move "
            f"the corpus (or link it) to a path without spaces"
        )
    utts: List[Utterance] = []
    for reader_dir in sorted(p for p in part_dir.iterdir() if p.is_dir()):
        reader = reader_dir.name
        for chapter_dir in sorted(p for p in reader_dir.iterdir() if p.is_dir()):
            utts.extend(
                _scan_chapter(chapter_dir, reader, readers, part, speaker_unit, read_durations)
            )
    if not utts:
        raise LibriSpeechError(
            f"{part_dir}: no <reader>/<chapter>/*.flac files found; the part is empty or was "
            f"extracted only partly: {_download_hint(corpus_dir.parent, part)}"
        )
    return utts


def _scan_chapter(
    chapter_dir: Path,
    reader: str,
    readers: Mapping[str, Reader],
    part: str,
    speaker_unit: str,
    read_durations: bool,
) -> List[Utterance]:
    chapter = chapter_dir.name
    flacs = {p.name[: -len(".flac")]: p for p in chapter_dir.glob("*.flac")}
    trans = chapter_dir / f"{reader}-{chapter}.trans.txt"
    if not trans.is_file():
        if not flacs:
            return []
        raise LibriSpeechError(
            f"{trans}: transcript file missing for the {len(flacs)} FLAC file(s) in {chapter_dir}; "
            f"the archive was extracted only partly: extract {part}.tar.gz again"
        )
    transcripts = read_kaldi_map(trans)
    for lineno, utt in enumerate(transcripts, start=1):  # read_kaldi_map rejects blank lines
        if utt not in flacs:
            raise LibriSpeechError(
                f"{trans} line {lineno}: utterance '{utt}' has no audio file {chapter_dir / utt}.flac; "
                f"restore the file (extract {part}.tar.gz again) or delete the line"
            )
    for utt, flac in sorted(flacs.items()):
        m = _UTT_ID.match(utt)
        if not m or m.group(1) != reader or m.group(2) != chapter:
            raise LibriSpeechError(
                f"{flac}: file name does not follow <reader>-<chapter>-<n>.flac for reader {reader}, "
                f"chapter {chapter}; remove or rename it"
            )
        if utt not in transcripts:
            raise LibriSpeechError(
                f"{flac}: no transcript line '{utt} ...' in {trans}; add the line, or remove the "
                f"FLAC file (extract {part}.tar.gz again if the archive was damaged)"
            )
    if reader not in readers:
        raise LibriSpeechError(
            f"{chapter_dir}: reader '{reader}' has no line in SPEAKERS.TXT; use the SPEAKERS.TXT "
            f"of the same LibriSpeech release as the audio"
        )
    speaker = reader if speaker_unit == "reader" else f"{reader}-{chapter}"
    out = []
    for utt, flac in sorted(flacs.items()):
        fields = {"chapter": chapter}
        path = flac.resolve()
        if read_durations:
            fields["dur"] = _duration_field(path)
        out.append(Utterance(utt, str(path), transcripts[utt], speaker, fields))
    return out


def _duration_field(path: Path) -> str:
    """utt2dur value of a FLAC file; checks 16 kHz mono on the way (header read only)."""
    try:
        info = soundfile.info(str(path))
    except Exception as e:  # noqa: BLE001 - any reader failure means a damaged file
        raise LibriSpeechError(
            f"{path}: cannot read the FLAC header ({e}); the file is damaged: extract it again"
        ) from None
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        raise LibriSpeechError(
            f"{path}: {info.samplerate} Hz, {info.channels} channel(s); LibriSpeech is 16000 Hz mono, "
            f"so this is not an original LibriSpeech file: replace it"
        )
    return f"{info.frames / info.samplerate:.4f}".rstrip("0").rstrip(".")


def prepare_part(
    corpus_dir: PathLike,
    part: str,
    out_dir: PathLike,
    readers: Mapping[str, Reader],
    speaker_unit: str = "reader",
    read_durations: bool = True,
    overwrite: bool = False,
) -> bool:
    """Write the Kaldi dir of one part, unless `out_dir` already holds it.

    The dir is written next to `out_dir` and moved into place when complete, so a failure never
    leaves a half-written data dir (nor its temporary folder).

    Args:
        overwrite: Replace an `out_dir` this function prepared earlier with other options or from
            another tree. A dir it did not prepare, or one holding files it did not write, is
            never replaced.

    Returns:
        True when written, False when an identical earlier preparation was kept.

    Raises:
        LibriSpeechError: The part is missing or inconsistent (see `scan_part`).
        DataDirError: `out_dir` exists and may not be replaced (see
            `espnet_ext.data.outdir.check_replaceable`).
    """
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    marker = {
        "format_version": FORMAT_VERSION,
        "source": str((corpus_dir / part).resolve()),
        "speaker_unit": speaker_unit,
        "durations": read_durations,
    }
    if is_complete(out_dir, marker, MARKER):
        logger.info("%s: already prepared from %s; kept", out_dir, marker["source"])
        return False
    # Refuse before the (slow) scan of the part.
    check_replaceable(out_dir, TOOL, MARKER, overwrite, "--overwrite")
    utts = scan_part(corpus_dir, part, readers, speaker_unit, read_durations)
    speakers = sorted({u.speaker for u in utts})
    gender = {s: readers[s.split("-")[0]].gender for s in speakers}
    write_dir(out_dir, lambda tmp: write_data_dir(tmp, utts, spk_fields={"gender": gender}),
              TOOL, marker, MARKER, overwrite, "--overwrite")
    logger.info("%s: %d utterances, %d speakers from %s", out_dir, len(utts), len(speakers), corpus_dir / part)
    return True


def prepare_librispeech(
    librispeech_dir: PathLike,
    data_dir: PathLike,
    parts: Sequence[str] = PARTS_100H,
    combine: Optional[Mapping[str, Sequence[str]]] = None,
    speaker_unit: str = "reader",
    read_durations: bool = True,
    check_audio: bool = False,
    overwrite: bool = False,
) -> List[DataDirSummary]:
    """Prepare `<data_dir>/<part as dir name>` for each part, then the combined dirs; validate all.

    Args:
        librispeech_dir: Folder holding `LibriSpeech/` (or the `LibriSpeech` folder itself).
        data_dir: Parent of the Kaldi dirs (e.g. the recipe's `data`).
        parts: LibriSpeech parts, e.g. ("train-clean-100", "dev-clean", ...).
        combine: New dir name -> names of prepared dirs to combine, e.g.
            `{"dev": ["dev_clean", "dev_other"]}` (ESPnet's librispeech_100 validation set).
        speaker_unit: "reader" or "chapter" (see `scan_part`).
        read_durations: Write utt2dur (one FLAC header read per utterance).
        check_audio: Also let validation read every audio header (the recipe's stage 1 does).
        overwrite: Replace dirs this function (or `combine_data_dirs`) wrote earlier with other
            options or data; existing dirs it did not write are never replaced (see
            `espnet_ext.data.outdir`). Without it, such a dir stops the preparation.

    Returns:
        One summary per written dir (parts first, then combined dirs).

    Raises:
        LibriSpeechError: The tree is missing or inconsistent (see `scan_part`).
        DataDirError: A combined source is unknown, a written dir fails validation, or an
            output dir exists and may not be replaced.
    """
    unknown = [p for p in parts if p not in ALL_PARTS]
    if unknown:
        raise LibriSpeechError(f"unknown LibriSpeech part {unknown[0]!r}; parts are: {', '.join(ALL_PARTS)}")
    if speaker_unit not in SPEAKER_UNITS:
        raise LibriSpeechError(f"speaker unit must be one of {', '.join(SPEAKER_UNITS)}, got {speaker_unit!r}")
    corpus_dir = find_corpus_dir(librispeech_dir)
    # Check every part exists before the (slow) scans, so a missing download fails at once.
    missing = [p for p in parts if not (corpus_dir / p).is_dir()]
    if missing:
        present = sorted(p.name for p in corpus_dir.iterdir() if p.is_dir() and p.name in ALL_PARTS)
        raise LibriSpeechError(
            f"{corpus_dir / missing[0]}: part {missing[0]} not found (parts present: "
            f"{', '.join(present) or 'none'}; missing: {', '.join(missing)}); "
            f"{_download_hint(corpus_dir.parent, missing[0])}"
        )
    readers = read_speakers_txt(corpus_dir / "SPEAKERS.TXT")
    data_dir = Path(data_dir)
    written = []
    for part in parts:
        prepare_part(corpus_dir, part, data_dir / data_dir_name(part), readers, speaker_unit, read_durations,
                     overwrite=overwrite)
        written.append(data_dir / data_dir_name(part))
    for name, sources in (combine or {}).items():
        paths = [data_dir / s for s in sources]
        absent = [str(p) for p in paths if not p.is_dir()]
        if absent:
            raise DataDirError(
                f"cannot combine {data_dir / name}: {absent[0]} does not exist; prepare its part too"
            )
        combine_data_dirs(paths, data_dir / name, overwrite=overwrite, overwrite_hint="--overwrite")
        written.append(data_dir / name)
    return [validate_data_dir(p, check_audio=check_audio) for p in written]
