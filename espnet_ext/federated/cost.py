"""Client cost accounting: what federated dropout saves, measured per client and round.

Federated-dropout results are easy to misreport (Cheng et al. 2022), so every client update
records what it actually cost:

* ``params_trained``: parameter elements the client's optimizer updates (its sub-model's, less
  those of frozen groups);
* ``bytes_down`` / ``bytes_up``: bytes of the tensors actually sent to / returned by the client
  (``numel x element size`` of each tensor: float32 = 4 bytes; message framing not counted); a
  client returns only the trained groups' tensors, so frozen groups cost download only;
* ``steps``, ``train_seconds``, ``step_seconds``: local optimizer steps, wall time of local
  training, and its mean per step;
* ``peak_rss_bytes``: the client process's peak resident memory during local training (sampled
  every few milliseconds; includes the Python runtime and libraries, so compare differences);
  ``peak_device_bytes``: the torch CUDA allocator's peak on a GPU (0 on CPU);
* ``model_state_bytes``: parameters of the sub-model + gradients and optimizer state of its
  trained parameters (:func:`training_state_bytes`: an allocator-independent estimate of the
  training memory the sub-model needs).

:func:`submodel_numel` gives the same sizes analytically for a rate assignment, which is how a
uniform plan is matched to a targeted one at equal client cost.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import torch

from espnet_ext.federated.submodel import kept_units
from espnet_ext.federated.units import DroppableModule
from espnet_ext.utils.atomic import write_text_atomic


def tensor_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes of the tensors of a state dict as sent (numel x element size)."""
    return sum(int(t.numel()) * t.element_size() for t in state.values())


def submodel_numels(
    shapes: Mapping[str, Sequence[int]],
    modules: Sequence[DroppableModule],
    rates: Mapping[str, float],
    group_norm_policy: str = "auto",
) -> Dict[str, int]:
    """Elements of every state-dict entry of a sub-model at the given per-module rates.

    Computed from shapes alone, without drawing a sub-model (kept-unit counts do not depend
    on which units are drawn).

    Args:
        shapes: Shape of every entry of the full state dict.
        modules: Droppable modules of the model.
        rates: Module name -> dropout rate (missing = 0).
        group_norm_policy: As in :func:`espnet_ext.federated.submodel.choose_submodel`.

    Returns:
        {key: number of elements in the sub-model}.
    """
    sliced_len: Dict[str, Dict[int, int]] = {}  # a key may be cut along two dims by two units
    for m in modules:
        r = float(rates.get(m.name, 0.0))
        if r <= 0:
            continue
        k = kept_units(m, r, group_norm_policy)
        for key, slices in m.index_map(m.first_units(k)).items():
            for dim, idx in slices:
                sliced_len.setdefault(key, {})[dim] = len(idx)
    out = {}
    for key, shape in shapes.items():
        shape = list(shape)
        for dim, n in sliced_len.get(key, {}).items():
            shape[dim] = n
        out[key] = math.prod(shape)
    return out


def submodel_numel(
    shapes: Mapping[str, Sequence[int]],
    modules: Sequence[DroppableModule],
    rates: Mapping[str, float],
    group_norm_policy: str = "auto",
    keys: Optional[Iterable[str]] = None,
) -> int:
    """Total elements of the entries `keys` (default all) of a sub-model; see submodel_numels."""
    numels = submodel_numels(shapes, modules, rates, group_norm_policy)
    return sum(numels[k] for k in (shapes if keys is None else keys))


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class PeakMemory:
    """Context manager measuring peak process RSS (sampled) and CUDA allocator peak.

    Args:
        device: ``cpu`` or a CUDA device; on CUDA the allocator's peak counter is reset on
            entry and read on exit.
        interval: Sampling interval of the RSS in seconds.

    Attributes (after exit):
        peak_rss_bytes: Highest sampled RSS (at least the RSS on entry and exit).
        start_rss_bytes: RSS on entry.
        peak_device_bytes: ``torch.cuda.max_memory_allocated`` (0 on CPU).
    """

    def __init__(self, device: str = "cpu", interval: float = 0.005):
        self.device = torch.device(device)
        self.interval = interval
        self.peak_rss_bytes = 0
        self.start_rss_bytes = 0
        self.peak_device_bytes = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss_bytes = max(self.peak_rss_bytes, _rss_bytes())

    def __enter__(self) -> "PeakMemory":
        self.start_rss_bytes = self.peak_rss_bytes = _rss_bytes()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss_bytes = max(self.peak_rss_bytes, _rss_bytes())
        if self.device.type == "cuda":
            self.peak_device_bytes = int(torch.cuda.max_memory_allocated(self.device))


def optimizer_state_factor(optim: str) -> int:
    """Copies of the parameters an optimizer keeps (sgd with momentum 1, adam 2, plain sgd 0)."""
    return {"adam": 2, "adamw": 2, "sgd_momentum": 1}.get(optim, 0)


def training_state_bytes(model: torch.nn.Module, optimizer_copies: int) -> int:
    """Bytes a model's training state takes: every parameter once, and for each trained one
    (``requires_grad``) its gradient and `optimizer_copies` optimizer-state copies
    (:func:`optimizer_state_factor`). Frozen parameters need neither."""
    params = dict(model.named_parameters())
    trained = {k: p for k, p in params.items() if p.requires_grad}
    return tensor_bytes(params) + (1 + optimizer_copies) * tensor_bytes(trained)


@dataclasses.dataclass
class ClientCost:
    """Cost of one client update (one client in one round). See the module doc for units."""

    round: int
    client: int
    speaker: str
    num_examples: int = 0
    params_trained: int = 0
    params_full: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    steps: int = 0
    train_seconds: float = 0.0
    step_seconds: float = 0.0
    peak_rss_bytes: int = 0
    peak_device_bytes: int = 0
    model_state_bytes: int = 0
    loss: float = float("nan")
    failed: bool = False
    reason: str = ""

    @property
    def params_fraction(self) -> float:
        """Trained parameters as a fraction of the full model's."""
        return self.params_trained / self.params_full if self.params_full else float("nan")


_FIELDS = [f.name for f in dataclasses.fields(ClientCost)]
_TYPES = {f.name: f.type for f in dataclasses.fields(ClientCost)}


def _parse(name: str, value: str):
    t = _TYPES[name]
    if t in ("int", int):
        return int(value)
    if t in ("float", float):
        return float(value)
    if t in ("bool", bool):
        return value == "True"
    return value


class CostLedger:
    """Every client update's cost, with totals; stored as a TSV file (one row per update).

    Args:
        path: TSV file (``costs.tsv``); existing rows are loaded (a resumed run continues it).
    """

    def __init__(self, path: Optional[Path] = None):
        self.path = Path(path) if path is not None else None
        self.rows: List[ClientCost] = []
        if self.path is not None and self.path.is_file():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            if lines and lines[0].split("\t") != _FIELDS:
                raise ValueError(f"{self.path}: not a cost ledger (header {lines[0]!r})")
            for line in lines[1:]:
                cells = line.split("\t")
                if len(cells) != len(_FIELDS):
                    continue  # a line cut by an interruption
                self.rows.append(ClientCost(**{n: _parse(n, v) for n, v in zip(_FIELDS, cells)}))

    def truncate_after(self, server_round: int) -> None:
        """Forget rows of rounds after `server_round` (a resumed run redoes them)."""
        self.rows = [r for r in self.rows if r.round <= server_round]
        self.save()

    def add(self, costs: Iterable[ClientCost]) -> None:
        self.rows.extend(costs)

    def save(self) -> None:
        """Write the TSV atomically."""
        if self.path is None:
            return
        lines = ["\t".join(_FIELDS)]
        for r in self.rows:
            lines.append("\t".join(
                str(getattr(r, n)).replace("\t", " ").replace("\n", " ") for n in _FIELDS))
        write_text_atomic(self.path, "\n".join(lines) + "\n")

    def summary(self) -> Dict[str, float]:
        """Totals and means over successful updates (failed ones counted separately).

        Returns:
            ``updates``, ``failures``, ``params_fraction`` (mean), ``params_trained`` (mean),
            ``bytes_down``/``bytes_up`` (totals), ``bytes_per_update`` (mean down+up),
            ``step_seconds`` (mean over updates), ``train_seconds`` (total),
            ``peak_rss_bytes``/``peak_device_bytes``/``model_state_bytes`` (max).
        """
        ok = [r for r in self.rows if not r.failed]
        n = max(len(ok), 1)
        return {
            "updates": len(ok),
            "failures": sum(1 for r in self.rows if r.failed),
            "params_trained": sum(r.params_trained for r in ok) / n,
            "params_fraction": sum(r.params_fraction for r in ok) / n if ok else float("nan"),
            "bytes_down": sum(r.bytes_down for r in self.rows),
            "bytes_up": sum(r.bytes_up for r in ok),
            "bytes_per_update": sum(r.bytes_down + r.bytes_up for r in ok) / n,
            "step_seconds": sum(r.step_seconds for r in ok) / n if ok else float("nan"),
            "train_seconds": sum(r.train_seconds for r in ok),
            "peak_rss_bytes": max((r.peak_rss_bytes for r in ok), default=0),
            "peak_device_bytes": max((r.peak_device_bytes for r in ok), default=0),
            "model_state_bytes": max((r.model_state_bytes for r in ok), default=0),
        }
