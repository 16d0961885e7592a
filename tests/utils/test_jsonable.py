"""Values made JSON-writable."""

import dataclasses
import json
import math
from pathlib import Path

from espnet_ext.utils.jsonable import jsonable


@dataclasses.dataclass
class _Point:
    x: float
    where: Path


def test_nan_and_inf_become_null_and_containers_are_converted():
    value = {1: (math.nan, math.inf, 2.5), "p": _Point(-math.inf, Path("/a/b")), "s": "text"}
    out = jsonable(value)
    assert out == {"1": [None, None, 2.5], "p": {"x": None, "where": "/a/b"}, "s": "text"}
    json.dumps(out, allow_nan=False)  # strict JSON
