"""Atomic file writes: a file is written next to its destination and renamed over it, so a
reader (or a resumed run) sees the old file or the whole new one, never half a file.

Every file written here gets the mode a plain ``open(path, "w")`` would give it (0o666 less the
umask: 0o644 under umask 022), not the owner-only 0o600 of ``tempfile.mkstemp``, so other users
of a shared machine can read results. Missing parent directories are created.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

PathLike = Union[str, os.PathLike]


def current_umask() -> int:
    """The process umask (e.g. 0o022), read without changing it where Linux allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the umask can only be read by setting it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """Mode a plain `open(..., "w")` gives a new file: 0o666 less the umask (0o644 under 022)."""
    return 0o666 & ~current_umask()


def default_dir_mode() -> int:
    """Mode a plain `mkdir` gives a new folder: 0o777 less the umask (0o755 under 022)."""
    return 0o777 & ~current_umask()


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yields a temporary path next to `path` to write to; renamed onto `path` on success.

    The temporary file (``.<name>.<random>.tmp``, hidden) already exists, empty, with the
    default file mode; if the block raises, it is removed and `path` is left untouched.

    Example::

        with atomic_output(out / "model.pth") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, default_file_mode())
        finally:
            os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: PathLike, text: str) -> None:
    """Writes `text` (UTF-8, ``\\n`` line ends kept as they are) to `path` atomically."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)


def write_json_atomic(path: PathLike, obj: Any, indent: int = 1, sort_keys: bool = False) -> None:
    """Writes `obj` as JSON (`indent` spaces per level, a final newline) to `path` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def save_torch_atomic(obj: Any, path: PathLike) -> None:
    """`torch.save(obj, path)`, atomically (torch is imported only here: it takes seconds)."""
    import torch

    with atomic_output(path) as tmp:
        torch.save(obj, tmp)
