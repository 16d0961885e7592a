"""Collect decoding scores of experiment dirs into one RESULTS.md (ESPnet's format).

Layout read: `<expdir>/<exp>/<decode_tag>/<dataset>/scores.json` (written by the scoring stage);
through :class:`espnet_ext.experiment.experiment_dir.ExperimentDir`, the training wall time and
the experiment's weight files (for the parameter count: checkpoint 0, a kept epoch or a model
file); through :class:`espnet_ext.scan.result.ScanResult`, the layer-reset scans of each
experiment (their summary lines from scan.json; their scan.md and heatmaps are linked).
"""

from __future__ import annotations

import datetime
import platform
import subprocess
from pathlib import Path
from typing import List, Optional

from espnet_ext.evaluation.scoring import load_scores, results_markdown

_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def count_parameters(checkpoint: Path) -> Optional[int]:
    """Number of trainable values in a saved state dict (buffers excluded); None if absent.

    Loaded as weights only (ESPnet's ``checkpoint.pth`` through its ``"model"`` entry).
    """
    if not Path(checkpoint).exists():
        return None
    from espnet_ext.experiment.checkpoints import load_state_dict_file

    state = load_state_dict_file(checkpoint)
    return sum(v.numel() for k, v in state.items() if not k.endswith(_BUFFER_SUFFIXES))


def count_experiment_parameters(exp_dir: Path) -> Optional[int]:
    """Parameters of an experiment's model from any of its weight files; None if it has none.

    Checkpoint 0 when saved, else the first epoch kept (``checkpoints/`` or ESPnet's own
    ``{N}epoch.pth``), else any ``*.pth`` model file of the dir: all hold the same tensors' shapes.
    """
    from espnet_ext.experiment.experiment_dir import ExperimentDir
    from espnet_ext.experiment.experiment_dir import RESUME_FILE

    exp = ExperimentDir(exp_dir)
    candidates = [exp.epoch_file(t) for t in exp.saved_epochs()]
    candidates += [exp.path / n for n in exp.model_files() if n != RESUME_FILE]
    for path in candidates:
        if path is not None and path.is_file():
            return count_parameters(path)
    return None


def _environment() -> List[str]:
    import espnet
    import torch

    try:
        # The commit of this package's checkout, wherever the recipe runs from.
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return [
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- espnet_ext commit: {commit}",
        f"- python {platform.python_version()}, torch {torch.__version__}, espnet {espnet.__version__}",
        f"- machine: {platform.machine()}, {_cpu_count()} CPU cores"
        + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"),
    ]


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0))


def write_results_md(expdir: Path, out: Path) -> str:
    """Write RESULTS.md for every scored decoding under `expdir`; returns the markdown.

    Raises:
        FileNotFoundError: when no `scores.json` exists under `expdir` (nothing decoded yet).
    """
    from espnet_ext.experiment.experiment_dir import ExperimentDir

    expdir = Path(expdir)
    score_files = sorted(expdir.glob("*/decode_*/*/scores.json"))
    if not score_files:
        raise FileNotFoundError(
            f"no scores under {expdir}/*/decode_*/*/scores.json: run the decoding stage first"
        )
    by_exp = {}
    for f in score_files:
        exp_dir = f.parents[2]
        by_exp.setdefault(exp_dir, []).append((f"{f.parent.parent.name}/{f.parent.name}", f))

    lines = ["# RESULTS", "## Environments"] + _environment() + ["", "## Summary", ""]
    lines += ["|experiment|dataset|WER (%)|CER (%)|parameters|training wall time (s)|",
              "|---|---|---|---|---|---|"]
    sections = []
    for exp_dir, entries in by_exp.items():
        params = count_experiment_parameters(exp_dir)
        wall = ExperimentDir(exp_dir).train_wall_s()
        rows = []
        for name, f in entries:
            scores = load_scores(f)
            rows.append((name, scores))
            lines.append(
                f"|{exp_dir.name}|{name}|{scores['WER'].error_rate:.1f}|"
                f"{scores['CER'].error_rate:.1f}|{params if params is not None else '-'}|"
                f"{f'{wall:.0f}' if wall is not None else '-'}|"
            )
        sections.append(results_markdown(str(exp_dir), rows))
    scans = _scan_summaries(expdir, Path(out).parent)
    federated = _federated_summaries(expdir, Path(out).parent)
    text = "\n".join(lines) + "\n\n" + scans + federated + "\n".join(sections)
    Path(out).write_text(text)
    return text


def _scan_summaries(expdir: Path, relative_to: Path) -> str:
    """Markdown: each scan's summary lines (ambient layers) with links to its table and heatmaps."""
    import os

    from espnet_ext.scan.result import ScanResult, find_scan_dirs

    parts = []
    for exp_dir in sorted(d for d in Path(expdir).glob("*") if d.is_dir()):
        # Finished reports only: a scan whose first run is still going has no scan.md yet.
        for scan_dir in [d for d in find_scan_dirs(exp_dir) if (d / "scan.md").is_file()]:
            rel = Path(os.path.relpath(scan_dir, relative_to))
            figures = ", ".join(f"[{p.stem}]({rel / p.name})" for p in sorted(scan_dir.glob("*.png")))
            parts.append(f"- `{exp_dir.name}` / `{scan_dir.name}` "
                         f"([table]({rel / 'scan.md'}); {figures}):")
            parts += [f"  - {line}" for line in ScanResult.load(scan_dir).summary]
    if not parts:
        return ""
    return "## Layer-reset scans (ambient layers)\n\n" + "\n".join(parts) + "\n\n"


def _federated_summaries(expdir: Path, relative_to: Path) -> str:
    """Markdown: each federated comparison (``<expdir>/fl_*/results.md``, stage 8), links rebased."""
    import os
    import re

    parts = []
    for md in sorted(Path(expdir).glob("fl_*/results.md")):
        rel = Path(os.path.relpath(md.parent, relative_to))
        body = re.sub(r"\]\((?!http)([^)]+)\)", lambda m: f"]({rel / m.group(1)})", md.read_text())
        parts.append(f"### `{md.parent.name}`\n\n{body}")
    if not parts:
        return ""
    return "## Federated adaptation (stage 8)\n\n" + "\n".join(parts) + "\n"
