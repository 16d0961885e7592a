"""Server-side evaluation of the global model: scores and per-utterance counts from one alignment."""

from types import SimpleNamespace

import jiwer

from espnet_ext.evaluation.scoring import score_texts
from espnet_ext.federated.evaluate import GlobalModelEvaluator, per_utterance_counts, read_per_utterance

REFS = {"u1": "A CAB", "u2": "BAD DAB", "u3": "AB", "u10": ""}
HYPS = {"u1": "A CA", "u2": "BAD DAB", "u3": "", "u10": "X"}


def _evaluator_of(hyps):
    """An evaluator that decodes `hyps` ({set: {utterance: text}}) without building a model."""
    evaluator = object.__new__(GlobalModelEvaluator)
    evaluator.sets = [SimpleNamespace(name="adapt", refs=REFS)]
    evaluator.hypotheses = lambda state: hyps
    return evaluator


def test_final_evaluation_aligns_each_utterance_once_per_unit(tmp_path, monkeypatch):
    aligned = []
    for name in ("process_words", "process_characters"):
        align = getattr(jiwer, name)

        def counting(ref, hyp, _align=align, _name=name):
            aligned.append((_name, ref))
            return _align(ref, hyp)

        monkeypatch.setattr(jiwer, name, counting)
    scores = _evaluator_of({"adapt": HYPS}).evaluate({}, per_utt=tmp_path / "per_utt.tsv")
    # Every non-empty reference once by words and once by characters (empty ones need no alignment).
    assert sorted(aligned) == sorted((n, r) for r in ("A CAB", "BAD DAB", "AB")
                                     for n in ("process_words", "process_characters"))
    monkeypatch.undo()
    assert scores == {"adapt": {"WER": round(score_texts(REFS, HYPS, "word").error_rate, 2),
                                "CER": round(score_texts(REFS, HYPS, "char").error_rate, 2)}}
    rows = per_utterance_counts(REFS, HYPS)
    assert read_per_utterance(tmp_path / "per_utt.tsv") == {"adapt": {r[0]: tuple(r[1:]) for r in rows}}
    assert [r[0] for r in rows] == ["u1", "u10", "u2", "u3"]  # Kaldi (byte) order


def test_evaluation_without_per_utterance_file_gives_the_same_scores(tmp_path):
    evaluator = _evaluator_of({"adapt": HYPS})
    assert evaluator.evaluate({}) == evaluator.evaluate({}, per_utt=tmp_path / "per_utt.tsv")
