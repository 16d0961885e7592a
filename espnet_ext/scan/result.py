"""The result of a layer-reset scan: its directory, its rows (``scan.tsv``) and its record
(``scan.json``), and the reference reset that labels a group ambient or critical.

Where a scan lives: ``<exp_dir>/scan_<granularity>_<dataset>/`` (:func:`scan_dir`; the dataset
is the first data dir's name), the one place that name is built.

``scan.tsv`` has one row per (dataset, group, reset variant), tab-separated, with a header:

    dataset group kind block depth mode tau seed WER CER delta_WER delta_CER label
    n_utts delta_WER_lo delta_WER_hi delta_CER_lo delta_CER_hi label_ci

``mode`` is ``reinit`` (``tau`` set, ``seed`` empty) or ``rerandomize`` (``seed`` set, ``tau``
empty); ``block``/``depth`` are empty outside encoder/decoder blocks; error rates and deltas
are in percent / percentage points; ``label`` is ``ambient`` or ``critical`` (the observed
delta against the tolerance).

The last six columns (scans since error bars were added; older files without them are still
read): ``n_utts`` utterances the variant was scored on (fewer than the set when the adaptive scan
stopped early; WER/CER and the deltas are then those of these utterances, the deltas paired with
the baseline on the same utterances), the bounds of the paired bootstrap interval of each delta
(:mod:`espnet_ext.evaluation.bootstrap`), and ``label_ci``: ``ambient``, ``critical`` or
``uncertain`` (the interval straddles the tolerance) at the scan's confidence.

``scan.json`` records what was scanned and how: ``granularity``, ``scoring`` and ``datasets``
(also in older files, through ``identity``), ``identity`` (everything that changes scores),
``options``, ``baseline`` ({dataset: {"WER": %, "CER": %, "utterances": n}}), ``summary`` (one
line per dataset), ``rows`` and ``status`` (``running`` or ``done``).

The **reference reset** that decides whether a group is an ambient layer is re-initialization
to the smallest scanned tau (the initial weights when tau=0 is scanned, as in the paper's
definition), or re-randomization with the first seed when no re-initialization was scanned
(:func:`reference_variant`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from espnet_ext.scan.labels import AmbientCriterion
from espnet_ext.utils.atomic import write_text_atomic

if TYPE_CHECKING:
    from espnet_ext.evaluation.bootstrap import DeltaInterval

SCAN_TSV = "scan.tsv"
SCAN_JSON = "scan.json"
SCAN_MD = "scan.md"
COUNTS_FILE = "utt_errors.jsonl"
#: Everything a scan writes into its dir (deleting them starts the scan over).
SCAN_FILES = (SCAN_TSV, SCAN_JSON, SCAN_MD, COUNTS_FILE)

REINIT = "reinit"
RERANDOMIZE = "rerandomize"
MODES = (REINIT, RERANDOMIZE)

# Error rates are kept rounded to this many decimals everywhere (rows, baseline), so a row read
# back from scan.tsv after an interruption is identical to the row as first computed.
DECIMALS = 4

OLD_TSV_COLUMNS = ("dataset", "group", "kind", "block", "depth", "mode", "tau", "seed",
                   "WER", "CER", "delta_WER", "delta_CER", "label")
CI_TSV_COLUMNS = ("n_utts", "delta_WER_lo", "delta_WER_hi", "delta_CER_lo", "delta_CER_hi", "label_ci")
TSV_COLUMNS = OLD_TSV_COLUMNS + CI_TSV_COLUMNS


@dataclasses.dataclass
class ScanRow:
    """Scores of one reset variant on one dataset (a line of scan.tsv)."""

    dataset: str
    group: str
    kind: str
    block: Optional[int]
    depth: Optional[float]
    mode: str
    tau: Optional[int]
    seed: Optional[int]
    wer: float
    cer: float
    delta_wer: float = math.nan
    delta_cer: float = math.nan
    label: str = ""
    n_utts: Optional[int] = None
    delta_wer_lo: float = math.nan
    delta_wer_hi: float = math.nan
    delta_cer_lo: float = math.nan
    delta_cer_hi: float = math.nan
    label_ci: str = ""

    @property
    def variant_key(self) -> Tuple[str, str, str]:
        """(group, mode, tau or seed) — what identifies the reset, across datasets."""
        return (self.group, self.mode, str(self.tau if self.mode == REINIT else self.seed))

    def error(self, metric: str) -> float:
        return self.cer if metric == "cer" else self.wer

    def delta(self, metric: str) -> float:
        return self.delta_cer if metric == "cer" else self.delta_wer

    def bounds(self, metric: str) -> Tuple[float, float]:
        """(lower, upper) bound of the delta's interval (NaN when the row has none)."""
        if metric == "cer":
            return self.delta_cer_lo, self.delta_cer_hi
        return self.delta_wer_lo, self.delta_wer_hi

    def relabel(self, baseline: Dict[str, float], criterion: AmbientCriterion,
                intervals: Optional[Dict[str, "DeltaInterval"]] = None) -> None:
        """Set deltas and labels from the dataset's baseline {"WER": .., "CER": ..} (percent).

        Args:
            baseline: The trained model's error rates on the whole dataset (the tolerance).
            criterion: The ambient rule.
            intervals: {"WER": .., "CER": ..} paired bootstrap intervals of this row's
                utterances (:func:`espnet_ext.evaluation.bootstrap.paired_bootstrap`); without
                them the deltas are taken against `baseline` and ``label_ci`` stays empty.
        """
        base = baseline[criterion.metric.upper()]
        if intervals is None:
            self.delta_wer = round(self.wer - baseline["WER"], DECIMALS)
            self.delta_cer = round(self.cer - baseline["CER"], DECIMALS)
            self.label = criterion.label(base, self.error(criterion.metric))
            return
        w, c = intervals["WER"], intervals["CER"]
        self.delta_wer, self.delta_cer = round(w.delta, DECIMALS), round(c.delta, DECIMALS)
        self.delta_wer_lo, self.delta_wer_hi = round(w.lo, DECIMALS), round(w.hi, DECIMALS)
        self.delta_cer_lo, self.delta_cer_hi = round(c.lo, DECIMALS), round(c.hi, DECIMALS)
        self.n_utts = c.n
        self.label = criterion.label(base, base + self.delta(criterion.metric))
        self.label_ci = criterion.label_interval(base, *self.bounds(criterion.metric))

    def to_tsv(self) -> str:
        def fmt(v, digits=None):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return ""
            return f"{v:.{digits}f}" if digits is not None else str(v)

        cells = [self.dataset, self.group, self.kind, fmt(self.block), fmt(self.depth, 4), self.mode,
                 fmt(self.tau), fmt(self.seed), fmt(self.wer, DECIMALS), fmt(self.cer, DECIMALS),
                 fmt(self.delta_wer, DECIMALS), fmt(self.delta_cer, DECIMALS), self.label,
                 fmt(self.n_utts), fmt(self.delta_wer_lo, DECIMALS), fmt(self.delta_wer_hi, DECIMALS),
                 fmt(self.delta_cer_lo, DECIMALS), fmt(self.delta_cer_hi, DECIMALS), self.label_ci]
        return "\t".join(cells)

    @classmethod
    def from_tsv(cls, line: str, columns: Sequence[str] = TSV_COLUMNS) -> "ScanRow":
        """A row from a scan.tsv line with the given header (the current or the older one)."""
        c = line.rstrip("\n").split("\t")
        if len(c) != len(columns):
            raise ValueError(f"expected {len(columns)} fields, got {len(c)}")

        def opt(v, typ):
            return typ(v) if v != "" else None

        def num(v):
            return float(v) if v != "" else math.nan

        row = cls(dataset=c[0], group=c[1], kind=c[2], block=opt(c[3], int), depth=opt(c[4], float),
                  mode=c[5], tau=opt(c[6], int), seed=opt(c[7], int), wer=float(c[8]),
                  cer=float(c[9]), delta_wer=opt(c[10], float) or 0.0,
                  delta_cer=opt(c[11], float) or 0.0, label=c[12])
        if len(columns) == len(TSV_COLUMNS):
            row.n_utts = opt(c[13], int)
            row.delta_wer_lo, row.delta_wer_hi = num(c[14]), num(c[15])
            row.delta_cer_lo, row.delta_cer_hi = num(c[16]), num(c[17])
            row.label_ci = c[18]
        return row


def tsv_header() -> str:
    return "\t".join(TSV_COLUMNS)


def read_tsv(path: Path) -> List[ScanRow]:
    """Rows of a scan.tsv; a truncated last line (interrupted write) is ignored.

    Files written before error bars existed (13 columns, no interval) are read too: their rows
    have no ``n_utts``, NaN bounds and an empty ``label_ci``.

    Raises:
        ValueError: The header is not scan.tsv's, or a line other than the last is malformed.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return []
    header = tuple(lines[0].split("\t"))
    if header not in (TSV_COLUMNS, OLD_TSV_COLUMNS):
        raise ValueError(f"{path}: not a scan.tsv (header {lines[0]!r}); use another --out_dir")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        try:
            rows.append(ScanRow.from_tsv(line, header))
        except ValueError as e:
            if n == len(lines):
                break  # the last line was cut by an interruption: recompute it
            raise ValueError(f"{path} line {n}: {e}") from None
    return rows


def write_tsv(path: Path, rows: Iterable[ScanRow]) -> None:
    write_text_atomic(path, "\n".join([tsv_header()] + [r.to_tsv() for r in rows]) + "\n")


def scan_dir_name(granularity: str, dataset: str) -> str:
    """Name of the directory of a scan at `granularity` on `dataset`: ``scan_<granularity>_<dataset>``."""
    return f"scan_{granularity}_{dataset}"


def scan_dir(exp_dir: Union[str, Path], granularity: str, dataset: str) -> Path:
    """Where a run's scan at `granularity` on `dataset` (its first data dir) is written."""
    return Path(exp_dir) / scan_dir_name(granularity, dataset)


def find_scan_dirs(exp_dir: Union[str, Path], granularity: Optional[str] = None) -> List[Path]:
    """A run's scan dirs holding a ``scan.tsv``, sorted by name.

    Args:
        exp_dir: The experiment dir.
        granularity: Only scans at this granularity (None: every scan).
    """
    pattern = scan_dir_name(granularity, "*") if granularity is not None else "scan_*"
    return sorted(d for d in Path(exp_dir).glob(pattern) if (d / SCAN_TSV).is_file())


def variant_value(row: ScanRow) -> Optional[int]:
    """The tau (reinit) or seed (rerandomize) of a row's reset."""
    return row.tau if row.mode == REINIT else row.seed


def variant_title(mode: str, value) -> str:
    """``tau=<value>`` for re-initialization, ``seed=<value>`` for re-randomization."""
    return f"tau={value}" if mode == REINIT else f"seed={value}"


def reference_variant(rows: Sequence[ScanRow]) -> Optional[Tuple[str, Optional[int]]]:
    """(mode, tau or seed) of the reset that labels groups ambient/critical (see module doc).

    Args:
        rows: The rows of one dataset (rows of several datasets are treated as one).

    Returns:
        The reference reset, or None when `rows` is empty.
    """
    taus = sorted({r.tau for r in rows if r.mode == REINIT})
    if taus:
        return REINIT, taus[0]
    seeds = [r.seed for r in rows if r.mode == RERANDOMIZE]
    return (RERANDOMIZE, seeds[0]) if seeds else None


def rows_of_variant(rows: Iterable[ScanRow], mode: str, value: Optional[int]) -> List[ScanRow]:
    """The rows of one reset (mode, tau or seed), in their order."""
    return [r for r in rows if r.mode == mode and variant_value(r) == value]


class ScanResultError(ValueError):
    """A scan dir cannot be read (missing, unreadable, or without the dataset asked for).

    The message says what is wrong, where, and how to fix it.
    """


class ScanResult:
    """A scan as its directory holds it: the rows of ``scan.tsv`` and the record ``scan.json``.

    Read with :meth:`load`. A dir with a ``scan.tsv`` but no ``scan.json`` (rows written by
    other tools) is readable; its identity is then unknown (None, empty).
    """

    def __init__(self, path: Path, rows: List[ScanRow], meta: dict, tsv_path: Optional[Path] = None):
        self._path = Path(path)
        self._tsv_path = Path(tsv_path) if tsv_path is not None else self._path / SCAN_TSV
        self._rows = list(rows)
        self.meta = meta

    @classmethod
    def load(cls, path: Union[str, Path]) -> "ScanResult":
        """Read a scan dir (or its ``scan.tsv``, whose dir then holds ``scan.json``).

        Raises:
            ScanResultError: No scan.tsv there, a malformed scan.tsv or scan.json.
        """
        path = Path(path)
        tsv = path if path.suffix == ".tsv" else path / SCAN_TSV
        if not tsv.is_file():
            raise ScanResultError(f"scan result {tsv} not found; run the layer-reset scan (stage 6 "
                                  "of the recipe, or python -m espnet_ext.bin.layer_scan) first")
        try:
            rows = read_tsv(tsv)
        except ValueError as e:
            raise ScanResultError(f"{e}; run the scan again into an empty directory") from None
        meta_path = tsv.parent / SCAN_JSON
        meta: dict = {}
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ScanResultError(f"{meta_path} is not JSON ({e}); re-run the scan to rewrite "
                                      "it (a finished scan only rewrites its reports)") from None
            if not isinstance(meta, dict):
                raise ScanResultError(f"{meta_path} is not a JSON object; re-run the scan to rewrite it")
        return cls(tsv.parent, rows, meta, tsv)

    @property
    def path(self) -> Path:
        """The scan dir."""
        return self._path

    @property
    def tsv_path(self) -> Path:
        """The rows' file (``scan.tsv`` unless loaded from a file of another name)."""
        return self._tsv_path

    @property
    def json_path(self) -> Path:
        """The record's file, ``scan.json`` (it may not exist)."""
        return self._path / SCAN_JSON

    @property
    def identity(self) -> dict:
        """scan.json's ``identity``: everything that changes the scores ({} when unknown)."""
        return dict(self.meta.get("identity") or {})

    @property
    def options(self) -> dict:
        """scan.json's ``options`` (modes, taus, seeds, criterion, confidence, ...)."""
        return dict(self.meta.get("options") or {})

    @property
    def granularity(self) -> Optional[str]:
        """Layer map granularity scanned (None when scan.json does not say)."""
        return self.meta.get("granularity") or self.identity.get("granularity")

    @property
    def scoring(self) -> Optional[str]:
        """``ctc_greedy`` or ``beam`` (None when scan.json does not say)."""
        return self.meta.get("scoring") or self.identity.get("scoring")

    @property
    def datasets(self) -> List[str]:
        """Datasets scored, in the order of the scan's data dirs (else of the rows)."""
        if self.meta.get("datasets"):
            return list(self.meta["datasets"])
        if self.identity.get("data_dirs"):
            return [Path(d).name for d in self.identity["data_dirs"]]
        return list(dict.fromkeys(r.dataset for r in self._rows))

    @property
    def dataset(self) -> Optional[str]:
        """The first dataset (the one the scan dir is named after), None for an empty scan."""
        names = self.datasets
        return names[0] if names else None

    @property
    def status(self) -> Optional[str]:
        """``running`` or ``done`` (None without scan.json)."""
        return self.meta.get("status")

    @property
    def finished(self) -> bool:
        return self.status == "done"

    @property
    def rows(self) -> List[ScanRow]:
        """Every row of scan.tsv, in file order."""
        return list(self._rows)

    @property
    def summary(self) -> List[str]:
        """scan.json's summary lines, one per dataset (empty without scan.json)."""
        return list(self.meta.get("summary") or [])

    @property
    def baseline(self) -> Dict[str, Dict[str, float]]:
        """{dataset: {"WER": %, "CER": %, ...}} of the trained model ({} without scan.json)."""
        return dict(self.meta.get("baseline") or {})

    @property
    def criterion(self) -> dict:
        """The ambient rule the rows are labelled with (scan.json options; {} when unknown)."""
        return dict(self.options.get("criterion") or {})

    def rows_of(self, dataset: str) -> List[ScanRow]:
        """The rows of one dataset, in file order."""
        return [r for r in self._rows if r.dataset == dataset]

    def check_dataset(self, dataset: str) -> None:
        """Raises ScanResultError when the scan has no rows for `dataset` (lists those it has)."""
        present = list(dict.fromkeys(r.dataset for r in self._rows))
        if dataset not in present:
            raise ScanResultError(
                f"{self.tsv_path}: no rows for dataset {dataset!r}; datasets: "
                f"{', '.join(present) or 'none'} (scan that data dir, or choose one of these)")

    def reference_variant(self, dataset: str) -> Optional[Tuple[str, Optional[int]]]:
        """(mode, tau or seed) of the reference reset on `dataset` (None: no rows there)."""
        return reference_variant(self.rows_of(dataset))

    def reference_rows(self, dataset: str) -> List[ScanRow]:
        """The rows of the reference reset on `dataset`, one per group, in file order."""
        mine = self.rows_of(dataset)
        ref = reference_variant(mine)
        return rows_of_variant(mine, *ref) if ref is not None else []
