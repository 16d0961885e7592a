"""Error bars on reset deltas: paired utterance-level bootstrap, and the adaptive scan's schedule.

A reset variant and the trained model (baseline) are scored on the same utterances. The change
in error rate is

    delta = 100 * (sum_u e_var(u) - sum_u e_base(u)) / sum_u r(u)      (percentage points)

with e(u) the edit errors (substitutions + deletions + insertions) of utterance u and r(u) its
reference length (words for WER, characters for CER). The **paired bootstrap** draws utterance
indices with replacement, applies *the same* draw to baseline and variant (so the utterances'
own difficulty cancels), recomputes delta from the resampled error counts and reference lengths,
and takes the percentile interval of the resampled deltas. One draw serves every metric, so the
WER and CER intervals of a variant come from the same resamples. Draws are seeded
(``numpy.random.default_rng``): the same counts and seed give the same interval.

A layer is **ambient** when the whole interval lies within the ambient tolerance, **critical**
when it lies entirely above it, and **uncertain** when it straddles it
(:func:`interval_label`).

The **adaptive scan** scores a variant on growing prefixes of one seeded utterance order
(:func:`look_sizes`: 16, 32, 64, ..., all) and stops at the first prefix whose interval decides
the label. Each early look (on part of the set) tests at the Bonferroni-corrected confidence
1 - (1 - c) / L for L planned looks (:func:`look_confidence`), so the chance that an early stop
decides wrongly stays below 1 - c; a variant that reaches the full set is labelled at c, exactly
as the full scan labels it. Over both, the chance of a wrong decision is below 2 (1 - c), not
1 - c: pass a higher confidence for a tighter bound.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

# The labels of a layer's error change (see the module doc); the scan's ambient/critical rule
# (:mod:`espnet_ext.scan.labels`) uses the same ones.
AMBIENT = "ambient"
CRITICAL = "critical"
UNCERTAIN = "uncertain"

DEFAULT_CONFIDENCE = 0.95
DEFAULT_SAMPLES = 1000
DEFAULT_SEED = 0
DEFAULT_FIRST_LOOK = 16
# Fewer resamples leave a percentile interval without tails to read.
MIN_SAMPLES = 10


@dataclasses.dataclass(frozen=True)
class DeltaInterval:
    """A paired error-rate change and its bootstrap interval.

    Attributes:
        delta: Observed change, variant minus baseline, percentage points.
        lo: Lower bound of the interval, percentage points.
        hi: Upper bound of the interval, percentage points.
        n: Utterances it was measured on.
        confidence: Two-sided coverage of [lo, hi] (e.g. 0.95).
    """

    delta: float
    lo: float
    hi: float
    n: int
    confidence: float


def check_bootstrap_options(confidence: float, samples: int) -> None:
    """Raise ValueError naming the option when a bootstrap setting cannot work."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"--confidence must be between 0 and 1 (exclusive), got {confidence}")
    if samples < MIN_SAMPLES:
        raise ValueError(f"--bootstrap_samples must be >= {MIN_SAMPLES} for a percentile interval, got {samples}")


def paired_bootstrap(
    counts: Mapping[str, Tuple[Sequence[int], Sequence[int], Sequence[int]]],
    samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Dict[str, DeltaInterval]:
    """Paired utterance-level bootstrap intervals of error-rate changes.

    Args:
        counts: {metric name: (baseline errors per utterance, variant errors per utterance,
            reference lengths per utterance)}, all in the same utterance order and of the same
            length n for every metric (e.g. {"WER": (..), "CER": (..)}). Errors may be
            fractional (e.g. averaged over several runs of one system).
        samples: Bootstrap resamples.
        seed: Seed of the resampling (the same seed gives the same interval).
        confidence: Two-sided coverage of the percentile interval.

    Returns:
        {metric name: DeltaInterval} in percentage points.

    Raises:
        ValueError: Arrays of different lengths, no utterance, or bad options.
    """
    check_bootstrap_options(confidence, samples)
    arrays = {}
    n = None
    for name, (base, var, ref) in counts.items():
        base, var, ref = (np.asarray(a, dtype=np.float64) for a in (base, var, ref))
        if not (base.shape == var.shape == ref.shape) or base.ndim != 1:
            raise ValueError(f"{name}: baseline, variant and reference counts must be 1-d arrays of "
                             f"one length, got {base.shape}, {var.shape}, {ref.shape}")
        if n is None:
            n = base.size
        elif base.size != n:
            raise ValueError(f"{name}: {base.size} utterances, but {n} for the other metrics")
        arrays[name] = (var - base, ref)
    if not n:
        raise ValueError("no utterance to bootstrap")
    rng = np.random.default_rng(seed)
    # Resample counts per utterance (multinomial) instead of index lists: same distribution,
    # and one (samples x n) matrix product per metric.
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=samples)
    alpha = (1.0 - confidence) / 2.0
    out = {}
    for name, (diff, ref) in arrays.items():
        point = 100.0 * diff.sum() / max(int(ref.sum()), 1)
        resampled = 100.0 * (weights @ diff) / np.maximum(weights @ ref, 1)
        lo, hi = np.quantile(resampled, [alpha, 1.0 - alpha])
        out[name] = DeltaInterval(float(point), float(lo), float(hi), int(n), float(confidence))
    return out


def interval_label(lo: float, hi: float, tolerance: float) -> str:
    """``ambient`` if [lo, hi] lies within `tolerance` (points), ``critical`` if above it,
    else ``uncertain``."""
    eps = 1e-9  # as AmbientCriterion.label: a delta exactly at the tolerance is ambient
    if hi <= tolerance + eps:
        return AMBIENT
    if lo > tolerance + eps:
        return CRITICAL
    return UNCERTAIN


def look_sizes(n: int, first: int = DEFAULT_FIRST_LOOK) -> List[int]:
    """Prefix sizes the adaptive scan looks at: first, 2 x first, 4 x first, ..., n.

    Raises:
        ValueError: n < 1 or first < 1.
    """
    if n < 1:
        raise ValueError(f"no utterances to scan (n={n})")
    if first < 1:
        raise ValueError(f"the first adaptive batch must hold >= 1 utterance, got {first}")
    sizes = []
    size = first
    while size < n:
        sizes.append(size)
        size *= 2
    sizes.append(n)
    return sizes


def look_confidence(confidence: float, looks: int) -> float:
    """Bonferroni-corrected confidence of each of `looks` planned looks: 1 - (1 - c) / looks."""
    return 1.0 - (1.0 - confidence) / max(int(looks), 1)


def utterance_order(n: int, seed: int = DEFAULT_SEED) -> List[int]:
    """A seeded shuffle of range(n): the order in which the adaptive scan visits utterances."""
    return [int(i) for i in np.random.default_rng(seed).permutation(n)]
