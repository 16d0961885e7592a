"""Per-utterance error counts of a scan (``utt_errors.jsonl``) and what they give: the
baseline's rates, paired bootstrap intervals of a variant's change, and whether a stored variant
needs scoring again.

Kept apart from the scanner so that relabelling (other confidence, other criterion) reads the
counts without scoring anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Sequence

from espnet_ext.evaluation import bootstrap as boot
from espnet_ext.scan.labels import UNCERTAIN
from espnet_ext.scan.result import DECIMALS, SCAN_FILES, ScanResultError

if TYPE_CHECKING:
    from espnet_ext.scan.scanner import ScanOptions


class UttErrors:
    """Per-utterance error counts of the baseline and of every scored variant.

    ``utt_errors.jsonl``, one JSON object per line, appended as the scan goes (the last record of
    a key wins): baseline records ``{"dataset", "baseline": true, "utts": [ids], "words": [..],
    "chars": [..], "w": [word errors], "c": [char errors]}`` (reference lengths and errors per
    utterance, in the data dir's order) and variant records ``{"dataset", "group", "mode",
    "value", "idx": [utterance positions in the baseline's list], "w": [..], "c": [..]}``.
    """

    def __init__(self, path: Path):
        self.path = path
        self.baseline: Dict[str, dict] = {}
        self.variants: Dict[tuple, dict] = {}
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            for n, line in enumerate(lines, start=1):
                try:
                    self._add(json.loads(line))
                except (json.JSONDecodeError, KeyError):
                    if n == len(lines):
                        # Cut by an interruption: that variant is scored again. Drop the cut
                        # line so that the next record starts a line of its own.
                        with open(path, "r+b") as f:
                            f.truncate(len("".join(l + "\n" for l in lines[:-1]).encode("utf-8")))
                        break
                    raise ScanResultError(f"{path} line {n} is not a counts record; delete "
                                    f"{', '.join(SCAN_FILES)} in {path.parent} to start over") from None

    def _add(self, rec: dict) -> None:
        if rec.get("baseline"):
            self.baseline[rec["dataset"]] = rec
        else:
            self.variants[(rec["dataset"], rec["group"], rec["mode"], str(rec["value"]))] = rec

    def append(self, rec: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._add(rec)


def baseline_rates(base: dict) -> Dict[str, float]:
    """{"WER", "CER"} in percent of a baseline counts record."""
    return {"WER": round(100.0 * sum(base["w"]) / max(sum(base["words"]), 1), DECIMALS),
            "CER": round(100.0 * sum(base["c"]) / max(sum(base["chars"]), 1), DECIMALS)}


def row_confidence(opts: "ScanOptions", n: int, n_total: int) -> float:
    """Confidence of a row's interval: the scan's, or its look's (Bonferroni) when stopped early."""
    if n >= n_total:
        return opts.confidence
    return boot.look_confidence(opts.confidence, len(boot.look_sizes(n_total, opts.adaptive_first)))


def intervals(base: dict, idx: Sequence[int], w: Sequence[int], c: Sequence[int],
               opts: "ScanOptions", confidence: float) -> Dict[str, boot.DeltaInterval]:
    """Paired bootstrap intervals of a variant's WER and CER change on utterances `idx`."""
    # Sorted by utterance: the interval depends on the counts, not on the order they were scored in.
    order = sorted(range(len(idx)), key=lambda j: idx[j])
    ix = [idx[j] for j in order]
    return boot.paired_bootstrap(
        {"WER": ([base["w"][i] for i in ix], [w[j] for j in order], [base["words"][i] for i in ix]),
         "CER": ([base["c"][i] for i in ix], [c[j] for j in order], [base["chars"][i] for i in ix])},
        samples=opts.bootstrap_samples, seed=opts.bootstrap_seed, confidence=confidence)


def stored_intervals(counts: UttErrors, key: tuple, opts: "ScanOptions"):
    """(intervals, utterances scored, utterances in the set) of a stored variant, or None."""
    base, var = counts.baseline.get(key[0]), counts.variants.get(key)
    if base is None or var is None:
        return None
    n, n_total = len(var["idx"]), len(base["utts"])
    conf = row_confidence(opts, n, n_total)
    return intervals(base, var["idx"], var["w"], var["c"], opts, conf), n, n_total


def settled(counts: UttErrors, key: tuple, opts: "ScanOptions") -> bool:
    """Whether a stored variant needs no more scoring under the current options."""
    base, var = counts.baseline.get(key[0]), counts.variants.get(key)
    if base is None or var is None:
        return False  # no per-utterance counts (a scan from before error bars): score again
    if len(var["idx"]) >= len(base["utts"]):
        return True
    if not opts.adaptive:
        return False
    intervals, _, _ = stored_intervals(counts, key, opts)
    base = baseline_rates(counts.baseline[key[0]])[opts.criterion.metric.upper()]
    iv = intervals[opts.criterion.metric.upper()]
    return opts.criterion.label_interval(base, iv.lo, iv.hi) != UNCERTAIN
