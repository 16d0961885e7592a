"""Tables people read or parse: markdown tables, tab-separated files, fixed-decimal numbers.

Used by the scan's ``scan.md``, the cross-run ``analysis.md`` and the federated ``results.md``.
Two markdown layouts exist because both are already read by people and scripts: padded cells
(``| a | b |``, scan and analysis) and compact cells (``|a|b|``, federated results).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Optional, Sequence

from espnet_ext.utils.atomic import write_text_atomic


def is_missing(v: Any) -> bool:
    """True for None and float NaN: a number a table shows as missing."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def fixed(v: Optional[float], digits: int = 2, missing: str = "") -> str:
    """`v` with exactly `digits` decimals (``3.14``); `missing` for None/NaN."""
    return missing if is_missing(v) else f"{v:.{digits}f}"


def signed(v: Optional[float], digits: int = 2, missing: str = "") -> str:
    """`v` with a sign and exactly `digits` decimals (``+0.50``, ``-1.25``); `missing` for None/NaN."""
    return missing if is_missing(v) else f"{v:+.{digits}f}"


def markdown_row(cells: Sequence[Any], padded: bool = True) -> str:
    """One markdown table line; cells are written with ``str``."""
    if padded:
        return "| " + " | ".join(str(c) for c in cells) + " |"
    return "|" + "|".join(str(c) for c in cells) + "|"


def markdown_table(head: Sequence[Any], rows: Sequence[Sequence[Any]], padded: bool = True) -> List[str]:
    """Lines of a markdown table: the header, the ``|---|`` rule, then one line per row.

    Args:
        head: Column names.
        rows: Cells per row (written with ``str``; format numbers before, e.g. with :func:`fixed`).
        padded: ``| a | b |`` (True) or ``|a|b|`` (False).
    """
    return ([markdown_row(head, padded), "|" + "---|" * len(head)]
            + [markdown_row(r, padded) for r in rows])


def tsv_text(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Tab-separated text: the header line, one line per row (cells written with ``str``), and a
    final newline."""
    lines = ["\t".join(head)] + ["\t".join(str(c) for c in r) for r in rows]
    return "\n".join(lines) + "\n"


def write_tsv_table(path: Path, head: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """Write :func:`tsv_text` to `path` atomically (parents created); returns `path`."""
    write_text_atomic(path, tsv_text(head, rows))
    return Path(path)
