"""Paired bootstrap intervals of reset deltas, the adaptive scan's looks, per-utterance counts."""

import math

import numpy as np
import pytest

from espnet_ext.evaluation import bootstrap as boot
from espnet_ext.scan.labels import AmbientCriterion
from espnet_ext.scan.result import ScanRow, read_tsv
from espnet_ext.evaluation.scoring import score_texts, sum_counts, utterance_counts


def _counts(seed=0, n=40):
    rng = np.random.default_rng(seed)
    ref = rng.integers(10, 60, n)
    base = rng.binomial(ref, 0.1)
    var = rng.binomial(ref, 0.2)
    return base, var, ref


def test_identical_counts_give_a_zero_interval():
    base, _, ref = _counts()
    iv = boot.paired_bootstrap({"CER": (base, base, ref)}, samples=200, seed=1)["CER"]
    assert (iv.delta, iv.lo, iv.hi, iv.n) == (0.0, 0.0, 0.0, 40)


def test_a_constant_rate_shift_has_an_exact_interval():
    # Every utterance gets 2 more errors per 10 reference tokens: +20 points in every resample.
    ref = np.full(30, 10)
    base = np.arange(30) % 4
    iv = boot.paired_bootstrap({"WER": (base, base + 2, ref)}, samples=100, seed=0)["WER"]
    assert iv.delta == pytest.approx(20.0) and iv.lo == pytest.approx(20.0) and iv.hi == pytest.approx(20.0)


def test_interval_is_paired_reproducible_and_widens_with_confidence():
    base, var, ref = _counts()
    a = boot.paired_bootstrap({"CER": (base, var, ref), "WER": (base, var, ref)}, 500, seed=7)
    b = boot.paired_bootstrap({"CER": (base, var, ref), "WER": (base, var, ref)}, 500, seed=7)
    c = boot.paired_bootstrap({"CER": (base, var, ref)}, 500, seed=8)
    assert a == b  # same counts, same seed: the same interval
    assert (c["CER"].lo, c["CER"].hi) != (a["CER"].lo, a["CER"].hi)
    iv = a["CER"]
    assert iv.delta == pytest.approx(100.0 * (var.sum() - base.sum()) / ref.sum())
    assert iv.lo < iv.delta < iv.hi
    wide = boot.paired_bootstrap({"CER": (base, var, ref)}, 500, seed=7, confidence=0.999)["CER"]
    assert wide.lo <= iv.lo and wide.hi >= iv.hi
    # Paired: an utterance-level offset common to both sides does not widen the interval.
    offset = np.random.default_rng(3).integers(0, 20, base.size)
    shifted = boot.paired_bootstrap({"CER": (base + offset, var + offset, ref)}, 500, seed=7)["CER"]
    assert (shifted.lo, shifted.hi) == pytest.approx((iv.lo, iv.hi))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="--confidence must be between 0 and 1"):
        boot.paired_bootstrap({"CER": ([1], [1], [1])}, confidence=1.0)
    with pytest.raises(ValueError, match="--bootstrap_samples must be >= 10"):
        boot.paired_bootstrap({"CER": ([1], [1], [1])}, samples=5)
    with pytest.raises(ValueError, match="CER: baseline, variant and reference counts"):
        boot.paired_bootstrap({"CER": ([1, 2], [1], [1, 2])})
    with pytest.raises(ValueError, match="no utterance"):
        boot.paired_bootstrap({"CER": ([], [], [])})


def test_interval_labels_and_looks():
    crit = AmbientCriterion("cer", 2.0, 0.1)  # tolerance max(2, 10% of baseline)
    assert crit.label_interval(10.0, -1.0, 1.9) == "ambient"
    assert crit.label_interval(10.0, 2.1, 9.0) == "critical"
    assert crit.label_interval(10.0, 1.0, 3.0) == "uncertain"
    assert crit.label_interval(50.0, 1.0, 5.0) == "ambient"  # 10% of 50 = 5 points
    assert boot.look_sizes(120) == [16, 32, 64, 120]
    assert boot.look_sizes(128) == [16, 32, 64, 128]
    assert boot.look_sizes(10) == [10]
    assert boot.look_sizes(6, first=2) == [2, 4, 6]
    assert boot.look_confidence(0.95, 4) == pytest.approx(0.9875)
    order = boot.utterance_order(50, seed=3)
    assert sorted(order) == list(range(50)) and order == boot.utterance_order(50, seed=3)
    assert order != list(range(50))


def test_per_utterance_counts_sum_to_the_corpus_counts():
    refs = {"a": "the cat sat", "b": "a dog", "c": "", "d": "hello world"}
    hyps = {"a": "the bat sat down", "b": "a dog", "c": "noise", "d": "helo"}
    for unit in ("word", "char"):
        per = utterance_counts(refs, hyps, unit)
        assert set(per) == set(refs)
        assert sum_counts(per.values()) == score_texts(refs, hyps, unit)
    assert utterance_counts(refs, hyps, "word")["a"].errors == 2  # one substitution, one insertion
    assert utterance_counts(refs, hyps, "char")["c"].errors == 5  # empty reference: insertions


OLD_TSV = ("dataset\tgroup\tkind\tblock\tdepth\tmode\ttau\tseed\tWER\tCER\tdelta_WER\tdelta_CER\tlabel\n"
           "dev\tencoder.encoders.0\tenc_block\t0\t0.0000\treinit\t0\t\t30.0000\t12.0000\t5.0000\t"
           "1.0000\tambient\n")


def test_scan_tsv_without_interval_columns_is_still_read(tmp_path):
    path = tmp_path / "scan.tsv"
    path.write_text(OLD_TSV)
    (row,) = read_tsv(path)
    assert (row.group, row.tau, row.cer, row.delta_cer, row.label) == ("encoder.encoders.0", 0, 12.0, 1.0,
                                                                       "ambient")
    assert row.n_utts is None and math.isnan(row.delta_cer_lo) and row.label_ci == ""
    # Written back in the current format, it reads the same.
    new = tmp_path / "new.tsv"
    from espnet_ext.scan.result import write_tsv

    row.n_utts, row.delta_cer_lo, row.delta_cer_hi, row.label_ci = 16, 0.5, 1.5, "ambient"
    write_tsv(new, [row])
    (back,) = read_tsv(new)
    assert (back.n_utts, back.delta_cer_lo, back.delta_cer_hi, back.label_ci) == (16, 0.5, 1.5, "ambient")
    assert math.isnan(back.delta_wer_lo) and back.cer == 12.0


def test_row_labels_from_intervals():
    row = ScanRow("dev", "ctc", "ctc", None, None, "reinit", 0, None, 60.0, 40.0)
    crit = AmbientCriterion("cer", 2.0, 0.1)
    ivs = boot.paired_bootstrap({"WER": ([1] * 4, [5] * 4, [10] * 4), "CER": ([2] * 4, [9] * 4, [20] * 4)},
                                100, seed=0)
    row.relabel({"WER": 10.0, "CER": 10.0}, crit, ivs)
    assert (row.delta_wer, row.delta_cer) == (40.0, 35.0)  # paired, on the row's utterances
    assert (row.delta_cer_lo, row.delta_cer_hi, row.n_utts) == (35.0, 35.0, 4)
    assert (row.label, row.label_ci) == ("critical", "critical")


def test_reports_mark_uncertain_labels(tmp_path, monkeypatch):
    from espnet_ext.reporting import figures
    from espnet_ext.scan import report as rep

    crit = AmbientCriterion("cer", 2.0, None)
    baseline = {"WER": 20.0, "CER": 10.0, "utterances": 40}
    rows = []
    for group, base_c, var_c, n in (("a", [1] * 16, [1] * 16, 16), ("b", [1] * 40, [2] * 8 + [1] * 32, 40),
                                    ("c", [1] * 16, [9] * 16, 16)):
        ivs = boot.paired_bootstrap({"WER": (base_c, var_c, [10] * n), "CER": (base_c, var_c, [10] * n)},
                                    200, seed=0)
        row = ScanRow("dev", group, "enc_block", 0, 0.0, "reinit", 0, None, 0.0, 0.0)
        row.relabel(baseline, crit, ivs)
        rows.append(row)
    assert [r.label_ci for r in rows] == ["ambient", "uncertain", "critical"]
    seen = {}
    monkeypatch.setattr(figures, "plot_heatmap", lambda panels, *a, **kw: seen.update(
        kw, values=panels[0].values, uncertain=panels[0].uncertain) or a[2])
    rep.write_heatmaps(tmp_path, rows, ["dev"], ["a", "b", "c"], {"dev": baseline}, crit)
    assert seen["uncertain"] == [[False], [True], [False]] and "?: uncertain" in seen["title"]
    # Colour: baseline + paired change (for rows scored on fewer utterances, the estimate).
    assert seen["values"] == [[pytest.approx(10.0)], [pytest.approx(12.0)], [pytest.approx(90.0)]]
    line = rep.summary_line(rows, "dev", ["a", "b", "c"], baseline, crit, 0.95)
    assert line.endswith("; at 95% confidence 1 ambient, 1 critical, 1 uncertain (b)")


def test_scan_markdown_cells_carry_interval_and_utterances():
    from espnet_ext.scan import report as rep

    row = ScanRow("dev", "a", "enc_block", 0, 0.0, "reinit", 0, None, 30.0, 15.0, 10.0, 5.0, "critical", 16,
                  8.0, 12.0, 2.5, 7.5, "critical")
    assert rep._cell_text(row, "cer", 120) == "15.0 (+5.0 [+2.5, +7.5]) /16"
    row.label_ci = "uncertain"
    assert rep._cell_text(row, "cer", 16) == "15.0 (+5.0 [+2.5, +7.5]) ?"
