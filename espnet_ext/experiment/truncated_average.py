"""The model a shorter training would have ended with, from a longer run's kept epochs.

ESPnet ends a training by averaging the ``keep_nbest_models`` best epochs by
``best_model_criterion`` (``valid.acc.ave.pth``). With a schedule that does not depend on the
number of epochs (``warmuplr``, ``noamlr``...), the first N epochs of a longer training are
exactly what an N-epoch training does, so the same average over epochs 1..N is exactly the model
that training would have given: "how many epochs does the recipe need?" is answered from one
training instead of one per candidate length.

:func:`truncated_average` picks the n best of epochs 1..N from ESPnet's reporter (kept in
``checkpoint.pth``) and averages their weights with ESPnet's own
``espnet2.main_funcs.average_nbest_models``, so the result is bit for bit what ESPnet would have
written. It needs those epochs' weights: ``checkpoints/{N}epoch.pth`` as
``python -m espnet_ext.bin.asr_train`` keeps them (ESPnet alone keeps only the final n best).
The output is ``<phase>.<key>.ave_upto<N>.pth`` next to the run's other model files, with a
``.json`` record (epochs and values averaged, criterion, n); decode it like any model file, e.g.
``./run.sh --stage 5 --stop_stage 5 --inference_model valid.acc.ave_upto17.pth``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from espnet_ext.experiment.experiment_dir import ExperimentDir, ExperimentError
from espnet_ext.utils.atomic import atomic_output, write_json_atomic

#: What the record beside an average says it is (an existing file without it is not ours).
RECORD_KIND = "espnet_ext truncated n-best average"


@dataclasses.dataclass(frozen=True)
class TruncatedAverage:
    """A written average.

    Attributes:
        path: The averaged weights.
        last_epoch: N: the epochs considered were 1..N.
        criterion: (phase, key, max|min), e.g. ("valid", "acc", "max").
        epochs: (epoch, criterion value) of the epochs averaged, best first.
    """

    path: Path
    last_epoch: int
    criterion: Tuple[str, str, str]
    epochs: List[Tuple[int, float]]


def average_file_name(criterion: Sequence[str], last_epoch: int) -> str:
    """``valid.acc.ave_upto17.pth`` for ("valid", "acc", "max") and 17."""
    return f"{criterion[0]}.{criterion[1]}.ave_upto{last_epoch}.pth"


def _run_criterion(exp: ExperimentDir) -> Tuple[Tuple[str, str, str], int]:
    """The run's own first best_model_criterion and keep_nbest_models (ESPnet's defaults)."""
    config = exp.config
    crit = (config.get("best_model_criterion") or [["valid", "loss", "min"]])[0]
    return (str(crit[0]), str(crit[1]), str(crit[2])), int(config.get("keep_nbest_models") or 10)


def truncated_average(exp_dir: Union[str, Path], last_epoch: int,
                      criterion: Optional[Sequence[str]] = None, nbest: Optional[int] = None,
                      out_path: Optional[Path] = None) -> TruncatedAverage:
    """Average the `nbest` best of epochs 1..`last_epoch` as ESPnet would at the end of training.

    Args:
        exp_dir: The training's output dir (checkpoint.pth, config.yaml, kept epochs).
        last_epoch: N.
        criterion: (phase, key, max|min); None: the run's first ``best_model_criterion``.
        nbest: Epochs averaged; None: the run's ``keep_nbest_models``. Fewer when fewer epochs
            have the criterion's value (as ESPnet does).
        out_path: Where to write; None: ``<exp_dir>/<phase>.<key>.ave_upto<N>.pth``.

    Raises:
        ExperimentError: No reporter, N outside the trained epochs, the criterion not reported,
            a chosen epoch's weights not kept, or `out_path` exists and was not written here.
    """
    from espnet2.main_funcs.average_nbest_models import average_nbest_models
    from espnet2.train.reporter import Reporter

    exp = ExperimentDir(exp_dir)
    default_criterion, default_nbest = _run_criterion(exp)
    criterion = tuple(criterion) if criterion is not None else default_criterion
    nbest = nbest if nbest is not None else default_nbest
    if len(criterion) != 3 or criterion[2] not in ("max", "min"):
        raise ExperimentError(f"criterion must be (phase, key, max|min), got {criterion!r}")
    if nbest < 1:
        raise ExperimentError(f"nbest must be >= 1, got {nbest}")
    state = exp.reporter_state()
    if state is None:
        raise ExperimentError(f"{exp.path}: no per-epoch numbers (ESPnet's checkpoint.pth with its "
                              "reporter): give a training's output dir")
    trained = sorted(int(e) for e in state["stats"])
    if not 1 <= last_epoch <= trained[-1]:
        raise ExperimentError(f"{exp.path}: --up_to {last_epoch} is outside the trained epochs "
                              f"1..{trained[-1]}")
    truncated = dict(state, stats={e: v for e, v in state["stats"].items() if int(e) <= last_epoch},
                     epoch=last_epoch)
    reporter = Reporter()
    reporter.load_state_dict(truncated)
    phase, key, mode = criterion
    if not reporter.has(phase, key):
        raise ExperimentError(f"{exp.path}: the reporter has no {phase}.{key} in epochs 1..{last_epoch}")
    chosen = [(int(e), float(v)) for e, v in reporter.sort_epochs_and_values(phase, key, mode)[:nbest]]
    files = {e: exp.epoch_file(e) for e, _ in chosen}
    missing = [e for e, f in files.items() if f is None]
    if missing:
        raise ExperimentError(
            f"{exp.path}: the weights of epoch(s) {', '.join(map(str, missing))} are not kept "
            "(ESPnet keeps only its final n best; python -m espnet_ext.bin.asr_train keeps every "
            "epoch in checkpoints/)")

    out_path = Path(out_path) if out_path is not None else exp.path / average_file_name(criterion, last_epoch)
    record_path = out_path.with_suffix(".json")
    if out_path.exists() and not _is_ours(record_path):
        raise ExperimentError(f"{out_path} exists and was not written by this tool (no {record_path.name}): "
                              "choose another --out")
    with tempfile.TemporaryDirectory(prefix="truncated_average_") as tmp:
        tmp = Path(tmp)
        for e, f in files.items():
            os.symlink(Path(f).resolve(), tmp / f"{e}epoch.pth")
        average_nbest_models(tmp, reporter, [criterion], [len(chosen)])
        written = (tmp / f"{phase}.{key}.ave_{len(chosen)}best.pth").resolve()  # n = 1: a link
        with atomic_output(out_path) as dst:
            shutil.copyfile(written, dst)
    write_json_atomic(record_path, {"kind": RECORD_KIND, "exp_dir": str(exp.path), "last_epoch": last_epoch,
                                    "criterion": list(criterion), "nbest": nbest,
                                    "epochs": [{"epoch": e, "value": v} for e, v in chosen]})
    return TruncatedAverage(out_path, last_epoch, criterion, chosen)


def _is_ours(record_path: Path) -> bool:
    try:
        return json.loads(record_path.read_text()).get("kind") == RECORD_KIND
    except (OSError, ValueError, AttributeError):
        return False
