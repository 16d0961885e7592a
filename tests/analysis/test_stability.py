"""Stability statistics: known answers for Jaccard, Spearman (ties), depth bins, alignment."""

import dataclasses
import math

import pytest

from espnet_ext.analysis import stability as st
from espnet_ext.analysis.stability import LayerOutcome, RunOutcome


def test_jaccard_known_values():
    assert st.jaccard({"a", "b", "c"}, {"b", "c", "d"}) == pytest.approx(2 / 4)
    assert st.jaccard({"a"}, {"b"}) == 0.0
    assert st.jaccard({"a", "b"}, ["b", "a"]) == 1.0
    # Two runs with no ambient layer agree.
    assert st.jaccard(set(), set()) == 1.0
    assert st.jaccard(set(), {"a"}) == 0.0


def test_spearman_without_ties_is_one_minus_six_d2():
    # ranks x: 1 2 3 4 5, ranks y: 2 1 4 3 5 -> sum d^2 = 4 -> rho = 1 - 6*4/(5*24) = 0.8
    c = st.spearman([10, 20, 30, 40, 50], [2.0, 1.0, 4.0, 3.0, 5.0])
    assert c.rho == pytest.approx(0.8)
    assert c.n == 5
    assert 0 < c.p < 1


def test_spearman_with_ties_uses_average_ranks():
    # x ranks (ties averaged): 1, 2.5, 2.5, 4; y ranks: 1, 3, 2, 4 -> Pearson of the ranks.
    rx, ry = [1, 2.5, 2.5, 4], [1, 3, 2, 4]
    mx, my = sum(rx) / 4, sum(ry) / 4
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    expected = cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    assert expected == pytest.approx(0.9486832980505138)
    assert st.spearman([1, 2, 2, 3], [1, 3, 2, 4]).rho == pytest.approx(expected)


def test_spearman_drops_nan_pairs_and_is_undefined_when_degenerate():
    c = st.spearman([1, 2, math.nan, 3, 4], [1, 2, 5, 3, 4])
    assert (c.rho, c.n) == (pytest.approx(1.0), 4)
    assert math.isnan(st.spearman([1, 2], [2, 1]).rho)  # fewer than 3 pairs
    constant = st.spearman([1, 2, 3, 4], [0.0, 0.0, 0.0, 0.0])
    assert math.isnan(constant.rho) and math.isnan(constant.p) and constant.n == 4
    with pytest.raises(ValueError, match="3 x values but 2 y values"):
        st.spearman([1, 2, 3], [1, 2])


def test_depth_bins_are_exact_integer_bins():
    # 17 blocks into 4 bins: 0-4, 5-8, 9-12, 13-16 (floor(b*4/17)).
    assert [st.depth_bin(b, 17, 4) for b in range(17)] == [0] * 5 + [1] * 4 + [2] * 4 + [3] * 4
    # Block 1 of 3 is at depth 1/3 exactly: bin 1 of 3 (floating point 0.3333*3 would say 0).
    assert st.depth_bin(1, 3, 3) == 1
    # 4 blocks, 4 bins: one block per bin; 16 blocks, 4 bins: four per bin.
    assert [st.depth_bin(b, 4, 4) for b in range(4)] == [0, 1, 2, 3]
    assert [st.depth_bin(b, 16, 4) for b in (0, 3, 4, 15)] == [0, 0, 1, 3]
    assert st.bin_label(1, 4) == "[0.25,0.50)" and st.bin_label(None, 4) == "-"
    with pytest.raises(ValueError, match="outside 0..3"):
        st.depth_bin(4, 4, 2)
    with pytest.raises(ValueError, match="bins must be >= 1"):
        st.depth_bin(0, 4, 0)


def _block(i, n, delta, update=math.nan, kind="enc_block", threshold=2.0):
    return LayerOutcome(f"encoder.encoders.{i}", kind, i, n, delta, delta <= threshold, update)


def _run(name, deltas, norm="batch_norm", seed=1, updates=None):
    n = len(deltas)
    updates = updates or [math.nan] * n
    layers = [LayerOutcome("encoder.embed", "enc_embed", None, None, 9.0, False, 1.0)]
    layers += [_block(i, n, d, u) for i, (d, u) in enumerate(zip(deltas, updates))]
    return RunOutcome(name, norm, f"{n}x8", seed, tuple(layers))


def test_same_architecture_is_compared_group_by_group():
    a = _run("a", [5.0, 1.0, 1.5, 0.5])
    b = _run("b", [5.0, 1.2, 3.5, 0.6], seed=2)
    c = st.compare_runs(a, b)
    assert c.aligned_by == st.ALIGN_GROUP and c.n == 5
    # ambient a: blocks 1, 2, 3; b: blocks 1, 3
    assert c.jaccard == pytest.approx(2 / 3)
    # deltas a [9,5,1,1.5,.5] ranks [5,4,2,3,1]; b [9,5,1.2,3.5,.6] ranks [5,4,2,3,1]
    assert c.spearman.rho == pytest.approx(1.0)


def test_other_sizes_are_compared_by_depth_cells():
    small = _run("small", [5.0, 1.0])                 # bins (2 bins): block0 -> 0, block1 -> 1
    big = _run("big", [6.0, 4.0, 1.0, 3.0])           # block 0,1 -> bin 0; 2,3 -> bin 1
    c = st.compare_runs(small, big, n_bins=2)
    assert c.aligned_by == st.ALIGN_DEPTH
    assert c.n == 3  # enc_embed, (enc_block, 0), (enc_block, 1)
    prof = st.depth_profile(big.layers, 2)
    assert prof[("enc_block", 0)].mean_delta == pytest.approx(5.0)
    assert prof[("enc_block", 1)].ambient_fraction == pytest.approx(0.5)  # 1.0 ambient, 3.0 not
    assert prof[("enc_embed", None)].n == 1
    # ambient cells: small {bin 1}; big {bin 1} (half of its groups) -> identical sets
    assert c.jaccard == 1.0


def test_seed_stability_per_variant_and_norm_pairs():
    runs = [
        _run("bn1", [5.0, 1.0, 1.5, 0.5], seed=1),
        _run("gn1", [5.0, 1.0, 3.0, 0.5], norm="group_norm", seed=1),
        _run("bn2", [5.0, 1.2, 3.5, 0.6], seed=2),
        _run("gn2", [5.0, 1.0, 3.0, 0.5], norm="group_norm", seed=2),
    ]
    stab = {s.variant: s for s in st.seed_stability(runs)}
    bn, gn = stab["batch_norm 4x8"], stab["group_norm 4x8"]
    assert bn.runs == ("bn1", "bn2") and bn.mean_jaccard == pytest.approx(2 / 3)
    assert bn.always_ambient == ("encoder.encoders.1", "encoder.encoders.3")
    assert bn.ever_ambient == ("encoder.encoders.1", "encoder.encoders.2", "encoder.encoders.3")
    assert gn.mean_jaccard == 1.0 and gn.mean_spearman == pytest.approx(1.0)
    assert st.norm_pairs(runs) == {"4x8": ["batch_norm 4x8", "group_norm 4x8"]}
    kinds = st.setup_kind_table(runs)["batch_norm 4x8"]
    assert kinds["enc_block"].n == 8 and kinds["enc_block"].ambient_fraction == pytest.approx(5 / 8)
    groups = st.setup_group_table(runs)["batch_norm 4x8"]
    assert groups["encoder.encoders.2"].ambient_fraction == 0.5
    assert groups["encoder.encoders.2"].mean_delta == pytest.approx(2.5)
    # one run only: no pairs, NaN means
    single = st.seed_stability(runs[:1])[0]
    assert single.pairs == () and math.isnan(single.mean_jaccard)


def test_update_vs_delta_per_run_and_pooled():
    a = _run("a", [4.0, 1.0, 2.0, 0.5], updates=[0.4, 0.1, 0.2, 0.05])
    c = st.update_vs_delta(a)
    # embed (update 1.0, delta 9.0) and the blocks: both in the same order
    assert c.n == 5 and c.rho == pytest.approx(1.0)
    b = _run("b", [4.0, 1.0, 2.0, 0.5], updates=[0.05, 0.2, 0.1, 0.4], seed=2)
    # b: update ranks [5,1,3,2,4], delta ranks [5,4,2,3,1]: sum d^2 = 20 -> rho = 0
    rb = st.update_vs_delta(b)
    assert rb.n == 5
    assert rb.rho == pytest.approx(1 - 6 * 20 / (5 * 24), abs=1e-12)
    pooled = st.pooled_update_vs_delta([a, b])
    assert pooled.n == 10
    amb, crit = st.median_update_by_label(a)
    assert amb == pytest.approx(0.1) and crit == pytest.approx(0.7)  # ambient: .1 .2 .05


def test_chance_jaccard_matches_enumeration_of_all_random_sets():
    from itertools import combinations
    for n, ka, kb in ((6, 3, 2), (5, 4, 4), (7, 1, 6), (4, 0, 2)):
        values = []
        for a in combinations(range(n), ka):
            for b in combinations(range(n), kb):
                values.append(st.jaccard(a, b))
        assert st.chance_jaccard(n, ka, kb) == pytest.approx(sum(values) / len(values))
    assert st.chance_jaccard(23, 23, 23) == 1.0  # everything ambient in both: no information
    assert st.chance_jaccard(10, 0, 0) == 1.0
    with pytest.raises(ValueError, match="within 0..4"):
        st.chance_jaccard(4, 5, 1)


def test_pairs_carry_their_chance_level_and_are_pooled_by_what_differs():
    runs = [
        _run("bn1", [5.0, 1.0, 1.5, 0.5], seed=1),
        _run("bn2", [5.0, 1.2, 3.5, 0.6], seed=2),
        _run("gn1", [5.0, 1.0, 3.0, 0.5], norm="group_norm", seed=1),
        _run("bn_deep", [5.0, 4.0, 1.0, 3.0, 1.0, 0.5], seed=1),
    ]
    pairs = st.pairwise(runs)
    bn = next(p for p in pairs if (p.a, p.b) == ("bn1", "bn2"))
    # 5 groups (embed + 4 blocks), 3 and 2 ambient
    assert bn.chance_jaccard == pytest.approx(st.chance_jaccard(5, 3, 2))
    assert [st.pair_kind(runs[0], r) for r in runs[1:]] == ["seed only", "norm", "size"]
    assert st.pair_kind(runs[2], runs[3]) == "norm and size"
    kinds = {k.kind: k for k in st.agreement_by_pair_kind(runs, pairs)}
    assert list(kinds) == ["seed only", "norm", "size", "norm and size"]
    assert kinds["seed only"].pairs == 1 and kinds["seed only"].mean_jaccard == pytest.approx(2 / 3)
    assert kinds["norm"].pairs == 2  # bn1-gn1, bn2-gn1
    assert kinds["size"].pairs == 2 and kinds["norm and size"].pairs == 1
    stab = {s.variant: s for s in st.seed_stability(runs)}
    assert stab["batch_norm 4x8"].mean_chance_jaccard == pytest.approx(bn.chance_jaccard)


def _with_uncertain(run, *groups):
    layers = tuple(dataclasses.replace(g, uncertain=g.group in groups) for g in run.layers)
    return dataclasses.replace(run, layers=layers)


def test_jaccard_without_uncertain_labels():
    a = _run("a", [5.0, 1.0, 1.5, 0.5])
    b = _with_uncertain(_run("b", [5.0, 1.2, 3.5, 0.6], seed=2), "encoder.encoders.2")
    c = st.compare_runs(a, b)
    # All labels: ambient a {1, 2, 3}, b {1, 3} -> 2/3. Block 2 is uncertain in b: left out -> 1.
    assert c.jaccard == pytest.approx(2 / 3)
    assert (c.jaccard_decided, c.n_decided) == (1.0, 4)
    (stab,) = st.seed_stability([a, b])
    assert stab.mean_jaccard == pytest.approx(2 / 3) and stab.mean_jaccard_decided == 1.0
    (kind,) = st.agreement_by_pair_kind([a, b], [c])
    assert kind.mean_jaccard_decided == 1.0
    # Without intervals every label counts as decided: the same number both ways.
    plain = st.compare_runs(a, _run("b", [5.0, 1.2, 3.5, 0.6], seed=2))
    assert plain.jaccard_decided == plain.jaccard and plain.n_decided == plain.n
    # Other sizes: a depth cell whose groups are all uncertain is left out.
    small = _run("small", [5.0, 1.0])
    big = _with_uncertain(_run("big", [6.0, 4.0, 1.0, 3.0]), "encoder.encoders.2", "encoder.encoders.3")
    d = st.compare_runs(small, big, n_bins=2)
    assert (d.n, d.n_decided) == (3, 2)  # (enc_block, 1) has no decided group in big
    assert d.jaccard == 1.0 and d.jaccard_decided == 1.0  # neither has a decided ambient cell left
