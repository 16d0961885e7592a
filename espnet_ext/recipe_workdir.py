"""Scratch copies of a recipe, for tests and benchmarks that must not touch the real one.

A copy holds its own `run.sh`, `conf/` and `db.sh` (so configs can be edited) and links to the recipe's
`local/` and to the shared `egs2/TEMPLATE`, so outputs (data/, dump/, exp/) land in the copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def make_recipe_workdir(recipe_dir: Path, work_root: Path) -> Path:
    """Copy `egs2/<corpus>/asr1` under `work_root/egs2/<corpus>/asr1`; returns the copy.

    Args:
        recipe_dir: a recipe directory inside this repository (egs2/<corpus>/asr1).
        work_root: an empty or new directory.
    """
    recipe_dir = Path(recipe_dir).resolve()
    egs2 = recipe_dir.parents[1]
    if not (egs2 / "TEMPLATE" / "asr1" / "asr.sh").exists():
        raise FileNotFoundError(f"{recipe_dir} is not a recipe under egs2/ (no egs2/TEMPLATE)")
    corpus = recipe_dir.parent.name
    work = Path(work_root) / "egs2" / corpus / recipe_dir.name
    work.mkdir(parents=True)
    os.symlink(egs2 / "TEMPLATE", Path(work_root) / "egs2" / "TEMPLATE")
    shutil.copy(recipe_dir / "run.sh", work / "run.sh")
    shutil.copytree(recipe_dir / "conf", work / "conf")
    # Corpus locations (ESPnet's db.sh convention) are recipe settings a copy may edit too.
    if (recipe_dir / "db.sh").exists():
        shutil.copy(recipe_dir / "db.sh", work / "db.sh")
    if (recipe_dir / "local").exists():
        os.symlink(recipe_dir / "local", work / "local")
    return work
