"""Are ambient layers stable across runs and model sizes? Pure statistics on scan outcomes.

Input: one :class:`RunOutcome` per trained run (its norm variant, size and seed, and per layer
group the error change after the chosen reset, the ambient/critical label and the weight update
that matches the reset). Nothing here reads files.

Comparing two runs (:func:`compare_runs`):

* runs with the same group names (seeds of one architecture; batch vs group norm of one size)
  are aligned **group by group**;
* otherwise (different numbers of blocks) they are aligned by **cells** (kind, normalized-depth
  bin): a block group at block b of N falls into bin floor(b * n_bins / N) (integer arithmetic,
  so no rounding puts a block into the wrong bin); groups outside the blocks (``encoder.embed``,
  ``ctc``, ...) are cells of their own. A cell's delta is the mean over its groups, and a cell is
  ambient when at least half of its groups are.

Statistics: Jaccard index of the ambient sets (two empty sets count as identical: 1.0), also
**without uncertain labels** (groups whose bootstrap interval straddles the ambient threshold in
either run are left out: the agreement of the labels the scans could decide), and
Spearman's rank correlation (ties get average ranks; NaN when fewer than 3 aligned values or a
constant input) of the reset deltas, and of weight update vs reset delta.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from itertools import combinations
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

ALIGN_GROUP = "group"
ALIGN_DEPTH = "depth_bin"
Cell = Tuple[str, Optional[int]]  # (kind, depth bin or None outside the blocks)


@dataclasses.dataclass(frozen=True)
class LayerOutcome:
    """What a reset did to one layer group of one run.

    Attributes:
        group: Group name (``encoder.encoders.3``).
        kind: Group kind (``enc_block``, ``enc_conv_module``, ``ctc``...).
        block: Block index in its stack, or None outside the blocks.
        num_blocks: Number of blocks of its stack, or None outside the blocks.
        delta: Error change after the reset, percentage points.
        ambient: The scan's label.
        update: The weight update that matches the reset (relative; NaN if unknown).
        uncertain: The delta's interval straddles the ambient threshold (scan column
            ``label_ci``; False for scans without intervals).
    """

    group: str
    kind: str
    block: Optional[int]
    num_blocks: Optional[int]
    delta: float
    ambient: bool
    update: float = math.nan
    uncertain: bool = False


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """The scan outcome of one run.

    Attributes:
        name: Run name (e.g. the experiment dir's name).
        norm: Conv-module norm variant (``batch_norm``, ``group_norm``...).
        size: Model size label (``4x96``: encoder blocks x dimension).
        seed: Training seed.
        layers: One outcome per scanned group, in layer order.
    """

    name: str
    norm: str
    size: str
    seed: Optional[int]
    layers: Tuple[LayerOutcome, ...]

    @property
    def setup(self) -> str:
        """``<norm> <size>``: runs of one setup differ only by their seed."""
        return f"{self.norm} {self.size}"

    def ambient_set(self) -> Set[str]:
        return {g.group for g in self.layers if g.ambient}

    def uncertain_set(self) -> Set[str]:
        return {g.group for g in self.layers if g.uncertain}


@dataclasses.dataclass(frozen=True)
class Correlation:
    """Spearman's rho, its two-sided p-value and the number of pairs (NaN when undefined)."""

    rho: float
    p: float
    n: int


@dataclasses.dataclass(frozen=True)
class PairComparison:
    """Two runs compared: how they were aligned, Jaccard of ambient sets, Spearman of deltas."""

    a: str
    b: str
    aligned_by: str
    n: int
    jaccard: float
    spearman: Correlation
    # Expected Jaccard of two random sets of the same sizes over the same n items: agreement that
    # says nothing about the layers (see chance_jaccard).
    chance_jaccard: float = math.nan
    # The same over the groups (cells) decided in both runs: uncertain labels left out.
    jaccard_decided: float = math.nan
    n_decided: int = 0


@dataclasses.dataclass(frozen=True)
class CellStats:
    """Outcomes pooled over the groups (and runs) falling into one cell or kind."""

    n: int
    ambient_fraction: float
    mean_delta: float
    sd_delta: float


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """|a & b| / |a | b|; 1.0 when both are empty (they agree: nothing is ambient)."""
    a, b = set(a), set(b)
    union = a | b
    return 1.0 if not union else len(a & b) / len(union)


def chance_jaccard(n: int, k_a: int, k_b: int) -> float:
    """Expected Jaccard of two sets drawn uniformly at random, of sizes ``k_a`` and ``k_b``, from
    the same ``n`` items (their overlap is hypergeometric). With most groups ambient this is high
    by itself (e.g. 13 and 12 of 23: 0.38), so an observed Jaccard is read against it."""
    if not 0 <= k_a <= n or not 0 <= k_b <= n:
        raise ValueError(f"set sizes {k_a}, {k_b} must be within 0..{n}")
    if k_a == 0 and k_b == 0:
        return 1.0  # both empty: they agree (see jaccard)
    total = math.comb(n, k_b)
    expected = 0.0
    for i in range(max(0, k_a + k_b - n), min(k_a, k_b) + 1):
        expected += math.comb(k_a, i) * math.comb(n - k_a, k_b - i) / total * i / (k_a + k_b - i)
    return expected


def spearman(x: Sequence[float], y: Sequence[float]) -> Correlation:
    """Spearman's rank correlation of paired values; pairs with a NaN are dropped.

    Ties get average ranks (scipy.stats.spearmanr). Undefined (NaN rho and p) with fewer than
    3 pairs or when either side is constant.
    """
    from scipy.stats import spearmanr

    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} x values but {len(y)} y values")
    pairs = [(float(a), float(b)) for a, b in zip(x, y) if not (math.isnan(a) or math.isnan(b))]
    n = len(pairs)
    if n < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return Correlation(math.nan, math.nan, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = spearmanr([a for a, _ in pairs], [b for _, b in pairs])
    return Correlation(float(res.statistic), float(res.pvalue), n)


def depth_bin(block: int, num_blocks: int, n_bins: int) -> int:
    """Normalized-depth bin of block `block` (0-based) of `num_blocks`: floor(block*n_bins/N)."""
    if n_bins < 1:
        raise ValueError(f"the number of depth bins must be >= 1, got {n_bins}")
    if not 0 <= block < num_blocks:
        raise ValueError(f"block {block} is outside 0..{num_blocks - 1}")
    return block * n_bins // num_blocks


def bin_label(b: Optional[int], n_bins: int) -> str:
    """``[0.25,0.50)`` for bin 1 of 4; ``-`` for groups outside the blocks."""
    if b is None:
        return "-"
    return f"[{b / n_bins:.2f},{(b + 1) / n_bins:.2f})"


def cell_of(layer: LayerOutcome, n_bins: int) -> Cell:
    """(kind, depth bin) of a group; the bin is None outside the blocks."""
    if layer.block is None or not layer.num_blocks:
        return (layer.kind, None)
    return (layer.kind, depth_bin(layer.block, layer.num_blocks, n_bins))


def _stats(layers: Sequence[LayerOutcome]) -> CellStats:
    deltas = [g.delta for g in layers]
    return CellStats(
        n=len(layers),
        ambient_fraction=sum(g.ambient for g in layers) / len(layers),
        mean_delta=statistics.fmean(deltas),
        sd_delta=statistics.stdev(deltas) if len(deltas) > 1 else 0.0,
    )


def depth_profile(layers: Iterable[LayerOutcome], n_bins: int) -> Dict[Cell, CellStats]:
    """Pooled outcome per (kind, depth bin) cell, cells in first-seen (layer) order."""
    cells: Dict[Cell, List[LayerOutcome]] = {}
    for g in layers:
        cells.setdefault(cell_of(g, n_bins), []).append(g)
    return {c: _stats(ls) for c, ls in cells.items()}


def kind_profile(layers: Iterable[LayerOutcome]) -> Dict[str, CellStats]:
    """Pooled outcome per group kind (all depths together)."""
    kinds: Dict[str, List[LayerOutcome]] = {}
    for g in layers:
        kinds.setdefault(g.kind, []).append(g)
    return {k: _stats(ls) for k, ls in kinds.items()}


def compare_runs(a: RunOutcome, b: RunOutcome, n_bins: int = 4) -> PairComparison:
    """Jaccard of ambient sets and Spearman of deltas of two runs (alignment: module doc)."""
    names_a = [g.group for g in a.layers]
    names_b = {g.group for g in b.layers}
    if set(names_a) == names_b:
        db = {g.group: g for g in b.layers}
        keys = names_a
        xa = [g.delta for g in a.layers]
        xb = [db[k].delta for k in keys]
        amb_a = a.ambient_set()
        amb_b = b.ambient_set()
        decided = [k for k in keys if k not in a.uncertain_set() | b.uncertain_set()]
        dec_a, dec_b = amb_a & set(decided), amb_b & set(decided)
        aligned = ALIGN_GROUP
    else:
        pa, pb = depth_profile(a.layers, n_bins), depth_profile(b.layers, n_bins)
        keys = [c for c in pa if c in pb]
        xa = [pa[c].mean_delta for c in keys]
        xb = [pb[c].mean_delta for c in keys]
        amb_a = {c for c in keys if pa[c].ambient_fraction >= 0.5}
        amb_b = {c for c in keys if pb[c].ambient_fraction >= 0.5}
        # Cells from the decided groups only; a cell with no decided group is left out.
        qa = depth_profile([g for g in a.layers if not g.uncertain], n_bins)
        qb = depth_profile([g for g in b.layers if not g.uncertain], n_bins)
        decided = [c for c in keys if c in qa and c in qb]
        dec_a = {c for c in decided if qa[c].ambient_fraction >= 0.5}
        dec_b = {c for c in decided if qb[c].ambient_fraction >= 0.5}
        aligned = ALIGN_DEPTH
    chance = chance_jaccard(len(keys), len(amb_a), len(amb_b))
    return PairComparison(a.name, b.name, aligned, len(keys), jaccard(amb_a, amb_b), spearman(xa, xb),
                          chance, jaccard(dec_a, dec_b) if decided else math.nan, len(decided))


def pairwise(runs: Sequence[RunOutcome], n_bins: int = 4) -> List[PairComparison]:
    """:func:`compare_runs` for every unordered pair, in input order."""
    return [compare_runs(a, b, n_bins) for a, b in combinations(runs, 2)]


@dataclasses.dataclass(frozen=True)
class SeedStability:
    """How one setup's ambient layers agree across its seeds.

    Attributes:
        variant: The setup, ``<norm> <size>`` (named ``variant`` in analysis.json).
        runs: Run names (one per seed).
        mean_jaccard: Mean pairwise Jaccard of ambient sets (NaN with one run).
        mean_spearman: Mean pairwise Spearman rho of deltas (NaN pairs left out).
        pairs: The pairwise comparisons.
        always_ambient: Groups ambient in every run.
        ever_ambient: Groups ambient in at least one run.
        mean_chance_jaccard: Mean over the pairs of :func:`chance_jaccard`.
        mean_jaccard_decided: Mean pairwise Jaccard without uncertain labels.
    """

    variant: str
    runs: Tuple[str, ...]
    mean_jaccard: float
    mean_spearman: float
    pairs: Tuple[PairComparison, ...]
    always_ambient: Tuple[str, ...]
    ever_ambient: Tuple[str, ...]
    mean_chance_jaccard: float = math.nan
    mean_jaccard_decided: float = math.nan


def _mean(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return statistics.fmean(vals) if vals else math.nan


def by_setup(runs: Sequence[RunOutcome]) -> Dict[str, List[RunOutcome]]:
    """Runs grouped by setup (norm x size), setups in input order, runs sorted by seed."""
    out: Dict[str, List[RunOutcome]] = {}
    for r in runs:
        out.setdefault(r.setup, []).append(r)
    for v in out.values():
        v.sort(key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0, r.name))
    return out


def seed_stability(runs: Sequence[RunOutcome], n_bins: int = 4) -> List[SeedStability]:
    """Per setup: agreement of ambient sets and deltas across seeds."""
    out = []
    for setup, members in by_setup(runs).items():
        pairs = pairwise(members, n_bins)
        order = [g.group for g in members[0].layers]
        sets = [m.ambient_set() for m in members]
        always = set.intersection(*sets) if sets else set()
        ever = set.union(*sets) if sets else set()
        out.append(SeedStability(
            variant=setup,
            runs=tuple(m.name for m in members),
            mean_jaccard=_mean(p.jaccard for p in pairs),
            mean_spearman=_mean(p.spearman.rho for p in pairs),
            pairs=tuple(pairs),
            always_ambient=tuple(g for g in order if g in always),
            ever_ambient=tuple(g for g in order if g in ever)
            + tuple(sorted(ever - set(order))),
            mean_chance_jaccard=_mean(p.chance_jaccard for p in pairs),
            mean_jaccard_decided=_mean(p.jaccard_decided for p in pairs),
        ))
    return out


def setup_depth_table(runs: Sequence[RunOutcome], n_bins: int) -> Dict[str, Dict[Cell, CellStats]]:
    """Per setup, outcomes pooled over seeds per (kind, depth bin) cell."""
    return {v: depth_profile([g for r in members for g in r.layers], n_bins)
            for v, members in by_setup(runs).items()}


def setup_group_table(runs: Sequence[RunOutcome]) -> Dict[str, Dict[str, CellStats]]:
    """Per setup, outcomes pooled over seeds per group name (groups in layer order)."""
    out: Dict[str, Dict[str, CellStats]] = {}
    for v, members in by_setup(runs).items():
        groups: Dict[str, List[LayerOutcome]] = {}
        for r in members:
            for g in r.layers:
                groups.setdefault(g.group, []).append(g)
        out[v] = {name: _stats(gs) for name, gs in groups.items()}
    return out


def setup_kind_table(runs: Sequence[RunOutcome]) -> Dict[str, Dict[str, CellStats]]:
    """Per setup, outcomes pooled over seeds per group kind."""
    return {v: kind_profile([g for r in members for g in r.layers])
            for v, members in by_setup(runs).items()}


def norm_pairs(runs: Sequence[RunOutcome]) -> Dict[str, List[str]]:
    """Sizes that have several setups (norms): {size: [setups]} (batch vs group norm...)."""
    sizes: Dict[str, List[str]] = {}
    for v, members in by_setup(runs).items():
        sizes.setdefault(members[0].size, []).append(v)
    return {s: vs for s, vs in sizes.items() if len(vs) > 1}


def cross_comparisons(runs: Sequence[RunOutcome], n_bins: int = 4) -> List[PairComparison]:
    """Pairs of runs from *different* setups (other norm or other size)."""
    return [compare_runs(a, b, n_bins) for a, b in combinations(runs, 2) if a.setup != b.setup]


def update_vs_delta(run: RunOutcome) -> Correlation:
    """Spearman of weight update vs reset delta over one run's groups."""
    return spearman([g.update for g in run.layers], [g.delta for g in run.layers])


def pooled_update_vs_delta(runs: Sequence[RunOutcome]) -> Correlation:
    """Spearman of weight update vs reset delta over the groups of all runs together."""
    layers = [g for r in runs for g in r.layers]
    return spearman([g.update for g in layers], [g.delta for g in layers])


def median_update_by_label(run: RunOutcome) -> Tuple[float, float]:
    """(median update of ambient groups, of critical groups); NaN when a side is empty."""
    def med(values):
        vals = [v for v in values if not math.isnan(v)]
        return statistics.median(vals) if vals else math.nan

    return (med(g.update for g in run.layers if g.ambient),
            med(g.update for g in run.layers if not g.ambient))


# Kinds of run pairs, in report order: what differs between the two runs.
PAIR_KINDS = ("seed only", "norm", "size", "norm and size")


@dataclasses.dataclass(frozen=True)
class PairKindStats:
    """Agreement pooled over the pairs of runs that differ in the same way (see PAIR_KINDS)."""

    kind: str
    pairs: int
    mean_jaccard: float
    mean_chance_jaccard: float
    mean_spearman: float
    mean_jaccard_decided: float = math.nan


def pair_kind(a: RunOutcome, b: RunOutcome) -> str:
    """What differs between two runs: ``seed only`` (same norm and size), ``norm``, ``size`` or
    ``norm and size``."""
    other_norm, other_size = a.norm != b.norm, a.size != b.size
    if other_norm and other_size:
        return "norm and size"
    return "norm" if other_norm else "size" if other_size else "seed only"


def agreement_by_pair_kind(runs: Sequence[RunOutcome], pairs: Sequence[PairComparison]) -> List[PairKindStats]:
    """Mean Jaccard (and its chance level) and mean Spearman of the pairs of each kind present."""
    by_name = {r.name: r for r in runs}
    grouped: Dict[str, List[PairComparison]] = {}
    for p in pairs:
        grouped.setdefault(pair_kind(by_name[p.a], by_name[p.b]), []).append(p)
    return [PairKindStats(k, len(grouped[k]), _mean(p.jaccard for p in grouped[k]),
                          _mean(p.chance_jaccard for p in grouped[k]),
                          _mean(p.spearman.rho for p in grouped[k]),
                          _mean(p.jaccard_decided for p in grouped[k]))
            for k in PAIR_KINDS if k in grouped]
