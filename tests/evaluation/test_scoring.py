"""WER/CER counts and ESPnet's result-table format on cases with known answers."""

import json

import pytest

from espnet_ext.evaluation.scoring import load_scores, results_markdown, score_texts, write_scores


def test_word_counts_substitution_insertion_deletion():
    refs = {"u1": "A B C", "u2": "D E F"}
    hyps = {"u1": "A X C Y", "u2": "D F"}
    c = score_texts(refs, hyps, "word")
    assert (c.ref_tokens, c.hits, c.substitutions, c.deletions, c.insertions) == (6, 4, 1, 1, 1)
    assert c.error_rate == pytest.approx(50.0)
    assert c.sentence_errors == 2


def test_char_counts_include_spaces():
    # "AB C" -> "AB D": one substituted character; the space counts as a token.
    c = score_texts({"u": "AB C"}, {"u": "AB D"}, "char")
    assert (c.ref_tokens, c.substitutions, c.errors) == (4, 1, 1)
    assert c.error_rate == pytest.approx(25.0)


def test_perfect_and_missing_hypotheses():
    refs = {"u1": "HELLO WORLD", "u2": "GOOD DAY"}
    assert score_texts(refs, dict(refs), "word").error_rate == 0.0
    # A hypothesis lost by the decoder counts as all deletions, never as a free pass.
    c = score_texts(refs, {"u1": "HELLO WORLD"}, "word")
    assert (c.deletions, c.error_rate) == (2, pytest.approx(50.0))


def test_whitespace_is_normalized():
    assert score_texts({"u": "A  B"}, {"u": " A B "}, "word").errors == 0


def test_unknown_hypothesis_key_is_an_error():
    with pytest.raises(ValueError, match="no reference"):
        score_texts({"u1": "A"}, {"u9": "A"}, "word")
    with pytest.raises(ValueError, match="unit"):
        score_texts({"u1": "A"}, {"u1": "A"}, "phone")


def test_write_scores_files_and_table(tmp_path):
    (tmp_path / "ref").write_text("u1 THE CAT SAT\nu2 ON THE MAT\n")
    (tmp_path / "hyp").write_text("u1 THE CAT SAT\nu2 ON A MAT\n")
    scores = write_scores(tmp_path / "ref", tmp_path / "hyp", tmp_path / "out")
    assert scores["WER"].error_rate == pytest.approx(100 / 6)
    saved = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert saved["WER"]["substitutions"] == 1
    assert load_scores(tmp_path / "out" / "scores.json") == scores
    md = results_markdown("exp/x", [("test", scores)])
    # ESPnet's RESULTS.md row: |dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|
    assert "|test|2|6|83.3|16.7|0.0|0.0|16.7|50.0|" in md
    assert md.index("### WER") < md.index("### CER")
