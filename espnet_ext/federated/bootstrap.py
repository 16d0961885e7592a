"""Paired bootstrap interval of an error-rate difference between two federated training runs.

Two plans (e.g. targeted vs uniform dropout) are scored on the same test utterances, so their
difference is measured per utterance: one resample of the utterances (with replacement) is applied
to both plans at once, and the spread of the resampled differences gives the interval. This is
much tighter than comparing two independent intervals, because utterances that are hard for one
model are hard for the other too.

Several federated seeds per plan: the per-utterance error counts of a plan are averaged over its
seeds before resampling (one resample of utterances, then the seed-averaged errors of both plans
on it). The interval is then about the seed-averaged models, i.e. the training procedure's
expected error, and it reflects the uncertainty from the finite test set; the seed-to-seed spread
is reported next to it (mean, std, min-max per plan). The alternative, bootstrapping each seed
separately and pooling the resamples, would mix seed-to-seed differences into an interval that is
computed as if they were test-set noise, and it needs the same seeds in both plans; averaging
first needs neither. With few seeds, neither approach resamples the seeds themselves, so the
interval does not cover seed variance: read it together with the spread.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from espnet_ext.evaluation.bootstrap import paired_bootstrap as _paired_bootstrap


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """Error-rate difference a - b on the same utterances, with its bootstrap interval.

    Attributes:
        difference: Point estimate in percentage points: 100 x (sum of a's errors - sum of b's
            errors) / reference tokens, with each side's errors averaged over its seeds (equal to
            the difference of the plans' seed-mean error rates).
        low, high: Percentile interval of the resampled differences (percentage points).
        confidence: Coverage of the interval (e.g. 0.95).
        utterances: Number of utterances resampled.
        seeds_a, seeds_b: Runs (seeds) averaged on each side.
        resamples: Bootstrap resamples drawn.
        seed: Seed of the resampling generator (the same seed gives the same interval).
    """

    difference: float
    low: float
    high: float
    confidence: float
    utterances: int
    seeds_a: int
    seeds_b: int
    resamples: int
    seed: int


def paired_bootstrap(errors_a: Sequence, errors_b: Sequence, ref_tokens: Sequence[int],
                     resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> PairedDifference:
    """Paired bootstrap of the error-rate difference a - b over utterances.

    Args:
        errors_a: Error counts (words or characters) of plan a, shape (utterances,) for one run
            or (seeds, utterances) for several; averaged over seeds first (module doc).
        errors_b: The same for plan b, on the same utterances in the same order.
        ref_tokens: Reference words or characters per utterance, shape (utterances,).
        resamples: Bootstrap resamples (>= 10).
        seed: Seed of the resampling generator.
        confidence: Interval coverage in (0, 1).

    Returns:
        :class:`PairedDifference` (percentage points).

    Raises:
        ValueError: Empty input, mismatched utterance counts, no reference tokens at all, or
            `resamples` / `confidence` out of range.
    """
    a, b = np.atleast_2d(np.asarray(errors_a, dtype=float)), np.atleast_2d(np.asarray(errors_b, dtype=float))
    ref = np.asarray(ref_tokens, dtype=float)
    if ref.ndim != 1 or ref.size == 0:
        raise ValueError("paired bootstrap needs at least one utterance")
    if a.shape[1] != ref.size or b.shape[1] != ref.size:
        raise ValueError(f"paired bootstrap needs the same utterances on both sides: {a.shape[1]} and "
                         f"{b.shape[1]} error counts for {ref.size} references")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError("paired bootstrap needs at least one run on each side")
    if ref.sum() <= 0:
        raise ValueError("paired bootstrap needs reference tokens: every reference is empty")
    # One home for the resampling: the scan's paired bootstrap, here on seed-averaged errors
    # (b plays the baseline, a the variant: the interval is of a - b).
    interval = _paired_bootstrap({"rate": (b.mean(axis=0), a.mean(axis=0), ref)}, samples=resamples,
                                 seed=seed, confidence=confidence)["rate"]
    return PairedDifference(difference=interval.delta, low=interval.lo, high=interval.hi,
                            confidence=confidence, utterances=ref.size, seeds_a=a.shape[0], seeds_b=b.shape[0],
                            resamples=resamples, seed=seed)
