"""Values made JSON-writable: what the analyses compute, as plain JSON types."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any


def jsonable(obj: Any) -> Any:
    """`obj` with NaN/inf floats as None (JSON has neither), dataclasses as dicts, tuples as lists,
    paths as strings and dict keys as strings; other values unchanged."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Path):
        return str(obj)
    return obj
