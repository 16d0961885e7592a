"""Word and character error rates, and ESPnet's RESULTS.md table format.

Counts come from jiwer's Levenshtein alignment. As in ESPnet's scoring, CER treats every
character, the space included, as a token, so CER counts word-boundary errors too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Iterable, List, Mapping

import jiwer

from espnet_ext.data.kaldi import read_kaldi_map


@dataclasses.dataclass(frozen=True)
class ErrorCounts:
    """Alignment counts of hypotheses against references, summed over utterances.

    Attributes:
        sentences: number of utterances scored.
        ref_tokens: number of reference tokens (words or characters).
        hits, substitutions, deletions, insertions: edit-operation counts.
        sentence_errors: utterances with at least one error.
    """

    sentences: int
    ref_tokens: int
    hits: int
    substitutions: int
    deletions: int
    insertions: int
    sentence_errors: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def error_rate(self) -> float:
        """Error rate in percent of reference tokens (WER or CER)."""
        return 100.0 * self.errors / max(self.ref_tokens, 1)

    def table_row(self, name: str) -> str:
        """One row of ESPnet's `|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|` table."""
        n = max(self.ref_tokens, 1)
        pct = [
            100.0 * self.hits / n,
            100.0 * self.substitutions / n,
            100.0 * self.deletions / n,
            100.0 * self.insertions / n,
            self.error_rate,
            100.0 * self.sentence_errors / max(self.sentences, 1),
        ]
        cells = [name, str(self.sentences), str(self.ref_tokens)] + [f"{p:.1f}" for p in pct]
        return "|" + "|".join(cells) + "|"


TABLE_HEADER = "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|\n|---|---|---|---|---|---|---|---|---|"


def _count_one(ref: str, hyp: str, unit: str) -> ErrorCounts:
    """Counts of one utterance (normalized texts)."""
    if not ref:
        # jiwer rejects empty reference strings; such utterances count as pure insertions.
        extra = len(hyp.split()) if unit == "word" else len(hyp)
        return ErrorCounts(1, 0, 0, 0, 0, extra, int(extra > 0))
    out = (jiwer.process_words if unit == "word" else jiwer.process_characters)(ref, hyp)
    errors = out.substitutions + out.deletions + out.insertions
    return ErrorCounts(1, out.hits + out.substitutions + out.deletions, out.hits, out.substitutions,
                       out.deletions, out.insertions, int(errors > 0))


def sum_counts(counts: Iterable[ErrorCounts]) -> ErrorCounts:
    """Counts of several utterances together (field by field sums)."""
    fields = [f.name for f in dataclasses.fields(ErrorCounts)]
    totals = dict.fromkeys(fields, 0)
    for c in counts:
        for f in fields:
            totals[f] += getattr(c, f)
    return ErrorCounts(**totals)


def _count(refs: List[str], hyps: List[str], unit: str) -> ErrorCounts:
    if not refs:
        raise ValueError("nothing to score: no reference utterances")
    return sum_counts(_count_one(r, h, unit) for r, h in zip(refs, hyps))


def _normalize(text: str) -> str:
    return " ".join(text.split())


def _check_scoring_inputs(refs: Mapping[str, str], hyps: Mapping[str, str], unit: str) -> None:
    """Raise ValueError for an unknown unit or hypothesis keys that have no reference."""
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    unknown = sorted(set(hyps) - set(refs))
    if unknown:
        raise ValueError(
            f"{len(unknown)} hypothesis keys have no reference (first: {unknown[0]!r}); "
            "score against the data dir that was decoded"
        )


def score_texts(
    refs: Mapping[str, str], hyps: Mapping[str, str], unit: str = "word"
) -> ErrorCounts:
    """Score hypotheses against references by utterance key.

    Args:
        refs: utterance key -> reference transcript.
        hyps: utterance key -> hypothesis; a key missing here scores as an empty hypothesis
            (all deletions), so a decoding that lost utterances cannot look better.
        unit: "word" for WER counts, "char" for CER counts.

    Raises:
        ValueError: for an unknown unit, or hypothesis keys that are not in refs.
    """
    _check_scoring_inputs(refs, hyps, unit)
    keys = sorted(refs)
    return _count(
        [_normalize(refs[k]) for k in keys], [_normalize(hyps.get(k, "")) for k in keys], unit
    )


def utterance_counts(
    refs: Mapping[str, str], hyps: Mapping[str, str], unit: str = "word"
) -> Dict[str, ErrorCounts]:
    """Counts of every utterance of `refs`, by key (what :func:`score_texts` sums).

    Args:
        refs: utterance key -> reference transcript.
        hyps: utterance key -> hypothesis; a missing key scores as an empty hypothesis.
        unit: "word" or "char".

    Raises:
        ValueError: for an unknown unit, or hypothesis keys that are not in refs.
    """
    _check_scoring_inputs(refs, hyps, unit)
    return {k: _count_one(_normalize(refs[k]), _normalize(hyps.get(k, "")), unit) for k in refs}


def score_files(ref_text: Path, hyp_text: Path) -> Dict[str, ErrorCounts]:
    """Score a Kaldi-style hypothesis `text` file against a reference `text` file.

    Returns:
        {"WER": counts over words, "CER": counts over characters}.
    """
    refs = read_kaldi_map(Path(ref_text), allow_empty_value=True)
    hyps = read_kaldi_map(Path(hyp_text), allow_empty_value=True)
    return {"WER": score_texts(refs, hyps, "word"), "CER": score_texts(refs, hyps, "char")}


def results_markdown(title: str, rows: Iterable[tuple]) -> str:
    """ESPnet-style RESULTS.md section.

    Args:
        title: section heading (usually the experiment dir).
        rows: (dataset name, {"WER": ErrorCounts, "CER": ErrorCounts}) pairs.
    """
    rows = list(rows)
    parts = [f"## {title}"]
    for metric in ("WER", "CER"):
        parts += [f"### {metric}", "", TABLE_HEADER]
        parts += [counts[metric].table_row(name) for name, counts in rows]
        parts.append("")
    return "\n".join(parts) + "\n"


def write_scores(ref_text: Path, hyp_text: Path, out_dir: Path) -> Dict[str, ErrorCounts]:
    """Score a decoding and write `scores.json` and `result.md` (ESPnet rows) into out_dir."""
    import json

    scores = score_files(ref_text, hyp_text)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {m: dataclasses.asdict(c) | {"error_rate": c.error_rate} for m, c in scores.items()}
    (out_dir / "scores.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out_dir / "result.md").write_text(results_markdown(str(out_dir), [(out_dir.name, scores)]))
    return scores


def load_scores(path: Path) -> Dict[str, ErrorCounts]:
    """Read a `scores.json` written by :func:`write_scores`."""
    import json

    raw = json.loads(Path(path).read_text())
    fields = {f.name for f in dataclasses.fields(ErrorCounts)}
    return {m: ErrorCounts(**{k: v for k, v in c.items() if k in fields}) for m, c in raw.items()}
