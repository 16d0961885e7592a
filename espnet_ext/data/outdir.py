"""Output dirs of the data layer: built aside, moved into place whole, never replacing foreign files.

Every data dir a data-layer tool writes (a LibriSpeech part, a combined dir, the two halves of a
withheld-domain split) is built in a hidden temporary folder next to its destination, gets a
marker file recording what wrote it, with which options, and which files it holds, and is then
renamed into place. So:

* a failed run leaves neither a half-written dir nor its temporary folder behind;
* a re-run that would write the same dir finds the marker and does nothing (idempotent recipes);
* an existing dir without the marker (a user's own dir) is never replaced: the tool stops with a
  message naming the dir and how to proceed;
* a dir the tool wrote earlier with other options or data is replaced only when the caller asks
  for it (`overwrite`, e.g. `--overwrite`), and only when it holds nothing but the files the tool
  wrote: a file the user added stops the tool, named, whatever `overwrite` says.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Set

from espnet_ext.data.kaldi import REQUIRED_FILES, DataDirError, PathLike
from espnet_ext.utils.atomic import default_dir_mode

MARKER = ".espnet_ext.json"
# Marker key listing the files the tool wrote (the marker itself excluded).
FILES_KEY = "files"


def read_record(dst: PathLike, marker: str = MARKER) -> Optional[dict]:
    """The marker of a dir the data layer wrote, or None (no dir, no marker, unreadable marker)."""
    dst = Path(dst)
    if dst.is_symlink() or not dst.is_dir():
        return None
    try:
        record = json.loads((dst / marker).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _written_files(dst: Path, record: dict) -> Set[str]:
    """Files the tool wrote into `dst`: the marker's list, else (markers of older versions, which
    did not list them) the Kaldi files such a tool writes."""
    listed = record.get(FILES_KEY)
    if isinstance(listed, list):
        return {str(f) for f in listed}
    # The required files count as written even when gone, so that a dir missing one is not complete.
    return set(REQUIRED_FILES) | {
        p.name for p in dst.iterdir()
        if p.name in REQUIRED_FILES or p.name == "segments" or p.name.startswith(("utt2", "spk2"))
    }


def _same_options(record: Optional[dict], options: dict) -> bool:
    if record is None:
        return False
    return {k: v for k, v in record.items() if k != FILES_KEY} == options


def is_complete(dst: PathLike, options: dict, marker: str = MARKER) -> bool:
    """True when `dst` was written with exactly `options` and still holds every file written."""
    dst = Path(dst)
    record = read_record(dst, marker)
    return _same_options(record, options) and all((dst / f).is_file() for f in _written_files(dst, record))


def check_replaceable(
    dst: PathLike,
    tool: str,
    marker: str = MARKER,
    overwrite: bool = False,
    overwrite_hint: Optional[str] = "--overwrite",
) -> None:
    """Raise unless `dst` may be (re)written: absent, an empty folder, or (with `overwrite`) a dir
    that `tool` wrote before and that holds nothing else.

    Args:
        dst: The destination dir.
        tool: Name of the writing tool, for the messages (e.g. "prep_librispeech").
        marker: Marker file name the tool writes into its dirs.
        overwrite: Replace a dir the tool wrote earlier (with other options or data).
        overwrite_hint: How the user asks for `overwrite` (an option name), for the messages;
            None when the user has no such option (the message then says to move the dir away).

    Raises:
        DataDirError: `dst` is a file or link, a folder without the marker, holds files the tool
            did not write, or was written by the tool but `overwrite` is not set.
    """
    dst = Path(dst)
    if not dst.exists() and not dst.is_symlink():
        return
    if dst.is_symlink() or not dst.is_dir():
        kind = "a symbolic link" if dst.is_symlink() else "a file"
        raise DataDirError(
            f"{dst} already exists and is {kind}, not a dir {tool} wrote; {tool} never replaces "
            f"it: move it away (mv {dst} {dst}.orig) or write to another place"
        )
    if not any(dst.iterdir()):
        return
    record = read_record(dst, marker)
    if record is None:
        raise DataDirError(
            f"{dst} already exists and was not written by {tool} (it has no {marker}); {tool} "
            f"never replaces a dir it did not write: move it away (mv {dst} {dst}.orig) or write "
            f"to another place"
        )
    # Dirs of the data layer's other writers share the marker and record their name.
    writer = str(record.get("tool", tool))
    written = _written_files(dst, record) | {marker}
    foreign = sorted(p.name for p in dst.iterdir() if p.name not in written)
    if foreign:
        raise DataDirError(
            f"{dst} was written by {writer} but now also holds '{foreign[0]}'"
            f"{f' (and {len(foreign) - 1} more)' if len(foreign) > 1 else ''}, which {writer} did "
            f"not write; move {dst} (or that file) away before {tool} writes it again"
        )
    if not overwrite:
        how = (f"pass {overwrite_hint} to replace it (only dirs the tools wrote are replaced), or "
               f"move it away (mv {dst} {dst}.orig)" if overwrite_hint else
               f"move it away (mv {dst} {dst}.orig) or, as it holds only files {writer} wrote, "
               f"delete it (rm -r {dst})")
        raise DataDirError(f"{dst} was written by {writer} earlier with other options or other data; {how}")


@contextmanager
def building_dir(dst: PathLike) -> Iterator[Path]:
    """A new hidden folder next to `dst` to build it in; removed again if the block fails.

    The folder has the mode a plain `mkdir` gives (0o755 under umask 022), not the owner-only
    0o700 of `tempfile.mkdtemp`, so the dir it becomes is readable by other users. Its name is
    unique, so it never collides with (or removes) anything that was there.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        os.chmod(tmp, default_dir_mode())
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_dir(tmp: Path, dst: PathLike) -> None:
    """Move the finished `tmp` to `dst`, replacing an empty folder or a dir `check_replaceable`
    allowed (the old dir is moved aside first and removed only once the new one is in place)."""
    dst = Path(dst)
    if dst.is_dir() and not dst.is_symlink() and not any(dst.iterdir()):
        dst.rmdir()
    if not dst.exists():
        tmp.rename(dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
    old.rmdir()
    dst.rename(old)
    try:
        tmp.rename(dst)
    except BaseException:
        old.rename(dst)
        raise
    shutil.rmtree(old)


def write_dir(
    dst: PathLike,
    fill: Callable[[Path], None],
    tool: str,
    options: dict,
    marker: str = MARKER,
    overwrite: bool = False,
    overwrite_hint: Optional[str] = "--overwrite",
) -> bool:
    """Write the dir `dst` with `fill`, unless it already holds the same output.

    Args:
        dst: The destination dir.
        fill: Writes the files into the (empty, temporary) folder it is given.
        tool: Name of the writing tool, for messages.
        options: What identifies the output (JSON-serialisable): the source, options, and for
            derived data a digest of the content. Stored in the marker; an existing dir with the
            same options is kept as it is.
        marker: Marker file name.
        overwrite: Replace a dir `tool` wrote earlier with other options (see `check_replaceable`).
        overwrite_hint: How the user asks for `overwrite`, for messages.

    Returns:
        True when written, False when the existing dir was kept.

    Raises:
        DataDirError: `dst` must not be replaced (see `check_replaceable`).
    """
    dst = Path(dst)
    if is_complete(dst, options, marker):
        return False
    check_replaceable(dst, tool, marker, overwrite, overwrite_hint)
    with building_dir(dst) as tmp:
        fill(tmp)
        files = sorted(p.name for p in tmp.iterdir() if p.name != marker)
        (tmp / marker).write_text(json.dumps({**options, FILES_KEY: files}, indent=1) + "\n",
                                  encoding="utf-8")
        publish_dir(tmp, dst)
    return True
