"""Ambient or critical: the rule that labels a layer from its error after a reset.

A layer (group) is **ambient** when the error after resetting it stays within a tolerance of the
trained model's error, **critical** otherwise. The source paper's threshold is not known, so the
rule is configurable:

* ``metric``: ``cer`` (default) or ``wer``. CER is the default because it moves in finer steps
  on the small dev sets of reset scans; WER is the paper's metric.
* ``abs_points``: allowed increase in percentage points (default 2.0).
* ``rel``: allowed increase as a fraction of the baseline error (default 0.10, i.e. +10 %).
* ``combine``: ``any`` (default): within the absolute *or* the relative allowance, i.e. a
  tolerance of max(abs_points, rel x baseline), which keeps a floor for very good models and
  scales with poor ones; ``all``: within both, min(abs_points, rel x baseline).

Either allowance can be disabled (None); at least one must be set. An error below the baseline is
always within the tolerance.

With an interval on the error change (:mod:`espnet_ext.evaluation.bootstrap`), a third label exists:
**uncertain**, when the interval straddles the tolerance (:meth:`AmbientCriterion.label_interval`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from espnet_ext.evaluation.bootstrap import AMBIENT, CRITICAL, UNCERTAIN

METRICS = ("cer", "wer")
COMBINES = ("any", "all")
CI_LABELS = (AMBIENT, CRITICAL, UNCERTAIN)


@dataclasses.dataclass(frozen=True)
class AmbientCriterion:
    """Threshold rule for labelling a reset layer ambient or critical (see module doc).

    Attributes:
        metric: ``cer`` or ``wer``.
        abs_points: Allowed increase in percentage points, or None.
        rel: Allowed increase as a fraction of the baseline error, or None.
        combine: ``any`` or ``all`` (how the two allowances combine when both are set).
    """

    metric: str = "cer"
    abs_points: Optional[float] = 2.0
    rel: Optional[float] = 0.10
    combine: str = "any"

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.combine not in COMBINES:
            raise ValueError(f"combine must be one of {', '.join(COMBINES)}, got {self.combine!r}")
        if self.abs_points is None and self.rel is None:
            raise ValueError("set at least one of the absolute and the relative threshold")
        for name, v in (("absolute threshold", self.abs_points), ("relative threshold", self.rel)):
            if v is not None and v < 0:
                raise ValueError(f"the {name} must be >= 0, got {v}")

    def tolerance(self, baseline: float) -> float:
        """Largest allowed error increase in percentage points for a baseline error (percent)."""
        allowances = [a for a in (self.abs_points, None if self.rel is None else self.rel * baseline)
                      if a is not None]
        return max(allowances) if self.combine == "any" else min(allowances)

    def label(self, baseline: float, error: float) -> str:
        """``ambient`` if `error` (percent) is within the tolerance of `baseline`, else ``critical``."""
        return AMBIENT if error - baseline <= self.tolerance(baseline) + 1e-9 else CRITICAL

    def label_interval(self, baseline: float, lo: float, hi: float) -> str:
        """Label of an interval [lo, hi] on the error change (points) at `baseline` (percent):
        ``ambient`` (all within the tolerance), ``critical`` (all above it) or ``uncertain``."""
        from espnet_ext.evaluation.bootstrap import interval_label

        return interval_label(lo, hi, self.tolerance(baseline))

    def describe(self) -> str:
        """Human-readable rule, e.g. ``CER within max(+2.0 points, +10% of baseline)``."""
        parts = []
        if self.abs_points is not None:
            parts.append(f"+{self.abs_points:g} points")
        if self.rel is not None:
            parts.append(f"+{100 * self.rel:g}% of baseline")
        if len(parts) == 1:
            rule = parts[0]
        else:
            rule = f"{'max' if self.combine == 'any' else 'min'}({', '.join(parts)})"
        return f"{self.metric.upper()} within {rule}"
